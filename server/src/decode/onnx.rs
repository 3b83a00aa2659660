//! Loading one model: ONNX Runtime session on the configured execution provider, checked against
//! its card, warmed up.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::TensorRef;

use super::input::SensorInputs;
use crate::card::{Layout, ModelCard};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "ONNX Runtime library could not be loaded from {path}: {message}. Run deploy/setup.sh, or set models.onnxruntime_library / ORT_DYLIB_PATH to libonnxruntime.so (1.31)"
    )]
    Runtime { path: PathBuf, message: String },
    #[error("model {card}: ONNX file {onnx}: {message}")]
    Onnx { card: PathBuf, onnx: PathBuf, message: String },
    #[error("model {card}: card field `{field}` does not match the ONNX graph: {message}")]
    Mismatch { card: PathBuf, field: &'static str, message: String },
}

/// The GPU build of ONNX Runtime that `deploy/setup.sh --gpu` installs (with its CUDA and
/// TensorRT provider libraries beside it), and the file naming the directories of the CUDA
/// libraries it needs (from the nvidia-* wheels).
pub const GPU_RUNTIME: &str = "runtime/gpu/libonnxruntime.so.1.31.1";
pub const GPU_LIBRARY_PATH: &str = "runtime/gpu/library-path";

/// Whether `providers` ask for a GPU.
pub fn wants_gpu(providers: &[String]) -> bool {
    providers.iter().any(|p| p == "cuda" || p == "tensorrt")
}

/// Where to find libonnxruntime, in order: config; the GPU build when a GPU provider is asked
/// for and `deploy/setup.sh --gpu` installed it; $ORT_DYLIB_PATH; next to the executable;
/// runtime/ in the working directory; then the plain soname (system search path).
pub fn locate_runtime(configured: &Path, providers: &[String]) -> PathBuf {
    if !configured.as_os_str().is_empty() {
        return configured.to_path_buf();
    }
    if wants_gpu(providers) && Path::new(GPU_RUNTIME).exists() {
        return PathBuf::from(GPU_RUNTIME);
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(path);
    }
    let candidates = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("libonnxruntime.so")))
        .into_iter()
        .chain([PathBuf::from("runtime/libonnxruntime.so.1.31.1")]);
    for candidate in candidates {
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from("libonnxruntime.so")
}

/// Initialise ONNX Runtime once per process.
pub fn init_runtime(configured: &Path, providers: &[String]) -> Result<ort::environment::Environment, ModelError> {
    let path = locate_runtime(configured, providers);
    let builder = ort::init_from(&path).map_err(|e| ModelError::Runtime { path: path.clone(), message: e.to_string() })?;
    builder.with_name("myelin").build().map_err(|e| ModelError::Runtime { path, message: e.to_string() })
}

/// Builds a session for `card` on the first execution provider in `providers` that loads.
/// Returns the session and the provider actually used.
pub fn open_session(
    env: &ort::environment::Environment,
    card: &ModelCard,
    providers: &[String],
    intra_op_threads: usize,
) -> Result<(Session, String), ModelError> {
    let onnx = card.onnx_path();
    let onnx_err = |message: String| ModelError::Onnx { card: card.card_path.clone(), onnx: onnx.clone(), message };
    if !onnx.exists() {
        return Err(onnx_err("file not found".into()));
    }
    let mut fallbacks = Vec::new();
    for provider in providers.iter().map(String::as_str).chain(["cpu"]) {
        let builder = Session::builder(env).map_err(|e| onnx_err(e.to_string()))?;
        let builder = builder.with_intra_threads(intra_op_threads).map_err(|e| onnx_err(e.to_string()))?;
        let dispatch = match provider {
            "cuda" => Some(ort::ep::CUDA::default().build().error_on_failure()),
            "tensorrt" => Some(ort::ep::TensorRT::default().build().error_on_failure()),
            _ => None,
        };
        let mut builder = match dispatch {
            Some(dispatch) => match builder.with_execution_providers([dispatch]) {
                Ok(builder) => builder,
                Err(e) => {
                    fallbacks.push(format!("{provider}: {e}"));
                    continue;
                }
            },
            None => builder,
        };
        let session = builder.commit_from_file(&onnx).map_err(|e| onnx_err(e.to_string()))?;
        if !fallbacks.is_empty() {
            warn_fallback_once(provider, &fallbacks.join("; "));
        }
        return Ok((session, provider.to_string()));
    }
    unreachable!("the cpu provider always ends the loop")
}

