//! Start-up and wiring: loads the models, builds the hub, the session registry and the attacher,
//! binds the gRPC and HTTP ports, and serves until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use myelin_proto::v1::{decoding_server::DecodingServer, ingest_server::IngestServer};
use tokio::net::TcpListener;

use crate::attach::Attacher;
use crate::auth::{AuthLayer, Gate};
use crate::budget::{MemoryBudget, Slots};
use crate::cluster::{Cluster, ForwardLayer};
use crate::config::Config;
use crate::decode::ModelRegistry;
use crate::publish::Hub;
use crate::session::SessionManager;
use crate::shutdown::ShutdownTrigger;
use crate::transport::{self, Port, TlsSettings};
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
    let (tls, gate) = security(&config)?;
    let hub = Hub::new(config.publish.subscriber_queue, config.publish.replay_predictions);
    let models_config = config.models.clone();
    let models =
        tokio::task::spawn_blocking(move || ModelRegistry::load(&models_config)).await.context("model loading thread panicked")??;
    let models = Arc::new(models);
    let lsl = match myelin_lsl::Lsl::load(Some(&config.lsl.library)) {
        Ok(lsl) => {
            tracing::info!(version = lsl.version(), path = %lsl.path().display(), "LabStreamingLayer available");
            Some(lsl)
        }
        Err(error) => {
            tracing::warn!(%error, "LabStreamingLayer unavailable; LSL requests will fail");
            None
        }
    };
    let memory = MemoryBudget::new(config.limits.server_buffer_bytes, "limits.server_buffer_bytes");
    let sessions = Arc::new(SessionManager::new(
        config.sessions.clone(),
        config.recording.clone(),
        config.limits.clone(),
        hub.clone(),
        memory.clone(),
    ));
    let lsl_outlets_for_all = !gate.enabled() || config.auth.allow_lsl_outlets;
    let attacher = Arc::new(Attacher::new(sessions.clone(), models.clone(), hub.clone(), lsl.clone(), lsl_outlets_for_all));
    let grpc_listener =
        TcpListener::bind(config.server.grpc_addr).await.with_context(|| format!("binding the gRPC port {}", config.server.grpc_addr))?;
    let http_listener =
        TcpListener::bind(config.server.http_addr).await.with_context(|| format!("binding the HTTP port {}", config.server.http_addr))?;
    let bound = Bound { grpc: grpc_listener.local_addr()?, http: http_listener.local_addr()? };
    transport::reload_on_signal(tls.clone(), gate.clone(), shutdown.clone())?;
    // Joined before any session opens (the LSL sources below included): every one is claimed.
    let cluster = if config.cluster.enabled() {
        let joined = Cluster::join(&config.cluster, bound.grpc, sessions.clone(), attacher.clone(), models.clone(), shutdown.clone());
        Some(joined.await.context("joining the cluster (cluster.nats_url)")?)
    } else {
        None
    };
    for source in config.lsl.sources.clone() {
        ingest::lsl::keep_connecting(
            lsl.clone(),
            source,
            config.lsl.resolve_timeout_seconds,
            config.lsl.stall_seconds,
            sessions.clone(),
            shutdown.clone(),
        );
    }

    if config.publish.nats.enabled() {
        crate::publish::nats::start(config.publish.nats.clone(), &hub, shutdown.clone()).await?;
        tracing::info!(url = %crate::publish::nats::redacted(&config.publish.nats.url), subjects = %format!("{}.<session>.<attachment>", config.publish.nats.subject_prefix), "publishing predictions on NATS");
    }

    let max_message = config.server.max_message_bytes;
    let limits = &config.limits;
    let subscribers = Slots::with_owner_share(
        "subscribers",
        "limits.subscribers",
        limits.subscribers,
        "limits.subscribers_per_principal",
        limits.subscribers_per_principal,
    );
    let ingest = IngestServer::new(ingest::IngestService { sessions: sessions.clone(), shutdown: shutdown.clone() })
        .max_decoding_message_size(max_message);
    let decoding = DecodingServer::new(grpc::DecodingService {
        attacher,
        sessions: sessions.clone(),
        models: models.clone(),
        hub: hub.clone(),
        lsl,
        default_budget_ms: config.decoding.default_latency_budget_ms,
        shutdown: shutdown.clone(),
        lsl_resolve_timeout_s: config.lsl.resolve_timeout_seconds,
        lsl_stall_s: config.lsl.stall_seconds,
        subscribers: subscribers.clone(),
        calibrations: Slots::with_owner_share(
            "calibrations",
            "limits.calibrations",
            limits.calibrations,
            "limits.calibrations_per_principal",
            limits.calibrations_per_principal,
        ),
        memory,
        connect_lsl_timeout_s: config.limits.connect_lsl_timeout_s,
        cluster: cluster.clone(),
    })
    .max_decoding_message_size(max_message);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<IngestServer<ingest::IngestService>>().await;
    health_reporter.set_serving::<DecodingServer<grpc::DecodingService>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(myelin_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(myelin_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    // tonic stops taking calls once health says NOT_SERVING (see shut_down).
    let (refuse_calls, calls_refused) = tokio::sync::oneshot::channel::<()>();
    let grpc_shutdown = async move {
        let _ = calls_refused.await;
    };
    let grpc_server = tonic::transport::Server::builder()
        .initial_stream_window_size(config.server.http2_stream_window_bytes)
        .initial_connection_window_size(config.server.http2_connection_window_bytes)
        .http2_keepalive_interval(Some(Duration::from_secs_f64(config.server.http2_keepalive_interval_s)))
        .http2_keepalive_timeout(Some(Duration::from_secs_f64(config.server.http2_keepalive_timeout_s)))
        .max_concurrent_streams(Some(config.server.http2_max_concurrent_streams))
        .layer(AuthLayer::new(gate.clone(), config.limits.unauthenticated_calls))
        .layer(ForwardLayer::new(cluster))
        .add_service(ingest)
        .add_service(decoding)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(
            incoming(transport::accept(grpc_listener, tls.clone(), Port::Grpc, accepting(&config, None))),
            grpc_shutdown,
        );

    // Metrics stay readable while the server drains.
    let http_shutdown = {
        let mut shutdown = shutdown.clone();
        async move { shutdown.wait_closing().await }
    };
    let idle = Duration::from_secs_f64(config.server.http_idle_timeout_s);
    let http_connections = transport::accept(http_listener, tls.clone(), Port::Http, accepting(&config, Some(idle)));
    let board = http::dashboard::Dashboard {
        sessions: sessions.clone(),
        models: models.clone(),
        hub: hub.clone(),
        shutdown: shutdown.clone(),
        subscribers: subscribers.clone(),
    };
    let router = http::router(metrics.clone(), models.clone(), gate.clone(), board);
    let header_timeout = Duration::from_secs_f64(config.server.http_header_timeout_s);
    let grace = Duration::from_secs_f64(config.server.shutdown_grace_s);
    let http_server = http::serve::serve(http_connections, router, header_timeout, http_shutdown, grace);

    // Histograms are summarised on render; upkeep keeps their memory bounded between scrapes.
    // Sessions that ended long ago are forgotten here too, so their threads and rings go even
    // when no new session opens.
    let upkeep = {
        let (mut shutdown, sessions) = (shutdown.clone(), sessions.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        metrics.run_upkeep();
                        sessions.forget_ended();
                    }
                    _ = shutdown.wait() => break,
                }
            }
        })
    };

    tracing::info!(grpc = %bound.grpc, http = %bound.http, models = models.entries().len(), tls = tls.is_some(), authentication = gate.enabled(), "myelin serving");
    on_ready(bound, gate);
    let stopping = shut_down(trigger, health_reporter, refuse_calls, sessions, models.clone(), grace);
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

