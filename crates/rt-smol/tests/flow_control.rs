//! Publisher flow control end to end, on both runtimes: a QoS 1 publisher
//! sends far more than a stalled subscriber's session queue holds; the
//! broker stops reading the publisher (TCP flow control slows it) instead
//! of dropping, and once the subscriber reads again every message arrives
//! exactly once, in order.

use std::path::Path;
use std::thread;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mqtt_core::codec::{
    encode, ByteString, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS,
};
use sansmq_tests::process::{Runtime, Sansmq};
use sansmq_tests::raw::RawClient;
use sansmq_tests::runtime_matrix;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sansmq"))
}

const MAX_QUEUED: usize = 100;

/// Messages to send, and the overshoot the broker gets, per runtime. The
/// overshoot covers what the runtime read before a pause took effect
/// (rt-smol's input channel holds 2,048 packets, rt-std's 16,384); the
/// messages are more than `MAX_QUEUED` + overshoot, so without flow control
/// the broker would have to drop some.
fn sizes(rt: Runtime) -> (u16, usize) {
    match rt {
        Runtime::Smol => (5_000, 4_096),
        Runtime::Std => (25_000, 20_000),
    }
}
/// Bounded waits: generous, a loaded machine is slow, but the data must come.
const WAIT: Duration = Duration::from_secs(60);

fn publish_bytes(id: u16) -> BytesMut {
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: ByteString::from("fc/t"),
        packet_id: PacketId::new(id),
        properties: Properties::default(),
        payload: Bytes::from(id.to_string()),
    });
    let mut out = BytesMut::new();
    encode(&packet, ProtocolVersion::V3_1_1, &mut out).expect("encode PUBLISH");
    out
}

/// A subscriber that stops reading, then resumes, loses no QoS 1 message.
fn a_stalled_subscriber_loses_no_qos1_message(rt: Runtime) {
    let (messages, overshoot) = sizes(rt);
    let config = format!(
        "[broker]\nmax_queued_messages = {MAX_QUEUED}\nflow_control_overshoot = {overshoot}\n"
    );
    let mut broker = Sansmq::start_on(rt, bin(), Some(&config), &[]);
    let v = ProtocolVersion::V3_1_1;

    let (mut sub, _) = RawClient::connect(broker.addr, v, "slow", 0, None);
    sub.subscribe("fc/t", QoS::AtLeastOnce);
    let (mut publisher, _) = RawClient::connect(broker.addr, v, "pub", 0, None);

    // The publisher writes everything as fast as the broker reads it (its
    // writes block while the broker is not reading), then collects the
    // PUBACKs.
    let pub_thread = thread::spawn(move || {
        let mut batch = BytesMut::new();
        for id in 1..=messages {
            batch.extend_from_slice(&publish_bytes(id));
            if id % 50 == 0 || id == messages {
                publisher.send_raw(&batch);
                batch.clear();
            }
        }
        let mut acked = 0u16;
        while acked < messages {
            match publisher.recv(WAIT) {
                Ok(Packet::PubAck(a)) => {
                    acked += 1;
                    assert_eq!(a.packet_id.get(), acked, "PUBACKs in order");
                }
                Ok(other) => panic!("publisher got {other:?}"),
                Err(e) => panic!("publisher: {e:?} after {acked} PUBACKs"),
            }
        }
    });

    // Stall: the session queue fills past max_queued_messages while the
    // subscriber reads nothing, until the broker pauses the publisher (an
    // event in its log, not a delay).
    broker.expect_log(&["flow control: pausing reads"], WAIT);

    // Read again: every message, once, in order.
    sub.expect_numbered_qos1(u32::from(messages), WAIT);
    pub_thread.join().expect("publisher thread");

    // No queue_full drop: the first drop of a cause is logged at once, and
    // everything the broker logged comes before "broker stopped".
    broker.signal("TERM");
    broker.expect_log(&["broker stopped"], WAIT);
    let log = broker.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("messages dropped") && l.contains("queue_full")),
        "queue_full drops in the broker log:\n{log}"
    );
    let _ = broker.wait_exit(WAIT);
}
runtime_matrix!(a_stalled_subscriber_loses_no_qos1_message);
