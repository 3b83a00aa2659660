//! Where a session's samples come from: the two doors of ingest.

/// The door a session's samples come through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An Ingest call (gRPC).
    Grpc,
    /// A LabStreamingLayer inlet (ConnectLsl or `lsl.sources`).
    Lsl,
}

impl Source {
    /// As listings, metrics labels and the recording name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Grpc => "grpc",
            Source::Lsl => "lsl",
        }
    }

    /// The audit trail's name of opening a session through this door.
    pub fn open_action(self) -> &'static str {
        match self {
            Source::Grpc => "open_session",
            Source::Lsl => "connect_lsl",
        }
    }
}
