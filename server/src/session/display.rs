//! What a dashboard shows of a session's signal: a bounded, decimated copy of its first channels
//! and its markers, kept by the session's worker for readers that come and go. The worker never
//! waits for a reader: a write that finds the lock taken is skipped (the display loses a few
//! points, decoding nothing), and the rings are allocated once, at the session's start.
//!
//! Decimating by keeping every n-th sample folds everything above the new Nyquist frequency onto
//! the plot (50 Hz mains in a 256 Hz stream kept 1 in 6 draws as a 7.3 Hz wave), so the shown
//! channels are low-passed first (Butterworth, in the worker, on every frame whether or not the
//! point is then written), as EEG viewers do.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::card::FilterDesign;
use crate::dsp::design::design_sos;
use crate::dsp::sos::SosFilter;

/// Channels shown per session.
pub const DISPLAY_CHANNELS: usize = 8;
/// Display rate: a stream is decimated to about this many points per second (10 s across a
/// plot about 1000 pixels wide).
const DISPLAY_HZ: f64 = 100.0;
/// The anti-alias low-pass: its cutoff as a fraction of the display rate, and its order (the
/// highest a card may ask for). Measured with scipy's design of the same filter: 50 Hz mains is
/// down 80 dB for a 256 Hz stream (cutoff 25.6 Hz), 54 dB for a 1 kHz one (30 Hz, mains at the
/// display's Nyquist frequency), 60 Hz mains 73 dB; 20 Hz passes untouched.
const ANTI_ALIAS_FRACTION: f64 = 0.3;
const ANTI_ALIAS_ORDER: usize = crate::card::MAX_FILTER_ORDER;
/// Seconds of signal kept.
const DISPLAY_SECONDS: f64 = 10.0;
const MARKERS_KEPT: usize = 64;

pub struct DisplayTap {
    ring: Mutex<DisplayRing>,
    /// Points per second shown, and the anti-alias cutoff (None: the stream is shown as it is).
    pub rate_hz: f64,
    pub anti_alias_hz: Option<f64>,
    step: usize,
    sections: Vec<[f64; 6]>,
}

/// The worker's side: the anti-alias filter's state and the next frame's index (every `step`-th
/// is kept). It lives outside the ring's lock so that the filter sees every frame.
pub struct DisplayDecimator {
    filter: SosFilter,
    channels: usize,
    step: u64,
    sample: u64,
}

struct Point {
    timestamp: f64,
    /// The sample's index in the stream (points a busy lock skipped leave a hole in it).
    sample: u64,
    values: [f32; DISPLAY_CHANNELS],
}

struct DisplayRing {
    channels: usize,
    /// Oldest first.
    points: VecDeque<Point>,
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
    /// Samples per second of the source's own clock over the points kept (None until two points
    /// with distinct timestamps): the rate the rig really sends at, whatever the wall clock did.
    pub effective_rate_hz: Option<f64>,
}

/// The writer for one chunk's frames: every frame goes through the filter; the kept ones reach
/// the ring if its lock was free when the chunk began.
pub struct DisplayWriter<'a> {
    ring: Option<std::sync::MutexGuard<'a, DisplayRing>>,
    decimator: &'a mut DisplayDecimator,
}

impl DisplayWriter<'_> {
    pub fn frame(&mut self, frame: &[f32], timestamp: f64) {
        let d = &mut *self.decimator;
        let mut values = [0f32; DISPLAY_CHANNELS];
        values[..d.channels].copy_from_slice(&frame[..d.channels]);
        // A non-finite sample resets the filter to rest and shows as 0 (ingest has already
        // reported it); nothing non-finite reaches a page.
        let _finite = d.filter.process_frame(&mut values[..d.channels]);
        let sample = d.sample;
        d.sample += 1;
        if let (0, Some(ring)) = (sample % d.step, self.ring.as_mut()) {
            if ring.points.len() == ring.capacity {
                ring.points.pop_front();
            }
            ring.points.push_back(Point { timestamp, sample, values });
            ring.points_kept += 1;
        }
    }
}

