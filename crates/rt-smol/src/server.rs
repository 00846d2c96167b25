//! The server: listeners, the core task that owns the [`Node`] (the
//! [`Broker`](mqtt_core::broker::Broker) and its bridges), bridge
//! transports, and the executor threads.
//!
//! ## Bridges
//! On a bridge's `Dial { transport: Tcp, .. }` the core task spawns a TCP
//! transport task (`src/bridge.rs`); success, failure, bytes and the end
//! of the socket go back to the core as inputs, tagged with the link's
//! generation so inputs from a closed link are ignored. `CloseTransport`
//! flushes what was queued, then closes (or cancels a dial in progress).
//! `Dial { transport: Quic, .. }` spawns a QUIC transport task instead
//! (`src/quic.rs`), which reports the same inputs. There is no TLS bridge
//! transport in this runtime yet: its dials are reported to the core as
//! failed transports at once, so a hybrid transport list falls back to the
//! next one. A bridge's `Fatal` event
//! (fail_fast, max attempts) ends [`Server::run`] with
//! [`Error::BridgeFatal`].
//!
//! ## Backpressure and write queues
//! Each connection has a write queue (core task -> its write half). The core
//! task counts the bytes it queued and the write half reports the bytes it
//! wrote (`Input::Written` -> `Broker::handle_written`), so the core sees
//! exactly the bytes not yet on the socket and applies its own policy (above
//! `max_pending_bytes_per_connection` it drops QoS 0 to that connection,
//! counted in its metrics, and holds QoS 1/2 in the session queue). A write
//! queue therefore stays near that bound by the core's contract. The runtime
//! still enforces a hard bound of `2 x max_pending_bytes_per_connection +
//! max_packet_size + 64 KiB`: if a queue would pass it (a core bug or a
//! contract change), the connection is treated as a failed transport — its
//! socket is dropped without flushing, the core is told
//! (`handle_connection_closed`, so the will is published), and an error is
//! logged with the byte count. Memory per connection stays bounded either way.
//!
//! Reads are backpressured too: the input channel to the core task is
//! bounded, so when the core task falls behind, connection tasks stop
//! reading their sockets and TCP flow control slows the publishers.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender, TryRecvError};
use async_executor::Executor;
use async_executor::Task;
use async_io::{Async, Timer};
use bytes::{Bytes, BytesMut};
use futures_lite::FutureExt;
use mqtt_core::bridge::{
    BridgeConfig, BridgeConfigError, BridgeEvent, Transport as BridgeTransport, TransportFailure,
};
use mqtt_core::broker::{BrokerConfig, ConnectionId, ConnectionInfo, Event, Metrics, Transmit};
use mqtt_core::codec::Packet;
use mqtt_core::node::{BridgeId, Node, NodeEvent, NodeTransmit};
use tracing::{debug, error, info, warn};

use crate::bridge::{tcp_transport, Link};
use crate::conn::{accept_loop, ConnSettings, WriteHandle};
use crate::quic::{self, BridgeQuic, QuicListener, QuicSetupError};
use rt_common::config::{Config, RuntimeConfig};
use rt_common::conns::{ConnTable, Queued};
use rt_common::log::{self, DropLog};

