//! PUBLISH / SUBSCRIBE routing and the QoS flows (sections 3.3 - 3.11, 4.3 - 4.6).
// The tests play the runtime: they read the clock once, for a base instant.
#![allow(clippy::disallowed_methods)]

mod broker_support;

use broker_support::*;
use bytes::Bytes;
use mqtt_core::broker::{BrokerConfig, DisconnectReason, DropReason};
use mqtt_core::codec::{
    Disconnect, Packet, Properties, ProtocolVersion, PubResponse, QoS, ReasonCode, SubAck,
    Subscribe, SubscriptionOptions, Unsubscribe,
};

fn cfg() -> BrokerConfig {
    BrokerConfig {
        sys_events: false,
        ..Default::default()
    }
}

fn persistent(id: &str, v: ProtocolVersion) -> mqtt_core::codec::Connect {
    let mut c = connect(id, v, false, 0);
    if v == ProtocolVersion::V5 {
        c.properties.session_expiry_interval = Some(3600);
    }
    c
}

#[test]
fn qos0_routing_and_granted_qos_downgrade() {
    // MQTT-3.8.4-? / 3.3.5: delivered at min(published QoS, granted QoS).
    let mut h = Harness::new(cfg());
    let s = h.connect("s", ProtocolVersion::V3_1_1);
    let ack = h.subscribe(s, "a/+/c", QoS::AtMostOnce);
    assert_eq!(ack.reason_codes, vec![ReasonCode::GRANTED_QOS_0]);
    let p = h.connect("p", ProtocolVersion::V3_1_1);
    h.publish(p, "a/b/c", "1", QoS::AtLeastOnce, 7);
    assert_eq!(
        h.take(p),
        vec![Packet::PubAck(ack_of(7))],
        "MQTT-4.3.2-? PUBACK with the same id"
    );
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtMostOnce);
    assert_eq!(got[0].packet_id, None);
    h.publish(p, "a/b/d", "no", QoS::AtMostOnce, 0);
    assert!(h.publishes(s).is_empty());
    assert_eq!(h.broker.metrics().dropped(DropReason::NoSubscribers), 1);
}

fn ack_of(id: u16) -> PubResponse {
    PubResponse::new(pid(id))
}

#[test]
fn qos1_outbound_flow_and_inflight_window() {
    let mut h = Harness::new(BrokerConfig {
        max_inflight: 2,
        ..cfg()
    });
    let s = h.connect("s", ProtocolVersion::V3_1_1);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", ProtocolVersion::V3_1_1);
    for i in 1..=5 {
        h.publish(p, "t", &i.to_string(), QoS::AtLeastOnce, i);
    }
    let got = h.publishes(s);
    assert_eq!(got.len(), 2, "window of 2");
    let ids: Vec<_> = got.iter().map(|p| p.packet_id.unwrap()).collect();
    assert_ne!(ids[0], ids[1], "MQTT-2.2.1-3: distinct ids in flight");
    h.send(s, Packet::PubAck(PubResponse::new(ids[0])));
    let next = h.publishes(s);
    assert_eq!(next.len(), 1);
    assert_eq!(&next[0].payload[..], b"3", "MQTT-4.6.0-? order kept");
    assert!(!ids.contains(&next[0].packet_id.unwrap()));
    h.send(s, Packet::PubAck(PubResponse::new(ids[1])));
    h.send(
        s,
        Packet::PubAck(PubResponse::new(next[0].packet_id.unwrap())),
    );
    let rest = h.publishes(s);
    assert_eq!(
        rest.iter().map(|p| p.payload.clone()).collect::<Vec<_>>(),
        vec![Bytes::from("4"), Bytes::from("5")]
    );
}

#[test]
fn v5_client_receive_maximum_limits_inflight() {
    // MQTT-3.3.4-9: never more unacknowledged QoS 1/2 than the client's Receive Maximum.
    let mut h = Harness::new(cfg());
    let mut c = connect("s", ProtocolVersion::V5, true, 0);
    c.properties.receive_maximum = Some(1);
    let (s, _) = h.connect_with(c);
    h.subscribe(s, "t", QoS::ExactlyOnce);
    let p = h.connect("p", ProtocolVersion::V5);
    for i in 1..=3 {
        h.publish(p, "t", "x", QoS::AtLeastOnce, i);
    }
    assert_eq!(h.publishes(s).len(), 1);
}

