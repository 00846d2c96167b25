//! [`Node`]: one [`Broker`] and its [`Bridge`]s behind one sans-IO
//! interface, for the runtimes and the simulator.
//!
//! Each bridge's local side is an ordinary MQTT 5.0 client of the broker
//! over an in-memory connection whose [`ConnectionId`] has
//! [`VIRTUAL_CONNECTION_BIT`] set; the runtime never uses those ids. The
//! Node shuttles bytes between the two until both are quiet after every
//! input, so the runtime only sees real connections and bridge transports.
//!
//! ## Call order
//! After any `handle_*`: drain [`Node::poll_transmit`] (write each to its
//! connection or bridge transport), then [`Node::poll_event`] (close
//! connections, dial or close bridge transports, exit on `Fatal`), then
//! sleep until [`Node::poll_timeout`] or the next input.
//!
//! ```
//! use std::time::Instant;
//! use mqtt_core::bridge::{BridgeConfig, BridgeEvent};
//! use mqtt_core::broker::BrokerConfig;
//! use mqtt_core::node::{Node, NodeEvent, NodeTransmit};
//!
//! let now = Instant::now(); // the runtime's clock; the core never reads one
//! let bridge = BridgeConfig {
//!     name: "cloud".into(),
//!     addresses: vec!["cloud.example:1883".into()],
//!     ..Default::default()
//! };
//! let mut node = Node::new(BrokerConfig::default(), vec![bridge], now)?;
//! let mut dials = 0;
//! // One turn of the runtime's loop:
//! while let Some(t) = node.poll_transmit() {
//!     match t {
//!         NodeTransmit::Connection(_t) => { /* write t.data to socket t.conn */ }
//!         NodeTransmit::Bridge { .. } => { /* write to that bridge's transport */ }
//!     }
//! }
//! while let Some(event) = node.poll_event() {
//!     if let NodeEvent::Bridge { event: BridgeEvent::Dial { .. }, .. } = event {
//!         dials += 1; // connect, then node.handle_bridge_transport_up(id, now)
//!     }
//! }
//! assert_eq!(dials, 1);
//! // Then sleep until node.poll_timeout() or a socket is ready, call the
//! // matching handle_* with the time, and go round again.
//! # Ok::<(), mqtt_core::bridge::BridgeConfigError>(())
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::bridge::{
    Bridge, BridgeConfig, BridgeConfigError, BridgeEvent, BridgeMetrics, TransportFailure,
};
use crate::broker::{Broker, BrokerConfig, ConnectionId, ConnectionInfo, Event, Message, Transmit};
use crate::codec::{Packet, Properties, QoS};

/// Connection ids with this bit are the Node's in-memory bridge links.
pub const VIRTUAL_CONNECTION_BIT: u64 = 1 << 63;

/// Rounds of shuttling per input before giving up (a livelock guard; a
/// quiet exchange needs a handful).
const MAX_SHUTTLE_ROUNDS: usize = 100_000;

/// Bridge gauges that change with every message (cache depth and bytes,
/// drops) reach `$SYS` at most this often; states and counters of
/// connections go out at once.
pub const SYS_GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// A bridge of this node: its index in the configuration list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BridgeId(pub usize);

/// Bytes to write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "the bytes must be written"]
pub enum NodeTransmit {
    /// To a client connection of the broker.
    Connection(Transmit),
    /// To the transport of a bridge (the one of its last `Dial`).
    Bridge { id: BridgeId, data: Bytes },
}

/// Something the runtime must act on or may log.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[must_use]
pub enum NodeEvent {
    Broker(Event),
    Bridge { id: BridgeId, event: BridgeEvent },
}

