//! Why ingest refused something, whichever door it came through: one type, mapped to a gRPC
//! status in one place (`From<IngestError> for Status`), counted under one reason label, and
//! reported by the LSL door on the session (its warnings, ConnectLsl's reply) with the same text.

use tonic::{Code, Status};

use crate::id::ID_RULE;
use crate::session::{SessionError, Source};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    // The stream's header (an Ingest call's StreamHeader, an LSL stream's info).
    #[error("header.session_id {shown} must be {ID_RULE}")]
    SessionId { shown: String },
    #[error("header.channels must list at least one channel")]
    NoChannels,
    #[error("header.channels: {count} channels, at most {limit} (limits.channels)")]
    TooManyChannels { count: usize, limit: usize },
    #[error("{field} {shown} is over {limit} bytes (limits.label_bytes)")]
    TooLong { field: &'static str, shown: String, limit: usize },
    #[error("header.channels: label {shown} is empty or repeated")]
    Label { shown: String },
    #[error("header.nominal_rate_hz must be > 0 and at most {limit} Hz (limits.rate_hz), got {rate}")]
    Rate { rate: f64, limit: f64 },
    #[error("header.modality must be EEG, MEG, SEEG or ECOG")]
    Modality,
    #[error("LSL stream {shown} carries strings; data streams must be numeric")]
    StringFormat { shown: String },
    /// liblsl could not parse the stream's description (it names the stream "(invalid: ...)"):
    /// a NaN nominal rate does this, and the stream cannot be described as a header at all.
    #[error("the LSL stream's description cannot be read (liblsl: {reason}); a NaN nominal rate does this")]
    UnreadableInfo { reason: String },

    // The stream's messages.
    #[error("the first message of an Ingest stream must be a StreamHeader")]
    HeaderMissing,
    #[error("StreamHeader sent twice: one header per Ingest stream")]
    HeaderRepeated,
    #[error("IngestRequest carries no message")]
    EmptyMessage,
    #[error("no StreamHeader within sessions.ingest_idle_timeout_s")]
    NoHeader,
    #[error("no message for {seconds} s (sessions.ingest_idle_timeout_s): the stream is taken for dead and its session ended")]
    Idle { seconds: f64 },
    #[error("message over the server's size limit (server.max_message_bytes): {}", .0.message())]
    TooLarge(#[source] Status),
    /// Any other transport error of the call, as tonic reported it.
    #[error("{}", .0.message())]
    Transport(#[source] Status),

    // A chunk's shape and timestamps.
    #[error("chunk at sample {first}: samples has {bytes} bytes; n_samples x n_channels x 4 = {n} x {channels} x 4 = {expected}")]
    Length { first: u64, bytes: usize, n: usize, channels: usize, expected: usize },
    #[error("chunk at sample {first}: timestamps missing")]
    TimestampsMissing { first: u64 },
    #[error("chunk at sample {first}: {count} timestamps for {n} samples")]
    TimestampCount { first: u64, count: usize, n: usize },
    #[error("chunk at sample {first}: timestamps go backwards at sample {at}")]
    TimestampsBackwards { first: u64, at: u64 },
    #[error("chunk at sample {first}: non-finite timestamp")]
    TimestampNonFinite { first: u64 },
    #[error("chunk at sample {first}: regular timestamps need a finite first_seconds and rate_hz >= 0")]
    RegularTimestamps { first: u64 },
    #[error("chunk at sample {first}: regular timestamps at {rate} Hz, more than {tolerance_pct} % from the header's nominal {nominal} Hz")]
    RegularRate { first: u64, rate: f64, nominal: f64, tolerance_pct: f64 },
    /// Under `sessions.non_finite_policy = "reject"`.
    #[error("chunk at sample {first}: {count} non-finite sample values (policy: reject)")]
    NonFinite { first: u64, count: usize },

    // Markers.
    #[error("{count} markers in one message, at most {limit} (limits.markers_per_message)")]
    TooManyMarkers { count: usize, limit: usize },
    #[error("marker {code} has a non-finite timestamp")]
    MarkerTimestamp { code: i32 },
    #[error("marker {code}: label {shown} is over {limit} bytes (limits.label_bytes)")]
    MarkerLabel { code: i32, shown: String, limit: usize },

    /// The session refused the stream or a chunk (its owner, limits, sample indices).
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl IngestError {
    /// The `reason` label of `myelin_chunks_rejected_total` (None: not the client's input, or
    /// counted elsewhere).
    pub fn reason(&self) -> Option<&'static str> {
        use IngestError::*;
        Some(match self {
            SessionId { .. }
            | NoChannels
            | TooManyChannels { .. }
            | TooLong { .. }
            | Label { .. }
            | Rate { .. }
            | Modality
            | StringFormat { .. }
            | UnreadableInfo { .. } => "invalid_header",
            HeaderMissing => "header_missing",
            HeaderRepeated => "header_repeated",
            EmptyMessage => "empty_message",
            TooLarge(_) => "too_large",
            Length { .. } => "bad_length",
            TimestampsMissing { .. } => "timestamps_missing",
            TimestampsBackwards { .. } => "timestamps_backwards",
            TimestampCount { .. } | TimestampNonFinite { .. } | RegularTimestamps { .. } | RegularRate { .. } => "bad_timestamps",
            NonFinite { .. } => "non_finite",
            TooManyMarkers { .. } => "too_many_markers",
            MarkerTimestamp { .. } | MarkerLabel { .. } => "invalid_marker",
            NoHeader | Idle { .. } | Transport(_) | Session(_) => return None,
        })
    }

    pub fn code(&self) -> Code {
        use IngestError::*;
        match self {
            HeaderMissing | HeaderRepeated => Code::FailedPrecondition,
            NoHeader | Idle { .. } => Code::DeadlineExceeded,
            TooLarge(_) => Code::ResourceExhausted,
            Transport(status) => status.code(),
            Session(error) => Status::from(error.clone()).code(),
            _ => Code::InvalidArgument,
        }
    }

    /// Counts the refusal (`myelin_chunks_rejected_total{reason, door}`); returns it.
    pub fn counted(self, door: Source) -> Self {
        if let Some(reason) = self.reason() {
            crate::metrics::rejected(reason, door.as_str());
        }
        self
    }

    /// A transport error of an Ingest call. tonic reports an oversized message as OUT_OF_RANGE;
    /// gRPC's convention (and other implementations) is RESOURCE_EXHAUSTED.
    pub fn from_transport(status: Status) -> Self {
        let too_large =
            status.code() == Code::ResourceExhausted || (status.code() == Code::OutOfRange && status.message().contains("too large"));
        if too_large { IngestError::TooLarge(status) } else { IngestError::Transport(status) }
    }
}

/// The gRPC edge: one mapping for every ingest refusal.
impl From<IngestError> for Status {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::Session(error) => error.into(),
            IngestError::Transport(status) => status,
            other => Status::new(other.code(), other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_maps_to_its_status_with_its_text() {
        let cases = [
            (IngestError::TooManyChannels { count: 2000, limit: 1024 }, Code::InvalidArgument, "2000 channels, at most 1024"),
            (IngestError::HeaderRepeated, Code::FailedPrecondition, "StreamHeader sent twice"),
            (IngestError::Idle { seconds: 60.0 }, Code::DeadlineExceeded, "no message for 60 s"),
            (IngestError::NonFinite { first: 7, count: 2 }, Code::InvalidArgument, "chunk at sample 7: 2 non-finite sample values"),
            (IngestError::from_transport(Status::out_of_range("message too large")), Code::ResourceExhausted, "server.max_message_bytes"),
            (IngestError::Session(SessionError::AlreadyExists("taken".into())), Code::AlreadyExists, "taken"),
        ];
        for (error, code, says) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{status:?}");
            assert!(status.message().contains(says), "{status:?}");
        }
    }
}
