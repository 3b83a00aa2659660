//! An LSL inlet's thread: pulls whole chunks (or markers), puts timestamps on this machine's LSL
//! clock, turns lost samples into a gap, and hands everything to the session's worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use myelin_lsl::Inlet;
use myelin_proto::v1 as pb;
use tokio::sync::oneshot;

use crate::clock;
use crate::metrics as m;
use crate::session::Session;
use crate::session::command::{Chunk, ChunkDone};
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

/// Pulls the data stream until shutdown, then ends the session.
///
/// Each chunk is handed to the session's worker without waiting for it to be taken: its outcome
/// is read just before the next chunk is sent, a pull later, when it is long there. So the
/// worker's answer never wakes this thread, which on a small machine would compete for a core
/// with the window's decoding.
pub fn data_loop(
    mut inlet: Inlet,
    name: String,
    channels: usize,
    rate: f64,
    session: Arc<Session>,
    shutdown: Shutdown,
    stall_seconds: f64,
) {
    let max_samples = ((rate * 0.5).ceil() as usize).clamp(64, 16_384);
    let mut data = vec![0.0f32; max_samples * channels];
    let mut timestamps = vec![0.0f64; max_samples];
    // Sent to the worker, and back (in its outcome) for the next chunk.
    let mut chunk = Chunk::default();
    let mut in_flight: Option<(oneshot::Receiver<ChunkDone>, f64)> = None;
    let mut clock = ClockSync::new(name.clone());
    let mut position = Position { next_index: 0, last_ts: None };
    let mut last_data = Instant::now();
    let mut lost = false;
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
            if !lost && last_data.elapsed().as_secs_f64() > stall_seconds && position.last_ts.is_some() {
                lost = true;
                metrics::counter!(m::LSL_STREAM_LOSSES).increment(1);
                tracing::warn!(session = %session.id, stream = %name, "LSL stream lost; reconnecting automatically");
            }
            continue;
        }
        last_data = Instant::now();
        let received_ns = clock::now_ns();
        if let Some((answer, last)) = in_flight.take() {
            match settle(answer, last, &mut position, &session, &name) {
                Some(back) => chunk = back,
                None => break,
            }
        }
        // Corrected timestamps never go backwards: a new offset estimate smaller than the last
        // one (measurement jitter) would otherwise make the session refuse the chunk.
        let mut floor = position.last_ts.unwrap_or(f64::NEG_INFINITY);
        for t in &mut timestamps[..n] {
            *t = (*t + clock.offset).max(floor);
            floor = *t;
        }
        let mut first_index = position.next_index;
        if let Some(last) = position.last_ts {
            let missing = ((timestamps[0] - last) * rate).round() - 1.0;
            if missing > gap_threshold {
                first_index += missing as u64;
            }
        }
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
        chunk.timestamps.extend_from_slice(&timestamps[..n]);
        match session.submit_blocking(std::mem::take(&mut chunk)) {
            Ok(answer) => in_flight = Some((answer, timestamps[n - 1])),
            Err(error) => {
                tracing::error!(session = %session.id, stream = %name, %error, "LSL source stopped");
                break;
            }
        }
    }
    if let Some((answer, last)) = in_flight.take() {
        settle(answer, last, &mut position, &session, &name);
    }
    session.end();
}

/// Reads a chunk's outcome, moves the stream position on, and returns the chunk's buffers;
/// `None` when the session's worker is gone.
fn settle(answer: oneshot::Receiver<ChunkDone>, last_ts: f64, position: &mut Position, session: &Session, name: &str) -> Option<Chunk> {
    let Ok(done) = answer.blocking_recv() else {
        tracing::error!(session = %session.id, stream = %name, "LSL source stopped: the session's worker is gone");
        return None;
    };
    match done.accepted {
        Ok(_) => {
            position.next_index = done.accepted_until;
            position.last_ts = Some(last_ts);
        }
        Err(error) => tracing::warn!(session = %session.id, stream = %name, %error, "LSL chunk refused"),
    }
    for warning in done.warnings.iter() {
        tracing::info!(session = %session.id, stream = %name, warning = %warning.message, "LSL source");
    }
    Some(done.chunk)
}

/// Pulls the marker stream while the session is live.
pub fn markers_loop(mut inlet: Inlet, name: String, is_string: bool, session: Arc<Session>, shutdown: Shutdown) {
    let mut clock = ClockSync::new(name.clone());
    let mut numbers = vec![0.0f32; 256];
    let mut stamps = vec![0.0f64; 256];
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
        if session.ingest_markers_blocking(markers).is_err() {
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