/// Inputs to the core task, in arrival order per connection.
pub(crate) enum Input {
    /// A socket was accepted; `tx` is the core's side of its write queue
    /// (`conn::WriteQueue`, which the connection's writer drains).
    Opened {
        conn: ConnectionId,
        info: ConnectionInfo,
        tx: WriteHandle,
    },
    /// A packet decoded on the connection task.
    Packet {
        conn: ConnectionId,
        packet: Box<Packet>,
    },
    /// Several packets decoded from one read, in order (at most
    /// `conn::MAX_PACKETS_PER_INPUT`): one channel message and one wakeup
    /// for all of them, and the core answers them with one transmit.
    Packets {
        conn: ConnectionId,
        packets: Vec<Packet>,
    },
    /// Bytes that failed to decode, from the start of the failing packet:
    /// the core decodes them itself (`handle_read`) and judges the error.
    Malformed { conn: ConnectionId, bytes: BytesMut },
    /// The write half put `n` more bytes on the socket.
    Written { conn: ConnectionId, n: usize },
    /// The socket ended (EOF, reset, I/O error).
    Closed {
        conn: ConnectionId,
        error: Option<io::Error>,
    },
    /// A bridge transport is open.
    BridgeUp { link: Link },
    /// A bridge dial failed.
    BridgeFailed {
        link: Link,
        failure: TransportFailure,
    },
    /// Bytes from a bridge transport.
    BridgeRead { link: Link, bytes: BytesMut },
    /// A bridge transport ended (EOF, reset, I/O error).
    BridgeDown { link: Link },
    /// SIGINT/SIGTERM or the embedder's shutdown future.
    Shutdown,
}

