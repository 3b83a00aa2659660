//! What an Ingest stream may send: a header that names its session, channels, rate and
//! modality; chunks whose bytes, sample count and timestamps agree; samples decoded from packed
//! little-endian float32 into a reused buffer, under the configured non-finite policy.

use myelin_proto::v1::{self as pb, sample_chunk::Timestamps};
use tonic::Status;

use crate::config::NonFinitePolicy;
use crate::id::{ID_RULE, is_valid_id};
use crate::metrics as m;
use crate::session::command::Chunk;

pub fn validate_header(header: &pb::StreamHeader) -> Result<(), Status> {
    let id = &header.session_id;
    if !is_valid_id(id) {
        return Err(Status::invalid_argument(format!("header.session_id {id:?} must be {ID_RULE}")));
    }
    if header.channels.is_empty() {
        return Err(Status::invalid_argument("header.channels must list at least one channel"));
    }
    let mut labels = std::collections::HashSet::new();
    for channel in &header.channels {
        if channel.label.is_empty() || !labels.insert(channel.label.as_str()) {
            return Err(Status::invalid_argument(format!("header.channels: label {:?} is empty or repeated", channel.label)));
        }
    }
    if !(header.nominal_rate_hz > 0.0 && header.nominal_rate_hz.is_finite()) {
        return Err(Status::invalid_argument(format!("header.nominal_rate_hz must be > 0, got {}", header.nominal_rate_hz)));
    }
    if header.modality == pb::Modality::Unspecified as i32 || pb::Modality::try_from(header.modality).is_err() {
        return Err(Status::invalid_argument("header.modality must be EEG, MEG, SEEG or ECOG"));
    }
    Ok(())
}

/// Checks `message`'s shape and timestamps and decodes it into `chunk`'s buffers (reused from
/// the stream's previous chunk), applying the non-finite policy. `rate`: the header's nominal
/// rate, for regular timestamps that give none.
pub fn decode_chunk(
    message: &pb::SampleChunk,
    n_channels: usize,
    rate: f64,
    policy: NonFinitePolicy,
    chunk: &mut Chunk,
    warnings: &mut Vec<pb::IngestWarning>,
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
            if let Some(i) = per_sample.seconds.windows(2).position(|w| !(w[1] >= w[0])) {
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
                m::warning("non_finite_zero_filled");
                warnings.push(pb::IngestWarning {
                    kind: pb::IngestWarningKind::NonFiniteZeroFilled as i32,
                    message: format!("{non_finite} non-finite values replaced by 0"),
                    sample_index: first + first_bad as u64,
                    count: non_finite as u64,
                });
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
