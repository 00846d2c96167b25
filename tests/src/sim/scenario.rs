//! Scenarios built from the simulator's parts: the keepalive scenario, the
//! QoS-under-faults scenario, and [`random`], which draws one of them with
//! random parameters from a seed (what `cargo xtask sim` runs).

use std::collections::BTreeSet;
use std::time::Duration;

use mqtt_core::broker::BrokerConfig;
use mqtt_core::client::ClientConfig;
use mqtt_core::codec::{ProtocolVersion, QoS};

use super::net::{HostId, LinkConfig, PartitionKind};
use super::nodes::{BrokerNode, ClientNode, ReconnectPolicy};
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

/// One random scenario from `seed`: a QoS run or a (small) keepalive run
/// with random sizes, links, broker limits, protocol versions and faults.
/// Each takes milliseconds to a few tens of milliseconds.
pub fn random(seed: u64) -> Result<Summary, Failure> {
    // Parameters come from their own stream so they do not shift the run's.
    let mut rng = SimRng::new(seed ^ 0x5eed_5eed_5eed_5eed);
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
