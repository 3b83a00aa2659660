//! The Decoding service: attach, detach, subscribe, calibrate, ConnectLsl and the listings.
//! Each handler only checks its request and hands the work to where it belongs (a session's
//! worker, a blocking thread, the hub); none waits on a lock that decoding holds. The auth layer
//! has checked the caller's scope; handlers check whose session or attachment it is, and leave
//! one audit line per control action.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use myelin_proto::v1::{self as pb, decoding_server::Decoding};
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::attach::AttachSpec;
use crate::auth::audit::{self, Refusal};
use crate::auth::{self, Principal};
use crate::card::ModelCard;
use crate::decode::ModelEntry;
use crate::id::{ID_RULE, is_valid_id, shown};
use crate::publish::Filter;
use crate::session::{Session, SessionError, SessionManager};

pub struct DecodingService {
    pub app: Arc<App>,
}

/// The longest LSL predicate ConnectLsl takes (names, types and source ids included).
const MAX_PREDICATE_BYTES: usize = 4096;

type PredictionStream = Pin<Box<dyn Stream<Item = Result<pb::Prediction, Status>> + Send>>;

#[tonic::async_trait]
impl Decoding for DecodingService {
    async fn attach(&self, request: Request<pb::AttachRequest>) -> Result<Response<pb::AttachReply>, Status> {
        let principal = auth::caller(&request)?;
        let r = request.into_inner();
        let resource = format!("session {} model {}", shown(&r.session_id), shown(&r.model_id));
        let kept = self.app.cluster.as_ref().map(|_| r.clone());
        let spec = match AttachSpec::from_request(r, principal.clone(), self.app.config.decoding.default_latency_budget_ms) {
            Ok(spec) => spec,
            Err(message) => {
                let refused = Err(Status::invalid_argument(message));
                audit::record(&principal, "attach", &resource, &refused);
                return refused;
            }
        };
        // Blocking: a gallery may load (minutes for a large one), and the session's worker primes
        // the new filter with the buffered history before the reply.
        let attacher = self.app.attacher.clone();
        let attached = tokio::task::spawn_blocking(move || attacher.attach(spec))
            .await
            .map_err(|e| Status::internal(format!("attach task failed: {e}")))?;
        if !matches!(attached, Err(SessionError::Refused(_))) {
            let resource = match &attached {
                Ok(reply) => format!("{resource} as attachment {:?}", reply.attachment_id),
                Err(_) => resource,
            };
            audit::record(&principal, "attach", &resource, &attached.as_ref().map_err(|e| Status::from(e.clone())));
        }
        let attached = attached?;
        if let (Some(cluster), Some(request)) = (&self.app.cluster, kept) {
            cluster.attached(request, &attached, principal.name());
        }
        Ok(Response::new(attached))
    }

    async fn detach(&self, request: Request<pb::DetachRequest>) -> Result<Response<pb::DetachReply>, Status> {
        let principal = auth::caller(&request)?;
        let attachment_id = request.into_inner().attachment_id;
        let resource = format!("attachment {}", shown(&attachment_id));
        let session = match self.owned_attachment(&principal, &attachment_id, "detach") {
            Ok(session) => session,
            Err(status) => {
                // Refusals are audited where they are made; a guessed id that names nothing is too.
                if status.code() != tonic::Code::PermissionDenied {
                    audit::record(&principal, "detach", &resource, &Err::<(), _>(status.clone()));
                }
                return Err(status);
            }
        };
        let detached = match session.detach(&attachment_id).await {
            Ok(true) => Ok(pb::DetachReply {}),
            Ok(false) => Err(Status::not_found(format!("attachment {} does not exist", shown(&attachment_id)))),
            Err(error) => Err(error.into()),
        };
        audit::record(&principal, "detach", &resource, &detached);
        Ok(Response::new(detached?))
    }

    type SubscribeStream = PredictionStream;

    async fn subscribe(&self, request: Request<pb::SubscribeRequest>) -> Result<Response<PredictionStream>, Status> {
        let principal = auth::caller(&request)?;
        let r = request.into_inner();
        self.may_subscribe(&principal, &r)?;
        let by_session_only = r.attachment_id.is_empty();
        if by_session_only && r.after_sequence.is_some() {
            return Err(Status::invalid_argument("after_sequence resumes one attachment's stream: name its attachment_id"));
        }
        let filter = Filter { session_id: r.session_id, attachment_id: r.attachment_id, after_sequence: r.after_sequence };
        let mut subscription = self.app.hub.subscribe(&filter)?;
        let slot = self.app.subscribers.take_for(principal.has_quota().then(|| principal.name()))?;
        if by_session_only && !principal.reads_everything() {
            subscription = subscription.only(own_attachments(principal, self.app.sessions.clone()));
        }
        let stream = subscription.into_stream(self.app.shutdown.clone(), slot);
        Ok(Response::new(Box::pin(stream)))
    }

