//! A host running a [`mqtt_core::node::Node`]: a broker that accepts client
//! connections like [`super::BrokerNode`], plus its bridges, whose
//! transports are simulated connections to other hosts.
//!
//! Each bridge's `Dial { address }` is mapped to a host through the table
//! given to [`BridgedBrokerNode::new`]. Everything a bridge transport does
//! (dial, bytes both ways, up, refused or timed-out dial, close by either
//! side) goes through [`BridgeLinks`] for stream transports (TCP), or the
//! host's QUIC endpoint ([`BridgedBrokerNode::with_quic`]) for QUIC; TLS,
//! and QUIC on a host without an endpoint, fail at once (as in rt-smol), so
//! a hybrid list falls back to TCP.
//!
//! The node records per bridge: dials, state changes with their reasons,
//! the fatal event, and the PINGREQs it sent and PINGRESPs it read (with
//! virtual times), and feeds the [`super::BackoffCheck`].

use std::any::Any;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_core::bridge::{
    BridgeConfig, BridgeConfigError, BridgeEvent, BridgeState, FatalReason, StateReason, Transport,
    TransportFailure,
};
use mqtt_core::broker::{BrokerConfig, ConnectionId, ConnectionInfo, Message};
use mqtt_core::codec::{Connect, Packet, Properties, ProtocolVersion, QoS};
use mqtt_core::node::{BridgeId, Node as CoreNode, NodeEvent, NodeTransmit};

use super::check::{Checks, MsgId};
use super::net::{HostId, NetEvent, SockId};
use super::nodes::Listener;
use super::quic::SimQuic;
use super::world::{Cx, Node};

/// One `Dial` of a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialRecord {
    pub at: Instant,
    pub attempt: u32,
    pub transport: Transport,
    /// The host the address maps to (`None`: unknown, failed at once).
    pub to: Option<HostId>,
}

/// One state change of a bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRecord {
    pub at: Instant,
    pub from: BridgeState,
    pub to: BridgeState,
    pub reason: Option<StateReason>,
}

/// What one bridge did during a run.
#[derive(Debug, Clone, Default)]
pub struct BridgeRecord {
    pub name: String,
    pub dials: Vec<DialRecord>,
    pub states: Vec<StateRecord>,
    pub fatal: Option<(Instant, FatalReason)>,
    /// PINGREQs handed to the transport.
    pub pingreqs: Vec<Instant>,
    /// PINGRESPs read from the transport.
    pub pingresps: Vec<Instant>,
}

impl BridgeRecord {
    /// When the bridge became connected, in order.
    pub fn connected_at(&self) -> Vec<Instant> {
        self.states
            .iter()
            .filter(|s| matches!(s.to, BridgeState::Connected { .. }))
            .map(|s| s.at)
            .collect()
    }

