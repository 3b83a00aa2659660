//! [`IdleTimer`]: closes a connection that has read and written nothing for a while (the HTTP
//! port's idle timeout). Hand-written: hyper times out request headers, not a connection that
//! sits silent between requests over HTTP/2 or with a half-sent body, and tower's timeouts are
//! per request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub struct IdleTimer {
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl IdleTimer {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, deadline: Box::pin(tokio::time::sleep(timeout)) }
    }

    /// `polled`: an I/O poll's outcome. Progress pushes the deadline back; a poll still pending
    /// past the deadline fails with `TimedOut` (and is woken when it passes).
    pub fn watch<T>(&mut self, polled: Poll<std::io::Result<T>>, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Ready(outcome) => {
                self.deadline.as_mut().reset(Instant::now() + self.timeout);
                Poll::Ready(outcome)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connection idle for {} s", self.timeout.as_secs_f64()),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
