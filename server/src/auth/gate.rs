//! The gate every call passes: who is calling (a bearer token, or a client certificate's
//! common name under mutual TLS), and whether its scopes allow the call. Shared by the gRPC
//! layer ([`super::layer`]) and the HTTP port.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context;
use http::HeaderMap;
use serde::Deserialize;

use super::audit::{Refusal, refuse};
use super::principal::{ANONYMOUS, Principal, SERVER};
use super::token::{TOKEN_PREFIX, TokenHash, new_token};
use crate::config::{AuthConfig, PrincipalConfig, Scope};

/// What the transport knows of a connection, before any call on it.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    pub remote: Option<std::net::SocketAddr>,
    /// Common name of the client certificate the TLS handshake verified (mutual TLS).
    pub certificate_cn: Option<Arc<str>>,
}

/// Who may call, loaded from `[auth]` (and `auth.principals_file`, re-read on reload).
pub struct Gate {
    config: AuthConfig,
    table: RwLock<Arc<Table>>,
    /// Principals the server made for itself (the built-in demo's client), kept over reloads.
    internal: RwLock<Vec<(TokenHash, Principal)>>,
}

/// Names the server uses for itself: the anonymous admin, configured LSL sources, the built-in
/// demo's client and callers of open methods.
const RESERVED: &[&str] = &[ANONYMOUS, SERVER, "demo", "unauthenticated"];

#[derive(Default)]
struct Table {
    by_token: Vec<(TokenHash, Principal)>,
    by_certificate: Vec<(String, Principal)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalsFile {
    #[serde(default)]
    principals: Vec<PrincipalConfig>,
}

impl Gate {
    pub fn load(config: &AuthConfig) -> anyhow::Result<Self> {
        let table = Table::load(config)?;
        Ok(Self { config: config.clone(), table: RwLock::new(Arc::new(table)), internal: RwLock::new(Vec::new()) })
    }

    /// Some principal is named by a client certificate (which needs `tls.client_ca`).
    pub fn names_certificates(&self) -> bool {
        !self.table.read().unwrap_or_else(PoisonError::into_inner).by_certificate.is_empty()
    }

    /// Authentication is on (principals configured); off, every caller is the anonymous admin.
    pub fn enabled(&self) -> bool {
        self.config.enabled()
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Re-reads `auth.principals_file`; on an error the principals in use stay. Returns how many
    /// principals are now known.
    pub fn reload(&self) -> anyhow::Result<usize> {
        let table = Table::load(&self.config)?;
        let count = table.by_token.len() + table.by_certificate.len();
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
        Ok(count)
    }

    /// A token for a principal of the server's own (never written anywhere).
    pub fn add_internal(&self, name: &str, scopes: &[Scope]) -> anyhow::Result<String> {
        let token = new_token()?;
        let hash = TokenHash::of(&token)?;
        self.internal.write().unwrap_or_else(PoisonError::into_inner).push((hash, Principal::new(name, scopes, &[])));
        Ok(token)
    }

    /// The principal the credentials name. A token that is sent is checked even when a client
    /// certificate names someone: a wrong token is never overruled.
    pub fn authenticate(&self, headers: &HeaderMap, peer: Option<&Peer>, action: &str) -> Result<Principal, tonic::Status> {
        if !self.enabled() {
            return Ok(Principal::anonymous());
        }
        let remote = peer.and_then(|p| p.remote);
        let unauthenticated = |message: String| refuse(Refusal::Unauthenticated, "", action, "", remote, message);
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim())
                .ok_or_else(|| unauthenticated("the authorization header must be `Bearer <token>`".into()))?;
            return self.by_token(token).ok_or_else(|| unauthenticated("the bearer token is not valid".into()));
        }
        if let Some(cn) = peer.and_then(|p| p.certificate_cn.as_deref()) {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner).clone();
            return table
                .by_certificate
                .iter()
                .find(|(name, _)| name == cn)
                .map(|(_, p)| p.clone())
                .ok_or_else(|| unauthenticated(format!("the client certificate (CN={cn:?}) names no principal, and no token was sent")));
        }
        Err(unauthenticated("no credentials: send `authorization: Bearer <token>` metadata (or a client certificate)".into()))
    }

    /// Checks every configured hash (no early exit: the time taken does not say which matched).
    fn by_token(&self, token: &str) -> Option<Principal> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner).clone();
        let internal = self.internal.read().unwrap_or_else(PoisonError::into_inner);
        let mut found = None;
        for (hash, principal) in table.by_token.iter().chain(internal.iter()) {
            if hash.matches(token) && found.is_none() {
                found = Some(principal.clone());
            }
        }
        found
    }

    /// Whether `principal` has one of `scopes`; refused (and audited) otherwise.
    pub fn require(principal: &Principal, scopes: &[Scope], action: &str, peer: Option<&Peer>) -> Result<(), tonic::Status> {
        if principal.has_any(scopes) {
            return Ok(());
        }
        let names: Vec<&str> = scopes.iter().map(|s| scope_name(*s)).collect();
        Err(refuse(
            Refusal::NoScope,
            principal.name(),
            action,
            "",
            peer.and_then(|p| p.remote),
            format!("principal {:?} may not {action}: it needs the {} scope (or admin)", principal.name(), names.join(" or ")),
        ))
    }
}

