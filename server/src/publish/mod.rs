//! Fan-out of predictions to subscribers.
//!
//! One broadcast ring shared by all subscribers: publishing never waits. Each subscriber reads at
//! its own pace; one that falls more than `subscriber_queue` predictions behind loses its own
//! oldest ones (counted in `myelin_subscriber_dropped_total` and in the next prediction's
//! `subscriber_dropped_total`), and nobody else notices.

pub mod lsl;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use futures::Stream;
use myelin_proto::v1::{LatePolicy, Prediction, PredictionStatus};
use tokio::sync::broadcast;

use crate::clock;
use crate::metrics as m;
use crate::shutdown::Shutdown;

#[derive(Clone)]
pub struct Hub {
    sender: broadcast::Sender<Arc<Prediction>>,
    /// Recorders of sessions being recorded: each published prediction is also written there.
    taps: Arc<RwLock<HashMap<String, crate::record::Recorder>>>,
}

/// What a subscriber wants to see.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub session_id: String,
    pub attachment_id: String,
}

impl Filter {
    fn matches(&self, p: &Prediction) -> bool {
        (self.session_id.is_empty() || self.session_id == p.session_id)
            && (self.attachment_id.is_empty() || self.attachment_id == p.attachment_id)
    }
}

impl Hub {
    pub fn new(subscriber_queue: usize) -> Self {
        let (sender, _) = broadcast::channel(subscriber_queue);
        Self { sender, taps: Arc::default() }
    }

    /// Records the predictions of `session_id` with `recorder` until `untap`.
    pub fn tap(&self, session_id: &str, recorder: crate::record::Recorder) {
        self.taps.write().unwrap_or_else(PoisonError::into_inner).insert(session_id.to_string(), recorder);
    }

    /// Stops recording `session_id`'s predictions, if `path` is still the recorder in place (a
    /// new session with the same id may already have its own).
    pub fn untap(&self, session_id: &str, path: &std::path::Path) {
        let mut taps = self.taps.write().unwrap_or_else(PoisonError::into_inner);
        if taps.get(session_id).is_some_and(|r| r.path == path) {
            taps.remove(session_id);
        }
    }

    /// Stamps the publication time and the budget verdict, applies the late policy, records the
    /// metrics, and hands the prediction to every subscriber. Never blocks.
    pub fn publish(&self, mut prediction: Prediction, late_policy: LatePolicy) {
        let now = clock::now_ns();
        let timing = prediction.timing.get_or_insert_with(Default::default);
        timing.published_ns = now;
        let latency = now.saturating_sub(timing.last_sample_received_ns);
        timing.server_latency_us = latency / 1_000;
        timing.budget_met = latency <= u64::from(timing.budget_ms) * 1_000_000;
        let decoded = prediction.status == PredictionStatus::Ok as i32;
        if decoded && !timing.budget_met {
            prediction.status = PredictionStatus::Late as i32;
        }
        if !timing.budget_met {
            metrics::counter!(m::DEADLINE_MISSES, "model" => prediction.model_id.clone()).increment(1);
        }
        m::observe_latency(&prediction.model_id, latency);
        let status = status_label(prediction.status);
        m::prediction(&prediction.model_id, status);
        if prediction.status == PredictionStatus::Late as i32 && late_policy == LatePolicy::Drop {
            metrics::counter!(m::LATE_DROPPED, "model" => prediction.model_id.clone()).increment(1);
            return;
        }
        if let Some(recorder) = self.taps.read().unwrap_or_else(PoisonError::into_inner).get(&prediction.session_id) {
            let labels = match &prediction.result {
                Some(myelin_proto::v1::prediction::Result::Classification(c)) => c.labels.clone(),
                _ => Vec::new(),
            };
            recorder.send(crate::record::Event::Prediction {
                attachment: prediction.attachment_id.clone(),
                labels,
                timestamp: prediction.window.map_or(0.0, |w| w.last_timestamp),
                json: prediction_json(&prediction),
            });
        }
        // An error only means nobody is subscribed right now.
        let _ = self.sender.send(Arc::new(prediction));
    }

