//! Keepalive on virtual time: exact deadlines, independent of retry timers.
//! MQTT-3.1.2-24 (3.1.1) / 5.0 section 3.1.2.10: close when no packet
//! arrives within 1.5 x Keep Alive.
// The tests play the runtime: they read the clock once, for a base instant.
#![allow(clippy::disallowed_methods)]

mod broker_support;

use std::time::Duration;

use broker_support::*;
use mqtt_core::broker::{BrokerConfig, DisconnectReason, Event, TimerOwner};
use mqtt_core::codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use mqtt_core::timer::TimerKind;

fn config(retry: Option<Duration>) -> BrokerConfig {
    BrokerConfig {
        retry_interval: retry,
        sys_events: false,
        ..Default::default()
    }
}

/// One 3.1.1 client with keepalive 5 s and unacknowledged QoS 1 messages
/// (so the retry timer really runs) is closed at exactly 7.5 s.
fn one_connection_closes_at_7_5s(retry: Option<Duration>) {
    let mut h = Harness::new(config(retry));
    let (sub, _) = h.connect_with(connect("sub", ProtocolVersion::V3_1_1, true, 5));
    h.subscribe(sub, "t", QoS::AtLeastOnce);
    let last_packet = h.now;
    let publisher = h.connect("pub", ProtocolVersion::V3_1_1);
    for i in 1..=3 {
        h.publish(publisher, "t", "x", QoS::AtLeastOnce, i);
    }
    assert_eq!(h.publishes(sub).len(), 3);
    h.advance_to(last_packet + ms(7499));
    assert!(!h.is_closed(sub), "closed early");
    h.advance_to(last_packet + secs(60));
    let (reason, at) = h.closed.get(&sub).cloned().expect("closed");
    assert_eq!(at, last_packet + ms(7500), "closed at the exact deadline");
    assert!(matches!(
        reason,
        DisconnectReason::KeepAliveTimeout { keep_alive: 5, .. }
    ));
    // The publisher has keepalive 0 and stays.
    assert!(!h.is_closed(publisher));
    let retransmitted = h.broker.metrics().messages_retransmitted;
    match retry {
        // 7 retry rounds at 1..=7 s, 3 messages each, all with DUP.
        Some(d) if d == secs(1) => assert_eq!(retransmitted, 21),
        _ => assert_eq!(retransmitted, 0),
    }
    assert_eq!(h.broker.metrics().keepalive_timeouts, 1);
    assert_eq!(h.broker.metrics().keepalive_detection_latency.counts[0], 1);
}

#[test]
fn keepalive_5s_closes_at_exactly_7_5s_with_retry_10s() {
    one_connection_closes_at_7_5s(Some(secs(10)));
}

#[test]
fn keepalive_5s_closes_at_exactly_7_5s_with_retry_1s() {
    one_connection_closes_at_7_5s(Some(secs(1)));
}

#[test]
fn keepalive_5s_closes_at_exactly_7_5s_without_retry() {
    one_connection_closes_at_7_5s(None);
}

#[test]
fn retransmissions_carry_dup_and_retry_does_not_move_keepalive() {
    let mut h = Harness::new(config(Some(secs(1))));
    let (sub, _) = h.connect_with(connect("sub", ProtocolVersion::V3_1_1, true, 5));
    h.subscribe(sub, "t", QoS::AtLeastOnce);
    let p = h.connect("pub", ProtocolVersion::V3_1_1);
    h.publish(p, "t", "x", QoS::AtLeastOnce, 1);
    let first = h.publishes(sub);
    assert!(!first[0].dup);
    h.advance(ms(1000));
    let again = h.publishes(sub);
    assert_eq!(again.len(), 1);
    assert!(again[0].dup, "MQTT-3.3.1-1: DUP on redelivery");
    assert_eq!(again[0].packet_id, first[0].packet_id);
    let ka = h.broker.last_timeout_reason().expect("a timer is armed");
    // The next timer is the retry at 2 s, the keepalive still sits at 7.5 s.
    assert_eq!(ka.kind, TimerKind::Retry);
    assert_eq!(ka.deadline, h.t0 + ms(2000));
}

