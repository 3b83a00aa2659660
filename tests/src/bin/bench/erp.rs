//! `myelin-bench erp`: ERP decoders on real EEG through the running server.

use std::time::Duration;

use hdrhistogram::Histogram;
use myelin_client::proto as pb;
use myelin_client::recording::{Recording, ReplayOptions, replay};
use myelin_e2e::{TestServer, event_locked, repo_root};

const DECODERS: [&str; 3] = ["erp-linear-muse", "erp-mini-eegnet-subject1-session1", "erp-mini-eegnet-wide-subject1-session1"];

pub async fn run(server: Option<std::path::PathBuf>, repetitions: usize) -> anyhow::Result<()> {
    let bin = server.unwrap_or_else(|| repo_root().join("target/release/myelin"));
    anyhow::ensure!(bin.exists(), "{} not found: cargo build --release --bins", bin.display());
    let calibrations = std::env::temp_dir().join(format!("myelin-bench-calibrations-{}", std::process::id()));
    let server = TestServer::start_with_binary(
        &bin,
        &["serve"],
        &[("MYELIN_MODELS__CALIBRATIONS_DIR", calibrations.to_str().unwrap()), ("MYELIN_PUBLISH__SUBSCRIBER_QUEUE", "8192")],
    )
    .await;
    let client = server.client().await;
    let recording = Recording::read_csv(&repo_root().join("models/data/p300/subject1_session1_2017-02-04-15_45_13.csv.gz"))?;
    let second = Recording::read_csv(&repo_root().join("models/data/p300/subject1_session1_2017-02-04-15_47_49.csv.gz"))?;

    // Calibration time: 300 epochs collected live, then cross-validation (5 folds) + final fit.
    let mut fit_seconds = Vec::new();
    let mut native_id = String::new();
    for repetition in 0..repetitions {
        let session = format!("cal-{repetition}");
        let mut ingest = client.open_ingest(recording.header(&session, "bench")).await?;
        let base = client
            .attach_when_ready(pb::AttachRequest {
                session_id: session.clone(),
                model_id: "erp-linear-muse".into(),
                window: Some(event_locked(&[1, 2])),
                ..Default::default()
            })
            .await?;
        let mut progress = client
            .calibrate(pb::CalibrateRequest {
                attachment_id: base.attachment_id,
                target_codes: vec![2],
                non_target_codes: vec![1],
                max_epochs: 300,
                model_id: "xdawn-bench".into(),
                keep_current_model: true,
                ..Default::default()
            })
            .await?;
        replay(&mut ingest, &recording, ReplayOptions { speed: 0.0, chunk: 64, time_offset: 0.0 }).await?;
        let offset = recording.timestamps[recording.n_samples() - 1] + 1.0 - second.timestamps[0];
        replay(&mut ingest, &second, ReplayOptions { speed: 0.0, chunk: 64, time_offset: offset }).await?;
        let mut result = None;
        while let Some(update) = progress.message().await? {
            if update.result.is_some() {
                result = update.result;
            }
        }
        let result = result.ok_or_else(|| anyhow::anyhow!("calibration gave no result"))?;
        anyhow::ensure!(result.epochs == 300, "calibrated on {} epochs", result.epochs);
        fit_seconds.push(result.fit_seconds);
        native_id = format!("{}@{}", result.model_id, result.model_version);
        ingest.finish().await?;
    }

    // Per-epoch decode time: every decoder attached to one real-time stream of a real run.
    let mut ingest = client.open_ingest(second.header("decode", "bench")).await?;
    let (native_model, native_version) = native_id.split_once('@').expect("id@version");
    let mut names = std::collections::HashMap::new();
    for (model, version) in DECODERS.iter().map(|m| (*m, "")).chain([(native_model, native_version)]) {
        let reply = client
            .attach_when_ready(pb::AttachRequest {
                session_id: "decode".into(),
                model_id: model.into(),
                model_version: version.into(),
                window: Some(event_locked(&[1, 2])),
                latency_budget_ms: 100,
                ..Default::default()
            })
            .await?;
        names.insert(
            reply.attachment_id,
            if model == native_model { "xdawn-lda (native, calibrated live)".to_string() } else { format!("{model} (ONNX)") },
        );
    }
    let mut predictions = client.subscribe("decode", "").await?;
    let reader = tokio::spawn(async move {
        let mut decode: std::collections::HashMap<String, (Histogram<u64>, Histogram<u64>)> = Default::default();
        while let Ok(Ok(Some(p))) = tokio::time::timeout(Duration::from_secs(3), predictions.message()).await {
            let t = p.timing.unwrap_or_default();
            let entry = decode.entry(p.attachment_id.clone()).or_insert_with(|| (Histogram::new(3).unwrap(), Histogram::new(3).unwrap()));
            entry.0.record((t.decode_end_ns.saturating_sub(t.decode_start_ns) / 1000).max(1)).ok();
            entry.1.record(t.server_latency_us.max(1)).ok();
        }
        decode
    });
    eprintln!("streaming {:.0} s of real EEG in real time with {} decoders attached...", second.duration_s(), names.len());
    replay(&mut ingest, &second, ReplayOptions { speed: 1.0, chunk: 8, time_offset: 0.0 }).await?;
    ingest.wait_acknowledged().await?;
    ingest.finish().await?;
    let decode = reader.await?;
    let _ = server.stop().await;
    let _ = std::fs::remove_dir_all(&calibrations);

    println!("myelin-bench erp: real Muse EEG (4 channels, 256 Hz), event-locked windows [-0.125, 0.75) s, one run streamed in real time");
    println!("{:<46} {:>7} {:>9} {:>9} {:>11} {:>11}", "decoder", "epochs", "p50 (us)", "p99 (us)", "server p50", "server p99");
    let mut rows: Vec<_> = decode.iter().collect();
    rows.sort_by_key(|(id, _)| names.get(*id).cloned());
    for (attachment, (inference, latency)) in rows {
        println!(
            "{:<46} {:>7} {:>9} {:>9} {:>11} {:>11}",
            names.get(attachment).map_or("?", String::as_str),
            inference.len(),
            inference.value_at_quantile(0.5),
            inference.value_at_quantile(0.99),
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99)
        );
    }
    fit_seconds.sort_by(f64::total_cmp);
    println!(
        "calibration of xDAWN + LDA on 300 live epochs (5-fold cross-validation + final fit): median {:.3} s over {} runs (min {:.3}, max {:.3})",
        fit_seconds[fit_seconds.len() / 2],
        fit_seconds.len(),
        fit_seconds[0],
        fit_seconds[fit_seconds.len() - 1]
    );
    Ok(())
}
