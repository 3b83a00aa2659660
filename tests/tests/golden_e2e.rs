//! The real binary, a real client, golden vectors computed outside the server (scipy for the
//! DSP, ONNX Runtime in Python for the model): every prediction must match them.

use std::time::Duration;

use myelin_client::proto as pb;
use myelin_e2e::{Golden, TestServer, collect, event_locked};

#[tokio::test]
async fn predictions_match_golden_vectors_with_complete_timing() {
    let server = TestServer::start(&[]).await;
    let client = server.client().await;
    let golden = Golden::load();

    let mut ingest = client.open_ingest(golden.header("golden")).await.unwrap();
    let budget_ms = 250;
    let attached = client
        .attach_when_ready(pb::AttachRequest {
            session_id: "golden".into(),
            model_id: "fixture-linear".into(),
            window: Some(event_locked(&golden.marker_codes)),
            latency_budget_ms: budget_ms,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(attached.window_model_samples, 64);
    assert_eq!(attached.window_stream_samples, 128);
    let mut predictions = client.subscribe("golden", &attached.attachment_id).await.unwrap();

    golden.stream(&mut ingest, 16).await;
    ingest.wait_acknowledged().await.unwrap();
    let got = collect(&mut predictions, golden.expected.len(), Duration::from_secs(20)).await;
    let summary = ingest.finish().await.unwrap();
    assert_eq!(summary.last_reply.samples_accepted_until, golden.n_samples as u64);
    assert!(summary.warnings.is_empty(), "unexpected warnings: {:?}", summary.warnings);
    assert_eq!(got.len(), golden.expected.len(), "one prediction per wanted marker");

    for (p, want) in got.iter().zip(&golden.expected) {
        assert_eq!(p.status, pb::PredictionStatus::Ok as i32, "{p:?}");
        assert_eq!(p.model_id, "fixture-linear");
        assert_eq!(p.model_version, "1");
        assert_eq!(p.session_id, "golden");
        let window = p.window.unwrap();
        assert_eq!(window.first_sample_index, want.first_sample_index);
        assert_eq!(window.last_sample_index, want.last_sample_index);
        assert!((window.first_timestamp - golden.timestamp(want.first_sample_index as usize)).abs() < 1e-9);
        assert!((window.last_timestamp - golden.timestamp(want.last_sample_index as usize)).abs() < 1e-9);
        let trigger = p.trigger.as_ref().expect("event-locked predictions carry their marker");
        assert_eq!(trigger.code, want.code);
        // The window itself (echoed as the embedding): server DSP vs scipy.
        assert_eq!(p.embedding.len(), want.features.len());
        let worst = p.embedding.iter().zip(&want.features).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "window differs from scipy by {worst}");
        // The model output: server ONNX Runtime vs Python ONNX Runtime on the same window.
        let Some(pb::prediction::Result::Classification(c)) = &p.result else { panic!("no classification") };
        assert_eq!(c.labels, vec!["alpha", "beta", "gamma"]);
        let worst = c.probabilities.iter().zip(&want.probs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "probabilities differ by {worst}");

        let t = p.timing.unwrap();
        assert!(t.last_sample_received_ns > 0, "{t:?}");
        assert!(t.last_sample_received_ns <= t.decode_start_ns, "{t:?}");
        assert!(t.decode_start_ns <= t.decode_end_ns, "{t:?}");
        assert!(t.decode_end_ns <= t.published_ns, "{t:?}");
        assert_eq!(t.budget_ms, budget_ms);
        let latency_ns = t.published_ns - t.last_sample_received_ns;
        assert_eq!(t.server_latency_us, latency_ns / 1000);
        assert_eq!(t.budget_met, latency_ns <= u64::from(budget_ms) * 1_000_000, "{t:?}");
    }
    // Sequence numbers count the attachment's predictions.
    let sequences: Vec<u64> = got.iter().map(|p| p.sequence).collect();
    assert_eq!(sequences, (0..got.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_budget_too_small_to_meet_is_reported_late_or_dropped() {
    let server = TestServer::start(&[]).await;
    let client = server.client().await;
    let golden = Golden::load();
    let mut ingest = client.open_ingest(golden.header("late")).await.unwrap();
    // Deterministic lateness: all samples first, the markers 1.5 s later. Each window's last
    // sample was then received over a second before its prediction can be published, so a 1 ms
    // budget is missed for certain.
    let one_ms_budget = |late_policy: pb::LatePolicy| pb::AttachRequest {
        session_id: "late".into(),
        model_id: "fixture-linear".into(),
        window: Some(event_locked(&golden.marker_codes)),
        latency_budget_ms: 1,
        late_policy: late_policy as i32,
        ..Default::default()
    };
    let deliver = client.attach_when_ready(one_ms_budget(pb::LatePolicy::Deliver)).await.unwrap();
    let drop = client.attach(one_ms_budget(pb::LatePolicy::Drop)).await.unwrap();
    let mut delivered = client.subscribe("late", &deliver.attachment_id).await.unwrap();
    let mut dropped = client.subscribe("late", &drop.attachment_id).await.unwrap();
    let c = golden.channels.len();
    let timestamps: Vec<f64> = (0..golden.n_samples).map(|i| golden.timestamp(i)).collect();
    ingest.send_chunk(&golden.samples[..golden.n_samples * c], &timestamps).await.unwrap();
    ingest.wait_acknowledged().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let markers = golden.markers.iter().map(|m| pb::Marker { timestamp: m.timestamp, code: m.code, label: String::new() }).collect();
    ingest.send_markers(markers).await.unwrap();
    let got = collect(&mut delivered, golden.expected.len(), Duration::from_secs(20)).await;
    assert_eq!(got.len(), golden.expected.len());
    for p in &got {
        let t = p.timing.unwrap();
        assert_eq!(p.status, pb::PredictionStatus::Late as i32, "{p:?}");
        assert!(!t.budget_met);
        assert!(t.server_latency_us >= 1_000_000, "the last sample arrived 1.5 s before: {t:?}");
        assert!(p.result.is_some(), "late predictions are still decoded");
    }
    // DROP: the scheduler knows before decoding that these windows cannot make 1 ms, so they
    // never reach the model; each is published SHED with the reason, nothing LATE.
    let shed = collect(&mut dropped, golden.expected.len() + 1, Duration::from_millis(1500)).await;
    assert_eq!(shed.len(), golden.expected.len(), "one SHED per window, and nothing else: {shed:?}");
    for (i, p) in shed.iter().enumerate() {
        assert_eq!(p.status, pb::PredictionStatus::Shed as i32, "{p:?}");
        assert_eq!(p.error_reason, "deadline unreachable");
        assert_eq!(p.sequence, i as u64);
        assert!(p.result.is_none(), "a shed window is not decoded");
        assert_eq!(p.timing.unwrap().decode_start_ns, 0);
    }
    let (_, metrics) = server.http_get("/metrics").await;
    let shed_line =
        format!("myelin_predictions_shed_total{{model=\"fixture-linear\",reason=\"deadline unreachable\"}} {}", golden.expected.len());
    assert!(metrics.contains(&shed_line), "{shed_line} not in {metrics}");
    ingest.finish().await.unwrap();
}
