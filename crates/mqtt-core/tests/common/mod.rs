//! Shared helpers and proptest strategies for the codec test suites.
//!
//! Every strategy generates only packets the given protocol version can
//! express and that the spec calls well-formed, so `encode` followed by
//! `decode` must give back an equal value:
//! - 3.x packets have empty [`Properties`], success-style reason codes where
//!   the wire has none (PUB*, DISCONNECT), CONNACK codes that survive the
//!   3.x return-code mapping, SUBACK codes 0, 1, 2 and 0x80, and no UNSUBACK
//!   codes; a 3.x CONNECT has no password without a user name (MQTT-3.1.2-22).
//! - 5.0 property lists only carry properties allowed in their packet
//!   ([`PropertyId::allowed_in`]) with values in range (Topic Alias, Receive
//!   Maximum, Maximum Packet Size, Subscription Identifier never 0; Maximum
//!   QoS 0 or 1), and at most one Subscription Identifier outside PUBLISH.
//! - Strings never contain U+0000 (MQTT-1.5.4-2); topic names are never
//!   empty (except a 5.0 PUBLISH that carries a Topic Alias) and never hold
//!   wildcards (MQTT-3.3.2-2); topic filters are never empty (MQTT-4.7.3-1).
//!
//! Sizes are kept small so the O(n^2) split-at-every-byte properties stay fast.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use mqtt_core::codec::{
    decode, encode, encoded_len, Auth, ByteString, ConnAck, Connect, DecodeError, Disconnect,
    Packet, PacketId, PacketType, Properties, PropertyContext, PropertyId, ProtocolVersion,
    PubResponse, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe, Will, MAX_PACKET_SIZE, VARIABLE_BYTE_INTEGER_MAX,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// All protocol versions the codec speaks.
pub const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// Encode `packet` for `version`, asserting that [`encoded_len`] predicts
/// exactly the number of bytes written.
pub fn encode_checked(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf)
        .unwrap_or_else(|e| panic!("encode {packet:?} for {version}: {e}"));
    let predicted = encoded_len(packet, version)
        .unwrap_or_else(|e| panic!("encoded_len {packet:?} for {version}: {e}"));
    assert_eq!(
        predicted,
        buf.len(),
        "encoded_len for {packet:?} ({version})"
    );
    buf
}

/// Decode one packet from `bytes` with no size limit beyond the wire's.
pub fn decode_all(
    bytes: &[u8],
    version: ProtocolVersion,
) -> (Result<Option<Packet>, DecodeError>, BytesMut) {
    let mut buf = BytesMut::from(bytes);
    let result = decode(&mut buf, version, MAX_PACKET_SIZE);
    (result, buf)
}

/// A non-zero packet identifier (MQTT-2.2.1-3).
pub fn pid(v: u16) -> PacketId {
    NonZeroU16::new(v).expect("packet identifier must be non-zero")
}

/// Any protocol version.
pub fn arb_version() -> impl Strategy<Value = ProtocolVersion> {
    prop::sample::select(VERSIONS.to_vec())
}

/// Any non-zero packet identifier.
pub fn arb_packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(pid)
}

/// Any QoS (0, 1 or 2).
pub fn arb_qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

/// A character a UTF-8 Encoded String may hold: anything but U+0000
/// (MQTT-1.5.4-2). Surrogates cannot occur in a Rust `char`. Biased toward
/// ASCII but covering 2-, 3- and 4-byte encodings.
fn arb_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range('a', 'z'),
        1 => any::<char>().prop_filter("no U+0000", |c| *c != '\0'),
    ]
}

/// A UTF-8 Encoded String of up to `max_chars` characters (may be empty).
pub fn arb_string(max_chars: usize) -> impl Strategy<Value = ByteString> {
    vec(arb_char(), 0..=max_chars)
        .prop_map(|cs| ByteString::from(cs.into_iter().collect::<String>()))
}

/// A non-empty PUBLISH topic name without wildcards (MQTT-3.3.2-2, MQTT-4.7.3-1).
pub fn arb_topic_name() -> impl Strategy<Value = ByteString> {
    let c = prop_oneof![
        3 => arb_char().prop_filter("no wildcards", |c| *c != '+' && *c != '#'),
        1 => Just('/'),
        1 => Just('$'),
    ];
    vec(c, 1..=10).prop_map(|cs| ByteString::from(cs.into_iter().collect::<String>()))
}

/// A non-empty topic filter (MQTT-4.7.3-1). Wildcards may appear anywhere:
/// their placement is the topic module's concern, not the codec's.
pub fn arb_topic_filter() -> impl Strategy<Value = ByteString> {
    let c = prop_oneof![
        3 => arb_char(),
        1 => Just('/'),
        1 => Just('+'),
        1 => Just('#'),
    ];
    vec(c, 1..=10).prop_map(|cs| ByteString::from(cs.into_iter().collect::<String>()))
}

