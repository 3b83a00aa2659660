//! Decoding: the model registry (cards and ONNX Runtime sessions loaded from `models/` at start,
//! native decoders fitted live) and each model's inference threads, fed by one bounded queue per
//! model ordered by deadline (`schedule`), which batches windows of any sessions together within
//! what their deadlines allow, using each model's measured cost per batch size (`cost`). Cheap
//! models also decode inline on the session's thread when nothing waits. A window arrives as a
//! [`job::WindowJob`]; its prediction leaves on its attachment's route (`publish`).

pub mod backend;
pub mod cost;
pub mod cross_validation;
pub mod erp;
pub mod gallery;
pub mod input;
pub mod job;
pub mod native;
pub mod onnx;
pub mod registry;
pub mod result;
pub mod riemann;
pub mod schedule;
pub mod worker;

pub use input::SensorInputs;
pub use job::{Attachment, LoadedModel, WindowJob, deadline_of};
pub use registry::{Lookup, ModelEntry, ModelRegistry, check_offline};
