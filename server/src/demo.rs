//! The embedded default: replay a bundled real EEG recording (NeuroTechX eeg-notebooks visual
//! P300 oddball, Muse headband, BSD-3) into this server over gRPC at real-time speed, looping,
//! with the bundled model attached, and print every prediction with its latency.
//!
//! It goes through the same public path a rig uses (myelin-client over loopback), so what it
//! shows is what a user gets.

use std::net::SocketAddr;

use anyhow::Context;
use flate2::read::GzDecoder;
use myelin_client::recording::{Recording, ReplayOptions, replay};
use myelin_client::{Client, display::format_prediction, proto as pb};

use crate::config::DemoConfig;
use crate::shutdown::Shutdown;

/// subject 1, session 2, first run (held out from the bundled model's training data).
const RECORDING: &[u8] = include_bytes!("../../models/data/p300/subject1_session2_2017-02-09-17.13.56.csv.gz");
const RECORDING_NAME: &str = "eeg-notebooks P300 subject1 session2 (Muse, 256 Hz)";

/// `token`: the demo's own credential when authentication is on (the server makes it; it is
/// never written anywhere).
pub async fn run(config: DemoConfig, grpc: SocketAddr, token: Option<String>, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let recording = Recording::from_csv(GzDecoder::new(RECORDING)).map_err(|e| anyhow::anyhow!("bundled recording: {e}"))?;
    let credentials = myelin_client::Credentials { token, ..Default::default() };
    let client = Client::connect_with(&grpc.to_string(), &credentials).await?;
    let session = "demo";
    let mut stream = client.open_ingest(recording.header(session, RECORDING_NAME)).await?;
    let request = pb::AttachRequest {
        session_id: session.into(),
        model_id: config.model_id.clone(),
        window: Some(pb::WindowPolicy {
            policy: Some(pb::window_policy::Policy::EventLocked(pb::EventLockedWindow {
                marker_codes: config.marker_codes.clone(),
                tmin_s: 0.0,
                tmax_s: 0.0,
            })),
        }),
        ..Default::default()
    };
    let attached = client.attach_when_ready(request).await.with_context(|| format!("attaching demo model {:?}", config.model_id))?;
    let mut predictions = client.subscribe(session, &attached.attachment_id).await?;
    println!(
        "demo: replaying {RECORDING_NAME} ({:.0} s, {} markers) at x{} into session {session:?}; model {} attached as {}. Ctrl-C stops.",
        recording.duration_s(),
        recording.markers.len(),
        config.speed,
        config.model_id,
        attached.attachment_id
    );
    let printer = tokio::spawn(async move {
        while let Ok(Some(p)) = predictions.message().await {
            let truth = p.trigger.as_ref().map_or("", |m| if m.code == 2 { " (truth: target)" } else { " (truth: non-target)" });
            println!("{}{truth}", format_prediction(&p));
        }
    });
    let mut offset = 0.0;
    loop {
        let options = ReplayOptions { speed: config.speed, chunk: 8, time_offset: offset };
        tokio::select! {
            sent = replay(&mut stream, &recording, options) => { sent?; }
            _ = shutdown.wait() => break,
        }
        // Loop with a continuous clock: the next pass starts one sample period after this one.
        offset += recording.timestamps[recording.n_samples() - 1] - recording.timestamps[0] + 1.0 / recording.rate_hz;
    }
    printer.abort();
    let _ = stream.finish().await;
    Ok(())
}
