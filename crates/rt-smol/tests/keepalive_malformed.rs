//! Keepalive on real sockets and malformed input, with a byte-exact client.

use std::path::Path;
use std::time::{Duration, Instant};

use mqtt_core::codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use sansmq_tests::process::{Runtime, Sansmq};
use sansmq_tests::raw::{will, RawClient};
use sansmq_tests::runtime_matrix;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sansmq"))
}

const T: Duration = Duration::from_secs(10);

/// Keep alive 2 s x 1.5: the broker must close the silent client between
/// 3.0 s and 3.1 s after its last packet (CONNECT), and publish its will.
fn silent_client_is_closed_on_time_and_its_will_arrives(rt: Runtime) {
    let broker = Sansmq::start_default_on(rt, bin());
    let (mut watcher, _) =
        RawClient::connect(broker.addr, ProtocolVersion::V3_1_1, "watcher", 0, None);
    watcher.subscribe("will/#", QoS::AtMostOnce);

    for (version, id) in [
        (ProtocolVersion::V3_1_1, "silent-v4"),
        (ProtocolVersion::V5, "silent-v5"),
    ] {
        let mut silent = RawClient::tcp(broker.addr, version);
        silent.send(&sansmq_tests::raw::connect_packet(
            version,
            id,
            2,
            Some(will(&format!("will/{id}"), b"gone")),
        ));
        let last_packet = Instant::now();
        match silent.recv(T) {
            Ok(Packet::ConnAck(a)) => assert_eq!(a.reason_code, ReasonCode::SUCCESS),
            other => panic!("{id}: expected CONNACK, got {other:?}"),
        }
        let (packets, closed_at) = silent.wait_closed(T).expect("the broker closes it");
        let after = closed_at.duration_since(last_packet);
        assert!(
            after >= Duration::from_millis(3000) && after <= Duration::from_millis(3100),
            "{id}: closed {after:?} after its last packet, expected 3.0 s - 3.1 s"
        );
        if version == ProtocolVersion::V5 {
            // 5.0: DISCONNECT 0x8D Keep alive timeout before the close.
            assert!(
                packets.iter().any(|p| matches!(p, Packet::Disconnect(d)
                    if d.reason_code == ReasonCode::KEEP_ALIVE_TIMEOUT)),
                "{id}: {packets:?}"
            );
        }
        let w = watcher.recv_publish(T).expect("the will arrives");
        assert_eq!(&*w.topic, format!("will/{id}"));
        assert_eq!(&w.payload[..], b"gone");
        broker.expect_log(&["client disconnected", id, "keep alive timeout"], T);
    }
}
runtime_matrix!(silent_client_is_closed_on_time_and_its_will_arrives);

/// Garbage on one connection closes that one only, with a logged reason.
fn malformed_packet_closes_only_that_client(rt: Runtime) {
    let broker = Sansmq::start_default_on(rt, bin());
    let (mut sub, _) = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1, "sub", 0, None);
    sub.subscribe("m/#", QoS::AtMostOnce);
    let (mut publ, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "pub", 0, None);

    let check_delivery = |publ: &mut RawClient, sub: &mut RawClient, payload: &[u8]| {
        publ.publish0("m/x", payload);
        let p = sub
            .recv_publish(T)
            .expect("delivery to the healthy subscriber");
        assert_eq!(&p.payload[..], payload);
    };
    check_delivery(&mut publ, &mut sub, b"before");

    // (client id, version, bytes, text expected in the log)
    let cases: [(&str, ProtocolVersion, &[u8], &str); 3] = [
        // PUBLISH whose topic is not UTF-8: a body error (the frame is
        // consumed by the decoder; the core must still see it).
        (
            "bad-utf8",
            ProtocolVersion::V3_1_1,
            &[0x30, 0x05, 0x00, 0x02, 0xff, 0xfe, b'x'],
            "malformed packet",
        ),
        // Reserved packet type 0: a fixed-header error.
        (
            "bad-type",
            ProtocolVersion::V3_1_1,
            &[0x00, 0x00],
            "malformed packet",
        ),
        // 5.0 client: PUBLISH with QoS 3, also gets DISCONNECT 0x81.
        (
            "bad-qos-v5",
            ProtocolVersion::V5,
            &[0x36, 0x00],
            "malformed packet",
        ),
    ];
    for (id, version, bytes, expected) in cases {
        let (mut bad, _) = RawClient::connect(broker.addr, version, id, 0, None);
        bad.send_raw(bytes);
        let (packets, _) = bad.wait_closed(T).expect("the bad client is closed");
        if version == ProtocolVersion::V5 {
            assert!(
                packets.iter().any(|p| matches!(p, Packet::Disconnect(d)
                    if d.reason_code == ReasonCode::MALFORMED_PACKET)),
                "{id}: {packets:?}"
            );
        }
        let line = broker.expect_log(&["client disconnected", id, expected], T);
        assert!(line.contains("WARN"), "logged at warn: {line}");
        check_delivery(&mut publ, &mut sub, id.as_bytes());
    }

    // Garbage before CONNECT: closed, logged with the peer address.
    let mut raw = RawClient::tcp(broker.addr, ProtocolVersion::V3_1_1);
    raw.send_raw(b"GET / HTTP/1.1\r\n\r\n");
    raw.wait_closed(T).expect("closed");
    broker.expect_log(&["connection closed", "peer=127.0.0.1:"], T);
    check_delivery(&mut publ, &mut sub, b"after");
}
runtime_matrix!(malformed_packet_closes_only_that_client);

