//! MQTT over QUIC on std threads: the QUIC listener and QUIC bridge links.
//!
//! Each drives one [`mqtt_quic::QuicEndpoint`] (sans-IO, over quinn-proto)
//! and one `std::net::UdpSocket`. std cannot wait on a socket and a channel
//! at once, so each uses two threads around one `Mutex`-guarded endpoint:
//!
//! - a **receiver** blocks in `recv_from` (its read timeout only bounds how
//!   late it notices a stop), feeds the datagram to the endpoint and drains
//!   its outputs;
//! - a **driver** blocks on its command channel with `recv_timeout` until
//!   the endpoint's `poll_timeout()` (the QUIC timers: handshake timeout,
//!   retransmission, QUIC keep-alive, idle timeout; none of them is MQTT's
//!   keep alive, which stays in the core), takes writes and closes from the
//!   core, and fires the timers. When a datagram moves the endpoint's
//!   deadline earlier than the one the driver sleeps on, the receiver wakes
//!   it with a command.
//!
//! No protocol decision is made here. An accepted connection is an ordinary
//! connection of the core: its stream is framed with the same
//! [`Framer`] as TCP and reaches the core as the same inputs; `Written` is
//! reported once quinn took the bytes (flow control), so the core's
//! congestion accounting holds for QUIC too. The core's flow control
//! (`PauseReading` / `ResumeReading`) reaches the listener through the
//! connection's [`QuicSink`]: a shared flag, checked before every input the
//! listener sends the core (what it already read when the pause came waits
//! here, decoded), and a command to the driver, which stops or resumes
//! reading the connection's stream in the endpoint (while stopped, quinn
//! extends no receive window, so QUIC flow control blocks the publisher).
//! Only a connection that ends while paused hands what waited to the core
//! at once, before `Closed`. A bridge link reports
//! `BridgeUp`/`BridgeFailed`/`BridgeRead`/`BridgeDown` as the TCP link does;
//! its socket is `connect`ed, so an ICMP "port unreachable" comes back as a
//! refusal at once and a hybrid `["quic", "tcp"]` list falls back quickly.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_core::bridge::TransportFailure;
use mqtt_core::broker::{ConnectionId, ConnectionInfo};
use mqtt_quic::{Datagram, QuicCloseReason, QuicConnId, QuicEndpoint, QuicEvent};
use rt_common::config::ListenerConfig;
use rt_common::frame::{Framer, Next};
use rt_common::links::Link;
use rt_common::quic::{self as setup, BridgeQuic, QuicSetupError};
use tracing::debug;

use crate::core::{Input, Outbound, Writer};

/// Largest UDP datagram read.
const MAX_DATAGRAM: usize = 64 * 1024;
/// Commands taken in one go before the endpoint's outputs are drained.
const CMD_BATCH: usize = 256;
/// After a bridge link's `Close`, how long it waits for its FIN to be
/// acknowledged before dropping the socket.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// How late a receiver blocked in `recv` notices that it should stop.
const RECV_POLL: Duration = Duration::from_millis(200);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere poisoned it; the state is still consistent enough
    // to close connections.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Send one transmit, segment by segment. A refusal (ICMP on a connected
/// socket) is returned; other send errors are loss, which QUIC repairs.
fn send_datagram(socket: &UdpSocket, d: &Datagram, connected: bool) -> io::Result<()> {
    for seg in d.segments() {
        let r = if connected {
            socket.send(&seg)
        } else {
            socket.send_to(&seg, d.destination)
        };
        match r {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(e),
            Err(e) => debug!(to = %d.destination, error = %e, "QUIC send failed"),
        }
    }
    Ok(())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

// ----- the listener -----------------------------------------------------------

/// A bound QUIC listener, ready to start.
pub(crate) struct QuicListener {
    pub(crate) name: String,
    socket: UdpSocket,
    endpoint: QuicEndpoint,
}

impl QuicListener {
    /// Load the certificates and bind the UDP socket (`index`: the
    /// listener's position in the config, for error paths).
    pub(crate) fn bind(
        l: &ListenerConfig,
        index: usize,
    ) -> Result<Result<Self, io::Error>, QuicSetupError> {
        let endpoint = setup::listener_endpoint(l, index)?;
        let socket = match UdpSocket::bind(l.addr()) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(Self {
            name: l.name.clone(),
            socket,
            endpoint,
        }))
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }
}

