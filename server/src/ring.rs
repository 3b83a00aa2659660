//! Fixed-capacity rings indexed by absolute sample index. Allocated once per stream (or
//! attachment); writing a sample never allocates.

/// Frames of `width` f32 values (one per channel), the last `capacity` of them kept.
#[derive(Debug)]
pub struct FrameRing {
    capacity: usize,
    width: usize,
    data: Vec<f32>,
    /// Absolute index of the next frame to be written.
    total: u64,
}

impl FrameRing {
    pub fn new(capacity: usize, width: usize) -> Self {
        Self { capacity, width, data: vec![0.0; capacity * width], total: 0 }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Index of the oldest frame still held.
    pub fn oldest(&self) -> u64 {
        self.total.saturating_sub(self.capacity as u64)
    }

    pub fn push(&mut self, frame: &[f32]) {
        let slot = (self.total % self.capacity as u64) as usize * self.width;
        self.data[slot..slot + self.width].copy_from_slice(&frame[..self.width]);
        self.total += 1;
    }

    /// Moves the write position `n` frames ahead without writing (skipped frames read as stale
    /// data, so callers only skip indices they will never read).
    pub fn advance(&mut self, n: u64) {
        self.total += n;
    }

    pub fn frame(&self, index: u64) -> &[f32] {
        let slot = (index % self.capacity as u64) as usize * self.width;
        &self.data[slot..slot + self.width]
    }

    /// Copies frames [start, start + len) channel-major into `out` (width * len values).
    /// Returns false when part of the range is no longer (or not yet) held.
    pub fn copy_channel_major(&self, start: u64, len: usize, out: &mut [f32]) -> bool {
        if start < self.oldest() || start + len as u64 > self.total {
            return false;
        }
        for i in 0..len {
            let frame = self.frame(start + i as u64);
            for (ch, &v) in frame.iter().enumerate() {
                out[ch * len + i] = v;
            }
        }
        true
    }
}

/// One scalar per frame (timestamps, receive times), the last `capacity` kept.
#[derive(Debug)]
pub struct ScalarRing<T: Copy + Default> {
    data: Vec<T>,
    total: u64,
}

impl<T: Copy + Default> ScalarRing<T> {
    pub fn new(capacity: usize) -> Self {
        Self { data: vec![T::default(); capacity], total: 0 }
    }

    pub fn push(&mut self, value: T) {
        let capacity = self.data.len() as u64;
        self.data[(self.total % capacity) as usize] = value;
        self.total += 1;
    }

    pub fn oldest(&self) -> u64 {
        self.total.saturating_sub(self.data.len() as u64)
    }

    /// Moves the write position `n` ahead without writing.
    pub fn advance(&mut self, n: u64) {
        self.total += n;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn get(&self, index: u64) -> Option<T> {
        (index >= self.oldest() && index < self.total).then(|| self.data[(index % self.data.len() as u64) as usize])
    }
}

impl ScalarRing<f64> {
    /// The held index whose (non-decreasing) value is nearest to `value`, by binary search.
    pub fn nearest_index(&self, value: f64) -> Option<u64> {
        let (mut lo, mut hi) = (self.oldest(), self.total);
        if lo == hi {
            return None;
        }
        // First index with data >= value.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid)? < value { lo = mid + 1 } else { hi = mid }
        }
        if lo == self.total {
            return Some(self.total - 1);
        }
        if lo > self.oldest() {
            let before = self.get(lo - 1)?;
            let after = self.get(lo)?;
            if (value - before) <= (after - value) {
                return Some(lo - 1);
            }
        }
        Some(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ring_keeps_the_last_capacity_frames() {
        let mut ring = FrameRing::new(3, 2);
        for i in 0..5 {
            ring.push(&[i as f32, -(i as f32)]);
        }
        assert_eq!(ring.oldest(), 2);
        let mut out = vec![0.0; 6];
        assert!(ring.copy_channel_major(2, 3, &mut out));
        assert_eq!(out, vec![2.0, 3.0, 4.0, -2.0, -3.0, -4.0]);
        assert!(!ring.copy_channel_major(1, 2, &mut out[..4]));
        assert!(!ring.copy_channel_major(4, 2, &mut out[..4]));
    }

    #[test]
    fn nearest_index_picks_the_closest_timestamp() {
        let mut ring = ScalarRing::<f64>::new(8);
        for i in 0..6 {
            ring.push(10.0 + i as f64 * 0.5);
        }
        assert_eq!(ring.nearest_index(10.0), Some(0));
        assert_eq!(ring.nearest_index(10.7), Some(1));
        assert_eq!(ring.nearest_index(10.8), Some(2));
        assert_eq!(ring.nearest_index(99.0), Some(5));
        assert_eq!(ring.nearest_index(0.0), Some(0));
    }
}
