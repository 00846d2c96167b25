//! Scenarios built from the simulator's parts: the keepalive scenario, the
//! QoS-under-faults scenario, and [`random`], which draws one of them with
//! random parameters from a seed (what `cargo xtask sim` runs).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mqtt_core::bridge::{
    BridgeConfig, BridgeState, Forward, Subscription as BridgeSubscription, Transport,
};
use mqtt_core::broker::BrokerConfig;
use mqtt_core::client::ClientConfig;
use mqtt_core::codec::{ProtocolVersion, QoS};

use super::bridge_node::BridgedBrokerNode;
use super::net::{HostId, LinkConfig, PartitionKind};
use super::nodes::{BrokerNode, ClientNode, ReconnectPolicy};
use super::quic::{sim_settings, SimQuic};
use super::world::{Failure, World};
use super::SimRng;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// What a finished run did (for assertions that the scenario exercised
/// something, and for the determinism test).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub trace_hash: u64,
    pub trace_entries: u64,
    pub steps: u64,
    pub virtual_time: Duration,
    pub published: usize,
    pub deliveries: u64,
    pub duplicates: u64,
    pub keepalive_expiries: usize,
    pub connects: u64,
    pub faults: u32,
}

fn summary(w: &World, faults: u32) -> Summary {
    Summary {
        trace_hash: w.trace_hash(),
        trace_entries: w.trace_entries(),
        steps: w.steps(),
        virtual_time: w.elapsed(),
        published: w.checks.ledger.published_count(),
        deliveries: w.checks.ledger.deliveries,
        duplicates: w.checks.ledger.duplicates,
        keepalive_expiries: w.checks.keepalive.expiries.len(),
        connects: w.checks.keepalive.connects,
        faults,
    }
}

fn version(rng: &mut SimRng, v5_share: f64) -> ProtocolVersion {
    if rng.chance(v5_share) {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V3_1_1
    }
}

/// A link with random latency around `typical`.
fn random_link(rng: &mut SimRng, typical: &LinkConfig) -> LinkConfig {
    LinkConfig {
        latency: rng.duration(typical.latency / 4, typical.latency * 2),
        jitter: rng.duration(Duration::ZERO, typical.jitter),
        ..*typical
    }
}

// ---------------------------------------------------------------------------
// Keepalive
// ---------------------------------------------------------------------------

/// Thousands of clients with random keep alives and random silences.
#[derive(Debug, Clone)]
pub struct KeepaliveParams {
    pub clients: u32,
    /// Keep alives are uniform in `1..=max_keep_alive` seconds.
    pub max_keep_alive: u16,
    /// Share of clients that freeze once (and may therefore expire).
    pub silence_share: f64,
    /// Share of clients that subscribe (QoS 1, persistent session) to the
    /// topic a few publishers use, so retry and resume timers run too.
    pub subscriber_share: f64,
    pub publishers: u32,
    pub broker: BrokerConfig,
    pub link: LinkConfig,
    pub v5_share: f64,
    /// Silences start within this window; the run lasts long enough after
    /// for every silence to end and every queue to drain.
    pub silence_window: Duration,
}

impl Default for KeepaliveParams {
    fn default() -> Self {
        Self {
            clients: 2000,
            max_keep_alive: 600,
            silence_share: 0.5,
            subscriber_share: 0.02,
            publishers: 5,
            broker: BrokerConfig::default(),
            link: LinkConfig {
                latency: Duration::from_millis(10),
                jitter: Duration::from_millis(5),
                ..LinkConfig::default()
            },
            v5_share: 0.5,
            silence_window: secs(1200),
        }
    }
}