/// Binary data of up to `max` bytes.
pub fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn opt<T: std::fmt::Debug + Clone + 'static>(
    allowed: bool,
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    if allowed {
        prop::option::weighted(0.3, s).boxed()
    } else {
        Just(None).boxed()
    }
}

/// A 5.0 property list valid in `ctx`: only properties of table 2.2.2.2
/// allowed there, each with a value in range, repeated only where
/// [`PropertyId::may_repeat`] says so.
pub fn arb_properties(ctx: PropertyContext) -> BoxedStrategy<Properties> {
    let a = |p: PropertyId| p.allowed_in(ctx);
    let sub_id = 1..=VARIABLE_BYTE_INTEGER_MAX;
    let max_sub_ids = if !a(PropertyId::SubscriptionIdentifier) {
        0
    } else if PropertyId::SubscriptionIdentifier.may_repeat(ctx) {
        3
    } else {
        1
    };
    let max_user = 3;
    // Grouped in tuples of at most 12, proptest's largest tuple strategy.
    let g1 = (
        opt(a(PropertyId::PayloadFormatIndicator), any::<bool>()),
        opt(a(PropertyId::MessageExpiryInterval), any::<u32>()),
        opt(a(PropertyId::ContentType), arb_string(6)),
        opt(a(PropertyId::ResponseTopic), arb_topic_name()),
        opt(a(PropertyId::CorrelationData), arb_bytes(8)),
        vec(sub_id, 0..=max_sub_ids),
        opt(a(PropertyId::SessionExpiryInterval), any::<u32>()),
        opt(a(PropertyId::AssignedClientIdentifier), arb_string(6)),
        opt(a(PropertyId::ServerKeepAlive), any::<u16>()),
    );
    let g2 = (
        opt(a(PropertyId::AuthenticationMethod), arb_string(6)),
        opt(a(PropertyId::AuthenticationData), arb_bytes(8)),
        opt(a(PropertyId::RequestProblemInformation), any::<bool>()),
        opt(a(PropertyId::WillDelayInterval), any::<u32>()),
        opt(a(PropertyId::RequestResponseInformation), any::<bool>()),
        opt(a(PropertyId::ResponseInformation), arb_string(6)),
        opt(a(PropertyId::ServerReference), arb_string(6)),
        opt(a(PropertyId::ReasonString), arb_string(6)),
        opt(a(PropertyId::ReceiveMaximum), 1..=u16::MAX),
    );
    let g3 = (
        opt(a(PropertyId::TopicAliasMaximum), any::<u16>()),
        opt(a(PropertyId::TopicAlias), 1..=u16::MAX),
        opt(
            a(PropertyId::MaximumQoS),
            prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)],
        ),
        opt(a(PropertyId::RetainAvailable), any::<bool>()),
        vec((arb_string(4), arb_string(4)), 0..=max_user),
        opt(a(PropertyId::MaximumPacketSize), 1..=u32::MAX),
        opt(a(PropertyId::WildcardSubscriptionAvailable), any::<bool>()),
        opt(
            a(PropertyId::SubscriptionIdentifierAvailable),
            any::<bool>(),
        ),
        opt(a(PropertyId::SharedSubscriptionAvailable), any::<bool>()),
    );
    (g1, g2, g3)
        .prop_map(|(g1, g2, g3)| Properties {
            payload_format_indicator: g1.0,
            message_expiry_interval: g1.1,
            content_type: g1.2,
            response_topic: g1.3,
            correlation_data: g1.4,
            subscription_identifiers: g1.5,
            session_expiry_interval: g1.6,
            assigned_client_identifier: g1.7,
            server_keep_alive: g1.8,
            authentication_method: g2.0,
            authentication_data: g2.1,
            request_problem_information: g2.2,
            will_delay_interval: g2.3,
            request_response_information: g2.4,
            response_information: g2.5,
            server_reference: g2.6,
            reason_string: g2.7,
            receive_maximum: g2.8,
            topic_alias_maximum: g3.0,
            topic_alias: g3.1,
            maximum_qos: g3.2,
            retain_available: g3.3,
            user_properties: g3.4,
            maximum_packet_size: g3.5,
            wildcard_subscription_available: g3.6,
            subscription_identifier_available: g3.7,
            shared_subscription_available: g3.8,
        })
        .boxed()
}

/// Properties for `version`: generated for 5.0, always empty for 3.x.
pub fn arb_properties_for(
    version: ProtocolVersion,
    ctx: PropertyContext,
) -> BoxedStrategy<Properties> {
    if version.is_v5() {
        arb_properties(ctx)
    } else {
        Just(Properties::default()).boxed()
    }
}

