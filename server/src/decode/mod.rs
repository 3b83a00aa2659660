//! Decoding: the model registry (cards and ONNX Runtime sessions loaded from `models/` at start,
//! native decoders fitted live) and each model's dedicated inference threads, fed by one bounded
//! queue per model. A window arrives as a [`job::WindowJob`]; its prediction leaves on its
//! attachment's route (`publish`).

pub mod backend;
pub mod erp;
pub mod gallery;
pub mod input;
pub mod job;
pub mod onnx;
pub mod registry;
pub mod result;
pub mod worker;

pub use input::SensorInputs;
pub use job::{Attachment, LoadedModel, WindowJob};
pub use registry::{Lookup, ModelEntry, ModelRegistry, check_offline};
