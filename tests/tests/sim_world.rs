//! The simulator's own contract: exact virtual timing of dials, data,
//! partitions, vanishing peers and resets, and the livelock detector.

use std::any::Any;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sansmq_tests::sim::{Cx, HostId, LinkConfig, NetEvent, Node, PartitionKind, SockId, World};

/// Records what the network tells it, with virtual times.
#[derive(Default)]
struct Probe {
    events: Vec<(Duration, NetEvent)>,
    sock: Option<SockId>,
}

impl Node for Probe {
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _cx: &mut Cx<'_>) {}
    fn handle_net(&mut self, event: NetEvent, cx: &mut Cx<'_>) {
        if let NetEvent::Accepted { sock, .. } = event {
            self.sock = Some(sock);
        }
        self.events.push((cx.elapsed(), event));
    }
    fn drain(&mut self, _cx: &mut Cx<'_>) {}
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

const MS: Duration = Duration::from_millis(1);

fn world(listening: bool) -> (World, HostId, HostId) {
    let link = LinkConfig {
        latency: 10 * MS,
        jitter: Duration::ZERO,
        ..LinkConfig::default()
    };
    let mut w = World::new(1, link);
    let a = w.add_host(Box::<Probe>::default(), false);
    let b = w.add_host(Box::<Probe>::default(), listening);
    (w, a, b)
}

fn dial(w: &mut World, a: HostId, b: HostId) -> SockId {
    w.with_node::<Probe, _>(a, |p, cx| {
        let s = cx.dial(b);
        p.sock = Some(s);
        s
    })
}

fn send(w: &mut World, from: HostId, data: &'static [u8]) {
    w.with_node::<Probe, _>(from, |p, cx| {
        let sock = p.sock.expect("connected");
        cx.send(sock, Bytes::from_static(data));
    });
}

fn events(w: &World, h: HostId) -> Vec<(Duration, NetEvent)> {
    w.node::<Probe>(h).events.clone()
}

#[test]
fn refused_dial_fails_after_one_rtt() {
    let (mut w, a, b) = world(false);
    let s = dial(&mut w, a, b);
    w.run_until(Duration::from_secs(1));
    assert_eq!(
        events(&w, a),
        vec![(20 * MS, NetEvent::DialFailed { sock: s })]
    );
    assert!(events(&w, b).is_empty());
}

#[test]
fn dial_and_data_take_exactly_the_link_latency() {
    let (mut w, a, b) = world(true);
    let s = dial(&mut w, a, b);
    w.run_until(Duration::from_secs(1));
    send(&mut w, a, b"hello");
    w.run_until(Duration::from_secs(2));
    let ea = events(&w, a);
    let eb = events(&w, b);
    assert_eq!(ea, vec![(20 * MS, NetEvent::Connected { sock: s })]);
    assert_eq!(eb.len(), 2);
    assert_eq!(eb[0].0, 10 * MS);
    assert_eq!(eb[1].0, Duration::from_millis(1010));
}

#[test]
fn hold_partition_delays_until_heal_and_keeps_order() {
    let (mut w, a, b) = world(true);
    dial(&mut w, a, b);
    w.run_until(Duration::from_secs(1));
    w.partition(a, b, Duration::from_secs(2), PartitionKind::Hold);
    send(&mut w, a, b"1");
    w.run_until(Duration::from_millis(1500));
    send(&mut w, a, b"2");
    w.run_until(Duration::from_secs(5));
    let eb = events(&w, b);
    let data: Vec<(Duration, Bytes)> = eb
        .into_iter()
        .filter_map(|(t, e)| match e {
            NetEvent::Data { data, .. } => Some((t, data)),
            _ => None,
        })
        .collect();
    assert_eq!(
        data,
        vec![
            (Duration::from_millis(3010), Bytes::from_static(b"1")),
            (Duration::from_millis(3010), Bytes::from_static(b"2")),
        ]
    );
}

#[test]
fn drop_partition_black_holes_the_stream_silently() {
    let (mut w, a, b) = world(true);
    dial(&mut w, a, b);
    w.run_until(Duration::from_secs(1));
    w.partition(a, b, Duration::from_secs(2), PartitionKind::Drop);
    send(&mut w, a, b"lost");
    w.run_until(Duration::from_secs(4));
    // A stream cannot skip bytes: after the partition it stays dead.
    send(&mut w, a, b"after");
    w.run_until(Duration::from_secs(10));
    assert_eq!(events(&w, b).len(), 1, "only Accepted: {:?}", events(&w, b));
    assert_eq!(events(&w, a).len(), 1, "only Connected");
}

#[test]
fn vanish_tells_only_the_vanishing_side_and_reset_tells_both() {
    let (mut w, a, b) = world(true);
    let s = dial(&mut w, a, b);
    w.run_until(Duration::from_secs(1));
    w.vanish_between(a, b);
    w.run_until(Duration::from_secs(10));
    assert_eq!(
        events(&w, a).last(),
        Some(&(
            Duration::from_secs(1),
            NetEvent::Closed {
                sock: s,
                reset: true
            }
        ))
    );
    assert_eq!(events(&w, b).len(), 1, "the peer never learns");

    let (mut w, a, b) = world(true);
    let s = dial(&mut w, a, b);
    w.run_until(Duration::from_secs(1));
    w.reset_between(a, b);
    w.run_until(Duration::from_secs(2));
    let sb = w.node::<Probe>(b).sock.expect("accepted");
    assert_eq!(
        events(&w, a).last(),
        Some(&(
            Duration::from_secs(1),
            NetEvent::Closed {
                sock: s,
                reset: true
            }
        ))
    );
    assert_eq!(
        events(&w, b).last(),
        Some(&(
            Duration::from_secs(1),
            NetEvent::Closed {
                sock: sb,
                reset: true
            }
        ))
    );
}

#[test]
fn fin_arrives_after_the_data_sent_before_it() {
    let (mut w, a, b) = world(true);
    dial(&mut w, a, b);
    w.run_until(Duration::from_secs(1));
    w.with_node::<Probe, _>(a, |p, cx| {
        let sock = p.sock.expect("connected");
        cx.send(sock, Bytes::from_static(b"last words"));
        cx.close(sock);
    });
    w.run_until(Duration::from_secs(2));
    let eb = events(&w, b);
    assert!(matches!(eb[1].1, NetEvent::Data { .. }));
    assert!(matches!(eb[2].1, NetEvent::Closed { reset: false, .. }));
    assert_eq!(eb[2].0, Duration::from_millis(1010));
}

/// A node whose timer never moves: the world must stop with the seed
/// rather than spin forever.
struct Spinner(Instant);

impl Node for Spinner {
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.0)
    }
    fn handle_timeout(&mut self, _cx: &mut Cx<'_>) {}
    fn handle_net(&mut self, _event: NetEvent, _cx: &mut Cx<'_>) {}
    fn drain(&mut self, _cx: &mut Cx<'_>) {}
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[test]
fn livelock_is_detected_with_the_seed() {
    let mut w = World::new(77, LinkConfig::default());
    w.max_steps_per_instant = 1000;
    let base = w.base();
    w.add_host(Box::new(Spinner(base + Duration::from_secs(3))), false);
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        w.run_until(Duration::from_secs(10));
    }))
    .expect_err("a livelock must panic");
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("livelock"), "{msg}");
    assert!(msg.contains("seed 77"), "{msg}");
    assert!(msg.contains("+3.000000s"), "{msg}");
}