#[test]
fn pingreq_at_7_499s_keeps_the_connection() {
    let mut h = Harness::new(config(Some(secs(1))));
    let (c, _) = h.connect_with(connect("c", ProtocolVersion::V3_1_1, true, 5));
    let t_connect = h.now;
    h.advance_to(t_connect + ms(7499));
    h.send(c, Packet::PingReq);
    assert_eq!(h.take(c), vec![Packet::PingResp], "MQTT-3.12.4-1");
    h.advance_to(t_connect + ms(7500));
    assert!(!h.is_closed(c));
    h.advance_to(t_connect + secs(100));
    let (_, at) = h.closed.get(&c).cloned().expect("closed later");
    assert_eq!(at, t_connect + ms(7499) + ms(7500));
}

#[test]
fn will_is_published_at_the_keepalive_close() {
    let mut h = Harness::new(config(None));
    let watcher = h.connect("watcher", ProtocolVersion::V5);
    h.subscribe(watcher, "will/#", QoS::AtLeastOnce);
    let mut c = connect("dying", ProtocolVersion::V3_1_1, true, 5);
    c.will = Some(will("will/dying", "gone", QoS::AtLeastOnce, false));
    let (dying, _) = h.connect_with(c);
    let t = h.now;
    h.advance_to(t + ms(7499));
    assert!(h.publishes(watcher).is_empty());
    h.advance_to(t + ms(7500));
    assert!(h.is_closed(dying));
    let got = h.publishes(watcher);
    assert_eq!(got.len(), 1);
    assert_eq!(&*got[0].topic, "will/dying");
    assert_eq!(&got[0].payload[..], b"gone");
    let disconnected = h.events.iter().find_map(|e| match e {
        Event::ClientDisconnected {
            client_id, reason, ..
        } if &**client_id == "dying" => Some(reason.clone()),
        _ => None,
    });
    let Some(DisconnectReason::KeepAliveTimeout {
        deadline,
        last_packet,
        ..
    }) = disconnected
    else {
        panic!("no keepalive ClientDisconnected event");
    };
    assert_eq!(deadline - last_packet, ms(7500));
    let line = DisconnectReason::KeepAliveTimeout {
        keep_alive: 5,
        last_packet,
        deadline,
    }
    .to_string();
    assert!(line.contains("keep alive timeout"), "{line}");
}

/// 10,000 connections with keepalives 1..=600 s, some with unacknowledged
/// QoS 1 messages and a 1 s or 10 s retry: each is closed at exactly
/// connect + 1.5 x keepalive.
fn ten_thousand(retry: Duration) {
    let mut h = Harness::new(config(Some(retry)));
    let publisher = h.connect("pub", ProtocolVersion::V3_1_1);
    let mut expected = Vec::new();
    for i in 0..10_000u64 {
        let ka = 1 + (i * 7919 % 600) as u16;
        let (c, _) = h.connect_with(connect(&format!("c{i}"), ProtocolVersion::V3_1_1, true, ka));
        let mut last = h.now;
        if i % 50 == 0 {
            h.subscribe(c, "load", QoS::AtLeastOnce);
            last = h.now;
        }
        expected.push((c, last + Duration::from_millis(u64::from(ka) * 1500)));
        // Stagger connections by 1 ms so deadlines interleave.
        h.advance(ms(1));
    }
    h.publish(publisher, "load", "x", QoS::AtLeastOnce, 1);
    h.advance(secs(1000));
    for (c, deadline) in expected {
        let (reason, at) = h.closed.get(&c).cloned().expect("closed");
        assert!(matches!(reason, DisconnectReason::KeepAliveTimeout { .. }));
        assert_eq!(at, deadline, "{c}");
    }
    let m = h.broker.metrics();
    assert_eq!(m.keepalive_timeouts, 10_000);
    assert_eq!(
        m.keepalive_detection_latency.counts[0], 10_000,
        "zero detection latency"
    );
    assert!(m.messages_retransmitted > 0);
}