#[test]
fn qos2_inbound_flow_routes_exactly_once() {
    // 4.3.3: PUBLISH -> PUBREC, duplicate PUBLISH -> PUBREC (not routed again),
    // PUBREL -> PUBCOMP (MQTT-4.3.3-? / 3.1.1 MQTT-4.3.3-2).
    let mut h = Harness::new(cfg());
    let s = h.connect("s", ProtocolVersion::V5);
    h.subscribe(s, "t", QoS::ExactlyOnce);
    let p = h.connect("p", ProtocolVersion::V5);
    h.publish(p, "t", "once", QoS::ExactlyOnce, 9);
    assert_eq!(h.take(p), vec![Packet::PubRec(ack_of(9))]);
    let mut dup = publish("t", "once", QoS::ExactlyOnce, 9);
    dup.dup = true;
    h.send(p, Packet::Publish(dup));
    assert_eq!(h.take(p), vec![Packet::PubRec(ack_of(9))]);
    h.send(p, Packet::PubRel(ack_of(9)));
    assert_eq!(h.take(p), vec![Packet::PubComp(ack_of(9))]);
    assert_eq!(h.publishes(s).len(), 1);
    // PUBREL for an unknown id: PUBCOMP 0x92 (5.0).
    h.send(p, Packet::PubRel(ack_of(9)));
    let got = h.take(p);
    assert!(
        matches!(got.as_slice(), [Packet::PubComp(r)] if r.reason_code == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)
    );
}

#[test]
fn qos2_outbound_flow() {
    let mut h = Harness::new(cfg());
    let s = h.connect("s", ProtocolVersion::V3_1_1);
    h.subscribe(s, "t", QoS::ExactlyOnce);
    let p = h.connect("p", ProtocolVersion::V3_1_1);
    h.publish(p, "t", "x", QoS::ExactlyOnce, 1);
    let got = h.publishes(s);
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
    let id = got[0].packet_id.unwrap();
    h.send(s, Packet::PubRec(PubResponse::new(id)));
    assert_eq!(
        h.take(s),
        vec![Packet::PubRel(PubResponse::new(id))],
        "MQTT-4.3.3-? PUBREL after PUBREC"
    );
    h.send(s, Packet::PubComp(PubResponse::new(id)));
    assert!(h.broker.session_state("s").unwrap().inflight.is_empty());
}

#[test]
fn qos2_exactly_once_across_reconnects_both_directions() {
    // MQTT-4.4.0-1: on reconnect with a session, resend unacknowledged
    // PUBLISH (DUP, MQTT-3.3.1-1) and PUBREL, in order (MQTT-4.6.0-1).
    let mut h = Harness::new(cfg());
    let (s, _) = h.connect_with(persistent("s", ProtocolVersion::V5));
    h.subscribe(s, "t", QoS::ExactlyOnce);
    let (p, _) = h.connect_with(persistent("p", ProtocolVersion::V5));
    h.publish(p, "t", "exactly", QoS::ExactlyOnce, 5);
    assert_eq!(h.take(p), vec![Packet::PubRec(ack_of(5))]);
    // Publisher drops before PUBREL, subscriber before PUBREC.
    h.broker.handle_connection_closed(p, h.now);
    let first = h.publishes(s);
    assert_eq!(first.len(), 1);
    let id = first[0].packet_id.unwrap();
    h.broker.handle_connection_closed(s, h.now);
    h.advance(secs(1));

    // Publisher resends with DUP: answered, not routed again.
    let (p, ack) = h.connect_with(persistent("p", ProtocolVersion::V5));
    assert!(ack.session_present);
    let mut dup = publish("t", "exactly", QoS::ExactlyOnce, 5);
    dup.dup = true;
    h.send(p, Packet::Publish(dup));
    assert_eq!(h.take(p), vec![Packet::PubRec(ack_of(5))]);
    h.send(p, Packet::PubRel(ack_of(5)));
    assert_eq!(h.take(p), vec![Packet::PubComp(ack_of(5))]);

    // Subscriber gets the same PUBLISH again with DUP, once.
    let (s, ack) = h.connect_with(persistent("s", ProtocolVersion::V5));
    assert!(ack.session_present);
    let again = h.publishes(s);
    assert_eq!(again.len(), 1);
    assert!(again[0].dup);
    assert_eq!(again[0].packet_id, Some(id));
    h.send(s, Packet::PubRec(PubResponse::new(id)));
    assert_eq!(h.take(s), vec![Packet::PubRel(PubResponse::new(id))]);
    // Drop before PUBCOMP: the PUBREL is resent, not the PUBLISH.
    h.broker.handle_connection_closed(s, h.now);
    let (s, _) = h.connect_with(persistent("s", ProtocolVersion::V5));
    assert_eq!(h.take(s), vec![Packet::PubRel(PubResponse::new(id))]);
    h.send(s, Packet::PubComp(PubResponse::new(id)));
    assert!(h.broker.session_state("s").unwrap().inflight.is_empty());
    h.advance(secs(10));
    assert!(h.take(s).is_empty());
}

