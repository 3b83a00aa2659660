//! What turns a batch of preprocessed windows into outputs: an ONNX Runtime session, or a decoder
//! native to the server. Each inference thread owns one.

use std::sync::Arc;

use super::input::SensorInputs;
use super::native::NativeDecoder;
use super::onnx::{self, Outputs, SensorBatch};
use crate::card::ModelCard;

pub trait Backend: Send + 'static {
    /// Runs `batch` windows (`input`: each a model input in the card's layout, back to back).
    /// `sensors`: each window's positions and mask for spatial-attention models (the card's
    /// defaults where `None` or missing).
    fn infer(&mut self, input: &[f32], batch: usize, sensors: &[Option<&SensorInputs>]) -> Result<Outputs, String>;
}

pub struct OnnxBackend {
    session: ort::session::Session,
    card: ModelCard,
    defaults: Option<SensorInputs>,
    gathered: SensorBatch,
}

impl OnnxBackend {
    pub fn new(session: ort::session::Session, card: ModelCard) -> Self {
        let defaults = onnx::default_sensor_inputs(&card);
        Self { session, card, defaults, gathered: SensorBatch::default() }
    }
}

impl Backend for OnnxBackend {
    fn infer(&mut self, input: &[f32], batch: usize, sensors: &[Option<&SensorInputs>]) -> Result<Outputs, String> {
        onnx::infer(&mut self.session, &self.card, input, batch, sensors, self.defaults.as_ref(), &mut self.gathered)
    }
}

/// A native decoder (xDAWN + LDA, or xDAWN covariances + tangent space + logistic regression):
/// [p(non-target), p(target)] per window.
pub struct XdawnBackend(pub Arc<NativeDecoder>);

impl Backend for XdawnBackend {
    fn infer(&mut self, input: &[f32], batch: usize, _sensors: &[Option<&SensorInputs>]) -> Result<Outputs, String> {
        let per_window = input.len() / batch.max(1);
        let mut main = Vec::with_capacity(2 * batch);
        for window in input.chunks_exact(per_window.max(1)).take(batch) {
            let p = self.0.predict(window) as f32;
            main.extend([1.0 - p, p]);
        }
        Ok(Outputs { main, embedding: Vec::new() })
    }
}
