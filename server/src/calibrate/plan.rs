//! A calibration request, validated, with its defaults applied.

use std::time::Duration;

use crate::decode::native::NativeKind;

/// Which decoder a calibration fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderChoice {
    Only(NativeKind),
    /// Cross-validate every kind on the same folds; fit the one with the highest AUC.
    Best,
}

impl DecoderChoice {
    /// CalibrateRequest.decoder: empty is xDAWN + LDA (what calibration fitted before there was
    /// a choice).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "" => Some(Self::Only(NativeKind::XdawnLda)),
            "best" => Some(Self::Best),
            other => NativeKind::parse(other).map(Self::Only),
        }
    }

    pub fn candidates(self) -> Vec<NativeKind> {
        match self {
            Self::Only(kind) => vec![kind],
            Self::Best => NativeKind::ALL.to_vec(),
        }
    }
}

/// Validated request, with defaults applied.
pub struct Plan {
    pub attachment_id: String,
    pub target_codes: Vec<i32>,
    pub non_target_codes: Vec<i32>,
    pub max_epochs: usize,
    pub max_duration: Option<Duration>,
    pub model_id: String,
    pub filters_per_class: usize,
    pub folds: usize,
    pub decoder: DecoderChoice,
    pub swap: bool,
    /// The principal that asked (recorded on the fitted model's card).
    pub calibrated_by: String,
}