#[test]
fn broker_receive_maximum_is_announced_and_enforced_with_0x93() {
    let mut h = Harness::new(BrokerConfig {
        receive_maximum: 2,
        ..cfg()
    });
    let (p, ack) = h.connect_with(connect("p", ProtocolVersion::V5, true, 0));
    assert_eq!(ack.properties.receive_maximum, Some(2));
    for i in 1..=2 {
        h.publish(p, "t", "x", QoS::ExactlyOnce, i);
    }
    assert!(!h.is_closed(p));
    h.publish(p, "t", "x", QoS::ExactlyOnce, 3);
    assert!(matches!(
        h.closed.get(&p),
        Some((DisconnectReason::ReceiveMaximumExceeded { maximum: 2 }, _))
    ));
    let got = h.take(p);
    assert!(
        matches!(got.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
    );
}

#[test]
fn await_rel_timeout_forgets_the_packet_id() {
    let mut h = Harness::new(BrokerConfig {
        await_rel_timeout: secs(30),
        ..cfg()
    });
    let s = h.connect("s", ProtocolVersion::V5);
    h.subscribe(s, "t", QoS::AtMostOnce);
    let p = h.connect("p", ProtocolVersion::V5);
    h.publish(p, "t", "x", QoS::ExactlyOnce, 1);
    let t = h.now;
    h.advance_to(t + ms(29_999));
    assert_eq!(h.broker.session_state("p").unwrap().awaiting_rel.len(), 1);
    h.advance_to(t + secs(30));
    assert!(h.broker.session_state("p").unwrap().awaiting_rel.is_empty());
    assert_eq!(h.broker.metrics().dropped(DropReason::AwaitRelTimeout), 1);
}

#[test]
fn offline_queue_delivers_in_order_on_reconnect() {
    let mut h = Harness::new(cfg());
    let (s, _) = h.connect_with(persistent("s", ProtocolVersion::V3_1_1));
    h.subscribe(s, "t/#", QoS::AtLeastOnce);
    h.send(s, Packet::Disconnect(Disconnect::default()));
    let p = h.connect("p", ProtocolVersion::V3_1_1);
    for i in 1..=5 {
        h.publish(p, &format!("t/{i}"), &i.to_string(), QoS::AtLeastOnce, i);
    }
    assert_eq!(h.broker.session_state("s").unwrap().queue.len(), 5);
    let (s, ack) = h.connect_with(persistent("s", ProtocolVersion::V3_1_1));
    assert!(ack.session_present);
    let got: Vec<_> = h.publishes(s).into_iter().map(|p| p.payload).collect();
    assert_eq!(got, ["1", "2", "3", "4", "5"].map(Bytes::from).to_vec());
}

#[test]
fn offline_queue_bound_drops_oldest_qos0_first_then_refuses() {
    let mut h = Harness::new(BrokerConfig {
        max_queued_messages: 3,
        ..cfg()
    });
    let (s, _) = h.connect_with(persistent("s", ProtocolVersion::V3_1_1));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.broker.handle_connection_closed(s, h.now);
    let p = h.connect("p", ProtocolVersion::V3_1_1);
    h.publish(p, "t", "q0-a", QoS::AtMostOnce, 0);
    h.publish(p, "t", "q1-a", QoS::AtLeastOnce, 1);
    h.publish(p, "t", "q0-b", QoS::AtMostOnce, 0);
    h.publish(p, "t", "q1-b", QoS::AtLeastOnce, 2); // drops q0-a
    h.publish(p, "t", "q1-c", QoS::AtLeastOnce, 3); // drops q0-b
    h.publish(p, "t", "q1-d", QoS::AtLeastOnce, 4); // refused
    let q: Vec<_> = h
        .broker
        .session_state("s")
        .unwrap()
        .queue
        .iter()
        .map(|d| d.message.payload.clone())
        .collect();
    assert_eq!(q, ["q1-a", "q1-b", "q1-c"].map(Bytes::from).to_vec());
    assert_eq!(h.broker.metrics().dropped(DropReason::QueueFull), 3);
}

#[test]
fn queue_bound_by_bytes() {
    let mut h = Harness::new(BrokerConfig {
        max_queued_bytes: 10,
        ..cfg()
    });
    let (s, _) = h.connect_with(persistent("s", ProtocolVersion::V3_1_1));
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.broker.handle_connection_closed(s, h.now);
    let p = h.connect("p", ProtocolVersion::V3_1_1);
    h.publish(p, "t", "12345678", QoS::AtLeastOnce, 1); // 9 bytes with the topic
    h.publish(p, "t", "12", QoS::AtLeastOnce, 2); // refused
    assert_eq!(h.broker.session_state("s").unwrap().queue.len(), 1);
    assert_eq!(h.broker.session_state("s").unwrap().queued_bytes, 9);
}

#[test]
fn retained_store_replace_delete_and_wildcard_delivery() {
    let mut h = Harness::new(cfg());
    let p = h.connect("p", ProtocolVersion::V3_1_1);
    let mut m = publish("home/kitchen/temp", "20", QoS::AtLeastOnce, 1);
    m.retain = true;
    h.send(p, Packet::Publish(m.clone()));
    m.payload = Bytes::from("21");
    h.send(p, Packet::Publish(m.clone())); // replaces (MQTT-3.3.1-5)
    let mut other = publish("home/hall/temp", "18", QoS::AtMostOnce, 0);
    other.retain = true;
    h.send(p, Packet::Publish(other));
    let mut sys = publish("$data/x", "no", QoS::AtMostOnce, 0);
    sys.retain = true;
    h.send(p, Packet::Publish(sys));
    let s = h.connect("s", ProtocolVersion::V3_1_1);
    h.subscribe(s, "home/+/temp", QoS::AtLeastOnce);
    let got = h.publishes(s);
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(|p| p.retain),
        "3.1.1 MQTT-3.3.1-8: RETAIN set on subscribe"
    );
    let kitchen = got
        .iter()
        .find(|p| &*p.topic == "home/kitchen/temp")
        .unwrap();
    assert_eq!(&kitchen.payload[..], b"21");
    // MQTT-4.7.2-1: '#' does not see '$' topics.
    let all = h.connect("all", ProtocolVersion::V3_1_1);
    h.subscribe(all, "#", QoS::AtMostOnce);
    assert_eq!(h.publishes(all).len(), 2);
    // Empty payload deletes (3.1.1 MQTT-3.3.1-10/-11), and is still forwarded live.
    m.payload = Bytes::new();
    h.send(p, Packet::Publish(m));
    assert!(h.broker.retained_message("home/kitchen/temp").is_none());
    let live = h.publishes(s);
    assert_eq!(live.len(), 1);
    assert!(
        !live[0].retain,
        "3.1.1 MQTT-3.3.1-9: RETAIN 0 on live delivery"
    );
    assert_eq!(h.broker.metrics().retained_messages, 2);
}

