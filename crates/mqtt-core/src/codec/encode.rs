//! Packet encoding. (Implementation in progress.)

use bytes::BytesMut;

use super::error::EncodeError;
use super::packet::Packet;
use super::types::ProtocolVersion;

/// The exact number of bytes [`encode`] will write for `packet`, fixed
/// header included. The broker uses it to respect a client's Maximum Packet
/// Size before encoding.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let _ = (packet, version);
    Err(EncodeError::UnsupportedInVersion("unimplemented"))
}

/// Append `packet`, encoded for `version`, to `buf`.
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let _ = (packet, version, buf);
    Err(EncodeError::UnsupportedInVersion("unimplemented"))
}
