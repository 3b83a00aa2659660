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

/// Top-level directories of the repository that a card's provenance may cite files in.
const REPOSITORY_DIRS: &[&str] = &["models", "tests", "deploy", "server", "client", "proto"];

impl Provenance {
    /// The repository paths its texts name (scripts, tests, data): words with a '/' whose first
    /// part is one of the repository's top-level directories. Environments made by setup
    /// (`.venv/...`) and prose ("1/f") are not paths of the repository.
    pub fn cited_paths(&self) -> Vec<String> {
        let texts = [&self.training_data, &self.split, &self.command, &self.notes];
        let mut paths: Vec<String> = texts
            .iter()
            .flat_map(|text| text.split(|c: char| c.is_whitespace() || "\"'`(),;".contains(c)))
            // "./models/x.py", and pytest ids ("tests/python/test_x.py::test_y") name their file.
            .map(|word| word.trim_start_matches("./"))
            .map(|word| word.split("::").next().unwrap_or(word).trim_end_matches(['.', ':']))
            .filter(|word| word.split_once('/').is_some_and(|(first, _)| REPOSITORY_DIRS.contains(&first)))
            .map(str::to_string)
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// The cited paths that do not exist under `repository`.
    pub fn missing_citations(&self, repository: &std::path::Path) -> Vec<String> {
        self.cited_paths().into_iter().filter(|path| !repository.join(path).exists()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cited_paths_are_repository_paths_only() {
        let provenance = Provenance {
            data_kind: "real".into(),
            training_data: "1/f noise, in/out dipoles, models/data/p300 (see models/README.md).".into(),
            split: String::new(),
            metrics: BTreeMap::new(),
            command: ".venv/bin/python models/erp-linear/train.py && `tests/python/test_x.py`".into(),
            notes: "checked by tests/python/test_x.py: and ./models/README.md, tests/python/test_x.py::test_y".into(),
            calibrated_by: String::new(),
        };
        assert_eq!(
            provenance.cited_paths(),
            ["models/README.md", "models/data/p300", "models/erp-linear/train.py", "tests/python/test_x.py"]
        );
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        assert_eq!(provenance.missing_citations(&root), ["tests/python/test_x.py"]);
    }
}
