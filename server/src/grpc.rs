//! The Decoding gRPC service: attach, detach, subscribe, calibrate, ConnectLsl and the listings.
//! Each handler only checks its request and hands the work to where it belongs (a session's
//! worker, a blocking thread, the hub); none waits on a lock that decoding holds.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use myelin_proto::v1::{self as pb, decoding_server::Decoding};
use tonic::{Request, Response, Status};

use crate::attach::{AttachSpec, Attacher};
use crate::budget::{MemoryBudget, Slots};
use crate::card::ModelCard;
use crate::decode::{ModelEntry, ModelRegistry};
use crate::id::{ID_RULE, is_valid_id, shown};
use crate::publish::{Filter, Hub};
use crate::session::SessionManager;
use crate::shutdown::Shutdown;

pub struct DecodingService {
    pub attacher: Arc<Attacher>,
    pub sessions: Arc<SessionManager>,
    pub models: Arc<ModelRegistry>,
    pub hub: Hub,
    pub lsl: Option<myelin_lsl::Lsl>,
    pub default_budget_ms: u32,
    pub shutdown: Shutdown,
    pub lsl_resolve_timeout_s: f64,
    pub lsl_stall_s: f64,
    /// Open Subscribe streams (`limits.subscribers`).
    pub subscribers: Arc<Slots>,
    /// Calibrations at once (`limits.calibrations`), and the memory their epochs take.
    pub calibrations: Arc<Slots>,
    pub memory: Arc<MemoryBudget>,
    pub connect_lsl_timeout_s: f64,
}

type PredictionStream = Pin<Box<dyn Stream<Item = Result<pb::Prediction, Status>> + Send>>;

#[tonic::async_trait]
impl Decoding for DecodingService {
    async fn attach(&self, request: Request<pb::AttachRequest>) -> Result<Response<pb::AttachReply>, Status> {
        let r = request.into_inner();
        let late_policy = match pb::LatePolicy::try_from(r.late_policy) {
            Ok(pb::LatePolicy::Drop) => pb::LatePolicy::Drop,
            Ok(_) => pb::LatePolicy::Deliver,
            Err(_) => return Err(Status::invalid_argument(format!("late_policy {} is not a LatePolicy", r.late_policy))),
        };
        let spec = AttachSpec {
            session_id: r.session_id,
            model_id: r.model_id,
            model_version: r.model_version,
            window: r.window.unwrap_or_default(),
            budget_ms: if r.latency_budget_ms == 0 { self.default_budget_ms } else { r.latency_budget_ms },
            late_policy,
            channel_map: r.channel_map,
            lsl_outlet: r.lsl_outlet,
            subject: r.subject,
            top_k: r.top_k.min(1000) as usize,
            gallery: r.gallery,
            include_embedding: r.include_embedding,
        };
        // Blocking: a gallery may load (minutes for a large one), and the session's worker primes
        // the new filter with the buffered history before the reply.
        let attacher = self.attacher.clone();
        let reply = tokio::task::spawn_blocking(move || attacher.attach(spec))
            .await
            .map_err(|e| Status::internal(format!("attach task failed: {e}")))??;
        Ok(Response::new(reply))
    }

    async fn detach(&self, request: Request<pb::DetachRequest>) -> Result<Response<pb::DetachReply>, Status> {
        let attachment_id = request.into_inner().attachment_id;
        let session = self.sessions.with_attachment(&attachment_id)?;
        if !session.detach(&attachment_id).await? {
            return Err(Status::not_found(format!("attachment {attachment_id:?} does not exist")));
        }
        Ok(Response::new(pb::DetachReply {}))
    }

    type SubscribeStream = PredictionStream;

    async fn subscribe(&self, request: Request<pb::SubscribeRequest>) -> Result<Response<PredictionStream>, Status> {
        let r = request.into_inner();
        let filter = Filter { session_id: r.session_id, attachment_id: r.attachment_id };
        let subscription = self.hub.subscribe(&filter)?;
        let stream = subscription.into_stream(self.shutdown.clone(), self.subscribers.take()?);
        Ok(Response::new(Box::pin(stream)))
    }

    type CalibrateStream = Pin<Box<dyn Stream<Item = Result<pb::CalibrateProgress, Status>> + Send>>;

