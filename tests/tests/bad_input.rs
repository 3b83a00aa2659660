//! Bad input: each case ends with a clear gRPC status, and a healthy session on the same server
//! keeps receiving predictions throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use myelin_client::proto::{self as pb, ingest_client::IngestClient, ingest_request::Message};
use myelin_client::{Client, ClientError, encode_samples};
use myelin_e2e::{Golden, TestServer, event_locked, sliding, stream_header};
use tonic::Code;

const MAX_MESSAGE: usize = 65_536;

/// A session streaming the golden recording in a loop, 25x real time, with a subscriber counting
/// its predictions.
struct Healthy {
    predictions: Arc<AtomicU64>,
}

impl Healthy {
    async fn start(client: &Client) -> Self {
        let golden = Golden::load();
        let mut ingest = client.open_ingest(golden.header("healthy")).await.unwrap();
        let attached = client
            .attach_when_ready(pb::AttachRequest {
                session_id: "healthy".into(),
                model_id: "fixture-linear".into(),
                window: Some(sliding(0.25)),
                latency_budget_ms: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut stream = client.subscribe("healthy", &attached.attachment_id).await.unwrap();
        let predictions = Arc::new(AtomicU64::new(0));
        let counter = predictions.clone();
        tokio::spawn(async move {
            while let Ok(Some(p)) = stream.message().await {
                assert_eq!(p.status, pb::PredictionStatus::Ok as i32, "healthy session got {p:?}");
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        tokio::spawn(async move {
            let c = golden.channels.len();
            let mut t = golden.timestamps_first;
            loop {
                for begin in (0..golden.n_samples).step_by(16) {
                    let end = (begin + 16).min(golden.n_samples);
                    let ts: Vec<f64> = (begin..end).map(|k| t + (k - begin) as f64 / golden.rate_hz).collect();
                    t += (end - begin) as f64 / golden.rate_hz;
                    if ingest.send_chunk(&golden.samples[begin * c..end * c], &ts).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        let healthy = Self { predictions };
        healthy.assert_decoding().await;
        healthy
    }

    /// At least three new predictions arrive within five seconds.
    async fn assert_decoding(&self) {
        let before = self.predictions.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.predictions.load(Ordering::Relaxed) < before + 3 {
            assert!(tokio::time::Instant::now() < deadline, "the healthy session stopped receiving predictions");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn header(session: &str) -> pb::IngestRequest {
    let channels: Vec<String> = ["C3", "Cz", "C4", "Pz"].iter().map(|s| s.to_string()).collect();
    pb::IngestRequest { message: Some(Message::Header(stream_header(session, &channels, 128.0))) }
}

fn chunk(first: u64, samples: &[f32], n: u32, timestamps: Vec<f64>) -> pb::IngestRequest {
    pb::IngestRequest {
        message: Some(Message::Chunk(pb::SampleChunk {
            first_sample_index: first,
            timestamps: Some(pb::sample_chunk::Timestamps::PerSample(pb::PerSampleTimestamps { seconds: timestamps })),
            n_samples: n,
            samples: encode_samples(samples),
        })),
    }
}

fn regular_chunk(first: u64, n: usize, first_seconds: f64) -> pb::IngestRequest {
    pb::IngestRequest {
        message: Some(Message::Chunk(pb::SampleChunk {
            first_sample_index: first,
            timestamps: Some(pb::sample_chunk::Timestamps::Regular(pb::RegularTimestamps { first_seconds, rate_hz: 0.0 })),
            n_samples: n as u32,
            samples: encode_samples(&vec![1.0; n * 4]),
        })),
    }
}

/// Sends `requests` on a fresh Ingest call and returns the status that ended it.
async fn ingest_status(server: &TestServer, requests: Vec<pb::IngestRequest>) -> tonic::Status {
    let mut client = IngestClient::connect(format!("http://{}", server.grpc)).await.unwrap();
    // Keep the request stream open after the last message, so the end comes from the server.
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    for r in requests {
        sender.send(r).await.unwrap();
    }
    let mut replies = client.stream(tokio_stream::wrappers::ReceiverStream::new(receiver)).await.unwrap().into_inner();
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match replies.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the server ended the call without an error"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("no status within 10 s");
    drop(sender);
    status
}

fn status_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> tonic::Status {
    match result {
        Err(ClientError::Status(status)) => status,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_status_and_other_sessions_keep_decoding() {
    let max = MAX_MESSAGE.to_string();
    let mut server =
        // Backward timestamps are refused under the reject policy (the default repairs them).
        TestServer::start(&[
            ("MYELIN_MODELS__DIR", "tests/fixtures/models"),
            ("MYELIN_SERVER__MAX_MESSAGE_BYTES", &max),
            ("MYELIN_SESSIONS__TIMESTAMP_POLICY", "reject"),
        ])
        .await;
    let client = server.client().await;
    let healthy = Healthy::start(&client).await;
    let ok_chunk = |first: u64, t0: f64| chunk(first, &[0.5; 8], 2, vec![t0, t0 + 1.0 / 128.0]);

    // Header missing.
    let s = ingest_status(&server, vec![ok_chunk(0, 1.0)]).await;
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("StreamHeader"), "{s:?}");
    healthy.assert_decoding().await;

    // Header sent twice.
    let s = ingest_status(&server, vec![header("twice"), header("twice")]).await;
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("twice"), "{s:?}");
    healthy.assert_decoding().await;

    // Invalid header (rate 0).
    let mut bad_rate = header("rate0");
    if let Some(Message::Header(h)) = &mut bad_rate.message {
        h.nominal_rate_hz = 0.0;
    }
    let s = ingest_status(&server, vec![bad_rate]).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("nominal_rate_hz"), "{s:?}");

    // A rate beyond limits.rate_hz, and one within it whose buffer one session may not have.
    let mut absurd = header("absurd");
    if let Some(Message::Header(h)) = &mut absurd.message {
        h.nominal_rate_hz = 1e12;
    }
    let s = ingest_status(&server, vec![absurd]).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("limits.rate_hz"), "{s:?}");
    let mut big = header("big");
    if let Some(Message::Header(h)) = &mut big.message {
        h.nominal_rate_hz = 100_000.0;
        h.channels = (0..1024).map(|i| pb::Channel { label: format!("E{i}"), ..Default::default() }).collect();
    }
    let s = ingest_status(&server, vec![big]).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("limits.session_buffer_bytes"), "{s:?}");

    // A sample index that overflows.
    let s = ingest_status(&server, vec![header("overflow"), regular_chunk(u64::MAX - 1, 8, 1.0)]).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("out of range"), "{s:?}");
    healthy.assert_decoding().await;

    // Byte length not n_samples x n_channels x 4.
    let s = ingest_status(&server, vec![header("length"), chunk(0, &[0.0; 7], 2, vec![1.0, 1.01])]).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("28 bytes") && s.message().contains("32"), "{s:?}");
    healthy.assert_decoding().await;

    // Non-finite samples under the default policy (reject).
    let mut nan = [0.5f32; 8];
    nan[3] = f32::NAN;
    nan[6] = f32::INFINITY;
    let s = ingest_status(&server, vec![header("nan"), chunk(0, &nan, 2, vec![1.0, 1.01])]).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("2 non-finite"), "{s:?}");
    healthy.assert_decoding().await;

    // A message over the configured size limit.
    let n = MAX_MESSAGE / 16 + 100;
    let s = ingest_status(&server, vec![header("large"), regular_chunk(0, n, 1.0)]).await;
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    healthy.assert_decoding().await;

    // Timestamps going backwards, inside a chunk and between chunks.
    let s = ingest_status(&server, vec![header("back1"), chunk(0, &[0.0; 8], 2, vec![2.0, 1.9])]).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("backwards"), "{s:?}");
    let s = ingest_status(&server, vec![header("back2"), regular_chunk(0, 8, 10.0), regular_chunk(8, 8, 5.0)]).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("backwards"), "{s:?}");
    healthy.assert_decoding().await;

    // A session id already streaming.
    let s = ingest_status(&server, vec![header("healthy")]).await;
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
    healthy.assert_decoding().await;

    // Unknown session, model, attachment.
    let attach = |session: &str, model: &str| pb::AttachRequest {
        session_id: session.into(),
        model_id: model.into(),
        window: Some(event_locked(&[1])),
        ..Default::default()
    };
    let s = status_of(client.attach(attach("nobody", "fixture-linear")).await);
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(s.message().contains("session"), "{s:?}");
    let s = status_of(client.attach(attach("healthy", "no-such-model")).await);
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(s.message().contains("no-such-model"), "{s:?}");
    let s = status_of(client.detach("att-999").await);
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let s = status_of(client.subscribe("nobody", "").await);
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let s = status_of(client.subscribe("", "att-999").await);
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    healthy.assert_decoding().await;

    // A channel mapping naming a channel the stream lacks.
    let mut mapped = attach("healthy", "fixture-linear");
    mapped.channel_map = vec![pb::ChannelMapping { model_channel: "C3".into(), stream_channel: "Fz".into() }];
    let s = status_of(client.attach(mapped).await);
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("\"Fz\""), "{s:?}");
    // A window that does not fit the model.
    let mut wrong_window = attach("healthy", "fixture-linear");
    wrong_window.window = Some(pb::WindowPolicy {
        policy: Some(pb::window_policy::Policy::EventLocked(pb::EventLockedWindow { marker_codes: vec![1], tmin_s: 0.0, tmax_s: 0.5 })),
    });
    let s = status_of(client.attach(wrong_window).await);
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    healthy.assert_decoding().await;

    // A model card that does not match its ONNX file: listed as unavailable, refused by name.
    let models = client.list_models().await.unwrap();
    let bad = models.iter().find(|m| m.id == "fixture-mismatch").expect("the bad card is listed");
    assert!(!bad.ready);
    assert!(bad.error.contains("input.name"), "{}", bad.error);
    assert!(models.iter().any(|m| m.id == "fixture-linear" && m.ready));
    let s = status_of(client.attach(attach("healthy", "fixture-mismatch")).await);
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("input.name"), "{s:?}");
    healthy.assert_decoding().await;

    assert!(server.is_running());
    let (_, metrics) = server.http_get("/metrics").await;
    for reason in ["header_missing", "header_repeated", "bad_length", "non_finite", "too_large", "timestamps_backwards"] {
        assert!(
            metrics.contains(&format!("myelin_chunks_rejected_total{{reason=\"{reason}\",door=\"grpc\"}}")),
            "{reason} not counted:\n{metrics}"
        );
    }
    assert!(metrics.contains("myelin_non_finite_samples_total 2"), "{metrics}");
}

#[test]
fn models_check_names_the_mismatched_field() {
    let output = std::process::Command::new(myelin_e2e::myelin_bin())
        .args(["models", "check", "tests/fixtures/models/fixture-mismatch.card.toml"])
        .current_dir(myelin_e2e::repo_root())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`input.name`") && stderr.contains("\"eeg\""), "{stderr}");

