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
const REPOSITORY_DIRS: &[&str] = &["models", "evaluation-models", "tests", "deploy", "server", "client", "proto"];

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

    /// Options the command passes to a repository script that the script never names: for each
    /// command of the line (split at `&&`, `;`, `|`) that runs a `.py` file of the repository
    /// (first word, or after a `python`), each `--option` after it whose quoted name (`"--option"`)
    /// is not in the script's text, as "script --option". A plain text search, not argparse:
    /// enough to catch an option that was renamed or removed since the card was written.
    pub fn unknown_options(&self, repository: &std::path::Path) -> Vec<String> {
        let mut unknown = Vec::new();
        for command in self.command.split(['&', ';', '|']) {
            let words: Vec<&str> = command.split_whitespace().map(|w| w.trim_matches('`')).collect();
            let runs_script = |i: usize| {
                let script = words[i].trim_start_matches("./");
                script.ends_with(".py")
                    && script.split_once('/').is_some_and(|(first, _)| REPOSITORY_DIRS.contains(&first))
                    && (i == 0 || words[i - 1].ends_with("python") || words[i - 1].ends_with("python3"))
            };
            let Some(at) = (0..words.len()).find(|&i| runs_script(i)) else { continue };
            let script = words[at].trim_start_matches("./");
            // A missing script is reported by missing_citations.
            let Ok(text) = std::fs::read_to_string(repository.join(script)) else { continue };
            for word in &words[at + 1..] {
                let Some(name) = word.strip_prefix("--").map(|o| o.split('=').next().unwrap_or(o)) else { continue };
                let option = format!("--{name}");
                if name != "help" && !text.contains(&format!("\"{option}\"")) && !text.contains(&format!("'{option}'")) {
                    unknown.push(format!("{script} {option}"));
                }
            }
        }
        unknown
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

    #[test]
    fn options_a_script_does_not_define_are_found() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let provenance = |command: &str| Provenance {
            data_kind: "real".into(),
            training_data: String::new(),
            split: String::new(),
            metrics: BTreeMap::new(),
            command: command.into(),
            notes: String::new(),
            calibrated_by: String::new(),
        };
        let real = provenance(
            ".venv-train/bin/python models/erp-benchmark/train.py --arch tsconv --max-epochs=20 --passes 1 \
             && .venv/bin/python models/erp-eval/evaluate.py --server-binary x",
        );
        assert!(real.unknown_options(&root).is_empty(), "{:?}", real.unknown_options(&root));
        let renamed = provenance("models/duin/train.py --synthetic --max-shift 0.3 && python3 models/erp-eval/evaluate.py --fast");
        assert_eq!(renamed.unknown_options(&root), ["models/duin/train.py --max-shift", "models/erp-eval/evaluate.py --fast"]);
        // pytest's own options are not the test file's.
        assert!(provenance(".venv/bin/python -m pytest tests/python/test_meg.py --maxfail 1").unknown_options(&root).is_empty());
    }
}
