//! The `[cluster]` section: this replica's place among several behind a proxy (deploy/envoy/),
//! with the session directory, attachment specs and calibrated models in NATS JetStream.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This replica's stable name (a StatefulSet pod's name, e.g. "myelin-0"). Empty: a single
    /// server, no cluster (the default).
    pub replica: String,
    /// NATS server(s) with JetStream, comma-separated ("nats://nats:4222"). Required with `replica`.
    pub nats_url: String,
    /// The address other replicas reach this one's gRPC port at, to forward calls for its
    /// sessions: "http://myelin-0.myelin:50051", or "https://..." when the port has TLS (then
    /// `peer_ca` must be set). Empty: http://<server.grpc_addr>, which only works when that is
    /// not a wildcard address.
    pub advertise: String,
    /// CA certificate (PEM) that signed the other replicas' server certificates, to forward
    /// calls to https:// addresses.
    pub peer_ca: PathBuf,
    /// A replica that has not renewed its lease for this long is taken for dead, and its
    /// sessions may open elsewhere (seconds). It renews four times per lease. A replica whose
    /// advertised port refuses connections is taken for dead at once.
    pub lease_s: f64,
    /// Names of the JetStream buckets: `<prefix>-replicas`, `<prefix>-sessions` (key-value) and
    /// `<prefix>-models` (object store).
    pub bucket_prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            replica: String::new(),
            nats_url: String::new(),
            advertise: String::new(),
            peer_ca: PathBuf::new(),
            lease_s: 2.0,
            bucket_prefix: "myelin".into(),
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.replica.is_empty()
    }

    pub(super) fn validate(&self, grpc_addr: std::net::SocketAddr) -> anyhow::Result<()> {
        let name_ok = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
        anyhow::ensure!(
            self.replica.len() <= 64 && name_ok(&self.replica),
            "cluster.replica must be up to 64 letters, digits, '_' and '-', got {:?}",
            self.replica
        );
        anyhow::ensure!(
            !self.bucket_prefix.is_empty() && name_ok(&self.bucket_prefix),
            "cluster.bucket_prefix must be letters, digits, '_' and '-', got {:?}",
            self.bucket_prefix
        );
        anyhow::ensure!(self.lease_s >= 0.5 && self.lease_s <= 300.0, "cluster.lease_s must be 0.5 to 300 s, got {}", self.lease_s);
        if self.enabled() {
            anyhow::ensure!(!self.nats_url.trim().is_empty(), "cluster.replica is set, but cluster.nats_url is empty");
            anyhow::ensure!(
                !self.advertise.is_empty() || !grpc_addr.ip().is_unspecified(),
                "cluster.advertise is empty and server.grpc_addr ({grpc_addr}) is a wildcard address: say where other replicas reach this one"
            );
            anyhow::ensure!(
                self.advertise.is_empty() || self.advertise.starts_with("http://") || self.advertise.starts_with("https://"),
                "cluster.advertise must be an http:// or https:// URL, got {:?}",
                self.advertise
            );
            anyhow::ensure!(
                !self.advertise.starts_with("https://") || !self.peer_ca.as_os_str().is_empty(),
                "cluster.advertise is https://, so cluster.peer_ca must name the CA that signed the replicas' certificates"
            );
        }
        Ok(())
    }

    /// Where other replicas reach this one.
    pub fn advertised(&self, grpc_addr: std::net::SocketAddr) -> String {
        if self.advertise.is_empty() { format!("http://{grpc_addr}") } else { self.advertise.clone() }
    }
}
