//! Publisher flow control: a session queue at its high watermark pauses
//! the publishers routing to it (`Event::PauseReading`), QoS 1/2 keep being
//! queued up to the hard cap, and the publishers resume at half the
//! watermark (`Event::ResumeReading`).
// The tests play the runtime: they read the clock once, for a base instant.
#![allow(clippy::disallowed_methods)]

mod broker_support;

use broker_support::*;
use bytes::Bytes;
use mqtt_core::broker::{BrokerConfig, ConnectionId, DropReason, Event};
use mqtt_core::codec::{Packet, ProtocolVersion, QoS};

/// High watermark of the tests.
const H: usize = 10;

fn cfg() -> BrokerConfig {
    BrokerConfig {
        sys_events: false,
        max_queued_messages: H,
        max_inflight: 2,
        ..Default::default()
    }
}

const V: ProtocolVersion = ProtocolVersion::V3_1_1;

fn pauses(h: &Harness, conn: ConnectionId) -> usize {
    h.events
        .iter()
        .filter(|e| matches!(e, Event::PauseReading { conn: c } if *c == conn))
        .count()
}

fn resumes(h: &Harness, conn: ConnectionId) -> usize {
    h.events
        .iter()
        .filter(|e| matches!(e, Event::ResumeReading { conn: c } if *c == conn))
        .count()
}

fn flow_events(h: &Harness) -> usize {
    h.events
        .iter()
        .filter(|e| matches!(e, Event::PauseReading { .. } | Event::ResumeReading { .. }))
        .count()
}

fn queued(h: &Harness, id: &str) -> usize {
    h.broker.session_state(id).map_or(0, |s| s.queue.len())
}

/// `n` PUBLISHes from `from` on `topic`, payloads "0".."n-1", packet ids 1..=n.
fn publish_burst(h: &mut Harness, from: ConnectionId, topic: &str, n: usize, qos: QoS) {
    for i in 0..n {
        let id = u16::try_from(i + 1).expect("bursts stay under 65,536");
        h.publish(from, topic, &i.to_string(), qos, id);
    }
}

/// Acknowledge `conn`'s PUBLISHes until none come; their payloads in order.
fn drain(h: &mut Harness, conn: ConnectionId) -> Vec<Bytes> {
    ack_one_by_one(h, conn, |_| {})
}

/// PUBLISH packets in `conn`'s inbox, acknowledged one at a time, each
/// acknowledgement checked with `each(h)` after it.
fn ack_one_by_one(
    h: &mut Harness,
    conn: ConnectionId,
    mut each: impl FnMut(&mut Harness),
) -> Vec<Bytes> {
    let mut payloads = Vec::new();
    loop {
        let got = h.publishes(conn);
        if got.is_empty() {
            return payloads;
        }
        for p in got {
            payloads.push(p.payload.clone());
            if let Some(id) = p.packet_id {
                h.send(conn, Packet::PubAck(ack(id)));
                each(h);
            }
        }
    }
}

#[test]
fn burst_pauses_at_the_watermark_loses_nothing_and_resumes_at_half() {
    let mut h = Harness::new(cfg());
    let s = h.connect("s", V);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V);
    for i in 0..3 * H {
        let id = u16::try_from(i + 1).unwrap();
        h.publish(p, "t", &i.to_string(), QoS::AtLeastOnce, id);
        // Two in flight, the rest queued: the queue reaches H at message
        // H + 2, and the pause comes exactly then, once.
        let expected = usize::from(queued(&h, "s") >= H);
        assert_eq!(pauses(&h, p), expected, "after message {i}");
        // The publisher still gets its PUBACK (the message is queued).
        assert!(h
            .take(p)
            .iter()
            .any(|pk| matches!(pk, Packet::PubAck(a) if a.packet_id == pid(id))));
    }
    assert_eq!(pauses(&h, p), 1);
    assert_eq!(queued(&h, "s"), 3 * H - 2);
    assert_eq!(h.broker.metrics().dropped_total(), 0, "nothing dropped");
    assert_eq!(h.broker.metrics().flow_control_pauses, 1);

    let mut resumed_at = None;
    let got = ack_one_by_one(&mut h, s, |h| {
        if resumed_at.is_none() && resumes(h, p) == 1 {
            resumed_at = Some(queued(h, "s"));
        }
    });
    assert_eq!(resumed_at, Some(H / 2), "resumed at half the watermark");
    assert_eq!(resumes(&h, p), 1);
    let want: Vec<Bytes> = (0..3 * H).map(|i| Bytes::from(i.to_string())).collect();
    assert_eq!(got, want, "every message once, in order");
    assert_eq!(h.broker.metrics().dropped_total(), 0);
}

#[test]
fn qos2_is_held_like_qos1() {
    let mut h = Harness::new(cfg());
    let s = h.connect("s", V);
    h.subscribe(s, "t", QoS::ExactlyOnce);
    let p = h.connect("p", V);
    for i in 0..2 * H {
        let id = u16::try_from(i + 1).unwrap();
        h.publish(p, "t", &i.to_string(), QoS::ExactlyOnce, id);
        h.send(p, Packet::PubRel(ack(pid(id))));
    }
    assert_eq!(pauses(&h, p), 1);
    assert_eq!(queued(&h, "s"), 2 * H - 2);
    assert_eq!(h.broker.metrics().dropped_total(), 0);
}

#[test]
fn past_the_hard_cap_qos1_is_dropped_and_counted() {
    let mut h = Harness::new(BrokerConfig {
        flow_control_overshoot: 5,
        ..cfg()
    });
    let s = h.connect("s", V);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V);
    publish_burst(&mut h, p, "t", 3 * H, QoS::AtLeastOnce);
    assert_eq!(queued(&h, "s"), H + 5);
    let dropped = 3 * H - 2 - (H + 5);
    assert_eq!(
        h.broker.metrics().dropped(DropReason::QueueFull),
        dropped as u64
    );
    assert_eq!(pauses(&h, p), 1);
}

