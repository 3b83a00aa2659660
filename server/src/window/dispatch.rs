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
use crate::metrics as m;
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

/// Where an attachment's windows are cut from: its filtered ring, its window length (stream
/// samples), and the calibration collecting its epochs, if any.
pub struct CutFrom<'a> {
    pub attachment: &'a Arc<Attachment>,
    pub filtered: &'a FrameRing,
    pub length: usize,
    pub collector: Option<&'a Collector>,
}

/// An attachment's buffers for cutting, reused window after window.
#[derive(Default)]
pub struct WindowScratch {
    /// The window's samples that decimation keeps, channel-major.
    window: Vec<f32>,
    /// The whole window at the stream rate, for a calibration's collector.
    stream_rate: Vec<f32>,
}

/// Cuts the window `cut` of `length` samples of `filtered` into its model's input (preprocessed
/// here, on the session's thread, so that the model's threads only run the model) and adds it to
/// `cut_windows` (see [`hand_over`]), or publishes why it cannot be decoded. Offers decodable event-locked windows, at the
/// stream rate, to a calibration's `collector`.
pub fn dispatch(from: CutFrom<'_>, scratch: &mut WindowScratch, cut: Cut, stream: &StreamView<'_>, cut_windows: &mut Vec<WindowJob>) {
    let CutFrom { attachment, filtered, length, collector } = from;
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
    // Only the samples the model keeps after decimation are copied out of the ring.
    let step = attachment.preprocessor.decimation();
    if refusal.is_none() {
        scratch.window.resize(filtered.width() * length.div_ceil(step), 0.0);
        if !filtered.copy_channel_major_every(first, length, step, &mut scratch.window) {
            refusal = Some(format!("window [{first}, {}] is no longer buffered", last + 1));
        }
    }
    if let Some(reason) = refusal {
        job.publish_undecoded(PredictionStatus::Error, reason);
        return;
    }
    if let (Some(collector), Some(trigger)) = (collector, &job.trigger) {
        // A calibration keeps the whole window at the stream rate (it refits on it).
        scratch.stream_rate.resize(filtered.width() * length, 0.0);
        filtered.copy_channel_major(first, length, &mut scratch.stream_rate);
        collector.offer(&scratch.stream_rate, trigger);
    }
    job.data = attachment.buffers.take();
    attachment.preprocessor.run_decimated(&mut scratch.window, &mut job.data);
    job.enqueued_ns = clock::now_ns();
    m::stage("cut", job.enqueued_ns.saturating_sub(now));
    cut_windows.push(job);
}

/// Hands the windows of one pass (`cut_windows`, drained) to their models, each model's windows
/// together: a model's queue then orders all of them by deadline before any is taken, instead of
/// its thread taking the first window of the pass while the others are still being cut.
///
/// Only the last model of a pass may decode inline on this thread: the others are queued first,
/// so that their threads decode in parallel instead of waiting for this thread's inline runs.
pub fn hand_over(cut_windows: &mut Vec<WindowJob>, same_model: &mut Vec<WindowJob>) {
    while let Some(first) = cut_windows.first() {
        let model = first.attachment.model.clone();
        same_model.extend(cut_windows.extract_if(.., |job| Arc::ptr_eq(&job.attachment.model, &model)));
        let last = cut_windows.is_empty();
        model.submit_all(same_model, last);
    }
}
