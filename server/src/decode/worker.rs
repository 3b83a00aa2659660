//! A model's inference threads and its inline decoder: each owns one backend, takes batches of
//! windows from the model's deadline-ordered queue (or, inline, one window on the session's own
//! thread), turns them into the model's input, runs them together and publishes each window's
//! prediction on its attachment route.

use std::sync::{Arc, Mutex};

use myelin_proto::v1::{self as pb, PredictionStatus};

use super::backend::Backend;
use super::job::{InlineDecoder, LoadedModel, WindowJob};
use super::onnx::Outputs;
use super::result::{fill_result, search_gallery};
use super::schedule::{DEADLINE_UNREACHABLE, Deadline, ModelQueue, Next};
use crate::card::{ModelCard, OutputKind};
use crate::clock;
use crate::metrics::{self as m, ModelMetrics};

/// Starts one inference thread per backend on `queue`, plus the inline decoder when given one.
pub fn start(
    card: ModelCard,
    provider: String,
    backends: Vec<Box<dyn Backend>>,
    inline: Option<Box<dyn Backend>>,
    queue: ModelQueue<WindowJob>,
) -> Arc<LoadedModel> {
    let queue = Arc::new(queue);
    let metrics = ModelMetrics::new(&card.id);
    m::register_model_counters(&card.id, &[super::schedule::DEADLINE_UNREACHABLE, super::schedule::QUEUE_FULL, super::schedule::SHUTDOWN]);
    let inline = inline.map(|backend| {
        let decoder = Decoder::new(&card, 1, metrics.clone());
        Box::new(Inline { state: Mutex::new((backend, decoder)), queue: queue.clone() }) as Box<dyn InlineDecoder>
    });
    let loaded = Arc::new(LoadedModel::new(card, provider, queue.clone(), inline, metrics.queue_depth.clone()));
    for (worker, backend) in backends.into_iter().enumerate() {
        let queue = queue.clone();
        let decoder = Decoder::new(&loaded.card, queue.max_batch(), metrics.clone());
        let thread = std::thread::Builder::new()
            .name(format!("infer-{}-{worker}", loaded.card.id))
            .spawn(move || inference_loop(backend, decoder, &queue))
            .expect("spawning an inference thread");
        loaded.add_thread(thread);
    }
    loaded
}

/// One inference thread: decodes batches from the model's queue until it stops (shutdown: the
/// windows still queued are published as SHED "shutdown").
fn inference_loop(mut backend: Box<dyn Backend>, mut decoder: Decoder, queue: &ModelQueue<WindowJob>) {
    let mut batch = Vec::with_capacity(queue.max_batch());
    let mut shed = Vec::new();
    loop {
        let next = queue.next_batch(&mut batch, &mut shed);
        for (job, reason) in shed.drain(..) {
            job.publish_undecoded(PredictionStatus::Shed, reason.into());
        }
        match next {
            Next::Stopped => return,
            Next::Nothing => {}
            Next::Batch { formed_from_ns } => {
                decoder.metrics.queue_depth.set(queue.len() as f64);
                decoder.run(backend.as_mut(), &queue.cost, &mut batch, formed_from_ns);
            }
        }
    }
}

/// A backend that decodes on the caller's thread when free.
struct Inline {
    state: Mutex<(Box<dyn Backend>, Decoder)>,
    queue: Arc<ModelQueue<WindowJob>>,
}

impl InlineDecoder for Inline {
    fn try_decode(&self, job: WindowJob) -> Result<(), WindowJob> {
        let Ok(mut state) = self.state.try_lock() else { return Err(job) };
        let (backend, decoder) = &mut *state;
        let now = clock::now_ns();
        if !job.wants_late() && !self.queue.reachable(&job, now) {
            job.publish_undecoded(PredictionStatus::Shed, DEADLINE_UNREACHABLE.into());
            return Ok(());
        }
        let mut batch = vec![job];
        decoder.run(backend.as_mut(), &self.queue.cost, &mut batch, now);
        Ok(())
    }
}

/// What decoding a batch needs beside the backend: the model's card, buffers reused from batch
/// to batch, and the model's metric handles.
struct Decoder {
    card: ModelCard,
    per_window: usize,
    input: Vec<f32>,
    gallery_scores: Vec<f32>,
    metrics: ModelMetrics,
}

impl Decoder {
    fn new(card: &ModelCard, max_batch: usize, metrics: ModelMetrics) -> Self {
        let per_window = card.channels.len() * card.window_samples();
        Self { card: card.clone(), per_window, input: vec![0.0; per_window * max_batch], gallery_scores: Vec::new(), metrics }
    }

