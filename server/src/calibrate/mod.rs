//! Live calibration (`Decoding.Calibrate`): collect labelled epochs from an event-locked
//! attachment, fit the native xDAWN + LDA decoder, save it as a versioned model, and swap it into
//! the attachment, all while the stream and its subscribers carry on.

mod artifact;
mod fit;
mod plan;

use std::sync::Arc;
use std::time::{Duration, Instant};

use myelin_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;

use crate::budget::{MemoryBudget, Slot};
use crate::card::ModelCard;
use crate::decode::ModelRegistry;
use crate::decode::input::WindowPreprocessor;
use crate::decode::registry::ClaimError;
use crate::id::{ID_RULE, is_valid_id, shown};
use crate::session::{Session, SessionManager};
use crate::shutdown::Shutdown;
use crate::window::Cutter;
use crate::window::collector::Collector;
use plan::{DecoderChoice, Plan};

/// Longest collection a calibration may ask for (a day), and its other bounds.
const MAX_SECONDS: f64 = 86_400.0;
const MAX_EPOCHS: u32 = 100_000;
const MAX_FOLDS: u32 = 100;
const MAX_FILTERS_PER_CLASS: u32 = 64;

/// Epochs a calibration bounded by time only (max_epochs 0) keeps at most.
const TIMED_EPOCHS: usize = 8192;

/// What a calibration holds while it runs: its place among `limits.calibrations`, the buffer
/// budget its epochs draw on, and the shutdown signal.
pub struct Resources {
    pub slot: Slot,
    pub memory: Arc<MemoryBudget>,
    pub shutdown: Shutdown,
    /// Who asked (for the audit line of a swap).
    pub principal: crate::auth::Principal,
}

