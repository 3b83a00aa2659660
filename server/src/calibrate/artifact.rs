//! What a calibration leaves behind: a card for the fitted decoder (derived from the attached
//! model's card, with its provenance: the live epochs and the cross-validated metrics) and the
//! files it is saved in, so that it loads again after a restart.

use std::path::{Path, PathBuf};

use super::plan::Plan;
use crate::card::{ModelCard, NativeSpec, OutputKind, OutputSpec, Provenance, Task};
use crate::decode::cross_validation::CrossValidation;
use crate::decode::native::{NativeDecoder, NativeKind};

pub(super) fn calibrated_card(
    base: &ModelCard,
    plan: &Plan,
    session_id: &str,
    version: &str,
    (targets, others): (u32, u32),
    decoder: &NativeDecoder,
    candidates: &[(NativeKind, CrossValidation)],
) -> ModelCard {
    let kind = decoder.kind();
    let cv = candidates.iter().find(|(k, _)| *k == kind).map(|(_, cv)| *cv).expect("the fitted decoder was cross-validated");
    let mut card = base.clone();
    card.id = plan.model_id.clone();
    card.version = version.to_string();
    card.task = Task::Classification;
    card.onnx = None;
    // Native decoders need every channel they were fitted on: no optional sensors.
    card.sensors = None;
    card.output.kind = OutputKind::Probabilities;
    let params = PathBuf::from(format!("{}-{version}.{}.json", plan.model_id, kind.as_str()));
    card.native = Some(NativeSpec { kind: kind.as_str().into(), params });
    card.description = Some(format!(
        "{}, calibrated live; channels, window and preprocessing from {} v{}",
        kind.describe(decoder.filters_per_class()),
        base.id,
        base.version
    ));
    card.labels = vec!["non-target".into(), "target".into()];
    card.output = OutputSpec { name: "probs".into(), shape: vec![-1, 2], kind: OutputKind::Probabilities, embedding: None };
    card.provenance = Provenance {
        data_kind: "live".into(),
        training_data: format!(
            "live calibration on session {session_id:?}, attachment {}: {} epochs ({targets} targets: codes {:?}; {others} non-targets: codes {:?})",
            plan.attachment_id,
            targets + others,
            plan.target_codes,
            plan.non_target_codes
        ),
        split: format!(
            "{}-fold stratified cross-validation on the calibration epochs (contiguous blocks in time per class; the whole decoder refitted per fold){}",
            cv.folds,
            if candidates.len() > 1 { "; the decoder with the highest cv_auc of those tried was kept" } else { "" }
        ),
        metrics: [("cv_auc".to_string(), cv.auc), ("cv_balanced_accuracy".to_string(), cv.balanced_accuracy)]
            .into_iter()
            .chain(candidates.iter().map(|(k, cv)| (format!("cv_auc_{}", k.as_str()), cv.auc)))
            .collect(),
        command: format!(
            "Decoding.Calibrate(attachment_id={:?}, target_codes={:?}, non_target_codes={:?})",
            plan.attachment_id, plan.target_codes, plan.non_target_codes
        ),
        notes: String::new(),
        calibrated_by: plan.calibrated_by.clone(),
    };
    card
}

/// Writes `<dir>/<id>/<id>-<version>.card.toml` and its parameter file; returns the card path.
pub(super) fn save(dir: &Path, card: ModelCard, decoder: &NativeDecoder) -> anyhow::Result<PathBuf> {
    let folder = dir.join(&card.id);
    std::fs::create_dir_all(&folder)?;
    let params = card.native.as_ref().expect("native card").params.clone();
    std::fs::write(folder.join(&params), decoder.to_json()?)?;
    let card_path = folder.join(format!("{}-{}.card.toml", card.id, card.version));
    let text = format!("# Fitted by Myelin live calibration (Decoding.Calibrate).\n{}", toml::to_string(&card)?);
    std::fs::write(&card_path, text)?;
    // Read it back through the normal loader: a saved artifact must load after a restart.
    ModelCard::load(&card_path)?;
    Ok(card_path)
}
