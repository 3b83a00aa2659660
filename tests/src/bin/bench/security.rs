//! The cost of security, side by side in one run: the stream benchmark (64 channels at 1 kHz into
//! fixture-bench64) and a burst of unary calls, first against a plaintext server, then against
//! one with TLS on both ports and bearer-token authentication (five principals configured, as a
//! small lab would), each through the Rust client as a rig would connect.

use std::time::Duration;

use hdrhistogram::Histogram;
use myelin_client::{Client, Credentials};
use myelin_e2e::{TestServer, certs, repo_root};
use myelin_server::auth::token::{TokenHash, new_token};
use tokio::time::Instant;

use super::{Args, StreamResult, stream_once};

const UNARY_CALLS: usize = 2000;

struct Measured {
    stream: StreamResult,
    unary_us: Histogram<u64>,
    connect_us: Histogram<u64>,
}

/// A TLS + token configuration for a benchmark's server, and the credentials its clients use;
/// the certificates live in a scratch directory removed on drop.
pub struct Secured {
    scratch: std::path::PathBuf,
    pub config: String,
    pub credentials: Credentials,
}

impl Secured {
    pub fn new() -> anyhow::Result<Self> {
        let scratch = std::env::temp_dir().join(format!("myelin-bench-security-{}", std::process::id()));
        let made = certs::make(&scratch, &[])?;
        let token = new_token()?;
        let mut config = format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n\n[auth]\nmetrics_open = true\n",
            made.server_cert.display().to_string(),
            made.server_key.display().to_string()
        );
        for (i, name) in ["rig-1", "rig-2", "experiment", "dashboard", "bench"].iter().enumerate() {
            // The benchmark's own token is the last one checked: the gate tries every hash.
            let hash = if i == 4 { TokenHash::of(&token)? } else { TokenHash::of(&new_token()?)? };
            // Not admin: every call goes through the ownership checks a rig's would.
            config +=
                &format!("\n[[auth.principals]]\nname = \"{name}\"\nscopes = [\"ingest\", \"decode\"]\ntoken_hashes = [\"{hash}\"]\n");
        }
        let config_path = scratch.join("secure.toml");
        std::fs::write(&config_path, config)?;
        let credentials =
            Credentials { token: Some(token), ca: Some(made.ca.clone()), server_name: Some("localhost".into()), ..Default::default() };
        Ok(Self { config: config_path.display().to_string(), scratch, credentials })
    }

    /// A client of `server`, started with `["serve", "--config", &self.config]`.
    pub async fn client(&self, server: &TestServer) -> anyhow::Result<Client> {
        Ok(Client::connect_with(&format!("https://localhost:{}", server.grpc.port()), &self.credentials).await?)
    }
}

impl Drop for Secured {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let bin = args.server.clone().unwrap_or_else(|| repo_root().join("target/release/myelin"));
    anyhow::ensure!(bin.exists(), "{} not found: cargo build --release --bins", bin.display());
    let secured = Secured::new()?;
    eprintln!("plaintext server: streaming {} s", args.seconds);
    let plain = measure(&bin, &["serve"], &Credentials::default(), "http", &args).await?;
    eprintln!("TLS + token server: streaming {} s", args.seconds);
    let tls = measure(&bin, &["serve", "--config", &secured.config], &secured.credentials, "https", &args).await?;

    println!(
        "myelin-bench security: {} channels at 1 kHz, chunks of {}, {:.0} s per server, fixture-bench64; predictions {} / {}, over budget {} / {}",
        args.channels,
        args.chunk,
        args.seconds,
        plain.stream.server_us.len(),
        tls.stream.server_us.len(),
        plain.stream.missed,
        tls.stream.missed
    );
    println!("{:<46} {:>20} {:>20} {:>20}", "microseconds: plaintext / TLS+token (ratio)", "p50", "p99", "p99.9");
    for (name, a, b) in [
        ("server: last-sample receipt -> publish", &plain.stream.server_us, &tls.stream.server_us),
        ("end to end: client send -> subscriber", &plain.stream.e2e_us, &tls.stream.e2e_us),
        ("unary call (ListModels) round trip", &plain.unary_us, &tls.unary_us),
        ("new connection + first call", &plain.connect_us, &tls.connect_us),
    ] {
        let cell = |q: f64| {
            let (x, y) = (a.value_at_quantile(q), b.value_at_quantile(q));
            format!("{x} / {y} ({:.2})", y as f64 / x.max(1) as f64)
        };
        println!("{name:<46} {:>20} {:>20} {:>20}", cell(0.5), cell(0.99), cell(0.999));
    }
    Ok(())
}

async fn measure(bin: &std::path::Path, serve: &[&str], credentials: &Credentials, scheme: &str, args: &Args) -> anyhow::Result<Measured> {
    let server = TestServer::start_with_binary(bin, serve, &[]).await;
    let address = format!("{scheme}://localhost:{}", server.grpc.port());
    let client = Client::connect_with(&address, credentials).await?;
    let stream = stream_once(&client, args).await?;
    let mut unary_us = Histogram::<u64>::new(3)?;
    for _ in 0..UNARY_CALLS {
        let started = Instant::now();
        client.list_models().await?;
        unary_us.record(started.elapsed().as_micros().max(1) as u64)?;
    }
    let mut connect_us = Histogram::<u64>::new(3)?;
    for _ in 0..200 {
        let started = Instant::now();
        let fresh = Client::connect_with(&address, credentials).await?;
        fresh.list_sessions().await?;
        connect_us.record(started.elapsed().as_micros().max(1) as u64)?;
    }
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = server.stop().await;
    anyhow::ensure!(status.success(), "server exited with {status}");
    Ok(Measured { stream, unary_us, connect_us })
}
