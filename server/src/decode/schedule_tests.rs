//! The deadline-ordered queue on its own, with a stand-in for windows.

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
