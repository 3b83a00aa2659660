//! What a model card says about its preprocessing: the stream filters (as a specification the
//! server designs for each stream's rate, or as fixed coefficients for one rate), how the stream
//! is brought to the model's rate, and the per-window steps (reference, baseline, scaling, clamp).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Reference {
    #[default]
    None,
    /// Subtract the mean of the model's channels at every sample.
    Average,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scaling {
    #[default]
    None,
    /// (x - center[c]) / scale[c], statistics stored in the card (z-score: mean/std; robust
    /// scaling: median/IQR).
    Fixed { center: Vec<f64>, scale: Vec<f64> },
    /// Per-window, per-channel z-score: (x - mean) / (std + epsilon).
    WindowZscore {
        #[serde(default = "default_epsilon")]
        epsilon: f64,
    },
    /// (x - median[c]) / IQR[c], the statistics fitted on the first `fit_seconds` of filtered
    /// stream the attachment sees, then frozen; windows cut before that are refused (ERROR).
    SessionRobust { fit_seconds: f64 },
}

fn default_epsilon() -> f64 {
    1e-6
}

fn default_half_width() -> usize {
    10
}

/// Fixed filter coefficients, valid for streams at one rate only.
#[derive(Debug, Clone, Deserialize, serde::Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// How the sections were designed, in words (e.g. "Butterworth band-pass 0.5-30 Hz, order 4").
    #[serde(default)]
    pub design: String,
    /// The stream rate the sections were designed for; attaching a stream at another rate is refused.
    pub design_rate_hz: f64,
    /// Second-order sections, scipy layout [b0, b1, b2, a0, a1, a2].
    pub sos: Vec<[f64; 6]>,
}

/// One causal IIR filter, designed by the server for the stream's rate at Attach exactly as
/// `scipy.signal.butter(order, ..., fs=rate, output="sos")` (Butterworth kinds) and
/// `scipy.signal.iirnotch(freq_hz, quality, fs=rate)` (notch) design it.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FilterDesign {
    Lowpass { order: usize, cutoff_hz: f64 },
    Highpass { order: usize, cutoff_hz: f64 },
    Bandpass { order: usize, low_hz: f64, high_hz: f64 },
    Bandstop { order: usize, low_hz: f64, high_hz: f64 },
    Notch { freq_hz: f64, quality: f64 },
}

/// Highest Butterworth order a card may ask for: beyond it second-order sections of narrow bands
/// lose precision, and no EEG/MEG pipeline needs more.
pub const MAX_FILTER_ORDER: usize = 12;

impl FilterDesign {
    /// The highest frequency the filter names: it must lie below the stream's Nyquist frequency.
    pub fn highest_hz(&self) -> f64 {
        match *self {
            FilterDesign::Lowpass { cutoff_hz, .. } | FilterDesign::Highpass { cutoff_hz, .. } => cutoff_hz,
            FilterDesign::Bandpass { high_hz, .. } | FilterDesign::Bandstop { high_hz, .. } => high_hz,
            FilterDesign::Notch { freq_hz, .. } => freq_hz,
        }
    }