    /// A stream of the predictions matching `filter`, from now on, ending at shutdown.
    pub fn subscribe(&self, filter: Filter, shutdown: Shutdown) -> impl Stream<Item = Prediction> + Send + 'static {
        struct State {
            receiver: broadcast::Receiver<Arc<Prediction>>,
            filter: Filter,
            dropped: u64,
            shutdown: Shutdown,
            _gauge: SubscriberGauge,
        }
        let state = State { receiver: self.sender.subscribe(), filter, dropped: 0, shutdown, _gauge: SubscriberGauge::new() };
        futures::stream::unfold(state, |mut state| async move {
            loop {
                let received = tokio::select! {
                    received = state.receiver.recv() => received,
                    _ = state.shutdown.wait() => return None,
                };
                match received {
                    Ok(prediction) if state.filter.matches(&prediction) => {
                        let mut prediction = Prediction::clone(&prediction);
                        prediction.subscriber_dropped_total = state.dropped;
                        return Some((prediction, state));
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(lost)) => {
                        // Lost predictions may belong to other filters; count them all, which
                        // over-reports rather than hides a slow reader.
                        state.dropped += lost;
                        metrics::counter!(m::SUBSCRIBER_DROPS).increment(lost);
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }
}

pub fn status_label(status: i32) -> &'static str {
    match PredictionStatus::try_from(status).unwrap_or(PredictionStatus::Unspecified) {
        PredictionStatus::Ok => "ok",
        PredictionStatus::Late => "late",
        PredictionStatus::Shed => "shed",
        PredictionStatus::Error => "error",
        PredictionStatus::Unspecified => "unspecified",
    }
}

/// Keeps `myelin_subscribers` right however a subscription ends.
struct SubscriberGauge;

impl SubscriberGauge {
    fn new() -> Self {
        metrics::gauge!(m::SUBSCRIBERS).increment(1.0);
        Self
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        metrics::gauge!(m::SUBSCRIBERS).decrement(1.0);
    }
}

/// A prediction as one JSON object (LSL marker outlets, XDF recordings).
pub fn prediction_json(p: &Prediction) -> String {
    use myelin_proto::v1::prediction::Result as R;
    let window = p.window.unwrap_or_default();
    let timing = p.timing.unwrap_or_default();
    let mut value = serde_json::json!({
        "session": p.session_id,
        "attachment": p.attachment_id,
        "model": p.model_id,
        "version": p.model_version,
        "sequence": p.sequence,
        "status": status_label(p.status),
        "window": {
            "first_sample": window.first_sample_index,
            "last_sample": window.last_sample_index,
            "first_timestamp": window.first_timestamp,
            "last_timestamp": window.last_timestamp,
        },
        "timing": {
            "last_sample_received_ns": timing.last_sample_received_ns,
            "decode_start_ns": timing.decode_start_ns,
            "decode_end_ns": timing.decode_end_ns,
            "published_ns": timing.published_ns,
            "budget_ms": timing.budget_ms,
            "budget_met": timing.budget_met,
            "server_latency_us": timing.server_latency_us,
        },
    });
    match &p.result {
        Some(R::Classification(c)) => {
            value["labels"] = serde_json::json!(c.labels);
            value["probabilities"] = serde_json::json!(c.probabilities);
        }
        Some(R::Retrieval(r)) => {
            value["ids"] = serde_json::json!(r.ids);
            value["scores"] = serde_json::json!(r.scores);
        }
        None => {}
    }
    if let Some(trigger) = &p.trigger {
        value["trigger"] = serde_json::json!({ "code": trigger.code, "timestamp": trigger.timestamp, "label": trigger.label });
    }
    if !p.error_reason.is_empty() {
        value["error"] = serde_json::json!(p.error_reason);
    }
    value.to_string()
}