/// Every keepalive expiry happens exactly at last packet + 1.5 x keep alive
/// (MQTT-3.1.2-24), none is missed, and only clients that went silent
/// expire. Subscribers' QoS 1 messages survive the expiries (persistent
/// sessions).
pub fn keepalive(seed: u64, p: &KeepaliveParams) -> Result<Summary, Failure> {
    let mut w = World::new(seed, p.link);
    let broker = w.add_host(
        Box::new(BrokerNode::new(
            BrokerConfig {
                rng_seed: seed,
                ..p.broker.clone()
            },
            w.base(),
        )),
        true,
    );
    let max_silence = Duration::from_secs(u64::from(p.max_keep_alive) * 3);
    let end_of_silences = secs(10) + p.silence_window + max_silence;
    let mut silent = BTreeSet::new();
    let mut subscribers = Vec::new();
    let mut hosts = Vec::new();
    for i in 0..p.clients {
        let rng = w.rng();
        let ka = rng.range(1, u64::from(p.max_keep_alive)) as u16;
        let config = ClientConfig {
            client_id: format!("ka-{i}").into(),
            protocol_version: version(rng, p.v5_share),
            keep_alive: ka,
            clean_start: false,
            session_expiry_interval: u32::MAX,
            ..ClientConfig::default()
        };
        let start = rng.duration(Duration::ZERO, secs(10));
        let link = random_link(rng, &p.link);
        // PINGREQs arrive at most ka + (largest - smallest one-way delay)
        // apart; when that can reach 1.5 x ka the network alone may expire
        // a client that never stopped pinging.
        let spread = link.jitter
            + if link.stall_probability > 0.0 {
                link.stall_max
            } else {
                Duration::ZERO
            };
        let may_expire = spread * 2 >= Duration::from_secs(u64::from(ka));
        let subscriber = rng.chance(p.subscriber_share);
        let freeze = rng.chance(p.silence_share).then(|| {
            let at = secs(10) + rng.duration(Duration::ZERO, p.silence_window);
            // Half to three times the keep alive: some expire, some do not.
            let len = rng.duration(
                Duration::from_millis(u64::from(ka) * 500),
                Duration::from_secs(u64::from(ka) * 3),
            );
            (at, len)
        });
        let reconnect = Some(ReconnectPolicy {
            min: Duration::from_millis(100),
            max: secs(5),
        });
        let base = w.base();
        let host = w.add_host(
            Box::new(ClientNode::new(i, config, broker, base, start, reconnect)),
            false,
        );
        w.net().set_link(host, broker, link);
        if subscriber {
            w.with_node::<ClientNode, _>(host, |c, cx| c.subscribe(cx, "ka/all", QoS::AtLeastOnce));
            subscribers.push(host);
        }
        if may_expire {
            silent.insert(format!("ka-{i}"));
        }
        if let Some((at, len)) = freeze {
            silent.insert(format!("ka-{i}"));
            w.schedule(at, move |w| {
                w.with_node::<ClientNode, _>(host, |c, cx| c.freeze(cx, len))
            });
        }
        hosts.push(host);
    }
    for k in 0..p.publishers.min(p.clients) {
        let host = hosts[k as usize];
        let end = end_of_silences;
        w.schedule(secs(15), move |w| {
            publish_loop(w, host, (secs(10), secs(60)), end)
        });
    }
    // Long enough after the last silence for every queue to drain.
    w.run_until(end_of_silences + secs(u64::from(p.max_keep_alive) * 2) + secs(60));

    let now = w.now();
    let base = w.base();
    let mut problems = std::mem::take(&mut w.checks.problems);
    w.checks.keepalive.finish(&mut problems, base, now);
    for e in &w.checks.keepalive.expiries {
        if !silent.contains(&e.client_id) {
            problems.push(format!(
                "{:?} (keep alive {}) never went silent but expired at +{:.6}s",
                e.client_id,
                e.keep_alive,
                e.at.duration_since(base).as_secs_f64()
            ));
        }
    }
    for &h in &hosts {
        let c = w.node::<ClientNode>(h);
        // A client the network alone may expire (see `may_expire`) can be
        // between expiry and redial when the run ends.
        let just_expired =
            w.checks.keepalive.expiries.iter().any(|e| {
                *e.client_id == **c.client.client_id() && now.duration_since(e.at) < secs(10)
            });
        if (!c.is_up() || !c.client.is_idle()) && !just_expired {
            problems.push(format!(
                "client {} not connected and idle at the end (up {}, queued {}, inflight {})",
                c.id,
                c.is_up(),
                c.client.queued_len(),
                c.client.inflight_len()
            ));
        }
    }
    // The broker's own view agrees: as many keepalive closes as we saw,
    // each detected with zero latency (handle_timeout ran at the deadline).
    let m = w.node::<BrokerNode>(broker).broker.metrics();
    let seen = w.checks.keepalive.expiries.len() as u64;
    if m.keepalive_timeouts != seen || m.keepalive_detection_latency.max != Duration::ZERO {
        problems.push(format!(
            "broker metrics: {} keepalive timeouts (we saw {seen}), detection latency max {:?}",
            m.keepalive_timeouts, m.keepalive_detection_latency.max
        ));
    }
    w.checks.ledger.finish(&mut problems);
    w.checks.problems = problems;
    w.result()?;
    Ok(summary(&w, silent.len() as u32))
}

fn publish_loop(w: &mut World, host: HostId, every: (Duration, Duration), end: Duration) {
    if w.elapsed() >= end {
        return;
    }
    w.with_node::<ClientNode, _>(host, |c, cx| {
        c.publish(cx, "ka/all", QoS::AtLeastOnce, 8);
    });
    let d = w.rng().duration(every.0, every.1);
    let at = w.elapsed() + d;
    w.schedule(at, move |w| publish_loop(w, host, every, end));
}

// ---------------------------------------------------------------------------
// QoS under faults
// ---------------------------------------------------------------------------

/// Publishers and subscribers with persistent sessions, and faults between
/// them and the broker.
#[derive(Debug, Clone)]
pub struct QosParams {
    pub publishers: u32,
    pub subscribers: u32,
    /// Messages per publisher, QoS 0/1/2 mixed, on three topics each.
    pub messages: u32,
    pub faults: u32,
    /// Publishing and faults happen in `5 s .. 5 s + window`.
    pub window: Duration,
    pub broker: BrokerConfig,
    pub link: LinkConfig,
    pub v5_share: f64,
    /// Client outgoing inflight window is uniform in `1..=max_inflight`.
    pub max_inflight: u16,
    /// Check QoS 0 order too (MQTT-4.6.0-6; regression test
    /// `sim_qos::qos0_order_kept_behind_queued_messages`). Default true.
    pub check_qos0_order: bool,
}

impl Default for QosParams {
    fn default() -> Self {
        Self {
            publishers: 3,
            subscribers: 3,
            messages: 200,
            faults: 15,
            window: secs(120),
            broker: BrokerConfig::default(),
            link: LinkConfig {
                latency: Duration::from_millis(20),
                jitter: Duration::from_millis(10),
                stall_probability: 0.01,
                stall_max: Duration::from_millis(500),
            },
            v5_share: 0.5,
            max_inflight: 20,
            check_qos0_order: true,
        }
    }
}

/// The kinds of fault [`qos`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    PartitionHold,
    PartitionDrop,
    /// The client's end vanishes without FIN; the broker learns by keepalive.
    ClientVanishes,
    /// Both ends go silent.
    Blackhole,
    /// Both ends get RST.
    Reset,
    /// The client sends DISCONNECT and reconnects.
    Disconnect,
    /// The client process stalls.
    Freeze,
    /// The broker refuses connections for a while.
    Refuse,
}

const FAULTS: [Fault; 8] = [
    Fault::PartitionHold,
    Fault::PartitionDrop,
    Fault::ClientVanishes,
    Fault::Blackhole,
    Fault::Reset,
    Fault::Disconnect,
    Fault::Freeze,
    Fault::Refuse,
];

