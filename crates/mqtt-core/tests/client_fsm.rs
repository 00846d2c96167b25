//! `mqtt_core::client::Client` at packet level on virtual time: connect,
//! keep alive, QoS flows, the queue, reconnects and server errors. Each test
//! names the normative statements it checks.

// One real `Instant` per test is the origin of virtual time; the client never reads the clock.
#![allow(clippy::disallowed_methods)]

#[path = "client_support.rs"]
mod support;

use bytes::Bytes;
use mqtt_core::client::{
    Client, ClientConfig, ClientError, ClientEvent, ConnectionState, DropCause, KeepAlivePolicy,
    ProtocolError, TimerKind, TransportDeadReason,
};
use mqtt_core::codec::{
    ConnAck, DecodeError, Disconnect, Packet, Properties, ProtocolVersion, PubResponse, QoS,
    ReasonCode, SubAck, SubscriptionOptions, UnsubAck,
};
use support::*;

fn config(f: impl FnOnce(&mut ClientConfig)) -> ClientConfig {
    let mut c = ClientConfig {
        client_id: "c1".into(),
        ..Default::default()
    };
    f(&mut c);
    c
}

fn suback(id: u16, codes: &[u8]) -> Packet {
    Packet::SubAck(SubAck {
        packet_id: pid(id),
        reason_codes: codes.iter().map(|&c| ReasonCode(c)).collect(),
        properties: Properties::default(),
    })
}

fn sub(filter: &str, qos: QoS) -> Vec<(bytestring::ByteString, SubscriptionOptions)> {
    vec![(filter.into(), SubscriptionOptions::new(qos))]
}

// ----- CONNECT / CONNACK ----------------------------------------------------

