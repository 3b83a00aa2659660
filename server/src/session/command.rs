//! Messages to a session's worker. Each is answered through its own oneshot, which the worker
//! fills without ever waiting.

use myelin_proto::v1 as pb;
use tokio::sync::oneshot;

use super::attachment::AttachmentState;
use super::error::SessionError;
use super::warnings::Warnings;

pub enum Command {
    /// Samples, already validated for shape and finiteness.
    Chunk(Chunk, oneshot::Sender<ChunkDone>),
    /// Markers with finite timestamps.
    Markers(Vec<pb::Marker>, oneshot::Sender<MarkersDone>),
    /// Record the session from now on (sent before anything else, once its file is ready).
    Record(Box<crate::record::Recorder>),
    /// A measured LSL clock offset, for the recording.
    ClockOffset { timestamp: f64, json: String },
    /// A new attachment: primed with the buffered samples, then fed; refused when the session
    /// has ended or has `limits.attachments_per_session` already.
    Attach(Box<AttachmentState>, oneshot::Sender<Result<(), SessionError>>),
    /// Answers whether the attachment existed.
    Detach(String, oneshot::Sender<bool>),
    /// Runs on one attachment's state (calibration's collector, a model swap); dropped unrun
    /// when the attachment does not exist, which the caller sees as a closed oneshot.
    Visit(String, Box<dyn FnOnce(&mut AttachmentState) + Send>),
    /// The stream ended: stop calibrations collecting, close the recording.
    End,
}

/// One chunk of samples. Its buffers travel to the worker and back in [`ChunkDone`], so a
/// stream reuses them from chunk to chunk.
#[derive(Debug, Default)]
pub struct Chunk {
    pub first_index: u64,
    /// Interleaved [n x channels].
    pub samples: Vec<f32>,
    /// One per sample; unused when `regular` is set.
    pub timestamps: Vec<f64>,
    /// (first sample's timestamp, rate): sample i is at first + i / rate.
    pub regular: Option<(f64, f64)>,
    /// Server clock when the message arrived.
    pub received_ns: u64,
    /// Sample indices [first, end) whose non-finite values the door replaced by zeros (or
    /// refused): no window reading them is decoded.
    pub replaced: Option<(u64, u64)>,
}

impl Chunk {
    pub fn timestamp(&self, i: usize) -> f64 {
        match self.regular {
            Some((first, rate)) => first + i as f64 / rate,
            None => self.timestamps[i],
        }
    }
}

pub struct ChunkDone {
    /// The chunk's buffers, for the next one.
    pub chunk: Chunk,
    /// Samples accepted from this chunk, or why the chunk was refused (which ends the stream).
    pub accepted: Result<u64, SessionError>,
    /// Samples received so far (index of the next expected sample).
    pub accepted_until: u64,
    pub warnings: Warnings,
}

pub struct MarkersDone {
    pub accepted_until: u64,
    pub warnings: Warnings,
}