/// After the faults heal: QoS 1 delivered at least once, QoS 2 exactly
/// once, QoS 0 at most once (MQTT 4.3), first deliveries in each
/// publisher's order per topic (MQTT 4.6), every client connected and idle.
pub fn qos(seed: u64, p: &QosParams) -> Result<Summary, Failure> {
    let mut w = World::new(seed, p.link);
    w.checks.ledger.qos0_order = p.check_qos0_order;
    let broker = w.add_host(
        Box::new(BrokerNode::new(
            BrokerConfig {
                rng_seed: seed,
                ..p.broker.clone()
            },
            w.base(),
        )),
        true,
    );
    let reconnect = Some(ReconnectPolicy {
        min: Duration::from_millis(200),
        max: secs(3),
    });
    let mut clients = Vec::new();
    let n = p.publishers + p.subscribers;
    for i in 0..n {
        let rng = w.rng();
        let config = ClientConfig {
            client_id: format!("c{i}").into(),
            protocol_version: version(rng, p.v5_share),
            keep_alive: rng.range(5, 30) as u16,
            clean_start: false,
            session_expiry_interval: u32::MAX,
            ping_timeout: secs(5),
            connect_timeout: secs(5),
            max_inflight: rng.range(1, u64::from(p.max_inflight.max(1))) as u16,
            ..ClientConfig::default()
        };
        let start = rng.duration(Duration::ZERO, secs(1));
        let link = random_link(rng, &p.link);
        let base = w.base();
        let host = w.add_host(
            Box::new(ClientNode::new(i, config, broker, base, start, reconnect)),
            false,
        );
        w.net().set_link(host, broker, link);
        clients.push(host);
    }
    let (pubs, subs) = clients.split_at(p.publishers as usize);
    for &s in subs {
        let rng = w.rng();
        let qos = if rng.chance(0.5) {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        // Everything, or one publisher's topics plus everything at QoS 2
        // (overlapping subscriptions: the highest QoS wins).
        let specific = rng
            .chance(0.3)
            .then(|| rng.index(p.publishers.max(1) as usize));
        w.with_node::<ClientNode, _>(s, |c, cx| {
            c.subscribe(cx, "t/#", qos);
            if let Some(k) = specific {
                c.subscribe(cx, &format!("t/{k}/+"), QoS::ExactlyOnce);
            }
        });
    }
    // Usually subscribed by then; on a slow link the ledger expects only
    // what is published after each subscriber's SUBACK.
    let start = secs(5);
    for (k, &host) in pubs.iter().enumerate() {
        for _ in 0..p.messages {
            let rng = w.rng();
            let at = start + rng.duration(Duration::ZERO, p.window);
            let topic = format!("t/{k}/{}", rng.index(3));
            let qos = match rng.index(10) {
                0 => QoS::AtMostOnce,
                1..=4 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            };
            w.schedule(at, move |w| {
                w.with_node::<ClientNode, _>(host, |c, cx| {
                    c.publish(cx, &topic, qos, 32);
                });
            });
        }
    }
    let mut latest_heal = start + p.window;
    for _ in 0..p.faults {
        let rng = w.rng();
        let at = start + secs(1) + rng.duration(Duration::ZERO, p.window);
        let host = clients[rng.index(clients.len())];
        let fault = FAULTS[rng.index(FAULTS.len())];
        let len = rng.duration(Duration::from_millis(500), secs(40));
        latest_heal = latest_heal.max(at + len);
        w.schedule(at, move |w| inject(w, fault, host, broker, len));
    }
    // After the last fault heals: reconnects, resends, keepalive detection
    // of silent peers (keep alive <= 30 s), and drain.
    w.run_until(latest_heal + secs(300));

    let mut problems = std::mem::take(&mut w.checks.problems);
    let (base, now) = (w.base(), w.now());
    w.checks.keepalive.finish(&mut problems, base, now);
    w.checks.ledger.finish(&mut problems);
    for &h in &clients {
        let c = w.node::<ClientNode>(h);
        if !c.is_up() || !c.client.is_connected() || !c.client.is_idle() {
            problems.push(format!(
                "client c{} not connected and idle after healing (up {}, state {:?}, queued {}, inflight {})",
                c.id,
                c.is_up(),
                c.client.state(),
                c.client.queued_len(),
                c.client.inflight_len()
            ));
        }
        if c.connacks > 1 && c.sessions_present + 1 < c.connacks {
            problems.push(format!(
                "client c{}: {} CONNACKs but only {} with the session present (persistent session lost)",
                c.id, c.connacks, c.sessions_present
            ));
        }
    }
    w.checks.problems = problems;
    w.result()?;
    Ok(summary(&w, p.faults))
}

fn inject(w: &mut World, fault: Fault, host: HostId, broker: HostId, len: Duration) {
    match fault {
        Fault::PartitionHold => w.partition(host, broker, len, PartitionKind::Hold),
        Fault::PartitionDrop => w.partition(host, broker, len, PartitionKind::Drop),
        Fault::ClientVanishes => w.vanish_between(host, broker),
        Fault::Blackhole => w.blackhole_between(host, broker),
        Fault::Reset => w.reset_between(host, broker),
        Fault::Disconnect => w.with_node::<ClientNode, _>(host, |c, cx| c.disconnect(cx)),
        Fault::Freeze => w.with_node::<ClientNode, _>(host, |c, cx| c.freeze(cx, len)),
        Fault::Refuse => {
            w.set_listening(broker, false);
            let at = w.elapsed() + len;
            w.schedule(at, move |w| w.set_listening(broker, true));
        }
    }
}

// ---------------------------------------------------------------------------
// Random scenarios
// ---------------------------------------------------------------------------

/// One random scenario from `seed`: a QoS run, a (small) keepalive run, or
/// a bridge run ([`bridge`], about 30%), with random sizes, links, broker
/// limits, protocol versions, reconnect policies and faults. Each takes
/// milliseconds to a few tens of milliseconds.
pub fn random(seed: u64) -> Result<Summary, Failure> {
    // Parameters come from their own stream so they do not shift the run's.
    let mut rng = SimRng::new(seed ^ 0x5eed_5eed_5eed_5eed);
    let (link, broker, v5_share) = random_link_and_broker(&mut rng);
    if rng.chance(0.3) {
        return random_bridge(seed, &mut rng, link, broker, v5_share).map(|s| s.run);
    }
    if rng.chance(0.25) {
        // No stalls and bounded jitter, so only silences expire clients.
        let link = LinkConfig {
            stall_probability: 0.0,
            jitter: link.jitter.min(Duration::from_millis(400)),
            ..link
        };
        keepalive(
            seed,
            &KeepaliveParams {
                clients: rng.range(2, 40) as u32,
                max_keep_alive: rng.range(1, 120) as u16,
                silence_share: rng.range(0, 10) as f64 / 10.0,
                subscriber_share: 0.2,
                publishers: rng.range(0, 3) as u32,
                broker,
                link,
                v5_share,
                silence_window: rng.duration(secs(10), secs(300)),
            },
        )
    } else {
        qos(
            seed,
            &QosParams {
                publishers: rng.range(1, 4) as u32,
                subscribers: rng.range(1, 4) as u32,
                messages: rng.range(1, 60) as u32,
                faults: rng.range(0, 12) as u32,
                window: rng.duration(secs(5), secs(120)),
                broker,
                link,
                v5_share,
                max_inflight: rng.range(1, 20) as u16,
                check_qos0_order: true,
            },
        )
    }
}

// ---------------------------------------------------------------------------
// Bridges
// ---------------------------------------------------------------------------

/// The address the edge's bridge dials; it maps to the cloud host.
pub const CLOUD_ADDRESS: &str = "cloud:1883";
/// The bridge's name in bridge scenarios.
pub const BRIDGE_NAME: &str = "up";
/// The bridge's client id on the cloud (the default for [`BRIDGE_NAME`]).
pub const BRIDGE_CLIENT_ID: &str = "sansmq-bridge-up";

/// A bridge config for scenarios: named [`BRIDGE_NAME`], dialing
/// [`CLOUD_ADDRESS`], forwarding `up/#` and subscribing to `down/#` at
/// QoS 2 (topics unchanged), keep alive 10 s, ping and connect timeouts 5 s.
pub fn bridge_config(seed: u64) -> BridgeConfig {
    BridgeConfig {
        name: BRIDGE_NAME.into(),
        addresses: vec![CLOUD_ADDRESS.into()],
        keep_alive: 10,
        ping_timeout: secs(5),
        connect_timeout: secs(5),
        forwards: vec![Forward::new("up/#", QoS::ExactlyOnce)],
        subscriptions: vec![BridgeSubscription::new("down/#", QoS::ExactlyOnce)],
        seed,
        ..BridgeConfig::default()
    }
}

/// Two brokers on their own hosts: `cloud` (no bridges, added first) and
/// `edge`, whose bridges dial `CLOUD_ADDRESS` = the cloud host.
/// `before_edge(world, edge, cloud)` runs before the edge host exists (its
/// bridge dials as soon as it is added): partitions, links, listening.
pub fn bridged_pair(
    w: &mut World,
    edge_broker: BrokerConfig,
    cloud_broker: BrokerConfig,
    bridges: Vec<BridgeConfig>,
    before_edge: impl FnOnce(&mut World, HostId, HostId),
) -> (HostId, HostId) {
    let now = w.now();
    // Both hosts get a QUIC endpoint when a bridge uses QUIC (issue 6);
    // TCP-only runs draw nothing more from the world's RNG.
    let quic = bridges
        .iter()
        .any(|b| b.transports.contains(&Transport::Quic));
    let mut cloud_node = BridgedBrokerNode::new(cloud_broker, Vec::new(), BTreeMap::new(), now)
        .expect("a broker without bridges");
    if quic {
        let q = SimQuic::new(sim_settings(), true, BTreeMap::new(), w.rng()).expect("QUIC config");
        cloud_node = cloud_node.with_quic(q);
    }
    let cloud = w.add_host(Box::new(cloud_node), true);
    let edge = w.next_host();
    before_edge(w, edge, cloud);
    let hosts = BTreeMap::from([(CLOUD_ADDRESS.to_owned(), cloud)]);
    let mut node = BridgedBrokerNode::new(edge_broker, bridges, hosts.clone(), now)
        .unwrap_or_else(|e| panic!("bridge config: {e}"));
    if quic {
        let q = SimQuic::new(sim_settings(), false, hosts, w.rng()).expect("QUIC config");
        node = node.with_quic(q);
    }
    let added = w.add_host(Box::new(node), true);
    assert_eq!(added, edge);
    (edge, cloud)
}

/// A persistent-session client `id` on `host`'s broker (5.0 or 3.1.1).
pub fn add_client(
    w: &mut World,
    id: u32,
    broker: HostId,
    version: ProtocolVersion,
    link: LinkConfig,
) -> HostId {
    let config = ClientConfig {
        client_id: format!("c{id}").into(),
        protocol_version: version,
        keep_alive: 30,
        clean_start: false,
        session_expiry_interval: u32::MAX,
        ping_timeout: secs(10),
        connect_timeout: secs(10),
        ..ClientConfig::default()
    };
    let base = w.base();
    let start = w.elapsed();
    let host = w.add_host(
        Box::new(ClientNode::new(
            id,
            config,
            broker,
            base,
            start,
            Some(ReconnectPolicy {
                min: Duration::from_millis(100),
                max: secs(2),
            }),
        )),
        false,
    );
    w.net().set_link(host, broker, link);
    host
}

/// How the remote side ends a bridge's established link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RemoteClose {
    /// The remote broker sends DISCONNECT (0x8E: another connection took
    /// the session over) and closes the connection.
    Disconnect,
    /// The remote closes the connection cleanly (FIN, no DISCONNECT).
    Close,
    /// The remote resets the connection (RST).
    Reset,
    /// The remote's end vanishes without FIN (it lost its interface): the
    /// remote knows at once, the bridge only by its PINGREQ timeout.
    Vanish,
    /// The link goes silent both ways: the bridge notices by its ping
    /// timeout, the remote by keepalive (1.5 x).
    Blackhole,
    /// A partition drops everything for a while (dials time out).
    PartitionDrop,
    /// A partition holds everything for a while, then delivers it.
    PartitionHold,
    /// The remote closes cleanly and refuses connections for a while.
    Refuse,
}

