//! The Ingest gRPC service: validates a stream's header and chunks, converts samples, and feeds
//! its session. One task per call; replies go through a bounded channel, so a client that stops
//! reading replies is slowed by HTTP/2 flow control instead of growing server memory.

pub mod lsl;

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use myelin_proto::v1::{self as pb, ingest_request::Message, sample_chunk::Timestamps};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::clock;
use crate::config::NonFinitePolicy;
use crate::metrics as m;
use crate::publish::Hub;
use crate::session::{ChunkTimestamps, Session, SessionManager};

pub struct IngestService {
    pub sessions: Arc<SessionManager>,
    pub hub: Hub,
    pub non_finite: NonFinitePolicy,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<pb::IngestReply, Status>> + Send>>;

#[tonic::async_trait]
impl pb::ingest_server::Ingest for IngestService {
    type StreamStream = ReplyStream;

    async fn stream(&self, request: Request<Streaming<pb::IngestRequest>>) -> Result<Response<ReplyStream>, Status> {
        let inbound = request.into_inner();
        let (replies, receiver) = mpsc::channel(64);
        let handler = StreamHandler {
            sessions: self.sessions.clone(),
            hub: self.hub.clone(),
            non_finite: self.non_finite,
            samples: Vec::new(),
            timestamps: Vec::new(),
        };
        tokio::spawn(async move {
            if let Err(status) = handler.run(inbound, &replies).await {
                tracing::info!(code = ?status.code(), message = status.message(), "ingest stream ended with an error");
                let _ = replies.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))))
    }
}

struct StreamHandler {
    sessions: Arc<SessionManager>,
    hub: Hub,
    non_finite: NonFinitePolicy,
    /// Reused per chunk: decoded samples and timestamps (no allocation per sample).
    samples: Vec<f32>,
    timestamps: Vec<f64>,
}

/// Ends the session when the call ends, however it ends.
struct LiveGuard(Arc<Session>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.end();
        tracing::info!(session = %self.0.id, "ingest stream closed");
    }
}

impl StreamHandler {
    async fn run(
        mut self,
        mut inbound: Streaming<pb::IngestRequest>,
        replies: &mpsc::Sender<Result<pb::IngestReply, Status>>,
    ) -> Result<(), Status> {
        let header = match inbound.next().await {
            None => return Ok(()),
            Some(Err(status)) => return Err(reject_transport(status)),
            Some(Ok(pb::IngestRequest { message: Some(Message::Header(header)) })) => header,
            Some(Ok(_)) => {
                m::rejected("header_missing");
                return Err(Status::failed_precondition("the first message of an Ingest stream must be a StreamHeader"));
            }
        };
        validate_header(&header).inspect_err(|_| m::rejected("invalid_header"))?;
        let n_channels = header.channels.len();
        let rate = header.nominal_rate_hz;
        let session = self.sessions.open(header, "grpc")?;
        tracing::info!(session = %session.id, channels = n_channels, rate, "ingest stream opened");
        let _guard = LiveGuard(session.clone());
        let mut markers_accepted = 0u64;
        while let Some(message) = inbound.next().await {
            let message = message.map_err(reject_transport)?;
            let received_ns = clock::now_ns();
            let mut warnings = Vec::new();
            match message.message {
                Some(Message::Header(_)) => {
                    m::rejected("header_repeated");
                    return Err(Status::failed_precondition("StreamHeader sent twice: one header per Ingest stream"));
                }
                Some(Message::Chunk(chunk)) => {
                    self.decode_chunk(&chunk, n_channels, &mut warnings)?;
                    let timestamps = match chunk.timestamps {
                        Some(Timestamps::PerSample(_)) => ChunkTimestamps::PerSample(&self.timestamps),
                        Some(Timestamps::Regular(regular)) => ChunkTimestamps::Regular {
                            first: regular.first_seconds,
                            rate: if regular.rate_hz > 0.0 { regular.rate_hz } else { rate },
                        },
                        None => unreachable!("checked by decode_chunk"),
                    };
                    session.ingest_chunk(chunk.first_sample_index, timestamps, &self.samples, received_ns, &self.hub, &mut warnings)?;
                }
                Some(Message::Markers(markers)) => {
                    if let Some(bad) = markers.markers.iter().find(|m| !m.timestamp.is_finite()) {
                        m::rejected("invalid_marker");
                        return Err(Status::invalid_argument(format!("marker {} has a non-finite timestamp", bad.code)));
                    }
                    markers_accepted += session.ingest_markers(&markers.markers, &self.hub, &mut warnings);
                }
                None => {
                    m::rejected("empty_message");
                    return Err(Status::invalid_argument("IngestRequest carries no message"));
                }
            }
            let reply = pb::IngestReply { samples_accepted_until: session.accepted_until(), markers_accepted, warnings };
            if replies.send(Ok(reply)).await.is_err() {
                break; // the client went away
            }
        }
        Ok(())
    }

