//! Attach: binds a model to a session. Checks the request against the session's stream and the
//! model's card (channels, rates, window), loads a gallery if one is asked for, opens the LSL
//! outlets, builds the attachment's state and hands it to the session's worker, which primes it
//! with the buffered samples and feeds it from then on. Blocking (galleries load, the worker
//! primes): run it off the async threads.

mod channels;
pub mod gallery_cache;
pub mod window;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use myelin_proto::v1 as pb;

use crate::auth::Principal;
use crate::auth::audit::{self, Refusal};
use crate::budget::{Slot, Slots};
use crate::card::{Layout, Task};
use crate::decode::input::WindowPreprocessor;
use crate::decode::job::WindowBuffers;
use crate::decode::registry::{Lookup, ModelRegistry};
use crate::decode::result::retrieval_top_k;
use crate::decode::{Attachment, LoadedModel};
use crate::dsp::robust::RobustFit;
use crate::dsp::sos::SosFilter;
use crate::id::shown;
use crate::publish::Hub;
use crate::publish::lsl::{OutletGuard, OutletSpec};
use crate::session::attachment::AttachmentState;
use crate::session::{Session, SessionError, SessionManager};
use gallery_cache::GalleryCache;

/// What Attach asked for, validated against the session and the model.
pub struct AttachSpec {
    pub session_id: String,
    pub model_id: String,
    pub model_version: String,
    pub window: pb::WindowPolicy,
    pub budget_ms: u32,
    pub late_policy: pb::LatePolicy,
    pub channel_map: Vec<pb::ChannelMapping>,
    pub lsl_outlet: bool,
    pub subject: String,
    pub top_k: usize,
    /// Retrieval: the gallery to load (path under `models.galleries_dir`) and its index.
    pub gallery: Option<pb::GallerySpec>,
    pub include_embedding: bool,
    /// Who asked: it must be allowed to attach to the session, and the attachment is its.
    pub principal: Principal,
    /// An attachment the session had on a replica that stopped, made again here (cluster).
    pub restore: Option<Restore>,
}

impl AttachSpec {
    /// The spec of an Attach request by `principal`; a latency budget of 0 takes
    /// `default_budget_ms`. Refuses a late_policy that is no LatePolicy.
    pub fn from_request(r: pb::AttachRequest, principal: Principal, default_budget_ms: u32) -> Result<Self, String> {
        let late_policy = match pb::LatePolicy::try_from(r.late_policy) {
            Ok(pb::LatePolicy::Drop) => pb::LatePolicy::Drop,
            Ok(_) => pb::LatePolicy::Deliver,
            Err(_) => return Err(format!("late_policy {} is not a LatePolicy", r.late_policy)),
        };
        Ok(Self {
            session_id: r.session_id,
            model_id: r.model_id,
            model_version: r.model_version,
            window: r.window.unwrap_or_default(),
            budget_ms: if r.latency_budget_ms == 0 { default_budget_ms } else { r.latency_budget_ms },
            late_policy,
            channel_map: r.channel_map,
            lsl_outlet: r.lsl_outlet,
            subject: r.subject,
            top_k: r.top_k.min(1000) as usize,
            gallery: r.gallery,
            include_embedding: r.include_embedding,
            principal,
            restore: None,
        })
    }
}

/// What an attachment restored on another replica keeps: its id, and numbering that goes on
/// past every number the stopped replica may have used, after a GAP announcing the loss.
pub struct Restore {
    pub id: String,
    /// The GAP's sequence number; predictions follow from the next. No GAP when `exact`.
    pub gap_sequence: u64,
    /// The numbering is known exactly (the attachment ran here): predictions go on from
    /// `gap_sequence` itself, and no GAP is announced.
    pub exact: bool,
    /// Why: which replica stopped, which took over.
    pub reason: String,
}

pub struct Attacher {
    pub sessions: Arc<SessionManager>,
    pub models: Arc<ModelRegistry>,
    pub hub: Hub,
    pub lsl: Option<myelin_lsl::Lsl>,
    galleries: GalleryCache,
    /// Attachments publishing LSL outlets (`limits.lsl_outlets`).
    outlets: Arc<Slots>,
    /// Whether non-admins may ask for LSL outlets (always without authentication;
    /// `auth.allow_lsl_outlets` with it).
    lsl_outlets_for_all: bool,
}