/// Commands to a listener's driver thread.
pub(crate) enum Cmd {
    Data(QuicConnId, Bytes),
    /// Flush, FIN, close (the core's `Close`).
    Close(QuicConnId),
    /// The core forgot the connection: close now.
    Forget(QuicConnId),
    /// The core paused or resumed reading it: look at its read gate.
    ReadGate(QuicConnId),
    /// The endpoint's deadline moved earlier: look again.
    Wake,
    /// Refuse new connections; end once all are gone or after `timeout`.
    Stop {
        timeout: Duration,
    },
}

/// The core's handle on an accepted QUIC connection, its write queue.
/// Dropping it without [`QuicSink::close`] closes the connection at once.
pub(crate) struct QuicSink {
    qid: QuicConnId,
    cmd: Sender<Cmd>,
    ended: bool,
    /// The read gate (flow control), shared with the listener.
    paused: Arc<AtomicBool>,
}

impl QuicSink {
    /// Flow control: stop (`true`) or resume (`false`) reading the
    /// connection's stream.
    pub(crate) fn set_read_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        let _ = self.cmd.send(Cmd::ReadGate(self.qid));
    }

    /// False when the listener is gone (its `Closed` is on the way).
    pub(crate) fn send(&self, data: Bytes) -> bool {
        self.cmd.send(Cmd::Data(self.qid, data)).is_ok()
    }

    /// After what was sent: FIN, then close.
    pub(crate) fn close(mut self) {
        self.ended = true;
        let _ = self.cmd.send(Cmd::Close(self.qid));
    }
}

impl Drop for QuicSink {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.cmd.send(Cmd::Forget(self.qid));
        }
    }
}

/// The runtime's side of one accepted QUIC connection.
struct Accepted {
    conn: ConnectionId,
    framer: Framer,
    buf: BytesMut,
    /// A frame failed to decode: the core has the bytes; ignore the rest.
    read_done: bool,
    /// Bytes handed to the endpoint, and reported to the core as written.
    handed: usize,
    reported: usize,
    /// The core closed or forgot it: it wants no more inputs.
    core_done: bool,
    /// The read gate the core sets through its [`QuicSink`].
    paused: Arc<AtomicBool>,
    /// Inputs framed but not sent: the core paused reading.
    held: VecDeque<Input>,
    /// What the endpoint was told (`set_read_paused`).
    ep_paused: bool,
}

struct ListenerState {
    ep: QuicEndpoint,
    conns: HashMap<QuicConnId, Accepted>,
    unreported: BTreeSet<QuicConnId>,
    stopping: bool,
    /// The deadline the driver sleeps until.
    driver_wakes_at: Option<Instant>,
    /// Connections the core let read again: send what they hold.
    resumed: Vec<QuicConnId>,
}

/// What both threads of a listener need.
struct ListenerCtx {
    name: String,
    socket: UdpSocket,
    state: Mutex<ListenerState>,
    to_core: SyncSender<Input>,
    next_id: Arc<AtomicU64>,
    max_packet_size: u32,
    cmd: Sender<Cmd>,
    done: AtomicBool,
}

/// A running QUIC listener.
pub(crate) struct QuicListenerHandle {
    cmd: Sender<Cmd>,
}

impl QuicListenerHandle {
    /// Refuse new connections; the threads end once every connection is
    /// gone (the core closed them) or after `timeout`.
    pub(crate) fn stop(&self, timeout: Duration) {
        let _ = self.cmd.send(Cmd::Stop { timeout });
    }
}

