//! Joining the cluster at start, and keeping the directory's watch and an Attach's record.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use myelin_proto::v1 as pb;

use super::lease::{self, Leases};
use super::record::{self, AttachmentRecord};
use super::state::Cluster;
use super::store::Store;
use super::sync;
use crate::attach::Attacher;
use crate::config::ClusterConfig;
use crate::decode::ModelRegistry;
use crate::session::SessionManager;
use crate::shutdown::Shutdown;

impl Cluster {
    /// Joins the cluster: connects to NATS, takes this replica's lease, starts watching the
    /// directory and the leases, and puts itself in front of the session registry.
    pub async fn join(
        config: &ClusterConfig,
        grpc_addr: SocketAddr,
        sessions: Arc<SessionManager>,
        attacher: Arc<Attacher>,
        models: Arc<ModelRegistry>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Arc<Self>> {
        let peer_tls = if config.peer_ca.as_os_str().is_empty() {
            None
        } else {
            let ca = std::fs::read(&config.peer_ca).with_context(|| format!("reading cluster.peer_ca {}", config.peer_ca.display()))?;
            Some(tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca)))
        };
        let store = Arc::new(Store::open(config).await?);
        let advertise = config.advertised(grpc_addr);
        let lease = Duration::from_secs_f64(config.lease_s);
        let leases = Arc::new(Leases::default());
        lease::watch(store.clone(), leases.clone(), shutdown.clone());
        store.replicas.put(&config.replica, advertise.clone().into()).await?;
        lease::keep_renewing(store.clone(), config.replica.clone(), advertise.clone(), lease, shutdown.clone());
        let cluster = Arc::new(Self {
            replica: config.replica.clone(),
            advertise,
            peer_tls,
            lease,
            store,
            leases,
            runtime: tokio::runtime::Handle::current(),
            sessions: sessions.clone(),
            attacher,
            models,
            state: Mutex::default(),
            writing: tokio::sync::Mutex::new(()),
        });
        cluster.watch_directory(shutdown.clone()).await?;
        sync::orphan_own(&cluster).await;
        sync::keep_syncing(cluster.clone(), shutdown);
        sessions.use_directory(cluster.clone());
        tracing::info!(replica = %cluster.replica, advertise = %cluster.advertise, lease_s = config.lease_s, "joined the cluster");
        Ok(cluster)
    }

    /// Records an Attach made here in the directory (at once, not at the next sync: the
    /// attachment must survive a replica that stops right after).
    pub fn attached(self: &Arc<Self>, mut request: pb::AttachRequest, reply: &pb::AttachReply, owner: &str) {
        request.latency_budget_ms = reply.latency_budget_ms;
        let session_id = request.session_id.clone();
        let record = AttachmentRecord {
            id: reply.attachment_id.clone(),
            owner: owner.to_string(),
            request: Some(request),
            reserved: 0,
            predictions: 0,
        };
        self.state().attached.insert(reply.attachment_id.clone(), record);
        let cluster = self.clone();
        tokio::spawn(async move { sync::session(&cluster, &session_id).await });
    }

    /// Keeps `state.directory` equal to the bucket: its current keys first (returns once they
    /// are in), then every change.
    async fn watch_directory(self: &Arc<Self>, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let mut entries = self.store.sessions.watch_all().await?;
        let (caught_up, mut caught) = tokio::sync::oneshot::channel::<()>();
        let cluster = self.clone();
        tokio::spawn(async move {
            let mut caught_up = Some(caught_up);
            loop {
                let entry = tokio::select! {
                    entry = entries.next() => entry,
                    _ = shutdown.wait_closing() => return,
                };
                match entry {
                    Some(Ok(entry)) => {
                        let id = record::session_of(&entry.key);
                        let mut state = cluster.state();
                        match record::decode(&entry.value).filter(|_| entry.operation == async_nats::jetstream::kv::Operation::Put) {
                            Some(record) => state.directory.insert(id, record),
                            None => state.directory.remove(&id),
                        };
                        if entry.delta == 0 {
                            caught_up.take().map(|done| done.send(()));
                        }
                    }
                    Some(Err(error)) => tracing::warn!(%error, "watching the session directory"),
                    None => {
                        tracing::error!("the session directory's watch ended; listings and forwarding go stale");
                        return;
                    }
                }
            }
        });
        // An empty bucket sends nothing: give it a moment, then go on.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut caught).await;
        Ok(())
    }
}
