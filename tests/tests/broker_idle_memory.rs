//! Heap held by the broker per idle connection (issue 4: RSS per idle
//! connection under 2 KiB for the whole process, of which the broker core
//! is one part). A counting global allocator measures the live bytes the
//! broker holds for 4,000 connected, idle MQTT 3.1.1 clients (clean
//! session, keep alive 300 s, as `sansmq bench conn` connects them), and
//! the test fails if that grows past its budget.
//!
//! The allocator sees every allocation in this test binary, so this file
//! holds a single test (no other test thread allocates while it counts).
// The test plays the runtime: it reads the clock once, for a base instant.
#![allow(clippy::disallowed_methods)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use mqtt_core::broker::{Broker, BrokerConfig, ConnectionId, ConnectionInfo};
use mqtt_core::codec::{Connect, Packet, Properties, ProtocolVersion};

struct Counting;

/// Bytes allocated and not yet freed (requested sizes, as massif counts).
static LIVE: AtomicIsize = AtomicIsize::new(0);

fn add(n: usize) {
    LIVE.fetch_add(n as isize, Ordering::Relaxed);
}

fn sub(n: usize) {
    LIVE.fetch_sub(n as isize, Ordering::Relaxed);
}

// Forwarding to `System`, which upholds GlobalAlloc's contract. It lives
// here, not in mqtt-core (which has no `unsafe` at all, tests included); the
// workspace denies `unsafe`, and an allocator cannot be written without it.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        // SAFETY: same layout, forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        // SAFETY: same layout, forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        sub(layout.size());
        add(new_size);
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        sub(layout.size());
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CONNS: u64 = 4_000;

/// Live heap bytes per idle connection that the broker may hold, hash
/// tables' spare slots included (so it moves with the connection count
/// between powers of two). Measured at 598: a boxed `Connection` (176), a
/// boxed `Session` (200), their map slots, the client id, and one keep
/// alive entry in the connection timers' `BTreeSet`. Before issue 4's
/// work it was about 830: the timers were a `HashMap` plus a `BTreeSet`
/// keyed by 64-byte `(TimerOwner, TimerKind)` values (~250 per
/// connection), and `Connection` was 216 bytes.
const BUDGET: isize = 640;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

#[test]
fn idle_connections_cost_little_heap() {
    let t0 = Instant::now();
    let mut broker = Broker::new(BrokerConfig::default(), t0);
    let before = live();
    for i in 0..CONNS {
        let conn = ConnectionId(i);
        let info = ConnectionInfo {
            peer: Some(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                40_000 + (i % 20_000) as u16,
            ))),
            listener: "tcp".to_owned(),
            internal: false,
        };
        let now = t0 + Duration::from_micros(i * 100);
        broker.handle_connection_opened(conn, info, now);
        let connect = Packet::Connect(Connect {
            protocol_version: ProtocolVersion::V3_1_1,
            clean_start: true,
            keep_alive: 300,
            client_id: format!("sansmq-bench-{i}").into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        });
        broker.handle_packet(conn, connect, now);
        while let Some(t) = broker.poll_transmit() {
            broker.handle_written(t.conn, t.data.len(), now);
        }
        while broker.poll_event().is_some() {}
    }
    // Idle for a while: keep alive timers come and go lazily.
    broker.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(broker.connection_count(), CONNS as usize);
    let per_conn = (live() - before) / CONNS as isize;
    println!("broker heap per idle connection: {per_conn} bytes");
    assert!(
        per_conn <= BUDGET,
        "broker heap per idle connection is {per_conn} bytes, over its budget of {BUDGET}"
    );
    drop(broker);
}
