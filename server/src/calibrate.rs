//! Live calibration (`Decoding.Calibrate`): collect labelled epochs from an event-locked
//! attachment, fit the native xDAWN + LDA decoder, save it as a versioned model, and swap it into
//! the attachment, all while the stream and its subscribers carry on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use myelin_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;

use crate::decode::ModelRegistry;
use crate::decode::card::{ModelCard, NativeSpec, OutputKind, OutputSpec, Provenance, Task};
use crate::decode::erp::XdawnLda;
use crate::session::SessionManager;
use crate::window::{Collector, Cutter};

/// Validated request, with defaults applied.
struct Plan {
    attachment_id: String,
    target_codes: Vec<i32>,
    non_target_codes: Vec<i32>,
    max_epochs: usize,
    max_duration: Option<Duration>,
    model_id: String,
    filters_per_class: usize,
    folds: usize,
    swap: bool,
}

/// Starts a calibration; the returned stream carries progress, then the result or an error.
pub fn start(
    request: pb::CalibrateRequest,
    sessions: Arc<SessionManager>,
    models: Arc<ModelRegistry>,
) -> Result<mpsc::Receiver<Result<pb::CalibrateProgress, Status>>, Status> {
    if request.target_codes.is_empty() || request.non_target_codes.is_empty() {
        return Err(Status::invalid_argument("target_codes and non_target_codes must both be set"));
    }
    // The id names a directory under calibrations_dir: "." and ".." are refused as well.
    let id = request.model_id.as_str();
    if !id.is_empty() && (!crate::decode::card::is_valid_id(id) || id == "." || id == "..") {
        return Err(Status::invalid_argument(format!("model_id {:?} must be 1-128 characters of [A-Za-z0-9._-]", request.model_id)));
    }
    if request.max_epochs == 0 && !(request.max_seconds > 0.0) {
        return Err(Status::invalid_argument("set max_epochs or max_seconds (when to stop collecting)"));
    }
    let max_epochs = if request.max_epochs == 0 { usize::MAX } else { request.max_epochs as usize };
    // Bounded: at most max_epochs epochs are ever wanted, and a few thousand is plenty for any
    // calibration; beyond that the collector drops (the count says so).
    let capacity = max_epochs.min(8192);
    let (epochs_tx, epochs_rx) = mpsc::channel(capacity);
    let (session_id, card, preprocessor) = sessions.with_attachment(&request.attachment_id, |runtime| {
        let Cutter::EventLocked { codes, .. } = &runtime.cutter else {
            return Err(Status::invalid_argument("calibration needs an event-locked attachment"));
        };
        if let Some(code) = request.target_codes.iter().chain(&request.non_target_codes).find(|c| !codes.contains(c)) {
            return Err(Status::invalid_argument(format!(
                "the attachment does not cut windows for marker code {code} (its codes: {codes:?})"
            )));
        }
        if runtime.collector.is_some() {
            return Err(Status::failed_precondition("a calibration is already collecting on this attachment"));
        }
        runtime.collector = Some(Collector {
            target_codes: request.target_codes.clone(),
            non_target_codes: request.non_target_codes.clone(),
            sender: epochs_tx,
        });
        let shared = &runtime.shared;
        Ok((shared.session_id.clone(), shared.model.card.clone(), shared.preprocessor.clone()))
    })??;
    let plan = Plan {
        attachment_id: request.attachment_id.clone(),
        target_codes: request.target_codes.clone(),
        non_target_codes: request.non_target_codes.clone(),
        max_epochs,
        max_duration: (request.max_seconds > 0.0).then(|| Duration::from_secs_f64(request.max_seconds)),
        model_id: if request.model_id.is_empty() { format!("xdawn-{session_id}") } else { request.model_id.clone() },
        filters_per_class: if request.filters_per_class == 0 { 2 } else { request.filters_per_class as usize },
        folds: if request.folds == 0 { 5 } else { request.folds as usize },
        swap: !request.keep_current_model,
    };
    let (progress_tx, progress_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let outcome = run(plan, session_id, card, preprocessor, epochs_rx, sessions, models, &progress_tx).await;
        if let Err(status) = outcome {
            let _ = progress_tx.send(Err(status)).await;
        }
    });
    Ok(progress_rx)
}

