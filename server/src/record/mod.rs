//! Session recording to XDF: the stream's header and raw samples, its markers, every
//! attachment's predictions (one JSON string per prediction) and, for LSL sources, the measured
//! clock offsets. A dedicated thread owns the file. The session's worker hands it copies of
//! samples and markers through a bounded queue and never waits; predictions reach the same queue
//! through a tap on the session's route, as they are published. Pending data is written and flushed at least
//! every `flush_interval_ms` in one write, so a crash (even SIGKILL) leaves a file that ends on
//! a chunk boundary and lacks at most that interval.

mod event;
mod writer;
pub mod xdf;
pub mod xdf_read;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use myelin_proto::v1 as pb;

use crate::metrics as m;
use crate::publish::SessionRoute;
use crate::publish::tap::Tap;

pub use event::{CLOCK_STREAM, DATA_STREAM, Event, MARKER_STREAM, RAW_TIMESTAMP_STREAM};

/// A recording's file, created with its headers written and flushed, before it is started: the
/// disk work of opening a session, done before the session registry is locked (a stalled disk
/// delays only the session being opened).
pub struct RecordingFile {
    file: std::fs::File,
    pub path: PathBuf,
    session_id: String,
}

impl RecordingFile {
    /// Creates `<dir>/<session id>-<UTC stamp>.xdf` with the file and stream headers. `source`:
    /// the door the samples come through, as the header names it.
    pub fn create(dir: &Path, header: &pb::StreamHeader, source: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let stamp = crate::clock::utc_stamp();
        let path = dir.join(format!("{}-{}.xdf", header.session_id, stamp.replace(['.', ':'], "")));
        let mut file = std::fs::File::create_new(&path)?;
        let mut out = xdf::MAGIC.to_vec();
        xdf::file_header(&mut out, &stamp);
        stream_headers(&mut out, header, source);
        xdf::boundary(&mut out);
        file.write_all(&out)?;
        file.sync_data()?;
        Ok(Self { file, path, session_id: header.session_id.clone() })
    }

    /// The session was not opened after all: the file goes (disk work: call it unlocked).
    pub fn discard(self) {
        let Self { file, path, .. } = self;
        drop(file);
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), %error, "removing the recording of a session that did not open");
        }
    }

    /// Starts the writer thread and records the predictions of `route` from now on. A write error
    /// that stops the recording is set in `failure`. No disk work here.
    /// `queue`: events it holds while the disk is slow (`recording.queue_events`).
    pub fn start(
        self,
        flush_interval: Duration,
        queue: usize,
        route: &SessionRoute,
        failure: Arc<OnceLock<String>>,
    ) -> std::io::Result<Recorder> {
        let Self { file, path, session_id } = self;
        let (sender, receiver) = crossbeam_channel::bounded(queue);
        let (writer_path, failed) = (path.clone(), failure.clone());
        let name = format!("record-{session_id}");
        let writer = std::thread::Builder::new().name(name).spawn(move || {
            if let Err(error) = writer::write_loop(file, receiver, flush_interval, &session_id) {
                metrics::counter!(m::RECORDING_ERRORS).increment(1);
                tracing::error!(path = %writer_path.display(), %error, "recording failed: the file ends with the last whole chunk written");
                let _ = failed
                    .set(format!("writing {} failed: {error}; the file ends with the last whole chunk written", writer_path.display()));
            }
        })?;
        tracing::info!(path = %path.display(), "recording session");
        let drops = Arc::new(Drops::new(path.clone()));
        let (prediction_sender, prediction_drops) = (sender.clone(), drops.clone());
        let predictions = route.tap(move |p| send(&prediction_sender, &prediction_drops, Event::Prediction(p.clone())));
        Ok(Recorder { sender: Some(sender), path, drops, predictions: Some(predictions), writer: Some(writer) })
    }
}

