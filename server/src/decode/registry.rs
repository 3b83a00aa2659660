//! Every model the server knows: the cards and models loaded from the model directories at
//! start (a bad card does not stop the others), plus decoders fitted while running.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::backend::{Backend, OnnxBackend, XdawnBackend};
use super::cost::{self, CostModel};
use super::job::LoadedModel;
use super::native::{NativeDecoder, NativeKind};
use super::onnx;
use super::schedule::{ModelQueue, QueueSettings};
use super::worker;
use crate::auth::Principal;
use crate::card::{self, ModelCard};
use crate::clock::utc_stamp;
use crate::config::ModelsConfig;
use crate::id::{shown, version_order};

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
    /// Calibrated versions claimed and not yet registered: (id, version, owner).
    claims: Mutex<Vec<(String, String, String)>>,
    config: ModelsConfig,
    env: ort::environment::Environment,
}

pub enum Lookup {
    Ready(Arc<LoadedModel>),
    Failed(String),
    Missing,
}

impl ModelRegistry {
    /// Loads every card under `config.dir` and `config.calibrations_dir`, starting
    /// `workers_per_model` inference threads for each model that passes (and measuring what its
    /// runs cost per batch size). A bad card does not
    /// stop the others.
    pub fn load(config: &ModelsConfig) -> anyhow::Result<Self> {
        let env = onnx::init_runtime(&config.onnxruntime_library, &config.execution_providers)?;
        let cards = card::model_cards(config)?;
        let registry = Self { entries: RwLock::new(Vec::new()), claims: Mutex::default(), config: config.clone(), env };
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
        let workers = config.workers();
        if card.native.is_some() {
            let decoder = Arc::new(load_native(&card)?);
            return Ok(self.start_native(card, decoder));
        }
        let mut backends: Vec<Box<dyn Backend>> = Vec::new();
        let mut provider = String::new();
        for _ in 0..workers {
            let (session, used) = onnx::load(&self.env, &card, &config.execution_providers, config.intra_op_threads)?;
            provider = used;
            backends.push(Box::new(OnnxBackend::new(session, card.clone())));
        }
        let cost = cost::measure(backends[0].as_mut(), &card)?;
        let inline = if self.worth_inline(&cost) {
            let (session, _) = onnx::load(&self.env, &card, &config.execution_providers, config.intra_op_threads)?;
            Some(Box::new(OnnxBackend::new(session, card.clone())) as Box<dyn Backend>)
        } else {
            None
        };
        let queue = ModelQueue::new(self.queue_settings(&card), cost);
        Ok(worker::start(card, provider, backends, inline, queue))
    }

    /// A native decoder's threads: its decode is cheap, so it also runs inline.
    fn start_native(&self, card: ModelCard, decoder: Arc<NativeDecoder>) -> Arc<LoadedModel> {
        let backend = || Box::new(XdawnBackend(decoder.clone())) as Box<dyn Backend>;
        let backends = (0..self.config.workers()).map(|_| backend()).collect();
        let mut probe = backend();
        let cost = cost::measure(probe.as_mut(), &card).unwrap_or_else(|_| CostModel::from_measured(&card.id, card.input.max_batch, &[]));
        let inline = self.worth_inline(&cost).then_some(probe);
        let queue = ModelQueue::new(self.queue_settings(&card), cost);
        worker::start(card, "native".into(), backends, inline, queue)
    }

    /// Whether a model's single-window run costs less than a hand-off to its thread would
    /// (`models.inline_below_us`).
    fn worth_inline(&self, cost: &CostModel) -> bool {
        cost.estimate_ns(1) <= self.config.inline_below_us * 1000
    }

    fn queue_settings(&self, card: &ModelCard) -> QueueSettings {
        QueueSettings {
            capacity: self.config.queue_depth,
            max_batch: card.input.max_batch,
            max_delay_ns: self.config.max_batch_delay_us * 1000,
        }
    }