#[test]
fn connect_v311_fields_and_connack() {
    let mut h = Harness::v311();
    h.client.handle_transport_up(h.now);
    let sent = h.drain();
    let [Packet::Connect(c)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(c.protocol_version, ProtocolVersion::V3_1_1);
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 60);
    assert_eq!(c.client_id, "c1");
    assert!(c.properties.is_empty(), "no properties in 3.1.1");
    assert_eq!(h.client.state(), ConnectionState::Connecting);
    assert_eq!(
        h.client.next_timeout(),
        Some((h.t0 + secs(10), TimerKind::ConnAck))
    );

    h.at(ms(30));
    let sent = h.feed(Packet::ConnAck(connack(false)));
    assert!(sent.is_empty());
    let events = h.take_events();
    let [ClientEvent::Connected(info)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert!(!info.session_present);
    assert_eq!(info.keep_alive, 60);
    assert_eq!(info.inflight_window, 100);
    // MQTT-3.1.2-23: keep alive counts from the last packet sent (CONNECT at t0).
    assert_eq!(
        h.client.next_timeout(),
        Some((h.t0 + secs(60), TimerKind::KeepAlive))
    );
}

#[test]
fn connect_v5_properties_and_server_overrides() {
    let mut h = Harness::new(config(|c| {
        c.client_id = "".into();
        c.clean_start = false;
        c.session_expiry_interval = 3600;
        c.receive_maximum = 10;
        c.maximum_packet_size = 4096;
        c.user_properties = vec![("site".into(), "edge".into())];
    }));
    h.client.handle_transport_up(h.now);
    let sent = h.drain();
    let [Packet::Connect(c)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(c.protocol_version, ProtocolVersion::V5);
    assert!(!c.clean_start);
    assert_eq!(c.properties.session_expiry_interval, Some(3600));
    assert_eq!(c.properties.receive_maximum, Some(10));
    assert_eq!(c.properties.maximum_packet_size, Some(4096));
    assert_eq!(c.properties.user_properties.len(), 1);

    let mut ack = connack(true);
    ack.properties.server_keep_alive = Some(20);
    ack.properties.assigned_client_identifier = Some("auto-7".into());
    ack.properties.receive_maximum = Some(5);
    ack.properties.maximum_qos = Some(QoS::AtLeastOnce);
    ack.properties.retain_available = Some(false);
    ack.properties.maximum_packet_size = Some(1000);
    h.feed(Packet::ConnAck(ack));
    let events = h.take_events();
    let [ClientEvent::Connected(info)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert!(info.session_present);
    assert_eq!(info.assigned_client_identifier.as_deref(), Some("auto-7"));
    // MQTT-3.2.2-21: the Server Keep Alive replaces ours.
    assert_eq!(info.keep_alive, 20);
    assert_eq!(h.client.keep_alive(), 20);
    assert_eq!(info.inflight_window, 5);
    assert_eq!(info.maximum_qos, QoS::AtLeastOnce);
    assert!(!info.retain_available);
    assert_eq!(info.maximum_packet_size, Some(1000));
    assert_eq!(
        h.client.next_timeout(),
        Some((h.t0 + secs(20), TimerKind::KeepAlive))
    );

    // The assigned id is reused so the session can resume.
    h.transport_down();
    h.client.handle_transport_up(h.now);
    let sent = h.drain();
    let [Packet::Connect(c)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(c.client_id, "auto-7");
    assert_eq!(h.client.client_id(), "auto-7");
}

#[test]
fn connect_refused_reports_reason_and_dies() {
    let mut h = Harness::v5();
    h.client.handle_transport_up(h.now);
    h.drain();
    h.feed(Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: ReasonCode::NOT_AUTHORIZED,
        properties: Properties::default(),
    }));
    let events = h.take_events();
    assert!(matches!(
        &events[0],
        ClientEvent::ConnectRefused { reason_code, .. } if *reason_code == ReasonCode::NOT_AUTHORIZED
    ));
    assert_eq!(
        events[1],
        ClientEvent::TransportDead(TransportDeadReason::ConnectRefused(
            ReasonCode::NOT_AUTHORIZED
        ))
    );
    assert_eq!(h.client.state(), ConnectionState::Dead);
    assert!(h.drain().is_empty(), "nothing sent after a refusal");
    assert_eq!(h.client.poll_timeout(), None);
}

#[test]
fn connack_timeout_is_exact() {
    let mut h = Harness::new(config(|c| c.connect_timeout = secs(7)));
    h.client.handle_transport_up(h.now);
    h.drain();
    let deadline = h.t0 + secs(7);
    assert_eq!(h.client.poll_timeout(), Some(deadline));
    // Early and spurious calls do nothing.
    h.client.handle_timeout(deadline - ms(1));
    h.client.handle_timeout(h.t0);
    assert_eq!(h.dead_reason(), None);
    h.client.handle_timeout(deadline);
    assert_eq!(h.dead_reason(), Some(TransportDeadReason::ConnAckTimeout));
}

#[test]
fn session_present_after_clean_start_is_a_protocol_error() {
    // MQTT-3.2.2-2 (5.0): clean start means session present = 0.
    let mut h = Harness::v5();
    h.client.handle_transport_up(h.now);
    h.drain();
    let sent = h.feed(Packet::ConnAck(connack(true)));
    assert!(matches!(
        sent.as_slice(),
        [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PROTOCOL_ERROR
    ));
    assert_eq!(
        h.dead_reason(),
        Some(TransportDeadReason::ProtocolError(
            ProtocolError::SessionPresentAfterCleanStart
        ))
    );
}

// ----- keep alive -----------------------------------------------------------

#[test]
fn pingreq_exactly_at_last_sent_plus_keep_alive_under_inbound_flood() {
    // MQTT-3.1.2-23: PINGREQ when keep alive passed since the last packet we
    // SENT; QoS 0 from the server arrives every 10 ms and must not move it.
    let mut h = Harness::new(config(|c| c.keep_alive = 10));
    h.connect(false); // CONNECT sent at t0
    let mut t = ms(10);
    let mut pings = Vec::new();
    while t <= secs(35) {
        pings.extend(
            h.run_until(t)
                .into_iter()
                .filter(|p| matches!(p, Packet::PingReq)),
        );
        if let Some((at, Packet::PingReq)) = h.sent.last() {
            // The server answers 50 ms later, in the middle of the flood.
            if *at + ms(50) == t {
                h.feed(Packet::PingResp);
            }
        }
        let sent = h.feed(server_publish("flood", QoS::AtMostOnce, None));
        assert!(sent.is_empty());
        t += ms(10);
    }
    let ping_times: Vec<_> = h
        .sent
        .iter()
        .filter(|(_, p)| matches!(p, Packet::PingReq))
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(ping_times, vec![secs(10), secs(20), secs(30)]);
    assert_eq!(pings.len(), 3);
    assert_eq!(h.dead_reason(), None);
    assert_eq!(h.client.stats().messages_received, 3500);
}

#[test]
fn outgoing_packets_postpone_pingreq_but_acks_of_a_flood_count_as_sent() {
    // Sending PUBACKs is sending (MQTT-3.1.2-23): the PINGREQ comes keep
    // alive after the last one.
    let mut h = Harness::new(config(|c| c.keep_alive = 10));
    h.connect(false);
    for i in 1..=300u16 {
        h.at(ms(u64::from(i) * 10));
        let sent = h.feed(server_publish("q1", QoS::AtLeastOnce, Some(i)));
        assert!(matches!(sent.as_slice(), [Packet::PubAck(a)] if a.packet_id.get() == i));
    }
    // Last PUBACK at 3 s.
    assert_eq!(
        h.client.next_timeout(),
        Some((h.t0 + secs(13), TimerKind::KeepAlive))
    );
    let sent = h.run_until(secs(13));
    assert_eq!(kinds(&sent), ["PINGREQ"]);
    assert_eq!(h.sent.last().map(|(t, _)| *t), Some(secs(13)));
}

#[test]
fn ping_timeout_is_exact_and_other_traffic_does_not_count() {
    let mut h = Harness::new(config(|c| {
        c.keep_alive = 30;
        c.ping_timeout = secs(5);
    }));
    h.connect(false);
    let sent = h.run_until(secs(30));
    assert_eq!(kinds(&sent), ["PINGREQ"]);
    assert_eq!(
        h.client.next_timeout(),
        Some((h.t0 + secs(35), TimerKind::PingResp))
    );
    // A publish from the server is not a PINGRESP.
    h.at(secs(33));
    h.feed(server_publish("t", QoS::AtMostOnce, None));
    h.client.handle_timeout(h.t0 + secs(35) - ms(1));
    assert_eq!(h.dead_reason(), None);
    h.run_until(secs(35));
    assert_eq!(h.dead_reason(), Some(TransportDeadReason::PingTimeout));
    assert_eq!(h.client.stats().ping_timeouts, 1);
    // No DISCONNECT on a dead link.
    assert_eq!(kinds(&h.drain()), Vec::<&str>::new());
}

#[test]
fn pingresp_clears_the_ping_timeout() {
    let mut h = Harness::new(config(|c| {
        c.keep_alive = 30;
        c.ping_timeout = secs(5);
    }));
    h.connect(false);
    h.run_until(secs(30));
    h.at(secs(31));
    h.feed(Packet::PingResp);
    assert_eq!(
        h.client.next_timeout(),
        Some((h.t0 + secs(60), TimerKind::KeepAlive))
    );
    let sent = h.run_until(secs(61));
    assert_eq!(kinds(&sent), ["PINGREQ"]);
    assert_eq!(h.dead_reason(), None);
}

#[test]
fn keep_alive_zero_disables_pings() {
    // MQTT-3.1.2-23 / 3.1.2.10: 0 turns keep alive off.
    let mut h = Harness::new(config(|c| c.keep_alive = 0));
    h.connect(false);
    assert_eq!(h.client.poll_timeout(), None);
    assert!(h.run_until(secs(3600)).is_empty());
}

#[test]
fn server_keep_alive_zero_disables_pings() {
    // MQTT-3.2.2-21: the Server Keep Alive wins, even when it is 0.
    let mut h = Harness::v5();
    let mut ack = connack(false);
    ack.properties.server_keep_alive = Some(0);
    h.connect_with(ack);
    assert_eq!(h.client.poll_timeout(), None);
}

#[test]
fn periodic_policy_pings_while_publishing() {
    let mut h = Harness::new(config(|c| {
        c.keep_alive = 10;
        c.keep_alive_policy = KeepAlivePolicy::Periodic;
    }));
    h.connect(false);
    for s in 1..=25u64 {
        h.at(secs(s) - ms(1));
        h.publish("t", b"x", QoS::AtMostOnce);
        h.drain();
        h.run_until(secs(s));
        if let Some((_, Packet::PingReq)) = h.sent.last() {
            h.feed(Packet::PingResp);
        }
    }
    let ping_times: Vec<_> = h
        .sent
        .iter()
        .filter(|(_, p)| matches!(p, Packet::PingReq))
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(ping_times, vec![secs(10), secs(20)]);
}

// ----- control before data --------------------------------------------------

#[test]
fn control_packets_overtake_10000_queued_qos1_publishes() {
    let mut h = Harness::new(config(|c| {
        c.keep_alive = 10;
        c.max_inflight = u16::MAX;
        c.max_queued_messages = 20_000;
    }));
    for _ in 0..10_000 {
        h.publish("data", b"0123456789", QoS::AtLeastOnce);
    }
    assert_eq!(h.client.queued_len(), 10_000);
    // Subscribing before the first connect is safe.
    let sub_id = h
        .client
        .subscribe(sub("cmd/#", QoS::AtLeastOnce), Properties::default(), h.now)
        .unwrap();
    h.client.handle_transport_up(h.now);
    assert_eq!(kinds(&h.drain()), ["CONNECT"]);
    h.client
        .handle_packet(Packet::ConnAck(connack(false)), h.now);
    // The runtime pulls three packets, then the socket is full.
    let first: Vec<_> = (0..3).filter_map(|_| h.client.poll_packet()).collect();
    assert_eq!(kinds(&first), ["SUBSCRIBE", "PUBLISH", "PUBLISH"]);
    assert!(matches!(&first[0], Packet::Subscribe(s) if s.packet_id == sub_id));

    // Meanwhile: the keep alive falls due, the app subscribes and
    // unsubscribes, the server sends a QoS 2 message.
    h.client.handle_timeout(h.t0 + secs(10));
    h.at(secs(10));
    h.client
        .subscribe(sub("more", QoS::AtMostOnce), Properties::default(), h.now)
        .unwrap();
    h.client
        .unsubscribe(vec!["cmd/#".into()], Properties::default(), h.now)
        .unwrap();
    h.client
        .handle_packet(server_publish("in", QoS::ExactlyOnce, Some(9)), h.now);
    let next: Vec<_> = (0..5).filter_map(|_| h.client.poll_packet()).collect();
    // PINGREQ first of all, then the control packets in order, then data.
    assert_eq!(
        kinds(&next),
        ["PINGREQ", "SUBSCRIBE", "UNSUBSCRIBE", "PUBREC", "PUBLISH"]
    );
    let rest = h.drain();
    assert_eq!(rest.len(), 10_000 - 3);
}

#[test]
fn poll_transmit_respects_the_byte_budget_so_control_can_interleave() {
    let mut h = Harness::new(config(|c| {
        c.max_inflight = u16::MAX;
        c.max_transmit_bytes = 1000;
    }));
    h.connect(false);
    for _ in 0..1000 {
        h.publish("data", &[7u8; 90], QoS::AtLeastOnce);
    }
    let first = h.client.poll_transmit().unwrap();
    assert!(first.len() <= 1000, "{}", first.len());
    assert!(first.len() > 800);
    h.client
        .subscribe(sub("x", QoS::AtMostOnce), Properties::default(), h.now)
        .unwrap();
    // The stashed tail of the previous call, if any, is one packet; the
    // SUBSCRIBE follows right after it.
    let second = h.client.poll_transmit().unwrap();
    let mut buf = bytes::BytesMut::from(&second[..]);
    let mut types = Vec::new();
    while let Some(p) = mqtt_core::codec::decode(&mut buf, ProtocolVersion::V5, u32::MAX).unwrap() {
        types.push(p.packet_type().name());
    }
    let pos = types.iter().position(|t| *t == "SUBSCRIBE").unwrap();
    assert!(pos <= 1, "{types:?}");
}

// ----- QoS flows ------------------------------------------------------------

#[test]
fn inflight_window_is_min_of_max_inflight_and_receive_maximum() {
    // 5.0 section 4.9 flow control: never more unacknowledged QoS 1/2
    // PUBLISH than the server's Receive Maximum.
    let mut h = Harness::new(config(|c| c.max_inflight = 10));
    let mut ack = connack(false);
    ack.properties.receive_maximum = Some(4);
    h.connect_with(ack);
    let ids: Vec<_> = (0..20)
        .map(|_| h.publish("t", b"p", QoS::AtLeastOnce).unwrap())
        .collect();
    let sent = h.drain();
    assert_eq!(publish_ids(&sent).len(), 4);
    assert_eq!(h.client.inflight_len(), 4);
    // QoS 0 behind a blocked QoS 1 keeps its place in line.
    h.publish("t", b"q0", QoS::AtMostOnce);
    assert!(h.drain().is_empty());
    let mut acked = 0;
    let mut total_sent = 4;
    while acked < 20 {
        let sent = h.feed(Packet::PubAck(ack_of(ids[acked])));
        acked += 1;
        total_sent += publish_ids(&sent).len();
        assert!(h.client.inflight_len() <= 4);
    }
    assert_eq!(total_sent, 21);
    let acks = h
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::PublishAcked { .. }))
        .count();
    assert_eq!(acks, 20);
    assert!(h.client.is_idle());
}

fn ack_of(id: mqtt_core::codec::PacketId) -> PubResponse {
    PubResponse::new(id)
}

#[test]
fn qos1_outgoing_flow() {
    // MQTT-4.3.2-1: QoS 1 PUBLISH carries a packet id and waits for PUBACK.
    let mut h = Harness::v5();
    h.connect(false);
    let id = h.publish("a/b", b"hello", QoS::AtLeastOnce).unwrap();
    let sent = h.drain();
    let [Packet::Publish(p)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(
        (p.packet_id, p.qos, p.dup),
        (Some(id), QoS::AtLeastOnce, false)
    );
    assert!(h.client.is_pending(id));
    h.feed(Packet::PubAck(ack(id)));
    let events = h.take_events();
    assert!(events.iter().any(|e| matches!(e,
        ClientEvent::PublishAcked { packet_id, qos: QoS::AtLeastOnce, reason_code, .. }
            if *packet_id == id && reason_code.is_success())));
    assert!(!h.client.is_pending(id));
}

#[test]
fn qos2_outgoing_flow() {
    // MQTT-4.3.3-1: PUBLISH, PUBREC, PUBREL, PUBCOMP; PUBLISH never resent after PUBREL.
    let mut h = Harness::v5();
    h.connect(false);
    let id = h.publish("a/b", b"hello", QoS::ExactlyOnce).unwrap();
    assert_eq!(kinds(&h.drain()), ["PUBLISH"]);
    let sent = h.feed(Packet::PubRec(ack(id)));
    assert!(matches!(sent.as_slice(), [Packet::PubRel(r)] if r.packet_id == id));
    // A repeated PUBREC gets another PUBREL.
    assert_eq!(kinds(&h.feed(Packet::PubRec(ack(id)))), ["PUBREL"]);
    // A PUBACK for a QoS 2 flow is a protocol error... checked elsewhere.
    h.feed(Packet::PubComp(ack(id)));
    let events = h.take_events();
    assert!(events.iter().any(|e| matches!(e,
        ClientEvent::PublishAcked { packet_id, qos: QoS::ExactlyOnce, .. } if *packet_id == id)));
    assert!(h.client.is_idle());
}

#[test]
fn qos2_pubrec_failure_ends_the_flow_without_pubrel() {
    // MQTT-4.3.3-4 (5.0): PUBREC >= 0x80 ends the flow; no PUBREL.
    let mut h = Harness::v5();
    h.connect(false);
    let id = h.publish("a", b"x", QoS::ExactlyOnce).unwrap();
    h.drain();
    let sent = h.feed(Packet::PubRec(PubResponse {
        reason_code: ReasonCode::QUOTA_EXCEEDED,
        ..ack(id)
    }));
    assert!(sent.is_empty());
    assert!(h.take_events().iter().any(|e| matches!(e,
        ClientEvent::PublishAcked { reason_code, .. } if *reason_code == ReasonCode::QUOTA_EXCEEDED)));
    assert!(h.client.is_idle());
}

#[test]
fn wrong_ack_type_is_a_protocol_error_and_unknown_acks_are_ignored() {
    let mut h = Harness::v5();
    h.connect(false);
    h.feed(Packet::PubAck(ack(pid(999))));
    h.feed(Packet::PubComp(ack(pid(998))));
    assert_eq!(h.client.stats().unknown_acks, 2);
    assert_eq!(h.dead_reason(), None);
    let id = h.publish("a", b"x", QoS::ExactlyOnce).unwrap();
    h.drain();
    let sent = h.feed(Packet::PubAck(ack(id)));
    assert!(matches!(sent.as_slice(),
        [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PROTOCOL_ERROR));
    assert!(matches!(
        h.dead_reason(),
        Some(TransportDeadReason::ProtocolError(
            ProtocolError::AckMismatch { .. }
        ))
    ));
}

#[test]
fn qos1_incoming_is_delivered_and_acked() {
    // MQTT-4.3.2-2 (3.1.1): answer QoS 1 with PUBACK.
    let mut h = Harness::v311();
    h.connect(false);
    let sent = h.feed(server_publish("in", QoS::AtLeastOnce, Some(42)));
    assert!(matches!(sent.as_slice(), [Packet::PubAck(a)] if a.packet_id == pid(42)));
    let msgs: Vec<_> = h
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::Message(_)))
        .collect();
    assert_eq!(msgs.len(), 1);
}

#[test]
fn qos2_incoming_is_delivered_exactly_once() {
    // MQTT-4.3.3-2 (3.1.1) / MQTT-4.3.3-10 (5.0): until PUBREL, a PUBLISH with
    // the same id is answered with PUBREC and not delivered again.
    let mut h = Harness::v5();
    h.connect(false);
    assert_eq!(
        kinds(&h.feed(server_publish("in", QoS::ExactlyOnce, Some(7)))),
        ["PUBREC"]
    );
    let mut dup = server_publish("in", QoS::ExactlyOnce, Some(7));
    if let Packet::Publish(p) = &mut dup {
        p.dup = true;
    }
    assert_eq!(kinds(&h.feed(dup)), ["PUBREC"]);
    let sent = h.feed(Packet::PubRel(ack(pid(7))));
    assert!(matches!(sent.as_slice(),
        [Packet::PubComp(c)] if c.packet_id == pid(7) && c.reason_code.is_success()));
    // After PUBREL the id is free: a new message with it is delivered.
    assert_eq!(
        kinds(&h.feed(server_publish("in", QoS::ExactlyOnce, Some(7)))),
        ["PUBREC"]
    );
    let delivered = h
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::Message(_)))
        .count();
    assert_eq!(delivered, 2);
    assert_eq!(h.client.stats().duplicates_suppressed, 1);
    // A PUBREL for an unknown id still gets PUBCOMP, 0x92 in 5.0.
    let sent = h.feed(Packet::PubRel(ack(pid(8))));
    assert!(matches!(sent.as_slice(),
        [Packet::PubComp(c)] if c.reason_code == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND));
}

