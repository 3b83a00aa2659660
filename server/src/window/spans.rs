//! [`Spans`]: sample-index spans [start, end) that no window may read, nor follow within its
//! filters' settling time: non-finite samples a door replaced, an attachment's filter resets.
//! Kept in order, merged when they touch, bounded in number.

use std::collections::VecDeque;

/// Spans kept at most; past it the two oldest merge into one (refusing the windows between
/// them too: the safe side).
const MAX_SPANS: usize = 1024;

#[derive(Debug, Default)]
pub struct Spans {
    list: VecDeque<(u64, u64)>,
}

impl Spans {
    /// Adds [start, end) at the stream's end (spans come in order of their start).
    pub fn add(&mut self, start: u64, end: u64) {
        if end <= start {
            return;
        }
        match self.list.back_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => self.list.push_back((start, end)),
        }
        if self.list.len() > MAX_SPANS {
            let (first, _) = self.list.pop_front().expect("over the bound, not empty");
            self.list.front_mut().expect("two at least").0 = first;
        }
    }

    /// The first span that the samples [from, to) read, or that ends less than `settle`
    /// samples before them (the filters still carry it).
    pub fn touching(&self, from: u64, to: u64, settle: u64) -> Option<(u64, u64)> {
        // Newest first (windows are cut near the stream's end); spans are disjoint and in order,
        // so once one ends too early for the window, every older one does.
        let mut found = None;
        for &(start, end) in self.list.iter().rev() {
            if end.saturating_add(settle) <= from {
                break;
            }
            if start < to {
                found = Some((start, end));
            }
        }
        found
    }

    /// Forgets the spans that end before `index`.
    pub fn forget_before(&mut self, index: u64) {
        while self.list.front().is_some_and(|&(_, end)| end <= index) {
            self.list.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_merge_when_they_touch_and_reach_as_far_as_the_settling_time() {
        let mut spans = Spans::default();
        spans.add(10, 12);
        spans.add(12, 15);
        spans.add(40, 41);
        assert_eq!(spans.touching(0, 10, 0), None);
        assert_eq!(spans.touching(0, 11, 0), Some((10, 15)));
        assert_eq!(spans.touching(15, 30, 0), None);
        assert_eq!(spans.touching(15, 30, 1), Some((10, 15)), "within the settling time after it");
        assert_eq!(spans.touching(20, 30, 5), None);
        spans.forget_before(16);
        assert_eq!(spans.touching(0, 100, 0), Some((40, 41)));
    }

    #[test]
    fn a_flood_of_spans_stays_bounded_and_covers_every_one() {
        let mut spans = Spans::default();
        for i in 0..10_000u64 {
            spans.add(i * 10, i * 10 + 1);
        }
        assert!(spans.list.len() <= MAX_SPANS);
        for i in 0..10_000u64 {
            assert!(spans.touching(i * 10, i * 10 + 1, 0).is_some(), "span {i} still refuses its windows");
        }
    }
}