#[test]
fn retained_limit_refuses_new_topics() {
    let mut h = Harness::new(BrokerConfig {
        max_retained_messages: 1,
        ..cfg()
    });
    let p = h.connect("p", ProtocolVersion::V3_1_1);
    for t in ["a", "b"] {
        let mut m = publish(t, "x", QoS::AtMostOnce, 0);
        m.retain = true;
        h.send(p, Packet::Publish(m));
    }
    assert!(h.broker.retained_message("a").is_some());
    assert!(h.broker.retained_message("b").is_none());
    assert_eq!(h.broker.metrics().dropped(DropReason::RetainedLimit), 1);
}

#[test]
fn overlapping_subscriptions_merge_into_one_delivery_with_max_qos() {
    // 3.1.1 MQTT-3.3.5-1 / 5.0 MQTT-3.3.4-2 (max QoS), MQTT-3.3.4-4 (all identifiers).
    let mut h = Harness::new(cfg());
    let s = h.connect("s", ProtocolVersion::V5);
    let mut props = Properties {
        subscription_identifiers: vec![1],
        ..Default::default()
    };
    h.subscribe_opts(
        s,
        "a/#",
        SubscriptionOptions::new(QoS::AtMostOnce),
        props.clone(),
    );
    props.subscription_identifiers = vec![2];
    h.subscribe_opts(s, "a/+", SubscriptionOptions::new(QoS::AtLeastOnce), props);
    let p = h.connect("p", ProtocolVersion::V5);
    h.publish(p, "a/b", "x", QoS::ExactlyOnce, 1);
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    let mut ids = got[0].properties.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn subscribe_replaces_and_unsubscribe_stops_delivery() {
    let mut h = Harness::new(cfg());
    let s = h.connect("s", ProtocolVersion::V5);
    h.subscribe(s, "t", QoS::AtMostOnce);
    h.subscribe(s, "t", QoS::AtLeastOnce); // MQTT-3.8.4-3: replaced
    assert_eq!(h.broker.session_state("s").unwrap().subscriptions.len(), 1);
    h.send(
        s,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(3),
            filters: vec!["t".into(), "nope".into()],
            properties: Properties::default(),
        }),
    );
    let got = h.take(s);
    let Some(Packet::UnsubAck(u)) = got.first() else {
        panic!("{got:?}")
    };
    assert_eq!(u.packet_id, pid(3), "MQTT-3.10.4-4");
    assert_eq!(
        u.reason_codes,
        vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
        "MQTT-3.11.3-1"
    );
    let p = h.connect("p", ProtocolVersion::V5);
    h.publish(p, "t", "x", QoS::AtMostOnce, 0);
    assert!(h.publishes(s).is_empty());
    // 3.1.1 UNSUBACK has no codes.
    let s3 = h.connect("s3", ProtocolVersion::V3_1_1);
    h.send(
        s3,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(4),
            filters: vec!["t".into()],
            properties: Properties::default(),
        }),
    );
    assert!(matches!(h.take(s3).as_slice(), [Packet::UnsubAck(u)] if u.reason_codes.is_empty()));
}

