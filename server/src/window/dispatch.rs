//! A cut window on its way: copied out of the attachment's filtered ring into a pooled buffer and
//! handed to its model with its deadline, or published at once with the reason it cannot be
//! decoded (ERROR: it touches missing samples, or is no longer buffered).

use std::collections::VecDeque;
use std::sync::Arc;

use myelin_proto::v1::{self as pb, PredictionStatus};

use super::Cut;
use super::collector::Collector;
use crate::clock;
use crate::decode::{Attachment, WindowJob, deadline_of};
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

/// An attachment's buffers for cutting: the window at the stream rate, and the preprocessing's
/// scratch space. Reused window after window.
#[derive(Default)]
pub struct WindowScratch {
    window: Vec<f32>,
    preprocessing: Vec<f32>,
}

/// Sends the window `cut` of `length` samples of `filtered` to its model as the model's input
/// (preprocessed here, on the session's thread, so that the model's threads only run the model),
/// or publishes why it could not be decoded. Offers decodable event-locked windows, at the
/// stream rate, to a calibration's `collector`.
pub fn dispatch(
    attachment: &Arc<Attachment>,
    filtered: &FrameRing,
    length: usize,
    collector: Option<&Collector>,
    scratch: &mut WindowScratch,
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
    let now = clock::now_ns();
    let last_sample_received_ns = last_sample.map_or(now, |s| s.1);
    let mut job = WindowJob {
        attachment: attachment.clone(),
        data: Vec::new(),
        span,
        trigger,
        sequence: attachment.next_sequence(),
        last_sample_received_ns,
        enqueued_ns: now,
        deadline_ns: deadline_of(last_sample_received_ns, attachment.budget_ms),
        in_flight: attachment.in_flight.window(),
    };
    if refusal.is_none() {
        scratch.window.resize(filtered.width() * length, 0.0);
        if !filtered.copy_channel_major(first, length, &mut scratch.window) {
            refusal = Some(format!("window [{first}, {}] is no longer buffered", last + 1));
        }
    }
    if let Some(reason) = refusal {
        job.publish_undecoded(PredictionStatus::Error, reason);
        return;
    }
    if let (Some(collector), Some(trigger)) = (collector, &job.trigger) {
        collector.offer(&scratch.window, trigger);
    }
    job.data = attachment.buffers.take();
    attachment.preprocessor.run(&scratch.window, &mut scratch.preprocessing, &mut job.data);
    attachment.model.submit(job);
}
