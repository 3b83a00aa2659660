//! What the cluster keeps in JetStream key-value, per session: which replica holds it, and the
//! attachments to make again if that replica stops. Protobuf (prost), like everything else
//! Myelin puts on the wire, so that replicas of neighbouring versions read each other's.

use myelin_proto::v1 as pb;

/// The value of a session's key in `<prefix>-sessions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionRecord {
    /// The replica that holds it (`cluster.replica`)...
    #[prost(string, tag = "1")]
    pub replica: String,
    /// ...and where the others reach it to forward calls (`cluster.advertise`).
    #[prost(string, tag = "2")]
    pub advertise: String,
    /// The principal that opened it.
    #[prost(string, tag = "3")]
    pub owner: String,
    /// Its stream's header, for listings on other replicas (absent while it opens).
    #[prost(message, optional, tag = "4")]
    pub header: Option<pb::StreamHeader>,
    #[prost(message, repeated, tag = "5")]
    pub attachments: Vec<AttachmentRecord>,
    /// Times it moved to another replica.
    #[prost(uint32, tag = "6")]
    pub moves: u32,
    /// The door its samples come through ("grpc", "lsl").
    #[prost(string, tag = "7")]
    pub source: String,
    /// Held by none (`replica` empty): the replica it ended on.
    #[prost(string, tag = "8")]
    pub ended_on: String,
}

/// One attachment of a session, as Attach asked for it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttachmentRecord {
    #[prost(string, tag = "1")]
    pub id: String,
    /// The principal it belongs to.
    #[prost(string, tag = "2")]
    pub owner: String,
    /// The Attach request, with the model version it decodes with now (a calibration swaps it).
    #[prost(message, optional, tag = "3")]
    pub request: Option<pb::AttachRequest>,
    /// Sequence numbers below this may have been published: a replica that makes the
    /// attachment again goes on from here. Reserved ahead in blocks ([`SEQUENCE_BLOCK`]).
    #[prost(uint64, tag = "4")]
    pub reserved: u64,
    /// Predictions published so far (for listings).
    #[prost(uint64, tag = "5")]
    pub predictions: u64,
}

/// Sequence numbers reserved at a time: the holder writes a new reservation when half of one
/// is used, a few times a second at most, so its numbering never passes what the directory says.
pub const SEQUENCE_BLOCK: u64 = 100_000;

/// The key-value key of session `id`. Session ids are [A-Za-z0-9._-]; keys may not start or end
/// with '.', nor hold "..", so dots are written "=2E" ('=' is never in an id).
pub fn key_of(session_id: &str) -> String {
    session_id.replace('.', "=2E")
}

pub fn session_of(key: &str) -> String {
    key.replace("=2E", ".")
}

pub fn encode(record: &SessionRecord) -> bytes::Bytes {
    prost::Message::encode_to_vec(record).into()
}

pub fn decode(value: &[u8]) -> Option<SessionRecord> {
    prost::Message::decode(value).ok()
}

/// The session an attachment id names (`att-<hex>@<session>`), or the id itself: the same
/// rewriting deploy/envoy/envoy.yaml does to the `myelin-route` header.
pub fn routed_session(route: &str) -> &str {
    match route.strip_prefix("att-").and_then(|rest| rest.split_once('@')) {
        Some((hex, session)) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => session,
        _ => route,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_attachment_ids_route_to_their_session() {
        for id in ["rig-1", "a.b.c", ".x.", "x..y", "A_9-z"] {
            let key = key_of(id);
            assert!(!key.starts_with('.') && !key.ends_with('.') && !key.contains(".."));
            assert_eq!(session_of(&key), id);
        }
        assert_eq!(routed_session("att-0123abcdef@rig.7"), "rig.7");
        assert_eq!(routed_session("rig-7"), "rig-7");
        assert_eq!(routed_session("att-xyz@rig"), "att-xyz@rig");
        assert_eq!(routed_session("att-@rig"), "att-@rig");
    }
}
