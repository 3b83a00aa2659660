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
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use myelin_proto::v1 as pb;

use crate::metrics as m;
use crate::publish::SessionRoute;
use crate::publish::tap::Tap;

pub use event::{CLOCK_STREAM, DATA_STREAM, Event, MARKER_STREAM, RAW_TIMESTAMP_STREAM};

/// The sending side, held by the session's worker. Dropping it stops the recording: the writer
/// writes what is queued and the stream footers, closes the file, and is joined.
pub struct Recorder {
    sender: Option<Sender<Event>>,
    pub path: PathBuf,
    predictions: Option<Tap>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    /// Creates the file and its writer thread, and records the predictions of `route` from now on.
    /// A write error that stops the recording is set in `failure`.
    pub fn start(
        dir: &Path,
        header: &pb::StreamHeader,
        flush_interval: Duration,
        source: &str,
        route: &SessionRoute,
        failure: Arc<OnceLock<String>>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let stamp = crate::clock::utc_stamp();
        let path = dir.join(format!("{}-{}.xdf", header.session_id, stamp.replace(['.', ':'], "")));
        let mut file = std::fs::File::create_new(&path)?;
        let mut out = xdf::MAGIC.to_vec();
        xdf::file_header(&mut out, &stamp);
        let channels: Vec<(String, String, String)> =
            header.channels.iter().map(|c| (c.label.clone(), c.unit.clone(), c.r#type.clone())).collect();
        let modality = pb::Modality::try_from(header.modality)
            .map(|m| m.as_str_name().trim_start_matches("MODALITY_").to_string())
            .unwrap_or_default();
        xdf::stream_header(
            &mut out,
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
        let one = |label: &str| vec![(label.to_string(), String::new(), "Markers".to_string())];
        xdf::stream_header(
            &mut out,
            MARKER_STREAM,
            &xdf::StreamSpec {
                name: &format!("{}/markers", header.session_id),
                kind: "Markers",
                channels: &one("code"),
                rate: 0.0,
                string_format: true,
                source_id: &format!("{}/markers", header.session_id),
                desc: String::new(),
            },
        );
        xdf::stream_header(
            &mut out,
            CLOCK_STREAM,
            &xdf::StreamSpec {
                name: &format!("{}/clock-offsets", header.session_id),
                kind: "ClockOffsets",
                channels: &one("offset"),
                rate: 0.0,
                string_format: true,
                source_id: &format!("{}/clock-offsets", header.session_id),
                desc: "<note>LSL clock offsets measured for this session's sources (JSON); the data timestamps are already corrected onto the recording machine's LSL clock</note>".into(),
            },
        );
        xdf::boundary(&mut out);
        file.write_all(&out)?;
        file.sync_data()?;
        let (sender, receiver) = crossbeam_channel::bounded(65_536);
        let (writer_path, session_id, failed) = (path.clone(), header.session_id.clone(), failure.clone());
        let writer = std::thread::Builder::new().name(format!("record-{}", header.session_id)).spawn(move || {
            if let Err(error) = writer::write_loop(file, receiver, flush_interval, &session_id) {
                metrics::counter!(m::RECORDING_ERRORS).increment(1);
                tracing::error!(path = %writer_path.display(), %error, "recording failed: the file ends with the last whole chunk written");
                let _ = failed
                    .set(format!("writing {} failed: {error}; the file ends with the last whole chunk written", writer_path.display()));
            }
        })?;
        tracing::info!(path = %path.display(), "recording session");
        let (prediction_sender, prediction_path) = (sender.clone(), path.clone());
        let predictions = route.tap(move |p| send(&prediction_sender, &prediction_path, Event::Prediction(p.clone())));
        Ok(Self { sender: Some(sender), path, predictions: Some(predictions), writer: Some(writer) })
    }

    /// Never blocks (see [`send`]).
    pub fn send(&self, event: Event) {
        if let Some(sender) = &self.sender {
            send(sender, &self.path, event);
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
/// logged when it happened) is counted and logged.
fn send(sender: &Sender<Event>, path: &Path, event: Event) {
    match sender.try_send(event) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            metrics::counter!(m::RECORDING_DROPPED).increment(1);
            tracing::warn!(path = %path.display(), "recording queue full: data not recorded");
        }
        Err(TrySendError::Disconnected(_)) => {
            metrics::counter!(m::RECORDING_DROPPED).increment(1);
            tracing::debug!(path = %path.display(), "recording writer stopped: data not recorded");
        }
    }
}
