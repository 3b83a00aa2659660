//! Where sessions are recorded when several replicas serve together: the registry asks the
//! directory before it opens a session (one replica holds a session at a time) and tells it
//! once the session runs (so that what the session had elsewhere, its attachments, comes back).
//! A single server has none. The cluster (`crate::cluster`) implements it, above this floor.

use std::sync::Arc;

use super::error::SessionError;
use super::handle::Session;
use crate::auth::Principal;

pub trait Directory: Send + Sync {
    /// Takes `session_id` for this replica, or refuses (another live replica holds it).
    /// Blocking: it may wait on the network.
    fn claim(&self, session_id: &str, owner: &Principal) -> Result<(), SessionError>;

    /// The session claimed runs here now. Blocking.
    fn opened(&self, session: &Arc<Session>);

    /// The claim of a session that did not open after all (refused by a later check).
    fn release(&self, session_id: &str);
}
