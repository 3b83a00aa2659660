//! The cluster's handle and what it keeps in memory: the directory as watched, the sessions
//! this replica holds, the attachments made here; and the questions answered from them alone.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use myelin_proto::v1 as pb;

use super::lease::Leases;
use super::record::{AttachmentRecord, SessionRecord};
use super::store::Store;
use crate::attach::Attacher;
use crate::auth::Principal;
use crate::decode::ModelRegistry;
use crate::session::SessionManager;

pub struct Cluster {
    pub(super) replica: String,
    pub(super) advertise: String,
    /// For forwarding to https:// replicas: the CA of `cluster.peer_ca`.
    pub(super) peer_tls: Option<tonic::transport::ClientTlsConfig>,
    pub(super) lease: Duration,
    pub(super) store: Arc<Store>,
    pub(super) leases: Arc<Leases>,
    /// Claims and restores block on NATS from the sessions' blocking threads.
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) sessions: Arc<SessionManager>,
    pub(super) attacher: Arc<Attacher>,
    pub(super) models: Arc<ModelRegistry>,
    pub(super) state: Mutex<State>,
    /// One directory write at a time (the periodic sync, an Attach's, a restore's): each writes
    /// against the revision the last one left.
    pub(super) writing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
pub(super) struct State {
    /// The directory as watched: session id -> its record.
    pub(super) directory: HashMap<String, SessionRecord>,
    /// Sessions this replica holds, with its last write of each.
    pub(super) held: HashMap<String, Held>,
    /// Sessions taken over from a stopped replica, waiting to open here.
    pub(super) moving: HashMap<String, Moving>,
    /// Attach requests made here, by attachment id.
    pub(super) attached: HashMap<String, AttachmentRecord>,
    /// Sessions that ended here: their records' revision, and when (see `sync`).
    pub(super) ended: HashMap<String, (u64, Instant)>,
    /// Calibrated model versions already in the object store.
    pub(super) uploaded: HashSet<(String, String)>,
}

pub(super) struct Held {
    pub(super) revision: u64,
    pub(super) written: SessionRecord,
    pub(super) claimed: Instant,
}

pub(super) struct Moving {
    pub(super) from: String,
    pub(super) attachments: Vec<AttachmentRecord>,
    /// Attachments whose numbering this replica knows exactly (their session ended here): the
    /// next sequence number of each.
    pub(super) numbering: HashMap<String, u64>,
}

impl Cluster {
    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
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

    pub(super) fn fresh_record(&self, owner: &Principal) -> SessionRecord {
        SessionRecord {
            replica: self.replica.clone(),
            advertise: self.advertise.clone(),
            owner: owner.name().to_string(),
            ..Default::default()
        }
    }

    pub(super) fn hold(&self, session_id: &str, revision: u64, written: SessionRecord) {
        self.state().held.insert(session_id.to_string(), Held { revision, written, claimed: Instant::now() });
    }

    /// Whether the replica that holds `record` is alive: its lease is current and its port
    /// does not refuse connections (a process killed outright refuses at once; its lease takes
    /// up to `lease_s` to run out).
    pub(super) async fn is_alive(&self, record: &SessionRecord) -> bool {
        if !self.leases.alive(&record.replica, self.lease) {
            return false;
        }
        let address = record.advertise.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
        match tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(address)).await {
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                self.leases.refused(&record.replica);
                false
            }
            _ => true,
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
