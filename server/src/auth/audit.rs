//! The audit trail: one structured line (tracing target `audit`) per control action, with the
//! principal, the resource and the outcome, and a counter of refused calls by reason. Keep
//! `audit=info` in the log filter (the server adds it unless RUST_LOG names `audit`).

use std::net::SocketAddr;

use tonic::Status;

use super::principal::Principal;
use crate::metrics as m;

/// Why a call was refused before its handler did anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, or credentials that name nobody (UNAUTHENTICATED).
    Unauthenticated,
    /// A principal without the scope the call needs (PERMISSION_DENIED).
    NoScope,
    /// A principal acting on another principal's session or attachment (PERMISSION_DENIED).
    NotOwner,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::NoScope => "no_scope",
            Refusal::NotOwner => "not_owner",
        }
    }
}

/// Refuses a call: counted, audited (with the peer's address when known), and returned as its
/// status.
pub fn refuse(reason: Refusal, principal: &str, action: &str, resource: &str, remote: Option<SocketAddr>, message: String) -> Status {
    metrics::counter!(m::CALLS_REFUSED, "reason" => reason.as_str()).increment(1);
    let remote = remote.map(|r| r.to_string()).unwrap_or_default();
    tracing::warn!(target: "audit", principal, action, resource, remote, outcome = "refused", reason = reason.as_str(), message = %message, "call refused");
    match reason {
        Refusal::Unauthenticated => Status::unauthenticated(message),
        Refusal::NoScope | Refusal::NotOwner => Status::permission_denied(message),
    }
}

/// Refuses `principal` acting on what `owner` made.
pub fn not_owner(principal: &Principal, action: &str, resource: &str) -> Status {
    refuse(
        Refusal::NotOwner,
        principal.name(),
        action,
        resource,
        None,
        format!("{resource} belongs to another principal; {:?} may not {action} it (admin may)", principal.name()),
    )
}

/// A control action done (or failed for a reason other than who asked): one audit line.
pub fn record<T>(principal: &Principal, action: &str, resource: &str, result: &Result<T, Status>) {
    match result {
        Ok(_) => tracing::info!(target: "audit", principal = principal.name(), action, resource, outcome = "ok", "control action"),
        Err(status) => tracing::info!(
            target: "audit",
            principal = principal.name(),
            action,
            resource,
            outcome = "failed",
            code = ?status.code(),
            message = status.message(),
            "control action"
        ),
    }
}
