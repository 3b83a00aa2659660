//! A session taken over from a replica that stopped gets its attachments back: same ids, same
//! model versions (a calibrated one fetched from the object store if this replica lacks it),
//! numbering that goes on past the stopped replica's reservation after a GAP.

use std::sync::Arc;

use super::record::{AttachmentRecord, SEQUENCE_BLOCK};
use super::state::{Cluster, Moving};
use crate::attach::{AttachSpec, Restore};
use crate::auth::Principal;
use crate::config::Scope;
use crate::decode::registry::Lookup;
use crate::session::Session;

pub(super) fn attachments(cluster: &Cluster, session: &Arc<Session>, moving: Moving) {
    for record in moving.attachments {
        let id = record.id.clone();
        let next = moving.numbering.get(&id).copied();
        match attachment(cluster, session, &moving.from, record, next) {
            Ok(restored) => {
                tracing::info!(session = %session.id, attachment = %id, from = %moving.from, "attachment restored");
                cluster.state().attached.insert(id, restored);
            }
            Err(error) => {
                tracing::error!(session = %session.id, attachment = %id, from = %moving.from, %error, "an attachment could not be restored");
            }
        }
    }
}

fn attachment(
    cluster: &Cluster,
    session: &Arc<Session>,
    from: &str,
    record: AttachmentRecord,
    next: Option<u64>,
) -> anyhow::Result<AttachmentRecord> {
    let request = record.request.clone().ok_or_else(|| anyhow::anyhow!("no Attach request recorded"))?;
    ensure_model(cluster, &request.model_id, &request.model_version, &request.subject)?;
    // The owner had the right to this attachment when it was made; the server makes it again.
    let principal = Principal::new(&record.owner, &[Scope::Admin], &[]);
    let mut spec = AttachSpec::from_request(request, principal, 0).map_err(anyhow::Error::msg)?;
    spec.session_id = session.id.clone();
    let gap = next.unwrap_or(record.reserved);
    spec.restore = Some(Restore {
        id: record.id.clone(),
        gap_sequence: gap,
        exact: next.is_some(),
        reason: format!(
            "the session's stream on replica {from:?} broke (the replica stopped, or the rig's connection), and it reopened on replica {:?}: predictions of this attachment numbered below {gap} that you did not receive are lost",
            cluster.replica
        ),
    });
    cluster.attacher.attach(spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(AttachmentRecord { reserved: record.reserved.max(gap + 1 + SEQUENCE_BLOCK), ..record })
}

/// Makes model `id` `version` available here: a calibrated version another replica fitted is
/// fetched from the object store and loaded.
fn ensure_model(cluster: &Cluster, id: &str, version: &str, subject: &str) -> anyhow::Result<()> {
    if !matches!(cluster.models.find(id, version, subject), Lookup::Missing) || version.is_empty() {
        return Ok(());
    }
    let dir = cluster.models.calibrations_dir().to_path_buf();
    let card = cluster.runtime.block_on(cluster.store.download_model(id, version, &dir))?;
    cluster.models.add_card(&card).map_err(anyhow::Error::msg)?;
    tracing::info!(model = id, version, "calibrated model fetched from the cluster's model store");
    Ok(())
}