/// Datagrams (QUIC over simulated UDP): seeded loss, duplication and
/// reordering, and nothing crosses a partition.
#[test]
fn datagrams_are_lost_duplicated_and_reordered_by_the_seed() {
    let run = |seed: u64| {
        let mut w = World::new(seed, LinkConfig::default());
        w.net().datagrams = sansmq_tests::sim::DatagramConfig {
            loss: 0.1,
            duplicate: 0.05,
            reorder: 0.1,
            reorder_delay: 20 * MS,
        };
        let a = w.add_host(Box::<Probe>::default(), false);
        let b = w.add_host(Box::<Probe>::default(), false);
        for i in 0..10_000u32 {
            w.with_node::<Probe, _>(a, |_, cx| {
                cx.send_datagram(b, Bytes::from(i.to_be_bytes().to_vec()))
            });
            w.run_for(MS);
        }
        w.partition(a, b, Duration::from_secs(1), PartitionKind::Hold);
        w.with_node::<Probe, _>(a, |_, cx| cx.send_datagram(b, Bytes::from_static(b"cut")));
        w.run_for(Duration::from_secs(2));
        let got: Vec<u32> = events(&w, b)
            .into_iter()
            .filter_map(|(_, e)| match e {
                NetEvent::Datagram { data, .. } => {
                    Some(u32::from_be_bytes(data[..4].try_into().ok()?))
                }
                _ => None,
            })
            .collect();
        (got, w.trace_hash())
    };
    let (got, hash) = run(5);
    let unique: std::collections::BTreeSet<u32> = got.iter().copied().collect();
    let lost = 10_000 - unique.len();
    let dups = got.len() - unique.len();
    let reordered = got.windows(2).filter(|p| p[1] < p[0]).count();
    assert!((800..1200).contains(&lost), "lost {lost}");
    assert!((300..700).contains(&dups), "duplicated {dups}");
    assert!(reordered > 100, "reordered {reordered}");
    assert!(!got.contains(&u32::from_be_bytes(*b"cut\0")));
    assert_eq!(run(5).1, hash, "same seed, same trace");
    assert_ne!(run(6).1, hash);
}
