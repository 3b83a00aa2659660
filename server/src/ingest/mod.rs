//! Ingest: where samples and markers enter, through two doors that go through one stage.
//!
//! * [`grpc`]: the Ingest service, one task per call.
//! * [`lsl`]: LabStreamingLayer inlets, one thread per stream.
//! * [`validate`]: the rules both apply, to the header (limits, labels, rate, channel count) and
//!   to every chunk (shape, timestamps, the non-finite policy) and marker message.
//! * [`error`]: why ingest refused something, one type for both doors, mapped to a gRPC status
//!   at the gRPC edge and kept on the session (its warnings) by the LSL door.
//!
//! Both only validate, decode into a reused buffer and hand each message to the session's
//! worker, waiting while its queue is full (backpressure: nothing is dropped).

pub mod error;
pub mod grpc;
pub mod lsl;
pub mod validate;

pub use error::IngestError;
pub use grpc::IngestService;
