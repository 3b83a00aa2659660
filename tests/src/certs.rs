//! Certificates for the TLS tests, made here with rcgen (nothing is fetched): a CA, a server
//! certificate for localhost / 127.0.0.1, client certificates signed by the CA, and a second,
//! untrusted CA with a client certificate of its own (the "unknown client" of the mutual TLS
//! tests).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

/// Paths of what [`make`] wrote.
#[derive(Debug, Clone)]
pub struct TestCertificates {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCertificates {
    /// `client-<cn>.pem` and `client-<cn>.key`.
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("client-{cn}.pem")), self.dir.join(format!("client-{cn}.key")))
    }

    /// A client certificate with CN "rogue", signed by a CA the server does not trust.
    pub fn rogue_client(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("rogue-client.pem"), self.dir.join("rogue-client.key"))
    }
}

fn ca(name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn leaf(
    dir: &Path,
    stem: &str,
    cn: &str,
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    issuer: &CertifiedIssuer<'_, KeyPair>,
) -> anyhow::Result<()> {
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    std::fs::write(dir.join(format!("{stem}.pem")), cert.pem())?;
    std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem())?;
    Ok(())
}

/// Writes a CA, a server certificate and one client certificate per name in `clients` into `dir`.
pub fn make(dir: &Path, clients: &[&str]) -> anyhow::Result<TestCertificates> {
    std::fs::create_dir_all(dir)?;
    let authority = ca("Myelin test CA")?;
    std::fs::write(dir.join("ca.pem"), authority.pem())?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    leaf(dir, "server", "localhost", names, ExtendedKeyUsagePurpose::ServerAuth, &authority)?;
    for cn in clients {
        leaf(dir, &format!("client-{cn}"), cn, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, &authority)?;
    }
    let rogue = ca("Somebody else's CA")?;
    std::fs::write(dir.join("rogue-ca.pem"), rogue.pem())?;
    leaf(dir, "rogue-client", "rogue", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, &rogue)?;
    Ok(TestCertificates {
        dir: dir.to_path_buf(),
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    })
}
