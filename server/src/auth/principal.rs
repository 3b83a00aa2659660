//! Principals: who a caller is (a name), what it may do (scopes), and whose resources it may
//! touch. Every call carries one in its extensions, put there by the gRPC or HTTP gate.

use std::sync::Arc;

use crate::config::Scope;

/// A caller, cheap to clone.
#[derive(Clone, Debug)]
pub struct Principal(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    name: String,
    scopes: Vec<Scope>,
    sessions_of: Vec<String>,
}

/// Owner of the sessions that `lsl.sources` opens: no principal asked for them.
pub const SERVER: &str = "server";

/// Who everyone is when authentication is off (allowed on loopback addresses only).
pub const ANONYMOUS: &str = "anonymous";

impl Principal {
    pub fn new(name: &str, scopes: &[Scope], sessions_of: &[String]) -> Self {
        Self(Arc::new(Inner { name: name.into(), scopes: scopes.to_vec(), sessions_of: sessions_of.to_vec() }))
    }

    /// Every caller while authentication is off: an admin (the server serves loopback only then,
    /// unless `server.allow_insecure_public`).
    pub fn anonymous() -> Self {
        Self::new(ANONYMOUS, &[Scope::Admin], &[])
    }

    /// The caller of a method that needs no credentials (health): no scopes at all.
    pub fn nobody() -> Self {
        Self::new("unauthenticated", &[], &[])
    }

    /// The server itself (its configured LSL sources).
    pub fn server() -> Self {
        Self::new(SERVER, &[Scope::Admin], &[])
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Held to the per-principal quotas (`limits.*_per_principal`): every caller but the server
    /// itself (its configured sources) and the anonymous admin of a server without
    /// authentication, whose one name stands for every caller.
    pub fn has_quota(&self) -> bool {
        !matches!(self.name(), ANONYMOUS | SERVER)
    }

    /// Has `scope` (admin has every scope).
    pub fn has(&self, scope: Scope) -> bool {
        self.0.scopes.contains(&scope) || self.is_admin()
    }

    pub fn has_any(&self, scopes: &[Scope]) -> bool {
        scopes.iter().any(|s| self.has(*s))
    }

    pub fn is_admin(&self) -> bool {
        self.0.scopes.contains(&Scope::Admin)
    }

    /// May read (list, subscribe to) everything: `observe` or `admin`.
    pub fn reads_everything(&self) -> bool {
        self.has(Scope::Observe)
    }

    /// May change what `owner` made (detach, calibrate): its own, or as admin.
    pub fn may_change(&self, owner: &str) -> bool {
        self.is_admin() || self.0.name == owner
    }

    /// May read what `owner` made (subscribe by attachment): its own, or as observe / admin.
    pub fn may_read(&self, owner: &str) -> bool {
        self.reads_everything() || self.0.name == owner
    }

    /// May attach to a session `owner` opened: its own, those of `sessions_of`, or as admin.
    pub fn may_attach_to(&self, owner: &str) -> bool {
        self.may_change(owner) || self.0.sessions_of.iter().any(|o| o == owner)
    }

    /// May see a session `owner` opened in listings and subscribe to it by session.
    pub fn may_see_session_of(&self, owner: &str) -> bool {
        self.reads_everything() || self.may_attach_to(owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_ownership() {
        let rig = Principal::new("rig", &[Scope::Ingest, Scope::Decode], &[]);
        let experiment = Principal::new("experiment", &[Scope::Decode], &["rig".into()]);
        let dashboard = Principal::new("dashboard", &[Scope::Observe], &[]);
        let admin = Principal::new("ops", &[Scope::Admin], &[]);
        assert!(rig.has(Scope::Ingest) && !rig.has(Scope::Observe) && admin.has(Scope::Ingest));
        assert!(rig.may_change("rig") && !experiment.may_change("rig") && admin.may_change("rig"));
        assert!(experiment.may_attach_to("rig") && !experiment.may_attach_to("other") && !dashboard.may_attach_to("rig"));
        assert!(dashboard.may_read("rig") && dashboard.may_see_session_of("rig") && !dashboard.may_change("rig"));
        assert!(!rig.may_see_session_of("experiment") && experiment.may_see_session_of("rig"));
        assert!(Principal::anonymous().is_admin());
    }
}
