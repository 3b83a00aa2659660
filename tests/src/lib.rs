//! End-to-end harness: starts the real `myelin` binary on free loopback ports and talks to it
//! over real sockets.
#![forbid(unsafe_code)]

pub mod certs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use myelin_client::{Client, proto as pb};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The repository root (the workspace this crate lives in).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The server binary: $MYELIN_BIN, else target/<profile>/myelin next to this test binary.
pub fn myelin_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("MYELIN_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> -> target/debug/myelin
    let candidate = exe.parent().and_then(Path::parent).map(|d| d.join("myelin"));
    match candidate {
        Some(path) if path.exists() => path,
        _ => panic!("myelin binary not found: run `cargo build --bins` first (deploy/test.sh does), or set MYELIN_BIN"),
    }
}

pub struct TestServer {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl TestServer {
    /// Starts `myelin serve` with the repository's models unless `env` overrides
    /// MYELIN_MODELS__DIR, on ports picked by the OS.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_args(&["serve"], env).await
    }

    pub async fn start_args(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_with_binary(&myelin_bin(), args, env).await
    }

    pub async fn start_with_binary(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary);
        command
            .args(args)
            .current_dir(repo_root())
            .env("MYELIN_SERVER__GRPC_ADDR", "127.0.0.1:0")
            .env("MYELIN_SERVER__HTTP_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawning myelin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("reading myelin stdout") {
                if let Some(rest) = line.strip_prefix("myelin ready ") {
                    return Some(rest.to_string());
                }
            }
            None
        })
        .await
        .expect("myelin did not become ready within 60 s")
        .expect("myelin exited before it was ready");
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let field = |name: &str| -> SocketAddr {
            ready
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("ready line lacks {name}: {ready}"))
        };
        Self { grpc: field("grpc="), http: field("http="), child }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&format!("http://{}", self.grpc)).await.expect("connecting to myelin")
    }

    /// The server's process id (for reading its CPU time from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// True while the server process is alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// GET a path from the HTTP port (plain HTTP/1.1 over TCP, no client library needed).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.http).await.expect("connecting to the HTTP port");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.http);
        stream.write_all(request.as_bytes()).await.expect("sending the request");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("reading the response");
        let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running child") as i32;
        let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.expect("myelin did not stop within 10 s").expect("wait")
    }
}

/// The golden stream of models/fixtures/golden-linear.json.
#[derive(Debug, Deserialize)]
pub struct Golden {
    pub rate_hz: f64,
    pub channels: Vec<String>,
    pub timestamps_first: f64,
    pub samples: Vec<f32>,
    pub n_samples: usize,
    pub markers: Vec<GoldenMarker>,
    pub marker_codes: Vec<i32>,
    pub expected: Vec<GoldenWindow>,
}

#[derive(Debug, Deserialize)]
pub struct GoldenMarker {
    pub index: usize,
    pub timestamp: f64,
    pub code: i32,
}

#[derive(Debug, Deserialize)]
pub struct GoldenWindow {
    pub marker_index: usize,
    pub code: i32,
    pub first_sample_index: u64,
    pub last_sample_index: u64,
    pub probs: Vec<f32>,
    pub features: Vec<f32>,
}

impl Golden {
    pub fn load() -> Self {
        let path = repo_root().join("models/fixtures/golden-linear.json");
        serde_json::from_str(&std::fs::read_to_string(&path).expect("golden file")).expect("golden json")
    }

    pub fn header(&self, session_id: &str) -> pb::StreamHeader {
        stream_header(session_id, &self.channels, self.rate_hz)
    }

    pub fn timestamp(&self, index: usize) -> f64 {
        self.timestamps_first + index as f64 / self.rate_hz
    }

    /// Streams the golden recording in chunks, each chunk's markers right after it.
    pub async fn stream(&self, ingest: &mut myelin_client::IngestStream, chunk: usize) {
        let c = self.channels.len();
        for begin in (0..self.n_samples).step_by(chunk) {
            let end = (begin + chunk).min(self.n_samples);
            let timestamps: Vec<f64> = (begin..end).map(|i| self.timestamp(i)).collect();
            ingest.send_chunk(&self.samples[begin * c..end * c], &timestamps).await.expect("sending a chunk");
            let markers: Vec<pb::Marker> = self
                .markers
                .iter()
                .filter(|m| m.index >= begin && m.index < end)
                .map(|m| pb::Marker { timestamp: m.timestamp, code: m.code, label: String::new() })
                .collect();
            if !markers.is_empty() {
                ingest.send_markers(markers).await.expect("sending markers");
            }
        }
    }
}

pub fn stream_header(session_id: &str, channels: &[String], rate_hz: f64) -> pb::StreamHeader {
    pb::StreamHeader {
        session_id: session_id.into(),
        stream_name: format!("test stream {session_id}"),
        modality: pb::Modality::Eeg as i32,
        channels: channels
            .iter()
            .map(|label| pb::Channel {
                label: label.clone(),
                r#type: "EEG".into(),
                unit: "microvolts".into(),
                position: None,
                layout: None,
            })
            .collect(),
        nominal_rate_hz: rate_hz,
        clock: pb::ClockSource::Unix as i32,
    }
}

pub fn event_locked(codes: &[i32]) -> pb::WindowPolicy {
    pb::WindowPolicy {
        policy: Some(pb::window_policy::Policy::EventLocked(pb::EventLockedWindow {
            marker_codes: codes.to_vec(),
            tmin_s: 0.0,
            tmax_s: 0.0,
        })),
    }
}

pub fn sliding(hop_s: f64) -> pb::WindowPolicy {
    pb::WindowPolicy { policy: Some(pb::window_policy::Policy::Sliding(pb::SlidingWindow { length_s: 0.0, hop_s })) }
}

/// Reads predictions until `n` arrived or `timeout` passed.
pub async fn collect(stream: &mut tonic::Streaming<pb::Prediction>, n: usize, timeout: Duration) -> Vec<pb::Prediction> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, async {
        while out.len() < n {
            match stream.message().await {
                Ok(Some(p)) => out.push(p),
                _ => break,
            }
        }
    })
    .await;
    out
}
