//! Claiming a session before it opens here, and giving it back its attachments once it runs.

use std::sync::Arc;

use super::record;
use super::restore;
use super::state::{Cluster, Moving};
use super::sync;
use crate::auth::Principal;
use crate::id::shown;
use crate::session::{Directory, Session, SessionError};

impl Cluster {
    /// Claims `session_id` for this replica (see [`Directory::claim`]).
    async fn claim_async(&self, session_id: &str, owner: &Principal) -> Result<(), SessionError> {
        let key = record::key_of(session_id);
        let unavailable = |e: &dyn std::fmt::Display| SessionError::Unavailable(format!("the session directory (NATS) failed: {e}"));
        // Without the directory no replica may open a session (two could open the same one):
        // refused at once, sessions already open go on decoding.
        if !self.store.connected() {
            return Err(SessionError::Unavailable(
                "the session directory (NATS, cluster.nats_url) is unreachable: sessions cannot open on this cluster until it is back; retry".into(),
            ));
        }
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