/// One log line per process for each fallback, not one per model.
fn warn_fallback_once(used: &str, reasons: &str) {
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !warned.iter().any(|r| r == reasons) {
        warned.push(reasons.to_string());
        tracing::warn!(unavailable = %reasons, "GPU execution provider could not load; models run on {used}");
    }
}

/// Checks the graph's input and output names and shapes against the card.
pub fn check_against_card(session: &Session, card: &ModelCard) -> Result<(), ModelError> {
    let mismatch = |field: &'static str, message: String| ModelError::Mismatch { card: card.card_path.clone(), field, message };
    let input = session.inputs().iter().find(|i| i.name() == card.input.name).ok_or_else(|| {
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        mismatch("input.name", format!("graph has no input {:?} (inputs: {names:?})", card.input.name))
    })?;
    check_shape(input.dtype(), &card.input.shape).map_err(|m| mismatch("input.shape", m))?;
    let graph_batch = input.dtype().tensor_shape().and_then(|shape| shape.first().copied());
    if card.input.max_batch > 1 && graph_batch.is_some_and(|b| b >= 0) {
        return Err(mismatch(
            "input.max_batch",
            format!("{} windows per run, but the graph's batch dimension is fixed", card.input.max_batch),
        ));
    }
    let mut fed = vec![card.input.name.as_str()];
    if let Some(sensors) = &card.sensors {
        let c = card.channels.len() as i64;
        for (name, shape, field) in [
            (&sensors.positions_input, vec![-1, c, 2], "sensors.positions_input"),
            (&sensors.mask_input, vec![-1, c], "sensors.mask_input"),
        ] {
            let input = session
                .inputs()
                .iter()
                .find(|i| i.name() == name)
                .ok_or_else(|| mismatch(field, format!("graph has no input {name:?}")))?;
            check_shape(input.dtype(), &shape).map_err(|m| mismatch(field, m))?;
            fed.push(name);
        }
    }
    if session.inputs().len() != fed.len() {
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        return Err(mismatch("input.name", format!("graph has inputs {names:?}; the card feeds {fed:?}")));
    }
    let output = session.outputs().iter().find(|o| o.name() == card.output.name).ok_or_else(|| {
        let names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        mismatch("output.name", format!("graph has no output {:?} (outputs: {names:?})", card.output.name))
    })?;
    check_shape(output.dtype(), &card.output.shape).map_err(|m| mismatch("output.shape", m))?;
    if let Some(embedding) = &card.output.embedding
        && !session.outputs().iter().any(|o| o.name() == embedding)
    {
        return Err(mismatch("output.embedding", format!("graph has no output {embedding:?}")));
    }
    Ok(())
}

fn check_shape(dtype: &ort::value::ValueType, expected: &[i64]) -> Result<(), String> {
    if dtype.tensor_type() != Some(ort::value::TensorElementType::Float32) {
        return Err(format!("graph tensor is {dtype:?}, expected float32"));
    }
    let shape = dtype.tensor_shape().ok_or("not a tensor")?;
    let actual: &[i64] = shape;
    let compatible = actual.len() == expected.len() && actual.iter().zip(expected).all(|(a, e)| *a == *e || *a < 0 || *e < 0);
    if compatible { Ok(()) } else { Err(format!("graph has {actual:?}, card says {expected:?}")) }
}

/// The inputs a spatial-attention model gets when the stream says nothing: the card's layout,
/// every sensor present.
pub fn default_sensor_inputs(card: &ModelCard) -> Option<SensorInputs> {
    card.sensors.as_ref().map(|s| SensorInputs {
        positions: s.positions.iter().flat_map(|p| [p[0] as f32, p[1] as f32]).collect(),
        mask: vec![1.0; card.channels.len()],
    })
}

