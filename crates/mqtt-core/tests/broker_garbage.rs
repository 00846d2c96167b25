//! Bad input everywhere: arbitrary bytes (and mutated valid packets) from
//! several connections never panic the broker, never exceed the configured
//! bounds, and only ever close the connection that misbehaved.
// The tests play the runtime: they read the clock once, for a base instant.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqtt_core::broker::{Broker, BrokerConfig, ConnectionId, ConnectionInfo, Event};
use mqtt_core::codec::{
    encode, Connect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions,
};
use proptest::prelude::*;

const CONNS: u64 = 4;

fn valid_prefix(i: u64, v5: bool) -> BytesMut {
    let version = if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V3_1_1
    };
    let mut buf = BytesMut::new();
    let packets = [
        Packet::Connect(Connect {
            protocol_version: version,
            clean_start: false,
            keep_alive: 5,
            client_id: format!("g{i}").into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }),
        Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            filters: vec![("#".into(), SubscriptionOptions::new(QoS::ExactlyOnce))],
            properties: Properties::default(),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: "t/x".into(),
            packet_id: PacketId::new(2),
            properties: Properties::default(),
            payload: bytes::Bytes::from_static(b"hello"),
        }),
    ];
    for p in &packets {
        encode(p, version, &mut buf).unwrap();
    }
    buf
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        flips in proptest::collection::vec((0..CONNS, any::<usize>(), any::<u8>()), 0..8),
        chunks in proptest::collection::vec((0..CONNS, proptest::collection::vec(any::<u8>(), 0..64), 0..3u8), 0..60),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let config = BrokerConfig {
            max_packet_size: 2048,
            max_queued_messages: 8,
            max_inflight: 2,
            max_retained_messages: 8,
            max_subscriptions_per_client: 8,
            ..Default::default()
        };
        let mut b = Broker::new(config.clone(), now);
        let mut rx: Vec<BytesMut> = Vec::new();
        for i in 0..CONNS {
            b.handle_connection_opened(ConnectionId(i), ConnectionInfo::default(), now);
            // A valid start, with a few bytes flipped.
            let mut buf = valid_prefix(i, i % 2 == 0);
            for &(c, at, x) in &flips {
                if c == i && !buf.is_empty() {
                    let n = buf.len();
                    buf[at % n] ^= x;
                }
            }
            rx.push(buf);
        }
        for (i, buf) in rx.iter_mut().enumerate() {
            b.handle_read(ConnectionId(i as u64), buf, now);
        }
        let mut closed = std::collections::HashSet::new();
        for (c, bytes, action) in chunks {
            match action {
                0 | 1 => {
                    let buf = &mut rx[c as usize];
                    buf.extend_from_slice(&bytes);
                    b.handle_read(ConnectionId(c), buf, now);
                }
                _ => {
                    now += Duration::from_millis(u64::from(bytes.first().copied().unwrap_or(0)) * 50);
                    b.handle_timeout(now);
                }
            }
            while let Some(t) = b.poll_transmit() {
                prop_assert!(!closed.contains(&t.conn) , "bytes for a closed connection");
                b.handle_written(t.conn, t.data.len(), now);
            }
            while let Some(e) = b.poll_event() {
                if let Event::CloseConnection { conn, reason } = e {
                    prop_assert!(!reason.to_string().is_empty());
                    closed.insert(conn);
                }
            }
            for i in 0..CONNS {
                if let Some(s) = b.session_state(&format!("g{i}")) {
                    prop_assert!(s.queue.len() <= config.max_queued_messages);
                    prop_assert!(s.inflight.len() <= usize::from(config.max_inflight));
                    prop_assert!(s.subscriptions.len() <= config.max_subscriptions_per_client);
                    prop_assert!(s.awaiting_rel.len() <= config.max_awaiting_rel);
                }
            }
            prop_assert!(b.metrics().retained_messages as usize <= config.max_retained_messages);
        }
        b.shutdown(now);
        while b.poll_transmit().is_some() {}
        while b.poll_event().is_some() {}
        prop_assert_eq!(b.connection_count(), 0);
    }
}
