//! `myelin-bench capacity --mixed`: N "rig units", each three sessions streamed in real time
//! through real gRPC connections: a Muse-like EEG headset (4 channels at 256 Hz) with an oddball
//! marker every 0.5 s decoded by erp-linear-muse (event-locked, 100 ms budget); 10 sEEG contacts
//! at 1 kHz decoded by Du-IN on 3 s windows every 100 ms (250 ms budget); and a CTF-275 MEG at
//! 120 Hz decoded by the brain module on sliding windows every 50 ms (200 ms budget) and on image
//! onsets every 0.5 s (50 ms budget). Reports, per kind of attachment, predictions by status and
//! server latency p50/p99/max against its budget, and for image onsets how long they waited in
//! the queue (an onset must not wait behind sliding windows with later deadlines).

use std::time::Duration;

use hdrhistogram::Histogram;
use myelin_client::{Client, proto as pb};
use myelin_e2e::{TestServer, event_locked, sliding, stream_header};
use tokio::time::Instant;

/// One kind of attachment in a unit: its label, model, window and budget.
struct Kind {
    label: &'static str,
    model: &'static str,
    window: pb::WindowPolicy,
    budget_ms: u32,
}

/// One session of a unit: its stream and its attachments.
struct Rig {
    name: &'static str,
    header: pb::StreamHeader,
    rate: f64,
    chunk: usize,
    /// A marker every this many samples (0: none), alternating codes 1 and 2.
    marker_every: usize,
    kinds: Vec<Kind>,
}

fn rigs() -> anyhow::Result<Vec<Rig>> {
    let muse: Vec<String> = ["TP9", "AF7", "AF8", "TP10"].map(String::from).to_vec();
    let seeg: Vec<String> = (1..=10).map(|i| format!("sEEG{i}")).collect();
    let (names, positions) = super::meg::layout()?;
    let mut meg = stream_header("", &names, 120.0);
    meg.modality = pb::Modality::Meg as i32;
    for (channel, p) in meg.channels.iter_mut().zip(&positions) {
        channel.r#type = "MEG".into();
        channel.unit = "femtotesla".into();
        channel.layout = Some(pb::LayoutPosition { x: p[0], y: p[1] });
    }
    let mut seeg_header = stream_header("", &seeg, 1000.0);
    seeg_header.modality = pb::Modality::Seeg as i32;
    Ok(vec![
        Rig {
            name: "eeg",
            header: stream_header("", &muse, 256.0),
            rate: 256.0,
            chunk: 8,
            marker_every: 128,
            kinds: vec![Kind { label: "ERP event-locked", model: "erp-linear-muse", window: event_locked(&[1, 2]), budget_ms: 100 }],
        },
        Rig {
            name: "seeg",
            header: seeg_header,
            rate: 1000.0,
            chunk: 10,
            marker_every: 0,
            kinds: vec![Kind { label: "Du-IN sliding 100 ms", model: "duin-synthetic", window: sliding(0.1), budget_ms: 250 }],
        },
        Rig {
            name: "meg",
            header: meg,
            rate: 120.0,
            chunk: 6,
            marker_every: 60,
            kinds: vec![
                Kind { label: "MEG sliding 50 ms", model: "meg-brain-synthetic", window: sliding(0.05), budget_ms: 200 },
                Kind { label: "MEG image onsets", model: "meg-brain-synthetic", window: event_locked(&[1, 2]), budget_ms: 50 },
            ],
        },
    ])
}

#[derive(Default)]
struct Seen {
    by_status: [u64; 5],
    latency_us: Vec<u64>,
    queue_wait_us: Vec<u64>,
}

/// Runs N = units, ramped; returns the largest N with every attachment's p99 within its budget
/// and nothing LATE, SHED or ERROR.
pub async fn run(
    bin: &std::path::Path,
    env: &[(String, String)],
    start: usize,
    step: usize,
    max: usize,
    seconds: f64,
) -> anyhow::Result<()> {
    println!(
        "myelin-bench capacity --mixed: N units of three real-time rigs (ERP EEG, Du-IN sEEG, MEG sliding + image onsets), {seconds:.0} s per N"
    );
    let mut best = None;
    let mut n = start.max(1);
    while n <= max {
        let clean = run_level(bin, env, n, seconds).await?;
        if !clean {
            break;
        }
        best = Some(n);
        n += step.max(1);
    }
    match best {
        Some(n) => {
            println!("mixed capacity: {n} units ({} sessions) with every p99 within its budget and nothing LATE, SHED or ERROR", 3 * n)
        }
        None => println!("mixed capacity: below {start} units"),
    }
    Ok(())
}

