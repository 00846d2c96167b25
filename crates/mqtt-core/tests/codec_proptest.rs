//! Property tests of the codec (strategies in `common/mod.rs`):
//! - every packet type in every version round-trips encode -> decode;
//! - decoding any byte string never panics, never consumes more than it was
//!   given, consumes nothing when it returns `Ok(None)`, and whatever it
//!   accepts re-encodes to something that decodes to the same packet;
//! - a prefix of the input decodes to "need more" or to the same result as
//!   the whole input (so TCP segmentation never changes the outcome);
//! - a valid packet split at every byte boundary decodes as it does whole,
//!   and several packets fed in random chunks decode to the same sequence;
//! - the Maximum Packet Size is exact and enforced from the fixed header.
//!
//! Case counts are tuned to keep the file well under 30 s at the test
//! profile's opt-level 1 (about 1 s on the CI machine); raise the `cases`
//! values locally for a deeper run.

mod common;

use bytes::BytesMut;
use common::{
    arb_packet, arb_packet_of, arb_version, arb_versioned_packet, encode_checked, packet_types,
    VERSIONS,
};
use mqtt_core::codec::{
    decode, encode, DecodeError, Packet, PacketType, ProtocolVersion, MAX_PACKET_SIZE,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

type Outcome = Result<Option<Packet>, DecodeError>;

/// Decode once from `input` and check the buffer contract; returns the
/// outcome and how many bytes it consumed.
fn decode_checked(input: &[u8], version: ProtocolVersion, max: u32) -> (Outcome, usize) {
    let mut buf = BytesMut::from(input);
    let outcome = decode(&mut buf, version, max);
    assert!(buf.len() <= input.len(), "buffer grew");
    let consumed = input.len() - buf.len();
    // Whatever happened, the bytes not consumed are the tail of the input.
    assert_eq!(
        &buf[..],
        &input[consumed..],
        "unconsumed bytes were altered"
    );
    match &outcome {
        Ok(None) => assert_eq!(consumed, 0, "Ok(None) must consume nothing"),
        Ok(Some(_)) => assert!(consumed >= 2, "a packet is at least 2 bytes"),
        Err(_) => {}
    }
    (outcome, consumed)
}

/// The full set of checks for one arbitrary input.
fn check_arbitrary_input(input: &[u8], version: ProtocolVersion, max: u32) {
    let (whole, consumed) = decode_checked(input, version, max);

    // Anything accepted is a packet the encoder can write back and the
    // decoder reads back unchanged (the decoder only lets valid packets in).
    if let Ok(Some(packet)) = &whole {
        let re = encode_checked(packet, version);
        let mut buf = re.clone();
        assert_eq!(
            decode(&mut buf, version, MAX_PACKET_SIZE),
            Ok(Some(packet.clone())),
            "re-encoded {re:02X?} from {:02X?}",
            &input[..consumed]
        );
        assert!(buf.is_empty());
    }

    // A prefix knows less: it needs more, or already gives the same answer.
    for cut in 0..input.len() {
        let (partial, _) = decode_checked(&input[..cut], version, max);
        if partial != Ok(None) {
            assert_eq!(
                partial, whole,
                "prefix of {cut} bytes of {input:02X?} decided differently"
            );
        }
    }
}

/// A body after a well-formed fixed header of a random type, so the
/// decoder gets past the header checks and into the packet parsers.
fn arb_framed_garbage() -> impl Strategy<Value = Vec<u8>> {
    (1..=15u8, vec(any::<u8>(), 0..48)).prop_map(|(t, body)| {
        let packet_type = PacketType::from_u8(t).expect("1..=15 are packet types");
        let flags = packet_type.required_flags().unwrap_or(0b0010); // PUBLISH QoS 1
        let mut out = vec![t << 4 | flags, body.len() as u8];
        out.extend_from_slice(&body);
        out
    })
}

/// A valid packet's bytes with one byte replaced, inserted or removed.
fn arb_mutated_packet() -> impl Strategy<Value = (ProtocolVersion, Vec<u8>)> {
    (
        arb_versioned_packet(),
        any::<prop::sample::Index>(),
        any::<u8>(),
        0..3u8,
    )
        .prop_map(|((version, packet), at, byte, how)| {
            let mut bytes = encode_checked(&packet, version).to_vec();
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => {
                    bytes.remove(i);
                }
            }
            (version, bytes)
        })
}

fn arb_max() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(MAX_PACKET_SIZE), 1 => 0..64u32]
}

