//! Fan-out of predictions, routed by session and attachment.
//!
//! Each attachment publishes into its own [`AttachmentRoute`], which hands every prediction to
//! three rings: the attachment's, its session's and the one of everything (dashboards). A
//! subscriber reads one of them, at its own pace, from its own position; one that falls more than
//! `publish.subscriber_queue` predictions behind loses its own oldest ones (counted in
//! `myelin_subscriber_dropped_total` and in its next prediction's `subscriber_dropped_total`).
//! A session's predictions never enter another session's rings, so no session's traffic can
//! crowd out another's subscribers. Publishing never waits. Consumers on their own threads (LSL
//! outlets on an attachment's route, recorders on a session's) are [`tap::Taps`], fed as each
//! prediction is published through a bounded queue of their own.

pub mod json;
pub mod lsl;
pub mod nats;
pub mod tap;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use futures::Stream;
use myelin_proto::v1::{LatePolicy, Prediction, PredictionStatus};
use tokio::sync::broadcast;

use crate::budget::Slot;
use crate::clock;
use crate::id::shown;
use crate::metrics as m;
use crate::shutdown::Shutdown;
use tap::{Tap, Taps};

type Ring = broadcast::Sender<Arc<Prediction>>;

/// Where routes are found by id: sessions and attachments by name, plus the ring of everything.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    capacity: usize,
    /// Predictions each attachment keeps for subscribers that resume (`publish.replay_predictions`).
    replay: usize,
    everything: Ring,
    /// Routes die with the last session, attachment or in-flight window holding them.
    sessions: Mutex<HashMap<String, Weak<SessionRoute>>>,
    attachments: Mutex<HashMap<String, Weak<AttachmentRoute>>>,
}

/// The ring of one session's predictions (every attachment of every session with this id).
pub struct SessionRoute {
    session_id: String,
    ring: Ring,
    taps: Arc<Taps>,
}

/// Where one attachment's predictions go.
pub struct AttachmentRoute {
    ring: Ring,
    /// Its last predictions, oldest first, for subscribers that resume after a sequence number.
    /// Publishing appends and sends under this lock, so a resuming subscriber's replay and its
    /// live stream meet without a hole or a repeat.
    retained: Mutex<VecDeque<Arc<Prediction>>>,
    replay: usize,
    taps: Arc<Taps>,
    session: Arc<SessionRoute>,
    everything: Ring,
}

/// What a subscriber wants to see; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub session_id: String,
    pub attachment_id: String,
    /// With an attachment: replay its retained predictions numbered after this first.
    pub after_sequence: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("session {} does not exist", shown(.0))]
    NoSession(String),
    #[error("attachment {} does not exist", shown(.0))]
    NoAttachment(String),
    #[error("attachment {} is not an attachment of session {}", shown(.attachment), shown(.session))]
    NotInSession { session: String, attachment: String },
}