#[test]
fn suback_codes_for_refused_filters() {
    let mut h = Harness::new(BrokerConfig {
        maximum_qos: QoS::AtLeastOnce,
        max_subscriptions_per_client: 2,
        wildcard_subscription_available: true,
        ..cfg()
    });
    let s = h.connect("s", ProtocolVersion::V5);
    h.send(
        s,
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            filters: vec![
                ("a".into(), SubscriptionOptions::new(QoS::ExactlyOnce)),
                ("a/#/b".into(), SubscriptionOptions::new(QoS::AtMostOnce)),
                ("c".into(), SubscriptionOptions::new(QoS::AtMostOnce)),
                ("d".into(), SubscriptionOptions::new(QoS::AtMostOnce)),
            ],
            properties: Properties::default(),
        }),
    );
    let got = h.take(s);
    let Some(Packet::SubAck(SubAck {
        packet_id,
        reason_codes,
        ..
    })) = got.first()
    else {
        panic!()
    };
    assert_eq!(*packet_id, pid(1), "MQTT-3.8.4-2");
    // MQTT-3.8.4-6 (3.1.1 MQTT-3.8.4-5): one code per filter, in order.
    assert_eq!(
        reason_codes,
        &vec![
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::QUOTA_EXCEEDED,
        ]
    );
    let s3 = h.connect("s3", ProtocolVersion::V3_1_1);
    let ack = h.subscribe(s3, "a/#/b", QoS::AtMostOnce);
    assert_eq!(
        ack.reason_codes,
        vec![ReasonCode(0x80)],
        "3.1.1 MQTT-3.9.3-? failure 0x80"
    );
}

#[test]
fn wildcard_and_shared_subscriptions_can_be_switched_off() {
    let mut h = Harness::new(BrokerConfig {
        wildcard_subscription_available: false,
        shared_subscription_available: false,
        ..cfg()
    });
    let (s, ack) = h.connect_with(connect("s", ProtocolVersion::V5, true, 0));
    assert_eq!(ack.properties.wildcard_subscription_available, Some(false));
    assert_eq!(ack.properties.shared_subscription_available, Some(false));
    assert_eq!(
        h.subscribe(s, "a/+", QoS::AtMostOnce).reason_codes,
        vec![ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED]
    );
    assert_eq!(
        h.subscribe(s, "$share/g/a", QoS::AtMostOnce).reason_codes,
        vec![ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED]
    );
}

