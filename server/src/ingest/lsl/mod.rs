//! The LSL door: one dedicated thread per inlet ([`inlet`]) pulls whole chunks and hands them to
//! the session's worker, as the gRPC door does, through the same rules ([`super::validate`]):
//! the stream's info is held to the header rules before anything is opened, and every chunk is
//! screened under the non-finite policy. What LSL cannot be told (a refused sample, a repaired
//! timestamp) is kept on the session (`SessionInfo.warnings`), counted, and logged once per kind.
//!
//! * Clock: each inlet's offset to this machine's LSL clock is measured every few seconds
//!   (liblsl time_correction), added to every timestamp, exposed as metrics, and recorded.
//! * Loss: no samples for `stall_seconds` marks the stream lost (logged, counted); liblsl
//!   reconnects by itself when a stream with the same source id returns. The samples missed
//!   meanwhile are derived from the timestamps and recorded as a gap of the session, so windows
//!   that touch it are published as ERROR instead of being decoded on made-up data.

mod inlet;
mod timeline;

use std::sync::Arc;
use std::time::Duration;

use myelin_lsl::{Inlet, Lsl, StreamInfo};
use myelin_proto::v1 as pb;
use tonic::Status;

use super::error::IngestError;
use super::validate::{validate_header, validate_shape};
use crate::auth::{Principal, audit};
use crate::id::shown;
use crate::session::warnings::Warnings;
use crate::session::{SessionManager, Source};
use crate::shutdown::Shutdown;

pub struct SourceSpec {
    pub session_id: String,
    pub data_predicate: String,
    pub marker_predicate: String,
    pub timeout_s: f64,
    pub modality: pb::Modality,
    /// Who asked: the session belongs to it.
    pub owner: Principal,
}

fn resolve_one(lsl: &Lsl, predicate: &str, timeout: f64, what: &str) -> Result<StreamInfo, Status> {
    let mut found = lsl.resolve(predicate, timeout);
    if found.is_empty() {
        return Err(Status::not_found(format!("no LSL {what} stream matches {} (waited {timeout} s)", shown(predicate))));
    }
    Ok(found.swap_remove(0))
}

fn modality_of(kind: &str, asked: pb::Modality) -> pb::Modality {
    if asked != pb::Modality::Unspecified {
        return asked;
    }
    match kind.to_ascii_uppercase().as_str() {
        "MEG" => pb::Modality::Meg,
        "SEEG" => pb::Modality::Seeg,
        "ECOG" => pb::Modality::Ecog,
        _ => pb::Modality::Eeg,
    }
}

