//! Incremental packet decoding. (Implementation in progress.)

use bytes::BytesMut;

use super::error::DecodeError;
use super::packet::Packet;
use super::types::{PacketType, ProtocolVersion};

/// The fixed header of a packet (section 2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    pub packet_type: PacketType,
    /// The low 4 bits of the first byte.
    pub flags: u8,
    /// The remaining length: bytes after the fixed header.
    pub remaining_length: u32,
    /// Bytes taken by the fixed header itself (2 to 5).
    pub header_len: u8,
}

impl FixedHeader {
    /// The whole packet's size in bytes, as 5.0's Maximum Packet Size counts it.
    pub fn packet_len(&self) -> usize {
        self.header_len as usize + self.remaining_length as usize
    }
}

/// Parse the fixed header at the front of `buf` without consuming anything.
/// `Ok(None)` when more bytes are needed to know it.
pub fn parse_fixed_header(
    buf: &[u8],
    version: ProtocolVersion,
) -> Result<Option<FixedHeader>, DecodeError> {
    let _ = (buf, version);
    Err(DecodeError::ReservedPacketType(0))
}

/// Decode one packet from the front of `buf`.
///
/// `version` is the connection's negotiated version; a CONNECT is decoded
/// according to its own protocol level whatever `version` says.
/// `max_packet_size` is the largest whole packet (fixed header included) we
/// accept.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, version, max_packet_size);
    Err(DecodeError::ReservedPacketType(0))
}
