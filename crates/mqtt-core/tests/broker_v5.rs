//! MQTT 5.0 features: topic aliases, maximum packet size, subscription
//! options, shared subscriptions, message expiry, forwarded properties.
// The tests play the runtime: they read the clock once, for a base instant.
#![allow(clippy::disallowed_methods)]

mod broker_support;

use broker_support::*;
use bytes::Bytes;
use mqtt_core::broker::{
    BrokerConfig, DisconnectReason, DropReason, ProtocolViolation, SharedStrategy,
};
use mqtt_core::codec::{
    Packet, Properties, ProtocolVersion, QoS, ReasonCode, RetainHandling, SubscriptionOptions,
};

fn cfg() -> BrokerConfig {
    BrokerConfig {
        sys_events: false,
        ..Default::default()
    }
}

fn last_disconnect_code(h: &mut Harness, c: mqtt_core::broker::ConnectionId) -> Option<ReasonCode> {
    h.take(c).into_iter().rev().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason_code),
        _ => None,
    })
}

#[test]
fn inbound_topic_aliases() {
    let mut h = Harness::new(BrokerConfig {
        topic_alias_maximum: 4,
        ..cfg()
    });
    let s = h.connect("s", ProtocolVersion::V5);
    h.subscribe(s, "long/topic/name", QoS::AtMostOnce);
    let (p, ack) = h.connect_with(connect("p", ProtocolVersion::V5, true, 0));
    assert_eq!(ack.properties.topic_alias_maximum, Some(4));
    let mut m = publish("long/topic/name", "1", QoS::AtMostOnce, 0);
    m.properties.topic_alias = Some(3);
    h.send(p, Packet::Publish(m.clone()));
    m.topic = "".into();
    m.payload = Bytes::from("2");
    h.send(p, Packet::Publish(m.clone()));
    let got = h.publishes(s);
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|g| &*g.topic == "long/topic/name" && g.properties.topic_alias.is_none()));
    // Unknown alias with an empty topic: protocol error.
    m.properties.topic_alias = Some(2);
    h.send(p, Packet::Publish(m.clone()));
    assert_eq!(
        last_disconnect_code(&mut h, p),
        Some(ReasonCode::PROTOCOL_ERROR)
    );
    // MQTT-3.3.2-9: alias above our maximum -> 0x94.
    let p2 = h.connect("p2", ProtocolVersion::V5);
    let mut m = publish("x", "1", QoS::AtMostOnce, 0);
    m.properties.topic_alias = Some(5);
    h.send(p2, Packet::Publish(m));
    assert_eq!(
        last_disconnect_code(&mut h, p2),
        Some(ReasonCode::TOPIC_ALIAS_INVALID)
    );
}

#[test]
fn outbound_topic_aliases_up_to_the_clients_maximum() {
    let mut h = Harness::new(BrokerConfig {
        outbound_topic_alias_maximum: 8,
        ..cfg()
    });
    let mut c = connect("s", ProtocolVersion::V5, true, 0);
    c.properties.topic_alias_maximum = Some(1);
    let (s, _) = h.connect_with(c);
    h.subscribe(s, "#", QoS::AtMostOnce);
    let p = h.connect("p", ProtocolVersion::V5);
    for t in ["a/b", "a/b", "c/d", "c/d"] {
        h.publish(p, t, "x", QoS::AtMostOnce, 0);
    }
    let got = h.publishes(s);
    let seen: Vec<(String, Option<u16>)> = got
        .iter()
        .map(|g| (g.topic.to_string(), g.properties.topic_alias))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("a/b".into(), Some(1)),
            ("".into(), Some(1)),
            // MQTT-3.3.2-? : never above the client's Topic Alias Maximum.
            ("c/d".into(), None),
            ("c/d".into(), None),
        ]
    );
}

#[test]
fn mqtt_3_1_2_24_never_send_a_client_a_packet_above_its_maximum() {
    let mut h = Harness::new(cfg());
    let mut c = connect("s", ProtocolVersion::V5, true, 0);
    c.properties.maximum_packet_size = Some(64);
    let (s, _) = h.connect_with(c);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", ProtocolVersion::V5);
    h.publish(p, "t", &"x".repeat(100), QoS::AtLeastOnce, 1);
    h.publish(p, "t", "small", QoS::AtLeastOnce, 2);
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"small");
    assert_eq!(h.broker.metrics().dropped(DropReason::PacketTooLarge), 1);
    // MQTT-3.1.2-25: behave as if sent: nothing left in flight for it.
    assert_eq!(h.broker.session_state("s").unwrap().inflight.len(), 1);
}

