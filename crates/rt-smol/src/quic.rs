//! MQTT over QUIC in rt-smol: the QUIC listener, QUIC bridge transports,
//! and the QUIC connection of `sansmq pub`/`sub --quic`.
//!
//! All three drive one [`mqtt_quic::QuicEndpoint`] (sans-IO, over
//! quinn-proto) from one task that owns it and one UDP socket (async-io):
//! it sends what `poll_transmit` yields, acts on `poll_event`, then sleeps
//! until a datagram, a command or `poll_timeout()`. No protocol decision is
//! made here; the QUIC timers (handshake timeout, QUIC keep-alive, idle
//! timeout) are the endpoint's and have nothing to do with MQTT keep alive.
//!
//! - **Listener** (`transport = "quic"`): one endpoint task per listener.
//!   An accepted connection becomes an ordinary connection of the core:
//!   its stream bytes are framed with the same [`Framer`] as TCP
//!   connections and reach the core task as the same `Input::Opened`,
//!   `Packet(s)`, `Malformed`, `Written` and `Closed`; what the core queues
//!   on the connection's write queue is written to the stream (a small
//!   forwarding task per connection moves it to the endpoint task).
//!   `Written` is reported once quinn took the bytes (flow control), so the
//!   core's congestion accounting holds for QUIC too.
//! - **Publisher flow control**: the core's `PauseReading` /
//!   `ResumeReading` set the connection's read gate on its write queue
//!   (as for TCP). The forwarding task sees the change and tells the
//!   listener task (`Cmd::ReadGate`), which pauses or resumes the
//!   connection's stream in the endpoint (quinn stops extending its receive
//!   windows, so QUIC flow control blocks the publisher). The listener also
//!   checks the gate before every input it sends the core, so what it had
//!   already read when the pause came waits in the runtime (decoded) rather
//!   than in the core; it goes on on resume. Only a connection that ends
//!   while paused hands what waited to the core at once, before `Closed`.
//! - **Bridges** (`transports = ["quic", ...]`): each dial gets its own
//!   endpoint and UDP socket, *connected* to the remote so an ICMP "port
//!   unreachable" surfaces as a refusal at once (hybrid fallback needs no
//!   timeout when nobody listens). The client configuration (and so the
//!   TLS session tickets for 0-RTT) is built once per bridge and reused by
//!   every dial. Reports `BridgeUp`/`BridgeFailed`/`BridgeRead`/`BridgeDown`
//!   exactly as the TCP transport does.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_executor::Executor;
use async_io::{Async, Timer};
use bytes::{Bytes, BytesMut};
use futures_lite::{future, FutureExt};
use mqtt_core::bridge::TransportFailure;
use mqtt_core::broker::{ConnectionId, ConnectionInfo};
use mqtt_core::codec::Packet;
use mqtt_quic::{
    Datagram, QuicCloseReason, QuicConnId, QuicEndpoint, QuicEvent, QuicSettings, ServerTrust,
};
use rt_common::config::ListenerConfig;
use rt_common::frame::{Framer, Next};
use tracing::debug;

use crate::bridge::{resolve, Link};
use crate::conn::{ConnSettings, End, WriteHandle, WriteQueue, MAX_PACKETS_PER_INPUT};
use crate::server::{Input, Outbound};

/// Largest UDP datagram we read (QUIC datagrams are at most ~1.5 KB on
/// loopback with MTU discovery off, 64 KiB in theory).
const MAX_DATAGRAM: usize = 64 * 1024;
/// Datagrams read in one go before the endpoint's outputs are drained.
const RECV_BATCH: usize = 64;
/// Commands (writes, closes) taken in one go.
const CMD_BATCH: usize = 256;
/// After `Close`, how long a bridge link waits for its FIN to be
/// acknowledged before dropping the socket.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

// Certificates, server/client configurations and the bridge settings come
// from `rt_common::quic`, shared with rt-std.
pub(crate) use rt_common::quic::{load_certs, BridgeQuic, QuicSetupError};

// ----- the listener ---------------------------------------------------------

/// A bound QUIC listener, ready to serve.
pub(crate) struct QuicListener {
    pub(crate) name: String,
    pub(crate) socket: Async<UdpSocket>,
    endpoint: QuicEndpoint,
}

