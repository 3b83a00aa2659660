//! `myelin-bench capacity`: how many rigs one server decodes within budget. For each N (ramped
//! from `--start` by `--step`), a fresh server gets N sessions of 64 channels at 1 kHz streamed
//! in real time (chunks of 10 samples) by this process over real gRPC connections, each with
//! fixture-bench64 on 0.5 s windows every 20 ms and a 20 ms budget. Reports per N: predictions
//! expected and received by status, server latency p50/p99/max, the server's CPU, and stops at
//! the first N with a LATE, SHED, ERROR or missing prediction; the largest clean N is the
//! capacity.

use std::time::Duration;

use hdrhistogram::Histogram;
use myelin_client::{Client, IngestStream, proto as pb};
use myelin_e2e::{TestServer, repo_root, sliding, stream_header};
use tokio::time::Instant;

const RATE: f64 = 1000.0;
const CHANNELS: usize = 64;
const CHUNK: usize = 10;
/// fixture-bench64: 0.5 s windows at 1 kHz, every 20 ms.
const WINDOW: u64 = 500;
const HOP: u64 = 20;
const BUDGET_MS: u32 = 20;
/// Sessions per gRPC connection (a rig is a process of its own; HTTP/2 multiplexes a few).
const SESSIONS_PER_CONNECTION: usize = 8;

#[derive(clap::Args)]
pub struct CapacityArgs {
    /// Server binary (default: target/release/myelin).
    #[arg(long)]
    server: Option<std::path::PathBuf>,
    /// First number of sessions (default 20; with --mixed, units, default 2).
    #[arg(long)]
    start: Option<usize>,
    /// Sessions (units) added per step (default 20; with --mixed 2).
    #[arg(long)]
    step: Option<usize>,
    /// Mixed models instead: units of an ERP EEG rig, a Du-IN sEEG rig and a MEG rig (sliding
    /// windows and image onsets), with each attachment's p99 against its budget.
    #[arg(long)]
    mixed: bool,
    /// Serve with TLS on both ports and bearer-token authentication (clients over TLS with a
    /// token), to compare with a plaintext run.
    #[arg(long)]
    secure: bool,
    /// Stop after this many sessions even if still clean.
    #[arg(long, default_value_t = 400)]
    max: usize,
    /// Seconds streamed at each step.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Extra server settings, KEY=VALUE environment overrides (e.g.
    /// MYELIN_MODELS__WORKERS_PER_MODEL=1), to compare configurations.
    #[arg(long = "env")]
    env: Vec<String>,
}

/// What one session's subscriber saw.
#[derive(Default)]
struct Seen {
    by_status: [u64; 5],
    sequence_gaps: u64,
    over_budget: u64,
    latency_us: Vec<u64>,
    reasons: std::collections::BTreeMap<String, u64>,
}

pub struct Level {
    pub expected: u64,
    pub received: [u64; 5],
    pub missing: u64,
    pub sequence_gaps: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub cpu_percent: f64,
    /// Why predictions were SHED or ERROR, with counts.
    pub reasons: std::collections::BTreeMap<String, u64>,
}

impl Level {
    pub fn clean(&self) -> bool {
        self.missing == 0 && self.sequence_gaps == 0 && self.received[2..].iter().all(|&n| n == 0)
    }
}

