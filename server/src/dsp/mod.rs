//! Online signal processing, configured per model card.
//!
//! Two stages, split so the ingest path stays cheap and exact:
//! * [`SosFilter`]: causal IIR filtering (second-order sections, direct form II transposed, the
//!   same recurrence as `scipy.signal.sosfilt`), run continuously on every incoming sample of an
//!   attachment's channels, so windows carry no edge transients and match offline filtering of
//!   the whole recording.
//! * [`WindowPreprocessor`]: per-window steps run on the inference thread: decimation to the
//!   model rate, re-referencing, baseline correction, per-channel scaling, clamping.
//!
//! The arithmetic is hand-written on purpose: it is a few lines per step, it must be bit-for-bit
//! predictable against scipy/numpy (the parity test), and it must not allocate per sample.

use crate::decode::card::{Preprocessing, Reference, Scaling};

/// A cascade of biquads applied independently to each of `n_channels` channels.
#[derive(Debug, Clone)]
pub struct SosFilter {
    /// Normalised sections [b0, b1, b2, a1, a2] (a0 divided out).
    sections: Vec<[f64; 5]>,
    /// State per channel per section: z1, z2.
    state: Vec<[f64; 2]>,
    n_channels: usize,
}

impl SosFilter {
    /// `sos` rows are scipy's [b0, b1, b2, a0, a1, a2]. An empty list is the identity filter.
    pub fn new(sos: &[[f64; 6]], n_channels: usize) -> Self {
        let sections: Vec<[f64; 5]> = sos
            .iter()
            .map(|s| {
                let a0 = s[3];
                [s[0] / a0, s[1] / a0, s[2] / a0, s[4] / a0, s[5] / a0]
            })
            .collect();
        let state = vec![[0.0; 2]; sections.len() * n_channels];
        Self { sections, state, n_channels }
    }

    /// Filters one sample of every channel in place (`frame.len() == n_channels`).
    #[inline]
    pub fn process_frame(&mut self, frame: &mut [f32]) {
        if self.sections.is_empty() {
            return;
        }
        let n_sections = self.sections.len();
        for (channel, value) in frame.iter_mut().enumerate().take(self.n_channels) {
            let mut x = f64::from(*value);
            let states = &mut self.state[channel * n_sections..(channel + 1) * n_sections];
            for (section, z) in self.sections.iter().zip(states.iter_mut()) {
                let [b0, b1, b2, a1, a2] = *section;
                let y = b0 * x + z[0];
                z[0] = b1 * x - a1 * y + z[1];
                z[1] = b2 * x - a2 * y;
                x = y;
            }
            *value = x as f32;
        }
    }
}

/// Turns a window of filtered samples at the stream rate into the model's input tensor.
#[derive(Debug, Clone)]
pub struct WindowPreprocessor {
    n_channels: usize,
    /// Stream samples per model sample (integer decimation after the anti-alias filter).
    decimation: usize,
    model_samples: usize,
    reference: Reference,
    /// Model-sample range [start, end) used for baseline correction.
    baseline: Option<(usize, usize)>,
    scaling: Scaling,
    clamp: Option<f32>,
    /// Layout of the model input: true = [channels x time], false = [time x channels].
    channels_first: bool,
}

impl WindowPreprocessor {
    pub fn new(
        pre: &Preprocessing,
        n_channels: usize,
        decimation: usize,
        model_samples: usize,
        window_tmin_s: f64,
        model_rate_hz: f64,
        channels_first: bool,
    ) -> Self {
        let baseline = pre.baseline_s.map(|[from, to]| {
            let index = |t: f64| (((t - window_tmin_s) * model_rate_hz).round().max(0.0) as usize).min(model_samples);
            (index(from), index(to))
        });
        Self {
            n_channels,
            decimation,
            model_samples,
            reference: pre.reference,
            baseline,
            scaling: pre.scaling.clone(),
            clamp: pre.clamp,
            channels_first,
        }
    }

    /// `window`: channel-major [n_channels x (model_samples * decimation)] filtered samples.
    /// `out`: the model input, [n_channels x model_samples] or [model_samples x n_channels].
    /// `scratch`: reusable buffer of n_channels * model_samples values.
    pub fn run(&self, window: &[f32], scratch: &mut Vec<f32>, out: &mut [f32]) {
        let (c, t) = (self.n_channels, self.model_samples);
        let stream_len = t * self.decimation;
        debug_assert_eq!(window.len(), c * stream_len);
        scratch.clear();
        scratch.resize(c * t, 0.0);
        // Decimate: keep every `decimation`-th sample starting at the first (numpy x[::k]).
        for ch in 0..c {
            let src = &window[ch * stream_len..(ch + 1) * stream_len];
            let dst = &mut scratch[ch * t..(ch + 1) * t];
            for (i, v) in dst.iter_mut().enumerate() {
                *v = src[i * self.decimation];
            }
        }
        if self.reference == Reference::Average && c > 1 {
            for i in 0..t {
                let mean = (0..c).map(|ch| f64::from(scratch[ch * t + i])).sum::<f64>() / c as f64;
                for ch in 0..c {
                    scratch[ch * t + i] = (f64::from(scratch[ch * t + i]) - mean) as f32;
                }
            }
        }
        if let Some((from, to)) = self.baseline.filter(|(from, to)| to > from) {
            for ch in 0..c {
                let row = &mut scratch[ch * t..(ch + 1) * t];
                let mean = row[from..to].iter().map(|&v| f64::from(v)).sum::<f64>() / (to - from) as f64;
                for v in row.iter_mut() {
                    *v = (f64::from(*v) - mean) as f32;
                }
            }
        }
        match &self.scaling {
            Scaling::None => {}
            Scaling::Fixed { center, scale } => {
                for ch in 0..c {
                    let (m, s) = (center[ch], scale[ch]);
                    for v in &mut scratch[ch * t..(ch + 1) * t] {
                        *v = ((f64::from(*v) - m) / s) as f32;
                    }
                }
            }
            Scaling::WindowZscore { epsilon } => {
                for ch in 0..c {
                    let row = &mut scratch[ch * t..(ch + 1) * t];
                    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / t as f64;
                    let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / t as f64;
                    let std = var.sqrt() + epsilon;
                    for v in row.iter_mut() {
                        *v = ((f64::from(*v) - mean) / std) as f32;
                    }
                }
            }
        }
        if let Some(limit) = self.clamp {
            for v in scratch.iter_mut() {
                *v = v.clamp(-limit, limit);
            }
        }
        if self.channels_first {
            out.copy_from_slice(scratch);
        } else {
            for ch in 0..c {
                for i in 0..t {
                    out[i * c + ch] = scratch[ch * t + i];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_filter_passes_samples_through() {
        let mut filter = SosFilter::new(&[], 2);
        let mut frame = [1.5, -2.0];
        filter.process_frame(&mut frame);
        assert_eq!(frame, [1.5, -2.0]);
    }

    #[test]
    fn first_order_section_matches_hand_computed_recurrence() {
        // y[n] = 0.5 x[n] + 0.5 x[n-1] (moving average): impulse response 0.5, 0.5, 0.
        let mut filter = SosFilter::new(&[[0.5, 0.5, 0.0, 1.0, 0.0, 0.0]], 1);
        let outputs: Vec<f32> = [1.0f32, 0.0, 0.0]
            .iter()
            .map(|&x| {
                let mut f = [x];
                filter.process_frame(&mut f);
                f[0]
            })
            .collect();
        assert_eq!(outputs, vec![0.5, 0.5, 0.0]);
    }
}
