//! `cargo xtask fuzz-seeds`: write the seed corpora in fuzz/seeds/ from the
//! codec's own encoder, so every seed is a valid packet and the fuzzer
//! starts from deep inside the decoder instead of guessing headers.
//!
//! One file per packet (plus one multi-packet stream per version family),
//! named `<version>-<packet>`; decode_v3 gets 3.1/3.1.1 packets, decode_v5
//! gets 5.0 packets, roundtrip gets both. Each seed is checked to decode
//! back to the packet it came from; a mismatch is reported (it is a codec
//! bug) but the seeds are still written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::{Bytes, BytesMut};
use mqtt_core::codec::{
    decode, encode, Auth, ByteString, ConnAck, Connect, Disconnect, Packet, PacketId, Properties,
    ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe, Will, MAX_PACKET_SIZE,
};

/// The targets whose seed directories this program owns (it rewrites them).
const TARGETS: [&str; 3] = ["decode_v3", "decode_v5", "roundtrip"];

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fuzz-seeds <fuzz/seeds directory>");
        return ExitCode::FAILURE;
    };
    match run(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fuzz-seeds: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(out: &Path) -> Result<(), String> {
    let v3 = seeds(&v3_packets(), "v3")?;
    let v5 = seeds(&v5_packets(), "v5")?;
    for target in TARGETS {
        let dir = out.join(target);
        if dir.is_dir() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let chosen: Vec<&(String, Vec<u8>)> = match target {
            "decode_v3" => v3.iter().collect(),
            "decode_v5" => v5.iter().collect(),
            _ => v3.iter().chain(&v5).collect(),
        };
        for (name, bytes) in &chosen {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        println!("fuzz-seeds: {} seeds in {}", chosen.len(), dir.display());
    }
    Ok(())
}

/// Encode each packet; add one stream of all the client-side packets of
/// the family, as a connection would send them.
fn seeds(
    packets: &[(&str, ProtocolVersion, Packet)],
    family: &str,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut stream = Vec::new();
    for (name, version, packet) in packets {
        let mut buf = BytesMut::new();
        encode(packet, *version, &mut buf)
            .map_err(|e| format!("cannot encode {name} ({version}): {e}"))?;
        let bytes = buf.to_vec();
        check_decodes(name, *version, packet, &bytes);
        if is_client_packet(packet) {
            stream.extend_from_slice(&bytes);
        }
        out.push((format!("{}-{name}", version_tag(*version)), bytes));
    }
    out.push((format!("{family}-stream"), stream));
    Ok(out)
}

fn check_decodes(name: &str, version: ProtocolVersion, packet: &Packet, bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, version, MAX_PACKET_SIZE) {
        Ok(Some(back)) if &back == packet && buf.is_empty() => {}
        other => eprintln!(
            "fuzz-seeds: warning: seed {name} ({version}) does not decode back to itself: \
             {other:?}, {} bytes left; bytes {bytes:02x?}",
            buf.len()
        ),
    }
}

fn is_client_packet(packet: &Packet) -> bool {
    matches!(
        packet,
        Packet::Connect(_)
            | Packet::Publish(_)
            | Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq
            | Packet::Disconnect(_)
    )
}

fn version_tag(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V3_1 => "v31",
        ProtocolVersion::V3_1_1 => "v311",
        ProtocolVersion::V5 => "v5",
    }
}

fn pid(n: u16) -> PacketId {
    // n >= 1 everywhere below; saturating keeps this free of unwrap.
    PacketId::MIN.saturating_add(n.saturating_sub(1))
}

fn s(text: &'static str) -> ByteString {
    ByteString::from_static(text)
}

fn b(data: &'static [u8]) -> Bytes {
    Bytes::from_static(data)
}

