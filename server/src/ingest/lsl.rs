//! LabStreamingLayer sources: one dedicated thread per inlet pulls whole chunks and feeds the
//! session through the same path as gRPC ingest (which is synchronous and never waits on I/O).
//!
//! * Clock: each inlet's offset to this machine's LSL clock is measured every few seconds
//!   (liblsl time_correction), added to every timestamp, exposed as metrics, and recorded.
//! * Loss: no samples for `stall_seconds` marks the stream lost (logged, counted); liblsl
//!   reconnects by itself when a stream with the same source id returns. The samples missed
//!   meanwhile are derived from the timestamps and recorded as a gap of the session, so windows
//!   that touch it are published as ERROR instead of being decoded on made-up data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use myelin_lsl::{Inlet, Lsl, StreamInfo};
use myelin_proto::v1 as pb;
use tonic::Status;

use crate::clock;
use crate::metrics as m;
use crate::publish::Hub;
use crate::session::{ChunkTimestamps, Session, SessionManager};
use crate::shutdown::Shutdown;

pub struct SourceSpec {
    pub session_id: String,
    pub data_predicate: String,
    pub marker_predicate: String,
    pub timeout_s: f64,
    pub modality: pb::Modality,
}

/// How often the clock offset is re-measured.
const CLOCK_REFRESH: Duration = Duration::from_secs(5);

