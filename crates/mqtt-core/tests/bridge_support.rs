//! A tiny two-node network for bridge tests: an `edge` Node whose bridge
//! dials a `cloud` Node over one simulated link with fixed latency, on
//! virtual time. Just enough to test the FSM; the full simulator lives in
//! tests/src/sim.
#![allow(clippy::disallowed_methods, dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_core::bridge::{BridgeConfig, BridgeEvent, Transport, TransportFailure};
use mqtt_core::broker::{BrokerConfig, ConnectionId, ConnectionInfo, Event, Message};
use mqtt_core::client::{Client, ClientConfig, ClientEvent};
use mqtt_core::codec::{
    Connect, Packet, Properties, ProtocolVersion, Publish, QoS, SubscriptionOptions,
};
use mqtt_core::node::{BridgeId, Node, NodeEvent, NodeTransmit};

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Edge,
    Cloud,
}

#[derive(Debug)]
enum Action {
    EdgeUp(u64),
    EdgeFailed(u64),
    EdgeRead(u64, Bytes),
    EdgeDown(u64),
    CloudOpen(u64),
    CloudRead(u64, Bytes),
    CloudClosed(u64),
}

pub struct TestClient {
    pub side: Side,
    pub conn: ConnectionId,
    pub client: Client,
    pub received: Vec<Publish>,
}

pub struct World {
    pub t0: Instant,
    pub now: Instant,
    pub edge: Node,
    pub cloud: Node,
    /// One way.
    pub latency: Duration,
    /// False: dials are refused after one RTT.
    pub reachable: bool,
    /// True: dials get no answer and bytes vanish (a silent peer).
    pub blackhole: bool,
    /// Dials over these transports get no answer (UDP blocked).
    pub silent_transports: Vec<Transport>,
    next_gen: u64,
    edge_gen: Option<u64>,
    cloud_gen: Option<u64>,
    queue: BTreeMap<(Instant, u64), Action>,
    seq: u64,
    /// (time since t0, attempt, transport) of every Dial.
    pub dials: Vec<(Duration, u32, Transport)>,
    /// Every bridge event with its time since t0.
    pub events: Vec<(Duration, BridgeEvent)>,
    /// Every broker event of the cloud with its time since t0.
    pub cloud_events: Vec<(Duration, Event)>,
    pub clients: Vec<TestClient>,
}

pub fn broker_config(name: &str) -> BrokerConfig {
    BrokerConfig {
        node_name: name.into(),
        ..BrokerConfig::default()
    }
}

pub fn bridge_config() -> BridgeConfig {
    BridgeConfig {
        name: "up".into(),
        addresses: vec!["cloud:1883".into()],
        keep_alive: 10,
        ping_timeout: secs(5),
        connect_timeout: secs(5),
        seed: 7,
        ..BridgeConfig::default()
    }
}

impl World {
    pub fn new(bridge: BridgeConfig) -> Self {
        Self::with_brokers(bridge, broker_config("edge"), broker_config("cloud"))
    }

