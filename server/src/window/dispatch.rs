//! A cut window on its way: copied out of the attachment's filtered ring into a pooled buffer and
//! handed to its model with its deadline, or published at once with the reason it cannot be
//! decoded (ERROR: it touches missing samples, or is no longer buffered).

use std::collections::VecDeque;
use std::sync::Arc;

use myelin_proto::v1::{self as pb, PredictionStatus};

use super::Cut;
use super::collector::Collector;
use super::spans::Spans;
use crate::clock;
use crate::decode::{Attachment, WindowJob, deadline_of};
use crate::metrics as m;
use crate::ring::{FrameRing, ScalarRing};

/// What a window needs to know of its stream: per-sample source timestamps and server receive
/// times, the gaps [start, end) still buffered (whose samples have neither), and the spans whose
/// non-finite values were replaced.
pub struct StreamView<'a> {
    pub timestamps: &'a ScalarRing<f64>,
    pub received_ns: &'a ScalarRing<u64>,
    pub gaps: &'a VecDeque<(u64, u64)>,
    pub replaced: &'a Spans,
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

/// Where an attachment's windows are cut from: its filtered ring, where its filter was reset
/// and how long it takes to settle, and the calibration collecting its epochs, if any. (The
/// attachment's preprocessor says which stream samples a window reads.)
pub struct CutFrom<'a> {
    pub attachment: &'a Arc<Attachment>,
    pub filtered: &'a FrameRing,
    pub resets: &'a Spans,
    /// The filter's settling time, in stream samples.
    pub settle: u64,
    pub collector: Option<&'a Collector>,
}

/// An attachment's buffers for cutting, reused window after window.
#[derive(Default)]
pub struct WindowScratch {
    /// The window's samples that decimation keeps, channel-major.
    window: Vec<f32>,
    /// The window's whole segment at the stream rate (for resampling, or a calibration's
    /// collector).
    stream_rate: Vec<f32>,
    /// The model-rate window a resampled segment becomes.
    resampled: Vec<f32>,
}

/// Cuts the window `cut` of `length` samples of `filtered` into its model's input (preprocessed
/// here, on the session's thread, so that the model's threads only run the model) and adds it to
/// `cut_windows` (see [`hand_over`]), or publishes why it cannot be decoded. Offers decodable
/// event-locked windows, as their segments at the stream rate, to a calibration's `collector`.
pub fn dispatch(from: CutFrom<'_>, scratch: &mut WindowScratch, cut: Cut, stream: &StreamView<'_>, cut_windows: &mut Vec<WindowJob>) {
    let CutFrom { attachment, filtered, resets, settle, collector } = from;
    let pre = &attachment.preprocessor;
    let (start, trigger, mut refusal) = match cut {
        Cut::Ready { start, trigger } => (start as i64, trigger, None),
        Cut::Refused { start, trigger, reason } => (start, trigger, Some(reason)),
    };
    let first = start.max(0) as u64;
    let last = first + pre.span() as u64 - 1;
    // What the window reads: its resampling filter's reach on either side of the span.
    let (read_from, read_to) = (first.saturating_sub(pre.history() as u64), first + pre.reach() as u64);
    let (first_sample, last_sample) = (stream.sample(first), stream.sample(last));
    // The window is decodable once the last sample it reads has arrived: its deadline counts
    // from then (the resampling filter's lookahead is part of the window, not of the budget).
    let last_needed = stream.sample(read_to - 1);
    let span = pb::WindowSpan {
        first_sample_index: first,
        last_sample_index: last,
        first_timestamp: first_sample.map_or(f64::NAN, |s| s.0),
        last_timestamp: last_sample.map_or(f64::NAN, |s| s.0),
    };
    if refusal.is_none()
        && let Some(&(a, b)) = stream.gaps.iter().find(|&&(a, b)| a < read_to && b > read_from)
    {
        refusal = Some(format!("window [{first}, {}] (reading [{read_from}, {read_to})) touches missing samples [{a}, {b})", last + 1));
    }
    if refusal.is_none() {
        refusal = unsettled(first, last, (read_from, read_to), stream.replaced, resets, settle);
    }
    let now = clock::now_ns();
    let last_sample_received_ns = last_needed.map_or(now, |s| s.1);
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
    if refusal.is_none() && !pre.scaling_ready() {
        refusal = Some(format!("window [{first}, {}] is cut before the session's robust scaling was fitted (its first seconds)", last + 1));
    }
    if refusal.is_none() && !copy_window(filtered, first, pre, scratch, collector.is_some() && job.trigger.is_some()) {
        refusal = Some(format!("window [{first}, {}] is no longer buffered", last + 1));
    }
    if let Some(reason) = refusal {
        job.publish_undecoded(PredictionStatus::Error, reason);
        return;
    }
    if let (Some(collector), Some(trigger)) = (collector, &job.trigger) {
        // A calibration keeps the whole segment at the stream rate (it refits on it).
        collector.offer(&scratch.stream_rate, trigger);
    }
    job.data = attachment.buffers.take();
    match pre.decimation() {
        Some(_) => pre.run_decimated(&mut scratch.window, &mut job.data),
        None => pre.run(&scratch.stream_rate, &mut scratch.resampled, &mut job.data),
    }
    // Finite samples can still scale or resample past what f32 holds: such a window would
    // decode to NaN.
    if let Some(bad) = job.data.iter().position(|v| !v.is_finite()) {
        let reason = format!("window [{first}, {}]: its model input is not finite (value {bad} after preprocessing)", last + 1);
        job.publish_undecoded(PredictionStatus::Error, reason);
        return;
    }
    job.enqueued_ns = clock::now_ns();
    m::stage("cut", job.enqueued_ns.saturating_sub(now));
    cut_windows.push(job);
}