    /// The state changes into Backoff: (when, until, reason).
    pub fn backoffs(&self) -> Vec<(Instant, Instant, Option<StateReason>)> {
        self.states
            .iter()
            .filter_map(|s| match s.to {
                BridgeState::Backoff { until } => Some((s.at, until, s.reason.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Finds MQTT fixed headers in a byte stream cut into segments, to see
/// control packets (PINGREQ, PINGRESP) without decoding the rest.
#[derive(Debug, Default)]
pub(super) struct FrameScan {
    /// Bytes of the current packet still to skip.
    skip: usize,
    /// A fixed header cut by a segment end.
    head: Vec<u8>,
}

impl FrameScan {
    /// The packet types (high nibble) that start in `data`.
    pub(super) fn scan(&mut self, data: &[u8], mut on_packet: impl FnMut(u8)) {
        let mut i = 0;
        while i < data.len() {
            if self.skip > 0 {
                let n = self.skip.min(data.len() - i);
                self.skip -= n;
                i += n;
                continue;
            }
            self.head.push(data[i]);
            i += 1;
            // Type byte + up to 4 length bytes; the last has no high bit.
            let len_bytes = &self.head[1..];
            let Some(&last) = len_bytes.last() else {
                continue;
            };
            if last & 0x80 != 0 && len_bytes.len() < 4 {
                continue;
            }
            let remaining = len_bytes.iter().enumerate().fold(0usize, |acc, (k, b)| {
                acc | (usize::from(b & 0x7f) << (7 * k))
            });
            on_packet(self.head[0] >> 4);
            self.head.clear();
            self.skip = remaining;
        }
    }
}

pub(super) const PINGREQ: u8 = 12;
pub(super) const PINGRESP: u8 = 13;

/// The transport of one bridge, as the node sees it.
#[derive(Debug)]
enum LinkIo {
    /// A simulated stream connection (TCP).
    Stream { sock: SockId, up: bool },
}

#[derive(Debug, Default)]
struct BridgeLink {
    io: Option<LinkIo>,
    dialed_at: Option<Instant>,
    out_scan: FrameScan,
    in_scan: FrameScan,
}

/// Every bridge transport of the node: what a `Dial` opens, where bytes
/// go, what a network event means for the bridge. Returns the calls the
/// node must make on the core (they produce more output to drain).
#[derive(Debug, Default)]
pub struct BridgeLinks {
    hosts: BTreeMap<String, HostId>,
    links: Vec<BridgeLink>,
}

/// What a transport reports to the core.
#[derive(Debug)]
enum LinkInput {
    Up,
    Failed(TransportFailure),
    Read(Bytes),
    Down,
}

impl BridgeLinks {
    fn new(hosts: BTreeMap<String, HostId>, bridges: usize) -> Self {
        Self {
            hosts,
            links: (0..bridges).map(|_| BridgeLink::default()).collect(),
        }
    }

    /// Open a transport for bridge `i`; `Err` = it failed at once.
    fn dial(
        &mut self,
        i: usize,
        transport: Transport,
        address: &str,
        cx: &mut Cx<'_>,
    ) -> Result<HostId, (Option<HostId>, TransportFailure)> {
        let Some(link) = self.links.get_mut(i) else {
            return Err((None, TransportFailure::Error("no such bridge".into())));
        };
        // The bridge closes before it dials again; a leftover would leak.
        if let Some(LinkIo::Stream { sock, .. }) = link.io.take() {
            cx.close(sock);
        }
        let Some(&to) = self.hosts.get(address) else {
            return Err((
                None,
                TransportFailure::Error(format!("unknown host {address:?}")),
            ));
        };
        match transport {
            Transport::Tcp => {
                let sock = cx.dial(to);
                link.io = Some(LinkIo::Stream { sock, up: false });
                link.dialed_at = Some(cx.now);
                link.out_scan = FrameScan::default();
                link.in_scan = FrameScan::default();
                Ok(to)
            }
            // Not simulated yet (QUIC: a datagram endpoint goes here).
            other => Err((
                Some(to),
                TransportFailure::Error(format!("{other} is not simulated")),
            )),
        }
    }

    /// Bytes for bridge `i`'s transport; PINGREQs are recorded.
    fn send(&mut self, i: usize, data: Bytes, cx: &mut Cx<'_>, record: &mut BridgeRecord) {
        let Some(link) = self.links.get_mut(i) else {
            return;
        };
        // The core writes only to an open transport; one the network
        // closed meanwhile loses the bytes, as a socket would.
        if let Some(LinkIo::Stream { sock, up: true }) = link.io {
            link.out_scan.scan(&data, |kind| {
                if kind == PINGREQ {
                    record.pingreqs.push(cx.now);
                }
            });
            cx.send(sock, data);
        }
    }

    /// Close bridge `i`'s transport gracefully (after what was sent).
    fn close(&mut self, i: usize, cx: &mut Cx<'_>) {
        if let Some(LinkIo::Stream { sock, .. }) = self.links.get_mut(i).and_then(|l| l.io.take()) {
            cx.close(sock);
        }
    }

    /// The bridge a network event belongs to, and what it means for it.
    /// `None`: not a bridge socket.
    fn on_net(
        &mut self,
        event: &NetEvent,
        cx: &mut Cx<'_>,
        records: &mut [BridgeRecord],
    ) -> Option<(usize, Option<LinkInput>)> {
        let sock = event.sock();
        let i = self
            .links
            .iter()
            .position(|l| matches!(l.io, Some(LinkIo::Stream { sock: s, .. }) if s == sock));
        let Some(i) = i else {
            return match event {
                // Only bridges dial from this host: a dial the bridge
                // abandoned completes late. Close it.
                NetEvent::Connected { sock } => {
                    cx.close(*sock);
                    Some((usize::MAX, None))
                }
                // The rest of an abandoned or closed transport.
                NetEvent::DialFailed { .. } | NetEvent::Data { .. } | NetEvent::Closed { .. } => {
                    Some((usize::MAX, None))
                }
                NetEvent::Accepted { .. } | NetEvent::Datagram { .. } => None,
            };
        };
        let link = &mut self.links[i];
        let input = match event {
            NetEvent::Connected { .. } => {
                link.io = Some(LinkIo::Stream { sock, up: true });
                Some(LinkInput::Up)
            }
            NetEvent::DialFailed { .. } => {
                link.io = None;
                // A refusal comes back after one RTT; a dial into a
                // partition gives up after the network's dial timeout.
                let waited = link
                    .dialed_at
                    .map_or(Duration::ZERO, |t| cx.now.saturating_duration_since(t));
                Some(LinkInput::Failed(if waited >= cx.net.dial_timeout {
                    TransportFailure::Timeout
                } else {
                    TransportFailure::Refused
                }))
            }
            NetEvent::Data { data, .. } => {
                if let Some(r) = records.get_mut(i) {
                    link.in_scan.scan(data, |kind| {
                        if kind == PINGRESP {
                            r.pingresps.push(cx.now);
                        }
                    });
                }
                Some(LinkInput::Read(data.clone()))
            }
            NetEvent::Closed { .. } => {
                link.io = None;
                Some(LinkInput::Down)
            }
            NetEvent::Accepted { .. } | NetEvent::Datagram { .. } => None,
        };
        Some((i, input))
    }
}

/// A broker with bridges on one host. See the module docs.
pub struct BridgedBrokerNode {
    pub node: CoreNode,
    configs: Vec<BridgeConfig>,
    listener: Listener,
    links: BridgeLinks,
    /// What each bridge did, by index.
    pub records: Vec<BridgeRecord>,
    /// Takeover connections made by [`Self::take_over_session`].
    fake_conns: u64,
    /// QUIC (issue 6): the host's endpoint, for `Quic` bridge dials and a
    /// QUIC listener ([`Self::with_quic`]); `None`: QUIC dials fail at once.
    pub quic: Option<SimQuic>,
}

impl BridgedBrokerNode {
    /// A broker with `bridges`; `hosts` maps each bridge address to the
    /// host it reaches. `now` is the world's current time (the bridges
    /// start dialing when the host is added).
    pub fn new(
        broker: BrokerConfig,
        bridges: Vec<BridgeConfig>,
        hosts: BTreeMap<String, HostId>,
        now: Instant,
    ) -> Result<Self, BridgeConfigError> {
        let n = bridges.len();
        let records = bridges
            .iter()
            .map(|c| BridgeRecord {
                name: c.name.clone(),
                ..BridgeRecord::default()
            })
            .collect();
        Ok(Self {
            node: CoreNode::new(broker, bridges.clone(), now)?,
            configs: bridges,
            listener: Listener::default(),
            links: BridgeLinks::new(hosts, n),
            records,
            fake_conns: 0,
            quic: None,
        })
    }

    /// The same node with a QUIC endpoint (see [`super::quic`]).
    pub fn with_quic(mut self, quic: SimQuic) -> Self {
        self.quic = Some(quic);
        self
    }

    /// Disconnect reasons of client connections seen, by kind.
    pub fn disconnects(&self) -> &BTreeMap<&'static str, u64> {
        &self.listener.disconnects
    }

    pub fn bridge_state(&self, i: usize) -> Option<&BridgeState> {
        self.node.bridge(BridgeId(i)).map(|b| b.state())
    }

    /// The connection of `client_id`'s session, if connected.
    pub fn connection_of(&self, client_id: &str) -> Option<ConnectionId> {
        self.node
            .broker()
            .session_connection(client_id)
            .filter(|c| {
                self.listener.is_open(*c) || self.quic.as_ref().is_some_and(|q| q.owns_conn(*c))
            })
    }

    /// The remote broker closes `client_id`'s connection cleanly (FIN,
    /// no DISCONNECT): e.g. a bridge connected to this host.
    pub fn close_client(&mut self, client_id: &str, cx: &mut Cx<'_>) -> bool {
        let Some(conn) = self.connection_of(client_id) else {
            return false;
        };
        cx.note("close-client", conn.0, 0);
        if let Some(q) = &mut self.quic {
            if q.close_conn(&mut self.node, conn, false, cx) {
                return true;
            }
        }
        self.listener.close(conn, cx);
        self.node.handle_connection_closed(conn, cx.now);
        true
    }

    /// The host resets `client_id`'s connection (RST).
    pub fn reset_client(&mut self, client_id: &str, cx: &mut Cx<'_>) -> bool {
        let Some(conn) = self.connection_of(client_id) else {
            return false;
        };
        cx.note("reset-client", conn.0, 0);
        if let Some(q) = &mut self.quic {
            if q.close_conn(&mut self.node, conn, true, cx) {
                return true;
            }
        }
        if self.listener.reset(conn, cx) {
            self.node.handle_connection_closed(conn, cx.now);
        }
        true
    }

    /// A new connection takes over `client_id`'s session (5.0, persistent,
    /// session expiry one hour) and leaves at once: the broker sends the
    /// current connection DISCONNECT 0x8E (session taken over) and closes
    /// it, the session stays for the client's return. The taking
    /// connection exists only inside the broker (nothing goes on the
    /// network for it).
    pub fn take_over_session(&mut self, client_id: &str, cx: &mut Cx<'_>) -> bool {
        if self.connection_of(client_id).is_none() {
            return false;
        }
        self.fake_conns += 1;
        // Far above any socket id of a run.
        let conn = ConnectionId((1 << 62) + self.fake_conns);
        cx.note("takeover", conn.0, 0);
        let now = cx.now;
        self.node
            .handle_connection_opened(conn, ConnectionInfo::default(), now);
        // `.into()`: the codec may box `Connect` (a large variant).
        #[allow(clippy::useless_conversion)]
        self.node.handle_packet(
            conn,
            Packet::Connect(
                Connect {
                    protocol_version: ProtocolVersion::V5,
                    clean_start: false,
                    keep_alive: 0,
                    client_id: client_id.into(),
                    will: None,
                    username: None,
                    password: None,
                    properties: Properties {
                        session_expiry_interval: Some(3600),
                        ..Properties::default()
                    },
                }
                .into(),
            ),
            now,
        );
        self.node.handle_connection_closed(conn, now);
        true
    }

    /// Publish a ledger-tracked message as the broker itself (a local
    /// publisher without a connection): message `seq` of `publisher`.
    pub fn publish_local(&mut self, cx: &mut Cx<'_>, id: MsgId, topic: &str, qos: QoS, pad: usize) {
        cx.checks.ledger.published(id, topic, qos);
        self.node.publish(
            Message {
                topic: topic.into(),
                payload: id.payload(pad),
                qos,
                retain: false,
                properties: Properties::default(),
                publisher: None,
                expires_at: None,
            },
            cx.now,
        );
    }

    fn on_bridge_event(&mut self, i: usize, event: BridgeEvent, cx: &mut Cx<'_>) {
        let id = BridgeId(i);
        let Some(record) = self.records.get_mut(i) else {
            return;
        };
        match event {
            BridgeEvent::Dial {
                attempt,
                transport,
                address,
            } => {
                cx.note("bridge-dial", i as u64, u64::from(attempt));
                {
                    let Checks {
                        problems, backoff, ..
                    } = &mut *cx.checks;
                    backoff.dial(problems, cx.base, (cx.host, i), attempt, cx.now);
                }
                let result = match (&mut self.quic, transport) {
                    (Some(q), Transport::Quic) => {
                        self.links.close(i, cx);
                        q.dial_bridge(i, &address, cx)
                    }
                    (q, _) => {
                        if let Some(q) = q {
                            q.close_bridge(i, cx);
                        }
                        self.links.dial(i, transport, &address, cx)
                    }
                };
                let record = &mut self.records[i];
                let to = match &result {
                    Ok(to) => Some(*to),
                    Err((to, _)) => *to,
                };
                record.dials.push(DialRecord {
                    at: cx.now,
                    attempt,
                    transport,
                    to,
                });
                if let Err((_, failure)) = result {
                    self.node
                        .handle_bridge_transport_failed(id, failure, cx.now);
                }
            }
            BridgeEvent::CloseTransport => {
                cx.note("bridge-close", i as u64, 0);
                self.links.close(i, cx);
                if let Some(q) = &mut self.quic {
                    q.close_bridge(i, cx);
                }
            }
            BridgeEvent::StateChanged { from, to, reason } => {
                cx.note("bridge-state", i as u64, state_code(&to));
                let Checks {
                    problems, backoff, ..
                } = &mut *cx.checks;
                backoff.state_changed(problems, cx.base, (cx.host, i), &from, &to, cx.now);
                record.states.push(StateRecord {
                    at: cx.now,
                    from,
                    to,
                    reason,
                });
            }
            BridgeEvent::Fatal { reason } => {
                cx.note("bridge-fatal", i as u64, 0);
                record.fatal = Some((cx.now, reason));
            }
            _ => {}
        }
    }

    fn link_input(&mut self, i: usize, input: LinkInput, cx: &mut Cx<'_>) {
        let id = BridgeId(i);
        let now = cx.now;
        match input {
            LinkInput::Up => self.node.handle_bridge_transport_up(id, now),
            LinkInput::Failed(f) => self.node.handle_bridge_transport_failed(id, f, now),
            LinkInput::Read(data) => {
                self.node
                    .handle_bridge_read(id, &mut BytesMut::from(&data[..]), now)
            }
            LinkInput::Down => self.node.handle_bridge_transport_down(id, now),
        }
    }
}

fn state_code(s: &BridgeState) -> u64 {
    match s {
        BridgeState::Idle => 0,
        BridgeState::Dialing { .. } => 1,
        BridgeState::Handshaking { .. } => 2,
        BridgeState::Connected { .. } => 3,
        BridgeState::Backoff { .. } => 4,
        BridgeState::Failed => 5,
        BridgeState::Stopped => 6,
    }
}

impl Node for BridgedBrokerNode {
    fn start(&mut self, cx: &mut Cx<'_>) {
        for (i, c) in self.configs.iter().enumerate() {
            cx.checks.backoff.register(cx.host, i, c);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let quic = self.quic.as_ref().and_then(|q| q.poll_timeout());
        [self.node.poll_timeout(), quic].into_iter().flatten().min()
    }

    fn handle_timeout(&mut self, cx: &mut Cx<'_>) {
        if let Some(q) = &mut self.quic {
            q.handle_timeout(cx.now);
        }
        self.node.handle_timeout(cx.now);
    }

    fn handle_net(&mut self, event: NetEvent, cx: &mut Cx<'_>) {
        if let (Some(q), NetEvent::Datagram { from, data }) = (&mut self.quic, &event) {
            q.handle_datagram(*from, data, cx);
            return;
        }
        if self.listener.on_net(&mut self.node, &event, cx) {
            return;
        }
        if let Some((i, Some(input))) = self.links.on_net(&event, cx, &mut self.records) {
            self.link_input(i, input, cx);
        }
    }

    fn drain(&mut self, cx: &mut Cx<'_>) {
        loop {
            let mut busy = false;
            while let Some(t) = self.node.poll_transmit() {
                busy = true;
                match t {
                    NodeTransmit::Connection(t) => {
                        let n = t.data.len();
                        match &mut self.quic {
                            Some(q) if q.owns_conn(t.conn) => q.write_conn(t.conn, t.data),
                            _ => cx.send(SockId(t.conn.0), t.data),
                        }
                        self.node.handle_written(t.conn, n, cx.now);
                    }
                    NodeTransmit::Bridge { id, data } => {
                        if let Some(r) = self.records.get_mut(id.0) {
                            match &mut self.quic {
                                Some(q) if q.owns_bridge(id.0) => {
                                    q.write_bridge(id.0, data, r, cx.now)
                                }
                                _ => self.links.send(id.0, data, cx, r),
                            }
                        }
                    }
                }
            }
            while let Some(ev) = self.node.poll_event() {
                busy = true;
                match ev {
                    NodeEvent::Broker(ev) => {
                        if let Some(q) = &mut self.quic {
                            q.on_broker_event(&ev, cx);
                        }
                        self.listener.on_event(ev, cx)
                    }
                    NodeEvent::Bridge { id, event } => self.on_bridge_event(id.0, event, cx),
                    _ => {}
                }
            }
            if let Some(q) = &mut self.quic {
                busy |= q.pump(&mut self.node, &mut self.records, cx);
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