/// What the core task sends a bridge transport's write half.
pub(crate) enum Outbound {
    Data(Bytes),
    /// Flush what came before, then close the socket.
    Close,
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot listen on {addr} (listener {name:?}): {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("cannot start a worker thread: {0}")]
    Thread(io::Error),
    #[error("invalid bridge configuration: {0}")]
    BridgeConfig(#[from] BridgeConfigError),
    /// A bridge gave up (`fail_fast`, or `max_attempts` reached).
    #[error("bridge {bridge:?} failed: {reason}")]
    BridgeFatal { bridge: String, reason: String },
    /// A QUIC listener's or bridge's certificates or settings.
    #[error("QUIC: {0}")]
    Quic(#[from] QuicSetupError),
}

/// Packets (or other inputs) the core task takes from its channel before
/// draining outputs. Bounds the latency one busy period adds to timers and
/// writes.
const INPUT_BATCH: usize = 256;
/// Capacity of the channel into the core task (read backpressure). An
/// input holds up to `MAX_PACKETS_PER_INPUT` packets, so this also bounds
/// the decoded packets waiting for the core.
const INPUT_CAPACITY: usize = 128;
/// How long a closing socket waits for the peer's FIN after ours.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

pub(crate) struct Listener {
    pub(crate) name: String,
    pub(crate) socket: Async<TcpListener>,
}

/// Bound listeners plus what the core and runtime need to run.
pub struct Server {
    listeners: Vec<Listener>,
    quic_listeners: Vec<QuicListener>,
    broker_config: BrokerConfig,
    bridges: Vec<BridgeConfig>,
    /// Per bridge (same index): its QUIC client setup, if it uses QUIC.
    quic_bridges: Vec<Option<Arc<BridgeQuic>>>,
    runtime: RuntimeConfig,
}

impl Server {
    /// Bind every listener now, so a taken port fails before anything runs.
    pub fn bind(config: &Config) -> Result<Self, Error> {
        let (listeners, quic_listeners) = config.bind_listeners(
            |l| {
                let socket = Async::new(TcpListener::bind(l.addr())?)?;
                Ok(Listener {
                    name: l.name.clone(),
                    socket,
                })
            },
            QuicListener::bind,
            |name, addr, source| Error::Bind { name, addr, source },
        )?;
        let quic_bridges = rt_common::quic::bridges_quic(&config.bridges)?;
        Ok(Self {
            listeners,
            quic_listeners,
            quic_bridges,
            broker_config: config.broker.to_broker_config(),
            bridges: config
                .bridges
                .iter()
                .map(|b| b.to_bridge_config())
                .collect(),
            runtime: config.runtime.clone(),
        })
    }

    /// The bound addresses by listener name (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|l| {
                let addr = l.socket.get_ref().local_addr().ok()?;
                Some((l.name.clone(), addr))
            })
            .chain(
                self.quic_listeners
                    .iter()
                    .filter_map(|l| Some((l.name.clone(), l.local_addr()?))),
            )
            .collect()
    }

    /// Run on this thread, with up to `runtime.worker_threads - 1` more
    /// threads that join while the core is busy (see [`Scale`]), until
    /// `shutdown` completes, then shut down gracefully: the core closes
    /// every connection (5.0 clients get DISCONNECT 0x8B), sockets are
    /// flushed for up to `runtime.shutdown_timeout`. Returns the core's
    /// final metrics, or [`Error::BridgeFatal`] when a bridge gave up (the
    /// broker is shut down the same way first).
    pub fn run<F>(self, shutdown: F) -> Result<Metrics, Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let threads = match self.runtime.worker_threads {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let ex = Arc::new(Executor::new());
        let scale = Arc::new(Scale::default());
        let mut workers = Vec::new();
        for i in 1..threads {
            let ex = ex.clone();
            let scale = scale.clone();
            let handle = thread::Builder::new()
                .name(format!("sansmq-worker-{i}"))
                .spawn(move || scale.helper(&ex))
                .map_err(Error::Thread)?;
            workers.push(handle);
        }
        let helpers = (threads > 1).then(|| scale.clone());
        let result = async_io::block_on(ex.run(self.serve_with(ex.clone(), shutdown, helpers)));
        scale.close();
        for w in workers {
            let _ = w.join();
        }
        result
    }

    /// Serve on an executor the caller runs (for embedding). The core task
    /// is this future itself; accept loops and connections are spawned on `ex`.
    pub async fn serve<F>(self, ex: Arc<Executor<'static>>, shutdown: F) -> Result<Metrics, Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.serve_with(ex, shutdown, None).await
    }

    async fn serve_with<F>(
        self,
        ex: Arc<Executor<'static>>,
        shutdown: F,
        scale: Option<Arc<Scale>>,
    ) -> Result<Metrics, Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        log::bridges_configured(&self.bridges, &[BridgeTransport::Tls]);
        let node = Node::new(self.broker_config, self.bridges, Instant::now())?;
        // Read the normalized limits back from the core, never re-derive them.
        let limits = node.broker().config();
        let settings = ConnSettings {
            max_packet_size: limits.max_packet_size,
            linger: CLOSE_LINGER,
        };

        let (in_tx, in_rx) = async_channel::bounded(INPUT_CAPACITY);
        // Never sent on: it closes when the last connection task drops its clone.
        let (alive_tx, alive_rx) = async_channel::bounded::<()>(1);
        let next_id = Arc::new(AtomicU64::new(1));

        let mut tasks = Vec::new();
        for l in self.listeners {
            if let Ok(addr) = l.socket.get_ref().local_addr() {
                info!(listener = %l.name, %addr, "listening");
            }
            tasks.push(ex.spawn(accept_loop(
                l,
                ex.clone(),
                in_tx.clone(),
                alive_tx.clone(),
                next_id.clone(),
                settings,
            )));
        }
        // QUIC listeners end themselves once `quic_stop` closes and their
        // connections are gone (they hold `alive` clones meanwhile).
        let (quic_stop_tx, quic_stop_rx) = async_channel::bounded::<()>(1);
        for l in self.quic_listeners {
            if let Some(addr) = l.local_addr() {
                info!(listener = %l.name, %addr, "listening (QUIC)");
            }
            ex.spawn(quic::listener_task(
                l,
                ex.clone(),
                in_tx.clone(),
                alive_tx.clone(),
                next_id.clone(),
                settings,
                quic_stop_rx.clone(),
            ))
            .detach();
        }
        let trigger = {
            let tx = in_tx.clone();
            ex.spawn(async move {
                shutdown.await;
                let _ = tx.send(Input::Shutdown).await;
            })
        };
        drop(alive_tx);

        let mut core = CoreTask::new(node, ex.clone(), in_tx, scale);
        for (slot, q) in core.bridges.iter_mut().zip(self.quic_bridges) {
            slot.quic = q;
        }
        let (metrics, fatal) = core.run(in_rx).await;
        drop(quic_stop_tx);

        // Stop accepting (the accept loops hold `alive` clones), then give
        // the connection tasks time to flush their last bytes and close.
        for t in tasks {
            t.cancel().await;
        }
        trigger.cancel().await;
        let timeout = self.runtime.shutdown_timeout;
        let flushed = async {
            let _ = alive_rx.recv().await;
            true
        }
        .or(async {
            Timer::after(timeout).await;
            false
        })
        .await;
        if !flushed {
            warn!(
                ?timeout,
                "some connections had not flushed by the shutdown timeout; closing them"
            );
        }
        match fatal {
            Some((bridge, reason)) => Err(Error::BridgeFatal { bridge, reason }),
            None => Ok(metrics),
        }
    }
}