proptest! {
    #![proptest_config(Config { cases: 4096, ..Config::default() })]

    #[test]
    fn arbitrary_bytes(
        input in vec(any::<u8>(), 0..40),
        version in arb_version(),
        max in arb_max(),
    ) {
        check_arbitrary_input(&input, version, max);
    }

    #[test]
    fn framed_garbage(input in arb_framed_garbage(), version in arb_version(), max in arb_max()) {
        check_arbitrary_input(&input, version, max);
    }

    #[test]
    fn mutated_valid_packets((version, input) in arb_mutated_packet()) {
        check_arbitrary_input(&input, version, MAX_PACKET_SIZE);
    }
}

/// Every packet type of every version, each with its own run so none is
/// left to chance: encode -> decode gives the packet back, consumes all of
/// it, and `encoded_len` matched what was written.
#[test]
fn every_packet_type_round_trips_in_every_version() {
    for version in VERSIONS {
        for kind in packet_types(version) {
            let mut runner = TestRunner::new(Config {
                cases: 256,
                failure_persistence: None,
                ..Config::default()
            });
            let result = runner.run(&arb_packet_of(version, kind), |packet| {
                prop_assert_eq!(packet.packet_type(), kind);
                let bytes = encode_checked(&packet, version);
                let mut buf = bytes.clone();
                let decoded = decode(&mut buf, version, MAX_PACKET_SIZE);
                prop_assert_eq!(decoded, Ok(Some(packet)), "bytes {:02X?}", &bytes[..]);
                prop_assert!(buf.is_empty());
                Ok(())
            });
            if let Err(e) = result {
                panic!("{kind} in {version}: {e}");
            }
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: 768, ..Config::default() })]

    /// Fed as a prefix first (which must be "need more" and consume
    /// nothing), then completed: the same packet as decoding it whole.
    #[test]
    fn split_at_every_byte_boundary((version, packet) in arb_versioned_packet()) {
        let bytes = encode_checked(&packet, version);
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            prop_assert_eq!(decode(&mut buf, version, MAX_PACKET_SIZE), Ok(None), "cut {}", cut);
            prop_assert_eq!(&buf[..], &bytes[..cut]);
            buf.extend_from_slice(&bytes[cut..]);
            prop_assert_eq!(
                decode(&mut buf, version, MAX_PACKET_SIZE),
                Ok(Some(packet.clone())),
                "cut {}", cut
            );
            prop_assert!(buf.is_empty());
        }
    }

    /// Several packets, concatenated and delivered in chunks of random size,
    /// decode to the same sequence, each as soon as its last byte arrives.
    #[test]
    fn concatenated_packets_in_random_chunks(
        (version, packets) in arb_version().prop_flat_map(|v| (Just(v), vec(arb_packet(v), 1..6))),
        chunks in vec(1..24usize, 1..16),
    ) {
        let mut stream = BytesMut::new();
        let mut ends = Vec::new();
        for p in &packets {
            encode(p, version, &mut stream).expect("valid packet encodes");
            ends.push(stream.len());
        }
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut decoded = Vec::new();
        for size in chunks.iter().cycle() {
            if fed == stream.len() {
                break;
            }
            let next = (fed + size).min(stream.len());
            buf.extend_from_slice(&stream[fed..next]);
            fed = next;
            while let Some(p) = decode(&mut buf, version, MAX_PACKET_SIZE).expect("valid stream") {
                decoded.push(p);
            }
            // Exactly the packets whose last byte has arrived are out.
            prop_assert_eq!(decoded.len(), ends.iter().filter(|&&e| e <= fed).count());
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, packets);
    }

    /// The Maximum Packet Size counts the whole packet: a packet of exactly
    /// the maximum decodes; one byte less rejects it from the fixed header
    /// alone, before the body arrives.
    #[test]
    fn maximum_packet_size_is_exact((version, packet) in arb_versioned_packet()) {
        let bytes = encode_checked(&packet, version);
        let len = bytes.len() as u32;
        let mut buf = bytes.clone();
        prop_assert_eq!(decode(&mut buf, version, len), Ok(Some(packet)));
        let header_len = 1 + bytes[1..].iter().position(|b| b & 0x80 == 0).expect("header") + 1;
        let mut header_only = BytesMut::from(&bytes[..header_len]);
        prop_assert_eq!(
            decode(&mut header_only, version, len - 1),
            Err(DecodeError::PacketTooLarge { size: len as usize, max: len - 1 })
        );
    }
}
