//! Myelin: a real-time BCI decoding server.
//!
//! The data path is the import graph, from the top floor down: [`ingest`] (gRPC frames and LSL
//! inlets in) -> [`session`] (one worker thread per session: ring buffers, sample indices,
//! markers, attachments) -> [`dsp`] (causal filters) -> [`window`] (sliding or event-locked cuts)
//! -> [`decode`] (model input, ONNX Runtime and native decoders on dedicated threads) ->
//! [`record`] and [`publish`] (routes to subscribers, LSL outlets and recorders). Above the path:
//! [`server`] (start-up), [`app`] (the wiring, built once from the config), [`grpc`] and [`http`] (the ports), [`cluster`] (several replicas: the
//! session directory, forwarding, failover), [`attach`] and [`calibrate`]
//! (control), [`transport`] (connections, TLS). Beside it: [`auth`] (principals, scopes, audit),
//! [`config`], [`metrics`], [`clock`], [`id`], [`card`], [`ring`], [`shutdown`], [`budget`]. `server/tests/house.rs` holds the plan against the code.
#![forbid(unsafe_code)]

pub mod app;
pub mod attach;
pub mod auth;
pub mod budget;
pub mod calibrate;
pub mod card;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod decode;
pub mod demo;
pub mod dsp;
pub mod grpc;
pub mod http;
pub mod id;
pub mod ingest;
pub mod metrics;
pub mod publish;
pub mod record;
pub mod replay;
pub mod ring;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod transport;
pub mod window;