#[test]
fn slow_consumer_drops_qos0_and_holds_qos1() {
    let mut h = Harness::new(BrokerConfig {
        max_pending_bytes_per_connection: 100,
        ..cfg()
    });
    let s = h.connect("s", ProtocolVersion::V3_1_1);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.auto_written = false;
    let p = h.connect("p", ProtocolVersion::V3_1_1);
    let big = "x".repeat(150);
    h.publish(p, "t", &big, QoS::AtMostOnce, 0); // sent: pending now > 100
    h.publish(p, "t", "q0", QoS::AtMostOnce, 0); // dropped
    h.publish(p, "t", "q1", QoS::AtLeastOnce, 1); // held
    assert_eq!(h.publishes(s).len(), 1);
    assert_eq!(h.broker.metrics().dropped(DropReason::SlowConsumer), 1);
    assert_eq!(h.broker.session_state("s").unwrap().queue.len(), 1);
    // The runtime reports the bytes written: the held message goes out.
    h.auto_written = true;
    h.broker.handle_written(s, 10_000, h.now);
    h.pump();
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"q1");
    // The publisher got all its PUBACKs.
    assert!(!h.is_closed(p));
}

#[test]
fn packet_ids_in_flight_are_never_reused() {
    let mut h = Harness::new(BrokerConfig {
        max_inflight: 100,
        ..cfg()
    });
    let s = h.connect("s", ProtocolVersion::V3_1_1);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", ProtocolVersion::V3_1_1);
    let mut seen = std::collections::HashSet::new();
    for round in 0..700u32 {
        for i in 1..=100u16 {
            h.publish(p, "t", "x", QoS::AtLeastOnce, i);
        }
        let got = h.publishes(s);
        assert_eq!(got.len(), 100);
        seen.clear();
        for m in &got {
            assert!(
                seen.insert(m.packet_id.unwrap()),
                "round {round}: MQTT-2.2.1-3 id reused while in flight"
            );
        }
        for m in got {
            h.send(s, Packet::PubAck(PubResponse::new(m.packet_id.unwrap())));
        }
    }
}

#[test]
fn mqtt_3_3_1_3_incoming_dup_is_not_propagated() {
    let mut h = Harness::new(cfg());
    let s = h.connect("s", ProtocolVersion::V3_1_1);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", ProtocolVersion::V3_1_1);
    let mut m = publish("t", "x", QoS::AtLeastOnce, 1);
    m.dup = true;
    h.send(p, Packet::Publish(m));
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert!(!got[0].dup);
}

#[test]
fn suback_comes_before_the_retained_messages() {
    // MQTT-3.8.4-1: SUBACK answers SUBSCRIBE; retained messages follow it.
    let mut h = Harness::new(cfg());
    let p = h.connect("p", ProtocolVersion::V5);
    let mut m = publish("t", "r", QoS::AtMostOnce, 0);
    m.retain = true;
    h.send(p, Packet::Publish(m));
    let s = h.connect("s", ProtocolVersion::V5);
    h.send(
        s,
        Packet::Subscribe(Subscribe {
            packet_id: pid(5),
            filters: vec![("t".into(), SubscriptionOptions::new(QoS::AtMostOnce))],
            properties: Properties::default(),
        }),
    );
    let got = h.take(s);
    assert!(matches!(got.as_slice(), [Packet::SubAck(_), Packet::Publish(p)] if p.retain));
}

#[test]
fn mqtt_4_6_0_messages_to_one_subscriber_keep_publish_order() {
    // 4.6: ordered topic per publisher, across the inflight window and the queue.
    let mut h = Harness::new(BrokerConfig {
        max_inflight: 1,
        ..cfg()
    });
    let s = h.connect("s", ProtocolVersion::V5);
    h.subscribe(s, "t/#", QoS::ExactlyOnce);
    let p = h.connect("p", ProtocolVersion::V5);
    for i in 1..=20u16 {
        let q = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        h.publish(p, "t/x", &i.to_string(), q, i);
        let _ = h.take(p);
        h.send(p, Packet::PubRel(PubResponse::new(pid(i))));
    }
    let mut seen = Vec::new();
    for _ in 0..100 {
        let got = h.take(s);
        if got.is_empty() {
            break;
        }
        for pk in got {
            match pk {
                Packet::Publish(m) => {
                    seen.push(String::from_utf8(m.payload.to_vec()).unwrap());
                    let id = m.packet_id.unwrap();
                    if m.qos == QoS::AtLeastOnce {
                        h.send(s, Packet::PubAck(PubResponse::new(id)));
                    } else {
                        h.send(s, Packet::PubRec(PubResponse::new(id)));
                    }
                }
                Packet::PubRel(r) => h.send(s, Packet::PubComp(PubResponse::new(r.packet_id))),
                _ => {}
            }
        }
    }
    let want: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    assert_eq!(seen, want);
}
