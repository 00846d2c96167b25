//! CONNECT, CONNACK, sessions, takeover, DISCONNECT, wills, expiry (sections 3.1, 3.2, 3.14, 4.1).
// The tests play the runtime: they read the clock once, for a base instant.
#![allow(clippy::disallowed_methods)]

mod broker_support;

use std::time::Instant;

use broker_support::*;
use bytes::{Bytes, BytesMut};
use mqtt_core::broker::{
    Broker, BrokerConfig, ConnectionId, ConnectionInfo, DisconnectReason, Event, ProtocolViolation,
};
use mqtt_core::codec::{Auth, Disconnect, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

fn cfg() -> BrokerConfig {
    BrokerConfig {
        sys_events: false,
        ..Default::default()
    }
}

#[test]
fn mqtt_3_1_0_1_first_packet_must_be_connect() {
    let mut h = Harness::new(cfg());
    let c = h.open();
    h.send(c, Packet::PingReq);
    let (reason, _) = h.closed.get(&c).cloned().expect("closed");
    assert_eq!(
        reason,
        DisconnectReason::ProtocolError(ProtocolViolation::FirstPacketNotConnect(
            mqtt_core::codec::PacketType::PingReq
        ))
    );
    assert!(h.take(c).is_empty(), "nothing sent before CONNACK");
}

#[test]
fn mqtt_3_1_0_2_second_connect_is_a_protocol_error() {
    let mut h = Harness::new(cfg());
    let c5 = h.connect("a", ProtocolVersion::V5);
    h.send(
        c5,
        Packet::Connect(connect("a", ProtocolVersion::V5, true, 0)),
    );
    assert!(h.is_closed(c5));
    let got = h.take(c5);
    assert!(
        matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PROTOCOL_ERROR)
    );
    let c3 = h.connect("b", ProtocolVersion::V3_1_1);
    h.send(
        c3,
        Packet::Connect(connect("b", ProtocolVersion::V3_1_1, true, 0)),
    );
    assert!(h.is_closed(c3));
    assert!(h.take(c3).is_empty(), "3.1.1: plain close");
}

#[test]
fn mqtt_3_1_2_2_unsupported_protocol_level_gets_connack_0x01() {
    let t0 = Instant::now();
    let mut b = Broker::new(cfg(), t0);
    let c = ConnectionId(1);
    b.handle_connection_opened(c, ConnectionInfo::default(), t0);
    let mut rx = BytesMut::from(&b"\x10\x0c\x00\x04MQTT\x07\x02\x00\x3c\x00\x00"[..]);
    b.handle_read(c, &mut rx, t0);
    let t = b.poll_transmit().expect("CONNACK");
    assert_eq!(&t.data[..], &[0x20, 0x02, 0x00, 0x01]);
    assert!(matches!(
        b.poll_event(),
        Some(Event::CloseConnection { .. })
    ));
}

#[test]
fn v5_empty_client_id_is_assigned_and_returned_deterministically() {
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let mut h = Harness::new(BrokerConfig {
                rng_seed: 42,
                ..cfg()
            });
            let (_, ack) = h.connect_with(connect("", ProtocolVersion::V5, true, 0));
            assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
            ack.properties
                .assigned_client_identifier
                .expect("Assigned Client Identifier (MQTT-3.2.2-16)")
                .to_string()
        })
        .collect();
    assert_eq!(ids[0], ids[1], "same seed, same id");
    assert!(ids[0].starts_with("sansmq-"));
}

