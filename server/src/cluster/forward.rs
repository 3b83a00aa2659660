//! A tower layer in front of the gRPC services: a call whose `myelin-route` header names a
//! session (or an attachment, `att-<hex>@<session>`) that another live replica holds goes to
//! that replica, whole (request stream, response stream, trailers), and comes back to the
//! caller as that replica answered. The proxy in front routes by the same header, so this only
//! happens when the ring and the directory disagree (a replica joined, left or came back).
//! A forwarded call carries `myelin-forwarded` and is never forwarded again.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};

use super::record::routed_session;
use super::state::Cluster;

/// The header clients set on every session- or attachment-scoped call.
pub const ROUTE_HEADER: &str = "myelin-route";
/// Set on a call one replica forwards to another (its value: the forwarding replica).
pub const FORWARDED_HEADER: &str = "myelin-forwarded";

#[derive(Clone)]
pub struct ForwardLayer {
    cluster: Option<Arc<Cluster>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl ForwardLayer {
    /// `None`: a single server, nothing is ever forwarded.
    pub fn new(cluster: Option<Arc<Cluster>>) -> Self {
        Self { cluster, channels: Arc::default() }
    }
}

/// A channel to the replica at `advertise` (https:// ones checked against `cluster.peer_ca`),
/// connected on first use.
fn channel_to(cluster: &Cluster, advertise: &str) -> Option<Channel> {
    let mut endpoint = Endpoint::from_shared(advertise.to_string()).ok()?.connect_timeout(std::time::Duration::from_millis(500));
    if advertise.starts_with("https://") {
        endpoint = endpoint.tls_config(cluster.peer_tls.clone()?).ok()?;
    }
    Some(endpoint.connect_lazy())
}

impl<S> tower::Layer<S> for ForwardLayer {
    type Service = Forwarding<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Forwarding { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct Forwarding<S> {
    inner: S,
    layer: ForwardLayer,
}

impl<S> Forwarding<S> {
    /// Where the call should go instead of here: (replica, channel to it).
    fn destination(&self, path: &str, headers: &http::HeaderMap) -> Option<(String, Channel)> {
        let cluster = self.layer.cluster.as_ref()?;
        if headers.contains_key(FORWARDED_HEADER) || !path.starts_with("/myelin.v1.") || path.ends_with("/ListSessions") {
            // Listings are answered here from the directory; health and reflection are this
            // replica's own.
            return None;
        }
        let route = headers.get(ROUTE_HEADER)?.to_str().ok()?;
        let (replica, advertise) = cluster.held_elsewhere(routed_session(route))?;
        let mut channels = self.layer.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let channel = match channels.get(&advertise) {
            Some(channel) => channel.clone(),
            None => {
                let channel = channel_to(cluster, &advertise)?;
                channels.insert(advertise, channel.clone());
                channel
            }
        };
        Some((replica, channel))
    }
}

impl<S, B> tower::Service<http::Request<B>> for Forwarding<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some((replica, mut channel)) = self.destination(request.uri().path(), request.headers()) else {
            // The clone that was made ready is the one that serves (tower's rule).
            let clone = self.inner.clone();
            let mut ready = std::mem::replace(&mut self.inner, clone);
            return Box::pin(ready.call(request));
        };
        let cluster = self.layer.cluster.clone().expect("a destination means a cluster");
        let (mut parts, body) = request.into_parts();
        if let Ok(value) = http::HeaderValue::from_str(cluster.replica()) {
            parts.headers.insert(FORWARDED_HEADER, value);
        }
        let forwarded = http::Request::from_parts(parts, Body::new(body));
        metrics::counter!(crate::metrics::FORWARDED_CALLS, "to" => replica.clone()).increment(1);
        Box::pin(async move {
            let sent = match tower::ServiceExt::ready(&mut channel).await {
                Ok(ready) => tower::Service::call(ready, forwarded).await,
                Err(error) => Err(error),
            };
            match sent {
                Ok(response) => Ok(response),
                Err(error) => {
                    // Its process is gone (or unreachable): dead until it renews its lease, so
                    // the caller's retry is served here, where the session can be taken over.
                    cluster.unreachable(&replica);
                    tracing::warn!(%replica, %error, "forwarding a call to the replica that holds its session failed");
                    let status = tonic::Status::unavailable(format!(
                        "the session's replica {replica:?} did not answer ({error}); retry: the session will open on a live replica"
                    ));
                    Ok(status.into_http())
                }
            }
        })
    }
}
