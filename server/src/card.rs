//! Model cards: one TOML file per model (`<name>.card.toml`) that says everything the server
//! needs to feed the ONNX graph exactly as it was trained, and where the model came from.
//! See `models/README.md` for the format and `models/fixtures/` for examples.

mod preprocessing;
mod provenance;
pub use preprocessing::{FilterDesign, FilterSpec, MAX_FILTER_ORDER, Preprocessing, Reference, Resample, Scaling};
pub use provenance::Provenance;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::id::{ID_RULE, is_valid_id};

/// The `native.kind`s the server can run (`decode::native` decodes them; cards are read before
/// and without the decoders, so the names are listed here).
pub const NATIVE_KINDS: [&str; 2] = ["xdawn_lda", "xdawn_riemann"];

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("cannot read model card {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("model card {path} is not valid TOML for a card: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("model card {path}: field `{field}`: {message}")]
    Field { path: PathBuf, field: &'static str, message: String },
}

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Classification,
    Retrieval,
    Embedding,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Retrieval => "retrieval",
            Task::Embedding => "embedding",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CardModality {
    Eeg,
    Meg,
    Seeg,
    Ecog,
}

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// [batch, channels, time]
    ChannelsTime,
    /// [batch, time, channels]
    TimeChannels,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    /// -1 marks a dynamic dimension (only the batch dimension may be dynamic).
    pub shape: Vec<i64>,
    pub layout: Layout,
    /// Most windows run through the graph at once (dynamic batching across sessions); above 1
    /// only for graphs exported with a dynamic batch dimension.
    #[serde(default = "one")]
    pub max_batch: usize,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Already probabilities (softmax or sigmoid in the graph).
    #[default]
    Probabilities,
    /// Raw scores; the server applies a softmax.
    Logits,
    /// An embedding (retrieval models): the server searches the attachment's gallery with it.
    Embedding,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub shape: Vec<i64>,
    #[serde(default)]
    pub kind: OutputKind,
    /// Optional second output carrying an embedding, published in `Prediction.embedding`.
    pub embedding: Option<String>,
}

/// Spatial-attention models (the MEG brain module): besides the window, the graph takes each
/// model channel's 2-D layout position [batch, channels, 2] and a sensor mask [batch, channels]
/// (1 = present, 0 = absent), so one model serves any subset of its montage.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SensorsSpec {
    pub positions_input: String,
    pub mask_input: String,
    /// Model channels may be absent from the stream (fed as zeros with mask 0).
    #[serde(default)]
    pub optional: bool,
    /// With `optional`: the fewest model channels a stream must have.
    #[serde(default)]
    pub min_present: usize,
    /// Default layout position of each model channel, used when the stream header has none.
    pub positions: Vec<[f64; 2]>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Window start and end relative to the event (seconds); length defines the model's T.
    pub tmin_s: f64,
    pub tmax_s: f64,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NativeSpec {
    /// "xdawn_lda": xDAWN spatial filters + shrinkage LDA (decode::erp); "xdawn_riemann": xDAWN
    /// covariances + Riemannian tangent space + logistic regression (decode::riemann).
    pub kind: String,
    /// Fitted parameters (JSON), relative to the card.
    pub params: PathBuf,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub id: String,
    pub version: String,
    /// Per-subject models (one export per subject, e.g. Du-IN): the subject it serves.
    pub subject: Option<String>,
    pub task: Task,
    pub modality: CardModality,
    /// ONNX file, relative to the card (ONNX models).
    pub onnx: Option<PathBuf>,
    /// A decoder that runs natively in the server instead of an ONNX graph.
    pub native: Option<NativeSpec>,
    pub description: Option<String>,
    /// Expected channels, in the order of the model input.
    pub channels: Vec<String>,
    /// The model's sample rate (Hz). Streams at other rates are resampled as
    /// `preprocessing.resample` says.
    pub sample_rate_hz: f64,
    pub window: WindowSpec,
    #[serde(default)]
    pub preprocessing: Preprocessing,
    pub input: InputSpec,
    /// Extra inputs of spatial-attention models.
    pub sensors: Option<SensorsSpec>,
    pub output: OutputSpec,
    #[serde(default)]
    pub labels: Vec<String>,
    pub provenance: Provenance,
    /// Where the card was read from (filled by the loader).
    #[serde(skip)]
    pub card_path: PathBuf,
}

impl ModelCard {
    pub fn load(path: &Path) -> Result<Self, CardError> {
        let text = std::fs::read_to_string(path).map_err(|source| CardError::Read { path: path.into(), source })?;
        let mut card: ModelCard = toml::from_str(&text).map_err(|e| CardError::Parse { path: path.into(), message: e.to_string() })?;
        card.card_path = path.to_path_buf();
        card.validate()?;
        Ok(card)
    }

    fn relative(&self, path: &Path) -> PathBuf {
        self.card_path.parent().unwrap_or(Path::new(".")).join(path)
    }

    /// The ONNX file (empty path for native decoders).
    pub fn onnx_path(&self) -> PathBuf {
        self.onnx.as_deref().map(|p| self.relative(p)).unwrap_or_default()
    }

    pub fn native_params_path(&self) -> Option<PathBuf> {
        self.native.as_ref().map(|n| self.relative(&n.params))
    }

