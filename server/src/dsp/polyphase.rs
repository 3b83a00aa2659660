//! [`Polyphase`]: a window at the stream's rate brought to the model's rate by a rational ratio
//! up/down, with a linear-phase anti-alias FIR: the filter and the alignment of
//! `scipy.signal.resample_poly(x, up, down)` (Kaiser-windowed sinc, beta 5, cutoff at the lower
//! of the two Nyquist frequencies, `half_width` x max(up, down) taps each side of the centre:
//! the filter spans +-half_width samples of the slower rate; scipy's default is 10).
//!
//! Model sample j of a window whose first stream sample is `first` sits at stream time
//! first + j * down / up (the model's grid starts at the window, as decimation's x[first::k]
//! does), and is
//!     y[j] = sum_n x[n] * h[(first - n) * up + j * down + half]
//! over the filtered stream x. The filter is centred (zero phase), so a window needs the
//! `lookahead` stream samples after its nominal end: the server decodes it once they have
//! arrived, never before (causal), which delays every prediction by lookahead / stream rate.
//!
//! Hand-written because no crate computes this on demand from a ring: rubato streams whole
//! signals through its own sinc design (not scipy's), and the offline twin must be able to
//! reproduce every served window with scipy (`models/common/preprocess.py`).

use std::sync::Arc;

/// The largest up or down factor served: the filter has 2 x half_width x max(up, down) + 1 taps.
pub const MAX_RATIO_TERM: u64 = 5000;

/// scipy.signal.resample_poly's filter half-width, in samples of the slower rate.
pub const DEFAULT_HALF_WIDTH: usize = 10;

/// scipy.signal.resample_poly's default window: Kaiser with this beta.
const KAISER_BETA: f64 = 5.0;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RatioError {
    #[error("rates must be positive multiples of 0.001 Hz, got {0} Hz")]
    NotMilliHertz(f64),
    #[error(
        "a {stream} Hz stream and a {model} Hz model are {up}/{down} apart: the resampling filter would need more than {MAX_RATIO_TERM} phases"
    )]
    TooFine { stream: f64, model: f64, up: u64, down: u64 },
}

#[derive(Debug, Clone)]
pub struct Polyphase {
    up: usize,
    down: usize,
    /// 2 * half + 1 taps, already multiplied by `up` (the gain lost to zero-stuffing).
    taps: Arc<[f64]>,
    half: usize,
}

impl Polyphase {
    /// The resampler from `stream_rate` to `model_rate` (Hz, multiples of 0.001 Hz) whose filter
    /// spans +-`half_width` samples of the slower rate (1 to 64).
    pub fn new(stream_rate: f64, model_rate: f64, half_width: usize) -> Result<Self, RatioError> {
        let (up, down) = ratio(stream_rate, model_rate)?;
        let (up, down) = (up as usize, down as usize);
        let widest = up.max(down);
        let half = half_width.clamp(1, 64) * widest;
        let mut taps = lowpass(2 * half + 1, 1.0 / widest as f64);
        for tap in &mut taps {
            *tap *= up as f64;
        }
        Ok(Self { up, down, taps: taps.into(), half })
    }

    pub fn up(&self) -> usize {
        self.up
    }

    pub fn down(&self) -> usize {
        self.down
    }

    pub fn taps(&self) -> &[f64] {
        &self.taps
    }

    /// Stream samples before a window's first sample that its model samples read.
    pub fn history(&self) -> usize {
        self.half / self.up
    }

    /// Stream samples from a window's first sample through the last one its `model_samples`
    /// model samples read.
    pub fn reach(&self, model_samples: usize) -> usize {
        ((model_samples.max(1) - 1) * self.down + self.half) / self.up + 1
    }

    /// Stream samples the window's nominal span covers: first + j * down / up for every j.
    pub fn span(&self, model_samples: usize) -> usize {
        ((model_samples.max(1) - 1) * self.down) / self.up + 1
    }

    /// One channel: `segment` is the filtered stream from `history()` samples before the
    /// window's first sample, `history() + reach(out.len())` samples long (zeros before the
    /// stream began); `out` receives the model samples.
    pub fn resample(&self, segment: &[f32], out: &mut [f32]) {
        let (up, n_taps) = (self.up, self.taps.len());
        debug_assert_eq!(segment.len(), self.history() + self.reach(out.len()));
        let base = self.history() * up + self.half;
        for (j, y) in out.iter_mut().enumerate() {
            let position = base + j * self.down;
            let mut m = position / up;
            let mut k = position - m * up;
            let mut sum = 0.0f64;
            loop {
                sum += self.taps[k] * f64::from(segment[m]);
                k += up;
                if k >= n_taps || m == 0 {
                    break;
                }
                m -= 1;
            }
            *y = sum as f32;
        }
    }
}

