//! What turns one preprocessed window into outputs: an ONNX Runtime session, or a decoder native
//! to the server. Each inference thread owns one.

use std::sync::Arc;

use super::erp::XdawnLda;
use super::input::SensorInputs;
use super::onnx;
use crate::card::ModelCard;

pub trait Backend: Send + 'static {
    /// Returns the main output and the (possibly empty) embedding. `sensors`: the positions and
    /// mask of spatial-attention models (their card's defaults when `None`).
    fn infer(&mut self, input: &[f32], sensors: Option<&SensorInputs>) -> Result<(Vec<f32>, Vec<f32>), String>;
}

pub struct OnnxBackend {
    pub session: ort::session::Session,
    pub card: ModelCard,
}

impl Backend for OnnxBackend {
    fn infer(&mut self, input: &[f32], sensors: Option<&SensorInputs>) -> Result<(Vec<f32>, Vec<f32>), String> {
        onnx::infer(&mut self.session, &self.card, input, sensors)
    }
}

/// The native xDAWN + LDA decoder: [p(non-target), p(target)].
pub struct XdawnBackend(pub Arc<XdawnLda>);

impl Backend for XdawnBackend {
    fn infer(&mut self, input: &[f32], _sensors: Option<&SensorInputs>) -> Result<(Vec<f32>, Vec<f32>), String> {
        let p = self.0.predict(input) as f32;
        Ok((vec![1.0 - p, p], Vec::new()))
    }
}
