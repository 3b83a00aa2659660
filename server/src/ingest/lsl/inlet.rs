//! An LSL inlet's thread: pulls whole chunks (or markers), puts timestamps on this machine's LSL
//! clock, turns lost samples into a gap, and hands everything to the session's worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use myelin_lsl::{Inlet, Lsl};
use myelin_proto::v1 as pb;
use tokio::sync::oneshot;

use super::super::error::IngestError;
use super::super::validate::{check_timestamps, refuse_non_finite, screen_samples, validate_markers};
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

/// What the inlet thread knows of the stream it feeds: where the next sample goes.
struct Position {
    next_index: u64,
    last_ts: Option<f64>,
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
        correct_timestamps(stamps, clock.offset, position.last_ts, rate, || lsl.local_clock(), &mut warnings, position.next_index);
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

/// Puts a pulled chunk's timestamps on this machine's LSL clock (`offset`), never going back
/// from the last one (a smaller new offset estimate is measurement jitter, and the session would
/// refuse it). A timestamp that cannot be right (not finite, or more than [`MAX_GAP_S`] from the
/// one before it) becomes the one before it plus a sample period (a stream's first, if not
/// finite, this machine's clock `now`), with a warning: kept, one bogus value would hold every
/// later timestamp at it, since they may not go back. (A stream's first finite timestamp is
/// taken as it is: some sources stamp their samples and markers with Unix time, consistently.)
fn correct_timestamps(
    stamps: &mut [f64],
    offset: f64,
    last: Option<f64>,
    rate: f64,
    now: impl FnOnce() -> f64,
    warnings: &mut Warnings,
    first_index: u64,
) {
    let mut now = Some(now);
    let mut previous = last;
    let mut repaired = 0;
    for t in stamps.iter_mut() {
        let corrected = *t + offset;
        let plausible = corrected.is_finite() && previous.is_none_or(|p| (corrected - p).abs() <= MAX_GAP_S);
        *t = match (plausible, previous) {
            (true, Some(p)) => corrected.max(p),
            (true, None) => corrected,
            (false, Some(p)) => p + 1.0 / rate,
            (false, None) => now.take().map_or(0.0, |now| now()),
        };
        repaired += u64::from(!plausible);
        previous = Some(*t);
    }
    if repaired > 0 {
        warnings.add(pb::IngestWarningKind::TimestampsRepaired, "timestamps_repaired", first_index, repaired, || {
            format!(
                "{repaired} timestamps from the LSL stream were not finite or more than a day off: each set one sample period after the one before"
            )
        });
    }
}

/// Longest silence the LSL door counts as a gap of the stream (a source lost and back); a jump
/// of its timestamps beyond it is a clock jump or a bogus timestamp, and the samples follow on.
const MAX_GAP_S: f64 = 86_400.0;

/// The sample index of a chunk whose first timestamp is `first_ts`: right after the last chunk,
/// or after the samples its timestamps say are missing (a gap, more than 0.1 s of them), or,
/// for a jump beyond [`MAX_GAP_S`], right after the last chunk with a warning.
fn place_chunk(position: &Position, first_ts: f64, rate: f64, warnings: &mut Warnings) -> u64 {
    let Some(last) = position.last_ts else { return position.next_index };
    let missing = ((first_ts - last) * rate).round() - 1.0;
    if !(missing > (0.1 * rate).max(2.0)) {
        return position.next_index;
    }
    if missing > MAX_GAP_S * rate {
        let index = position.next_index;
        warnings.add(pb::IngestWarningKind::ClockJump, "clock_jump", index, 1, || {
            format!("LSL timestamps jumped by {:+.3} s, more than a day: taken for a clock jump, not a gap", first_ts - last)
        });
        return index;
    }
    position.next_index + missing as u64
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
    fn timestamps_go_onto_this_clock_never_back_and_never_non_finite() {
        use super::{Warnings, correct_timestamps};
        let mut warnings = Warnings::default();
        // A smaller offset than last time (jitter) would take the first one back: held at the last.
        let mut stamps = [10.0, 10.01, f64::NAN, 10.03];
        correct_timestamps(&mut stamps, -0.005, Some(10.0), 100.0, || unreachable!(), &mut warnings, 7);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert_eq!(stamps[0], 10.0, "held at the last one");
        assert!(near(stamps[1], 10.005));
        assert!(near(stamps[2], 10.015), "the one before it plus a sample period: {stamps:?}");
        assert!(near(stamps[3], 10.025));
        let list = warnings.into_vec();
        assert_eq!((list.len(), list[0].sample_index, list[0].count), (1, 7, 1));
        // The very first timestamp of a stream, if not finite, is this machine's clock now.
        let mut first = [f64::INFINITY, 5.0];
        correct_timestamps(&mut first, 0.0, None, 100.0, || 4.5, &mut Warnings::default(), 0);
        assert_eq!(first, [4.5, 5.0]);
        // One bogus timestamp a century ahead does not hold every later one at it.
        let mut warnings = Warnings::default();
        let mut jumpy = [20.0, 3.2e9, 20.02, 1e300, 20.04];
        correct_timestamps(&mut jumpy, 0.0, Some(19.99), 100.0, || unreachable!(), &mut warnings, 0);
        assert!(jumpy.iter().zip([20.0, 20.01, 20.02, 20.03, 20.04]).all(|(a, b)| near(*a, b)), "{jumpy:?}");
        assert_eq!(warnings.into_vec()[0].count, 2);
        // A stream stamped in Unix time (its markers too) keeps its timestamps.
        let mut unix = [1.8e9, 1.8e9 + 0.01];
        correct_timestamps(&mut unix, 0.0, None, 100.0, || unreachable!(), &mut Warnings::default(), 0);
        assert_eq!(unix, [1.8e9, 1.8e9 + 0.01]);
    }

    #[test]
    fn a_jump_of_the_timestamps_is_a_gap_up_to_a_day_and_a_clock_jump_beyond() {
        use super::{Position, Warnings, place_chunk};
        let position = Position { next_index: 1000, last_ts: Some(100.0) };
        let mut warnings = Warnings::default();
        assert_eq!(place_chunk(&position, 100.01, 100.0, &mut warnings), 1000, "the next sample");
        assert_eq!(place_chunk(&position, 110.0, 100.0, &mut warnings), 1000 + 999, "10 s lost: a gap");
        assert!(warnings.is_empty());
        for bogus in [1e300, 100.0 + 2.0 * 86_400.0, f64::MAX] {
            assert_eq!(place_chunk(&position, bogus, 100.0, &mut warnings), 1000, "{bogus}: no gap of 10^300 samples");
        }
        assert_eq!(warnings.into_vec()[0].count, 3);
        assert_eq!(place_chunk(&Position { next_index: 0, last_ts: None }, 1e300, 100.0, &mut Warnings::default()), 0);
    }

    #[test]
    fn markers_parse_as_codes_or_labels() {
        assert_eq!(super::parse_marker("2"), (2, String::new()));
        assert_eq!(super::parse_marker(" 1.0 "), (1, String::new()));
        assert_eq!(super::parse_marker("target"), (0, "target".into()));
    }
}
