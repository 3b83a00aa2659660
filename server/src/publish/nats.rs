//! NATS fan-out (`[publish.nats]`): every prediction also published on a NATS server, as
//! protobuf on `<subject_prefix>.<session>.<attachment>` (and as JSON, if configured), for many
//! dashboards and downstream consumers through one broker rather than one gRPC stream each.
//!
//! Decoding never waits for NATS: predictions are taken from the hub's ring of everything by a
//! task that only moves them into a bounded queue; a second task publishes from it. A slow or
//! absent server fills the queue, and what does not fit is dropped and counted
//! (`myelin_nats_dropped_total{reason}`). The client reconnects by itself with backoff; when it
//! is back, the log says how many predictions the outage cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use myelin_proto::v1::Prediction;
use prost::Message;
use tokio::sync::{broadcast, mpsc};

use super::Hub;
use super::json::prediction_json;
use crate::config::NatsConfig;
use crate::metrics as m;
use crate::shutdown::Shutdown;

/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts the publisher (it connects in the background: the server starts whether or not NATS is
/// up). Returns once the client is made; errors only for a configuration NATS cannot use.
pub async fn start(config: NatsConfig, hub: &Hub, shutdown: Shutdown) -> anyhow::Result<()> {
    metrics::counter!(m::NATS_PUBLISHED).increment(0);
    for reason in ["disconnected", "queue_full", "lagged", "publish_failed"] {
        metrics::counter!(m::NATS_DROPPED, "reason" => reason).increment(0);
    }
    let dropped_while_down = Arc::new(AtomicU64::new(0));
    let client = connect(&config, dropped_while_down.clone()).await?;
    if !config.jetstream_stream.is_empty() {
        ensure_stream(&client, &config);
    }
    let (queue, queued) = mpsc::channel::<Arc<Prediction>>(config.queue);
    tokio::spawn(forward(hub.everything(), queue, shutdown.clone()));
    tokio::spawn(publish(client, config, queued, dropped_while_down, shutdown));
    Ok(())
}

async fn connect(config: &NatsConfig, dropped_while_down: Arc<AtomicU64>) -> anyhow::Result<async_nats::Client> {
    let servers: Vec<async_nats::ServerAddr> = config
        .url
        .split(',')
        .map(|u| u.trim().parse().map_err(|e| anyhow::anyhow!("publish.nats.url {}: {e}", redacted(u))))
        .collect::<anyhow::Result<_>>()?;
    let options = async_nats::ConnectOptions::new()
        .name("myelin")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempt| (Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(6) as u32)).min(MAX_BACKOFF))
        .client_capacity(1024)
        .event_callback(move |event| {
            let dropped = dropped_while_down.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        metrics::gauge!(m::NATS_CONNECTED).set(1.0);
                        let lost = dropped.swap(0, Ordering::Relaxed);
                        tracing::info!(predictions_dropped_while_down = lost, "NATS connected: publishing predictions");
                    }
                    async_nats::Event::Disconnected => {
                        metrics::gauge!(m::NATS_CONNECTED).set(0.0);
                        tracing::warn!("NATS disconnected: predictions queue (publish.nats.queue), then are dropped; reconnecting");
                    }
                    other => tracing::info!(event = %other, "NATS"),
                }
            }
        });
    metrics::gauge!(m::NATS_CONNECTED).set(0.0);
    Ok(options.connect(servers).await?)
}

/// Creates (or finds) the JetStream stream over the prediction subjects, in the background:
/// JetStream then keeps what core publishes put on those subjects.
fn ensure_stream(client: &async_nats::Client, config: &NatsConfig) {
    let jetstream = async_nats::jetstream::new(client.clone());
    // Bounded on the NATS server too: the oldest predictions go first.
    let stream = async_nats::jetstream::stream::Config {
        name: config.jetstream_stream.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        max_age: Duration::from_secs(config.jetstream_max_age_s),
        max_bytes: config.jetstream_max_bytes as i64,
        ..Default::default()
    };
    tokio::spawn(async move {
        loop {
            match jetstream.get_or_create_stream(stream.clone()).await {
                Ok(_) => return tracing::info!(stream = %stream.name, "JetStream stream ready for predictions"),
                Err(error) => {
                    tracing::warn!(stream = %stream.name, %error, "JetStream stream not ready yet; retrying");
                    tokio::time::sleep(MAX_BACKOFF).await;
                }
            }
        }
    });
}

