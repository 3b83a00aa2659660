//! Decoding: the model registry (cards + ONNX Runtime sessions loaded from `models/` at start)
//! and the dedicated inference threads, each fed by one bounded queue per model.

pub mod card;
pub mod erp;
pub mod gallery;
pub mod model;

use std::sync::{Arc, PoisonError, RwLock};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use myelin_proto::v1::{self as pb, PredictionStatus};

use crate::clock;
use crate::config::ModelsConfig;
use crate::metrics as m;
use crate::publish::Hub;
use crate::window::{SensorInputs, WindowJob};
use card::{ModelCard, OutputKind, Task};

/// Something that turns one preprocessed window into outputs: an ONNX Runtime session, or a
/// decoder native to the server. Each inference thread owns one.
pub trait Backend: Send + 'static {
    /// Returns the main output and the (possibly empty) embedding. `sensors`: the positions and
    /// mask of spatial-attention models (their card's defaults when `None`).
    fn infer(&mut self, input: &[f32], sensors: Option<&SensorInputs>) -> Result<(Vec<f32>, Vec<f32>), String>;
}

struct OnnxBackend {
    session: ort::session::Session,
    card: ModelCard,
}

impl Backend for OnnxBackend {
    fn infer(&mut self, input: &[f32], sensors: Option<&SensorInputs>) -> Result<(Vec<f32>, Vec<f32>), String> {
        model::infer(&mut self.session, &self.card, input, sensors)
    }
}

/// The native xDAWN + LDA decoder: [p(non-target), p(target)].
pub struct XdawnBackend(pub Arc<erp::XdawnLda>);

impl Backend for XdawnBackend {
    fn infer(&mut self, input: &[f32], _sensors: Option<&SensorInputs>) -> Result<(Vec<f32>, Vec<f32>), String> {
        let p = self.0.predict(input) as f32;
        Ok((vec![1.0 - p, p], Vec::new()))
    }
}

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

    /// Starts one inference thread per backend, all fed by one bounded queue.
    pub fn start(card: ModelCard, provider: String, backends: Vec<Box<dyn Backend>>, queue_depth: usize, hub: Hub) -> Arc<Self> {
        let (sender, receiver) = crossbeam_channel::bounded(queue_depth);
        let loaded = Arc::new(LoadedModel { card, provider, queue: sender });
        for (worker, backend) in backends.into_iter().enumerate() {
            let receiver = receiver.clone();
            let hub = hub.clone();
            let card = loaded.card.clone();
            std::thread::Builder::new()
                .name(format!("infer-{}-{worker}", card.id))
                .spawn(move || inference_loop(backend, card, receiver, hub))
                .expect("spawning an inference thread");
        }
        loaded
    }
}

#[derive(Clone)]
pub enum ModelEntry {
    Ready(Arc<LoadedModel>),
    /// The card or its ONNX file failed validation; attaching it is refused with this error.
    Failed {
        id: String,
        version: String,
        card: Option<Box<ModelCard>>,
        error: String,
    },
}

impl ModelEntry {
    pub fn id_version(&self) -> (&str, &str) {
        match self {
            ModelEntry::Ready(model) => (&model.card.id, &model.card.version),
            ModelEntry::Failed { id, version, .. } => (id, version),
        }
    }
}

/// Every model the server knows: loaded from the model directories at start, plus decoders
/// fitted while running (live calibration).
pub struct ModelRegistry {
    entries: RwLock<Vec<ModelEntry>>,
    config: ModelsConfig,
    hub: Hub,
    env: ort::environment::Environment,
}

pub enum Lookup {
    Ready(Arc<LoadedModel>),
    Failed(String),
    Missing,
}

impl ModelRegistry {
    /// Loads every card under `config.dir` and `config.calibrations_dir`, starting
    /// `workers_per_model` inference threads for each model that passes. A bad card does not
    /// stop the others.
    pub fn load(config: &ModelsConfig, hub: Hub) -> anyhow::Result<Self> {
        let env = model::init_runtime(&config.onnxruntime_library)?;
        let cards = card::model_cards(config)?;
        let registry = Self { entries: RwLock::new(Vec::new()), config: config.clone(), hub, env };
        for path in cards {
            let entry = registry.load_card(&path);
            registry.entries.write().unwrap_or_else(PoisonError::into_inner).push(entry);
        }
        Ok(registry)
    }

    fn load_card(&self, path: &std::path::Path) -> ModelEntry {
        let card = match ModelCard::load(path) {
            Ok(card) => card,
            Err(error) => {
                tracing::error!(card = %path.display(), %error, "model card rejected");
                let stem = path.file_name().and_then(|n| n.to_str()).unwrap_or("?").trim_end_matches(".card.toml");
                return ModelEntry::Failed { id: stem.to_string(), version: String::new(), card: None, error: error.to_string() };
            }
        };
        match self.start_model(card.clone()) {
            Ok(model) => {
                tracing::info!(model = %model.card.id, version = %model.card.version, provider = %model.provider, data = %model.card.provenance.data_kind, "model ready");
                ModelEntry::Ready(model)
            }
            Err(error) => {
                tracing::error!(card = %path.display(), %error, "model rejected");
                ModelEntry::Failed {
                    id: card.id.clone(),
                    version: card.version.clone(),
                    card: Some(Box::new(card)),
                    error: error.to_string(),
                }
            }
        }
    }