/// Resolves and opens the streams, registers the session, and starts the inlet threads.
/// Blocking (resolution waits): call from a blocking thread. The stream is held to the rules of
/// an Ingest call's header, its shape checked before the inlet is opened (an inlet buffers
/// `rate x channels` samples per second).
pub fn connect(
    lsl: &Lsl,
    spec: SourceSpec,
    sessions: &SessionManager,
    shutdown: Shutdown,
    stall_seconds: f64,
) -> Result<pb::ConnectLslReply, Status> {
    let refused = |error: IngestError| Status::from(error.counted(Source::Lsl));
    let limits = sessions.limits();
    let info = resolve_one(lsl, &spec.data_predicate, spec.timeout_s, "data")?;
    // LSL itself authenticates nobody: a principal may not read another's predictions back in
    // through this server's own outlets.
    if info.source_id().starts_with(crate::publish::lsl::OUTLET_SOURCE_PREFIX) && !spec.owner.is_admin() {
        return Err(audit::not_owner(
            &spec.owner,
            "connect_lsl",
            &format!("LSL stream {} (a prediction outlet of this server)", shown(&info.name())),
        ));
    }
    if let Some(reason) = info.name().strip_prefix("(invalid: ").and_then(|r| r.strip_suffix(')')) {
        return Err(refused(IngestError::UnreadableInfo { reason: shown(reason) }));
    }
    if info.is_string() {
        return Err(refused(IngestError::StringFormat { shown: shown(&info.name()) }));
    }
    validate_shape(info.channel_count(), info.nominal_rate(), limits).map_err(refused)?;
    let (rate, count) = (info.nominal_rate(), info.channel_count());
    let mut inlet = Inlet::new(&info, inlet_buffer_seconds(rate, count), true);
    inlet.open(spec.timeout_s).map_err(|e| Status::unavailable(format!("opening LSL stream {}: {e}", shown(&info.name()))))?;
    let full = inlet.info(spec.timeout_s).map_err(|e| Status::unavailable(format!("reading LSL stream {}: {e}", shown(&info.name()))))?;
    let mut warnings = Warnings::default();
    let header = stream_header(&spec, &full, &mut warnings);
    validate_header(&header, limits).map_err(refused)?;
    let marker_inlet = if spec.marker_predicate.is_empty() {
        None
    } else {
        let info = resolve_one(lsl, &spec.marker_predicate, spec.timeout_s, "marker")?;
        let mut marker_inlet = Inlet::new(&info, 360, true);
        marker_inlet
            .open(spec.timeout_s)
            .map_err(|e| Status::unavailable(format!("opening LSL marker stream {}: {e}", shown(&info.name()))))?;
        Some((marker_inlet, info.name(), info.is_string()))
    };
    let session = sessions.open(header.clone(), Source::Lsl, &spec.owner)?;
    session.note_warnings(&warnings);
    tracing::info!(session = %spec.session_id, stream = %full.name(), host = %full.hostname(), channels = count, rate, "LSL source connected");
    let marker_stream = marker_inlet.as_ref().map(|(_, name, _)| name.clone()).unwrap_or_default();
    let door = inlet::Door {
        session: session.clone(),
        shutdown: shutdown.clone(),
        non_finite: sessions.config().non_finite_policy,
        limits: limits.clone(),
    };
    if let Some((marker_inlet, name, is_string)) = marker_inlet {
        let door = door.clone();
        let thread = std::thread::Builder::new()
            .name(format!("lsl-markers-{}", spec.session_id))
            .spawn(move || inlet::markers_loop(marker_inlet, name, is_string, door))
            .map_err(|e| Status::internal(e.to_string()))?;
        session.add_source_thread(thread);
    }
    let stream = inlet::DataStream { name: full.name(), channels: count, rate, stall_seconds, lsl: lsl.clone() };
    let thread = std::thread::Builder::new()
        .name(format!("lsl-in-{}", spec.session_id))
        .spawn(move || inlet::data_loop(inlet, stream, door))
        .map_err(|e| Status::internal(e.to_string()))?;
    session.add_source_thread(thread);
    Ok(pb::ConnectLslReply {
        header: Some(header),
        source_id: full.source_id(),
        hostname: full.hostname(),
        marker_stream,
        warnings: warnings.into_vec(),
    })
}

