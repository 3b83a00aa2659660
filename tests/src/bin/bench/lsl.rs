//! `myelin-bench lsl`: latency from an LSL push to the prediction received by an LSL inlet.
//! 64 channels at 1 kHz pushed in real time (chunks of 10 samples) from an LSL outlet in this
//! process; the server connects it as a source (ConnectLsl), decodes fixture-bench64 on sliding
//! windows, and publishes each prediction on an LSL outlet, which an inlet here reads. Latency =
//! LSL clock at receipt - LSL clock when the chunk completing the window was pushed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use myelin_client::proto as pb;
use myelin_e2e::{TestServer, repo_root, sliding};
use myelin_lsl::{CF_FLOAT32, Inlet, Lsl, Outlet};

const RATE: f64 = 1000.0;
const CHANNELS: usize = 64;
const CHUNK: usize = 10;

pub async fn run(server: Option<std::path::PathBuf>, seconds: f64) -> anyhow::Result<()> {
    let bin = server.unwrap_or_else(|| repo_root().join("target/release/myelin"));
    anyhow::ensure!(bin.exists(), "{} not found: cargo build --release --bins", bin.display());
    let lsl = Lsl::load(Some(&repo_root().join("runtime/liblsl.so.2")))?;
    let server = TestServer::start_with_binary(&bin, &["serve"], &[]).await;
    let client = server.client().await;
    let tag = std::process::id();
    let name = format!("bench-eeg-{tag}");
    let mut info = lsl.stream_info(&name, "EEG", CHANNELS, RATE, CF_FLOAT32, &name);
    let labels: Vec<String> = (1..=CHANNELS).map(|i| format!("E{i}")).collect();
    let triples: Vec<(&str, &str, &str)> = labels.iter().map(|l| (l.as_str(), "microvolts", "EEG")).collect();
    info.append_channels(&triples);
    let mut outlet = Outlet::new(&info);

    client
        .connect_lsl(pb::ConnectLslRequest {
            session_id: "lsl-bench".into(),
            data_name: name.clone(),
            timeout_s: 10.0,
            ..Default::default()
        })
        .await?;
    let attached = client
        .attach(pb::AttachRequest {
            session_id: "lsl-bench".into(),
            model_id: "fixture-bench64".into(),
            window: Some(sliding(0.02)),
            latency_budget_ms: 20,
            lsl_outlet: true,
            ..Default::default()
        })
        .await?;
    let prediction_stream = attached.lsl_outlets[0].clone();

    let n_chunks = (seconds * RATE) as usize / CHUNK;
    let pushed_at: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::with_capacity(n_chunks)));
    let t0 = lsl.local_clock() + 1.0;
    // The reader: its own thread and inlet (liblsl objects are per thread).
    let reader = {
        let (lsl, pushed_at) = (lsl.clone(), pushed_at.clone());
        std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
            let found = lsl.resolve(&myelin_lsl::predicate(&prediction_stream, "", ""), 10.0);
            let info = found.into_iter().next().ok_or_else(|| anyhow::anyhow!("prediction outlet not found"))?;
            let mut inlet = Inlet::new(&info, 360, false);
            inlet.open(10.0)?;
            let width = info.channel_count();
            let (mut data, mut stamps) = (vec![0.0f32; width * 64], vec![0.0f64; 64]);
            let mut latency = Histogram::<u64>::new(3)?;
            let expected = (n_chunks * CHUNK - 500) / 20;
            let mut idle = 0;
            while latency.len() < expected as u64 && idle < 25 {
                let n = inlet.pull_available(&mut data, &mut stamps, 0.2)?;
                let now = lsl.local_clock();
                if n == 0 {
                    idle += 1;
                    continue;
                }
                idle = 0;
                for &ts in &stamps[..n] {
                    let last_index = ((ts - t0) * RATE).round() as usize;
                    if let Some(pushed) = pushed_at.lock().unwrap().get(last_index / CHUNK) {
                        latency.record(((now - pushed) * 1e6).max(1.0) as u64)?;
                    }
                }
            }
            Ok(latency)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let values: Vec<f32> = (0..CHANNELS).map(|i| i as f32 / 10.0).collect();
    let pusher = std::thread::spawn(move || {
        for k in 0..n_chunks {
            let due = t0 + ((k + 1) * CHUNK) as f64 / RATE;
            let wait = due - lsl.local_clock();
            if wait > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(wait));
            }
            for i in 0..CHUNK {
                let index = k * CHUNK + i;
                outlet.push_f32(&values, t0 + index as f64 / RATE).expect("push");
            }
            pushed_at.lock().unwrap().push(lsl.local_clock());
        }
    });
    tokio::task::spawn_blocking(move || pusher.join()).await?.map_err(|_| anyhow::anyhow!("pusher panicked"))?;
    let latency = tokio::task::spawn_blocking(move || reader.join()).await?.map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let _ = server.stop().await;
    println!(
        "myelin-bench lsl: {CHANNELS} channels at {RATE} Hz pushed by an LSL outlet in chunks of {CHUNK}, {seconds:.0} s, fixture-bench64 on 0.5 s windows every 20 ms, predictions read by an LSL inlet"
    );
    println!("{:<52} {:>9} {:>9} {:>9} {:>9}", "latency (microseconds), over predictions", "p50", "p99", "p99.9", "max");
    println!(
        "{:<52} {:>9} {:>9} {:>9} {:>9}",
        format!("LSL push -> LSL prediction received ({})", latency.len()),
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.value_at_quantile(0.999),
        latency.max()
    );
    Ok(())
}