#[test]
fn ten_thousand_connections_retry_10s() {
    ten_thousand(secs(10));
}

#[test]
fn ten_thousand_connections_retry_1s() {
    ten_thousand(secs(1));
}

#[test]
fn keepalive_zero_disables_the_timeout() {
    // MQTT-3.1.2-? (3.1.1 3.1.2.10): a Keep Alive of 0 turns the mechanism off.
    let mut h = Harness::new(config(None));
    let (c, _) = h.connect_with(connect("c", ProtocolVersion::V3_1_1, true, 0));
    h.advance(secs(24 * 3600));
    assert!(!h.is_closed(c));
    assert_eq!(h.broker.poll_timeout(), None, "no timer at all");
}

#[test]
fn v5_keepalive_timeout_sends_disconnect_0x8d() {
    let mut h = Harness::new(config(None));
    let (c, _) = h.connect_with(connect("c", ProtocolVersion::V5, true, 2));
    let t = h.now;
    h.advance(secs(10));
    assert_eq!(h.closed.get(&c).map(|x| x.1), Some(t + ms(3000)));
    let got = h.take(c);
    let Some(Packet::Disconnect(d)) = got.last() else {
        panic!("no DISCONNECT: {got:?}");
    };
    assert_eq!(d.reason_code, ReasonCode::KEEP_ALIVE_TIMEOUT);
    assert!(d.properties.reason_string.is_some());
}

#[test]
fn max_keepalive_caps_v5_clients_and_is_returned_as_server_keep_alive() {
    // 5.0 section 3.2.2.3.14: the client MUST use the Server Keep Alive (MQTT-3.2.2-21).
    let mut h = Harness::new(BrokerConfig {
        max_keepalive: 10,
        sys_events: false,
        ..Default::default()
    });
    let (c, ack) = h.connect_with(connect("c", ProtocolVersion::V5, true, 100));
    assert_eq!(ack.properties.server_keep_alive, Some(10));
    let t = h.now;
    h.advance(secs(100));
    assert_eq!(h.closed.get(&c).map(|x| x.1), Some(t + secs(15)));
    // Keep alive 0 is replaced too.
    let (_, ack) = h.connect_with(connect("d", ProtocolVersion::V5, true, 0));
    assert_eq!(ack.properties.server_keep_alive, Some(10));
    // Within the cap: unchanged, no property.
    let (_, ack) = h.connect_with(connect("e", ProtocolVersion::V5, true, 5));
    assert_eq!(ack.properties.server_keep_alive, None);
}

#[test]
fn connect_timeout_closes_silent_sockets_exactly() {
    let mut h = Harness::new(BrokerConfig {
        connect_timeout: secs(3),
        ..Default::default()
    });
    let c = h.open();
    let t = h.now;
    assert_eq!(h.broker.poll_timeout(), Some(t + secs(3)));
    let reason = h.broker.last_timeout_reason().expect("armed");
    assert_eq!(reason.owner, TimerOwner::Connection(c));
    assert_eq!(reason.kind, TimerKind::ConnectTimeout);
    h.advance(secs(5));
    let (r, at) = h.closed.get(&c).cloned().expect("closed");
    assert_eq!(at, t + secs(3));
    assert!(matches!(r, DisconnectReason::ConnectTimeout(_)));
    assert!(h.take(c).is_empty(), "plain close, nothing sent");
    assert_eq!(h.broker.metrics().connect_timeouts, 1);
}

#[test]
fn spurious_and_early_timeouts_are_harmless() {
    let mut h = Harness::new(config(None));
    let (c, _) = h.connect_with(connect("c", ProtocolVersion::V3_1_1, true, 5));
    let t = h.now;
    for i in 0..7499 {
        h.broker.handle_timeout(t + ms(i));
        h.broker.handle_timeout(t + ms(i));
    }
    h.pump();
    assert!(!h.is_closed(c));
    h.broker.handle_timeout(t + ms(7500));
    h.pump();
    assert!(h.is_closed(c));
}