async fn run_level(bin: &std::path::Path, env: &[(String, String)], units: usize, seconds: f64) -> anyhow::Result<bool> {
    let limit = (3 * units + 8).to_string();
    let mut server_env: Vec<(&str, &str)> = vec![("MYELIN_LIMITS__SESSIONS", &limit), ("MYELIN_SESSIONS__RING_BUFFER_SECONDS", "6")];
    server_env.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let server = TestServer::start_with_binary(bin, &["serve"], &server_env).await;
    let rigs = rigs()?;
    let mut readers = Vec::new();
    let mut streams = Vec::new();
    let mut clients = Vec::new();
    for unit in 0..units {
        let client: Client = server.client().await;
        for (r, rig) in rigs.iter().enumerate() {
            let id = format!("{}-{unit}", rig.name);
            let mut header = rig.header.clone();
            header.session_id = id.clone();
            let ingest = client.open_ingest(header).await?;
            for (k, kind) in rig.kinds.iter().enumerate() {
                let request = pb::AttachRequest {
                    session_id: id.clone(),
                    model_id: kind.model.into(),
                    window: Some(kind.window.clone()),
                    latency_budget_ms: kind.budget_ms,
                    ..Default::default()
                };
                let attached = client.attach_when_ready(request).await?;
                let mut predictions = client.subscribe(&id, &attached.attachment_id).await?;
                readers.push((
                    (r, k),
                    tokio::spawn(async move {
                        let mut seen = Seen::default();
                        while let Ok(Some(p)) = predictions.message().await {
                            seen.by_status[p.status.clamp(0, 4) as usize] += 1;
                            let t = p.timing.unwrap_or_default();
                            seen.latency_us.push(t.server_latency_us);
                            // (Servers before the deadline scheduler do not report enqueued_ns.)
                            if t.decode_start_ns > 0 && t.enqueued_ns > 0 {
                                seen.queue_wait_us.push(t.decode_start_ns.saturating_sub(t.enqueued_ns) / 1000);
                            }
                        }
                        seen
                    }),
                ));
            }
            streams.push((r, ingest));
        }
        clients.push(client);
    }
    let start = Instant::now() + Duration::from_millis(200);
    let mut senders = Vec::new();
    for (i, (r, mut ingest)) in streams.into_iter().enumerate() {
        let rig = &rigs[r];
        let (rate, chunk, marker_every, width) = (rig.rate, rig.chunk, rig.marker_every, rig.header.channels.len());
        let offset = Duration::from_micros((i as u64 * 7_919) % 10_000);
        let n_samples = (seconds * rate) as usize / chunk * chunk;
        senders.push(tokio::spawn(async move {
            let values: Vec<f32> = (0..chunk * width).map(|v| ((v * 7919 + i) % 1000) as f32 / 10.0 - 50.0).collect();
            for begin in (0..n_samples).step_by(chunk) {
                tokio::time::sleep_until(start + offset + Duration::from_secs_f64((begin + chunk) as f64 / rate)).await;
                let ts: Vec<f64> = (begin..begin + chunk).map(|s| s as f64 / rate).collect();
                ingest.send_chunk(&values, &ts).await?;
                if marker_every > 0 && begin >= 2 * rate as usize {
                    let markers: Vec<pb::Marker> = (begin..begin + chunk)
                        .filter(|s| s % marker_every == 0)
                        .map(|s| pb::Marker { timestamp: s as f64 / rate, code: 1 + (s / marker_every % 2) as i32, label: String::new() })
                        .collect();
                    if !markers.is_empty() {
                        ingest.send_markers(markers).await?;
                    }
                }
            }
            ingest.wait_acknowledged().await?;
            anyhow::Ok(ingest)
        }));
    }
    let mut finished = Vec::new();
    for sender in senders {
        finished.push(sender.await??);
    }
    super::capacity::close_level(finished, Duration::from_millis(1500), clients, server).await?;

    let mut per_kind: Vec<Vec<Seen>> = rigs.iter().flat_map(|rig| rig.kinds.iter().map(|_| Vec::new())).collect();
    let index = |r: usize, k: usize| rigs[..r].iter().map(|rig| rig.kinds.len()).sum::<usize>() + k;
    for ((r, k), reader) in readers {
        per_kind[index(r, k)].push(reader.await?);
    }
    println!(
        "  N = {units} ({} sessions)\n  {:<22} {:>7} {:>8} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>14}",
        3 * units,
        "attachment",
        "budget",
        "ok",
        "late",
        "shed",
        "error",
        "p50 us",
        "p99 us",
        "max us",
        "within",
        "queue wait p99"
    );
    let mut clean = true;
    for (r, rig) in rigs.iter().enumerate() {
        for (k, kind) in rig.kinds.iter().enumerate() {
            let seen = &per_kind[index(r, k)];
            let mut latency = Histogram::<u64>::new(3)?;
            let mut wait = Histogram::<u64>::new(3)?;
            let mut statuses = [0u64; 5];
            for s in seen {
                s.latency_us.iter().try_for_each(|&us| latency.record(us.max(1)))?;
                s.queue_wait_us.iter().try_for_each(|&us| wait.record(us.max(1)))?;
                statuses.iter_mut().zip(s.by_status).for_each(|(sum, n)| *sum += n);
            }
            let p99 = latency.value_at_quantile(0.99);
            let within = p99 <= u64::from(kind.budget_ms) * 1000 && statuses[2..].iter().all(|&n| n == 0) && statuses[1] > 0;
            clean &= within;
            println!(
                "  {:<22} {:>5}ms {:>8} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>14}",
                kind.label,
                kind.budget_ms,
                statuses[1],
                statuses[2],
                statuses[3],
                statuses[4],
                latency.value_at_quantile(0.5),
                p99,
                latency.max(),
                if within { "yes" } else { "NO" },
                if wait.is_empty() { "-".to_string() } else { format!("{}us", wait.value_at_quantile(0.99)) }
            );
        }
    }
    Ok(clean)
}