/// A second CONNECT with the same client id takes the session over; the
/// first connection is closed (5.0: DISCONNECT 0x8E) and the reason logged.
fn takeover_closes_the_old_connection_with_a_logged_reason(rt: Runtime) {
    let broker = Sansmq::start_default_on(rt, bin());
    let (mut old, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "twin", 0, None);
    let (_new, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "twin", 0, None);
    let (packets, _) = old.wait_closed(T).expect("the old connection is closed");
    assert!(
        packets.iter().any(|p| matches!(p, Packet::Disconnect(d)
            if d.reason_code == ReasonCode::SESSION_TAKEN_OVER)),
        "{packets:?}"
    );
    let line = broker.expect_log(&["client disconnected", "twin", "taken over"], T);
    assert!(
        line.contains("INFO"),
        "takeover is routine, logged at info: {line}"
    );
}
runtime_matrix!(takeover_closes_the_old_connection_with_a_logged_reason);

/// A subscriber that never acknowledges fills its session queue; what the
/// core then drops (counted by cause in its metrics) is also logged, so a
/// loss is never silent. (QoS 1 publishers are paused by flow control
/// instead, so the drops are QoS 0: a second publisher's, queued behind the
/// first one's QoS 1 backlog.)
fn messages_dropped_for_a_full_session_queue_are_logged(rt: Runtime) {
    use bytes::Bytes;
    use mqtt_core::codec::{ByteString, Properties, Publish};

    let config = "[broker]\nmax_queued_messages = 5\nmax_inflight = 1\n";
    let broker = Sansmq::start_on(rt, bin(), Some(config), &[]);
    let (mut sub, _) = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1, "stuck", 0, None);
    sub.subscribe("d/#", QoS::AtLeastOnce);
    let publish = |qos: QoS, id: u16| {
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: ByteString::from_static("d/x"),
            packet_id: std::num::NonZeroU16::new(id),
            properties: Properties::default(),
            payload: Bytes::from_static(b"x"),
        })
    };
    // 1 in flight + 5 queued: the queue is full (and this publisher paused).
    let (mut publ, _) = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1, "pub", 0, None);
    for id in 1..=6u16 {
        publ.send(&publish(QoS::AtLeastOnce, id));
        match publ.recv(T) {
            Ok(Packet::PubAck(a)) => assert_eq!(a.packet_id.get(), id),
            other => panic!("expected PUBACK {id}, got {other:?}"),
        }
    }
    // QoS 0 from another publisher has nowhere to go.
    let (mut q0, _) = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1, "q0", 0, None);
    for _ in 0..14 {
        q0.send(&publish(QoS::AtMostOnce, 0));
    }
    let line = broker.expect_log(&["messages dropped", "queue_full"], T);
    assert!(line.contains("WARN"), "drop logged at warn: {line}");
    // The stuck subscriber got exactly its window's worth.
    assert!(matches!(sub.recv(T), Ok(Packet::Publish(_))));
}
runtime_matrix!(messages_dropped_for_a_full_session_queue_are_logged);
