//! Persistence-shaped state: export/restore round trip and storage events.
// The tests play the runtime: they read the clock once, for a base instant.
#![allow(clippy::disallowed_methods)]

mod broker_support;

use broker_support::*;
use mqtt_core::broker::{Broker, BrokerConfig, Event, StorageEvent};
use mqtt_core::codec::{Disconnect, Packet, ProtocolVersion, QoS};

fn cfg() -> BrokerConfig {
    BrokerConfig {
        sys_events: false,
        ..Default::default()
    }
}

fn persistent(id: &str) -> mqtt_core::codec::Connect {
    let mut c = connect(id, ProtocolVersion::V5, false, 0);
    c.properties.session_expiry_interval = Some(3600);
    c
}

#[test]
fn export_restore_round_trip() {
    let mut h = Harness::new(cfg());
    let (s, _) = h.connect_with(persistent("s"));
    h.subscribe(s, "t/#", QoS::ExactlyOnce);
    h.subscribe(s, "$share/g/jobs", QoS::AtLeastOnce);
    let (p, _) = h.connect_with(persistent("p"));
    h.publish(p, "t/1", "inflight", QoS::ExactlyOnce, 1); // awaiting PUBREL at p, inflight at s
    let mut r = publish("t/r", "retained", QoS::AtLeastOnce, 2);
    r.retain = true;
    h.send(p, Packet::Publish(r));
    h.broker.handle_connection_closed(s, h.now);
    h.publish(p, "t/2", "queued", QoS::AtLeastOnce, 3);
    h.broker.handle_connection_closed(p, h.now);
    h.pump();

    let state = h.broker.export();
    assert_eq!(state.sessions.len(), 2);
    assert_eq!(state.retained.len(), 1);
    let s_state = &state.sessions[1];
    assert_eq!(&*s_state.client_id, "s");
    assert_eq!(s_state.inflight.len(), 2, "t/1 and the retained t/r");
    assert_eq!(s_state.queue.len(), 1, "t/2");
    assert_eq!(state.sessions[0].awaiting_rel.len(), 1);

    let mut b = Broker::new(cfg(), h.now);
    b.restore(state.clone(), h.now);
    assert_eq!(b.export(), state, "round trip");

    // The restored broker serves the session: inflight resent with DUP, then the queue.
    let mut h2 = Harness::new(cfg());
    h2.broker.restore(state, h2.now);
    let (s, ack) = h2.connect_with(persistent("s"));
    assert!(ack.session_present);
    let got = h2.publishes(s);
    assert_eq!(got.len(), 3);
    assert!(got[0].dup && got[1].dup && !got[2].dup);
    assert_eq!(&got[0].payload[..], b"inflight");
    assert_eq!(&got[2].payload[..], b"queued");
    // Subscriptions work again, through the trie.
    let p2 = h2.connect("p2", ProtocolVersion::V5);
    h2.publish(p2, "t/9", "live", QoS::AtMostOnce, 0);
    assert_eq!(h2.publishes(s).len(), 1);
    // Retained messages too.
    let n = h2.connect("n", ProtocolVersion::V5);
    h2.subscribe(n, "t/r", QoS::AtMostOnce);
    assert_eq!(h2.publishes(n).len(), 1);
}

#[test]
fn restored_sessions_expire_on_schedule() {
    let mut h = Harness::new(cfg());
    let mut c = persistent("s");
    c.properties.session_expiry_interval = Some(10);
    let (s, _) = h.connect_with(c);
    h.broker.handle_connection_closed(s, h.now);
    let closed = h.now;
    let state = h.broker.export();
    let mut h2 = Harness::new(cfg());
    h2.now = closed;
    h2.broker.restore(state, closed);
    h2.advance_to(closed + ms(9999));
    assert!(h2.broker.session_state("s").is_some());
    h2.advance_to(closed + secs(10));
    assert!(h2.broker.session_state("s").is_none());
}

#[test]
fn storage_events_name_every_change() {
    let mut h = Harness::new(BrokerConfig {
        storage_events: true,
        ..cfg()
    });
    let (s, _) = h.connect_with(persistent("s"));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let mut r = publish("t", "r", QoS::AtMostOnce, 0);
    r.retain = true;
    h.send(s, Packet::Publish(r.clone()));
    r.payload = bytes::Bytes::new();
    h.send(s, Packet::Publish(r));
    let c = h.connect("clean", ProtocolVersion::V5);
    h.send(c, Packet::Disconnect(Disconnect::default()));
    let storage: Vec<StorageEvent> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Storage(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert!(storage.contains(&StorageEvent::SessionChanged {
        client_id: "s".into()
    }));
    assert!(storage.contains(&StorageEvent::RetainedChanged { topic: "t".into() }));
    assert!(storage.contains(&StorageEvent::RetainedRemoved { topic: "t".into() }));
    assert!(storage.contains(&StorageEvent::SessionRemoved {
        client_id: "clean".into()
    }));
    // Off by default.
    let mut quiet = Harness::new(cfg());
    let _ = quiet.connect("x", ProtocolVersion::V5);
    assert!(!quiet.events.iter().any(|e| matches!(e, Event::Storage(_))));
}

#[test]
fn session_limit_refuses_new_sessions() {
    let mut h = Harness::new(BrokerConfig {
        max_sessions: 1,
        ..cfg()
    });
    let _a = h.connect("a", ProtocolVersion::V5);
    let (b, ack) = h.connect_with(connect("b", ProtocolVersion::V5, true, 0));
    assert_eq!(
        ack.reason_code,
        mqtt_core::codec::ReasonCode::QUOTA_EXCEEDED
    );
    assert!(h.is_closed(b));
}
