//! Typed async client for Myelin: connect, stream a session in, attach models, subscribe to
//! predictions. Also reads recordings in the eeg-notebooks CSV format and replays them at
//! real-time speed (or faster) into a server.
#![forbid(unsafe_code)]

pub mod display;
pub mod recording;

mod credentials;

use std::time::Duration;

use myelin_proto::v1::{self as pb, decoding_client::DecodingClient, ingest_client::IngestClient};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub use credentials::{Bearer, CredentialArgs, Credentials};

pub use myelin_proto::v1 as proto;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: tonic::transport::Error },
    #[error("invalid server address {0:?}")]
    Address(String),
    #[error("server answered {:?}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("the ingest stream is closed (the server ended it; call finish() for its status)")]
    IngestClosed,
    #[error("{0}")]
    Invalid(String),
    #[error("reading {path}: {source}")]
    File { path: std::path::PathBuf, source: std::io::Error },
    #[error("TLS settings for {address}: {source}")]
    Tls { address: String, source: tonic::transport::Error },
    #[error("the token is not valid in an authorization header (printable ASCII only)")]
    Token,
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// The header a proxy in front of several replicas hashes on (`deploy/envoy/`): the session id
/// on a session's calls, the attachment id (which ends in `@<session id>`) on an attachment's.
/// Every session- or attachment-scoped call carries it; a lone server ignores it.
pub const ROUTE_HEADER: &str = "myelin-route";

/// `message` with the routing header set to `key` (left out when empty or not a valid header
/// value: the server then answers the call as it would anyway).
fn routed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let (false, Ok(value)) = (key.is_empty(), key.parse::<tonic::metadata::AsciiMetadataValue>()) {
        request.metadata_mut().insert(ROUTE_HEADER, value);
    }
    request
}

/// Every call carries the bearer token (if any).
type Transport = InterceptedService<Channel, Bearer>;

/// A connection to one Myelin server.
#[derive(Clone)]
pub struct Client {
    ingest: IngestClient<Transport>,
    decoding: DecodingClient<Transport>,
}

impl Client {
    /// `address`: "http://host:port" or "host:port"; plaintext, no token.
    pub async fn connect(address: &str) -> Result<Self> {
        Self::connect_with(address, &Credentials::default()).await
    }

