//! Messages through the Broker object (no sockets, no codec on the input
//! side: packets are injected with `handle_packet`, outputs are encoded
//! bytes drained with `poll_transmit`):
//! - fan-out: 1 publisher -> 1,000 subscribers of one topic (QoS 0 and 1),
//! - fan-in: 1,000 publishers -> 1 wildcard subscriber (QoS 0 and 1).
//!
//! Heap allocations per routed message are counted by a wrapping global
//! allocator and printed before the timings.
//!
//! Run: `cargo bench -p sansmq-benches --bench broker`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mqtt_core::broker::{Broker, BrokerConfig, ConnectionId, ConnectionInfo};
use mqtt_core::codec::{
    Connect, Packet, PacketId, Properties, ProtocolVersion, PubResponse, Publish, QoS, Subscribe,
    SubscriptionOptions,
};

/// Counts allocations so the bench can report allocations per message.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// The only unsafe code in the workspace: a GlobalAlloc must be an unsafe
// impl. It forwards to the system allocator unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: u64 = 1_000;

fn pid(n: u16) -> PacketId {
    PacketId::new(n.max(1)).unwrap_or(PacketId::MIN)
}

struct World {
    broker: Broker,
    now: Instant,
    qos: QoS,
}

impl World {
    fn new(qos: QoS) -> Self {
        let now = Instant::now();
        let config = BrokerConfig {
            sys_events: false,
            max_connections: 10_000,
            max_pending_bytes_per_connection: usize::MAX / 4,
            ..Default::default()
        };
        Self {
            broker: Broker::new(config, now),
            now,
            qos,
        }
    }

    fn client(&mut self, conn: u64, id: &str, filter: Option<&str>) {
        let c = ConnectionId(conn);
        self.broker
            .handle_connection_opened(c, ConnectionInfo::default(), self.now);
        self.broker.handle_packet(
            c,
            Packet::Connect(Connect {
                protocol_version: ProtocolVersion::V5,
                clean_start: true,
                keep_alive: 60,
                client_id: id.into(),
                will: None,
                username: None,
                password: None,
                properties: Properties::default(),
            }),
            self.now,
        );
        if let Some(f) = filter {
            self.broker.handle_packet(
                c,
                Packet::Subscribe(Subscribe {
                    packet_id: pid(1),
                    filters: vec![(f.into(), SubscriptionOptions::new(self.qos))],
                    properties: Properties::default(),
                }),
                self.now,
            );
        }
        self.drain();
    }

    /// Write everything out, reporting each transmit written at once.
    fn drain(&mut self) -> usize {
        let mut bytes = 0;
        while let Some(t) = self.broker.poll_transmit() {
            bytes += t.data.len();
            self.broker.handle_written(t.conn, t.data.len(), self.now);
        }
        while self.broker.poll_event().is_some() {}
        bytes
    }

    fn publish(&mut self, conn: u64, topic: &str, payload: &Bytes, id: u16) {
        self.broker.handle_packet(
            ConnectionId(conn),
            Packet::Publish(Publish {
                dup: false,
                qos: self.qos,
                retain: false,
                topic: topic.into(),
                packet_id: (self.qos != QoS::AtMostOnce).then(|| pid(id)),
                properties: Properties::default(),
                payload: payload.clone(),
            }),
            self.now,
        );
    }

    fn ack(&mut self, conn: u64, id: u16) {
        self.broker.handle_packet(
            ConnectionId(conn),
            Packet::PubAck(PubResponse::new(pid(id))),
            self.now,
        );
    }
}

/// 1 publisher (conn 0) -> N subscribers (conns 1..=N) on "news".
fn fan_out_world(qos: QoS) -> World {
    let mut w = World::new(qos);
    w.client(0, "pub", None);
    for i in 1..=N {
        w.client(i, &format!("sub{i}"), Some("news"));
    }
    w
}

/// N publishers (conns 1..=N) -> 1 wildcard subscriber (conn 0).
fn fan_in_world(qos: QoS) -> (World, Vec<String>) {
    let mut w = World::new(qos);
    w.client(0, "sub", Some("sensors/#"));
    for i in 1..=N {
        w.client(i, &format!("pub{i}"), None);
    }
    let topics = (1..=N).map(|i| format!("sensors/{i}/temp")).collect();
    (w, topics)
}

/// One fan-out round: one PUBLISH, N deliveries (acknowledged for QoS 1).
fn fan_out_round(w: &mut World, seq: &mut u16, payload: &Bytes) {
    *seq = seq.wrapping_add(1).max(1);
    w.publish(0, "news", payload, *seq);
    black_box(w.drain());
    if w.qos == QoS::AtLeastOnce {
        let id = w
            .broker
            .session_state("sub1")
            .and_then(|s| s.inflight.front())
            .map(|m| m.packet_id.get());
        if let Some(id) = id {
            for i in 1..=N {
                w.ack(i, id);
            }
            black_box(w.drain());
        }
    }
}

/// One fan-in round: N PUBLISH, one from each publisher.
fn fan_in_round(w: &mut World, topics: &[String], seq: &mut u16, payload: &Bytes) {
    *seq = seq.wrapping_add(1).max(1);
    for (i, t) in topics.iter().enumerate() {
        w.publish(i as u64 + 1, t, payload, *seq);
        if w.qos == QoS::AtLeastOnce {
            let id = w
                .broker
                .session_state("sub")
                .and_then(|s| s.inflight.front())
                .map(|m| m.packet_id.get());
            if let Some(id) = id {
                w.ack(0, id);
            }
        }
    }
    black_box(w.drain());
}

fn report_allocations() {
    let payload = Bytes::from(vec![b'x'; 64]);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let mut w = fan_out_world(qos);
        let mut seq = 0;
        for _ in 0..10 {
            fan_out_round(&mut w, &mut seq, &payload);
        }
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let rounds = 100;
        for _ in 0..rounds {
            fan_out_round(&mut w, &mut seq, &payload);
        }
        let allocs = ALLOCATIONS.load(Ordering::Relaxed) - before;
        println!(
            "fan-out 1->{N} {qos:?}: {:.2} allocations per routed message ({:.3} per delivery)",
            allocs as f64 / rounds as f64,
            allocs as f64 / (rounds * N) as f64
        );
        let (mut w, topics) = fan_in_world(qos);
        fan_in_round(&mut w, &topics, &mut seq, &payload);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..10 {
            fan_in_round(&mut w, &topics, &mut seq, &payload);
        }
        let allocs = ALLOCATIONS.load(Ordering::Relaxed) - before;
        println!(
            "fan-in {N}->1 {qos:?}: {:.2} allocations per routed message",
            allocs as f64 / (10 * N) as f64
        );
    }
}

fn broker(c: &mut Criterion) {
    report_allocations();
    let payload = Bytes::from(vec![b'x'; 64]);
    let mut g = c.benchmark_group("broker");
    g.sample_size(20);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let mut w = fan_out_world(qos);
        let mut seq = 0;
        g.throughput(Throughput::Elements(N));
        g.bench_function(format!("fan_out_1_to_{N}_{qos:?}_deliveries"), |b| {
            b.iter(|| fan_out_round(&mut w, &mut seq, &payload))
        });
        let (mut w, topics) = fan_in_world(qos);
        g.throughput(Throughput::Elements(N));
        g.bench_function(format!("fan_in_{N}_to_1_{qos:?}_messages"), |b| {
            b.iter(|| fan_in_round(&mut w, &topics, &mut seq, &payload))
        });
    }
    g.finish();
}

criterion_group!(benches, broker);
criterion_main!(benches);