/// The data, marker and clock-offset streams' headers.
fn stream_headers(out: &mut Vec<u8>, header: &pb::StreamHeader, source: &str) {
    let channels: Vec<(String, String, String)> =
        header.channels.iter().map(|c| (c.label.clone(), c.unit.clone(), c.r#type.clone())).collect();
    let modality =
        pb::Modality::try_from(header.modality).map(|m| m.as_str_name().trim_start_matches("MODALITY_").to_string()).unwrap_or_default();
    xdf::stream_header(
        out,
        DATA_STREAM,
        &xdf::StreamSpec {
            // The name is optional in a header, not in an XDF file (pyxdf fails without one).
            name: if header.stream_name.is_empty() { &header.session_id } else { &header.stream_name },
            kind: &modality,
            channels: &channels,
            rate: header.nominal_rate_hz,
            string_format: false,
            source_id: &header.session_id,
            desc: format!("<myelin><session>{}</session><source>{source}</source></myelin>", header.session_id),
        },
    );
    // The session's one-channel string streams: its markers and its sources' clock offsets.
    let strings = |out: &mut Vec<u8>, id: u32, suffix: &str, kind: &str, label: &str, desc: &str| {
        let name = format!("{}/{suffix}", header.session_id);
        let channels = [(label.to_string(), String::new(), "Markers".to_string())];
        let spec =
            xdf::StreamSpec { name: &name, kind, channels: &channels, rate: 0.0, string_format: true, source_id: &name, desc: desc.into() };
        xdf::stream_header(out, id, &spec);
    };
    strings(out, MARKER_STREAM, "markers", "Markers", "code", "");
    strings(
        out,
        CLOCK_STREAM,
        "clock-offsets",
        "ClockOffsets",
        "offset",
        "<note>LSL clock offsets measured for this session's sources (JSON); the data timestamps are already corrected onto the recording machine's LSL clock</note>",
    );
}

/// The sending side, held by the session's worker. Dropping it stops the recording: the writer
/// writes what is queued and the stream footers, closes the file, and is joined.
pub struct Recorder {
    sender: Option<Sender<Event>>,
    pub path: PathBuf,
    drops: Arc<Drops>,
    predictions: Option<Tap>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    /// Never blocks (see [`send`]).
    pub fn send(&self, event: Event) {
        if let Some(sender) = &self.sender {
            send(sender, &self.drops, event);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Both senders gone (the tap holds the other), the writer finishes the file.
        self.predictions.take();
        self.sender.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Never blocks; a full queue (the disk cannot keep up) or a writer that stopped (an I/O error,
/// logged when it happened) is counted, and logged now and then (see [`Drops`]).
fn send(sender: &Sender<Event>, drops: &Drops, event: Event) {
    match sender.try_send(event) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => drops.note(true),
        Err(TrySendError::Disconnected(_)) => drops.note(false),
    }
}

/// How often a recording that keeps dropping events says so again.
const DROP_WARNING_INTERVAL_NS: u64 = 10_000_000_000;

/// A recording's dropped events: each counted (`myelin_recording_dropped_total`); a full queue
/// (a stalled disk drops thousands of events a second) warned about once, then once per
/// [`DROP_WARNING_INTERVAL_NS`] with the count since, never once per event.
struct Drops {
    path: PathBuf,
    since_warning: AtomicU64,
    /// Server clock of the last warning (0: none yet).
    warned_ns: AtomicU64,
}

impl Drops {
    fn new(path: PathBuf) -> Self {
        Self { path, since_warning: AtomicU64::new(0), warned_ns: AtomicU64::new(0) }
    }

    fn note(&self, queue_full: bool) {
        metrics::counter!(m::RECORDING_DROPPED).increment(1);
        if !queue_full {
            // The writer stopped on an I/O error, logged (and set on the session) when it happened.
            return;
        }
        self.since_warning.fetch_add(1, Ordering::Relaxed);
        let (now, last) = (crate::clock::now_ns(), self.warned_ns.load(Ordering::Relaxed));
        let due = last == 0 || now.saturating_sub(last) >= DROP_WARNING_INTERVAL_NS;
        if due && self.warned_ns.compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let dropped = self.since_warning.swap(0, Ordering::Relaxed);
            tracing::warn!(path = %self.path.display(), dropped, "recording queue full (the disk does not keep up): data not recorded; said again at most every 10 s");
        }
    }
}
