//! Honest cards: every file a bundled model card's provenance cites exists in the repository
//! (the training script, the evaluation, the test that backs a claim), and every option its
//! command passes to a repository script is one the script defines. Reads the cards as text
//! through the server's own parser; nothing is built or run.

use std::path::{Path, PathBuf};

fn cards(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            cards(&path, found);
        } else if path.to_string_lossy().ends_with(".card.toml") {
            found.push(path);
        }
    }
}

#[test]
fn every_file_a_card_cites_exists() {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    cards(&repository.join("models"), &mut found);
    cards(&repository.join("tests/fixtures"), &mut found);
    cards(&repository.join("evaluation-models"), &mut found);
    assert!(found.len() >= 10, "expected the bundled cards, found {}", found.len());
    let mut missing = Vec::new();
    let mut cited = 0;
    for path in &found {
        let card = myelin_server::card::ModelCard::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        cited += card.provenance.cited_paths().len();
        for file in card.provenance.missing_citations(&repository) {
            missing.push(format!("{} cites {file}", path.display()));
        }
        for option in card.provenance.unknown_options(&repository) {
            missing.push(format!("{} runs {option}, which the script does not define", path.display()));
        }
    }
    assert!(missing.is_empty(), "cards cite files or options that do not exist:\n{}", missing.join("\n"));
    assert!(cited >= found.len(), "the cards cite almost nothing ({cited} paths): is cited_paths still finding them?");
}