impl QuicListener {
    /// Load the certificates and bind the UDP socket. `index` is the
    /// listener's position in the config (for error paths).
    pub(crate) fn bind(
        l: &ListenerConfig,
        index: usize,
    ) -> Result<Result<Self, io::Error>, QuicSetupError> {
        // quinn's own send buffer counts as written for the core's
        // congestion accounting: the listener send window keeps it near
        // the core's per-connection bound.
        let endpoint = rt_common::quic::listener_endpoint(l, index)?;
        let socket = match UdpSocket::bind(l.addr()).and_then(Async::new) {
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
        self.socket.get_ref().local_addr().ok()
    }
}

/// What forwarding tasks and the core side tell a listener task.
enum Cmd {
    Data(QuicConnId, Bytes),
    /// Flush, FIN, close (the core's `Close`).
    Close(QuicConnId),
    /// The core forgot the connection (or aborted it): close now.
    Forget(QuicConnId),
    /// The core paused or resumed reading it: look at its read gate.
    ReadGate(QuicConnId),
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
    /// The core closed or forgot it: it wants no `Closed` input.
    core_done: bool,
    /// Its write queue, for the read gate (the core's flow control).
    queue: Arc<WriteQueue>,
    /// Inputs framed but not sent: the core paused reading.
    held: VecDeque<Input>,
    /// What the endpoint was told (`set_read_paused`).
    ep_paused: bool,
}

/// Send one transmit (GSO batches one datagram at a time).
async fn send_datagram(socket: &Async<UdpSocket>, d: &Datagram, connected: bool) -> io::Result<()> {
    for seg in d.segments() {
        let r = if connected {
            socket.send(&seg).await
        } else {
            socket.send_to(&seg, d.destination).await
        };
        match r {
            Ok(_) => {}
            // A refusal is the caller's business; other send errors are
            // packet loss as far as QUIC is concerned.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(e),
            Err(e) => debug!(to = %d.destination, error = %e, "QUIC send failed"),
        }
    }
    Ok(())
}

enum Wake {
    Datagram(io::Result<(usize, SocketAddr)>),
    Cmd(Option<Cmd>),
    Timer,
    Stop,
}

/// One QUIC listener: owns its endpoint and socket until `stop` closes and
/// every connection is gone (bounded by the server's shutdown timeout).
pub(crate) async fn listener_task(
    l: QuicListener,
    ex: Arc<Executor<'static>>,
    to_core: Sender<Input>,
    alive: Sender<()>,
    next_id: Arc<AtomicU64>,
    settings: ConnSettings,
    stop: Receiver<()>,
) {
    let QuicListener {
        name,
        socket,
        endpoint: mut ep,
    } = l;
    let (cmd_tx, cmd_rx) = async_channel::unbounded::<Cmd>();
    let mut conns: HashMap<QuicConnId, Accepted> = HashMap::new();
    let mut unreported: BTreeSet<QuicConnId> = BTreeSet::new();
    // Connections the core let read again: send what they hold.
    let mut resumed: Vec<QuicConnId> = Vec::new();
    let mut rbuf = vec![0u8; MAX_DATAGRAM];
    let mut stopping = false;
    let _alive = alive;
    loop {
        let now = Instant::now();
        // Outputs until nothing moves.
        loop {
            let mut moved = false;
            for qid in std::mem::take(&mut resumed) {
                if let Some(a) = conns.get_mut(&qid) {
                    moved = true;
                    if !deliver(a, &to_core, false).await {
                        return;
                    }
                }
            }
            while let Some(d) = ep.poll_transmit(now) {
                moved = true;
                let _ = send_datagram(&socket, &d, false).await;
            }
            while let Some(ev) = ep.poll_event() {
                moved = true;
                match ev {
                    QuicEvent::Accepted { conn: qid, remote } => {
                        if stopping {
                            ep.close(now, qid, mqtt_quic::CODE_NO_ERROR, "server shutting down");
                            continue;
                        }
                        let conn = ConnectionId(next_id.fetch_add(1, Ordering::Relaxed));
                        let queue = WriteQueue::new();
                        let tx = WriteHandle::new(queue.clone());
                        let info = ConnectionInfo {
                            peer: Some(remote),
                            listener: name.clone(),
                            internal: false,
                        };
                        ex.spawn(forward(queue.clone(), qid, cmd_tx.clone()))
                            .detach();
                        conns.insert(
                            qid,
                            Accepted {
                                conn,
                                framer: Framer::new(settings.max_packet_size),
                                buf: BytesMut::new(),
                                read_done: false,
                                handed: 0,
                                reported: 0,
                                core_done: false,
                                queue,
                                held: VecDeque::new(),
                                ep_paused: false,
                            },
                        );
                        debug!(listener = %name, %conn, %remote, "QUIC connection accepted");
                        if to_core
                            .send(Input::Opened { conn, info, tx })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    QuicEvent::Data { conn: qid, bytes } => {
                        let Some(a) = conns.get_mut(&qid) else {
                            continue;
                        };
                        if a.read_done || a.core_done {
                            continue;
                        }
                        a.buf.extend_from_slice(&bytes);
                        frame(a);
                        if !deliver(a, &to_core, false).await {
                            return;
                        }
                        // Paused (maybe while this task waited on the core):
                        // stop reading now, before the command comes.
                        if a.queue.is_read_paused() {
                            rt_common::quic::set_read_paused(
                                &mut ep,
                                &mut a.ep_paused,
                                qid,
                                a.conn,
                                true,
                                now,
                            );
                        }
                    }
                    QuicEvent::Closed { conn: qid, reason } => {
                        unreported.remove(&qid);
                        if let Some(mut a) = conns.remove(&qid) {
                            // What a pause held back comes before the end.
                            if !deliver(&mut a, &to_core, true).await {
                                return;
                            }
                            if !a.core_done {
                                let error = match reason {
                                    QuicCloseReason::PeerFinished => None,
                                    r => Some(io::Error::other(r.to_string())),
                                };
                                let input = Input::Closed {
                                    conn: a.conn,
                                    error,
                                };
                                if to_core.send(input).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    QuicEvent::Connected { .. } => {}
                }
            }
            // Bytes quinn took since the last report: the core's view of
            // what is still queued stays exact.
            let mut done = Vec::new();
            for &qid in &unreported {
                let Some(a) = conns.get_mut(&qid) else {
                    done.push(qid);
                    continue;
                };
                let taken = a.handed - ep.buffered(qid).min(a.handed);
                if taken > a.reported {
                    let n = taken - a.reported;
                    a.reported = taken;
                    moved = true;
                    if !a.core_done
                        && to_core
                            .send(Input::Written { conn: a.conn, n })
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
                if a.reported == a.handed {
                    done.push(qid);
                }
            }
            for qid in done {
                unreported.remove(&qid);
            }
            if !moved {
                break;
            }
        }
        if stopping && ep.connection_count() == 0 {
            return;
        }

        // Sleep until a datagram, a command, a timer or the stop signal.
        let deadline = ep.poll_timeout();
        let wake = async { Wake::Datagram(socket.recv_from(&mut rbuf).await) }
            .or(async { Wake::Cmd(cmd_rx.recv().await.ok()) })
            .or(async {
                match deadline {
                    Some(at) => {
                        Timer::at(at).await;
                    }
                    None => future::pending::<()>().await,
                }
                Wake::Timer
            })
            .or(async {
                if stopping {
                    future::pending::<()>().await;
                }
                let _ = stop.recv().await;
                Wake::Stop
            })
            .await;
        let now = Instant::now();
        match wake {
            Wake::Datagram(Ok((n, from))) => {
                ep.handle_datagram(now, from, BytesMut::from(&rbuf[..n]));
                // More that already arrived, without waiting.
                for _ in 1..RECV_BATCH {
                    match socket.get_ref().recv_from(&mut rbuf) {
                        Ok((n, from)) => ep.handle_datagram(now, from, BytesMut::from(&rbuf[..n])),
                        Err(_) => break,
                    }
                }
            }
            Wake::Datagram(Err(e)) => {
                // Unconnected sockets may report an ICMP error of an
                // earlier send here; nothing to do but go on.
                debug!(listener = %name, error = %e, "QUIC recv error");
            }
            Wake::Cmd(Some(first)) => {
                let mut next = Some(first);
                let mut taken = 0;
                while let Some(cmd) = next.take() {
                    handle_cmd(&mut ep, &mut conns, &mut unreported, &mut resumed, cmd, now);
                    taken += 1;
                    if taken < CMD_BATCH {
                        next = cmd_rx.try_recv().ok();
                    }
                }
            }
            // Unreachable: this task holds a sender.
            Wake::Cmd(None) => return,
            Wake::Timer => {}
            Wake::Stop => {
                stopping = true;
                ep.set_refusing(true);
            }
        }
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
    }
}

fn handle_cmd(
    ep: &mut QuicEndpoint,
    conns: &mut HashMap<QuicConnId, Accepted>,
    unreported: &mut BTreeSet<QuicConnId>,
    resumed: &mut Vec<QuicConnId>,
    cmd: Cmd,
    now: Instant,
) {
    match cmd {
        Cmd::Data(qid, bytes) => {
            if let Some(a) = conns.get_mut(&qid) {
                let len = bytes.len();
                if ep.write(qid, bytes).is_ok() {
                    a.handed += len;
                    unreported.insert(qid);
                }
            }
        }
        Cmd::Close(qid) => {
            if let Some(a) = conns.get_mut(&qid) {
                a.core_done = true;
            }
            ep.finish(now, qid);
        }
        Cmd::Forget(qid) => {
            if let Some(a) = conns.get_mut(&qid) {
                a.core_done = true;
            }
            ep.close(now, qid, mqtt_quic::CODE_NO_ERROR, "");
        }
        Cmd::ReadGate(qid) => {
            if let Some(a) = conns.get_mut(&qid) {
                let paused = a.queue.is_read_paused();
                rt_common::quic::set_read_paused(ep, &mut a.ep_paused, qid, a.conn, paused, now);
                if !paused {
                    resumed.push(qid);
                }
            }
        }
    }
}

/// Send the core the inputs `a` holds, one at a time, while the core lets
/// it read (`ending`: regardless, the connection is over). False when the
/// core task is gone.
async fn deliver(a: &mut Accepted, to_core: &Sender<Input>, ending: bool) -> bool {
    if a.core_done {
        a.held.clear();
        return true;
    }
    while ending || !a.queue.is_read_paused() {
        let Some(input) = a.held.pop_front() else {
            break;
        };
        if to_core.send(input).await.is_err() {
            return false;
        }
    }
    true
}

/// Split the connection's buffered stream bytes into inputs for the core
/// (as conn.rs does for TCP: batches of packets, then a malformed frame),
/// appended to what it holds.
fn frame(a: &mut Accepted) {
    let inputs = &mut a.held;
    let mut packets: Vec<Packet> = Vec::new();
    loop {
        match a.framer.next(&mut a.buf) {
            Next::Packet(p) => {
                packets.push(*p);
                if packets.len() >= MAX_PACKETS_PER_INPUT {
                    inputs.push_back(packets_input(a.conn, std::mem::take(&mut packets)));
                }
            }
            Next::NeedMore(_) => break,
            Next::Malformed(bytes) => {
                if !packets.is_empty() {
                    inputs.push_back(packets_input(a.conn, std::mem::take(&mut packets)));
                }
                a.read_done = true;
                inputs.push_back(Input::Malformed {
                    conn: a.conn,
                    bytes,
                });
                return;
            }
        }
    }
    if !packets.is_empty() {
        inputs.push_back(packets_input(a.conn, packets));
    }
    if a.buf.is_empty() {
        // Decoded packets share the old allocation; release ours.
        a.buf = BytesMut::new();
    }
}

fn packets_input(conn: ConnectionId, mut packets: Vec<Packet>) -> Input {
    if packets.len() == 1 {
        if let Some(packet) = packets.pop() {
            return Input::Packet {
                conn,
                packet: Box::new(packet),
            };
        }
    }
    Input::Packets { conn, packets }
}

/// Move what the core queues for one QUIC connection to its endpoint task,
/// and tell it when the core pauses or resumes reading the connection.
async fn forward(queue: Arc<WriteQueue>, qid: QuicConnId, cmd: Sender<Cmd>) {
    let mut out = VecDeque::new();
    loop {
        // The gate first: a pause should not wait behind a write.
        let taken = async {
            queue.read_gate_changed().await;
            None
        }
        .or(async { Some(queue.take(&mut out).await) })
        .await;
        let Some(taken) = taken else {
            if cmd.send(Cmd::ReadGate(qid)).await.is_err() {
                return;
            }
            continue;
        };
        match taken {
            None => {
                for b in out.drain(..) {
                    if cmd.send(Cmd::Data(qid, b)).await.is_err() {
                        return;
                    }
                }
            }
            Some(End::Close) => {
                let _ = cmd.send(Cmd::Close(qid)).await;
                return;
            }
            Some(End::Gone | End::Abort) => {
                let _ = cmd.send(Cmd::Forget(qid)).await;
                return;
            }
        }
    }
}

// ----- bridges ---------------------------------------------------------------

/// Dial `address` over QUIC and pump bytes until either side ends.
pub(crate) async fn quic_transport(
    link: Link,
    address: String,
    quic: Arc<BridgeQuic>,
    to_core: Sender<Input>,
    from_core: Receiver<Outbound>,
) {
    let fail = |failure| {
        let to_core = to_core.clone();
        async move {
            let _ = to_core.send(Input::BridgeFailed { link, failure }).await;
        }
    };
    let remote = match resolve(address.clone()).await {
        Ok(addrs) if !addrs.is_empty() => addrs[0],
        Ok(_) => {
            return fail(TransportFailure::Error(format!(
                "{address} resolved to no address"
            )))
            .await
        }
        Err(e) => {
            return fail(TransportFailure::Error(format!(
                "cannot resolve {address}: {e}"
            )))
            .await
        }
    };
    let local: SocketAddr = match remote.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    // Connected, so ICMP "port unreachable" comes back as ECONNREFUSED.
    let socket = match UdpSocket::bind(local)
        .and_then(|s| s.connect(remote).map(|()| s))
        .and_then(Async::new)
    {
        Ok(s) => s,
        Err(e) => {
            return fail(TransportFailure::Error(format!("QUIC socket: {e}"))).await;
        }
    };
    let server_name = quic.server_name_for(&address);
    let mut ep = QuicEndpoint::new(None, Some(quic.client.clone()), &quic.settings, None);
    let qid = match ep.connect(Instant::now(), remote, &server_name) {
        Ok(q) => q,
        Err(e) => return fail(TransportFailure::Error(e.to_string())).await,
    };
    let mut up = false;
    let mut closing: Option<Instant> = None;
    let mut rbuf = vec![0u8; MAX_DATAGRAM];
    // How the link ended, reported once below.
    let end: Option<Input> = 'pump: loop {
        let now = Instant::now();
        loop {
            let mut moved = false;
            while let Some(d) = ep.poll_transmit(now) {
                moved = true;
                if let Err(e) = send_datagram(&socket, &d, true).await {
                    break 'pump lost(link, up, &e);
                }
            }
            while let Some(ev) = ep.poll_event() {
                moved = true;
                match ev {
                    QuicEvent::Connected { .. } => {
                        if closing.is_none() {
                            up = true;
                            if to_core.send(Input::BridgeUp { link }).await.is_err() {
                                return;
                            }
                        }
                    }
                    QuicEvent::Data { bytes, .. } => {
                        if closing.is_none() {
                            let bytes = BytesMut::from(&bytes[..]);
                            if to_core
                                .send(Input::BridgeRead { link, bytes })
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    QuicEvent::Closed { reason, .. } => {
                        if closing.is_some() {
                            return;
                        }
                        debug!(bridge = link.id.0, %address, %reason, "QUIC bridge link ended");
                        break 'pump Some(if up {
                            Input::BridgeDown { link }
                        } else {
                            Input::BridgeFailed {
                                link,
                                failure: rt_common::quic::failure_of(&reason),
                            }
                        });
                    }
                    QuicEvent::Accepted { .. } => {}
                }
            }
            if !moved {
                break;
            }
        }
        if closing.is_some_and(|t| t <= now) {
            return;
        }
        let deadline = [ep.poll_timeout(), closing].into_iter().flatten().min();
        let wake = async {
            match socket.recv(&mut rbuf).await {
                Ok(n) => Wake::Datagram(Ok((n, remote))),
                Err(e) => Wake::Datagram(Err(e)),
            }
        }
        .or(async {
            if closing.is_some() {
                future::pending::<()>().await;
            }
            match from_core.recv().await {
                Ok(Outbound::Data(d)) => Wake::Cmd(Some(Cmd::Data(qid, d))),
                Ok(Outbound::Close) | Err(_) => Wake::Cmd(Some(Cmd::Close(qid))),
            }
        })
        .or(async {
            match deadline {
                Some(at) => {
                    Timer::at(at).await;
                }
                None => future::pending::<()>().await,
            }
            Wake::Timer
        })
        .await;
        let now = Instant::now();
        match wake {
            Wake::Datagram(Ok((n, from))) => {
                ep.handle_datagram(now, from, BytesMut::from(&rbuf[..n]));
                for _ in 1..RECV_BATCH {
                    match socket.get_ref().recv(&mut rbuf) {
                        Ok(n) => ep.handle_datagram(now, remote, BytesMut::from(&rbuf[..n])),
                        Err(_) => break,
                    }
                }
            }
            Wake::Datagram(Err(e)) => {
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    break 'pump lost(link, up, &e);
                }
                debug!(bridge = link.id.0, error = %e, "QUIC recv error");
            }
            Wake::Cmd(Some(Cmd::Data(q, d))) => {
                let _ = ep.write(q, d);
                // More already queued, without waiting.
                while let Ok(Outbound::Data(d)) = from_core.try_recv() {
                    let _ = ep.write(qid, d);
                }
            }
            Wake::Cmd(_) => {
                // Flush, FIN, close on acknowledgement (bounded by a linger).
                ep.finish(now, qid);
                closing = Some(now + CLOSE_LINGER);
            }
            Wake::Timer | Wake::Stop => {}
        }
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
    };
    if let Some(input) = end {
        if let Input::BridgeFailed { failure, .. } = &input {
            debug!(bridge = link.id.0, error = %failure, "QUIC bridge dial failed");
        }
        let _ = to_core.send(input).await;
    }
    // Parked: the core closes the link (dropping `from_core`'s sender) or
    // cancels this task.
    while from_core.recv().await.is_ok() {}
}

/// The link's socket failed (ICMP refusal): failed dial or lost link.
fn lost(link: Link, up: bool, e: &io::Error) -> Option<Input> {
    Some(if up {
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
    })
}

// ----- the tools' client connection ------------------------------------------

/// One QUIC client connection for `sansmq pub`/`sub --quic`: its own
/// endpoint and connected UDP socket, driven by whoever awaits `read`,
/// `write_all` or `finish` (the tools run one connection on one thread).
pub(crate) struct QuicClientConn {
    ep: QuicEndpoint,
    socket: Async<UdpSocket>,
    conn: QuicConnId,
    remote: SocketAddr,
    data: VecDeque<Bytes>,
    closed: Option<QuicCloseReason>,
    connected: bool,
    rbuf: Vec<u8>,
}

/// Bytes written but not yet taken by quinn above which `write_all` waits.
const CLIENT_WRITE_BUFFER: usize = 1 << 20;

impl QuicClientConn {
    /// Dial `remote` and wait for the MQTT stream (or the handshake
    /// timeout, `timeout`).
    pub(crate) async fn connect(
        remote: SocketAddr,
        server_name: &str,
        trust: ServerTrust,
        timeout: Duration,
    ) -> io::Result<Self> {
        let settings = QuicSettings {
            handshake_timeout: timeout,
            ..QuicSettings::default()
        };
        let client = mqtt_quic::client_config(trust, None, &settings).map_err(io::Error::other)?;
        let local: SocketAddr = match remote.ip() {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(remote)?;
        let mut ep = QuicEndpoint::new(None, Some(client), &settings, None);
        let conn = ep
            .connect(Instant::now(), remote, server_name)
            .map_err(io::Error::other)?;
        let mut c = Self {
            ep,
            socket: Async::new(socket)?,
            conn,
            remote,
            data: VecDeque::new(),
            closed: None,
            connected: false,
            rbuf: vec![0u8; MAX_DATAGRAM],
        };
        loop {
            c.pump().await?;
            if c.connected {
                return Ok(c);
            }
            if let Some(r) = &c.closed {
                return Err(io::Error::other(r.to_string()));
            }
            c.wait().await?;
        }
    }

    /// Send what the endpoint has, take its events.
    async fn pump(&mut self) -> io::Result<()> {
        let now = Instant::now();
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        while let Some(d) = self.ep.poll_transmit(now) {
            if let Err(e) = send_datagram(&self.socket, &d, true).await {
                self.closed
                    .get_or_insert(QuicCloseReason::Other(format!("{}: {e}", self.remote)));
            }
        }
        while let Some(ev) = self.ep.poll_event() {
            match ev {
                QuicEvent::Connected { .. } => self.connected = true,
                QuicEvent::Data { bytes, .. } => self.data.push_back(bytes),
                QuicEvent::Closed { reason, .. } => {
                    self.closed.get_or_insert(reason);
                }
                QuicEvent::Accepted { .. } => {}
            }
        }
        Ok(())
    }

    /// Sleep until a datagram or the endpoint's next timer, and take it.
    async fn wait(&mut self) -> io::Result<()> {
        let deadline = self.ep.poll_timeout();
        let socket = &self.socket;
        let rbuf = &mut self.rbuf;
        let got = async { Some(socket.recv(rbuf).await) }
            .or(async {
                match deadline {
                    Some(at) => {
                        Timer::at(at).await;
                    }
                    None => future::pending::<()>().await,
                }
                None
            })
            .await;
        let now = Instant::now();
        match got {
            Some(Ok(n)) => {
                let data = BytesMut::from(&self.rbuf[..n]);
                self.ep.handle_datagram(now, self.remote, data);
            }
            Some(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                self.closed.get_or_insert(QuicCloseReason::Refused);
            }
            Some(Err(e)) => return Err(e),
            None => self.ep.handle_timeout(now),
        }
        Ok(())
    }

    /// Stream bytes into `out`; `Ok(0)` once the server ended the stream.
    pub(crate) async fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(front) = self.data.front_mut() {
                let n = front.len().min(out.len());
                out[..n].copy_from_slice(&front[..n]);
                if n == front.len() {
                    self.data.pop_front();
                } else {
                    let _ = front.split_to(n);
                }
                return Ok(n);
            }
            match &self.closed {
                Some(QuicCloseReason::PeerFinished | QuicCloseReason::LocallyClosed) => {
                    return Ok(0)
                }
                Some(other) => return Err(io::Error::other(other.to_string())),
                None => {}
            }
            self.pump().await?;
            if self.data.is_empty() && self.closed.is_none() {
                self.wait().await?;
            }
        }
    }

    /// Queue bytes on the stream and send what flow control allows;
    /// waits while more than a MiB is still waiting for flow control.
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.ep
            .write(self.conn, Bytes::copy_from_slice(bytes))
            .map_err(io::Error::other)?;
        self.pump().await?;
        while self.ep.buffered(self.conn) > CLIENT_WRITE_BUFFER {
            if let Some(r) = &self.closed {
                return Err(io::Error::other(r.to_string()));
            }
            self.wait().await?;
            self.pump().await?;
        }
        Ok(())
    }

    /// Graceful end: what was written, then FIN; returns once the server
    /// acknowledged it or after `linger`.
    pub(crate) async fn finish(&mut self, linger: Duration) {
        self.ep.finish(Instant::now(), self.conn);
        let until = Instant::now() + linger;
        let _ = async {
            loop {
                if self.pump().await.is_err() || self.closed.is_some() {
                    return;
                }
                if self.wait().await.is_err() {
                    return;
                }
            }
        }
        .or(async {
            Timer::at(until).await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rt_common::config::BridgeSection;
    use rt_common::quic::bridge_settings;

    #[test]
    fn bridge_keys_map_to_settings() {
        let b = BridgeSection {
            quic_keepalive: None,
            quic_idle_timeout: Duration::from_secs(30),
            quic_handshake_timeout: Duration::from_secs(5),
            quic_initial_rtt_ms: 100,
            quic_max_ack_delay_ms: 0,
            quic_0rtt: false,
            ..BridgeSection::default()
        };
        let s = bridge_settings(&b);
        assert_eq!(s.keep_alive_interval, None);
        assert_eq!(s.idle_timeout, std::time::Duration::from_secs(30));
        assert_eq!(s.handshake_timeout, Duration::from_secs(5));
        assert_eq!(s.initial_rtt, Duration::from_millis(100));
        assert_eq!(s.max_ack_delay, None);
        assert!(!s.enable_0rtt);
    }
}
