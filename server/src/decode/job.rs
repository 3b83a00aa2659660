//! What reaches a model: one window of one attachment, with everything its decoding and its
//! prediction need, and the model's queue it waits in. (These types refer to each other: an
//! attachment names its model, the model's queue holds windows, a window names its attachment.)

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::{Receiver, Sender};
use myelin_proto::v1::{self as pb, LatePolicy, PredictionStatus};

use super::gallery::Gallery;
use super::input::{SensorInputs, WindowPreprocessor};
use super::schedule::{self, Deadline, FairnessCount, ModelQueue};
use crate::card::ModelCard;
use crate::publish::AttachmentRoute;

/// An attachment as its windows' decoding sees it: the model, how to turn a window into the
/// model's input, what to publish and where. Fixed for the attachment's life, except that live
/// calibration swaps in a copy with another model.
pub struct Attachment {
    pub id: String,
    pub session_id: String,
    /// The principal that made it: only it (and admins) may detach or calibrate it.
    pub owner: String,
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
    /// Where its predictions go.
    pub route: Arc<AttachmentRoute>,
    /// Window buffers, handed back after preprocessing so windows reuse them.
    pub buffers: Arc<WindowBuffers>,
    /// The session's windows between their cut and their publication.
    pub in_flight: Arc<InFlight>,
    /// Its windows per deadline slice in its model's queue (fairness between attachments).
    pub fairness: FairnessCount,
}

impl Attachment {
    /// The sequence number the next prediction will get.
    pub fn next_sequence_peek(&self) -> u64 {
        self.predictions.load(Ordering::Relaxed)
    }

    /// Next prediction sequence number.
    pub fn next_sequence(&self) -> u64 {
        self.predictions.fetch_add(1, Ordering::Relaxed)
    }

    /// The same attachment decoding with `model` (whose input is the same): same id, route,
    /// buffers and sequence numbering.
    pub fn with_model(&self, model: Arc<LoadedModel>) -> Self {
        Self {
            id: self.id.clone(),
            session_id: self.session_id.clone(),
            owner: self.owner.clone(),
            model,
            budget_ms: self.budget_ms,
            late_policy: self.late_policy,
            policy: self.policy.clone(),
            preprocessor: self.preprocessor.clone(),
            predictions: AtomicU64::new(self.predictions.load(Ordering::Relaxed)),
            top_k: self.top_k,
            sensors: self.sensors.clone(),
            gallery: self.gallery.clone(),
            include_embedding: self.include_embedding,
            route: self.route.clone(),
            buffers: self.buffers.clone(),
            in_flight: self.in_flight.clone(),
            fairness: FairnessCount::default(),
        }
    }
}

/// Counts a session's windows between their cut and their publication, so that a session that
/// ends can wait for its last predictions before it closes its recording.
#[derive(Default)]
pub struct InFlight(AtomicUsize);

/// One window counted in an [`InFlight`] until dropped.
pub struct InFlightWindow(Arc<InFlight>);

impl InFlight {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    pub fn window(self: &Arc<Self>) -> InFlightWindow {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlightWindow(self.clone())
    }
}

impl Drop for InFlightWindow {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A few model-input-sized buffers in circulation between an attachment's cutter and its model's
/// inference thread; more in flight than it keeps are allocated and freed as needed.
pub struct WindowBuffers {
    len: usize,
    give: Sender<Vec<f32>>,
    take: Receiver<Vec<f32>>,
}

/// Buffers an attachment keeps for reuse: a window is usually decoded before the next is cut.
const KEPT_BUFFERS: usize = 4;

impl WindowBuffers {
    /// Buffers of `len` values.
    pub fn new(len: usize) -> Self {
        let (give, take) = crossbeam_channel::bounded(KEPT_BUFFERS);
        Self { len, give, take }
    }

    /// A buffer of `len` values (contents unspecified: the caller overwrites them all).
    pub fn take(&self) -> Vec<f32> {
        self.take.try_recv().unwrap_or_else(|_| vec![0.0; self.len])
    }

