//! Without liblsl, Myelin still runs: gRPC ingest and decoding work, and every LSL request
//! fails with UNAVAILABLE and says how to install it.

use myelin_client::proto as pb;
use myelin_e2e::{Golden, TestServer, collect, event_locked};

#[tokio::test]
async fn lsl_requests_fail_clearly_and_everything_else_works() {
    let server = TestServer::start(&[("MYELIN_LSL__LIBRARY", "/nonexistent/liblsl.so.2")]).await;
    let client = server.client().await;
    let status =
        match client.connect_lsl(pb::ConnectLslRequest { session_id: "x".into(), data_name: "EEG".into(), ..Default::default() }).await {
            Err(myelin_client::ClientError::Status(s)) => s,
            other => panic!("expected UNAVAILABLE, got {other:?}"),
        };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("deploy/setup.sh"), "{status:?}");

    let golden = Golden::load();
    let mut ingest = client.open_ingest(golden.header("no-lsl")).await.unwrap();
    let request = |lsl_outlet| pb::AttachRequest {
        session_id: "no-lsl".into(),
        model_id: "fixture-linear".into(),
        window: Some(event_locked(&golden.marker_codes)),
        lsl_outlet,
        ..Default::default()
    };
    let refused = client.attach_when_ready(request(true)).await;
    let Err(myelin_client::ClientError::Status(s)) = refused else { panic!("an LSL outlet without liblsl was accepted") };
    assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
    let attached = client.attach(request(false)).await.unwrap();
    let mut predictions = client.subscribe("no-lsl", &attached.attachment_id).await.unwrap();
    golden.stream(&mut ingest, 32).await;
    let got = collect(&mut predictions, golden.expected.len(), std::time::Duration::from_secs(10)).await;
    assert_eq!(got.len(), golden.expected.len());
    ingest.finish().await.unwrap();
}