/// A reason code valid for `packet` in 5.0 ([`ReasonCode::valid_for`]).
pub fn arb_reason_code(packet: PacketType) -> BoxedStrategy<ReasonCode> {
    let codes: Vec<ReasonCode> = (0..=u8::MAX)
        .map(ReasonCode)
        .filter(|c| c.valid_for(packet))
        .collect();
    prop::sample::select(codes).boxed()
}

/// A will message for `version` (5.0 will properties, section 3.1.3.2).
pub fn arb_will(version: ProtocolVersion) -> BoxedStrategy<Will> {
    (
        arb_topic_name(),
        arb_bytes(16),
        arb_qos(),
        any::<bool>(),
        arb_properties_for(version, PropertyContext::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
        .boxed()
}

/// A CONNECT at `version`'s own protocol level. 3.x never has a password
/// without a user name (MQTT-3.1.2-22); 5.0 may (section 3.1.2.9).
pub fn arb_connect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        any::<bool>(),
        any::<u16>(),
        arb_string(8),
        prop::option::of(arb_will(version)),
        prop::option::of(arb_string(8)),
        prop::option::of(arb_bytes(8)),
        arb_properties_for(version, PropertyContext::Connect),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                let password = if version.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Connect {
                    protocol_version: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                })
            },
        )
        .boxed()
}

/// A CONNACK. 3.x: only the reason codes that map onto return codes 0-5 and
/// back unchanged; 3.1 has no Session Present flag. A refusal never has
/// Session Present set (MQTT-3.2.2-4 / 5.0 MQTT-3.2.2-6).
pub fn arb_connack(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let code = if version.is_v5() {
        arb_reason_code(PacketType::ConnAck)
    } else {
        (0..=5u8)
            .prop_map(|c| ReasonCode::from_v3_connack_code(c).expect("codes 0-5 exist"))
            .boxed()
    };
    (
        any::<bool>(),
        code,
        arb_properties_for(version, PropertyContext::ConnAck),
    )
        .prop_map(move |(sp, reason_code, properties)| {
            let session_present =
                sp && reason_code.is_success() && version != ProtocolVersion::V3_1;
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code,
                properties,
            })
        })
        .boxed()
}

/// A PUBLISH. The packet identifier is present exactly for QoS 1 and 2
/// (MQTT-2.2.1-2); DUP only with QoS > 0 (MQTT-3.3.1-2); an empty topic name
/// only in 5.0 with a Topic Alias (section 3.3.2.1).
pub fn arb_publish(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let topic = if version.is_v5() {
        prop_oneof![4 => arb_topic_name(), 1 => Just(ByteString::new())].boxed()
    } else {
        arb_topic_name().boxed()
    };
    (
        any::<bool>(),
        arb_qos(),
        any::<bool>(),
        topic,
        arb_packet_id(),
        arb_properties_for(version, PropertyContext::Publish),
        1..=u16::MAX,
        arb_bytes(32),
    )
        .prop_map(
            |(dup, qos, retain, topic, id, mut properties, alias, payload)| {
                if topic.is_empty() {
                    properties.topic_alias = Some(alias);
                }
                let (dup, packet_id) = match qos {
                    QoS::AtMostOnce => (false, None),
                    _ => (dup, Some(id)),
                };
                Packet::Publish(Publish {
                    dup,
                    qos,
                    retain,
                    topic,
                    packet_id,
                    properties,
                    payload,
                })
            },
        )
        .boxed()
}

/// A PUBACK, PUBREC, PUBREL or PUBCOMP (`kind` selects which). 3.x: success
/// code and no properties, the only thing its wire format carries.
pub fn arb_pub_response(version: ProtocolVersion, kind: PacketType) -> BoxedStrategy<Packet> {
    let code = if version.is_v5() {
        arb_reason_code(kind)
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    };
    (
        arb_packet_id(),
        code,
        arb_properties_for(version, PropertyContext::PubResponse),
    )
        .prop_map(move |(packet_id, reason_code, properties)| {
            let r = PubResponse {
                packet_id,
                reason_code,
                properties,
            };
            match kind {
                PacketType::PubAck => Packet::PubAck(r),
                PacketType::PubRec => Packet::PubRec(r),
                PacketType::PubRel => Packet::PubRel(r),
                PacketType::PubComp => Packet::PubComp(r),
                other => panic!("{other} is not a PUBLISH response"),
            }
        })
        .boxed()
}