/// Every kind of [`RemoteClose`].
pub const REMOTE_CLOSES: [RemoteClose; 8] = [
    RemoteClose::Disconnect,
    RemoteClose::Close,
    RemoteClose::Reset,
    RemoteClose::Vanish,
    RemoteClose::Blackhole,
    RemoteClose::PartitionDrop,
    RemoteClose::PartitionHold,
    RemoteClose::Refuse,
];

/// Traffic through one bridge (edge -> cloud on `up/..`, cloud -> edge on
/// `down/..`) while the remote ends the bridge's link `closes` times.
#[derive(Debug, Clone)]
pub struct BridgeParams {
    pub closes: u32,
    /// Each close is one of these, drawn uniformly.
    pub kinds: Vec<RemoteClose>,
    /// Messages published per cycle (one cycle = link up, then a close)
    /// by the edge publisher and by the cloud publisher.
    pub up_messages: u32,
    pub down_messages: u32,
    /// QoS of each message, drawn uniformly from these.
    pub qos: Vec<QoS>,
    /// How long the link stays up before the next close.
    pub up_time: (Duration, Duration),
    /// How long a partition or refusal lasts.
    pub fault_len: (Duration, Duration),
    pub bridge: BridgeConfig,
    /// Between the brokers.
    pub bridge_link: LinkConfig,
    /// Between each client and its broker.
    pub client_link: LinkConfig,
    pub client_version: ProtocolVersion,
    pub edge_broker: BrokerConfig,
    pub cloud_broker: BrokerConfig,
    /// Clients never lose their own link in this scenario: check that each
    /// connected exactly once (the brokers kept running through every
    /// bridge loss). Off when links stall enough to expire a client.
    pub clients_connect_once: bool,
}