    pub fn with_brokers(bridge: BridgeConfig, edge: BrokerConfig, cloud: BrokerConfig) -> Self {
        let t0 = Instant::now();
        Self {
            t0,
            now: t0,
            edge: Node::new(edge, vec![bridge], t0).unwrap(),
            cloud: Node::new(cloud, vec![], t0).unwrap(),
            latency: ms(25),
            reachable: true,
            blackhole: false,
            silent_transports: Vec::new(),
            next_gen: 100,
            edge_gen: None,
            cloud_gen: None,
            queue: BTreeMap::new(),
            seq: 0,
            dials: Vec::new(),
            events: Vec::new(),
            cloud_events: Vec::new(),
            clients: Vec::new(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn schedule(&mut self, after: Duration, action: Action) {
        self.seq += 1;
        self.queue.insert((self.now + after, self.seq), action);
    }

    pub fn node(&mut self, side: Side) -> &mut Node {
        match side {
            Side::Edge => &mut self.edge,
            Side::Cloud => &mut self.cloud,
        }
    }

    /// A v5 client of `side` subscribed to `filters` (QoS 2).
    pub fn add_client(&mut self, side: Side, id: &str, filters: &[&str]) -> usize {
        let idx = self.clients.len();
        let conn = ConnectionId(1 + idx as u64);
        let mut client = Client::new(
            ClientConfig {
                client_id: id.into(),
                keep_alive: 0,
                ..ClientConfig::default()
            },
            self.now,
        )
        .unwrap();
        let now = self.now;
        self.node(side)
            .handle_connection_opened(conn, ConnectionInfo::default(), now);
        client.handle_transport_up(now);
        if !filters.is_empty() {
            let f = filters
                .iter()
                .map(|f| ((*f).into(), SubscriptionOptions::new(QoS::ExactlyOnce)))
                .collect();
            client.subscribe(f, Properties::default(), now).unwrap();
        }
        self.clients.push(TestClient {
            side,
            conn,
            client,
            received: Vec::new(),
        });
        self.drain();
        idx
    }

    /// Publish as the broker of `side` (a local publisher).
    pub fn publish(&mut self, side: Side, topic: &str, payload: impl Into<Bytes>, qos: QoS) {
        let now = self.now;
        self.node(side).publish(
            Message {
                topic: topic.into(),
                payload: payload.into(),
                qos,
                retain: false,
                properties: Properties::default(),
                publisher: None,
                expires_at: None,
            },
            now,
        );
        self.drain();
    }

    /// The link resets (RST both ways, at once).
    pub fn reset_link(&mut self) {
        let now = self.now;
        if let Some(g) = self.cloud_gen.take() {
            self.cloud.handle_connection_closed(ConnectionId(g), now);
        }
        if self.edge_gen.take().is_some() {
            self.edge.handle_bridge_transport_down(BridgeId(0), now);
        }
        self.drain();
    }

    /// Another connection takes the bridge's session over on the cloud:
    /// the cloud sends the bridge a clean DISCONNECT (0x8E).
    pub fn takeover(&mut self, client_id: &str) {
        let now = self.now;
        let conn = ConnectionId(9_999);
        self.cloud
            .handle_connection_opened(conn, ConnectionInfo::default(), now);
        let properties = Properties {
            session_expiry_interval: Some(3600),
            ..Properties::default()
        };
        self.cloud.handle_packet(
            conn,
            Packet::Connect(Connect {
                protocol_version: ProtocolVersion::V5,
                clean_start: false,
                keep_alive: 0,
                client_id: client_id.into(),
                will: None,
                username: None,
                password: None,
                properties,
            }),
            now,
        );
        self.cloud.handle_connection_closed(conn, now);
        self.drain();
    }

    /// Move everything that is due now until all parties are quiet.
    pub fn drain(&mut self) {
        let now = self.now;
        for _ in 0..1_000_000 {
            let mut progress = false;
            for side in [Side::Edge, Side::Cloud] {
                while let Some(t) = self.node(side).poll_transmit() {
                    progress = true;
                    match t {
                        NodeTransmit::Connection(t) => {
                            // The "socket" takes every byte at once.
                            self.node(side).handle_written(t.conn, t.data.len(), now);
                            if side == Side::Cloud && Some(t.conn.0) == self.cloud_gen {
                                if !self.blackhole {
                                    self.schedule(self.latency, Action::EdgeRead(t.conn.0, t.data));
                                }
                            } else if let Some(c) = self
                                .clients
                                .iter_mut()
                                .find(|c| c.side == side && c.conn == t.conn)
                            {
                                c.client.handle_read(&mut BytesMut::from(&t.data[..]), now);
                            }
                        }
                        NodeTransmit::Bridge { data, .. } => {
                            if let (Some(g), false) = (self.edge_gen, self.blackhole) {
                                self.schedule(self.latency, Action::CloudRead(g, data));
                            }
                        }
                    }
                }
                while let Some(ev) = self.node(side).poll_event() {
                    progress = true;
                    if std::env::var("BRIDGE_TRACE").is_ok() {
                        eprintln!("{:?} {side:?} event {ev:?}", self.elapsed());
                    }
                    match ev {
                        NodeEvent::Bridge { event, .. } => self.bridge_event(event),
                        NodeEvent::Broker(Event::CloseConnection { conn, .. })
                            if side == Side::Cloud && Some(conn.0) == self.cloud_gen =>
                        {
                            self.cloud_gen = None;
                            self.schedule(self.latency, Action::EdgeDown(conn.0));
                        }
                        NodeEvent::Broker(ev) if side == Side::Cloud => {
                            let at = self.elapsed();
                            self.cloud_events.push((at, ev));
                        }
                        _ => {}
                    }
                }
            }
            for i in 0..self.clients.len() {
                while let Some(data) = self.clients[i].client.poll_transmit() {
                    progress = true;
                    let (side, conn) = (self.clients[i].side, self.clients[i].conn);
                    self.node(side)
                        .handle_read(conn, &mut BytesMut::from(&data[..]), now);
                }
                while let Some(ev) = self.clients[i].client.poll_event() {
                    progress = true;
                    if let ClientEvent::Message(p) = ev {
                        self.clients[i].received.push(p);
                    }
                }
            }
            if !progress {
                return;
            }
        }
        panic!("livelock at {:?}", self.elapsed());
    }

    fn bridge_event(&mut self, event: BridgeEvent) {
        let at = self.elapsed();
        match &event {
            BridgeEvent::Dial {
                attempt, transport, ..
            } => {
                self.dials.push((at, *attempt, *transport));
                let g = self.next_gen;
                self.next_gen += 1;
                self.edge_gen = Some(g);
                if self.blackhole || self.silent_transports.contains(transport) {
                    // No answer: the bridge's connect timeout decides.
                } else if !self.reachable {
                    self.schedule(self.latency * 2, Action::EdgeFailed(g));
                } else {
                    self.schedule(self.latency, Action::CloudOpen(g));
                    self.schedule(self.latency * 2, Action::EdgeUp(g));
                }
            }
            BridgeEvent::CloseTransport => {
                if let Some(g) = self.edge_gen.take() {
                    self.schedule(self.latency, Action::CloudClosed(g));
                }
            }
            _ => {}
        }
        self.events.push((at, event));
    }

    fn trace(&self, dir: &str, g: u64, data: &Bytes) {
        let Ok(want) = std::env::var("BRIDGE_TRACE") else {
            return;
        };
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(p)) = mqtt_core::codec::decode(&mut buf, ProtocolVersion::V5, u32::MAX) {
            let show = want == "all"
                || match &p {
                    Packet::Publish(x) => want == "all" || x.payload == want.as_bytes() || x.dup,
                    Packet::PubRec(_)
                    | Packet::PubRel(_)
                    | Packet::PubComp(_)
                    | Packet::ConnAck(_)
                    | Packet::Connect(_)
                    | Packet::Disconnect(_) => true,
                    _ => false,
                };
            if show {
                eprintln!("{:?} {dir} g{g} {p:?}", self.elapsed());
            }
        }
    }

    fn act(&mut self, action: Action) {
        match &action {
            Action::CloudRead(g, d) if self.cloud_gen == Some(*g) => self.trace("->", *g, d),
            Action::EdgeRead(g, d) if self.edge_gen == Some(*g) => self.trace("<-", *g, d),
            _ => {}
        }
        let now = self.now;
        let b = BridgeId(0);
        match action {
            Action::EdgeUp(g) if self.edge_gen == Some(g) => {
                if std::env::var("BRIDGE_TRACE").is_ok() {
                    let c = self.edge.bridge(b).unwrap().remote_client();
                    eprintln!(
                        "{:?} up g{g}: inflight {} queued {} pending61 {}",
                        self.elapsed(),
                        c.inflight_len(),
                        c.queued_len(),
                        c.is_pending(std::num::NonZeroU16::new(61).unwrap())
                    );
                }
                self.edge.handle_bridge_transport_up(b, now)
            }
            Action::EdgeFailed(g) if self.edge_gen == Some(g) => {
                self.edge_gen = None;
                self.edge
                    .handle_bridge_transport_failed(b, TransportFailure::Refused, now)
            }
            Action::EdgeRead(g, data) if self.edge_gen == Some(g) => {
                self.edge
                    .handle_bridge_read(b, &mut BytesMut::from(&data[..]), now);
                if std::env::var("BRIDGE_TRACE").is_ok() {
                    let br = self.edge.bridge(b).unwrap();
                    let c = br.remote_client();
                    eprintln!(
                        "{:?} read g{g}: bridge {} client {:?} inflight {} queued {} timeout {:?}",
                        self.elapsed(),
                        br.state(),
                        c.state(),
                        c.inflight_len(),
                        c.queued_len(),
                        c.next_timeout().map(|(t, k)| (t - self.t0, k)),
                    );
                }
            }
            Action::EdgeDown(g) if self.edge_gen == Some(g) => {
                self.edge_gen = None;
                self.edge.handle_bridge_transport_down(b, now)
            }
            Action::CloudOpen(g) => {
                self.cloud_gen = Some(g);
                self.cloud
                    .handle_connection_opened(ConnectionId(g), ConnectionInfo::default(), now)
            }
            Action::CloudRead(g, data) if self.cloud_gen == Some(g) => {
                self.cloud
                    .handle_read(ConnectionId(g), &mut BytesMut::from(&data[..]), now)
            }
            Action::CloudClosed(g) if self.cloud_gen == Some(g) => {
                self.cloud_gen = None;
                self.cloud.handle_connection_closed(ConnectionId(g), now)
            }
            _ => {}
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let q = self.queue.keys().next().map(|(t, _)| *t);
        [q, self.edge.poll_timeout(), self.cloud.poll_timeout()]
            .into_iter()
            .chain(self.clients.iter().map(|c| c.client.poll_timeout()))
            .flatten()
            .min()
    }

    /// Advance virtual time to `t0 + until`, acting at every deadline.
    pub fn run_until(&mut self, until: Duration) {
        let end = self.t0 + until;
        self.drain();
        for _ in 0..10_000_000 {
            let Some(next) = self.next_deadline().filter(|n| *n <= end) else {
                self.now = self.now.max(end);
                return;
            };
            self.now = self.now.max(next);
            let now = self.now;
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let action = entry.remove();
                self.act(action);
                self.drain();
            }
            if self.edge.poll_timeout().is_some_and(|t| t <= now) {
                self.edge.handle_timeout(now);
            }
            if self.cloud.poll_timeout().is_some_and(|t| t <= now) {
                self.cloud.handle_timeout(now);
            }
            for c in &mut self.clients {
                if c.client.poll_timeout().is_some_and(|t| t <= now) {
                    c.client.handle_timeout(now);
                }
            }
            self.drain();
        }
        panic!("run_until did not settle by {until:?}");
    }

    /// Run in `step`s until `cond` holds or `limit` passes; the time it held.
    pub fn run_until_cond(
        &mut self,
        limit: Duration,
        step: Duration,
        mut cond: impl FnMut(&World) -> bool,
    ) -> Option<Duration> {
        while self.elapsed() < limit {
            if cond(self) {
                return Some(self.elapsed());
            }
            let next = self.elapsed() + step;
            self.run_until(next);
        }
        cond(self).then(|| self.elapsed())
    }

    pub fn bridge_state(&self) -> &'static str {
        self.edge.bridge(BridgeId(0)).unwrap().state().name()
    }

    pub fn metrics(&self) -> mqtt_core::bridge::BridgeMetrics {
        self.edge.bridge_metrics().remove(0)
    }

    /// Times since t0 at which the bridge became connected.
    pub fn connected_at(&self) -> Vec<Duration> {
        self.events
            .iter()
            .filter_map(|(t, e)| match e {
                BridgeEvent::StateChanged {
                    to: mqtt_core::bridge::BridgeState::Connected { .. },
                    ..
                } => Some(*t),
                _ => None,
            })
            .collect()
    }
}
