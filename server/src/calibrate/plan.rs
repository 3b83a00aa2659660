//! A calibration request, validated, with its defaults applied.

use std::time::Duration;

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
    pub swap: bool,
    /// The principal that asked (recorded on the fitted model's card).
    pub calibrated_by: String,
}
