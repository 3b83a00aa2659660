//! The gRPC door: the Ingest service. One task per call; each message is validated
//! ([`super::validate`]), decoded into a reused buffer and handed to the session's worker,
//! waiting while its queue is full (the sender is slowed by HTTP/2 flow control, nothing is
//! dropped). Replies go through a bounded channel, so a client that stops reading replies is
//! slowed too instead of growing server memory. Every refusal is an [`IngestError`], turned into
//! the call's status here, at the edge.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use myelin_proto::v1::{self as pb, ingest_request::Message};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::error::IngestError;
use super::validate::{decode_chunk, screen_samples, validate_header, validate_markers};
use crate::auth::{self, Principal, audit};
use crate::clock;
use crate::metrics as m;
use crate::session::command::Chunk;
use crate::session::warnings::Warnings;
use crate::session::{Session, SessionError, SessionManager, Source};
use crate::shutdown::{Shutdown, shutting_down};

pub struct IngestService {
    pub sessions: Arc<SessionManager>,
    pub shutdown: Shutdown,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<pb::IngestReply, Status>> + Send>>;

#[tonic::async_trait]
impl pb::ingest_server::Ingest for IngestService {
    type StreamStream = ReplyStream;

    async fn stream(&self, request: Request<Streaming<pb::IngestRequest>>) -> Result<Response<ReplyStream>, Status> {
        let principal = auth::caller(&request)?;
        let inbound = request.into_inner();
        let (replies, receiver) = mpsc::channel(64);
        let (sessions, shutdown) = (self.sessions.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            if let Err(status) = run(inbound, &replies, &sessions, &principal, shutdown).await {
                tracing::info!(code = ?status.code(), message = status.message(), "ingest stream ended with an error");
                // A client that does not read its replies does not get this either; it must not
                // keep the task (and its session) alive.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), replies.send(Err(status))).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))))
    }
}

/// Ends the session when the call ends, however it ends.
struct LiveGuard(Arc<Session>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.end();
        tracing::info!(session = %self.0.id, "ingest stream closed");
    }
}

async fn run(
    inbound: Streaming<pb::IngestRequest>,
    replies: &mpsc::Sender<Result<pb::IngestReply, Status>>,
    sessions: &Arc<SessionManager>,
    principal: &Principal,
    shutdown: Shutdown,
) -> Result<(), Status> {
    let ending = shutdown.clone();
    match serve_call(inbound, replies, sessions, principal, shutdown).await {
        Ok(()) => Ok(()),
        Err(Ended::ShuttingDown) => Err(shutting_down()),
        // Sessions are ended under their streams while the server shuts down.
        Err(Ended::Refused(IngestError::Session(_))) if ending.is_triggered() => Err(shutting_down()),
        Err(Ended::Refused(error)) => Err(error.counted(Source::Grpc).into()),
    }
}

/// How a call ended early.
enum Ended {
    ShuttingDown,
    Refused(IngestError),
}

impl From<IngestError> for Ended {
    fn from(error: IngestError) -> Self {
        Ended::Refused(error)
    }
}

impl From<SessionError> for Ended {
    fn from(error: SessionError) -> Self {
        Ended::Refused(error.into())
    }
}

async fn serve_call(
    mut inbound: Streaming<pb::IngestRequest>,
    replies: &mpsc::Sender<Result<pb::IngestReply, Status>>,
    sessions: &Arc<SessionManager>,
    principal: &Principal,
    mut shutdown: Shutdown,
) -> Result<(), Ended> {
    let (limits, config) = (sessions.limits(), sessions.config());
    let idle = std::time::Duration::from_secs_f64(config.ingest_idle_timeout_s);
    let first = tokio::select! {
        biased;
        _ = shutdown.wait() => return Err(Ended::ShuttingDown),
        first = inbound.next() => first,
        _ = tokio::time::sleep(idle) => return Err(IngestError::NoHeader.into()),
    };
    let header = match first {
        None => return Ok(()),
        Some(Err(status)) => return Err(IngestError::from_transport(status).into()),
        Some(Ok(pb::IngestRequest { message: Some(Message::Header(header)) })) => header,
        Some(Ok(_)) => return Err(IngestError::HeaderMissing.into()),
    };
    validate_header(&header, limits)?;
    let (n_channels, rate) = (header.channels.len(), header.nominal_rate_hz);
    let resource = format!("session {:?}", header.session_id);
    // Opening creates the session's recording file: disk work, never on an async thread (a
    // stalled disk would hold the runtime's worker, and whatever else waits on it).
    let opening = {
        let (sessions, principal) = (sessions.clone(), principal.clone());
        tokio::task::spawn_blocking(move || sessions.open(header, Source::Grpc, &principal))
    };
    let opened = opening.await.unwrap_or_else(|e| Err(SessionError::Unavailable(format!("opening the session failed: {e}"))));
    if !matches!(opened, Err(SessionError::Refused(_))) {
        audit::record(principal, Source::Grpc.open_action(), &resource, &opened.as_ref().map_err(|e| Status::from(e.clone())));
    }
    let session = opened?;
    tracing::info!(session = %session.id, channels = n_channels, rate, "ingest stream opened");
    let _guard = LiveGuard(session.clone());
    // The header's reply: the session is this call's (a client may attach once it has it).
    if replies.send(Ok(pb::IngestReply::default())).await.is_err() {
        return Ok(());
    }
    let mut markers_accepted = 0u64;
    // Travels to the worker and back with every chunk: no allocation per chunk once grown.
    let mut chunk = Chunk::default();
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.wait() => return Err(Ended::ShuttingDown),
            next = inbound.next() => next,
            _ = tokio::time::sleep(idle) => {
                metrics::counter!(m::INGEST_IDLE_TIMEOUTS).increment(1);
                tracing::warn!(session = %session.id, samples = session.info().samples_received, "ingest stream silent for sessions.ingest_idle_timeout_s: taken for dead, session ended");
                return Err(IngestError::Idle { seconds: config.ingest_idle_timeout_s }.into());
            }
        };
        let Some(message) = next else { break };
        let message = message.map_err(IngestError::from_transport)?;
        let received_ns = clock::now_ns();
        let mut warnings = Warnings::default();
        let accepted_until = match message.message {
            Some(Message::Header(_)) => return Err(IngestError::HeaderRepeated.into()),
            Some(Message::Chunk(message)) => {
                decode_chunk(&message, n_channels, rate, config.timestamp_policy, &mut chunk)?;
                screen_samples(&mut chunk, n_channels, config.non_finite_policy, &mut warnings)?;
                chunk.received_ns = received_ns;
                let done = session.ingest(std::mem::take(&mut chunk)).await?;
                chunk = done.chunk;
                warnings.extend(done.warnings);
                done.accepted?;
                done.accepted_until
            }
            Some(Message::Markers(markers)) => {
                validate_markers(&markers.markers, limits)?;
                markers_accepted += markers.markers.len() as u64;
                let done = session.ingest_markers(markers.markers).await?;
                warnings.extend(done.warnings);
                done.accepted_until
            }
            None => return Err(IngestError::EmptyMessage.into()),
        };
        session.note_warnings(&warnings);
        let reply = pb::IngestReply { samples_accepted_until: accepted_until, markers_accepted, warnings: warnings.into_vec() };
        let sent = tokio::select! {
            biased;
            _ = shutdown.wait() => return Err(Ended::ShuttingDown),
            sent = replies.send(Ok(reply)) => sent,
        };
        if sent.is_err() {
            break; // the client went away
        }
    }
    Ok(())
}
