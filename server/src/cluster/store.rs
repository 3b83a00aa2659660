//! The cluster's shared state in NATS JetStream: two key-value buckets (replicas' leases,
//! the session directory) and an object store (decoders calibrated live, so that every replica
//! can load a version fitted on another).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, kv, object_store};
use tokio::io::AsyncReadExt;

use crate::config::ClusterConfig;

pub struct Store {
    /// The connection, to tell "NATS is down" at once instead of after a request's timeout.
    client: async_nats::Client,
    /// One key per live replica, renewed four times per lease; JetStream drops a key once it
    /// is a lease old (the bucket's max_age), so a stopped replica's key disappears by itself.
    pub replicas: kv::Store,
    /// Session id -> [`super::record::SessionRecord`].
    pub sessions: kv::Store,
    /// Calibrated decoders: `<model id>/<file>` for the card and its parameters.
    pub models: object_store::ObjectStore,
}

impl Store {
    /// Connects and makes (or reuses) the buckets. Fails if NATS or JetStream is not there:
    /// a replica that cannot reach the directory must not take sessions.
    pub async fn open(config: &ClusterConfig) -> anyhow::Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("myelin {}", config.replica))
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect()
            .connect(config.nats_url.as_str())
            .await
            .with_context(|| format!("connecting to NATS at {}", crate::publish::nats::redacted(&config.nats_url)))?;
        let js = jetstream::new(client.clone());
        let prefix = &config.bucket_prefix;
        let lease = Duration::from_secs_f64(config.lease_s);
        let replicas = bucket(&js, format!("{prefix}-replicas"), lease).await?;
        let sessions = bucket(&js, format!("{prefix}-sessions"), Duration::ZERO).await?;
        let name = format!("{prefix}-models");
        let models = match js.get_object_store(&name).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config { bucket: name.clone(), ..Default::default() })
                .await
                .with_context(|| format!("creating the JetStream object store {name} (is JetStream on: nats-server -js?)"))?,
        };
        Ok(Self { client, replicas, sessions, models })
    }

    /// Whether the NATS connection is up now (it reconnects by itself when it is not).
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Puts a calibrated decoder's card and parameter file under `<id>/`.
    pub async fn upload_model(&self, id: &str, files: &[PathBuf]) -> anyhow::Result<()> {
        for file in files {
            let name = file.file_name().and_then(|n| n.to_str()).context("a model file without a name")?;
            let bytes = tokio::fs::read(file).await.with_context(|| format!("reading {}", file.display()))?;
            self.models
                .put(format!("{id}/{name}").as_str(), &mut bytes.as_slice())
                .await
                .with_context(|| format!("storing {id}/{name}"))?;
        }
        Ok(())
    }

    /// Fetches `<id>/<id>-<version>.card.toml` and the parameter file it names into `dir/<id>/`;
    /// returns the card's path.
    pub async fn download_model(&self, id: &str, version: &str, dir: &Path) -> anyhow::Result<PathBuf> {
        let folder = dir.join(id);
        tokio::fs::create_dir_all(&folder).await.with_context(|| format!("creating {}", folder.display()))?;
        let card_name = format!("{id}-{version}.card.toml");
        let card = self.fetch(&format!("{id}/{card_name}")).await?;
        let parsed: toml::Value = toml::from_str(std::str::from_utf8(&card)?).context("the stored card is not TOML")?;
        let params =
            parsed.get("native").and_then(|n| n.get("params")).and_then(|p| p.as_str()).context("the stored card names no parameters")?;
        // Only a plain file name: a card from the store must not write elsewhere.
        anyhow::ensure!(
            Path::new(params).file_name().and_then(|n| n.to_str()) == Some(params),
            "stored card's parameter file {params:?} is not a plain name"
        );
        let bytes = self.fetch(&format!("{id}/{params}")).await?;
        tokio::fs::write(folder.join(params), bytes).await?;
        let card_path = folder.join(card_name);
        tokio::fs::write(&card_path, card).await?;
        Ok(card_path)
    }

    async fn fetch(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let mut object = self.models.get(name).await.with_context(|| format!("no {name} in the model store"))?;
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).await.with_context(|| format!("reading {name} from the model store"))?;
        Ok(bytes)
    }
}

/// A key-value bucket: its stream made here with the settings async-nats's `create_key_value`
/// uses, because that call first asks for the account's info, which async-nats 0.51 cannot
/// parse from the nats-server 2.9 that Debian ships.
async fn bucket(js: &jetstream::Context, name: String, max_age: Duration) -> anyhow::Result<kv::Store> {
    let stream = jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    };
    js.get_or_create_stream(stream)
        .await
        .with_context(|| format!("creating the JetStream bucket {name} (is JetStream on: nats-server -js?)"))?;
    js.get_key_value(&name).await.with_context(|| format!("opening the JetStream bucket {name}"))
}