pub async fn run(args: CapacityArgs) -> anyhow::Result<()> {
    let bin = args.server.clone().unwrap_or_else(|| repo_root().join("target/release/myelin"));
    anyhow::ensure!(bin.exists(), "{} not found: cargo build --release --bins", bin.display());
    let env: Vec<(String, String)> = args
        .env
        .iter()
        .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| anyhow::anyhow!("--env {kv}: KEY=VALUE")))
        .collect::<anyhow::Result<_>>()?;
    if args.mixed {
        let (start, step) = (args.start.unwrap_or(2), args.step.unwrap_or(2));
        return super::mixed::run(&bin, &env, start, step, args.max, args.seconds).await;
    }
    let (start, step) = (args.start.unwrap_or(20), args.step.unwrap_or(20));
    let secured = if args.secure { Some(super::security::Secured::new()?) } else { None };
    println!(
        "myelin-bench capacity: N sessions x {CHANNELS} channels at {RATE} Hz in real time, fixture-bench64 (0.5 s windows every {HOP} ms, {BUDGET_MS} ms budget), {:.0} s per N, 4 s rings, {}",
        args.seconds,
        if args.secure { "TLS + bearer token" } else { "plaintext" }
    );
    println!(
        "{:>5} {:>9} {:>9} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "N", "expected", "ok", "late", "shed", "error", "missing", "p50 us", "p99 us", "max us", "cpu %"
    );
    let mut best = None;
    let mut n = start.max(1);
    while n <= args.max {
        let level = run_level(&bin, &env, n, args.seconds, secured.as_ref()).await?;
        println!(
            "{:>5} {:>9} {:>9} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7.0}",
            n,
            level.expected,
            level.received[1],
            level.received[2],
            level.received[3],
            level.received[4],
            level.missing + level.sequence_gaps,
            level.p50_us,
            level.p99_us,
            level.max_us,
            level.cpu_percent
        );
        for (reason, count) in &level.reasons {
            println!("      {count} x {reason:?}");
        }
        if !level.clean() {
            break;
        }
        best = Some(n);
        n += step.max(1);
    }
    match best {
        Some(n) => println!("capacity: {n} sessions with zero LATE, SHED, ERROR or missing predictions"),
        None => println!("capacity: below {start} sessions"),
    }
    Ok(())
}

/// Ends a level: lets the last predictions out for `settle`, closes every ingest stream, then
/// stops the server, which must exit cleanly.
pub async fn close_level(ingests: Vec<IngestStream>, settle: Duration, clients: Vec<Client>, server: TestServer) -> anyhow::Result<()> {
    tokio::time::sleep(settle).await;
    for ingest in ingests {
        ingest.finish().await?;
    }
    drop(clients);
    let status = server.stop().await;
    anyhow::ensure!(status.success(), "server exited with {status}");
    Ok(())
}

/// CPU seconds (user + system) the process has used, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