/// The reduced ratio up/down = model_rate / stream_rate.
fn ratio(stream_rate: f64, model_rate: f64) -> Result<(u64, u64), RatioError> {
    let millihertz = |rate: f64| {
        let scaled = rate * 1000.0;
        let rounded = scaled.round();
        if rate > 0.0 && rate.is_finite() && rounded <= 1e15 && (scaled - rounded).abs() <= 1e-6 * rounded.max(1.0) {
            Ok(rounded as u64)
        } else {
            Err(RatioError::NotMilliHertz(rate))
        }
    };
    let (stream, model) = (millihertz(stream_rate)?, millihertz(model_rate)?);
    let common = gcd(stream, model);
    let (up, down) = (model / common, stream / common);
    if up.max(down) > MAX_RATIO_TERM {
        return Err(RatioError::TooFine { stream: stream_rate, model: model_rate, up, down });
    }
    Ok((up, down))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// scipy.signal.firwin(n_taps, cutoff, window=("kaiser", 5.0)): a windowed-sinc low-pass with
/// `cutoff` relative to Nyquist, scaled to unit gain at DC.
fn lowpass(n_taps: usize, cutoff: f64) -> Vec<f64> {
    let alpha = (n_taps - 1) as f64 / 2.0;
    let i0_beta = bessel_i0(KAISER_BETA);
    let mut taps: Vec<f64> = (0..n_taps)
        .map(|n| {
            let m = n as f64 - alpha;
            let x = cutoff * m;
            let sinc = if x == 0.0 { 1.0 } else { (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x) };
            let r = if alpha == 0.0 { 0.0 } else { m / alpha };
            let window = bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
            cutoff * sinc * window
        })
        .collect();
    let sum: f64 = taps.iter().sum();
    for tap in &mut taps {
        *tap /= sum;
    }
    taps
}

/// Modified Bessel function of the first kind, order 0, by its power series (converges fast for
/// the Kaiser window's arguments, at most beta).
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term, mut k) = (1.0f64, 1.0f64, 1.0f64);
    loop {
        term *= (x / (2.0 * k)).powi(2);
        sum += term;
        if term < 1e-17 * sum {
            return sum;
        }
        k += 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_reduce_and_odd_rates_are_refused() {
        assert_eq!(ratio(256.0, 200.0), Ok((25, 32)));
        assert_eq!(ratio(1000.0, 120.0), Ok((3, 25)));
        assert_eq!(ratio(1200.0, 120.0), Ok((1, 10)));
        assert_eq!(ratio(120.0, 120.0), Ok((1, 1)));
        assert!(matches!(ratio(250.1234, 200.0), Err(RatioError::NotMilliHertz(_))));
        assert!(matches!(ratio(250.123, 200.0), Err(RatioError::TooFine { .. })));
        assert!(matches!(ratio(f64::NAN, 200.0), Err(RatioError::NotMilliHertz(_))));
    }

    #[test]
    fn the_filter_has_unit_dc_gain_and_a_constant_stays_constant() {
        let resampler = Polyphase::new(256.0, 200.0, DEFAULT_HALF_WIDTH).unwrap();
        let sum: f64 = resampler.taps().iter().sum();
        assert!((sum - 25.0).abs() < 1e-9);
        // A constant stream, far from its start, resamples to the same constant.
        let t = 40;
        let segment = vec![3.0f32; resampler.history() + resampler.reach(t)];
        let mut out = vec![0.0; t];
        resampler.resample(&segment, &mut out);
        for v in out {
            assert!((v - 3.0).abs() < 1e-3, "{v}");
        }
    }

    #[test]
    fn kaiser_lowpass_matches_scipy_firwin() {
        // scipy.signal.firwin(11, 0.5, window=("kaiser", 5.0))[:6]
        let taps = lowpass(11, 0.5);
        let expected = [0.0023408802500443473, 0.0, -0.04409407647549766, 0.0, 0.29134753521184376, 0.5008113220272191];
        for (t, e) in taps.iter().zip(expected) {
            assert!((t - e).abs() < 1e-12, "{taps:?}");
        }
    }

    #[test]
    fn a_window_that_resamples_to_non_finite_values_leaves_the_next_one_clean() {
        // Stateless by design: each window is computed from the ring alone, so nothing of a bad
        // window carries into the next (dispatch refuses a window whose model input is not
        // finite).
        let p = Polyphase::new(256.0, 200.0, DEFAULT_HALF_WIDTH).unwrap();
        let samples = 40;
        let len = p.history() + p.reach(samples);
        let mut out = vec![0.0f32; samples];
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut segment: Vec<f32> = (0..len).map(|i| (i as f32 * 0.2).sin()).collect();
            segment[len / 2] = bad;
            p.resample(&segment, &mut out);
            assert!(out.iter().any(|v| !v.is_finite()), "{bad}: seen as not finite");
            let clean: Vec<f32> = (0..len).map(|i| (i as f32 * 0.2).sin()).collect();
            p.resample(&clean, &mut out);
            assert!(out.iter().all(|v| v.is_finite() && v.abs() < 2.0), "{bad}: the next window is clean");
        }
    }
}
