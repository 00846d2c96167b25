//! Byte-exact codec vectors, derived by hand from the MQTT 3.1 (IBM, level 3
//! "MQIsdp"), 3.1.1 (OASIS, level 4) and 5.0 (OASIS, level 5) specifications.
//!
//! Every vector is written field by field with its derivation in a comment
//! and checked in both directions: `decode(bytes)` gives the packet and
//! consumes every byte, `encode(packet)` gives the bytes, and `encoded_len`
//! predicts their number. Where the wire has a second accepted form (5.0
//! short acks) or 3.x drops a field on encode, the one-way helpers say so.
//!
//! Section numbers are those of the 5.0 spec unless marked 3.1.1 or 3.1.
//! The spec lets properties come in any order (section 2.2.2.2). This
//! encoder documents its order, ascending identifier with User Properties
//! last, and the multi-property vectors follow it; the decoder is also fed
//! another order to show that any order is accepted.

mod common;

use bytes::{Bytes, BytesMut};
use common::{decode_all, encode_checked, pid};
use mqtt_core::codec::{
    decode, encode, encoded_len, parse_fixed_header, Auth, ByteString, ConnAck, Connect,
    Disconnect, EncodeError, FixedHeader, Packet, PacketType, Properties, ProtocolVersion,
    PubResponse, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe, Will, MAX_PACKET_SIZE,
};

use ProtocolVersion::{V3_1, V3_1_1, V5};

const V3: [ProtocolVersion; 2] = [V3_1, V3_1_1];
const ALL: [ProtocolVersion; 3] = [V3_1, V3_1_1, V5];

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Both directions plus `encoded_len`.
#[track_caller]
fn assert_vector(version: ProtocolVersion, bytes: &[u8], packet: Packet) {
    assert_decodes(version, bytes, &packet);
    assert_encodes(version, &packet, bytes);
}

/// `bytes` decode to `packet`, consuming exactly all of them.
#[track_caller]
fn assert_decodes(version: ProtocolVersion, bytes: &[u8], packet: &Packet) {
    let (result, rest) = decode_all(bytes, version);
    assert_eq!(
        result,
        Ok(Some(packet.clone())),
        "decode {bytes:02X?} ({version})"
    );
    assert!(
        rest.is_empty(),
        "decode left {} bytes ({version})",
        rest.len()
    );
}

/// `packet` encodes to `bytes` and `encoded_len` says so.
#[track_caller]
fn assert_encodes(version: ProtocolVersion, packet: &Packet, bytes: &[u8]) {
    let out = encode_checked(packet, version);
    assert_eq!(&out[..], bytes, "encode {packet:?} ({version})");
}

fn s(v: &str) -> ByteString {
    ByteString::from(v)
}

fn b(v: &[u8]) -> Bytes {
    Bytes::copy_from_slice(v)
}

fn props() -> Properties {
    Properties::default()
}

fn pub_response(id: u16, code: u8, properties: Properties) -> PubResponse {
    PubResponse {
        packet_id: pid(id),
        reason_code: ReasonCode(code),
        properties,
    }
}

// ---------------------------------------------------------------------------
// Remaining Length / Variable Byte Integer (5.0 section 1.5.5 table 1-1,
// 3.1.1 section 2.2.3 table 2.4)
// ---------------------------------------------------------------------------

/// The spec's table of boundary values plus its two worked examples
/// (64 -> 0x40; 321 = 65 + 2*128 -> 0xC1 0x02).
const RL_TABLE: [(u32, &[u8]); 10] = [
    (0, &[0x00]),
    (64, &[0x40]),
    (127, &[0x7F]),
    (128, &[0x80, 0x01]),
    (321, &[0xC1, 0x02]),
    (16_383, &[0xFF, 0x7F]),
    (16_384, &[0x80, 0x80, 0x01]),
    (2_097_151, &[0xFF, 0xFF, 0x7F]),
    (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
    (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
];

#[test]
fn remaining_length_table_parses() {
    for version in ALL {
        for (value, encoded) in RL_TABLE {
            // 0x30: PUBLISH (type 3), flags 0 (QoS 0).
            let mut header = vec![0x30];
            header.extend_from_slice(encoded);
            let parsed = parse_fixed_header(&header, version).expect("valid header");
            assert_eq!(
                parsed,
                Some(FixedHeader {
                    packet_type: PacketType::Publish,
                    flags: 0,
                    remaining_length: value,
                    header_len: 1 + encoded.len() as u8,
                }),
                "remaining length {value} from {encoded:02X?}"
            );
            assert_eq!(
                parsed.map(|h| h.packet_len()),
                Some(1 + encoded.len() + value as usize)
            );
            // Without its last byte the header is incomplete: not an error.
            assert_eq!(
                parse_fixed_header(&header[..header.len() - 1], version),
                Ok(None),
                "header {header:02X?} cut short"
            );
        }
    }
}

/// Encoding picks the shortest form (MQTT-1.5.5-1) at each boundary; the
/// body is a QoS 0 PUBLISH with topic "a" (0x00 0x01 'a') and a payload
/// sized to reach the boundary.
#[test]
fn remaining_length_boundaries_encode_and_decode() {
    for (value, encoded) in RL_TABLE {
        if !(3..=2_097_152).contains(&value) {
            continue; // keep allocations small; 0..3 cannot hold the topic
        }
        let packet = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: s("a"),
            packet_id: None,
            properties: props(),
            payload: Bytes::from(vec![0xA5; value as usize - 3]),
        });
        let out = encode_checked(&packet, V3_1_1);
        assert_eq!(out[0], 0x30);
        assert_eq!(
            &out[1..1 + encoded.len()],
            encoded,
            "remaining length {value}"
        );
        assert_eq!(&out[1 + encoded.len()..4 + encoded.len()], b"\x00\x01a");
        assert_eq!(out.len(), 1 + encoded.len() + value as usize);
        assert_decodes(V3_1_1, &out, &packet);
    }
}