/// Start a listener's two threads. `alive` is held by the driver until it
/// ends (the core waits for every holder at shutdown).
pub(crate) fn start_listener(
    l: QuicListener,
    to_core: SyncSender<Input>,
    next_id: Arc<AtomicU64>,
    max_packet_size: u32,
    alive: Sender<()>,
) -> io::Result<QuicListenerHandle> {
    l.socket.set_read_timeout(Some(RECV_POLL))?;
    let (cmd, cmd_rx) = mpsc::channel();
    let ctx = Arc::new(ListenerCtx {
        name: l.name.clone(),
        socket: l.socket,
        state: Mutex::new(ListenerState {
            ep: l.endpoint,
            conns: HashMap::new(),
            unreported: BTreeSet::new(),
            stopping: false,
            driver_wakes_at: None,
            resumed: Vec::new(),
        }),
        to_core,
        next_id,
        max_packet_size,
        cmd: cmd.clone(),
        done: AtomicBool::new(false),
    });
    let c = ctx.clone();
    thread::Builder::new()
        .name(format!("sansmq-quic-{}", l.name))
        .spawn(move || {
            listener_driver(&c, &cmd_rx);
            c.done.store(true, Ordering::Release);
            drop(alive);
        })?;
    let c = ctx.clone();
    let spawned = thread::Builder::new()
        .name(format!("sansmq-quic-{}-rx", l.name))
        .spawn(move || listener_receiver(&c));
    if let Err(e) = spawned {
        let _ = cmd.send(Cmd::Stop {
            timeout: Duration::ZERO,
        });
        return Err(e);
    }
    Ok(QuicListenerHandle { cmd })
}

