//! The core thread: it owns the [`Node`] (the broker and its bridges) and
//! is the only thread that calls into it.
//!
//! It blocks on its bounded input channel with `recv_timeout` until the
//! earliest of the next input and the Node's `poll_timeout()` (no periodic
//! tick), feeds each input to the Node, then drains `poll_transmit` (to the
//! connections' write queues) and `poll_event` (close a connection, dial or
//! close a bridge transport, log), as the sans-IO contract says.
//!
//! Write queues are unbounded channels bounded by bytes: the core thread
//! counts what it queued and the writer threads report what they wrote, so
//! the core sees exactly the bytes not yet on the socket (its congestion
//! policy). A queue that would pass `2 x max_pending_bytes_per_connection +
//! max_packet_size + 64 KiB` means the core's contract was broken: the
//! connection is treated as a failed transport (as in rt-smol).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_core::bridge::{BridgeEvent, Transport as BridgeTransport, TransportFailure};
use mqtt_core::broker::{ConnectionId, ConnectionInfo, Event, Message, Metrics, Transmit};
use mqtt_core::codec::Packet;
use mqtt_core::node::{BridgeId, Node, NodeEvent, NodeTransmit};
use rt_common::conns::{ConnTable, Queued};
use rt_common::links::{BridgeLinks, Link, LinkState};
use rt_common::log::{self, DropLog};
use rt_common::quic::BridgeQuic;
use tracing::{debug, error, warn};

use crate::bridge::{spawn_tcp, LinkTx};
use crate::conn::{Acceptor, ReadGateHandle};
use crate::host::{Hosts, SubscribeRequest};
use crate::quic::{self, QuicListenerHandle, QuicSink};
use crate::Error;

/// Inputs to the core thread, in arrival order per connection.
pub(crate) enum Input {
    /// A socket was accepted; `tx` is its write queue.
    Opened {
        conn: ConnectionId,
        info: ConnectionInfo,
        tx: Writer,
    },
    /// A packet framed by the connection's reader.
    Packet {
        conn: ConnectionId,
        packet: Box<Packet>,
    },
    /// Several packets of one read, in order.
    Packets {
        conn: ConnectionId,
        packets: Vec<Packet>,
    },
    /// Bytes that failed to decode, from the start of the failing packet:
    /// the core decodes them itself (`handle_read`) and judges the error.
    Malformed {
        conn: ConnectionId,
        bytes: BytesMut,
    },
    /// The writer put `n` more bytes on the socket.
    Written {
        conn: ConnectionId,
        n: usize,
    },
    /// A TCP writer flushed its last bytes after `Close` and ended.
    WriterDone {
        conn: ConnectionId,
    },
    /// The socket ended (EOF, reset, I/O error).
    Closed {
        conn: ConnectionId,
        error: Option<io::Error>,
    },
    BridgeUp {
        link: Link,
    },
    BridgeFailed {
        link: Link,
        failure: TransportFailure,
    },
    BridgeRead {
        link: Link,
        bytes: BytesMut,
    },
    BridgeDown {
        link: Link,
    },
    /// The host publishes (as the broker itself).
    HostPublish(Box<Message>),
    HostSubscribe(SubscribeRequest),
    /// The host took a message from a subscription that had some held.
    HostDrained,
    HostUnsubscribed {
        conn: ConnectionId,
    },
    /// The embedder's (or the binary's signal handler's) shutdown.
    Shutdown,
}

/// What the core thread sends a connection's writer (or a bridge link's).
pub(crate) enum Outbound {
    Data(Bytes),
    /// Flush what came before, then close the socket.
    Close,
    /// Internal to a QUIC bridge link: its endpoint's deadline moved.
    Wake,
}

/// A connection's write side, as the core sees it. Dropping it without
/// `close` ends the connection without flushing (a TCP writer sees its
/// queue gone; a QUIC connection is closed).
pub(crate) enum Writer {
    /// The writer thread's queue, and the socket, to unblock a writer
    /// stuck in `write` on a peer that stopped reading; and the reader's
    /// flow-control gate (opened again when this is dropped).
    Tcp(Sender<Outbound>, TcpStream, ReadGateHandle),
    Quic(QuicSink),
}