impl Default for BridgeParams {
    fn default() -> Self {
        Self {
            closes: 20,
            kinds: REMOTE_CLOSES.to_vec(),
            up_messages: 6,
            down_messages: 4,
            qos: vec![QoS::AtLeastOnce, QoS::ExactlyOnce],
            up_time: (Duration::from_millis(300), secs(3)),
            fault_len: (Duration::from_millis(500), secs(20)),
            bridge: BridgeConfig {
                reconnect: mqtt_core::bridge::ReconnectPolicy {
                    base: Duration::from_millis(200),
                    cap: secs(5),
                    stable: secs(30),
                    max_attempts: None,
                },
                ..bridge_config(0)
            },
            bridge_link: LinkConfig {
                latency: Duration::from_millis(20),
                jitter: Duration::from_millis(5),
                ..LinkConfig::default()
            },
            client_link: LinkConfig {
                latency: Duration::from_millis(2),
                jitter: Duration::from_millis(1),
                ..LinkConfig::default()
            },
            client_version: ProtocolVersion::V5,
            edge_broker: BrokerConfig::default(),
            cloud_broker: BrokerConfig::default(),
            clients_connect_once: true,
        }
    }
}

/// What a bridge run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeSummary {
    pub run: Summary,
    /// Closes injected, by kind.
    pub closes: BTreeMap<RemoteClose, u32>,
    pub connects: u64,
    pub connection_losses: u64,
    pub dials: u64,
    pub backoffs: u64,
    /// Losses after which the schedule restarted from the base.
    pub backoff_resets: u64,
    pub pingreqs: usize,
}

/// Client ids (ledger numbers) in bridge scenarios.
const EDGE_PUB: u32 = 0;
const CLOUD_SUB: u32 = 1;
const CLOUD_PUB: u32 = 2;
const EDGE_SUB: u32 = 3;

struct BridgeRun {
    edge: HostId,
    cloud: HostId,
    edge_pub: HostId,
    cloud_pub: HostId,
    p: BridgeParams,
    closes: BTreeMap<RemoteClose, u32>,
    remaining: u32,
    /// When the last close was injected.
    done_at: Option<Duration>,
}

type Shared<T> = std::rc::Rc<std::cell::RefCell<T>>;

/// The bridged broker node at `edge`.
pub fn edge_bridge(w: &World, edge: HostId) -> &BridgedBrokerNode {
    w.node::<BridgedBrokerNode>(edge)
}

/// Whether the first bridge of the broker at `edge` is connected.
pub fn bridge_connected(w: &World, edge: HostId) -> bool {
    matches!(
        edge_bridge(w, edge).bridge_state(0),
        Some(BridgeState::Connected { .. })
    )
}

