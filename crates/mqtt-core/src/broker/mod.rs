//! The MQTT broker as a sans-IO state machine.
//!
//! [`Broker`] owns every protocol decision (sessions, subscriptions, QoS
//! flows, keepalive, wills, retained messages) and none of the I/O. A runtime
//! feeds it what happened and drains what it must do:
//!
//! ```text
//! handle_connection_opened / handle_read / handle_packet / handle_written /
//! handle_connection_closed / handle_timeout / shutdown      (inputs, with `now`)
//! poll_transmit -> poll_event -> poll_timeout              (outputs, in this order)
//! ```
//!
//! After any input, drain `poll_transmit` until `None`, then `poll_event`
//! until `None` (a `CloseConnection`'s final bytes, such as a DISCONNECT or a
//! refusing CONNACK, are queued as transmits before the event), then sleep
//! until `poll_timeout()` or the next input. Calling `handle_timeout` early or
//! twice is harmless.
//!
//! ```
//! use std::time::Instant;
//! use bytes::BytesMut;
//! use mqtt_core::broker::{Broker, BrokerConfig, ConnectionId, ConnectionInfo, Event};
//!
//! let start = Instant::now(); // the runtime reads the clock, the core never does
//! let mut broker = Broker::new(BrokerConfig::default(), start);
//! let conn = ConnectionId(1);
//! broker.handle_connection_opened(conn, ConnectionInfo::default(), start);
//! // A 3.1.1 CONNECT: clean session, keep alive 60 s, empty client id.
//! let mut rx = BytesMut::from(&b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"[..]);
//! broker.handle_read(conn, &mut rx, start);
//! while let Some(t) = broker.poll_transmit() {
//!     assert_eq!(&t.data[..], b"\x20\x02\x00\x00"); // CONNACK, accepted
//!     // write t.data to t.conn, then report it (backpressure):
//!     broker.handle_written(t.conn, t.data.len(), start);
//! }
//! while let Some(ev) = broker.poll_event() {
//!     if let Event::CloseConnection { conn, .. } = ev {
//!         let _ = conn; // close the socket after flushing
//!     }
//! }
//! // Sleep until poll_timeout() (or socket readiness), then:
//! let deadline = broker.poll_timeout().expect("keepalive armed");
//! broker.handle_timeout(deadline); // 90 s of silence: keepalive close
//! assert!(matches!(broker.poll_event(), Some(Event::ClientDisconnected { .. })));
//! ```
//!
//! Choices where the specs leave room (each cited where it is implemented):
//! - Overlapping subscriptions of one session are merged into one delivery
//!   with the highest QoS and every subscription identifier (5.0
//!   MQTT-3.3.4-2 / MQTT-3.3.4-4, 3.1.1 MQTT-3.3.5-1); shared subscriptions
//!   are delivered in addition, one member per group.
//! - Inbound QoS 2 uses "Method B": the message is routed when PUBLISH
//!   arrives and only its packet id is kept until PUBREL (4.3.3).
//! - Retained messages are not sent for shared subscriptions.

mod config;
mod metrics;
mod session;
mod timers;
mod types;

pub use config::BrokerConfig;
pub use metrics::{DropReason, LatencyHistogram, Metrics, LATENCY_BUCKETS};
pub use session::{
    BrokerState, Delivery, InflightMessage, InflightState, Message, PendingWill, RetainedMessage,
    SessionState, Subscription,
};
pub use types::{
    ConnectionId, ConnectionInfo, DisconnectReason, Event, ProtocolViolation, SharedStrategy,
    StorageEvent, TimeoutReason, TimerOwner, Transmit, RESERVED_CLIENT_ID_PREFIXES,
};

use core::net::SocketAddr;
use std::cell::Cell;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use rand_xoshiro::rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::codec::{
    decode, encode, encoded_len, ConnAck, Connect, DecodeError, Disconnect, Packet, PacketId,
    PacketType, Properties, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, RetainHandling,
    SubAck, Subscribe, UnsubAck, Unsubscribe, Will,
};
use crate::timer::TimerKind;
use crate::topic::{self, ParsedFilter, SubscriptionTrie};

use timers::{BrokerTimers, ConnDeadlines, ConnTimer, Due};
use types::qos_min;

/// Deterministic hashing (SipHash with fixed keys): iteration order depends
/// only on the inputs, so a seeded simulation replays exactly. Keys here are
/// client ids and connection ids; the trie keeps its flood-resistant hasher.
type DetHasher = BuildHasherDefault<DefaultHasher>;
type DetMap<K, V> = HashMap<K, V, DetHasher>;

/// Spare capacity of a connection's output buffer worth keeping after a
/// transmit; less is released.
const OUT_KEEP: usize = 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    AwaitingConnect,
    Connected,
}

/// Per-connection state that dies with the socket.
///
/// Kept small: an idle connection costs this box (its size is pinned by
/// `size_tests`). The listener name of its [`ConnectionInfo`] is not kept
/// (the broker never reads it), the peer only until CONNECT (for
/// `ClientConnected`), the keep alive limit is recomputed from `keep_alive`
/// when its timer fires, and the timer deadlines live here rather than in
/// a hash table.
#[derive(Debug)]
struct Connection {
    id: ConnectionId,
    /// From [`ConnectionInfo::peer`], until CONNECT. Boxed: 8 bytes
    /// instead of 32 in every idle connection.
    peer: Option<Box<SocketAddr>>,
    /// The armed connect timeout, keep alive and retry timers.
    deadlines: ConnDeadlines,
    client_id: ByteString,
    /// Encoded packets not yet handed to `poll_transmit`.
    out: BytesMut,
    last_packet: Instant,
    /// Bytes handed out by `poll_transmit` not yet reported by `handle_written`.
    unwritten: usize,
    /// Topic aliases in both directions (5.0); allocated by the first one,
    /// so connections without aliases pay a pointer.
    aliases: Option<Box<TopicAliases>>,
    /// Boxed: most connections have none, and a `Will` is ~0.5 KiB.
    will: Option<Box<Will>>,
    /// The client's Maximum Packet Size (5.0), else unlimited.
    client_max_packet_size: u32,
    /// Session Expiry Interval given in CONNECT (5.0 DISCONNECT may not
    /// raise it from 0, MQTT-3.14.2-?).
    connect_session_expiry: u32,
    /// Keep alive in force, seconds; 0 = off.
    keep_alive: u16,
    /// min(max_inflight, client's Receive Maximum).
    send_window: u16,
    alias_out_max: u16,
    state: ConnState,
    version: ProtocolVersion,
    /// From [`ConnectionInfo::internal`].
    internal: bool,
    in_ready: bool,
}

/// A connection's topic aliases (5.0 3.3.2.3.4). Topics are stored in
/// their own allocations, never as slices of a read buffer they would pin.
#[derive(Debug, Default)]
struct TopicAliases {
    /// Aliases the client set, at most `topic_alias_maximum` of them.
    inbound: DetMap<u16, ByteString>,
    /// Aliases we assigned, at most min(config, client's maximum).
    outbound: DetMap<ByteString, u16>,
}

impl Connection {
    fn pending_bytes(&self) -> usize {
        self.unwritten.saturating_add(self.out.len())
    }
}

/// A session plus the connection it is attached to.
#[derive(Debug)]
struct Session {
    state: SessionState,
    conn: Option<ConnectionId>,
}

/// Trie key: a session's own subscription, or a share group's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SubKey {
    Client(ByteString),
    Shared(ByteString),
}

#[derive(Debug)]
enum SubValue {
    Client(Subscription),
    Shared(SharedGroup),
}

/// Members of one share group on one filter.
#[derive(Debug, Default)]
struct SharedGroup {
    members: BTreeMap<ByteString, Subscription>,
    /// Round-robin cursor; a `Cell` because matching walks the trie by `&`.
    next: Cell<usize>,
}

/// One session a message goes to, before overlapping subscriptions merge.
#[derive(Debug, Clone)]
struct Target {
    client_id: ByteString,
    qos: QoS,
    retain_as_published: bool,
    subscription_identifier: Option<u32>,
}

/// The broker. See the module documentation for the call order.
pub struct Broker {
    config: BrokerConfig,
    rng: Xoshiro256PlusPlus,
    started_at: Instant,
    /// Boxed values: the tables keep spare slots (up to about half of
    /// them), which then cost a pointer each instead of a whole entry.
    connections: DetMap<ConnectionId, Box<Connection>>,
    sessions: DetMap<ByteString, Box<Session>>,
    trie: SubscriptionTrie<SubKey, SubValue>,
    retained: BTreeMap<ByteString, Arc<Message>>,
    timers: BrokerTimers,
    /// Connections with bytes in `out`, in the order they got them.
    ready: VecDeque<ConnectionId>,
    /// Last bytes of connections already closed.
    final_transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    metrics: Metrics,
    /// Reused routing buffer (no allocation per message once warm).
    scratch: Vec<Target>,
    shutting_down: bool,
    /// Flow control: a paused publisher connection -> the sessions holding
    /// it paused (never empty).
    paused: DetMap<ConnectionId, BTreeSet<ByteString>>,
    /// Flow control: a session over its high watermark -> the publisher
    /// connections it paused (never empty).
    pausing: DetMap<ByteString, BTreeSet<ConnectionId>>,
    /// The connection whose PUBLISH is being routed, if any.
    routing_from: Option<ConnectionId>,
}