/// The runtime's handle on one bridge transport (dialing or open).
struct BridgeLink {
    generation: u64,
    tx: Sender<Outbound>,
    /// The transport task; dropping it cancels a dial in progress.
    task: Option<Task<()>>,
    up: bool,
    /// For log lines only.
    address: String,
}

/// The runtime's side of one bridge: its current link, for routing only.
struct BridgeSlot {
    name: String,
    next_generation: u64,
    link: Option<BridgeLink>,
    /// Its QUIC client setup, when its transports include QUIC.
    quic: Option<Arc<BridgeQuic>>,
}

struct CoreTask {
    node: Node,
    /// Open connections: write queues, queued bytes, what the logs need.
    conns: ConnTable<WriteHandle>,
    bridges: Vec<BridgeSlot>,
    ex: Arc<Executor<'static>>,
    to_core: Sender<Input>,
    /// The first bridge that gave up: (name, reason).
    fatal: Option<(String, String)>,
    drops: DropLog,
    /// The helper worker threads to call in when busy (`Server::run`).
    scale: Option<Arc<Scale>>,
    load: LoadMeter,
}

enum Wake {
    Input(Input),
    Timeout,
    ChannelClosed,
}

impl CoreTask {
    fn new(
        node: Node,
        ex: Arc<Executor<'static>>,
        to_core: Sender<Input>,
        scale: Option<Arc<Scale>>,
    ) -> Self {
        let bridges = (0..node.bridge_count())
            .map(|i| BridgeSlot {
                name: node
                    .bridge(BridgeId(i))
                    .map_or_else(|| format!("#{i}"), |b| b.name().to_owned()),
                next_generation: 0,
                link: None,
                quic: None,
            })
            .collect();
        Self {
            conns: ConnTable::new(node.broker().config()),
            node,
            bridges,
            ex,
            to_core,
            fatal: None,
            drops: DropLog::new(),
            scale,
            load: LoadMeter::new(Instant::now()),
        }
    }

    async fn run(mut self, rx: Receiver<Input>) -> (Metrics, Option<(String, String)>) {
        // (when the last batch was taken, its packets) for the load meter.
        let mut batch: Option<(Instant, usize)> = None;
        loop {
            self.drain(Instant::now());
            if let (Some(scale), Some((start, taken))) = (&self.scale, batch.take()) {
                // One more clock read per wake-up, only with helpers.
                let end = Instant::now();
                if let Some(busy) = self.load.record(taken, end - start, end) {
                    debug!(
                        busy,
                        "core load changed: helper worker threads {}",
                        if busy { "join" } else { "leave" }
                    );
                    scale.set(busy);
                }
            }
            if self.fatal.is_some() {
                return self.shutdown();
            }
            let wake = match rx.try_recv() {
                Ok(input) => Wake::Input(input),
                Err(TryRecvError::Closed) => Wake::ChannelClosed,
                // Nothing waiting: sleep until an input, the core's deadline
                // or the next drop log line.
                Err(TryRecvError::Empty) => match self.next_deadline() {
                    Some(deadline) => {
                        async { rx.recv().await.map_or(Wake::ChannelClosed, Wake::Input) }
                            .or(async {
                                Timer::at(deadline).await;
                                Wake::Timeout
                            })
                            .await
                    }
                    None => rx.recv().await.map_or(Wake::ChannelClosed, Wake::Input),
                },
            };
            match wake {
                Wake::Input(input) => {
                    let mut next = Some(input);
                    let mut taken = 0;
                    // One clock read per batch: inputs of one batch arrived
                    // within microseconds of each other.
                    let now = Instant::now();
                    while let Some(input) = next.take() {
                        taken += match &input {
                            Input::Packets { packets, .. } => packets.len(),
                            _ => 1,
                        };
                        if self.handle(input, now) {
                            return self.shutdown();
                        }
                        if taken < INPUT_BATCH {
                            next = rx.try_recv().ok();
                        }
                    }
                    batch = Some((now, taken));
                }
                Wake::Timeout => {}
                // Unreachable while `serve` holds a sender; stop cleanly anyway.
                Wake::ChannelClosed => return self.shutdown(),
            }
            // Checked after inputs too, so a steady stream of input cannot
            // delay keepalive or retry deadlines.
            let now = Instant::now();
            if self.node.poll_timeout().is_some_and(|d| d <= now) {
                self.node.handle_timeout(now);
            }
        }
    }