/// Moves predictions from the hub into the bounded queue; never waits on the queue.
async fn forward(mut everything: broadcast::Receiver<Arc<Prediction>>, queue: mpsc::Sender<Arc<Prediction>>, mut shutdown: Shutdown) {
    let drop = |reason: &'static str, n: u64| metrics::counter!(m::NATS_DROPPED, "reason" => reason).increment(n);
    let mut closing = false;
    loop {
        // Once the server closes, every prediction is already published (sessions drain
        // first): hand on what the ring still holds, then stop.
        let next = if closing {
            match everything.try_recv() {
                Ok(p) => Ok(p),
                Err(broadcast::error::TryRecvError::Lagged(n)) => Err(broadcast::error::RecvError::Lagged(n)),
                Err(_) => return,
            }
        } else {
            tokio::select! {
                next = everything.recv() => next,
                _ = shutdown.wait_closing() => { closing = true; continue; }
            }
        };
        match next {
            Ok(prediction) => {
                if queue.try_send(prediction).is_err() {
                    drop("queue_full", 1);
                }
            }
            Err(broadcast::error::RecvError::Lagged(lost)) => drop("lagged", lost),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Publishes what the queue holds, in order.
async fn publish(
    client: async_nats::Client,
    config: NatsConfig,
    mut queued: mpsc::Receiver<Arc<Prediction>>,
    dropped_while_down: Arc<AtomicU64>,
    mut shutdown: Shutdown,
) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/x-protobuf; messageType=myelin.v1.Prediction");
    let mut closing = false;
    loop {
        let prediction = if closing {
            // Drain what is queued (the forwarder has stopped adding), then flush and go.
            match queued.try_recv() {
                Ok(p) => p,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                next = queued.recv() => match next { Some(p) => p, None => break },
                _ = shutdown.wait_closing() => { closing = true; continue; }
            }
        };
        // While the connection is down, predictions are dropped (and counted) rather than
        // buffered in the client: a consumer gets them in real time or not at all, and one
        // that must not miss any reads the JetStream stream.
        if client.connection_state() != async_nats::connection::State::Connected {
            metrics::counter!(m::NATS_DROPPED, "reason" => "disconnected").increment(1);
            dropped_while_down.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let tokens = format!("{}.{}", token(&prediction.session_id), token(&prediction.attachment_id));
        let subject = format!("{}.{tokens}", config.subject_prefix);
        let sent = client.publish_with_headers(subject, headers.clone(), Bytes::from(prediction.encode_to_vec())).await;
        let sent = match sent {
            Ok(()) if config.json => {
                client.publish(format!("{}.{tokens}", config.json_subject_prefix), Bytes::from(prediction_json(&prediction))).await
            }
            other => other,
        };
        match sent {
            Ok(()) => metrics::counter!(m::NATS_PUBLISHED).increment(1),
            Err(error) => {
                metrics::counter!(m::NATS_DROPPED, "reason" => "publish_failed").increment(1);
                tracing::debug!(%error, "NATS publish failed");
            }
        }
    }
    // What is already handed to the client goes out before the process does, if it can.
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
}

/// A NATS URL as logs show it: without user, password or token.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://<credentials>@{}", &url[..scheme], &url[at + 1..]),
        (None, Some(at)) => format!("<credentials>@{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// An id as one subject token: NATS splits subjects at '.', so a dot is written %2E (ids are
/// [A-Za-z0-9._-], so nothing else needs escaping).
fn token(id: &str) -> std::borrow::Cow<'_, str> {
    if id.contains('.') { id.replace('.', "%2E").into() } else { id.into() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_with_dots_stay_one_subject_token() {
        assert_eq!(super::token("rig-3"), "rig-3");
        assert_eq!(super::token("subject1.session2"), "subject1%2Esession2");
    }

    #[test]
    fn credentials_never_reach_the_log() {
        assert_eq!(super::redacted("nats://user:secret@nats.lab:4222"), "nats://<credentials>@nats.lab:4222");
        assert_eq!(super::redacted("tok@127.0.0.1:4222"), "<credentials>@127.0.0.1:4222");
        assert_eq!(super::redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
