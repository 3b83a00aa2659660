//! `myelin replay FILE`: publish a recording (XDF, or the eeg-notebooks CSV format) as LSL
//! streams, or send it into a Myelin server over gRPC, at real-time speed or xN, paced by the
//! recorded timestamps (on an absolute schedule, so it does not drift).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use myelin_client::recording::{Recording, ReplayOptions, replay};
use myelin_lsl::{CF_FLOAT32, CF_STRING, Lsl};

use crate::record::xdf_read;

/// Loads a recording: XDF (first numeric stream with a nominal rate, and its first marker
/// stream) or CSV (.csv / .csv.gz).
pub fn load(path: &Path) -> anyhow::Result<Recording> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if !name.ends_with(".xdf") {
        return Ok(Recording::read_csv(path)?);
    }
    let streams = xdf_read::read(path)?;
    let data = streams
        .iter()
        .find(|s| !s.is_string() && s.rate > 0.0 && !s.timestamps.is_empty())
        .with_context(|| format!("{}: no numeric stream with a nominal rate", path.display()))?;
    let channels = if data.labels.len() == data.channel_count {
        data.labels.clone()
    } else {
        (1..=data.channel_count).map(|i| format!("Ch{i}")).collect()
    };
    let mut markers = Vec::new();
    if let Some(stream) = streams.iter().find(|s| s.is_string() && s.kind == "Markers") {
        for (text, &t) in stream.strings.iter().zip(&stream.timestamps) {
            let Ok(code) = text.trim().parse::<i32>() else { continue };
            let index = data.timestamps.partition_point(|&x| x < t).min(data.timestamps.len() - 1);
            markers.push((index, code));
        }
    }
    Ok(Recording { channels, rate_hz: data.rate, timestamps: data.timestamps.clone(), samples: data.values.clone(), markers })
}

/// Sends the recording into a server's Ingest service as session `session`.
pub async fn to_server(
    recording: &Recording,
    server: &str,
    credentials: &myelin_client::Credentials,
    session: &str,
    speed: f64,
) -> anyhow::Result<()> {
    let client = myelin_client::Client::connect_with(server, credentials).await?;
    let mut stream = client.open_ingest(recording.header(session, "myelin replay")).await?;
    let sent = replay(&mut stream, recording, ReplayOptions { speed, chunk: 8, time_offset: 0.0 }).await?;
    stream.wait_acknowledged().await?;
    let summary = stream.finish().await?;
    eprintln!("replayed {sent} samples into session {session:?}; {} warnings", summary.warnings.len());
    Ok(())
}

/// Publishes the recording as two LSL outlets, "<name>" (data) and "<name>-markers" (string
/// codes), stamped on this machine's LSL clock with the recorded spacing divided by `speed`.
/// Waits up to `wait_s` for a consumer before starting, since LSL inlets only receive what is
/// pushed after they connect.
pub fn to_lsl(lsl: &Lsl, recording: &Recording, name: &str, speed: f64, wait_s: f64) -> anyhow::Result<()> {
    let c = recording.channels.len();
    let mut info = lsl.stream_info(name, "EEG", c, recording.rate_hz * speed.max(1e-9), CF_FLOAT32, name);
    let triples: Vec<(&str, &str, &str)> = recording.channels.iter().map(|l| (l.as_str(), "", "EEG")).collect();
    info.append_channels(&triples);
    let marker_info = lsl.stream_info(&format!("{name}-markers"), "Markers", 1, 0.0, CF_STRING, &format!("{name}-markers"));
    let mut data = myelin_lsl::Outlet::new(&info);
    let mut markers = myelin_lsl::Outlet::new(&marker_info);
    eprintln!("LSL outlets {name:?} and {name:?}-markers are up; waiting up to {wait_s} s for a consumer");
    let waited = std::time::Instant::now();
    while !data.have_consumers() && waited.elapsed().as_secs_f64() < wait_s {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Give a connecting inlet a moment to finish its handshake before the first sample.
    std::thread::sleep(Duration::from_millis(200));
    let t0 = recording.timestamps[0];
    let start = lsl.local_clock() + 0.05;
    let at = |t: f64| start + (t - t0) / speed;
    let mut next_marker = 0;
    for (i, &t) in recording.timestamps.iter().enumerate() {
        let due = at(t);
        let wait = due - lsl.local_clock();
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
        data.push_f32(&recording.samples[i * c..(i + 1) * c], due)?;
        while next_marker < recording.markers.len() && recording.markers[next_marker].0 <= i {
            markers.push_str(&recording.markers[next_marker].1.to_string(), due)?;
            next_marker += 1;
        }
    }
    eprintln!("replayed {} samples and {} markers on LSL", recording.n_samples(), recording.markers.len());
    // Let consumers drain before the outlets disappear.
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}