/// Starts a calibration; the returned stream carries progress, then the result or an error
/// (UNAVAILABLE if the server shuts down while it collects).
pub async fn start(
    request: pb::CalibrateRequest,
    sessions: Arc<SessionManager>,
    models: Arc<ModelRegistry>,
    resources: Resources,
) -> Result<mpsc::Receiver<Result<pb::CalibrateProgress, Status>>, Status> {
    if request.target_codes.is_empty() || request.non_target_codes.is_empty() {
        return Err(Status::invalid_argument("target_codes and non_target_codes must both be set"));
    }
    // The id names a directory under calibrations_dir: "." and ".." are refused as well.
    let id = request.model_id.as_str();
    if !id.is_empty() && (!is_valid_id(id) || id == "." || id == "..") {
        return Err(Status::invalid_argument(format!("model_id {} must be {ID_RULE}", shown(&request.model_id))));
    }
    if request.max_epochs == 0 && !(request.max_seconds > 0.0) {
        return Err(Status::invalid_argument("set max_epochs or max_seconds (when to stop collecting)"));
    }
    // Every number bounded before anything is set up (a Duration from an infinite number panics).
    if !(request.max_seconds >= 0.0 && request.max_seconds <= MAX_SECONDS) {
        return Err(Status::invalid_argument(format!("max_seconds must be 0 to {MAX_SECONDS}, got {}", request.max_seconds)));
    }
    for (field, value, most) in [
        ("max_epochs", request.max_epochs, MAX_EPOCHS),
        ("folds", request.folds, MAX_FOLDS),
        ("filters_per_class", request.filters_per_class, MAX_FILTERS_PER_CLASS),
    ] {
        if value > most {
            return Err(Status::invalid_argument(format!("{field} must be at most {most}, got {value}")));
        }
    }
    if request.folds == 1 {
        return Err(Status::invalid_argument("folds must be 0 (the default, 5) or at least 2"));
    }
    let decoder = DecoderChoice::parse(&request.decoder).ok_or_else(|| {
        Status::invalid_argument(format!("decoder must be empty, xdawn_lda, xdawn_riemann or best; got {}", shown(&request.decoder)))
    })?;
    let max_epochs = if request.max_epochs == 0 { TIMED_EPOCHS } else { request.max_epochs as usize };
    let session = sessions.with_attachment(&request.attachment_id)?;
    let attachment = session.attachment(&request.attachment_id).ok_or_else(|| Status::not_found("the attachment's session has ended"))?;
    let model_id = if request.model_id.is_empty() { format!("xdawn-{}", session.id) } else { request.model_id.clone() };
    // A calibrated model must not take the id of one that came from elsewhere (a shipped
    // decoder): every later Attach by that id would get the calibration instead. Nor may it add
    // versions to another principal's calibration: later Attaches by that id would decode with
    // this one. Refused here before collecting; decided for good when the fit is registered.
    models.may_calibrate(&model_id, &resources.principal).map_err(|e| claim_refused(e, &resources.principal))?;
    // The epochs (each a window at the stream rate, then its model input) are counted against
    // the server's buffer memory before any is kept.
    let epoch_bytes = (attachment.preprocessor.stream_values()
        + attachment.model.card.channels.len() * attachment.model.card.window_samples()) as u64
        * 4;
    let reserved = resources.memory.reserve(max_epochs as u64 * epoch_bytes, || format!("a calibration of {max_epochs} epochs"))?;
    // Bounded: at most max_epochs epochs are ever wanted, and a few thousand waiting is plenty;
    // beyond that the collector drops (the count says so).
    let (epochs_tx, epochs_rx) = mpsc::channel(max_epochs.min(8192));
    let (target_codes, non_target_codes) = (request.target_codes.clone(), request.non_target_codes.clone());
    let start_collecting = move |runtime: &mut crate::session::attachment::AttachmentState| {
        let Cutter::EventLocked { codes, .. } = &runtime.cutter else {
            return Err(Status::invalid_argument("calibration needs an event-locked attachment"));
        };
        if let Some(code) = target_codes.iter().chain(&non_target_codes).find(|c| !codes.contains(c)) {
            return Err(Status::invalid_argument(format!(
                "the attachment does not cut windows for marker code {code} (its codes: {codes:?})"
            )));
        }
        if runtime.collector.is_some() {
            return Err(Status::failed_precondition("a calibration is already collecting on this attachment"));
        }
        runtime.collector = Some(Collector { target_codes, non_target_codes, sender: epochs_tx });
        let shared = &runtime.shared;
        Ok((shared.session_id.clone(), shared.model.card.clone(), shared.preprocessor.clone()))
    };
    let (session_id, card, preprocessor) = session.visit(&request.attachment_id, start_collecting).await??;
    let plan = Plan {
        attachment_id: request.attachment_id.clone(),
        target_codes: request.target_codes.clone(),
        non_target_codes: request.non_target_codes.clone(),
        max_epochs,
        max_duration: (request.max_seconds > 0.0).then(|| Duration::from_secs_f64(request.max_seconds)),
        model_id,
        filters_per_class: if request.filters_per_class == 0 { 2 } else { request.filters_per_class as usize },
        folds: if request.folds == 0 { 5 } else { request.folds as usize },
        decoder,
        swap: !request.keep_current_model,
        calibrated_by: resources.principal.name().to_string(),
    };
    let (progress_tx, progress_rx) = mpsc::channel(64);
    let Resources { slot, shutdown, principal, .. } = resources;
    tokio::spawn(async move {
        let outcome = run(plan, session_id, card, preprocessor, epochs_rx, session, models, shutdown, &progress_tx, &principal).await;
        if let Err(status) = outcome {
            let _ = progress_tx.send(Err(status)).await;
        }
        drop((slot, reserved));
    });
    Ok(progress_rx)
}