#[test]
fn inbound_packet_above_our_maximum_is_0x95() {
    let mut h = Harness::new(BrokerConfig {
        max_packet_size: 128,
        ..cfg()
    });
    let (p, ack) = h.connect_with(connect("p", ProtocolVersion::V5, true, 0));
    assert_eq!(ack.properties.maximum_packet_size, Some(128));
    h.publish(p, "t", &"x".repeat(200), QoS::AtMostOnce, 0);
    assert!(matches!(
        h.closed.get(&p),
        Some((DisconnectReason::PacketTooLarge { .. }, _))
    ));
    assert_eq!(
        last_disconnect_code(&mut h, p),
        Some(ReasonCode::PACKET_TOO_LARGE)
    );
}

#[test]
fn mqtt_3_8_3_3_no_local() {
    let mut h = Harness::new(cfg());
    let c = h.connect("c", ProtocolVersion::V5);
    let mut o = SubscriptionOptions::new(QoS::AtMostOnce);
    o.no_local = true;
    h.subscribe_opts(c, "t", o, Properties::default());
    h.publish(c, "t", "mine", QoS::AtMostOnce, 0);
    assert!(h.publishes(c).is_empty());
    let other = h.connect("o", ProtocolVersion::V5);
    h.publish(other, "t", "theirs", QoS::AtMostOnce, 0);
    assert_eq!(h.publishes(c).len(), 1);
}

#[test]
fn mqtt_3_3_1_12_and_13_retain_as_published() {
    let mut h = Harness::new(cfg());
    let rap = h.connect("rap", ProtocolVersion::V5);
    let mut o = SubscriptionOptions::new(QoS::AtMostOnce);
    o.retain_as_published = true;
    h.subscribe_opts(rap, "t", o, Properties::default());
    let plain = h.connect("plain", ProtocolVersion::V5);
    h.subscribe(plain, "t", QoS::AtMostOnce);
    let p = h.connect("p", ProtocolVersion::V5);
    let mut m = publish("t", "x", QoS::AtMostOnce, 0);
    m.retain = true;
    h.send(p, Packet::Publish(m));
    assert!(h.publishes(rap)[0].retain);
    assert!(!h.publishes(plain)[0].retain);
}

#[test]
fn retain_handling_0_1_2() {
    // 5.0 MQTT-3.3.1-9 (0: send), MQTT-3.3.1-10 (1: only if new), MQTT-3.3.1-11 (2: never).
    let mut h = Harness::new(cfg());
    let p = h.connect("p", ProtocolVersion::V5);
    let mut m = publish("t", "r", QoS::AtMostOnce, 0);
    m.retain = true;
    h.send(p, Packet::Publish(m));
    let s = h.connect("s", ProtocolVersion::V5);
    for (rh, first, second) in [
        (RetainHandling::SendOnSubscribe, 1, 1),
        (RetainHandling::SendIfNew, 0, 0), // exists already from the row above
        (RetainHandling::DoNotSend, 0, 0),
    ] {
        let mut o = SubscriptionOptions::new(QoS::AtMostOnce);
        o.retain_handling = rh;
        h.subscribe_opts(s, "t", o, Properties::default());
        assert_eq!(h.publishes(s).len(), first, "{rh:?}");
        h.subscribe_opts(s, "t", o, Properties::default());
        assert_eq!(h.publishes(s).len(), second, "{rh:?} again");
    }
    let n = h.connect("n", ProtocolVersion::V5);
    let mut o = SubscriptionOptions::new(QoS::AtMostOnce);
    o.retain_handling = RetainHandling::SendIfNew;
    h.subscribe_opts(n, "t", o, Properties::default());
    assert_eq!(h.publishes(n).len(), 1, "new subscription: sent");
}

#[test]
fn mqtt_3_3_4_3_subscription_identifiers_are_sent() {
    let mut h = Harness::new(cfg());
    let s = h.connect("s", ProtocolVersion::V5);
    let props = Properties {
        subscription_identifiers: vec![77],
        ..Default::default()
    };
    h.subscribe_opts(s, "t/#", SubscriptionOptions::new(QoS::AtMostOnce), props);
    let p = h.connect("p", ProtocolVersion::V5);
    h.publish(p, "t/x", "x", QoS::AtMostOnce, 0);
    assert_eq!(
        h.publishes(s)[0].properties.subscription_identifiers,
        vec![77]
    );
}

#[test]
fn subscription_identifiers_unavailable_is_0xa1() {
    let mut h = Harness::new(BrokerConfig {
        subscription_identifier_available: false,
        ..cfg()
    });
    let (s, ack) = h.connect_with(connect("s", ProtocolVersion::V5, true, 0));
    assert_eq!(
        ack.properties.subscription_identifier_available,
        Some(false)
    );
    let props = Properties {
        subscription_identifiers: vec![1],
        ..Default::default()
    };
    h.send(
        s,
        Packet::Subscribe(mqtt_core::codec::Subscribe {
            packet_id: pid(1),
            filters: vec![("t".into(), SubscriptionOptions::new(QoS::AtMostOnce))],
            properties: props,
        }),
    );
    assert_eq!(
        last_disconnect_code(&mut h, s),
        Some(ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED)
    );
}

