//! The broker host and the client host, each the real mqtt-core state
//! machine behind the [`Node`] trait, and the listening side both broker
//! hosts share (the bridged broker host is in `bridge_node.rs`).

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqtt_core::broker::{
    Broker, BrokerConfig, ConnectionId, ConnectionInfo, DisconnectReason, Event,
};
use mqtt_core::client::{Client, ClientConfig, ClientEvent, TransportDeadReason};
use mqtt_core::codec::{Properties, QoS, ReasonCode, SubscriptionOptions};

use super::check::{Checks, MsgId};
use super::net::{HostId, NetEvent, SockId};
use super::world::{Cx, Node};

/// What a host needs from the core it runs to serve client connections:
/// [`Broker`] itself, or a [`mqtt_core::node::Node`] (broker + bridges).
pub(super) trait BrokerCore {
    fn opened(&mut self, conn: ConnectionId, info: ConnectionInfo, now: Instant);
    fn read(&mut self, conn: ConnectionId, buf: &mut BytesMut, now: Instant);
    fn closed(&mut self, conn: ConnectionId, now: Instant);
}

impl BrokerCore for Broker {
    fn opened(&mut self, conn: ConnectionId, info: ConnectionInfo, now: Instant) {
        self.handle_connection_opened(conn, info, now);
    }
    fn read(&mut self, conn: ConnectionId, buf: &mut BytesMut, now: Instant) {
        self.handle_read(conn, buf, now);
    }
    fn closed(&mut self, conn: ConnectionId, now: Instant) {
        self.handle_connection_closed(conn, now);
    }
}

impl BrokerCore for mqtt_core::node::Node {
    fn opened(&mut self, conn: ConnectionId, info: ConnectionInfo, now: Instant) {
        self.handle_connection_opened(conn, info, now);
    }
    fn read(&mut self, conn: ConnectionId, buf: &mut BytesMut, now: Instant) {
        self.handle_read(conn, buf, now);
    }
    fn closed(&mut self, conn: ConnectionId, now: Instant) {
        self.handle_connection_closed(conn, now);
    }
}

/// The listening side of a broker host, shared by [`BrokerNode`] and
/// [`super::BridgedBrokerNode`]: accepted sockets are connections (ids are
/// the socket ids), their bytes and closes go to the core, the core's
/// events close them and feed the keepalive check.
#[derive(Debug, Default)]
pub(super) struct Listener {
    rx: BTreeMap<ConnectionId, BytesMut>,
    /// Disconnect reasons seen, by kind.
    pub disconnects: BTreeMap<&'static str, u64>,
}

impl Listener {
    /// Handle a network event if it is about a client connection; false if
    /// it is not (a socket the host dialed itself).
    pub fn on_net(
        &mut self,
        core: &mut impl BrokerCore,
        event: &NetEvent,
        cx: &mut Cx<'_>,
    ) -> bool {
        match event {
            NetEvent::Accepted { sock, peer } => {
                let conn = ConnectionId(sock.0);
                self.rx.insert(conn, BytesMut::new());
                cx.checks.keepalive.opened(cx.host, conn, cx.now);
                let info = ConnectionInfo {
                    peer: Some(peer.addr(40_000)),
                    listener: "tcp".to_owned(),
                    internal: false,
                };
                core.opened(conn, info, cx.now);
                true
            }
            NetEvent::Data { sock, data } => {
                let conn = ConnectionId(sock.0);
                let Some(buf) = self.rx.get_mut(&conn) else {
                    return false;
                };
                buf.extend_from_slice(data);
                let before = buf.len();
                core.read(conn, buf, cx.now);
                // handle_read consumes only complete packets: a shorter
                // buffer means a packet arrived now.
                if buf.len() < before {
                    cx.checks.keepalive.packet(cx.host, conn, cx.now);
                }
                true
            }
            NetEvent::Closed { sock, .. } => {
                let conn = ConnectionId(sock.0);
                if self.rx.remove(&conn).is_some() {
                    cx.checks.keepalive.closed(cx.host, conn);
                    core.closed(conn, cx.now);
                    true
                } else {
                    false
                }
            }
            NetEvent::Connected { .. }
            | NetEvent::DialFailed { .. }
            | NetEvent::Datagram { .. } => false,
        }
    }

