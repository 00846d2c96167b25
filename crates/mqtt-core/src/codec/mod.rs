//! MQTT 3.1 (level 3), 3.1.1 (level 4) and 5.0 (level 5) packet codec.
//!
//! - [`decode`] reads at most one packet from the front of a `BytesMut`.
//!   Incomplete input returns `Ok(None)` and consumes nothing; a complete
//!   packet consumes exactly its bytes; payloads, strings and binary data are
//!   zero-copy slices of the buffer.
//! - The maximum packet size is checked as soon as the fixed header is
//!   readable, before the body is buffered or anything is allocated.
//! - Validation is strict and each rule has its own [`DecodeError`] variant,
//!   which maps to a 5.0 reason code.
//! - [`encode`] writes exactly the bytes the spec shows; lengths are computed
//!   arithmetically, so the payload is copied once and never walked twice.
//!
//! Topic filter syntax beyond emptiness (wildcard placement, `$share`) is
//! checked by [`crate::topic`], because the broker answers it per filter in
//! SUBACK rather than by closing the connection.

mod decode;
mod encode;
mod error;
mod packet;
mod properties;
mod types;
mod wire;

pub use bytestring::ByteString;
pub use decode::{decode, parse_fixed_header, FixedHeader};
pub use encode::{encode, encoded_len};
pub use error::{DecodeError, EncodeError};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PubResponse, Publish, SubAck, Subscribe, UnsubAck,
    Unsubscribe, Will,
};
pub use properties::{Properties, PropertyContext, PropertyId, VARIABLE_BYTE_INTEGER_MAX};
pub use types::{
    PacketId, PacketType, ProtocolVersion, QoS, ReasonCode, RetainHandling, SubscriptionOptions,
};

/// The largest packet the wire format can describe: 268,435,455 bytes of
/// body plus a 5-byte fixed header.
pub const MAX_PACKET_SIZE: u32 = 268_435_460;
