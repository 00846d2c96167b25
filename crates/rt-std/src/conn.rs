//! Listener and connection threads.
//!
//! - One **accept thread** per listener: blocking `accept`, then one
//!   connection (two threads) per socket.
//! - A connection's **reader thread** reads, frames packets
//!   ([`rt_common::frame::Framer`]) and sends each to the core thread over
//!   its bounded channel (a busy core stops the readers, and TCP flow
//!   control the publishers). It ends at EOF or error, after telling the
//!   core.
//! - Its **writer thread** writes what the core queued and reports the
//!   bytes written (`Written`, the core's congestion accounting). On
//!   `Close` it sends FIN and waits up to the linger for the peer's (the
//!   reader sees it), so the peer reads our last bytes (a DISCONNECT with
//!   its reason) instead of an RST. It ends when the core forgets the
//!   connection (its queue's sender is dropped), which also closes the
//!   socket and so wakes the reader.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::BytesMut;
use mqtt_core::broker::{ConnectionId, ConnectionInfo};
use mqtt_core::codec::Packet;
use rt_common::frame::{Framer, Next};
use tracing::{debug, warn};

use crate::core::{Input, Outbound, Writer};

/// Bytes read per `read` call when no larger packet is known to be coming.
const READ_CHUNK: usize = 4096;
/// Packets per input at most, so the core's bounded input channel bounds
/// memory too (a read of tiny packets is split into several inputs).
const MAX_PACKETS_PER_INPUT: usize = 16;
/// Bytes written before the writer reports progress to the core.
const WRITE_REPORT: usize = 64 * 1024;
/// Stacks of connection threads: they decode and write, nothing deep.
/// (Virtual size; only the pages touched are resident.)
const READER_STACK: usize = 256 * 1024;
const WRITER_STACK: usize = 128 * 1024;

#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnSettings {
    /// The core's normalized maximum packet size.
    pub(crate) max_packet_size: u32,
    pub(crate) linger: Duration,
}

pub(crate) struct Listener {
    pub(crate) name: String,
    pub(crate) socket: TcpListener,
}

/// What an accept thread needs; cloned per listener.
#[derive(Clone)]
pub(crate) struct AcceptCtx {
    pub(crate) to_core: SyncSender<Input>,
    /// Held by every writer thread: the core waits for all to drop it.
    pub(crate) alive: Sender<()>,
    pub(crate) next_id: Arc<AtomicU64>,
    pub(crate) settings: ConnSettings,
    pub(crate) stop: Arc<AtomicBool>,
}

/// A running accept thread and how to stop it.
pub(crate) struct Acceptor {
    addr: Option<SocketAddr>,
    thread: JoinHandle<()>,
}

impl Acceptor {
    pub(crate) fn spawn(listener: Listener, ctx: AcceptCtx) -> io::Result<Self> {
        let addr = listener.socket.local_addr().ok();
        let thread = thread::Builder::new()
            .name(format!("sansmq-accept-{}", listener.name))
            .spawn(move || accept_loop(listener, ctx))?;
        Ok(Self { addr, thread })
    }