/// A batch's outputs, one row per window, back to back.
#[derive(Debug, Default)]
pub struct Outputs {
    pub main: Vec<f32>,
    /// Empty unless the card declares an embedding output.
    pub embedding: Vec<f32>,
}

/// Sensor inputs of a batch, gathered row by row; kept by the backend so that batches reuse them.
#[derive(Default)]
pub struct SensorBatch {
    positions: Vec<f32>,
    mask: Vec<f32>,
}

/// Runs the model once on `batch` windows (`input`: each in the card's layout, back to back).
/// Spatial-attention models also get each window's `sensors` (`defaults` where `None`).
pub fn infer(
    session: &mut Session,
    card: &ModelCard,
    input: &[f32],
    batch: usize,
    sensors: &[Option<&SensorInputs>],
    defaults: Option<&SensorInputs>,
    gathered: &mut SensorBatch,
) -> Result<Outputs, String> {
    let (c, t, n) = (card.channels.len() as i64, card.window_samples() as i64, batch as i64);
    let shape = match card.input.layout {
        Layout::ChannelsTime => [n, c, t],
        Layout::TimeChannels => [n, t, c],
    };
    let tensor = TensorRef::from_array_view((shape, input)).map_err(|e| e.to_string())?;
    let outputs = match (&card.sensors, defaults) {
        (Some(spec), Some(defaults)) => {
            gathered.positions.clear();
            gathered.mask.clear();
            for row in 0..batch {
                let row = sensors.get(row).copied().flatten().unwrap_or(defaults);
                gathered.positions.extend_from_slice(&row.positions);
                gathered.mask.extend_from_slice(&row.mask);
            }
            let positions = TensorRef::from_array_view(([n, c, 2], &gathered.positions[..])).map_err(|e| e.to_string())?;
            let mask = TensorRef::from_array_view(([n, c], &gathered.mask[..])).map_err(|e| e.to_string())?;
            session.run(ort::inputs![
                card.input.name.as_str() => tensor,
                spec.positions_input.as_str() => positions,
                spec.mask_input.as_str() => mask
            ])
        }
        _ => session.run(ort::inputs![card.input.name.as_str() => tensor]),
    }
    .map_err(|e| e.to_string())?;
    let extract = |name: &str| -> Result<Vec<f32>, String> {
        let (shape, values) =
            outputs.get(name).ok_or_else(|| format!("output {name} missing"))?.try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
        if shape.first() != Some(&n) {
            return Err(format!("output {name} has shape {shape:?} for a batch of {batch}"));
        }
        Ok(values.to_vec())
    };
    let main = extract(&card.output.name)?;
    let embedding = match &card.output.embedding {
        Some(name) => extract(name)?,
        None => Vec::new(),
    };
    Ok(Outputs { main, embedding })
}

/// Opens, checks and warms up a model (the first run allocates ONNX Runtime's buffers).
pub fn load(
    env: &ort::environment::Environment,
    card: &ModelCard,
    providers: &[String],
    intra_op_threads: usize,
) -> Result<(Session, String), ModelError> {
    let (mut session, provider) = open_session(env, card, providers, intra_op_threads)?;
    check_against_card(&session, card)?;
    let zeros = vec![0.0f32; card.channels.len() * card.window_samples()];
    let defaults = default_sensor_inputs(card);
    for _ in 0..3 {
        let Outputs { main: output, .. } =
            infer(&mut session, card, &zeros, 1, &[], defaults.as_ref(), &mut SensorBatch::default()).map_err(|message| {
                ModelError::Onnx { card: card.card_path.clone(), onnx: card.onnx_path(), message: format!("warm-up run failed: {message}") }
            })?;
        if let Some(dim) = card.embedding_dim().filter(|&dim| output.len() != dim) {
            return Err(ModelError::Mismatch {
                card: card.card_path.clone(),
                field: "output.shape",
                message: format!("the graph's embedding has {} values, the card says {dim}", output.len()),
            });
        }
    }
    Ok((session, provider))
}