pub fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Ingest => "ingest",
        Scope::Decode => "decode",
        Scope::Observe => "observe",
        Scope::Admin => "admin",
    }
}

impl Table {
    fn load(config: &AuthConfig) -> anyhow::Result<Self> {
        let mut principals: Vec<(PrincipalConfig, String)> =
            config.principals.iter().map(|p| (p.clone(), "auth.principals".to_string())).collect();
        if !config.principals_file.as_os_str().is_empty() {
            principals.extend(read_file(&config.principals_file)?);
        }
        let mut table = Table::default();
        let mut names = std::collections::HashSet::new();
        for (p, origin) in principals {
            anyhow::ensure!(
                crate::id::is_valid_id(&p.name),
                "{origin}: principal name {:?} must be 1-128 characters of [A-Za-z0-9._-]",
                p.name
            );
            anyhow::ensure!(!RESERVED.contains(&p.name.as_str()), "{origin}: the principal name {:?} is reserved", p.name);
            anyhow::ensure!(names.insert(p.name.clone()), "{origin}: principal {:?} is configured twice", p.name);
            anyhow::ensure!(!p.scopes.is_empty(), "{origin}: principal {:?} has no scopes (ingest, decode, observe, admin)", p.name);
            anyhow::ensure!(
                !p.token_hashes.is_empty() || !p.certificate_cn.is_empty(),
                "{origin}: principal {:?} has neither token_hashes nor certificate_cn: nothing could authenticate as it",
                p.name
            );
            let principal = Principal::new(&p.name, &p.scopes, &p.sessions_of);
            for (i, text) in p.token_hashes.iter().enumerate() {
                if text.starts_with(TOKEN_PREFIX) {
                    anyhow::bail!(
                        "{origin}: principal {:?} token_hashes[{i}] is a token, not its hash: store `myelin token hash` of it",
                        p.name
                    );
                }
                let hash: TokenHash = text.parse().with_context(|| format!("{origin}: principal {:?} token_hashes[{i}]", p.name))?;
                table.by_token.push((hash, principal.clone()));
            }
            if !p.certificate_cn.is_empty() {
                anyhow::ensure!(
                    !table.by_certificate.iter().any(|(cn, _)| *cn == p.certificate_cn),
                    "{origin}: certificate_cn {:?} names two principals",
                    p.certificate_cn
                );
                table.by_certificate.push((p.certificate_cn.clone(), principal));
            }
        }
        Ok(table)
    }
}

