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

mod claim;
pub mod forward;
mod join;
mod lease;
mod record;
mod restore;
mod state;
mod store;
mod sync;

pub use forward::ForwardLayer;
pub use state::Cluster;