#[test]
fn mqtt_3_1_3_7_and_8_empty_client_id_in_3_1_1() {
    let mut h = Harness::new(cfg());
    // MQTT-3.1.3-6/-7: accepted with Clean Session 1, no id returned.
    let (_, ack) = h.connect_with(connect("", ProtocolVersion::V3_1_1, true, 0));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(ack.properties.assigned_client_identifier, None);
    // MQTT-3.1.3-8: refused with 0x02 and closed with Clean Session 0 (MQTT-3.2.2-4 session present 0).
    let (c, ack) = h.connect_with(connect("", ProtocolVersion::V3_1_1, false, 0));
    assert_eq!(ack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(!ack.session_present);
    assert!(h.is_closed(c));
}

#[test]
fn mqtt_3_1_client_ids_are_limited_to_23_bytes() {
    let mut h = Harness::new(cfg());
    let (c, ack) = h.connect_with(connect(&"x".repeat(24), ProtocolVersion::V3_1, true, 0));
    assert_eq!(ack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(h.is_closed(c));
    let (_, ack) = h.connect_with(connect(&"x".repeat(23), ProtocolVersion::V3_1, true, 0));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    let (_, ack) = h.connect_with(connect("", ProtocolVersion::V3_1, true, 0));
    assert_eq!(ack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
}

#[test]
fn mqtt_3_2_2_2_and_3_session_present_flag() {
    let mut h = Harness::new(cfg());
    // MQTT-3.2.2-3 (no session yet) -> 0.
    let mut c = connect("s", ProtocolVersion::V5, false, 0);
    c.properties.session_expiry_interval = Some(100);
    let (conn, ack) = h.connect_with(c.clone());
    assert!(!ack.session_present);
    h.send(conn, Packet::Disconnect(Disconnect::default()));
    // Session kept -> 1.
    let (conn, ack) = h.connect_with(c.clone());
    assert!(ack.session_present, "MQTT-3.2.2-3");
    h.send(conn, Packet::Disconnect(Disconnect::default()));
    // MQTT-3.2.2-2: Clean Start 1 -> 0 and the old session is gone.
    c.clean_start = true;
    let (_, ack) = h.connect_with(c);
    assert!(!ack.session_present);
    // 3.1.1 (MQTT-3.2.2-1 / -2).
    let (conn, ack) = h.connect_with(connect("t", ProtocolVersion::V3_1_1, false, 0));
    assert!(!ack.session_present);
    h.send(conn, Packet::Disconnect(Disconnect::default()));
    let (_, ack) = h.connect_with(connect("t", ProtocolVersion::V3_1_1, false, 0));
    assert!(ack.session_present);
}

#[test]
fn mqtt_3_1_4_3_takeover_sends_0x8e_and_inherits_the_session() {
    let mut h = Harness::new(cfg());
    let mut c = connect("dev", ProtocolVersion::V5, false, 0);
    c.properties.session_expiry_interval = Some(600);
    let (old, _) = h.connect_with(c.clone());
    h.subscribe(old, "cmd", QoS::AtLeastOnce);
    let (new, ack) = h.connect_with(c);
    assert!(ack.session_present);
    let got = h.take(old);
    assert!(
        matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::SESSION_TAKEN_OVER)
    );
    assert!(matches!(
        h.closed.get(&old),
        Some((DisconnectReason::SessionTakenOver { by }, _)) if *by == new
    ));
    let p = h.connect("p", ProtocolVersion::V5);
    h.publish(p, "cmd", "go", QoS::AtLeastOnce, 1);
    assert_eq!(h.publishes(new).len(), 1, "subscription inherited");
    // 3.1.1: MQTT-3.1.4-2, the old connection is closed without a packet.
    let (old3, _) = h.connect_with(connect("dev3", ProtocolVersion::V3_1_1, false, 0));
    let (_new3, _) = h.connect_with(connect("dev3", ProtocolVersion::V3_1_1, false, 0));
    assert!(h.is_closed(old3));
    assert!(h.take(old3).is_empty());
}

fn with_will(id: &str, version: ProtocolVersion, retain: bool) -> mqtt_core::codec::Connect {
    let mut c = connect(id, version, true, 0);
    c.will = Some(will(&format!("will/{id}"), "bye", QoS::AtLeastOnce, retain));
    c
}

#[test]
fn will_not_sent_after_normal_disconnect() {
    // 3.1.1 MQTT-3.1.2-10 / 5.0 MQTT-3.1.2-8: DISCONNECT 0x00 deletes the will.
    let mut h = Harness::new(cfg());
    let w = h.connect("w", ProtocolVersion::V5);
    h.subscribe(w, "will/#", QoS::AtLeastOnce);
    for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let (c, _) = h.connect_with(with_will("a", v, false));
        h.send(c, Packet::Disconnect(Disconnect::default()));
        assert!(h.is_closed(c));
        assert!(h.take(c).is_empty(), "no DISCONNECT back (MQTT-3.14.4-?)");
    }
    assert!(h.publishes(w).is_empty());
}

#[test]
fn v5_disconnect_with_will_message_0x04_sends_it() {
    let mut h = Harness::new(cfg());
    let w = h.connect("w", ProtocolVersion::V5);
    h.subscribe(w, "will/#", QoS::AtLeastOnce);
    let (c, _) = h.connect_with(with_will("a", ProtocolVersion::V5, false));
    h.send(
        c,
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
            properties: Properties::default(),
        }),
    );
    assert_eq!(h.publishes(w).len(), 1);
}