/// Through one bridge, while the remote ends its link `closes` times in
/// the ways `kinds` lists: QoS 1 at least once, QoS 2 exactly once, QoS 0
/// at most once, in order (the [`Ledger`](super::Ledger)), both directions;
/// the bridge reconnects each time on its backoff schedule (the
/// [`BackoffCheck`](super::BackoffCheck)); the remote's keepalive expiries
/// exact (the [`KeepaliveCheck`](super::KeepaliveCheck)); afterwards the
/// bridge is connected with an empty cache and every client idle.
pub fn bridge(seed: u64, p: &BridgeParams) -> Result<BridgeSummary, Failure> {
    let mut w = World::new(seed, p.client_link);
    let bridge_link = p.bridge_link;
    let (edge, cloud) = bridged_pair(
        &mut w,
        BrokerConfig {
            node_name: "edge".into(),
            rng_seed: seed,
            ..p.edge_broker.clone()
        },
        BrokerConfig {
            node_name: "cloud".into(),
            rng_seed: seed ^ 1,
            ..p.cloud_broker.clone()
        },
        vec![BridgeConfig {
            seed,
            ..p.bridge.clone()
        }],
        move |w, edge, cloud| w.net().set_link(edge, cloud, bridge_link),
    );
    let v = p.client_version;
    let edge_pub = add_client(&mut w, EDGE_PUB, edge, v, p.client_link);
    let cloud_sub = add_client(&mut w, CLOUD_SUB, cloud, v, p.client_link);
    let cloud_pub = add_client(&mut w, CLOUD_PUB, cloud, v, p.client_link);
    let edge_sub = add_client(&mut w, EDGE_SUB, edge, v, p.client_link);
    w.with_node::<ClientNode, _>(cloud_sub, |c, cx| c.subscribe(cx, "up/#", QoS::ExactlyOnce));
    w.with_node::<ClientNode, _>(edge_sub, |c, cx| {
        c.subscribe(cx, "down/#", QoS::ExactlyOnce)
    });
    let run = std::rc::Rc::new(std::cell::RefCell::new(BridgeRun {
        edge,
        cloud,
        edge_pub,
        cloud_pub,
        p: p.clone(),
        closes: BTreeMap::new(),
        remaining: p.closes,
        done_at: None,
    }));
    {
        let run = run.clone();
        w.schedule(secs(1), move |w| bridge_cycle(w, run));
    }
    // Until every close happened (bounded: a cycle takes at most up_time +
    // fault + ping detection + a capped backoff).
    let per_cycle = p.up_time.1
        + p.fault_len.1
        + secs(u64::from(p.bridge.keep_alive)) * 2
        + p.bridge.ping_timeout
        + p.bridge.connect_timeout * 2
        + p.bridge.reconnect.cap * 2
        + secs(5);
    let limit = secs(2) + per_cycle * (p.closes + 1);
    while run.borrow().done_at.is_none() && w.elapsed() < limit {
        let next = w.elapsed() + secs(10);
        w.run_until(next);
    }
    // Then: reconnect, redeliver, drain; the remote's keepalive detects
    // dead links within 1.5 x keep alive.
    let settle = p.fault_len.1
        + secs(u64::from(p.bridge.keep_alive)) * 2
        + p.bridge.ping_timeout
        + p.bridge.reconnect.cap * 2
        + p.bridge.connect_timeout * 2
        + secs(60);
    let end = w.elapsed() + settle;
    w.run_until(end);
    // A link that stalls may still lose the bridge by itself late in the
    // run (a PINGRESP slower than the ping timeout): give the bridge the
    // time to come back and drain, a few times at most.
    for _ in 0..3 {
        let m = edge_bridge(&w, edge).node.bridge_metrics().remove(0);
        if matches!(m.state, BridgeState::Connected { .. }) && m.cache_depth == 0 {
            break;
        }
        let more = w.elapsed()
            + p.bridge.reconnect.cap
            + p.bridge.connect_timeout * 2
            + secs(u64::from(p.bridge.keep_alive)) * 2
            + secs(30);
        w.run_until(more);
    }

    let mut problems = std::mem::take(&mut w.checks.problems);
    let (base, now) = (w.base(), w.now());
    let run = run.borrow();
    if run.done_at.is_none() {
        problems.push(format!(
            "only {} of {} closes happened by +{:.1}s",
            p.closes - run.remaining,
            p.closes,
            limit.as_secs_f64()
        ));
    }
    w.checks.keepalive.finish(&mut problems, base, now);
    w.checks.backoff.finish(&mut problems, base, now);
    w.checks.ledger.finish(&mut problems);
    let node = edge_bridge(&w, edge);
    let m = node.node.bridge_metrics().remove(0);
    if !matches!(m.state, BridgeState::Connected { .. }) || m.cache_depth != 0 {
        problems.push(format!(
            "bridge not connected with an empty cache after healing: {m:?}"
        ));
    }
    let qos0 = p.qos.contains(&QoS::AtMostOnce);
    if !qos0 && m.dropped_cache_full + m.dropped_evicted + m.dropped_unsendable != 0 {
        problems.push(format!("bridge dropped messages: {m:?}"));
    }
    for h in [edge, cloud] {
        let n = w.node::<BridgedBrokerNode>(h).node.livelocks();
        if n != 0 {
            problems.push(format!("host{} node livelocked {n} times", h.0));
        }
    }
    for h in [edge_pub, cloud_sub, cloud_pub, edge_sub] {
        let c = w.node::<ClientNode>(h);
        if !c.is_up() || !c.client.is_connected() || !c.client.is_idle() {
            problems.push(format!(
                "client c{} not connected and idle at the end (up {}, queued {}, inflight {})",
                c.id,
                c.is_up(),
                c.client.queued_len(),
                c.client.inflight_len()
            ));
        }
        if p.clients_connect_once && c.connacks != 1 {
            problems.push(format!(
                "client c{} connected {} times: its broker dropped it during bridge losses",
                c.id, c.connacks
            ));
        }
    }
    if !problems.is_empty() {
        // What the bridge went through, for the report (the last changes).
        let states = &node.records[0].states;
        let lines: Vec<String> = states[states.len().saturating_sub(30)..]
            .iter()
            .map(|st| {
                format!(
                    "      +{:.6}s {} -> {} {}",
                    (st.at - base).as_secs_f64(),
                    st.from.name(),
                    st.to,
                    st.reason
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )
            })
            .collect();
        problems.push(format!(
            "(context) the bridge's last state changes:\n{}\n    its config: {:?}",
            lines.join("\n"),
            p.bridge
        ));
    }
    let pingreqs = node.records[0].pingreqs.len();
    let summary = BridgeSummary {
        run: summary(&w, p.closes),
        closes: run.closes.clone(),
        connects: m.connects,
        connection_losses: m.connection_losses,
        dials: w.checks.backoff.dials,
        backoffs: w.checks.backoff.backoffs,
        backoff_resets: w.checks.backoff.resets,
        pingreqs,
    };
    w.checks.problems = problems;
    w.result()?;
    Ok(summary)
}

