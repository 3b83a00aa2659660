//! Markers waiting for their samples: each is placed on the sample nearest its timestamp once
//! that sample has arrived (markers often come before the samples they mark).

use std::collections::VecDeque;

use myelin_proto::v1::{self as pb, IngestWarningKind};

use super::warnings::Warnings;
use crate::ring::ScalarRing;

pub struct PendingMarkers {
    queue: VecDeque<pb::Marker>,
    max: usize,
}

impl PendingMarkers {
    /// At most `max` markers wait; beyond that the oldest is dropped with a warning.
    pub fn new(max: usize) -> Self {
        Self { queue: VecDeque::new(), max }
    }

    pub fn add(&mut self, marker: pb::Marker, warnings: &mut Warnings) {
        if self.queue.len() >= self.max
            && let Some(dropped) = self.queue.pop_front()
        {
            warnings.add(IngestWarningKind::MarkerOutsideBuffer, "marker_outside_buffer", 0, 1, || {
                format!("marker {} at {} s dropped: too many markers ahead of their samples", dropped.code, dropped.timestamp)
            });
        }
        self.queue.push_back(marker);
    }

    /// Hands every waiting marker whose sample has arrived to `place`, with the index of its
    /// nearest sample from `valid_from` on (the samples after the latest gap); markers older than
    /// those are dropped with a warning.
    pub fn place(
        &mut self,
        timestamps: &ScalarRing<f64>,
        valid_from: u64,
        rate: f64,
        warnings: &mut Warnings,
        mut place: impl FnMut(u64, &pb::Marker),
    ) {
        let total = timestamps.total();
        if total == 0 {
            return;
        }
        let half_period = 0.5 / rate;
        if valid_from >= total {
            return;
        }
        let newest_ts = timestamps.get(total - 1).unwrap_or(f64::NEG_INFINITY);
        let oldest_ts = timestamps.get(valid_from).unwrap_or(f64::INFINITY);
        let mut i = 0;
        while i < self.queue.len() {
            let ts = self.queue[i].timestamp;
            if ts > newest_ts + half_period {
                i += 1;
                continue;
            }
            let marker = self.queue.remove(i).expect("index in range");
            if ts < oldest_ts - half_period {
                warnings.add(IngestWarningKind::MarkerOutsideBuffer, "marker_outside_buffer", valid_from, 1, || {
                    format!("marker {} at {ts} s is older than the buffered samples (from {oldest_ts} s); no window", marker.code)
                });
                continue;
            }
            let index = timestamps.nearest_index_from(valid_from, ts).expect("non-empty range");
            place(index, &marker);
        }
    }
}
