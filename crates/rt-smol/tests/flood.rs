//! Bounded memory under a flood, against the real `sansmq` binary.
//!
//! A QoS 0 publisher floods a topic whose only subscriber never reads its
//! socket. The broker must drop what that subscriber cannot take (counted
//! and logged), keep its resident memory under a bound derived from the
//! configuration, and keep serving everyone else: meanwhile a QoS 1
//! publisher on another topic gets every PUBACK and that topic's
//! subscriber gets every message.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_core::codec::{
    encode, ByteString, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS,
};
use sansmq_tests::process::Sansmq;
use sansmq_tests::raw::{RawClient, RecvError};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sansmq"))
}

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

// The broker's configuration, and the bound derived from it.
const MAX_PENDING: usize = 256 * KIB;
const MAX_PACKET: usize = 64 * KIB;
const MAX_QUEUED_MESSAGES: usize = 1000;
const MAX_QUEUED_BYTES: usize = MIB;

// rt-smol's own bounds (src/server.rs, src/conn.rs): the input channel
// holds at most INPUT_CAPACITY inputs of at most MAX_PACKETS_PER_INPUT
// decoded packets, each read burst buffers READ_CHUNK bytes (the packets
// of a read share it).
const INPUT_CAPACITY: usize = 128;
const MAX_PACKETS_PER_INPUT: usize = 16;
const READ_CHUNK: usize = 4 * KIB;

/// Allocator slack: freed memory the allocator keeps, per-thread arenas.
const SLACK: usize = 8 * MIB;

/// The flood: at most this many messages, or this long.
const FLOOD_MESSAGES: usize = 200_000;
const FLOOD_TIME: Duration = Duration::from_secs(20);
const FLOOD_PAYLOAD: usize = KIB;

/// QoS 1 messages on the other topic during the flood.
const QOS1_MESSAGES: u16 = 200;
/// Generous: a loaded CI machine is slow, but a PUBACK must come.
const ACK_WAIT: Duration = Duration::from_secs(30);

fn config() -> String {
    format!(
        "[broker]\n\
         max_pending_bytes_per_connection = \"{}KiB\"\n\
         max_packet_size = \"{}KiB\"\n\
         max_queued_messages = {MAX_QUEUED_MESSAGES}\n\
         max_queued_bytes = \"{}KiB\"\n",
        MAX_PENDING / KIB,
        MAX_PACKET / KIB,
        MAX_QUEUED_BYTES / KIB
    )
}

/// What the broker may hold beyond its baseline while flooded.
fn allowance() -> usize {
    let packet = std::mem::size_of::<Packet>();
    // The stalled subscriber's write queue, at most its hard bound
    // (src/server.rs: 2 x max pending + max packet size + 64 KiB).
    let write_queue = 2 * MAX_PENDING + MAX_PACKET + 64 * KIB;
    // Its session queue (QoS 0 queues only behind older messages), each
    // entry a delivery of a message at most max packet size.
    let session_queue = MAX_QUEUED_BYTES + MAX_QUEUED_MESSAGES * (packet + 64);
    // Decoded packets waiting for the core, and the read buffers they pin.
    let inputs = INPUT_CAPACITY * (MAX_PACKETS_PER_INPUT * packet + READ_CHUNK + MAX_PACKET);
    write_queue + session_queue + inputs + SLACK
}

fn vm_rss(pid: u32) -> usize {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map(|kb| kb * KIB)
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

fn publish_bytes(topic: &str, qos: QoS, id: u16, payload: Bytes) -> BytesMut {
    let packet = Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        packet_id: PacketId::new(id),
        properties: Properties::default(),
        payload,
    });
    let mut out = BytesMut::new();
    encode(&packet, ProtocolVersion::V3_1_1, &mut out).expect("encode PUBLISH");
    out
}