    type CalibrateStream = Pin<Box<dyn Stream<Item = Result<pb::CalibrateProgress, Status>> + Send>>;

    async fn calibrate(&self, request: Request<pb::CalibrateRequest>) -> Result<Response<Self::CalibrateStream>, Status> {
        let principal = auth::caller(&request)?;
        let request = request.into_inner();
        let resource = format!("attachment {}", shown(&request.attachment_id));
        // Another's attachment is refused before anything else; the request's own checks (and
        // NOT_FOUND for an attachment that does not exist) are calibrate's.
        if self.app.sessions.with_attachment(&request.attachment_id).is_ok() {
            self.owned_attachment(&principal, &request.attachment_id, "calibrate")?;
        }
        let started = async {
            let resources = crate::calibrate::Resources {
                slot: self.app.calibrations.take_for(principal.has_quota().then(|| principal.name()))?,
                memory: self.app.memory.clone(),
                shutdown: self.app.shutdown.clone(),
                principal: principal.clone(),
            };
            crate::calibrate::start(request, self.app.sessions.clone(), self.app.models.clone(), resources).await
        }
        .await;
        audit::record(&principal, "calibrate", &resource, &started);
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(started?))))
    }

    async fn connect_lsl(&self, request: Request<pb::ConnectLslRequest>) -> Result<Response<pb::ConnectLslReply>, Status> {
        let principal = auth::caller(&request)?;
        let r = request.into_inner();
        let resource = format!("session {}", shown(&r.session_id));
        let connected = self.connect_lsl_for(r, principal.clone()).await;
        if !matches!(&connected, Err(status) if status.code() == tonic::Code::PermissionDenied) {
            audit::record(&principal, "connect_lsl", &resource, &connected);
        }
        Ok(Response::new(connected?))
    }

    async fn list_sessions(&self, request: Request<pb::ListSessionsRequest>) -> Result<Response<pb::ListSessionsReply>, Status> {
        let principal = auth::caller(&request)?;
        let here = self.app.cluster.as_ref().map_or("", |c| c.replica());
        let mut sessions: Vec<pb::SessionInfo> =
            self.app.sessions.list().iter().map(|s| pb::SessionInfo { replica: here.into(), ..s.info() }).collect();
        if let Some(cluster) = &self.app.cluster {
            sessions.extend(cluster.sessions_elsewhere());
            sessions.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        }
        sessions.retain(|s| principal.may_see_session_of(&s.owner));
        for info in &mut sessions {
            // A shared session's other attachments are its other users' business.
            info.attachments.retain(|a| principal.may_read(&a.owner));
        }
        Ok(Response::new(pb::ListSessionsReply { sessions }))
    }

    async fn list_models(&self, _: Request<pb::ListModelsRequest>) -> Result<Response<pb::ListModelsReply>, Status> {
        let models = self.app.models.entries().iter().map(model_info).collect();
        Ok(Response::new(pb::ListModelsReply { models }))
    }
}

impl DecodingService {
    /// The session of attachment `attachment_id`, if `principal` may change it (its own, or as
    /// admin); NOT_FOUND if there is none, PERMISSION_DENIED (audited) if it is another's.
    fn owned_attachment(&self, principal: &Principal, attachment_id: &str, action: &str) -> Result<Arc<Session>, Status> {
        let session = self.app.sessions.with_attachment(attachment_id)?;
        let owner = session.attachment_owner(attachment_id).unwrap_or_default();
        if !principal.may_change(&owner) {
            return Err(audit::not_owner(principal, action, &format!("attachment {}", shown(attachment_id))));
        }
        Ok(session)
    }

