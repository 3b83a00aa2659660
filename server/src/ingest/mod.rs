//! Ingest: where samples and markers enter. The gRPC Ingest service here, LSL inlets in [`lsl`].
//! Both only validate, decode bytes into a reused buffer and hand each message to the session's
//! worker, waiting while its queue is full (backpressure: the sender is slowed by HTTP/2 flow
//! control, nothing is dropped). One task per call; replies go through a bounded channel, so a
//! client that stops reading replies is slowed too instead of growing server memory.

pub mod lsl;
mod validate;

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use myelin_proto::v1::{self as pb, ingest_request::Message};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{self, Principal, audit};
use crate::clock;
use crate::metrics as m;
use crate::session::command::Chunk;
use crate::session::warnings::Warnings;
use crate::session::{Session, SessionError, SessionManager};
use crate::shutdown::{Shutdown, shutting_down};
use validate::{decode_chunk, reject_transport, validate_header, validate_markers};

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
    mut inbound: Streaming<pb::IngestRequest>,
    replies: &mpsc::Sender<Result<pb::IngestReply, Status>>,
    sessions: &SessionManager,
    principal: &Principal,
    mut shutdown: Shutdown,
) -> Result<(), Status> {
    let (limits, config) = (sessions.limits(), sessions.config());
    let idle = std::time::Duration::from_secs_f64(sessions.config().ingest_idle_timeout_s);
    let first = tokio::select! {
        biased;
        _ = shutdown.wait() => return Err(shutting_down()),
        first = inbound.next() => first,
        _ = tokio::time::sleep(idle) => return Err(Status::deadline_exceeded("no StreamHeader within sessions.ingest_idle_timeout_s")),
    };
    let header = match first {
        None => return Ok(()),
        Some(Err(status)) => return Err(reject_transport(status)),
        Some(Ok(pb::IngestRequest { message: Some(Message::Header(header)) })) => header,
        Some(Ok(_)) => {
            m::rejected("header_missing");
            return Err(Status::failed_precondition("the first message of an Ingest stream must be a StreamHeader"));
        }
    };
    validate_header(&header, limits).inspect_err(|_| m::rejected("invalid_header"))?;
    let (n_channels, rate) = (header.channels.len(), header.nominal_rate_hz);
    let resource = format!("session {:?}", header.session_id);
    let opened = sessions.open(header, "grpc", principal);
    if !matches!(opened, Err(SessionError::Refused(_))) {
        audit::record(principal, "open_session", &resource, &opened.as_ref().map_err(|e| Status::from(e.clone())));
    }
    let session = opened?;
    tracing::info!(session = %session.id, channels = n_channels, rate, "ingest stream opened");
    let _guard = LiveGuard(session.clone());
    let mut markers_accepted = 0u64;
    // Travels to the worker and back with every chunk: no allocation per chunk once grown.
    let mut chunk = Chunk::default();
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.wait() => return Err(shutting_down()),
            next = inbound.next() => next,
            _ = tokio::time::sleep(idle) => {
                metrics::counter!(m::INGEST_IDLE_TIMEOUTS).increment(1);
                tracing::warn!(session = %session.id, samples = session.info().samples_received, "ingest stream silent for sessions.ingest_idle_timeout_s: taken for dead, session ended");
                return Err(Status::deadline_exceeded(format!(
                    "no message for {} s (sessions.ingest_idle_timeout_s): the stream is taken for dead and its session ended",
                    config.ingest_idle_timeout_s
                )));
            }
        };
        let Some(message) = next else { break };
        let message = message.map_err(reject_transport)?;
        let received_ns = clock::now_ns();
        let mut warnings = Warnings::default();
        let accepted_until = match message.message {
            Some(Message::Header(_)) => {
                m::rejected("header_repeated");
                return Err(Status::failed_precondition("StreamHeader sent twice: one header per Ingest stream"));
            }
            Some(Message::Chunk(message)) => {
                decode_chunk(&message, n_channels, rate, config.non_finite_policy, config.timestamp_policy, &mut chunk, &mut warnings)?;
                chunk.received_ns = received_ns;
                let done = session.ingest(std::mem::take(&mut chunk)).await.map_err(|e| ended(e, &shutdown))?;
                chunk = done.chunk;
                warnings.extend(done.warnings);
                done.accepted.map_err(|e| ended(e, &shutdown))?;
                done.accepted_until
            }
            Some(Message::Markers(markers)) => {
                validate_markers(&markers.markers, limits)?;
                markers_accepted += markers.markers.len() as u64;
                let done = session.ingest_markers(markers.markers).await.map_err(|e| ended(e, &shutdown))?;
                warnings.extend(done.warnings);
                done.accepted_until
            }
            None => {
                m::rejected("empty_message");
                return Err(Status::invalid_argument("IngestRequest carries no message"));
            }
        };
        let reply = pb::IngestReply { samples_accepted_until: accepted_until, markers_accepted, warnings: warnings.into_vec() };
        let sent = tokio::select! {
            biased;
            _ = shutdown.wait() => return Err(shutting_down()),
            sent = replies.send(Ok(reply)) => sent,
        };
        if sent.is_err() {
            break; // the client went away
        }
    }
    Ok(())
}

/// A session's refusal as the call's status: while the server shuts down (sessions are ended
/// under their streams), "shutting down".
fn ended(error: SessionError, shutdown: &Shutdown) -> Status {
    if shutdown.is_triggered() { shutting_down() } else { error.into() }
}
