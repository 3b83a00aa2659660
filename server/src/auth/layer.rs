//! A tower layer in front of every gRPC service: authenticates the caller and checks the
//! method's scope before any handler runs, then hands the handler the [`Principal`] in the
//! request's extensions. Ownership (whose session, whose attachment) is checked by the handlers,
//! which know the resources.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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

fn needs(path: &str, reflection_open: bool) -> Needs {
    use Scope::*;
    if path.starts_with("/grpc.health.v1.Health/") {
        return Needs::Nothing;
    }
    if path.starts_with("/grpc.reflection.") {
        return if reflection_open { Needs::Nothing } else { Needs::Anyone };
    }
    match path {
        "/myelin.v1.Ingest/Stream" | "/myelin.v1.Decoding/ConnectLsl" => Needs::OneOf(&[Ingest]),
        "/myelin.v1.Decoding/Attach" | "/myelin.v1.Decoding/Detach" | "/myelin.v1.Decoding/Calibrate" => Needs::OneOf(&[Decode]),
        "/myelin.v1.Decoding/Subscribe" => Needs::OneOf(&[Decode, Observe]),
        "/myelin.v1.Decoding/ListSessions" => Needs::OneOf(&[Ingest, Decode, Observe]),
        // ListModels, and methods that do not exist (UNIMPLEMENTED once authenticated).
        _ => Needs::Anyone,
    }
}

/// The method's name for messages and the audit log: "/myelin.v1.Decoding/Attach" -> "Attach".
fn action(path: &str) -> &str {
    path.rsplit('/').next().filter(|a| !a.is_empty()).unwrap_or(path)
}

#[derive(Clone)]
pub struct AuthLayer {
    gate: Arc<Gate>,
}

impl AuthLayer {
    pub fn new(gate: Arc<Gate>) -> Self {
        Self { gate }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated { inner, gate: self.gate.clone() }
    }
}

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match admit(&self.gate, &request) {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                // The clone that was made ready is the one that serves (tower's rule).
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Box::pin(ready.call(request))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

fn admit<B>(gate: &Gate, request: &http::Request<B>) -> Result<Principal, tonic::Status> {
    let path = request.uri().path();
    let needs = needs(path, gate.config().reflection_open);
    if needs == Needs::Nothing {
        return Ok(Principal::nobody());
    }
    let peer = request.extensions().get::<Peer>();
    let principal = gate.authenticate(request.headers(), peer, action(path))?;
    if let Needs::OneOf(scopes) = needs {
        Gate::require(&principal, scopes, action(path))?;
    }
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_the_proto_needs_what_the_scope_table_says() {
        use Scope::*;
        let methods = myelin_proto::v1::decoding_server::SERVICE_NAME;
        assert_eq!(methods, "myelin.v1.Decoding");
        assert_eq!(needs("/grpc.health.v1.Health/Check", false), Needs::Nothing);
        assert_eq!(needs("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", true), Needs::Nothing);
        assert_eq!(needs("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", false), Needs::Anyone);
        assert_eq!(needs("/myelin.v1.Ingest/Stream", true), Needs::OneOf(&[Ingest]));
        assert_eq!(needs("/myelin.v1.Decoding/ConnectLsl", true), Needs::OneOf(&[Ingest]));
        assert_eq!(needs("/myelin.v1.Decoding/Calibrate", true), Needs::OneOf(&[Decode]));
        assert_eq!(needs("/myelin.v1.Decoding/Subscribe", true), Needs::OneOf(&[Decode, Observe]));
        assert_eq!(needs("/myelin.v1.Decoding/ListModels", true), Needs::Anyone);
        assert_eq!(needs("/myelin.v1.Decoding/Nonexistent", true), Needs::Anyone);
        assert_eq!(action("/myelin.v1.Decoding/Attach"), "Attach");
    }
}