/// The header an LSL stream's info becomes, checked as it is given except for its labels: a
/// device cannot be told to fix them, so missing ones are named Ch<i> and repeated ones get a
/// suffix (-2, -3...), with a warning; a label over limits.label_bytes is still refused.
fn stream_header(spec: &SourceSpec, full: &StreamInfo, warnings: &mut Warnings) -> pb::StreamHeader {
    let count = full.channel_count();
    let (labels, repaired) = repair_labels(full.channel_labels(), count);
    if repaired > 0 {
        warnings.add(pb::IngestWarningKind::HeaderRepaired, "header_repaired", 0, repaired as u64, || {
            format!(
                "the LSL stream's info leaves {repaired} of its {count} channel labels missing or repeated: named {}",
                labels.join(", ")
            )
        });
    }
    let kind = full.kind();
    pb::StreamHeader {
        session_id: spec.session_id.clone(),
        stream_name: full.name(),
        modality: modality_of(&kind, spec.modality) as i32,
        channels: labels
            .into_iter()
            .map(|label| pb::Channel { label, r#type: kind.clone(), unit: String::new(), position: None, layout: None })
            .collect(),
        nominal_rate_hz: full.nominal_rate(),
        clock: pb::ClockSource::Lsl as i32,
    }
}

/// `count` unique, non-empty labels from what a stream's info gives, and how many it changed:
/// all Ch1..ChN when it gives another number of them.
fn repair_labels(given: Vec<String>, count: usize) -> (Vec<String>, usize) {
    if given.len() != count {
        return ((1..=count).map(|i| format!("Ch{i}")).collect(), count);
    }
    let mut seen = std::collections::HashSet::with_capacity(count);
    let mut repaired = 0;
    let labels = given
        .into_iter()
        .enumerate()
        .map(|(i, label)| {
            let base = if label.is_empty() { format!("Ch{}", i + 1) } else { label.clone() };
            let unique = std::iter::once(base.clone())
                .chain((2..).map(|n| format!("{base}-{n}")))
                .find(|l| !seen.contains(l))
                .expect("an unused suffix exists");
            repaired += usize::from(unique != label);
            seen.insert(unique.clone());
            unique
        })
        .collect();
    (labels, repaired)
}

/// Largest buffer an inlet may hold for a stream that is not pulled (the server's worker is
/// busy): liblsl buffers `seconds x rate x channels` samples.
const INLET_BUFFER_BYTES: f64 = 256.0 * 1024.0 * 1024.0;

/// Seconds of an inlet's buffer: liblsl's default (360 s) when it fits [`INLET_BUFFER_BYTES`].
fn inlet_buffer_seconds(rate: f64, channels: usize) -> i32 {
    (INLET_BUFFER_BYTES / (rate * channels as f64 * 4.0)).clamp(1.0, 360.0) as i32
}

/// Connects a configured source in the background, retrying until its streams appear (a rig
/// may start after the server) or the server stops.
pub fn keep_connecting(
    lsl: Option<Lsl>,
    source: crate::config::LslSourceConfig,
    timeout_s: f64,
    stall_seconds: f64,
    sessions: Arc<SessionManager>,
    shutdown: Shutdown,
) {
    let Some(lsl) = lsl else {
        tracing::error!(session = %source.session_id, "configured LSL source ignored: LabStreamingLayer is not available");
        return;
    };
    tokio::task::spawn_blocking(move || {
        let mut attempts = 0u32;
        while !shutdown.is_triggered() {
            let spec = SourceSpec {
                session_id: source.session_id.clone(),
                data_predicate: source.data.clone(),
                marker_predicate: source.markers.clone(),
                timeout_s,
                modality: pb::Modality::Unspecified,
                owner: Principal::server(),
            };
            match connect(&lsl, spec, &sessions, shutdown.clone(), stall_seconds) {
                Ok(_) => return,
                Err(status) => {
                    attempts += 1;
                    if attempts == 1 || attempts.is_multiple_of(12) {
                        tracing::warn!(session = %source.session_id, error = status.message(), "configured LSL source not connected yet; retrying");
                    }
                    std::thread::sleep(Duration::from_secs(5));
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn missing_and_repeated_labels_are_named_and_the_rest_kept() {
        let given = ["C3", "", "AUX", "AUX", "Ch2", "AUX"].map(String::from).to_vec();
        let (labels, repaired) = super::repair_labels(given, 6);
        assert_eq!(labels, ["C3", "Ch2", "AUX", "AUX-2", "Ch2-2", "AUX-3"]);
        assert_eq!(repaired, 4);
        let (labels, repaired) = super::repair_labels(vec!["A".into()], 3);
        assert_eq!((labels, repaired), (vec!["Ch1".to_string(), "Ch2".into(), "Ch3".into()], 3));
        assert_eq!(super::repair_labels(vec!["C3".into(), "C4".into()], 2).1, 0);
    }
}