impl Writer {
    /// False when the transport is gone (its `Closed` is on the way).
    fn send(&self, data: Bytes) -> bool {
        match self {
            Writer::Tcp(tx, _, _) => tx.send(Outbound::Data(data)).is_ok(),
            Writer::Quic(q) => q.send(data),
        }
    }

    /// After the bytes already queued: flush, then close. A TCP socket is
    /// handed back: its flush is bounded (see `Core::flushing`).
    fn close(self) -> Option<TcpStream> {
        match self {
            Writer::Tcp(tx, stream, _gate) => {
                let _ = tx.send(Outbound::Close);
                Some(stream)
            }
            Writer::Quic(q) => {
                q.close();
                None
            }
        }
    }

    /// Flow control: stop or resume the reader (TCP: its gate; QUIC: the
    /// listener stops reading the connection's stream).
    fn set_read_paused(&self, paused: bool) {
        match self {
            Writer::Tcp(_, _, gate) => gate.set_paused(paused),
            Writer::Quic(q) => q.set_read_paused(paused),
        }
    }

    /// Now, without flushing (the writer's blocked `write` fails).
    fn abort(self) {
        if let Writer::Tcp(_, stream, _) = &self {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Packets (or other inputs) the core takes from its channel before
/// draining outputs: bounds the latency one busy period adds to timers
/// and writes.
const INPUT_BATCH: usize = 256;

/// What [`run`] needs besides the node.
pub(crate) struct CoreSetup {
    pub(crate) node: Node,
    pub(crate) rx: Receiver<Input>,
    pub(crate) to_core: SyncSender<Input>,
    pub(crate) acceptors: Vec<Acceptor>,
    pub(crate) quic_listeners: Vec<QuicListenerHandle>,
    pub(crate) quic_bridges: Vec<Option<Arc<BridgeQuic>>>,
    pub(crate) stop_accepting: Arc<AtomicBool>,
    pub(crate) alive_rx: Receiver<()>,
    pub(crate) shutdown_timeout: Duration,
}

/// The core thread's body: serve until `Shutdown` or a bridge's `Fatal`,
/// then shut down gracefully and return the final metrics.
pub(crate) fn run(setup: CoreSetup) -> Result<Metrics, Error> {
    let CoreSetup {
        node,
        rx,
        to_core,
        acceptors,
        quic_listeners,
        quic_bridges,
        stop_accepting,
        alive_rx,
        shutdown_timeout,
    } = setup;
    let core = Core {
        links: BridgeLinks::new(&node),
        conns: ConnTable::new(node.broker().config()),
        quic_bridges,
        node,
        to_core,
        fatal: None,
        drops: DropLog::new(),
        hosts: Hosts::default(),
        flushing: HashMap::new(),
        flush_deadlines: VecDeque::new(),
        // Never shorter than the FIN linger, so a final DISCONNECT gets out.
        flush_limit: shutdown_timeout.max(Duration::from_secs(1)),
    };
    let (metrics, fatal, flushing) = core.serve(&rx);
    // Readers and writers blocked on the channel see it closed and end.
    drop(rx);
    stop_accepting.store(true, Ordering::Release);
    for a in acceptors {
        a.stop();
    }
    // QUIC listeners flush the closes the core queued, then end.
    for q in &quic_listeners {
        q.stop(shutdown_timeout);
    }
    // Every writer holds an `alive` sender: wait for the last to flush.
    if let Err(RecvTimeoutError::Timeout) = alive_rx.recv_timeout(shutdown_timeout) {
        warn!(
            timeout = ?shutdown_timeout,
            "some connections had not flushed by the shutdown timeout; closing them"
        );
        // Unblock their writers, so no thread outlives the broker for long.
        for stream in flushing {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
    match fatal {
        Some((bridge, reason)) => Err(Error::BridgeFatal { bridge, reason }),
        None => Ok(metrics),
    }
}

struct Core {
    node: Node,
    /// Open connections: write queues, queued bytes, what the logs need.
    conns: ConnTable<Writer>,
    links: BridgeLinks<LinkTx>,
    /// Per bridge, its QUIC client setup (None: no QUIC transport).
    quic_bridges: Vec<Option<Arc<BridgeQuic>>>,
    to_core: SyncSender<Input>,
    fatal: Option<(String, String)>,
    drops: DropLog,
    hosts: Hosts,
    /// TCP sockets the core closed, with the time by which their final
    /// flush must be over: a peer that stopped reading would otherwise
    /// keep its writer thread blocked in `write` forever.
    flushing: HashMap<ConnectionId, TcpStream>,
    /// When each flush must be over, in order (one fixed limit).
    flush_deadlines: VecDeque<(Instant, ConnectionId)>,
    flush_limit: Duration,
}

/// What the core hands back when it stops: its final metrics, why a
/// bridge gave up (if one did), and the TCP sockets still flushing.
type Served = (Metrics, Option<(String, String)>, Vec<TcpStream>);

enum Wake {
    Input(Input),
    Timeout,
    Closed,
}

impl Core {
    fn serve(mut self, rx: &Receiver<Input>) -> Served {
        loop {
            self.drain(Instant::now());
            if self.fatal.is_some() {
                return self.shutdown();
            }
            let wake = match rx.try_recv() {
                Ok(input) => Wake::Input(input),
                Err(TryRecvError::Disconnected) => Wake::Closed,
                // Nothing waiting: sleep until an input or the deadline.
                Err(TryRecvError::Empty) => match self.poll_timeout() {
                    Some(deadline) => {
                        let wait = deadline.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(wait) {
                            Ok(input) => Wake::Input(input),
                            Err(RecvTimeoutError::Timeout) => Wake::Timeout,
                            Err(RecvTimeoutError::Disconnected) => Wake::Closed,
                        }
                    }
                    None => rx.recv().map_or(Wake::Closed, Wake::Input),
                },
            };
            match wake {
                Wake::Input(input) => {
                    let mut next = Some(input);
                    let mut taken = 0;
                    while let Some(input) = next.take() {
                        // Counted in packets, so a batch bounds the work
                        // between two drains whatever the reads held.
                        taken += match &input {
                            Input::Packets { packets, .. } => packets.len(),
                            _ => 1,
                        };
                        if self.handle(input, Instant::now()) {
                            return self.shutdown();
                        }
                        if taken < INPUT_BATCH {
                            next = rx.try_recv().ok();
                        }
                    }
                }
                Wake::Timeout => {}
                // Every sender is gone (the handle was dropped): stop.
                Wake::Closed => return self.shutdown(),
            }
            // Checked after inputs too, so a steady stream of input cannot
            // delay keepalive or retry deadlines.
            let now = Instant::now();
            if self.node.poll_timeout().is_some_and(|d| d <= now) {
                self.node.handle_timeout(now);
            }
            self.hosts.handle_timeout(now);
            while self
                .flush_deadlines
                .front()
                .is_some_and(|(at, _)| *at <= now)
            {
                if let Some((_, conn)) = self.flush_deadlines.pop_front() {
                    if let Some(stream) = self.flushing.remove(&conn) {
                        // Stuck on a peer that does not read.
                        debug!(%conn, "final flush not done in time; closing");
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                    }
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.node
            .poll_timeout()
            .into_iter()
            .chain(self.hosts.poll_timeout())
            .chain(self.flush_deadlines.front().map(|(at, _)| *at))
            // Drop counts held back by the one-line-per-second rule.
            .chain(self.drops.next_deadline(self.node.broker().metrics()))
            .min()
    }

    fn shutdown(mut self) -> Served {
        let now = Instant::now();
        self.node.shutdown(now);
        self.drain(now);
        for l in self.links.take_all() {
            close_link(l);
        }
        let m = self.node.broker().metrics().clone();
        let bridges = self.node.bridge_metrics();
        log::broker_stopped(&m, self.links.names().zip(bridges.iter()));
        // Dropping `conns` ends the writers once they flushed their queue.
        let flushing = self.flushing.drain().map(|(_, s)| s).collect();
        (m, self.fatal, flushing)
    }

    /// Feed one input to the core. True on `Shutdown`.
    fn handle(&mut self, input: Input, now: Instant) -> bool {
        match input {
            Input::Opened { conn, info, tx } => {
                self.conns.opened(conn, &info, tx);
                self.node.handle_connection_opened(conn, info, now);
            }
            Input::Packet { conn, packet } => self.node.handle_packet(conn, *packet, now),
            Input::Packets { conn, packets } => {
                for packet in packets {
                    self.node.handle_packet(conn, packet, now);
                }
            }
            Input::Malformed { conn, mut bytes } => self.node.handle_read(conn, &mut bytes, now),
            Input::Written { conn, n } => {
                self.conns.written(conn, n);
                self.node.handle_written(conn, n, now);
            }
            Input::Closed { conn, error } => {
                self.conns.closed(conn, error.as_ref());
                self.node.handle_connection_closed(conn, now);
            }
            Input::BridgeUp { link } => {
                if let Some(l) = self.links.current(link) {
                    l.up = true;
                    self.node.handle_bridge_transport_up(link.id, now);
                }
            }
            Input::BridgeFailed { link, failure } => {
                if let Some(l) = self.links.take_current(link) {
                    let name = self.links.name(link.id);
                    warn!(bridge = %name, address = %l.address, error = %failure, "bridge dial failed");
                    self.node
                        .handle_bridge_transport_failed(link.id, failure, now);
                }
            }
            Input::BridgeRead { link, mut bytes } => {
                if self.links.current(link).is_some() {
                    self.node.handle_bridge_read(link.id, &mut bytes, now);
                }
            }
            Input::BridgeDown { link } => {
                // Dropping the link closes its write queue; its threads end.
                if let Some(l) = self.links.take_current(link) {
                    let name = self.links.name(link.id);
                    warn!(bridge = %name, address = %l.address, "bridge transport closed by the remote or the network");
                    self.node.handle_bridge_transport_down(link.id, now);
                }
            }
            Input::WriterDone { conn } => {
                self.flushing.remove(&conn);
            }
            Input::HostPublish(message) => self.node.publish(*message, now),
            Input::HostSubscribe(req) => self.hosts.open(&mut self.node, req, now),
            // The pump in `drain` moves what is held.
            Input::HostDrained => {}
            Input::HostUnsubscribed { conn } => self.hosts.unsubscribed(conn),
            Input::Shutdown => return true,
        }
        false
    }

    fn dial(&mut self, id: BridgeId, transport: BridgeTransport, address: String, now: Instant) {
        let quic = match transport {
            BridgeTransport::Quic => self.quic_bridges.get(id.0).cloned().flatten(),
            _ => None,
        };
        if transport != BridgeTransport::Tcp && quic.is_none() {
            // A new Dial replaces whatever link was left.
            if let Some(old) = self.links.take(id) {
                close_link(old);
            }
            let failure = TransportFailure::Error(format!(
                "the {transport} bridge transport is not available in this runtime"
            ));
            warn!(bridge = %self.links.name(id), %address, error = %failure, "bridge dial failed");
            self.node.handle_bridge_transport_failed(id, failure, now);
            return;
        }
        // Unbounded: the bridge's client bounds what it sends (inflight
        // window, offline cache), as the broker does for connections.
        let (tx, rx) = mpsc::channel();
        let wake = tx.clone();
        let Some((link, old)) = self.links.open(id, address.clone(), |_| LinkTx(tx)) else {
            return;
        };
        if let Some(old) = old {
            close_link(old);
        }
        let to_core = self.to_core.clone();
        let started = match quic {
            Some(q) => quic::spawn_bridge(link, address.clone(), q, to_core, rx, wake),
            None => {
                drop(wake);
                spawn_tcp(link, address.clone(), to_core, rx)
            }
        };
        if let Err(e) = started {
            self.links.take_current(link);
            let failure = TransportFailure::Error(format!("cannot start a dial thread: {e}"));
            warn!(bridge = %self.links.name(id), %address, error = %failure, "bridge dial failed");
            self.node.handle_bridge_transport_failed(id, failure, now);
        }
    }

    fn on_bridge_event(&mut self, id: BridgeId, event: BridgeEvent, now: Instant) {
        let name = self.links.name(id).to_owned();
        match event {
            BridgeEvent::Dial {
                attempt,
                transport,
                address,
            } => {
                debug!(bridge = %name, attempt, %transport, %address, "bridge dialing");
                self.dial(id, transport, address, now);
            }
            BridgeEvent::CloseTransport => {
                if let Some(l) = self.links.take(id) {
                    close_link(l);
                }
            }
            BridgeEvent::StateChanged { from, to, reason } => {
                let m = self.node.bridge(id).map(|b| b.metrics());
                log::bridge_state_changed(&name, &from, &to, reason.as_ref(), m.as_ref(), now);
            }
            BridgeEvent::Fatal { reason } => {
                error!(bridge = %name, reason = %reason, "bridge failed for good");
                if self.fatal.is_none() {
                    self.fatal = Some((name, reason.to_string()));
                }
            }
            other => debug!(bridge = %name, event = ?other, "unhandled bridge event"),
        }
    }

    /// Drain the core's outputs (transmits first, then events, as the core
    /// documents) and the host links, until nothing more moves.
    fn drain(&mut self, now: Instant) {
        loop {
            let mut progressed = self.hosts.pump(&mut self.node, now);
            while let Some(t) = self.node.poll_transmit() {
                progressed = true;
                match t {
                    NodeTransmit::Connection(t) if self.hosts.contains(t.conn) => {
                        self.hosts.on_transmit(t.conn, &t.data, now);
                    }
                    NodeTransmit::Connection(t) => self.deliver(t, now),
                    NodeTransmit::Bridge { id, data } => {
                        // No link: the core asked to close it, or it is
                        // gone and the core has been or is being told.
                        if let Some(l) = self.links.get(id) {
                            let _ = l.io.0.send(Outbound::Data(data));
                        }
                    }
                }
            }
            while let Some(ev) = self.node.poll_event() {
                progressed = true;
                match ev {
                    NodeEvent::Broker(ev) => self.on_event(ev),
                    NodeEvent::Bridge { id, event } => self.on_bridge_event(id, event, now),
                    other => debug!(event = ?other, "unhandled node event"),
                }
            }
            if !progressed {
                break;
            }
        }
        // Dropping the handle closes the write queue; the writer ends.
        self.conns.forget_dead();
        self.drops.log(self.node.broker().metrics(), now);
    }

    fn deliver(&mut self, t: Transmit, now: Instant) {
        let broker = self.node.broker();
        // A refused send means the writer is gone and its `Closed` is on
        // the way.
        let queued = self.conns.queue(
            t.conn,
            t.data,
            || broker.connection_client_id(t.conn),
            |tx, data| tx.send(data),
        );
        if queued == Queued::OverBound {
            // No flush: the socket is shut down under the writer.
            if let Some(tx) = self.conns.remove(t.conn) {
                tx.abort();
            }
            self.node.handle_connection_closed(t.conn, now);
        }
    }

    fn on_event(&mut self, ev: Event) {
        self.conns.event(&ev);
        match ev {
            Event::CloseConnection { conn, .. } => {
                if self.hosts.contains(conn) {
                    self.hosts.on_closed(conn);
                } else if let Some(tx) = self.conns.remove(conn) {
                    // After the final bytes already queued: the writer
                    // flushes them, then closes.
                    if let Some(stream) = tx.close() {
                        let at = Instant::now() + self.flush_limit;
                        self.flushing.insert(conn, stream);
                        self.flush_deadlines.push_back((at, conn));
                    }
                }
            }
            Event::PauseReading { conn } => {
                if let Some(tx) = self.conns.get(conn) {
                    tx.set_read_paused(true);
                }
            }
            Event::ResumeReading { conn } => {
                if let Some(tx) = self.conns.get(conn) {
                    tx.set_read_paused(false);
                }
            }
            _ => {}
        }
    }
}

/// Close a bridge link: dropping its queue sends `Close`, after which the
/// link flushes what was queued and closes (a dial in progress is
/// abandoned as soon as it connects).
fn close_link(l: LinkState<LinkTx>) {
    drop(l);
}