    /// `address` with TLS (a CA, "https://" addresses) and a token, as `credentials` say.
    pub async fn connect_with(address: &str, credentials: &Credentials) -> Result<Self> {
        let tls = credentials.tls_config(address)?;
        let bearer = credentials.bearer(address, tls.is_some())?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let uri = if address.contains("://") { address.to_string() } else { format!("{scheme}://{address}") };
        let mut endpoint = Endpoint::from_shared(uri).map_err(|_| ClientError::Address(address.into()))?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(|source| ClientError::Tls { address: address.into(), source })?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|source| ClientError::Connect { address: address.into(), source })?;
        Ok(Self::from_channel(channel, bearer))
    }

    pub fn from_channel(channel: Channel, bearer: Bearer) -> Self {
        Self {
            ingest: IngestClient::with_interceptor(channel.clone(), bearer.clone()).max_decoding_message_size(64 << 20),
            decoding: DecodingClient::with_interceptor(channel, bearer).max_decoding_message_size(64 << 20),
        }
    }

    /// Opens an Ingest stream and sends its header.
    pub async fn open_ingest(&self, header: pb::StreamHeader) -> Result<IngestStream> {
        let n_channels = header.channels.len();
        let route = header.session_id.clone();
        let (sender, receiver) = mpsc::channel::<pb::IngestRequest>(256);
        sender
            .send(pb::IngestRequest { message: Some(pb::ingest_request::Message::Header(header)) })
            .await
            .map_err(|_| ClientError::IngestClosed)?;
        let mut client = self.ingest.clone();
        let (latest_tx, latest) = watch::channel(pb::IngestReply::default());
        let replies = tokio::spawn(async move {
            let mut inbound = client.stream(routed(ReceiverStream::new(receiver), &route)).await?.into_inner();
            let mut warnings = Vec::new();
            while let Some(reply) = inbound.message().await? {
                warnings.extend(reply.warnings.iter().cloned());
                let _ = latest_tx.send(reply);
            }
            Ok(IngestSummary { last_reply: latest_tx.borrow().clone(), warnings })
        });
        Ok(IngestStream { sender: Some(sender), replies: Some(replies), latest, next_index: 0, n_channels })
    }

    pub async fn attach(&self, request: pb::AttachRequest) -> Result<pb::AttachReply> {
        let route = request.session_id.clone();
        Ok(self.decoding.clone().attach(routed(request, &route)).await?.into_inner())
    }

    /// Attach, retrying for up to a second while the server has not yet read the session's
    /// header (`open_ingest` returns before the server has registered the session).
    pub async fn attach_when_ready(&self, request: pb::AttachRequest) -> Result<pb::AttachReply> {
        for _ in 0..50 {
            match self.attach(request.clone()).await {
                Err(ClientError::Status(s)) if s.code() == tonic::Code::NotFound && s.message().starts_with("session") => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
        self.attach(request).await
    }

    pub async fn detach(&self, attachment_id: &str) -> Result<()> {
        self.decoding.clone().detach(routed(pb::DetachRequest { attachment_id: attachment_id.into() }, attachment_id)).await?;
        Ok(())
    }

    /// Predictions of a session and/or attachment ("" = any).
    pub async fn subscribe(&self, session_id: &str, attachment_id: &str) -> Result<tonic::Streaming<pb::Prediction>> {
        let request = pb::SubscribeRequest { session_id: session_id.into(), attachment_id: attachment_id.into(), after_sequence: None };
        let route = if attachment_id.is_empty() { session_id } else { attachment_id };
        Ok(self.decoding.clone().subscribe(routed(request, route)).await?.into_inner())
    }

    /// Live calibration: progress messages while epochs are collected, the result last.
    pub async fn calibrate(&self, request: pb::CalibrateRequest) -> Result<tonic::Streaming<pb::CalibrateProgress>> {
        let route = request.attachment_id.clone();
        Ok(self.decoding.clone().calibrate(routed(request, &route)).await?.into_inner())
    }

    /// Connects a LabStreamingLayer stream (and optional marker stream) as a session.
    pub async fn connect_lsl(&self, request: pb::ConnectLslRequest) -> Result<pb::ConnectLslReply> {
        let route = request.session_id.clone();
        Ok(self.decoding.clone().connect_lsl(routed(request, &route)).await?.into_inner())
    }

    pub async fn list_sessions(&self) -> Result<Vec<pb::SessionInfo>> {
        Ok(self.decoding.clone().list_sessions(pb::ListSessionsRequest {}).await?.into_inner().sessions)
    }

    pub async fn list_models(&self) -> Result<Vec<pb::ModelInfo>> {
        Ok(self.decoding.clone().list_models(pb::ListModelsRequest {}).await?.into_inner().models)
    }
}

/// What the server said over a whole ingest stream.
#[derive(Debug, Clone, Default)]
pub struct IngestSummary {
    pub last_reply: pb::IngestReply,
    pub warnings: Vec<pb::IngestWarning>,
}

/// The sending half of an Ingest call. Replies are read in the background (the server stops
/// reading when nobody reads its replies); `finish` returns them, or the status that ended the call.
pub struct IngestStream {
    sender: Option<mpsc::Sender<pb::IngestRequest>>,
    replies: Option<tokio::task::JoinHandle<Result<IngestSummary, tonic::Status>>>,
    latest: watch::Receiver<pb::IngestReply>,
    next_index: u64,
    n_channels: usize,
}

/// Packs samples as little-endian float32, the wire layout of `SampleChunk.samples`.
pub fn encode_samples(samples: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(samples.len() * 4);
    for v in samples {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes
}

impl IngestStream {
    /// Sends a raw request as-is (for tests of malformed input).
    pub async fn send_raw(&mut self, request: pb::IngestRequest) -> Result<()> {
        let sender = self.sender.as_ref().ok_or(ClientError::IngestClosed)?;
        sender.send(request).await.map_err(|_| ClientError::IngestClosed)
    }

    /// Sends `samples` (row-major [n x channels]) stamped one timestamp per sample; the chunk
    /// continues right after the previous one.
    pub async fn send_chunk(&mut self, samples: &[f32], timestamps: &[f64]) -> Result<()> {
        if samples.len() != timestamps.len() * self.n_channels {
            return Err(ClientError::Invalid(format!(
                "{} values for {} timestamps x {} channels",
                samples.len(),
                timestamps.len(),
                self.n_channels
            )));
        }
        let chunk = pb::SampleChunk {
            first_sample_index: self.next_index,
            timestamps: Some(pb::sample_chunk::Timestamps::PerSample(pb::PerSampleTimestamps { seconds: timestamps.to_vec() })),
            n_samples: timestamps.len() as u32,
            samples: encode_samples(samples),
        };
        self.next_index += timestamps.len() as u64;
        self.send_raw(pb::IngestRequest { message: Some(pb::ingest_request::Message::Chunk(chunk)) }).await
    }

    pub async fn send_markers(&mut self, markers: Vec<pb::Marker>) -> Result<()> {
        self.send_raw(pb::IngestRequest { message: Some(pb::ingest_request::Message::Markers(pb::Markers { markers })) }).await
    }

    /// Index of the next sample `send_chunk` will send.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// The newest reply received so far.
    pub fn latest_reply(&self) -> pb::IngestReply {
        self.latest.borrow().clone()
    }

    /// Waits until the server acknowledged every sample sent so far (or the call ended).
    pub async fn wait_acknowledged(&mut self) -> Result<()> {
        let target = self.next_index;
        let _ = self.latest.wait_for(|r| r.samples_accepted_until >= target).await;
        Ok(())
    }

    /// Closes the request stream and returns the server's replies, or the status it ended with.
    pub async fn finish(mut self) -> Result<IngestSummary> {
        self.sender.take();
        let handle = self.replies.take().expect("finish runs once");
        match handle.await {
            Ok(result) => Ok(result?),
            Err(e) => Err(ClientError::Invalid(format!("reply reader failed: {e}"))),
        }
    }
}
