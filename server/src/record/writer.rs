//! The recorder's thread: encodes events as XDF chunks and writes them, one write per flush.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use myelin_proto::v1 as pb;

use super::event::{CLOCK_STREAM, DATA_STREAM, Event, MARKER_STREAM, RAW_TIMESTAMP_STREAM};
use super::xdf;
use crate::publish::json::prediction_json;

const FIRST_PREDICTION_STREAM: u32 = 10;

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

/// Writes until every sender is gone, then the footers. On a write error (a full disk) the file
/// is cut back to its last whole chunk, the error returned, and the rest of the events dropped
/// (the caller reports it).
pub(super) fn write_loop(
    mut file: std::fs::File,
    events: Receiver<Event>,
    flush_interval: Duration,
    session_id: &str,
) -> std::io::Result<()> {
    let mut written = file.metadata()?.len();
    let mut pending = Vec::new();
    // Every stream gets a footer, an empty one included (as LabRecorder writes them): readers
    // such as pyxdf take a stream without one for a recording cut short.
    let mut footers: HashMap<u32, Footer> = [DATA_STREAM, MARKER_STREAM, CLOCK_STREAM].map(|id| (id, Footer::default())).into();
    let mut streams = Streams { session_id: session_id.to_string(), predictions: HashMap::new(), raw_timestamps: false };
    let mut last_flush = Instant::now();
    let mut last_boundary = Instant::now();
    loop {
        let wait = flush_interval.saturating_sub(last_flush.elapsed());
        match events.recv_timeout(wait) {
            Ok(event) => encode(event, &mut pending, &mut footers, &mut streams),
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
                write_whole(&mut file, &pending, &mut written)?;
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
    write_whole(&mut file, &pending, &mut written)?;
    file.sync_all()
}

/// Appends `bytes` whole, or cuts the file back to where it was (`written`) and fails.
fn write_whole(file: &mut std::fs::File, bytes: &[u8], written: &mut u64) -> std::io::Result<()> {
    match file.write_all(bytes) {
        Ok(()) => {
            *written += bytes.len() as u64;
            Ok(())
        }
        Err(error) => {
            let _ = file.set_len(*written);
            let _ = file.sync_data();
            Err(error)
        }
    }
}

/// The streams written so far besides the fixed ones.
struct Streams {
    session_id: String,
    predictions: HashMap<String, u32>,
    raw_timestamps: bool,
}

fn encode(event: Event, out: &mut Vec<u8>, footers: &mut HashMap<u32, Footer>, streams: &mut Streams) {
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
        Event::RawTimestamps { first_sample, timestamp, raw } => {
            if !std::mem::replace(&mut streams.raw_timestamps, true) {
                let name = format!("{}/raw-timestamps", streams.session_id);
                let channels = vec![("raw".to_string(), "json".to_string(), "RawTimestamps".to_string())];
                let desc = "<note>Where the session repaired timestamps that went backwards (sessions.timestamp_policy = repair), the timestamps the source sent, as JSON {first_sample, raw}; the data stream holds the repaired ones</note>".to_string();
                let spec = xdf::StreamSpec {
                    name: &name,
                    kind: "RawTimestamps",
                    channels: &channels,
                    rate: 0.0,
                    string_format: true,
                    source_id: &name,
                    desc,
                };
                xdf::stream_header(out, RAW_TIMESTAMP_STREAM, &spec);
            }
            let json = serde_json::json!({ "first_sample": first_sample, "raw": raw }).to_string();
            xdf::samples_str(out, RAW_TIMESTAMP_STREAM, &[(timestamp, json)]);
            footers.entry(RAW_TIMESTAMP_STREAM).or_default().add(timestamp, timestamp, 1);
        }
        Event::Prediction(prediction) => {
            let attachment = &prediction.attachment_id;
            let timestamp = prediction.window.map_or(0.0, |w| w.last_timestamp);
            let next = FIRST_PREDICTION_STREAM + streams.predictions.len() as u32;
            let id = *streams.predictions.entry(attachment.clone()).or_insert_with(|| {
                let channels = vec![("prediction".to_string(), "json".to_string(), "Markers".to_string())];
                let labels = match &prediction.result {
                    Some(pb::prediction::Result::Classification(c)) => c.labels.join(","),
                    _ => String::new(),
                };
                let desc = format!("<attachment>{}</attachment><labels>{}</labels>", xdf::escape(attachment), xdf::escape(&labels));
                xdf::stream_header(
                    out,
                    next,
                    &xdf::StreamSpec {
                        name: &format!("predictions/{attachment}"),
                        kind: "Predictions",
                        channels: &channels,
                        rate: 0.0,
                        string_format: true,
                        source_id: attachment,
                        desc,
                    },
                );
                next
            });
            xdf::samples_str(out, id, &[(timestamp, prediction_json(&prediction))]);
            footers.entry(id).or_default().add(timestamp, timestamp, 1);
        }
    }
}