impl Attacher {
    pub fn new(
        sessions: Arc<SessionManager>,
        models: Arc<ModelRegistry>,
        hub: Hub,
        lsl: Option<myelin_lsl::Lsl>,
        lsl_outlets_for_all: bool,
    ) -> Self {
        let outlets = Slots::new("attachments with LSL outlets", "limits.lsl_outlets", sessions.limits().lsl_outlets);
        Self { sessions, models, hub, lsl, galleries: GalleryCache::default(), outlets, lsl_outlets_for_all }
    }

    pub fn attach(&self, spec: AttachSpec) -> Result<pb::AttachReply, SessionError> {
        let session = self
            .sessions
            .get(&spec.session_id)
            .ok_or_else(|| SessionError::NotFound(format!("session {} does not exist", shown(&spec.session_id))))?;
        if !spec.principal.may_attach_to(&session.owner) {
            return Err(SessionError::Refused(audit::not_owner(&spec.principal, "attach", &format!("session {:?}", session.id))));
        }
        if spec.lsl_outlet && !self.lsl_outlets_for_all && !spec.principal.is_admin() {
            let message = "lsl_outlet: LSL outlets can be read by anyone on the network, and auth.allow_lsl_outlets is false (admins only)";
            let resource = format!("session {:?}", session.id);
            return Err(SessionError::Refused(audit::refuse(
                Refusal::NoScope,
                spec.principal.name(),
                "attach",
                &resource,
                None,
                message.into(),
            )));
        }
        // Refused before anything is built (LSL outlets appear on the network): the worker
        // checks again, for good, as it takes the attachment.
        let limit = self.sessions.limits().attachments_per_session;
        if session.attachment_count() >= limit {
            return Err(SessionError::attachments_full(&session.id, limit));
        }
        let model = self.find_model(&spec)?;
        let card = &model.card;
        let header = &session.header;
        let channels = channels::map_channels(card, header, &spec.channel_map)?;
        let sensors = match &card.sensors {
            Some(sensors) => Some(Arc::new(channels::sensor_inputs(card, sensors, header, &channels.index)?)),
            None => None,
        };
        let plan = window::plan_window(card, header.nominal_rate_hz, &spec.window, self.sessions.config().max_pending_markers)?;
        // Last of the checks: loading a gallery (and building its graph) is the expensive part.
        let gallery = match spec.gallery.as_ref().filter(|g| !g.path.is_empty()) {
            Some(request) => Some(self.galleries.get(request, card, self.models.galleries_dir())?),
            None => None,
        };
        let preprocessor = WindowPreprocessor::new(
            &card.preprocessing,
            card.channels.len(),
            plan.resampling.clone(),
            plan.model_samples,
            plan.tmin_s,
            card.sample_rate_hz,
            card.input.layout == Layout::ChannelsTime,
        );
        // The ring is allocated only once the session's and the server's budgets have room.
        let fit_samples = preprocessor.session_fit_samples(header.nominal_rate_hz);
        let width = channels.index.len();
        let ring_bytes = AttachmentState::ring_bytes(session.capacity, width) + fit_samples.map_or(0, |n| RobustFit::bytes(width, n));
        let memory = session.memory.reserve(ring_bytes, || format!("an attachment of model {} to session {:?}", card.id, session.id))?;
        let id = match &spec.restore {
            Some(restore) => restore.id.clone(),
            None => attachment_id(&session.id)?,
        };
        let route = self.hub.attachment_route(session.route(), &id);
        // Announced before the attachment decodes anything, so that the GAP comes first.
        if let Some(restore) = spec.restore.as_ref().filter(|r| !r.exact) {
            route.announce(pb::Prediction {
                session_id: session.id.clone(),
                attachment_id: id.clone(),
                model_id: card.id.clone(),
                model_version: card.version.clone(),
                sequence: restore.gap_sequence,
                status: pb::PredictionStatus::Gap as i32,
                error_reason: restore.reason.clone(),
                ..Default::default()
            });
        }
        let outlets = if spec.lsl_outlet { Some(self.open_outlets(&session, &id, &model, spec.top_k, &route)?) } else { None };
        let shared = Arc::new(Attachment {
            id: id.clone(),
            session_id: session.id.clone(),
            owner: spec.principal.name().to_string(),
            model: model.clone(),
            budget_ms: spec.budget_ms,
            late_policy: spec.late_policy,
            policy: spec.window.clone(),
            preprocessor,
            predictions: AtomicU64::new(spec.restore.as_ref().map_or(0, |r| r.gap_sequence + u64::from(!r.exact))),
            top_k: spec.top_k,
            sensors,
            gallery: gallery.clone(),
            include_embedding: spec.include_embedding,
            route,
            buffers: Arc::new(WindowBuffers::new(card.channels.len() * card.window_samples())),
            in_flight: session.in_flight().clone(),
            fairness: Default::default(),
        });
        let filter = SosFilter::new(&plan.sos, channels.index.len());
        let robust_fit = fit_samples.map(|n| RobustFit::new(width, n));
        let mut state =
            AttachmentState::new(shared, channels.index, filter, header.nominal_rate_hz, session.capacity, plan.cutter, robust_fit, memory);
        let lsl_outlets = match outlets {
            Some((names, guard)) => {
                state.keep_alive = Some(Box::new(guard));
                names
            }
            None => Vec::new(),
        };
        session.attach(state)?;
        Ok(pb::AttachReply {
            attachment_id: id,
            window_stream_samples: plan.length as u64,
            window_lookahead_samples: plan.lookahead as u64,
            window_model_samples: plan.model_samples as u64,
            latency_budget_ms: spec.budget_ms,
            lsl_outlets,
            gallery_items: gallery.map_or(0, |g| g.len() as u64),
            missing_channels: channels.missing,
        })
    }

