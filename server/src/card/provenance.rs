//! What a model card says about where the model came from: honest about its data, split,
//! metrics and the command that reproduces them.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// "real", "proxy", "synthetic", "fixture" (test-only models, never decoders), or "live"
    /// (fitted by live calibration on whatever stream the caller sent).
    pub data_kind: String,
    pub training_data: String,
    pub split: String,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Command that reproduces the model and its metrics.
    pub command: String,
    #[serde(default)]
    pub notes: String,
    /// Live calibrations: the principal that fitted it; only it (and admins) may calibrate new
    /// versions under this id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub calibrated_by: String,
}
