//! What a session's worker publishes for readers (listings, subscriptions): counters and the
//! current attachments. Readers never wait on the worker's work: the lock is held for a copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use myelin_proto::v1 as pb;

use crate::decode::Attachment;

#[derive(Default)]
pub struct Snapshot {
    pub samples_received: AtomicU64,
    pub markers_received: AtomicU64,
    pub gap_samples: AtomicU64,
    attachments: Mutex<Vec<Listed>>,
    /// Every ingest warning of the session, one per kind (first occurrence, total count).
    warnings: Mutex<super::warnings::Warnings>,
}

/// An attachment as listed: live, or as it was when its session ended (holding nothing of it,
/// so that an ended session's models, galleries and buffers can go).
enum Listed {
    Live(Arc<Attachment>),
    Ended(pb::AttachmentInfo),
}

impl Listed {
    fn info(&self) -> pb::AttachmentInfo {
        match self {
            Listed::Live(a) => pb::AttachmentInfo {
                attachment_id: a.id.clone(),
                model_id: a.model.card.id.clone(),
                model_version: a.model.card.version.clone(),
                window: Some(a.policy.clone()),
                latency_budget_ms: a.budget_ms,
                predictions: a.predictions.load(Ordering::Relaxed),
                owner: a.owner.clone(),
            },
            Listed::Ended(info) => info.clone(),
        }
    }

    fn id(&self) -> &str {
        match self {
            Listed::Live(a) => &a.id,
            Listed::Ended(info) => &info.attachment_id,
        }
    }
}

impl Snapshot {
    pub fn add_samples(&self, n: u64) {
        self.samples_received.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_markers(&self, n: u64) {
        self.markers_received.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds a chunk's warnings (no lock taken when there are none, the usual case).
    pub fn add_warnings(&self, warnings: &super::warnings::Warnings) {
        if !warnings.is_empty() {
            self.warnings.lock().unwrap_or_else(PoisonError::into_inner).merge(warnings);
        }
    }

    pub fn warnings(&self) -> Vec<pb::IngestWarning> {
        self.warnings.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    pub fn set_gap_samples(&self, n: u64) {
        self.gap_samples.store(n, Ordering::Relaxed);
    }

    fn listed(&self) -> std::sync::MutexGuard<'_, Vec<Listed>> {
        self.attachments.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_attachments(&self, attachments: Vec<Arc<Attachment>>) {
        *self.listed() = attachments.into_iter().map(Listed::Live).collect();
    }

    /// The session ended: keep what the listing shows, let go of the attachments.
    pub fn freeze(&self) {
        let mut listed = self.listed();
        *listed = listed.iter().map(|l| Listed::Ended(l.info())).collect();
    }

    /// Removes an ended session's attachment from the listing; whether it was there.
    pub fn remove(&self, id: &str) -> bool {
        let mut listed = self.listed();
        let before = listed.len();
        listed.retain(|l| l.id() != id);
        listed.len() != before
    }

    pub fn attachment_infos(&self) -> Vec<pb::AttachmentInfo> {
        self.listed().iter().map(Listed::info).collect()
    }

    pub fn attachment(&self, id: &str) -> Option<Arc<Attachment>> {
        self.listed().iter().find_map(|l| match l {
            Listed::Live(a) if a.id == id => Some(a.clone()),
            _ => None,
        })
    }

    pub fn attachment_count(&self) -> usize {
        self.listed().len()
    }

    pub fn has_attachment(&self, id: &str) -> bool {
        self.listed().iter().any(|l| l.id() == id)
    }

    pub fn attachment_owner(&self, id: &str) -> Option<String> {
        self.listed().iter().find(|l| l.id() == id).map(|l| l.info().owner)
    }
}