#[test]
fn will_on_transport_close_and_will_retain() {
    // 3.1.1 MQTT-3.1.2-8: published when the connection closes without DISCONNECT;
    // MQTT-3.1.2-17: will retain 1 -> published as retained.
    let mut h = Harness::new(cfg());
    let w = h.connect("w", ProtocolVersion::V3_1_1);
    h.subscribe(w, "will/#", QoS::AtLeastOnce);
    let (c, _) = h.connect_with(with_will("a", ProtocolVersion::V3_1_1, true));
    h.broker.handle_connection_closed(c, h.now);
    h.pump();
    let got = h.publishes(w);
    assert_eq!(got.len(), 1);
    assert!(
        !got[0].retain,
        "live delivery clears RETAIN (3.1.1 MQTT-3.3.1-9)"
    );
    assert!(h.broker.retained_message("will/a").is_some());
    let late = h.connect("late", ProtocolVersion::V3_1_1);
    h.subscribe(late, "will/a", QoS::AtLeastOnce);
    let got = h.publishes(late);
    assert_eq!(got.len(), 1);
    assert!(got[0].retain);
    assert_eq!(h.broker.metrics().wills_published, 1);
}

#[test]
fn malformed_packet_closes_only_that_connection_with_0x81_and_will() {
    let mut h = Harness::new(cfg());
    let w = h.connect("w", ProtocolVersion::V5);
    h.subscribe(w, "#", QoS::AtMostOnce);
    let (bad, _) = h.connect_with(with_will("bad", ProtocolVersion::V5, false));
    let good = h.connect("good", ProtocolVersion::V5);
    // A PUBREL with reserved flags 0000 (MQTT-2.1.3-1).
    h.send_bytes(bad, &[0x60, 0x02, 0x00, 0x01]);
    let (reason, _) = h.closed.get(&bad).cloned().expect("closed");
    assert!(
        matches!(reason, DisconnectReason::MalformedPacket(_)),
        "{reason}"
    );
    assert!(reason.to_string().starts_with("malformed packet"));
    let got = h.take(bad);
    assert!(
        matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::MALFORMED_PACKET)
    );
    assert_eq!(h.publishes(w).len(), 1, "will published");
    h.publish(good, "x", "still here", QoS::AtMostOnce, 0);
    assert_eq!(h.publishes(w).len(), 1);
    assert!(!h.is_closed(good) && !h.is_closed(w));
}

#[test]
fn garbage_before_connect_is_a_plain_close() {
    let mut h = Harness::new(cfg());
    let c = h.open();
    h.send_bytes(c, &[0xff, 0xff, 0xff, 0xff, 0xff]);
    assert!(h.is_closed(c));
    assert!(h.take(c).is_empty());
}

#[test]
fn auth_is_answered_with_bad_authentication_method() {
    let mut h = Harness::new(cfg());
    let c = h.connect("a", ProtocolVersion::V5);
    // AUTH without an Authentication Method in CONNECT: protocol error (section 4.12).
    h.send(
        c,
        Packet::Auth(Auth {
            reason_code: ReasonCode::RE_AUTHENTICATE,
            properties: Properties::default(),
        }),
    );
    let got = h.take(c);
    assert!(
        matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PROTOCOL_ERROR)
    );
    // MQTT-4.12.0-1 / 3.2.2.2: an unsupported method gets CONNACK 0x8C.
    let mut conn = connect("b", ProtocolVersion::V5, true, 0);
    conn.properties.authentication_method = Some("SCRAM-SHA-1".into());
    let (c, ack) = h.connect_with(conn);
    assert_eq!(ack.reason_code, ReasonCode::BAD_AUTHENTICATION_METHOD);
    assert!(h.is_closed(c));
}

#[test]
fn server_only_packets_from_a_client_are_protocol_errors() {
    let mut h = Harness::new(cfg());
    let c = h.connect("a", ProtocolVersion::V5);
    h.send(c, Packet::PingResp);
    assert!(matches!(
        h.closed.get(&c),
        Some((
            DisconnectReason::ProtocolError(ProtocolViolation::ServerOnlyPacket(_)),
            _
        ))
    ));
}

#[test]
fn shutdown_sends_0x8b_to_v5_clients_and_closes_all() {
    let mut h = Harness::new(cfg());
    let a = h.connect("a", ProtocolVersion::V5);
    let b = h.connect("b", ProtocolVersion::V3_1_1);
    let pending = h.open();
    h.broker.shutdown(h.now);
    h.pump();
    assert!(
        matches!(h.take(a).as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::SERVER_SHUTTING_DOWN)
    );
    assert!(h.take(b).is_empty());
    for c in [a, b, pending] {
        assert!(matches!(
            h.closed.get(&c),
            Some((DisconnectReason::ServerShuttingDown, _))
        ));
    }
    assert_eq!(h.broker.connection_count(), 0);
    assert_eq!(h.broker.poll_timeout(), None);
}

