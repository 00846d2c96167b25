//! QUIC inside the simulator (issue 6): one real [`QuicEndpoint`]
//! (quinn-proto + rustls) per host, over the simulated datagram links.
//!
//! [`SimQuic`] is the QUIC half of a [`super::BridgedBrokerNode`]: it maps
//! each host to a fake UDP address (`10.0.x.y:14567`), turns
//! [`NetEvent::Datagram`](super::NetEvent::Datagram)s into
//! `handle_datagram`, `poll_transmit` into datagrams (GSO batches split),
//! and QUIC events into the calls the stream path makes on the core:
//!
//! - a bridge `Dial { transport: Quic }` is `connect`; `Connected` is
//!   transport up, stream bytes are bridge reads, `Closed` is transport
//!   down (or failed: refused, handshake timeout, ... before `Connected`);
//! - on a listening host, `Accepted` is a new client connection of the
//!   broker (ids from [`QUIC_CONN_BASE`]), stream bytes are reads, `Closed`
//!   is connection closed, and the broker's `CloseConnection` finishes the
//!   stream after its last bytes.
//!
//! Faults: [`SimQuic::block_udp`] drops every datagram to and from a peer
//! while stream connections still flow (hybrid fallback), and on the
//! remote side [`SimQuic::close_served`] (CONNECTION_CLOSE),
//! [`SimQuic::reset_served`] (RESET_STREAM + STOP_SENDING) and
//! [`SimQuic::vanish`] (the endpoint loses every connection's state and
//! says nothing; the peer learns by its own timers).
//!
//! Determinism: quinn's endpoint RNG is seeded from the world's
//! [`SimRng`]; TLS key shares still come from the OS RNG, so packet bytes
//! differ between runs but their sizes and times do not. The trace
//! records a datagram's length, never its bytes, so the trace hash of a
//! seed is stable. The certificate is Ed25519 (fixed-size signatures, so
//! handshake packet sizes do not vary either), made once per process.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_core::bridge::TransportFailure;
use mqtt_core::broker::{ConnectionId, ConnectionInfo, Event};
use mqtt_core::node::{BridgeId, Node as CoreNode};
use mqtt_quic::{
    client_config, server_config, CertificateDer, PrivateKeyDer, QuicCloseReason, QuicConnId,
    QuicEndpoint, QuicEvent, QuicSettings, ServerTrust, TlsConfigError, CODE_NO_ERROR,
};

use super::bridge_node::{BridgeRecord, FrameScan, PINGREQ, PINGRESP};
use super::net::HostId;
use super::world::Cx;
use super::SimRng;

/// Every host's UDP port.
pub const QUIC_PORT: u16 = 14567;
/// The name the test certificate is for; every QUIC dial checks it.
pub const SERVER_NAME: &str = "broker.sim";
/// Broker connection ids of QUIC connections start here: above every
/// socket id of a run, below the take-over ids of the bridge node.
pub const QUIC_CONN_BASE: u64 = 1 << 60;
/// Application error code the remote uses to reset the MQTT stream.
pub const CODE_RESET: u32 = 7;

struct TestCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// One self-signed Ed25519 certificate for [`SERVER_NAME`] per process:
/// key generation is the slow part, and every test shares it.
fn test_cert() -> &'static TestCert {
    static CERT: OnceLock<TestCert> = OnceLock::new();
    CERT.get_or_init(|| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
        let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])
            .expect("certificate parameters")
            .self_signed(&key)
            .expect("self-signed certificate");
        TestCert {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    })
}

/// QUIC settings for simulated links: NanoMQ's defaults are minutes long;
/// these keep runs short (handshake timeout 5 s, idle timeout 30 s, QUIC
/// keep-alive 10 s, initial RTT 100 ms).
pub fn sim_settings() -> QuicSettings {
    QuicSettings {
        keep_alive_interval: Some(Duration::from_secs(10)),
        idle_timeout: Duration::from_secs(30),
        handshake_timeout: Duration::from_secs(5),
        initial_rtt: Duration::from_millis(100),
        ..QuicSettings::default()
    }
}

/// The host behind a simulated address (`HostId::addr`), if it is one.
pub fn host_of(addr: SocketAddr) -> Option<HostId> {
    match addr.ip() {
        IpAddr::V4(ip) => {
            let [a, b, hi, lo] = ip.octets();
            (a == 10 && b == 0).then_some(HostId(u32::from(hi) << 8 | u32::from(lo)))
        }
        IpAddr::V6(_) => None,
    }
}

