//! The ports' transport: accepting connections, TLS (rustls) with reloadable certificates, and
//! what each connection tells the gate about its peer.

mod accept;
mod idle;
mod reload;
mod tls;

pub use accept::{AcceptSettings, Accepted, accept};
pub use reload::reload_on_signal;
pub use tls::{Port, TlsSettings};
