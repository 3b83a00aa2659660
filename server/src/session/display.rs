//! What a dashboard shows of a session's signal: a bounded, decimated copy of its first channels
//! and its markers, kept by the session's worker for readers that come and go. The worker never
//! waits for a reader: a write that finds the lock taken is skipped (the display loses a few
//! points, decoding nothing), and the rings are allocated once, at the session's start.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Channels shown per session.
pub const DISPLAY_CHANNELS: usize = 8;
/// Display rate: a stream is decimated to about this many points per second.
const DISPLAY_HZ: f64 = 50.0;
/// Seconds of signal kept.
const DISPLAY_SECONDS: f64 = 10.0;
const MARKERS_KEPT: usize = 64;

pub struct DisplayTap {
    ring: Mutex<DisplayRing>,
}

struct DisplayRing {
    channels: usize,
    step: usize,
    phase: usize,
    /// (timestamp, values of the shown channels), oldest first.
    points: VecDeque<(f64, [f32; DISPLAY_CHANNELS])>,
    capacity: usize,
    markers: VecDeque<(f64, i32)>,
    /// Points and markers ever kept: a reader's position (timestamps may repeat or go back, and
    /// markers may arrive after their samples).
    points_kept: u64,
    markers_kept: u64,
}

/// Where a reader is: how many points and markers it has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DisplayPosition {
    pub points: u64,
    pub markers: u64,
}

/// What a reader takes: the points and markers newer than the time it asked from.
#[derive(Default)]
pub struct DisplaySince {
    pub times: Vec<f64>,
    /// One row per shown channel.
    pub values: Vec<Vec<f32>>,
    pub markers: Vec<(f64, i32)>,
}

pub struct DisplayWriter<'a>(std::sync::MutexGuard<'a, DisplayRing>);

impl DisplayWriter<'_> {
    /// Keeps every `step`-th frame.
    pub fn frame(&mut self, frame: &[f32], timestamp: f64) {
        let ring = &mut *self.0;
        if ring.phase == 0 {
            let mut shown = [0f32; DISPLAY_CHANNELS];
            shown[..ring.channels].copy_from_slice(&frame[..ring.channels]);
            if ring.points.len() == ring.capacity {
                ring.points.pop_front();
            }
            ring.points.push_back((timestamp, shown));
            ring.points_kept += 1;
        }
        ring.phase = (ring.phase + 1) % ring.step;
    }
}

impl DisplayTap {
    pub fn new(n_channels: usize, rate: f64) -> Self {
        let step = (rate / DISPLAY_HZ).ceil().max(1.0) as usize;
        let capacity = (DISPLAY_SECONDS * rate / step as f64).ceil() as usize + 1;
        let ring = DisplayRing {
            channels: n_channels.min(DISPLAY_CHANNELS),
            step,
            phase: 0,
            points: VecDeque::with_capacity(capacity),
            capacity,
            markers: VecDeque::with_capacity(MARKERS_KEPT),
            points_kept: 0,
            markers_kept: 0,
        };
        Self { ring: Mutex::new(ring) }
    }

    /// The writer for one chunk's frames, or None if a reader holds the ring right now (the
    /// chunk is then not shown).
    pub fn writer(&self) -> Option<DisplayWriter<'_>> {
        self.ring.try_lock().ok().map(DisplayWriter)
    }

    pub fn marker(&self, timestamp: f64, code: i32) {
        let Ok(mut ring) = self.ring.try_lock() else { return };
        if ring.markers.len() == MARKERS_KEPT {
            ring.markers.pop_front();
        }
        ring.markers.push_back((timestamp, code));
        ring.markers_kept += 1;
    }

    /// The points and markers kept since `seen`, and the position after them; None while the
    /// worker writes (the reader tries again on its next update: it never waits on the worker).
    pub fn since(&self, seen: DisplayPosition) -> Option<(DisplaySince, DisplayPosition)> {
        let ring = match self.ring.try_lock() {
            Ok(ring) => ring,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let mut out = DisplaySince { values: vec![Vec::new(); ring.channels], ..Default::default() };
        let new_points = (ring.points_kept.saturating_sub(seen.points) as usize).min(ring.points.len());
        for (t, values) in ring.points.iter().skip(ring.points.len() - new_points) {
            out.times.push(*t);
            for (row, v) in out.values.iter_mut().zip(values) {
                row.push(*v);
            }
        }
        let new_markers = (ring.markers_kept.saturating_sub(seen.markers) as usize).min(ring.markers.len());
        out.markers = ring.markers.iter().skip(ring.markers.len() - new_markers).copied().collect();
        Some((out, DisplayPosition { points: ring.points_kept, markers: ring.markers_kept }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_display_keeps_a_decimated_bounded_copy() {
        let tap = super::DisplayTap::new(2, 1000.0);
        let mut writer = tap.writer().unwrap();
        for i in 0..20_000 {
            writer.frame(&[i as f32, -(i as f32)], i as f64 / 1000.0);
        }
        drop(writer);
        let (seen, position) = tap.since(super::DisplayPosition::default()).unwrap();
        // 1 kHz decimated by 20 to 50 Hz, 10 s of it at most.
        assert_eq!(seen.times.len(), 501);
        assert_eq!(seen.values.len(), 2);
        assert!(seen.times.windows(2).all(|w| (w[1] - w[0] - 0.02).abs() < 1e-9));
        assert!(tap.since(position).unwrap().0.times.is_empty());
        // A marker for samples already shown still reaches the reader; so do points whose
        // timestamps go back (a session replayed from its start).
        tap.marker(3.0, 2);
        let mut writer = tap.writer().unwrap();
        writer.frame(&[1.0, 1.0], 0.0);
        drop(writer);
        let (next, _) = tap.since(position).unwrap();
        assert_eq!((next.times, next.markers), (vec![0.0], vec![(3.0, 2)]));
        // A reader never waits for the worker.
        let writer = tap.writer().unwrap();
        assert!(tap.since(position).is_none());
        drop(writer);
    }
}