    /// Claims a new version of the calibrated model `id` for `owner`, to be registered with
    /// [`Self::register_native`]. Who may add versions to an id, and which version it gets, is
    /// decided here, atomically: an id another principal calibrated (its newest version's
    /// owner) or is calibrating right now is refused, as is the id of a model that came from
    /// elsewhere; versions are UTC stamps, made unique (a suffix -2, -3... for fits in the same
    /// millisecond).
    pub fn claim_calibrated(self: &Arc<Self>, id: &str, owner: &Principal) -> Result<Claim, ClaimError> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        check_claim(&entries, &claims, id, owner)?;
        let taken =
            |v: &str| entries.iter().any(|e| e.id_version() == (id, v)) || claims.iter().any(|(i, version, _)| i == id && version == v);
        let stamp = utc_stamp();
        let version = std::iter::once(stamp.clone())
            .chain((2..).map(|n| format!("{stamp}-{n}")))
            .find(|v| !taken(v))
            .expect("an unused suffix exists");
        claims.push((id.to_string(), version.clone(), owner.name().to_string()));
        Ok(Claim { registry: self.clone(), id: id.to_string(), version })
    }

    /// Whether `owner` may calibrate `id` now (checked again, atomically, by the claim).
    pub fn may_calibrate(&self, id: &str, owner: &Principal) -> Result<(), ClaimError> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        check_claim(&entries, &self.claims.lock().unwrap_or_else(PoisonError::into_inner), id, owner)
    }

    /// Adds a model fitted while running under its `claim` (it becomes attachable by id at once).
    pub fn register_native(&self, card: ModelCard, decoder: Arc<NativeDecoder>, claim: Claim) -> anyhow::Result<Arc<LoadedModel>> {
        anyhow::ensure!(card.id == claim.id && card.version == claim.version, "model {}: registered under another claim", card.id);
        check_native(&card, &decoder)?;
        let model = self.start_native(card, decoder);
        self.entries.write().unwrap_or_else(PoisonError::into_inner).push(ModelEntry::Ready(model.clone()));
        drop(claim);
        Ok(model)
    }

    /// Stops every model's inference threads (windows still queued are published as SHED) and
    /// joins them until `deadline`. Blocking.
    pub fn shutdown(&self, deadline: std::time::Instant) {
        let threads: Vec<_> = self
            .entries()
            .iter()
            .filter_map(|e| match e {
                ModelEntry::Ready(model) => Some(model.stop()),
                ModelEntry::Failed { .. } => None,
            })
            .flatten()
            .collect();
        let left = crate::shutdown::join_until(threads, deadline);
        if left > 0 {
            tracing::warn!(threads = left, "inference threads still running at the shutdown deadline");
        }
    }

    pub fn entries(&self) -> Vec<ModelEntry> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Loads the card at `path` (a decoder calibrated on another replica of the cluster, fetched
    /// into `calibrations_dir`) and adds it; the loader's error if it does not load.
    pub fn add_card(&self, path: &std::path::Path) -> Result<(), String> {
        match self.load_card(path) {
            entry @ ModelEntry::Ready(_) => {
                self.entries.write().unwrap_or_else(PoisonError::into_inner).push(entry);
                Ok(())
            }
            ModelEntry::Failed { error, .. } => Err(error),
        }
    }

    pub fn calibrations_dir(&self) -> &std::path::Path {
        &self.config.calibrations_dir
    }

    pub fn galleries_dir(&self) -> &std::path::Path {
        &self.config.galleries_dir
    }

    /// The newest version ([`version_order`]: numbers compare as numbers) when `version` is empty; for per-subject models, the
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
            if best.is_none_or(|b| version_order(b.id_version().1, entry_version).is_lt()) {
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
    Ok(onnx::load(env, card, providers, 1)?.1)
}

/// Reads a native decoder's fitted parameters and checks them against its card.
fn load_native(card: &ModelCard) -> anyhow::Result<NativeDecoder> {
    let params = card.native_params_path().ok_or_else(|| anyhow::anyhow!("model {}: not a native decoder", card.id))?;
    let kind = card.native.as_ref().and_then(|n| NativeKind::parse(&n.kind));
    let kind = kind.ok_or_else(|| anyhow::anyhow!("model {}: unknown native decoder kind", card.id))?;
    let error = |e: &dyn std::fmt::Display| anyhow::anyhow!("model {}: {}: {e}", card.id, params.display());
    let text = std::fs::read_to_string(&params).map_err(|e| error(&e))?;
    let decoder = NativeDecoder::from_json(kind, &text).map_err(|e| error(&e))?;
    check_native(card, &decoder)?;
    Ok(decoder)
}

/// A native decoder's parameters must fit its card's input.
fn check_native(card: &ModelCard, decoder: &NativeDecoder) -> anyhow::Result<()> {
    decoder.check().map_err(|e| anyhow::anyhow!("model {}: its fitted parameters are inconsistent: {e}", card.id))?;
    let (n_channels, n_samples) = decoder.shape();
    anyhow::ensure!(
        n_channels == card.channels.len() && n_samples == card.window_samples(),
        "model {}: card field `input.shape`: the decoder was fitted on {} channels x {} samples, the card says {} x {}",
        card.id,
        n_channels,
        n_samples,
        card.channels.len(),
        card.window_samples()
    );
    anyhow::ensure!(card.labels.len() == 2, "model {}: card field `labels`: an xDAWN decoder has two classes", card.id);
    Ok(())
}

/// Why a calibration may not add a version to a model id.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("model {} was calibrated by principal {owner:?}", shown(id))]
    NotOwner { id: String, owner: String },
    #[error("model_id {} is taken by a loaded model ({origin}); choose another", shown(id))]
    Taken { id: String, origin: String },
}

/// A version of a calibrated model claimed and not yet registered; dropping it frees it.
pub struct Claim {
    registry: Arc<ModelRegistry>,
    id: String,
    pub version: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut claims = self.registry.claims.lock().unwrap_or_else(PoisonError::into_inner);
        claims.retain(|(id, version, _)| !(id == &self.id && version == &self.version));
    }
}

/// `owner` may add a version to `id`: no model from elsewhere has that id, and the newest
/// calibrated version (or a claim in flight) is its own, or it is an admin.
fn check_claim(entries: &[ModelEntry], claims: &[(String, String, String)], id: &str, owner: &Principal) -> Result<(), ClaimError> {
    fn card(entry: &ModelEntry) -> Option<&ModelCard> {
        match entry {
            ModelEntry::Ready(model) => Some(&model.card),
            ModelEntry::Failed { card, .. } => card.as_deref(),
        }
    }
    let mut newest: Option<(String, String)> = None;
    for entry in entries.iter().filter(|e| e.id_version().0 == id) {
        let Some(card) = card(entry) else {
            return Err(ClaimError::Taken { id: id.into(), origin: "a card that failed to load".into() });
        };
        let provenance = &card.provenance;
        if provenance.data_kind != "live" {
            return Err(ClaimError::Taken { id: id.into(), origin: provenance.data_kind.clone() });
        }
        if newest.as_ref().is_none_or(|(version, _)| version_order(version, &card.version).is_lt()) {
            newest = Some((card.version.clone(), provenance.calibrated_by.clone()));
        }
    }
    let claimed = claims.iter().filter(|(i, ..)| i == id).map(|(_, _, by)| by);
    let owners = newest.iter().map(|(_, by)| by).filter(|by| !by.is_empty()).chain(claimed);
    for by in owners {
        if !owner.may_change(by) {
            return Err(ClaimError::NotOwner { id: id.into(), owner: by.clone() });
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