fn seed32(rng: &mut SimRng) -> [u8; 32] {
    let mut s = [0u8; 32];
    for chunk in s.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    s
}

/// A short name of a close reason, for counters.
pub fn reason_kind(r: &QuicCloseReason) -> &'static str {
    match r {
        QuicCloseReason::HandshakeTimeout => "handshake-timeout",
        QuicCloseReason::Refused => "refused",
        QuicCloseReason::Tls(_) => "tls",
        QuicCloseReason::IdleTimeout => "idle-timeout",
        QuicCloseReason::PeerClosed { .. } => "peer-closed",
        QuicCloseReason::PeerAborted(_) => "peer-aborted",
        QuicCloseReason::TransportError(_) => "transport-error",
        QuicCloseReason::Reset => "stateless-reset",
        QuicCloseReason::StreamReset { .. } => "stream-reset",
        QuicCloseReason::PeerFinished => "peer-finished",
        QuicCloseReason::LocallyClosed => "locally-closed",
        _ => "other",
    }
}

/// What the endpoint of a host did during a run.
#[derive(Debug, Clone, Default)]
pub struct QuicStats {
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    /// Dropped by [`SimQuic::block_udp`] (either way).
    pub datagrams_blocked: u64,
    pub bytes_sent: u64,
    /// Client connections that reached `Connected`.
    pub connected: u64,
    /// Server connections that reached `Accepted`.
    pub accepted: u64,
    /// Every `Closed` seen: (when, reason).
    pub closes: Vec<(Instant, QuicCloseReason)>,
    /// Endpoint state thrown away by [`SimQuic::vanish`].
    pub vanished: u64,
}

impl QuicStats {
    /// Closes of each kind ([`reason_kind`]).
    pub fn close_kinds(&self) -> BTreeMap<&'static str, u64> {
        let mut m = BTreeMap::new();
        for (_, r) in &self.closes {
            *m.entry(reason_kind(r)).or_default() += 1;
        }
        m
    }
}

/// A bridge's QUIC connection.
#[derive(Debug)]
struct BridgeConn {
    conn: QuicConnId,
    up: bool,
    out_scan: FrameScan,
    in_scan: FrameScan,
}

/// A client connection the listening side accepted.
#[derive(Debug)]
struct Served {
    conn: ConnectionId,
    peer: Option<HostId>,
    rx: BytesMut,
}

/// The QUIC endpoint of one host. See the module docs.
pub struct SimQuic {
    ep: QuicEndpoint,
    settings: QuicSettings,
    listen: bool,
    /// Bridge address -> host, as the node's stream table.
    hosts: BTreeMap<String, HostId>,
    blocked: BTreeSet<HostId>,
    bridges: BTreeMap<usize, BridgeConn>,
    served: BTreeMap<QuicConnId, Served>,
    by_conn: BTreeMap<ConnectionId, QuicConnId>,
    /// Endpoints so far ([`Self::vanish`] makes a new one, whose
    /// connection ids start again at 1): keeps broker connection ids
    /// unique.
    generation: u64,
    pub stats: QuicStats,
}

impl std::fmt::Debug for SimQuic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimQuic")
            .field("listen", &self.listen)
            .field("bridges", &self.bridges.len())
            .field("served", &self.served.len())
            .finish_non_exhaustive()
    }
}

impl SimQuic {
    /// An endpoint that accepts MQTT-over-QUIC clients when `listen` and
    /// dials for bridges (trusting the test certificate) always; `hosts`
    /// maps bridge addresses to hosts. `rng` is the world's
    /// ([`super::World::rng`]).
    pub fn new(
        settings: QuicSettings,
        listen: bool,
        hosts: BTreeMap<String, HostId>,
        rng: &mut SimRng,
    ) -> Result<Self, TlsConfigError> {
        let ep = Self::endpoint(&settings, listen, seed32(rng))?;
        Ok(Self {
            ep,
            settings,
            listen,
            hosts,
            blocked: BTreeSet::new(),
            bridges: BTreeMap::new(),
            served: BTreeMap::new(),
            by_conn: BTreeMap::new(),
            generation: 0,
            stats: QuicStats::default(),
        })
    }

