//! `myelin-bench meg`: the MEG brain module served live on CPU. Noise-valued MEG (275 CTF
//! sensors at 120 Hz, with layout positions; values do not change the compute) streams in real
//! time into the real server; one attachment decodes sliding windows every 50 ms and searches an
//! exact gallery of 10 k image embeddings, another decodes image-onset windows (every 0.5 s)
//! against the same gallery through HNSW. Reports per-window decode time (preprocessing + ONNX
//! Runtime + gallery search), the search time alone, and the server latency, p50/p99.

use std::time::Duration;

use hdrhistogram::Histogram;
use myelin_client::proto as pb;
use myelin_e2e::{TestServer, event_locked, repo_root, sliding};

const RATE: f64 = 120.0;
const GALLERY: usize = 10_000;
const DIM: usize = 768;

/// A float32 [n, dim] .npy file of uniform noise.
fn write_npy(path: &std::path::Path, n: usize, dim: usize, seed: u64) -> std::io::Result<()> {
    use npyz::WriterBuilder;
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut writer = npyz::WriteOptions::<f32>::new().default_dtype().shape(&[n as u64, dim as u64]).writer(file).begin_nd()?;
    let mut s = seed.max(1);
    writer.extend((0..n * dim).map(|_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }))?;
    writer.finish()
}

pub fn layout() -> anyhow::Result<(Vec<String>, Vec<[f64; 2]>)> {
    #[derive(serde::Deserialize)]
    struct Layout {
        names: Vec<String>,
        positions: Vec<[f64; 2]>,
    }
    let text = std::fs::read_to_string(repo_root().join("models/meg/ctf275_layout.json"))?;
    let layout: Layout = serde_json::from_str(&text)?;
    Ok((layout.names, layout.positions))
}

pub async fn run(server: Option<std::path::PathBuf>, seconds: f64) -> anyhow::Result<()> {
    let bin = server.unwrap_or_else(|| repo_root().join("target/release/myelin"));
    anyhow::ensure!(bin.exists(), "{} not found: cargo build --release --bins", bin.display());
    let galleries = std::env::temp_dir().join(format!("myelin-bench-galleries-{}", std::process::id()));
    std::fs::create_dir_all(&galleries)?;
    write_npy(&galleries.join("bench10k.npy"), GALLERY, DIM, 5)?;
    let server = TestServer::start_with_binary(
        &bin,
        &["serve"],
        &[("MYELIN_MODELS__GALLERIES_DIR", galleries.to_str().unwrap()), ("MYELIN_PUBLISH__SUBSCRIBER_QUEUE", "8192")],
    )
    .await;
    let client = server.client().await;
    let (names, positions) = layout()?;
    let header = pb::StreamHeader {
        session_id: "meg".into(),
        stream_name: "bench".into(),
        modality: pb::Modality::Meg as i32,
        channels: names
            .iter()
            .zip(&positions)
            .map(|(label, p)| pb::Channel {
                label: label.clone(),
                r#type: "MEG".into(),
                unit: "femtotesla".into(),
                position: None,
                layout: Some(pb::LayoutPosition { x: p[0], y: p[1] }),
            })
            .collect(),
        nominal_rate_hz: RATE,
        clock: pb::ClockSource::Unix as i32,
    };
    let mut ingest = client.open_ingest(header).await?;
    let gallery = |index: pb::GalleryIndex| Some(pb::GallerySpec { path: "bench10k.npy".into(), index: index as i32 });
    let mut labels = std::collections::HashMap::new();
    for (label, window, index) in [
        ("sliding 50 ms, exact 10 k gallery", sliding(0.05), pb::GalleryIndex::Exact),
        ("image onsets, HNSW 10 k gallery", event_locked(&[1]), pb::GalleryIndex::Hnsw),
    ] {
        let reply = client
            .attach_when_ready(pb::AttachRequest {
                session_id: "meg".into(),
                model_id: "meg-brain-synthetic".into(),
                window: Some(window),
                latency_budget_ms: 100,
                gallery: gallery(index),
                ..Default::default()
            })
            .await?;
        labels.insert(reply.attachment_id, label);
    }
    let mut predictions = client.subscribe("meg", "").await?;
    let reader = tokio::spawn(async move {
        let mut stats: std::collections::HashMap<String, [Histogram<u64>; 3]> = Default::default();
        while let Ok(Ok(Some(p))) = tokio::time::timeout(Duration::from_secs(3), predictions.message()).await {
            let t = p.timing.unwrap_or_default();
            let search_us = match &p.result {
                Some(pb::prediction::Result::Retrieval(r)) => r.search_ns / 1000,
                _ => 0,
            };
            let entry = stats.entry(p.attachment_id.clone()).or_insert_with(|| std::array::from_fn(|_| Histogram::new(3).unwrap()));
            entry[0].record((t.decode_end_ns.saturating_sub(t.decode_start_ns) / 1000).max(1)).ok();
            entry[1].record(search_us.max(1)).ok();
            entry[2].record(t.server_latency_us.max(1)).ok();
        }
        stats
    });
    eprintln!("streaming {seconds:.0} s of 275-channel MEG at 120 Hz in real time...");
    let hop = 6; // 50 ms chunks, as an acquisition system would send them
    let n_channels = names.len();
    let mut rng = 1u64;
    let mut chunk = vec![0.0f32; hop * n_channels];
    let start_time = 1_000.0;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(hop as f64 / RATE));
    let total = (seconds * RATE) as usize / hop * hop;
    for first in (0..total).step_by(hop) {
        ticker.tick().await;
        for v in chunk.iter_mut() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            *v = ((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 300.0;
        }
        let timestamps: Vec<f64> = (first..first + hop).map(|i| start_time + i as f64 / RATE).collect();
        ingest.send_chunk(&chunk, &timestamps).await?;
        if first % 60 == 0 && first >= 120 {
            ingest.send_markers(vec![pb::Marker { timestamp: timestamps[0], code: 1, ..Default::default() }]).await?;
        }
    }
    ingest.wait_acknowledged().await?;
    ingest.finish().await?;
    let stats = reader.await?;
    let _ = server.stop().await;
    let _ = std::fs::remove_dir_all(&galleries);
    println!(
        "myelin-bench meg: brain module (meg-brain-synthetic, ONNX Runtime CPU, 1 intra-op thread), 275 sensors x 180 samples, {seconds:.0} s real time"
    );
    println!(
        "{:<36} {:>7} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
        "attachment", "windows", "decode p50", "decode p99", "search p50", "search p99", "server p50", "server p99"
    );
    for (attachment, [decode, search, latency]) in &stats {
        println!(
            "{:<36} {:>7} {:>9}us {:>9}us {:>9}us {:>9}us {:>9}us {:>9}us",
            labels.get(attachment).copied().unwrap_or("?"),
            decode.len(),
            decode.value_at_quantile(0.5),
            decode.value_at_quantile(0.99),
            search.value_at_quantile(0.5),
            search.value_at_quantile(0.99),
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99)
        );
    }
    Ok(())
}
