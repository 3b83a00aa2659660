//! A cut window on its way: copied out of the attachment's filtered ring into a pooled buffer and
//! queued for its model, or published at once with the reason it cannot be decoded (ERROR: it
//! touches missing samples, or is no longer buffered; SHED: the model's queue is full).

use std::collections::VecDeque;
use std::sync::Arc;

use myelin_proto::v1::{self as pb, PredictionStatus};

use super::Cut;
use super::collector::Collector;
use crate::clock;
use crate::decode::{Attachment, WindowJob};
use crate::ring::{FrameRing, ScalarRing};

/// What a window needs to know of its stream: per-sample source timestamps and server receive
/// times, and the gaps [start, end) still buffered (whose samples have neither).
pub struct StreamView<'a> {
    pub timestamps: &'a ScalarRing<f64>,
    pub received_ns: &'a ScalarRing<u64>,
    pub gaps: &'a VecDeque<(u64, u64)>,
}

impl StreamView<'_> {
    fn gap_at(&self, index: u64) -> Option<(u64, u64)> {
        self.gaps.iter().copied().find(|&(a, b)| a <= index && index < b)
    }

    /// Source timestamp and receive time of sample `index`, if it arrived and is buffered.
    fn sample(&self, index: u64) -> Option<(f64, u64)> {
        if self.gap_at(index).is_some() {
            return None;
        }
        Some((self.timestamps.get(index)?, self.received_ns.get(index)?))
    }
}

/// Sends the window `cut` of `length` samples of `filtered` to its model, or publishes why it
/// could not be decoded. Offers decodable event-locked windows to a calibration's `collector`.
pub fn dispatch(
    attachment: &Arc<Attachment>,
    filtered: &FrameRing,
    length: usize,
    collector: Option<&Collector>,
    cut: Cut,
    stream: &StreamView<'_>,
) {
    let (start, trigger, mut refusal) = match cut {
        Cut::Ready { start, trigger } => (start as i64, trigger, None),
        Cut::Refused { start, trigger, reason } => (start, trigger, Some(reason)),
    };
    let first = start.max(0) as u64;
    let last = first + length as u64 - 1;
    let (first_sample, last_sample) = (stream.sample(first), stream.sample(last));
    let span = pb::WindowSpan {
        first_sample_index: first,
        last_sample_index: last,
        first_timestamp: first_sample.map_or(f64::NAN, |s| s.0),
        last_timestamp: last_sample.map_or(f64::NAN, |s| s.0),
    };
    if refusal.is_none()
        && let Some(&(a, b)) = stream.gaps.iter().find(|&&(a, b)| a <= last && b > first)
    {
        refusal = Some(format!("window [{first}, {}] touches missing samples [{a}, {b})", last + 1));
    }
    let mut job = WindowJob {
        attachment: attachment.clone(),
        data: Vec::new(),
        span,
        trigger,
        sequence: attachment.next_sequence(),
        last_sample_received_ns: last_sample.map_or_else(clock::now_ns, |s| s.1),
        enqueued_ns: clock::now_ns(),
        in_flight: attachment.in_flight.window(),
    };
    if refusal.is_none() {
        job.data = attachment.buffers.take();
        if !filtered.copy_channel_major(first, length, &mut job.data) {
            refusal = Some(format!("window [{first}, {}] is no longer buffered", last + 1));
        }
    }
    if let Some(reason) = refusal {
        job.publish_undecoded(PredictionStatus::Error, reason);
        return;
    }
    if let (Some(collector), Some(trigger)) = (collector, &job.trigger) {
        collector.offer(&job.data, trigger);
    }
    if let Err(job) = attachment.model.submit(job) {
        job.publish_undecoded(PredictionStatus::Shed, "model queue full".into());
    }
}
