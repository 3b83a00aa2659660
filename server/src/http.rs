//! HTTP side port: Prometheus text at `GET /metrics`, liveness at `GET /healthz`. `/metrics`
//! needs a bearer token with `observe` or `admin` scope when `auth.metrics_open = false`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::{Gate, Peer};
use crate::config::Scope;
use crate::decode::{ModelEntry, ModelRegistry};

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    models: Arc<ModelRegistry>,
}

pub fn router(metrics: PrometheusHandle, models: Arc<ModelRegistry>, gate: Arc<Gate>) -> Router {
    let mut metrics_route = Router::new().route("/metrics", get(render_metrics));
    if gate.enabled() && !gate.config().metrics_open {
        metrics_route = metrics_route.layer(middleware::from_fn_with_state(gate, observers_only));
    }
    metrics_route.route("/healthz", get(healthz)).with_state(AppState { metrics, models })
}

/// 401 without valid credentials (with the `WWW-Authenticate` challenge), 403 without the
/// scope; audited and counted like refused gRPC calls.
async fn observers_only(
    State(gate): State<Arc<Gate>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let admitted = gate.authenticate(&headers, Some(&peer), "GET /metrics").and_then(|principal| {
        Gate::require(&principal, &[Scope::Observe], "GET /metrics", Some(&peer))?;
        Ok(principal)
    });
    match admitted {
        Ok(_) => next.run(request).await,
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer realm=\"myelin\"")], status.message().to_string())
                .into_response()
        }
        Err(status) => (StatusCode::FORBIDDEN, status.message().to_string()).into_response(),
    }
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
