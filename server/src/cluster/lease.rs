//! Which replicas are alive: each renews its key in `<prefix>-replicas` four times per lease,
//! and every replica watches the bucket. A replica is alive while its last renewal seen here is
//! less than a lease old, and it has not refused a connection since.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::store::Store;
use crate::shutdown::Shutdown;

#[derive(Default)]
pub struct Leases {
    seen: Mutex<HashMap<String, Seen>>,
}

struct Seen {
    renewed: Instant,
    /// When a connection to it was refused (or a forward failed): dead until it renews again.
    refused: Option<Instant>,
}

impl Leases {
    pub fn alive(&self, replica: &str, lease: Duration) -> bool {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get(replica).is_some_and(|s| s.renewed.elapsed() < lease && s.refused.is_none_or(|r| r < s.renewed))
    }

    /// `replica` refused us: taken for dead until its next renewal.
    pub fn refused(&self, replica: &str) {
        if let Some(seen) = self.seen.lock().unwrap_or_else(PoisonError::into_inner).get_mut(replica) {
            seen.refused = Some(Instant::now());
        }
    }

    fn renewed(&self, replica: &str) {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = seen.entry(replica.to_string()).or_insert(Seen { renewed: now, refused: None });
        entry.renewed = now;
    }
}

/// Renews this replica's lease until shutdown, then gives it up (deletes the key) so that its
/// sessions may open elsewhere at once.
pub fn keep_renewing(store: Arc<Store>, replica: String, advertise: String, lease: Duration, mut shutdown: Shutdown) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(lease / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(error) = store.replicas.put(&replica, advertise.clone().into()).await {
                        tracing::warn!(%error, "renewing this replica's lease in NATS failed");
                    }
                }
                _ = shutdown.wait_closing() => break,
            }
        }
        let _ = store.replicas.delete(&replica).await;
    });
}

/// Watches every replica's renewals into `leases` until shutdown (reconnecting the watch if it
/// ends).
pub fn watch(store: Arc<Store>, leases: Arc<Leases>, mut shutdown: Shutdown) {
    tokio::spawn(async move {
        loop {
            let mut entries = match store.replicas.watch_all().await {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(%error, "watching the replicas' leases failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        _ = shutdown.wait() => return,
                    }
                }
            };
            loop {
                tokio::select! {
                    entry = entries.next() => match entry {
                        Some(Ok(entry)) if entry.operation == async_nats::jetstream::kv::Operation::Put => leases.renewed(&entry.key),
                        Some(Ok(_)) => {}
                        Some(Err(error)) => { tracing::warn!(%error, "watching the replicas' leases"); break; }
                        None => break,
                    },
                    _ = shutdown.wait() => return,
                }
            }
        }
    });
}
