//! An attachment inside its session's worker: which stream channels feed its model, its
//! continuous filter, the ring of filtered samples its windows are cut from, its cutter, and a
//! live calibration's collector while one runs. Owned by the worker; nothing else touches it.

use std::sync::Arc;

use crate::budget::Reservation;
use crate::decode::{Attachment, WindowJob};
use crate::dsp::robust::RobustFit;
use crate::dsp::sos::SosFilter;
use crate::ring::FrameRing;
use crate::window::collector::Collector;
use crate::window::dispatch::{CutFrom, StreamView, WindowScratch, dispatch};
use crate::window::spans::Spans;
use crate::window::{Cut, Cutter};

/// `AttachmentState::channel_index` entry of a model channel the stream does not have
/// (spatial-attention models only): fed as zeros, masked out in the model.
pub const ABSENT: usize = usize::MAX;

pub struct AttachmentState {
    pub shared: Arc<Attachment>,
    /// Stream channel index of each model channel ([`ABSENT`] for a missing one).
    pub channel_index: Vec<usize>,
    pub filter: SosFilter,
    /// Where `filter` was reset because its state had become non-finite, and how many samples it
    /// takes to settle after a disturbance (at the stream rate).
    resets: Spans,
    settle: u64,
    /// `myelin_filter_resets_total` of its model, registered once.
    reset_counter: metrics::Counter,
    pub ring: FrameRing,
    pub cutter: Cutter,
    /// Set while a live calibration collects this attachment's epochs.
    pub collector: Option<Collector>,
    /// Resources that live as long as the attachment (its LSL outlets).
    pub keep_alive: Option<Box<dyn std::any::Any + Send>>,
    /// Session-robust scaling: its first frames, until they are in.
    robust_fit: Option<RobustFit>,
    /// The session's memory its ring (and robust fit) takes.
    _memory: Reservation,
    frame: Vec<f32>,
    scratch: WindowScratch,
}

impl AttachmentState {
    /// `memory`: the reservation of [`AttachmentState::ring_bytes`] for the ring.
    /// `rate`: the stream's.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shared: Arc<Attachment>,
        channel_index: Vec<usize>,
        filter: SosFilter,
        rate: f64,
        ring_capacity: usize,
        cutter: Cutter,
        robust_fit: Option<RobustFit>,
        memory: Reservation,
    ) -> Self {
        let width = channel_index.len();
        let reset_counter = metrics::counter!(crate::metrics::FILTER_RESETS, "model" => shared.model.card.id.clone());
        Self {
            shared,
            channel_index,
            settle: filter.settling_samples(rate),
            resets: Spans::default(),
            reset_counter,
            filter,
            ring: FrameRing::new(ring_capacity, width),
            cutter,
            collector: None,
            keep_alive: None,
            robust_fit,
            _memory: memory,
            frame: vec![0.0; width],
            scratch: WindowScratch::default(),
        }
    }

    /// Cuts the window `cut` into `cut_windows` (or publishes why it cannot be decoded).
    pub fn dispatch(&mut self, cut: Cut, stream: &StreamView<'_>, cut_windows: &mut Vec<WindowJob>) {
        let from = CutFrom {
            attachment: &self.shared,
            filtered: &self.ring,
            resets: &self.resets,
            settle: self.settle,
            collector: self.collector.as_ref(),
        };
        dispatch(from, &mut self.scratch, cut, stream, cut_windows);
    }

    /// Bytes the ring of an attachment of `width` model channels takes.
    pub fn ring_bytes(ring_capacity: usize, width: usize) -> u64 {
        ring_capacity as u64 * width as u64 * 4
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Filters one stream frame into the attachment's ring.
    #[inline]
    pub fn push_frame(&mut self, stream_frame: &[f32]) {
        for (dst, &src) in self.frame.iter_mut().zip(&self.channel_index) {
            *dst = if src == ABSENT { 0.0 } else { stream_frame[src] };
        }
        if !self.filter.process_frame(&mut self.frame) {
            self.filter_reset();
        }
        self.ring.push(&self.frame);
        if let Some(stats) = self.robust_fit.as_mut().and_then(|fit| fit.push(&self.frame)) {
            self.shared.preprocessor.set_session_stats(stats);
            self.robust_fit = None;
        }
    }

    /// The filter was reset at the sample about to be pushed: windows reading it, or within the
    /// settling time after it, are refused; spans that no window can reach any more are let go.
    #[cold]
    fn filter_reset(&mut self) {
        let index = self.ring.total();
        self.reset_counter.increment(1);
        // Said once per run of resets (samples near f32::MAX can reset it at every sample).
        if self.resets.touching(index, index + 1, self.settle).is_none() {
            tracing::warn!(attachment = %self.shared.id, sample = index, settle = self.settle, "filter state became non-finite: reset; windows within its settling time are not decoded");
        }
        self.resets.add(index, index + 1);
        self.resets.forget_before(self.ring.oldest().saturating_sub(self.settle));
    }

    /// Primes the filter and ring with what the session has buffered, so that windows can use
    /// recent history and the filter has settled; the ring then stays index-aligned with the
    /// session's. The session's `gaps` are fed as zeros, as they were live. Windows are cut from
    /// samples that arrive after this.
    pub fn prime(&mut self, raw: &FrameRing, gaps: &std::collections::VecDeque<(u64, u64)>, zeros: &[f32]) {
        let (oldest, total) = (raw.oldest(), raw.total());
        self.ring.advance(oldest);
        let mut gaps = gaps.iter().peekable();
        for index in oldest..total {
            while gaps.peek().is_some_and(|&&(_, end)| end <= index) {
                gaps.next();
            }
            let in_gap = gaps.peek().is_some_and(|&&(start, _)| start <= index);
            self.push_frame(if in_gap { zeros } else { raw.frame(index) });
        }
        self.cutter.start_at(total);
    }

    /// A gap in the stream: the ring skips its `gap` samples; the filter sees `settle` zeros.
    pub fn skip_gap(&mut self, gap: u64, settle: u64, zeros: &[f32]) {
        for _ in 0..settle {
            for (dst, &src) in self.frame.iter_mut().zip(&self.channel_index) {
                *dst = if src == ABSENT { 0.0 } else { zeros[src] };
            }
            // Zeros drive no finite state to infinity; a state that already was is reset below.
            if !self.filter.process_frame(&mut self.frame) {
                self.filter_reset();
            }
        }
        self.ring.advance(gap);
    }

    /// Points the attachment at another model with the same input: the next window goes to the
    /// new model; windows already queued finish on the old one. Returns the old model's id.
    pub fn swap_model(&mut self, model: Arc<crate::decode::LoadedModel>) -> String {
        let previous = self.shared.model.card.id.clone();
        self.shared = Arc::new(self.shared.with_model(model));
        tracing::info!(attachment = %self.shared.id, from = %previous, to = %self.shared.model.card.id, "model swapped");
        previous
    }
}