impl core::fmt::Debug for Broker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Broker")
            .field("connections", &self.connections.len())
            .field("sessions", &self.sessions.len())
            .field("retained", &self.retained.len())
            .field("timers", &self.timers.len())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker with no connections, sessions or retained messages.
    pub fn new(config: BrokerConfig, now: Instant) -> Self {
        let config = config.normalized();
        let mut b = Self {
            rng: Xoshiro256PlusPlus::seed_from_u64(config.rng_seed),
            started_at: now,
            connections: DetMap::default(),
            sessions: DetMap::default(),
            trie: SubscriptionTrie::new(),
            retained: BTreeMap::new(),
            timers: BrokerTimers::default(),
            ready: VecDeque::new(),
            final_transmits: VecDeque::new(),
            events: VecDeque::new(),
            metrics: Metrics::default(),
            scratch: Vec::new(),
            shutting_down: false,
            paused: DetMap::default(),
            pausing: DetMap::default(),
            routing_from: None,
            config,
        };
        if let Some(iv) = b.config.sys_interval {
            b.timers.set_broker(TimerKind::SysInterval, now + iv);
        }
        b
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    // ------------------------------------------------------------------
    // Inputs
    // ------------------------------------------------------------------

    /// A transport connection was accepted. It has `connect_timeout` to send CONNECT.
    pub fn handle_connection_opened(
        &mut self,
        conn: ConnectionId,
        info: ConnectionInfo,
        now: Instant,
    ) {
        if self.connections.contains_key(&conn) {
            // A runtime bug (id reused while open): forget the old one quietly.
            self.close_connection(conn, DisconnectReason::TransportClosed, now, true);
        }
        self.metrics.connections_opened += 1;
        if self.shutting_down {
            self.events.push_back(Event::CloseConnection {
                conn,
                reason: DisconnectReason::ServerShuttingDown,
            });
            return;
        }
        if self.connections.len() >= self.config.max_connections {
            self.metrics.connections_refused += 1;
            self.events.push_back(Event::CloseConnection {
                conn,
                reason: DisconnectReason::ServerBusy(self.config.max_connections),
            });
            return;
        }
        self.connections.insert(
            conn,
            Box::new(Connection {
                id: conn,
                peer: info.peer.map(Box::new),
                deadlines: ConnDeadlines::default(),
                client_id: ByteString::new(),
                out: BytesMut::new(),
                last_packet: now,
                unwritten: 0,
                aliases: None,
                will: None,
                client_max_packet_size: u32::MAX,
                connect_session_expiry: 0,
                keep_alive: 0,
                send_window: self.config.max_inflight,
                alias_out_max: 0,
                state: ConnState::AwaitingConnect,
                version: ProtocolVersion::V3_1_1,
                internal: info.internal,
                in_ready: false,
            }),
        );
        self.metrics.connections += 1;
        if let Some(c) = self.connections.get_mut(&conn) {
            self.timers.set_conn(
                conn,
                &mut c.deadlines,
                ConnTimer::ConnectTimeout,
                now + self.config.connect_timeout,
            );
        }
    }

    /// Bytes arrived. Decodes every complete packet at the front of `buf`
    /// and leaves an incomplete one there; after an error (or once the
    /// connection is closed) `buf` is emptied, since what follows is noise.
    pub fn handle_read(&mut self, conn: ConnectionId, buf: &mut BytesMut, now: Instant) {
        loop {
            let Some(c) = self.connections.get(&conn) else {
                buf.clear();
                return;
            };
            if buf.is_empty() {
                return;
            }
            let before = buf.len();
            match decode(buf, c.version, self.config.max_packet_size) {
                Ok(Some(packet)) => {
                    let used = before.saturating_sub(buf.len());
                    self.metrics.bytes_received += used as u64;
                    self.dispatch(conn, packet, now);
                }
                Ok(None) => return,
                Err(e) => {
                    buf.clear();
                    self.on_decode_error(conn, e, now);
                    return;
                }
            }
        }
    }

    /// A packet decoded elsewhere (a connection task, a bridge, a test).
    pub fn handle_packet(&mut self, conn: ConnectionId, packet: Packet, now: Instant) {
        if self.connections.contains_key(&conn) {
            self.dispatch(conn, packet, now);
        }
    }

    /// The runtime wrote `n` bytes of what `poll_transmit` gave it for
    /// `conn`. Lowers the connection's pending bytes and, when it drops
    /// below `max_pending_bytes_per_connection`, sends queued messages.
    pub fn handle_written(&mut self, conn: ConnectionId, n: usize, now: Instant) {
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        let was_congested = c.pending_bytes() > self.config.max_pending_bytes_per_connection;
        c.unwritten = c.unwritten.saturating_sub(n);
        let congested = c.pending_bytes() > self.config.max_pending_bytes_per_connection;
        if was_congested && !congested && c.state == ConnState::Connected {
            let client_id = c.client_id.clone();
            self.pump(&client_id, now);
        }
    }

    /// The transport is gone (peer closed, reset, I/O error) and no
    /// DISCONNECT came: the will is published (MQTT-3.1.2-8 / 3.1.1 MQTT-3.1.2-10).
    pub fn handle_connection_closed(&mut self, conn: ConnectionId, now: Instant) {
        self.close_connection(conn, DisconnectReason::TransportClosed, now, true);
    }

    /// Fire every timer whose deadline is `<= now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((deadline, due)) = self.timers.pop_expired(now) {
            match due {
                Due::Connection(conn, kind) => {
                    if let Some(c) = self.connections.get_mut(&conn) {
                        BrokerTimers::fired_conn(&mut c.deadlines, kind);
                    }
                    self.on_connection_timer(conn, kind, deadline, now);
                }
                Due::Session(client_id, kind) => self.on_session_timer(&client_id, kind, now),
                Due::Broker(kind) => {
                    if kind == TimerKind::SysInterval {
                        self.publish_sys_stats(now);
                        if let Some(iv) = self.config.sys_interval {
                            self.timers.set_broker(TimerKind::SysInterval, now + iv);
                        }
                    }
                }
            }
        }
    }

    /// Close every connection: 5.0 clients get DISCONNECT 0x8B first.
    /// Connections opened afterwards are closed at once.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let mut ids: Vec<ConnectionId> = self.connections.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.close_connection(id, DisconnectReason::ServerShuttingDown, now, false);
        }
        self.timers.cancel_broker(TimerKind::SysInterval);
    }

    /// Publish a message as the broker itself (an embedded host, a bridge
    /// delivering from a remote). Retained if `message.retain`.
    pub fn publish(&mut self, mut message: Message, now: Instant) {
        message.qos = qos_min(message.qos, self.config.maximum_qos);
        if !self.config.retain_available {
            message.retain = false;
        }
        if topic::validate_topic_name(&message.topic).is_err() {
            return;
        }
        self.metrics.messages_received += 1;
        self.route(Arc::new(message), now);
    }

    // ------------------------------------------------------------------
    // Outputs
    // ------------------------------------------------------------------

    /// Bytes to write: everything queued for one connection, coalesced.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.final_transmits.pop_front() {
            self.metrics.bytes_sent += t.data.len() as u64;
            return Some(t);
        }
        while let Some(id) = self.ready.pop_front() {
            let Some(c) = self.connections.get_mut(&id) else {
                continue;
            };
            c.in_ready = false;
            if c.out.is_empty() {
                continue;
            }
            let data = c.out.split().freeze();
            if c.out.capacity() < OUT_KEEP {
                // Too little left to reuse: do not let the rest keep the
                // allocation (and its shared header) alive while idle.
                c.out = BytesMut::new();
            }
            c.unwritten = c.unwritten.saturating_add(data.len());
            self.metrics.bytes_sent += data.len() as u64;
            return Some(Transmit { conn: id, data });
        }
        None
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest deadline over every timer; `handle_timeout` is due then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Which timer `poll_timeout` is for.
    pub fn last_timeout_reason(&self) -> Option<TimeoutReason> {
        self.timers
            .next()
            .map(|(deadline, owner, kind)| TimeoutReason {
                deadline,
                owner,
                kind,
            })
    }

    // ------------------------------------------------------------------
    // State for persistence and inspection
    // ------------------------------------------------------------------

    pub fn session_state(&self, client_id: &str) -> Option<&SessionState> {
        self.sessions.get(client_id).map(|s| &s.state)
    }

    /// The client identifier of a connection, once its CONNECT was accepted.
    pub fn connection_client_id(&self, conn: ConnectionId) -> Option<&ByteString> {
        self.connections
            .get(&conn)
            .filter(|c| c.state == ConnState::Connected)
            .map(|c| &c.client_id)
    }

    /// The connection a session is attached to.
    pub fn session_connection(&self, client_id: &str) -> Option<ConnectionId> {
        self.sessions.get(client_id).and_then(|s| s.conn)
    }

    pub fn retained_message(&self, topic: &str) -> Option<&Arc<Message>> {
        self.retained.get(topic)
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Every session and retained message, sorted by client id / topic.
    pub fn export(&self) -> BrokerState {
        let mut sessions: Vec<SessionState> =
            self.sessions.values().map(|s| s.state.clone()).collect();
        sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        BrokerState {
            sessions,
            retained: self.retained.values().cloned().collect(),
        }
    }

    /// Load exported state into this broker. Sessions come back
    /// disconnected: their expiry runs from `disconnected_at` (or `now`),
    /// and pending wills fire at their `publish_at`. Existing sessions with
    /// the same client id are replaced (their connections closed).
    pub fn restore(&mut self, state: BrokerState, now: Instant) {
        for mut s in state.sessions {
            let client_id = s.client_id.clone();
            if let Some(conn) = self.session_connection(&client_id) {
                self.close_connection(conn, DisconnectReason::ServerShuttingDown, now, false);
            }
            self.end_session(&client_id, false);
            let disconnected_at = *s.disconnected_at.get_or_insert(now);
            for (filter, sub) in &s.subscriptions {
                self.trie_add(&client_id, filter, *sub);
            }
            self.metrics.subscriptions += s.subscriptions.len() as u64;
            if let Some(w) = &s.pending_will {
                self.timers
                    .set_session(client_id.clone(), TimerKind::WillDelay, w.publish_at);
            }
            if s.session_expiry_interval != u32::MAX {
                self.timers.set_session(
                    client_id.clone(),
                    TimerKind::SessionExpiry,
                    disconnected_at + secs(s.session_expiry_interval),
                );
            }
            if let Some(oldest) = s.awaiting_rel.values().min() {
                self.timers.set_session(
                    client_id.clone(),
                    TimerKind::AwaitRel,
                    *oldest + self.config.await_rel_timeout,
                );
            }
            self.metrics.sessions += 1;
            self.sessions.insert(
                client_id,
                Box::new(Session {
                    state: s,
                    conn: None,
                }),
            );
        }
        for m in state.retained {
            if self.retained.insert(m.topic.clone(), m).is_none() {
                self.metrics.retained_messages += 1;
            }
        }
    }

    // ------------------------------------------------------------------
    // Packet dispatch
    // ------------------------------------------------------------------

    fn dispatch(&mut self, conn: ConnectionId, packet: Packet, now: Instant) {
        let ptype = packet.packet_type();
        self.metrics.count_in(ptype);
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        // Any control packet resets keepalive (MQTT-3.1.2-22 / 5.0 3.1.2.10).
        c.last_packet = now;
        let state = c.state;
        match (state, packet) {
            (ConnState::AwaitingConnect, Packet::Connect(connect)) => {
                self.on_connect(conn, connect, now)
            }
            (ConnState::AwaitingConnect, p) => {
                // MQTT-3.1.0-1: the first packet must be CONNECT.
                self.close_connection(
                    conn,
                    DisconnectReason::ProtocolError(ProtocolViolation::FirstPacketNotConnect(
                        p.packet_type(),
                    )),
                    now,
                    false,
                );
            }
            (ConnState::Connected, Packet::Connect(_)) => {
                // MQTT-3.1.0-2: a second CONNECT is a protocol error.
                self.protocol_error(conn, ProtocolViolation::SecondConnect, now);
            }
            (ConnState::Connected, Packet::Publish(p)) => self.on_publish(conn, p, now),
            (ConnState::Connected, Packet::PubAck(r)) => self.on_puback(conn, r, now),
            (ConnState::Connected, Packet::PubRec(r)) => self.on_pubrec(conn, r, now),
            (ConnState::Connected, Packet::PubRel(r)) => self.on_pubrel(conn, r, now),
            (ConnState::Connected, Packet::PubComp(r)) => self.on_pubcomp(conn, r, now),
            (ConnState::Connected, Packet::Subscribe(s)) => self.on_subscribe(conn, s, now),
            (ConnState::Connected, Packet::Unsubscribe(u)) => self.on_unsubscribe(conn, u, now),
            (ConnState::Connected, Packet::PingReq) => {
                // MQTT-3.12.4-1: answer PINGREQ with PINGRESP.
                self.send(conn, &Packet::PingResp);
            }
            (ConnState::Connected, Packet::Disconnect(d)) => self.on_disconnect(conn, d, now),
            (ConnState::Connected, Packet::Auth(_)) => {
                // 5.0 4.12: AUTH is only valid after a CONNECT with an
                // Authentication Method, which we refuse (0x8C) for now.
                self.protocol_error(conn, ProtocolViolation::UnexpectedAuth, now)
            }
            (
                ConnState::Connected,
                p @ (Packet::ConnAck(_)
                | Packet::SubAck(_)
                | Packet::UnsubAck(_)
                | Packet::PingResp),
            ) => self.protocol_error(
                conn,
                ProtocolViolation::ServerOnlyPacket(p.packet_type()),
                now,
            ),
        }
        // A client that keeps sending while never reading would grow `out`
        // without bound (acks are not optional): cut it at twice the limit.
        if let Some(c) = self.connections.get(&conn) {
            let limit = self
                .config
                .max_pending_bytes_per_connection
                .saturating_mul(2);
            if c.pending_bytes() > limit {
                let pending = c.pending_bytes();
                self.close_connection(
                    conn,
                    DisconnectReason::SlowConsumer { pending, limit },
                    now,
                    false,
                );
            }
        }
    }

    fn on_decode_error(&mut self, conn: ConnectionId, e: DecodeError, now: Instant) {
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        if c.state == ConnState::AwaitingConnect {
            if let DecodeError::UnsupportedProtocolLevel(_) = e {
                // 3.1.1 MQTT-3.1.2-2: CONNACK 0x01 then close; the client's
                // version is unknown, so answer in the 3.1.1 format.
                c.version = ProtocolVersion::V3_1_1;
                self.send(
                    conn,
                    &Packet::ConnAck(ConnAck {
                        session_present: false,
                        reason_code: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                        properties: Properties::default(),
                    }),
                );
            }
        }
        self.metrics.protocol_errors += 1;
        let reason = match e {
            DecodeError::PacketTooLarge { size, max } => {
                DisconnectReason::PacketTooLarge { size, max }
            }
            e => DisconnectReason::MalformedPacket(e),
        };
        self.close_connection(conn, reason, now, false);
    }

    fn protocol_error(&mut self, conn: ConnectionId, v: ProtocolViolation, now: Instant) {
        self.metrics.protocol_errors += 1;
        self.close_connection(conn, DisconnectReason::ProtocolError(v), now, false);
    }

    // ------------------------------------------------------------------
    // CONNECT
    // ------------------------------------------------------------------

    fn refuse_connect(
        &mut self,
        conn: ConnectionId,
        reason_code: ReasonCode,
        detail: &'static str,
        now: Instant,
    ) {
        let is_v5 = self
            .connections
            .get(&conn)
            .is_some_and(|c| c.version.is_v5());
        let mut properties = Properties::default();
        if is_v5 {
            properties.reason_string = Some(ByteString::from_static(detail));
        }
        // MQTT-3.2.2-6 (3.1.1 MQTT-3.2.2-4): session present 0 with an error code.
        self.send(
            conn,
            &Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code,
                properties,
            }),
        );
        self.close_connection(
            conn,
            DisconnectReason::ConnectRefused {
                reason_code,
                detail,
            },
            now,
            false,
        );
    }

    fn on_connect(&mut self, conn: ConnectionId, connect: Connect, now: Instant) {
        let version = connect.protocol_version;
        let cfg = &self.config;
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        c.version = version;
        let props = &connect.properties;

        // 5.0 AUTH methods: none supported yet (4.12: CONNACK 0x8C).
        if version.is_v5() && props.authentication_method.is_some() {
            return self.refuse_connect(
                conn,
                ReasonCode::BAD_AUTHENTICATION_METHOD,
                "no authentication method is supported",
                now,
            );
        }

        // Client identifier rules.
        let mut assigned = false;
        let client_id: ByteString = if connect.client_id.is_empty() {
            match version {
                // 5.0 3.1.3.1: assign one and return it.
                ProtocolVersion::V5 => {
                    assigned = true;
                    self.assign_client_id()
                }
                // MQTT-3.1.3-8: empty id with Clean Session 0 is refused (0x02);
                // MQTT-3.1.3-6/-7: with Clean Session 1 we assign one internally.
                ProtocolVersion::V3_1_1 if connect.clean_start => self.assign_client_id(),
                _ => {
                    return self.refuse_connect(
                        conn,
                        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                        "empty client identifier",
                        now,
                    )
                }
            }
        } else {
            let len = connect.client_id.len();
            // MQTT 3.1 limits client ids to 1..=23 bytes.
            let max = if version == ProtocolVersion::V3_1 {
                23
            } else {
                cfg.max_client_id_len
            };
            if len > max {
                return self.refuse_connect(
                    conn,
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    "client identifier too long",
                    now,
                );
            }
            if !c.internal
                && RESERVED_CLIENT_ID_PREFIXES
                    .iter()
                    .any(|p| connect.client_id.starts_with(p))
            {
                return self.refuse_connect(
                    conn,
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    "client identifier reserved for the broker's own sessions",
                    now,
                );
            }
            // Its own allocation: a slice would pin the whole read buffer
            // the CONNECT came in for as long as the session lives.
            ByteString::from(&*connect.client_id)
        };
        let cfg = &self.config;

        // Will checks (5.0 MQTT-3.2.2-12 QoS, MQTT-3.2.2-13 retain).
        if let Some(w) = &connect.will {
            if topic::validate_topic_name(&w.topic).is_err()
                || topic::check_level_count(&w.topic, cfg.max_topic_levels).is_err()
            {
                return self.refuse_connect(
                    conn,
                    ReasonCode::TOPIC_NAME_INVALID,
                    "invalid will topic",
                    now,
                );
            }
            if version.is_v5() && w.qos > cfg.maximum_qos {
                return self.refuse_connect(
                    conn,
                    ReasonCode::QOS_NOT_SUPPORTED,
                    "will QoS above the maximum QoS",
                    now,
                );
            }
            if version.is_v5() && w.retain && !cfg.retain_available {
                return self.refuse_connect(
                    conn,
                    ReasonCode::RETAIN_NOT_SUPPORTED,
                    "retain is not available",
                    now,
                );
            }
        }

        // Session expiry.
        let (session_expiry, expiry_capped) = if version.is_v5() {
            let asked = props.session_expiry_interval.unwrap_or(0);
            let granted = asked.min(cfg.max_session_expiry_interval);
            (granted, granted != asked)
        } else if connect.clean_start {
            (0, false)
        } else {
            let e = cfg.v3_session_expiry.map_or(u32::MAX, |d| {
                u32::try_from(d.as_secs()).unwrap_or(u32::MAX - 1)
            });
            (e, false)
        };

        // Keep alive (5.0 Server Keep Alive, 3.2.2.3.14).
        let mut keep_alive = connect.keep_alive;
        let mut server_keep_alive = None;
        if version.is_v5()
            && cfg.max_keepalive < u16::MAX
            && (keep_alive == 0 || keep_alive > cfg.max_keepalive)
        {
            keep_alive = cfg.max_keepalive;
            server_keep_alive = Some(keep_alive);
        }
        let keep_alive_limit = keep_alive_limit(keep_alive, cfg.keepalive_multiplier);

        if !self.sessions.contains_key(&client_id) && self.sessions.len() >= cfg.max_sessions {
            return self.refuse_connect(
                conn,
                ReasonCode::QUOTA_EXCEEDED,
                "session limit reached",
                now,
            );
        }

        // Session takeover (MQTT-3.1.4-3; 3.1.1 MQTT-3.1.4-2).
        if let Some(old) = self.sessions.get(&client_id).and_then(|s| s.conn) {
            if old != conn {
                self.close_connection(
                    old,
                    DisconnectReason::SessionTakenOver { by: conn },
                    now,
                    false,
                );
            }
        }

        // Clean start / resume (MQTT-3.2.2-2/-3; 3.1.1 MQTT-3.2.2-1/-2).
        let session_present = if connect.clean_start {
            self.end_session(&client_id, false);
            false
        } else {
            self.sessions.contains_key(&client_id)
        };
        let session = self.sessions.entry(client_id.clone()).or_insert_with(|| {
            Box::new(Session {
                state: SessionState::new(client_id.clone(), version),
                conn: None,
            })
        });
        if !session_present {
            self.metrics.sessions += 1;
        }
        session.conn = Some(conn);
        session.state.protocol_version = version;
        session.state.session_expiry_interval = session_expiry;
        session.state.disconnected_at = None;
        // MQTT-3.1.3-9 (5.0): a new connection before the will delay elapses
        // means the pending will is not sent.
        session.state.pending_will = None;
        self.timers.cancel_session(&client_id, TimerKind::WillDelay);
        self.timers
            .cancel_session(&client_id, TimerKind::SessionExpiry);

        let cfg = &self.config;
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        c.state = ConnState::Connected;
        c.client_id = client_id.clone();
        c.keep_alive = keep_alive;
        c.last_packet = now;
        c.connect_session_expiry = session_expiry;
        c.will = connect.will.map(|w| Box::new(unshare_will(w)));
        if version.is_v5() {
            // MQTT-3.3.4-9: never more unacknowledged QoS 1/2 than the client's Receive Maximum.
            let rm = props.receive_maximum.unwrap_or(u16::MAX);
            c.send_window = cfg.max_inflight.min(rm);
            c.client_max_packet_size = props.maximum_packet_size.unwrap_or(u32::MAX);
            c.alias_out_max = props
                .topic_alias_maximum
                .unwrap_or(0)
                .min(cfg.outbound_topic_alias_maximum);
        }
        self.timers
            .cancel_conn(conn, &mut c.deadlines, ConnTimer::ConnectTimeout);
        if let Some(limit) = keep_alive_limit {
            self.timers
                .set_conn(conn, &mut c.deadlines, ConnTimer::KeepAlive, now + limit);
        }

        let mut properties = Properties::default();
        if version.is_v5() {
            if assigned {
                properties.assigned_client_identifier = Some(client_id.clone());
            }
            properties.server_keep_alive = server_keep_alive;
            if expiry_capped {
                properties.session_expiry_interval = Some(session_expiry);
            }
            let rm = cfg.inbound_receive_maximum();
            if rm < u16::MAX {
                properties.receive_maximum = Some(rm);
            }
            properties.maximum_packet_size = Some(cfg.max_packet_size);
            if cfg.topic_alias_maximum > 0 {
                properties.topic_alias_maximum = Some(cfg.topic_alias_maximum);
            }
            if cfg.maximum_qos < QoS::ExactlyOnce {
                properties.maximum_qos = Some(cfg.maximum_qos);
            }
            if !cfg.retain_available {
                properties.retain_available = Some(false);
            }
            if !cfg.wildcard_subscription_available {
                properties.wildcard_subscription_available = Some(false);
            }
            if !cfg.subscription_identifier_available {
                properties.subscription_identifier_available = Some(false);
            }
            if !cfg.shared_subscription_available {
                properties.shared_subscription_available = Some(false);
            }
        }
        let peer = c.peer.take().map(|p| *p);
        self.send(
            conn,
            &Packet::ConnAck(ConnAck {
                session_present,
                reason_code: ReasonCode::SUCCESS,
                properties,
            }),
        );
        self.metrics.clients_connected += 1;
        self.events.push_back(Event::ClientConnected {
            conn,
            client_id: client_id.clone(),
            version,
            keep_alive,
            clean_start: connect.clean_start,
            session_present,
            peer,
        });
        self.storage(StorageEvent::SessionChanged {
            client_id: client_id.clone(),
        });
        if self.config.sys_events {
            let json = format!(
                "{{\"clientid\":{},\"proto_ver\":{},\"keepalive\":{},\"clean_start\":{},\"session_present\":{},\"peer\":{}}}",
                json_str(&client_id),
                version.level(),
                keep_alive,
                connect.clean_start,
                session_present,
                peer.map_or_else(|| "null".to_owned(), |p| json_str(&p.to_string()))
            );
            self.publish_sys_event(&client_id, "connected", json, now);
        }
        // MQTT-4.4.0-1: resend unacknowledged PUBLISH (DUP) and PUBREL on resume.
        if session_present {
            self.resend_inflight(&client_id, now, |_| true);
        }
        self.pump(&client_id, now);
    }

    fn assign_client_id(&mut self) -> ByteString {
        loop {
            let id = format!("sansmq-{:016x}", self.rng.next_u64());
            if !self.sessions.contains_key(id.as_str()) {
                return ByteString::from(id);
            }
        }
    }

    // ------------------------------------------------------------------
    // DISCONNECT and connection end
    // ------------------------------------------------------------------

    fn on_disconnect(&mut self, conn: ConnectionId, d: Disconnect, now: Instant) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        if c.version.is_v5() {
            if let Some(e) = d.properties.session_expiry_interval {
                // MQTT-3.14.2-? : 0 in CONNECT cannot become non-zero at DISCONNECT.
                if c.connect_session_expiry == 0 && e != 0 {
                    return self.protocol_error(
                        conn,
                        ProtocolViolation::SessionExpiryAfterZero,
                        now,
                    );
                }
                let e = e.min(self.config.max_session_expiry_interval);
                let client_id = c.client_id.clone();
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.state.session_expiry_interval = e;
                }
            }
        }
        let reason_code = if c.version.is_v5() {
            d.reason_code
        } else {
            ReasonCode::NORMAL_DISCONNECTION
        };
        let will_published =
            reason_code == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE && c.will.is_some();
        self.close_connection(
            conn,
            DisconnectReason::ClientDisconnect {
                reason_code,
                will_published,
            },
            now,
            false,
        );
    }

    /// The one way a connection ends. `transport_gone`: the socket is
    /// already closed, so no DISCONNECT and no `CloseConnection` event.
    fn close_connection(
        &mut self,
        conn: ConnectionId,
        reason: DisconnectReason,
        now: Instant,
        transport_gone: bool,
    ) {
        // Server-initiated ends of a 5.0 session get a DISCONNECT with the
        // reason code and a reason string (MQTT-4.13.1-1 / section 4.13.2).
        let server_initiated = !matches!(
            reason,
            DisconnectReason::ClientDisconnect { .. }
                | DisconnectReason::TransportClosed
                | DisconnectReason::ConnectRefused { .. }
        );
        if let Some(c) = self.connections.get(&conn) {
            if !transport_gone
                && server_initiated
                && c.state == ConnState::Connected
                && c.version.is_v5()
            {
                let reason_code = reason.reason_code();
                let mut packet = Packet::Disconnect(Disconnect {
                    reason_code,
                    properties: Properties {
                        reason_string: Some(ByteString::from(reason.to_string())),
                        ..Properties::default()
                    },
                });
                // MQTT-3.1.2-24: drop the reason string rather than exceed
                // the client's Maximum Packet Size.
                let too_big = encoded_len(&packet, c.version)
                    .map_or(true, |n| n > c.client_max_packet_size as usize);
                if too_big {
                    packet = Packet::Disconnect(Disconnect {
                        reason_code,
                        properties: Properties::default(),
                    });
                }
                self.send(conn, &packet);
            }
        }
        let Some(mut c) = self.connections.remove(&conn) else {
            return;
        };
        // Flow control: a paused publisher that goes is forgotten; a
        // session whose connection goes releases the publishers it paused.
        self.forget_paused(conn, false);
        if c.state == ConnState::Connected {
            self.release_pauses(&c.client_id);
        }
        self.metrics.connections = self.metrics.connections.saturating_sub(1);
        self.metrics.connections_closed += 1;
        for t in [
            ConnTimer::ConnectTimeout,
            ConnTimer::KeepAlive,
            ConnTimer::Retry,
        ] {
            self.timers.cancel_conn(conn, &mut c.deadlines, t);
        }
        if !transport_gone && !c.out.is_empty() {
            self.final_transmits.push_back(Transmit {
                conn,
                data: c.out.split().freeze(),
            });
        }
        let was_connected = c.state == ConnState::Connected;
        if was_connected {
            self.metrics.clients_connected = self.metrics.clients_connected.saturating_sub(1);
            self.events.push_back(Event::ClientDisconnected {
                conn,
                client_id: c.client_id.clone(),
                reason: reason.clone(),
            });
        }
        let sys_reason = reason.to_string();
        let publishes_will = reason.publishes_will();
        if !transport_gone {
            self.events
                .push_back(Event::CloseConnection { conn, reason });
        }
        if was_connected {
            let client_id = c.client_id.clone();
            if self.config.sys_events {
                let json = format!(
                    "{{\"clientid\":{},\"reason\":{}}}",
                    json_str(&client_id),
                    json_str(&sys_reason)
                );
                self.publish_sys_event(&client_id, "disconnected", json, now);
            }
            let will = if publishes_will {
                c.will.take().map(|w| *w)
            } else {
                None
            };
            self.detach_session(&client_id, conn, will, now);
        }
    }

    /// The session's connection `conn` ended: schedule the will and the
    /// session's end.
    fn detach_session(
        &mut self,
        client_id: &ByteString,
        conn: ConnectionId,
        will: Option<Will>,
        now: Instant,
    ) {
        let Some(s) = self.sessions.get_mut(client_id) else {
            return;
        };
        if s.conn != Some(conn) {
            return;
        }
        s.conn = None;
        s.state.disconnected_at = Some(now);
        let expiry = s.state.session_expiry_interval;
        let mut publish_now = None;
        if let Some(w) = will {
            let delay = w.properties.will_delay_interval.unwrap_or(0);
            // 5.0 3.1.3.2.2: published when the will delay elapses or the
            // session ends, whichever is first.
            if delay == 0 || expiry == 0 {
                publish_now = Some(self.will_message(client_id, w, now));
            } else {
                let publish_at = now + secs(delay.min(expiry));
                let message = self.will_message(client_id, w, publish_at);
                let Some(s) = self.sessions.get_mut(client_id) else {
                    return;
                };
                s.state.pending_will = Some(Box::new(PendingWill {
                    message,
                    publish_at,
                }));
                self.timers
                    .set_session(client_id.clone(), TimerKind::WillDelay, publish_at);
            }
        }
        if expiry == 0 {
            self.end_session(client_id, true);
        } else {
            if expiry != u32::MAX {
                self.timers.set_session(
                    client_id.clone(),
                    TimerKind::SessionExpiry,
                    now + secs(expiry),
                );
            }
            self.storage(StorageEvent::SessionChanged {
                client_id: client_id.clone(),
            });
        }
        if let Some(m) = publish_now {
            self.metrics.wills_published += 1;
            self.route(Arc::new(m), now);
        }
    }

    /// The will as a message published at `at` (its expiry runs from then).
    fn will_message(&self, client_id: &ByteString, w: Will, at: Instant) -> Message {
        let mut properties = w.properties;
        properties.will_delay_interval = None;
        let expiry = properties.message_expiry_interval.take();
        Message {
            topic: w.topic,
            payload: w.payload,
            qos: qos_min(w.qos, self.config.maximum_qos),
            retain: w.retain && self.config.retain_available,
            properties,
            publisher: Some(client_id.clone()),
            expires_at: expiry.map(|e| at + secs(e)),
        }
    }

    /// Remove a session and everything it holds. `counted`: queued
    /// messages are counted as dropped.
    fn end_session(&mut self, client_id: &str, counted: bool) {
        let Some(s) = self.sessions.remove(client_id) else {
            return;
        };
        self.release_pauses(client_id);
        self.metrics.sessions = self.metrics.sessions.saturating_sub(1);
        for filter in s.state.subscriptions.keys() {
            self.trie_remove(&s.state.client_id, filter);
        }
        self.metrics.subscriptions = self
            .metrics
            .subscriptions
            .saturating_sub(s.state.subscriptions.len() as u64);
        if counted {
            for _ in 0..s.state.queue.len() {
                self.metrics.drop(DropReason::SessionEnded);
            }
        }
        for kind in [
            TimerKind::WillDelay,
            TimerKind::SessionExpiry,
            TimerKind::AwaitRel,
        ] {
            self.timers.cancel_session(&s.state.client_id, kind);
        }
        self.storage(StorageEvent::SessionRemoved {
            client_id: s.state.client_id,
        });
    }

    // ------------------------------------------------------------------
    // Timers
    // ------------------------------------------------------------------

    fn on_connection_timer(
        &mut self,
        conn: ConnectionId,
        kind: TimerKind,
        deadline: Instant,
        now: Instant,
    ) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        match kind {
            TimerKind::ConnectTimeout if c.state == ConnState::AwaitingConnect => {
                self.metrics.connect_timeouts += 1;
                let reason = DisconnectReason::ConnectTimeout(self.config.connect_timeout);
                self.close_connection(conn, reason, now, false);
            }
            TimerKind::KeepAlive => {
                let Some(limit) = keep_alive_limit(c.keep_alive, self.config.keepalive_multiplier)
                else {
                    return;
                };
                if self.paused.contains_key(&conn) {
                    // We stopped reading it: its silence is ours. Its keep
                    // alive runs again from now.
                    if let Some(c) = self.connections.get_mut(&conn) {
                        c.last_packet = now;
                        self.timers.set_conn(
                            conn,
                            &mut c.deadlines,
                            ConnTimer::KeepAlive,
                            now + limit,
                        );
                    }
                    return;
                }
                // The timer is armed lazily (packets only move `last_packet`),
                // so re-check against the true deadline.
                let true_deadline = c.last_packet + limit;
                if now >= true_deadline {
                    self.metrics.keepalive_timeouts += 1;
                    self.metrics
                        .keepalive_detection_latency
                        .record(now.saturating_duration_since(true_deadline));
                    let reason = DisconnectReason::KeepAliveTimeout {
                        keep_alive: c.keep_alive,
                        last_packet: c.last_packet,
                        deadline: true_deadline,
                    };
                    self.close_connection(conn, reason, now, false);
                } else {
                    let _ = deadline;
                    if let Some(c) = self.connections.get_mut(&conn) {
                        self.timers.set_conn(
                            conn,
                            &mut c.deadlines,
                            ConnTimer::KeepAlive,
                            true_deadline,
                        );
                    }
                }
            }
            TimerKind::Retry => {
                let Some(interval) = self.config.retry_interval else {
                    return;
                };
                let client_id = c.client_id.clone();
                self.resend_inflight(&client_id, now, |m| m.sent_at + interval <= now);
            }
            _ => {}
        }
    }

    fn on_session_timer(&mut self, client_id: &ByteString, kind: TimerKind, now: Instant) {
        match kind {
            TimerKind::WillDelay => {
                let Some(s) = self.sessions.get_mut(client_id) else {
                    return;
                };
                if s.conn.is_some() {
                    return;
                }
                if let Some(w) = s.state.pending_will.take() {
                    self.storage(StorageEvent::SessionChanged {
                        client_id: client_id.clone(),
                    });
                    self.metrics.wills_published += 1;
                    self.route(Arc::new(w.message), now);
                }
            }
            TimerKind::SessionExpiry => {
                let Some(s) = self.sessions.get_mut(client_id) else {
                    return;
                };
                if s.conn.is_some() {
                    return;
                }
                let will = s.state.pending_will.take();
                self.end_session(client_id, true);
                if let Some(w) = will {
                    self.metrics.wills_published += 1;
                    self.route(Arc::new(w.message), now);
                }
            }
            TimerKind::AwaitRel => {
                let timeout = self.config.await_rel_timeout;
                let Some(s) = self.sessions.get_mut(client_id) else {
                    return;
                };
                let before = s.state.awaiting_rel.len();
                s.state.awaiting_rel.retain(|_, at| *at + timeout > now);
                for _ in s.state.awaiting_rel.len()..before {
                    self.metrics.drop(DropReason::AwaitRelTimeout);
                }
                if let Some(oldest) = s.state.awaiting_rel.values().min() {
                    self.timers.set_session(
                        client_id.clone(),
                        TimerKind::AwaitRel,
                        *oldest + timeout,
                    );
                }
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------------
    // Sending
    // ------------------------------------------------------------------

    /// Encode `packet` onto the connection's output. False when the
    /// connection is gone or the packet cannot be encoded (our bug, counted
    /// as a packet-too-large drop rather than a panic).
    fn send(&mut self, conn: ConnectionId, packet: &Packet) -> bool {
        let Some(c) = self.connections.get_mut(&conn) else {
            return false;
        };
        queue_packet(c, packet, &mut self.metrics, &mut self.ready)
    }

    /// Resend inflight messages of a session that `pick` selects: PUBLISH
    /// with DUP (MQTT-3.3.1-1) or PUBREL. Rearms the 3.x retry timer.
    fn resend_inflight(
        &mut self,
        client_id: &str,
        now: Instant,
        pick: impl Fn(&InflightMessage) -> bool,
    ) {
        let Some(s) = self.sessions.get_mut(client_id) else {
            return;
        };
        let Some(conn) = s.conn else {
            return;
        };
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        let mut i = 0;
        while let Some(m) = s.state.inflight.get_mut(i) {
            if !pick(m) {
                i += 1;
                continue;
            }
            m.sent_at = now;
            let ok = match m.state {
                InflightState::AwaitingPubComp => queue_packet(
                    c,
                    &Packet::PubRel(PubResponse::new(m.packet_id)),
                    &mut self.metrics,
                    &mut self.ready,
                ),
                _ => {
                    self.metrics.messages_retransmitted += 1;
                    send_publish(
                        c,
                        &m.delivery,
                        Some(m.packet_id),
                        true,
                        now,
                        &mut self.metrics,
                        &mut self.ready,
                    )
                }
            };
            if ok {
                i += 1;
            } else {
                // Too large for the client now: behave as if delivered (MQTT-3.1.2-25).
                s.state.inflight.remove(i);
            }
        }
        arm_retry(&mut self.timers, &self.config, c, &s.state);
    }

    /// Send queued messages while the inflight window and the connection's
    /// pending bytes allow (strict FIFO).
    fn pump(&mut self, client_id: &str, now: Instant) {
        let Some(s) = self.sessions.get_mut(client_id) else {
            return;
        };
        let Some(conn) = s.conn else {
            return;
        };
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        let max_pending = self.config.max_pending_bytes_per_connection;
        let mut changed = false;
        loop {
            if c.pending_bytes() > max_pending {
                break;
            }
            let Some(front) = s.state.queue.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && s.state.inflight.len() >= usize::from(c.send_window)
            {
                break;
            }
            let Some(d) = s.state.queue.pop_front() else {
                break;
            };
            changed = true;
            s.state.queued_bytes = s.state.queued_bytes.saturating_sub(d.message.weight());
            if d.message.is_expired(now) {
                self.metrics.drop(DropReason::Expired);
                continue;
            }
            start_delivery(c, &mut s.state, d, now, &mut self.metrics, &mut self.ready);
        }
        arm_retry(&mut self.timers, &self.config, c, &s.state);
        let drained = s.state.queue.len() <= self.config.max_queued_messages / 2
            && s.state.queued_bytes <= self.config.max_queued_bytes / 2;
        if drained && self.pausing.contains_key(client_id) {
            self.release_pauses(client_id);
        }
        if changed {
            self.storage(StorageEvent::SessionChanged {
                client_id: ByteString::from(client_id),
            });
        }
    }

    /// Flow control: `client_id`'s (connected) queue is at or over its high
    /// watermark after a QoS 1/2 message went in. Pause the publisher being
    /// routed unless that could deadlock: never the session's own
    /// connection, nor a connection whose own session is over its
    /// watermark (it must keep reading to take acknowledgements). For the
    /// same reason the session's own connection, if paused, resumes now.
    fn over_high_watermark(&mut self, client_id: &str) {
        let own = self.sessions.get(client_id).and_then(|s| s.conn);
        if let Some(own) = own {
            self.forget_paused(own, true);
        }
        let Some(p) = self.routing_from else {
            return;
        };
        if own == Some(p) {
            return;
        }
        let Some(pc) = self.connections.get(&p) else {
            return;
        };
        if self.session_over_high(&pc.client_id) {
            return;
        }
        let client_id = ByteString::from(client_id);
        let holders = self.paused.entry(p).or_default();
        let first = holders.is_empty();
        holders.insert(client_id.clone());
        self.pausing.entry(client_id).or_default().insert(p);
        if first {
            self.metrics.flow_control_pauses += 1;
            self.events.push_back(Event::PauseReading { conn: p });
        }
    }

    /// Whether a connected session's queue is at or over its high watermark.
    fn session_over_high(&self, client_id: &str) -> bool {
        self.sessions.get(client_id).is_some_and(|s| {
            s.conn.is_some()
                && (s.state.queue.len() >= self.config.max_queued_messages
                    || s.state.queued_bytes >= self.config.max_queued_bytes)
        })
    }

    /// `conn` is no longer held paused by anyone; `resume`: tell the runtime.
    fn forget_paused(&mut self, conn: ConnectionId, resume: bool) {
        let Some(holders) = self.paused.remove(&conn) else {
            return;
        };
        for h in &holders {
            if let Some(set) = self.pausing.get_mut(h) {
                set.remove(&conn);
                if set.is_empty() {
                    self.pausing.remove(h);
                }
            }
        }
        if resume {
            self.events.push_back(Event::ResumeReading { conn });
        }
    }

    /// `client_id` drained (or is gone): every publisher it paused that no
    /// other session holds resumes.
    fn release_pauses(&mut self, client_id: &str) {
        let Some(publishers) = self.pausing.remove(client_id) else {
            return;
        };
        for p in publishers {
            let Some(holders) = self.paused.get_mut(&p) else {
                continue;
            };
            holders.remove(client_id);
            if holders.is_empty() {
                self.paused.remove(&p);
                self.events.push_back(Event::ResumeReading { conn: p });
            }
        }
    }

    /// Hand one message to one session: now, into its queue, or dropped.
    fn deliver(&mut self, client_id: &str, d: Delivery, now: Instant) {
        let Some(s) = self.sessions.get_mut(client_id) else {
            return;
        };
        if d.message.is_expired(now) {
            self.metrics.drop(DropReason::Expired);
            return;
        }
        let cfg = &self.config;
        let conn = s.conn.and_then(|id| self.connections.get_mut(&id));
        // Flow control: a connected session's queue may hold QoS 1/2 past
        // the high watermark up to the hard cap while the publisher pauses.
        let hard_msgs = cfg
            .max_queued_messages
            .saturating_add(cfg.flow_control_overshoot);
        let hard_bytes = cfg.max_queued_bytes.saturating_mul(2);
        let mut over_high = false;
        match conn {
            Some(c) => {
                let congested = c.pending_bytes() > cfg.max_pending_bytes_per_connection;
                if d.qos == QoS::AtMostOnce {
                    if congested {
                        self.metrics.drop(DropReason::SlowConsumer);
                        return;
                    }
                    if s.state.queue.is_empty() {
                        send_publish(c, &d, None, false, now, &mut self.metrics, &mut self.ready);
                        return;
                    }
                    // Older messages still wait in the queue (offline
                    // backlog, full inflight window): a QoS 0 may not
                    // overtake them (MQTT-4.6.0-6), so it queues too and
                    // `pump` sends it in turn without taking a window slot.
                    enqueue(
                        &mut s.state,
                        d,
                        cfg.max_queued_messages,
                        cfg.max_queued_bytes,
                        &mut self.metrics,
                    );
                } else if !congested
                    && s.state.queue.is_empty()
                    && s.state.inflight.len() < usize::from(c.send_window)
                {
                    start_delivery(c, &mut s.state, d, now, &mut self.metrics, &mut self.ready);
                    arm_retry(&mut self.timers, cfg, c, &s.state);
                } else {
                    enqueue(&mut s.state, d, hard_msgs, hard_bytes, &mut self.metrics);
                    over_high = s.state.queue.len() >= cfg.max_queued_messages
                        || s.state.queued_bytes >= cfg.max_queued_bytes;
                }
            }
            None => {
                if d.qos == QoS::AtMostOnce && !cfg.queue_qos0_messages {
                    self.metrics.drop(DropReason::OfflineQoS0);
                    return;
                }
                // Offline sessions keep the plain bound: a session nobody
                // reads must not stall its publishers.
                enqueue(
                    &mut s.state,
                    d,
                    cfg.max_queued_messages,
                    cfg.max_queued_bytes,
                    &mut self.metrics,
                );
            }
        }
        if over_high {
            self.over_high_watermark(client_id);
        }
        if self.config.storage_events {
            self.storage(StorageEvent::SessionChanged {
                client_id: ByteString::from(client_id),
            });
        }
    }

    // ------------------------------------------------------------------
    // PUBLISH in
    // ------------------------------------------------------------------

    fn on_publish(&mut self, conn: ConnectionId, p: Publish, now: Instant) {
        let cfg = &self.config;
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        let version = c.version;
        let mut topic_name = p.topic;
        // Topic aliases (5.0 3.3.2.3.4).
        if version.is_v5() {
            if let Some(alias) = p.properties.topic_alias {
                if alias == 0 || alias > cfg.topic_alias_maximum {
                    // MQTT-3.3.2-9 / -10.
                    let v = ProtocolViolation::TopicAliasInvalid {
                        alias,
                        maximum: cfg.topic_alias_maximum,
                    };
                    return self.protocol_error(conn, v, now);
                }
                if topic_name.is_empty() {
                    match c.aliases.as_ref().and_then(|a| a.inbound.get(&alias)) {
                        Some(t) => topic_name = t.clone(),
                        None => {
                            return self.protocol_error(
                                conn,
                                ProtocolViolation::TopicAliasUnknown(alias),
                                now,
                            )
                        }
                    }
                } else {
                    c.aliases
                        .get_or_insert_with(Box::default)
                        .inbound
                        .insert(alias, ByteString::from(&*topic_name));
                }
            }
        }
        if topic::validate_topic_name(&topic_name).is_err()
            || topic::check_level_count(&topic_name, cfg.max_topic_levels).is_err()
        {
            let v = ProtocolViolation::TopicNameInvalid(truncate(&topic_name));
            return self.protocol_error(conn, v, now);
        }
        let mut qos = p.qos;
        if qos > cfg.maximum_qos {
            if version.is_v5() {
                // MQTT-3.2.2-11.
                return self.protocol_error(
                    conn,
                    ProtocolViolation::QoSNotSupported(qos.as_u8()),
                    now,
                );
            }
            qos = cfg.maximum_qos;
        }
        let mut retain = p.retain;
        if retain && !cfg.retain_available {
            if version.is_v5() {
                // MQTT-3.2.2-14.
                return self.protocol_error(conn, ProtocolViolation::RetainNotSupported, now);
            }
            retain = false;
        }
        let client_id = c.client_id.clone();

        // Inbound QoS 2: a packet id awaiting PUBREL is a duplicate (4.3.3,
        // MQTT-4.3.3-9 (5.0) / 3.1.1 4.3.3 Method B): answer, do not route again.
        if p.qos == QoS::ExactlyOnce {
            let Some(pid) = p.packet_id else {
                return self.protocol_error(
                    conn,
                    ProtocolViolation::ServerOnlyPacket(PacketType::Publish),
                    now,
                );
            };
            let rm = cfg.inbound_receive_maximum();
            let Some(s) = self.sessions.get_mut(&client_id) else {
                return;
            };
            if s.state.awaiting_rel.contains_key(&pid) {
                self.send(conn, &Packet::PubRec(PubResponse::new(pid)));
                return;
            }
            if s.state.awaiting_rel.len() >= usize::from(rm) {
                // MQTT-3.3.4-8 (5.0): more than Receive Maximum unacknowledged -> 0x93.
                self.metrics.protocol_errors += 1;
                return self.close_connection(
                    conn,
                    DisconnectReason::ReceiveMaximumExceeded { maximum: rm },
                    now,
                    false,
                );
            }
            if s.state.awaiting_rel.is_empty() {
                self.timers.set_session(
                    client_id.clone(),
                    TimerKind::AwaitRel,
                    now + self.config.await_rel_timeout,
                );
            }
            s.state.awaiting_rel.insert(pid, now);
        }

        let mut properties = p.properties;
        let expiry = properties.message_expiry_interval.take();
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        let message = Message {
            topic: topic_name,
            payload: p.payload,
            qos,
            retain,
            properties,
            publisher: Some(client_id.clone()),
            expires_at: expiry.map(|e| now + secs(e)),
        };
        self.metrics.messages_received += 1;
        let is_sys = message.topic.starts_with("$SYS/") || &*message.topic == "$SYS";
        if is_sys {
            // Clients may not write the broker's own topics.
            self.metrics.drop(DropReason::SysTopicFromClient);
        } else {
            self.routing_from = Some(conn);
            self.route(Arc::new(message), now);
            self.routing_from = None;
        }
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(pid)) => {
                self.send(conn, &Packet::PubAck(PubResponse::new(pid)));
            }
            (QoS::ExactlyOnce, Some(pid)) => {
                self.send(conn, &Packet::PubRec(PubResponse::new(pid)));
                self.storage(StorageEvent::SessionChanged { client_id });
            }
            _ => {}
        }
    }

    fn on_pubrel(&mut self, conn: ConnectionId, r: PubResponse, _now: Instant) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        let v5 = c.version.is_v5();
        let client_id = c.client_id.clone();
        let known = self
            .sessions
            .get_mut(&client_id)
            .is_some_and(|s| s.state.awaiting_rel.remove(&r.packet_id).is_some());
        // MQTT-4.3.3-11 (5.0) / 3.1.1 MQTT-4.3.3-2: answer PUBREL with PUBCOMP.
        let mut comp = PubResponse::new(r.packet_id);
        if !known && v5 {
            comp.reason_code = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
        }
        self.send(conn, &Packet::PubComp(comp));
        if known {
            if let Some(s) = self.sessions.get(&client_id) {
                if s.state.awaiting_rel.is_empty() {
                    self.timers.cancel_session(&client_id, TimerKind::AwaitRel);
                }
            }
            self.storage(StorageEvent::SessionChanged { client_id });
        }
    }

    // ------------------------------------------------------------------
    // Acknowledgements of our PUBLISH
    // ------------------------------------------------------------------

    fn on_puback(&mut self, conn: ConnectionId, r: PubResponse, now: Instant) {
        self.complete_inflight(conn, r.packet_id, InflightState::AwaitingPubAck, now);
    }

    fn on_pubcomp(&mut self, conn: ConnectionId, r: PubResponse, now: Instant) {
        self.complete_inflight(conn, r.packet_id, InflightState::AwaitingPubComp, now);
    }

    fn complete_inflight(
        &mut self,
        conn: ConnectionId,
        pid: PacketId,
        expected: InflightState,
        now: Instant,
    ) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        let client_id = c.client_id.clone();
        let Some(s) = self.sessions.get_mut(&client_id) else {
            return;
        };
        let Some(i) = s.state.inflight_index(pid) else {
            return;
        };
        if s.state.inflight.get(i).map(|m| m.state) != Some(expected) {
            return;
        }
        s.state.inflight.remove(i);
        if s.state.inflight.is_empty() {
            if let Some(c) = self.connections.get_mut(&conn) {
                self.timers
                    .cancel_conn(conn, &mut c.deadlines, ConnTimer::Retry);
            }
        }
        self.storage(StorageEvent::SessionChanged {
            client_id: client_id.clone(),
        });
        self.pump(&client_id, now);
    }

    fn on_pubrec(&mut self, conn: ConnectionId, r: PubResponse, now: Instant) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        let v5 = c.version.is_v5();
        let client_id = c.client_id.clone();
        let Some(s) = self.sessions.get_mut(&client_id) else {
            return;
        };
        let Some(i) = s.state.inflight_index(r.packet_id) else {
            if v5 {
                // 5.0 4.3.3: PUBREL 0x92 for an id we do not know.
                let mut rel = PubResponse::new(r.packet_id);
                rel.reason_code = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                self.send(conn, &Packet::PubRel(rel));
            } else {
                self.send(conn, &Packet::PubRel(PubResponse::new(r.packet_id)));
            }
            return;
        };
        let Some(m) = s.state.inflight.get_mut(i) else {
            return;
        };
        if m.state == InflightState::AwaitingPubAck {
            return;
        }
        if v5 && !r.reason_code.is_success() {
            // 5.0 4.3.3: a PUBREC with an error code ends the flow.
            s.state.inflight.remove(i);
            self.storage(StorageEvent::SessionChanged {
                client_id: client_id.clone(),
            });
            self.pump(&client_id, now);
            return;
        }
        m.state = InflightState::AwaitingPubComp;
        m.sent_at = now;
        // MQTT-4.3.3-? : answer PUBREC with PUBREL (also a repeated PUBREC).
        self.send(conn, &Packet::PubRel(PubResponse::new(r.packet_id)));
        self.storage(StorageEvent::SessionChanged { client_id });
    }

    // ------------------------------------------------------------------
    // SUBSCRIBE / UNSUBSCRIBE
    // ------------------------------------------------------------------

    fn on_subscribe(&mut self, conn: ConnectionId, sub: Subscribe, now: Instant) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        let v5 = c.version.is_v5();
        let client_id = c.client_id.clone();
        let sub_id = sub.properties.subscription_identifiers.first().copied();
        if sub_id.is_some() && !self.config.subscription_identifier_available {
            return self.protocol_error(
                conn,
                ProtocolViolation::SubscriptionIdentifiersNotSupported,
                now,
            );
        }
        let mut codes = Vec::with_capacity(sub.filters.len());
        let mut retained_for: Vec<(ByteString, Subscription)> = Vec::new();
        for (filter, options) in &sub.filters {
            let parsed = match topic::parse_filter(filter) {
                Ok(p) => p,
                Err(_) => {
                    codes.push(failure(v5, ReasonCode::TOPIC_FILTER_INVALID));
                    continue;
                }
            };
            let inner = parsed.filter();
            if topic::check_level_count(inner, self.config.max_topic_levels).is_err() {
                codes.push(failure(v5, ReasonCode::TOPIC_FILTER_INVALID));
                continue;
            }
            if parsed.is_shared() {
                if !self.config.shared_subscription_available {
                    codes.push(failure(v5, ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED));
                    continue;
                }
                if options.no_local {
                    // MQTT-3.8.3-4: No Local on a shared subscription is a protocol error.
                    return self.protocol_error(
                        conn,
                        ProtocolViolation::SharedSubscriptionNoLocal,
                        now,
                    );
                }
            }
            if !self.config.wildcard_subscription_available
                && (inner.contains('+') || inner.contains('#'))
            {
                codes.push(failure(
                    v5,
                    ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
                ));
                continue;
            }
            let Some(s) = self.sessions.get_mut(&client_id) else {
                return;
            };
            let existed = s.state.subscriptions.contains_key(filter.as_ref() as &str);
            if !existed && s.state.subscriptions.len() >= self.config.max_subscriptions_per_client {
                codes.push(failure(v5, ReasonCode::QUOTA_EXCEEDED));
                continue;
            }
            // MQTT-3.8.4-? : granted QoS is at most the maximum QoS.
            let mut options = *options;
            options.qos = qos_min(options.qos, self.config.maximum_qos);
            if !v5 {
                options.no_local = false;
                options.retain_as_published = false;
                options.retain_handling = RetainHandling::SendOnSubscribe;
            }
            let subscription = Subscription {
                options,
                subscription_identifier: sub_id,
            };
            // MQTT-3.8.4-3: a subscription with the same filter is replaced.
            s.state.subscriptions.insert(filter.clone(), subscription);
            if !existed {
                self.metrics.subscriptions += 1;
            }
            self.trie_add(&client_id, filter, subscription);
            codes.push(ReasonCode(options.qos.as_u8()));
            let send_retained = !parsed.is_shared()
                && match options.retain_handling {
                    RetainHandling::SendOnSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                retained_for.push((ByteString::from(inner), subscription));
            }
        }
        // MQTT-3.8.4-1: SUBACK with the same packet id, one code per filter (MQTT-3.8.4-6).
        self.send(
            conn,
            &Packet::SubAck(SubAck {
                packet_id: sub.packet_id,
                reason_codes: codes,
                properties: Properties::default(),
            }),
        );
        self.storage(StorageEvent::SessionChanged {
            client_id: client_id.clone(),
        });
        for (filter, subscription) in retained_for {
            self.send_retained(&client_id, &filter, subscription, now);
        }
    }

    /// Retained messages matching `filter`, to a new subscription
    /// (RETAIN set: 3.1.1 MQTT-3.3.1-8, 5.0 3.3.1.3).
    fn send_retained(
        &mut self,
        client_id: &ByteString,
        filter: &str,
        sub: Subscription,
        now: Instant,
    ) {
        let mut found: Vec<Arc<Message>> = Vec::new();
        let mut expired: Vec<ByteString> = Vec::new();
        let wildcard_at = filter.find(['+', '#']);
        match wildcard_at {
            None => {
                if let Some(m) = self.retained.get(filter) {
                    found.push(m.clone());
                }
            }
            Some(at) => {
                let prefix = filter.get(..at).unwrap_or("");
                for (t, m) in self.retained.range::<str, _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Unbounded,
                )) {
                    if !t.starts_with(prefix) {
                        break;
                    }
                    if topic::matches(filter, t) {
                        found.push(m.clone());
                    }
                }
            }
        }
        found.retain(|m| {
            if m.is_expired(now) {
                expired.push(m.topic.clone());
                false
            } else {
                true
            }
        });
        for t in expired {
            self.remove_retained(&t);
            self.metrics.drop(DropReason::Expired);
        }
        for m in found {
            let d = Delivery {
                qos: qos_min(m.qos, sub.options.qos),
                retain: true,
                subscription_identifiers: sub.subscription_identifier.into_iter().collect(),
                message: m,
            };
            self.deliver(client_id, d, now);
        }
    }

    fn on_unsubscribe(&mut self, conn: ConnectionId, u: Unsubscribe, _now: Instant) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        let v5 = c.version.is_v5();
        let client_id = c.client_id.clone();
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in &u.filters {
            let removed = self
                .sessions
                .get_mut(&client_id)
                .and_then(|s| s.state.subscriptions.remove(filter.as_ref() as &str))
                .is_some();
            if removed {
                self.metrics.subscriptions = self.metrics.subscriptions.saturating_sub(1);
                self.trie_remove(&client_id, filter);
                codes.push(ReasonCode::SUCCESS);
            } else if topic::validate_topic_filter(filter).is_err() {
                codes.push(ReasonCode::TOPIC_FILTER_INVALID);
            } else {
                codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        if !v5 {
            codes.clear();
        }
        // MQTT-3.10.4-4/-5: UNSUBACK with the same packet id (one code per filter in 5.0).
        self.send(
            conn,
            &Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                reason_codes: codes,
                properties: Properties::default(),
            }),
        );
        self.storage(StorageEvent::SessionChanged { client_id });
    }

    fn trie_add(&mut self, client_id: &ByteString, filter: &str, sub: Subscription) {
        match topic::parse_filter(filter) {
            Ok(ParsedFilter::Normal(f)) => {
                self.trie
                    .insert(f, SubKey::Client(client_id.clone()), SubValue::Client(sub));
            }
            Ok(ParsedFilter::Shared { group, filter: f }) => {
                let key = SubKey::Shared(ByteString::from(group));
                match self.trie.get_mut(f, &key) {
                    Some(SubValue::Shared(g)) => {
                        g.members.insert(client_id.clone(), sub);
                    }
                    _ => {
                        let mut g = SharedGroup::default();
                        g.members.insert(client_id.clone(), sub);
                        self.trie.insert(f, key, SubValue::Shared(g));
                    }
                }
            }
            Err(_) => {}
        }
    }

    fn trie_remove(&mut self, client_id: &ByteString, filter: &str) {
        match topic::parse_filter(filter) {
            Ok(ParsedFilter::Normal(f)) => {
                self.trie.remove(f, &SubKey::Client(client_id.clone()));
            }
            Ok(ParsedFilter::Shared { group, filter: f }) => {
                let key = SubKey::Shared(ByteString::from(group));
                let now_empty = match self.trie.get_mut(f, &key) {
                    Some(SubValue::Shared(g)) => {
                        g.members.remove(client_id.as_ref() as &str);
                        g.members.is_empty()
                    }
                    _ => false,
                };
                if now_empty {
                    self.trie.remove(f, &key);
                }
            }
            Err(_) => {}
        }
    }

    // ------------------------------------------------------------------
    // Routing
    // ------------------------------------------------------------------

    /// Store (if retained) and deliver a message to every matching session.
    fn route(&mut self, message: Arc<Message>, now: Instant) {
        if message.retain {
            self.store_retained(&message);
        }
        let mut targets = std::mem::take(&mut self.scratch);
        targets.clear();
        {
            let sessions = &self.sessions;
            let rng = &mut self.rng;
            let strategy = self.config.shared_subscription_strategy;
            let publisher = message.publisher.as_deref();
            self.trie
                .for_each_match(&message.topic, |key, value| match (key, value) {
                    (SubKey::Client(client_id), SubValue::Client(sub)) => {
                        // MQTT-3.8.3-3: No Local.
                        if sub.options.no_local && publisher == Some(&**client_id) {
                            return;
                        }
                        targets.push(Target {
                            client_id: client_id.clone(),
                            qos: sub.options.qos,
                            retain_as_published: sub.options.retain_as_published,
                            subscription_identifier: sub.subscription_identifier,
                        });
                    }
                    (SubKey::Shared(_), SubValue::Shared(group)) => {
                        if let Some((client_id, sub)) = pick_member(group, sessions, rng, strategy)
                        {
                            targets.push(Target {
                                client_id: client_id.clone(),
                                qos: sub.options.qos,
                                retain_as_published: sub.options.retain_as_published,
                                subscription_identifier: sub.subscription_identifier,
                            });
                        }
                    }
                    _ => {}
                });
        }
        if targets.is_empty() {
            self.metrics.drop(DropReason::NoSubscribers);
        }
        // Merge overlapping subscriptions of one session into one delivery
        // (5.0 MQTT-3.3.4-2 max QoS, MQTT-3.3.4-4 all identifiers; 3.1.1
        // MQTT-3.3.5-1). Sorting also makes delivery order deterministic.
        if targets.len() > 1 {
            targets.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        }
        let mut i = 0;
        while let Some(first) = targets.get(i) {
            let client_id = first.client_id.clone();
            let mut qos = first.qos;
            let mut rap = first.retain_as_published;
            let mut ids: Vec<u32> = first.subscription_identifier.into_iter().collect();
            let mut j = i + 1;
            while let Some(t) = targets.get(j) {
                if t.client_id != client_id {
                    break;
                }
                qos = qos.max(t.qos);
                rap |= t.retain_as_published;
                ids.extend(t.subscription_identifier);
                j += 1;
            }
            i = j;
            let d = Delivery {
                qos: qos_min(message.qos, qos),
                // MQTT-3.3.1-12 / -13: RETAIN cleared unless Retain As Published.
                retain: message.retain && rap,
                subscription_identifiers: ids,
                message: message.clone(),
            };
            self.deliver(&client_id, d, now);
        }
        targets.clear();
        self.scratch = targets;
    }

    fn store_retained(&mut self, message: &Arc<Message>) {
        // MQTT-3.3.1-6 / -7 (3.1.1 MQTT-3.3.1-10/-11): an empty payload deletes.
        if message.payload.is_empty() {
            self.remove_retained(&message.topic);
            return;
        }
        let exists = self.retained.contains_key(&message.topic);
        if !exists && self.retained.len() >= self.config.max_retained_messages {
            self.metrics.drop(DropReason::RetainedLimit);
            return;
        }
        // MQTT-3.3.1-5: store it, replacing any previous message on the topic.
        // A copy: the routed message's fields are slices of the publisher's
        // read buffer, which a long-lived retained message would pin whole.
        let stored = Arc::new(unshare_message(message));
        self.retained.insert(stored.topic.clone(), stored);
        if !exists {
            self.metrics.retained_messages += 1;
        }
        self.storage(StorageEvent::RetainedChanged {
            topic: message.topic.clone(),
        });
    }

    fn remove_retained(&mut self, topic_name: &str) {
        if let Some(m) = self.retained.remove(topic_name) {
            self.metrics.retained_messages = self.metrics.retained_messages.saturating_sub(1);
            self.storage(StorageEvent::RetainedRemoved {
                topic: m.topic.clone(),
            });
        }
    }

    // ------------------------------------------------------------------
    // $SYS
    // ------------------------------------------------------------------

    fn publish_sys_event(&mut self, client_id: &str, what: &str, json: String, now: Instant) {
        let t = format!(
            "$SYS/brokers/{}/clients/{}/{}",
            self.config.node_name, client_id, what
        );
        // A client id with wildcard characters cannot be part of a topic name.
        if topic::validate_topic_name(&t).is_err() {
            return;
        }
        let m = Message {
            topic: ByteString::from(t),
            payload: Bytes::from(json),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
            publisher: None,
            expires_at: None,
        };
        self.route(Arc::new(m), now);
    }

    fn publish_sys_stats(&mut self, now: Instant) {
        let node = self.config.node_name.clone();
        let uptime = now.saturating_duration_since(self.started_at).as_secs();
        let stats: [(&str, u64); 6] = [
            ("uptime", uptime),
            ("clients/connected", self.metrics.clients_connected),
            ("sessions", self.metrics.sessions),
            ("subscriptions", self.metrics.subscriptions),
            ("retained", self.metrics.retained_messages),
            ("messages/dropped", self.metrics.dropped_total()),
        ];
        for (name, value) in stats {
            let m = Message {
                topic: ByteString::from(format!("$SYS/brokers/{node}/{name}")),
                payload: Bytes::from(value.to_string()),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: Properties::default(),
                publisher: None,
                expires_at: None,
            };
            self.route(Arc::new(m), now);
        }
    }

    fn storage(&mut self, e: StorageEvent) {
        if self.config.storage_events {
            self.events.push_back(Event::Storage(e));
        }
    }
}

