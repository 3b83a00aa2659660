//! No prediction is ever OK with a non-finite value: a model whose output is NaN, samples the
//! door replaced, and the windows within the filters' settling time after them are published
//! ERROR with the reason; the windows after them are OK again.

use std::time::Duration;

use myelin_client::proto as pb;
use myelin_e2e::{TestServer, collect, sliding, stream_header};

const FIXTURES: (&str, &str) = ("MYELIN_MODELS__DIR", "tests/fixtures/models");

fn channels() -> Vec<String> {
    ["C3", "Cz", "C4", "Pz"].iter().map(|s| s.to_string()).collect()
}

fn timestamps(first: usize, n: usize) -> Vec<f64> {
    (first..first + n).map(|i| 1.0 + i as f64 / 128.0).collect()
}

/// Opens session `session` and attaches `model` on sliding windows every `hop_s`; returns the
/// ingest stream and the attachment's predictions.
async fn sliding_attachment(
    client: &myelin_client::Client,
    session: &str,
    model: &str,
    hop_s: f64,
) -> (myelin_client::IngestStream, tonic::Streaming<pb::Prediction>) {
    let ingest = client.open_ingest(stream_header(session, &channels(), 128.0)).await.unwrap();
    let request = pb::AttachRequest {
        session_id: session.into(),
        model_id: model.into(),
        window: Some(sliding(hop_s)),
        latency_budget_ms: 2000,
        ..Default::default()
    };
    let attached = client.attach_when_ready(request).await.unwrap();
    let predictions = client.subscribe(session, &attached.attachment_id).await.unwrap();
    (ingest, predictions)
}

fn finite(p: &pb::Prediction) -> bool {
    let result = match &p.result {
        Some(pb::prediction::Result::Classification(c)) => c.probabilities.iter().chain(&c.top_probabilities).all(|v| v.is_finite()),
        Some(pb::prediction::Result::Retrieval(r)) => r.scores.iter().all(|v| v.is_finite()),
        None => true,
    };
    result && p.embedding.iter().all(|v| v.is_finite())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_output_that_is_not_finite_is_published_error_never_ok() {
    let server = TestServer::start(&[FIXTURES]).await;
    let client = server.client().await;
    let (mut ingest, mut predictions) = sliding_attachment(&client, "nan-out", "fixture-nan", 0.5).await;
    // 2 s of +1, 2 s of -1 (the model's output is sqrt(mean): NaN), 2 s of +1, then 2 s of a
    // finite value whose sum overflows float32 inside the model (its output is +inf).
    let segments = [1.0f32, -1.0, 1.0, 3.0e38];
    for (k, value) in segments.iter().enumerate() {
        ingest.send_chunk(&vec![*value; 256 * 4], &timestamps(k * 256, 256)).await.unwrap();
    }
    ingest.finish().await.unwrap();
    // Sliding 1 s windows every 0.5 s over 8 s: 15 windows.
    let got = collect(&mut predictions, 15, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 15);
    let (mut ok, mut refused) = (0, 0);
    for p in &got {
        let w = p.window.unwrap();
        let segment = |i: u64| segments[(i / 256) as usize];
        let all_positive_and_small = (w.first_sample_index..=w.last_sample_index).all(|i| segment(i) == 1.0);
        if all_positive_and_small {
            assert_eq!(p.status, pb::PredictionStatus::Ok as i32, "{p:?}");
            ok += 1;
        } else if (w.first_sample_index..=w.last_sample_index).any(|i| segment(i) == -1.0 || segment(i) > 1.0) {
            // A window of mixed sign may average either way; one reaching the overflow
            // segment's samples is inf or NaN inside the model.
            if p.status != pb::PredictionStatus::Ok as i32 {
                assert_eq!(p.status, pb::PredictionStatus::Error as i32, "{p:?}");
                assert_eq!(p.error_reason, "non-finite output", "{p:?}");
                assert!(p.result.is_none(), "an ERROR carries no result: {p:?}");
                refused += 1;
            }
        }
        assert!(p.status != pb::PredictionStatus::Ok as i32 || finite(p), "OK with a non-finite value: {p:?}");
    }
    assert!(ok >= 4 && refused >= 4, "{ok} OK, {refused} ERROR");
    let (_, metrics) = server.http_get("/metrics").await;
    assert!(metrics.contains("myelin_non_finite_outputs_total{model=\"fixture-nan\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_filled_samples_and_the_filters_settling_after_them_are_not_decoded() {
    let server = TestServer::start(&[FIXTURES, ("MYELIN_SESSIONS__NON_FINITE_POLICY", "zero_fill")]).await;
    let client = server.client().await;
    let (mut ingest, mut predictions) = sliding_attachment(&client, "burst", "fixture-linear", 0.25).await;
    // 20 s of a 10 Hz wave on a 500 uV offset, with a 2 s burst of NaN (lead-off) on one channel
    // from 6 s and a lone +inf at 14 s.
    let n = 128 * 20;
    let mut samples: Vec<f32> = (0..n).flat_map(|i| (0..4).map(move |c| 500.0 + 20.0 * ((i as f32 / 12.8) + c as f32).sin())).collect();
    for i in 6 * 128..8 * 128 {
        samples[i * 4 + 1] = f32::NAN;
    }
    samples[14 * 128 * 4 + 2] = f32::INFINITY;
    for first in (0..n).step_by(64) {
        ingest.send_chunk(&samples[first * 4..(first + 64) * 4], &timestamps(first, 64)).await.unwrap();
    }
    let summary = ingest.finish().await.unwrap();
    let warning = summary.warnings.iter().find(|w| w.kind == pb::IngestWarningKind::NonFiniteZeroFilled as i32).expect("warned");
    assert_eq!(warning.sample_index, 6 * 128);
    let got = collect(&mut predictions, 200, Duration::from_secs(5)).await;
    // The filter's settling time, as the error reason states it.
    let settle: u64 = got
        .iter()
        .find_map(|p| p.error_reason.split("settling time (").nth(1)?.split(' ').next()?.parse().ok())
        .expect("a window refused for its filters' settling time says how long that is");
    assert!((64..=1280).contains(&settle), "fixture-linear's 1-20 Hz band-pass at 128 Hz settles in 0.5-10 s, got {settle} samples");
    let bad = [(6 * 128u64, 8 * 128u64), (14 * 128, 14 * 128 + 1)];
    let (mut ok, mut error) = (0, 0);
    for p in &got {
        assert!(p.status != pb::PredictionStatus::Ok as i32 || finite(p), "OK with a non-finite value: {p:?}");
        let w = p.window.unwrap();
        // What the window reads: its span (decimation reads no further).
        let affected = bad.iter().any(|&(a, b)| a <= w.last_sample_index && b + settle > w.first_sample_index);
        if affected {
            assert_eq!(p.status, pb::PredictionStatus::Error as i32, "{p:?}");
            assert!(p.error_reason.contains("non-finite values were not taken"), "{p:?}");
            error += 1;
        } else {
            assert_eq!(p.status, pb::PredictionStatus::Ok as i32, "recovered once the filter settled: {p:?}");
            ok += 1;
        }
    }
    assert!(ok > 20 && error > 10, "{ok} OK, {error} ERROR");
    let sessions = client.list_sessions().await.unwrap();
    let burst = sessions.iter().find(|s| s.session_id == "burst").unwrap();
    let kept = burst.warnings.iter().find(|w| w.kind == pb::IngestWarningKind::NonFiniteZeroFilled as i32).expect("kept");
    assert_eq!((kept.sample_index, kept.count), (6 * 128, 2 * 128 + 1), "the session keeps every warning's count");
}
