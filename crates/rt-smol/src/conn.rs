//! Accept loops and connection tasks.
//!
//! A connection task runs its read half and write half as one future (a
//! race that ends when the write half ends, so the socket is closed only
//! after the last queued byte is written):
//! - read half: read, split into packets with `mqtt_core::codec::decode`,
//!   send each `Packet` to the core task. The first packet is decoded by its
//!   own protocol level (that is how `decode` treats CONNECT); if it is a
//!   CONNECT its version is used for every later packet, exactly as the core
//!   does. When the socket ends it reports `Closed` and parks.
//! - write half: write what the core task queued, report the bytes written,
//!   and on `Close` send FIN and wait briefly for the peer's.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use async_executor::Executor;
use async_io::{Async, Timer};
use bytes::BytesMut;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt, FutureExt};
use mqtt_core::broker::{ConnectionId, ConnectionInfo};
use mqtt_core::codec::{decode, parse_fixed_header, Packet, ProtocolVersion};
use tracing::{debug, warn};

use crate::server::{Input, Listener, Outbound};

/// Bytes read per `read` call when no larger packet is known to be coming.
const READ_CHUNK: usize = 4096;
/// Bytes written before the write half reports progress to the core.
const WRITE_REPORT: usize = 64 * 1024;
/// A frame copy buffer larger than this is freed after use.
const FRAME_COPY_KEEP: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnSettings {
    /// The core's normalized maximum packet size.
    pub(crate) max_packet_size: u32,
    pub(crate) linger: Duration,
}

pub(crate) async fn accept_loop(
    listener: Listener,
    ex: Arc<Executor<'static>>,
    to_core: Sender<Input>,
    alive: Sender<()>,
    next_id: Arc<AtomicU64>,
    settings: ConnSettings,
) {
    loop {
        match listener.socket.accept().await {
            Ok((stream, peer)) => {
                // MQTT is request/response with small packets: no Nagle delay.
                if let Err(e) = stream.get_ref().set_nodelay(true) {
                    debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                }
                // Never reused, so a late input about an old connection can
                // never be mistaken for a new one.
                let conn = ConnectionId(next_id.fetch_add(1, Ordering::Relaxed));
                let info = ConnectionInfo {
                    peer: Some(peer),
                    listener: listener.name.clone(),
                };
                ex.spawn(connection(
                    stream,
                    conn,
                    info,
                    to_core.clone(),
                    settings,
                    alive.clone(),
                ))
                .detach();
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on accept.
                warn!(listener = %listener.name, error = %e, "accept failed");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(
    stream: Async<TcpStream>,
    conn: ConnectionId,
    info: ConnectionInfo,
    to_core: Sender<Input>,
    settings: ConnSettings,
    _alive: Sender<()>,
) {
    let (tx, rx) = async_channel::unbounded();
    if to_core
        .send(Input::Opened { conn, info, tx })
        .await
        .is_err()
    {
        return; // the server is stopping
    }
    read_half(&stream, conn, &to_core, settings.max_packet_size)
        .or(write_half(&stream, conn, rx, &to_core, settings.linger))
        .await;
}

/// What the front of the read buffer holds.
enum Next {
    /// Boxed: a `Packet` is ~1 KiB and travels on to the core task's
    /// channel; one allocation beats copying it twice.
    Packet(Box<Packet>),
    /// An incomplete packet; the number is its full size when known.
    NeedMore(usize),
    /// Bytes from the start of a packet that does not decode.
    Malformed(BytesMut),
}

/// Decode the packet at the front of `buf`, if complete.
///
/// `decode` consumes a complete frame even when its body turns out to be
/// malformed, so the frame is copied into `frame_copy` first: on an error
/// the core gets the original bytes and decodes them itself, which keeps
/// the error's classification and the reaction (CONNACK 0x01 for an unknown
/// protocol level, DISCONNECT 0x81 for 5.0, ...) in the core. The copy is a
/// memcpy into a reused buffer; it disappears once the core can take a
/// decode error directly.
fn next_packet(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
    frame_copy: &mut Vec<u8>,
) -> Next {
    let header = match parse_fixed_header(buf, version) {
        Ok(Some(h)) => h,
        Ok(None) => return Next::NeedMore(0),
        // Nothing consumed: the core will see the same bytes and error.
        Err(_) => return Next::Malformed(buf.split()),
    };
    let len = header.packet_len();
    if len > max_packet_size as usize {
        return Next::Malformed(buf.split());
    }
    if buf.len() < len {
        return Next::NeedMore(len);
    }
    frame_copy.clear();
    frame_copy.extend_from_slice(&buf[..len]);
    let next = match decode(buf, version, max_packet_size) {
        Ok(Some(p)) => Next::Packet(Box::new(p)),
        // Not reachable with a complete frame; ask for more rather than guess.
        Ok(None) => Next::NeedMore(len),
        Err(_) => {
            let mut bytes = BytesMut::with_capacity(frame_copy.len() + buf.len());
            bytes.extend_from_slice(frame_copy);
            bytes.extend_from_slice(buf);
            buf.clear();
            Next::Malformed(bytes)
        }
    };
    if frame_copy.capacity() > FRAME_COPY_KEEP {
        *frame_copy = Vec::new();
    }
    next
}

/// Read, decode, forward. Never returns: after the socket ends (or the core
/// task is gone) it parks, so only the write half ends the connection.
async fn read_half(
    stream: &Async<TcpStream>,
    conn: ConnectionId,
    to_core: &Sender<Input>,
    max_packet_size: u32,
) {
    let mut buf = BytesMut::new();
    let mut frame_copy = Vec::new();
    let mut version = ProtocolVersion::V3_1_1;
    let mut first = true;
    let mut want = READ_CHUNK;
    let last: Option<Input> = 'read: loop {
        if buf.is_empty() {
            // Wait before allocating, so an idle connection holds no buffer.
            if let Err(e) = stream.readable().await {
                break Some(Input::Closed {
                    conn,
                    error: Some(e),
                });
            }
        }
        let start = buf.len();
        buf.resize(start + want.max(READ_CHUNK), 0);
        let mut reader = stream;
        let n = match reader.read(&mut buf[start..]).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                buf.truncate(start);
                continue;
            }
            Err(e) => {
                break Some(Input::Closed {
                    conn,
                    error: Some(e),
                })
            }
        };
        buf.truncate(start + n);
        if n == 0 {
            break Some(Input::Closed { conn, error: None });
        }
        loop {
            match next_packet(&mut buf, version, max_packet_size, &mut frame_copy) {
                Next::Packet(packet) => {
                    if first {
                        first = false;
                        if let Packet::Connect(c) = &*packet {
                            version = c.protocol_version;
                        }
                    }
                    if to_core.send(Input::Packet { conn, packet }).await.is_err() {
                        break 'read None;
                    }
                }
                Next::NeedMore(size) => {
                    // Read the rest of a large packet in one go.
                    want = size.saturating_sub(buf.len());
                    break;
                }
                Next::Malformed(bytes) => break 'read Some(Input::Malformed { conn, bytes }),
            }
        }
        if buf.is_empty() {
            // Decoded packets share the old allocation; release ours.
            buf = BytesMut::new();
        }
    };
    if let Some(input) = last {
        let _ = to_core.send(input).await;
    }
    future::pending::<()>().await;
}

/// Write what the core queued; end on `Close` (after flushing), when the
/// core task forgets the connection, or on a write error.
async fn write_half(
    stream: &Async<TcpStream>,
    conn: ConnectionId,
    rx: Receiver<Outbound>,
    to_core: &Sender<Input>,
    linger: Duration,
) {
    let mut writer = stream;
    loop {
        let Ok(first) = rx.recv().await else {
            return;
        };
        let mut written = 0usize;
        let mut close = false;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outbound::Data(bytes) => {
                    if let Err(e) = writer.write_all(&bytes).await {
                        debug!(%conn, error = %e, "write failed");
                        if written > 0 {
                            let _ = to_core.send(Input::Written { conn, n: written }).await;
                        }
                        let _ = to_core
                            .send(Input::Closed {
                                conn,
                                error: Some(e),
                            })
                            .await;
                        return;
                    }
                    written += bytes.len();
                }
                Outbound::Close => {
                    close = true;
                    break;
                }
            }
            if written < WRITE_REPORT {
                next = rx.try_recv().ok();
            }
        }
        if written > 0 {
            // The core task may be gone during shutdown; nothing to tell then.
            let _ = to_core.send(Input::Written { conn, n: written }).await;
        }
        if close {
            close_gracefully(stream, linger).await;
            return;
        }
    }
}