    /// In words, for errors and `myelin models design`.
    pub fn describe(&self) -> String {
        match *self {
            FilterDesign::Lowpass { order, cutoff_hz } => format!("Butterworth low-pass {cutoff_hz} Hz, order {order}"),
            FilterDesign::Highpass { order, cutoff_hz } => format!("Butterworth high-pass {cutoff_hz} Hz, order {order}"),
            FilterDesign::Bandpass { order, low_hz, high_hz } => format!("Butterworth band-pass {low_hz}-{high_hz} Hz, order {order}"),
            FilterDesign::Bandstop { order, low_hz, high_hz } => format!("Butterworth band-stop {low_hz}-{high_hz} Hz, order {order}"),
            FilterDesign::Notch { freq_hz, quality } => format!("notch {freq_hz} Hz, Q {quality}"),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let positive =
            |name: &str, v: f64| if v > 0.0 && v.is_finite() { Ok(()) } else { Err(format!("{name} must be a positive number, got {v}")) };
        let order_ok = |order: usize| {
            if (1..=MAX_FILTER_ORDER).contains(&order) {
                Ok(())
            } else {
                Err(format!("order must be 1 to {MAX_FILTER_ORDER}, got {order}"))
            }
        };
        match *self {
            FilterDesign::Lowpass { order, cutoff_hz } | FilterDesign::Highpass { order, cutoff_hz } => {
                order_ok(order)?;
                positive("cutoff_hz", cutoff_hz)
            }
            FilterDesign::Bandpass { order, low_hz, high_hz } | FilterDesign::Bandstop { order, low_hz, high_hz } => {
                order_ok(order)?;
                positive("low_hz", low_hz)?;
                positive("high_hz", high_hz)?;
                if low_hz < high_hz { Ok(()) } else { Err(format!("low_hz ({low_hz}) must be below high_hz ({high_hz})")) }
            }
            FilterDesign::Notch { freq_hz, quality } => {
                positive("freq_hz", freq_hz)?;
                positive("quality", quality)
            }
        }
    }
}

/// How a stream is brought to the model's rate after its filters.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Resample {
    /// Keep every k-th sample; only streams at an integer multiple of the model's rate. The
    /// card's filters are the anti-alias stage. (The form of cards written before resampling.)
    #[default]
    Decimate,
    /// Any rational ratio (or none): a linear-phase polyphase FIR with its own anti-alias
    /// low-pass, the same filter and alignment as `scipy.signal.resample_poly` (Kaiser window,
    /// beta 5, `resample_half_width` x max(up, down) taps each side); see `dsp::polyphase`.
    Polyphase,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    /// Fixed causal IIR filter (band-pass, notch, ...) for streams at its design rate only.
    pub filter: Option<FilterSpec>,
    /// Causal IIR filters as a specification, designed for each stream's rate at Attach, in
    /// order. A card has `filter` or `filters`, not both.
    #[serde(default)]
    pub filters: Vec<FilterDesign>,
    #[serde(default)]
    pub resample: Resample,
    /// Polyphase: the anti-alias filter spans +-this many samples of the slower rate (1 to 64;
    /// scipy's resample_poly uses 10). The server waits as many model samples past a window's
    /// end before decoding it: a shorter filter decodes sooner and filters less sharply.
    #[serde(default = "default_half_width")]
    pub resample_half_width: usize,
    #[serde(default)]
    pub reference: Reference,
    /// Baseline interval [from, to) in seconds on the window's time axis (relative to the event).
    pub baseline_s: Option<[f64; 2]>,
    #[serde(default)]
    pub scaling: Scaling,
    /// Clamp every value to [-clamp, clamp] after scaling.
    pub clamp: Option<f32>,
}

/// A card without a `[preprocessing]` section: nothing but what each field's default says (the
/// resampling filter's width included, which a derived default would make 0).
impl Default for Preprocessing {
    fn default() -> Self {
        Self {
            filter: None,
            filters: Vec::new(),
            resample: Resample::default(),
            resample_half_width: default_half_width(),
            reference: Reference::default(),
            baseline_s: None,
            scaling: Scaling::default(),
            clamp: None,
        }
    }
}

impl Preprocessing {
    /// Internal consistency; `Err((field, message))`.
    pub fn validate(&self, n_channels: usize) -> Result<(), (&'static str, String)> {
        if let Some(filter) = &self.filter {
            if !self.filters.is_empty() {
                return Err((
                    "preprocessing.filters",
                    "a card has fixed coefficients (`filter`) or a specification (`filters`), not both".into(),
                ));
            }
            if !(filter.design_rate_hz > 0.0 && filter.design_rate_hz.is_finite()) {
                return Err(("preprocessing.filter.design_rate_hz", "must be a positive number".into()));
            }
            if filter.sos.iter().any(|s| s[3] == 0.0 || s.iter().any(|v| !v.is_finite())) {
                return Err(("preprocessing.filter.sos", "a0 must be non-zero and all values finite".into()));
            }
        }
        if !(1..=64).contains(&self.resample_half_width) {
            return Err(("preprocessing.resample_half_width", format!("must be 1 to 64, got {}", self.resample_half_width)));
        }
        if self.filters.len() > 16 {
            return Err(("preprocessing.filters", format!("{} filters, at most 16", self.filters.len())));
        }
        for (i, design) in self.filters.iter().enumerate() {
            design.validate().map_err(|message| ("preprocessing.filters", format!("filter {i} ({}): {message}", design.describe())))?;
        }
        if let Scaling::SessionRobust { fit_seconds } = self.scaling
            && !(fit_seconds > 0.0 && fit_seconds <= 60.0)
        {
            return Err(("preprocessing.scaling.fit_seconds", format!("must be above 0 and at most 60, got {fit_seconds}")));
        }
        if let Scaling::Fixed { center, scale } = &self.scaling {
            if center.len() != n_channels || scale.len() != n_channels {
                return Err(("preprocessing.scaling", "center and scale need one value per channel".into()));
            }
            if scale.iter().any(|s| !(*s > 0.0)) {
                return Err(("preprocessing.scaling", "scale values must be > 0".into()));
            }
        }
        Ok(())
    }
}
