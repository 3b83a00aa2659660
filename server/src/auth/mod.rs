//! Who may do what. Callers authenticate with a bearer token (the `authorization` metadata) or,
//! under mutual TLS, a client certificate; each is a [`Principal`] with scopes (`ingest`,
//! `decode`, `observe`, `admin`). The gRPC [`AuthLayer`] refuses a call before its handler runs
//! (UNAUTHENTICATED without valid credentials, PERMISSION_DENIED without the scope); handlers then
//! check ownership: a session belongs to the principal that opened it, an attachment to the one
//! that made it. Every control action leaves one line in the [`audit`] trail.

pub mod audit;
mod gate;
mod layer;
mod principal;
pub mod token;

pub use gate::{Gate, Peer, scope_name};
pub use layer::AuthLayer;
pub use principal::Principal;

/// The principal the gate put on a call. A call without one did not pass the gate (a service
/// mounted without [`AuthLayer`]): refused, never taken for an admin.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
    request.extensions().get::<Principal>().cloned().ok_or_else(|| tonic::Status::unauthenticated("the call did not pass authentication"))
}
