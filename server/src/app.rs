//! Everything a running server is made of, built once from its [`Config`]: the security gate,
//! the models, the hub, the session registry, the attacher, the shared limits, and (with
//! `[cluster]`) this replica's place in the cluster. The gRPC and HTTP routers hold it
//! (`Arc<App>`); nothing below reads the config again for what the App already holds.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::attach::Attacher;
use crate::auth::Gate;
use crate::budget::{MemoryBudget, Slots};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::decode::ModelRegistry;
use crate::publish::Hub;
use crate::session::SessionManager;
use crate::shutdown::Shutdown;
use crate::transport::TlsSettings;

pub struct App {
    pub config: Config,
    pub tls: Option<Arc<TlsSettings>>,
    pub gate: Arc<Gate>,
    pub metrics: PrometheusHandle,
    pub hub: Hub,
    pub models: Arc<ModelRegistry>,
    /// liblsl, if it loaded; without it every LSL request fails with UNAVAILABLE.
    pub lsl: Option<myelin_lsl::Lsl>,
    /// The server's buffer memory (`limits.server_buffer_bytes`): rings and calibrations.
    pub memory: Arc<MemoryBudget>,
    pub sessions: Arc<SessionManager>,
    pub attacher: Arc<Attacher>,
    /// Open Subscribe and dashboard event streams (`limits.subscribers`).
    pub subscribers: Arc<Slots>,
    /// Calibrations at once (`limits.calibrations`).
    pub calibrations: Arc<Slots>,
    /// With `[cluster]`: the directory, forwarding, failover.
    pub cluster: Option<Arc<Cluster>>,
    pub shutdown: Shutdown,
}

impl App {
    /// Checks the security settings, loads the models (off the async threads) and liblsl, and
    /// builds the rest. The cluster is joined by [`App::join_cluster`], once the gRPC port is
    /// bound (other replicas must be able to reach it).
    pub async fn load(config: Config, metrics: PrometheusHandle, shutdown: Shutdown) -> anyhow::Result<Self> {
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
        let limits = &config.limits;
        let memory = MemoryBudget::new(limits.server_buffer_bytes, "limits.server_buffer_bytes");
        let sessions =
            Arc::new(SessionManager::new(config.sessions.clone(), config.recording.clone(), limits.clone(), hub.clone(), memory.clone()));
        let lsl_outlets_for_all = !gate.enabled() || config.auth.allow_lsl_outlets;
        let attacher = Arc::new(Attacher::new(sessions.clone(), models.clone(), hub.clone(), lsl.clone(), lsl_outlets_for_all));
        let subscribers = Slots::with_owner_share(
            "subscribers",
            "limits.subscribers",
            limits.subscribers,
            "limits.subscribers_per_principal",
            limits.subscribers_per_principal,
        );
        let calibrations = Slots::with_owner_share(
            "calibrations",
            "limits.calibrations",
            limits.calibrations,
            "limits.calibrations_per_principal",
            limits.calibrations_per_principal,
        );
        Ok(Self {
            config,
            tls,
            gate,
            metrics,
            hub,
            models,
            lsl,
            memory,
            sessions,
            attacher,
            subscribers,
            calibrations,
            cluster: None,
            shutdown,
        })
    }

    /// Joins the cluster (`[cluster]`), reachable at `grpc` unless `cluster.advertise` says
    /// otherwise. Before any session opens: every one is claimed in the directory.
    pub async fn join_cluster(&mut self, grpc: SocketAddr) -> anyhow::Result<()> {
        if !self.config.cluster.enabled() {
            return Ok(());
        }
        let joined = Cluster::join(
            &self.config.cluster,
            grpc,
            self.sessions.clone(),
            self.attacher.clone(),
            self.models.clone(),
            self.shutdown.clone(),
        );
        self.cluster = Some(joined.await.context("joining the cluster (cluster.nats_url)")?);
        Ok(())
    }
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