impl DisplayTap {
    pub fn new(n_channels: usize, rate: f64) -> Self {
        let step = (rate / DISPLAY_HZ).ceil().max(1.0) as usize;
        let rate_hz = rate / step as f64;
        let anti_alias_hz = (step > 1).then_some(ANTI_ALIAS_FRACTION * rate_hz);
        let sections = anti_alias_hz
            .and_then(|cutoff_hz| design_sos(&[FilterDesign::Lowpass { order: ANTI_ALIAS_ORDER, cutoff_hz }], rate).ok())
            .unwrap_or_default();
        let capacity = (DISPLAY_SECONDS * rate_hz).ceil() as usize + 1;
        let ring = DisplayRing {
            channels: n_channels.min(DISPLAY_CHANNELS),
            points: VecDeque::with_capacity(capacity),
            capacity,
            markers: VecDeque::with_capacity(MARKERS_KEPT),
            points_kept: 0,
            markers_kept: 0,
        };
        Self { ring: Mutex::new(ring), rate_hz, anti_alias_hz, step, sections }
    }

    /// The worker's filter and decimation state for this tap.
    pub fn decimator(&self) -> DisplayDecimator {
        let channels = self.ring.lock().map_or(0, |r| r.channels);
        DisplayDecimator { filter: SosFilter::new(&self.sections, channels), channels, step: self.step as u64, sample: 0 }
    }

    /// The writer for one chunk's frames; its points are not kept if a reader holds the ring
    /// right now (the frames still go through the filter).
    pub fn writer<'a>(&'a self, decimator: &'a mut DisplayDecimator) -> DisplayWriter<'a> {
        DisplayWriter { ring: self.ring.try_lock().ok(), decimator }
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
        for point in ring.points.iter().skip(ring.points.len() - new_points) {
            out.times.push(point.timestamp);
            for (row, v) in out.values.iter_mut().zip(&point.values) {
                row.push(*v);
            }
        }
        let new_markers = (ring.markers_kept.saturating_sub(seen.markers) as usize).min(ring.markers.len());
        out.markers = ring.markers.iter().skip(ring.markers.len() - new_markers).copied().collect();
        if let (Some(first), Some(last)) = (ring.points.front(), ring.points.back()) {
            let seconds = last.timestamp - first.timestamp;
            if seconds > 0.0 && last.sample > first.sample {
                out.effective_rate_hz = Some((last.sample - first.sample) as f64 / seconds);
            }
        }
        Some((out, DisplayPosition { points: ring.points_kept, markers: ring.markers_kept }))
    }
}

#[cfg(test)]
mod tests {
    use super::{DisplayPosition, DisplayTap};

    #[test]
    fn the_display_keeps_a_decimated_bounded_copy() {
        let tap = DisplayTap::new(2, 1000.0);
        let mut decimator = tap.decimator();
        let mut writer = tap.writer(&mut decimator);
        for i in 0..20_000 {
            writer.frame(&[1.0, -1.0], i as f64 / 1000.0);
        }
        drop(writer);
        let (seen, position) = tap.since(DisplayPosition::default()).unwrap();
        // 1 kHz decimated by 10 to 100 Hz, 10 s of it at most; a constant passes the low-pass.
        assert_eq!(seen.times.len(), 1001);
        assert_eq!(seen.values.len(), 2);
        assert!(seen.times.windows(2).all(|w| (w[1] - w[0] - 0.01).abs() < 1e-9));
        assert!((seen.values[0].last().unwrap() - 1.0).abs() < 1e-4 && (seen.values[1].last().unwrap() + 1.0).abs() < 1e-4);
        assert!((seen.effective_rate_hz.unwrap() - 1000.0).abs() < 1e-6);
        assert_eq!(tap.anti_alias_hz, Some(30.0));
        assert!(tap.since(position).unwrap().0.times.is_empty());
        // A marker for samples already shown still reaches the reader; so do points whose
        // timestamps go back (a session replayed from its start).
        tap.marker(3.0, 2);
        let mut writer = tap.writer(&mut decimator);
        for i in 0..10 {
            writer.frame(&[1.0, 1.0], i as f64 / 1000.0);
        }
        drop(writer);
        let (next, _) = tap.since(position).unwrap();
        assert_eq!((next.times, next.markers), (vec![0.0], vec![(3.0, 2)]));
        // A reader never waits for the worker.
        let writer = tap.writer(&mut decimator);
        assert!(tap.since(position).is_none());
        drop(writer);
    }

