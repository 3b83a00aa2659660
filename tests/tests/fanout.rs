//! A slow subscriber loses its own oldest predictions, sees how many in its stream, and slows
//! neither decoding nor the other subscribers.

use std::time::Duration;

use myelin_client::proto as pb;
use myelin_e2e::{TestServer, sliding, stream_header};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_drops_its_oldest_predictions_and_nobody_else_notices() {
    let server = TestServer::start(&[("MYELIN_PUBLISH__SUBSCRIBER_QUEUE", "64")]).await;
    let client = server.client().await;
    let channels: Vec<String> = ["C3", "Cz", "C4", "Pz"].iter().map(|s| s.to_string()).collect();
    let mut ingest = client.open_ingest(stream_header("fan", &channels, 128.0)).await.unwrap();
    // One window per sample: a dense stream of predictions (each about 1 KB with its embedding).
    let attached = client
        .attach_when_ready(pb::AttachRequest {
            session_id: "fan".into(),
            model_id: "fixture-linear".into(),
            window: Some(sliding(1.0 / 128.0)),
            latency_budget_ms: 5000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut fast = client.subscribe("fan", &attached.attachment_id).await.unwrap();
    let mut slow = client.subscribe("fan", &attached.attachment_id).await.unwrap();
    let fast_reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Ok(Ok(Some(p))) = tokio::time::timeout(Duration::from_secs(3), fast.message()).await {
            got.push((p.sequence, p.subscriber_dropped_total));
        }
        got
    });

    let total_samples = 2_000 + 127;
    let expected = (total_samples - 127) as u64;
    for begin in (0..total_samples).step_by(64) {
        let end = (begin + 64).min(total_samples);
        let ts: Vec<f64> = (begin..end).map(|i| i as f64 / 128.0).collect();
        let values: Vec<f32> = (begin..end).flat_map(|i| [i as f32, 1.0, -1.0, 0.5]).collect();
        ingest.send_chunk(&values, &ts).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    ingest.wait_acknowledged().await.unwrap();
    ingest.finish().await.unwrap();

    let fast_got = fast_reader.await.unwrap();
    assert_eq!(fast_got.len() as u64, expected, "the fast subscriber receives every prediction");
    assert!(fast_got.iter().all(|(_, dropped)| *dropped == 0));
    assert!(fast_got.windows(2).all(|w| w[1].0 == w[0].0 + 1), "in order, no holes");

    // Only now does the slow subscriber read.
    let mut slow_got = Vec::new();
    while let Ok(Ok(Some(p))) = tokio::time::timeout(Duration::from_secs(2), slow.message()).await {
        slow_got.push((p.sequence, p.subscriber_dropped_total));
    }
    let (last_sequence, dropped) = *slow_got.last().expect("the slow subscriber still gets the newest predictions");
    assert_eq!(last_sequence, expected - 1, "it ends on the newest prediction");
    assert!(dropped > 0, "it was told it lost predictions");
    assert_eq!(slow_got.len() as u64 + dropped, expected, "received + reported lost = all");
    let (_, metrics) = server.http_get("/metrics").await;
    let counted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("myelin_subscriber_dropped_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("drops are counted") as u64;
    assert_eq!(counted, dropped);
}
