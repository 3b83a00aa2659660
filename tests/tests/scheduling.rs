//! The scheduler seen from outside: the real binary, real gRPC clients, its own metrics.
//!
//! * Overload: three attachments each asking Du-IN (about 2 ms a window here) for 500 windows a
//!   second, about three times what one inference thread decodes. Every window must be accounted
//!   for, every OK prediction must have met its budget, every SHED must say why, and the
//!   server's counters must agree with what the subscribers received.
//! * Deadline first: two attachments on one model, one with a 5 ms budget and one with 200 ms;
//!   a chunk that completes 50 windows of each at once must have the tight one's decoded first,
//!   although the relaxed one was attached (and its windows cut) first.

use std::collections::BTreeMap;
use std::time::Duration;

use myelin_client::proto as pb;
use myelin_e2e::{TestServer, repo_root, sliding, stream_header};
use tokio::time::Instant;

fn attach(session: &str, model: &str, hop_s: f64, budget_ms: u32, late_policy: pb::LatePolicy) -> pb::AttachRequest {
    pb::AttachRequest {
        session_id: session.into(),
        model_id: model.into(),
        window: Some(sliding(hop_s)),
        latency_budget_ms: budget_ms,
        late_policy: late_policy as i32,
        ..Default::default()
    }
}

/// Reads a subscription until it ends or has been quiet for `quiet`.
fn drain(mut stream: tonic::Streaming<pb::Prediction>, quiet: Duration) -> tokio::task::JoinHandle<Vec<pb::Prediction>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        while let Ok(Ok(Some(p))) = tokio::time::timeout(quiet, stream.message()).await {
            got.push(p);
        }
        got
    })
}

/// The value of the Prometheus sample `name` whose labels include every pair of `labels` (0 when
/// absent).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn overload_accounts_for_every_window_and_ok_means_on_time() {
    let models = repo_root().join("models/duin");
    let server = TestServer::start(&[
        ("MYELIN_MODELS__DIR", models.to_str().unwrap()),
        ("MYELIN_MODELS__WORKERS_PER_MODEL", "1"),
        ("MYELIN_MODELS__QUEUE_DEPTH", "64"),
    ])
    .await;
    let client = server.client().await;
    let channels: Vec<String> = (1..=10).map(|i| format!("sEEG{i}")).collect();
    let rate = 1000.0;
    let mut ingest = client.open_ingest(stream_header("flood", &channels, rate)).await.unwrap();
    let budget_ms = 50;
    let hop_s = 0.002;
    let mut attachments = Vec::new();
    for (name, policy) in [("drop-a", pb::LatePolicy::Drop), ("drop-b", pb::LatePolicy::Drop), ("deliver", pb::LatePolicy::Deliver)] {
        let attached = client.attach_when_ready(attach("flood", "duin-synthetic", hop_s, budget_ms, policy)).await.unwrap();
        let stream = client.subscribe("flood", &attached.attachment_id).await.unwrap();
        attachments.push((name, policy, drain(stream, Duration::from_secs(5))));
    }
    // Six seconds of sEEG in real time, 10 ms chunks: windows from 3 s on, 500 a second each.
    let seconds = 6;
    let n_samples = seconds * 1000;
    let chunk = 10;
    let values: Vec<f32> = (0..chunk * channels.len()).map(|i| ((i * 37) % 200) as f32 - 100.0).collect();
    let start = Instant::now();
    for begin in (0..n_samples).step_by(chunk) {
        tokio::time::sleep_until(start + Duration::from_secs_f64((begin + chunk) as f64 / rate)).await;
        let ts: Vec<f64> = (begin..begin + chunk).map(|i| i as f64 / rate).collect();
        ingest.send_chunk(&values, &ts).await.unwrap();
    }
    ingest.wait_acknowledged().await.unwrap();
    let expected = ((n_samples - 3000) / 2 + 1) as u64;

    let mut received: BTreeMap<&str, u64> = BTreeMap::new();
    let mut gaps_in_drop = 0u64;
    for (name, policy, reader) in attachments {
        let got = reader.await.unwrap();
        let mut sequences: Vec<u64> = got.iter().map(|p| p.sequence).collect();
        sequences.sort_unstable();
        sequences.dedup();
        assert_eq!(sequences.len(), got.len(), "{name}: a sequence number twice");
        let last = *sequences.last().expect("predictions");
        assert!(last < expected, "{name}: sequence {last} for {expected} windows");
        // DROP does not publish a window decoded too late: each such gap is counted below.
        let gaps = expected - got.len() as u64;
        let mut shed_reasons = BTreeMap::new();
        for p in &got {
            let t = p.timing.unwrap();
            let status = pb::PredictionStatus::try_from(p.status).unwrap();
            *received.entry(status.as_str_name()).or_default() += 1;
            match status {
                pb::PredictionStatus::Ok => {
                    assert!(t.budget_met && t.server_latency_us <= u64::from(budget_ms) * 1000, "{name}: OK but late: {t:?}");
                    assert!(p.result.is_some() && t.batch_size >= 1, "{name}: OK without a result");
                }
                pb::PredictionStatus::Late => {
                    assert_eq!(policy, pb::LatePolicy::Deliver, "{name}: DROP published a late prediction");
                    assert!(!t.budget_met && p.result.is_some());
                }
                pb::PredictionStatus::Shed => {
                    assert!(p.result.is_none() && t.decode_start_ns == 0, "{name}: a SHED window was decoded");
                    *shed_reasons.entry(p.error_reason.clone()).or_insert(0u64) += 1;
                }
                other => panic!("{name}: unexpected {other:?}: {p:?}"),
            }
        }
        let allowed: &[&str] =
            if policy == pb::LatePolicy::Drop { &["deadline unreachable", "model queue full"] } else { &["model queue full"] };
        assert!(shed_reasons.keys().all(|r| allowed.contains(&r.as_str())), "{name}: SHED reasons {shed_reasons:?}");
        if policy == pb::LatePolicy::Drop {
            assert!(shed_reasons.get("deadline unreachable").copied().unwrap_or(0) > 0, "{name}: overload but nothing shed by deadline");
            gaps_in_drop += gaps;
        } else {
            assert_eq!(gaps, 0, "{name}: DELIVER lost windows: every window is published, whatever its status");
        }
        eprintln!("{name}: {} predictions, {gaps} late and dropped, SHED {shed_reasons:?}", got.len());
    }
    assert!(received.get("PREDICTION_STATUS_OK").copied().unwrap_or(0) > 0, "overload, yet nothing decoded on time: {received:?}");

    let (_, metrics) = server.http_get("/metrics").await;
    let model = ("model", "duin-synthetic");
    for (status, label) in [("PREDICTION_STATUS_OK", "ok"), ("PREDICTION_STATUS_SHED", "shed")] {
        let counted = metric(&metrics, "myelin_predictions_total", &[model, ("status", label)]);
        assert_eq!(counted, received.get(status).copied().unwrap_or(0), "{label}: metrics against subscribers");
    }
    // LATE is counted whether published (DELIVER) or not (DROP); the dropped ones are the gaps.
    let late = metric(&metrics, "myelin_predictions_total", &[model, ("status", "late")]);
    let dropped = metric(&metrics, "myelin_late_predictions_dropped_total", &[model]);
    assert_eq!(dropped, gaps_in_drop, "every missing sequence number is a late prediction DROP did not publish");
    assert_eq!(late, received.get("PREDICTION_STATUS_LATE").copied().unwrap_or(0) + dropped);
    let by_reason = metric(&metrics, "myelin_predictions_shed_total", &[model]);
    assert_eq!(by_reason, received.get("PREDICTION_STATUS_SHED").copied().unwrap_or(0), "SHED by reason against subscribers");
    ingest.finish().await.unwrap();
}

