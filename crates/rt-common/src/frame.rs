//! Framing a connection's byte stream into packets, for the runtimes'
//! read paths (rt-smol's connection tasks, rt-std's reader threads).
//!
//! Moved here from rt-smol's `conn.rs` so both runtimes split frames the
//! same way. It decides nothing: every verdict on a frame that does not
//! decode stays with the core, which gets the original bytes back
//! ([`Next::Malformed`]) and decodes them itself (`handle_read`).

use bytes::BytesMut;
use mqtt_core::codec::{decode, parse_fixed_header, Packet, ProtocolVersion};

/// A frame copy buffer larger than this is freed after use.
const FRAME_COPY_KEEP: usize = 16 * 1024;

/// What the front of the read buffer holds.
#[derive(Debug)]
pub enum Next {
    /// Boxed: a `Packet` is ~1 KiB and travels on to the core's channel;
    /// one allocation beats copying it twice.
    Packet(Box<Packet>),
    /// An incomplete packet; the number is its full size when known.
    NeedMore(usize),
    /// Bytes from the start of a packet that does not decode.
    Malformed(BytesMut),
}

/// Decode the packet at the front of `buf`, if complete.
///
/// `decode` consumes a complete frame even when its body turns out to be
/// malformed, so the frame is copied into `frame_copy` first: on an error
/// the core gets the original bytes and decodes them itself, which keeps
/// the error's classification and the reaction (CONNACK 0x01 for an unknown
/// protocol level, DISCONNECT 0x81 for 5.0, ...) in the core. The copy is a
/// memcpy into a reused buffer; it disappears once the core can take a
/// decode error directly.
pub fn next_packet(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
    frame_copy: &mut Vec<u8>,
) -> Next {
    let header = match parse_fixed_header(buf, version) {
        Ok(Some(h)) => h,
        Ok(None) => return Next::NeedMore(0),
        // Nothing consumed: the core will see the same bytes and error.
        Err(_) => return Next::Malformed(buf.split()),
    };
    let len = header.packet_len();
    if len > max_packet_size as usize {
        return Next::Malformed(buf.split());
    }
    if buf.len() < len {
        return Next::NeedMore(len);
    }
    frame_copy.clear();
    frame_copy.extend_from_slice(&buf[..len]);
    let next = match decode(buf, version, max_packet_size) {
        Ok(Some(p)) => Next::Packet(Box::new(p)),
        // Not reachable with a complete frame; ask for more rather than guess.
        Ok(None) => Next::NeedMore(len),
        Err(_) => {
            let mut bytes = BytesMut::with_capacity(frame_copy.len() + buf.len());
            bytes.extend_from_slice(frame_copy);
            bytes.extend_from_slice(buf);
            buf.clear();
            Next::Malformed(bytes)
        }
    };
    if frame_copy.capacity() > FRAME_COPY_KEEP {
        *frame_copy = Vec::new();
    }
    next
}

/// [`next_packet`] with the per-connection state a read path keeps: the
/// version later packets are decoded with. The first packet is decoded by
/// its own protocol level (that is how `decode` treats CONNECT); if it is a
/// CONNECT, its version applies to every later packet, exactly as the core
/// does. (Anything else first is the core's to refuse.)
#[derive(Debug)]
pub struct Framer {
    version: ProtocolVersion,
    first: bool,
    max_packet_size: u32,
    frame_copy: Vec<u8>,
}

impl Framer {
    /// `max_packet_size`: the core's normalized limit
    /// (`node.broker().config().max_packet_size`).
    pub fn new(max_packet_size: u32) -> Self {
        Self {
            version: ProtocolVersion::V3_1_1,
            first: true,
            max_packet_size,
            frame_copy: Vec::new(),
        }
    }

    /// The next packet at the front of `buf` (see [`next_packet`]).
    pub fn next(&mut self, buf: &mut BytesMut) -> Next {
        let next = next_packet(
            buf,
            self.version,
            self.max_packet_size,
            &mut self.frame_copy,
        );
        if let Next::Packet(p) = &next {
            if self.first {
                self.first = false;
                if let Packet::Connect(c) = &**p {
                    self.version = c.protocol_version;
                }
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 1024;

    fn next(bytes: &[u8], version: ProtocolVersion) -> (Next, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let mut copy = Vec::new();
        let n = next_packet(&mut buf, version, MAX, &mut copy);
        (n, buf)
    }

    #[test]
    fn complete_packet_is_decoded_and_consumed() {
        let (n, rest) = next(&[0xC0, 0x00, 0xC0], ProtocolVersion::V3_1_1);
        assert!(matches!(n, Next::Packet(p) if *p == Packet::PingReq));
        assert_eq!(&rest[..], &[0xC0]);
    }

    #[test]
    fn partial_input_waits_and_reports_the_size() {
        let (n, rest) = next(&[0x30, 0x0A, 0x00], ProtocolVersion::V3_1_1);
        assert!(matches!(n, Next::NeedMore(12)));
        assert_eq!(rest.len(), 3);
        let (n, _) = next(&[0x30], ProtocolVersion::V3_1_1);
        assert!(matches!(n, Next::NeedMore(0)));
    }

    #[test]
    fn body_error_hands_back_the_whole_frame_and_what_follows() {
        // PUBLISH with a non-UTF-8 topic, then a PINGREQ.
        let bytes = [0x30, 0x05, 0x00, 0x02, 0xff, 0xfe, b'x', 0xC0, 0x00];
        let (n, rest) = next(&bytes, ProtocolVersion::V3_1_1);
        match n {
            Next::Malformed(b) => assert_eq!(&b[..], &bytes[..]),
            _ => panic!("expected Malformed"),
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn header_error_and_oversize_hand_back_the_bytes() {
        let (n, _) = next(&[0x00, 0x00], ProtocolVersion::V3_1_1);
        assert!(matches!(n, Next::Malformed(b) if b[..] == [0x00, 0x00]));
        // Remaining length 2048 > MAX: refused before the body arrives.
        let (n, _) = next(&[0x30, 0x80, 0x10], ProtocolVersion::V3_1_1);
        assert!(matches!(n, Next::Malformed(b) if b.len() == 3));
    }

    #[test]
    fn framer_takes_the_version_of_the_first_connect() {
        // 5.0 CONNECT (clean start, keep alive 0, no properties, client id "a"),
        // then a 5.0 PUBACK with a reason code, which 3.1.1 would refuse
        // (its PUBACK has remaining length 2).
        let connect = [
            0x10, 0x0E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00, 0x00, 0x00,
            0x01, b'a',
        ];
        let puback = [0x40, 0x03, 0x00, 0x01, 0x10];
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&connect);
        buf.extend_from_slice(&puback);
        let mut f = Framer::new(MAX);
        assert!(matches!(f.next(&mut buf), Next::Packet(p) if matches!(*p, Packet::Connect(_))));
        assert!(matches!(f.next(&mut buf), Next::Packet(p) if matches!(*p, Packet::PubAck(_))));
        assert!(buf.is_empty());
    }
}