    fn find_model(&self, spec: &AttachSpec) -> Result<Arc<LoadedModel>, SessionError> {
        match self.models.find(&spec.model_id, &spec.model_version, &spec.subject) {
            Lookup::Ready(model) => Ok(model),
            Lookup::Failed(error) => {
                Err(SessionError::FailedPrecondition(format!("model {} is not available: {error}", shown(&spec.model_id))))
            }
            Lookup::Missing => {
                let version =
                    if spec.model_version.is_empty() { String::new() } else { format!(" version {}", shown(&spec.model_version)) };
                Err(SessionError::NotFound(format!("model {}{version} is not loaded", shown(&spec.model_id))))
            }
        }
    }

    /// The attachment's two LSL outlets, fed from its route.
    fn open_outlets(
        &self,
        session: &Session,
        id: &str,
        model: &LoadedModel,
        top_k: usize,
        route: &crate::publish::AttachmentRoute,
    ) -> Result<(Vec<String>, Outlets), SessionError> {
        let lsl = self.lsl.as_ref().ok_or_else(|| {
            SessionError::Unavailable(
                "lsl_outlet: LabStreamingLayer is not available on this server (liblsl not found; run deploy/setup.sh)".into(),
            )
        })?;
        let slot = self.outlets.take()?;
        let card = &model.card;
        let spec = OutletSpec {
            session_id: session.id.clone(),
            attachment_id: id.to_string(),
            model_id: card.id.clone(),
            model_version: card.version.clone(),
            labels: match card.embedding_dim() {
                // Gallery retrieval: one channel per rank (the scores of the top k).
                Some(_) => (1..=retrieval_top_k(top_k)).map(|rank| format!("rank{rank}")).collect(),
                None => card.labels.clone(),
            },
            unit: if card.task == Task::Retrieval { "score".into() } else { "probability".into() },
        };
        let (names, guard) =
            crate::publish::lsl::start(lsl, spec, route).map_err(|e| SessionError::Unavailable(format!("creating LSL outlets: {e}")))?;
        Ok((names, Outlets { _guard: guard, _slot: slot }))
    }
}

/// An attachment's LSL outlets and the slot they take.
struct Outlets {
    _guard: OutletGuard,
    _slot: Slot,
}

/// A new attachment id, `att-<128 random bits in hex>@<session id>`: unguessable, so that
/// nobody can detach another client's attachment by counting (ids were sequential once), and
/// carrying its session, so that a proxy in front of several replicas routes a call made with
/// the attachment id alone to the replica that holds the session (`deploy/envoy/`: the
/// `myelin-route` header, rewritten to the part after the `@`). Session ids never contain `@`.
fn attachment_id(session_id: &str) -> Result<String, SessionError> {
    let mut bits = [0u8; 16];
    getrandom::fill(&mut bits).map_err(|e| SessionError::Unavailable(format!("the system's random number generator failed: {e}")))?;
    Ok(format!("att-{}@{session_id}", hex::encode(bits)))
}
