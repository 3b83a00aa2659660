//! Standard gRPC tooling works against the server: grpc.health.v1 and server reflection (so
//! grpcurl needs no .proto files), plus the HTTP side port.

use myelin_e2e::TestServer;
use tokio_stream::StreamExt;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse,
};

#[tokio::test]
async fn health_answers_serving_for_the_server_and_each_service() {
    let server = TestServer::start(&[]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc)).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "myelin.v1.Ingest", "myelin.v1.Decoding"] {
        let reply = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(reply.status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_every_service_and_describes_the_contract() {
    let server = TestServer::start(&[]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc)).unwrap().connect().await.unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let requests = tokio_stream::iter(vec![
        ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("myelin.v1.Prediction".into())),
        },
    ]);
    let mut replies = reflection.server_reflection_info(requests).await.unwrap().into_inner();
    let listed = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else { panic!("{listed:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in ["myelin.v1.Ingest", "myelin.v1.Decoding", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} missing from {names:?}");
    }
    let described = replies.next().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = described.message_response else { panic!("{described:?}") };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn http_port_serves_prometheus_metrics_and_healthz() {
    let server = TestServer::start(&[]).await;
    let (status, body) = server.http_get("/healthz").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let (status, body) = server.http_get("/metrics").await;
    assert_eq!(status, 200);
    // Described metrics appear with HELP/TYPE lines once recorded; the live-sessions gauge is
    // registered at start by any ingest, so check a metric the server always has after a stream.
    let client = server.client().await;
    let mut ingest = client.open_ingest(myelin_e2e::stream_header("m", &["A".into()], 100.0)).await.unwrap();
    ingest.send_chunk(&[1.0, 2.0], &[0.0, 0.01]).await.unwrap();
    ingest.wait_acknowledged().await.unwrap();
    ingest.finish().await.unwrap();
    let (_, body2) = server.http_get("/metrics").await;
    assert!(body2.contains("# TYPE myelin_samples_ingested_total counter"), "{body}\n---\n{body2}");
    assert!(body2.contains("myelin_samples_ingested_total 2"), "{body2}");
}
