//! TLS settings from the PEM files of `[tls]`, for both ports, swapped in whole when the files
//! are reloaded (SIGHUP, or a changed file): connections already open keep the settings they
//! began with, new handshakes take the new ones.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::config::TlsConfig;

/// Which port a configuration is for: gRPC speaks HTTP/2 only, the HTTP port both versions.
#[derive(Clone, Copy, Debug)]
pub enum Port {
    Grpc,
    Http,
}

impl Port {
    pub fn as_str(self) -> &'static str {
        match self {
            Port::Grpc => "grpc",
            Port::Http => "http",
        }
    }

    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Port::Grpc => vec![b"h2".to_vec()],
            Port::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

/// The current TLS settings of both ports.
pub struct TlsSettings {
    files: TlsConfig,
    current: RwLock<Current>,
    /// The files' modification times when last looked at (a failed load is not retried until
    /// they change again).
    seen: Mutex<Vec<Option<SystemTime>>>,
}

struct Current {
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
}

impl TlsSettings {
    /// Reads the files; an unreadable or mismatched certificate, key or CA stops the start.
    pub fn load(files: &TlsConfig) -> anyhow::Result<Arc<Self>> {
        let seen = Mutex::new(stamps(files));
        let current = Current::read(files)?;
        Ok(Arc::new(Self { files: files.clone(), current: RwLock::new(current), seen }))
    }

    pub fn for_port(&self, port: Port) -> Arc<ServerConfig> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        match port {
            Port::Grpc => current.grpc.clone(),
            Port::Http => current.http.clone(),
        }
    }

    /// Reads the files again; on an error the settings in use stay.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = Current::read(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// Whether a file changed since this was last asked (its modification time differs).
    pub fn files_changed(&self) -> bool {
        let now = stamps(&self.files);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = *seen != now;
        *seen = now;
        changed
    }
}

impl Current {
    fn read(files: &TlsConfig) -> anyhow::Result<Self> {
        Ok(Self { grpc: server_config(files, Port::Grpc)?, http: server_config(files, Port::Http)? })
    }
}

fn stamps(files: &TlsConfig) -> Vec<Option<SystemTime>> {
    [&files.cert, &files.key, &files.client_ca].iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
}

fn certificates(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {what} {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {what} {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{what} {} holds no PEM certificate", path.display());
    Ok(certs)
}

fn server_config(files: &TlsConfig, port: Port) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert, "tls.cert")?;
    let key =
        PrivateKeyDer::from_pem_file(&files.key).with_context(|| format!("reading the private key tls.key {}", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = if files.client_ca.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for ca in certificates(&files.client_ca, "tls.client_ca")? {
            roots.add(ca).with_context(|| format!("tls.client_ca {}", files.client_ca.display()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if files.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
        builder.with_client_cert_verifier(verifier.build().context("tls.client_ca")?)
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .with_context(|| format!("tls.cert {} and tls.key {} do not make a certificate", files.cert.display(), files.key.display()))?;
    config.alpn_protocols = port.alpn();
    Ok(Arc::new(config))
}