#[test]
fn inbound_qos2_state_survives_a_reconnect_with_session() {
    // MQTT-4.4.0-1 from the server's side: it resends the PUBLISH (DUP) whose
    // PUBREC was lost; we must not deliver it twice.
    let mut h = Harness::new(config(|c| c.clean_start = false));
    h.connect(false);
    h.client
        .handle_packet(server_publish("in", QoS::ExactlyOnce, Some(3)), h.now);
    h.transport_down(); // the PUBREC never left
    h.connect(true);
    assert_eq!(
        kinds(&h.feed(server_publish("in", QoS::ExactlyOnce, Some(3)))),
        ["PUBREC"]
    );
    let delivered = h
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::Message(_)))
        .count();
    assert_eq!(delivered, 1);
}

#[test]
fn receive_maximum_exceeded_is_a_protocol_error() {
    // 5.0 section 4.9 / 3.3.4: more unacknowledged QoS 1/2 PUBLISH than our
    // Receive Maximum -> DISCONNECT 0x93.
    let mut h = Harness::new(config(|c| c.receive_maximum = 2));
    h.connect(false);
    // The runtime has not written our PUBACKs yet: all three are unacked.
    for id in 1..=3 {
        h.client
            .handle_packet(server_publish("in", QoS::AtLeastOnce, Some(id)), h.now);
    }
    let sent = h.drain();
    assert!(matches!(sent.as_slice(),
        [Packet::Disconnect(d)] if d.reason_code == ReasonCode::RECEIVE_MAXIMUM_EXCEEDED));
    assert_eq!(
        h.dead_reason(),
        Some(TransportDeadReason::ProtocolError(
            ProtocolError::ReceiveMaximumExceeded
        ))
    );
}