#[test]
fn two_sessions_pausing_one_publisher_resume_it_only_when_both_drained() {
    let mut h = Harness::new(cfg());
    let s1 = h.connect("s1", V);
    h.subscribe(s1, "t", QoS::AtLeastOnce);
    let s2 = h.connect("s2", V);
    h.subscribe(s2, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V);
    publish_burst(&mut h, p, "t", 2 * H, QoS::AtLeastOnce);
    assert_eq!(pauses(&h, p), 1, "one pause for both sessions");
    // s1 drains completely: s2 still holds the publisher.
    let got1 = drain(&mut h, s1);
    assert_eq!(got1.len(), 2 * H);
    assert_eq!(queued(&h, "s1"), 0);
    assert_eq!(resumes(&h, p), 0, "s2 is still over its watermark");
    // s2 drains to half: resumed.
    let mut resumed_at = None;
    let got2 = ack_one_by_one(&mut h, s2, |h| {
        if resumed_at.is_none() && resumes(h, p) == 1 {
            resumed_at = Some(queued(h, "s2"));
        }
    });
    assert_eq!(resumed_at, Some(H / 2));
    assert_eq!(got2, got1);
    assert_eq!(resumes(&h, p), 1);
    assert_eq!(h.broker.metrics().dropped_total(), 0);
}

#[test]
fn a_paused_publisher_that_disconnects_is_forgotten() {
    let mut h = Harness::new(cfg());
    let s = h.connect("s", V);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V);
    publish_burst(&mut h, p, "t", 2 * H, QoS::AtLeastOnce);
    assert_eq!(pauses(&h, p), 1);
    h.broker.handle_connection_closed(p, h.now);
    h.pump();
    let got = drain(&mut h, s);
    assert_eq!(got.len(), 2 * H, "its messages are still delivered");
    assert_eq!(resumes(&h, p), 0, "no resume for a connection that is gone");
    // A new publisher is paused afresh.
    let p2 = h.connect("p2", V);
    publish_burst(&mut h, p2, "t", 2 * H, QoS::AtLeastOnce);
    assert_eq!(pauses(&h, p2), 1);
}

#[test]
fn a_session_that_ends_releases_its_publishers() {
    let mut h = Harness::new(cfg());
    let s = h.connect("s", V);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V);
    publish_burst(&mut h, p, "t", 2 * H, QoS::AtLeastOnce);
    assert_eq!(pauses(&h, p), 1);
    h.broker.handle_connection_closed(s, h.now);
    h.pump();
    assert_eq!(resumes(&h, p), 1);
}

#[test]
fn a_paused_publisher_is_not_timed_out_by_keep_alive() {
    let mut h = Harness::new(cfg());
    let s = h.connect("s", V);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let (p, _) = h.connect_with(connect("p", V, true, 10));
    publish_burst(&mut h, p, "t", 2 * H, QoS::AtLeastOnce);
    assert_eq!(pauses(&h, p), 1);
    h.advance(secs(120));
    assert!(
        !h.is_closed(p),
        "we stopped reading it: its silence is ours"
    );
    drain(&mut h, s);
    assert_eq!(resumes(&h, p), 1);
    // Resumed: its keep alive applies again, from the last check.
    h.advance(secs(40));
    assert!(h.is_closed(p));
}

#[test]
fn qos0_is_still_dropped_at_the_watermark_and_pauses_nobody() {
    let mut h = Harness::new(cfg());
    let s = h.connect("s", V);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", V);
    // Fill the queue to the watermark with QoS 1 (pauses p).
    publish_burst(&mut h, p, "t", H + 2, QoS::AtLeastOnce);
    assert_eq!(queued(&h, "s"), H);
    let p0 = h.connect("p0", V);
    for _ in 0..5 {
        h.publish(p0, "t", "q0", QoS::AtMostOnce, 0);
    }
    assert_eq!(h.broker.metrics().dropped(DropReason::QueueFull), 5);
    assert_eq!(pauses(&h, p0), 0);
    assert_eq!(queued(&h, "s"), H);
}

#[test]
fn a_slow_consumer_publishing_to_itself_is_never_paused() {
    let mut h = Harness::new(cfg());
    let s = h.connect("s", V);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    publish_burst(&mut h, s, "t", 3 * H, QoS::AtLeastOnce);
    assert_eq!(flow_events(&h), 0);
    assert_eq!(queued(&h, "s"), 3 * H - 2);
    assert_eq!(h.broker.metrics().dropped_total(), 0);
}

#[test]
fn a_connection_whose_own_session_is_over_its_watermark_is_not_paused() {
    // a and b each publish to the other's topic and read slowly: pausing
    // both would stop both from reading the acknowledgements that drain
    // their queues.
    let mut h = Harness::new(cfg());
    let a = h.connect("a", V);
    h.subscribe(a, "to/a", QoS::AtLeastOnce);
    let b = h.connect("b", V);
    h.subscribe(b, "to/b", QoS::AtLeastOnce);
    publish_burst(&mut h, a, "to/b", 2 * H, QoS::AtLeastOnce);
    assert_eq!(pauses(&h, a), 1, "b's queue pauses a");
    publish_burst(&mut h, b, "to/a", 2 * H, QoS::AtLeastOnce);
    // a's queue reached its watermark: a must read its acks, so it resumes,
    // and b (whose own queue is over its watermark) is not paused.
    assert_eq!(resumes(&h, a), 1);
    assert_eq!(pauses(&h, b), 0);
    assert_eq!(h.broker.metrics().dropped_total(), 0);
}