// ---------------------------------------------------------------------------
// CONNECT (3.1 section "CONNECT", 3.1.1 section 3.1, 5.0 section 3.1)
// ---------------------------------------------------------------------------

#[test]
fn connect_v3_1_mqisdp() {
    #[rustfmt::skip]
    let bytes = [
        0x10,             // CONNECT (1 << 4), reserved flags 0
        0x11,             // remaining length 17 = 12 (variable header) + 5 (payload)
        0x00, 0x06,       // protocol name length 6
        b'M', b'Q', b'I', b's', b'd', b'p', // 3.1 protocol name "MQIsdp"
        0x03,             // protocol version 3
        0x02,             // connect flags: clean session (bit 1)
        0x00, 0x3C,       // keep alive 60 s
        0x00, 0x03, b'a', b'b', b'c', // client identifier "abc"
    ];
    let packet = Packet::Connect(Connect {
        protocol_version: V3_1,
        clean_start: true,
        keep_alive: 60,
        client_id: s("abc"),
        will: None,
        username: None,
        password: None,
        properties: props(),
    });
    assert_vector(V3_1, &bytes, packet);
}

/// The 3.1 spec's CONNECT variable header example (the one 3.1.1 figure 3.6
/// copied): "MQIsdp", version 3, flags 0xCE, keep alive 10, with a will,
/// user name and password in the payload.
#[test]
fn connect_v3_1_with_will_and_credentials() {
    #[rustfmt::skip]
    let bytes = [
        0x10,             // CONNECT
        0x1F,             // remaining length 31 = 12 + 19
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name "MQIsdp"
        0x03,             // protocol version 3
        0xCE,             // user name, password, will QoS 01, will flag, clean session
        0x00, 0x0A,       // keep alive 10
        0x00, 0x02, b'c', b'1',       // client identifier "c1"
        0x00, 0x01, b'w',             // will topic "w"
        0x00, 0x03, b'b', b'y', b'e', // will message "bye"
        0x00, 0x01, b'u',             // user name "u"
        0x00, 0x02, b'p', b'w',       // password "pw"
    ];
    let packet = Packet::Connect(Connect {
        protocol_version: V3_1,
        clean_start: true,
        keep_alive: 10,
        client_id: s("c1"),
        will: Some(Will {
            topic: s("w"),
            payload: b(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: props(),
        }),
        username: Some(s("u")),
        password: Some(b(b"pw")),
        properties: props(),
    });
    assert_vector(V3_1, &bytes, packet);
}

/// 3.1.1 figure 3.6 (3.1.2.10, CONNECT variable header non-normative
/// example): level 4, flags 0xCE
/// = user name 1, password 1, will retain 0, will QoS 01, will flag 1,
/// clean session 1, reserved 0; keep alive 10.
fn connect_v311_figure_3_6() -> (Vec<u8>, Packet) {
    #[rustfmt::skip]
    let bytes = vec![
        0x10,             // CONNECT, flags 0
        0x1D,             // remaining length 29 = 10 + 19
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x04,             // protocol level 4
        0xCE,             // 1100 1110: user, password, QoS 1 will, will, clean
        0x00, 0x0A,       // keep alive 10
        0x00, 0x02, b'c', b'1',       // client identifier "c1"
        0x00, 0x01, b'w',             // will topic "w"
        0x00, 0x03, b'b', b'y', b'e', // will message "bye" (2-byte length + bytes)
        0x00, 0x01, b'u',             // user name "u"
        0x00, 0x02, b'p', b'w',       // password "pw"
    ];
    let packet = Packet::Connect(Connect {
        protocol_version: V3_1_1,
        clean_start: true,
        keep_alive: 10,
        client_id: s("c1"),
        will: Some(Will {
            topic: s("w"),
            payload: b(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: props(),
        }),
        username: Some(s("u")),
        password: Some(b(b"pw")),
        properties: props(),
    });
    (bytes, packet)
}

#[test]
fn connect_v3_1_1_spec_example() {
    let (bytes, packet) = connect_v311_figure_3_6();
    assert_vector(V3_1_1, &bytes, packet);
}

/// Zero-length client identifier (3.1.1 MQTT-3.1.3-6) with clean session
/// (MQTT-3.1.3-7), keep alive 0.
#[test]
fn connect_v3_1_1_minimal() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x0C,       // CONNECT, remaining length 12 = 10 + 2
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, // "MQTT" level 4
        0x02,             // clean session
        0x00, 0x00,       // keep alive 0 (disabled)
        0x00, 0x00,       // client identifier "" (length 0)
    ];
    let packet = Packet::Connect(Connect {
        protocol_version: V3_1_1,
        clean_start: true,
        keep_alive: 0,
        client_id: s(""),
        will: None,
        username: None,
        password: None,
        properties: props(),
    });
    assert_vector(V3_1_1, &bytes, packet);
}

/// Will retain + will QoS 2, empty will message, and the UTF-8 example of
/// 3.1.1 figure 1.1 (5.0 figure 1-1)
/// "A\u{2A6D4}" (0x41 0xF0 0xAA 0x9B 0x94) as client id.
#[test]
fn connect_v3_1_1_will_qos2_retain_utf8_client_id() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x19,       // CONNECT, remaining length 25 = 10 + 7 + 3 + 2 + 3
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04,
        0xB4,             // 1011 0100: user name (bit 7), will retain (bit 5),
                          // will QoS 10 (bits 4-3), will flag (bit 2), clean session 0
        0xFF, 0xFF,       // keep alive 65535
        0x00, 0x05, 0x41, 0xF0, 0xAA, 0x9B, 0x94, // client id: U+0041 U+2A6D4 (spec figure 1.1)
        0x00, 0x01, b't', // will topic "t"
        0x00, 0x00,       // will message: zero bytes
        0x00, 0x01, b'u', // user name "u"
    ];
    let packet = Packet::Connect(Connect {
        protocol_version: V3_1_1,
        clean_start: false,
        keep_alive: 0xFFFF,
        client_id: s("A\u{2A6D4}"),
        will: Some(Will {
            topic: s("t"),
            payload: Bytes::new(),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: props(),
        }),
        username: Some(s("u")),
        password: None,
        properties: props(),
    });
    assert_vector(V3_1_1, &bytes, packet);
}