impl From<SubscribeError> for tonic::Status {
    fn from(error: SubscribeError) -> Self {
        tonic::Status::not_found(error.to_string())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The live route of `key`, or a new one made by `make` (dead entries are swept on insert).
fn shared<R>(map: &Mutex<HashMap<String, Weak<R>>>, key: &str, make: impl FnOnce() -> R) -> Arc<R> {
    let mut map = lock(map);
    if let Some(route) = map.get(key).and_then(Weak::upgrade) {
        return route;
    }
    map.retain(|_, weak| weak.strong_count() > 0);
    let route = Arc::new(make());
    map.insert(key.to_string(), Arc::downgrade(&route));
    route
}

impl Hub {
    /// `capacity`: predictions each ring holds for a subscriber that has not read them yet.
    pub fn new(capacity: usize, replay: usize) -> Self {
        let (everything, _) = broadcast::channel(capacity);
        let inner = HubInner { capacity, replay, everything, sessions: Mutex::default(), attachments: Mutex::default() };
        Self { inner: Arc::new(inner) }
    }

    /// The route of `session_id`'s predictions, shared with any other live holder of that id (a
    /// session streamed again under the same id keeps its subscribers).
    pub fn session_route(&self, session_id: &str) -> Arc<SessionRoute> {
        shared(&self.inner.sessions, session_id, || SessionRoute {
            session_id: session_id.to_string(),
            ring: broadcast::channel(self.inner.capacity).0,
            taps: Arc::default(),
        })
    }

    /// A new attachment's route, findable by its id while the attachment or one of its windows
    /// lives; when the last goes, its subscribers' streams end.
    pub fn attachment_route(&self, session: &Arc<SessionRoute>, attachment_id: &str) -> Arc<AttachmentRoute> {
        shared(&self.inner.attachments, attachment_id, || AttachmentRoute {
            ring: broadcast::channel(self.inner.capacity).0,
            retained: Mutex::new(VecDeque::with_capacity(self.inner.replay)),
            replay: self.inner.replay,
            taps: Arc::default(),
            session: session.clone(),
            everything: self.inner.everything.clone(),
        })
    }

    /// A reader of every prediction, from now on (in-process consumers such as the NATS
    /// publisher; it lags, never blocks, when it falls behind).
    pub fn everything(&self) -> broadcast::Receiver<Arc<Prediction>> {
        self.inner.everything.subscribe()
    }

    /// A subscription to the ring that holds exactly what `filter` asks for, from now on.
    pub fn subscribe(&self, filter: &Filter) -> Result<Subscription, SubscribeError> {
        let ring = match (filter.session_id.as_str(), filter.attachment_id.as_str()) {
            ("", "") => &self.inner.everything,
            (session, "") => {
                let route = lock(&self.inner.sessions).get(session).and_then(Weak::upgrade);
                return route.map(|r| r.subscribe()).ok_or_else(|| SubscribeError::NoSession(session.to_string()));
            }
            (session, attachment) => {
                let route = lock(&self.inner.attachments).get(attachment).and_then(Weak::upgrade);
                let route = route.ok_or_else(|| SubscribeError::NoAttachment(attachment.to_string()))?;
                if !session.is_empty() && route.session.session_id != session {
                    return Err(SubscribeError::NotInSession { session: session.to_string(), attachment: attachment.to_string() });
                }
                return Ok(match filter.after_sequence {
                    Some(after) => route.subscribe_after(after),
                    None => route.subscribe(),
                });
            }
        };
        Ok(Subscription::new(ring))
    }
}

impl SessionRoute {
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(&self.ring)
    }

    /// Hands every prediction of the session to `deliver` as it is published (see [`tap`]).
    pub fn tap(&self, deliver: impl Fn(&Arc<Prediction>) + Send + 'static) -> Tap {
        self.taps.add(deliver)
    }
}

impl AttachmentRoute {
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(&self.ring)
    }

    /// Hands every prediction of the attachment to `deliver` as it is published (see [`tap`]).
    pub fn tap(&self, deliver: impl Fn(&Arc<Prediction>) + Send + 'static) -> Tap {
        self.taps.add(deliver)
    }

    /// Stamps the publication time and the budget verdict, applies the late policy, records the
    /// metrics, and hands the prediction to the attachment's, the session's and everything's
    /// subscribers. Never blocks.
    /// Subscribes, with the retained predictions numbered after `after` to come first.
    pub fn subscribe_after(&self, after: u64) -> Subscription {
        let retained = lock(&self.retained);
        let mut subscription = Subscription::new(&self.ring);
        subscription.backlog = retained.iter().filter(|p| p.sequence > after).cloned().collect();
        subscription
    }

    /// Publishes an announcement (a GAP) as it is: not a decoded window, so no latency or
    /// budget is counted for it.
    pub fn announce(&self, prediction: Prediction) {
        m::prediction(&prediction.model_id, json::status_label(prediction.status));
        self.send(Arc::new(prediction));
    }

    fn send(&self, prediction: Arc<Prediction>) {
        self.taps.deliver(&prediction);
        self.session.taps.deliver(&prediction);
        // An error only means nobody reads that ring right now.
        let mut retained = lock(&self.retained);
        if self.replay > 0 {
            if retained.len() == self.replay {
                retained.pop_front();
            }
            retained.push_back(prediction.clone());
        }
        let _ = self.ring.send(prediction.clone());
        drop(retained);
        let _ = self.session.ring.send(prediction.clone());
        let _ = self.everything.send(prediction);
    }

