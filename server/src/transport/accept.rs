//! Accepting connections for both ports: TCP with Nagle's algorithm off, then (with `[tls]`) the
//! TLS handshake on its own task, so that a client that stalls its handshake delays nobody
//! else. Each connection carries a [`Peer`] (the verified client certificate's name) to the
//! gate.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use super::tls::{Port, TlsSettings};
use crate::auth::Peer;
use crate::metrics as m;

/// A client that has not finished its handshake by then is let go.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections accepted but not yet taken by the server; accepting waits beyond it.
const ACCEPTED_QUEUE: usize = 64;

/// TLS handshakes under way at once; accepting waits beyond them (the kernel's backlog holds the
/// rest), so clients that open connections and never finish a handshake cannot take every
/// file descriptor.
const HANDSHAKES: usize = 256;

/// One accepted connection, plaintext or TLS.
pub struct Accepted {
    io: Io,
    peer: Peer,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Starts accepting on `listener`; connections (handshaken, with `tls`) arrive on the receiver.
/// Accepting stops when the receiver is dropped.
pub fn accept(listener: TcpListener, tls: Option<Arc<TlsSettings>>, port: Port) -> mpsc::Receiver<Accepted> {
    let (sender, receiver) = mpsc::channel(ACCEPTED_QUEUE);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
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
            match &tls {
                None => {
                    if sender.send(Accepted { io: Io::Plain(stream), peer }).await.is_err() {
                        break;
                    }
                }
                Some(tls) => {
                    let Ok(permit) = handshakes.clone().acquire_owned().await else { break };
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.for_port(port));
                    let sender = sender.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let peer = Peer { certificate_cn: certificate_cn(stream.get_ref().1), ..peer };
                                let _ = sender.send(Accepted { io: Io::Tls(Box::new(stream)), peer }).await;
                            }
                            outcome => {
                                let error = match outcome {
                                    Ok(Err(error)) => error.to_string(),
                                    _ => "timed out".to_string(),
                                };
                                metrics::counter!(m::TLS_HANDSHAKE_FAILURES, "port" => port.as_str()).increment(1);
                                tracing::info!(%remote, port = port.as_str(), error, "TLS handshake failed");
                            }
                        }
                    });
                }
            }
        }
    });
    receiver
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

/// The HTTP port's side: axum takes connections from a listener.
pub struct AcceptedListener {
    receiver: mpsc::Receiver<Accepted>,
    local: std::net::SocketAddr,
}

impl AcceptedListener {
    pub fn new(receiver: mpsc::Receiver<Accepted>, local: std::net::SocketAddr) -> Self {
        Self { receiver, local }
    }
}

impl axum::serve::Listener for AcceptedListener {
    type Io = Accepted;
    type Addr = Peer;

    async fn accept(&mut self) -> (Accepted, Peer) {
        match self.receiver.recv().await {
            Some(accepted) => {
                let peer = accepted.peer.clone();
                (accepted, peer)
            }
            // The accept task stops only when this receiver goes; until then, wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer { remote: Some(self.local), certificate_cn: None })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, AcceptedListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, AcceptedListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl AsyncRead for Accepted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
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