// ----- reconnect ------------------------------------------------------------

/// Three messages in three states at the moment the link breaks:
/// #a QoS 1 unacked, #b QoS 2 before PUBREC, #c QoS 2 after PUBREC.
fn three_in_flight(h: &mut Harness) -> [mqtt_core::codec::PacketId; 3] {
    if !h.client.is_connected() {
        h.connect(false);
    }
    let a = h.publish("t/a", b"a", QoS::AtLeastOnce).expect("QoS 1/2");
    let b = h.publish("t/b", b"b", QoS::ExactlyOnce).expect("QoS 1/2");
    let c = h.publish("t/c", b"c", QoS::ExactlyOnce).expect("QoS 1/2");
    assert_eq!(publish_ids(&h.drain()).len(), 3);
    assert_eq!(kinds(&h.feed(Packet::PubRec(ack(c)))), ["PUBREL"]);
    h.transport_down();
    [a, b, c]
}

#[test]
fn reconnect_with_session_resends_dup_publish_and_pubrel() {
    // MQTT-4.4.0-1 (5.0) / MQTT-4.4.0-1 (3.1.1): resend unacknowledged PUBLISH
    // (DUP = 1, MQTT-3.3.1-1) and PUBREL, original packet ids, original order
    // (MQTT-4.6.0-1).
    let mut h = Harness::new(config(|c| c.clean_start = false));
    let [a, b, c] = three_in_flight(&mut h);
    // A new message published while down goes after the resends.
    let d = h.publish("t/d", b"d", QoS::AtLeastOnce).unwrap();
    h.take_events();
    let sent = h.connect(true);
    assert_eq!(kinds(&sent), ["PUBREL", "PUBLISH", "PUBLISH", "PUBLISH"]);
    assert!(matches!(&sent[0], Packet::PubRel(r) if r.packet_id == c));
    assert_eq!(
        publish_ids(&sent),
        vec![(a.get(), true), (b.get(), true), (d.get(), false)]
    );
    assert_eq!(h.client.stats().resent_dup, 2);
    // No Republishing / Resubscribing events with a session.
    assert!(!h.take_events().iter().any(|e| matches!(
        e,
        ClientEvent::Republishing { .. } | ClientEvent::Resubscribing { .. }
    )));
    for id in [a, d] {
        h.feed(Packet::PubAck(ack(id)));
    }
    h.feed(Packet::PubRec(ack(b)));
    h.feed(Packet::PubComp(ack(b)));
    h.feed(Packet::PubComp(ack(c)));
    assert!(h.client.is_idle());
}

