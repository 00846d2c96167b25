//! `Client` at byte level: exact CONNECT bytes per version, CONNACK and
//! other server packets fed whole and fragmented, `poll_transmit`
//! coalescing, and arbitrary server bytes never panicking.

// One real `Instant` per test is the origin of virtual time; the client never reads the clock.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_core::client::{Client, ClientConfig, ClientEvent, ConnectionState};
use mqtt_core::codec::{self, Packet, Properties, ProtocolVersion, QoS, ReasonCode};
use proptest::prelude::*;

fn client(version: ProtocolVersion, t0: Instant) -> Client {
    Client::new(
        ClientConfig {
            client_id: "c1".into(),
            protocol_version: version,
            keep_alive: 60,
            ..Default::default()
        },
        t0,
    )
    .expect("valid config")
}

fn drain_bytes(c: &mut Client) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = c.poll_transmit() {
        out.extend_from_slice(&b);
    }
    out
}

fn events(c: &mut Client) -> Vec<ClientEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn connect_bytes_v311() {
    // MQTT 3.1.1 section 3.1: "MQTT", level 4, Clean Session, keep alive 60.
    let t0 = Instant::now();
    let mut c = client(ProtocolVersion::V3_1_1, t0);
    c.handle_transport_up(t0);
    assert_eq!(
        drain_bytes(&mut c),
        [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'c', b'1']
    );
    // CONNACK, session present 0, accepted.
    c.handle_read(&mut BytesMut::from(&[0x20u8, 2, 0, 0][..]), t0);
    assert!(matches!(
        events(&mut c).as_slice(),
        [ClientEvent::Connected(_)]
    ));
}

#[test]
fn connect_bytes_v31() {
    // MQTT 3.1: "MQIsdp", level 3.
    let t0 = Instant::now();
    let mut c = client(ProtocolVersion::V3_1, t0);
    c.handle_transport_up(t0);
    let bytes = drain_bytes(&mut c);
    assert_eq!(
        &bytes[2..11],
        &[0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3]
    );
    c.handle_read(&mut BytesMut::from(&[0x20u8, 2, 0, 0][..]), t0);
    assert!(c.is_connected());
}

#[test]
fn connect_bytes_v5() {
    // MQTT 5.0 section 3.1: level 5, properties (Maximum Packet Size 1 MiB).
    let t0 = Instant::now();
    let mut c = client(ProtocolVersion::V5, t0);
    c.handle_transport_up(t0);
    assert_eq!(
        drain_bytes(&mut c),
        [
            0x10, 20, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, // header
            5, 0x27, 0x00, 0x10, 0x00, 0x00, // properties
            0, 2, b'c', b'1'
        ]
    );
    // CONNACK with Server Keep Alive 5 (0x13) and Receive Maximum 3 (0x21).
    c.handle_read(
        &mut BytesMut::from(&[0x20u8, 9, 0, 0, 6, 0x13, 0, 5, 0x21, 0, 3][..]),
        t0 + Duration::from_millis(5),
    );
    let ev = events(&mut c);
    let [ClientEvent::Connected(info)] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!((info.keep_alive, info.inflight_window), (5, 3));
    // MQTT-3.2.2-21 + MQTT-3.1.2-23: PINGREQ (0xC0 0x00) 5 s after CONNECT.
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    c.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(drain_bytes(&mut c), [0xC0, 0x00]);
    c.handle_read(
        &mut BytesMut::from(&[0xD0u8, 0][..]),
        t0 + Duration::from_secs(6),
    );
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(10)));
}

#[test]
fn v311_server_refusing_level_5_is_understood() {
    // A 3.1.1 server answers level 5 with return code 1 in a 3.1.1 CONNACK
    // (MQTT-3.1.2-2 of 3.1.1); it does not decode as 5.0.
    let t0 = Instant::now();
    let mut c = client(ProtocolVersion::V5, t0);
    c.handle_transport_up(t0);
    drain_bytes(&mut c);
    c.handle_read(&mut BytesMut::from(&[0x20u8, 2, 0, 1][..]), t0);
    let ev = events(&mut c);
    assert!(matches!(&ev[0],
        ClientEvent::ConnectRefused { reason_code, .. } if *reason_code == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION));
    assert!(drain_bytes(&mut c).is_empty());
}