#[allow(clippy::too_many_arguments)]
async fn run(
    plan: Plan,
    session_id: String,
    base: ModelCard,
    preprocessor: WindowPreprocessor,
    mut epochs_rx: mpsc::Receiver<(Vec<f32>, bool)>,
    session: Arc<Session>,
    models: Arc<ModelRegistry>,
    mut shutdown: Shutdown,
    progress: &mpsc::Sender<Result<pb::CalibrateProgress, Status>>,
    principal: &crate::auth::Principal,
) -> Result<(), Status> {
    let started = Instant::now();
    let deadline = plan.max_duration.map(|d| tokio::time::Instant::now() + d);
    let mut epochs: Vec<(Vec<f32>, bool)> = Vec::new();
    let (mut targets, mut others) = (0u32, 0u32);
    while epochs.len() < plan.max_epochs {
        let next = tokio::select! {
            next = epochs_rx.recv() => next,
            _ = progress.closed() => break, // the caller went away while nothing arrived
            _ = shutdown.wait() => break,
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
    let _ = session.visit(&plan.attachment_id, |runtime| runtime.collector = None).await;
    // The stream may have ended because the server is shutting down: no fit then either.
    if shutdown.is_triggered() {
        return Err(crate::shutdown::shutting_down());
    }
    if progress.is_closed() {
        tracing::info!(attachment = %plan.attachment_id, "calibration cancelled by the caller");
        return Ok(());
    }
    tracing::info!(attachment = %plan.attachment_id, targets, others, seconds = started.elapsed().as_secs_f64(), "calibration epochs collected; fitting");

    let smallest_class = targets.min(others) as usize;
    if plan.folds > smallest_class {
        return Err(Status::failed_precondition(format!(
            "{} folds need at least {} epochs of each class; collected {targets} targets and {others} non-targets",
            plan.folds, plan.folds
        )));
    }
    let (n_channels, n_samples) = (base.channels.len(), base.window_samples());
    let fit_plan =
        fit::FitPlan { choice: plan.decoder, n_channels, n_samples, filters_per_class: plan.filters_per_class, folds: plan.folds };
    let fitting = tokio::task::spawn_blocking(move || fit::fit(&fit_plan, &preprocessor, &epochs));
    // Shutdown does not wait for a fit (nor register what it fits: the models are stopping).
    let fitted = tokio::select! {
        biased;
        _ = shutdown.wait() => return Err(crate::shutdown::shutting_down()),
        fitted = fitting => fitted,
    };
    let fit::Fitted { decoder, cv, candidates, seconds: fit_seconds } = fitted
        .map_err(|e| Status::internal(format!("fitting task failed: {e}")))?
        .map_err(|e| Status::failed_precondition(format!("cannot fit the decoder: {e}")))?;
    if shutdown.is_triggered() {
        return Err(crate::shutdown::shutting_down());
    }

    let claim = models.claim_calibrated(&plan.model_id, principal).map_err(|e| claim_refused(e, principal))?;
    let version = claim.version.clone();
    let card = artifact::calibrated_card(&base, &plan, &session_id, &version, (targets, others), &decoder, &candidates);
    let decoder = Arc::new(decoder);
    // Disk work, off the async threads.
    let saving = {
        let (dir, card, decoder) = (models.calibrations_dir().to_path_buf(), card.clone(), decoder.clone());
        tokio::task::spawn_blocking(move || artifact::save(&dir, card, &decoder))
    };
    let artifact = saving
        .await
        .map_err(|e| Status::internal(format!("saving the fitted decoder failed: {e}")))?
        .map_err(|e| Status::internal(format!("saving the fitted decoder failed: {e}")))?;
    let mut card = card;
    card.card_path = artifact.clone();
    let kind = decoder.kind();
    // Registering starts the model's threads and measures its cost: off the async threads too.
    let registering = {
        let models = models.clone();
        tokio::task::spawn_blocking(move || models.register_native(card, decoder, claim))
    };
    let model = registering.await.map_err(|e| Status::internal(e.to_string()))?.map_err(|e| Status::internal(e.to_string()))?;
    let swapped = plan.swap && session.visit(&plan.attachment_id, move |runtime| runtime.swap_model(model)).await.is_ok();
    tracing::info!(model = %plan.model_id, %version, auc = cv.auc, swapped, "calibration done");
    if swapped {
        let resource = format!("attachment {:?} now decodes with {} v{version}", plan.attachment_id, plan.model_id);
        crate::auth::audit::record(principal, "swap", &resource, &Ok::<(), Status>(()));
    }
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
        decoder: kind.as_str().to_string(),
        candidates: candidates
            .iter()
            .map(|(k, cv)| pb::DecoderQuality { decoder: k.as_str().into(), cv_auc: cv.auc, cv_balanced_accuracy: cv.balanced_accuracy })
            .collect(),
    };
    let _ = progress.send(Ok(pb::CalibrateProgress { target_epochs: targets, non_target_epochs: others, result: Some(result) })).await;
    Ok(())
}

/// A calibration refused its model id: another principal's (audited), or a loaded model's.
fn claim_refused(error: ClaimError, principal: &crate::auth::Principal) -> Status {
    match error {
        ClaimError::NotOwner { id, .. } => crate::auth::audit::not_owner(principal, "calibrate", &format!("model {}", shown(&id))),
        taken @ ClaimError::Taken { .. } => Status::invalid_argument(taken.to_string()),
    }
}
