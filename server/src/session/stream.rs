//! A session's raw stream: ring buffers of samples, their source timestamps and server receive
//! times, all indexed by absolute sample index, and the bookkeeping that keeps indices
//! authoritative: gaps, overlaps, out-of-order chunks, clock jumps, timestamps that go backwards.

use std::collections::VecDeque;

use myelin_proto::v1::{self as pb, IngestWarningKind};

use super::command::Chunk;
use super::error::SessionError;
use crate::metrics as m;
use crate::ring::{FrameRing, ScalarRing};
use crate::window::dispatch::StreamView;

pub struct StreamRings {
    pub n_channels: usize,
    pub rate: f64,
    pub capacity: usize,
    pub raw: FrameRing,
    pub timestamps: ScalarRing<f64>,
    pub received_ns: ScalarRing<u64>,
    /// Gaps [start, end) still inside the buffer.
    pub gaps: VecDeque<(u64, u64)>,
    pub gap_samples: u64,
}

/// How a chunk fits the stream: its first `skip` samples were already received, and `gap`
/// samples are missing before it.
pub struct Admission {
    pub skip: usize,
    pub gap: u64,
    /// Timestamp of the last sample received before the chunk.
    pub last_ts: Option<f64>,
    pub first_ts: f64,
}

pub fn warn(kind: IngestWarningKind, label: &'static str, sample_index: u64, count: u64, message: String) -> pb::IngestWarning {
    m::warning(label);
    pb::IngestWarning { kind: kind as i32, message, sample_index, count }
}

impl StreamRings {
    pub fn new(capacity: usize, n_channels: usize, rate: f64) -> Self {
        Self {
            n_channels,
            rate,
            capacity,
            raw: FrameRing::new(capacity, n_channels),
            timestamps: ScalarRing::new(capacity),
            received_ns: ScalarRing::new(capacity),
            gaps: VecDeque::new(),
            gap_samples: 0,
        }
    }

    pub fn total(&self) -> u64 {
        self.raw.total()
    }

    pub fn view(&self) -> StreamView<'_> {
        StreamView { timestamps: &self.timestamps, received_ns: &self.received_ns, gaps: &self.gaps }
    }

    /// Where the `n` samples of `chunk` go; `None` when none of them is new (warned).
    pub fn admit(&self, chunk: &Chunk, n: usize, warnings: &mut Vec<pb::IngestWarning>) -> Result<Option<Admission>, SessionError> {
        let first_index = chunk.first_index;
        let total = self.total();
        let Some(end) = first_index.checked_add(n as u64) else {
            m::rejected("bad_index");
            return Err(SessionError::InvalidArgument(format!("chunk first_sample_index {first_index} is out of range")));
        };
        if n == 0 {
            return Ok(None);
        }
        if end <= total {
            warnings.push(warn(
                IngestWarningKind::OutOfOrder,
                "out_of_order",
                first_index,
                n as u64,
                format!("chunk [{first_index}, {end}) lies before sample {total} already received; dropped"),
            ));
            return Ok(None);
        }
        let skip = total.saturating_sub(first_index) as usize;
        if skip > 0 {
            warnings.push(warn(
                IngestWarningKind::Overlap,
                "overlap",
                first_index,
                skip as u64,
                format!("chunk starts at {first_index} but {total} samples were already received; {skip} repeated samples dropped"),
            ));
        }
        let first_ts = chunk.timestamp(skip);
        let last_ts = self.timestamps.get(total.wrapping_sub(1)).filter(|_| total > 0);
        if let Some(last_ts) = last_ts
            && first_ts < last_ts
        {
            m::rejected("timestamps_backwards");
            return Err(SessionError::InvalidArgument(format!(
                "timestamps go backwards: sample {} at {first_ts} s comes after sample {} at {last_ts} s",
                first_index + skip as u64,
                total - 1
            )));
        }
        let gap = first_index.saturating_sub(total);
        if gap > 0 {
            warnings.push(warn(
                IngestWarningKind::Gap,
                "gap",
                total,
                gap,
                format!("samples [{total}, {first_index}) never arrived; windows touching them are not decoded"),
            ));
        } else if let Some(last_ts) = last_ts {
            let expected = last_ts + 1.0 / self.rate;
            let tolerance = 10.0 / self.rate + 0.05;
            if (first_ts - expected).abs() > tolerance {
                warnings.push(warn(
                    IngestWarningKind::ClockJump,
                    "clock_jump",
                    first_index + skip as u64,
                    1,
                    format!(
                        "timestamp jumped by {:+.6} s relative to the sample count; sample indices stay authoritative",
                        first_ts - expected
                    ),
                ));
            }
        }
        Ok(Some(Admission { skip, gap, last_ts, first_ts }))
    }

    pub fn push(&mut self, frame: &[f32], timestamp: f64, received_ns: u64) {
        self.raw.push(frame);
        self.timestamps.push(timestamp);
        self.received_ns.push(received_ns);
    }

    /// Records a gap of `gap` samples at the end of the stream. Returns how many of them lie
    /// beyond the buffer's reach (the rings skip those without writing) and how many must be
    /// written as zeros so that every ring and filter stays aligned with sample indices.
    pub fn open_gap(&mut self, gap: u64) -> (u64, u64) {
        let start = self.total();
        self.gaps.push_back((start, start + gap));
        self.gap_samples += gap;
        let written = gap.min(self.capacity as u64);
        let skipped = gap - written;
        if skipped > 0 {
            self.raw.advance(skipped);
            self.timestamps.advance(skipped);
            self.received_ns.advance(skipped);
        }
        (skipped, written)
    }

    /// Forgets gaps that fell out of the buffer.
    pub fn forget_old_gaps(&mut self) {
        let oldest = self.raw.oldest();
        while self.gaps.front().is_some_and(|&(_, end)| end <= oldest) {
            self.gaps.pop_front();
        }
    }
}

/// Timestamp of the `k`-th of `written` zero samples filling a gap of `gap` samples, of which the
/// first `skipped` were never buffered: interpolated between the last real sample and the next,
/// so stored timestamps never go backwards.
pub fn gap_timestamp(k: u64, skipped: u64, written: u64, gap: u64, last_ts: Option<f64>, next_ts: f64, rate: f64) -> f64 {
    let position = (skipped + k + 1) as f64 / (gap + 1) as f64;
    match last_ts {
        Some(last) if next_ts > last => last + (next_ts - last) * position,
        Some(last) => last,
        None => next_ts - (written - k) as f64 / rate,
    }
}