#[test]
fn reconnect_without_session_republishes_and_resubscribes() {
    let mut h = Harness::new(config(|c| c.clean_start = false));
    // Two confirmed subscriptions with different properties, one refused.
    h.connect(false);
    let props = Properties {
        subscription_identifiers: vec![5],
        ..Default::default()
    };
    let s1 = h
        .client
        .subscribe(sub("a/#", QoS::AtLeastOnce), props, h.now)
        .unwrap();
    let s2 = h
        .client
        .subscribe(
            vec![
                ("b/+".into(), SubscriptionOptions::new(QoS::ExactlyOnce)),
                ("bad".into(), SubscriptionOptions::new(QoS::AtMostOnce)),
            ],
            Properties::default(),
            h.now,
        )
        .unwrap();
    h.drain();
    h.feed(suback(s1.get(), &[1]));
    h.feed(suback(s2.get(), &[2, 0x87]));
    let filters: Vec<_> = h
        .client
        .subscriptions()
        .map(|(f, _)| f.to_string())
        .collect();
    assert_eq!(filters, ["a/#", "b/+"]);
    // Three in-flight messages, then the link breaks and the session is gone.
    let [a, b, c] = three_in_flight(&mut h);
    h.take_events();
    let sent = h.connect(false);
    // The PUBREC'd message counts as delivered; the others go out as new
    // PUBLISH (DUP = 0); both subscriptions are re-issued first.
    assert_eq!(
        kinds(&sent),
        ["SUBSCRIBE", "SUBSCRIBE", "PUBLISH", "PUBLISH"]
    );
    assert_eq!(publish_ids(&sent), vec![(a.get(), false), (b.get(), false)]);
    let events = h.take_events();
    assert!(events.iter().any(|e| matches!(e,
        ClientEvent::PublishAcked { packet_id, .. } if *packet_id == c)));
    assert!(events.iter().any(|e| matches!(e,
        ClientEvent::Republishing { packet_ids } if *packet_ids == vec![a, b])));
    let resubs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Resubscribing { filters, .. } => Some(filters.clone()),
            _ => None,
        })
        .collect();
    let resubs: Vec<Vec<String>> = resubs
        .iter()
        .map(|f| f.iter().map(|s| s.to_string()).collect())
        .collect();
    assert_eq!(resubs, [["a/#"], ["b/+"]]);
    let Packet::Subscribe(first) = &sent[0] else {
        unreachable!()
    };
    assert_eq!(first.properties.subscription_identifiers, vec![5]);
    assert_eq!(h.client.stats().republished, 2);
    assert_eq!(h.client.stats().resubscribes, 2);

    // Broken again before the SUBACKs: the pending resubscriptions are sent
    // again as they are, not doubled by another resubscription.
    h.transport_down();
    let sent = h.connect(false);
    assert_eq!(
        kinds(&sent),
        ["SUBSCRIBE", "SUBSCRIBE", "PUBLISH", "PUBLISH"]
    );
    assert_eq!(h.client.stats().resubscribes, 2);
}