fn resolve_one(lsl: &Lsl, predicate: &str, timeout: f64, what: &str) -> Result<StreamInfo, Status> {
    let mut found = lsl.resolve(predicate, timeout);
    if found.is_empty() {
        return Err(Status::not_found(format!("no LSL {what} stream matches {predicate:?} (waited {timeout} s)")));
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
/// Blocking (resolution waits): call from a blocking thread.
pub fn connect(
    lsl: &Lsl,
    spec: SourceSpec,
    sessions: &SessionManager,
    hub: Hub,
    shutdown: Shutdown,
    stall_seconds: f64,
) -> Result<pb::ConnectLslReply, Status> {
    let info = resolve_one(lsl, &spec.data_predicate, spec.timeout_s, "data")?;
    if info.is_string() {
        return Err(Status::invalid_argument(format!("LSL stream {:?} carries strings; data streams must be numeric", info.name())));
    }
    let mut inlet = Inlet::new(&info, 360, true);
    inlet.open(spec.timeout_s).map_err(|e| Status::unavailable(format!("opening LSL stream {:?}: {e}", info.name())))?;
    let full = inlet.info(spec.timeout_s).map_err(|e| Status::unavailable(format!("reading LSL stream {:?}: {e}", info.name())))?;
    let rate = full.nominal_rate();
    if !(rate > 0.0) {
        return Err(Status::invalid_argument(format!("LSL stream {:?} has an irregular rate; decoding needs a nominal rate", full.name())));
    }
    let count = full.channel_count();
    let mut labels = full.channel_labels();
    if labels.len() != count || labels.iter().any(String::is_empty) {
        labels = (1..=count).map(|i| format!("Ch{i}")).collect();
    }
    let header = pb::StreamHeader {
        session_id: spec.session_id.clone(),
        stream_name: full.name(),
        modality: modality_of(&full.kind(), spec.modality) as i32,
        channels: labels
            .iter()
            .map(|l| pb::Channel { label: l.clone(), r#type: full.kind(), unit: String::new(), position: None, layout: None })
            .collect(),
        nominal_rate_hz: rate,
        clock: pb::ClockSource::Lsl as i32,
    };
    let marker_inlet = if spec.marker_predicate.is_empty() {
        None
    } else {
        let info = resolve_one(lsl, &spec.marker_predicate, spec.timeout_s, "marker")?;
        let mut marker_inlet = Inlet::new(&info, 360, true);
        marker_inlet.open(spec.timeout_s).map_err(|e| Status::unavailable(format!("opening LSL marker stream {:?}: {e}", info.name())))?;
        Some((marker_inlet, info.name(), info.is_string()))
    };
    let session = sessions.open(header.clone(), "lsl")?;
    tracing::info!(session = %spec.session_id, stream = %full.name(), host = %full.hostname(), channels = count, rate, "LSL source connected");
    let marker_stream = marker_inlet.as_ref().map(|(_, name, _)| name.clone()).unwrap_or_default();
    if let Some((marker_inlet, name, is_string)) = marker_inlet {
        let (session, shutdown) = (session.clone(), shutdown.clone());
        let hub = hub.clone();
        std::thread::Builder::new()
            .name(format!("lsl-markers-{}", spec.session_id))
            .spawn(move || markers_loop(marker_inlet, name, is_string, session, hub, shutdown))
            .map_err(|e| Status::internal(e.to_string()))?;
    }
    let name = full.name();
    std::thread::Builder::new()
        .name(format!("lsl-in-{}", spec.session_id))
        .spawn(move || data_loop(inlet, name, count, rate, session, hub, shutdown, stall_seconds))
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(pb::ConnectLslReply { header: Some(header), source_id: full.source_id(), hostname: full.hostname(), marker_stream })
}

/// Keeps an inlet's clock offset fresh and visible.
struct ClockSync {
    stream: String,
    offset: f64,
    refreshed: Option<Instant>,
}

impl ClockSync {
    fn new(stream: String) -> Self {
        Self { stream, offset: 0.0, refreshed: None }
    }

    fn refresh(&mut self, inlet: &mut Inlet, session: &Session) {
        if self.refreshed.is_some_and(|t| t.elapsed() < CLOCK_REFRESH) {
            return;
        }
        // The first estimate may take a few round trips; later ones return at once.
        let timeout = if self.refreshed.is_none() { 2.0 } else { 0.5 };
        self.refreshed = Some(Instant::now());
        match inlet.time_correction(timeout) {
            Ok((offset, uncertainty)) => {
                self.offset = offset;
                metrics::gauge!(m::LSL_CLOCK_OFFSET, "stream" => self.stream.clone()).set(offset);
                metrics::gauge!(m::LSL_CLOCK_UNCERTAINTY, "stream" => self.stream.clone()).set(uncertainty);
                let json = serde_json::json!({ "stream": self.stream, "offset": offset, "uncertainty": uncertainty }).to_string();
                session.record_clock_offset(0.0, json);
            }
            Err(error) => tracing::debug!(stream = %self.stream, %error, "clock offset not measured this time"),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn data_loop(
    mut inlet: Inlet,
    name: String,
    channels: usize,
    rate: f64,
    session: Arc<Session>,
    hub: Hub,
    shutdown: Shutdown,
    stall_seconds: f64,
) {
    let max_samples = ((rate * 0.5).ceil() as usize).clamp(64, 16_384);
    let mut data = vec![0.0f32; max_samples * channels];
    let mut timestamps = vec![0.0f64; max_samples];
    let mut clock = ClockSync::new(name.clone());
    let mut next_index = 0u64;
    let mut last_ts: Option<f64> = None;
    let mut last_data = Instant::now();
    let mut lost = false;
    let mut warnings = Vec::new();
    // A jump of more than this many sample periods between consecutive samples is a gap.
    let gap_threshold = (0.1 * rate).max(2.0);
    while !shutdown.is_triggered() {
        clock.refresh(&mut inlet, &session);
        let n = match inlet.pull_available(&mut data, &mut timestamps, 0.2) {
            Ok(n) => n,
            Err(error) if error.is_lost() => 0,
            Err(error) => {
                tracing::warn!(stream = %name, %error, "LSL pull failed");
                std::thread::sleep(Duration::from_millis(100));
                0
            }
        };
        if n == 0 {
            if !lost && last_data.elapsed().as_secs_f64() > stall_seconds && last_ts.is_some() {
                lost = true;
                metrics::counter!(m::LSL_STREAM_LOSSES).increment(1);
                tracing::warn!(session = %session.id, stream = %name, "LSL stream lost; reconnecting automatically");
            }
            continue;
        }
        last_data = Instant::now();
        let received = clock::now_ns();
        // Corrected timestamps never go backwards: a new offset estimate smaller than the last
        // one (measurement jitter) would otherwise make the session refuse the chunk.
        let mut floor = last_ts.unwrap_or(f64::NEG_INFINITY);
        for t in &mut timestamps[..n] {
            *t = (*t + clock.offset).max(floor);
            floor = *t;
        }
        let mut first_index = next_index;
        if let Some(last) = last_ts {
            let missing = ((timestamps[0] - last) * rate).round() - 1.0;
            if missing > gap_threshold {
                first_index += missing as u64;
            }
        }
        if lost {
            lost = false;
            tracing::info!(session = %session.id, stream = %name, missing = first_index - next_index, "LSL stream back");
        }
        warnings.clear();
        match session.ingest_chunk(
            first_index,
            ChunkTimestamps::PerSample(&timestamps[..n]),
            &data[..n * channels],
            received,
            &hub,
            &mut warnings,
        ) {
            Ok(outcome) => {
                next_index = outcome.accepted_until;
                last_ts = Some(timestamps[n - 1]);
            }
            Err(error) => tracing::warn!(session = %session.id, stream = %name, %error, "LSL chunk refused"),
        }
        for warning in &warnings {
            tracing::info!(session = %session.id, stream = %name, warning = %warning.message, "LSL source");
        }
    }
    session.end();
}

fn markers_loop(mut inlet: Inlet, name: String, is_string: bool, session: Arc<Session>, hub: Hub, shutdown: Shutdown) {
    let mut clock = ClockSync::new(name.clone());
    let mut numbers = vec![0.0f32; 256];
    let mut stamps = vec![0.0f64; 256];
    let mut warnings = Vec::new();
    while !shutdown.is_triggered() && session.is_live() {
        clock.refresh(&mut inlet, &session);
        let pulled: Vec<(String, f64)> = if is_string {
            inlet.pull_strings_available(256, 0.2).unwrap_or_default()
        } else {
            match inlet.pull_available(&mut numbers, &mut stamps, 0.2) {
                Ok(n) => (0..n).map(|i| (numbers[i].to_string(), stamps[i])).collect(),
                Err(_) => Vec::new(),
            }
        };
        if pulled.is_empty() {
            continue;
        }
        let markers: Vec<pb::Marker> = pulled
            .into_iter()
            .map(|(text, t)| {
                let (code, label) = parse_marker(&text);
                pb::Marker { timestamp: t + clock.offset, code, label }
            })
            .collect();
        warnings.clear();
        session.ingest_markers(&markers, &hub, &mut warnings);
    }
}

/// "2" -> (2, ""); "2.0" -> (2, ""); "target" -> (0, "target").
fn parse_marker(text: &str) -> (i32, String) {
    let trimmed = text.trim();
    if let Ok(code) = trimmed.parse::<i32>() {
        return (code, String::new());
    }
    match trimmed.parse::<f64>() {
        Ok(v) if v.fract() == 0.0 && v.abs() < f64::from(i32::MAX) => (v as i32, String::new()),
        _ => (0, trimmed.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn markers_parse_as_codes_or_labels() {
        assert_eq!(super::parse_marker("2"), (2, String::new()));
        assert_eq!(super::parse_marker(" 1.0 "), (1, String::new()));
        assert_eq!(super::parse_marker("target"), (0, "target".into()));
    }
}

/// Connects a configured source in the background, retrying until its streams appear (a rig
/// may start after the server) or the server stops.
pub fn keep_connecting(
    source: crate::config::LslSourceConfig,
    timeout_s: f64,
    stall_seconds: f64,
    sessions: Arc<SessionManager>,
    hub: Hub,
    shutdown: Shutdown,
) {
    let Some(lsl) = sessions.lsl().cloned() else {
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
            };
            match connect(&lsl, spec, &sessions, hub.clone(), shutdown.clone(), stall_seconds) {
                Ok(_) => return,
                Err(status) => {
                    attempts += 1;
                    if attempts == 1 || attempts % 12 == 0 {
                        tracing::warn!(session = %source.session_id, error = status.message(), "configured LSL source not connected yet; retrying");
                    }
                    std::thread::sleep(Duration::from_secs(5));
                }
            }
        }
    });
}
