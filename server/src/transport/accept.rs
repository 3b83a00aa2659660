//! Accepting connections for both ports: TCP with Nagle's algorithm off, then (with `[tls]`) the
//! TLS handshake, each connection on its own task so that a client that stalls delays nobody
//! else. Each connection carries a [`Peer`] (the verified client certificate's name) to the gate.
//!
//! Connections that say nothing cannot lock others out: the accept loop never waits for them; a
//! connection must send its first byte within `server.first_byte_timeout_s` (every protocol
//! served here has the client speak first) and finish a TLS handshake within
//! `server.tls_handshake_timeout_s`; and at most `server.pending_connections` (per address
//! `server.pending_connections_per_address`) wait at once, the oldest shed for each newcomer
//! beyond that, so that a client that reconnects always gets in.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::server::TlsStream;

use super::idle::IdleTimer;
use super::tls::{Port, TlsSettings};
use crate::auth::Peer;
use crate::metrics as m;

/// Connections accepted but not yet taken by the server; accepting waits beyond it.
const ACCEPTED_QUEUE: usize = 64;

/// How connections are let in (`[server]`).
#[derive(Debug, Clone)]
pub struct AcceptSettings {
    pub first_byte: Duration,
    pub tls_handshake: Duration,
    pub pending: usize,
    pub pending_per_address: usize,
    /// Close a connection that reads and writes nothing for this long (the HTTP port).
    pub idle: Option<Duration>,
}

/// One accepted connection, plaintext or TLS.
pub struct Accepted {
    io: Io,
    peer: Peer,
    idle: Option<IdleTimer>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Starts accepting on `listener`; connections (handshaken, with `tls`) arrive on the receiver.
/// Accepting stops when the receiver is dropped.
pub fn accept(listener: TcpListener, tls: Option<Arc<TlsSettings>>, port: Port, settings: AcceptSettings) -> mpsc::Receiver<Accepted> {
    let (sender, receiver) = mpsc::channel(ACCEPTED_QUEUE);
    let pending = Arc::new(Pending::new(settings.pending, settings.pending_per_address, port));
    let settings = Arc::new(settings);
    tokio::spawn(async move {
        loop {
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(%error, port = port.as_str(), "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = sender.closed() => break,
            };
            // Predictions are small messages that must leave at once, not wait for the peer's
            // next ACK (which cost a whole chunk period, ~10 ms).
            let _ = stream.set_nodelay(true);
            let peer = Peer { remote: Some(remote), certificate_cn: None };
            let (ticket, shed) = pending.admit(remote.ip());
            let (sender, tls, settings) = (sender.clone(), tls.clone(), settings.clone());
            tokio::spawn(async move {
                let opened = tokio::select! {
                    opened = open(stream, peer, tls.as_deref(), port, &settings) => opened,
                    // A newer connection needed the place this one held without a word.
                    _ = shed => return,
                };
                drop(ticket);
                match opened {
                    Ok(accepted) => drop(sender.send(accepted).await),
                    Err(reason) => tracing::debug!(%remote, port = port.as_str(), reason, "connection closed before it was served"),
                }
            });
        }
    });
    receiver
}

/// A connection from its first byte to being ready for the server: the TLS handshake, if any.
async fn open(stream: TcpStream, peer: Peer, tls: Option<&TlsSettings>, port: Port, settings: &AcceptSettings) -> Result<Accepted, String> {
    // peek, not readable(): readiness may be reported before any byte has come.
    match tokio::time::timeout(settings.first_byte, stream.peek(&mut [0u8; 1])).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => return Err("closed before its first byte".into()),
        Err(_) => {
            metrics::counter!(m::CONNECTIONS_SHED, "port" => port.as_str(), "reason" => "first_byte_timeout").increment(1);
            return Err("no first byte within server.first_byte_timeout_s".into());
        }
    }
    let idle = settings.idle.map(IdleTimer::new);
    let Some(tls) = tls else { return Ok(Accepted { io: Io::Plain(stream), peer, idle }) };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.for_port(port));
    let error = match tokio::time::timeout(settings.tls_handshake, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let peer = Peer { certificate_cn: certificate_cn(stream.get_ref().1), ..peer };
            return Ok(Accepted { io: Io::Tls(Box::new(stream)), peer, idle });
        }
        Ok(Err(error)) => error.to_string(),
        Err(_) => "timed out (server.tls_handshake_timeout_s)".to_string(),
    };
    metrics::counter!(m::TLS_HANDSHAKE_FAILURES, "port" => port.as_str()).increment(1);
    tracing::info!(remote = ?peer.remote, port = port.as_str(), error, "TLS handshake failed");
    Err(error)
}

/// Connections accepted and not yet ready (waiting for their first byte or handshake), oldest
/// first, each with the sender whose drop sheds it.
struct Pending {
    /// The last id given, and each waiting connection: (id, address, its shedding sender).
    list: Mutex<(u64, VecDeque<Waiting>)>,
    limit: usize,
    per_address: usize,
    port: Port,
}

type Waiting = (u64, IpAddr, oneshot::Sender<()>);

/// A pending connection's place; dropping it (the connection is ready, or gone) frees it.
struct Ticket {
    pending: Arc<Pending>,
    id: u64,
}

impl Pending {
    fn new(limit: usize, per_address: usize, port: Port) -> Self {
        Self { list: Mutex::default(), limit: limit.max(1), per_address: per_address.max(1), port }
    }

    /// A place for a new connection from `address`, shedding the oldest pending connection (of
    /// that address first) when there is none; the receiver resolves when this one is shed.
    fn admit(self: &Arc<Self>, address: IpAddr) -> (Ticket, oneshot::Receiver<()>) {
        let mut guard = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        let (next, list) = &mut *guard;
        if list.iter().filter(|(_, a, _)| *a == address).count() >= self.per_address
            && let Some(oldest) = list.iter().position(|(_, a, _)| *a == address)
        {
            list.remove(oldest);
            self.shed();
        }
        if list.len() >= self.limit {
            list.pop_front();
            self.shed();
        }
        let (shed, on_shed) = oneshot::channel();
        *next += 1;
        list.push_back((*next, address, shed));
        (Ticket { pending: self.clone(), id: *next }, on_shed)
    }

    fn shed(&self) {
        metrics::counter!(m::CONNECTIONS_SHED, "port" => self.port.as_str(), "reason" => "evicted").increment(1);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut guard = self.pending.list.lock().unwrap_or_else(PoisonError::into_inner);
        guard.1.retain(|(id, _, _)| *id != self.id);
    }
}

/// The subject common name of the client certificate the handshake verified.
fn certificate_cn(connection: &rustls::ServerConnection) -> Option<Arc<str>> {
    let certificate = connection.peer_certificates()?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    parsed.subject().iter_common_name().next()?.as_str().ok().map(Arc::from)
}

impl tonic::transport::server::Connected for Accepted {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl Accepted {
    /// Who is on the other end.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl AsyncRead for Accepted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        match &mut this.idle {
            Some(idle) => idle.watch(polled, cx),
            None => polled,
        }
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        match &mut this.idle {
            Some(idle) => idle.watch(polled, cx),
            None => polled,
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        };
        match &mut this.idle {
            Some(idle) => idle.watch(polled, cx),
            None => polled,
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
