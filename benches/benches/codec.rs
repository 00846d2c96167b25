//! Codec benchmarks: decode and encode of the four workloads in
//! `sansmq_benches::codec`, each decoded (and encoded) by `mqttbytes` 0.6
//! in the same benchmark group, so the report reads as a ratio.
//!
//! Decoding is measured the way a connection does it: many packets back to
//! back in one receive buffer, each decoded and then dropped. Filling the
//! buffer is not timed.
//!
//! Run: `cargo bench -p sansmq-benches --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mqtt_core::codec::{decode, encode, ProtocolVersion, MAX_PACKET_SIZE};
use sansmq_benches::codec::{all, repeated, Workload};

/// Packets per receive buffer.
const BATCH: usize = 1_000;

/// Time `iters` calls of `decode_one`, over buffers of `BATCH` copies of
/// `bytes` prepared outside the timed section.
fn time_decodes(iters: u64, bytes: &[u8], mut decode_one: impl FnMut(&mut BytesMut)) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH as u64) as usize;
        let mut buf = repeated(bytes, n);
        let start = Instant::now();
        for _ in 0..n {
            decode_one(&mut buf);
        }
        total += start.elapsed();
        debug_assert!(buf.is_empty());
        left -= n as u64;
    }
    total
}

// Both decoders' results are inspected in place (`black_box(&result)`) and
// dropped, not moved out: moving measures the size of the packet type (ours
// is about 1 KB), not the decoder.

fn decode_ours(buf: &mut BytesMut, version: ProtocolVersion) {
    let result = decode(buf, version, MAX_PACKET_SIZE);
    debug_assert!(matches!(result, Ok(Some(_))));
    black_box(&result);
}

fn decode_mqttbytes(buf: &mut BytesMut, version: ProtocolVersion) {
    let max = MAX_PACKET_SIZE as usize;
    if version.is_v5() {
        let result = mqttbytes::v5::read(buf, max);
        debug_assert!(result.is_ok());
        black_box(&result);
    } else {
        let result = mqttbytes::v4::read(buf, max);
        debug_assert!(result.is_ok());
        black_box(&result);
    }
}

/// mqttbytes has no `Packet::write`: call the variant's own.
fn encode_mqttbytes(packet: &MqttBytesPacket, buf: &mut BytesMut) {
    use mqttbytes::{v4, v5};
    let packet = match packet {
        MqttBytesPacket::V5(p) => &MqttBytesRef::V5(p),
        MqttBytesPacket::V4(p) => &MqttBytesRef::V4(p),
    };
    let written = match packet {
        MqttBytesRef::V4(v4::Packet::Publish(p)) => p.write(buf),
        MqttBytesRef::V4(v4::Packet::Subscribe(p)) => p.write(buf),
        MqttBytesRef::V4(v4::Packet::Connect(p)) => p.write(buf),
        MqttBytesRef::V5(v5::Packet::Publish(p)) => p.write(buf),
        MqttBytesRef::V5(v5::Packet::Subscribe(p)) => p.write(buf),
        MqttBytesRef::V5(v5::Packet::Connect(p)) => p.write(buf),
        other => panic!("no encoder wired for {other:?}"),
    };
    black_box(written.expect("mqttbytes encodes it"));
}

#[derive(Debug)]
enum MqttBytesRef<'a> {
    V4(&'a mqttbytes::v4::Packet),
    V5(&'a mqttbytes::v5::Packet),
}

#[derive(Debug)]
enum MqttBytesPacket {
    V4(mqttbytes::v4::Packet),
    V5(Box<mqttbytes::v5::Packet>),
}

fn mqttbytes_packet(w: &Workload) -> MqttBytesPacket {
    let mut buf = BytesMut::from(&w.bytes[..]);
    let max = MAX_PACKET_SIZE as usize;
    if w.version.is_v5() {
        MqttBytesPacket::V5(Box::new(
            mqttbytes::v5::read(&mut buf, max).expect("mqttbytes v5 decodes it"),
        ))
    } else {
        MqttBytesPacket::V4(mqttbytes::v4::read(&mut buf, max).expect("mqttbytes v4 decodes it"))
    }
}

fn codec(c: &mut Criterion) {
    for w in all() {
        // Both decoders accept the input, and ours gives the packet back.
        let mut check = BytesMut::from(&w.bytes[..]);
        let ours = decode(&mut check, w.version, MAX_PACKET_SIZE).expect("valid");
        assert_eq!(ours.as_ref(), Some(&w.packet), "{}", w.name);
        let theirs = mqttbytes_packet(&w);

        let mut group = c.benchmark_group(format!("decode/{}", w.name));
        group.throughput(Throughput::Bytes(w.bytes.len() as u64));
        group.bench_function("sansmq", |b| {
            b.iter_custom(|iters| time_decodes(iters, &w.bytes, |buf| decode_ours(buf, w.version)))
        });
        group.bench_function("mqttbytes", |b| {
            b.iter_custom(|iters| {
                time_decodes(iters, &w.bytes, |buf| decode_mqttbytes(buf, w.version))
            })
        });
        group.finish();

        let mut group = c.benchmark_group(format!("encode/{}", w.name));
        group.throughput(Throughput::Bytes(w.bytes.len() as u64));
        let mut buf = BytesMut::with_capacity(w.bytes.len() * 2);
        group.bench_function("sansmq", |b| {
            b.iter(|| {
                buf.clear();
                encode(black_box(&w.packet), w.version, &mut buf).expect("encodable");
                black_box(&buf);
            })
        });
        group.bench_function("mqttbytes", |b| {
            b.iter(|| {
                buf.clear();
                encode_mqttbytes(black_box(&theirs), &mut buf);
                black_box(&buf);
            })
        });
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
