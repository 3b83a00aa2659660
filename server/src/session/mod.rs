//! Sessions: one per ingest stream. A [`Session`] is a handle: the stream's header, a snapshot
//! of what its worker has done, and the door to its worker ([`worker`]), which owns the rings,
//! the sample-index and marker bookkeeping and the attachments, and does all the heavy work on
//! its own thread. Ingest and control calls are [`command::Command`]s to that worker; the
//! [`registry`] knows every session by id.

pub mod attachment;
pub mod command;
mod directory;
pub mod display;
mod error;
mod handle;
mod markers;
pub mod registry;
mod snapshot;
mod source;
mod stream;
pub mod warnings;
mod worker;

pub use directory::Directory;
pub use error::SessionError;
pub use handle::Session;
pub use registry::SessionManager;
pub use source::Source;