/// Subscription options `version` can express: 3.x only has the QoS.
pub fn arb_subscription_options(version: ProtocolVersion) -> BoxedStrategy<SubscriptionOptions> {
    if version.is_v5() {
        (
            arb_qos(),
            any::<bool>(),
            any::<bool>(),
            prop_oneof![
                Just(RetainHandling::SendOnSubscribe),
                Just(RetainHandling::SendIfNew),
                Just(RetainHandling::DoNotSend)
            ],
        )
            .prop_map(
                |(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                },
            )
            .boxed()
    } else {
        arb_qos().prop_map(SubscriptionOptions::new).boxed()
    }
}

/// A SUBSCRIBE with 1 to 4 filters (MQTT-3.8.3-2).
pub fn arb_subscribe(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        arb_packet_id(),
        vec(
            (arb_topic_filter(), arb_subscription_options(version)),
            1..=4,
        ),
        arb_properties_for(version, PropertyContext::Subscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        })
        .boxed()
}

/// A SUBACK with 1 to 4 codes. 3.x: 0, 1, 2 and 0x80 only.
pub fn arb_suback(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let code = if version.is_v5() {
        arb_reason_code(PacketType::SubAck)
    } else {
        prop::sample::select(vec![
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::GRANTED_QOS_2,
            ReasonCode::UNSPECIFIED_ERROR,
        ])
        .boxed()
    };
    (
        arb_packet_id(),
        vec(code, 1..=4),
        arb_properties_for(version, PropertyContext::SubAck),
    )
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reason_codes,
                properties,
            })
        })
        .boxed()
}

/// An UNSUBSCRIBE with 1 to 4 filters (MQTT-3.10.3-2).
pub fn arb_unsubscribe(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        arb_packet_id(),
        vec(arb_topic_filter(), 1..=4),
        arb_properties_for(version, PropertyContext::Unsubscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        })
        .boxed()
}

/// An UNSUBACK: 3.x carries no reason codes; 5.0 one to four.
pub fn arb_unsuback(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let codes = if version.is_v5() {
        vec(arb_reason_code(PacketType::UnsubAck), 1..=4).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (
        arb_packet_id(),
        codes,
        arb_properties_for(version, PropertyContext::UnsubAck),
    )
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes,
                properties,
            })
        })
        .boxed()
}

/// A DISCONNECT: 3.x has no body, so code 0 and no properties.
pub fn arb_disconnect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    if !version.is_v5() {
        return Just(Packet::Disconnect(Disconnect::default())).boxed();
    }
    (
        arb_reason_code(PacketType::Disconnect),
        arb_properties(PropertyContext::Disconnect),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        })
        .boxed()
}

/// An AUTH (5.0 only).
pub fn arb_auth() -> BoxedStrategy<Packet> {
    (
        arb_reason_code(PacketType::Auth),
        arb_properties(PropertyContext::Auth),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        })
        .boxed()
}

/// The packet types `version` has: all 15 in 5.0, all but AUTH before.
pub fn packet_types(version: ProtocolVersion) -> Vec<PacketType> {
    (1..=15u8)
        .filter_map(PacketType::from_u8)
        .filter(|t| version.is_v5() || *t != PacketType::Auth)
        .collect()
}

/// A packet of type `kind` valid in `version`.
pub fn arb_packet_of(version: ProtocolVersion, kind: PacketType) -> BoxedStrategy<Packet> {
    match kind {
        PacketType::Connect => arb_connect(version),
        PacketType::ConnAck => arb_connack(version),
        PacketType::Publish => arb_publish(version),
        PacketType::PubAck | PacketType::PubRec | PacketType::PubRel | PacketType::PubComp => {
            arb_pub_response(version, kind)
        }
        PacketType::Subscribe => arb_subscribe(version),
        PacketType::SubAck => arb_suback(version),
        PacketType::Unsubscribe => arb_unsubscribe(version),
        PacketType::UnsubAck => arb_unsuback(version),
        PacketType::PingReq => Just(Packet::PingReq).boxed(),
        PacketType::PingResp => Just(Packet::PingResp).boxed(),
        PacketType::Disconnect => arb_disconnect(version),
        PacketType::Auth => {
            assert!(version.is_v5(), "AUTH exists in 5.0 only");
            arb_auth()
        }
    }
}

/// Any packet valid in `version`, every type equally likely.
pub fn arb_packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let all: Vec<BoxedStrategy<Packet>> = packet_types(version)
        .into_iter()
        .map(|t| arb_packet_of(version, t))
        .collect();
    prop::strategy::Union::new(all).boxed()
}

/// A version together with a packet valid in it.
pub fn arb_versioned_packet() -> BoxedStrategy<(ProtocolVersion, Packet)> {
    arb_version()
        .prop_flat_map(|v| arb_packet(v).prop_map(move |p| (v, p)))
        .boxed()
}