/// The 5.0 CONNECT Variable Header non-normative example (end of 3.1.2):
/// level 5, flags 0xCE,
/// keep alive 10, properties length 5 holding Session Expiry Interval
/// (identifier 17 = 0x11) = 10.
#[test]
fn connect_v5_spec_example_with_will_properties() {
    #[rustfmt::skip]
    let bytes = [
        0x10,             // CONNECT
        0x29,             // remaining length 41 = 16 (variable header) + 25 (payload)
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x05,             // protocol version 5
        0xCE,             // user, password, will QoS 1, will flag, clean start
        0x00, 0x0A,       // keep alive 10
        0x05,             // property length 5
        0x11, 0x00, 0x00, 0x00, 0x0A, // session expiry interval (0x11) = 10
        0x00, 0x02, b'c', b'1',       // client identifier "c1"
        0x05,             // will property length 5
        0x18, 0x00, 0x00, 0x00, 0x1E, // will delay interval (0x18) = 30
        0x00, 0x01, b'w',             // will topic "w"
        0x00, 0x03, b'b', b'y', b'e', // will payload "bye"
        0x00, 0x01, b'u',             // user name "u"
        0x00, 0x02, b'p', b'w',       // password "pw"
    ];
    let packet = Packet::Connect(Connect {
        protocol_version: V5,
        clean_start: true,
        keep_alive: 10,
        client_id: s("c1"),
        will: Some(Will {
            topic: s("w"),
            payload: b(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties {
                will_delay_interval: Some(30),
                ..props()
            },
        }),
        username: Some(s("u")),
        password: Some(b(b"pw")),
        properties: Properties {
            session_expiry_interval: Some(10),
            ..props()
        },
    });
    assert_vector(V5, &bytes, packet);
}

/// 5.0 allows a password without a user name (section 3.1.2.9).
#[test]
fn connect_v5_password_without_username_and_several_properties() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x1F,       // CONNECT, remaining length 31 = 26 + 5
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05,
        0x42,             // password flag (bit 6), clean start (bit 1); no user name
        0x00, 0x3C,       // keep alive 60
        0x0F,             // property length 15 = 3 + 7 + 5
        0x21, 0x00, 0x14, // receive maximum (0x21) = 20
        0x27, 0x00, 0x00, 0x04, 0x00, // maximum packet size (0x27) = 1024
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property (0x26) "k" = "v"
        0x00, 0x00,       // client identifier ""
        0x00, 0x01, b'p', // password "p"
    ];
    let packet = Packet::Connect(Connect {
        protocol_version: V5,
        clean_start: true,
        keep_alive: 60,
        client_id: s(""),
        will: None,
        username: None,
        password: Some(b(b"p")),
        properties: Properties {
            receive_maximum: Some(20),
            user_properties: vec![(s("k"), s("v"))],
            maximum_packet_size: Some(1024),
            ..props()
        },
    });
    assert_vector(V5, &bytes, packet.clone());
    // Any property order decodes the same: user property first, then
    // maximum packet size, then receive maximum.
    let mut reordered = bytes[..13].to_vec();
    reordered.extend_from_slice(&bytes[21..28]); // user property
    reordered.extend_from_slice(&bytes[16..21]); // maximum packet size
    reordered.extend_from_slice(&bytes[13..16]); // receive maximum
    reordered.extend_from_slice(&bytes[28..]);
    assert_eq!(reordered.len(), bytes.len());
    assert_decodes(V5, &reordered, &packet);
}

/// A CONNECT is decoded by its own protocol level, whatever version the
/// connection assumes (it is the packet that negotiates the version).
#[test]
fn connect_is_decoded_by_its_own_level() {
    let (bytes, packet) = connect_v311_figure_3_6();
    assert_decodes(V5, &bytes, &packet);
    assert_decodes(V3_1, &bytes, &packet);

    #[rustfmt::skip]
    let v5 = [
        0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00,
        0x00,             // property length 0
        0x00, 0x00,       // client identifier ""
    ];
    let packet = Packet::Connect(Connect {
        protocol_version: V5,
        clean_start: true,
        keep_alive: 0,
        client_id: s(""),
        will: None,
        username: None,
        password: None,
        properties: props(),
    });
    assert_decodes(V3_1_1, &v5, &packet);
    assert_decodes(V3_1, &v5, &packet);
    assert_vector(V5, &v5, packet);
}

// ---------------------------------------------------------------------------
// CONNACK (3.1.1 section 3.2, 5.0 section 3.2)
// ---------------------------------------------------------------------------

#[test]
fn connack_v3_accepted() {
    // 3.1: byte 3 is reserved (topic name compression), 0; return code 0.
    // 3.1.1: acknowledge flags 0x01 = Session Present; return code 0.
    let cases = [
        (V3_1, [0x20, 0x02, 0x00, 0x00], false),
        (V3_1_1, [0x20, 0x02, 0x00, 0x00], false),
        (V3_1_1, [0x20, 0x02, 0x01, 0x00], true),
    ];
    for (version, bytes, session_present) in cases {
        let packet = Packet::ConnAck(ConnAck {
            session_present,
            reason_code: ReasonCode::SUCCESS,
            properties: props(),
        });
        assert_vector(version, &bytes, packet);
    }
}