    async fn calibrate(&self, request: Request<pb::CalibrateRequest>) -> Result<Response<Self::CalibrateStream>, Status> {
        let resources =
            crate::calibrate::Resources { slot: self.calibrations.take()?, memory: self.memory.clone(), shutdown: self.shutdown.clone() };
        let progress = crate::calibrate::start(request.into_inner(), self.sessions.clone(), self.models.clone(), resources).await?;
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(progress))))
    }

    async fn connect_lsl(&self, request: Request<pb::ConnectLslRequest>) -> Result<Response<pb::ConnectLslReply>, Status> {
        let r = request.into_inner();
        let Some(lsl) = self.lsl.clone() else {
            return Err(Status::unavailable(
                "LabStreamingLayer is not available on this server: liblsl was not found (run deploy/setup.sh, or set lsl.library)",
            ));
        };
        if !is_valid_id(&r.session_id) {
            return Err(Status::invalid_argument(format!("session_id {} must be {ID_RULE}", shown(&r.session_id))));
        }
        if !(r.timeout_s >= 0.0 && r.timeout_s <= self.connect_lsl_timeout_s) {
            return Err(Status::invalid_argument(format!(
                "timeout_s must be 0 (the server's default) to {} s (limits.connect_lsl_timeout_s), got {}",
                self.connect_lsl_timeout_s, r.timeout_s
            )));
        }
        let data_predicate = if r.data_predicate.is_empty() {
            if r.data_name.is_empty() && r.data_type.is_empty() && r.data_source_id.is_empty() {
                return Err(Status::invalid_argument("name the data stream: data_predicate, or data_name / data_type / data_source_id"));
            }
            myelin_lsl::predicate(&r.data_name, &r.data_type, &r.data_source_id)
        } else {
            r.data_predicate
        };
        let spec = crate::ingest::lsl::SourceSpec {
            session_id: r.session_id,
            data_predicate,
            marker_predicate: r.marker_predicate,
            timeout_s: if r.timeout_s > 0.0 { r.timeout_s } else { self.lsl_resolve_timeout_s },
            modality: pb::Modality::try_from(r.modality).unwrap_or(pb::Modality::Unspecified),
        };
        let (sessions, shutdown, stall) = (self.sessions.clone(), self.shutdown.clone(), self.lsl_stall_s);
        let connecting = tokio::task::spawn_blocking(move || crate::ingest::lsl::connect(&lsl, spec, &sessions, shutdown, stall));
        let mut shutdown = self.shutdown.clone();
        // Resolving waits up to its timeout; shutdown does not wait for it (a session it opens
        // late is refused).
        let reply = tokio::select! {
            joined = connecting => joined.map_err(|e| Status::internal(format!("LSL connect task failed: {e}")))??,
            _ = shutdown.wait() => return Err(crate::shutdown::shutting_down()),
        };
        Ok(Response::new(reply))
    }

    async fn list_sessions(&self, _: Request<pb::ListSessionsRequest>) -> Result<Response<pb::ListSessionsReply>, Status> {
        let sessions = self.sessions.list().iter().map(|s| s.info()).collect();
        Ok(Response::new(pb::ListSessionsReply { sessions }))
    }

    async fn list_models(&self, _: Request<pb::ListModelsRequest>) -> Result<Response<pb::ListModelsReply>, Status> {
        let models = self.models.entries().iter().map(model_info).collect();
        Ok(Response::new(pb::ListModelsReply { models }))
    }
}

pub fn model_info(entry: &ModelEntry) -> pb::ModelInfo {
    match entry {
        ModelEntry::Ready(model) => {
            let mut info = card_info(&model.card);
            info.ready = true;
            info.execution_provider = model.provider.clone();
            info
        }
        ModelEntry::Failed { id, version, card, error } => {
            let mut info = card.as_deref().map(card_info).unwrap_or_default();
            info.id = id.clone();
            info.version = version.clone();
            info.ready = false;
            info.error = error.clone();
            info
        }
    }
}

fn card_info(card: &ModelCard) -> pb::ModelInfo {
    use crate::card::CardModality;
    let modality = match card.modality {
        CardModality::Eeg => pb::Modality::Eeg,
        CardModality::Meg => pb::Modality::Meg,
        CardModality::Seeg => pb::Modality::Seeg,
        CardModality::Ecog => pb::Modality::Ecog,
    };
    pb::ModelInfo {
        id: card.id.clone(),
        version: card.version.clone(),
        task: card.task.as_str().into(),
        modality: modality as i32,
        channels: card.channels.clone(),
        sample_rate_hz: card.sample_rate_hz,
        window_tmin_s: card.window.tmin_s,
        window_tmax_s: card.window.tmax_s,
        labels: card.labels.clone(),
        input: Some(pb::TensorSpec { name: card.input.name.clone(), shape: card.input.shape.clone() }),
        output: Some(pb::TensorSpec { name: card.output.name.clone(), shape: card.output.shape.clone() }),
        ready: false,
        error: String::new(),
        execution_provider: String::new(),
        data_kind: card.provenance.data_kind.clone(),
        training_data: card.provenance.training_data.clone(),
        subject: card.subject.clone().unwrap_or_default(),
    }
}
