//! Decoding a PUBLISH performs no heap allocation: the packet, its topic,
//! its properties and its payload all borrow the receive buffer.
//!
//! A counting global allocator sees every allocation in this test binary,
//! so this file holds a single test (no other test thread allocates while
//! it counts).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use mqtt_core::codec::{
    decode, encode, ByteString, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS,
    MAX_PACKET_SIZE,
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// Forwarding to `System`, which upholds GlobalAlloc's contract; the
// workspace denies `unsafe`, and an allocator cannot be written without it.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout, forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout, forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const COPIES: usize = 1_000;

fn publish(qos: QoS, properties: Properties, payload_len: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from_static("sensors/building-1/floor-2/temperature"),
        packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(42).expect("non-zero")),
        properties,
        payload: Bytes::from(vec![0x5A; payload_len]),
    })
}

/// Encode `COPIES` copies of `packet` into one buffer, then decode them all
/// and check the allocation count did not move.
fn assert_decode_allocates_nothing(name: &str, packet: &Packet, version: ProtocolVersion) {
    let mut buf = BytesMut::new();
    for _ in 0..COPIES + 1 {
        encode(packet, version, &mut buf).expect("encodable");
    }
    // The first split of a freshly allocated BytesMut turns its Vec into a
    // shared, reference-counted buffer: one allocation per receive buffer,
    // not per packet. Do it outside the counted loop.
    let first = decode(&mut buf, version, MAX_PACKET_SIZE)
        .expect("valid")
        .expect("complete");
    assert_eq!(&first, packet);
    drop(first);

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut decoded = 0usize;
    while let Some(p) = decode(&mut buf, version, MAX_PACKET_SIZE).expect("valid") {
        // Touch the packet so nothing is optimised away.
        if let Packet::Publish(p) = &p {
            decoded += p.payload.len().min(1) + p.topic.len().min(1);
        }
        drop(p);
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(decoded, 2 * COPIES, "{name}: every copy decoded");
    assert_eq!(after - before, 0, "{name}: {} allocations", after - before);
}

#[test]
fn decoding_publish_allocates_nothing() {
    // The counter really sees allocations.
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let v = std::hint::black_box(vec![1u8; 16]);
    assert!(ALLOCATIONS.load(Ordering::Relaxed) > before);
    drop(v);

    // 3.1.1, QoS 0, a 64-byte packet.
    let small = publish(QoS::AtMostOnce, Properties::default(), 22);
    let mut probe = BytesMut::new();
    encode(&small, ProtocolVersion::V3_1_1, &mut probe).expect("encodable");
    assert_eq!(probe.len(), 64);
    assert_decode_allocates_nothing("3.1.1 QoS 0", &small, ProtocolVersion::V3_1_1);

    // 3.1.1, QoS 1.
    let qos1 = publish(QoS::AtLeastOnce, Properties::default(), 1024);
    assert_decode_allocates_nothing("3.1.1 QoS 1", &qos1, ProtocolVersion::V3_1_1);

    // 5.0, QoS 1, with properties that hold no Vec: the strings and binary
    // data are slices of the buffer too.
    let properties = Properties {
        payload_format_indicator: Some(true),
        message_expiry_interval: Some(3600),
        content_type: Some(ByteString::from_static("application/json")),
        response_topic: Some(ByteString::from_static("replies/client-7")),
        correlation_data: Some(Bytes::from_static(b"req-0001")),
        topic_alias: Some(7),
        ..Properties::default()
    };
    let v5 = publish(QoS::AtLeastOnce, properties, 1024);
    assert_decode_allocates_nothing("5.0 QoS 1 with properties", &v5, ProtocolVersion::V5);
}