/// 3.1.1 table 3.1: return codes 0-5 and the 5.0 reason codes they map to.
#[test]
fn connack_v3_return_codes() {
    let table = [
        (0x00, ReasonCode::SUCCESS),
        (0x01, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION), // unacceptable protocol version
        (0x02, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),  // identifier rejected
        (0x03, ReasonCode::SERVER_UNAVAILABLE),           // server unavailable
        (0x04, ReasonCode::BAD_USER_NAME_OR_PASSWORD),    // bad user name or password
        (0x05, ReasonCode::NOT_AUTHORIZED),               // not authorized
    ];
    for version in V3 {
        for (code, reason_code) in table {
            let packet = Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code,
                properties: props(),
            });
            assert_vector(version, &[0x20, 0x02, 0x00, code], packet);
        }
    }
}

/// 5.0 codes without a 3.x twin are written via `to_v3_connack_code`.
#[test]
fn connack_v3_encodes_v5_only_codes_mapped() {
    for (reason, code) in [
        (ReasonCode::BANNED, 0x05),
        (ReasonCode::SERVER_BUSY, 0x03),
        (ReasonCode::UNSPECIFIED_ERROR, 0x03),
    ] {
        let packet = Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: reason,
            properties: props(),
        });
        assert_encodes(V3_1_1, &packet, &[0x20, 0x02, 0x00, code]);
    }
}

#[test]
fn connack_v5() {
    // Success, no properties: property length 0 is still present (3.2.2.3.1).
    assert_vector(
        V5,
        &[0x20, 0x03, 0x00, 0x00, 0x00],
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: ReasonCode::SUCCESS,
            properties: props(),
        }),
    );
    // Refusal 0x87 Not authorized.
    assert_vector(
        V5,
        &[0x20, 0x03, 0x00, 0x87, 0x00],
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: ReasonCode::NOT_AUTHORIZED,
            properties: props(),
        }),
    );
    #[rustfmt::skip]
    let bytes = [
        0x20, 0x10,       // CONNACK, remaining length 16 = 1 + 1 + 1 + 13
        0x01,             // Session Present
        0x00,             // reason code Success
        0x0D,             // property length 13 = 6 + 3 + 2 + 2
        0x12, 0x00, 0x03, b'c', b'i', b'd', // assigned client identifier (0x12) "cid"
        0x22, 0x00, 0x0A, // topic alias maximum (0x22) = 10
        0x24, 0x01,       // maximum QoS (0x24) = 1
        0x25, 0x00,       // retain available (0x25) = 0
    ];
    assert_vector(
        V5,
        &bytes,
        Packet::ConnAck(ConnAck {
            session_present: true,
            reason_code: ReasonCode::SUCCESS,
            properties: Properties {
                assigned_client_identifier: Some(s("cid")),
                topic_alias_maximum: Some(10),
                maximum_qos: Some(QoS::AtLeastOnce),
                retain_available: Some(false),
                ..props()
            },
        }),
    );
}

// ---------------------------------------------------------------------------
// PUBLISH (3.1.1 section 3.3, 5.0 section 3.3)
// ---------------------------------------------------------------------------

fn publish(
    dup: bool,
    qos: QoS,
    retain: bool,
    topic: &str,
    id: Option<u16>,
    properties: Properties,
    payload: &[u8],
) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos,
        retain,
        topic: s(topic),
        packet_id: id.map(pid),
        properties,
        payload: b(payload),
    })
}

#[test]
fn publish_v3() {
    for version in V3 {
        // QoS 0: no packet identifier (MQTT-2.3.1-5).
        #[rustfmt::skip]
        let qos0 = [
            0x30,             // PUBLISH, DUP 0, QoS 00, RETAIN 0
            0x07,             // remaining length 7 = 5 + 2
            0x00, 0x03, b'a', b'/', b'b', // topic name "a/b"
            b'h', b'i',       // payload "hi" (to the end of the packet)
        ];
        assert_vector(
            version,
            &qos0,
            publish(false, QoS::AtMostOnce, false, "a/b", None, props(), b"hi"),
        );
        // The 3.1.1 PUBLISH variable header non-normative example (3.3.2.3):
        // topic "a/b", packet identifier 10.
        #[rustfmt::skip]
        let qos1 = [
            0x3B,             // PUBLISH, DUP 1 (bit 3), QoS 01 (bits 2-1), RETAIN 1 (bit 0)
            0x07,             // remaining length 7 = 5 + 2 + 0
            0x00, 0x03, b'a', b'/', b'b', // topic name "a/b"
            0x00, 0x0A,       // packet identifier 10
        ]; // empty payload
        assert_vector(
            version,
            &qos1,
            publish(true, QoS::AtLeastOnce, true, "a/b", Some(10), props(), b""),
        );
        #[rustfmt::skip]
        let qos2 = [
            0x34,             // PUBLISH, QoS 10
            0x0A,             // remaining length 10 = 5 + 2 + 3
            0x00, 0x03, b'a', b'/', b'b',
            0x12, 0x34,       // packet identifier 0x1234
            0x01, 0x02, 0x03, // payload
        ];
        assert_vector(
            version,
            &qos2,
            publish(
                false,
                QoS::ExactlyOnce,
                false,
                "a/b",
                Some(0x1234),
                props(),
                &[1, 2, 3],
            ),
        );
    }
}

/// A leading 0xEF 0xBB 0xBF is U+FEFF and is kept (MQTT-1.5.4-3 / 3.1.1 MQTT-1.5.3-3).
#[test]
fn publish_topic_keeps_bom() {
    for version in ALL {
        // PUBLISH QoS 0, topic length 4: EF BB BF 'a'; 5.0 adds property length 0.
        let bytes: &[u8] = if version.is_v5() {
            &[0x30, 0x07, 0x00, 0x04, 0xEF, 0xBB, 0xBF, b'a', 0x00]
        } else {
            &[0x30, 0x06, 0x00, 0x04, 0xEF, 0xBB, 0xBF, b'a']
        };
        assert_vector(
            version,
            bytes,
            publish(
                false,
                QoS::AtMostOnce,
                false,
                "\u{FEFF}a",
                None,
                props(),
                b"",
            ),
        );
    }
}

