//! What a recorder writes: the session's samples, markers, clock offsets and predictions, and
//! the XDF stream each goes to.

use std::sync::Arc;

use myelin_proto::v1 as pb;

/// Stream ids in the file.
pub const DATA_STREAM: u32 = 1;
pub const MARKER_STREAM: u32 = 2;
pub const CLOCK_STREAM: u32 = 3;

pub enum Event {
    Samples { timestamps: Vec<f64>, values: Vec<f32> },
    Markers(Vec<(f64, String)>),
    Prediction(Arc<pb::Prediction>),
    ClockOffset { timestamp: f64, json: String },
}
