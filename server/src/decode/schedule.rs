//! A model's queue, ordered by deadline: inference threads always take the window whose deadline
//! comes first (EDF), batch windows of any sessions as long as every window of the batch that can
//! still make its deadline does so at the batch's measured cost, and shed a window before it
//! reaches the model once its deadline cannot be met and its attachment does not want late
//! results (late policy DROP). A full queue sheds the window with the least slack, not the newest.
//!
//! Hand-written because no crate schedules by deadline with a cost model: it is a binary heap
//! under a mutex, with a condition variable to wake the inference threads.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::cost::CostModel;
use crate::clock;

/// What the queue needs to know of a window.
pub trait Deadline {
    /// Server time (ns) by which its prediction must be published.
    fn deadline_ns(&self) -> u64;
    /// Whether its attachment wants it decoded even when it will be late (late policy DELIVER).
    fn wants_late(&self) -> bool;
    /// Its attachment's count of windows per deadline slice (fairness between attachments).
    fn fairness(&self) -> &FairnessCount;
}

/// An attachment's windows queued in its latest deadline slice; changed only under the queue's
/// lock (atomics only so that the attachment can be shared).
#[derive(Debug, Default)]
pub struct FairnessCount {
    slice: AtomicU64,
    count: AtomicU32,
}

impl FairnessCount {
    /// The rank of a window in `slice`: 0 for its attachment's first window in the slice, then
    /// 1, 2, ... An attachment's windows never overtake each other (slices do not go back, ranks
    /// only grow within one), and a burst from one attachment ranks behind the first window of
    /// every other.
    fn rank(&self, slice: u64) -> u32 {
        if self.slice.load(Ordering::Relaxed) == slice {
            self.count.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.slice.store(slice, Ordering::Relaxed);
            self.count.store(0, Ordering::Relaxed);
            0
        }
    }
}

/// Why a window was shed (its prediction's `error_reason`).
pub const DEADLINE_UNREACHABLE: &str = "deadline unreachable";
pub const QUEUE_FULL: &str = "model queue full";
pub const SHUTDOWN: &str = "shutdown";

/// Windows whose deadlines fall in the same slice of this length count as equally urgent: among
/// them, windows go round-robin between attachments, so that a burst of windows from
/// one attachment (a long chunk completes many sliding windows at once) cannot starve another.
const FAIRNESS_SLICE_NS: u64 = 500_000;

/// A window in the queue with its place in the order.
struct Queued<J> {
    /// (deadline slice, rank of the window among its attachment's in the slice, deadline, arrival).
    key: (u64, u32, u64, u64),
    job: J,
}

impl<J> PartialEq for Queued<J> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<J> Eq for Queued<J> {}
impl<J> PartialOrd for Queued<J> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<J> Ord for Queued<J> {
    /// Reversed: `BinaryHeap` pops its greatest element, the queue the earliest key.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.key.cmp(&self.key)
    }
}

struct State<J> {
    waiting: BinaryHeap<Queued<J>>,
    arrivals: u64,
    stopped: bool,
}

/// Settings of one model's queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    /// Windows waiting at most.
    pub capacity: usize,
    /// Windows per inference run at most (the card's `input.max_batch`).
    pub max_batch: usize,
    /// How long a batch may wait for more windows after its first (0: take only what waits).
    pub max_delay_ns: u64,
}

pub struct ModelQueue<J> {
    state: Mutex<State<J>>,
    wake: Condvar,
    settings: QueueSettings,
    pub cost: CostModel,
}

/// What an inference thread gets from [`ModelQueue::next_batch`].
pub enum Next {
    /// Windows to decode together (at least one), and when the first of them was taken.
    Batch { formed_from_ns: u64 },
    /// Only windows to publish undecoded (in `shed`).
    Nothing,
    /// The queue stopped; `shed` holds every window that was still queued.
    Stopped,
}

impl<J: Deadline> ModelQueue<J> {
    pub fn new(settings: QueueSettings, cost: CostModel) -> Self {
        let state = State { waiting: BinaryHeap::new(), arrivals: 0, stopped: false };
        Self { state: Mutex::new(state), wake: Condvar::new(), settings, cost }
    }

    pub fn max_batch(&self) -> usize {
        self.settings.max_batch
    }

    fn lock(&self) -> MutexGuard<'_, State<J>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a window. When the queue is full, the window with the least slack (the earliest
    /// deadline, possibly this one's) is handed back to be shed.
    pub fn push(&self, job: J) -> Option<J> {
        let shed = self.push_locked(&mut self.lock(), job);
        self.wake.notify_one();
        shed
    }

    /// Queues windows (`jobs`, drained) under one lock, then wakes the threads; returns the
    /// windows shed for them (see [`Self::push`]).
    pub fn push_all(&self, jobs: &mut Vec<J>) -> Vec<J> {
        let mut state = self.lock();
        let shed = jobs.drain(..).filter_map(|job| self.push_locked(&mut state, job)).collect();
        drop(state);
        self.wake.notify_all();
        shed
    }