/// Why a window reading stream samples [from, to) cannot be decoded on its filtered samples: it
/// reads (or follows within the filter's `settle` samples) non-finite samples the door replaced,
/// or a reset of the attachment's filter.
fn unsettled(first: u64, last: u64, (from, to): (u64, u64), replaced: &Spans, resets: &Spans, settle: u64) -> Option<String> {
    let (what, (a, b)) = match replaced.touching(from, to, settle) {
        Some(span) => ("samples whose non-finite values were not taken", span),
        None => ("a reset of its filter (its state had become non-finite) at samples", resets.touching(from, to, settle)?),
    };
    Some(format!(
        "window [{first}, {}] (reading [{from}, {to})) reads {what} [{a}, {b}), or follows them within its filters' settling time ({settle} samples)",
        last + 1
    ))
}

/// Copies what the window starting at stream sample `first` reads out of `filtered`: with integer
/// decimation only the samples the model keeps (into `scratch.window`), unless `whole` (a
/// calibration wants the segment); with resampling, or `whole`, the segment from `history()`
/// samples before `first` (into `scratch.stream_rate`; zeros before the stream began, as a
/// filter started from rest sees them). False when part of it is no longer buffered.
fn copy_window(
    filtered: &FrameRing,
    first: u64,
    pre: &crate::decode::input::WindowPreprocessor,
    scratch: &mut WindowScratch,
    whole: bool,
) -> bool {
    let width = filtered.width();
    if let Some(step) = pre.decimation() {
        let length = pre.reach();
        scratch.window.resize(width * length.div_ceil(step), 0.0);
        if !filtered.copy_channel_major_every(first, length, step, &mut scratch.window) {
            return false;
        }
        if !whole {
            return true;
        }
    }
    let (history, len) = (pre.history() as u64, pre.segment_len());
    scratch.stream_rate.resize(width * len, 0.0);
    let missing = history.saturating_sub(first) as usize;
    if missing == 0 {
        return filtered.copy_channel_major(first - history, len, &mut scratch.stream_rate);
    }
    // The window starts within the filter's reach of the stream's first sample.
    let held = len - missing;
    scratch.resampled.resize(width * held, 0.0);
    if !filtered.copy_channel_major(0, held, &mut scratch.resampled) {
        return false;
    }
    for ch in 0..width {
        let row = &mut scratch.stream_rate[ch * len..(ch + 1) * len];
        row[..missing].fill(0.0);
        row[missing..].copy_from_slice(&scratch.resampled[ch * held..(ch + 1) * held]);
    }
    true
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
