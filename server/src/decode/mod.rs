//! Decoding: the model registry (cards + ONNX Runtime sessions loaded from `models/` at start)
//! and the dedicated inference threads, each fed by one bounded queue per model.

pub mod card;
pub mod model;

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use myelin_proto::v1::{self as pb, PredictionStatus};

use crate::clock;
use crate::config::ModelsConfig;
use crate::metrics as m;
use crate::publish::Hub;
use crate::window::WindowJob;
use card::{ModelCard, OutputKind, Task};

/// A model that loaded and passed its checks, with the queue of its inference threads.
pub struct LoadedModel {
    pub card: ModelCard,
    pub provider: String,
    queue: Sender<WindowJob>,
}

impl LoadedModel {
    /// Queues a window without waiting; gives it back when the queue is full (load shedding).
    pub fn submit(&self, job: WindowJob) -> Result<(), WindowJob> {
        match self.queue.try_send(job) {
            Ok(()) => {
                m::queue_depth(&self.card.id, self.queue.len());
                Ok(())
            }
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Err(job),
        }
    }
}

pub enum ModelEntry {
    Ready(Arc<LoadedModel>),
    /// The card or its ONNX file failed validation; attaching it is refused with this error.
    Failed { id: String, version: String, card: Option<Box<ModelCard>>, error: String },
}

impl ModelEntry {
    pub fn id_version(&self) -> (&str, &str) {
        match self {
            ModelEntry::Ready(model) => (&model.card.id, &model.card.version),
            ModelEntry::Failed { id, version, .. } => (id, version),
        }
    }
}

pub struct ModelRegistry {
    pub entries: Vec<ModelEntry>,
}

pub enum Lookup<'a> {
    Ready(&'a Arc<LoadedModel>),
    Failed(&'a str),
    Missing,
}

impl ModelRegistry {
    /// Loads every card under `config.dir`, starting `workers_per_model` inference threads for
    /// each model that passes. A bad card does not stop the others.
    pub fn load(config: &ModelsConfig, hub: Hub) -> anyhow::Result<Self> {
        let env = model::init_runtime(&config.onnxruntime_library)?;
        let cards = card::find_cards(&config.dir)
            .map_err(|e| anyhow::anyhow!("cannot scan model directory {}: {e}", config.dir.display()))?;
        let mut entries = Vec::new();
        for path in cards {
            let card = match ModelCard::load(&path) {
                Ok(card) => card,
                Err(error) => {
                    tracing::error!(card = %path.display(), %error, "model card rejected");
                    let stem = path.file_name().and_then(|n| n.to_str()).unwrap_or("?").trim_end_matches(".card.toml");
                    entries.push(ModelEntry::Failed { id: stem.to_string(), version: String::new(), card: None, error: error.to_string() });
                    continue;
                }
            };
            match start_model(&env, card.clone(), config, hub.clone()) {
                Ok(model) => {
                    tracing::info!(model = %model.card.id, version = %model.card.version, provider = %model.provider, data = %model.card.provenance.data_kind, "model ready");
                    entries.push(ModelEntry::Ready(model));
                }
                Err(error) => {
                    tracing::error!(card = %path.display(), %error, "model rejected");
                    entries.push(ModelEntry::Failed {
                        id: card.id.clone(),
                        version: card.version.clone(),
                        card: Some(Box::new(card)),
                        error: error.to_string(),
                    });
                }
            }
        }
        Ok(Self { entries })
    }

    /// The newest version (string order) when `version` is empty.
    pub fn find(&self, id: &str, version: &str) -> Lookup<'_> {
        let mut best: Option<&ModelEntry> = None;
        for entry in &self.entries {
            let (entry_id, entry_version) = entry.id_version();
            if entry_id != id || (!version.is_empty() && entry_version != version) {
                continue;
            }
            if best.is_none_or(|b| b.id_version().1 < entry_version) {
                best = Some(entry);
            }
        }
        match best {
            Some(ModelEntry::Ready(model)) => Lookup::Ready(model),
            Some(ModelEntry::Failed { error, .. }) => Lookup::Failed(error),
            None => Lookup::Missing,
        }
    }
}