    pub fn is_open(&self, conn: ConnectionId) -> bool {
        self.rx.contains_key(&conn)
    }

    /// The core is done with `conn`: FIN after its last bytes.
    pub fn close(&mut self, conn: ConnectionId, cx: &mut Cx<'_>) {
        if self.rx.remove(&conn).is_some() {
            cx.checks.keepalive.closed(cx.host, conn);
            cx.close(SockId(conn.0));
        }
    }

    /// The host resets `conn` (RST; data in flight is lost). The caller
    /// tells the core.
    pub fn reset(&mut self, conn: ConnectionId, cx: &mut Cx<'_>) -> bool {
        if self.rx.remove(&conn).is_some() {
            cx.checks.keepalive.closed(cx.host, conn);
            cx.reset(SockId(conn.0));
            true
        } else {
            false
        }
    }

    /// Act on one broker event.
    pub fn on_event(&mut self, ev: Event, cx: &mut Cx<'_>) {
        match ev {
            Event::CloseConnection { conn, .. } => self.close(conn, cx),
            Event::ClientConnected {
                conn,
                client_id,
                keep_alive,
                ..
            } => cx
                .checks
                .keepalive
                .connected(cx.host, conn, &client_id, keep_alive),
            Event::ClientDisconnected { conn, reason, .. } => {
                *self.disconnects.entry(reason_kind(&reason)).or_default() += 1;
                if let DisconnectReason::KeepAliveTimeout {
                    keep_alive,
                    last_packet,
                    deadline,
                } = reason
                {
                    cx.note("ka-expiry", conn.0, u64::from(keep_alive));
                    let Checks {
                        problems,
                        keepalive,
                        ..
                    } = &mut *cx.checks;
                    keepalive.expired(
                        problems,
                        cx.base,
                        cx.host,
                        conn,
                        (keep_alive, last_packet, deadline),
                        cx.now,
                    );
                }
            }
            _ => {}
        }
    }
}

fn reason_kind(reason: &DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::KeepAliveTimeout { .. } => "keepalive",
        DisconnectReason::ClientDisconnect { .. } => "client-disconnect",
        DisconnectReason::TransportClosed => "transport-closed",
        DisconnectReason::SessionTakenOver { .. } => "takeover",
        _ => "other",
    }
}

/// A host running the real [`Broker`]; it accepts every connection the
/// network lets through. Connection ids are the socket ids.
pub struct BrokerNode {
    pub broker: Broker,
    listener: Listener,
}

impl BrokerNode {
    pub fn new(config: BrokerConfig, base: Instant) -> Self {
        Self {
            broker: Broker::new(config, base),
            listener: Listener::default(),
        }
    }

    /// Disconnect reasons seen, by kind, for summaries.
    pub fn disconnects(&self) -> &BTreeMap<&'static str, u64> {
        &self.listener.disconnects
    }
}

impl Node for BrokerNode {
    fn poll_timeout(&self) -> Option<Instant> {
        self.broker.poll_timeout()
    }

    fn handle_timeout(&mut self, cx: &mut Cx<'_>) {
        self.broker.handle_timeout(cx.now);
    }

    fn handle_net(&mut self, event: NetEvent, cx: &mut Cx<'_>) {
        self.listener.on_net(&mut self.broker, &event, cx);
    }