    let output = std::process::Command::new(myelin_e2e::myelin_bin())
        .args(["models", "check", "tests/fixtures/models/fixture-linear.card.toml"])
        .current_dir(myelin_e2e::repo_root())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_fill_policy_replaces_non_finite_samples_and_warns() {
    let server = TestServer::start(&[("MYELIN_SESSIONS__NON_FINITE_POLICY", "zero_fill")]).await;
    let client = server.client().await;
    let healthy = Healthy::start(&client).await;
    let mut ingest = client.open_ingest(stream_header("zf", &["C3".into(), "Cz".into(), "C4".into(), "Pz".into()], 128.0)).await.unwrap();
    let mut samples = vec![1.0f32; 40];
    samples[5] = f32::NAN;
    ingest.send_chunk(&samples, &(0..10).map(|i| 1.0 + i as f64 / 128.0).collect::<Vec<_>>()).await.unwrap();
    ingest.wait_acknowledged().await.unwrap();
    let summary = ingest.finish().await.unwrap();
    assert_eq!(summary.last_reply.samples_accepted_until, 10);
    let warning = summary.warnings.iter().find(|w| w.kind == pb::IngestWarningKind::NonFiniteZeroFilled as i32).expect("a warning");
    assert_eq!(warning.count, 1);
    assert_eq!(warning.sample_index, 1);
    healthy.assert_decoding().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_overlaps_and_out_of_order_chunks_are_reported_and_gap_windows_not_decoded() {
    let server = TestServer::start(&[]).await;
    let client = server.client().await;
    let channels: Vec<String> = ["C3", "Cz", "C4", "Pz"].iter().map(|s| s.to_string()).collect();
    let mut ingest = client.open_ingest(stream_header("gappy", &channels, 128.0)).await.unwrap();
    let attached = client
        .attach_when_ready(pb::AttachRequest {
            session_id: "gappy".into(),
            model_id: "fixture-linear".into(),
            window: Some(sliding(0.5)),
            latency_budget_ms: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut predictions = client.subscribe("gappy", &attached.attachment_id).await.unwrap();
    let ts = |first: u64, n: u64| (first..first + n).map(|i| 1.0 + i as f64 / 128.0).collect::<Vec<_>>();
    let ones = |n: usize| vec![1.0f32; n * 4];
    // 0..256 in order.
    ingest.send_raw(chunk(0, &ones(256), 256, ts(0, 256))).await.unwrap();
    // A gap: 256..320 never sent.
    ingest.send_raw(chunk(320, &ones(64), 64, ts(320, 64))).await.unwrap();
    // Overlap: 352..416 repeats 352..384.
    ingest.send_raw(chunk(352, &ones(64), 64, ts(352, 64))).await.unwrap();
    // Entirely old.
    ingest.send_raw(chunk(100, &ones(10), 10, ts(100, 10))).await.unwrap();
    // Then plenty of clean samples.
    ingest.send_raw(chunk(416, &ones(512), 512, ts(416, 512))).await.unwrap();
    let summary = ingest.finish().await.unwrap();
    assert_eq!(summary.last_reply.samples_accepted_until, 928);
    let kinds: Vec<i32> = summary.warnings.iter().map(|w| w.kind).collect();
    assert!(kinds.contains(&(pb::IngestWarningKind::Gap as i32)), "{:?}", summary.warnings);
    assert!(kinds.contains(&(pb::IngestWarningKind::Overlap as i32)), "{:?}", summary.warnings);
    assert!(kinds.contains(&(pb::IngestWarningKind::OutOfOrder as i32)), "{:?}", summary.warnings);
    let gap = summary.warnings.iter().find(|w| w.kind == pb::IngestWarningKind::Gap as i32).unwrap();
    assert_eq!((gap.sample_index, gap.count), (256, 64));
    let overlap = summary.warnings.iter().find(|w| w.kind == pb::IngestWarningKind::Overlap as i32).unwrap();
    assert_eq!((overlap.sample_index, overlap.count), (352, 32));

    // Sliding windows of 128 samples every 64: windows touching [256, 320) are ERROR, the rest OK.
    let got = myelin_e2e::collect(&mut predictions, 13, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 13);
    for p in &got {
        let w = p.window.unwrap();
        let touches_gap = w.first_sample_index < 320 && w.last_sample_index >= 256;
        if touches_gap {
            assert_eq!(p.status, pb::PredictionStatus::Error as i32, "{p:?}");
            assert!(p.error_reason.contains("missing samples"), "{p:?}");
            assert!(p.result.is_none());
        } else {
            assert_eq!(p.status, pb::PredictionStatus::Ok as i32, "{p:?}");
        }
    }
    let sessions = client.list_sessions().await.unwrap();
    let gappy = sessions.iter().find(|s| s.session_id == "gappy").unwrap();
    assert_eq!(gappy.gap_samples, 64);
    assert!(!gappy.live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_of_a_trillion_samples_is_a_gap_not_a_hang() {
    let server = TestServer::start(&[]).await;
    let client = server.client().await;
    let channels: Vec<String> = ["C3", "Cz", "C4", "Pz"].iter().map(|s| s.to_string()).collect();
    let mut ingest = client.open_ingest(stream_header("jump", &channels, 128.0)).await.unwrap();
    let attached = client
        .attach_when_ready(pb::AttachRequest {
            session_id: "jump".into(),
            model_id: "fixture-linear".into(),
            // One window per sample: a naive cutter would try to cut a trillion windows.
            window: Some(sliding(1.0 / 128.0)),
            latency_budget_ms: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut predictions = client.subscribe("jump", &attached.attachment_id).await.unwrap();
    let jump = 1_000_000_000_000u64;
    let ts = |first: u64, n: u64| (first..first + n).map(|i| 1.0 + i as f64 / 128.0).collect::<Vec<_>>();
    ingest.send_raw(chunk(0, &vec![1.0; 256 * 4], 256, ts(0, 256))).await.unwrap();
    ingest.send_raw(chunk(jump, &vec![1.0; 256 * 4], 256, ts(jump, 256))).await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(30), ingest.finish()).await.expect("no hang").unwrap();
    assert_eq!(summary.last_reply.samples_accepted_until, jump + 256);
    let gap = summary.warnings.iter().find(|w| w.kind == pb::IngestWarningKind::Gap as i32).expect("a gap warning");
    assert_eq!((gap.sample_index, gap.count), (256, jump - 256));
    // After the gap, windows lying wholly in real samples are decoded again.
    // (The burst after the gap can overflow the model queue: some windows are SHED, as designed.)
    let got = myelin_e2e::collect(&mut predictions, 100_000, Duration::from_secs(5)).await;
    let newest = got.iter().map(|p| p.window.unwrap().last_sample_index).max().expect("predictions");
    assert_eq!(newest, jump + 255);
    assert!(
        got.iter().any(|p| p.status == pb::PredictionStatus::Ok as i32 && p.window.unwrap().first_sample_index >= jump),
        "decoding resumed after the gap"
    );
}

#[test]
fn a_misspelled_log_format_stops_the_server_at_start_naming_the_key() {
    let output = std::process::Command::new(myelin_e2e::myelin_bin())
        .args(["serve"])
        .env("MYELIN_SERVER__LOG_FORMAT", "jsn")
        .env("MYELIN_SERVER__GRPC_ADDR", "127.0.0.1:0")
        .env("MYELIN_SERVER__HTTP_ADDR", "127.0.0.1:0")
        .current_dir(myelin_e2e::repo_root())
        .output()
        .unwrap();
    assert!(!output.status.success(), "started with log_format = \"jsn\"");
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(stderr.contains("log_format") && stderr.contains("jsn") && stderr.contains("pretty"), "{stderr}");
}