#[test]
fn fragmented_input_gives_the_same_events() {
    let t0 = Instant::now();
    let mut wire = BytesMut::new();
    let mut ack = mqtt_core::codec::ConnAck {
        session_present: false,
        reason_code: ReasonCode::SUCCESS,
        properties: Properties::default(),
    };
    ack.properties.assigned_client_identifier = Some("x".into());
    codec::encode(&Packet::ConnAck(ack), ProtocolVersion::V5, &mut wire).unwrap();
    for i in 1..=3u16 {
        let p = Packet::Publish(mqtt_core::codec::Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "a/b".into(),
            packet_id: mqtt_core::codec::PacketId::new(i),
            properties: Properties::default(),
            payload: Bytes::from(vec![i as u8; 300]),
        });
        codec::encode(&p, ProtocolVersion::V5, &mut wire).unwrap();
    }
    let whole = {
        let mut c = client(ProtocolVersion::V5, t0);
        c.handle_transport_up(t0);
        drain_bytes(&mut c);
        let mut buf = wire.clone();
        c.handle_read(&mut buf, t0);
        assert!(buf.is_empty());
        (events(&mut c), drain_bytes(&mut c))
    };
    let mut c = client(ProtocolVersion::V5, t0);
    c.handle_transport_up(t0);
    drain_bytes(&mut c);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for b in wire.iter() {
        buf.extend_from_slice(&[*b]);
        c.handle_read(&mut buf, t0);
        out.extend(drain_bytes(&mut c));
    }
    assert_eq!(events(&mut c), whole.0);
    assert_eq!(out, whole.1);
    // Three PUBACKs (0x40 0x02 id), 5.0 success with no properties.
    assert_eq!(out, [0x40, 2, 0, 1, 0x40, 2, 0, 2, 0x40, 2, 0, 3]);
}

#[test]
fn transmit_coalesces_control_before_data() {
    let t0 = Instant::now();
    let mut c = client(ProtocolVersion::V3_1_1, t0);
    c.publish(
        "t".into(),
        Bytes::from_static(b"p"),
        QoS::AtMostOnce,
        false,
        Properties::default(),
        t0,
    )
    .unwrap();
    c.subscribe(
        vec![(
            "s".into(),
            mqtt_core::codec::SubscriptionOptions::new(QoS::AtLeastOnce),
        )],
        Properties::default(),
        t0,
    )
    .unwrap();
    c.handle_transport_up(t0);
    drain_bytes(&mut c);
    c.handle_read(&mut BytesMut::from(&[0x20u8, 2, 0, 0][..]), t0);
    let out = c.poll_transmit().unwrap();
    // SUBSCRIBE (id 1, "s", QoS 1) and PUBLISH QoS 0 in one write.
    assert_eq!(
        &out[..],
        [0x82, 6, 0, 1, 0, 1, b's', 1, 0x30, 4, 0, 1, b't', b'p']
    );
    assert_eq!(c.poll_transmit(), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Nothing the server sends panics the client, in any state, whole or
    /// fragmented; errors end in TransportDead, and input after it is ignored.
    #[test]
    fn arbitrary_server_bytes_never_panic(
        v5 in any::<bool>(),
        connected in any::<bool>(),
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
    ) {
        let t0 = Instant::now();
        let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V3_1_1 };
        let mut c = client(version, t0);
        let id = c
            .publish("t".into(), Bytes::from_static(b"p"), QoS::ExactlyOnce, false, Properties::default(), t0)
            .unwrap()
            .unwrap();
        let mut acked = false;
        c.handle_transport_up(t0);
        drain_bytes(&mut c);
        if connected {
            let connack: &[u8] = if v5 { &[0x20, 3, 0, 0, 0] } else { &[0x20, 2, 0, 0] };
            c.handle_read(&mut BytesMut::from(connack), t0);
            prop_assert!(c.is_connected());
            drain_bytes(&mut c);
        }
        let mut buf = BytesMut::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let was_dead = c.state() == ConnectionState::Dead;
            buf.extend_from_slice(chunk);
            let now = t0 + Duration::from_millis(i as u64);
            c.handle_read(&mut buf, now);
            c.handle_timeout(now);
            let sent = drain_bytes(&mut c);
            let evs = events(&mut c);
            acked |= evs.iter().any(|e| matches!(e, ClientEvent::PublishAcked { packet_id, .. } if *packet_id == id));
            if c.state() == ConnectionState::Dead && !was_dead {
                prop_assert!(evs.iter().any(|e| matches!(e, ClientEvent::TransportDead(_))));
            }
            if was_dead {
                prop_assert!(sent.is_empty(), "nothing is sent once dead");
            }
        }
        c.handle_transport_down(t0 + Duration::from_secs(1));
        prop_assert_eq!(c.state(), ConnectionState::Disconnected);
        // The accepted QoS 2 message is still owned by the client, unless the
        // random bytes happened to complete its flow.
        prop_assert!(acked || c.is_pending(id));
    }
}