fn listener_receiver(ctx: &ListenerCtx) {
    let mut rbuf = vec![0u8; MAX_DATAGRAM];
    while !ctx.done.load(Ordering::Acquire) {
        match ctx.socket.recv_from(&mut rbuf) {
            Ok((n, from)) => {
                let mut s = lock(&ctx.state);
                let now = Instant::now();
                s.ep.handle_datagram(now, from, BytesMut::from(&rbuf[..n]));
                pump_listener(ctx, &mut s, now);
                let next = s.ep.poll_timeout();
                let earlier = match (next, s.driver_wakes_at) {
                    (Some(t), Some(w)) => t < w,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if earlier {
                    s.driver_wakes_at = next;
                    drop(s);
                    let _ = ctx.cmd.send(Cmd::Wake);
                }
            }
            Err(e) if is_timeout(&e) => {}
            // An unconnected socket may report an ICMP error of an earlier
            // send here; nothing to do but go on.
            Err(e) => debug!(listener = %ctx.name, error = %e, "QUIC recv error"),
        }
    }
}

fn listener_driver(ctx: &ListenerCtx, cmd_rx: &Receiver<Cmd>) {
    let mut stop_at: Option<Instant> = None;
    loop {
        let deadline = {
            let mut s = lock(&ctx.state);
            let now = Instant::now();
            if s.ep.poll_timeout().is_some_and(|t| t <= now) {
                s.ep.handle_timeout(now);
            }
            pump_listener(ctx, &mut s, now);
            if let Some(at) = stop_at {
                if s.ep.connection_count() == 0 || at <= now {
                    return;
                }
            }
            let d = [s.ep.poll_timeout(), stop_at].into_iter().flatten().min();
            s.driver_wakes_at = d;
            d
        };
        let got = match deadline {
            Some(d) => cmd_rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            None => cmd_rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(first) => {
                let mut s = lock(&ctx.state);
                let now = Instant::now();
                let mut next = Some(first);
                let mut taken = 0;
                while let Some(cmd) = next.take() {
                    if let Cmd::Stop { timeout } = cmd {
                        stop_at = Some(now + timeout);
                        s.stopping = true;
                        s.ep.set_refusing(true);
                    } else {
                        listener_cmd(&mut s, cmd, now);
                    }
                    taken += 1;
                    if taken < CMD_BATCH {
                        next = cmd_rx.try_recv().ok();
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Unreachable: the context holds a sender.
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn listener_cmd(s: &mut ListenerState, cmd: Cmd, now: Instant) {
    match cmd {
        Cmd::Data(qid, bytes) => {
            if let Some(a) = s.conns.get_mut(&qid) {
                let len = bytes.len();
                if s.ep.write(qid, bytes).is_ok() {
                    a.handed += len;
                    s.unreported.insert(qid);
                }
            }
        }
        Cmd::Close(qid) => {
            if let Some(a) = s.conns.get_mut(&qid) {
                a.core_done = true;
            }
            s.ep.finish(now, qid);
        }
        Cmd::Forget(qid) => {
            if let Some(a) = s.conns.get_mut(&qid) {
                a.core_done = true;
            }
            s.ep.close(now, qid, mqtt_quic::CODE_NO_ERROR, "");
        }
        Cmd::ReadGate(qid) => {
            if let Some(a) = s.conns.get_mut(&qid) {
                let paused = a.paused.load(Ordering::Acquire);
                rt_common::quic::set_read_paused(
                    &mut s.ep,
                    &mut a.ep_paused,
                    qid,
                    a.conn,
                    paused,
                    now,
                );
                if !paused {
                    s.resumed.push(qid);
                }
            }
        }
        Cmd::Wake | Cmd::Stop { .. } => {}
    }
}

/// Send the core the inputs `a` holds, one at a time, while the core lets
/// it read (`ending`: regardless, the connection is over).
fn deliver(ctx: &ListenerCtx, a: &mut Accepted, ending: bool) {
    if a.core_done {
        a.held.clear();
        return;
    }
    while ending || !a.paused.load(Ordering::Acquire) {
        let Some(input) = a.held.pop_front() else {
            break;
        };
        let _ = ctx.to_core.send(input);
    }
}

/// Send what the endpoint has, act on its events, report bytes written,
/// until nothing moves. Inputs go to the core even while it stops (a send
/// to a stopped core fails and is ignored: flushing goes on).
fn pump_listener(ctx: &ListenerCtx, s: &mut ListenerState, now: Instant) {
    loop {
        let mut moved = false;
        for qid in std::mem::take(&mut s.resumed) {
            if let Some(a) = s.conns.get_mut(&qid) {
                moved = true;
                deliver(ctx, a, false);
            }
        }
        while let Some(d) = s.ep.poll_transmit(now) {
            moved = true;
            let _ = send_datagram(&ctx.socket, &d, false);
        }
        while let Some(ev) = s.ep.poll_event() {
            moved = true;
            match ev {
                QuicEvent::Accepted { conn: qid, remote } => {
                    if s.stopping {
                        s.ep.close(now, qid, mqtt_quic::CODE_NO_ERROR, "server shutting down");
                        continue;
                    }
                    let conn = ConnectionId(ctx.next_id.fetch_add(1, Ordering::Relaxed));
                    let paused = Arc::new(AtomicBool::new(false));
                    s.conns.insert(
                        qid,
                        Accepted {
                            conn,
                            framer: Framer::new(ctx.max_packet_size),
                            buf: BytesMut::new(),
                            read_done: false,
                            handed: 0,
                            reported: 0,
                            core_done: false,
                            paused: paused.clone(),
                            held: VecDeque::new(),
                            ep_paused: false,
                        },
                    );
                    debug!(listener = %ctx.name, %conn, %remote, "QUIC connection accepted");
                    let tx = Writer::Quic(QuicSink {
                        qid,
                        cmd: ctx.cmd.clone(),
                        ended: false,
                        paused,
                    });
                    let info = ConnectionInfo {
                        peer: Some(remote),
                        listener: ctx.name.clone(),
                        internal: false,
                    };
                    let _ = ctx.to_core.send(Input::Opened { conn, info, tx });
                }
                QuicEvent::Data { conn: qid, bytes } => {
                    let Some(a) = s.conns.get_mut(&qid) else {
                        continue;
                    };
                    if a.read_done || a.core_done {
                        continue;
                    }
                    a.buf.extend_from_slice(&bytes);
                    frame(a);
                    deliver(ctx, a, false);
                    // Paused (maybe while blocked on the core above): stop
                    // reading now, before the driver's command.
                    if a.paused.load(Ordering::Acquire) {
                        rt_common::quic::set_read_paused(
                            &mut s.ep,
                            &mut a.ep_paused,
                            qid,
                            a.conn,
                            true,
                            now,
                        );
                    }
                }
                QuicEvent::Closed { conn: qid, reason } => {
                    s.unreported.remove(&qid);
                    if let Some(mut a) = s.conns.remove(&qid) {
                        // What a pause held back comes before the end.
                        deliver(ctx, &mut a, true);
                        if !a.core_done {
                            let error = match reason {
                                QuicCloseReason::PeerFinished => None,
                                r => Some(io::Error::other(r.to_string())),
                            };
                            let _ = ctx.to_core.send(Input::Closed {
                                conn: a.conn,
                                error,
                            });
                        }
                    }
                }
                QuicEvent::Connected { .. } => {}
            }
        }
        // Bytes quinn took since the last report.
        let mut settled = Vec::new();
        for &qid in &s.unreported {
            let Some(a) = s.conns.get_mut(&qid) else {
                settled.push(qid);
                continue;
            };
            let taken = a.handed - s.ep.buffered(qid).min(a.handed);
            if taken > a.reported {
                let n = taken - a.reported;
                a.reported = taken;
                moved = true;
                if !a.core_done {
                    let _ = ctx.to_core.send(Input::Written { conn: a.conn, n });
                }
            }
            if a.reported == a.handed {
                settled.push(qid);
            }
        }
        for qid in settled {
            s.unreported.remove(&qid);
        }
        if !moved {
            return;
        }
    }
}

/// The connection's buffered stream bytes as inputs for the core (as the
/// TCP reader does): packets, then at most one malformed frame; appended
/// to what it holds.
fn frame(a: &mut Accepted) {
    loop {
        match a.framer.next(&mut a.buf) {
            Next::Packet(packet) => a.held.push_back(Input::Packet {
                conn: a.conn,
                packet,
            }),
            Next::NeedMore(_) => break,
            Next::Malformed(bytes) => {
                a.read_done = true;
                a.held.push_back(Input::Malformed {
                    conn: a.conn,
                    bytes,
                });
                return;
            }
        }
    }
    if a.buf.is_empty() {
        // Decoded packets share the old allocation; release ours.
        a.buf = BytesMut::new();
    }
}

// ----- bridge links -----------------------------------------------------------

struct LinkState {
    ep: QuicEndpoint,
    qid: QuicConnId,
    up: bool,
    /// The core closed the link: FIN sent, ends by this time.
    closing: Option<Instant>,
    /// The link is over (reported, or closed by the core).
    ended: bool,
    driver_wakes_at: Option<Instant>,
}

struct LinkCtx {
    link: Link,
    address: String,
    remote: SocketAddr,
    socket: UdpSocket,
    state: Mutex<LinkState>,
    to_core: SyncSender<Input>,
    /// The driver's own channel, to wake it.
    wake: Sender<Outbound>,
    done: AtomicBool,
}

/// Dial `address` over QUIC and pump bytes until either side ends, on two
/// threads of its own. Inputs go to `to_core`; `from_core` is the link's
/// queue (`wake` is a sender of that same queue).
pub(crate) fn spawn_bridge(
    link: Link,
    address: String,
    quic: Arc<BridgeQuic>,
    to_core: SyncSender<Input>,
    from_core: Receiver<Outbound>,
    wake: Sender<Outbound>,
) -> io::Result<()> {
    thread::Builder::new()
        .name(format!("sansmq-bridge-{}-quic", link.id.0))
        .spawn(move || {
            let ctx = match dial(link, &address, &quic, to_core.clone(), wake) {
                Ok(ctx) => Arc::new(ctx),
                Err(failure) => {
                    let _ = to_core.send(Input::BridgeFailed { link, failure });
                    return;
                }
            };
            let c = ctx.clone();
            let receiver = thread::Builder::new()
                .name(format!("sansmq-bridge-{}-quic-rx", link.id.0))
                .spawn(move || link_receiver(&c));
            if let Err(e) = receiver {
                let failure = TransportFailure::Error(format!("cannot start a thread: {e}"));
                let _ = to_core.send(Input::BridgeFailed { link, failure });
                return;
            }
            link_driver(&ctx, &from_core);
            ctx.done.store(true, Ordering::Release);
        })
        .map(|_| ())
}

fn dial(
    link: Link,
    address: &str,
    quic: &BridgeQuic,
    to_core: SyncSender<Input>,
    wake: Sender<Outbound>,
) -> Result<LinkCtx, TransportFailure> {
    let remote = address
        .to_socket_addrs()
        .map_err(|e| TransportFailure::Error(format!("cannot resolve {address}: {e}")))?
        .next()
        .ok_or_else(|| TransportFailure::Error(format!("{address} resolved to no address")))?;
    let local: SocketAddr = match remote.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    // Connected, so ICMP "port unreachable" comes back as ECONNREFUSED.
    let socket = UdpSocket::bind(local)
        .and_then(|s| s.connect(remote).map(|()| s))
        .and_then(|s| s.set_read_timeout(Some(RECV_POLL)).map(|()| s))
        .map_err(|e| TransportFailure::Error(format!("QUIC socket: {e}")))?;
    let mut ep = QuicEndpoint::new(None, Some(quic.client.clone()), &quic.settings, None);
    let qid = ep
        .connect(Instant::now(), remote, &quic.server_name_for(address))
        .map_err(|e| TransportFailure::Error(e.to_string()))?;
    Ok(LinkCtx {
        link,
        address: address.to_owned(),
        remote,
        socket,
        state: Mutex::new(LinkState {
            ep,
            qid,
            up: false,
            closing: None,
            ended: false,
            driver_wakes_at: None,
        }),
        to_core,
        wake,
        done: AtomicBool::new(false),
    })
}

/// Report how the link ended, once (the first thread to see it).
fn end_link(ctx: &LinkCtx, s: &mut LinkState, input: Option<Input>) {
    if s.ended {
        return;
    }
    s.ended = true;
    if let Some(input) = input {
        if let Input::BridgeFailed { failure, .. } = &input {
            debug!(bridge = ctx.link.id.0, address = %ctx.address, error = %failure, "QUIC bridge dial failed");
        }
        let _ = ctx.to_core.send(input);
    }
    // Wake the driver so it ends too.
    let _ = ctx.wake.send(Outbound::Wake);
}

/// The socket failed (ICMP refusal): a failed dial or a lost link.
fn lost(ctx: &LinkCtx, up: bool, e: &io::Error) -> Input {
    let link = ctx.link;
    if up {
        Input::BridgeDown { link }
    } else if e.kind() == io::ErrorKind::ConnectionRefused {
        Input::BridgeFailed {
            link,
            failure: TransportFailure::Refused,
        }
    } else {
        Input::BridgeFailed {
            link,
            failure: TransportFailure::Error(e.to_string()),
        }
    }
}

fn pump_link(ctx: &LinkCtx, s: &mut LinkState, now: Instant) {
    while !s.ended {
        let mut moved = false;
        while let Some(d) = s.ep.poll_transmit(now) {
            moved = true;
            if let Err(e) = send_datagram(&ctx.socket, &d, true) {
                let report = s.closing.is_none().then(|| lost(ctx, s.up, &e));
                return end_link(ctx, s, report);
            }
        }
        while let Some(ev) = s.ep.poll_event() {
            moved = true;
            let link = ctx.link;
            match ev {
                QuicEvent::Connected { .. } => {
                    if s.closing.is_none() {
                        s.up = true;
                        let _ = ctx.to_core.send(Input::BridgeUp { link });
                    }
                }
                QuicEvent::Data { bytes, .. } => {
                    if s.closing.is_none() {
                        let bytes = BytesMut::from(&bytes[..]);
                        let _ = ctx.to_core.send(Input::BridgeRead { link, bytes });
                    }
                }
                QuicEvent::Closed { reason, .. } => {
                    debug!(bridge = link.id.0, address = %ctx.address, %reason, "QUIC bridge link ended");
                    let input = if s.up {
                        Input::BridgeDown { link }
                    } else {
                        Input::BridgeFailed {
                            link,
                            failure: setup::failure_of(&reason),
                        }
                    };
                    // Closed by the core: it wants no report.
                    let report = s.closing.is_none().then_some(input);
                    return end_link(ctx, s, report);
                }
                QuicEvent::Accepted { .. } => {}
            }
        }
        if !moved {
            return;
        }
    }
}

fn link_receiver(ctx: &LinkCtx) {
    let mut rbuf = vec![0u8; MAX_DATAGRAM];
    while !ctx.done.load(Ordering::Acquire) {
        let got = ctx.socket.recv(&mut rbuf);
        let mut s = lock(&ctx.state);
        if s.ended {
            return;
        }
        let now = Instant::now();
        match got {
            Ok(n) => {
                s.ep.handle_datagram(now, ctx.remote, BytesMut::from(&rbuf[..n]));
                pump_link(ctx, &mut s, now);
            }
            Err(e) if is_timeout(&e) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                let input = lost(ctx, s.up, &e);
                let report = s.closing.is_none().then_some(input);
                end_link(ctx, &mut s, report);
                return;
            }
            Err(e) => {
                debug!(bridge = ctx.link.id.0, error = %e, "QUIC recv error");
                continue;
            }
        }
        let next = s.ep.poll_timeout();
        let earlier = match (next, s.driver_wakes_at) {
            (Some(t), Some(w)) => t < w,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if earlier {
            s.driver_wakes_at = next;
            drop(s);
            let _ = ctx.wake.send(Outbound::Wake);
        }
    }
}

fn link_driver(ctx: &LinkCtx, from_core: &Receiver<Outbound>) {
    loop {
        let deadline = {
            let mut s = lock(&ctx.state);
            let now = Instant::now();
            if s.ep.poll_timeout().is_some_and(|t| t <= now) {
                s.ep.handle_timeout(now);
            }
            pump_link(ctx, &mut s, now);
            if s.ended || s.closing.is_some_and(|t| t <= now) {
                s.ended = true;
                return;
            }
            let d = [s.ep.poll_timeout(), s.closing].into_iter().flatten().min();
            s.driver_wakes_at = d;
            d
        };
        let got = match deadline {
            Some(d) => from_core.recv_timeout(d.saturating_duration_since(Instant::now())),
            None => from_core.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let mut s = lock(&ctx.state);
        let now = Instant::now();
        let qid = s.qid;
        match got {
            Ok(Outbound::Data(d)) => {
                let _ = s.ep.write(qid, d);
                // More already queued, without waiting.
                while let Ok(Outbound::Data(d)) = from_core.try_recv() {
                    let _ = s.ep.write(qid, d);
                }
            }
            // The core closed the link: flush, FIN, close on acknowledgement
            // (bounded by a linger); a dial in progress is abandoned.
            Ok(Outbound::Close) | Err(RecvTimeoutError::Disconnected) => {
                if s.closing.is_none() {
                    if s.up {
                        s.ep.finish(now, qid);
                    } else {
                        s.ep.close(now, qid, mqtt_quic::CODE_NO_ERROR, "");
                    }
                    s.closing = Some(now + CLOSE_LINGER);
                }
            }
            Ok(Outbound::Wake) | Err(RecvTimeoutError::Timeout) => {}
        }
    }
}