#[allow(clippy::too_many_arguments)]
async fn run(
    plan: Plan,
    session_id: String,
    base: ModelCard,
    preprocessor: crate::dsp::WindowPreprocessor,
    mut epochs_rx: mpsc::Receiver<(Vec<f32>, bool)>,
    sessions: Arc<SessionManager>,
    models: Arc<ModelRegistry>,
    progress: &mpsc::Sender<Result<pb::CalibrateProgress, Status>>,
) -> Result<(), Status> {
    let started = Instant::now();
    let deadline = plan.max_duration.map(|d| tokio::time::Instant::now() + d);
    let mut epochs: Vec<(Vec<f32>, bool)> = Vec::new();
    let (mut targets, mut others) = (0u32, 0u32);
    while epochs.len() < plan.max_epochs {
        let next = tokio::select! {
            next = epochs_rx.recv() => next,
            _ = progress.closed() => break, // the caller went away while nothing arrived
            _ = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            } => break,
        };
        let Some((window, is_target)) = next else { break }; // the attachment went away
        if is_target {
            targets += 1
        } else {
            others += 1
        }
        epochs.push((window, is_target));
        let update = pb::CalibrateProgress { target_epochs: targets, non_target_epochs: others, result: None };
        if progress.send(Ok(update)).await.is_err() {
            break; // the caller cancelled
        }
    }
    // Stop collecting whatever happens next.
    let _ = sessions.with_attachment(&plan.attachment_id, |runtime| runtime.collector = None);
    if progress.is_closed() {
        tracing::info!(attachment = %plan.attachment_id, "calibration cancelled by the caller");
        return Ok(());
    }
    tracing::info!(attachment = %plan.attachment_id, targets, others, seconds = started.elapsed().as_secs_f64(), "calibration epochs collected; fitting");

    let fit_plan = (plan.filters_per_class, plan.folds);
    let (n_channels, n_samples) = (base.channels.len(), base.window_samples());
    let fitted = tokio::task::spawn_blocking(move || {
        let fit_started = Instant::now();
        let mut scratch = Vec::new();
        let inputs: Vec<Vec<f32>> = epochs
            .iter()
            .map(|(window, _)| {
                let mut input = vec![0.0f32; n_channels * n_samples];
                preprocessor.run(window, &mut scratch, &mut input);
                input
            })
            .collect();
        let labels: Vec<bool> = epochs.iter().map(|(_, l)| *l).collect();
        let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        let cv = XdawnLda::cross_validate(&refs, &labels, n_channels, n_samples, fit_plan.0, fit_plan.1)?;
        let model = XdawnLda::fit(&refs, &labels, n_channels, n_samples, fit_plan.0)?;
        Ok::<_, crate::decode::erp::ErpError>((model, cv, fit_started.elapsed().as_secs_f64()))
    })
    .await
    .map_err(|e| Status::internal(format!("fitting task failed: {e}")))?
    .map_err(|e| Status::failed_precondition(format!("cannot fit the decoder: {e}")))?;
    let (decoder, cv, fit_seconds) = fitted;

    let version = utc_stamp();
    let card = calibrated_card(&base, &plan, &session_id, &version, targets, others, &cv);
    let artifact = save(models.calibrations_dir(), card.clone(), &decoder)
        .map_err(|e| Status::internal(format!("saving the fitted decoder failed: {e}")))?;
    let mut card = card;
    card.card_path = artifact.clone();
    let model = models.register_native(card, Arc::new(decoder)).map_err(|e| Status::internal(e.to_string()))?;
    let swapped = plan.swap && sessions.swap_model(&plan.attachment_id, model).is_ok();
    tracing::info!(model = %plan.model_id, %version, auc = cv.auc, swapped, "calibration done");
    let result = pb::CalibrationResult {
        model_id: plan.model_id.clone(),
        model_version: version,
        epochs: targets + others,
        target_epochs: targets,
        cv_auc: cv.auc,
        cv_balanced_accuracy: cv.balanced_accuracy,
        folds: cv.folds as u32,
        fit_seconds,
        artifact: artifact.display().to_string(),
        swapped,
    };
    let _ = progress.send(Ok(pb::CalibrateProgress { target_epochs: targets, non_target_epochs: others, result: Some(result) })).await;
    Ok(())
}

/// UTC time to the millisecond: sorts as text, so the newest version is the largest.
pub fn utc_stamp() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = (now.as_secs(), now.subsec_millis());
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{h:02}{m:02}{s:02}.{millis:03}Z")
}

fn calibrated_card(
    base: &ModelCard,
    plan: &Plan,
    session_id: &str,
    version: &str,
    targets: u32,
    others: u32,
    cv: &crate::decode::erp::CrossValidation,
) -> ModelCard {
    let mut card = base.clone();
    card.id = plan.model_id.clone();
    card.version = version.to_string();
    card.task = Task::Classification;
    card.onnx = None;
    // xDAWN + LDA needs every channel it was fitted on: no optional sensors.
    card.sensors = None;
    card.output.kind = crate::decode::card::OutputKind::Probabilities;
    card.native = Some(NativeSpec { kind: "xdawn_lda".into(), params: PathBuf::from(format!("{}-{version}.xdawn.json", plan.model_id)) });
    card.description = Some(format!(
        "xDAWN ({} components per class) + shrinkage LDA, calibrated live; channels, window and preprocessing from {} v{}",
        plan.filters_per_class, base.id, base.version
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
        split: format!("{}-fold stratified cross-validation on the calibration epochs (filters and LDA refitted per fold)", cv.folds),
        metrics: [("cv_auc".to_string(), cv.auc), ("cv_balanced_accuracy".to_string(), cv.balanced_accuracy)].into_iter().collect(),
        command: format!(
            "Decoding.Calibrate(attachment_id={:?}, target_codes={:?}, non_target_codes={:?})",
            plan.attachment_id, plan.target_codes, plan.non_target_codes
        ),
        notes: String::new(),
    };
    card
}

/// Writes `<dir>/<id>/<id>-<version>.card.toml` and its parameter file; returns the card path.
fn save(dir: &std::path::Path, card: ModelCard, decoder: &XdawnLda) -> anyhow::Result<PathBuf> {
    let folder = dir.join(&card.id);
    std::fs::create_dir_all(&folder)?;
    let params = card.native.as_ref().expect("native card").params.clone();
    std::fs::write(folder.join(&params), serde_json::to_vec(decoder)?)?;
    let card_path = folder.join(format!("{}-{}.card.toml", card.id, card.version));
    let text = format!("# Fitted by Myelin live calibration (Decoding.Calibrate).\n{}", toml::to_string(&card)?);
    std::fs::write(&card_path, text)?;
    // Read it back through the normal loader: a saved artifact must load after a restart.
    ModelCard::load(&card_path)?;
    Ok(card_path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_utc_timestamps_that_sort() {
        let v = super::utc_stamp();
        assert_eq!(v.len(), "20261130T064512.123Z".len(), "{v}");
        assert!(v.starts_with("20"), "{v}");
    }
}
