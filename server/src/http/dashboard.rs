//! The built-in dashboard: `GET /` (one page, uPlot vendored, nothing from a CDN) and
//! `GET /events`, a server-sent event stream the page draws from.
//!
//! Every half second each page gets one `update`: its sessions (rate, gaps, LSL clock offset,
//! attachments, and the signal and markers since its last update, low-passed and decimated by
//! the sessions' display taps, with the rate the source's own timestamps give), the models
//! (queue depth) and the predictions published since. Predictions come from the hub's ring of
//! everything through this page's own reader: a page that does not read falls behind and loses
//! its own updates (counted in the next one it gets), and decoding never waits for it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use myelin_proto::v1::{self as pb, Prediction};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::budget::{Slot, Slots};
use crate::decode::{ModelEntry, ModelRegistry};
use crate::publish::Hub;
use crate::publish::json::status_label;
use crate::session::SessionManager;
use crate::session::display::{DisplayPosition, DisplaySince};
use crate::shutdown::Shutdown;

const PAGE: &str = include_str!("dashboard.html");
const UPLOT_JS: &str = include_str!("vendor/uplot-1.6.32/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("vendor/uplot-1.6.32/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("vendor/uplot-1.6.32/LICENSE");

/// How often a page gets an update.
const TICK: Duration = Duration::from_millis(500);
/// Predictions one update carries at most; the rest are counted as skipped.
const PREDICTIONS_PER_UPDATE: usize = 400;

#[derive(Clone)]
pub struct Dashboard {
    pub sessions: Arc<SessionManager>,
    pub models: Arc<ModelRegistry>,
    pub hub: Hub,
    pub shutdown: Shutdown,
    /// Open event streams count against `limits.subscribers`, like Subscribe streams.
    pub subscribers: Arc<Slots>,
    /// In a cluster: the sessions other replicas hold, listed apart.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// The page may carry a token in its address: never in a Referer, never cached.
const PRIVATE: [(header::HeaderName, &str); 2] = [(header::REFERRER_POLICY, "no-referrer"), (header::CACHE_CONTROL, "no-store")];

pub async fn page() -> impl IntoResponse {
    (PRIVATE, Html(PAGE))
}

pub async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> axum::response::Response {
    let (body, kind) = match name.as_str() {
        "uPlot.iife.min.js" => (UPLOT_JS, "text/javascript; charset=utf-8"),
        "uPlot.min.css" => (UPLOT_CSS, "text/css; charset=utf-8"),
        "uPlot.LICENSE" => (UPLOT_LICENSE, "text/plain; charset=utf-8"),
        _ => return axum::http::StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=3600")], body).into_response()
}

pub async fn events(State(dashboard): State<Dashboard>) -> axum::response::Response {
    let slot = match dashboard.subscribers.take() {
        Ok(slot) => slot,
        Err(status) => return (axum::http::StatusCode::SERVICE_UNAVAILABLE, status.to_string()).into_response(),
    };
    let reader = Reader { predictions: dashboard.hub.everything(), shown: HashMap::new(), lost: 0, _slot: slot };
    let mut tick = tokio::time::interval(TICK);
    // A page that was not read for a while gets its next update, not a burst of them.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let state = (dashboard, reader, tick);
    let stream = futures::stream::unfold(state, |(dashboard, mut reader, mut tick)| async move {
        let mut shutdown = dashboard.shutdown.clone();
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_closing() => return None,
        }
        let update = reader.update(&dashboard);
        let event = Event::default().event("update").data(update.to_string());
        Some((Ok::<_, Infallible>(event), (dashboard, reader, tick)))
    });
    (PRIVATE, Sse::new(stream).keep_alive(KeepAlive::default())).into_response()
}

/// One page's position: in the predictions, and in each session's signal.
struct Reader {
    predictions: broadcast::Receiver<Arc<Prediction>>,
    /// Per session: which display tap (a session reopened under its id has a new one), and how far.
    shown: HashMap<String, (usize, DisplayPosition)>,
    lost: u64,
    /// This page's place among `limits.subscribers`, held while it is open.
    _slot: Slot,
}

impl Reader {
    fn update(&mut self, dashboard: &Dashboard) -> Value {
        let mut predictions = Vec::new();
        loop {
            match self.predictions.try_recv() {
                Ok(p) if predictions.len() < PREDICTIONS_PER_UPDATE => predictions.push(prediction(&p)),
                Ok(_) => self.lost += 1,
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.lost += n,
                Err(_) => break,
            }
        }
        let sessions: Vec<Value> = dashboard.sessions.list().iter().map(|s| self.session(s)).collect();
        let live: std::collections::HashSet<&str> = sessions.iter().filter_map(|s| s["id"].as_str()).collect();
        self.shown.retain(|id, _| live.contains(id.as_str()));
        let models: Vec<Value> = dashboard.models.entries().iter().map(model).collect();
        let elsewhere: Vec<Value> = dashboard.cluster.iter().flat_map(|c| c.sessions_elsewhere()).map(|s| elsewhere(&s)).collect();
        json!({ "sessions": sessions, "elsewhere": elsewhere, "models": models, "predictions": predictions, "lost": self.lost })
    }

    fn session(&mut self, session: &crate::session::Session) -> Value {
        let info = session.info();
        let tap = Arc::as_ptr(&session.display) as usize;
        let seen = self.shown.get(&session.id).filter(|(t, _)| *t == tap).map_or_else(DisplayPosition::default, |(_, p)| *p);
        let shown = match session.display.since(seen) {
            Some((shown, position)) => {
                self.shown.insert(session.id.clone(), (tap, position));
                shown
            }
            None => DisplaySince::default(),
        };
        let header = info.header.unwrap_or_default();
        let modality = pb::Modality::try_from(header.modality).unwrap_or(pb::Modality::Unspecified).as_str_name();
        let channels: Vec<&str> = header.channels.iter().take(shown.values.len()).map(|c| c.label.as_str()).collect();
        let attachments: Vec<Value> = info
            .attachments
            .iter()
            .map(|a| json!({ "id": a.attachment_id, "model": a.model_id, "budget_ms": a.latency_budget_ms, "predictions": a.predictions }))
            .collect();
        json!({
            "id": session.id,
            "live": info.live,
            "source": info.source,
            "stream": header.stream_name,
            "modality": modality.trim_start_matches("MODALITY_"),
            "rate_hz": header.nominal_rate_hz,
            "n_channels": header.channels.len(),
            "samples_received": info.samples_received,
            "markers_received": info.markers_received,
            "gap_samples": info.gap_samples,
            "warnings": info.warnings.iter().map(|w| json!({
                "kind": pb::IngestWarningKind::try_from(w.kind).map_or("unknown", |k| k.as_str_name()).trim_start_matches("INGEST_WARNING_KIND_").to_ascii_lowercase(),
                "message": w.message,
                "count": w.count,
                "sample_index": w.sample_index,
            })).collect::<Vec<_>>(),
            "source_error": info.source_error,
            "clock_offset_s": session.clock_offset(),
            "attachments": attachments,
            "signal": {
                "channels": channels,
                "t": shown.times,
                "values": shown.values,
                "display_rate_hz": session.display.rate_hz,
                "anti_alias_hz": session.display.anti_alias_hz,
                "effective_rate_hz": shown.effective_rate_hz,
            },
            "markers": shown.markers,
        })
    }
}

/// A session another replica holds: what the directory says of it.
fn elsewhere(info: &pb::SessionInfo) -> Value {
    let header = info.header.clone().unwrap_or_default();
    let modality = pb::Modality::try_from(header.modality).unwrap_or(pb::Modality::Unspecified).as_str_name();
    json!({
        "id": info.session_id,
        "replica": info.replica,
        "modality": modality.trim_start_matches("MODALITY_"),
        "rate_hz": header.nominal_rate_hz,
        "n_channels": header.channels.len(),
        "attachments": info.attachments.iter().map(|a| json!({ "id": a.attachment_id, "model": a.model_id, "version": a.model_version })).collect::<Vec<_>>(),
    })
}

fn prediction(p: &Prediction) -> Value {
    use pb::prediction::Result as R;
    let (label, score) = match &p.result {
        Some(R::Classification(c)) => {
            let best = c.probabilities.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1));
            best.map_or((String::new(), 0.0), |(i, &s)| (c.labels.get(i).cloned().unwrap_or_default(), s))
        }
        Some(R::Retrieval(r)) => (r.ids.first().cloned().unwrap_or_default(), r.scores.first().copied().unwrap_or(0.0)),
        None => (String::new(), 0.0),
    };
    let timing = p.timing.unwrap_or_default();
    json!({
        "session": p.session_id,
        "attachment": p.attachment_id,
        "model": p.model_id,
        "seq": p.sequence,
        "status": status_label(p.status),
        "label": label,
        "score": score,
        "latency_us": timing.server_latency_us,
        "budget_ms": timing.budget_ms,
        "batch": timing.batch_size,
        "t": p.window.map_or(0.0, |w| w.last_timestamp),
        "marker": p.trigger.as_ref().map(|m| m.code),
    })
}

fn model(entry: &ModelEntry) -> Value {
    match entry {
        ModelEntry::Ready(m) => {
            json!({ "id": m.card.id, "version": m.card.version, "ready": true, "provider": m.provider, "queued": m.queue.len(), "data_kind": m.card.provenance.data_kind })
        }
        ModelEntry::Failed { id, version, error, .. } => json!({ "id": id, "version": version, "ready": false, "error": error }),
    }
}