    fn endpoint(
        settings: &QuicSettings,
        listen: bool,
        seed: [u8; 32],
    ) -> Result<QuicEndpoint, TlsConfigError> {
        let cert = test_cert();
        let server = if listen {
            Some(server_config(
                cert.chain.clone(),
                cert.key.clone_key(),
                None,
                settings,
            )?)
        } else {
            None
        };
        let client = client_config(ServerTrust::Roots(cert.chain.clone()), None, settings)?;
        Ok(QuicEndpoint::new(
            server,
            Some(client),
            settings,
            Some(seed),
        ))
    }

    pub fn settings(&self) -> &QuicSettings {
        &self.settings
    }

    /// Drop every datagram to and from `peer` (`true`) or stop doing so.
    /// Stream connections are not affected: UDP blocked, TCP open.
    pub fn block_udp(&mut self, peer: HostId, blocked: bool) {
        if blocked {
            self.blocked.insert(peer);
        } else {
            self.blocked.remove(&peer);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.ep.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
    }

    pub fn handle_datagram(&mut self, from: HostId, data: &Bytes, cx: &mut Cx<'_>) {
        if self.blocked.contains(&from) {
            self.stats.datagrams_blocked += 1;
            return;
        }
        self.stats.datagrams_received += 1;
        self.ep
            .handle_datagram(cx.now, from.addr(QUIC_PORT), BytesMut::from(&data[..]));
    }

    // ----- bridges -----------------------------------------------------

    /// Whether bridge `i`'s current transport is a QUIC connection.
    pub fn owns_bridge(&self, i: usize) -> bool {
        self.bridges.contains_key(&i)
    }

    /// Bridge `i` dials `address` over QUIC; `Err` = failed at once.
    pub fn dial_bridge(
        &mut self,
        i: usize,
        address: &str,
        cx: &mut Cx<'_>,
    ) -> Result<HostId, (Option<HostId>, TransportFailure)> {
        self.close_bridge(i, cx);
        let Some(&to) = self.hosts.get(address) else {
            return Err((
                None,
                TransportFailure::Error(format!("unknown host {address:?}")),
            ));
        };
        match self.ep.connect(cx.now, to.addr(QUIC_PORT), SERVER_NAME) {
            Ok(conn) => {
                cx.note("quic-dial", conn.0, u64::from(to.0));
                self.bridges.insert(
                    i,
                    BridgeConn {
                        conn,
                        up: false,
                        out_scan: FrameScan::default(),
                        in_scan: FrameScan::default(),
                    },
                );
                Ok(to)
            }
            Err(e) => Err((Some(to), TransportFailure::Error(e.to_string()))),
        }
    }

    /// The bridge is done with its QUIC transport: FIN after what it
    /// wrote (an open one), or abandon the handshake.
    pub fn close_bridge(&mut self, i: usize, cx: &mut Cx<'_>) {
        if let Some(b) = self.bridges.remove(&i) {
            cx.note("quic-close", b.conn.0, u64::from(b.up));
            if b.up {
                self.ep.finish(cx.now, b.conn);
            } else {
                self.ep.close(cx.now, b.conn, CODE_NO_ERROR, "abandoned");
            }
        }
    }

    /// Bytes from bridge `i` to its remote; PINGREQs are recorded.
    pub fn write_bridge(&mut self, i: usize, data: Bytes, record: &mut BridgeRecord, now: Instant) {
        let Some(b) = self.bridges.get_mut(&i) else {
            return;
        };
        if !b.up {
            return;
        }
        b.out_scan.scan(&data, |kind| {
            if kind == PINGREQ {
                record.pingreqs.push(now);
            }
        });
        // A connection quinn already closed loses them, as a socket would.
        let _ = self.ep.write(b.conn, data);
    }

    // ----- the listening side -----------------------------------------

    /// Whether `conn` is a QUIC client connection of this host's broker.
    pub fn owns_conn(&self, conn: ConnectionId) -> bool {
        self.by_conn.contains_key(&conn)
    }

    /// Bytes from the broker to a QUIC client connection.
    pub fn write_conn(&mut self, conn: ConnectionId, data: Bytes) {
        if let Some(&q) = self.by_conn.get(&conn) {
            let _ = self.ep.write(q, data);
        }
    }

    /// The broker's events about QUIC connections: `CloseConnection`
    /// finishes the stream after the bytes already written (a DISCONNECT,
    /// a refusing CONNACK). Other events are the caller's.
    pub fn on_broker_event(&mut self, ev: &Event, cx: &mut Cx<'_>) {
        if let Event::CloseConnection { conn, .. } = ev {
            if let Some(q) = self.by_conn.remove(conn) {
                self.served.remove(&q);
                cx.checks.keepalive.closed(cx.host, *conn);
                cx.note("quic-finish", q.0, 0);
                self.ep.finish(cx.now, q);
            }
        }
    }

    /// The QUIC client connections of this host's broker from `peer`
    /// (`None`: all).
    fn served_from(&self, peer: Option<HostId>) -> Vec<QuicConnId> {
        self.served
            .iter()
            .filter(|(_, s)| peer.is_none() || s.peer == peer)
            .map(|(q, _)| *q)
            .collect()
    }

    fn forget_served(&mut self, q: QuicConnId, node: &mut CoreNode, cx: &mut Cx<'_>) {
        if let Some(s) = self.served.remove(&q) {
            self.by_conn.remove(&s.conn);
            cx.checks.keepalive.closed(cx.host, s.conn);
            node.handle_connection_closed(s.conn, cx.now);
        }
    }

    /// The remote closes client connection `conn` if it is a QUIC one
    /// (CONNECTION_CLOSE; `reset`: RESET_STREAM + STOP_SENDING instead).
    pub fn close_conn(
        &mut self,
        node: &mut CoreNode,
        conn: ConnectionId,
        reset: bool,
        cx: &mut Cx<'_>,
    ) -> bool {
        let Some(&q) = self.by_conn.get(&conn) else {
            return false;
        };
        cx.note("quic-remote-close", q.0, u64::from(reset));
        self.forget_served(q, node, cx);
        if reset {
            self.ep.reset(cx.now, q, CODE_RESET);
        } else {
            self.ep
                .close(cx.now, q, CODE_NO_ERROR, "closed by the remote");
        }
        true
    }

    /// The remote closes the connections from `peer` (CONNECTION_CLOSE,
    /// no DISCONNECT); returns how many.
    pub fn close_served(
        &mut self,
        node: &mut CoreNode,
        peer: Option<HostId>,
        cx: &mut Cx<'_>,
    ) -> usize {
        let qs = self.served_from(peer);
        for &q in &qs {
            cx.note("quic-remote-close", q.0, 0);
            self.forget_served(q, node, cx);
            self.ep
                .close(cx.now, q, CODE_NO_ERROR, "closed by the remote");
        }
        qs.len()
    }

    /// The remote resets the MQTT stream of the connections from `peer`
    /// (RESET_STREAM and STOP_SENDING; the peer then closes); returns how
    /// many.
    pub fn reset_served(
        &mut self,
        node: &mut CoreNode,
        peer: Option<HostId>,
        cx: &mut Cx<'_>,
    ) -> usize {
        let qs = self.served_from(peer);
        for &q in &qs {
            cx.note("quic-remote-reset", q.0, 0);
            self.forget_served(q, node, cx);
            self.ep.reset(cx.now, q, CODE_RESET);
        }
        qs.len()
    }

    /// The endpoint loses the state of every connection without a word (a
    /// restarted process on the same address): a fresh endpoint takes its
    /// place, the broker learns its connections closed, bridges their
    /// transports went down. Peers learn only by their own timers (their
    /// packets now meet an endpoint that does not know them). Returns the
    /// connections lost.
    pub fn vanish(
        &mut self,
        node: &mut CoreNode,
        cx: &mut Cx<'_>,
    ) -> Result<usize, TlsConfigError> {
        self.ep = Self::endpoint(&self.settings, self.listen, seed32(cx.rng))?;
        self.generation += 1;
        self.stats.vanished += 1;
        let served = self.served_from(None);
        let n = served.len() + self.bridges.len();
        cx.note("quic-vanish", n as u64, 0);
        for q in served {
            self.forget_served(q, node, cx);
        }
        let bridges = std::mem::take(&mut self.bridges);
        for (i, b) in bridges {
            if b.up {
                node.handle_bridge_transport_down(BridgeId(i), cx.now);
            } else {
                node.handle_bridge_transport_failed(BridgeId(i), TransportFailure::Closed, cx.now);
            }
        }
        Ok(n)
    }

    // ----- the pump ----------------------------------------------------

    /// Datagrams out, events in; true if anything moved (the node's drain
    /// loops until nothing does).
    pub fn pump(
        &mut self,
        node: &mut CoreNode,
        records: &mut [BridgeRecord],
        cx: &mut Cx<'_>,
    ) -> bool {
        let mut busy = false;
        let now = cx.now;
        while let Some(d) = self.ep.poll_transmit(now) {
            busy = true;
            let Some(to) = host_of(d.destination) else {
                continue;
            };
            for seg in d.segments() {
                if self.blocked.contains(&to) {
                    self.stats.datagrams_blocked += 1;
                    continue;
                }
                self.stats.datagrams_sent += 1;
                self.stats.bytes_sent += seg.len() as u64;
                // The length only: packet bytes vary between runs (TLS key
                // shares), the trace hash must not.
                cx.trace.record(
                    now,
                    cx.host,
                    "send-dgram",
                    u64::from(to.0),
                    seg.len() as u64,
                );
                cx.net.send_datagram(now, cx.host, to, seg, cx.rng);
            }
        }
        while let Some(ev) = self.ep.poll_event() {
            busy = true;
            self.on_event(ev, node, records, cx);
        }
        busy
    }

    fn bridge_of(&self, conn: QuicConnId) -> Option<usize> {
        self.bridges
            .iter()
            .find(|(_, b)| b.conn == conn)
            .map(|(i, _)| *i)
    }

    fn on_event(
        &mut self,
        ev: QuicEvent,
        node: &mut CoreNode,
        records: &mut [BridgeRecord],
        cx: &mut Cx<'_>,
    ) {
        let now = cx.now;
        match ev {
            QuicEvent::Connected { conn, .. } => {
                self.stats.connected += 1;
                cx.note("quic-connected", conn.0, 0);
                if let Some(i) = self.bridge_of(conn) {
                    if let Some(b) = self.bridges.get_mut(&i) {
                        b.up = true;
                    }
                    node.handle_bridge_transport_up(BridgeId(i), now);
                }
            }
            QuicEvent::Accepted { conn, remote } => {
                self.stats.accepted += 1;
                cx.note("quic-accepted", conn.0, 0);
                let id = ConnectionId(QUIC_CONN_BASE + (self.generation << 40) + conn.0);
                self.served.insert(
                    conn,
                    Served {
                        conn: id,
                        peer: host_of(remote),
                        rx: BytesMut::new(),
                    },
                );
                self.by_conn.insert(id, conn);
                cx.checks.keepalive.opened(cx.host, id, now);
                let info = ConnectionInfo {
                    peer: Some(remote),
                    listener: "quic".to_owned(),
                    internal: false,
                };
                node.handle_connection_opened(id, info, now);
            }
            QuicEvent::Data { conn, bytes } => {
                if let Some(i) = self.bridge_of(conn) {
                    if let (Some(b), Some(r)) = (self.bridges.get_mut(&i), records.get_mut(i)) {
                        b.in_scan.scan(&bytes, |kind| {
                            if kind == PINGRESP {
                                r.pingresps.push(now);
                            }
                        });
                    }
                    node.handle_bridge_read(BridgeId(i), &mut BytesMut::from(&bytes[..]), now);
                } else if let Some(s) = self.served.get_mut(&conn) {
                    s.rx.extend_from_slice(&bytes);
                    let before = s.rx.len();
                    let id = s.conn;
                    node.handle_read(id, &mut s.rx, now);
                    // Only complete packets are consumed: shorter = a
                    // packet arrived now (the keepalive check's clock).
                    if s.rx.len() < before {
                        cx.checks.keepalive.packet(cx.host, id, now);
                    }
                }
            }
            QuicEvent::Closed { conn, reason } => {
                cx.note("quic-closed", conn.0, 0);
                self.stats.closes.push((now, reason.clone()));
                if let Some(i) = self.bridge_of(conn) {
                    let Some(b) = self.bridges.remove(&i) else {
                        return;
                    };
                    let id = BridgeId(i);
                    if b.up {
                        node.handle_bridge_transport_down(id, now);
                    } else {
                        node.handle_bridge_transport_failed(
                            id,
                            rt_common::quic::failure_of(&reason),
                            now,
                        );
                    }
                } else {
                    self.forget_served(conn, node, cx);
                }
            }
        }
    }
}
