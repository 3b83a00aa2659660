//! Latency benchmark: starts the real server, streams 64 channels at 1 kHz in real time (chunks
//! of 10 samples) into a small model (fixture-bench64: 1-40 Hz band-pass, decimation to 250 Hz,
//! 0.5 s windows every 20 ms), and reports
//!   * server latency: receipt of a window's last sample -> publication (the server's own clock),
//!   * inference time (preprocessing + ONNX Runtime),
//!   * end-to-end latency: the client sending the chunk that completes a window -> the subscriber
//!     receiving its prediction (one process, one clock, over loopback).
//!
//!     cargo build --release --bins && target/release/myelin-bench stream --seconds 60
//!     target/release/myelin-bench capacity
//!     target/release/myelin-bench erp
//!     target/release/myelin-bench lsl --seconds 30
//!     target/release/myelin-bench gallery
//!     target/release/myelin-bench security --seconds 30

#![forbid(unsafe_code)]

mod capacity;
mod erp;
mod gallery;
mod lsl;
mod meg;
mod mixed;
mod security;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use hdrhistogram::Histogram;
use myelin_client::proto as pb;
use myelin_e2e::{TestServer, repo_root, sliding, stream_header};
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "Myelin benchmarks, run against the real server binary")]
enum Bench {
    /// Latency of the streaming path: 64 channels at 1 kHz into a small model.
    Stream(Args),
    /// How many real-time sessions one server decodes with zero misses (ramps N until the first).
    Capacity(capacity::CapacityArgs),
    /// LabStreamingLayer end to end: LSL push -> server -> prediction on an LSL inlet.
    Lsl(LslArgs),
    /// Retrieval gallery search: exact (GB/s against measured bandwidth) and HNSW (recall@5).
    Gallery(GalleryArgs),
    /// ERP decoders on real EEG: per-epoch decode time of the native xDAWN + LDA decoder and of
    /// the ONNX models, and the time to calibrate the native decoder on 300 epochs.
    Erp(ErpArgs),
    /// MEG image retrieval: brain-module decode time and gallery search, live, on CPU.
    Meg(LslArgs),
    /// The cost of security: the stream benchmark and unary calls, plaintext and then with TLS
    /// and a bearer token, side by side.
    Security(Args),
}

#[derive(clap::Args)]
struct GalleryArgs {
    /// Build HNSW graphs for galleries up to this many entries.
    #[arg(long, default_value_t = 1_000_000)]
    hnsw_up_to: usize,
    /// Gallery contents: "structured" (embeddings with low-dimensional structure, like an image
    /// model's) or "random" (isotropic; the hardest case for a graph index).
    #[arg(long, default_value = "structured")]
    data: String,
    /// Largest gallery (10 k, 100 k, 1 M up to this).
    #[arg(long, default_value_t = 1_000_000)]
    max_entries: usize,
}

#[derive(clap::Args)]
struct LslArgs {
    #[arg(long)]
    server: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
}

#[derive(clap::Args)]
struct ErpArgs {
    /// Server binary (default: target/release/myelin).
    #[arg(long)]
    server: Option<std::path::PathBuf>,
    /// Calibration repetitions (each on a fresh stream of the same 300 epochs).
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
}

#[derive(clap::Args)]
struct Args {
    /// Seconds of streaming.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Channels.
    #[arg(long, default_value_t = 64)]
    channels: usize,
    /// Samples per chunk.
    #[arg(long, default_value_t = 10)]
    chunk: usize,
    /// Window hop in seconds.
    #[arg(long, default_value_t = 0.02)]
    hop: f64,
    /// Server binary (default: target/release/myelin).
    #[arg(long)]
    server: Option<std::path::PathBuf>,
}

const RATE: f64 = 1000.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Bench::parse() {
        Bench::Stream(args) => stream(args).await,
        Bench::Security(args) => security::run(args).await,
        Bench::Capacity(args) => capacity::run(args).await,
        Bench::Erp(args) => erp::run(args.server, args.repetitions).await,
        Bench::Lsl(args) => lsl::run(args.server, args.seconds).await,
        Bench::Meg(args) => meg::run(args.server, args.seconds).await,
        Bench::Gallery(args) => tokio::task::spawn_blocking(move || gallery::run(args.hnsw_up_to, &args.data, args.max_entries)).await?,
    }
}

