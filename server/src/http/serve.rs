//! Serving the HTTP port's router on the connections the transport accepts, with hyper's
//! HTTP/1 header timeout switched on (it needs a timer, which axum's `serve` does not give it:
//! slow-header clients stayed connected for good) and each connection's peer handed to the
//! handlers. Shuts down gracefully: no new connections, then the open ones finish their
//! requests (the dashboard's event streams end on the shutdown signal themselves).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::transport::Accepted;

/// Serves `router` on `accepted` connections until `shutdown` resolves; then waits up to
/// `grace` for the connections' requests to finish.
pub async fn serve(
    mut accepted: mpsc::Receiver<Accepted>,
    router: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let connection = tokio::select! {
            connection = accepted.recv() => match connection {
                Some(connection) => connection,
                None => break,
            },
            _ = &mut shutdown => break,
        };
        let peer = connection.peer().clone();
        let service = router.clone().map_request(move |mut request: http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer.clone()));
            request
        });
        let served = builder.serve_connection_with_upgrades(TokioIo::new(connection), TowerToHyperService::new(service));
        let served = graceful.watch(served.into_owned());
        tokio::spawn(async move {
            if let Err(error) = served.await {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP connections still open at the end of the shutdown grace period");
    }
}