/// FIN after the last byte, then read until the peer's FIN (bounded by
/// `linger`): closing with unread input would send an RST, which can make
/// the peer discard the bytes we just sent (a DISCONNECT with its reason).
async fn close_gracefully(stream: &Async<TcpStream>, linger: Duration) {
    if stream.get_ref().shutdown(Shutdown::Write).is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 256];
        let mut reader = stream;
        loop {
            match reader.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    drain
        .or(async {
            Timer::after(linger).await;
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 1024;

    fn next(bytes: &[u8], version: ProtocolVersion) -> (Next, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let mut copy = Vec::new();
        let n = next_packet(&mut buf, version, MAX, &mut copy);
        (n, buf)
    }

    #[test]
    fn complete_packet_is_decoded_and_consumed() {
        let (n, rest) = next(&[0xC0, 0x00, 0xC0], ProtocolVersion::V3_1_1);
        assert!(matches!(n, Next::Packet(p) if *p == Packet::PingReq));
        assert_eq!(&rest[..], &[0xC0]);
    }

    #[test]
    fn partial_input_waits_and_reports_the_size() {
        let (n, rest) = next(&[0x30, 0x0A, 0x00], ProtocolVersion::V3_1_1);
        assert!(matches!(n, Next::NeedMore(12)));
        assert_eq!(rest.len(), 3);
        let (n, _) = next(&[0x30], ProtocolVersion::V3_1_1);
        assert!(matches!(n, Next::NeedMore(0)));
    }

    #[test]
    fn body_error_hands_back_the_whole_frame_and_what_follows() {
        // PUBLISH with a non-UTF-8 topic, then a PINGREQ.
        let bytes = [0x30, 0x05, 0x00, 0x02, 0xff, 0xfe, b'x', 0xC0, 0x00];
        let (n, rest) = next(&bytes, ProtocolVersion::V3_1_1);
        match n {
            Next::Malformed(b) => assert_eq!(&b[..], &bytes[..]),
            _ => panic!("expected Malformed"),
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn header_error_and_oversize_hand_back_the_bytes() {
        let (n, _) = next(&[0x00, 0x00], ProtocolVersion::V3_1_1);
        assert!(matches!(n, Next::Malformed(b) if b[..] == [0x00, 0x00]));
        // Remaining length 2048 > MAX: refused before the body arrives.
        let (n, _) = next(&[0x30, 0x80, 0x10], ProtocolVersion::V3_1_1);
        assert!(matches!(n, Next::Malformed(b) if b.len() == 3));
    }
}
