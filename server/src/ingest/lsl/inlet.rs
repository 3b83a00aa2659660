//! An LSL inlet's thread: pulls whole chunks (or markers), puts timestamps on this machine's LSL
//! clock, turns lost samples into a gap, and hands everything to the session's worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use myelin_lsl::{Inlet, Lsl};
use myelin_proto::v1 as pb;
use tokio::sync::oneshot;

use super::super::error::IngestError;
use super::super::validate::{check_timestamps, refuse_non_finite, screen_samples, validate_markers};
use super::timeline::{Jump, Position, correct_timestamps, place_chunk};
use crate::clock;
use crate::config::{LimitsConfig, NonFinitePolicy, TimestampPolicy};
use crate::id::shown;
use crate::metrics as m;
use crate::session::command::{Chunk, ChunkDone};
use crate::session::warnings::Warnings;
use crate::session::{Session, Source};
use crate::shutdown::Shutdown;

/// How often the clock offset is re-measured.
const CLOCK_REFRESH: Duration = Duration::from_secs(5);

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
                session.set_clock_offset(offset);
                metrics::gauge!(m::LSL_CLOCK_UNCERTAINTY, "stream" => self.stream.clone()).set(uncertainty);
                let json = serde_json::json!({ "stream": self.stream, "offset": offset, "uncertainty": uncertainty }).to_string();
                session.record_clock_offset(0.0, json);
            }
            Err(error) => tracing::debug!(stream = %self.stream, %error, "clock offset not measured this time"),
        }
    }
}

/// What an inlet thread feeds, and the rules it applies on the way in.
#[derive(Clone)]
pub struct Door {
    pub session: Arc<Session>,
    pub shutdown: Shutdown,
    pub non_finite: NonFinitePolicy,
    pub limits: LimitsConfig,
}

/// The data stream an inlet thread pulls.
pub struct DataStream {
    pub name: String,
    pub channels: usize,
    pub rate: f64,
    pub stall_seconds: f64,
    /// For this machine's LSL clock (a first timestamp that is not finite gets it).
    pub lsl: Lsl,
}

/// Pulls the data stream until shutdown, then ends the session.
///
/// Each chunk is handed to the session's worker without waiting for it to be taken: its outcome
/// is read just before the next chunk is sent, a pull later, when it is long there. So the
/// worker's answer never wakes this thread, which on a small machine would compete for a core
/// with the window's decoding.
pub fn data_loop(mut inlet: Inlet, stream: DataStream, door: Door) {
    let DataStream { name, channels, rate, stall_seconds, lsl } = stream;
    let session = door.session.clone();
    let max_samples = ((rate * 0.5).ceil() as usize).clamp(64, 16_384);
    let mut data = vec![0.0f32; max_samples * channels];
    let mut timestamps = vec![0.0f64; max_samples];
    // Sent to the worker, and back (in its outcome) for the next chunk.
    let mut chunk = Chunk::default();
    let mut in_flight: Option<InFlight> = None;
    let mut clock = ClockSync::new(name.clone());
    let mut position = Position { next_index: 0, last_ts: None };
    let mut told = Told::default();
    let mut jump = Jump::default();
    let mut last_data = Instant::now();
    let mut lost = false;
    while !door.shutdown.is_triggered() {
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
            if !lost && last_data.elapsed().as_secs_f64() > stall_seconds && position.last_ts.is_some() {
                lost = true;
                metrics::counter!(m::LSL_STREAM_LOSSES).increment(1);
                tracing::warn!(session = %session.id, stream = %name, "LSL stream lost; reconnecting automatically");
            }
            continue;
        }
        last_data = Instant::now();
        let received_ns = clock::now_ns();
        if let Some(flight) = in_flight.take() {
            match settle(flight, &mut position, &session, &mut told) {
                Some(back) => chunk = back,
                None => break,
            }
        }
        let mut warnings = Warnings::default();
        let stamps = &mut timestamps[..n];
        let last = position.last_ts;
        correct_timestamps(stamps, clock.offset, last, rate, || lsl.local_clock(), &mut jump, &mut warnings, position.next_index);
        let first_index = place_chunk(&position, stamps[0], rate, &mut warnings);
        if lost {
            lost = false;
            tracing::info!(session = %session.id, stream = %name, missing = first_index - position.next_index, "LSL stream back");
        }
        chunk.first_index = first_index;
        chunk.received_ns = received_ns;
        chunk.regular = None;
        chunk.samples.clear();
        chunk.samples.extend_from_slice(&data[..n * channels]);
        chunk.timestamps.clear();
        chunk.timestamps.extend_from_slice(stamps);
        // The rules of the gRPC door. LSL cannot be told no: refused samples count as missing.
        if let Err(refusal) = screen_samples(&mut chunk, channels, door.non_finite, &mut warnings) {
            let refusal = refusal.counted(Source::Lsl);
            refuse_non_finite(&mut chunk, channels, &refusal, &mut warnings);
        }
        if let Err(refusal) = check_timestamps(first_index, &chunk.timestamps, TimestampPolicy::Repair) {
            unreachable_refusal(&session, &name, refusal, &mut told);
            continue;
        }
        let last_ts = stamps[n - 1];
        match session.submit_blocking(std::mem::take(&mut chunk)) {
            Ok(answer) => in_flight = Some(InFlight { answer, last_ts, warnings }),
            Err(error) => {
                tracing::error!(session = %session.id, stream = %name, %error, "LSL source stopped");
                session.source_failed(format!("LSL source {} stopped: {error}", shown(&name)));
                break;
            }
        }
    }
    if let Some(flight) = in_flight.take() {
        settle(flight, &mut position, &session, &mut told);
    }
    session.end();
}