async fn stream(args: Args) -> anyhow::Result<()> {
    let bin = args.server.clone().unwrap_or_else(|| repo_root().join("target/release/myelin"));
    anyhow::ensure!(bin.exists(), "{} not found: cargo build --release --bins", bin.display());
    let server = start_server(&bin).await;
    let client = server.client().await;
    let result = stream_once(&client, &args).await?;
    let (_, metrics) = server.http_get("/metrics").await;
    drop(client);
    let status = server.stop().await;
    anyhow::ensure!(status.success(), "server exited with {status}");

    println!(
        "myelin-bench: {} channels at {RATE} Hz, chunks of {}, {:.0} s, model fixture-bench64 (0.5 s windows every {} ms), {} predictions, {} not OK, {} over the 20 ms budget",
        args.channels,
        args.chunk,
        args.seconds,
        args.hop * 1000.0,
        result.server_us.len(),
        result.not_ok,
        result.missed
    );
    println!("{:<44} {:>9} {:>9} {:>9} {:>9}", "latency (microseconds)", "p50", "p99", "p99.9", "max");
    for (name, h) in [
        ("server: last-sample receipt -> publish", &result.server_us),
        ("  of which the model run (ONNX Runtime)", &result.inference_us),
        ("end to end: client send -> subscriber", &result.e2e_us),
    ] {
        println!(
            "{:<44} {:>9} {:>9} {:>9} {:>9}",
            name,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
    println!("where the time goes (server metrics, mean per window or chunk, microseconds):");
    for (name, metric) in [
        ("chunk receipt -> its session worker (handoff)", "myelin_stage_seconds{stage=\"handoff\""),
        ("filtering a chunk (dsp)", "myelin_stage_seconds{stage=\"dsp\""),
        ("cutting + preprocessing a window (cut)", "myelin_stage_seconds{stage=\"cut\""),
        ("queue wait (0 when decoded inline)", "myelin_queue_wait_seconds{"),
        ("model run (per batch)", "myelin_inference_seconds{"),
        ("inference end -> publish", "myelin_stage_seconds{stage=\"publish\""),
    ] {
        match mean_of(&metrics, metric) {
            Some((mean, count)) => println!("  {name:<46} {:>9.1}   ({count} observed)", mean * 1e6),
            None => println!("  {name:<46} {:>9}", "-"),
        }
    }
    Ok(())
}

/// What one run of the stream benchmark measured.
struct StreamResult {
    server_us: Histogram<u64>,
    inference_us: Histogram<u64>,
    e2e_us: Histogram<u64>,
    missed: u64,
    not_ok: u64,
}

/// Streams `args.seconds` of 64 channels at 1 kHz through `client` into fixture-bench64.
async fn stream_once(client: &myelin_client::Client, args: &Args) -> anyhow::Result<StreamResult> {
    let labels: Vec<String> = (1..=args.channels).map(|i| format!("E{i}")).collect();
    let mut ingest = client.open_ingest(stream_header("bench", &labels, RATE)).await?;
    let attached = client
        .attach_when_ready(pb::AttachRequest {
            session_id: "bench".into(),
            model_id: "fixture-bench64".into(),
            window: Some(sliding(args.hop)),
            latency_budget_ms: 20,
            ..Default::default()
        })
        .await?;
    let mut predictions = client.subscribe("bench", &attached.attachment_id).await?;

    let sent_at: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let chunk = args.chunk;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let reader = {
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let mut server_us = Histogram::<u64>::new(3).unwrap();
            let mut inference_us = Histogram::<u64>::new(3).unwrap();
            let mut e2e_us = Histogram::<u64>::new(3).unwrap();
            let (mut missed, mut not_ok) = (0u64, 0u64);
            loop {
                let p = tokio::select! {
                    message = predictions.message() => match message {
                        Ok(Some(p)) => p,
                        _ => break,
                    },
                    _ = &mut stopped => break,
                };
                let received = Instant::now();
                let t = p.timing.unwrap_or_default();
                if p.status != pb::PredictionStatus::Ok as i32 {
                    not_ok += 1;
                }
                if !t.budget_met {
                    missed += 1;
                }
                server_us.record(t.server_latency_us.max(1)).ok();
                inference_us.record((t.decode_end_ns.saturating_sub(t.decode_start_ns) / 1000).max(1)).ok();
                let last = p.window.unwrap_or_default().last_sample_index as usize;
                if let Some(sent) = sent_at.lock().unwrap().get(last / chunk) {
                    e2e_us.record(received.duration_since(*sent).as_micros().max(1) as u64).ok();
                }
            }
            (server_us, inference_us, e2e_us, missed, not_ok)
        })
    };

    let n_samples = (args.seconds * RATE) as usize;
    let values: Vec<f32> = (0..chunk * args.channels).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect();
    let start = Instant::now();
    let mut last_progress = start;
    for (k, begin) in (0..n_samples).step_by(chunk).enumerate() {
        // Pace on the absolute schedule: a chunk is sent when its last sample would exist.
        let due = start + Duration::from_secs_f64((begin + chunk) as f64 / RATE);
        tokio::time::sleep_until(due).await;
        let ts: Vec<f64> = (begin..begin + chunk).map(|i| i as f64 / RATE).collect();
        sent_at.lock().unwrap().push(Instant::now());
        debug_assert_eq!(sent_at.lock().unwrap().len(), k + 1);
        ingest.send_chunk(&values, &ts).await?;
        if last_progress.elapsed() > Duration::from_secs(10) {
            eprintln!("  streamed {:.0} s of {:.0} s", begin as f64 / RATE, args.seconds);
            last_progress = Instant::now();
        }
    }
    ingest.wait_acknowledged().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ingest.finish().await?;
    let _ = stop.send(());
    let (server_us, inference_us, e2e_us, missed, not_ok) =
        tokio::time::timeout(Duration::from_secs(10), reader).await.map_err(|_| anyhow::anyhow!("the subscription did not end"))??;
    Ok(StreamResult { server_us, inference_us, e2e_us, missed, not_ok })
}

/// Mean and count of a Prometheus histogram from its `_sum` and `_count` lines (`metric`: the
/// name and the opening of its labels, summed over the label sets that match).
fn mean_of(text: &str, metric: &str) -> Option<(f64, u64)> {
    let (name, labels) = metric.split_once('{')?;
    let total = |suffix: &str| -> f64 {
        let prefix = format!("{name}{suffix}{{{labels}");
        text.lines().filter(|l| l.starts_with(&prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    let count = total("_count");
    (count > 0.0).then(|| (total("_sum") / count, count as u64))
}

async fn start_server(bin: &std::path::Path) -> TestServer {
    TestServer::start_with_binary(bin, &["serve"], &[]).await
}
