//! What a dashboard shows of a session's signal: a bounded, decimated copy of its first channels
//! and its markers, kept by the session's worker for readers that come and go. The worker never
//! waits for a reader: a write that finds the lock taken is skipped (the display loses a few
//! points, decoding nothing), and the rings are allocated once, at the session's start.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

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
    }

    /// Points and markers with timestamps after `after`.
    pub fn since(&self, after: f64) -> DisplaySince {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = DisplaySince { values: vec![Vec::new(); ring.channels], ..Default::default() };
        for (t, values) in ring.points.iter().filter(|(t, _)| *t > after) {
            out.times.push(*t);
            for (row, v) in out.values.iter_mut().zip(values) {
                row.push(*v);
            }
        }
        out.markers = ring.markers.iter().filter(|(t, _)| *t > after).copied().collect();
        out
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
        let seen = tap.since(f64::NEG_INFINITY);
        // 1 kHz decimated by 20 to 50 Hz, 10 s of it at most.
        assert_eq!(seen.times.len(), 501);
        assert_eq!(seen.values.len(), 2);
        assert!(seen.times.windows(2).all(|w| (w[1] - w[0] - 0.02).abs() < 1e-9));
        assert_eq!(tap.since(19.9).times.len(), 4);
        tap.marker(19.95, 2);
        assert_eq!(tap.since(19.9).markers, [(19.95, 2)]);
    }
}