    fn start_model(&self, card: ModelCard) -> anyhow::Result<Arc<LoadedModel>> {
        let config = &self.config;
        let mut backends: Vec<Box<dyn Backend>> = Vec::new();
        let mut provider = String::from("native");
        if card.native.is_some() {
            let decoder = Arc::new(load_native(&card)?);
            for _ in 0..config.workers_per_model {
                backends.push(Box::new(XdawnBackend(decoder.clone())));
            }
        } else {
            for _ in 0..config.workers_per_model {
                let (session, used) = model::load(&self.env, &card, &config.execution_providers, config.intra_op_threads)?;
                provider = used;
                backends.push(Box::new(OnnxBackend { session, card: card.clone() }));
            }
        }
        Ok(LoadedModel::start(card, provider, backends, config.queue_depth, self.hub.clone()))
    }

    /// Adds a model fitted while running (it becomes attachable by id at once).
    pub fn register_native(&self, card: ModelCard, decoder: Arc<erp::XdawnLda>) -> anyhow::Result<Arc<LoadedModel>> {
        check_native(&card, &decoder)?;
        let backends: Vec<Box<dyn Backend>> =
            (0..self.config.workers_per_model).map(|_| Box::new(XdawnBackend(decoder.clone())) as Box<dyn Backend>).collect();
        let model = LoadedModel::start(card, "native".into(), backends, self.config.queue_depth, self.hub.clone());
        self.entries.write().unwrap_or_else(PoisonError::into_inner).push(ModelEntry::Ready(model.clone()));
        Ok(model)
    }

    pub fn entries(&self) -> Vec<ModelEntry> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn calibrations_dir(&self) -> &std::path::Path {
        &self.config.calibrations_dir
    }

    pub fn galleries_dir(&self) -> &std::path::Path {
        &self.config.galleries_dir
    }

    /// The newest version (string order) when `version` is empty; for per-subject models, the
    /// one of `subject` (which must be given when several subjects exist).
    pub fn find(&self, id: &str, version: &str, subject: &str) -> Lookup {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let subject_of = |e: &ModelEntry| match e {
            ModelEntry::Ready(m) => m.card.subject.clone().unwrap_or_default(),
            ModelEntry::Failed { card, .. } => card.as_ref().and_then(|c| c.subject.clone()).unwrap_or_default(),
        };
        let mut subjects: Vec<String> =
            entries.iter().filter(|e| e.id_version().0 == id).map(subject_of).filter(|s| !s.is_empty()).collect();
        subjects.sort();
        subjects.dedup();
        if subject.is_empty() && subjects.len() > 1 {
            return Lookup::Failed(format!("model {id:?} exists for several subjects {subjects:?}: choose one with `subject`"));
        }
        let mut best: Option<&ModelEntry> = None;
        for entry in entries.iter() {
            let (entry_id, entry_version) = entry.id_version();
            if entry_id != id || (!version.is_empty() && entry_version != version) {
                continue;
            }
            if !subject.is_empty() && subject_of(entry) != subject {
                continue;
            }
            if best.is_none_or(|b| b.id_version().1 < entry_version) {
                best = Some(entry);
            }
        }
        match best {
            Some(ModelEntry::Ready(model)) => Lookup::Ready(model.clone()),
            Some(ModelEntry::Failed { error, .. }) => Lookup::Failed(error.clone()),
            None => Lookup::Missing,
        }
    }
}

/// Validates a card and its model file without serving (`myelin models check`): loads and warms
/// up an ONNX graph, or reads a native decoder's parameters. Returns the provider it would use.
pub fn check_offline(env: &ort::environment::Environment, card: &ModelCard, providers: &[String]) -> anyhow::Result<String> {
    if card.native.is_some() {
        load_native(card)?;
        return Ok("native".into());
    }
    Ok(model::load(env, card, providers, 1)?.1)
}

/// Reads a native decoder's fitted parameters and checks them against its card.
fn load_native(card: &ModelCard) -> anyhow::Result<erp::XdawnLda> {
    let params = card.native_params_path().ok_or_else(|| anyhow::anyhow!("model {}: not a native decoder", card.id))?;
    let error = |e: &dyn std::fmt::Display| anyhow::anyhow!("model {}: {}: {e}", card.id, params.display());
    let text = std::fs::read_to_string(&params).map_err(|e| error(&e))?;
    let decoder: erp::XdawnLda = serde_json::from_str(&text).map_err(|e| error(&e))?;
    check_native(card, &decoder)?;
    Ok(decoder)
}

