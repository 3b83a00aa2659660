//! How a client proves who it is: a bearer token (`MYELIN_TOKEN`), and for TLS the CA that
//! signed the server's certificate, optionally a client certificate (mutual TLS).

use std::path::{Path, PathBuf};

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::{ClientError, Result};

#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Sent as `authorization: Bearer <token>` on every call.
    pub token: Option<String>,
    /// PEM CA bundle the server's certificate must chain to; set = TLS.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub certificate: Option<(PathBuf, PathBuf)>,
    /// Name the server's certificate must carry, when it is not the address's host.
    pub server_name: Option<String>,
}

impl Credentials {
    /// A token and CA from `MYELIN_TOKEN` and `MYELIN_CA` (empty = none).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self { token: var("MYELIN_TOKEN"), ca: var("MYELIN_CA").map(PathBuf::from), ..Self::default() }
    }

    /// TLS with a CA given or an "https://" address (which then needs the CA: no system roots
    /// are trusted for a server holding patient data).
    pub(crate) fn tls_config(&self, address: &str) -> Result<Option<ClientTlsConfig>> {
        if address.starts_with("http://") && (self.ca.is_some() || self.certificate.is_some()) {
            // tonic would connect in plaintext despite the TLS settings.
            return Err(ClientError::Invalid(format!("{address}: a CA or client certificate means TLS: write https:// or no scheme")));
        }
        let Some(ca) = &self.ca else {
            if address.starts_with("https://") {
                return Err(ClientError::Invalid(format!(
                    "{address}: TLS needs the CA that signed the server's certificate (--ca / MYELIN_CA)"
                )));
            }
            return Ok(None);
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let Some((cert, key)) = &self.certificate {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(Some(tls))
    }

    /// The token's header. Over plaintext it goes to loopback addresses only: anyone on the
    /// path could read it and act as its principal.
    pub(crate) fn bearer(&self, address: &str, tls: bool) -> Result<Bearer> {
        if self.token.is_some() && !tls && !is_loopback(address) {
            return Err(ClientError::Invalid(format!(
                "{address}: refusing to send the token in clear to a host that is not this machine: connect with TLS (--ca / MYELIN_CA)"
            )));
        }
        match &self.token {
            None => Ok(Bearer(None)),
            Some(token) => {
                let value: AsciiMetadataValue =
                    MetadataValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| ClientError::Token)?;
                Ok(Bearer(Some(value)))
            }
        }
    }
}

/// "localhost", 127.0.0.0/8 or ::1, with or without scheme and port.
fn is_loopback(address: &str) -> bool {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_go_in_clear_to_loopback_only_and_tls_needs_https() {
        for local in ["127.0.0.1:50051", "http://localhost:1", "[::1]:50051", "http://127.0.0.2:9"] {
            assert!(is_loopback(local), "{local}");
        }
        for remote in ["10.0.0.5:50051", "http://lab.example:50051", "[2001:db8::1]:1"] {
            assert!(!is_loopback(remote), "{remote}");
        }
        let with_token = Credentials { token: Some("myelin_x".into()), ..Default::default() };
        assert!(with_token.bearer("10.0.0.5:50051", false).is_err());
        assert!(with_token.bearer("10.0.0.5:50051", true).is_ok() && with_token.bearer("127.0.0.1:1", false).is_ok());
        let with_ca = Credentials { ca: Some("ca.pem".into()), ..Default::default() };
        assert!(with_ca.tls_config("http://lab.example:50051").is_err());
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ClientError::File { path: path.to_path_buf(), source })
}

/// Puts the token on every call.
#[derive(Clone, Default)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The credential flags of `myelin-cli` and `myelin replay --server`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CredentialArgs {
    /// Bearer token for the server's authentication.
    #[arg(long, global = true, env = "MYELIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) that signed the server's certificate: connect with TLS.
    #[arg(long, global = true, env = "MYELIN_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --key).
    #[arg(long, global = true, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, global = true, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Name the server's certificate carries, when it differs from the address's host.
    #[arg(long, global = true)]
    pub server_name: Option<String>,
}

impl CredentialArgs {
    pub fn credentials(&self) -> Credentials {
        Credentials {
            token: self.token.clone().filter(|t| !t.is_empty()),
            ca: self.ca.clone().filter(|p| !p.as_os_str().is_empty()),
            certificate: self.cert.clone().zip(self.key.clone()),
            server_name: self.server_name.clone(),
        }
    }
}