    pub fn publish(&self, mut prediction: Prediction, late_policy: LatePolicy) {
        let now = clock::now_ns();
        let timing = prediction.timing.get_or_insert_with(Default::default);
        timing.published_ns = now;
        let latency = now.saturating_sub(timing.last_sample_received_ns);
        timing.server_latency_us = latency / 1_000;
        timing.budget_met = latency <= u64::from(timing.budget_ms) * 1_000_000;
        if timing.decode_end_ns > 0 {
            m::stage("publish", now.saturating_sub(timing.decode_end_ns));
        }
        let decoded = prediction.status == PredictionStatus::Ok as i32;
        if decoded && !timing.budget_met {
            prediction.status = PredictionStatus::Late as i32;
        }
        if !timing.budget_met {
            metrics::counter!(m::DEADLINE_MISSES, "model" => prediction.model_id.clone()).increment(1);
        }
        m::observe_latency(&prediction.model_id, latency);
        m::prediction(&prediction.model_id, json::status_label(prediction.status));
        if prediction.status == PredictionStatus::Shed as i32 {
            // SHED reasons are the scheduler's few constants: a low-cardinality label.
            metrics::counter!(m::SHED, "model" => prediction.model_id.clone(), "reason" => prediction.error_reason.clone()).increment(1);
        }
        if prediction.status == PredictionStatus::Late as i32 && late_policy == LatePolicy::Drop {
            metrics::counter!(m::LATE_DROPPED, "model" => prediction.model_id.clone()).increment(1);
            return;
        }
        self.send(Arc::new(prediction));
    }
}

/// Which predictions of its ring a subscriber may see (another principal's attachments on a
/// shared session are skipped).
type Keep = Box<dyn FnMut(&Prediction) -> bool + Send>;

/// One reader's position in a ring, and what it has lost by reading too slowly.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Prediction>>,
    /// Retained predictions a resuming subscriber gets before the live ones.
    backlog: VecDeque<Arc<Prediction>>,
    dropped: u64,
    keep: Option<Keep>,
}

impl Subscription {
    fn new(ring: &Ring) -> Self {
        Self { receiver: ring.subscribe(), backlog: VecDeque::new(), dropped: 0, keep: None }
    }

    /// Only the predictions `keep` accepts reach this subscriber.
    pub fn only(mut self, keep: impl FnMut(&Prediction) -> bool + Send + 'static) -> Self {
        self.keep = Some(Box::new(keep));
        self
    }

    /// The next prediction; `None` once the route is gone (its attachment detached and done).
    pub async fn next(&mut self) -> Option<Arc<Prediction>> {
        while let Some(prediction) = self.backlog.pop_front() {
            if self.keep.as_mut().is_none_or(|keep| keep(&prediction)) {
                return Some(prediction);
            }
        }
        loop {
            match self.receiver.recv().await {
                Ok(prediction) => {
                    if self.keep.as_mut().is_none_or(|keep| keep(&prediction)) {
                        return Some(prediction);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(lost)) => {
                    self.dropped += lost;
                    metrics::counter!(m::SUBSCRIBER_DROPS).increment(lost);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// A gRPC Subscribe stream: each prediction carries this subscriber's losses so far; the
    /// stream ends (OK) with the route, or with UNAVAILABLE when the server shuts down (after
    /// the last predictions it decodes).
    /// `slot`: the subscriber's place among `limits.subscribers`, held as long as the stream.
    pub fn into_stream(self, shutdown: Shutdown, slot: Slot) -> impl Stream<Item = Result<Prediction, tonic::Status>> + Send + 'static {
        let state = Some((self, shutdown, SubscriberGauge::new(slot)));
        futures::stream::unfold(state, |state| async move {
            let (mut subscription, mut shutdown, gauge) = state?;
            let shut = || Some((Err(crate::shutdown::shutting_down()), None));
            // Predictions already published come first: the stream ends after the last of them.
            let next = tokio::select! {
                biased;
                next = subscription.next() => match next {
                    Some(next) => next,
                    // Routes also go when the server shuts its sessions down.
                    None if shutdown.is_triggered() => return shut(),
                    None => return None,
                },
                _ = shutdown.wait_closing() => return shut(),
            };
            let mut prediction = Prediction::clone(&next);
            prediction.subscriber_dropped_total = subscription.dropped;
            Some((Ok(prediction), Some((subscription, shutdown, gauge))))
        })
    }
}

/// Keeps `myelin_subscribers` (open Subscribe streams) and the subscriber's slot right however
/// a stream ends.
struct SubscriberGauge {
    _slot: Slot,
}

impl SubscriberGauge {
    fn new(slot: Slot) -> Self {
        metrics::gauge!(m::SUBSCRIBERS).increment(1.0);
        Self { _slot: slot }
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        metrics::gauge!(m::SUBSCRIBERS).decrement(1.0);
    }
}