fn start_model(
    env: &ort::environment::Environment,
    card: ModelCard,
    config: &ModelsConfig,
    hub: Hub,
) -> Result<Arc<LoadedModel>, model::ModelError> {
    let (sender, receiver) = crossbeam_channel::bounded(config.queue_depth);
    let mut sessions = Vec::new();
    let mut provider = String::new();
    for _ in 0..config.workers_per_model {
        let (session, used) = model::load(env, &card, &config.execution_providers, config.intra_op_threads)?;
        provider = used;
        sessions.push(session);
    }
    let loaded = Arc::new(LoadedModel { card, provider, queue: sender });
    for (worker, session) in sessions.into_iter().enumerate() {
        let receiver = receiver.clone();
        let hub = hub.clone();
        let name = format!("infer-{}-{worker}", loaded.card.id);
        let card = loaded.card.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || inference_loop(session, card, receiver, hub))
            .expect("spawning an inference thread");
    }
    Ok(loaded)
}

/// One inference thread: takes windows from the model's queue until the queue closes.
fn inference_loop(
    mut session: ort::session::Session,
    card: ModelCard,
    queue: Receiver<WindowJob>,
    hub: Hub,
) {
    let mut scratch = Vec::new();
    let mut input = vec![0.0f32; card.channels.len() * card.window_samples()];
    while let Ok(job) = queue.recv() {
        m::queue_depth(&card.id, queue.len());
        let attachment = job.attachment.clone();
        let decode_start = clock::now_ns();
        let budget_ns = u64::from(attachment.budget_ms) * 1_000_000;
        let mut prediction = job.prediction(PredictionStatus::Ok, String::new());
        if attachment.late_policy == pb::LatePolicy::Drop
            && decode_start.saturating_sub(job.last_sample_received_ns) > budget_ns
        {
            // Already past its budget and nobody wants late results: skip the work, count it.
            prediction.status = PredictionStatus::Late as i32;
            hub.publish(prediction, attachment.late_policy);
            continue;
        }
        attachment.preprocessor.run(&job.data, &mut scratch, &mut input);
        let outcome = model::infer(&mut session, &card, &input);
        let decode_end = clock::now_ns();
        if let Some(timing) = prediction.timing.as_mut() {
            timing.decode_start_ns = decode_start;
            timing.decode_end_ns = decode_end;
        }
        m::observe_decode(&card.id, decode_start.saturating_sub(job.enqueued_ns), decode_end - decode_start);
        match outcome {
            Ok((output, embedding)) => {
                fill_result(&mut prediction, &card, output);
                if !embedding.is_empty() {
                    prediction.embedding = embedding;
                }
            }
            Err(reason) => {
                tracing::warn!(model = %card.id, %reason, "inference failed");
                prediction.status = PredictionStatus::Error as i32;
                prediction.error_reason = format!("inference failed: {reason}");
            }
        }
        hub.publish(prediction, attachment.late_policy);
    }
}

/// Number of gallery items returned by retrieval models.
const RETRIEVAL_TOP_K: usize = 5;

fn fill_result(prediction: &mut pb::Prediction, card: &ModelCard, mut output: Vec<f32>) {
    match card.task {
        Task::Classification => {
            if card.output.kind == OutputKind::Logits {
                softmax(&mut output);
            }
            prediction.result = Some(pb::prediction::Result::Classification(pb::Classification {
                labels: card.labels.clone(),
                probabilities: output,
            }));
        }
        Task::Retrieval => {
            let mut order: Vec<usize> = (0..output.len()).collect();
            order.sort_by(|&a, &b| output[b].total_cmp(&output[a]));
            order.truncate(RETRIEVAL_TOP_K);
            prediction.result = Some(pb::prediction::Result::Retrieval(pb::Retrieval {
                ids: order.iter().map(|&i| card.labels.get(i).cloned().unwrap_or_else(|| i.to_string())).collect(),
                scores: order.iter().map(|&i| output[i]).collect(),
            }));
        }
        Task::Embedding => prediction.embedding = output,
    }
}

fn softmax(values: &mut [f32]) {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in values.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in values.iter_mut() {
        *v /= sum;
    }
}
