//! Several replicas behind a proxy (deploy/envoy/), one session on one replica at a time.
//!
//! The directory is a JetStream key-value bucket: a session's key names the replica that holds
//! it and the attachments it has ([`record`]). A replica claims a key before the session opens
//! here (creating it, or taking it over with a compare-and-set from a replica that stopped);
//! it keeps the key up to date while the session runs ([`sync`]) and deletes it when the session
//! ends. Leases say which replicas are alive ([`lease`]). A call that reaches a replica which
//! does not hold its session is forwarded to the one that does ([`forward`]). When a replica
//! stops, its rigs reconnect through the proxy, the session opens on another replica, and its
//! attachments are made again there with the same ids and model versions (calibrated decoders
//! come from the object store), announcing the predictions lost in between as a GAP.

pub mod forward;
mod lease;
mod record;
mod restore;
mod store;
mod sync;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use myelin_proto::v1 as pb;

use crate::attach::Attacher;
use crate::auth::Principal;
use crate::config::ClusterConfig;
use crate::decode::ModelRegistry;
use crate::id::shown;
use crate::session::{Directory, Session, SessionError, SessionManager};
use crate::shutdown::Shutdown;
use lease::Leases;
use record::{AttachmentRecord, SessionRecord};
use store::Store;

pub use forward::ForwardLayer;

pub struct Cluster {
    replica: String,
    advertise: String,
    lease: Duration,
    store: Arc<Store>,
    leases: Arc<Leases>,
    /// Claims and restores block on NATS from the sessions' blocking threads.
    runtime: tokio::runtime::Handle,
    sessions: Arc<SessionManager>,
    attacher: Arc<Attacher>,
    models: Arc<ModelRegistry>,
    state: Mutex<State>,
    /// One directory write at a time (the periodic sync, an Attach's, a restore's): each writes
    /// against the revision the last one left.
    writing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// The directory as watched: session id -> its record.
    directory: HashMap<String, SessionRecord>,
    /// Sessions this replica holds, with its last write of each.
    held: HashMap<String, Held>,
    /// Sessions taken over from a stopped replica, waiting to open here.
    moving: HashMap<String, Moving>,
    /// Attach requests made here, by attachment id.
    attached: HashMap<String, AttachmentRecord>,
    /// Sessions that ended here: their records' revision, and when (see `sync`).
    ended: HashMap<String, (u64, Instant)>,
    /// Calibrated model versions already in the object store.
    uploaded: HashSet<(String, String)>,
}

struct Held {
    revision: u64,
    written: SessionRecord,
    claimed: Instant,
}