fn read_file(path: &Path) -> anyhow::Result<Vec<(PrincipalConfig, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading auth.principals_file {}", path.display()))?;
    let file: PrincipalsFile = toml::from_str(&text).with_context(|| format!("parsing auth.principals_file {}", path.display()))?;
    Ok(file.principals.into_iter().map(|p| (p, path.display().to_string())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn tokens_and_certificates_name_principals() {
        let token = new_token().unwrap();
        let config = AuthConfig {
            principals: vec![
                PrincipalConfig {
                    name: "rig".into(),
                    scopes: vec![Scope::Ingest],
                    token_hashes: vec![TokenHash::of(&token).unwrap().to_string()],
                    ..Default::default()
                },
                PrincipalConfig { name: "lab".into(), scopes: vec![Scope::Decode], certificate_cn: "lab-pc".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        let gate = Gate::load(&config).unwrap();
        assert_eq!(gate.authenticate(&headers(&format!("Bearer {token}")), None, "t").unwrap().name(), "rig");
        assert_eq!(gate.authenticate(&headers(&format!("bearer  {token} ")), None, "t").unwrap().name(), "rig");
        let peer = Peer { remote: None, certificate_cn: Some("lab-pc".into()) };
        assert_eq!(gate.authenticate(&HeaderMap::new(), Some(&peer), "t").unwrap().name(), "lab");
        for bad in [headers("Bearer myelin_00"), headers(&token), headers(&format!("Basic {token}"))] {
            let status = gate.authenticate(&bad, Some(&peer), "t").unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
        }
        assert_eq!(gate.authenticate(&HeaderMap::new(), None, "t").unwrap_err().code(), tonic::Code::Unauthenticated);
        let stranger = Peer { remote: None, certificate_cn: Some("stranger".into()) };
        assert_eq!(gate.authenticate(&HeaderMap::new(), Some(&stranger), "t").unwrap_err().code(), tonic::Code::Unauthenticated);
        let internal = gate.add_internal("demo", &[Scope::Admin]).unwrap();
        assert!(gate.authenticate(&headers(&format!("Bearer {internal}")), None, "t").unwrap().is_admin());
    }

    #[test]
    fn the_secured_example_principals_load() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/myelin.secure.example.toml");
        let config: crate::config::Config = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let auth = AuthConfig { principals_file: Default::default(), ..config.auth };
        let gate = Gate::load(&auth).unwrap();
        let peer = Peer { remote: None, certificate_cn: Some("rig-3.lab.example".into()) };
        assert_eq!(gate.authenticate(&HeaderMap::new(), Some(&peer), "t").unwrap().name(), "rig-3");
    }

    #[test]
    fn misconfigured_principals_are_refused_by_name() {
        let good = PrincipalConfig { name: "a".into(), scopes: vec![Scope::Decode], certificate_cn: "a".into(), ..Default::default() };
        for (principals, expected) in [
            (vec![PrincipalConfig { name: "a b".into(), ..good.clone() }], "must be"),
            (vec![PrincipalConfig { name: "server".into(), ..good.clone() }], "reserved"),
            (vec![good.clone(), good.clone()], "twice"),
            (vec![PrincipalConfig { scopes: vec![], ..good.clone() }], "no scopes"),
            (vec![PrincipalConfig { certificate_cn: String::new(), ..good.clone() }], "neither"),
            (vec![PrincipalConfig { token_hashes: vec!["myelin_abc".into()], ..good.clone() }], "not its hash"),
            (vec![PrincipalConfig { token_hashes: vec!["sha256:zz".into()], ..good.clone() }], "token_hashes[0]"),
        ] {
            let config = AuthConfig { principals, ..Default::default() };
            let error = format!("{:#}", Gate::load(&config).err().expect("refused"));
            assert!(error.contains(expected), "{error}");
        }
        assert!(Gate::load(&AuthConfig::default()).unwrap().authenticate(&HeaderMap::new(), None, "t").unwrap().is_admin());
    }
}