#[test]
fn a_flood_to_a_stalled_subscriber_is_bounded_and_others_are_served() {
    let broker = Sansmq::start(bin(), Some(&config()), &[]);
    let v = ProtocolVersion::V3_1_1;

    // The stalled subscriber: subscribes, then never reads again.
    let (mut stalled, _) = RawClient::connect(broker.addr, v, "stalled", 0, None);
    stalled.subscribe("flood/#", QoS::AtMostOnce);

    // The other topic's subscriber reads everything (QoS 0: nothing to ack).
    let (mut reader, _) = RawClient::connect(broker.addr, v, "reader", 0, None);
    reader.subscribe("other/t", QoS::AtMostOnce);
    let received = Arc::new(AtomicU64::new(0));
    let reader_thread = {
        let received = received.clone();
        thread::spawn(move || {
            let deadline = Instant::now() + FLOOD_TIME + 2 * ACK_WAIT;
            while received.load(Ordering::Relaxed) < u64::from(QOS1_MESSAGES) {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                match reader.recv_publish(left) {
                    Ok(p) if &*p.topic == "other/t" => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(RecvError::Timeout) => break,
                    Err(e) => panic!("reader: {e:?}"),
                }
            }
        })
    };

    let (mut flooder, _) = RawClient::connect(broker.addr, v, "flooder", 0, None);
    let (mut qos1, _) = RawClient::connect(broker.addr, v, "qos1", 0, None);

    let pid = broker.pid();
    let baseline = vm_rss(pid);
    let bound = baseline + allowance();

    // Sample the broker's RSS while the flood runs.
    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = {
        let flooding = flooding.clone();
        thread::spawn(move || {
            let mut peak = 0;
            while flooding.load(Ordering::Relaxed) {
                peak = peak.max(vm_rss(pid));
                thread::sleep(Duration::from_millis(20));
            }
            peak.max(vm_rss(pid))
        })
    };

    let flood_thread = thread::spawn(move || {
        let one = publish_bytes(
            "flood/x",
            QoS::AtMostOnce,
            0,
            Bytes::from(vec![b'f'; FLOOD_PAYLOAD]),
        );
        const BATCH: usize = 64;
        let mut batch = BytesMut::with_capacity(one.len() * BATCH);
        for _ in 0..BATCH {
            batch.extend_from_slice(&one);
        }
        let start = Instant::now();
        let mut sent = 0;
        while sent < FLOOD_MESSAGES && start.elapsed() < FLOOD_TIME {
            flooder.send_raw(&batch);
            sent += BATCH;
        }
        (sent, flooder)
    });

    // QoS 1 on the other topic, one at a time, during the flood.
    for id in 1..=QOS1_MESSAGES {
        let msg = publish_bytes("other/t", QoS::AtLeastOnce, id, Bytes::from_static(b"q1"));
        qos1.send_raw(&msg);
        let deadline = Instant::now() + ACK_WAIT;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no PUBACK for message {id} within {ACK_WAIT:?}"));
            match qos1.recv(left) {
                Ok(Packet::PubAck(a)) => {
                    assert_eq!(a.packet_id.get(), id, "PUBACK for another message");
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("no PUBACK for message {id}: {e:?}"),
            }
        }
    }

    let (sent, flooder) = flood_thread.join().expect("flood thread");
    flooding.store(false, Ordering::Relaxed);
    let peak = sampler.join().expect("sampler thread");
    reader_thread.join().expect("reader thread");

    eprintln!(
        "flood: {sent} messages of {FLOOD_PAYLOAD} B ({} MiB); broker RSS baseline {} KiB, \
         peak {} KiB, bound {} KiB",
        sent * FLOOD_PAYLOAD / MIB,
        baseline / KIB,
        peak / KIB,
        bound / KIB
    );
    // The bound must mean something: the flood carried more than it allows.
    assert!(
        sent * FLOOD_PAYLOAD > 2 * allowance(),
        "the flood carried only {sent} messages; too few to test the bound"
    );
    assert!(
        peak <= bound,
        "broker RSS peaked at {} KiB, over the bound of {} KiB (baseline {} KiB)",
        peak / KIB,
        bound / KIB,
        baseline / KIB
    );
    assert_eq!(
        received.load(Ordering::Relaxed),
        u64::from(QOS1_MESSAGES),
        "the other topic's subscriber missed messages"
    );
    // What the stalled subscriber could not take was dropped and counted:
    // nearly all of the flood (it could take its kernel socket buffers and
    // max pending bytes at most). The drop log is rate limited (one line per
    // cause per second, written when the core is busy), so keep publishing
    // one more message now and then until a line counts them all (bounded).
    let mut flooder = flooder;
    let one_more = publish_bytes("flood/x", QoS::AtMostOnce, 0, Bytes::from_static(b"f"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let dropped = loop {
        let total = dropped_total(&broker.log(), "slow_consumer");
        if total >= (sent / 2) as u64 || Instant::now() >= deadline {
            break total;
        }
        flooder.send_raw(&one_more);
        thread::sleep(Duration::from_millis(100));
    };
    eprintln!("flood: {dropped} messages dropped as slow_consumer");
    assert!(
        dropped >= (sent / 2) as u64,
        "only {dropped} of {sent} flooded messages were counted as dropped"
    );
    // ... by the core's policy, never by the runtime's last-resort bound.
    assert!(
        !broker.log().contains("write queue over its hard bound"),
        "the stalled subscriber's write queue hit its hard bound"
    );
    drop(stalled);
}

/// The largest `total=` of the "messages dropped" lines for `cause`.
fn dropped_total(log: &str, cause: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("messages dropped") && l.contains(cause))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("total="))
                .and_then(|t| t.parse::<u64>().ok())
        })
        .max()
        .unwrap_or(0)
}