// ----------------------------------------------------------------------
// Free helpers (they borrow single fields so the borrow checker lets a
// session and its connection be used together).
// ----------------------------------------------------------------------

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

fn failure(v5: bool, code: ReasonCode) -> ReasonCode {
    if v5 {
        code
    } else {
        // 3.x SUBACK has one failure code (MQTT-3.9.3-2 in 3.1.1).
        ReasonCode::UNSPECIFIED_ERROR
    }
}

fn truncate(s: &str) -> String {
    let mut end = s.len().min(128);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("").to_owned()
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A will in its own allocations: the decoded one is a slice of the read
/// buffer its CONNECT came in, which it would pin for the connection's life.
fn unshare_will(w: Will) -> Will {
    Will {
        topic: own_str(&w.topic),
        payload: own_bytes(&w.payload),
        qos: w.qos,
        retain: w.retain,
        properties: unshare_properties(w.properties),
    }
}

/// A message in its own allocations (see [`unshare_will`]).
fn unshare_message(m: &Message) -> Message {
    Message {
        topic: own_str(&m.topic),
        payload: own_bytes(&m.payload),
        qos: m.qos,
        retain: m.retain,
        properties: unshare_properties(m.properties.clone()),
        publisher: m.publisher.clone(),
        expires_at: m.expires_at,
    }
}

/// The byte fields of application-message properties, copied.
fn unshare_properties(mut p: Properties) -> Properties {
    p.content_type = p.content_type.as_ref().map(own_str);
    p.response_topic = p.response_topic.as_ref().map(own_str);
    p.correlation_data = p.correlation_data.as_ref().map(own_bytes);
    for (k, v) in &mut p.user_properties {
        *k = own_str(k);
        *v = own_str(v);
    }
    p
}

fn own_bytes(b: &Bytes) -> Bytes {
    Bytes::copy_from_slice(b)
}

fn own_str(s: &ByteString) -> ByteString {
    ByteString::from(&**s)
}

fn queue_packet(
    c: &mut Connection,
    packet: &Packet,
    metrics: &mut Metrics,
    ready: &mut VecDeque<ConnectionId>,
) -> bool {
    let before = c.out.len();
    match encode(packet, c.version, &mut c.out) {
        Ok(()) => {
            metrics.count_out(packet.packet_type());
            if !c.in_ready {
                c.in_ready = true;
                ready.push_back(c.id);
            }
            true
        }
        Err(_) => {
            c.out.truncate(before);
            false
        }
    }
}

/// Build and queue one PUBLISH to `c`. False if it exceeds the client's
/// Maximum Packet Size (dropped and counted, MQTT-3.1.2-24/-25).
fn send_publish(
    c: &mut Connection,
    d: &Delivery,
    packet_id: Option<PacketId>,
    dup: bool,
    now: Instant,
    metrics: &mut Metrics,
    ready: &mut VecDeque<ConnectionId>,
) -> bool {
    let m = &d.message;
    let mut topic_name = m.topic.clone();
    let mut new_alias = None;
    let properties = if c.version.is_v5() {
        let mut p = m.properties.clone();
        p.subscription_identifiers
            .clone_from(&d.subscription_identifiers);
        // 5.0 3.3.2.3.3: forward the remaining expiry, not the original.
        if let Some(exp) = m.expires_at {
            let left = exp.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            p.message_expiry_interval = Some(u32::try_from(secs.max(1)).unwrap_or(u32::MAX));
        }
        if c.alias_out_max > 0 {
            let outbound = c.aliases.as_ref().map(|a| &a.outbound);
            if let Some(a) = outbound.and_then(|o| o.get(&m.topic)) {
                p.topic_alias = Some(*a);
                topic_name = ByteString::new();
            } else if let Ok(n) = u16::try_from(outbound.map_or(0, |o| o.len()) + 1) {
                if n <= c.alias_out_max {
                    p.topic_alias = Some(n);
                    new_alias = Some(n);
                }
            }
        }
        p
    } else {
        Properties::default()
    };
    let packet = Packet::Publish(Publish {
        dup,
        qos: d.qos,
        retain: d.retain,
        topic: topic_name,
        packet_id,
        properties,
        payload: m.payload.clone(),
    });
    let fits =
        encoded_len(&packet, c.version).is_ok_and(|n| n <= c.client_max_packet_size as usize);
    if !fits {
        metrics.drop(DropReason::PacketTooLarge);
        return false;
    }
    if !queue_packet(c, &packet, metrics, ready) {
        metrics.drop(DropReason::PacketTooLarge);
        return false;
    }
    if let Some(a) = new_alias {
        c.aliases
            .get_or_insert_with(Box::default)
            .outbound
            .insert(ByteString::from(&*m.topic), a);
    }
    metrics.messages_sent += 1;
    true
}

/// Send a message now: QoS 0 as is, QoS 1/2 with a fresh packet id into the
/// inflight window.
fn start_delivery(
    c: &mut Connection,
    s: &mut SessionState,
    d: Delivery,
    now: Instant,
    metrics: &mut Metrics,
    ready: &mut VecDeque<ConnectionId>,
) {
    if d.qos == QoS::AtMostOnce {
        send_publish(c, &d, None, false, now, metrics, ready);
        return;
    }
    let Some(pid) = s.next_packet_id() else {
        metrics.drop(DropReason::QueueFull);
        return;
    };
    if send_publish(c, &d, Some(pid), false, now, metrics, ready) {
        let state = if d.qos == QoS::AtLeastOnce {
            InflightState::AwaitingPubAck
        } else {
            InflightState::AwaitingPubRec
        };
        s.inflight.push_back(InflightMessage {
            packet_id: pid,
            delivery: d,
            state,
            sent_at: now,
        });
    }
}

/// Bounded enqueue: when full, drop the oldest QoS 0 first; if there is
/// none, refuse the new message. Every drop counted.
fn enqueue(
    s: &mut SessionState,
    d: Delivery,
    max_messages: usize,
    max_bytes: usize,
    metrics: &mut Metrics,
) -> bool {
    let w = d.message.weight();
    while s.queue.len() >= max_messages || s.queued_bytes.saturating_add(w) > max_bytes {
        let oldest_qos0 = s.queue.iter().position(|q| q.qos == QoS::AtMostOnce);
        match oldest_qos0.and_then(|i| s.queue.remove(i)) {
            Some(old) => {
                s.queued_bytes = s.queued_bytes.saturating_sub(old.message.weight());
                metrics.drop(DropReason::QueueFull);
            }
            None => {
                metrics.drop(DropReason::QueueFull);
                return false;
            }
        }
    }
    s.queued_bytes += w;
    s.queue.push_back(d);
    true
}

/// 3.x only, with `retry_interval`: keep one Retry timer per connection at
/// the oldest inflight message's resend time.
fn arm_retry(timers: &mut BrokerTimers, cfg: &BrokerConfig, c: &mut Connection, s: &SessionState) {
    let Some(interval) = cfg.retry_interval else {
        return;
    };
    if c.version.is_v5() {
        // MQTT-4.4.0-1 (5.0): resend only on reconnect.
        return;
    }
    match s.inflight.iter().map(|m| m.sent_at).min() {
        Some(oldest) => {
            timers.set_conn(c.id, &mut c.deadlines, ConnTimer::Retry, oldest + interval);
        }
        None => timers.cancel_conn(c.id, &mut c.deadlines, ConnTimer::Retry),
    }
}

/// keep_alive x multiplier; `None` when keep alive is off.
fn keep_alive_limit(keep_alive: u16, multiplier: f64) -> Option<Duration> {
    (keep_alive > 0).then(|| {
        Duration::try_from_secs_f64(f64::from(keep_alive) * multiplier)
            .unwrap_or(Duration::from_secs(u64::from(keep_alive)))
    })
}

/// One member of a share group: connected members first, then any (its
/// session queues the message).
fn pick_member<'a>(
    group: &'a SharedGroup,
    sessions: &DetMap<ByteString, Box<Session>>,
    rng: &mut Xoshiro256PlusPlus,
    strategy: SharedStrategy,
) -> Option<(&'a ByteString, &'a Subscription)> {
    let online = |id: &ByteString| sessions.get(id).is_some_and(|s| s.conn.is_some());
    let n_online = group.members.keys().filter(|id| online(id)).count();
    let (pool, only_online) = if n_online > 0 {
        (n_online, true)
    } else {
        (group.members.len(), false)
    };
    if pool == 0 {
        return None;
    }
    let k = match strategy {
        SharedStrategy::RoundRobin => {
            let k = group.next.get() % pool;
            group.next.set(group.next.get().wrapping_add(1));
            k
        }
        SharedStrategy::Random => (rng.next_u64() % pool as u64) as usize,
    };
    group
        .members
        .iter()
        .filter(|(id, _)| !only_online || online(id))
        .nth(k)
}

#[cfg(test)]
mod size_tests;
