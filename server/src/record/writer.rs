//! The recorder's thread: encodes events as XDF chunks and writes them, one write per flush.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use myelin_proto::v1 as pb;

use super::event::{CLOCK_STREAM, DATA_STREAM, Event, MARKER_STREAM};
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

pub(super) fn write_loop(mut file: std::fs::File, events: Receiver<Event>, flush_interval: Duration) -> std::io::Result<()> {
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
        Event::Prediction(prediction) => {
            let attachment = &prediction.attachment_id;
            let timestamp = prediction.window.map_or(0.0, |w| w.last_timestamp);
            let next = FIRST_PREDICTION_STREAM + prediction_streams.len() as u32;
            let id = *prediction_streams.entry(attachment.clone()).or_insert_with(|| {
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