#[tokio::test]
async fn the_earliest_deadline_is_decoded_first() {
    let fixtures = repo_root().join("models/fixtures");
    let server = TestServer::start(&[
        ("MYELIN_MODELS__DIR", fixtures.to_str().unwrap()),
        ("MYELIN_MODELS__WORKERS_PER_MODEL", "1"),
        // Through the queue, not inline on the session's thread.
        ("MYELIN_MODELS__INLINE_BELOW_US", "0"),
    ])
    .await;
    let client = server.client().await;
    let channels: Vec<String> = (1..=64).map(|i| format!("E{i}")).collect();
    let mut ingest = client.open_ingest(stream_header("edf", &channels, 1000.0)).await.unwrap();
    // The relaxed attachment first: a first-come queue would decode its windows first.
    let relaxed = client.attach_when_ready(attach("edf", "fixture-bench64", 0.02, 200, pb::LatePolicy::Deliver)).await.unwrap();
    let tight = client.attach(attach("edf", "fixture-bench64", 0.02, 5, pb::LatePolicy::Deliver)).await.unwrap();
    let relaxed_reader = drain(client.subscribe("edf", &relaxed.attachment_id).await.unwrap(), Duration::from_secs(3));
    let tight_reader = drain(client.subscribe("edf", &tight.attachment_id).await.unwrap(), Duration::from_secs(3));
    // Half a second first (the first window), then one second at once: 50 more windows of each
    // attachment are complete in the same instant, 100 windows queued together.
    let values = |n: usize| -> Vec<f32> { (0..n * 64).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect() };
    let ts = |from: usize, n: usize| -> Vec<f64> { (from..from + n).map(|i| i as f64 / 1000.0).collect() };
    ingest.send_chunk(&values(500), &ts(0, 500)).await.unwrap();
    ingest.wait_acknowledged().await.unwrap();
    ingest.send_chunk(&values(1000), &ts(500, 1000)).await.unwrap();
    ingest.wait_acknowledged().await.unwrap();
    let (relaxed, tight) = (relaxed_reader.await.unwrap(), tight_reader.await.unwrap());
    assert_eq!((relaxed.len(), tight.len()), (51, 51), "one prediction per window");
    let burst = |got: &[pb::Prediction]| -> Vec<pb::Timing> { got.iter().skip(1).map(|p| p.timing.unwrap()).collect() };
    let (relaxed, tight) = (burst(&relaxed), burst(&tight));
    assert!(relaxed.iter().chain(&tight).all(|t| t.last_sample_received_ns == tight[0].last_sample_received_ns));
    let tight_last = tight.iter().map(|t| t.decode_start_ns).max().unwrap();
    let relaxed_first = relaxed.iter().map(|t| t.decode_start_ns).min().unwrap();
    assert!(tight_last <= relaxed_first, "a 200 ms window was decoded {} us before the last 5 ms one", (tight_last - relaxed_first) / 1000);
    assert!(tight.iter().all(|t| t.deadline_ns == t.last_sample_received_ns + 5_000_000));
    assert!(relaxed.iter().all(|t| t.deadline_ns == t.last_sample_received_ns + 200_000_000));
    ingest.finish().await.unwrap();
}
