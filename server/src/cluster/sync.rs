//! Keeps the directory's record of each session this replica holds equal to what runs here:
//! its attachments (with the model version each decodes with now, and sequence numbers reserved
//! ahead), its calibrated models in the object store before any record names them; deletes the
//! record once the session ends. A write refused because the record changed underneath means
//! another replica took the session over: the session ends here (it must not run twice).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::UpdateErrorKind;

use super::record::{self, SEQUENCE_BLOCK, SessionRecord};
use super::state::Cluster;
use crate::shutdown::Shutdown;

/// A claim whose session has not opened after this long is given up.
const OPENING: Duration = Duration::from_secs(10);

pub(super) fn keep_syncing(cluster: Arc<Cluster>, mut shutdown: Shutdown) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cluster.lease / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_closing() => return,
            }
            let held: Vec<String> = cluster.state().held.keys().cloned().collect();
            for id in held {
                session(&cluster, &id).await;
            }
            forget_ended(&cluster).await;
        }
    });
}

/// Brings session `id`'s record up to date.
pub(super) async fn session(cluster: &Cluster, id: &str) {
    let _writing = cluster.writing.lock().await;
    let Some((revision, written, claimed)) = cluster.state().held.get(id).map(|h| (h.revision, h.written.clone(), h.claimed)) else {
        return;
    };
    let key = record::key_of(id);
    let live = cluster.sessions.get(id).filter(|s| s.is_live());
    let Some(session) = live else {
        if cluster.sessions.get(id).is_some() {
            // Ended here: its record stays, held by none, for sessions.retain_ended_seconds, so
            // that a rig whose connection broke gets its attachments back wherever it reconnects.
            cluster.state().held.remove(id);
            let orphan = SessionRecord { replica: String::new(), advertise: String::new(), ended_on: written.replica.clone(), ..written };
            if let Ok(revision) = cluster.store.sessions.update(&key, record::encode(&orphan), revision).await {
                cluster.state().ended.insert(id.to_string(), (revision, std::time::Instant::now()));
            }
        } else if claimed.elapsed() > OPENING {
            cluster.state().held.remove(id);
            let _ = cluster.store.sessions.delete_expect_revision(&key, Some(revision)).await;
        }
        return;
    };
    let info = session.info();
    let mut attachments = Vec::new();
    for attachment in &info.attachments {
        let Some(mut kept) = cluster.state().attached.get(&attachment.attachment_id).cloned() else { continue };
        if let Some(request) = kept.request.as_mut() {
            request.model_id.clone_from(&attachment.model_id);
            request.model_version.clone_from(&attachment.model_version);
        }
        kept.predictions = attachment.predictions;
        if attachment.predictions + SEQUENCE_BLOCK / 2 > kept.reserved {
            kept.reserved = attachment.predictions + SEQUENCE_BLOCK;
        }
        if let Err(error) = upload_calibrated(cluster, &session, &attachment.attachment_id).await {
            tracing::warn!(session = id, attachment = %attachment.attachment_id, %error, "storing a calibrated model in the cluster failed; retrying");
            return;
        }
        cluster.state().attached.insert(attachment.attachment_id.clone(), kept.clone());
        attachments.push(kept);
    }
    let next =
        SessionRecord { header: Some(session.header.clone()), source: session.source.as_str().into(), attachments, ..written.clone() };
    if next == written {
        return;
    }
    match cluster.store.sessions.update(&key, record::encode(&next), revision).await {
        Ok(revision) => {
            if let Some(held) = cluster.state().held.get_mut(id) {
                held.revision = revision;
                held.written = next;
            }
        }
        Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => {
            let now = cluster.store.sessions.entry(&key).await.ok().flatten();
            match now.as_ref().and_then(|e| record::decode(&e.value).map(|r| (e.revision, r))) {
                Some((revision, record)) if record.replica == cluster.replica => {
                    if let Some(held) = cluster.state().held.get_mut(id) {
                        held.revision = revision;
                        held.written = record;
                    }
                }
                _ => {
                    tracing::error!(session = id, "another replica took this session over: ending it here");
                    cluster.state().held.remove(id);
                    session.end();
                }
            }
        }
        Err(error) => tracing::warn!(session = id, %error, "updating the session directory failed; retrying"),
    }
}

/// Puts the calibrated decoder attachment `attachment_id` decodes with in the object store,
/// once per version.
async fn upload_calibrated(cluster: &Cluster, session: &crate::session::Session, attachment_id: &str) -> anyhow::Result<()> {
    let Some(attachment) = session.attachment(attachment_id) else { return Ok(()) };
    let card = &attachment.model.card;
    let Some(native) = card.native.as_ref().filter(|_| card.card_path.starts_with(cluster.models.calibrations_dir())) else {
        return Ok(());
    };
    let version = (card.id.clone(), card.version.clone());
    if cluster.state().uploaded.contains(&version) {
        return Ok(());
    }
    let folder = card.card_path.parent().unwrap_or(std::path::Path::new("."));
    cluster.store.upload_model(&card.id, &[card.card_path.clone(), folder.join(&native.params)]).await?;
    tracing::info!(model = %card.id, version = %card.version, "calibrated model stored in the cluster");
    cluster.state().uploaded.insert(version);
    Ok(())
}

/// At start: records that still name this replica are from before a restart and nobody runs
/// them; they are marked as held by none, so that the session opens wherever its rig comes
/// back (with its attachments) and no listing shows it as live meanwhile.
pub(super) async fn orphan_own(cluster: &Cluster) {
    let own: Vec<String> =
        cluster.state().directory.iter().filter(|(_, r)| r.replica == cluster.replica).map(|(id, _)| id.clone()).collect();
    for id in own {
        let key = record::key_of(&id);
        let Ok(Some(entry)) = cluster.store.sessions.entry(&key).await else { continue };
        let Some(mut orphan) = record::decode(&entry.value).filter(|r| r.replica == cluster.replica) else { continue };
        orphan.ended_on = std::mem::take(&mut orphan.replica);
        orphan.advertise.clear();
        let _ = cluster.store.sessions.update(&key, record::encode(&orphan), entry.revision).await;
    }
}

/// Deletes the records of sessions that ended here more than `sessions.retain_ended_seconds`
/// ago and opened nowhere since (a record claimed meanwhile has another revision: kept).
async fn forget_ended(cluster: &Cluster) {
    let retain = Duration::from_secs(cluster.sessions.config().retain_ended_seconds);
    let due: Vec<(String, u64)> = {
        let mut state = cluster.state();
        let due: Vec<(String, u64)> =
            state.ended.iter().filter(|(_, (_, at))| at.elapsed() > retain).map(|(id, (r, _))| (id.clone(), *r)).collect();
        for (id, _) in &due {
            state.ended.remove(id);
        }
        due
    };
    for (id, revision) in due {
        let _ = cluster.store.sessions.delete_expect_revision(&record::key_of(&id), Some(revision)).await;
    }
}