#[test]
fn subscribe_before_first_connect_takes_effect_after_connack() {
    let mut h = Harness::v311();
    let id = h
        .client
        .subscribe(sub("cmd/#", QoS::AtLeastOnce), Properties::default(), h.now)
        .unwrap();
    let uid = h
        .client
        .unsubscribe(vec!["old".into()], Properties::default(), h.now)
        .unwrap();
    let p = h.publish("hello", b"1", QoS::AtLeastOnce).unwrap();
    // Nothing goes out without a transport, and nothing breaks.
    assert!(h.drain().is_empty());
    h.client.handle_timeout(h.t0 + secs(3600));
    h.transport_down();
    h.at(secs(5));
    let sent = h.connect(false);
    assert_eq!(kinds(&sent), ["SUBSCRIBE", "UNSUBSCRIBE", "PUBLISH"]);
    assert!(matches!(&sent[0], Packet::Subscribe(s) if s.packet_id == id));
    h.feed(suback(id.get(), &[1]));
    h.feed(Packet::UnsubAck(UnsubAck {
        packet_id: uid,
        reason_codes: vec![],
        properties: Properties::default(),
    }));
    h.feed(Packet::PubAck(ack(p)));
    let events = h.take_events();
    assert!(events
        .iter()
        .any(|e| matches!(e, ClientEvent::Subscribed(s) if s.packet_id == id)));
    assert!(events
        .iter()
        .any(|e| matches!(e, ClientEvent::Unsubscribed(u) if u.packet_id == uid)));
    assert!(h.client.is_idle());
}

#[test]
fn pending_subscribe_survives_a_broken_connection() {
    let mut h = Harness::v5();
    h.connect(false);
    let id = h
        .client
        .subscribe(sub("x", QoS::AtMostOnce), Properties::default(), h.now)
        .unwrap();
    assert_eq!(kinds(&h.drain()), ["SUBSCRIBE"]);
    h.transport_down();
    let sent = h.connect(false);
    // Not confirmed, so not a resubscription: the original request is resent.
    assert!(matches!(sent.as_slice(), [Packet::Subscribe(s)] if s.packet_id == id));
}

// ----- the bounded queue ----------------------------------------------------

