//! A model's input from a cut window: the per-window steps of its card's preprocessing, run on
//! the session's thread as the window is cut, so that the model's threads only run the model
//! (decimation or polyphase resampling to the model rate, re-referencing, baseline correction,
//! per-channel scaling, clamping, the layout the graph expects), and the sensor positions and
//! mask that spatial-attention models take beside the window.
//!
//! Hand-written for the reasons `dsp` gives: a few lines a step, bit-for-bit predictable against
//! numpy (the parity test), no allocation per window once the scratch buffer has grown.

use std::sync::{Arc, OnceLock};

use crate::card::{Preprocessing, Reference, Scaling};
use crate::dsp::polyphase::Polyphase;

/// How a window's filtered stream samples become model samples.
#[derive(Debug, Clone)]
pub enum Resampling {
    /// Every `factor`-th stream sample from the window's first (1: the stream is at the
    /// model's rate).
    Decimate { factor: usize },
    /// Any rational ratio, through an anti-alias FIR ([`Polyphase`]).
    Polyphase(Polyphase),
}

impl Resampling {
    /// Stream samples before a window's first sample that it reads.
    pub fn history(&self) -> usize {
        match self {
            Resampling::Decimate { .. } => 0,
            Resampling::Polyphase(p) => p.history(),
        }
    }

    /// Stream samples from a window of `model_samples` model samples' first sample through the
    /// last it needs.
    pub fn reach(&self, model_samples: usize) -> usize {
        match self {
            Resampling::Decimate { factor } => model_samples * factor,
            Resampling::Polyphase(p) => p.reach(model_samples),
        }
    }

    /// Stream samples such a window's nominal span covers (its first to its last model sample).
    pub fn span(&self, model_samples: usize) -> usize {
        match self {
            Resampling::Decimate { factor } => model_samples * factor,
            Resampling::Polyphase(p) => p.span(model_samples),
        }
    }
}

/// The extra inputs of a spatial-attention model, fixed for an attachment: each model
/// channel's layout position ([channels x 2]) and whether the stream has it (1) or not (0).
#[derive(Debug, Clone, PartialEq)]
pub struct SensorInputs {
    pub positions: Vec<f32>,
    pub mask: Vec<f32>,
}

/// Turns a window of filtered samples at the stream rate into the model's input tensor.
#[derive(Debug, Clone)]
pub struct WindowPreprocessor {
    n_channels: usize,
    resampling: Resampling,
    model_samples: usize,
    reference: Reference,
    /// Model-sample range [start, end) used for baseline correction.
    baseline: Option<(usize, usize)>,
    scaling: Scaling,
    clamp: Option<f32>,
    /// Layout of the model input: true = [channels x time], false = [time x channels].
    channels_first: bool,
    /// `Scaling::SessionRobust`: (median, IQR) per channel once the session worker has fitted
    /// them (shared by the attachment's clones: a swapped model keeps them).
    session_stats: Arc<OnceLock<Vec<(f64, f64)>>>,
}

impl WindowPreprocessor {
    pub fn new(
        pre: &Preprocessing,
        n_channels: usize,
        resampling: Resampling,
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
            resampling,
            model_samples,
            reference: pre.reference,
            baseline,
            scaling: pre.scaling.clone(),
            clamp: pre.clamp,
            channels_first,
            session_stats: Arc::default(),
        }
    }

    /// Stream samples a session-robust scaling is fitted on (None for other scalings).
    pub fn session_fit_samples(&self, stream_rate: f64) -> Option<usize> {
        match self.scaling {
            Scaling::SessionRobust { fit_seconds } => Some(((fit_seconds * stream_rate).round() as usize).max(1)),
            _ => None,
        }
    }

    /// Freezes the session-robust statistics (the first call wins).
    pub fn set_session_stats(&self, stats: Vec<(f64, f64)>) {
        let _ = self.session_stats.set(stats);
    }

    /// Whether windows can be scaled yet: false while a session-robust scaling is still fitting.
    pub fn scaling_ready(&self) -> bool {
        !matches!(self.scaling, Scaling::SessionRobust { .. }) || self.session_stats.get().is_some()
    }

    /// Stream samples before a window's first sample that it reads (the resampling filter's
    /// left half).
    pub fn history(&self) -> usize {
        self.resampling.history()
    }

    /// Stream samples from a window's first sample through the last it needs: the window can be
    /// decoded once the stream has reached them.
    pub fn reach(&self) -> usize {
        self.resampling.reach(self.model_samples)
    }

    /// Stream samples a window's nominal span covers (its first to its last model sample).
    pub fn span(&self) -> usize {
        self.resampling.span(self.model_samples)
    }

    /// Stream samples one window reads: `history() + reach()`.
    pub fn segment_len(&self) -> usize {
        self.history() + self.reach()
    }

    /// Values of one window's segment at the stream rate (the input of [`Self::run`]).
    pub fn stream_values(&self) -> usize {
        self.n_channels * self.segment_len()
    }

    /// With integer decimation, the stream samples per model sample: a window's samples the
    /// model keeps are every `decimation()`-th from the first, and are all a cut needs to copy.
    pub fn decimation(&self) -> Option<usize> {
        match &self.resampling {
            Resampling::Decimate { factor } => Some(*factor),
            Resampling::Polyphase(_) => None,
        }
    }

    /// `segment`: channel-major [n_channels x segment_len()] filtered samples, from history()
    /// samples before the window's first.
    /// `out`: the model input, [n_channels x model_samples] or [model_samples x n_channels].
    /// `scratch`: reusable buffer of n_channels * model_samples values.
    pub fn run(&self, segment: &[f32], scratch: &mut Vec<f32>, out: &mut [f32]) {
        let (c, t) = (self.n_channels, self.model_samples);
        let len = self.segment_len();
        debug_assert_eq!(segment.len(), c * len);
        scratch.clear();
        scratch.resize(c * t, 0.0);
        for ch in 0..c {
            let src = &segment[ch * len..(ch + 1) * len];
            let dst = &mut scratch[ch * t..(ch + 1) * t];
            match &self.resampling {
                // Decimate: keep every k-th sample starting at the first (numpy x[::k]).
                Resampling::Decimate { factor } => {
                    for (v, &s) in dst.iter_mut().zip(src.iter().step_by(*factor)) {
                        *v = s;
                    }
                }
                Resampling::Polyphase(p) => p.resample(src, dst),
            }
        }
        self.run_decimated(scratch, out);
    }

    /// The same from a window already at the model rate ([n_channels x model_samples]), which it
    /// changes in place: with integer decimation, what a cut copies out of the ring (only the
    /// samples decimation keeps).
    pub fn run_decimated(&self, scratch: &mut [f32], out: &mut [f32]) {
        let (c, t) = (self.n_channels, self.model_samples);
        debug_assert_eq!(scratch.len(), c * t);
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
            Scaling::SessionRobust { .. } => {
                // Dispatch refuses windows before the statistics exist (scaling_ready).
                if let Some(stats) = self.session_stats.get() {
                    for (ch, &(median, range)) in stats.iter().enumerate().take(c) {
                        for v in &mut scratch[ch * t..(ch + 1) * t] {
                            *v = ((f64::from(*v) - median) / range) as f32;
                        }
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