    pub fn give_back(&self, buffer: Vec<f32>) {
        if buffer.len() == self.len {
            let _ = self.give.try_send(buffer);
        }
    }
}

/// One window waiting for inference.
pub struct WindowJob {
    pub attachment: Arc<Attachment>,
    /// The model's input for this window (filtered, cut and preprocessed: one model input in the
    /// card's layout), from `attachment.buffers`.
    pub data: Vec<f32>,
    pub span: pb::WindowSpan,
    pub trigger: Option<pb::Marker>,
    pub sequence: u64,
    pub last_sample_received_ns: u64,
    /// When it was cut and handed to its model.
    pub enqueued_ns: u64,
    /// `last_sample_received_ns` + the attachment's budget.
    pub deadline_ns: u64,
    /// Counted until its prediction is published.
    pub in_flight: InFlightWindow,
}

impl Deadline for WindowJob {
    fn deadline_ns(&self) -> u64 {
        self.deadline_ns
    }
    fn wants_late(&self) -> bool {
        self.attachment.late_policy != LatePolicy::Drop
    }
    fn fairness(&self) -> &FairnessCount {
        &self.attachment.fairness
    }
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
                enqueued_ns: self.enqueued_ns,
                deadline_ns: self.deadline_ns,
                ..Default::default()
            }),
            subscriber_dropped_total: 0,
        }
    }

    /// Publishes this window undecoded, with `status` and why.
    pub fn publish_undecoded(self, status: PredictionStatus, reason: String) {
        let prediction = self.prediction(status, reason);
        self.attachment.buffers.give_back(self.data);
        self.attachment.route.publish(prediction, self.attachment.late_policy);
        drop(self.in_flight);
    }
}

/// Decodes a window at once on the caller's thread, if the decoder is free (a model whose run
/// costs less than a hand-off to its inference thread).
pub trait InlineDecoder: Send + Sync {
    // The job comes back so that it can be queued instead; boxing it to shrink the error would
    // allocate once per window.
    #[allow(clippy::result_large_err)]
    fn try_decode(&self, job: WindowJob) -> Result<(), WindowJob>;
}

/// A model that loaded and passed its checks, with the deadline-ordered queue of its inference
/// threads.
pub struct LoadedModel {
    pub card: ModelCard,
    pub provider: String,
    pub queue: Arc<ModelQueue<WindowJob>>,
    /// For models cheaper than `models.inline_below_us`: decodes windows on the session worker
    /// when the queue is empty.
    inline: Option<Box<dyn InlineDecoder>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// `myelin_model_queue_depth` of this model, registered once.
    queue_depth: metrics::Gauge,
}

impl LoadedModel {
    pub fn new(
        card: ModelCard,
        provider: String,
        queue: Arc<ModelQueue<WindowJob>>,
        inline: Option<Box<dyn InlineDecoder>>,
        queue_depth: metrics::Gauge,
    ) -> Self {
        Self { card, provider, queue, inline, threads: Mutex::default(), queue_depth }
    }

    pub fn add_thread(&self, thread: std::thread::JoinHandle<()>) {
        self.threads.lock().unwrap_or_else(PoisonError::into_inner).push(thread);
    }

    /// Tells the inference threads to stop (windows still queued are published as SHED) and
    /// hands back their threads to join.
    pub fn stop(&self) -> Vec<std::thread::JoinHandle<()>> {
        self.queue.stop();
        std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Hands windows cut together (`jobs`, drained) to the model. A lone window with `may_inline`
    /// decodes at once on this thread when nothing waits for the model and its inline decoder is
    /// free; otherwise all are queued under one lock, so that the queue orders them by deadline
    /// before its threads take any. Never waits; a window the full queue sheds is published SHED.
    pub fn submit_all(&self, jobs: &mut Vec<WindowJob>, may_inline: bool) {
        if let (true, Some(inline), 1) = (may_inline, &self.inline, jobs.len())
            && self.queue.is_empty()
            && let Some(job) = jobs.pop()
        {
            match inline.try_decode(job) {
                Ok(()) => return,
                Err(job) => jobs.push(job),
            }
        }
        let shed = match jobs.len() {
            0 => return,
            // One window wakes one thread.
            1 => self.queue.push(jobs.pop().expect("one")).into_iter().collect(),
            _ => self.queue.push_all(jobs),
        };
        for window in shed {
            window.publish_undecoded(PredictionStatus::Shed, schedule::QUEUE_FULL.into());
        }
        self.queue_depth.set(self.queue.len() as f64);
    }
}

/// When a window must be published by: its last sample's receipt plus its budget.
pub fn deadline_of(last_sample_received_ns: u64, budget_ms: u32) -> u64 {
    last_sample_received_ns.saturating_add(u64::from(budget_ms) * 1_000_000)
}
