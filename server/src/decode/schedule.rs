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
        let mut state = self.lock();
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
        drop(state);
        self.wake.notify_one();
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

    /// Takes windows in deadline order as long as the batch's measured cost leaves every deadline
    /// in it that can still be met met; sheds the hopeless ones that nobody wants late.
    fn form_batch(&self, state: &mut State<J>, now: u64, batch: &mut Vec<J>, shed: &mut Vec<(J, &'static str)>) {
        let alone = self.cost.estimate_ns(1);
        while batch.len() < self.settings.max_batch
            && let Some(next) = state.waiting.peek()
        {
            let deadline = next.job.deadline_ns();
            let reachable = now + alone <= deadline;
            if !reachable && !next.job.wants_late() {
                let q = state.waiting.pop().expect("peeked");
                shed.push((dequeued(q), DEADLINE_UNREACHABLE));
                continue;
            }
            // Late windows (wanted anyway) do not hold a batch back; reachable ones must stay so.
            let earliest = if reachable { self.earliest(batch, now).min(deadline) } else { self.earliest(batch, now) };
            if !batch.is_empty() && now + self.cost.estimate_ns(batch.len() + 1) > earliest {
                break;
            }
            batch.push(dequeued(state.waiting.pop().expect("peeked")));
        }
    }

    /// The earliest deadline in `batch` that can still be met (`u64::MAX` if none).
    fn earliest(&self, batch: &[J], now: u64) -> u64 {
        let alone = self.cost.estimate_ns(1);
        batch.iter().map(J::deadline_ns).filter(|&d| now + alone <= d).min().unwrap_or(u64::MAX)
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
mod tests {
    use std::sync::Arc;

    use super::*;

    struct Job {
        name: &'static str,
        deadline: u64,
        late_ok: bool,
        fairness: Arc<FairnessCount>,
    }

    impl Deadline for Job {
        fn deadline_ns(&self) -> u64 {
            self.deadline
        }
        fn wants_late(&self) -> bool {
            self.late_ok
        }
        fn fairness(&self) -> &FairnessCount {
            &self.fairness
        }
    }

    fn queue(capacity: usize, max_batch: usize, cost_ns: u64) -> ModelQueue<Job> {
        let cost = CostModel::from_measured("test", max_batch, &[(1, cost_ns), (2, 2 * cost_ns)]);
        ModelQueue::new(QueueSettings { capacity, max_batch, max_delay_ns: 0 }, cost)
    }

    fn in_ms(ms: u64) -> u64 {
        clock::now_ns() + ms * 1_000_000
    }

    fn job(name: &'static str, deadline: u64, attachment: &Arc<FairnessCount>) -> Job {
        Job { name, deadline, late_ok: false, fairness: attachment.clone() }
    }

    fn take(queue: &ModelQueue<Job>) -> (Vec<&'static str>, Vec<(&'static str, &'static str)>) {
        let (mut batch, mut shed) = (Vec::new(), Vec::new());
        queue.next_batch(&mut batch, &mut shed);
        (batch.iter().map(|j| j.name).collect(), shed.iter().map(|(j, why)| (j.name, *why)).collect())
    }

    #[test]
    fn earliest_deadline_first_and_unreachable_windows_are_shed() {
        let (a, b) = (Arc::default(), Arc::default());
        let q = queue(8, 1, 1_000_000);
        q.push(job("relaxed", in_ms(200), &a));
        q.push(job("tight", in_ms(5), &b));
        q.push(job("hopeless", clock::now_ns(), &b));
        assert_eq!(take(&q), (vec!["tight"], vec![("hopeless", DEADLINE_UNREACHABLE)]));
        assert_eq!(take(&q).0, vec!["relaxed"]);
    }

    #[test]
    fn a_burst_from_one_attachment_does_not_starve_another_of_equal_deadline() {
        let (flood, other) = (Arc::default(), Arc::default());
        let q = queue(16, 1, 1_000);
        let deadline = in_ms(100) / FAIRNESS_SLICE_NS * FAIRNESS_SLICE_NS;
        for _ in 0..5 {
            q.push(job("flood", deadline, &flood));
        }
        q.push(job("other", deadline + 1, &other));
        let order: Vec<_> = (0..6).flat_map(|_| take(&q).0).collect();
        assert_eq!(order[..2], ["flood", "other"]);
    }

    #[test]
    fn an_attachments_windows_keep_their_order_while_others_are_taken() {
        let a = Arc::default();
        let q = queue(16, 1, 1_000);
        let deadline = in_ms(100) / FAIRNESS_SLICE_NS * FAIRNESS_SLICE_NS;
        let names = ["w0", "w1", "w2", "w3", "w4", "w5"];
        for name in &names[..3] {
            q.push(job(name, deadline, &a));
        }
        assert_eq!(take(&q).0, ["w0"]);
        for (i, name) in names[3..].iter().enumerate() {
            q.push(job(name, deadline + 1 + i as u64, &a));
        }
        let order: Vec<_> = (0..5).flat_map(|_| take(&q).0).collect();
        assert_eq!(order, names[1..]);
    }

    #[test]
    fn a_full_queue_sheds_the_least_slack_and_late_windows_first() {
        let a = Arc::default();
        let q = queue(2, 1, 1_000);
        assert!(q.push(job("soon", in_ms(10), &a)).is_none());
        assert!(q.push(job("later", in_ms(50), &a)).is_none());
        assert_eq!(q.push(job("latest", in_ms(90), &a)).map(|j| j.name), Some("soon"));
        assert_eq!(q.push(job("sooner-still", in_ms(1), &a)).map(|j| j.name), Some("sooner-still"));
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn late_windows_that_are_wanted_are_decoded_in_their_turn_without_holding_a_batch_back() {
        let a = Arc::default();
        let q = queue(8, 4, 1_000_000);
        q.push(Job { late_ok: true, ..job("late", clock::now_ns(), &a) });
        q.push(job("timely", in_ms(100), &a));
        q.push(job("hopeless", clock::now_ns(), &a));
        assert_eq!(take(&q), (vec!["late", "timely"], vec![("hopeless", DEADLINE_UNREACHABLE)]));
    }

    #[test]
    fn a_batch_takes_only_windows_whose_deadlines_it_can_still_meet() {
        let a = Arc::default();
        // One window costs 1 ms, two 2 ms, eight 8 ms.
        let q = queue(16, 8, 1_000_000);
        q.push(job("first", in_ms(50), &a));
        q.push(job("second", in_ms(60), &a));
        assert_eq!(take(&q).0, vec!["first", "second"]);
        q.push(job("urgent", in_ms(3), &a));
        for _ in 0..7 {
            q.push(job("relaxed", in_ms(100), &a));
        }
        let (batch, _) = take(&q);
        assert_eq!(batch[0], "urgent");
        assert!(batch.len() <= 3, "a batch of {} would miss the urgent window's 3 ms", batch.len());
    }

    #[test]
    fn stopping_hands_back_every_queued_window() {
        let a = Arc::default();
        let q = queue(8, 4, 1_000);
        q.push(job("x", in_ms(100), &a));
        q.push(job("y", in_ms(100), &a));
        q.stop();
        let (mut batch, mut shed) = (Vec::new(), Vec::new());
        assert!(matches!(q.next_batch(&mut batch, &mut shed), Next::Stopped));
        assert_eq!(shed.len(), 2);
        assert!(shed.iter().all(|(_, why)| *why == SHUTDOWN));
    }
}