#[test]
fn shared_subscriptions_round_robin_and_no_retained() {
    let mut h = Harness::new(cfg());
    let p = h.connect("p", ProtocolVersion::V5);
    let mut r = publish("job/1", "old", QoS::AtMostOnce, 0);
    r.retain = true;
    h.send(p, Packet::Publish(r));
    let a = h.connect("a", ProtocolVersion::V5);
    let b = h.connect("b", ProtocolVersion::V5);
    h.subscribe(a, "$share/g/job/+", QoS::AtLeastOnce);
    h.subscribe(b, "$share/g/job/+", QoS::AtLeastOnce);
    assert!(
        h.publishes(a).is_empty() && h.publishes(b).is_empty(),
        "no retained for shared subscriptions"
    );
    let plain = h.connect("plain", ProtocolVersion::V5);
    h.subscribe(plain, "job/+", QoS::AtMostOnce);
    let _ = h.publishes(plain);
    for i in 0..10 {
        h.publish(p, &format!("job/{i}"), "x", QoS::AtMostOnce, 0);
    }
    assert_eq!(h.publishes(a).len(), 5);
    assert_eq!(h.publishes(b).len(), 5);
    assert_eq!(
        h.publishes(plain).len(),
        10,
        "non-shared subscribers get every message"
    );
    // A member that goes offline is skipped while another is online.
    h.broker.handle_connection_closed(b, h.now);
    h.publish(p, "job/x", "x", QoS::AtMostOnce, 0);
    assert_eq!(h.publishes(a).len(), 1);
}

#[test]
fn shared_subscriptions_random_strategy_is_seeded() {
    let run = |seed| {
        let mut h = Harness::new(BrokerConfig {
            rng_seed: seed,
            shared_subscription_strategy: SharedStrategy::Random,
            ..cfg()
        });
        let members: Vec<_> = (0..3)
            .map(|i| h.connect(&format!("m{i}"), ProtocolVersion::V5))
            .collect();
        for &m in &members {
            h.subscribe(m, "$share/g/t", QoS::AtMostOnce);
        }
        let p = h.connect("p", ProtocolVersion::V5);
        for _ in 0..30 {
            h.publish(p, "t", "x", QoS::AtMostOnce, 0);
        }
        members
            .iter()
            .map(|&m| h.publishes(m).len())
            .collect::<Vec<_>>()
    };
    let a = run(7);
    assert_eq!(a, run(7), "same seed, same choices");
    assert_eq!(a.iter().sum::<usize>(), 30);
}

#[test]
fn mqtt_3_8_3_4_no_local_on_a_shared_subscription_is_a_protocol_error() {
    let mut h = Harness::new(cfg());
    let s = h.connect("s", ProtocolVersion::V5);
    let mut o = SubscriptionOptions::new(QoS::AtMostOnce);
    o.no_local = true;
    h.send(
        s,
        Packet::Subscribe(mqtt_core::codec::Subscribe {
            packet_id: pid(1),
            filters: vec![("$share/g/t".into(), o)],
            properties: Properties::default(),
        }),
    );
    assert!(matches!(
        h.closed.get(&s),
        Some((
            DisconnectReason::ProtocolError(ProtocolViolation::SharedSubscriptionNoLocal),
            _
        ))
    ));
    assert_eq!(
        last_disconnect_code(&mut h, s),
        Some(ReasonCode::PROTOCOL_ERROR)
    );
}

#[test]
fn mqtt_3_3_2_6_remaining_message_expiry_is_forwarded_and_expired_messages_dropped() {
    let mut h = Harness::new(cfg());
    let mut c = connect("s", ProtocolVersion::V5, false, 0);
    c.properties.session_expiry_interval = Some(3600);
    let (s, _) = h.connect_with(c.clone());
    h.subscribe(s, "t", QoS::AtLeastOnce);
    h.broker.handle_connection_closed(s, h.now);
    let p = h.connect("p", ProtocolVersion::V5);
    let mut m = publish("t", "short", QoS::AtLeastOnce, 1);
    m.properties.message_expiry_interval = Some(10);
    h.send(p, Packet::Publish(m.clone()));
    m.packet_id = Some(pid(2));
    m.payload = Bytes::from("gone");
    m.properties.message_expiry_interval = Some(3);
    h.send(p, Packet::Publish(m));
    h.advance(secs(4));
    let (s, _) = h.connect_with(c);
    let got = h.publishes(s);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"short");
    assert_eq!(got[0].properties.message_expiry_interval, Some(6));
    assert_eq!(h.broker.metrics().dropped(DropReason::Expired), 1);
}

