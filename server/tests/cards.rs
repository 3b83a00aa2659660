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

/// The settling time models/README.md states for each card: what the filters the server designs
/// for that stream rate give (`myelin models design CARD --rate R`), so the table cannot go stale.
#[test]
fn the_settling_times_models_readme_states_are_what_the_filters_give() {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(repository.join("models/README.md")).unwrap();
    let section = readme.split("## Settling after a disturbance").nth(1).expect("models/README.md has the section");
    let section = section.split("\n## ").next().unwrap();
    let mut found = Vec::new();
    cards(&repository.join("models"), &mut found);
    let mut checked = 0;
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | card | stream rate | filters | settling |
        let (id, rate, stated) = (cells[1].trim_matches('`'), cells[2], cells[4]);
        let rate: f64 = rate.trim_end_matches(" Hz").parse().unwrap_or_else(|_| panic!("rate in {row}"));
        let samples: u64 = stated
            .split('(')
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("samples in {row}"));
        let card = found
            .iter()
            .map(|p| myelin_server::card::ModelCard::load(p).unwrap())
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no card {id}"));
        let (_, sos) = myelin_server::attach::window::rates(&card, rate).unwrap_or_else(|e| panic!("{id} at {rate} Hz: {e}"));
        let actual = myelin_server::dsp::sos::SosFilter::new(&sos, 1).settling_samples(rate);
        assert_eq!(samples, actual, "{id} at {rate} Hz: the table says {samples} samples, the filters give {actual}");
        checked += 1;
    }
    assert!(checked >= 5, "the table lists the served models ({checked} rows)");
}