#[test]
fn max_connections_refuses_extra_sockets() {
    let mut h = Harness::new(BrokerConfig {
        max_connections: 2,
        ..cfg()
    });
    let _a = h.open();
    let _b = h.open();
    let c = h.open();
    assert!(matches!(
        h.closed.get(&c),
        Some((DisconnectReason::ServerBusy(2), _))
    ));
    assert_eq!(h.broker.metrics().connections_refused, 1);
}

#[test]
fn disconnect_cannot_raise_session_expiry_from_zero() {
    // 5.0 section 3.14.2.2.2: a protocol error, DISCONNECT 0x82.
    let mut h = Harness::new(cfg());
    let c = h.connect("a", ProtocolVersion::V5);
    let props = Properties {
        session_expiry_interval: Some(10),
        ..Default::default()
    };
    h.send(
        c,
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::SUCCESS,
            properties: props,
        }),
    );
    assert!(
        matches!(h.take(c).as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PROTOCOL_ERROR)
    );
}

#[test]
fn session_expiry_is_exact_to_the_millisecond() {
    let mut h = Harness::new(cfg());
    let mut c = connect("s", ProtocolVersion::V5, true, 0);
    c.properties.session_expiry_interval = Some(10);
    let (conn, _) = h.connect_with(c);
    h.advance(ms(1234));
    let closed_at = h.now;
    h.broker.handle_connection_closed(conn, h.now);
    h.pump();
    h.advance_to(closed_at + ms(9999));
    assert!(h.broker.session_state("s").is_some());
    h.advance_to(closed_at + ms(10_000));
    assert!(
        h.broker.session_state("s").is_none(),
        "ended at exactly 10 s"
    );
}

#[test]
fn disconnect_can_change_session_expiry() {
    let mut h = Harness::new(cfg());
    let mut c = connect("s", ProtocolVersion::V5, true, 0);
    c.properties.session_expiry_interval = Some(10);
    let (conn, _) = h.connect_with(c);
    let props = Properties {
        session_expiry_interval: Some(2),
        ..Default::default()
    };
    h.send(
        conn,
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::SUCCESS,
            properties: props,
        }),
    );
    let t = h.now;
    h.advance_to(t + ms(1999));
    assert!(h.broker.session_state("s").is_some());
    h.advance_to(t + ms(2000));
    assert!(h.broker.session_state("s").is_none());
}

#[test]
fn v3_persistent_sessions_use_the_configured_expiry() {
    let mut h = Harness::new(BrokerConfig {
        v3_session_expiry: Some(secs(60)),
        ..cfg()
    });
    let (conn, _) = h.connect_with(connect("s", ProtocolVersion::V3_1_1, false, 0));
    h.broker.handle_connection_closed(conn, h.now);
    let t = h.now;
    h.advance_to(t + ms(59_999));
    assert!(h.broker.session_state("s").is_some());
    h.advance_to(t + secs(60));
    assert!(h.broker.session_state("s").is_none());
    // Clean session 1: gone at once.
    let (conn, _) = h.connect_with(connect("c", ProtocolVersion::V3_1_1, true, 0));
    h.broker.handle_connection_closed(conn, h.now);
    assert!(h.broker.session_state("c").is_none());
}

fn delayed_will(id: &str, delay: u32, expiry: u32) -> mqtt_core::codec::Connect {
    let mut c = connect(id, ProtocolVersion::V5, false, 0);
    c.properties.session_expiry_interval = Some(expiry);
    let mut w = will(&format!("will/{id}"), "late", QoS::AtMostOnce, false);
    w.properties.will_delay_interval = Some(delay);
    c.will = Some(w);
    c
}

#[test]
fn will_delay_is_exact_to_the_millisecond() {
    let mut h = Harness::new(cfg());
    let w = h.connect("w", ProtocolVersion::V5);
    h.subscribe(w, "will/#", QoS::AtMostOnce);
    let (c, _) = h.connect_with(delayed_will("a", 5, 100));
    h.broker.handle_connection_closed(c, h.now);
    let t = h.now;
    h.advance_to(t + ms(4999));
    assert!(h.publishes(w).is_empty());
    h.advance_to(t + ms(5000));
    assert_eq!(h.publishes(w).len(), 1);
}

