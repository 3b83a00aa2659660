//! HTTP side port: the dashboard at `GET /` ([`dashboard`]), Prometheus text at `GET /metrics`,
//! liveness at `GET /healthz`. With authentication on, the dashboard needs a token with
//! `observe` or `admin` scope (a bearer header, or `?token=` since a browser's EventSource cannot
//! send headers), and so does `/metrics` when `auth.metrics_open = false`.

pub mod dashboard;
pub mod serve;

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::App;
use crate::auth::{Gate, Peer};
use crate::config::Scope;
use crate::decode::ModelEntry;

/// The HTTP port's routes over `app`.
pub fn router(app: &Arc<App>) -> Router {
    let gate = &app.gate;
    let mut metrics_route = Router::new().route("/metrics", get(render_metrics));
    if gate.enabled() && !gate.config().metrics_open {
        metrics_route = metrics_route.layer(middleware::from_fn_with_state(gate.clone(), observers_only));
    }
    let board = dashboard::Dashboard {
        sessions: app.sessions.clone(),
        models: app.models.clone(),
        hub: app.hub.clone(),
        shutdown: app.shutdown.clone(),
        subscribers: app.subscribers.clone(),
        cluster: app.cluster.clone(),
    };
    let mut dashboard_routes = Router::new().route("/", get(dashboard::page)).route("/events", get(dashboard::events)).with_state(board);
    if gate.enabled() {
        dashboard_routes = dashboard_routes.layer(middleware::from_fn_with_state(gate.clone(), observers_only));
    }
    // The page's vendored library carries no data: open, so that the page loads with a token in
    // its address only.
    let assets = Router::new().route("/assets/{name}", get(dashboard::asset));
    metrics_route.route("/healthz", get(healthz)).with_state(app.clone()).merge(dashboard_routes).merge(assets)
}

/// 401 without valid credentials (with the `WWW-Authenticate` challenge), 403 without the
/// scope; audited and counted like refused gRPC calls.
async fn observers_only(
    State(gate): State<Arc<Gate>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if !headers.contains_key(header::AUTHORIZATION) {
        let token = request.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
        if let Some(value) = token.and_then(|t| format!("Bearer {t}").parse().ok()) {
            headers.insert(header::AUTHORIZATION, value);
        }
    }
    let action = format!("GET {}", request.uri().path());
    let admitted = gate.authenticate(&headers, Some(&peer), &action).and_then(|principal| {
        Gate::require(&principal, &[Scope::Observe], &action, Some(&peer))?;
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

async fn render_metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.metrics.render())
}

async fn healthz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let entries = app.models.entries();
    let ready = entries.iter().filter(|e| matches!(e, ModelEntry::Ready(_))).count();
    let failed = entries.len() - ready;
    let body = serde_json::json!({ "status": "ok", "models_ready": ready, "models_failed": failed });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string())
}
