//! Session recording to XDF: the stream's header and raw samples, its markers, every
//! attachment's predictions (one JSON string per prediction) and, for LSL sources, the measured
//! clock offsets. A dedicated thread owns the file; the ingest path hands it copies through a
//! bounded queue and never waits. Pending data is written and flushed at least every
//! `flush_interval_ms` in one write, so a crash (even SIGKILL) leaves a file that ends on a
//! chunk boundary and lacks at most that interval.

pub mod xdf;
pub mod xdf_read;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use myelin_proto::v1 as pb;

use crate::metrics as m;

/// Stream ids in the file.
pub const DATA_STREAM: u32 = 1;
pub const MARKER_STREAM: u32 = 2;
pub const CLOCK_STREAM: u32 = 3;
const FIRST_PREDICTION_STREAM: u32 = 10;

pub enum Event {
    Samples { timestamps: Vec<f64>, values: Vec<f32> },
    Markers(Vec<(f64, String)>),
    Prediction { attachment: String, labels: Vec<String>, timestamp: f64, json: String },
    ClockOffset { timestamp: f64, json: String },
}

/// The sending side, held by the session.
#[derive(Clone)]
pub struct Recorder {
    sender: Sender<Event>,
    pub path: PathBuf,
}

impl Recorder {
    /// Creates the file and its writer thread.
    pub fn start(dir: &Path, header: &pb::StreamHeader, flush_interval: Duration, source: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let stamp = crate::calibrate::utc_stamp();
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
                name: &header.stream_name,
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
        let writer_path = path.clone();
        std::thread::Builder::new().name(format!("record-{}", header.session_id)).spawn(move || {
            if let Err(error) = write_loop(file, receiver, flush_interval) {
                tracing::error!(path = %writer_path.display(), %error, "recording failed");
            }
        })?;
        tracing::info!(path = %path.display(), "recording session");
        Ok(Self { sender, path })
    }

    /// Never blocks; a full queue (the disk cannot keep up) or a writer that stopped (an I/O
    /// error, logged when it happened) is counted and logged.
    pub fn send(&self, event: Event) {
        match self.sender.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!(m::RECORDING_DROPPED).increment(1);
                tracing::warn!(path = %self.path.display(), "recording queue full: data not recorded");
            }
            Err(TrySendError::Disconnected(_)) => {
                metrics::counter!(m::RECORDING_DROPPED).increment(1);
                tracing::debug!(path = %self.path.display(), "recording writer stopped: data not recorded");
            }
        }
    }
}

#[derive(Default)]
struct Footer {
    first: f64,
    last: f64,
    count: u64,
}

impl Footer {
    fn add(&mut self, first: f64, last: f64, count: u64) {
        if self.count == 0 {
            self.first = first;
        }
        self.last = last;
        self.count += count;
    }
}

fn write_loop(mut file: std::fs::File, events: Receiver<Event>, flush_interval: Duration) -> std::io::Result<()> {
    let mut pending = Vec::new();
    let mut footers: HashMap<u32, Footer> = HashMap::new();
    let mut prediction_streams: HashMap<String, u32> = HashMap::new();
    let mut last_flush = Instant::now();
    let mut last_boundary = Instant::now();
    loop {
        let wait = flush_interval.saturating_sub(last_flush.elapsed());
        match events.recv_timeout(wait) {
            Ok(event) => encode(event, &mut pending, &mut footers, &mut prediction_streams),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_flush.elapsed() >= flush_interval {
            if last_boundary.elapsed() >= Duration::from_secs(10) {
                xdf::boundary(&mut pending);
                last_boundary = Instant::now();
            }
            // One write per flush: the file always ends on a chunk boundary.
            if !pending.is_empty() {
                file.write_all(&pending)?;
                file.sync_data()?;
                pending.clear();
            }
            last_flush = Instant::now();
        }
    }
    let mut ids: Vec<_> = footers.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let f = &footers[&id];
        xdf::stream_footer(&mut pending, id, f.first, f.last, f.count);
    }
    file.write_all(&pending)?;
    file.sync_all()
}

fn encode(event: Event, out: &mut Vec<u8>, footers: &mut HashMap<u32, Footer>, prediction_streams: &mut HashMap<String, u32>) {
    match event {
        Event::Samples { timestamps, values } => {
            if let (Some(&first), Some(&last)) = (timestamps.first(), timestamps.last()) {
                xdf::samples_f32(out, DATA_STREAM, &timestamps, &values);
                footers.entry(DATA_STREAM).or_default().add(first, last, timestamps.len() as u64);
            }
        }
        Event::Markers(markers) => {
            if let (Some(first), Some(last)) = (markers.first().map(|m| m.0), markers.last().map(|m| m.0)) {
                xdf::samples_str(out, MARKER_STREAM, &markers);
                footers.entry(MARKER_STREAM).or_default().add(first, last, markers.len() as u64);
            }
        }
        Event::ClockOffset { timestamp, json } => {
            xdf::samples_str(out, CLOCK_STREAM, &[(timestamp, json)]);
            footers.entry(CLOCK_STREAM).or_default().add(timestamp, timestamp, 1);
        }
        Event::Prediction { attachment, labels, timestamp, json } => {
            let next = FIRST_PREDICTION_STREAM + prediction_streams.len() as u32;
            let id = *prediction_streams.entry(attachment.clone()).or_insert_with(|| {
                let channels = vec![("prediction".to_string(), "json".to_string(), "Markers".to_string())];
                let desc = format!("<attachment>{attachment}</attachment><labels>{}</labels>", labels.join(","));
                xdf::stream_header(
                    out,
                    next,
                    &xdf::StreamSpec {
                        name: &format!("predictions/{attachment}"),
                        kind: "Predictions",
                        channels: &channels,
                        rate: 0.0,
                        string_format: true,
                        source_id: &attachment,
                        desc,
                    },
                );
                next
            });
            xdf::samples_str(out, id, &[(timestamp, json)]);
            footers.entry(id).or_default().add(timestamp, timestamp, 1);
        }
    }
}
