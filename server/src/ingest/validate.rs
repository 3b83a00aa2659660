//! The rules both doors apply, in one place: a header that names its session, channels, rate
//! and modality within the limits (an Ingest call's StreamHeader, or the one an LSL stream's info
//! becomes); chunks whose bytes, sample count and timestamps agree; samples screened for
//! non-finite values under `sessions.non_finite_policy`; markers few enough, with short labels.
//! Every refusal is an [`IngestError`], counted by reason and door where a door reports it.

use myelin_proto::v1::{self as pb, IngestWarningKind, sample_chunk::Timestamps};

use super::error::IngestError;
use crate::config::{LimitsConfig, NonFinitePolicy, TimestampPolicy};
use crate::id::{is_valid_id, shown};
use crate::metrics as m;
use crate::session::command::Chunk;
use crate::session::warnings::Warnings;

/// How far a chunk's RegularTimestamps rate may be from the header's nominal rate: real
/// amplifiers' clocks differ from their nominal rate by well under 0.1 %.
const REGULAR_RATE_TOLERANCE: f64 = 0.01;

pub fn validate_header(header: &pb::StreamHeader, limits: &LimitsConfig) -> Result<(), IngestError> {
    if !is_valid_id(&header.session_id) {
        return Err(IngestError::SessionId { shown: shown(&header.session_id) });
    }
    validate_shape(header.channels.len(), header.nominal_rate_hz, limits)?;
    let too_long = |field, text: &str| IngestError::TooLong { field, shown: shown(text), limit: limits.label_bytes };
    if header.stream_name.len() > limits.label_bytes {
        return Err(too_long("header.stream_name", &header.stream_name));
    }
    let mut labels = std::collections::HashSet::with_capacity(header.channels.len());
    for channel in &header.channels {
        for (field, text) in
            [("header.channels label", &channel.label), ("header.channels type", &channel.r#type), ("header.channels unit", &channel.unit)]
        {
            if text.len() > limits.label_bytes {
                return Err(too_long(field, text));
            }
        }
        if channel.label.is_empty() || !labels.insert(channel.label.as_str()) {
            return Err(IngestError::Label { shown: shown(&channel.label) });
        }
    }
    if header.modality == pb::Modality::Unspecified as i32 || pb::Modality::try_from(header.modality).is_err() {
        return Err(IngestError::Modality);
    }
    Ok(())
}

/// The header's channel count and rate: what a door can check before it reads (or, for LSL,
/// opens) anything else of the stream.
pub fn validate_shape(channels: usize, rate: f64, limits: &LimitsConfig) -> Result<(), IngestError> {
    if channels == 0 {
        return Err(IngestError::NoChannels);
    }
    if channels > limits.channels {
        return Err(IngestError::TooManyChannels { count: channels, limit: limits.channels });
    }
    if !(rate > 0.0 && rate <= limits.rate_hz) {
        return Err(IngestError::Rate { rate, limit: limits.rate_hz });
    }
    Ok(())
}

/// Markers must be few enough, with finite timestamps and short labels.
pub fn validate_markers(markers: &[pb::Marker], limits: &LimitsConfig) -> Result<(), IngestError> {
    if markers.len() > limits.markers_per_message {
        return Err(IngestError::TooManyMarkers { count: markers.len(), limit: limits.markers_per_message });
    }
    if let Some(bad) = markers.iter().find(|m| !m.timestamp.is_finite()) {
        return Err(IngestError::MarkerTimestamp { code: bad.code });
    }
    if let Some(long) = markers.iter().find(|m| m.label.len() > limits.label_bytes) {
        return Err(IngestError::MarkerLabel { code: long.code, shown: shown(&long.label), limit: limits.label_bytes });
    }
    Ok(())
}

/// Checks a gRPC `message`'s shape and timestamps and decodes it into `chunk`'s buffers (reused
/// from the stream's previous chunk). `rate`: the header's nominal rate, for regular timestamps
/// that give none. The samples still need [`screen_samples`].
pub fn decode_chunk(
    message: &pb::SampleChunk,
    n_channels: usize,
    rate: f64,
    timestamps: TimestampPolicy,
    chunk: &mut Chunk,
) -> Result<(), IngestError> {
    let first = message.first_sample_index;
    let n = message.n_samples as usize;
    let expected = n * n_channels * 4;
    if message.samples.len() != expected {
        return Err(IngestError::Length { first, bytes: message.samples.len(), n, channels: n_channels, expected });
    }
    chunk.first_index = first;
    chunk.timestamps.clear();
    match &message.timestamps {
        None => return Err(IngestError::TimestampsMissing { first }),
        Some(Timestamps::PerSample(per_sample)) => {
            if per_sample.seconds.len() != n {
                return Err(IngestError::TimestampCount { first, count: per_sample.seconds.len(), n });
            }
            check_timestamps(first, &per_sample.seconds, timestamps)?;
            chunk.timestamps.extend_from_slice(&per_sample.seconds);
            chunk.regular = None;
        }
        Some(Timestamps::Regular(regular)) => {
            if !regular.first_seconds.is_finite() || !(regular.rate_hz >= 0.0) || !regular.rate_hz.is_finite() {
                return Err(IngestError::RegularTimestamps { first });
            }
            if regular.rate_hz > 0.0 && (regular.rate_hz / rate - 1.0).abs() > REGULAR_RATE_TOLERANCE {
                return Err(IngestError::RegularRate {
                    first,
                    rate: regular.rate_hz,
                    nominal: rate,
                    tolerance_pct: REGULAR_RATE_TOLERANCE * 100.0,
                });
            }
            chunk.regular = Some((regular.first_seconds, if regular.rate_hz > 0.0 { regular.rate_hz } else { rate }));
        }
    }
    chunk.samples.clear();
    chunk.samples.extend(message.samples.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    Ok(())
}

/// Per-sample timestamps of a chunk starting at sample `first`: finite, and (under the reject
/// policy) never going backwards within the chunk (the session checks against earlier chunks).
pub fn check_timestamps(first: u64, seconds: &[f64], policy: TimestampPolicy) -> Result<(), IngestError> {
    if policy == TimestampPolicy::Reject
        && let Some(i) = seconds.windows(2).position(|w| w[1] < w[0])
    {
        return Err(IngestError::TimestampsBackwards { first, at: first + i as u64 + 1 });
    }
    if seconds.iter().any(|t| !t.is_finite()) {
        return Err(IngestError::TimestampNonFinite { first });
    }
    Ok(())
}

/// Applies the non-finite policy to a decoded chunk's samples (`n_channels` interleaved):
/// "reject" refuses the chunk ([`IngestError::NonFinite`]); "zero_fill" replaces each NaN or
/// infinity by 0, warns, and marks the span of samples concerned (`chunk.replaced`) so that
/// no window reading it is decoded.
pub fn screen_samples(chunk: &mut Chunk, n_channels: usize, policy: NonFinitePolicy, warnings: &mut Warnings) -> Result<(), IngestError> {
    let count = chunk.samples.iter().filter(|v| !v.is_finite()).count();
    chunk.replaced = None;
    if count == 0 {
        return Ok(());
    }
    metrics::counter!(m::NON_FINITE_SAMPLES).increment(count as u64);
    match policy {
        NonFinitePolicy::Reject => Err(IngestError::NonFinite { first: chunk.first_index, count }),
        NonFinitePolicy::ZeroFill => {
            let span = replace_non_finite(chunk, n_channels);
            warnings.add(IngestWarningKind::NonFiniteZeroFilled, "non_finite_zero_filled", span.0, count as u64, || {
                format!("{count} non-finite values replaced by 0 in samples [{}, {}); windows reading them are not decoded", span.0, span.1)
            });
            Ok(())
        }
    }
}

/// A door that cannot refuse a chunk (an LSL inlet: nobody is there to tell) refuses its
/// non-finite samples instead: they count as missing, like a gap (zeros to the filters, no
/// window reading them decoded), with `refusal`'s text as a warning on the session.
pub fn refuse_non_finite(chunk: &mut Chunk, n_channels: usize, refusal: &IngestError, warnings: &mut Warnings) {
    let IngestError::NonFinite { count, .. } = refusal else { return };
    let span = replace_non_finite(chunk, n_channels);
    warnings.add(IngestWarningKind::NonFiniteRefused, "non_finite_refused", span.0, *count as u64, || {
        format!("{refusal}: samples [{}, {}) count as missing; windows reading them are not decoded", span.0, span.1)
    });
}

/// Zeroes every non-finite value; returns (and sets as `chunk.replaced`) the span of sample
/// indices [first, end) that held one.
fn replace_non_finite(chunk: &mut Chunk, n_channels: usize) -> (u64, u64) {
    let (mut first_bad, mut last_bad) = (usize::MAX, 0);
    for (i, v) in chunk.samples.iter_mut().enumerate() {
        if !v.is_finite() {
            *v = 0.0;
            first_bad = first_bad.min(i / n_channels);
            last_bad = i / n_channels;
        }
    }
    let span = (chunk.first_index + first_bad as u64, chunk.first_index + last_bad as u64 + 1);
    chunk.replaced = Some(span);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(samples: &[f32]) -> Chunk {
        Chunk { first_index: 100, samples: samples.to_vec(), ..Default::default() }
    }

    #[test]
    fn zero_fill_marks_the_span_of_samples_that_held_non_finite_values() {
        let mut c = chunk(&[1.0, 2.0, f32::NAN, 4.0, 5.0, f32::INFINITY, 7.0, 8.0]);
        let mut warnings = Warnings::default();
        screen_samples(&mut c, 2, NonFinitePolicy::ZeroFill, &mut warnings).unwrap();
        assert_eq!(c.samples, [1.0, 2.0, 0.0, 4.0, 5.0, 0.0, 7.0, 8.0]);
        assert_eq!(c.replaced, Some((101, 103)));
        let list = warnings.into_vec();
        assert_eq!((list[0].sample_index, list[0].count), (101, 2));
    }

    #[test]
    fn reject_refuses_and_a_door_that_cannot_refuse_marks_the_samples_missing() {
        let mut c = chunk(&[f32::NEG_INFINITY, 2.0]);
        let mut warnings = Warnings::default();
        let refusal = screen_samples(&mut c, 2, NonFinitePolicy::Reject, &mut warnings).unwrap_err();
        assert_eq!(refusal.to_string(), "chunk at sample 100: 1 non-finite sample values (policy: reject)");
        assert!(c.samples[0].is_infinite(), "a refused chunk is left as it was");
        refuse_non_finite(&mut c, 2, &refusal, &mut warnings);
        assert_eq!((c.samples[0], c.replaced), (0.0, Some((100, 101))));
        let list = warnings.into_vec();
        assert_eq!(list[0].kind, IngestWarningKind::NonFiniteRefused as i32);
        assert!(list[0].message.starts_with("chunk at sample 100: 1 non-finite"), "{}", list[0].message);
    }

    #[test]
    fn clean_chunks_pass_untouched() {
        let mut c = chunk(&[1.0, 2.0]);
        c.replaced = Some((0, 1));
        screen_samples(&mut c, 2, NonFinitePolicy::Reject, &mut Warnings::default()).unwrap();
        assert_eq!(c.replaced, None);
    }

    #[test]
    fn headers_are_held_to_the_limits() {
        let limits = LimitsConfig::default();
        let channel = |label: &str| pb::Channel { label: label.into(), ..Default::default() };
        let good = pb::StreamHeader {
            session_id: "s".into(),
            channels: vec![channel("C3"), channel("C4")],
            nominal_rate_hz: 256.0,
            modality: pb::Modality::Eeg as i32,
            ..Default::default()
        };
        validate_header(&good, &limits).unwrap();
        let bad = |change: &dyn Fn(&mut pb::StreamHeader)| {
            let mut header = good.clone();
            change(&mut header);
            validate_header(&header, &limits).unwrap_err().to_string()
        };
        assert!(bad(&|h| h.channels[1].label = "C3".into()).contains("label \"C3\" is empty or repeated"));
        assert!(bad(&|h| h.channels = (0..2000).map(|i| channel(&format!("E{i}"))).collect()).contains("2000 channels, at most 1024"));
        for rate in [0.0, 1e9, f64::NAN, f64::INFINITY, -1.0] {
            assert!(bad(&|h| h.nominal_rate_hz = rate).contains("header.nominal_rate_hz must be > 0"), "{rate}");
        }
        let long = bad(&|h| h.channels[0].r#type = "x".repeat(4 << 20));
        assert!(long.contains("header.channels type") && long.len() < 200, "{long}");
    }
}