/// TLS and the gate from `[tls]` and `[auth]`, and the refusal to serve a public address
/// without them (unless `server.allow_insecure_public`, warned about here at every start).
fn security(config: &Config) -> anyhow::Result<(Option<Arc<TlsSettings>>, Arc<Gate>)> {
    if config.check_public_binding()? {
        tracing::warn!(
            tls = config.tls.enabled(),
            authentication = config.auth.enabled(),
            "server.allow_insecure_public: serving a non-loopback address without TLS and authentication; anyone who reaches it can read and steer every session"
        );
    }
    anyhow::ensure!(
        !(config.demo.enabled && config.tls.enabled()),
        "the built-in demo talks plaintext gRPC to its own server: run it without [tls]"
    );
    let tls = if config.tls.enabled() { Some(TlsSettings::load(&config.tls)?) } else { None };
    let gate = Arc::new(Gate::load(&config.auth)?);
    anyhow::ensure!(
        !gate.names_certificates() || !config.tls.client_ca.as_os_str().is_empty(),
        "a principal has certificate_cn, but tls.client_ca is not set: no client certificate could name it"
    );
    Ok((tls, gate))
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
    health.set_not_serving::<IngestServer<ingest::IngestService>>().await;
    health.set_not_serving::<DecodingServer<grpc::DecodingService>>().await;
    let _ = refuse_calls.send(());
    tracing::info!(grace_s = grace.as_secs_f64(), "shutting down: ending calls, draining sessions");
    // Sessions get most of the grace period, inference threads what is left before main's cut.
    let _ = tokio::task::spawn_blocking(move || sessions.shutdown(started + grace.mul_f64(0.8))).await;
    trigger.close();
    let _ = tokio::task::spawn_blocking(move || models.shutdown(started + grace.mul_f64(0.95))).await;
}
