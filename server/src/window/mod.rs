//! Windows: what an attachment is, how windows are cut from its filtered samples (sliding, or
//! locked to markers), and the job handed to the model's inference threads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use myelin_proto::v1::{self as pb, LatePolicy, PredictionStatus};

use crate::decode::LoadedModel;
use crate::decode::gallery::Gallery;
use crate::dsp::{SosFilter, WindowPreprocessor};
use crate::session::ring::FrameRing;

/// A model bound to a session: the part shared with the inference threads.
pub struct Attachment {
    pub id: String,
    pub session_id: String,
    pub model: Arc<LoadedModel>,
    pub budget_ms: u32,
    pub late_policy: LatePolicy,
    pub policy: pb::WindowPolicy,
    pub preprocessor: WindowPreprocessor,
    pub predictions: AtomicU64,
    /// Classification: how many best labels to list in each prediction. Retrieval: how many
    /// gallery items.
    pub top_k: usize,
    /// Spatial-attention models: the sensor positions and mask fed with every window.
    pub sensors: Option<Arc<SensorInputs>>,
    /// Retrieval models: the gallery searched with each predicted embedding (through its HNSW
    /// graph when it has one, exactly otherwise).
    pub gallery: Option<Arc<Gallery>>,
    /// Publish the model's embedding with each prediction.
    pub include_embedding: bool,
}

/// The extra inputs of a spatial-attention model, fixed for an attachment: each model
/// channel's layout position ([channels x 2]) and whether the stream has it (1) or not (0).
#[derive(Debug, Clone, PartialEq)]
pub struct SensorInputs {
    pub positions: Vec<f32>,
    pub mask: Vec<f32>,
}

/// `AttachmentRuntime::channel_index` entry of a model channel the stream does not have
/// (spatial-attention models only): fed as zeros, masked out in the model.
pub const ABSENT: usize = usize::MAX;

/// One window waiting for inference.
pub struct WindowJob {
    pub attachment: Arc<Attachment>,
    /// Filtered samples at the stream rate, channel-major [model channels x window length].
    pub data: Vec<f32>,
    pub span: pb::WindowSpan,
    pub trigger: Option<pb::Marker>,
    pub sequence: u64,
    pub last_sample_received_ns: u64,
    pub enqueued_ns: u64,
}

impl WindowJob {
    /// A prediction for this window with the given status and no result yet.
    pub fn prediction(&self, status: PredictionStatus, error_reason: String) -> pb::Prediction {
        let attachment = &self.attachment;
        pb::Prediction {
            session_id: attachment.session_id.clone(),
            attachment_id: attachment.id.clone(),
            model_id: attachment.model.card.id.clone(),
            model_version: attachment.model.card.version.clone(),
            sequence: self.sequence,
            window: Some(self.span),
            trigger: self.trigger.clone(),
            result: None,
            embedding: Vec::new(),
            status: status as i32,
            error_reason,
            timing: Some(pb::Timing {
                last_sample_received_ns: self.last_sample_received_ns,
                budget_ms: attachment.budget_ms,
                ..Default::default()
            }),
            subscriber_dropped_total: 0,
        }
    }
}

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

impl Cutter {
    pub fn length(&self) -> usize {
        match self {
            Cutter::Sliding { length, .. } | Cutter::EventLocked { length, .. } => *length,
        }
    }
}

/// The attachment's state inside its session: channel selection, continuous filter, filtered
/// ring and cutter. Lives under the session lock.
pub struct AttachmentRuntime {
    pub shared: Arc<Attachment>,
    /// Stream channel index of each model channel ([`ABSENT`] for a missing one).
    pub channel_index: Vec<usize>,
    pub filter: SosFilter,
    pub ring: FrameRing,
    pub cutter: Cutter,
    /// Set while a live calibration collects this attachment's epochs.
    pub collector: Option<Collector>,
    /// Resources that live as long as the attachment (its LSL outlets).
    pub keep_alive: Option<Box<dyn std::any::Any + Send>>,
    frame: Vec<f32>,
}

/// Receives copies of an attachment's event-locked windows, labelled by marker code.
pub struct Collector {
    pub target_codes: Vec<i32>,
    pub non_target_codes: Vec<i32>,
    /// (filtered window at the stream rate, is target); bounded, never waited on.
    pub sender: tokio::sync::mpsc::Sender<(Vec<f32>, bool)>,
}

impl Collector {
    pub fn offer(&self, window: &[f32], trigger: &pb::Marker) {
        let label = if self.target_codes.contains(&trigger.code) {
            true
        } else if self.non_target_codes.contains(&trigger.code) {
            false
        } else {
            return;
        };
        let _ = self.sender.try_send((window.to_vec(), label));
    }
}

/// A window ready to go (or refused), produced under the session lock and dispatched after.
pub enum Cut {
    Ready { start: u64, trigger: Option<pb::Marker> },
    Refused { start: i64, trigger: Option<pb::Marker>, reason: String },
}

impl AttachmentRuntime {
    pub fn new(shared: Arc<Attachment>, channel_index: Vec<usize>, filter: SosFilter, ring_capacity: usize, cutter: Cutter) -> Self {
        let width = channel_index.len();
        Self {
            shared,
            channel_index,
            filter,
            ring: FrameRing::new(ring_capacity, width),
            cutter,
            collector: None,
            keep_alive: None,
            frame: vec![0.0; width],
        }
    }

    /// Filters one stream frame into the attachment's ring.
    #[inline]
    pub fn push_frame(&mut self, stream_frame: &[f32]) {
        for (dst, &src) in self.frame.iter_mut().zip(&self.channel_index) {
            *dst = if src == ABSENT { 0.0 } else { stream_frame[src] };
        }
        self.filter.process_frame(&mut self.frame);
        self.ring.push(&self.frame);
    }

    /// A marker was placed on sample `index`: queue its window if the code is wanted.
    pub fn on_marker(&mut self, index: u64, marker: &pb::Marker) -> Option<Cut> {
        if let Cutter::EventLocked { codes, start_offset, pending, max_pending, .. } = &mut self.cutter {
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
        match &mut self.cutter {
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
        match &mut self.cutter {
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

    /// Next prediction sequence number.
    pub fn next_sequence(&self) -> u64 {
        self.shared.predictions.fetch_add(1, Ordering::Relaxed)
    }
}