/// A native decoder's parameters must fit its card's input.
fn check_native(card: &ModelCard, decoder: &erp::XdawnLda) -> anyhow::Result<()> {
    anyhow::ensure!(
        decoder.n_channels == card.channels.len() && decoder.n_samples == card.window_samples(),
        "model {}: card field `input.shape`: the decoder was fitted on {} channels x {} samples, the card says {} x {}",
        card.id,
        decoder.n_channels,
        decoder.n_samples,
        card.channels.len(),
        card.window_samples()
    );
    anyhow::ensure!(card.labels.len() == 2, "model {}: card field `labels`: an xDAWN decoder has two classes", card.id);
    Ok(())
}

/// One inference thread: takes windows from the model's queue until the queue closes.
fn inference_loop(mut backend: Box<dyn Backend>, card: ModelCard, queue: Receiver<WindowJob>, hub: Hub) {
    let mut scratch = Vec::new();
    let mut gallery_scores = Vec::new();
    let mut input = vec![0.0f32; card.channels.len() * card.window_samples()];
    while let Ok(job) = queue.recv() {
        m::queue_depth(&card.id, queue.len());
        let attachment = job.attachment.clone();
        let decode_start = clock::now_ns();
        let budget_ns = u64::from(attachment.budget_ms) * 1_000_000;
        let mut prediction = job.prediction(PredictionStatus::Ok, String::new());
        if attachment.late_policy == pb::LatePolicy::Drop && decode_start.saturating_sub(job.last_sample_received_ns) > budget_ns {
            // Already past its budget and nobody wants late results: skip the work, count it.
            prediction.status = PredictionStatus::Late as i32;
            hub.publish(prediction, attachment.late_policy);
            continue;
        }
        attachment.preprocessor.run(&job.data, &mut scratch, &mut input);
        let outcome = backend.infer(&input, attachment.sensors.as_deref());
        let outcome = outcome.and_then(|(output, embedding)| {
            let retrieval = match (&attachment.gallery, card.output.kind) {
                (Some(gallery), OutputKind::Embedding) if output.len() != gallery.dim => {
                    return Err(format!("embedding of {} values for a gallery of dimension {}", output.len(), gallery.dim));
                }
                (Some(gallery), OutputKind::Embedding) => Some(search_gallery(gallery, &output, attachment.top_k, &mut gallery_scores)),
                _ => None,
            };
            Ok((output, embedding, retrieval))
        });
        let decode_end = clock::now_ns();
        if let Some(timing) = prediction.timing.as_mut() {
            timing.decode_start_ns = decode_start;
            timing.decode_end_ns = decode_end;
        }
        m::observe_decode(&card.id, decode_start.saturating_sub(job.enqueued_ns), decode_end - decode_start);
        match outcome {
            Ok((output, embedding, Some(retrieval))) => {
                prediction.result = Some(pb::prediction::Result::Retrieval(retrieval));
                if attachment.include_embedding {
                    prediction.embedding = output;
                }
                if !embedding.is_empty() {
                    prediction.embedding = embedding;
                }
            }
            Ok((output, embedding, None)) => {
                fill_result(&mut prediction, &card, output, attachment.top_k);
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

/// Searches an attachment's gallery with a predicted embedding.
fn search_gallery(gallery: &gallery::Gallery, embedding: &[f32], top_k: usize, scores: &mut Vec<f32>) -> pb::Retrieval {
    let k = crate::session::retrieval_top_k(top_k);
    let started = clock::now_ns();
    let found = gallery.search(embedding, k, scores);
    let search_ns = clock::now_ns().saturating_sub(started);
    m::observe_gallery_search(search_ns);
    pb::Retrieval {
        ids: found.iter().map(|&(i, _)| gallery.ids[i].clone()).collect(),
        scores: found.iter().map(|&(_, s)| s).collect(),
        search_ns,
    }
}

fn fill_result(prediction: &mut pb::Prediction, card: &ModelCard, mut output: Vec<f32>, top_k: usize) {
    match card.task {
        Task::Classification => {
            if card.output.kind == OutputKind::Logits {
                softmax(&mut output);
            }
            let mut order: Vec<usize> = (0..output.len()).collect();
            order.sort_by(|&a, &b| output[b].total_cmp(&output[a]));
            order.truncate(top_k);
            prediction.result = Some(pb::prediction::Result::Classification(pb::Classification {
                labels: card.labels.clone(),
                top_labels: order.iter().map(|&i| card.labels.get(i).cloned().unwrap_or_default()).collect(),
                top_probabilities: order.iter().map(|&i| output[i]).collect(),
                probabilities: output,
            }));
        }
        Task::Retrieval if card.output.kind == OutputKind::Embedding => {
            // No gallery attached: the embedding is the result.
            prediction.embedding = output;
        }
        Task::Retrieval => {
            let mut order: Vec<usize> = (0..output.len()).collect();
            order.sort_by(|&a, &b| output[b].total_cmp(&output[a]));
            order.truncate(crate::session::retrieval_top_k(top_k));
            prediction.result = Some(pb::prediction::Result::Retrieval(pb::Retrieval {
                ids: order.iter().map(|&i| card.labels.get(i).cloned().unwrap_or_else(|| i.to_string())).collect(),
                scores: order.iter().map(|&i| output[i]).collect(),
                search_ns: 0,
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