    /// The attenuations the module states, from the designed sections' frequency response:
    /// 50 Hz mains at 256 Hz and at 1 kHz, 60 Hz mains at 1 kHz; 20 Hz passes.
    #[test]
    fn the_anti_alias_filter_attenuates_mains_as_stated() {
        let gain_db = |tap: &DisplayTap, rate: f64, f: f64| {
            let w = std::f64::consts::TAU * f / rate;
            let gain: f64 = tap
                .sections
                .iter()
                .map(|s| {
                    // |b0 + b1 z^-1 + b2 z^-2| / |a0 + a1 z^-1 + a2 z^-2| at z = e^{jw}
                    let at = |c: [f64; 3]| {
                        let (re, im) = (c[0] + c[1] * w.cos() + c[2] * (2.0 * w).cos(), -c[1] * w.sin() - c[2] * (2.0 * w).sin());
                        (re * re + im * im).sqrt()
                    };
                    at([s[0], s[1], s[2]]) / at([s[3], s[4], s[5]])
                })
                .product();
            20.0 * gain.log10()
        };
        let (muse, rig) = (DisplayTap::new(4, 256.0), DisplayTap::new(64, 1000.0));
        assert_eq!((muse.anti_alias_hz.map(|f| (f * 10.0).round() / 10.0), rig.anti_alias_hz), (Some(25.6), Some(30.0)));
        assert!(gain_db(&muse, 256.0, 50.0) < -80.0, "{}", gain_db(&muse, 256.0, 50.0));
        assert!(gain_db(&rig, 1000.0, 50.0) < -53.5, "{}", gain_db(&rig, 1000.0, 50.0));
        assert!(gain_db(&rig, 1000.0, 60.0) < -73.0, "{}", gain_db(&rig, 1000.0, 60.0));
        assert!(gain_db(&muse, 256.0, 20.0).abs() < 0.5 && gain_db(&rig, 1000.0, 20.0).abs() < 0.5);
    }

    /// 10 Hz plus stronger 50 Hz mains at 256 Hz: kept 1 in 3 without a low-pass, mains would
    /// fold to 35.3 Hz at three times the 10 Hz amplitude; filtered, the 10 Hz wave is what shows.
    #[test]
    fn mains_does_not_fold_onto_the_display() {
        let rate = 256.0;
        let tap = DisplayTap::new(1, rate);
        let mut decimator = tap.decimator();
        let mut writer = tap.writer(&mut decimator);
        let tau = std::f64::consts::TAU;
        for i in 0..2560 {
            let t = f64::from(i) / rate;
            writer.frame(&[((tau * 10.0 * t).sin() + 3.0 * (tau * 50.0 * t).sin()) as f32], t);
        }
        drop(writer);
        let (seen, _) = tap.since(DisplayPosition::default()).unwrap();
        let shown_rate = tap.rate_hz;
        // Amplitude at a frequency, over the last 5 s (the filter settled).
        let (t, v) = (&seen.times[seen.times.len() - 427..], &seen.values[0][seen.values[0].len() - 427..]);
        let amplitude = |f: f64| {
            let (re, im) = t
                .iter()
                .zip(v)
                .fold((0.0, 0.0), |(re, im), (t, v)| (re + f64::from(*v) * (tau * f * t).cos(), im + f64::from(*v) * (tau * f * t).sin()));
            2.0 * (re * re + im * im).sqrt() / t.len() as f64
        };
        let alias = (50.0 - shown_rate).abs();
        assert!((amplitude(10.0) - 1.0).abs() < 0.05, "10 Hz shown at {}", amplitude(10.0));
        assert!(amplitude(alias) < 0.003, "mains folded to {alias} Hz with amplitude {}", amplitude(alias));
    }
}