#[test]
fn publish_v5() {
    #[rustfmt::skip]
    let qos1 = [
        0x32,             // PUBLISH, QoS 01
        0x0F,             // remaining length 15 = 5 + 2 + 1 + 5 + 2
        0x00, 0x03, b'a', b'/', b'b', // topic name "a/b"
        0x00, 0x01,       // packet identifier 1
        0x05,             // property length 5
        0x01, 0x01,       // payload format indicator (0x01) = 1 (UTF-8)
        0x23, 0x00, 0x05, // topic alias (0x23) = 5
        b'h', b'i',       // payload
    ];
    assert_vector(
        V5,
        &qos1,
        publish(
            false,
            QoS::AtLeastOnce,
            false,
            "a/b",
            Some(1),
            Properties {
                payload_format_indicator: Some(true),
                topic_alias: Some(5),
                ..props()
            },
            b"hi",
        ),
    );

    // Empty topic name with a Topic Alias (section 3.3.2.1).
    #[rustfmt::skip]
    let alias_only = [
        0x30, 0x07,       // PUBLISH QoS 0, remaining length 7 = 2 + 1 + 3 + 1
        0x00, 0x00,       // topic name "" (length 0)
        0x03,             // property length 3
        0x23, 0x00, 0x07, // topic alias = 7
        b'x',             // payload
    ];
    assert_vector(
        V5,
        &alias_only,
        publish(
            false,
            QoS::AtMostOnce,
            false,
            "",
            None,
            Properties {
                topic_alias: Some(7),
                ..props()
            },
            b"x",
        ),
    );

    // Several Subscription Identifiers (section 3.3.2.3.8) and a user property.
    #[rustfmt::skip]
    let sub_ids = [
        0x30, 0x10,       // PUBLISH QoS 0, remaining length 16 = 3 + 1 + 12
        0x00, 0x01, b't', // topic name "t"
        0x0C,             // property length 12 = 2 + 3 + 7
        0x0B, 0x01,       // subscription identifier (0x0B) = 1 (variable byte integer)
        0x0B, 0x80, 0x01, // subscription identifier = 128 (0x80 0x01, table 1-1)
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property "k" = "v"
    ]; // empty payload
    assert_vector(
        V5,
        &sub_ids,
        publish(
            false,
            QoS::AtMostOnce,
            false,
            "t",
            None,
            Properties {
                subscription_identifiers: vec![1, 128],
                user_properties: vec![(s("k"), s("v"))],
                ..props()
            },
            b"",
        ),
    );

    // No properties: the property length byte 0 is still present.
    assert_vector(
        V5,
        &[0x31, 0x04, 0x00, 0x01, b't', 0x00],
        publish(false, QoS::AtMostOnce, true, "t", None, props(), b""),
    );
}

// ---------------------------------------------------------------------------
// PUBACK, PUBREC, PUBREL, PUBCOMP (sections 3.4 - 3.7)
// ---------------------------------------------------------------------------

/// Wraps a [`PubResponse`] as one of the four packet kinds.
type MakePubResponse = fn(PubResponse) -> Packet;

/// (first byte, constructor) of the four responses; PUBREL's flags are 0010
/// (MQTT-3.6.1-1).
fn pub_kinds() -> [(u8, MakePubResponse); 4] {
    [
        (0x40, Packet::PubAck),
        (0x50, Packet::PubRec),
        (0x62, Packet::PubRel),
        (0x70, Packet::PubComp),
    ]
}

#[test]
fn pub_responses_v3() {
    for version in V3 {
        for (first, make) in pub_kinds() {
            // first byte, remaining length 2, packet identifier 10
            assert_vector(
                version,
                &[first, 0x02, 0x00, 0x0A],
                make(PubResponse::new(pid(10))),
            );
            // 3.x has no reason code or properties: they are not written.
            let lossy = make(pub_response(
                10,
                0x80,
                Properties {
                    reason_string: Some(s("x")),
                    ..props()
                },
            ));
            assert_encodes(version, &lossy, &[first, 0x02, 0x00, 0x0A]);
        }
    }
}

#[test]
fn pub_responses_v5() {
    for (first, make) in pub_kinds() {
        // Success and no properties: remaining length 2, the short form
        // (section 3.4.2.1 and its PUBREC/PUBREL/PUBCOMP twins).
        assert_vector(
            V5,
            &[first, 0x02, 0x00, 0x0A],
            make(PubResponse::new(pid(10))),
        );
        // The long form of the same is accepted too.
        assert_decodes(
            V5,
            &[first, 0x04, 0x00, 0x0A, 0x00, 0x00],
            &make(PubResponse::new(pid(10))),
        );
    }
    // Reason code, no properties: "If the Remaining Length is less than 4
    // there is no Property Length and the value of 0 is used" (3.4.2.2.1).
    assert_decodes(
        V5,
        &[0x40, 0x03, 0x00, 0x0A, 0x10],
        &Packet::PubAck(pub_response(10, 0x10, props())),
    );
    // The encoder writes the property length whenever the code is not Success.
    assert_vector(
        V5,
        &[0x40, 0x04, 0x00, 0x0A, 0x10, 0x00],
        Packet::PubAck(pub_response(10, 0x10, props())),
    );
    assert_vector(
        V5,
        &[0x62, 0x04, 0x00, 0x0A, 0x92, 0x00], // PUBREL 0x92 Packet Identifier not found
        Packet::PubRel(pub_response(10, 0x92, props())),
    );
    #[rustfmt::skip]
    let pubrec = [
        0x50, 0x0A,       // PUBREC, remaining length 10 = 2 + 1 + 1 + 6
        0x00, 0x0A,       // packet identifier 10
        0x80,             // Unspecified error
        0x06,             // property length 6
        0x1F, 0x00, 0x03, b'b', b'a', b'd', // reason string (0x1F) "bad"
    ];
    assert_vector(
        V5,
        &pubrec,
        Packet::PubRec(pub_response(
            10,
            0x80,
            Properties {
                reason_string: Some(s("bad")),
                ..props()
            },
        )),
    );
    // Success with a property must use the long form.
    assert_vector(
        V5,
        &[0x70, 0x08, 0x00, 0x0A, 0x00, 0x04, 0x1F, 0x00, 0x01, b'x'],
        Packet::PubComp(pub_response(
            10,
            0x00,
            Properties {
                reason_string: Some(s("x")),
                ..props()
            },
        )),
    );
}

