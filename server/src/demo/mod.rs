//! The embedded default: three decoders at work with no arguments, each on a stream replayed
//! into this server over gRPC at real-time speed, looping, with every prediction printed.
//!
//! * `demo`: a bundled **real** EEG recording (NeuroTechX eeg-notebooks visual P300 oddball, Muse
//!   headband, BSD-3) decoded by the ERP model;
//! * `demo-seeg-synthetic`: **synthetic** sEEG (models/duin/synthetic.py) decoded by Du-IN into
//!   spoken words;
//! * `demo-meg-synthetic`: **synthetic** CTF-275 MEG (models/meg/simulator.py) decoded by the brain
//!   module into image embeddings, searched in a bundled 100-image gallery.
//!
//! They go through the same public path a rig uses (myelin-client over loopback), so what they
//! show is what a user gets. The synthetic streams are labelled so in their session names, the
//! terminal and the dashboard.

mod streams;

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use myelin_client::recording::{ReplayOptions, replay};
use myelin_client::{Client, display::format_prediction};
use streams::DemoStream;

use crate::config::DemoConfig;
use crate::shutdown::Shutdown;

/// `token`: the demo's own credential when authentication is on (the server makes it; it is
/// never written anywhere). `galleries_dir`: where the MEG demo's gallery is put for Attach.
pub async fn run(
    config: DemoConfig,
    grpc: SocketAddr,
    token: Option<String>,
    galleries_dir: &Path,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let credentials = myelin_client::Credentials { token, ..Default::default() };
    let client = Client::connect_with(&grpc.to_string(), &credentials).await?;
    // Decompressing the recordings and writing the gallery is blocking work: off the async threads.
    let galleries_dir = galleries_dir.to_path_buf();
    let muse_config = config.clone();
    let demos = tokio::task::spawn_blocking(move || {
        let mut demos = vec![streams::muse(&muse_config)?];
        match streams::seeg() {
            Ok(demo) => demos.push(demo),
            Err(error) => tracing::error!(error = format!("{error:#}"), "the sEEG demo stream could not be loaded"),
        }
        match streams::meg(&galleries_dir) {
            Ok(demo) => demos.push(demo),
            Err(error) => tracing::error!(error = format!("{error:#}"), "the MEG demo stream could not be loaded"),
        }
        anyhow::Ok(demos)
    })
    .await??;
    let speed = config.speed;
    let plays = demos.into_iter().map(|demo| {
        let (client, shutdown) = (client.clone(), shutdown.clone());
        async move {
            let session = demo.header.session_id.clone();
            if let Err(error) = play(&client, demo, speed, shutdown).await {
                tracing::error!(session, error = format!("{error:#}"), "a demo stream stopped");
            }
        }
    });
    futures::future::join_all(plays).await;
    Ok(())
}

async fn play(client: &Client, demo: DemoStream, speed: f64, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let session = demo.header.session_id.clone();
    let mut stream = client.open_ingest(demo.header.clone()).await?;
    let attached = client
        .attach_when_ready(demo.attach.clone())
        .await
        .with_context(|| format!("attaching demo model {:?} to {session:?}", demo.attach.model_id))?;
    let mut predictions = client.subscribe(&session, &attached.attachment_id).await?;
    let recording = &demo.recording;
    println!(
        "demo: {} ({:.0} s, {} markers) at x{speed} into session {session:?}; model {} attached as {}",
        demo.description,
        recording.duration_s(),
        recording.markers.len(),
        demo.attach.model_id,
        attached.attachment_id
    );
    let truth = demo.truth;
    let printer = tokio::spawn(async move {
        while let Ok(Some(p)) = predictions.message().await {
            println!("{}{}", format_prediction(&p), truth(&p));
        }
    });
    let mut offset = 0.0;
    loop {
        let options = ReplayOptions { speed, chunk: demo.chunk, time_offset: offset };
        tokio::select! {
            sent = replay(&mut stream, recording, options) => { sent?; }
            _ = shutdown.wait() => break,
        }
        // Loop with a continuous clock: the next pass starts one sample period after this one.
        offset += recording.timestamps[recording.n_samples() - 1] - recording.timestamps[0] + 1.0 / recording.rate_hz;
    }
    printer.abort();
    let _ = stream.finish().await;
    Ok(())
}
