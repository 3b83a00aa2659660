//! A session's raw stream: ring buffers of samples, their source timestamps and server receive
//! times, all indexed by absolute sample index, and the bookkeeping that keeps indices
//! authoritative: gaps, overlaps, out-of-order chunks, clock jumps, timestamps that go backwards.

use std::collections::VecDeque;

use myelin_proto::v1::IngestWarningKind;

use super::command::Chunk;
use super::error::SessionError;
use super::warnings::Warnings;
use crate::metrics as m;
use crate::ring::{FrameRing, ScalarRing};
use crate::window::dispatch::StreamView;
use crate::window::spans::Spans;

/// Sample indices stay below 2^53, where every index is exact as an f64 (and sums of them
/// cannot overflow).
pub const MAX_SAMPLE_INDEX: u64 = 1 << 53;

pub struct StreamRings {
    pub n_channels: usize,
    pub rate: f64,
    pub capacity: usize,
    pub raw: FrameRing,
    pub timestamps: ScalarRing<f64>,
    pub received_ns: ScalarRing<u64>,
    /// Gaps [start, end) still inside the buffer: spans the rings skipped without writing.
    pub gaps: VecDeque<(u64, u64)>,
    /// Spans [start, end) whose non-finite values the door replaced by zeros: written, but no
    /// window reading them (or within its filters' settling time after them) is decoded.
    pub replaced: Spans,
    pub gap_samples: u64,
    /// Timestamp of the last sample received (gaps have none), as stored (repaired).
    pub last_ts: Option<f64>,
    /// The same as its source sent it: what a clock jump is measured against.
    last_raw_ts: Option<f64>,
    /// Timestamps that go backwards are repaired (made non-decreasing) rather than refused.
    repair: bool,
    /// The door the samples come through (`myelin_chunks_rejected_total`'s label).
    door: &'static str,
}

/// How a chunk fits the stream: its first `skip` samples were already received, and `gap`
/// samples are missing before it.
pub struct Admission {
    pub skip: usize,
    pub gap: u64,
}

impl StreamRings {
    pub fn new(capacity: usize, n_channels: usize, rate: f64, repair: bool, door: &'static str) -> Self {
        Self {
            n_channels,
            rate,
            capacity,
            raw: FrameRing::new(capacity, n_channels),
            timestamps: ScalarRing::new(capacity),
            received_ns: ScalarRing::new(capacity),
            gaps: VecDeque::new(),
            replaced: Spans::default(),
            gap_samples: 0,
            last_ts: None,
            last_raw_ts: None,
            repair,
            door,
        }
    }

    pub fn total(&self) -> u64 {
        self.raw.total()
    }

    pub fn view(&self) -> StreamView<'_> {
        StreamView { timestamps: &self.timestamps, received_ns: &self.received_ns, gaps: &self.gaps, replaced: &self.replaced }
    }

    /// Where the `n` samples of `chunk` go; `None` when none of them is new (warned).
    pub fn admit(&self, chunk: &Chunk, n: usize, warnings: &mut Warnings) -> Result<Option<Admission>, SessionError> {
        let first_index = chunk.first_index;
        let total = self.total();
        let end = first_index.saturating_add(n as u64);
        if end > MAX_SAMPLE_INDEX {
            m::rejected("bad_index", self.door);
            return Err(SessionError::InvalidArgument(format!(
                "chunk first_sample_index {first_index} is out of range: sample indices must stay below 2^53 ({MAX_SAMPLE_INDEX})"
            )));
        }
        if n == 0 {
            return Ok(None);
        }
        if end <= total {
            warnings.add(IngestWarningKind::OutOfOrder, "out_of_order", first_index, n as u64, || {
                format!("chunk [{first_index}, {end}) lies before sample {total} already received; dropped")
            });
            return Ok(None);
        }
        let skip = total.saturating_sub(first_index) as usize;
        if skip > 0 {
            warnings.add(IngestWarningKind::Overlap, "overlap", first_index, skip as u64, || {
                format!("chunk starts at {first_index} but {total} samples were already received; {skip} repeated samples dropped")
            });
        }
        let first_ts = chunk.timestamp(skip);
        if let Some(last_ts) = self.last_ts
            && first_ts < last_ts
            && !self.repair
        {
            m::rejected("timestamps_backwards", self.door);
            return Err(SessionError::InvalidArgument(format!(
                "timestamps go backwards: sample {} at {first_ts} s comes after sample {} at {last_ts} s (sessions.timestamp_policy = \"reject\")",
                first_index + skip as u64,
                total - 1
            )));
        }
        let gap = first_index.saturating_sub(total);
        if gap > 0 {
            warnings.add(IngestWarningKind::Gap, "gap", total, gap, || {
                format!("samples [{total}, {first_index}) never arrived; windows touching them are not decoded")
            });
        } else if let Some(last_ts) = self.last_raw_ts {
            let expected = last_ts + 1.0 / self.rate;
            let tolerance = 10.0 / self.rate + 0.05;
            if (first_ts - expected).abs() > tolerance {
                warnings.add(IngestWarningKind::ClockJump, "clock_jump", first_index + skip as u64, 1, || {
                    format!(
                        "timestamp jumped by {:+.6} s relative to the sample count; sample indices stay authoritative",
                        first_ts - expected
                    )
                });
            }
        }
        Ok(Some(Admission { skip, gap }))
    }

    /// Appends one sample. `timestamp` must not be below the last one (see [`StreamRings::repaired`]).
    pub fn push(&mut self, frame: &[f32], timestamp: f64, received_ns: u64) {
        self.raw.push(frame);
        self.timestamps.push(timestamp);
        self.received_ns.push(received_ns);
        self.last_ts = Some(timestamp);
    }

    /// `raw`, the next sample's timestamp, made non-decreasing against the last one (the repair
    /// policy), and whether it had to be.
    pub fn repaired(&mut self, raw: f64) -> (f64, bool) {
        self.last_raw_ts = Some(raw);
        match self.last_ts {
            Some(last) if raw < last => (last, true),
            _ => (raw, false),
        }
    }

    /// Records a gap of `gap` samples at the end of the stream: a span the rings skip without
    /// writing (nothing reads it: windows touching it are refused, markers are placed on the
    /// samples after it).
    pub fn open_gap(&mut self, gap: u64) {
        let start = self.total();
        self.gaps.push_back((start, start + gap));
        self.gap_samples += gap;
        self.raw.advance(gap);
        self.timestamps.advance(gap);
        self.received_ns.advance(gap);
    }

    /// First sample index whose timestamp can be read: after the latest gap still buffered.
    pub fn valid_from(&self) -> u64 {
        let oldest = self.raw.oldest();
        self.gaps.back().map_or(oldest, |&(_, end)| end.max(oldest))
    }

    /// Samples [start, end) whose non-finite values the door replaced. Spans no window can reach
    /// any more (out of the buffer by more than the longest settling time) are let go.
    pub fn add_replaced(&mut self, start: u64, end: u64) {
        self.replaced.add(start, end);
        let reach = (crate::dsp::sos::MAX_SETTLING_S * self.rate).ceil() as u64;
        self.replaced.forget_before(self.raw.oldest().saturating_sub(reach));
    }

    /// Forgets gaps that fell out of the buffer.
    pub fn forget_old_gaps(&mut self) {
        let oldest = self.raw.oldest();
        while self.gaps.front().is_some_and(|&(_, end)| end <= oldest) {
            self.gaps.pop_front();
        }
    }
}