#[derive(Debug)]
struct Slot {
    bridge: Bridge,
    /// Last values published to `$SYS`, to publish on change only.
    sys_last: Vec<(&'static str, String)>,
}

/// A broker and its bridges. See the [module docs](self).
#[derive(Debug)]
pub struct Node {
    broker: Broker,
    slots: Vec<Slot>,
    out: VecDeque<NodeTransmit>,
    events: VecDeque<NodeEvent>,
    /// Times the shuttle hit `MAX_SHUTTLE_ROUNDS` (should stay 0).
    livelocks: u64,
    /// When changed gauges are published next (None: none changed).
    sys_gauges_due: Option<Instant>,
}

fn vconn(id: usize) -> ConnectionId {
    ConnectionId(VIRTUAL_CONNECTION_BIT | id as u64)
}

fn virtual_index(conn: ConnectionId) -> Option<usize> {
    (conn.0 & VIRTUAL_CONNECTION_BIT != 0)
        .then(|| usize::try_from(conn.0 & !VIRTUAL_CONNECTION_BIT).ok())
        .flatten()
}

impl Node {
    /// A broker with `bridges`, all started: their first `Dial` events wait
    /// in `poll_event`.
    pub fn new(
        broker: BrokerConfig,
        bridges: Vec<BridgeConfig>,
        now: Instant,
    ) -> Result<Self, BridgeConfigError> {
        let broker = Broker::new(broker, now);
        let slots = bridges
            .into_iter()
            .map(|c| {
                Ok(Slot {
                    bridge: Bridge::new(c, now)?,
                    sys_last: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut node = Self {
            broker,
            slots,
            out: VecDeque::new(),
            events: VecDeque::new(),
            livelocks: 0,
            sys_gauges_due: None,
        };
        for i in 0..node.slots.len() {
            node.open_local(i, now);
            node.slots[i].bridge.start(now);
        }
        node.shuttle(now);
        Ok(node)
    }

    // ----- accessors -------------------------------------------------------

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    pub fn bridge(&self, id: BridgeId) -> Option<&Bridge> {
        self.slots.get(id.0).map(|s| &s.bridge)
    }

    pub fn bridge_count(&self) -> usize {
        self.slots.len()
    }

    pub fn bridge_metrics(&self) -> Vec<BridgeMetrics> {
        self.slots.iter().map(|s| s.bridge.metrics()).collect()
    }

    /// Times one input did not settle (a bug if not 0).
    pub fn livelocks(&self) -> u64 {
        self.livelocks
    }

    // ----- broker connections ----------------------------------------------

    /// `conn` must not have [`VIRTUAL_CONNECTION_BIT`] set.
    pub fn handle_connection_opened(
        &mut self,
        conn: ConnectionId,
        info: ConnectionInfo,
        now: Instant,
    ) {
        if virtual_index(conn).is_some() {
            return;
        }
        self.broker.handle_connection_opened(conn, info, now);
        self.shuttle(now);
    }

    pub fn handle_read(&mut self, conn: ConnectionId, buf: &mut BytesMut, now: Instant) {
        if virtual_index(conn).is_some() {
            buf.clear();
            return;
        }
        self.broker.handle_read(conn, buf, now);
        self.shuttle(now);
    }

    pub fn handle_packet(&mut self, conn: ConnectionId, packet: Packet, now: Instant) {
        if virtual_index(conn).is_some() {
            return;
        }
        self.broker.handle_packet(conn, packet, now);
        self.shuttle(now);
    }

    pub fn handle_written(&mut self, conn: ConnectionId, n: usize, now: Instant) {
        if virtual_index(conn).is_some() {
            return;
        }
        self.broker.handle_written(conn, n, now);
        self.shuttle(now);
    }

    pub fn handle_connection_closed(&mut self, conn: ConnectionId, now: Instant) {
        if virtual_index(conn).is_some() {
            return;
        }
        self.broker.handle_connection_closed(conn, now);
        self.shuttle(now);
    }

    /// Publish as the broker itself.
    pub fn publish(&mut self, message: Message, now: Instant) {
        self.broker.publish(message, now);
        self.shuttle(now);
    }

    // ----- bridge transports -----------------------------------------------

    pub fn handle_bridge_transport_up(&mut self, id: BridgeId, now: Instant) {
        if let Some(s) = self.slots.get_mut(id.0) {
            s.bridge.handle_transport_up(now);
            self.shuttle(now);
        }
    }

    pub fn handle_bridge_transport_failed(
        &mut self,
        id: BridgeId,
        failure: TransportFailure,
        now: Instant,
    ) {
        if let Some(s) = self.slots.get_mut(id.0) {
            s.bridge.handle_transport_failed(failure, now);
            self.shuttle(now);
        }
    }

    pub fn handle_bridge_transport_down(&mut self, id: BridgeId, now: Instant) {
        if let Some(s) = self.slots.get_mut(id.0) {
            s.bridge.handle_transport_down(now);
            self.shuttle(now);
        }
    }

    pub fn handle_bridge_read(&mut self, id: BridgeId, buf: &mut BytesMut, now: Instant) {
        if let Some(s) = self.slots.get_mut(id.0) {
            s.bridge.handle_remote_read(buf, now);
            self.shuttle(now);
        } else {
            buf.clear();
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.broker.handle_timeout(now);
        for s in &mut self.slots {
            s.bridge.handle_timeout(now);
        }
        self.shuttle(now);
    }

    /// Shut down: every connected bridge sends DISCONNECT (0x00) to its
    /// remote and then emits [`BridgeEvent::CloseTransport`] (write the
    /// bridge bytes polled before it, then close: the DISCONNECT is among
    /// them); bridges still dialing abandon the dial; all end in
    /// [`BridgeState::Stopped`](crate::bridge::BridgeState::Stopped). Then
    /// the broker closes every client connection.
    pub fn shutdown(&mut self, now: Instant) {
        for s in &mut self.slots {
            s.bridge.shutdown(now);
        }
        self.shuttle(now);
        self.broker.shutdown(now);
        self.shuttle(now);
    }

    // ----- outputs ---------------------------------------------------------

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<NodeTransmit> {
        self.out.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// The minimum over the broker and every bridge.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.bridge.poll_timeout())
            .chain(self.broker.poll_timeout())
            .chain(self.sys_gauges_due)
            .min()
    }

    // ----- internals -------------------------------------------------------

    fn open_local(&mut self, i: usize, now: Instant) {
        self.broker.handle_connection_opened(
            vconn(i),
            ConnectionInfo {
                peer: None,
                listener: "bridge".into(),
                internal: true,
            },
            now,
        );
        self.slots[i].bridge.handle_local_up(now);
    }

    /// Move bytes between the bridges' local clients and the broker, and
    /// collect everything else, until nothing moves.
    fn shuttle(&mut self, now: Instant) {
        let mut reopened = vec![false; self.slots.len()];
        for _ in 0..MAX_SHUTTLE_ROUNDS {
            let mut progress = false;
            for i in 0..self.slots.len() {
                let id = BridgeId(i);
                while let Some(data) = self.slots[i].bridge.poll_local_transmit() {
                    progress = true;
                    let mut buf = BytesMut::from(&data[..]);
                    self.broker.handle_read(vconn(i), &mut buf, now);
                }
                while let Some(data) = self.slots[i].bridge.poll_remote_transmit() {
                    self.out.push_back(NodeTransmit::Bridge { id, data });
                }
                while let Some(event) = self.slots[i].bridge.poll_event() {
                    self.events.push_back(NodeEvent::Bridge { id, event });
                }
                if self.slots[i].bridge.take_local_dead() {
                    progress = true;
                    self.broker.handle_connection_closed(vconn(i), now);
                    self.reopen_local(i, &mut reopened, now);
                }
            }
            while let Some(t) = self.broker.poll_transmit() {
                match virtual_index(t.conn) {
                    Some(i) if i < self.slots.len() => {
                        progress = true;
                        let n = t.data.len();
                        let mut buf = BytesMut::from(&t.data[..]);
                        self.slots[i].bridge.handle_local_read(&mut buf, now);
                        self.broker.handle_written(t.conn, n, now);
                    }
                    Some(_) => {}
                    None => self.out.push_back(NodeTransmit::Connection(t)),
                }
            }
            while let Some(ev) = self.broker.poll_event() {
                match &ev {
                    Event::CloseConnection { conn, .. } => match virtual_index(*conn) {
                        Some(i) if i < self.slots.len() => {
                            progress = true;
                            self.reopen_local(i, &mut reopened, now);
                        }
                        Some(_) => {}
                        None => self.events.push_back(NodeEvent::Broker(ev)),
                    },
                    // A bridge's local side is bounded by the bridge's own
                    // inflight window: pausing it is not ours to do.
                    Event::PauseReading { conn } | Event::ResumeReading { conn }
                        if virtual_index(*conn).is_some() => {}
                    _ => self.events.push_back(NodeEvent::Broker(ev)),
                }
            }
            if !progress {
                progress = self.publish_sys(now);
            }
            if !progress {
                return;
            }
        }
        self.livelocks += 1;
    }

    /// The broker dropped a bridge's in-memory link (or the local client
    /// declared it dead): open a new one, at most once per input so a
    /// broker that refuses every connection (shutting down) cannot spin.
    fn reopen_local(&mut self, i: usize, reopened: &mut [bool], now: Instant) {
        self.slots[i].bridge.handle_local_down(now);
        if !reopened[i] {
            reopened[i] = true;
            self.open_local(i, now);
        }
    }

    /// Bridge metrics as retained `$SYS` messages, each on change: states
    /// and connection counters at once, gauges at most every
    /// [`SYS_GAUGE_INTERVAL`] (one retained publish per message forwarded
    /// would double the broker's work under load).
    fn publish_sys(&mut self, now: Instant) -> bool {
        let node = self.broker.config().node_name.clone();
        let flush_gauges = self.sys_gauges_due.is_some_and(|t| t <= now);
        if flush_gauges {
            self.sys_gauges_due = None;
        }
        let mut published = false;
        let mut gauges_pending = false;
        for i in 0..self.slots.len() {
            let m = self.slots[i].bridge.metrics();
            let dropped = m.dropped_cache_full + m.dropped_evicted + m.dropped_unsendable;
            // (key, value, is_gauge)
            let values: [(&'static str, String, bool); 7] = [
                ("state", m.state.name().to_owned(), false),
                ("connects", m.connects.to_string(), false),
                ("reconnects", m.reconnects.to_string(), false),
                ("failed_attempts", m.failed_attempts.to_string(), false),
                ("cache/depth", m.cache_depth.to_string(), true),
                ("cache/bytes", m.cache_bytes.to_string(), true),
                ("dropped", dropped.to_string(), true),
            ];
            let name = self.slots[i].bridge.name().to_owned();
            for (key, value, gauge) in values {
                let last = &mut self.slots[i].sys_last;
                let known = last.iter().position(|(k, _)| *k == key);
                if known.is_some_and(|p| last[p].1 == value) {
                    continue;
                }
                // The first value of each goes out at once.
                if gauge && known.is_some() && !flush_gauges {
                    gauges_pending = true;
                    continue;
                }
                match known {
                    Some(p) => last[p].1 = value.clone(),
                    None => last.push((key, value.clone())),
                }
                published = true;
                self.broker.publish(
                    Message {
                        topic: ByteString::from(format!(
                            "$SYS/brokers/{node}/bridges/{name}/{key}"
                        )),
                        payload: Bytes::from(value),
                        qos: QoS::AtMostOnce,
                        retain: true,
                        properties: Properties::default(),
                        publisher: None,
                        expires_at: None,
                    },
                    now,
                );
            }
        }
        if gauges_pending && self.sys_gauges_due.is_none() {
            self.sys_gauges_due = Some(now + SYS_GAUGE_INTERVAL);
        }
        published
    }
}
