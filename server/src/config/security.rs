//! The `[tls]` and `[auth]` sections: who may reach the server, and what each caller may do.
//! A documented secured example: `deploy/myelin.secure.example.toml`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// TLS on both ports (gRPC and HTTP) from PEM files; reloaded on SIGHUP and when a file changes.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain (PEM), the server's certificate first. Empty: both ports are plaintext.
    pub cert: PathBuf,
    /// Private key of the certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle (PEM) that client certificates must chain to: mutual TLS. Empty: clients show
    /// no certificate.
    pub client_ca: PathBuf,
    /// With `client_ca`: whether every client must show a certificate (`true`), or may instead
    /// authenticate with a token only (`false`). A certificate that does not chain to
    /// `client_ca` is refused at the handshake either way.
    pub require_client_cert: bool,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty()
    }
}

/// What a principal may do. Scopes add up; `admin` is all of them, on everyone's resources.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Ingest.Stream and ConnectLsl: open sessions (they belong to the principal).
    Ingest,
    /// Attach, Detach, Subscribe and Calibrate on the principal's own sessions and attachments.
    Decode,
    /// Subscribe and the listings on everything, read-only (dashboards).
    Observe,
    /// Everything, on every principal's resources.
    Admin,
}

/// One caller: a name, what it may do, and how it proves who it is (a bearer token, a client
/// certificate, or both).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrincipalConfig {
    /// 1-128 characters of [A-Za-z0-9._-]; shown in the audit log and as sessions' owner.
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Salted hashes of its tokens, as `myelin token new` prints them
    /// (`sha256:<salt hex>:<digest hex>`); the tokens themselves are never stored.
    pub token_hashes: Vec<String>,
    /// With mutual TLS: a client certificate whose subject common name (CN) is this names the
    /// principal (no token needed). Empty: this principal authenticates by token only.
    pub certificate_cn: String,
    /// Other principals whose sessions this one may see and attach to (a decoding client and
    /// the rig that streams for it, say). "server" names the sessions of `lsl.sources`.
    pub sessions_of: Vec<String>,
}

/// Authentication: on once any principal is configured. Without it every caller is the
/// anonymous admin, which the server allows on loopback addresses only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub principals: Vec<PrincipalConfig>,
    /// A TOML file with more `[[principals]]` (same fields), read at start and on SIGHUP: keeps
    /// the hashes out of the main file. Empty: none.
    pub principals_file: PathBuf,
    /// `GET /metrics` without a token (Prometheus on a trusted network); `false`: a token with
    /// `observe` or `admin` scope is needed (Prometheus' `authorization` scrape setting).
    pub metrics_open: bool,
    /// gRPC server reflection without a token (grpcurl, Postman); `false`: any principal.
    pub reflection_open: bool,
    /// With authentication on: may attachments publish LSL outlets (`AttachRequest.lsl_outlet`)?
    /// LSL has no authentication: anyone on the network can read an outlet. `false`: refused
    /// (PERMISSION_DENIED) unless the caller is admin.
    pub allow_lsl_outlets: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            principals: Vec::new(),
            principals_file: PathBuf::new(),
            metrics_open: true,
            reflection_open: true,
            allow_lsl_outlets: false,
        }
    }
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        !self.principals.is_empty() || !self.principals_file.as_os_str().is_empty()
    }
}

/// Refuses to serve a non-loopback address without TLS and authentication, unless explicitly
/// allowed: patient data must not be readable, nor the server steerable, by whoever reaches it.
/// Ok(true): such an address is served insecurely because `allow` says so (warn about it).
pub fn check_public_binding(addresses: &[(&str, SocketAddr)], tls: &TlsConfig, auth: &AuthConfig, allow: bool) -> anyhow::Result<bool> {
    let public: Vec<String> = addresses.iter().filter(|(_, a)| !a.ip().is_loopback()).map(|(key, a)| format!("{key} = {a}")).collect();
    if public.is_empty() || (tls.enabled() && auth.enabled()) {
        return Ok(false);
    }
    if allow {
        return Ok(true);
    }
    let mut missing = Vec::new();
    if !tls.enabled() {
        missing.push("TLS (tls.cert and tls.key)");
    }
    if !auth.enabled() {
        missing.push("authentication ([[auth.principals]] or auth.principals_file)");
    }
    anyhow::bail!(
        "refusing to serve {} without {}: configure them (see deploy/myelin.secure.example.toml), bind a loopback address, or set server.allow_insecure_public = true",
        public.join(" and "),
        missing.join(" and ")
    )
}

/// Checks what can be checked without reading files (those are read, and their errors named,
/// when the server starts; principals are checked where they are loaded, `auth::Principals`).
pub(super) fn validate(tls: &TlsConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        tls.enabled() != tls.key.as_os_str().is_empty(),
        "tls.cert and tls.key go together: set both (TLS) or neither (plaintext)"
    );
    anyhow::ensure!(tls.client_ca.as_os_str().is_empty() || tls.enabled(), "tls.client_ca (mutual TLS) needs tls.cert and tls.key");
    anyhow::ensure!(!tls.require_client_cert || !tls.client_ca.as_os_str().is_empty(), "tls.require_client_cert needs tls.client_ca");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses_need_tls_and_tokens() {
        let public: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let (plain, open) = (TlsConfig::default(), AuthConfig::default());
        assert!(!check_public_binding(&[("server.grpc_addr", local)], &plain, &open, false).unwrap());
        let error = check_public_binding(&[("server.grpc_addr", public)], &plain, &open, false).unwrap_err().to_string();
        assert!(
            error.contains("server.grpc_addr = 0.0.0.0:50051") && error.contains("tls.cert") && error.contains("auth.principals"),
            "{error}"
        );
        assert!(check_public_binding(&[("server.grpc_addr", public)], &plain, &open, true).unwrap(), "allowed, and to be warned about");
        let tls = TlsConfig { cert: "c.pem".into(), key: "k.pem".into(), ..Default::default() };
        let error = check_public_binding(&[("server.grpc_addr", public)], &tls, &open, false).unwrap_err().to_string();
        assert!(!error.contains("tls.cert") && error.contains("auth.principals"), "{error}");
        let auth = AuthConfig { principals_file: "p.toml".into(), ..Default::default() };
        assert!(!check_public_binding(&[("server.grpc_addr", public)], &tls, &auth, false).unwrap());
    }
}