struct Moving {
    from: String,
    attachments: Vec<AttachmentRecord>,
    /// Attachments whose numbering this replica knows exactly (their session ended here): the
    /// next sequence number of each.
    numbering: HashMap<String, u64>,
}

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

    pub fn replica(&self) -> &str {
        &self.replica
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The replica that holds `session_id` and its address, if that is another live one.
    pub fn held_elsewhere(&self, session_id: &str) -> Option<(String, String)> {
        let state = self.state();
        let record = state.directory.get(session_id)?;
        let elsewhere = !record.replica.is_empty() && record.replica != self.replica && self.leases.alive(&record.replica, self.lease);
        elsewhere.then(|| (record.replica.clone(), record.advertise.clone()))
    }

    /// `replica` refused a forwarded call: taken for dead until it renews its lease again.
    pub fn unreachable(&self, replica: &str) {
        self.leases.refused(replica);
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

    /// The live sessions other replicas hold, as listings show them.
    pub fn sessions_elsewhere(&self) -> Vec<pb::SessionInfo> {
        let state = self.state();
        state
            .directory
            .iter()
            .filter(|(_, r)| !r.replica.is_empty() && r.replica != self.replica && r.header.is_some())
            .filter(|(_, r)| self.leases.alive(&r.replica, self.lease))
            .map(|(id, r)| pb::SessionInfo {
                session_id: id.clone(),
                header: r.header.clone(),
                live: true,
                source: r.source.clone(),
                owner: r.owner.clone(),
                replica: r.replica.clone(),
                attachments: r.attachments.iter().filter_map(attachment_info).collect(),
                ..Default::default()
            })
            .collect()
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

    /// Claims `session_id` for this replica (see [`Directory::claim`]).
    async fn claim_async(&self, session_id: &str, owner: &Principal) -> Result<(), SessionError> {
        let key = record::key_of(session_id);
        let unavailable = |e: &dyn std::fmt::Display| SessionError::Unavailable(format!("the session directory (NATS) failed: {e}"));
        for _ in 0..8 {
            let entry = self.store.sessions.entry(&key).await.map_err(|e| unavailable(&e))?;
            let current = entry.as_ref().filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put);
            let Some((entry, previous)) = current.and_then(|e| record::decode(&e.value).map(|r| (e, r))) else {
                let fresh = self.fresh_record(owner);
                match self.store.sessions.create(&key, record::encode(&fresh)).await {
                    Ok(revision) => {
                        self.hold(session_id, revision, fresh);
                        return Ok(());
                    }
                    Err(_) => continue, // Another replica created it meanwhile: look again.
                }
            };
            let held_here = self.state().held.contains_key(session_id);
            if previous.replica != self.replica && !previous.replica.is_empty() && self.is_alive(&previous).await {
                return Err(SessionError::Unavailable(format!(
                    "session {} is live on replica {:?}: send the call with the myelin-route header (through the cluster's proxy) and it reaches it",
                    shown(session_id),
                    previous.replica
                )));
            }
            if !owner.may_change(&previous.owner) {
                let resource = format!("session {:?}", session_id);
                return Err(SessionError::Refused(crate::auth::audit::not_owner(owner, "open_session", &resource)));
            }
            // A stopped replica's session, or one whose stream broke (here or elsewhere) within
            // sessions.retain_ended_seconds: it opens here with its attachments. One that ended
            // here goes on numbering exactly where it stopped (nothing was lost).
            let mut next = previous.clone();
            next.replica = self.replica.clone();
            next.advertise = self.advertise.clone();
            next.moves += u32::from(!held_here);
            next.ended_on.clear();
            let from = if previous.replica.is_empty() { previous.ended_on.clone() } else { previous.replica.clone() };
            let ended_here = self.sessions.get(session_id).filter(|s| !s.is_live());
            let numbering = ended_here
                .map(|s| {
                    previous.attachments.iter().filter_map(|a| Some((a.id.clone(), s.attachment(&a.id)?.next_sequence_peek()))).collect()
                })
                .unwrap_or_default();
            let moving = Some(Moving { from, attachments: previous.attachments.clone(), numbering });
            match self.store.sessions.update(&key, record::encode(&next), entry.revision).await {
                Ok(revision) => {
                    if let Some(moving) = moving {
                        tracing::info!(session = session_id, from = %moving.from, attachments = moving.attachments.len(), "taking over a session");
                        self.state().moving.insert(session_id.to_string(), moving);
                    }
                    self.hold(session_id, revision, next);
                    return Ok(());
                }
                Err(_) => continue,
            }
        }
        Err(SessionError::Unavailable(format!("session {}: the directory kept changing under this claim; retry", shown(session_id))))
    }

    fn fresh_record(&self, owner: &Principal) -> SessionRecord {
        SessionRecord {
            replica: self.replica.clone(),
            advertise: self.advertise.clone(),
            owner: owner.name().to_string(),
            ..Default::default()
        }
    }

    fn hold(&self, session_id: &str, revision: u64, written: SessionRecord) {
        self.state().held.insert(session_id.to_string(), Held { revision, written, claimed: Instant::now() });
    }

    /// Whether the replica that holds `record` is alive: its lease is current and its port
    /// does not refuse connections (a process killed outright refuses at once; its lease takes
    /// up to `lease_s` to run out).
    async fn is_alive(&self, record: &SessionRecord) -> bool {
        if !self.leases.alive(&record.replica, self.lease) {
            return false;
        }
        let address = record.advertise.trim_start_matches("http://").trim_end_matches('/');
        match tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(address)).await {
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                self.leases.refused(&record.replica);
                false
            }
            _ => true,
        }
    }
}

impl Directory for Cluster {
    fn claim(&self, session_id: &str, owner: &Principal) -> Result<(), SessionError> {
        self.runtime.block_on(self.claim_async(session_id, owner))
    }

    fn opened(&self, session: &Arc<Session>) {
        let moving = self.state().moving.remove(&session.id);
        if let Some(moving) = moving {
            restore::attachments(self, session, moving);
        }
        self.runtime.block_on(sync::session(self, &session.id));
    }

    fn release(&self, session_id: &str) {
        let held = self.state().held.remove(session_id);
        self.state().moving.remove(session_id);
        if let Some(held) = held {
            let key = record::key_of(session_id);
            let _ = self.runtime.block_on(self.store.sessions.delete_expect_revision(&key, Some(held.revision)));
        }
    }
}

fn attachment_info(record: &AttachmentRecord) -> Option<pb::AttachmentInfo> {
    let request = record.request.as_ref()?;
    Some(pb::AttachmentInfo {
        attachment_id: record.id.clone(),
        model_id: request.model_id.clone(),
        model_version: request.model_version.clone(),
        window: request.window.clone(),
        latency_budget_ms: request.latency_budget_ms,
        predictions: record.predictions,
        owner: record.owner.clone(),
    })
}