    fn drain(&mut self, cx: &mut Cx<'_>) {
        loop {
            let mut busy = false;
            while let Some(t) = self.broker.poll_transmit() {
                busy = true;
                let n = t.data.len();
                cx.send(SockId(t.conn.0), t.data);
                self.broker.handle_written(t.conn, n, cx.now);
            }
            while let Some(ev) = self.broker.poll_event() {
                busy = true;
                self.listener.on_event(ev, cx);
            }
            if !busy {
                return;
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// How a client host redials after losing its transport: a uniform delay
/// in `min..=max` (from the world's RNG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    pub min: Duration,
    pub max: Duration,
}

/// A host running one real [`Client`], dialing `server`. It can be frozen
/// (a stalled process: no timers, no reads, no writes until it thaws), and
/// it redials by its [`ReconnectPolicy`].
pub struct ClientNode {
    pub client: Client,
    /// The ledger's publisher/subscriber number.
    pub id: u32,
    server: HostId,
    sock: Option<SockId>,
    up: bool,
    rx: BytesMut,
    pub reconnect: Option<ReconnectPolicy>,
    redial_at: Option<Instant>,
    frozen_until: Option<Instant>,
    held: VecDeque<NetEvent>,
    next_seq: u64,
    /// SUBACKs received.
    pub subacks: u64,
    /// CONNACKs with success, and how many of them had a session present.
    pub connacks: u64,
    pub sessions_present: u64,
    pub dial_failures: u64,
    pub deaths: BTreeMap<String, u64>,
}

impl ClientNode {
    /// A client that dials `server` `start_after` the world's `base`.
    pub fn new(
        id: u32,
        config: ClientConfig,
        server: HostId,
        base: Instant,
        start_after: Duration,
        reconnect: Option<ReconnectPolicy>,
    ) -> Self {
        let client = Client::new(config, base).expect("valid client config");
        Self {
            client,
            id,
            server,
            sock: None,
            up: false,
            rx: BytesMut::new(),
            reconnect,
            redial_at: Some(base + start_after),
            frozen_until: None,
            held: VecDeque::new(),
            next_seq: 0,
            subacks: 0,
            connacks: 0,
            sessions_present: 0,
            dial_failures: 0,
            deaths: BTreeMap::new(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen_until.is_some()
    }

    /// Publish a ledger-tracked message; `None` if the client refused it.
    pub fn publish(&mut self, cx: &mut Cx<'_>, topic: &str, qos: QoS, pad: usize) -> Option<MsgId> {
        let id = MsgId {
            publisher: self.id,
            seq: self.next_seq,
        };
        match self.client.publish(
            topic.into(),
            id.payload(pad),
            qos,
            false,
            Properties::default(),
            cx.now,
        ) {
            Ok(_) => {
                self.next_seq += 1;
                cx.checks.ledger.published(id, topic, qos);
                cx.note("publish", u64::from(self.id), id.seq);
                Some(id)
            }
            Err(_) => {
                cx.note("publish-refused", u64::from(self.id), id.seq);
                None
            }
        }
    }

    /// Subscribe, and tell the ledger this subscriber expects `filter`.
    pub fn subscribe(&mut self, cx: &mut Cx<'_>, filter: &str, qos: QoS) {
        let options = SubscriptionOptions::new(qos);
        self.client
            .subscribe(
                vec![(filter.into(), options)],
                Properties::default(),
                cx.now,
            )
            .expect("valid subscription");
        cx.checks.ledger.subscribe(self.id, filter, qos);
    }

    /// Graceful DISCONNECT; the node redials by its policy afterwards.
    pub fn disconnect(&mut self, cx: &mut Cx<'_>) {
        let _ = self.client.disconnect(
            ReasonCode::NORMAL_DISCONNECTION,
            Properties::default(),
            cx.now,
        );
    }

    /// Stall the whole host for `d` (a GC pause, a suspended VM).
    pub fn freeze(&mut self, cx: &mut Cx<'_>, d: Duration) {
        cx.note("freeze", d.as_micros() as u64, 0);
        let until = cx.now + d;
        self.frozen_until = Some(self.frozen_until.map_or(until, |t| t.max(until)));
    }

    fn schedule_redial(&mut self, cx: &mut Cx<'_>) {
        if let Some(p) = self.reconnect {
            self.redial_at = Some(cx.now + cx.rng.duration(p.min, p.max));
        }
    }

    fn transport_gone(&mut self, cx: &mut Cx<'_>) {
        self.sock = None;
        self.up = false;
        self.rx.clear();
        self.client.handle_transport_down(cx.now);
        self.schedule_redial(cx);
    }

    fn on_net(&mut self, event: NetEvent, cx: &mut Cx<'_>) {
        if self.sock != Some(event.sock()) {
            return;
        }
        match event {
            NetEvent::Connected { .. } => {
                self.up = true;
                self.client.handle_transport_up(cx.now);
            }
            NetEvent::DialFailed { .. } => {
                self.dial_failures += 1;
                self.sock = None;
                self.schedule_redial(cx);
            }
            NetEvent::Data { data, .. } => {
                if self.up {
                    self.rx.extend_from_slice(&data);
                    self.client.handle_read(&mut self.rx, cx.now);
                }
            }
            NetEvent::Closed { .. } => {
                if self.up {
                    self.transport_gone(cx);
                } else {
                    self.sock = None;
                    self.schedule_redial(cx);
                }
            }
            NetEvent::Accepted { .. } | NetEvent::Datagram { .. } => {}
        }
    }

    fn on_event(&mut self, ev: ClientEvent, cx: &mut Cx<'_>) {
        match ev {
            ClientEvent::Message(p) => {
                let now_s = cx.elapsed().as_secs_f64();
                let Checks {
                    problems, ledger, ..
                } = &mut *cx.checks;
                ledger.delivered(problems, now_s, self.id, &p.topic, p.qos, &p.payload);
            }
            ClientEvent::Subscribed(_) => {
                self.subacks += 1;
                cx.checks.ledger.subscribed(self.id);
            }
            ClientEvent::Connected(info) => {
                self.connacks += 1;
                if info.session_present {
                    self.sessions_present += 1;
                }
                cx.note(
                    "connack",
                    u64::from(self.id),
                    u64::from(info.session_present),
                );
            }
            ClientEvent::TransportDead(reason) => {
                let kind = match reason {
                    TransportDeadReason::PingTimeout => "ping-timeout".to_owned(),
                    TransportDeadReason::ConnAckTimeout => "connack-timeout".to_owned(),
                    TransportDeadReason::ClientDisconnect => "client-disconnect".to_owned(),
                    other => other.to_string(),
                };
                *self.deaths.entry(kind).or_default() += 1;
                // Final bytes (a 5.0 DISCONNECT) first, then close.
                if let Some(sock) = self.sock {
                    while let Some(bytes) = self.client.poll_transmit() {
                        cx.send(sock, bytes);
                    }
                    cx.close(sock);
                }
                self.transport_gone(cx);
            }
            _ => {}
        }
    }
}

impl Node for ClientNode {
    fn poll_timeout(&self) -> Option<Instant> {
        if let Some(t) = self.frozen_until {
            return Some(t);
        }
        [self.client.poll_timeout(), self.redial_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn handle_timeout(&mut self, cx: &mut Cx<'_>) {
        if let Some(t) = self.frozen_until {
            if t > cx.now {
                return;
            }
            self.frozen_until = None;
            cx.note("thaw", 0, 0);
            while let Some(ev) = self.held.pop_front() {
                self.on_net(ev, cx);
                self.drain(cx);
            }
        }
        if self.redial_at.is_some_and(|t| t <= cx.now) {
            self.redial_at = None;
            if self.sock.is_none() {
                self.sock = Some(cx.dial(self.server));
            }
        }
        self.client.handle_timeout(cx.now);
    }

    fn handle_net(&mut self, event: NetEvent, cx: &mut Cx<'_>) {
        if self.frozen_until.is_some() {
            self.held.push_back(event);
        } else {
            self.on_net(event, cx);
        }
    }

    fn drain(&mut self, cx: &mut Cx<'_>) {
        if self.frozen_until.is_some() {
            return;
        }
        loop {
            let mut busy = false;
            if let (true, Some(sock)) = (self.up, self.sock) {
                while let Some(bytes) = self.client.poll_transmit() {
                    busy = true;
                    cx.send(sock, bytes);
                }
            }
            while let Some(ev) = self.client.poll_event() {
                busy = true;
                self.on_event(ev, cx);
            }
            if !busy {
                return;
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
