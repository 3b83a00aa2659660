//! Recordings (plain or gzipped) in the CSV format of the NeuroTechX eeg-notebooks (a `timestamps` column in
//! seconds, one column per channel, a `Marker*` column with 0 = no event), and their replay into
//! a server paced by the recorded timestamps.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use myelin_proto::v1 as pb;
use tokio::time::Instant;

use crate::{ClientError, IngestStream, Result};

#[derive(Debug, Clone)]
pub struct Recording {
    pub channels: Vec<String>,
    /// Nominal rate: the mean rate of the timestamps, rounded to whole Hz.
    pub rate_hz: f64,
    pub timestamps: Vec<f64>,
    /// Row-major [n_samples x channels].
    pub samples: Vec<f32>,
    /// (sample index, code) of every non-zero marker.
    pub markers: Vec<(usize, i32)>,
}

impl Recording {
    pub fn read_csv(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| ClientError::Invalid(format!("cannot open {}: {e}", path.display())))?;
        let parsed = if path.extension().is_some_and(|e| e == "gz") {
            Self::from_csv(flate2::read::GzDecoder::new(file))
        } else {
            Self::from_csv(file)
        };
        parsed.map_err(|e| ClientError::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn from_csv(reader: impl Read) -> Result<Self, String> {
        let mut csv = csv::Reader::from_reader(reader);
        let headers = csv.headers().map_err(|e| e.to_string())?.clone();
        let time_column = headers.iter().position(|h| h == "timestamps").ok_or("no `timestamps` column")?;
        let marker_column = headers.iter().position(|h| h.starts_with("Marker"));
        let channel_columns: Vec<usize> = (0..headers.len()).filter(|&i| i != time_column && Some(i) != marker_column).collect();
        let channels = channel_columns.iter().map(|&i| headers[i].to_string()).collect();
        let (mut timestamps, mut samples, mut markers) = (Vec::new(), Vec::new(), Vec::new());
        for (row, record) in csv.records().enumerate() {
            let record = record.map_err(|e| e.to_string())?;
            let number = |i: usize| -> Result<f64, String> {
                record
                    .get(i)
                    .unwrap_or("")
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("row {}: column {} is not a number", row + 2, &headers[i]))
            };
            timestamps.push(number(time_column)?);
            for &c in &channel_columns {
                samples.push(number(c)? as f32);
            }
            if let Some(m) = marker_column {
                let code = number(m)? as i32;
                if code != 0 {
                    markers.push((row, code));
                }
            }
        }
        if timestamps.len() < 2 {
            return Err("fewer than two samples".into());
        }
        let span = timestamps[timestamps.len() - 1] - timestamps[0];
        let rate_hz = ((timestamps.len() - 1) as f64 / span).round();
        Ok(Self { channels, rate_hz, timestamps, samples, markers })
    }

    /// A session id from a recording's file name: extensions (.csv, .csv.gz, .xdf) dropped,
    /// characters outside [A-Za-z0-9._-] replaced by '_'.
    pub fn session_name(path: &Path) -> String {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("recording");
        let stem = name.trim_end_matches(".gz").trim_end_matches(".csv").trim_end_matches(".xdf");
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
    }

    pub fn n_samples(&self) -> usize {
        self.timestamps.len()
    }

    pub fn duration_s(&self) -> f64 {
        self.n_samples() as f64 / self.rate_hz
    }

    pub fn header(&self, session_id: &str, stream_name: &str) -> pb::StreamHeader {
        pb::StreamHeader {
            session_id: session_id.into(),
            stream_name: stream_name.into(),
            modality: pb::Modality::Eeg as i32,
            channels: self
                .channels
                .iter()
                .map(|label| pb::Channel {
                    label: label.clone(),
                    r#type: if label.contains("AUX") { "MISC".into() } else { "EEG".into() },
                    unit: "microvolts".into(),
                    position: None,
                    layout: None,
                })
                .collect(),
            nominal_rate_hz: self.rate_hz,
            clock: pb::ClockSource::Unix as i32,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    /// 1 = real time, 10 = ten times faster, 0 = as fast as the server takes it.
    pub speed: f64,
    /// Samples per chunk.
    pub chunk: usize,
    /// Added to every timestamp (lets a loop continue the clock).
    pub time_offset: f64,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self { speed: 1.0, chunk: 8, time_offset: 0.0 }
    }
}

/// Sends the whole recording: each chunk goes out when its last sample's recorded time (divided
/// by `speed`) has come, so the pace follows the recording without drifting; markers follow the
/// chunk holding their sample. Returns the number of samples sent.
pub async fn replay(stream: &mut IngestStream, recording: &Recording, options: ReplayOptions) -> Result<usize> {
    let c = recording.channels.len();
    let t0 = recording.timestamps[0];
    let start = Instant::now();
    let mut next_marker = 0;
    let mut timestamps = Vec::with_capacity(options.chunk);
    for begin in (0..recording.n_samples()).step_by(options.chunk.max(1)) {
        let end = (begin + options.chunk.max(1)).min(recording.n_samples());
        if options.speed > 0.0 {
            let due = (recording.timestamps[end - 1] - t0) / options.speed;
            tokio::time::sleep_until(start + Duration::from_secs_f64(due.max(0.0))).await;
        }
        timestamps.clear();
        timestamps.extend(recording.timestamps[begin..end].iter().map(|t| t + options.time_offset));
        stream.send_chunk(&recording.samples[begin * c..end * c], &timestamps).await?;
        let mut markers = Vec::new();
        while next_marker < recording.markers.len() && recording.markers[next_marker].0 < end {
            let (index, code) = recording.markers[next_marker];
            markers.push(pb::Marker { timestamp: recording.timestamps[index] + options.time_offset, code, label: String::new() });
            next_marker += 1;
        }
        if !markers.is_empty() {
            stream.send_markers(markers).await?;
        }
    }
    Ok(recording.n_samples())
}
