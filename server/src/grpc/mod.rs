//! The gRPC port: the Ingest door (`ingest::grpc`) and the Decoding service ([`decoding`]),
//! health and reflection, behind the authentication layer and (in a cluster) the forwarding
//! layer, with the HTTP/2 settings of `[server]`.

mod decoding;

use std::sync::Arc;
use std::time::Duration;

use myelin_proto::v1::{decoding_server::DecodingServer, ingest_server::IngestServer};
use tonic::transport::server::Router;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

use crate::app::App;
use crate::auth::AuthLayer;
use crate::cluster::ForwardLayer;
use crate::ingest::IngestService;
pub use decoding::{DecodingService, model_info};

/// The layers every call passes, outermost first: authentication, then forwarding.
pub type Layers = Stack<ForwardLayer, Stack<AuthLayer, Identity>>;

/// Every gRPC service of `app`, and the health reporter that says whether they serve.
pub async fn router(app: &Arc<App>) -> anyhow::Result<(Router<Layers>, HealthReporter)> {
    let server = &app.config.server;
    let ingest = IngestServer::new(IngestService { sessions: app.sessions.clone(), shutdown: app.shutdown.clone() })
        .max_decoding_message_size(server.max_message_bytes);
    let decoding = DecodingServer::new(DecodingService { app: app.clone() }).max_decoding_message_size(server.max_message_bytes);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<IngestServer<IngestService>>().await;
    health_reporter.set_serving::<DecodingServer<DecodingService>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(myelin_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(myelin_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let router = tonic::transport::Server::builder()
        .initial_stream_window_size(server.http2_stream_window_bytes)
        .initial_connection_window_size(server.http2_connection_window_bytes)
        .http2_keepalive_interval(Some(Duration::from_secs_f64(server.http2_keepalive_interval_s)))
        .http2_keepalive_timeout(Some(Duration::from_secs_f64(server.http2_keepalive_timeout_s)))
        .max_concurrent_streams(Some(server.http2_max_concurrent_streams))
        .layer(AuthLayer::new(app.gate.clone(), app.config.limits.unauthenticated_calls))
        .layer(ForwardLayer::new(app.cluster.clone()))
        .add_service(ingest)
        .add_service(decoding)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok((router, health_reporter))
}

/// Health turns NOT_SERVING for both services (shutdown's first step).
pub async fn stop_serving(health: &HealthReporter) {
    health.set_not_serving::<IngestServer<IngestService>>().await;
    health.set_not_serving::<DecodingServer<DecodingService>>().await;
}
