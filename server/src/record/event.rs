//! What a recorder writes: the session's samples, markers, clock offsets and predictions, and
//! the XDF stream each goes to.

use std::sync::Arc;

use myelin_proto::v1 as pb;

/// Stream ids in the file.
pub const DATA_STREAM: u32 = 1;
pub const MARKER_STREAM: u32 = 2;
pub const CLOCK_STREAM: u32 = 3;
/// Written only when the session repaired timestamps that went backwards: the raw ones.
pub const RAW_TIMESTAMP_STREAM: u32 = 4;

pub enum Event {
    Samples {
        timestamps: Vec<f64>,
        values: Vec<f32>,
    },
    Markers(Vec<(f64, String)>),
    Prediction(Arc<pb::Prediction>),
    ClockOffset {
        timestamp: f64,
        json: String,
    },
    /// The timestamps a source sent for samples from `first_sample` on, where the session
    /// repaired them (the data stream holds the repaired ones); `timestamp`: the first repaired.
    RawTimestamps {
        first_sample: u64,
        timestamp: f64,
        raw: Vec<f64>,
    },
}