    /// Wake the blocked `accept` with a connection of our own (the thread
    /// sees the stop flag, set by the caller before), then join.
    pub(crate) fn stop(self) {
        if let Some(mut a) = self.addr {
            if a.ip().is_unspecified() {
                a.set_ip(match a {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let _ = TcpStream::connect_timeout(&a, Duration::from_secs(1));
        }
        let _ = self.thread.join();
    }
}

fn accept_loop(listener: Listener, ctx: AcceptCtx) {
    loop {
        let accepted = listener.socket.accept();
        if ctx.stop.load(Ordering::Acquire) {
            return;
        }
        match accepted {
            Ok((stream, peer)) => {
                // MQTT is request/response with small packets: no Nagle delay.
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                }
                // Never reused, so a late input about an old connection can
                // never be mistaken for a new one.
                let conn = ConnectionId(ctx.next_id.fetch_add(1, Ordering::Relaxed));
                let info = ConnectionInfo {
                    peer: Some(peer),
                    listener: listener.name.clone(),
                    internal: false,
                };
                if !start_connection(stream, conn, info, &ctx) {
                    return; // the core is gone
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on accept.
                warn!(listener = %listener.name, error = %e, "accept failed");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Register the connection with the core, then start its two threads.
/// False when the core is gone.
fn start_connection(
    stream: TcpStream,
    conn: ConnectionId,
    info: ConnectionInfo,
    ctx: &AcceptCtx,
) -> bool {
    let (tx, rx) = mpsc::channel();
    let core_stream = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            warn!(%conn, error = %e, "cannot clone the socket; closing it");
            return true;
        }
    };
    // Before the reader exists, so `Opened` precedes its packets.
    let gate = Arc::new(ReadGate::default());
    let tx = Writer::Tcp(tx, core_stream, ReadGateHandle(gate.clone()));
    if ctx.to_core.send(Input::Opened { conn, info, tx }).is_err() {
        return false;
    }
    let started = (|| {
        let read_stream = stream.try_clone()?;
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let to_core = ctx.to_core.clone();
        let max = ctx.settings.max_packet_size;
        thread::Builder::new()
            .name(format!("sansmq-read-{}", conn.0))
            .stack_size(READER_STACK)
            .spawn(move || reader(read_stream, conn, &gate, &to_core, max, done_tx))?;
        let to_core = ctx.to_core.clone();
        let alive = ctx.alive.clone();
        let linger = ctx.settings.linger;
        let write_stream = stream.try_clone()?;
        let spawned = thread::Builder::new()
            .name(format!("sansmq-write-{}", conn.0))
            .stack_size(WRITER_STACK)
            .spawn(move || {
                writer(&write_stream, conn, rx, &to_core, linger, done_rx);
                drop(alive);
            });
        if spawned.is_err() {
            // The reader is running: closing the socket ends it.
            let _ = stream.shutdown(Shutdown::Both);
        }
        spawned.map(|_| ())
    })();
    if let Err(e) = started {
        warn!(%conn, error = %e, "cannot start the connection's threads; closing it");
        let _ = stream.shutdown(Shutdown::Both);
        return ctx
            .to_core
            .send(Input::Closed {
                conn,
                error: Some(e),
            })
            .is_ok();
    }
    true
}

/// Flow control of one connection's reader: the core pauses it
/// (`Event::PauseReading`) and resumes it (`ResumeReading`, or when the
/// core lets go of the connection, so a paused reader never outlives it).
#[derive(Default)]
pub(crate) struct ReadGate {
    paused: Mutex<bool>,
    resumed: Condvar,
}

impl ReadGate {
    fn set(&self, paused: bool) {
        let mut p = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        *p = paused;
        if !paused {
            self.resumed.notify_all();
        }
    }

    /// Block while paused.
    fn wait(&self) {
        let mut p = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        while *p {
            p = self.resumed.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The core's side of a [`ReadGate`]; dropping it resumes the reader.
pub(crate) struct ReadGateHandle(Arc<ReadGate>);

impl ReadGateHandle {
    pub(crate) fn set_paused(&self, paused: bool) {
        self.0.set(paused);
    }
}

impl Drop for ReadGateHandle {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Read, frame, forward. After the last input it tells the writer (which
/// may be waiting for the peer's FIN) and ends.
fn reader(
    mut stream: TcpStream,
    conn: ConnectionId,
    gate: &ReadGate,
    to_core: &SyncSender<Input>,
    max_packet_size: u32,
    done: SyncSender<()>,
) {
    let mut framer = Framer::new(max_packet_size);
    let mut buf = BytesMut::new();
    // The packets of one read go to the core together: one channel
    // operation (and at most one wake-up) per read, not per packet.
    let mut packets: Vec<Packet> = Vec::new();
    let flush = |packets: &mut Vec<Packet>| -> bool {
        let input = match packets.len() {
            0 => return true,
            1 => match packets.pop() {
                Some(p) => Input::Packet {
                    conn,
                    packet: Box::new(p),
                },
                None => return true,
            },
            _ => Input::Packets {
                conn,
                packets: std::mem::take(packets),
            },
        };
        to_core.send(input).is_ok()
    };
    let mut want = READ_CHUNK;
    let last: Option<Input> = 'read: loop {
        // Flow control: not reading while the core paused this connection.
        gate.wait();
        let start = buf.len();
        buf.resize(start + want.max(READ_CHUNK), 0);
        let n = match stream.read(&mut buf[start..]) {
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
            match framer.next(&mut buf) {
                Next::Packet(packet) => {
                    packets.push(*packet);
                    if packets.len() == MAX_PACKETS_PER_INPUT && !flush(&mut packets) {
                        break 'read None;
                    }
                }
                Next::NeedMore(size) => {
                    // Read the rest of a large packet in one go.
                    want = size.saturating_sub(buf.len());
                    break;
                }
                Next::Malformed(bytes) => {
                    // The packets before it first, in order.
                    if !flush(&mut packets) {
                        break 'read None;
                    }
                    break 'read Some(Input::Malformed { conn, bytes });
                }
            }
        }
        if !flush(&mut packets) {
            break 'read None;
        }
        if buf.is_empty() {
            // Decoded packets share the old allocation; release ours.
            buf = BytesMut::new();
        }
    };
    let malformed = matches!(last, Some(Input::Malformed { .. }));
    if let Some(input) = last {
        let _ = to_core.send(input);
    }
    if malformed {
        // The core closes the connection: keep reading (and discarding)
        // until the peer's FIN, so closing never meets unread input (RST).
        let mut sink = [0u8; 512];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    }
    let _ = done.try_send(());
}

/// Write what the core queued, until it forgets the connection, asks to
/// close it, or a write fails.
fn writer(
    stream: &TcpStream,
    conn: ConnectionId,
    rx: Receiver<Outbound>,
    to_core: &SyncSender<Input>,
    linger: Duration,
    reader_done: Receiver<()>,
) {
    let mut w = stream;
    loop {
        let Ok(first) = rx.recv() else {
            // The core forgot the connection (it is closed on its side).
            let _ = stream.shutdown(Shutdown::Both);
            return;
        };
        let mut written = 0usize;
        let mut close = false;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outbound::Data(bytes) => {
                    if let Err(e) = w.write_all(&bytes) {
                        debug!(%conn, error = %e, "write failed");
                        if written > 0 {
                            let _ = to_core.send(Input::Written { conn, n: written });
                        }
                        let _ = to_core.send(Input::Closed {
                            conn,
                            error: Some(e),
                        });
                        let _ = stream.shutdown(Shutdown::Both);
                        return;
                    }
                    written += bytes.len();
                }
                Outbound::Close => {
                    close = true;
                    break;
                }
                Outbound::Wake => {}
            }
            if written < WRITE_REPORT {
                next = rx.try_recv().ok();
            }
        }
        if written > 0 {
            // The core may be gone during shutdown; nothing to tell then.
            let _ = to_core.send(Input::Written { conn, n: written });
        }
        if close {
            // FIN after the last byte, then up to `linger` for the peer's.
            let _ = stream.shutdown(Shutdown::Write);
            if let Err(RecvTimeoutError::Timeout) = reader_done.recv_timeout(linger) {
                debug!(%conn, "no FIN from the peer within the linger; closing");
            }
            let _ = stream.shutdown(Shutdown::Both);
            // The core keeps a clone to bound this flush; it can let go.
            let _ = to_core.send(Input::WriterDone { conn });
            return;
        }
    }
}