/// One cycle: wait for the link, publish both ways while it is up, then
/// the remote ends it; again until every close happened, then a last
/// burst.
fn bridge_cycle(w: &mut World, run: Shared<BridgeRun>) {
    let (edge, remaining) = {
        let r = run.borrow();
        (r.edge, r.remaining)
    };
    if !bridge_connected(w, edge) {
        let at = w.elapsed() + Duration::from_millis(50);
        w.schedule(at, move |w| bridge_cycle(w, run));
        return;
    }
    let (cloud, edge_pub, cloud_pub, p) = {
        let r = run.borrow();
        (r.cloud, r.edge_pub, r.cloud_pub, r.p.clone())
    };
    let up = w.rng().duration(p.up_time.0, p.up_time.1);
    // What the cloud publisher sends before the bridge's subscription
    // exists on the cloud is nobody's (MQTT): publish down only once the
    // bridge's session there has it (it persists across reconnects).
    let down_ok = w
        .node::<BridgedBrokerNode>(cloud)
        .node
        .broker()
        .session_state(BRIDGE_CLIENT_ID)
        .is_some_and(|s| !s.subscriptions.is_empty());
    let now = w.elapsed();
    for (host, topic, n) in [
        (edge_pub, "up", p.up_messages),
        (cloud_pub, "down", if down_ok { p.down_messages } else { 0 }),
    ] {
        for _ in 0..n {
            let rng = w.rng();
            // Half just before the close, so it catches them in flight
            // (their resends test duplicates); some land after it, while
            // the link is down (cached).
            let at = if rng.chance(0.5) {
                now + up.saturating_sub(rng.duration(Duration::ZERO, Duration::from_millis(80)))
            } else {
                now + rng.duration(Duration::ZERO, up + up / 2)
            };
            let qos = p.qos[rng.index(p.qos.len())];
            let topic = format!("{topic}/{}", rng.index(3));
            w.schedule(at, move |w| {
                w.with_node::<ClientNode, _>(host, |c, cx| {
                    c.publish(cx, &topic, qos, 16);
                });
            });
        }
    }
    if remaining == 0 {
        // The last burst goes over the link as it is now; done.
        run.borrow_mut().done_at = Some(now);
    } else {
        w.schedule(now + up, move |w| remote_close(w, run));
    }
}

fn remote_close(w: &mut World, run: Shared<BridgeRun>) {
    let (edge, cloud, p) = {
        let r = run.borrow();
        (r.edge, r.cloud, r.p.clone())
    };
    if !bridge_connected(w, edge) {
        // Lost by itself meanwhile (a ping timeout on a stalled link):
        // that one does not count.
        return bridge_cycle(w, run);
    }
    let rng = w.rng();
    let kind = p.kinds[rng.index(p.kinds.len())];
    let len = rng.duration(p.fault_len.0, p.fault_len.1);
    let id = BRIDGE_CLIENT_ID;
    let done = match kind {
        RemoteClose::Disconnect => {
            w.with_node::<BridgedBrokerNode, _>(cloud, |n, cx| n.take_over_session(id, cx))
        }
        RemoteClose::Close => {
            w.with_node::<BridgedBrokerNode, _>(cloud, |n, cx| n.close_client(id, cx))
        }
        RemoteClose::Reset => {
            w.with_node::<BridgedBrokerNode, _>(cloud, |n, cx| n.reset_client(id, cx))
        }
        RemoteClose::Vanish => {
            let had = !w.net().conns_between(cloud, edge).is_empty();
            w.vanish_between(cloud, edge);
            // A bridge over QUIC: the cloud's endpoint loses its state.
            let quic = w.with_node::<BridgedBrokerNode, _>(cloud, |n, cx| {
                let BridgedBrokerNode { node, quic, .. } = n;
                quic.as_mut()
                    .is_some_and(|q| q.vanish(node, cx).is_ok_and(|lost| lost > 0))
            });
            had || quic
        }
        RemoteClose::Blackhole => {
            let had = !w.net().conns_between(cloud, edge).is_empty();
            w.blackhole_between(cloud, edge);
            had
        }
        RemoteClose::PartitionDrop => {
            w.partition(edge, cloud, len, PartitionKind::Drop);
            true
        }
        RemoteClose::PartitionHold => {
            w.partition(edge, cloud, len, PartitionKind::Hold);
            true
        }
        RemoteClose::Refuse => {
            w.set_listening(cloud, false);
            let at = w.elapsed() + len;
            w.schedule(at, move |w| w.set_listening(cloud, true));
            w.with_node::<BridgedBrokerNode, _>(cloud, |n, cx| n.close_client(id, cx))
        }
    };
    {
        let mut r = run.borrow_mut();
        if done {
            *r.closes.entry(kind).or_default() += 1;
            r.remaining -= 1;
        }
    }
    // Wait until the bridge noticed (a hold partition may not end the link
    // at all, which is fine: it is a close that did not happen).
    let at = w.elapsed() + Duration::from_millis(10);
    w.schedule(at, move |w| wait_for_loss(w, run, 0));
}