fn connect(version: ProtocolVersion, with_will: bool, properties: Properties) -> Packet {
    let will = with_will.then(|| Will {
        topic: s("status/c1"),
        payload: b(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: if version.is_v5() {
            Properties {
                will_delay_interval: Some(30),
                payload_format_indicator: Some(true),
                message_expiry_interval: Some(3600),
                content_type: Some(s("text/plain")),
                response_topic: Some(s("reply/c1")),
                correlation_data: Some(b(b"\x01\x02")),
                user_properties: vec![(s("k"), s("v"))],
                ..Properties::default()
            }
        } else {
            Properties::default()
        },
    });
    Packet::Connect(Connect {
        protocol_version: version,
        clean_start: !with_will,
        keep_alive: 60,
        client_id: s("c1"),
        username: with_will.then(|| s("user")),
        password: with_will.then(|| b(b"secret")),
        will,
        properties,
    })
}

fn publish(qos: QoS, id: Option<u16>, properties: Properties, topic: &'static str) -> Packet {
    Packet::Publish(Publish {
        dup: qos == QoS::ExactlyOnce,
        qos,
        retain: qos == QoS::AtLeastOnce,
        topic: s(topic),
        packet_id: id.map(pid),
        properties,
        payload: b(b"hello"),
    })
}

fn subscribe(properties: Properties, v5_options: bool) -> Packet {
    let mut opts = SubscriptionOptions::new(QoS::ExactlyOnce);
    if v5_options {
        opts.no_local = true;
        opts.retain_as_published = true;
        opts.retain_handling = RetainHandling::DoNotSend;
    }
    Packet::Subscribe(Subscribe {
        packet_id: pid(4),
        filters: vec![
            (s("a/+/c"), SubscriptionOptions::new(QoS::AtLeastOnce)),
            (s("#"), opts),
            (
                s("$share/g/sensors/#"),
                SubscriptionOptions::new(QoS::AtMostOnce),
            ),
        ],
        properties,
    })
}

/// Packets of 3.1 and 3.1.1 (the same bytes in both but CONNECT).
fn v3_packets() -> Vec<(&'static str, ProtocolVersion, Packet)> {
    use ProtocolVersion::{V3_1, V3_1_1};
    let none = Properties::default;
    vec![
        ("connect", V3_1, connect(V3_1, false, none())),
        ("connect-will", V3_1, connect(V3_1, true, none())),
        ("connect", V3_1_1, connect(V3_1_1, false, none())),
        ("connect-will", V3_1_1, connect(V3_1_1, true, none())),
        (
            "connack",
            V3_1_1,
            Packet::ConnAck(ConnAck {
                session_present: true,
                reason_code: ReasonCode::SUCCESS,
                properties: none(),
            }),
        ),
        (
            "connack-refused",
            V3_1_1,
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::NOT_AUTHORIZED,
                properties: none(),
            }),
        ),
        (
            "publish-qos0",
            V3_1_1,
            publish(QoS::AtMostOnce, None, none(), "a/b"),
        ),
        (
            "publish-qos1",
            V3_1_1,
            publish(QoS::AtLeastOnce, Some(1), none(), "a/b"),
        ),
        (
            "publish-qos2",
            V3_1_1,
            publish(QoS::ExactlyOnce, Some(2), none(), "a/b/c"),
        ),
        ("puback", V3_1_1, Packet::PubAck(PubResponse::new(pid(3)))),
        ("pubrec", V3_1_1, Packet::PubRec(PubResponse::new(pid(3)))),
        ("pubrel", V3_1_1, Packet::PubRel(PubResponse::new(pid(3)))),
        ("pubcomp", V3_1_1, Packet::PubComp(PubResponse::new(pid(3)))),
        ("subscribe", V3_1_1, subscribe(none(), false)),
        (
            "suback",
            V3_1_1,
            Packet::SubAck(SubAck {
                packet_id: pid(4),
                reason_codes: vec![
                    ReasonCode::GRANTED_QOS_1,
                    ReasonCode::GRANTED_QOS_2,
                    ReasonCode::UNSPECIFIED_ERROR,
                ],
                properties: none(),
            }),
        ),
        (
            "unsubscribe",
            V3_1_1,
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(5),
                filters: vec![s("a/+/c"), s("#")],
                properties: none(),
            }),
        ),
        (
            "unsuback",
            V3_1_1,
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(5),
                reason_codes: vec![],
                properties: none(),
            }),
        ),
        ("pingreq", V3_1_1, Packet::PingReq),
        ("pingresp", V3_1_1, Packet::PingResp),
        (
            "disconnect",
            V3_1_1,
            Packet::Disconnect(Disconnect::default()),
        ),
    ]
}