    /// Subscribing reads: everything with `observe` (or admin); otherwise one's own attachments,
    /// or the sessions one may see, named in the request.
    fn may_subscribe(&self, principal: &Principal, r: &pb::SubscribeRequest) -> Result<(), Status> {
        if principal.reads_everything() {
            return Ok(());
        }
        if !r.attachment_id.is_empty() {
            let session = self.app.sessions.with_attachment(&r.attachment_id)?;
            if principal.may_read(&session.attachment_owner(&r.attachment_id).unwrap_or_default()) {
                return Ok(());
            }
            return Err(audit::not_owner(principal, "subscribe", &format!("attachment {}", shown(&r.attachment_id))));
        }
        if r.session_id.is_empty() {
            return Err(audit::refuse(
                Refusal::NoScope,
                principal.name(),
                "subscribe",
                "every session",
                None,
                format!(
                    "principal {:?} may not subscribe to every session (that needs observe or admin): name a session or an attachment",
                    principal.name()
                ),
            ));
        }
        match self.app.sessions.get(&r.session_id) {
            Some(session) if !principal.may_see_session_of(&session.owner) => {
                Err(audit::not_owner(principal, "subscribe", &format!("session {}", shown(&r.session_id))))
            }
            Some(_) => Ok(()),
            None => Err(Status::not_found(format!("session {} does not exist", shown(&r.session_id)))),
        }
    }

    async fn connect_lsl_for(&self, r: pb::ConnectLslRequest, principal: Principal) -> Result<pb::ConnectLslReply, Status> {
        let Some(lsl) = self.app.lsl.clone() else {
            return Err(Status::unavailable(
                "LabStreamingLayer is not available on this server: liblsl was not found (run deploy/setup.sh, or set lsl.library)",
            ));
        };
        if !is_valid_id(&r.session_id) {
            return Err(Status::invalid_argument(format!("session_id {} must be {ID_RULE}", shown(&r.session_id))));
        }
        if !(r.timeout_s >= 0.0 && r.timeout_s <= self.app.config.limits.connect_lsl_timeout_s) {
            return Err(Status::invalid_argument(format!(
                "timeout_s must be 0 (the server's default) to {} s (limits.connect_lsl_timeout_s), got {}",
                self.app.config.limits.connect_lsl_timeout_s, r.timeout_s
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
        // liblsl sends predicates in its resolver's UDP queries: a long one cannot be a real stream's.
        for (field, predicate) in [("data stream", &data_predicate), ("marker_predicate", &r.marker_predicate)] {
            if predicate.len() > MAX_PREDICATE_BYTES {
                return Err(Status::invalid_argument(format!(
                    "{field}: predicate {} is over {MAX_PREDICATE_BYTES} bytes",
                    shown(predicate)
                )));
            }
        }
        let spec = crate::ingest::lsl::SourceSpec {
            session_id: r.session_id,
            data_predicate,
            marker_predicate: r.marker_predicate,
            timeout_s: if r.timeout_s > 0.0 { r.timeout_s } else { self.app.config.lsl.resolve_timeout_seconds },
            modality: pb::Modality::try_from(r.modality).unwrap_or(pb::Modality::Unspecified),
            owner: principal,
        };
        // Another principal's session id is refused before waiting on the network (the
        // registry checks again, atomically, when the session opens).
        if let Some(existing) = self.app.sessions.get(&spec.session_id).filter(|s| !spec.owner.may_change(&s.owner)) {
            return Err(audit::not_owner(&spec.owner, "connect_lsl", &format!("session {:?}", existing.id)));
        }
        let (sessions, shutdown, stall) = (self.app.sessions.clone(), self.app.shutdown.clone(), self.app.config.lsl.stall_seconds);
        let connecting = tokio::task::spawn_blocking(move || crate::ingest::lsl::connect(&lsl, spec, &sessions, shutdown, stall));
        let mut shutdown = self.app.shutdown.clone();
        // Resolving waits up to its timeout; shutdown does not wait for it (a session it opens
        // late is refused).
        let reply = tokio::select! {
            joined = connecting => joined.map_err(|e| Status::internal(format!("LSL connect task failed: {e}")))??,
            _ = shutdown.wait() => return Err(crate::shutdown::shutting_down()),
        };
        Ok(reply)
    }
}

/// For a subscriber by session without `observe`: only the predictions of attachments it may
/// read. Each attachment's owner is looked up once (ids are never reused: 128 random bits).
fn own_attachments(principal: Principal, sessions: Arc<SessionManager>) -> impl FnMut(&pb::Prediction) -> bool + Send + 'static {
    let mut readable = std::collections::HashMap::<String, bool>::new();
    move |prediction| {
        if let Some(&known) = readable.get(&prediction.attachment_id) {
            return known;
        }
        let owner = sessions.get(&prediction.session_id).and_then(|s| s.attachment_owner(&prediction.attachment_id));
        let may = owner.is_some_and(|owner| principal.may_read(&owner));
        readable.insert(prediction.attachment_id.clone(), may);
        may
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