    fn push_locked(&self, state: &mut State<J>, job: J) -> Option<J> {
        if state.stopped {
            return Some(job);
        }
        let mut shed = None;
        if state.waiting.len() >= self.settings.capacity {
            if state.waiting.peek().is_some_and(|head| head.job.deadline_ns() <= job.deadline_ns()) {
                shed = state.waiting.pop().map(dequeued);
            } else {
                return Some(job);
            }
        }
        let deadline = job.deadline_ns();
        let slice = deadline / FAIRNESS_SLICE_NS;
        let rank = job.fairness().rank(slice);
        state.arrivals += 1;
        let key = (slice, rank, deadline, state.arrivals);
        state.waiting.push(Queued { key, job });
        shed
    }

    /// Stops the queue: every inference thread returns [`Next::Stopped`] with the windows left.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.wake.notify_all();
    }

    /// Waits for work and fills `batch` (empty on entry) with the windows to decode now, earliest
    /// deadline first. A window that can no longer make its deadline, even decoded alone now, goes
    /// to `shed` (with why) unless its attachment wants late results (late policy DELIVER: it is
    /// decoded in its turn, and published LATE).
    pub fn next_batch(&self, batch: &mut Vec<J>, shed: &mut Vec<(J, &'static str)>) -> Next {
        let mut state = self.lock();
        loop {
            if state.stopped {
                shed.extend(state.waiting.drain().map(|q| (dequeued(q), SHUTDOWN)));
                return Next::Stopped;
            }
            let now = clock::now_ns();
            self.form_batch(&mut state, now, batch, shed);
            if !batch.is_empty() {
                return self.wait_for_company(state, now, batch, shed);
            }
            if !shed.is_empty() {
                return Next::Nothing;
            }
            state = self.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Whether `job` can still make its deadline if decoded alone from `now`, at the model's
    /// measured cost. One that cannot and whose attachment does not want late results is shed
    /// (here and by an inline decoder alike).
    pub fn reachable(&self, job: &J, now: u64) -> bool {
        now + self.cost.estimate_ns(1) <= job.deadline_ns()
    }

    /// Takes windows in deadline order as long as the batch's measured cost leaves every deadline
    /// in it that can still be met met; sheds the hopeless ones that nobody wants late.
    fn form_batch(&self, state: &mut State<J>, now: u64, batch: &mut Vec<J>, shed: &mut Vec<(J, &'static str)>) {
        let mut earliest = self.earliest(batch, now);
        while batch.len() < self.settings.max_batch
            && let Some(next) = state.waiting.peek()
        {
            let reachable = self.reachable(&next.job, now);
            if !reachable && !next.job.wants_late() {
                let q = state.waiting.pop().expect("peeked");
                shed.push((dequeued(q), DEADLINE_UNREACHABLE));
                continue;
            }
            // Late windows (wanted anyway) do not hold a batch back; reachable ones must stay so.
            let with_next = if reachable { earliest.min(next.job.deadline_ns()) } else { earliest };
            if !batch.is_empty() && now + self.cost.estimate_ns(batch.len() + 1) > with_next {
                break;
            }
            earliest = with_next;
            batch.push(dequeued(state.waiting.pop().expect("peeked")));
        }
    }

    /// The earliest deadline in `batch` that can still be met (`u64::MAX` if none).
    fn earliest(&self, batch: &[J], now: u64) -> u64 {
        batch.iter().filter(|job| self.reachable(job, now)).map(J::deadline_ns).min().unwrap_or(u64::MAX)
    }

    /// With a batching delay, waits for more windows while the delay and the earliest deadline in
    /// the batch allow, taking them as they come.
    fn wait_for_company(
        &self,
        mut state: MutexGuard<'_, State<J>>,
        first_ns: u64,
        batch: &mut Vec<J>,
        shed: &mut Vec<(J, &'static str)>,
    ) -> Next {
        let mut now = first_ns;
        while self.settings.max_delay_ns > 0 && batch.len() < self.settings.max_batch && !state.stopped {
            let spare = self.earliest(batch, now).saturating_sub(self.cost.estimate_ns(batch.len() + 1));
            let until = spare.min(first_ns + self.settings.max_delay_ns);
            if now >= until {
                break;
            }
            state = self.wake.wait_timeout(state, Duration::from_nanos(until - now)).unwrap_or_else(PoisonError::into_inner).0;
            now = clock::now_ns();
            let before = batch.len();
            self.form_batch(&mut state, now, batch, shed);
            if batch.len() == before && state.waiting.peek().is_some() {
                break; // what waits does not fit in this batch: run it and let the next take it
            }
        }
        Next::Batch { formed_from_ns: first_ns }
    }
}

/// A window leaving the queue.
fn dequeued<J>(q: Queued<J>) -> J {
    q.job
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
