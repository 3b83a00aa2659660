//! A tower layer in front of every gRPC service: authenticates the caller and checks the
//! method's scope before any handler runs, then hands the handler the [`Principal`] in the
//! request's extensions. Ownership (whose session, whose attachment) is checked by the handlers,
//! which know the resources.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::gate::{Gate, Peer};
use super::principal::Principal;
use crate::config::Scope;

/// What a gRPC method needs.
#[derive(Debug, PartialEq)]
enum Needs {
    /// Nothing (health checks: load balancers and orchestrators probe without credentials).
    Nothing,
    /// Any authenticated principal.
    Anyone,
    /// One of these scopes.
    OneOf(&'static [Scope]),
}

/// A method nobody listed needs admin: a method added to the proto later is closed until its
/// scope is decided here.
fn needs(path: &str, reflection_open: bool) -> Needs {
    listed(path, reflection_open).unwrap_or(Needs::OneOf(&[Scope::Admin]))
}

fn listed(path: &str, reflection_open: bool) -> Option<Needs> {
    use Scope::*;
    if path.starts_with("/grpc.health.v1.Health/") {
        return Some(Needs::Nothing);
    }
    if path.starts_with("/grpc.reflection.") {
        return Some(if reflection_open { Needs::Nothing } else { Needs::Anyone });
    }
    Some(match path {
        "/myelin.v1.Ingest/Stream" | "/myelin.v1.Decoding/ConnectLsl" => Needs::OneOf(&[Ingest]),
        "/myelin.v1.Decoding/Attach" | "/myelin.v1.Decoding/Detach" | "/myelin.v1.Decoding/Calibrate" => Needs::OneOf(&[Decode]),
        "/myelin.v1.Decoding/Subscribe" => Needs::OneOf(&[Decode, Observe]),
        "/myelin.v1.Decoding/ListSessions" => Needs::OneOf(&[Ingest, Decode, Observe]),
        "/myelin.v1.Decoding/ListModels" => Needs::Anyone,
        _ => return None,
    })
}

/// The audit trail's name of the action a method performs (the same names the handlers use).
fn action(path: &str) -> &str {
    match path.rsplit('/').next().unwrap_or(path) {
        "Stream" => "open_session",
        "ConnectLsl" => "connect_lsl",
        "Attach" => "attach",
        "Detach" => "detach",
        "Calibrate" => "calibrate",
        "Subscribe" => "subscribe",
        "ListSessions" => "list_sessions",
        "ListModels" => "list_models",
        _ => path,
    }
}

#[derive(Clone)]
pub struct AuthLayer {
    gate: Arc<Gate>,
    /// Calls in progress on methods that need no credentials (`limits.unauthenticated_calls`).
    open_calls: OpenCalls,
}

/// Permits for calls on methods that need no credentials, and how many there are.
#[derive(Clone)]
struct OpenCalls(Arc<Semaphore>, usize);

impl AuthLayer {
    /// `open_calls`: how many calls to methods that need no credentials may be in progress.
    pub fn new(gate: Arc<Gate>, open_calls: usize) -> Self {
        Self { gate, open_calls: OpenCalls(Arc::new(Semaphore::new(open_calls)), open_calls) }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated { inner, gate: self.gate.clone(), open_calls: self.open_calls.clone() }
    }
}

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    gate: Arc<Gate>,
    open_calls: OpenCalls,
}

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let admitted = admit(&self.gate, &request).and_then(|(principal, open)| {
            // An open method's call holds a slot until its response (a Watch stream) ends.
            let OpenCalls(permits, limit) = &self.open_calls;
            let slot = open.then(|| permits.clone().try_acquire_owned()).transpose().map_err(|_| {
                metrics::counter!(crate::metrics::UNAUTHENTICATED_REFUSED).increment(1);
                tonic::Status::resource_exhausted(format!(
                    "{limit} calls without credentials are in progress, the most at once (limits.unauthenticated_calls)"
                ))
            })?;
            Ok((principal, slot))
        });
        match admitted {
            Ok((principal, slot)) => {
                request.extensions_mut().insert(principal);
                // The clone that was made ready is the one that serves (tower's rule).
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                let call = ready.call(request);
                Box::pin(async move {
                    let response = call.await?;
                    Ok(match slot {
                        Some(slot) => response.map(|body| tonic::body::Body::new(Holding { body, _slot: slot })),
                        None => response,
                    })
                })
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

/// A response body that holds a permit until it is done (or dropped).
struct Holding {
    body: tonic::body::Body,
    _slot: OwnedSemaphorePermit,
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Who is calling, and whether the method is one that needs no credentials.
fn admit<B>(gate: &Gate, request: &http::Request<B>) -> Result<(Principal, bool), tonic::Status> {
    let path = request.uri().path();
    let needs = needs(path, gate.config().reflection_open);
    if needs == Needs::Nothing {
        return Ok((Principal::nobody(), true));
    }
    let peer = request.extensions().get::<Peer>();
    let principal = gate.authenticate(request.headers(), peer, action(path))?;
    if let Needs::OneOf(scopes) = needs {
        Gate::require(&principal, scopes, action(path), peer)?;
    }
    Ok((principal, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_the_proto_is_listed() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(myelin_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods = 0;
        for file in set.file.iter().filter(|f| f.package() == "myelin.v1") {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/myelin.v1.{}/{}", service.name(), method.name());
                    assert!(listed(&path, false).is_some(), "{path} has no entry in the scope table (auth/layer.rs)");
                    assert_ne!(action(&path), path, "{path} has no audit action name");
                    methods += 1;
                }
            }
        }
        assert_eq!(methods, 8, "the proto's methods changed: check the scope table");
        assert_eq!(needs("/myelin.v1.Decoding/NotYetListed", true), Needs::OneOf(&[Scope::Admin]));
    }

    #[test]
    fn methods_need_what_the_scope_table_says() {
        use Scope::*;
        assert_eq!(needs("/grpc.health.v1.Health/Check", false), Needs::Nothing);
        assert_eq!(needs("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", true), Needs::Nothing);
        assert_eq!(needs("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", false), Needs::Anyone);
        assert_eq!(needs("/myelin.v1.Ingest/Stream", true), Needs::OneOf(&[Ingest]));
        assert_eq!(needs("/myelin.v1.Decoding/ConnectLsl", true), Needs::OneOf(&[Ingest]));
        assert_eq!(needs("/myelin.v1.Decoding/Calibrate", true), Needs::OneOf(&[Decode]));
        assert_eq!(needs("/myelin.v1.Decoding/Subscribe", true), Needs::OneOf(&[Decode, Observe]));
        assert_eq!(needs("/myelin.v1.Decoding/Attach", true), Needs::OneOf(&[Decode]));
        assert_eq!(needs("/myelin.v1.Decoding/Detach", true), Needs::OneOf(&[Decode]));
        assert_eq!(needs("/myelin.v1.Decoding/ListSessions", true), Needs::OneOf(&[Ingest, Decode, Observe]));
        assert_eq!(needs("/myelin.v1.Decoding/ListModels", true), Needs::Anyone);
        assert_eq!(action("/myelin.v1.Decoding/Attach"), "attach");
    }
}