// ---------------------------------------------------------------------------
// SUBSCRIBE (3.1.1 section 3.8, 5.0 section 3.8)
// ---------------------------------------------------------------------------

#[test]
fn subscribe_v3() {
    for version in V3 {
        // Topics of the 3.1.1 SUBSCRIBE payload non-normative example (3.8.3.1):
        // "a/b" QoS 1, "c/d" QoS 2.
        #[rustfmt::skip]
        let bytes = [
            0x82,             // SUBSCRIBE, reserved flags 0010 (MQTT-3.8.1-1)
            0x0E,             // remaining length 14 = 2 + 6 + 6
            0x00, 0x0A,       // packet identifier 10
            0x00, 0x03, b'a', b'/', b'b', 0x01, // "a/b", requested QoS 1
            0x00, 0x03, b'c', b'/', b'd', 0x02, // "c/d", requested QoS 2
        ];
        let packet = Packet::Subscribe(Subscribe {
            packet_id: pid(10),
            filters: vec![
                (s("a/b"), SubscriptionOptions::new(QoS::AtLeastOnce)),
                (s("c/d"), SubscriptionOptions::new(QoS::ExactlyOnce)),
            ],
            properties: props(),
        });
        assert_vector(version, &bytes, packet);
    }
}

#[test]
fn subscribe_v5() {
    #[rustfmt::skip]
    let bytes = [
        0x82, 0x0B,       // SUBSCRIBE, remaining length 11 = 2 + 1 + 2 + 6
        0x00, 0x0A,       // packet identifier 10
        0x02,             // property length 2
        0x0B, 0x05,       // subscription identifier = 5
        0x00, 0x03, b'a', b'/', b'+', // topic filter "a/+"
        0x2D,             // 0010 1101: retain handling 2, RAP 1, NL 1, QoS 01 (3.8.3.1)
    ];
    let packet = Packet::Subscribe(Subscribe {
        packet_id: pid(10),
        filters: vec![(
            s("a/+"),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        )],
        properties: Properties {
            subscription_identifiers: vec![5],
            ..props()
        },
    });
    assert_vector(V5, &bytes, packet);

    #[rustfmt::skip]
    let bytes = [
        0x82, 0x0B,       // remaining length 11 = 2 + 1 + 4 + 4
        0x00, 0x0B,       // packet identifier 11
        0x00,             // property length 0
        0x00, 0x01, b'#', 0x10, // "#": retain handling 1 (bits 5-4 = 01), QoS 0
        0x00, 0x01, b'a', 0x08, // "a": retain as published (bit 3), QoS 0
    ];
    let packet = Packet::Subscribe(Subscribe {
        packet_id: pid(11),
        filters: vec![
            (
                s("#"),
                SubscriptionOptions {
                    retain_handling: RetainHandling::SendIfNew,
                    ..SubscriptionOptions::new(QoS::AtMostOnce)
                },
            ),
            (
                s("a"),
                SubscriptionOptions {
                    retain_as_published: true,
                    ..SubscriptionOptions::new(QoS::AtMostOnce)
                },
            ),
        ],
        properties: props(),
    });
    assert_vector(V5, &bytes, packet);
}

// ---------------------------------------------------------------------------
// SUBACK (3.1.1 section 3.9, 5.0 section 3.9)
// ---------------------------------------------------------------------------

fn suback(id: u16, codes: &[u8], properties: Properties) -> Packet {
    Packet::SubAck(SubAck {
        packet_id: pid(id),
        reason_codes: codes.iter().copied().map(ReasonCode).collect(),
        properties,
    })
}

#[test]
fn suback_v3() {
    for version in V3 {
        // 3.1.1 3.9.3 return codes: success QoS 0, 1, 2 and failure 0x80.
        assert_vector(
            version,
            &[0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x02, 0x80],
            suback(10, &[0x00, 0x01, 0x02, 0x80], props()),
        );
        // 5.0 failure codes become the one 3.x failure code 0x80.
        assert_encodes(
            version,
            &suback(10, &[0x01, 0x87, 0x8F, 0xA2], props()),
            &[0x90, 0x06, 0x00, 0x0A, 0x01, 0x80, 0x80, 0x80],
        );
    }
}

#[test]
fn suback_v5() {
    #[rustfmt::skip]
    let bytes = [
        0x90, 0x06,       // SUBACK, remaining length 6 = 2 + 1 + 3
        0x00, 0x0A,       // packet identifier 10
        0x00,             // property length 0
        0x01, 0x87, 0xA2, // Granted QoS 1, Not authorized, Wildcard Subscriptions not supported
    ];
    assert_vector(V5, &bytes, suback(10, &[0x01, 0x87, 0xA2], props()));
    #[rustfmt::skip]
    let bytes = [
        0x90, 0x08,       // remaining length 8 = 2 + 1 + 4 + 1
        0x00, 0x0A,
        0x04, 0x1F, 0x00, 0x01, b'x', // property length 4: reason string "x"
        0x00,             // Granted QoS 0
    ];
    let properties = Properties {
        reason_string: Some(s("x")),
        ..props()
    };
    assert_vector(V5, &bytes, suback(10, &[0x00], properties));
}

// ---------------------------------------------------------------------------
// UNSUBSCRIBE (3.1.1 section 3.10, 5.0 section 3.10)
// ---------------------------------------------------------------------------