    /// Decodes `batch` (drained) in one run of the model and publishes every window's prediction.
    fn run(&mut self, backend: &mut dyn Backend, cost: &super::cost::CostModel, batch: &mut Vec<WindowJob>, formed_from_ns: u64) {
        let n = batch.len();
        let decode_start = clock::now_ns();
        let sensors: Vec<_> = batch.iter().map(|job| job.attachment.sensors.as_deref()).collect();
        // Windows arrive preprocessed (the model's input); a batch of one runs from its own
        // buffer, a larger one is gathered into one tensor.
        let outcome = if n == 1 {
            backend.infer(&batch[0].data, 1, &sensors)
        } else {
            if self.input.len() < n * self.per_window {
                self.input.resize(n * self.per_window, 0.0);
            }
            for (job, input) in batch.iter().zip(self.input.chunks_exact_mut(self.per_window)) {
                input.copy_from_slice(&job.data);
            }
            backend.infer(&self.input[..n * self.per_window], n, &sensors)
        };
        drop(sensors);
        for job in batch.iter_mut() {
            job.attachment.buffers.give_back(std::mem::take(&mut job.data));
        }
        let decode_end = clock::now_ns();
        cost.observe(n, decode_end - decode_start);
        self.metrics.observe_batch(n, formed_from_ns, decode_start, decode_end);
        let mut outcome = outcome.and_then(|outputs| split_rows(outputs, n));
        for (row, job) in batch.drain(..).enumerate() {
            self.metrics.queue_wait.record(m::seconds(formed_from_ns.saturating_sub(job.enqueued_ns)));
            let mut prediction = job.prediction(PredictionStatus::Ok, String::new());
            if let Some(timing) = prediction.timing.as_mut() {
                timing.decode_start_ns = decode_start;
                timing.decode_end_ns = decode_end;
                timing.batch_size = n as u32;
            }
            let WindowJob { attachment, in_flight, .. } = job;
            match &mut outcome {
                Ok((main, embedding)) => {
                    let output = std::mem::take(&mut main[row]);
                    let embedding = embedding.get_mut(row).map(std::mem::take).unwrap_or_default();
                    if let Err(reason) = self.fill(&mut prediction, &attachment, output, embedding) {
                        prediction.status = PredictionStatus::Error as i32;
                        prediction.error_reason = reason;
                    }
                }
                Err(reason) => {
                    tracing::warn!(model = %self.card.id, %reason, "inference failed");
                    prediction.status = PredictionStatus::Error as i32;
                    prediction.error_reason = format!("inference failed: {reason}");
                }
            }
            attachment.route.publish(prediction, attachment.late_policy);
            drop(in_flight);
        }
    }

    /// One window's result: classification, gallery search, or the embedding itself.
    fn fill(
        &mut self,
        prediction: &mut pb::Prediction,
        attachment: &super::job::Attachment,
        output: Vec<f32>,
        embedding: Vec<f32>,
    ) -> Result<(), String> {
        // Whatever the model computed, a prediction carries finite numbers or is not OK.
        if !output.iter().chain(&embedding).all(|v| v.is_finite()) {
            metrics::counter!(m::NON_FINITE_OUTPUTS, "model" => self.card.id.clone()).increment(1);
            return Err(NON_FINITE_OUTPUT.into());
        }
        match (&attachment.gallery, self.card.output.kind) {
            (Some(gallery), OutputKind::Embedding) if output.len() != gallery.dim => {
                return Err(format!("embedding of {} values for a gallery of dimension {}", output.len(), gallery.dim));
            }
            (Some(gallery), OutputKind::Embedding) => {
                let retrieval = search_gallery(gallery, &output, attachment.top_k, &mut self.gallery_scores);
                prediction.result = Some(pb::prediction::Result::Retrieval(retrieval));
                if attachment.include_embedding {
                    prediction.embedding = output;
                }
            }
            _ => fill_result(prediction, &self.card, output, attachment.top_k),
        }
        if !embedding.is_empty() {
            prediction.embedding = embedding;
        }
        // Finite outputs can still overflow on the way (a softmax of huge logits).
        if !prediction_is_finite(prediction) {
            metrics::counter!(m::NON_FINITE_OUTPUTS, "model" => self.card.id.clone()).increment(1);
            prediction.result = None;
            prediction.embedding.clear();
            return Err(NON_FINITE_OUTPUT.into());
        }
        Ok(())
    }
}

/// The error reason of a window whose model output was not finite.
pub const NON_FINITE_OUTPUT: &str = "non-finite output";

/// Every number the prediction carries is finite.
fn prediction_is_finite(prediction: &pb::Prediction) -> bool {
    use pb::prediction::Result as R;
    let result = match &prediction.result {
        Some(R::Classification(c)) => c.probabilities.iter().chain(&c.top_probabilities).all(|v| v.is_finite()),
        Some(R::Retrieval(r)) => r.scores.iter().all(|v| v.is_finite()),
        None => true,
    };
    result && prediction.embedding.iter().all(|v| v.is_finite())
}

/// Each window's main output and embedding (empty when the model has none).
type Rows = (Vec<Vec<f32>>, Vec<Vec<f32>>);

/// A batch's outputs, split into one row per window.
fn split_rows(outputs: Outputs, n: usize) -> Result<Rows, String> {
    let rows = |values: &[f32], what: &str| -> Result<Vec<Vec<f32>>, String> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        if !values.len().is_multiple_of(n) {
            return Err(format!("{what} of {} values does not split into {n} windows", values.len()));
        }
        Ok(values.chunks_exact(values.len() / n).map(<[f32]>::to_vec).collect())
    };
    Ok((rows(&outputs.main, "output")?, rows(&outputs.embedding, "embedding")?))
}
