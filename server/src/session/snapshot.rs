//! What a session's worker publishes for readers (listings, subscriptions): counters and the
//! current attachments. Readers never wait on the worker's work: the lock is held for a clone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::decode::Attachment;

#[derive(Default)]
pub struct Snapshot {
    pub samples_received: AtomicU64,
    pub markers_received: AtomicU64,
    pub gap_samples: AtomicU64,
    attachments: Mutex<Vec<Arc<Attachment>>>,
}

impl Snapshot {
    pub fn add_samples(&self, n: u64) {
        self.samples_received.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_markers(&self, n: u64) {
        self.markers_received.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_gap_samples(&self, n: u64) {
        self.gap_samples.store(n, Ordering::Relaxed);
    }

    pub fn set_attachments(&self, attachments: Vec<Arc<Attachment>>) {
        *self.attachments.lock().unwrap_or_else(PoisonError::into_inner) = attachments;
    }

    pub fn attachments(&self) -> Vec<Arc<Attachment>> {
        self.attachments.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