/// After a close: once the bridge is not connected (or a while passed),
/// the next cycle.
fn wait_for_loss(w: &mut World, run: Shared<BridgeRun>, polls: u32) {
    let edge = run.borrow().edge;
    // A silent link is noticed within keep alive + ping timeout (<= ~60 s
    // in every scenario); a held partition may heal without a loss.
    if bridge_connected(w, edge) && polls < 1200 {
        let at = w.elapsed() + Duration::from_millis(50);
        w.schedule(at, move |w| wait_for_loss(w, run, polls + 1));
    } else {
        bridge_cycle(w, run);
    }
}

/// A random link, broker limits and share of 5.0 clients.
fn random_link_and_broker(rng: &mut SimRng) -> (LinkConfig, BrokerConfig, f64) {
    let link = LinkConfig {
        latency: rng.duration(Duration::from_micros(100), Duration::from_millis(150)),
        jitter: rng.duration(Duration::ZERO, Duration::from_millis(50)),
        stall_probability: if rng.chance(0.5) {
            rng.range(0, 50) as f64 / 1000.0
        } else {
            0.0
        },
        stall_max: rng.duration(Duration::ZERO, secs(2)),
    };
    let broker = BrokerConfig {
        max_inflight: rng.range(1, 32) as u16,
        retry_interval: rng.chance(0.3).then(|| rng.duration(secs(1), secs(30))),
        ..BrokerConfig::default()
    };
    let v5_share = [0.0, 0.5, 1.0][rng.index(3)];
    (link, broker, v5_share)
}

/// A random bridge run from `seed` alone (what `random` draws about 30% of
/// the time).
pub fn random_bridge_from_seed(seed: u64) -> Result<BridgeSummary, Failure> {
    let mut rng = SimRng::new(seed ^ 0xb1d9_e5ee_d000_0000);
    let (link, broker, v5_share) = random_link_and_broker(&mut rng);
    random_bridge(seed, &mut rng, link, broker, v5_share)
}

/// A random [`bridge`] run: the bridge link is `link` (stalls included),
/// the bridge's version, keep alive, reconnect policy, inflight window and
/// transports (sometimes hybrid QUIC then TCP, sometimes QUIC only, over
/// the simulated datagram links) are drawn, and so are the kinds
/// and number of remote failures and the QoS mix.
pub fn random_bridge(
    seed: u64,
    rng: &mut SimRng,
    link: LinkConfig,
    broker: BrokerConfig,
    v5_share: f64,
) -> Result<BridgeSummary, Failure> {
    let base = rng.duration(Duration::from_millis(50), secs(2));
    let cap = rng.duration(base, secs(30));
    let reconnect = mqtt_core::bridge::ReconnectPolicy {
        base,
        cap,
        stable: rng.duration(secs(1), secs(60)),
        max_attempts: None,
    };
    let transports = if rng.chance(0.2) {
        vec![Transport::Quic, Transport::Tcp]
    } else if seed % 8 == 3 {
        // QUIC only (issue 6), picked from the seed so that the draws below
        // stay those of earlier versions for every other seed.
        vec![Transport::Quic]
    } else {
        vec![Transport::Tcp]
    };
    // The slowest round trip: both ways at full latency, jitter and one
    // stall. A ping timeout below it, or a keep alive whose 0.5 x margin
    // at the remote is below the spread of PINGREQ arrivals, loses the
    // link by itself now and then; allowed, but most runs should not.
    let spread = link.jitter
        + if link.stall_probability > 0.0 {
            link.stall_max
        } else {
            Duration::ZERO
        };
    let rtt_max = (link.latency + spread) * 2;
    let min_keep_alive = (spread * 4).as_secs() + 2;
    let bridge_cfg = BridgeConfig {
        protocol_version: version(rng, v5_share),
        keep_alive: rng.range(min_keep_alive, min_keep_alive.max(30)) as u16,
        ping_timeout: rtt_max + rng.duration(Duration::from_millis(200), secs(10)),
        connect_timeout: rng.duration(secs(2), secs(10)),
        max_inflight: rng.range(1, 50) as u16,
        transports,
        reconnect,
        ..bridge_config(seed)
    };
    let mut kinds: Vec<RemoteClose> = REMOTE_CLOSES
        .iter()
        .copied()
        .filter(|_| rng.chance(0.6))
        .collect();
    if bridge_cfg.transports.contains(&Transport::Quic) {
        // Blackhole acts on stream connections only (a QUIC link that
        // goes silent is PartitionDrop's or Vanish's).
        kinds.retain(|k| *k != RemoteClose::Blackhole);
    }
    let qos = match rng.index(3) {
        0 => vec![QoS::AtLeastOnce, QoS::ExactlyOnce],
        1 => vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce],
        _ => vec![QoS::ExactlyOnce],
    };
    let p = BridgeParams {
        closes: if kinds.is_empty() {
            0
        } else {
            rng.range(0, 8) as u32
        },
        kinds,
        up_messages: rng.range(1, 10) as u32,
        down_messages: rng.range(0, 6) as u32,
        qos,
        up_time: (
            link.latency * 4 + Duration::from_millis(100),
            link.latency * 4 + rng.duration(Duration::from_millis(200), secs(5)),
        ),
        fault_len: (Duration::from_millis(200), rng.duration(secs(1), secs(30))),
        bridge: bridge_cfg,
        bridge_link: link,
        client_link: LinkConfig {
            latency: rng.duration(Duration::from_micros(100), Duration::from_millis(20)),
            jitter: rng.duration(Duration::ZERO, Duration::from_millis(5)),
            ..LinkConfig::default()
        },
        client_version: version(rng, v5_share),
        edge_broker: broker.clone(),
        cloud_broker: broker,
        clients_connect_once: true,
    };
    bridge(seed, &p)
}