    /// Checks the chunk's shape and timestamps and decodes its samples into `self.samples`,
    /// applying the non-finite policy.
    fn decode_chunk(&mut self, chunk: &pb::SampleChunk, n_channels: usize, warnings: &mut Vec<pb::IngestWarning>) -> Result<(), Status> {
        let n = chunk.n_samples as usize;
        let expected = n * n_channels * 4;
        if chunk.samples.len() != expected {
            m::rejected("bad_length");
            return Err(Status::invalid_argument(format!(
                "chunk at sample {}: samples has {} bytes; n_samples x n_channels x 4 = {n} x {n_channels} x 4 = {expected}",
                chunk.first_sample_index,
                chunk.samples.len()
            )));
        }
        match &chunk.timestamps {
            None => {
                m::rejected("timestamps_missing");
                return Err(Status::invalid_argument(format!("chunk at sample {}: timestamps missing", chunk.first_sample_index)));
            }
            Some(Timestamps::PerSample(per_sample)) => {
                if per_sample.seconds.len() != n {
                    m::rejected("bad_timestamps");
                    return Err(Status::invalid_argument(format!(
                        "chunk at sample {}: {} timestamps for {n} samples",
                        chunk.first_sample_index,
                        per_sample.seconds.len()
                    )));
                }
                if let Some(i) = per_sample.seconds.windows(2).position(|w| !(w[1] >= w[0])) {
                    m::rejected("timestamps_backwards");
                    return Err(Status::invalid_argument(format!(
                        "chunk at sample {}: timestamps go backwards at sample {}",
                        chunk.first_sample_index,
                        chunk.first_sample_index + i as u64 + 1
                    )));
                }
                if per_sample.seconds.iter().any(|t| !t.is_finite()) {
                    m::rejected("bad_timestamps");
                    return Err(Status::invalid_argument(format!("chunk at sample {}: non-finite timestamp", chunk.first_sample_index)));
                }
                self.timestamps.clear();
                self.timestamps.extend_from_slice(&per_sample.seconds);
            }
            Some(Timestamps::Regular(regular)) => {
                if !regular.first_seconds.is_finite() || !(regular.rate_hz >= 0.0) || !regular.rate_hz.is_finite() {
                    m::rejected("bad_timestamps");
                    return Err(Status::invalid_argument(format!(
                        "chunk at sample {}: regular timestamps need a finite first_seconds and rate_hz >= 0",
                        chunk.first_sample_index
                    )));
                }
            }
        }
        self.samples.clear();
        self.samples.extend(chunk.samples.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        let non_finite = self.samples.iter().filter(|v| !v.is_finite()).count();
        if non_finite > 0 {
            metrics::counter!(m::NON_FINITE_SAMPLES).increment(non_finite as u64);
            match self.non_finite {
                NonFinitePolicy::Reject => {
                    m::rejected("non_finite");
                    return Err(Status::invalid_argument(format!(
                        "chunk at sample {}: {non_finite} non-finite sample values (policy: reject)",
                        chunk.first_sample_index
                    )));
                }
                NonFinitePolicy::ZeroFill => {
                    let first_bad = self.samples.iter().position(|v| !v.is_finite()).unwrap_or(0) / n_channels;
                    for v in self.samples.iter_mut().filter(|v| !v.is_finite()) {
                        *v = 0.0;
                    }
                    m::warning("non_finite_zero_filled");
                    warnings.push(pb::IngestWarning {
                        kind: pb::IngestWarningKind::NonFiniteZeroFilled as i32,
                        message: format!("{non_finite} non-finite values replaced by 0"),
                        sample_index: chunk.first_sample_index + first_bad as u64,
                        count: non_finite as u64,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Transport-level errors end the call with their status. tonic reports an oversized message
/// as OUT_OF_RANGE; gRPC's convention (and other implementations) is RESOURCE_EXHAUSTED.
fn reject_transport(status: Status) -> Status {
    let too_large = status.code() == tonic::Code::ResourceExhausted
        || (status.code() == tonic::Code::OutOfRange && status.message().contains("too large"));
    if too_large {
        m::rejected("too_large");
        return Status::resource_exhausted(format!(
            "message over the server's size limit (server.max_message_bytes): {}",
            status.message()
        ));
    }
    status
}

fn validate_header(header: &pb::StreamHeader) -> Result<(), Status> {
    let id = &header.session_id;
    if !crate::decode::card::is_valid_id(id) {
        return Err(Status::invalid_argument(format!("header.session_id {id:?} must be 1-128 characters of [A-Za-z0-9._-]")));
    }
    if header.channels.is_empty() {
        return Err(Status::invalid_argument("header.channels must list at least one channel"));
    }
    let mut labels = std::collections::HashSet::new();
    for channel in &header.channels {
        if channel.label.is_empty() || !labels.insert(channel.label.as_str()) {
            return Err(Status::invalid_argument(format!("header.channels: label {:?} is empty or repeated", channel.label)));
        }
    }
    if !(header.nominal_rate_hz > 0.0 && header.nominal_rate_hz.is_finite()) {
        return Err(Status::invalid_argument(format!("header.nominal_rate_hz must be > 0, got {}", header.nominal_rate_hz)));
    }
    if header.modality == pb::Modality::Unspecified as i32 || pb::Modality::try_from(header.modality).is_err() {
        return Err(Status::invalid_argument("header.modality must be EEG, MEG, SEEG or ECOG"));
    }
    Ok(())
}