#[test]
fn full_queue_evicts_oldest_qos0_then_refuses() {
    let mut h = Harness::new(config(|c| c.max_queued_messages = 3));
    h.publish("t", b"q0-a", QoS::AtMostOnce);
    h.publish("t", b"q0-b", QoS::AtMostOnce);
    let q1 = h.publish("t", b"q1-a", QoS::AtLeastOnce).unwrap();
    // Full: the oldest QoS 0 makes room.
    h.publish("t", b"q1-b", QoS::AtLeastOnce).unwrap();
    let events = h.take_events();
    let [ClientEvent::Dropped {
        message,
        cause: DropCause::QueueFull,
    }] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert_eq!(&message.payload[..], b"q0-a");
    h.publish("t", b"q1-c", QoS::AtLeastOnce).unwrap();
    // Only QoS 1 left: refused, and the message comes back.
    let err = h
        .client
        .publish(
            "t".into(),
            Bytes::from_static(b"q1-d"),
            QoS::AtLeastOnce,
            false,
            Properties::default(),
            h.now,
        )
        .unwrap_err();
    let ClientError::QueueFull {
        message, messages, ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(&message.payload[..], b"q1-d");
    assert_eq!(messages, 3);
    // A QoS 0 is refused too rather than evicting nothing.
    assert!(matches!(
        h.client.publish(
            "t".into(),
            Bytes::new(),
            QoS::AtMostOnce,
            false,
            Properties::default(),
            h.now
        ),
        Err(ClientError::QueueFull { .. })
    ));
    let stats = *h.client.stats();
    assert_eq!((stats.dropped_queue_full, stats.refused_queue_full), (2, 2));
    assert!(h.client.is_pending(q1));
    // Everything accepted goes out after connecting.
    let sent = h.connect(false);
    assert_eq!(publish_ids(&sent).len(), 3);
}

#[test]
fn queue_byte_bound() {
    let mut h = Harness::new(config(|c| c.max_queued_bytes = 100));
    h.publish("t", &[0; 40], QoS::AtMostOnce); // 41 bytes
    h.publish("t", &[0; 40], QoS::AtLeastOnce); // 82
    assert_eq!(h.client.queued_bytes(), 82);
    // 41 more: evict the QoS 0.
    h.publish("t", &[0; 40], QoS::AtLeastOnce);
    assert_eq!(h.client.queued_bytes(), 82);
    assert!(matches!(
        h.client.publish(
            "t".into(),
            Bytes::from_static(&[0; 40]),
            QoS::AtLeastOnce,
            false,
            Properties::default(),
            h.now
        ),
        Err(ClientError::QueueFull { .. })
    ));
    // Bigger than the whole queue: refused outright, nothing evicted.
    let mut h = Harness::new(config(|c| c.max_queued_bytes = 100));
    h.publish("t", &[0; 10], QoS::AtMostOnce);
    assert!(matches!(
        h.client.publish(
            "t".into(),
            Bytes::from_static(&[0; 200]),
            QoS::AtMostOnce,
            false,
            Properties::default(),
            h.now
        ),
        Err(ClientError::QueueFull { .. })
    ));
    assert_eq!(h.client.queued_len(), 1);
}

// ----- server limits --------------------------------------------------------

#[test]
fn server_maximum_packet_size_refuses_or_drops() {
    // MQTT-3.2.2-15: never send a packet over the server's Maximum Packet Size.
    let mut h = Harness::v5();
    let queued = h.publish("t", &[0; 200], QoS::AtLeastOnce).unwrap();
    let small = h.publish("t", &[0; 10], QoS::AtLeastOnce).unwrap();
    let mut ack = connack(false);
    ack.properties.maximum_packet_size = Some(100);
    let sent = h.connect_with(ack);
    assert_eq!(publish_ids(&sent), vec![(small.get(), false)]);
    let events = h.take_events();
    assert!(events.iter().any(|e| matches!(e,
        ClientEvent::Dropped { message, cause: DropCause::PacketTooLarge { max: 100, .. } }
            if message.packet_id == Some(queued))));
    assert!(!h.client.is_pending(queued));
    // Known limit: refused at the call.
    assert!(matches!(
        h.client.publish(
            "t".into(),
            Bytes::from_static(&[0; 200]),
            QoS::AtMostOnce,
            false,
            Properties::default(),
            h.now
        ),
        Err(ClientError::PacketTooLarge { max: 100, .. })
    ));
}

#[test]
fn server_maximum_qos_and_retain_available_downgrade() {
    // MQTT-3.2.2-11: not above Maximum QoS; MQTT-3.2.2-14: no RETAIN when
    // Retain Available is 0. Decision: downgrade, not refuse.
    let mut h = Harness::v5();
    let q2 = h.publish("t", b"x", QoS::ExactlyOnce).unwrap();
    h.client
        .publish(
            "r".into(),
            Bytes::from_static(b"y"),
            QoS::AtMostOnce,
            true,
            Properties::default(),
            h.now,
        )
        .unwrap();
    let mut ack = connack(false);
    ack.properties.maximum_qos = Some(QoS::AtLeastOnce);
    ack.properties.retain_available = Some(false);
    let sent = h.connect_with(ack);
    let [Packet::Publish(a), Packet::Publish(b)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!((a.qos, a.packet_id), (QoS::AtLeastOnce, Some(q2)));
    assert!(!b.retain);
    assert_eq!(h.client.stats().downgraded, 2);
    h.feed(Packet::PubAck(ack_of(q2)));
    assert!(h.take_events().iter().any(|e| matches!(e,
        ClientEvent::PublishAcked { packet_id, qos: QoS::AtLeastOnce, .. } if *packet_id == q2)));

    // Maximum QoS 0: sent without a packet id; its flow ends on sending.
    let mut h = Harness::v5();
    let q1 = h.publish("t", b"x", QoS::AtLeastOnce).unwrap();
    let mut ack = connack(false);
    ack.properties.maximum_qos = Some(QoS::AtMostOnce);
    let sent = h.connect_with(ack);
    assert!(
        matches!(sent.as_slice(), [Packet::Publish(p)] if p.qos == QoS::AtMostOnce && p.packet_id.is_none())
    );
    assert!(h.take_events().iter().any(|e| matches!(e,
        ClientEvent::PublishAcked { packet_id, qos: QoS::AtMostOnce, .. } if *packet_id == q1)));
    assert!(h.client.is_idle());
}

// ----- errors from the server -----------------------------------------------

#[test]
fn malformed_bytes_kill_the_transport_without_panic() {
    for version in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        let mut h = Harness::new(config(|c| c.protocol_version = version));
        h.connect(false);
        // PUBLISH with QoS 3 (MQTT-3.3.1-4).
        let mut buf = bytes::BytesMut::from(&[0x36u8, 0x03, 0x00, 0x01, b'a'][..]);
        h.client.handle_read(&mut buf, h.now);
        let sent = h.drain();
        assert_eq!(
            h.dead_reason(),
            Some(TransportDeadReason::ProtocolError(ProtocolError::Decode(
                DecodeError::InvalidQoS
            )))
        );
        if version.is_v5() {
            // MQTT-4.13.1-1 style: DISCONNECT with 0x81 Malformed Packet.
            assert!(matches!(sent.as_slice(),
                [Packet::Disconnect(d)] if d.reason_code == ReasonCode::MALFORMED_PACKET));
        } else {
            assert!(sent.is_empty(), "3.1.1 closes without DISCONNECT");
        }
        // Further input is ignored until the transport is down.
        let mut more = bytes::BytesMut::from(&[0xFFu8; 16][..]);
        h.client.handle_read(&mut more, h.now);
        assert_eq!(h.client.state(), ConnectionState::Dead);
        h.transport_down();
        assert_eq!(h.client.state(), ConnectionState::Disconnected);
    }
}

#[test]
fn oversized_inbound_packet_is_refused_before_buffering() {
    let mut h = Harness::new(config(|c| c.maximum_packet_size = 1024));
    h.connect(false);
    // Fixed header announcing 1 MB.
    let mut buf = bytes::BytesMut::from(&[0x30u8, 0x80, 0x80, 0x40][..]);
    h.client.handle_read(&mut buf, h.now);
    let sent = h.drain();
    assert!(matches!(sent.as_slice(),
        [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PACKET_TOO_LARGE));
}

#[test]
fn unexpected_packets_are_protocol_errors() {
    // MQTT-3.2.0-1: CONNACK comes first.
    let mut h = Harness::v5();
    h.client.handle_transport_up(h.now);
    h.drain();
    h.feed(server_publish("t", QoS::AtMostOnce, None));
    assert!(matches!(
        h.dead_reason(),
        Some(TransportDeadReason::ProtocolError(
            ProtocolError::UnexpectedPacket(_)
        ))
    ));
    // A server never sends SUBSCRIBE or PINGREQ, nor a second CONNACK.
    for p in [
        Packet::PingReq,
        Packet::ConnAck(connack(false)),
        Packet::Subscribe(mqtt_core::codec::Subscribe {
            packet_id: pid(1),
            filters: sub("x", QoS::AtMostOnce),
            properties: Properties::default(),
        }),
    ] {
        let mut h = Harness::v5();
        h.connect(false);
        let sent = h.feed(p);
        assert!(matches!(sent.as_slice(),
            [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PROTOCOL_ERROR));
    }
}

#[test]
fn topic_alias_from_server_is_refused() {
    let mut h = Harness::v5();
    h.connect(false);
    let mut p = server_publish("t", QoS::AtMostOnce, None);
    if let Packet::Publish(p) = &mut p {
        p.properties.topic_alias = Some(1);
    }
    let sent = h.feed(p);
    assert!(matches!(sent.as_slice(),
        [Packet::Disconnect(d)] if d.reason_code == ReasonCode::TOPIC_ALIAS_INVALID));
}

#[test]
fn suback_with_wrong_code_count_is_a_protocol_error() {
    // MQTT-3.8.4-6: one reason code per filter.
    let mut h = Harness::v5();
    h.connect(false);
    let id = h
        .client
        .subscribe(sub("x", QoS::AtMostOnce), Properties::default(), h.now)
        .unwrap();
    h.drain();
    h.feed(suback(id.get(), &[0, 0]));
    assert!(matches!(
        h.dead_reason(),
        Some(TransportDeadReason::ProtocolError(
            ProtocolError::ReasonCodeCountMismatch { .. }
        ))
    ));
}

#[test]
fn server_disconnect_is_reported() {
    let mut h = Harness::v5();
    h.connect(false);
    let mut d = Disconnect {
        reason_code: ReasonCode::SERVER_SHUTTING_DOWN,
        properties: Properties::default(),
    };
    d.properties.reason_string = Some("bye".into());
    let sent = h.feed(Packet::Disconnect(d));
    assert!(
        sent.is_empty(),
        "nothing sent after the server's DISCONNECT"
    );
    assert_eq!(
        h.dead_reason(),
        Some(TransportDeadReason::ServerDisconnect {
            reason_code: ReasonCode::SERVER_SHUTTING_DOWN,
            reason_string: Some("bye".into()),
            server_reference: None,
        })
    );
}

// ----- disconnect -----------------------------------------------------------

#[test]
fn graceful_disconnect_flushes_acks_then_stops() {
    let mut h = Harness::v5();
    h.connect(false);
    h.client
        .handle_packet(server_publish("in", QoS::AtLeastOnce, Some(1)), h.now);
    let queued = h.publish("t", b"later", QoS::AtLeastOnce).unwrap();
    h.client
        .disconnect(
            ReasonCode::NORMAL_DISCONNECTION,
            Properties::default(),
            h.now,
        )
        .unwrap();
    assert_eq!(h.client.state(), ConnectionState::Closing);
    let sent = h.drain();
    // MQTT-3.14.4-1: nothing after DISCONNECT; the queued PUBLISH stays.
    assert_eq!(kinds(&sent), ["PUBACK", "DISCONNECT"]);
    assert_eq!(h.dead_reason(), Some(TransportDeadReason::ClientDisconnect));
    assert!(h.client.is_pending(queued));
    h.transport_down();
    let sent = h.connect(false);
    assert_eq!(publish_ids(&sent), vec![(queued.get(), false)]);
    // 5.0 section 3.14.2.2.2: no Session Expiry Interval raise from 0 in DISCONNECT.
    let props = Properties {
        session_expiry_interval: Some(10),
        ..Default::default()
    };
    assert_eq!(
        h.client.disconnect(ReasonCode::SUCCESS, props, h.now),
        Err(ClientError::SessionExpiryAfterZero)
    );
}

#[test]
fn invalid_commands_are_refused() {
    let mut h = Harness::v5();
    assert!(matches!(
        h.client.publish(
            "a/+".into(),
            Bytes::new(),
            QoS::AtMostOnce,
            false,
            Properties::default(),
            h.now
        ),
        Err(ClientError::InvalidTopicName(_))
    ));
    assert!(matches!(
        h.client
            .subscribe(sub("a/#/b", QoS::AtMostOnce), Properties::default(), h.now),
        Err(ClientError::InvalidTopicFilter { .. })
    ));
    assert_eq!(
        h.client.subscribe(vec![], Properties::default(), h.now),
        Err(ClientError::NoTopicFilters)
    );
    assert!(matches!(
        Client::new(
            ClientConfig {
                max_inflight: 0,
                ..Default::default()
            },
            h.t0
        ),
        Err(mqtt_core::client::ConfigError::ZeroMaxInflight)
    ));
}

#[test]
fn packet_ids_are_never_reused_while_in_use() {
    // MQTT-2.2.1-3 (3.1.1) / 2.2.1: a packet id is reusable only after its flow ends.
    let mut h = Harness::new(config(|c| {
        c.max_queued_messages = 70_000;
        c.max_queued_bytes = usize::MAX;
    }));
    let mut ids = std::collections::HashSet::new();
    for _ in 0..u16::MAX {
        assert!(ids.insert(h.publish("t", b"", QoS::AtLeastOnce).unwrap()));
    }
    assert_eq!(
        h.client.publish(
            "t".into(),
            Bytes::new(),
            QoS::AtLeastOnce,
            false,
            Properties::default(),
            h.now
        ),
        Err(ClientError::PacketIdsExhausted)
    );
    // QoS 0 needs no id.
    assert_eq!(h.publish("t", b"", QoS::AtMostOnce), None);
    h.connect(false);
    let first = *h
        .sent
        .iter()
        .find_map(|(_, p)| match p {
            Packet::Publish(p) => p.packet_id.as_ref(),
            _ => None,
        })
        .unwrap();
    h.feed(Packet::PubAck(ack(first)));
    assert_eq!(h.publish("t", b"", QoS::AtLeastOnce), Some(first));
}

#[test]
fn client_is_send_and_transport_up_twice_restarts_cleanly() {
    fn assert_send<T: Send>() {}
    assert_send::<Client>();
    // A runtime that forgets handle_transport_down: the old connection's
    // in-flight message is still resent on the new one.
    let mut h = Harness::new(config(|c| c.clean_start = false));
    h.connect(false);
    let id = h.publish("t", b"x", QoS::AtLeastOnce).expect("QoS 1");
    h.drain();
    let sent = h.connect(true);
    assert_eq!(publish_ids(&sent), vec![(id.get(), true)]);
}

#[test]
fn commands_while_dead_wait_for_the_next_connection() {
    let mut h = Harness::v5();
    h.connect(false);
    h.feed(Packet::PingReq); // protocol error -> Dead
    assert_eq!(h.client.state(), ConnectionState::Dead);
    let id = h.publish("t", b"x", QoS::ExactlyOnce).expect("QoS 2");
    let sub_id = h
        .client
        .subscribe(sub("s", QoS::AtMostOnce), Properties::default(), h.now)
        .expect("valid");
    assert_eq!(kinds(&h.drain()), Vec::<&str>::new());
    h.transport_down();
    let sent = h.connect(false);
    assert!(matches!(&sent[0], Packet::Subscribe(s) if s.packet_id == sub_id));
    assert_eq!(publish_ids(&sent), vec![(id.get(), false)]);
}
