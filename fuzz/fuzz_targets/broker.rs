//! Arbitrary bytes from several connections into one Broker: nothing a
//! client sends may panic the broker, and a closed connection stays closed.
//!
//! Input layout: byte 0 chooses which of the 4 connections start with a
//! valid CONNECT (bits 0-3) and whether it is 5.0 (bits 4-7). Then a series
//! of pieces, each `op` byte followed by its operands:
//! - `op & 3` is the connection; `op >> 2 & 7` the action:
//!   0..=3 a chunk of bytes (next byte = length), 4 transport closed,
//!   5 time advances by the next byte x 100 ms, 6 the runtime reports the
//!   pending bytes written, 7 the connection (re)opens.
#![no_main]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mqtt_core::broker::{Broker, BrokerConfig, ConnectionId, ConnectionInfo, Event};

const CONNS: usize = 4;

fn connect_bytes(id: u8, v5: bool) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T'];
    body.push(if v5 { 5 } else { 4 });
    body.push(0x02); // clean start
    body.extend_from_slice(&[0x00, 0x05]); // keep alive 5 s
    if v5 {
        body.push(0x00); // no properties
    }
    body.extend_from_slice(&[0x00, 0x02, b'c', b'0' + id]);
    let mut out = vec![0x10, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let t0 = Instant::now();
    let mut now = t0;
    let config = BrokerConfig {
        max_packet_size: 4096,
        max_queued_messages: 16,
        max_inflight: 4,
        max_pending_bytes_per_connection: 8192,
        storage_events: true,
        ..BrokerConfig::default()
    };
    let mut broker = Broker::new(config, now);
    let mut rx: Vec<BytesMut> = (0..CONNS).map(|_| BytesMut::new()).collect();
    let mut pending = [0usize; CONNS];
    let mut open = [false; CONNS];
    let mut generation = [0u64; CONNS];
    let id = |i: usize, g: u64| ConnectionId(g * CONNS as u64 + i as u64);
    for i in 0..CONNS {
        broker.handle_connection_opened(id(i, 0), ConnectionInfo::default(), now);
        open[i] = true;
        if flags & (1 << i) != 0 {
            rx[i].extend_from_slice(&connect_bytes(i as u8, flags & (0x10 << i) != 0));
            broker.handle_read(id(i, 0), &mut rx[i], now);
        }
    }
    loop {
        // Drain outputs after every input, as a runtime does.
        while let Some(t) = broker.poll_transmit() {
            let i = (t.conn.0 % CONNS as u64) as usize;
            if t.conn == id(i, generation[i]) {
                pending[i] += t.data.len();
            }
        }
        while let Some(e) = broker.poll_event() {
            if let Event::CloseConnection { conn, reason } = e {
                let i = (conn.0 % CONNS as u64) as usize;
                let _ = reason.to_string();
                if conn == id(i, generation[i]) {
                    open[i] = false;
                    rx[i].clear();
                }
            }
        }
        if let Some(d) = broker.poll_timeout() {
            assert!(d >= t0);
        }
        let Some((&op, tail)) = rest.split_first() else {
            break;
        };
        rest = tail;
        let i = usize::from(op & 3);
        let conn = id(i, generation[i]);
        match (op >> 2) & 7 {
            0..=3 => {
                let Some((&len, tail)) = rest.split_first() else {
                    break;
                };
                let n = usize::from(len).min(tail.len());
                let (chunk, tail) = tail.split_at(n);
                rest = tail;
                if open[i] {
                    rx[i].extend_from_slice(chunk);
                    broker.handle_read(conn, &mut rx[i], now);
                }
            }
            4 => {
                if open[i] {
                    broker.handle_connection_closed(conn, now);
                    open[i] = false;
                    rx[i].clear();
                }
            }
            5 => {
                let Some((&step, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                now += Duration::from_millis(u64::from(step) * 100);
                broker.handle_timeout(now);
            }
            6 => {
                broker.handle_written(conn, pending[i], now);
                pending[i] = 0;
            }
            _ => {
                if open[i] {
                    broker.handle_connection_closed(conn, now);
                }
                generation[i] += 1;
                pending[i] = 0;
                rx[i].clear();
                broker.handle_connection_opened(
                    id(i, generation[i]),
                    ConnectionInfo::default(),
                    now,
                );
                open[i] = true;
            }
        }
        assert!(broker.connection_count() <= CONNS);
    }
    // Everything still ends cleanly.
    broker.shutdown(now);
    while broker.poll_transmit().is_some() {}
    while broker.poll_event().is_some() {}
    assert_eq!(broker.connection_count(), 0);
    let _ = broker.export();
});
