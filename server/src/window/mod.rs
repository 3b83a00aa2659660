//! Windows: where they are cut from an attachment's filtered samples (sliding, or locked to
//! markers), and how a cut window becomes a job for its model ([`dispatch`]) or a prediction that
//! says why it was not decoded.

pub mod collector;
pub mod dispatch;
pub mod spans;

use std::collections::VecDeque;

use myelin_proto::v1 as pb;

/// Where windows come from.
#[derive(Debug)]
pub enum Cutter {
    Sliding {
        length: usize,
        hop: usize,
        /// Exclusive end index of the next window.
        next_end: u64,
    },
    EventLocked {
        codes: Vec<i32>,
        /// Window start relative to the marker's sample, in stream samples.
        start_offset: i64,
        length: usize,
        /// Windows whose samples have not all arrived yet: (start index, marker).
        pending: VecDeque<(i64, pb::Marker)>,
        max_pending: usize,
    },
}

/// A window ready to go (or refused), found by the cutter and dispatched right after.
pub enum Cut {
    Ready { start: u64, trigger: Option<pb::Marker> },
    Refused { start: i64, trigger: Option<pb::Marker>, reason: String },
}

impl Cutter {
    pub fn length(&self) -> usize {
        match self {
            Cutter::Sliding { length, .. } | Cutter::EventLocked { length, .. } => *length,
        }
    }

    /// Starts cutting on a stream that already has `total` samples: a sliding window's first
    /// window ends one hop after them (or at one window length on an empty stream).
    pub fn start_at(&mut self, total: u64) {
        if let Cutter::Sliding { length, hop, next_end } = self {
            *next_end = if total == 0 { *length as u64 } else { (*length as u64).max(total + *hop as u64) };
        }
    }

    /// A marker was placed on sample `index`: queue its window if the code is wanted.
    pub fn on_marker(&mut self, index: u64, marker: &pb::Marker) -> Option<Cut> {
        if let Cutter::EventLocked { codes, start_offset, pending, max_pending, .. } = self {
            if !codes.contains(&marker.code) {
                return None;
            }
            let start = index as i64 + *start_offset;
            if start < 0 {
                return Some(Cut::Refused {
                    start,
                    trigger: Some(marker.clone()),
                    reason: "window starts before the first sample of the stream".into(),
                });
            }
            if pending.len() >= *max_pending {
                let (old_start, old_marker) = pending.pop_front().expect("non-empty");
                pending.push_back((start, marker.clone()));
                return Some(Cut::Refused {
                    start: old_start,
                    trigger: Some(old_marker),
                    reason: "too many markers waiting for their samples".into(),
                });
            }
            pending.push_back((start, marker.clone()));
        }
        None
    }

    /// Windows whose last sample has arrived (`total` samples received so far).
    pub fn ready_windows(&mut self, total: u64, out: &mut Vec<Cut>) {
        match self {
            Cutter::Sliding { length, hop, next_end } => {
                while *next_end <= total {
                    out.push(Cut::Ready { start: *next_end - *length as u64, trigger: None });
                    *next_end += *hop as u64;
                }
            }
            Cutter::EventLocked { length, pending, .. } => {
                // Markers may arrive out of order; scan all (the queue is small and bounded).
                let mut i = 0;
                while i < pending.len() {
                    let (start, _) = pending[i];
                    if start as u64 + *length as u64 <= total {
                        let (start, marker) = pending.remove(i).expect("index in range");
                        out.push(Cut::Ready { start: start as u64, trigger: Some(marker) });
                    } else {
                        i += 1;
                    }
                }
            }
        }
    }

    /// Drops windows that would start before `index` (samples never buffered, after a huge gap).
    pub fn skip_before(&mut self, index: u64) {
        match self {
            Cutter::Sliding { length, hop, next_end } => {
                let first_possible = index + *length as u64;
                if *next_end < first_possible {
                    let hops = (first_possible - *next_end).div_ceil(*hop as u64);
                    *next_end += hops * *hop as u64;
                }
            }
            Cutter::EventLocked { pending, .. } => pending.retain(|(start, _)| *start >= index as i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_windows_end_every_hop_once_their_samples_are_in() {
        let mut cutter = Cutter::Sliding { length: 4, hop: 2, next_end: 0 };
        cutter.start_at(0);
        let mut cuts = Vec::new();
        cutter.ready_windows(7, &mut cuts);
        let starts: Vec<u64> = cuts.iter().map(|c| if let Cut::Ready { start, .. } = c { *start } else { u64::MAX }).collect();
        assert_eq!(starts, [0, 2]);
        cutter.skip_before(100);
        cuts.clear();
        cutter.ready_windows(104, &mut cuts);
        assert!(matches!(cuts[..], [Cut::Ready { start: 100, .. }]));
    }

    #[test]
    fn event_locked_windows_wait_for_their_last_sample() {
        let marker = pb::Marker { timestamp: 1.0, code: 7, label: String::new() };
        let mut cutter = Cutter::EventLocked { codes: vec![7], start_offset: -2, length: 5, pending: VecDeque::new(), max_pending: 1 };
        assert!(cutter.on_marker(10, &pb::Marker { code: 3, ..marker.clone() }).is_none());
        assert!(cutter.on_marker(10, &marker).is_none());
        let mut cuts = Vec::new();
        cutter.ready_windows(12, &mut cuts);
        assert!(cuts.is_empty());
        cutter.ready_windows(13, &mut cuts);
        assert!(matches!(cuts[..], [Cut::Ready { start: 8, .. }]));
        assert!(matches!(cutter.on_marker(1, &marker), Some(Cut::Refused { start: -1, .. })));
    }
}
