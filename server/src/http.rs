//! HTTP side port: Prometheus text at `GET /metrics`, liveness at `GET /healthz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::decode::{ModelEntry, ModelRegistry};

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    models: Arc<ModelRegistry>,
}

pub fn router(metrics: PrometheusHandle, models: Arc<ModelRegistry>) -> Router {
    Router::new().route("/metrics", get(render_metrics)).route("/healthz", get(healthz)).with_state(AppState { metrics, models })
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let entries = state.models.entries();
    let ready = entries.iter().filter(|e| matches!(e, ModelEntry::Ready(_))).count();
    let failed = entries.len() - ready;
    let body = serde_json::json!({ "status": "ok", "models_ready": ready, "models_failed": failed });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string())
}