#[test]
fn retained_messages_expire() {
    let mut h = Harness::new(cfg());
    let p = h.connect("p", ProtocolVersion::V5);
    let mut m = publish("t", "r", QoS::AtMostOnce, 0);
    m.retain = true;
    m.properties.message_expiry_interval = Some(5);
    h.send(p, Packet::Publish(m));
    h.advance(secs(2));
    let s = h.connect("s", ProtocolVersion::V5);
    h.subscribe(s, "t", QoS::AtMostOnce);
    let got = h.publishes(s);
    assert_eq!(got[0].properties.message_expiry_interval, Some(3));
    h.advance(secs(3));
    let s2 = h.connect("s2", ProtocolVersion::V5);
    h.subscribe(s2, "#", QoS::AtMostOnce);
    assert!(h.publishes(s2).is_empty());
    assert!(h.broker.retained_message("t").is_none());
}

#[test]
fn application_properties_are_forwarded_unaltered() {
    // MQTT-3.3.2-4 payload format, -15 response topic, -16 correlation data,
    // -17/-18 user properties in order, -20 content type.
    let mut h = Harness::new(cfg());
    let s = h.connect("s", ProtocolVersion::V5);
    h.subscribe(s, "req", QoS::AtMostOnce);
    let s3 = h.connect("s3", ProtocolVersion::V3_1_1);
    h.subscribe(s3, "req", QoS::AtMostOnce);
    let p = h.connect("p", ProtocolVersion::V5);
    let mut m = publish("req", "{}", QoS::AtMostOnce, 0);
    m.properties.payload_format_indicator = Some(true);
    m.properties.content_type = Some("application/json".into());
    m.properties.response_topic = Some("resp/p".into());
    m.properties.correlation_data = Some(Bytes::from_static(b"\x01\x02"));
    m.properties.user_properties = vec![
        ("b".into(), "2".into()),
        ("a".into(), "1".into()),
        ("b".into(), "3".into()),
    ];
    h.send(p, Packet::Publish(m.clone()));
    let got = h.publishes(s);
    assert_eq!(got[0].properties, m.properties);
    assert_eq!(
        h.publishes(s3).len(),
        1,
        "3.1.1 subscriber gets it without properties"
    );
}

#[test]
fn maximum_qos_and_retain_available_are_announced_and_enforced() {
    let mut h = Harness::new(BrokerConfig {
        maximum_qos: QoS::AtLeastOnce,
        retain_available: false,
        ..cfg()
    });
    let (p, ack) = h.connect_with(connect("p", ProtocolVersion::V5, true, 0));
    assert_eq!(ack.properties.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(ack.properties.retain_available, Some(false));
    h.publish(p, "t", "x", QoS::ExactlyOnce, 1);
    // MQTT-3.2.2-11.
    assert_eq!(
        last_disconnect_code(&mut h, p),
        Some(ReasonCode::QOS_NOT_SUPPORTED)
    );
    let p = h.connect("p2", ProtocolVersion::V5);
    let mut m = publish("t", "x", QoS::AtMostOnce, 0);
    m.retain = true;
    h.send(p, Packet::Publish(m));
    // MQTT-3.2.2-14.
    assert_eq!(
        last_disconnect_code(&mut h, p),
        Some(ReasonCode::RETAIN_NOT_SUPPORTED)
    );
    // MQTT-3.2.2-12/-13: a will above the limits is refused in CONNACK.
    let mut c = connect("w", ProtocolVersion::V5, true, 0);
    c.will = Some(will("w", "x", QoS::ExactlyOnce, false));
    let (_, ack) = h.connect_with(c);
    assert_eq!(ack.reason_code, ReasonCode::QOS_NOT_SUPPORTED);
    // 3.1.1 clients cannot be told: QoS 2 is accepted and routed at QoS 1.
    let s = h.connect("s3", ProtocolVersion::V3_1_1);
    h.subscribe(s, "u", QoS::ExactlyOnce);
    let p3 = h.connect("p3", ProtocolVersion::V3_1_1);
    h.publish(p3, "u", "x", QoS::ExactlyOnce, 1);
    assert_eq!(
        h.take(p3),
        vec![Packet::PubRec(broker_support::ack(pid(1)))]
    );
    assert_eq!(h.publishes(s)[0].qos, QoS::AtLeastOnce);
}

#[test]
fn session_expiry_cap_is_returned_in_connack() {
    let mut h = Harness::new(BrokerConfig {
        max_session_expiry_interval: 60,
        ..cfg()
    });
    let mut c = connect("s", ProtocolVersion::V5, true, 0);
    c.properties.session_expiry_interval = Some(3600);
    let (_, ack) = h.connect_with(c);
    assert_eq!(ack.properties.session_expiry_interval, Some(60));
}