    /// The core's deadline, or earlier when drops wait to be logged.
    fn next_deadline(&self) -> Option<Instant> {
        let drops = self.drops.next_deadline(self.node.broker().metrics());
        match (self.node.poll_timeout(), drops) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn shutdown(mut self) -> (Metrics, Option<(String, String)>) {
        let now = Instant::now();
        self.node.shutdown(now);
        self.drain(now);
        // Bridge transports: flush what was queued, then close.
        for b in &mut self.bridges {
            if let Some(l) = b.link.take() {
                close_link(l);
            }
        }
        let m = self.node.broker().metrics().clone();
        let bridges = self.node.bridge_metrics();
        log::broker_stopped(
            &m,
            self.bridges
                .iter()
                .map(|b| b.name.as_str())
                .zip(bridges.iter()),
        );
        (m, self.fatal)
    }

    /// Feed one input to the core. Returns true on `Shutdown`.
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
                if let Some(l) = self.current_link(link) {
                    l.up = true;
                    self.node.handle_bridge_transport_up(link.id, now);
                }
            }
            Input::BridgeFailed { link, failure } => {
                if let Some(l) = self.current_link(link) {
                    let address = std::mem::take(&mut l.address);
                    let slot = &mut self.bridges[link.id.0];
                    slot.link = None;
                    warn!(bridge = %slot.name, %address, error = %failure, "bridge dial failed");
                    self.node
                        .handle_bridge_transport_failed(link.id, failure, now);
                }
            }
            Input::BridgeRead { link, mut bytes } => {
                if self.current_link(link).is_some() {
                    self.node.handle_bridge_read(link.id, &mut bytes, now);
                }
            }
            Input::BridgeDown { link } => {
                if let Some(l) = self.current_link(link) {
                    let address = std::mem::take(&mut l.address);
                    let slot = &mut self.bridges[link.id.0];
                    // Dropping the link closes its write queue; the task ends.
                    slot.link = None;
                    warn!(bridge = %slot.name, %address, "bridge transport closed by the remote or the network");
                    self.node.handle_bridge_transport_down(link.id, now);
                }
            }
            Input::Shutdown => return true,
        }
        false
    }

    /// The bridge's link if `link` is still its current one.
    fn current_link(&mut self, link: Link) -> Option<&mut BridgeLink> {
        self.bridges
            .get_mut(link.id.0)?
            .link
            .as_mut()
            .filter(|l| l.generation == link.generation)
    }

    fn dial(&mut self, id: BridgeId, transport: BridgeTransport, address: String, now: Instant) {
        let Some(slot) = self.bridges.get_mut(id.0) else {
            return;
        };
        // A new Dial replaces whatever link was left.
        if let Some(old) = slot.link.take() {
            close_link(old);
        }
        let quic = match transport {
            BridgeTransport::Quic => slot.quic.clone(),
            _ => None,
        };
        if transport != BridgeTransport::Tcp && quic.is_none() {
            let failure = TransportFailure::Error(format!(
                "the {transport} bridge transport is not available in this runtime"
            ));
            warn!(bridge = %slot.name, %address, error = %failure, "bridge dial failed");
            self.node.handle_bridge_transport_failed(id, failure, now);
            return;
        }
        slot.next_generation += 1;
        let link = Link {
            id,
            generation: slot.next_generation,
        };
        // Unbounded: the bridge's client bounds what it sends (inflight
        // window, offline cache), as the broker does for connections.
        let (tx, rx) = async_channel::unbounded();
        let task = match quic {
            Some(q) => self.ex.spawn(quic::quic_transport(
                link,
                address.clone(),
                q,
                self.to_core.clone(),
                rx,
            )),
            None => self.ex.spawn(tcp_transport(
                link,
                address.clone(),
                self.to_core.clone(),
                rx,
            )),
        };
        slot.link = Some(BridgeLink {
            generation: link.generation,
            tx,
            task: Some(task),
            up: false,
            address,
        });
    }

    fn on_bridge_event(&mut self, id: BridgeId, event: BridgeEvent, now: Instant) {
        let name = self
            .bridges
            .get(id.0)
            .map_or_else(|| format!("#{}", id.0), |b| b.name.clone());
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
                if let Some(l) = self.bridges.get_mut(id.0).and_then(|b| b.link.take()) {
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
    /// documents), until acting on them produced nothing more.
    fn drain(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.node.poll_transmit() {
                progressed = true;
                match t {
                    NodeTransmit::Connection(t) => self.deliver(t, now),
                    NodeTransmit::Bridge { id, data } => {
                        // No link: the core asked to close it, or it is
                        // gone and the core has been or is being told.
                        if let Some(l) = self.bridges.get(id.0).and_then(|b| b.link.as_ref()) {
                            let _ = l.tx.try_send(Outbound::Data(data));
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
        // Dropping the handle closes the write queue; its task ends.
        self.conns.forget_dead();
        self.drops.log(self.node.broker().metrics(), now);
    }

    fn deliver(&mut self, t: Transmit, now: Instant) {
        let broker = self.node.broker();
        // Unbounded queue, bounded by the byte count: never blocks the core
        // task. Refused means the write half is gone or going and its
        // `Closed` input is on the way.
        let queued = self.conns.queue(
            t.conn,
            t.data,
            || broker.connection_client_id(t.conn),
            |tx, data| tx.push(data),
        );
        if queued == Queued::OverBound {
            if let Some(tx) = self.conns.get(t.conn) {
                tx.abort();
            }
            self.node.handle_connection_closed(t.conn, now);
            self.conns.mark_dead(t.conn);
        }
    }

    fn on_event(&mut self, ev: Event) {
        // The log lines are shared with rt-std (rt_common::conns).
        self.conns.event(&ev);
        match ev {
            Event::CloseConnection { conn, .. } => {
                // After the final bytes already queued: the write half
                // flushes them, then closes.
                if let Some(tx) = self.conns.remove(conn) {
                    tx.close();
                }
            }
            // Flow control: the connection's read gate. A TCP read half
            // checks it before every read; a QUIC connection's forwarding
            // task tells its listener task, which stops reading that
            // connection's stream in the endpoint (QUIC flow control then
            // blocks the publisher) and holds back what it already read.
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

/// The extra worker threads, called in while the core is busy.
///
/// Every wake-up of a task on another thread costs a futex wake and a
/// context switch, and async-executor notifies a sleeping worker on every
/// task wake. At low and moderate rates that hand-off was the largest cost
/// per message (perf at 10k msg/s: 1.6x Mosquitto's CPU per message with
/// two threads, 1.2x with one, and a better p99). Under a flood one thread
/// is not enough (100 QoS 0 publishers into one subscriber: 0.1M msg/s
/// delivered with one thread, 0.7M with two). So the extra threads park
/// until the core reports that it is busy ([`LoadMeter`]), run the executor
/// while it stays busy, and park again once it has been calm for a while.
#[derive(Default)]
pub(crate) struct Scale {
    state: Mutex<ScaleState>,
    changed: Condvar,
}

#[derive(Default)]
struct ScaleState {
    busy: bool,
    closed: bool,
}

/// How often a helper running the executor checks whether it may park.
const HELPER_CHECK: Duration = Duration::from_millis(100);

impl Scale {
    fn lock(&self) -> MutexGuard<'_, ScaleState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, busy: bool) {
        self.lock().busy = busy;
        self.changed.notify_all();
    }

    /// The server stopped: helpers return.
    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// A helper thread's life: park while calm, run the executor while busy.
    fn helper(&self, ex: &Executor<'static>) {
        loop {
            {
                let mut s = self.lock();
                while !s.busy && !s.closed {
                    s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
                }
                if s.closed {
                    return;
                }
            }
            // Leaving `run` hands this thread's queued tasks back to the
            // executor, so nothing is stranded when it parks.
            async_io::block_on(ex.run(async {
                loop {
                    Timer::after(HELPER_CHECK).await;
                    let s = self.lock();
                    if !s.busy || s.closed {
                        return;
                    }
                }
            }));
        }
    }
}

/// Whether the core is busy, per window of `WINDOW`: from the size of its
/// input batches and the share of the window the core task spent working.
/// Measured on two cores (`trace` log "core load window"): at 20k msg/s
/// QoS 1, 8-26 packets per wake-up and 4-8% working; under a QoS 0 flood,
/// ~245 packets (the batch limit is 256) and 28-88%; a burst of 200
/// connects, 128 packets and ~0%. Busy from the first window with
/// `BUSY_AVG` packets per wake-up and `BUSY_SHARE_WITH_AVG` working, or
/// `BUSY_SHARE` working; calm again after `CALM_WINDOWS` windows in a row
/// below both `CALM_AVG` and `CALM_SHARE` (the hysteresis keeps helpers
/// from flapping).
struct LoadMeter {
    window_start: Instant,
    wakes: u32,
    packets: u32,
    working: Duration,
    busy: bool,
    calm_windows: u32,
}

impl LoadMeter {
    const WINDOW: Duration = Duration::from_millis(100);
    const BUSY_AVG: u32 = 128;
    const CALM_AVG: u32 = 64;
    /// Percents of the window.
    const BUSY_SHARE_WITH_AVG: u32 = 20;
    const BUSY_SHARE: u32 = 50;
    const CALM_SHARE: u32 = 20;
    const CALM_WINDOWS: u32 = 20;

    fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            wakes: 0,
            packets: 0,
            working: Duration::ZERO,
            busy: false,
            calm_windows: 0,
        }
    }

    /// One core wake-up that took `packets` and kept the core task
    /// working for `working`. `Some(busy)` when the verdict changed.
    fn record(&mut self, packets: usize, working: Duration, now: Instant) -> Option<bool> {
        self.wakes = self.wakes.saturating_add(1);
        self.packets = self
            .packets
            .saturating_add(u32::try_from(packets).unwrap_or(u32::MAX));
        self.working += working;
        let window = now.saturating_duration_since(self.window_start);
        if window < Self::WINDOW {
            return None;
        }
        let avg = self.packets / self.wakes.max(1);
        let share = u32::try_from(self.working.as_micros() * 100 / window.as_micros().max(1))
            .unwrap_or(u32::MAX);
        tracing::trace!(avg, share, busy = self.busy, "core load window");
        self.window_start = now;
        self.wakes = 0;
        self.packets = 0;
        self.working = Duration::ZERO;
        if !self.busy {
            if (avg >= Self::BUSY_AVG && share >= Self::BUSY_SHARE_WITH_AVG)
                || share >= Self::BUSY_SHARE
            {
                self.busy = true;
                self.calm_windows = 0;
                return Some(true);
            }
        } else if avg < Self::CALM_AVG && share < Self::CALM_SHARE {
            self.calm_windows += 1;
            if self.calm_windows >= Self::CALM_WINDOWS {
                self.busy = false;
                return Some(false);
            }
        } else {
            self.calm_windows = 0;
        }
        None
    }
}

/// Close a bridge link: a dial in progress is cancelled; an open transport
/// flushes what was queued, then closes.
fn close_link(mut l: BridgeLink) {
    if l.up {
        let _ = l.tx.try_send(Outbound::Close);
        if let Some(t) = l.task.take() {
            t.detach();
        }
    }
    // Not up: dropping the task cancels the dial.
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `windows` windows of `wakes` wake-ups, each taking `packets`
    /// and working `share` percent of the window; the verdict changes seen.
    fn feed(
        m: &mut LoadMeter,
        t: &mut Instant,
        windows: u32,
        wakes: u32,
        packets: usize,
        share: u32,
    ) -> Vec<bool> {
        let step = LoadMeter::WINDOW / wakes;
        let working = step * share / 100;
        let mut changes = Vec::new();
        for _ in 0..windows {
            for _ in 0..wakes {
                *t += step;
                changes.extend(m.record(packets, working, *t));
            }
        }
        changes
    }

    #[test]
    fn helpers_join_under_a_flood_and_leave_after_a_calm_stretch() {
        let mut t = Instant::now();
        let mut m = LoadMeter::new(t);
        // 20k msg/s QoS 1 as measured: ~15 packets per wake-up, 5% working.
        assert_eq!(feed(&mut m, &mut t, 50, 100, 15, 5), Vec::<bool>::new());
        // A burst of connects: big batches, next to no work. Still calm.
        assert_eq!(feed(&mut m, &mut t, 3, 20, 128, 1), Vec::<bool>::new());
        // A flood: full batches, the core working 40% of the time.
        assert_eq!(feed(&mut m, &mut t, 1, 40, 250, 40), vec![true]);
        // Flood windows where the core works less (a second thread helps)
        // do not send the helpers away while batches stay full.
        assert_eq!(feed(&mut m, &mut t, 30, 40, 250, 15), Vec::<bool>::new());
        // Calm again: they leave after CALM_WINDOWS calm windows, not before.
        let calm = LoadMeter::CALM_WINDOWS;
        assert_eq!(
            feed(&mut m, &mut t, calm - 1, 100, 10, 5),
            Vec::<bool>::new()
        );
        assert_eq!(feed(&mut m, &mut t, 1, 100, 10, 5), vec![false]);
        // A core busy most of the time with small batches counts as busy.
        assert_eq!(feed(&mut m, &mut t, 1, 100, 10, 60), vec![true]);
        // One busy window in a calm stretch restarts the count.
        assert_eq!(
            feed(&mut m, &mut t, calm - 1, 100, 10, 5),
            Vec::<bool>::new()
        );
        assert_eq!(feed(&mut m, &mut t, 1, 40, 250, 40), Vec::<bool>::new());
        assert_eq!(
            feed(&mut m, &mut t, calm - 1, 100, 10, 5),
            Vec::<bool>::new()
        );
        assert_eq!(feed(&mut m, &mut t, 1, 100, 10, 5), vec![false]);
    }

    #[test]
    fn a_parked_helper_runs_tasks_only_while_busy_and_returns_on_close() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let ex = Arc::new(Executor::<'static>::new());
        let scale = Arc::new(Scale::default());
        let helper = {
            let (ex, scale) = (ex.clone(), scale.clone());
            thread::spawn(move || scale.helper(&ex))
        };
        // Nobody runs the executor: a spawned task waits.
        let ran = Arc::new(AtomicUsize::new(0));
        let task = {
            let ran = ran.clone();
            ex.spawn(async move {
                ran.fetch_add(1, Ordering::SeqCst);
            })
        };
        thread::sleep(Duration::from_millis(50));
        assert_eq!(ran.load(Ordering::SeqCst), 0, "a parked helper ran a task");
        // Busy: the helper runs it.
        scale.set(true);
        async_io::block_on(task);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        scale.set(false);
        scale.close();
        helper.join().expect("helper thread");
    }
}