#[test]
fn unsubscribe_v3() {
    for version in V3 {
        // The 3.1.1 UNSUBSCRIBE payload non-normative example (3.10.3.1): "a/b", "c/d".
        #[rustfmt::skip]
        let bytes = [
            0xA2,             // UNSUBSCRIBE, reserved flags 0010 (MQTT-3.10.1-1)
            0x0C,             // remaining length 12 = 2 + 5 + 5
            0x00, 0x0A,       // packet identifier 10
            0x00, 0x03, b'a', b'/', b'b',
            0x00, 0x03, b'c', b'/', b'd',
        ];
        let packet = Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(10),
            filters: vec![s("a/b"), s("c/d")],
            properties: props(),
        });
        assert_vector(version, &bytes, packet);
    }
}

#[test]
fn unsubscribe_v5() {
    assert_vector(
        V5,
        // remaining length 8 = 2 + 1 (property length 0) + 5
        &[0xA2, 0x08, 0x00, 0x0A, 0x00, 0x00, 0x03, b'a', b'/', b'b'],
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(10),
            filters: vec![s("a/b")],
            properties: props(),
        }),
    );
    #[rustfmt::skip]
    let bytes = [
        0xA2, 0x0F,       // remaining length 15 = 2 + 1 + 7 + 5
        0x00, 0x0A,
        0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property "k" = "v"
        0x00, 0x03, b'a', b'/', b'b',
    ];
    assert_vector(
        V5,
        &bytes,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(10),
            filters: vec![s("a/b")],
            properties: Properties {
                user_properties: vec![(s("k"), s("v"))],
                ..props()
            },
        }),
    );
}

/// MQTT 3.1 sets DUP when it re-sends a PUBREL, SUBSCRIBE or UNSUBSCRIBE
/// ("This flag is set when the client or server attempts to re-deliver a
/// PUBLISH, PUBREL, SUBSCRIBE or UNSUBSCRIBE message", 3.1 section 2.1);
/// 3.1.1 made the bit reserved (see codec_malformed.rs). The packet is the
/// same; the encoder never sets DUP on these, as 3.1.1 and 5.0 forbid it.
#[test]
fn v3_1_resent_pubrel_subscribe_unsubscribe_carry_dup() {
    #[rustfmt::skip]
    let cases: [(&[u8], &[u8], Packet); 3] = [
        (
            &[0x6A, 0x02, 0x00, 0x0A], // PUBREL: DUP (bit 3) + QoS 1 (bits 2-1)
            &[0x62, 0x02, 0x00, 0x0A],
            Packet::PubRel(PubResponse::new(pid(10))),
        ),
        (
            &[0x8A, 0x06, 0x00, 0x0A, 0x00, 0x01, b'a', 0x01], // SUBSCRIBE, DUP + QoS 1
            &[0x82, 0x06, 0x00, 0x0A, 0x00, 0x01, b'a', 0x01],
            Packet::Subscribe(Subscribe {
                packet_id: pid(10),
                filters: vec![(s("a"), SubscriptionOptions::new(QoS::AtLeastOnce))],
                properties: props(),
            }),
        ),
        (
            &[0xAA, 0x05, 0x00, 0x0A, 0x00, 0x01, b'a'], // UNSUBSCRIBE, DUP + QoS 1
            &[0xA2, 0x05, 0x00, 0x0A, 0x00, 0x01, b'a'],
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(10),
                filters: vec![s("a")],
                properties: props(),
            }),
        ),
    ];
    for (resent, first, packet) in cases {
        assert_decodes(V3_1, resent, &packet);
        assert_vector(V3_1, first, packet);
    }
}

// ---------------------------------------------------------------------------
// UNSUBACK (3.1.1 section 3.11, 5.0 section 3.11)
// ---------------------------------------------------------------------------

#[test]
fn unsuback() {
    for version in V3 {
        // 3.1.1: packet identifier only, no payload.
        let packet = Packet::UnsubAck(UnsubAck {
            packet_id: pid(10),
            reason_codes: vec![],
            properties: props(),
        });
        assert_vector(version, &[0xB0, 0x02, 0x00, 0x0A], packet);
        // 5.0 reason codes are not written in 3.x.
        let lossy = Packet::UnsubAck(UnsubAck {
            packet_id: pid(10),
            reason_codes: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
            properties: props(),
        });
        assert_encodes(version, &lossy, &[0xB0, 0x02, 0x00, 0x0A]);
    }
    assert_vector(
        V5,
        // remaining length 5 = 2 + 1 + 2; codes Success, No subscription existed
        &[0xB0, 0x05, 0x00, 0x0A, 0x00, 0x00, 0x11],
        Packet::UnsubAck(UnsubAck {
            packet_id: pid(10),
            reason_codes: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
            properties: props(),
        }),
    );
}

// ---------------------------------------------------------------------------
// PINGREQ, PINGRESP (sections 3.12, 3.13)
// ---------------------------------------------------------------------------

#[test]
fn ping() {
    for version in ALL {
        assert_vector(version, &[0xC0, 0x00], Packet::PingReq); // type 12, length 0
        assert_vector(version, &[0xD0, 0x00], Packet::PingResp); // type 13, length 0
    }
}

// ---------------------------------------------------------------------------
// DISCONNECT (3.1.1 section 3.14, 5.0 section 3.14)
// ---------------------------------------------------------------------------

#[test]
fn disconnect_v3() {
    for version in V3 {
        assert_vector(
            version,
            &[0xE0, 0x00],
            Packet::Disconnect(Disconnect::default()),
        );
        let lossy = Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
            properties: Properties {
                reason_string: Some(s("x")),
                ..props()
            },
        });
        assert_encodes(version, &lossy, &[0xE0, 0x00]);
    }
}

