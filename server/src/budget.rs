//! What the server may hold at once: a memory budget that every ring buffer, attachment ring and
//! calibration buffer draws from before it is allocated, and counted slots (live sessions,
//! subscribers, LSL outlets, calibrations). A reservation or slot gives itself back when dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::metrics as m;

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("{what} needs {needed} bytes of buffer; {used} of {limit} ({key}) are in use")]
    Memory { what: String, needed: u64, used: u64, limit: u64, key: &'static str },
    #[error("{limit} {what} at once at most ({key})")]
    Slots { what: &'static str, key: &'static str, limit: usize },
    #[error("principal {owner:?} holds {limit} {what}, the most one principal may ({key})")]
    OwnerSlots { owner: String, what: &'static str, key: &'static str, limit: usize },
}

impl From<BudgetError> for tonic::Status {
    fn from(error: BudgetError) -> Self {
        tonic::Status::resource_exhausted(error.to_string())
    }
}

/// Bytes of buffer memory: the server's, or one session's (which also draws on the server's).
pub struct MemoryBudget {
    limit: u64,
    /// The configuration key that sets `limit`, for errors.
    key: &'static str,
    used: AtomicU64,
    parent: Option<Arc<MemoryBudget>>,
}

/// Bytes taken from a [`MemoryBudget`] (and its parent) until dropped.
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl MemoryBudget {
    /// The server's budget (exported as `myelin_buffer_bytes`).
    pub fn new(limit: u64, key: &'static str) -> Arc<Self> {
        Arc::new(Self { limit, key, used: AtomicU64::new(0), parent: None })
    }

    /// A budget within this one (a session's within the server's).
    pub fn child(self: &Arc<Self>, limit: u64, key: &'static str) -> Arc<Self> {
        Arc::new(Self { limit, key, used: AtomicU64::new(0), parent: Some(self.clone()) })
    }

    /// Takes `bytes` for `what` here and from every budget above, or says why not (nothing is
    /// taken then).
    pub fn reserve(self: &Arc<Self>, bytes: u64, what: impl Fn() -> String) -> Result<Reservation, BudgetError> {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            let after = used.saturating_add(bytes);
            if after > self.limit {
                return Err(BudgetError::Memory { what: what(), needed: bytes, used, limit: self.limit, key: self.key });
            }
            match self.used.compare_exchange_weak(used, after, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => used = actual,
            }
        }
        match &self.parent {
            Some(parent) => match parent.reserve(bytes, what) {
                // Released with this one's reservation (`release` walks up).
                Ok(above) => std::mem::forget(above),
                Err(error) => {
                    self.used.fetch_sub(bytes, Ordering::AcqRel);
                    return Err(error);
                }
            },
            None => metrics::gauge!(m::BUFFER_BYTES).set(self.used() as f64),
        }
        Ok(Reservation { budget: self.clone(), bytes })
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        match &self.parent {
            Some(parent) => parent.release(bytes),
            None => metrics::gauge!(m::BUFFER_BYTES).set(self.used() as f64),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// A count of things held at once (subscribers, LSL outlets, calibrations), optionally with a
/// share per owner (a principal) so that one cannot take them all.
pub struct Slots {
    what: &'static str,
    key: &'static str,
    limit: usize,
    used: AtomicUsize,
    per_owner: Option<PerOwner>,
}

/// The most one owner may hold of a [`Slots`], and what each holds.
struct PerOwner {
    limit: usize,
    key: &'static str,
    held: Mutex<HashMap<String, usize>>,
}

/// One slot of a [`Slots`] (and of its owner's share), given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    owner: Option<String>,
}

impl Slots {
    /// `key`: the configuration key that sets `limit`, for the error.
    pub fn new(what: &'static str, key: &'static str, limit: usize) -> Arc<Self> {
        Arc::new(Self { what, key, limit, used: AtomicUsize::new(0), per_owner: None })
    }

    /// The same, with at most `limit` of them held by any one owner (`key` sets it).
    pub fn with_owner_share(what: &'static str, key: &'static str, limit: usize, owner_key: &'static str, owner_limit: usize) -> Arc<Self> {
        let per_owner = PerOwner { limit: owner_limit, key: owner_key, held: Mutex::default() };
        Arc::new(Self { what, key, limit, used: AtomicUsize::new(0), per_owner: Some(per_owner) })
    }

    /// A slot held by nobody in particular.
    pub fn take(self: &Arc<Self>) -> Result<Slot, BudgetError> {
        self.take_for(None)
    }

    /// A slot held by `owner` (None: not held to an owner's share), within its share.
    pub fn take_for(self: &Arc<Self>, owner: Option<&str>) -> Result<Slot, BudgetError> {
        let taken = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| (used < self.limit).then_some(used + 1));
        if taken.is_err() {
            return Err(BudgetError::Slots { what: self.what, key: self.key, limit: self.limit });
        }
        // Given back by the slot's drop if the owner's share refuses it.
        let mut slot = Slot { slots: self.clone(), owner: None };
        if let (Some(share), Some(owner)) = (&self.per_owner, owner) {
            let mut held = share.held.lock().unwrap_or_else(PoisonError::into_inner);
            let count = held.entry(owner.to_string()).or_default();
            if *count >= share.limit {
                return Err(BudgetError::OwnerSlots { owner: owner.into(), what: self.what, key: share.key, limit: share.limit });
            }
            *count += 1;
            slot.owner = Some(owner.to_string());
        }
        Ok(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.used.fetch_sub(1, Ordering::AcqRel);
        if let (Some(share), Some(owner)) = (&self.slots.per_owner, &self.owner) {
            let mut held = share.held.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = held.get_mut(owner) {
                *count -= 1;
                if *count == 0 {
                    held.remove(owner);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_limit_and_give_back_when_dropped() {
        let budget = MemoryBudget::new(100, "limits.server_buffer_bytes");
        let a = budget.reserve(60, || "a".into()).unwrap();
        assert!(budget.reserve(41, || "b".into()).is_err());
        let b = budget.reserve(40, || "b".into()).unwrap();
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(budget.reserve(u64::MAX, || "huge".into()).is_err());
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_child_budget_draws_on_its_parent_and_gives_back_to_both() {
        let server = MemoryBudget::new(100, "limits.server_buffer_bytes");
        let session = server.child(70, "limits.session_buffer_bytes");
        let other = server.child(70, "limits.session_buffer_bytes");
        let a = session.reserve(60, || "a".into()).unwrap();
        let error = session.reserve(20, || "b".into()).err().unwrap().to_string();
        assert!(error.contains("limits.session_buffer_bytes"), "{error}");
        let error = other.reserve(50, || "c".into()).err().unwrap().to_string();
        assert!(error.contains("limits.server_buffer_bytes"), "{error}");
        assert_eq!((server.used(), other.used()), (60, 0), "a refused reservation takes nothing");
        drop(a);
        assert_eq!((server.used(), session.used()), (0, 0));
    }

    #[test]
    fn slots_refuse_past_their_limit_by_key() {
        let slots = Slots::new("subscribers", "limits.subscribers", 1);
        let one = slots.take().unwrap();
        let error = slots.take().err().unwrap().to_string();
        assert!(error.contains("limits.subscribers"), "{error}");
        drop(one);
        assert!(slots.take().is_ok());
    }

    #[test]
    fn one_owner_cannot_take_every_slot() {
        let slots = Slots::with_owner_share("subscribers", "limits.subscribers", 3, "limits.subscribers_per_principal", 2);
        let (a1, _a2) = (slots.take_for(Some("rig-a")).unwrap(), slots.take_for(Some("rig-a")).unwrap());
        let error = slots.take_for(Some("rig-a")).err().unwrap().to_string();
        assert!(error.contains("rig-a") && error.contains("limits.subscribers_per_principal"), "{error}");
        let _b = slots.take_for(Some("rig-b")).expect("another principal still gets its slots");
        assert!(slots.take_for(None).is_err(), "the global limit holds too");
        drop(a1);
        assert!(slots.take_for(Some("rig-a")).is_ok(), "a slot given back is the owner's again");
    }
}