    /// Dimension of the embedding a retrieval model outputs (its output's last dimension).
    pub fn embedding_dim(&self) -> Option<usize> {
        (self.output.kind == OutputKind::Embedding).then(|| self.output.shape.last().copied().unwrap_or(0).max(0) as usize)
    }

    /// Number of model samples in one window.
    pub fn window_samples(&self) -> usize {
        ((self.window.tmax_s - self.window.tmin_s) * self.sample_rate_hz).round() as usize
    }

    fn field(&self, field: &'static str, message: impl Into<String>) -> CardError {
        CardError::Field { path: self.card_path.clone(), field, message: message.into() }
    }

    /// Internal consistency; the ONNX graph is checked separately (`decode::onnx`).
    fn validate(&self) -> Result<(), CardError> {
        if !is_valid_id(&self.id) {
            return Err(self.field("id", format!("must be {ID_RULE}")));
        }
        if !is_valid_id(&self.version) {
            return Err(self.field("version", format!("must be {ID_RULE}")));
        }
        match (&self.onnx, &self.native) {
            (Some(_), None) => {}
            (None, Some(native)) if NATIVE_KINDS.contains(&native.kind.as_str()) => {}
            (None, Some(native)) => {
                return Err(
                    self.field("native.kind", format!("unknown native decoder {:?} (known: {})", native.kind, NATIVE_KINDS.join(", ")))
                );
            }
            _ => return Err(self.field("onnx", "a card names exactly one of `onnx` (a file) or `native` (a built-in decoder)")),
        }
        if self.channels.is_empty() {
            return Err(self.field("channels", "must list at least one channel"));
        }
        if !(self.sample_rate_hz > 0.0 && self.sample_rate_hz.is_finite()) {
            return Err(self.field("sample_rate_hz", "must be a positive number"));
        }
        if self.window.tmax_s <= self.window.tmin_s {
            return Err(self.field("window", "tmax_s must be greater than tmin_s"));
        }
        let (c, t) = (self.channels.len() as i64, self.window_samples() as i64);
        let expected = match self.input.layout {
            Layout::ChannelsTime => [c, t],
            Layout::TimeChannels => [t, c],
        };
        if self.input.shape.len() != 3 {
            return Err(self.field("input.shape", format!("must have 3 dimensions [batch, ., .], got {:?}", self.input.shape)));
        }
        if self.input.shape[1..] != expected {
            return Err(self.field(
                "input.shape",
                format!(
                    "{:?} does not match {} channels x {} samples (window {}..{} s at {} Hz, layout {:?})",
                    self.input.shape, c, t, self.window.tmin_s, self.window.tmax_s, self.sample_rate_hz, self.input.layout
                ),
            ));
        }
        if !(1..=1024).contains(&self.input.max_batch) || (self.input.max_batch > 1 && self.input.shape[0] >= 0) {
            return Err(self.field("input.max_batch", "must be 1 to 1024, and above 1 only with a dynamic batch dimension (-1)"));
        }
        if self.task == Task::Classification {
            let classes = *self.output.shape.last().unwrap_or(&0);
            if self.labels.is_empty() || classes != self.labels.len() as i64 {
                return Err(self.field("labels", format!("{} labels for an output of shape {:?}", self.labels.len(), self.output.shape)));
            }
        }
        if let Some(sensors) = &self.sensors {
            if sensors.positions.len() != self.channels.len() || sensors.positions.iter().flatten().any(|v| !v.is_finite()) {
                return Err(self.field("sensors.positions", "needs one finite [x, y] per channel"));
            }
            if sensors.min_present > self.channels.len() {
                return Err(self.field("sensors.min_present", "is larger than the number of channels"));
            }
            if sensors.positions_input == self.input.name
                || sensors.mask_input == self.input.name
                || sensors.positions_input == sensors.mask_input
            {
                return Err(self.field("sensors", "input names must differ from each other and from input.name"));
            }
        }
        if self.output.kind == OutputKind::Embedding {
            if self.task != Task::Retrieval {
                return Err(self.field("output.kind", "\"embedding\" is for retrieval models"));
            }
            if self.output.shape.len() != 2 || self.output.shape[1] <= 0 {
                return Err(self.field("output.shape", format!("an embedding output is [batch, dimension], got {:?}", self.output.shape)));
            }
        }
        if self.sensors.is_some() && self.native.is_some() {
            return Err(self.field("sensors", "native decoders take no sensor positions or mask"));
        }
        self.preprocessing.validate(self.channels.len()).map_err(|(field, message)| self.field(field, message))?;
        if !matches!(self.provenance.data_kind.as_str(), "real" | "proxy" | "synthetic" | "fixture" | "live") {
            return Err(self.field("provenance.data_kind", "must be real, proxy, synthetic, fixture or live (fitted on a live stream)"));
        }
        Ok(())
    }
}

/// Every card the server loads: under `models.dir`, then under `models.calibrations_dir` (live
/// calibrations, when that directory exists).
pub fn model_cards(config: &crate::config::ModelsConfig) -> std::io::Result<Vec<PathBuf>> {
    let scan = |dir: &Path| find_cards(dir).map_err(|e| std::io::Error::new(e.kind(), format!("cannot scan {}: {e}", dir.display())));
    let mut cards = scan(&config.dir)?;
    if config.calibrations_dir.is_dir() {
        cards.extend(scan(&config.calibrations_dir)?);
    }
    Ok(cards)
}

/// Every `*.card.toml` under `dir`, sorted.
pub fn find_cards(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".card.toml")) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}