#[test]
fn disconnect_v5() {
    // Normal disconnection, no properties: remaining length 0 (3.14.2.1).
    assert_vector(V5, &[0xE0, 0x00], Packet::Disconnect(Disconnect::default()));
    assert_decodes(
        V5,
        &[0xE0, 0x02, 0x00, 0x00],
        &Packet::Disconnect(Disconnect::default()),
    );
    let with_will = Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        properties: props(),
    });
    // "If the Remaining Length is less than 2, a value of 0 is used" (3.14.2.2.1).
    assert_decodes(V5, &[0xE0, 0x01, 0x04], &with_will);
    assert_vector(V5, &[0xE0, 0x02, 0x04, 0x00], with_will);
    #[rustfmt::skip]
    let bytes = [
        0xE0, 0x08,       // DISCONNECT, remaining length 8 = 1 + 1 + 6
        0x8E,             // Session taken over
        0x06, 0x1F, 0x00, 0x03, b'b', b'y', b'e', // reason string "bye"
    ];
    assert_vector(
        V5,
        &bytes,
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::SESSION_TAKEN_OVER,
            properties: Properties {
                reason_string: Some(s("bye")),
                ..props()
            },
        }),
    );
}

// ---------------------------------------------------------------------------
// AUTH (5.0 section 3.15)
// ---------------------------------------------------------------------------

#[test]
fn auth_v5() {
    // Success, no properties: remaining length 0 (3.15.2.1).
    assert_vector(V5, &[0xF0, 0x00], Packet::Auth(Auth::default()));
    assert_decodes(
        V5,
        &[0xF0, 0x02, 0x00, 0x00],
        &Packet::Auth(Auth::default()),
    );
    #[rustfmt::skip]
    let bytes = [
        0xF0, 0x0C,       // AUTH, remaining length 12 = 1 + 1 + 10
        0x18,             // Continue authentication
        0x0A,             // property length 10
        0x15, 0x00, 0x02, b'm', b'1', // authentication method (0x15) "m1"
        0x16, 0x00, 0x02, 0x01, 0x02, // authentication data (0x16) 01 02
    ];
    assert_vector(
        V5,
        &bytes,
        Packet::Auth(Auth {
            reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: Properties {
                authentication_method: Some(s("m1")),
                authentication_data: Some(b(&[1, 2])),
                ..props()
            },
        }),
    );
}

// ---------------------------------------------------------------------------
// Encoder errors and buffer handling
// ---------------------------------------------------------------------------

#[test]
fn auth_cannot_be_encoded_before_v5() {
    for version in V3 {
        let packet = Packet::Auth(Auth::default());
        let mut buf = BytesMut::new();
        assert!(matches!(
            encode(&packet, version, &mut buf),
            Err(EncodeError::UnsupportedInVersion(_))
        ));
        assert!(buf.is_empty(), "nothing written on error");
        assert!(matches!(
            encoded_len(&packet, version),
            Err(EncodeError::UnsupportedInVersion(_))
        ));
    }
}

/// The packet identifier is present exactly for QoS 1 and 2
/// (MQTT-2.2.1-2 / 3.1.1 MQTT-2.3.1-5, section 3.3.2.2).
#[test]
fn publish_packet_id_must_match_qos() {
    let cases = [
        (QoS::AtMostOnce, Some(1)),
        (QoS::AtLeastOnce, None),
        (QoS::ExactlyOnce, None),
    ];
    for version in ALL {
        for (qos, id) in cases {
            let packet = publish(false, qos, false, "t", id, props(), b"");
            let mut buf = BytesMut::new();
            assert_eq!(
                encode(&packet, version, &mut buf),
                Err(EncodeError::PacketIdMismatch),
                "{qos:?} with {id:?}"
            );
            assert_eq!(
                encoded_len(&packet, version),
                Err(EncodeError::PacketIdMismatch)
            );
        }
    }
}

/// Strings are at most 65,535 bytes (section 1.5.4).
#[test]
fn string_longer_than_u16_is_rejected() {
    let topic = "t".repeat(65_536);
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: ByteString::from(topic),
        packet_id: None,
        properties: props(),
        payload: Bytes::new(),
    });
    let mut buf = BytesMut::new();
    assert!(matches!(
        encode(&packet, V3_1_1, &mut buf),
        Err(EncodeError::FieldTooLong { len: 65_536, .. })
    ));
    // 65,535 bytes is still fine.
    let ok = Packet::Publish(Publish {
        topic: ByteString::from("t".repeat(65_535)),
        ..match packet {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    });
    let out = encode_checked(&ok, V3_1_1);
    assert_decodes(V3_1_1, &out, &ok);
}

/// A Subscription Identifier is a variable byte integer, at most 268,435,455.
#[test]
fn subscription_identifier_out_of_range_is_rejected() {
    let packet = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        filters: vec![(s("a"), SubscriptionOptions::new(QoS::AtMostOnce))],
        properties: Properties {
            subscription_identifiers: vec![268_435_456],
            ..props()
        },
    });
    let mut buf = BytesMut::new();
    assert!(matches!(
        encode(&packet, V5, &mut buf),
        Err(EncodeError::ValueOutOfRange(_))
    ));
}

/// `encode` appends to what the buffer already holds.
#[test]
fn encode_appends() {
    let mut buf = BytesMut::from(&b"xy"[..]);
    encode(&Packet::PingReq, V3_1_1, &mut buf).expect("encode");
    encode(&Packet::PingResp, V3_1_1, &mut buf).expect("encode");
    assert_eq!(&buf[..], b"xy\xC0\x00\xD0\x00");
}

/// Payloads, strings and binary data are slices of the receive buffer, not
/// copies (zero-copy decoding).
#[test]
fn decoded_payload_is_zero_copy() {
    let packet = publish(
        false,
        QoS::AtLeastOnce,
        false,
        "a/b",
        Some(1),
        props(),
        &[7; 100],
    );
    let mut buf = encode_checked(&packet, V3_1_1);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let decoded = decode(&mut buf, V3_1_1, MAX_PACKET_SIZE).expect("valid");
    let Some(Packet::Publish(p)) = decoded else {
        panic!("expected PUBLISH, got {decoded:?}");
    };
    assert_eq!(p.payload.len(), 100);
    assert!(
        range.contains(&(p.payload.as_ptr() as usize)),
        "payload was copied out of the receive buffer"
    );
}
