//! Fixed-capacity rings indexed by absolute sample index, one per stream (or attachment). Memory
//! comes a page at a time, as samples first arrive; once a page is there, writing a sample never
//! allocates.

/// Slots of `width` values, allocated a page at a time when a slot of the page is first written:
/// a ring sized for 30 s of a fast stream takes memory only for the samples that arrived (a gap
/// of a billion samples takes none), and a full ring never allocates again.
#[derive(Debug)]
struct Pages<T> {
    width: usize,
    slots: usize,
    pages: Vec<Option<Box<[T]>>>,
}

/// Slots per page.
const PAGE_SLOTS: usize = 4096;

impl<T: Copy + Default> Pages<T> {
    fn new(slots: usize, width: usize) -> Self {
        Self { width, slots, pages: (0..slots.div_ceil(PAGE_SLOTS)).map(|_| None).collect() }
    }

    /// Slot `slot`, or `None` if nothing of its page was written.
    fn get(&self, slot: usize) -> Option<&[T]> {
        let page = self.pages[slot / PAGE_SLOTS].as_deref()?;
        let at = slot % PAGE_SLOTS * self.width;
        Some(&page[at..at + self.width])
    }

    fn get_mut(&mut self, slot: usize) -> &mut [T] {
        let (width, page_index) = (self.width, slot / PAGE_SLOTS);
        // The last page only as long as the slots left: a ring never takes more than its slots.
        let page_slots = PAGE_SLOTS.min(self.slots - page_index * PAGE_SLOTS);
        let page = self.pages[page_index].get_or_insert_with(|| vec![T::default(); page_slots * width].into_boxed_slice());
        let at = slot % PAGE_SLOTS * width;
        &mut page[at..at + width]
    }
}

/// Frames of `width` f32 values (one per channel), the last `capacity` of them kept.
#[derive(Debug)]
pub struct FrameRing {
    capacity: usize,
    width: usize,
    data: Pages<f32>,
    /// What a frame never written reads as.
    zeros: Vec<f32>,
    /// Absolute index of the next frame to be written.
    total: u64,
}

impl FrameRing {
    pub fn new(capacity: usize, width: usize) -> Self {
        Self { capacity, width, data: Pages::new(capacity, width), zeros: vec![0.0; width], total: 0 }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Index of the oldest frame still held.
    pub fn oldest(&self) -> u64 {
        self.total.saturating_sub(self.capacity as u64)
    }

    /// Values per frame.
    pub fn width(&self) -> usize {
        self.width
    }

    fn slot(&self, index: u64) -> usize {
        (index % self.capacity as u64) as usize
    }

    pub fn push(&mut self, frame: &[f32]) {
        let slot = self.slot(self.total);
        self.data.get_mut(slot).copy_from_slice(&frame[..self.width]);
        self.total += 1;
    }

    /// Moves the write position `n` frames ahead without writing (skipped frames read as stale
    /// data, so callers only skip indices they will never read).
    pub fn advance(&mut self, n: u64) {
        self.total += n;
    }

    pub fn frame(&self, index: u64) -> &[f32] {
        self.data.get(self.slot(index)).unwrap_or(&self.zeros)
    }

    /// Copies frames [start, start + len) channel-major into `out` (width * len values).
    /// Returns false when part of the range is no longer (or not yet) held.
    pub fn copy_channel_major(&self, start: u64, len: usize, out: &mut [f32]) -> bool {
        self.copy_channel_major_every(start, len, 1, out)
    }

    /// Copies every `step`-th frame of [start, start + len), from the first, channel-major into
    /// `out` (width * ceil(len / step) values). Returns false when part of the range is no
    /// longer (or not yet) held.
    pub fn copy_channel_major_every(&self, start: u64, len: usize, step: usize, out: &mut [f32]) -> bool {
        if start < self.oldest() || start + len as u64 > self.total {
            return false;
        }
        let kept = len.div_ceil(step.max(1));
        for (i, offset) in (0..len).step_by(step.max(1)).enumerate() {
            let frame = self.frame(start + offset as u64);
            for (ch, &v) in frame.iter().enumerate() {
                out[ch * kept + i] = v;
            }
        }
        true
    }
}

/// One scalar per frame (timestamps, receive times), the last `capacity` kept.
#[derive(Debug)]
pub struct ScalarRing<T: Copy + Default> {
    capacity: usize,
    data: Pages<T>,
    total: u64,
}

impl<T: Copy + Default> ScalarRing<T> {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, data: Pages::new(capacity, 1), total: 0 }
    }

    pub fn push(&mut self, value: T) {
        let slot = (self.total % self.capacity as u64) as usize;
        self.data.get_mut(slot)[0] = value;
        self.total += 1;
    }

    pub fn oldest(&self) -> u64 {
        self.total.saturating_sub(self.capacity as u64)
    }

    /// Moves the write position `n` ahead without writing.
    pub fn advance(&mut self, n: u64) {
        self.total += n;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The value at `index` while it is held (the default where nothing was written).
    pub fn get(&self, index: u64) -> Option<T> {
        (index >= self.oldest() && index < self.total)
            .then(|| self.data.get((index % self.capacity as u64) as usize).map_or_else(T::default, |v| v[0]))
    }
}

impl ScalarRing<f64> {
    /// The held index whose (non-decreasing) value is nearest to `value`, by binary search.
    pub fn nearest_index(&self, value: f64) -> Option<u64> {
        self.nearest_index_from(self.oldest(), value)
    }

    /// [`ScalarRing::nearest_index`] among the indices from `from` on (values before it may not
    /// have been written).
    pub fn nearest_index_from(&self, from: u64, value: f64) -> Option<u64> {
        let first = from.max(self.oldest());
        let (mut lo, mut hi) = (first, self.total);
        if lo >= hi {
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
        if lo > first {
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
        let mut every_other = vec![0.0; 4];
        assert!(ring.copy_channel_major_every(2, 3, 2, &mut every_other));
        assert_eq!(every_other, vec![2.0, 4.0, -2.0, -4.0]);
    }

    #[test]
    fn memory_comes_only_for_frames_written() {
        let mut ring = FrameRing::new(3_000_000, 64);
        ring.advance(1_000_000_000);
        ring.push(&[1.0; 64]);
        let pages = ring.data.pages.iter().filter(|p| p.is_some()).count();
        assert_eq!(pages, 1, "a jump of a billion frames takes no memory, one frame one page");
        assert_eq!(ring.frame(1_000_000_000)[0], 1.0);
        assert_eq!(ring.frame(999_999_999), &[0.0; 64][..], "a frame never written reads as zeros");
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
