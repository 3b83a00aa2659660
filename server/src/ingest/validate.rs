//! What an Ingest stream may send: a header that names its session, channels, rate and
//! modality; chunks whose bytes, sample count and timestamps agree; samples decoded from packed
//! little-endian float32 into a reused buffer, under the configured non-finite policy.

use myelin_proto::v1::{self as pb, sample_chunk::Timestamps};
use tonic::Status;

use crate::config::{LimitsConfig, NonFinitePolicy, TimestampPolicy};
use crate::id::{ID_RULE, is_valid_id, shown};
use crate::metrics as m;
use crate::session::command::Chunk;
use crate::session::warnings::Warnings;

/// How far a chunk's RegularTimestamps rate may be from the header's nominal rate: real
/// amplifiers' clocks differ from their nominal rate by well under 0.1 %.
const REGULAR_RATE_TOLERANCE: f64 = 0.01;

pub fn validate_header(header: &pb::StreamHeader, limits: &LimitsConfig) -> Result<(), Status> {
    let id = &header.session_id;
    if !is_valid_id(id) {
        return Err(Status::invalid_argument(format!("header.session_id {} must be {ID_RULE}", shown(id))));
    }
    if header.channels.is_empty() {
        return Err(Status::invalid_argument("header.channels must list at least one channel"));
    }
    if header.channels.len() > limits.channels {
        return Err(Status::invalid_argument(format!(
            "header.channels: {} channels, at most {} (limits.channels)",
            header.channels.len(),
            limits.channels
        )));
    }
    let too_long = |field: &str, text: &str| {
        Status::invalid_argument(format!("{field} {} is over {} bytes (limits.label_bytes)", shown(text), limits.label_bytes))
    };
    if header.stream_name.len() > limits.label_bytes {
        return Err(too_long("header.stream_name", &header.stream_name));
    }
    let mut labels = std::collections::HashSet::new();
    for channel in &header.channels {
        for (field, text) in [("label", &channel.label), ("type", &channel.r#type), ("unit", &channel.unit)] {
            if text.len() > limits.label_bytes {
                return Err(too_long(&format!("header.channels {field}"), text));
            }
        }
        if channel.label.is_empty() || !labels.insert(channel.label.as_str()) {
            return Err(Status::invalid_argument(format!("header.channels: label {} is empty or repeated", shown(&channel.label))));
        }
    }
    if !(header.nominal_rate_hz > 0.0 && header.nominal_rate_hz <= limits.rate_hz) {
        return Err(Status::invalid_argument(format!(
            "header.nominal_rate_hz must be > 0 and at most {} Hz (limits.rate_hz), got {}",
            limits.rate_hz, header.nominal_rate_hz
        )));
    }
    if header.modality == pb::Modality::Unspecified as i32 || pb::Modality::try_from(header.modality).is_err() {
        return Err(Status::invalid_argument("header.modality must be EEG, MEG, SEEG or ECOG"));
    }
    Ok(())
}

/// Markers must be few enough, with short labels (their timestamps are checked as they are
/// placed: finite ones only).
pub fn validate_markers(markers: &[pb::Marker], limits: &LimitsConfig) -> Result<(), Status> {
    if markers.len() > limits.markers_per_message {
        m::rejected("too_many_markers");
        return Err(Status::invalid_argument(format!(
            "{} markers in one message, at most {} (limits.markers_per_message)",
            markers.len(),
            limits.markers_per_message
        )));
    }
    if let Some(bad) = markers.iter().find(|m| !m.timestamp.is_finite()) {
        m::rejected("invalid_marker");
        return Err(Status::invalid_argument(format!("marker {} has a non-finite timestamp", bad.code)));
    }
    if let Some(long) = markers.iter().find(|m| m.label.len() > limits.label_bytes) {
        m::rejected("invalid_marker");
        return Err(Status::invalid_argument(format!(
            "marker {}: label {} is over {} bytes (limits.label_bytes)",
            long.code,
            shown(&long.label),
            limits.label_bytes
        )));
    }
    Ok(())
}

/// Checks `message`'s shape and timestamps and decodes it into `chunk`'s buffers (reused from
/// the stream's previous chunk), applying the non-finite policy. `rate`: the header's nominal
/// rate, for regular timestamps that give none. Timestamps that go backwards are refused here
/// only under the reject policy (the session repairs them otherwise).
#[allow(clippy::too_many_arguments)]
pub fn decode_chunk(
    message: &pb::SampleChunk,
    n_channels: usize,
    rate: f64,
    policy: NonFinitePolicy,
    timestamps: TimestampPolicy,
    chunk: &mut Chunk,
    warnings: &mut Warnings,
) -> Result<(), Status> {
    let first = message.first_sample_index;
    let n = message.n_samples as usize;
    let expected = n * n_channels * 4;
    if message.samples.len() != expected {
        m::rejected("bad_length");
        return Err(Status::invalid_argument(format!(
            "chunk at sample {first}: samples has {} bytes; n_samples x n_channels x 4 = {n} x {n_channels} x 4 = {expected}",
            message.samples.len()
        )));
    }
    chunk.first_index = first;
    chunk.timestamps.clear();
    match &message.timestamps {
        None => {
            m::rejected("timestamps_missing");
            return Err(Status::invalid_argument(format!("chunk at sample {first}: timestamps missing")));
        }
        Some(Timestamps::PerSample(per_sample)) => {
            if per_sample.seconds.len() != n {
                m::rejected("bad_timestamps");
                return Err(Status::invalid_argument(format!(
                    "chunk at sample {first}: {} timestamps for {n} samples",
                    per_sample.seconds.len()
                )));
            }
            if let Some(i) = per_sample.seconds.windows(2).position(|w| w[1] < w[0])
                && timestamps == TimestampPolicy::Reject
            {
                m::rejected("timestamps_backwards");
                return Err(Status::invalid_argument(format!(
                    "chunk at sample {first}: timestamps go backwards at sample {}",
                    first + i as u64 + 1
                )));
            }
            if per_sample.seconds.iter().any(|t| !t.is_finite()) {
                m::rejected("bad_timestamps");
                return Err(Status::invalid_argument(format!("chunk at sample {first}: non-finite timestamp")));
            }
            chunk.timestamps.extend_from_slice(&per_sample.seconds);
            chunk.regular = None;
        }
        Some(Timestamps::Regular(regular)) => {
            if !regular.first_seconds.is_finite() || !(regular.rate_hz >= 0.0) || !regular.rate_hz.is_finite() {
                m::rejected("bad_timestamps");
                return Err(Status::invalid_argument(format!(
                    "chunk at sample {first}: regular timestamps need a finite first_seconds and rate_hz >= 0"
                )));
            }
            if regular.rate_hz > 0.0 && (regular.rate_hz / rate - 1.0).abs() > REGULAR_RATE_TOLERANCE {
                m::rejected("bad_timestamps");
                return Err(Status::invalid_argument(format!(
                    "chunk at sample {first}: regular timestamps at {} Hz, more than {} % from the header's nominal {rate} Hz",
                    regular.rate_hz,
                    REGULAR_RATE_TOLERANCE * 100.0
                )));
            }
            chunk.regular = Some((regular.first_seconds, if regular.rate_hz > 0.0 { regular.rate_hz } else { rate }));
        }
    }
    chunk.samples.clear();
    chunk.samples.extend(message.samples.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    let non_finite = chunk.samples.iter().filter(|v| !v.is_finite()).count();
    if non_finite > 0 {
        metrics::counter!(m::NON_FINITE_SAMPLES).increment(non_finite as u64);
        match policy {
            NonFinitePolicy::Reject => {
                m::rejected("non_finite");
                return Err(Status::invalid_argument(format!(
                    "chunk at sample {first}: {non_finite} non-finite sample values (policy: reject)"
                )));
            }
            NonFinitePolicy::ZeroFill => {
                let first_bad = chunk.samples.iter().position(|v| !v.is_finite()).unwrap_or(0) / n_channels;
                for v in chunk.samples.iter_mut().filter(|v| !v.is_finite()) {
                    *v = 0.0;
                }
                warnings.add(
                    pb::IngestWarningKind::NonFiniteZeroFilled,
                    "non_finite_zero_filled",
                    first + first_bad as u64,
                    non_finite as u64,
                    || format!("{non_finite} non-finite values replaced by 0"),
                );
            }
        }
    }
    Ok(())
}

/// Transport-level errors end the call with their status. tonic reports an oversized message
/// as OUT_OF_RANGE; gRPC's convention (and other implementations) is RESOURCE_EXHAUSTED.
pub fn reject_transport(status: Status) -> Status {
    let too_large = status.code() == tonic::Code::ResourceExhausted
        || (status.code() == tonic::Code::OutOfRange && status.message().contains("too large"));
    if too_large {
        m::rejected("too_large");
        return Status::resource_exhausted(format!(
            "message over the server's size limit (server.max_message_bytes): {}",
            status.message()
        ));
    }
    status
}