async fn run_level(
    bin: &std::path::Path,
    env: &[(String, String)],
    sessions: usize,
    seconds: f64,
    secured: Option<&super::security::Secured>,
) -> anyhow::Result<Level> {
    let fixtures = repo_root().join("models/fixtures");
    let session_limit = (sessions + 8).to_string();
    // Many rigs on one box: admit them all, and buffer 4 s per stream rather than 30 s (windows
    // are 0.5 s; 30 s rings for hundreds of 64-channel streams would be gigabytes).
    let mut server_env: Vec<(&str, &str)> = vec![
        ("MYELIN_MODELS__DIR", fixtures.to_str().unwrap()),
        ("MYELIN_LIMITS__SESSIONS", &session_limit),
        ("MYELIN_SESSIONS__RING_BUFFER_SECONDS", "4"),
    ];
    server_env.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let serve: Vec<&str> = match secured {
        Some(secured) => vec!["serve", "--config", &secured.config],
        None => vec!["serve"],
    };
    let server = TestServer::start_with_binary(bin, &serve, &server_env).await;
    let mut clients = Vec::new();
    for _ in 0..sessions.div_ceil(SESSIONS_PER_CONNECTION) {
        clients.push(match secured {
            Some(secured) => secured.client(&server).await?,
            None => server.client().await,
        });
    }
    let labels: Vec<String> = (1..=CHANNELS).map(|i| format!("E{i}")).collect();
    let mut ingests = Vec::with_capacity(sessions);
    let mut readers = Vec::with_capacity(sessions);
    for s in 0..sessions {
        let client: &Client = &clients[s / SESSIONS_PER_CONNECTION];
        let id = format!("rig-{s}");
        let ingest = client.open_ingest(stream_header(&id, &labels, RATE)).await?;
        let attached = client
            .attach_when_ready(pb::AttachRequest {
                session_id: id.clone(),
                model_id: "fixture-bench64".into(),
                window: Some(sliding(HOP as f64 / 1000.0)),
                latency_budget_ms: BUDGET_MS,
                ..Default::default()
            })
            .await?;
        let mut predictions = client.subscribe(&id, &attached.attachment_id).await?;
        readers.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut next_sequence = 0u64;
            while let Ok(Some(p)) = predictions.message().await {
                seen.by_status[p.status.clamp(0, 4) as usize] += 1;
                if !p.error_reason.is_empty() {
                    *seen.reasons.entry(p.error_reason.clone()).or_default() += 1;
                }
                seen.sequence_gaps += p.sequence.saturating_sub(next_sequence);
                next_sequence = p.sequence + 1;
                let t = p.timing.unwrap_or_default();
                if !t.budget_met {
                    seen.over_budget += 1;
                }
                seen.latency_us.push(t.server_latency_us);
            }
            seen
        }));
        ingests.push(ingest);
    }
    let pid = server.pid().unwrap_or(0);
    let cpu_before = cpu_seconds(pid);
    let n_samples = (seconds * RATE) as usize / CHUNK * CHUNK;
    let start = Instant::now() + Duration::from_millis(200);
    let mut senders = Vec::with_capacity(sessions);
    for (s, mut ingest) in ingests.into_iter().enumerate() {
        // Rigs do not start in lock step: spread their chunk phases over one chunk period.
        let offset = Duration::from_micros((s as u64 * 10_000 / sessions as u64) % 10_000);
        senders.push(tokio::spawn(async move {
            let values: Vec<f32> = (0..CHUNK * CHANNELS).map(|i| ((i * 7919 + s) % 1000) as f32 / 100.0 - 5.0).collect();
            let mut timestamps = vec![0.0f64; CHUNK];
            for begin in (0..n_samples).step_by(CHUNK) {
                let due = start + offset + Duration::from_secs_f64((begin + CHUNK) as f64 / RATE);
                tokio::time::sleep_until(due).await;
                for (i, t) in timestamps.iter_mut().enumerate() {
                    *t = (begin + i) as f64 / RATE;
                }
                ingest.send_chunk(&values, &timestamps).await?;
            }
            ingest.wait_acknowledged().await?;
            anyhow::Ok(ingest)
        }));
    }
    let mut finished = Vec::with_capacity(sessions);
    for sender in senders {
        finished.push(sender.await??);
    }
    let cpu_after = cpu_seconds(pid);
    let elapsed = start.elapsed().as_secs_f64();
    close_level(finished, Duration::from_millis(500), clients, server).await?;
    let expected_each = (n_samples as u64).saturating_sub(WINDOW) / HOP + 1;
    let mut level = Level {
        expected: expected_each * sessions as u64,
        received: [0; 5],
        missing: 0,
        sequence_gaps: 0,
        p50_us: 0,
        p99_us: 0,
        max_us: 0,
        cpu_percent: match (cpu_before, cpu_after) {
            (Some(a), Some(b)) => 100.0 * (b - a) / elapsed,
            _ => f64::NAN,
        },
        reasons: Default::default(),
    };
    let mut latency = Histogram::<u64>::new(3)?;
    for reader in readers {
        let seen = reader.await?;
        let total: u64 = seen.by_status.iter().sum();
        level.missing += expected_each.saturating_sub(total);
        level.sequence_gaps += seen.sequence_gaps;
        for (sum, n) in level.received.iter_mut().zip(seen.by_status) {
            *sum += n;
        }
        // The server marks a decoded prediction over budget LATE; one that says OK but missed
        // its budget would be a server bug, counted as missing so that the level fails.
        level.missing += seen.over_budget.saturating_sub(seen.by_status[2] + seen.by_status[3] + seen.by_status[4]);
        for (reason, n) in seen.reasons {
            *level.reasons.entry(reason).or_default() += n;
        }
        for us in seen.latency_us {
            latency.record(us.max(1))?;
        }
    }
    level.p50_us = latency.value_at_quantile(0.5);
    level.p99_us = latency.value_at_quantile(0.99);
    level.max_us = latency.max();
    Ok(level)
}