/// A chunk handed to the worker, whose outcome is read a pull later.
struct InFlight {
    answer: oneshot::Receiver<ChunkDone>,
    last_ts: f64,
    /// What the door warned about on the way in.
    warnings: Warnings,
}

/// A refusal the LSL door's own repairs should have made impossible: counted, logged the first
/// time, the chunk dropped (its samples become a gap).
#[cold]
fn unreachable_refusal(session: &Session, stream: &str, refusal: IngestError, told: &mut Told) {
    let refusal = refusal.counted(Source::Lsl);
    if !std::mem::replace(&mut told.refused, true) {
        tracing::error!(session = %session.id, stream, %refusal, "LSL chunk refused (said once; myelin_chunks_rejected_total counts them)");
    }
}

/// What this source has logged once: each warning kind (the session keeps the counts), and a
/// refused chunk.
#[derive(Default)]
struct Told {
    kinds: Vec<i32>,
    refused: bool,
}

/// Reads a chunk's outcome, moves the stream position on, keeps its warnings on the session, and
/// returns the chunk's buffers; `None` when the session's worker is gone.
fn settle(flight: InFlight, position: &mut Position, session: &Session, told: &mut Told) -> Option<Chunk> {
    let InFlight { answer, last_ts, mut warnings } = flight;
    let Ok(done) = answer.blocking_recv() else {
        tracing::error!(session = %session.id, "LSL source stopped: the session's worker is gone");
        session.source_failed("LSL source stopped: the session's worker is gone".into());
        return None;
    };
    match done.accepted {
        Ok(_) => {
            position.next_index = done.accepted_until;
            position.last_ts = Some(last_ts);
        }
        Err(error) => unreachable_refusal(session, "data", IngestError::Session(error), told),
    }
    warnings.extend(done.warnings);
    session.note_warnings(&warnings);
    for warning in warnings.iter() {
        if told.kinds.contains(&warning.kind) {
            continue;
        }
        told.kinds.push(warning.kind);
        tracing::warn!(session = %session.id, warning = %warning.message, "LSL source (said once per kind; SessionInfo.warnings keeps the count)");
    }
    Some(done.chunk)
}

/// Pulls the marker stream while the session is live. Markers the rules refuse (a non-finite
/// timestamp, a label over limits.label_bytes) are dropped, each kept as a warning on the session.
pub fn markers_loop(mut inlet: Inlet, name: String, is_string: bool, door: Door) {
    let session = door.session.clone();
    let mut clock = ClockSync::new(name.clone());
    let mut numbers = vec![0.0f32; 256];
    let mut stamps = vec![0.0f64; 256];
    while !door.shutdown.is_triggered() && session.is_live() {
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
        let mut warnings = Warnings::default();
        let markers: Vec<pb::Marker> = pulled
            .into_iter()
            .map(|(text, t)| {
                let (code, label) = parse_marker(&text);
                pb::Marker { timestamp: t + clock.offset, code, label }
            })
            .filter(|marker| match validate_markers(std::slice::from_ref(marker), &door.limits) {
                Ok(()) => true,
                Err(refusal) => {
                    let refusal = refusal.counted(Source::Lsl);
                    warnings.add(pb::IngestWarningKind::MarkerRefused, "marker_refused", 0, 1, || format!("{refusal}: dropped"));
                    false
                }
            })
            .collect();
        session.note_warnings(&warnings);
        if !markers.is_empty() && session.ingest_markers_blocking(markers).is_err() {
            break;
        }
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
