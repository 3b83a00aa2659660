//! Start-up and wiring: builds the [`App`] from the config, binds the gRPC and HTTP ports, and
//! serves until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::app::App;
use crate::auth::Gate;
use crate::config::Config;
use crate::decode::ModelRegistry;
use crate::session::SessionManager;
use crate::shutdown::ShutdownTrigger;
use crate::transport::{self, Port};
use crate::{clock, grpc, http, ingest};

/// Addresses the server actually bound (port 0 in the config picks a free port).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

/// Loads the models, binds both ports, and serves until `trigger` fires, then shuts down in
/// order (see [`shut_down`]). `on_ready` runs once both listeners are bound, with the gate (to
/// make credentials for the server's own clients).
pub async fn serve(
    config: Config,
    metrics: PrometheusHandle,
    trigger: ShutdownTrigger,
    on_ready: impl FnOnce(Bound, Arc<Gate>) + Send,
) -> anyhow::Result<()> {
    clock::init();
    let shutdown = trigger.listener();
    let mut app = App::load(config, metrics, shutdown.clone()).await?;
    let (grpc_addr, http_addr) = (app.config.server.grpc_addr, app.config.server.http_addr);
    let grpc_listener = TcpListener::bind(grpc_addr).await.with_context(|| format!("binding the gRPC port {grpc_addr}"))?;
    let http_listener = TcpListener::bind(http_addr).await.with_context(|| format!("binding the HTTP port {http_addr}"))?;
    let bound = Bound { grpc: grpc_listener.local_addr()?, http: http_listener.local_addr()? };
    transport::reload_on_signal(app.tls.clone(), app.gate.clone(), shutdown.clone())?;
    // Joined before any session opens (the LSL sources below included): every one is claimed.
    app.join_cluster(bound.grpc).await?;
    let app = Arc::new(app);
    for source in app.config.lsl.sources.clone() {
        let lsl = &app.config.lsl;
        ingest::lsl::keep_connecting(
            app.lsl.clone(),
            source,
            lsl.resolve_timeout_seconds,
            lsl.stall_seconds,
            app.sessions.clone(),
            shutdown.clone(),
        );
    }
    let nats = &app.config.publish.nats;
    if nats.enabled() {
        crate::publish::nats::start(nats.clone(), &app.hub, shutdown.clone()).await?;
        tracing::info!(url = %crate::publish::nats::redacted(&nats.url), subjects = %format!("{}.<session>.<attachment>", nats.subject_prefix), "publishing predictions on NATS");
    }

    // tonic stops taking calls once health says NOT_SERVING (see shut_down).
    let (grpc_router, health) = grpc::router(&app).await?;
    let (refuse_calls, calls_refused) = tokio::sync::oneshot::channel::<()>();
    let grpc_shutdown = async move {
        let _ = calls_refused.await;
    };
    let grpc_connections = transport::accept(grpc_listener, app.tls.clone(), Port::Grpc, accepting(&app.config, None));
    let grpc_server = grpc_router.serve_with_incoming_shutdown(incoming(grpc_connections), grpc_shutdown);

    // Metrics stay readable while the server drains.
    let http_shutdown = {
        let mut shutdown = shutdown.clone();
        async move { shutdown.wait_closing().await }
    };
    let server = &app.config.server;
    let idle = Duration::from_secs_f64(server.http_idle_timeout_s);
    let http_connections = transport::accept(http_listener, app.tls.clone(), Port::Http, accepting(&app.config, Some(idle)));
    let header_timeout = Duration::from_secs_f64(server.http_header_timeout_s);
    let grace = Duration::from_secs_f64(server.shutdown_grace_s);
    let http_server = http::serve::serve(http_connections, http::router(&app), header_timeout, http_shutdown, grace);

    // Histograms are summarised on render; upkeep keeps their memory bounded between scrapes.
    // Sessions that ended long ago are forgotten here too, so their threads and rings go even
    // when no new session opens.
    let upkeep = {
        let (mut shutdown, app) = (shutdown.clone(), app.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        app.metrics.run_upkeep();
                        app.sessions.forget_ended();
                    }
                    _ = shutdown.wait() => break,
                }
            }
        })
    };

    tracing::info!(grpc = %bound.grpc, http = %bound.http, models = app.models.entries().len(), tls = app.tls.is_some(), authentication = app.gate.enabled(), "myelin serving");
    on_ready(bound, app.gate.clone());
    let stopping = shut_down(trigger, health, refuse_calls, app.sessions.clone(), app.models.clone(), grace);
    let (grpc_result, (), ()) = tokio::join!(grpc_server, http_server, stopping);
    upkeep.abort();
    grpc_result.context("gRPC server")?;
    tracing::info!("myelin stopped");
    Ok(())
}

/// How a port lets connections in (`[server]`); `idle`: the HTTP port's idle timeout.
fn accepting(config: &Config, idle: Option<Duration>) -> transport::AcceptSettings {
    let server = &config.server;
    transport::AcceptSettings {
        first_byte: Duration::from_secs_f64(server.first_byte_timeout_s),
        tls_handshake: Duration::from_secs_f64(server.tls_handshake_timeout_s),
        pending: server.pending_connections,
        pending_per_address: server.pending_connections_per_address,
        idle,
    }
}

fn incoming(
    accepted: tokio::sync::mpsc::Receiver<transport::Accepted>,
) -> impl futures::Stream<Item = std::io::Result<transport::Accepted>> {
    use futures::StreamExt;
    tokio_stream::wrappers::ReceiverStream::new(accepted).map(Ok)
}

/// The shutdown sequence, once triggered: health turns NOT_SERVING and gRPC stops taking calls;
/// ingest streams, calibrations and ConnectLsl calls end with UNAVAILABLE (they watch the
/// trigger) and LSL inlets stop; every session then ends, its windows already cut are decoded
/// and recorded, and its threads are joined; Subscribe streams end with UNAVAILABLE; inference
/// threads stop (windows still queued are published as SHED) and are joined. Each step keeps to
/// the grace period; main exits the process when it is over, whatever is left.
async fn shut_down(
    trigger: ShutdownTrigger,
    health: tonic_health::server::HealthReporter,
    refuse_calls: tokio::sync::oneshot::Sender<()>,
    sessions: Arc<SessionManager>,
    models: Arc<ModelRegistry>,
    grace: Duration,
) {
    trigger.listener().wait().await;
    let started = Instant::now();
    grpc::stop_serving(&health).await;
    let _ = refuse_calls.send(());
    tracing::info!(grace_s = grace.as_secs_f64(), "shutting down: ending calls, draining sessions");
    // Sessions get most of the grace period, inference threads what is left before main's cut.
    let _ = tokio::task::spawn_blocking(move || sessions.shutdown(started + grace.mul_f64(0.8))).await;
    trigger.close();
    let _ = tokio::task::spawn_blocking(move || models.shutdown(started + grace.mul_f64(0.95))).await;
}