fn v5_packets() -> Vec<(&'static str, ProtocolVersion, Packet)> {
    use ProtocolVersion::V5;
    let none = Properties::default;
    let user = || vec![(s("region"), s("eu")), (s("region"), s("us"))];
    let reason = |text: &'static str| Properties {
        reason_string: Some(s(text)),
        user_properties: user(),
        ..Properties::default()
    };
    vec![
        ("connect", V5, connect(V5, false, none())),
        (
            "connect-will-props",
            V5,
            connect(
                V5,
                true,
                Properties {
                    session_expiry_interval: Some(600),
                    receive_maximum: Some(20),
                    maximum_packet_size: Some(65_536),
                    topic_alias_maximum: Some(10),
                    request_response_information: Some(true),
                    request_problem_information: Some(false),
                    authentication_method: Some(s("SCRAM-SHA-1")),
                    authentication_data: Some(b(b"client-first")),
                    user_properties: user(),
                    ..Properties::default()
                },
            ),
        ),
        (
            "connack-props",
            V5,
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::SUCCESS,
                properties: Properties {
                    session_expiry_interval: Some(600),
                    receive_maximum: Some(100),
                    maximum_qos: Some(QoS::AtLeastOnce),
                    retain_available: Some(true),
                    maximum_packet_size: Some(1_048_576),
                    assigned_client_identifier: Some(s("auto-1234")),
                    topic_alias_maximum: Some(16),
                    wildcard_subscription_available: Some(true),
                    subscription_identifier_available: Some(true),
                    shared_subscription_available: Some(false),
                    server_keep_alive: Some(30),
                    response_information: Some(s("resp/")),
                    ..Properties::default()
                },
            }),
        ),
        (
            "connack-refused",
            V5,
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::SERVER_MOVED,
                properties: Properties {
                    server_reference: Some(s("other:1883")),
                    reason_string: Some(s("moved")),
                    ..Properties::default()
                },
            }),
        ),
        (
            "publish-qos0",
            V5,
            publish(QoS::AtMostOnce, None, none(), "a/b"),
        ),
        (
            "publish-qos1-props",
            V5,
            publish(
                QoS::AtLeastOnce,
                Some(1),
                Properties {
                    payload_format_indicator: Some(true),
                    message_expiry_interval: Some(60),
                    content_type: Some(s("application/json")),
                    response_topic: Some(s("reply/1")),
                    correlation_data: Some(b(b"corr")),
                    subscription_identifiers: vec![1, 268_435_455],
                    user_properties: user(),
                    ..Properties::default()
                },
                "a/b",
            ),
        ),
        (
            "publish-qos2-alias",
            V5,
            publish(
                QoS::ExactlyOnce,
                Some(2),
                Properties {
                    topic_alias: Some(3),
                    ..Properties::default()
                },
                "a/b/c",
            ),
        ),
        (
            "publish-alias-only",
            V5,
            publish(
                QoS::AtMostOnce,
                None,
                Properties {
                    topic_alias: Some(3),
                    ..Properties::default()
                },
                "",
            ),
        ),
        ("puback", V5, Packet::PubAck(PubResponse::new(pid(3)))),
        (
            "puback-reason",
            V5,
            Packet::PubAck(PubResponse {
                packet_id: pid(3),
                reason_code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
                properties: reason("nobody listens"),
            }),
        ),
        (
            "pubrec-reason",
            V5,
            Packet::PubRec(PubResponse {
                packet_id: pid(3),
                reason_code: ReasonCode::QUOTA_EXCEEDED,
                properties: none(),
            }),
        ),
        (
            "pubrel-reason",
            V5,
            Packet::PubRel(PubResponse {
                packet_id: pid(3),
                reason_code: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                properties: none(),
            }),
        ),
        ("pubcomp", V5, Packet::PubComp(PubResponse::new(pid(3)))),
        (
            "subscribe-props",
            V5,
            subscribe(
                Properties {
                    subscription_identifiers: vec![42],
                    user_properties: user(),
                    ..Properties::default()
                },
                true,
            ),
        ),
        (
            "suback",
            V5,
            Packet::SubAck(SubAck {
                packet_id: pid(4),
                reason_codes: vec![
                    ReasonCode::GRANTED_QOS_1,
                    ReasonCode::GRANTED_QOS_2,
                    ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
                ],
                properties: reason("partly"),
            }),
        ),
        (
            "unsubscribe",
            V5,
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(5),
                filters: vec![s("a/+/c"), s("#")],
                properties: Properties {
                    user_properties: user(),
                    ..Properties::default()
                },
            }),
        ),
        (
            "unsuback",
            V5,
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(5),
                reason_codes: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
                properties: none(),
            }),
        ),
        ("pingreq", V5, Packet::PingReq),
        ("pingresp", V5, Packet::PingResp),
        ("disconnect", V5, Packet::Disconnect(Disconnect::default())),
        (
            "disconnect-will",
            V5,
            Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
                properties: Properties {
                    session_expiry_interval: Some(0),
                    reason_string: Some(s("bye")),
                    ..Properties::default()
                },
            }),
        ),
        (
            "disconnect-moved",
            V5,
            Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::USE_ANOTHER_SERVER,
                properties: Properties {
                    server_reference: Some(s("other:1883")),
                    ..Properties::default()
                },
            }),
        ),
        (
            "auth",
            V5,
            Packet::Auth(Auth {
                reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: Properties {
                    authentication_method: Some(s("SCRAM-SHA-1")),
                    authentication_data: Some(b(b"server-first")),
                    reason_string: Some(s("continue")),
                    ..Properties::default()
                },
            }),
        ),
    ]
}
