//! myelin-cli: stream a recording into a Myelin server, attach a model, print its predictions.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use myelin_client::recording::{Recording, ReplayOptions, replay};
use myelin_client::{Client, CredentialArgs, display::format_prediction, proto as pb};

#[derive(Parser)]
#[command(name = "myelin-cli", version, about = "Command-line client for the Myelin BCI decoding server")]
struct Cli {
    /// Server gRPC address: host:port (TLS when --ca is given), or http:// / https:// explicitly.
    #[arg(long, global = true, default_value = "127.0.0.1:50051", env = "MYELIN_SERVER")]
    server: String,
    #[command(flatten)]
    credentials: CredentialArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream a CSV recording (eeg-notebooks format) at real-time speed or xN, attach a model and
    /// print every prediction with its latency.
    Stream {
        /// The recording.
        csv: PathBuf,
        /// Session id (default: the file name).
        #[arg(long)]
        session: Option<String>,
        /// Model to attach (none: only stream).
        #[arg(long)]
        model: Option<String>,
        /// Replay speed: 1 = real time, 10 = ten times faster, 0 = as fast as possible.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Samples per chunk.
        #[arg(long, default_value_t = 8)]
        chunk: usize,
        /// Marker codes that open event-locked windows (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        markers: Vec<i32>,
        /// Use sliding windows with this hop (seconds) instead of event-locked ones.
        #[arg(long)]
        hop: Option<f64>,
        /// Latency budget in ms (0 = server default).
        #[arg(long, default_value_t = 0)]
        budget_ms: u32,
    },
    /// List the server's models.
    Models,
    /// List the server's sessions.
    Sessions,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = Client::connect_with(&cli.server, &cli.credentials.credentials()).await?;
    match cli.command {
        Command::Models => {
            for m in client.list_models().await? {
                let state = if m.ready { format!("ready on {}", m.execution_provider) } else { format!("UNAVAILABLE: {}", m.error) };
                println!(
                    "{} v{} {} {} Hz {:?} [{}] data={} — {}",
                    m.id,
                    m.version,
                    m.task,
                    m.sample_rate_hz,
                    m.channels,
                    m.labels.join(","),
                    m.data_kind,
                    state
                );
            }
        }
        Command::Sessions => {
            for s in client.list_sessions().await? {
                println!(
                    "{} live={} samples={} markers={} gaps={} warnings={} attachments={}",
                    s.session_id,
                    s.live,
                    s.samples_received,
                    s.markers_received,
                    s.gap_samples,
                    s.warnings.iter().map(|w| w.count).sum::<u64>(),
                    s.attachments.iter().map(|a| format!("{}:{}", a.attachment_id, a.model_id)).collect::<Vec<_>>().join(",")
                );
                for warning in &s.warnings {
                    println!("  warning x{}: {}", warning.count, warning.message);
                }
                if !s.source_error.is_empty() {
                    println!("  source stopped: {}", s.source_error);
                }
            }
        }
        Command::Stream { csv, session, model, speed, chunk, markers, hop, budget_ms } => {
            let recording = Recording::read_csv(&csv)?;
            let session = session.unwrap_or_else(|| Recording::session_name(&csv));
            eprintln!(
                "streaming {} ({} channels, {} Hz, {:.1} s, {} markers) as session {session} at x{speed}",
                csv.display(),
                recording.channels.len(),
                recording.rate_hz,
                recording.duration_s(),
                recording.markers.len()
            );
            let mut stream = client.open_ingest(recording.header(&session, "myelin-cli")).await?;
            let mut printer = None;
            if let Some(model) = model {
                // The session exists once the server has read the header; retry briefly.
                let window = match hop {
                    Some(hop_s) => pb::window_policy::Policy::Sliding(pb::SlidingWindow { length_s: 0.0, hop_s }),
                    None => {
                        pb::window_policy::Policy::EventLocked(pb::EventLockedWindow { marker_codes: markers, tmin_s: 0.0, tmax_s: 0.0 })
                    }
                };
                let request = pb::AttachRequest {
                    session_id: session.clone(),
                    model_id: model,
                    window: Some(pb::WindowPolicy { policy: Some(window) }),
                    latency_budget_ms: budget_ms,
                    ..Default::default()
                };
                let reply = client.attach_when_ready(request).await?;
                eprintln!("attached {} (window {} samples)", reply.attachment_id, reply.window_stream_samples);
                let mut predictions = client.subscribe("", &reply.attachment_id).await?;
                printer = Some(tokio::spawn(async move {
                    let mut count = 0u64;
                    while let Ok(Some(p)) = predictions.message().await {
                        println!("{}", format_prediction(&p));
                        count += 1;
                    }
                    count
                }));
            }
            let sent = replay(&mut stream, &recording, ReplayOptions { speed, chunk, time_offset: 0.0 }).await?;
            stream.wait_acknowledged().await?;
            let summary = stream.finish().await.context("ingest stream")?;
            // Let the last windows finish decoding.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            if let Some(printer) = printer {
                printer.abort();
            }
            eprintln!(
                "sent {sent} samples; server accepted through {}; {} warnings",
                summary.last_reply.samples_accepted_until,
                summary.warnings.len()
            );
            for w in summary.warnings.iter().take(10) {
                eprintln!("  warning: {}", w.message);
            }
        }
    }
    Ok(())
}