#[test]
fn will_is_published_at_session_end_when_that_comes_first() {
    // 5.0 3.1.3.2.2: will delay 50 s, session expiry 3 s -> at 3 s.
    let mut h = Harness::new(cfg());
    let w = h.connect("w", ProtocolVersion::V5);
    h.subscribe(w, "will/#", QoS::AtMostOnce);
    let (c, _) = h.connect_with(delayed_will("a", 50, 3));
    h.broker.handle_connection_closed(c, h.now);
    let t = h.now;
    h.advance_to(t + ms(2999));
    assert!(h.publishes(w).is_empty());
    h.advance_to(t + ms(3000));
    assert_eq!(h.publishes(w).len(), 1);
    assert!(h.broker.session_state("a").is_none());
}

#[test]
fn reconnect_before_will_delay_cancels_the_will() {
    // MQTT-3.1.3-9 (5.0): no will if a new connection arrives within the delay.
    let mut h = Harness::new(cfg());
    let w = h.connect("w", ProtocolVersion::V5);
    h.subscribe(w, "will/#", QoS::AtMostOnce);
    let (c, _) = h.connect_with(delayed_will("a", 5, 100));
    h.broker.handle_connection_closed(c, h.now);
    h.advance(secs(4));
    let (_c2, ack) = h.connect_with(delayed_will("a", 5, 100));
    assert!(ack.session_present);
    h.advance(secs(60));
    assert!(h.publishes(w).is_empty());
}

#[test]
fn client_events_and_sys_topics() {
    let mut h = Harness::new(BrokerConfig::default());
    let w = h.connect("w", ProtocolVersion::V5);
    h.subscribe(w, "$SYS/brokers/+/clients/#", QoS::AtMostOnce);
    let c = h.connect("dev1", ProtocolVersion::V3_1_1);
    h.broker.handle_connection_closed(c, h.now);
    h.pump();
    let got = h.publishes(w);
    assert_eq!(got.len(), 2);
    assert_eq!(&*got[0].topic, "$SYS/brokers/sansmq/clients/dev1/connected");
    assert_eq!(
        &*got[1].topic,
        "$SYS/brokers/sansmq/clients/dev1/disconnected"
    );
    let json = String::from_utf8(got[1].payload.to_vec()).unwrap();
    assert!(
        json.contains("\"clientid\":\"dev1\"") && json.contains("transport"),
        "{json}"
    );
    // MQTT-4.7.2-1: '#' alone does not match $SYS topics.
    let all = h.connect("all", ProtocolVersion::V5);
    h.subscribe(all, "#", QoS::AtMostOnce);
    let _ = h.connect("dev2", ProtocolVersion::V5);
    assert!(h.publishes(all).is_empty());
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, Event::ClientConnected { client_id, .. } if &**client_id == "dev2")));
}

#[test]
fn clients_cannot_publish_to_sys() {
    let mut h = Harness::new(cfg());
    let w = h.connect("w", ProtocolVersion::V5);
    h.subscribe(w, "$SYS/#", QoS::AtMostOnce);
    let c = h.connect("c", ProtocolVersion::V5);
    h.publish(c, "$SYS/brokers/fake", "x", QoS::AtLeastOnce, 1);
    assert!(matches!(h.take(c).as_slice(), [Packet::PubAck(_)]));
    assert!(h.publishes(w).is_empty());
    let _ = Bytes::new();
}

/// Client ids under `$bridge/` and `$host/` name the broker's own sessions
/// (a bridge's local side, an embedding host): a peer using one would take
/// such a session over, so its CONNECT is refused (0x85; the server may
/// reject any client id, MQTT-3.1.3-9 / 3.1.3.1).
#[test]
fn reserved_client_ids_are_refused_from_peers_and_allowed_internally() {
    let mut h = Harness::new(cfg());
    for id in ["$bridge/cloud", "$host/1"] {
        for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let (c, ack) = h.connect_with(connect(id, version, true, 0));
            assert_eq!(
                ack.reason_code,
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                "{id} {version:?}"
            );
            assert!(h.is_closed(c));
        }
    }
    // A look-alike that is not under a reserved prefix is an ordinary id.
    let (_, ack) = h.connect_with(connect("$bridges", ProtocolVersion::V5, true, 0));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);

    // The program's own connection may use it.
    let conn = ConnectionId(9_000);
    let info = ConnectionInfo {
        internal: true,
        ..ConnectionInfo::default()
    };
    h.broker.handle_connection_opened(conn, info, h.now);
    h.pump();
    h.send(
        conn,
        Packet::Connect(connect("$host/1", ProtocolVersion::V5, true, 0)),
    );
    let got = h.take(conn);
    assert!(
        matches!(got.first(), Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::SUCCESS),
        "{got:?}"
    );
}
