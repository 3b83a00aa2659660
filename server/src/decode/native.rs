//! The decoders the server fits and runs itself (live calibration, no ONNX graph): which kinds
//! exist, fitting and cross-validating either, and reading one back from its parameter file.

use super::cross_validation::{CrossValidation, cross_validate};
use super::erp::{ErpError, XdawnLda};
use super::riemann::XdawnRiemann;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeKind {
    /// xDAWN spatial filters + shrinkage LDA (`decode::erp`).
    XdawnLda,
    /// xDAWN covariances + Riemannian tangent space + logistic regression (`decode::riemann`).
    XdawnRiemann,
}

impl NativeKind {
    pub const ALL: [NativeKind; 2] = [NativeKind::XdawnLda, NativeKind::XdawnRiemann];

    /// The name cards (`native.kind`) and CalibrateRequest.decoder use.
    pub fn as_str(self) -> &'static str {
        match self {
            NativeKind::XdawnLda => "xdawn_lda",
            NativeKind::XdawnRiemann => "xdawn_riemann",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// In words, for cards.
    pub fn describe(self, filters_per_class: usize) -> String {
        match self {
            NativeKind::XdawnLda => format!("xDAWN ({filters_per_class} components per class) + shrinkage LDA"),
            NativeKind::XdawnRiemann => format!(
                "xDAWN covariances ({filters_per_class} filters per class) + Riemannian tangent space + logistic regression (as pyRiemann)"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum NativeDecoder {
    XdawnLda(XdawnLda),
    XdawnRiemann(XdawnRiemann),
}

impl NativeDecoder {
    pub fn fit(
        kind: NativeKind,
        epochs: &[&[f32]],
        labels: &[bool],
        n_channels: usize,
        n_samples: usize,
        filters_per_class: usize,
    ) -> Result<Self, ErpError> {
        Ok(match kind {
            NativeKind::XdawnLda => Self::XdawnLda(XdawnLda::fit(epochs, labels, n_channels, n_samples, filters_per_class)?),
            NativeKind::XdawnRiemann => Self::XdawnRiemann(XdawnRiemann::fit(epochs, labels, n_channels, n_samples, filters_per_class)?),
        })
    }

    /// xDAWN filters per class the fit kept: the requested count, clamped to what the montage
    /// allows (so a card never states more than the decoder uses).
    pub fn filters_per_class(&self) -> usize {
        match self {
            Self::XdawnLda(d) => d.n_components / 2,
            Self::XdawnRiemann(d) => d.n_filters / 2,
        }
    }

    /// Stratified k-fold cross-validation of a `kind` fit on these epochs.
    pub fn cross_validate(
        kind: NativeKind,
        epochs: &[&[f32]],
        labels: &[bool],
        n_channels: usize,
        n_samples: usize,
        filters_per_class: usize,
        folds: usize,
    ) -> Result<CrossValidation, ErpError> {
        cross_validate(epochs, labels, folds, |e, l| Self::fit(kind, e, l, n_channels, n_samples, filters_per_class), Self::predict)
    }

    /// Target probability of one epoch (channel-major [n_channels x n_samples]).
    pub fn predict(&self, epoch: &[f32]) -> f64 {
        match self {
            Self::XdawnLda(d) => d.predict(epoch),
            Self::XdawnRiemann(d) => d.predict(epoch),
        }
    }

    pub fn kind(&self) -> NativeKind {
        match self {
            Self::XdawnLda(_) => NativeKind::XdawnLda,
            Self::XdawnRiemann(_) => NativeKind::XdawnRiemann,
        }
    }

    /// Whether its parameters fit together.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Self::XdawnLda(d) => d.check(),
            Self::XdawnRiemann(d) => d.check(),
        }
    }

    /// (channels, samples) of the epochs it was fitted on.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Self::XdawnLda(d) => (d.n_channels, d.n_samples),
            Self::XdawnRiemann(d) => (d.n_channels, d.n_samples),
        }
    }

    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            Self::XdawnLda(d) => serde_json::to_vec(d),
            Self::XdawnRiemann(d) => serde_json::to_vec(d),
        }
    }

    pub fn from_json(kind: NativeKind, text: &str) -> serde_json::Result<Self> {
        Ok(match kind {
            NativeKind::XdawnLda => Self::XdawnLda(serde_json::from_str(text)?),
            NativeKind::XdawnRiemann => Self::XdawnRiemann(serde_json::from_str(text)?),
        })
    }
}
