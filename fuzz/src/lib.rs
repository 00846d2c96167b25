//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! Each helper asserts the codec's decode contract (see
//! docs/ARCHITECTURE.md) on top of "never panics": incomplete input consumes
//! nothing, a decoded packet consumes at least one byte and never more than
//! the buffer held or the maximum packet size allows.

use bytes::BytesMut;
use mqtt_core::codec::{decode, encode, encoded_len, DecodeError, Packet, ProtocolVersion};

/// The largest packet a fuzz run accepts: the wire format's own limit, so
/// only the input's length bounds what the decoder sees.
pub const MAX_PACKET_SIZE: u32 = mqtt_core::codec::MAX_PACKET_SIZE;

/// Decode `data` as a byte stream on a connection of `version`, packet after
/// packet, until the decoder needs more input or reports an error. Returns
/// the packets decoded and the error, if one ended the stream.
pub fn decode_stream(
    data: &[u8],
    version: ProtocolVersion,
    max_packet_size: u32,
) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::from(data);
    let mut packets = Vec::new();
    loop {
        let before = buf.len();
        match decode(&mut buf, version, max_packet_size) {
            Ok(Some(packet)) => {
                let consumed = before - buf.len();
                assert!(
                    consumed > 0,
                    "decode returned {packet:?} without consuming input"
                );
                assert!(
                    consumed <= max_packet_size as usize,
                    "decoded a {consumed}-byte packet over the {max_packet_size}-byte limit"
                );
                packets.push(packet);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "incomplete input must consume nothing");
                return (packets, None);
            }
            Err(err) => {
                assert!(buf.len() <= before, "decode grew the buffer");
                if let DecodeError::PacketTooLarge { size, max } = &err {
                    assert!(*size > *max as usize, "{err}: size is within the limit");
                    assert_eq!(*max, max_packet_size, "{err}: wrong limit reported");
                }
                return (packets, Some(err));
            }
        }
    }
}

/// The decode targets: the whole input as a stream with the wire format's
/// limit, then again with a limit small enough that the first packets hit it
/// (exercising the size check that runs before the body is buffered).
pub fn fuzz_decode(data: &[u8], versions: &[ProtocolVersion]) {
    let small_limit = 2 + (data.len() as u32) / 2;
    for &version in versions {
        decode_stream(data, version, MAX_PACKET_SIZE);
        decode_stream(data, version, small_limit);
    }
}

/// Every packet that decodes must encode to exactly `encoded_len` bytes and
/// decode back, from exactly those bytes, to an equal packet.
pub fn fuzz_roundtrip(data: &[u8]) {
    for version in [
        ProtocolVersion::V3_1,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
    ] {
        let (packets, _) = decode_stream(data, version, MAX_PACKET_SIZE);
        for packet in packets {
            roundtrip(&packet, version);
        }
    }
}

fn roundtrip(packet: &Packet, stream_version: ProtocolVersion) {
    // A CONNECT is decoded by its own protocol level whatever the stream's
    // version, so it is encoded by that level too (a client sends CONNECT in
    // the version it speaks).
    let version = match packet {
        Packet::Connect(connect) => connect.protocol_version,
        _ => stream_version,
    };
    let len = encoded_len(packet, version)
        .unwrap_or_else(|e| panic!("encoded_len({version}) failed for decoded {packet:?}: {e}"));
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf)
        .unwrap_or_else(|e| panic!("encode({version}) failed for decoded {packet:?}: {e}"));
    assert_eq!(
        buf.len(),
        len,
        "encoded_len disagrees with encode for {packet:?}"
    );
    let encoded = buf.clone().freeze();
    match decode(&mut buf, stream_version, MAX_PACKET_SIZE) {
        Ok(Some(again)) => {
            assert_eq!(
                &again, packet,
                "re-decoding {encoded:02x?} changed the packet"
            );
            assert!(
                buf.is_empty(),
                "{} bytes left after re-decoding {encoded:02x?}",
                buf.len()
            );
        }
        other => panic!("re-decoding {encoded:02x?} of {packet:?} gave {other:?}"),
    }
}
