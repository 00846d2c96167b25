//! Invariant checkers shared by every scenario. Nodes feed them as things
//! happen; a violation is recorded as a problem (with virtual time) and
//! reported with the seed by [`super::World::result`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mqtt_core::bridge::{Backoff, BridgeConfig, BridgeState, ReconnectPolicy};
use mqtt_core::broker::ConnectionId;
use mqtt_core::codec::QoS;

use super::net::HostId;

/// Everything checked during a run.
#[derive(Debug, Default)]
pub struct Checks {
    pub problems: Vec<String>,
    pub keepalive: KeepaliveCheck,
    pub ledger: Ledger,
    pub backoff: BackoffCheck,
}

/// One keepalive expiry seen at a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepaliveExpiry {
    pub broker: HostId,
    pub conn: ConnectionId,
    pub client_id: String,
    pub keep_alive: u16,
    pub last_packet: Instant,
    pub at: Instant,
}

#[derive(Debug, Clone)]
struct ConnRecord {
    client_id: String,
    keep_alive: u16,
    /// When the last complete packet from the client was handed to the
    /// broker (our own record, independent of the broker's).
    last_packet: Instant,
}

/// MQTT-3.1.2-24: the server disconnects a client that sent nothing for
/// 1.5 x keep alive, and (ours) exactly then: never early, never late.
#[derive(Debug)]
pub struct KeepaliveCheck {
    /// 1500 = 1.5 x (the broker's `keepalive_multiplier`).
    pub multiplier_permille: u64,
    open: BTreeMap<(HostId, ConnectionId), ConnRecord>,
    pub expiries: Vec<KeepaliveExpiry>,
    /// Connections whose CONNECT was accepted.
    pub connects: u64,
}

impl Default for KeepaliveCheck {
    fn default() -> Self {
        Self {
            multiplier_permille: 1500,
            open: BTreeMap::new(),
            expiries: Vec::new(),
            connects: 0,
        }
    }
}

impl KeepaliveCheck {
    pub fn limit(&self, keep_alive: u16) -> Duration {
        Duration::from_millis(u64::from(keep_alive) * self.multiplier_permille)
    }

    /// A connection opened (its first packet must come within the connect
    /// timeout; keepalive starts with CONNECT).
    pub fn opened(&mut self, broker: HostId, conn: ConnectionId, now: Instant) {
        self.open.insert(
            (broker, conn),
            ConnRecord {
                client_id: String::new(),
                keep_alive: 0,
                last_packet: now,
            },
        );
    }

    /// At least one complete packet from `conn` was read at `now`.
    pub fn packet(&mut self, broker: HostId, conn: ConnectionId, now: Instant) {
        if let Some(r) = self.open.get_mut(&(broker, conn)) {
            r.last_packet = now;
        }
    }

    pub fn connected(
        &mut self,
        broker: HostId,
        conn: ConnectionId,
        client_id: &str,
        keep_alive: u16,
    ) {
        self.connects += 1;
        if let Some(r) = self.open.get_mut(&(broker, conn)) {
            r.client_id = client_id.to_owned();
            r.keep_alive = keep_alive;
        }
    }

    pub fn closed(&mut self, broker: HostId, conn: ConnectionId) {
        self.open.remove(&(broker, conn));
    }

    /// The broker closed `conn` for keepalive at `now`, saying the client's
    /// last packet was at `last_packet` and the deadline `deadline`.
    pub fn expired(
        &mut self,
        problems: &mut Vec<String>,
        base: Instant,
        broker: HostId,
        conn: ConnectionId,
        (keep_alive, last_packet, deadline): (u16, Instant, Instant),
        now: Instant,
    ) {
        let t = |i: Instant| i.saturating_duration_since(base).as_secs_f64();
        let Some(r) = self.open.remove(&(broker, conn)) else {
            problems.push(format!(
                "+{:.6}s keepalive expiry of unknown {conn}",
                t(now)
            ));
            return;
        };
        let expected = r.last_packet + self.limit(r.keep_alive);
        if keep_alive != r.keep_alive
            || last_packet != r.last_packet
            || deadline != expected
            || now != expected
        {
            problems.push(format!(
                "+{:.6}s MQTT-3.1.2-24: {conn} ({:?}) expired at +{:.6}s (broker: keep alive {keep_alive}, last packet +{:.6}s, deadline +{:.6}s); expected keep alive {}, last packet +{:.6}s, expiry at +{:.6}s",
                t(now), r.client_id, t(now), t(last_packet), t(deadline), r.keep_alive, t(r.last_packet), t(expected)
            ));
        }
        self.expiries.push(KeepaliveExpiry {
            broker,
            conn,
            client_id: r.client_id,
            keep_alive,
            last_packet,
            at: now,
        });
    }

    /// No open connection is past its deadline at `now` (an expiry missed,
    /// i.e. late).
    pub fn finish(&self, problems: &mut Vec<String>, base: Instant, now: Instant) {
        for ((_, conn), r) in &self.open {
            if r.keep_alive > 0 && r.last_packet + self.limit(r.keep_alive) <= now {
                problems.push(format!(
                    "MQTT-3.1.2-24: {conn} ({:?}, keep alive {}) silent since +{:.6}s is still open at +{:.6}s",
                    r.client_id,
                    r.keep_alive,
                    r.last_packet.saturating_duration_since(base).as_secs_f64(),
                    now.saturating_duration_since(base).as_secs_f64()
                ));
            }
        }
    }
}

/// A simulated application message: who published it, its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgId {
    pub publisher: u32,
    pub seq: u64,
}

const MAGIC: &[u8; 4] = b"sim1";

impl MsgId {
    /// The payload that carries the id (plus `pad` filler bytes).
    pub fn payload(self, pad: usize) -> bytes::Bytes {
        let mut v = Vec::with_capacity(16 + pad);
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&self.publisher.to_be_bytes());
        v.extend_from_slice(&self.seq.to_be_bytes());
        v.resize(16 + pad, b'.');
        v.into()
    }

    pub fn parse(payload: &[u8]) -> Option<Self> {
        if payload.len() < 16 || &payload[..4] != MAGIC {
            return None;
        }
        let publisher = u32::from_be_bytes(payload[4..8].try_into().ok()?);
        let seq = u64::from_be_bytes(payload[8..16].try_into().ok()?);
        Some(Self { publisher, seq })
    }
}

#[derive(Debug, Clone)]
struct Published {
    topic: String,
    qos: QoS,
    /// Position among all publishes of the run.
    index: u64,
}

#[derive(Debug, Clone)]
struct Sub {
    filter: String,
    qos: QoS,
}

/// The QoS contract (MQTT 4.3: QoS 0 at most once, QoS 1 at least once,
/// QoS 2 exactly once) and order per publisher per topic and QoS (MQTT
/// 4.6, MQTT-4.6.0-6: an ordered topic keeps each publisher's order for the
/// same topic and QoS), end to end.
///
/// Subscribers are registered with the filters they hold for the whole run
/// (persistent sessions); every message published on a matching topic
/// after the subscriber's first SUBACK is then expected by it (one
/// published earlier may or may not be, as it may reach the broker first).
#[derive(Debug)]
pub struct Ledger {
    /// Check the order of QoS 0 deliveries too. Default true; the QoS
    /// scenarios turn it off until the broker's known reordering of QoS 0
    /// (a new QoS 0 message overtakes older QoS 0 messages still in the
    /// session queue after a reconnect) is fixed.
    pub qos0_order: bool,
    published: BTreeMap<MsgId, Published>,
    subs: BTreeMap<u32, Vec<Sub>>,
    /// Publish index from which each subscriber expects messages (its
    /// first SUBACK).
    active_from: BTreeMap<u32, u64>,
    delivered: BTreeMap<(u32, MsgId), u32>,
    /// Highest seq first-delivered per (subscriber, publisher, topic, QoS
    /// delivered): MQTT-4.6.0-6 orders "for the same Topic and QoS" only,
    /// so a QoS 0 message may overtake QoS 1 messages waiting for the
    /// inflight window (the broker does that).
    order: BTreeMap<(u32, u32, String, QoS), u64>,
    pub deliveries: u64,
    pub duplicates: u64,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            qos0_order: true,
            published: BTreeMap::new(),
            subs: BTreeMap::new(),
            active_from: BTreeMap::new(),
            delivered: BTreeMap::new(),
            order: BTreeMap::new(),
            deliveries: 0,
            duplicates: 0,
        }
    }
}

impl Ledger {
    pub fn subscribe(&mut self, subscriber: u32, filter: &str, qos: QoS) {
        self.subs.entry(subscriber).or_default().push(Sub {
            filter: filter.to_owned(),
            qos,
        });
    }

    /// `subscriber` got a SUBACK: its subscriptions are in place at the
    /// broker, so every later publish must reach it.
    pub fn subscribed(&mut self, subscriber: u32) {
        let next = self.published.len() as u64;
        self.active_from.entry(subscriber).or_insert(next);
    }

    pub fn published(&mut self, id: MsgId, topic: &str, qos: QoS) {
        let index = self.published.len() as u64;
        self.published.insert(
            id,
            Published {
                topic: topic.to_owned(),
                qos,
                index,
            },
        );
    }

    pub fn published_count(&self) -> usize {
        self.published.len()
    }

    /// The QoS `subscriber` should get `id` at, if it subscribes to it
    /// (overlapping subscriptions: the highest, MQTT-3.3.5-1).
    fn effective_qos(&self, subscriber: u32, p: &Published) -> Option<QoS> {
        self.subs
            .get(&subscriber)?
            .iter()
            .filter(|s| mqtt_core::topic::matches(&s.filter, &p.topic))
            .map(|s| s.qos.min(p.qos))
            .max()
    }

    /// `subscriber` received a message; `now_s` is the virtual time for
    /// messages.
    pub fn delivered(
        &mut self,
        problems: &mut Vec<String>,
        now_s: f64,
        subscriber: u32,
        topic: &str,
        qos: QoS,
        payload: &[u8],
    ) {
        let Some(id) = MsgId::parse(payload) else {
            return;
        };
        self.deliveries += 1;
        let Some(p) = self.published.get(&id).cloned() else {
            problems.push(format!(
                "+{now_s:.6}s subscriber {subscriber} got {id:?}, never published"
            ));
            return;
        };
        if p.topic != topic {
            problems.push(format!(
                "+{now_s:.6}s subscriber {subscriber} got {id:?} on {topic:?}, published on {:?}",
                p.topic
            ));
        }
        let Some(eff) = self.effective_qos(subscriber, &p) else {
            problems.push(format!("+{now_s:.6}s subscriber {subscriber} got {id:?} on {topic:?} without a matching subscription"));
            return;
        };
        if qos != eff {
            problems.push(format!(
                "+{now_s:.6}s subscriber {subscriber} got {id:?} at {qos:?}, expected {eff:?}"
            ));
        }
        let n = self.delivered.entry((subscriber, id)).or_insert(0);
        *n += 1;
        if *n > 1 {
            self.duplicates += 1;
            if eff != QoS::AtLeastOnce {
                problems.push(format!(
                    "+{now_s:.6}s {eff:?} message {id:?} on {topic:?} delivered {n} times to subscriber {subscriber} (MQTT-4.3.3 exactly once / 4.3.1 at most once)"
                ));
            }
            return;
        }
        let key = (subscriber, id.publisher, topic.to_owned(), eff);
        if let Some(&last) = self.order.get(&key) {
            if id.seq < last && (eff != QoS::AtMostOnce || self.qos0_order) {
                problems.push(format!(
                    "+{now_s:.6}s order: subscriber {subscriber} got {eff:?} seq {} of publisher {} on {topic:?} after seq {last} (MQTT-4.6.0-6 ordered topic)",
                    id.seq, id.publisher
                ));
            }
        }
        let e = self.order.entry(key).or_insert(id.seq);
        *e = (*e).max(id.seq);
    }

    /// After healing: every QoS 1/2 message arrived at every subscriber.
    pub fn finish(&self, problems: &mut Vec<String>) {
        let mut lost = 0;
        for &sub in self.subs.keys() {
            let Some(&from) = self.active_from.get(&sub) else {
                problems.push(format!("subscriber {sub} never got a SUBACK"));
                continue;
            };
            for (&id, p) in &self.published {
                let Some(eff) = self.effective_qos(sub, p) else {
                    continue;
                };
                if p.index < from {
                    continue;
                }
                let n = self.delivered.get(&(sub, id)).copied().unwrap_or(0);
                if n == 0 && eff != QoS::AtMostOnce {
                    lost += 1;
                    if lost <= 10 {
                        problems.push(format!(
                            "{eff:?} message {id:?} on {:?} never reached subscriber {sub} (MQTT 4.3: lost)",
                            p.topic
                        ));
                    }
                }
            }
        }
        if lost > 10 {
            problems.push(format!("... {lost} QoS 1/2 deliveries lost in total"));
        }
    }
}

/// A bridge's reconnect behaviour (the design brief's "backoff schedule
/// respected, no reconnect storm"), checked against its policy as it
/// happens:
///
/// - every delay into Backoff is exactly the next delay of a [`Backoff`]
///   built from the bridge's policy and seed (the schedule replays), and
///   independently within `base..=cap` and at most 3 x the previous one
///   (decorrelated jitter);
/// - the schedule returns to the base only after the link stayed up for
///   `stable`: a remote that accepts and drops at once keeps seeing
///   growing delays (no storm);
/// - the next attempt dials exactly when the Backoff ends (never earlier,
///   never later), a hybrid fallback stays within its attempt;
/// - attempts never stop: the bridge gives up (Failed) only at its first
///   failed attempt with `fail_fast`, or after exactly `max_attempts`
///   consecutive ones, and at the end of a run a bridge that is not
///   connected is still dialing or waiting for a due Backoff.
#[derive(Debug, Default)]
pub struct BackoffCheck {
    bridges: BTreeMap<(HostId, usize), BridgeTrack>,
    /// Totals over all bridges, for summaries.
    pub dials: u64,
    pub backoffs: u64,
    /// Losses after a stable link (the schedule restarted from the base).
    pub resets: u64,
    pub losses: u64,
    pub fatals: u64,
}

#[derive(Debug)]
struct BridgeTrack {
    name: String,
    policy: ReconnectPolicy,
    fail_fast: bool,
    transports: usize,
    connect_timeout: Duration,
    predictor: Backoff,
    prev_delay: Duration,
    state: &'static str,
    connected_since: Option<Instant>,
    backoff_until: Option<Instant>,
    attempt: u32,
    last_dial: Option<Instant>,
    consecutive_failures: u32,
}

impl BackoffCheck {
    /// Track bridge `index` of the node on `host`, before it starts.
    pub fn register(&mut self, host: HostId, index: usize, config: &BridgeConfig) {
        let policy = config.reconnect.clone();
        self.bridges.insert(
            (host, index),
            BridgeTrack {
                name: config.name.clone(),
                predictor: Backoff::new(&policy, config.seed),
                prev_delay: policy.base.min(policy.cap),
                policy,
                fail_fast: config.fail_fast,
                transports: config.transports.len(),
                connect_timeout: config.connect_timeout,
                state: "idle",
                connected_since: None,
                backoff_until: None,
                attempt: 0,
                last_dial: None,
                consecutive_failures: 0,
            },
        );
    }

    /// The bridge emitted `Dial { attempt }` at `now`.
    pub fn dial(
        &mut self,
        problems: &mut Vec<String>,
        base: Instant,
        (host, index): (HostId, usize),
        attempt: u32,
        now: Instant,
    ) {
        let t = |i: Instant| i.saturating_duration_since(base).as_secs_f64();
        let Some(b) = self.bridges.get_mut(&(host, index)) else {
            return;
        };
        self.dials += 1;
        let who = format!("+{:.6}s host{} bridge {:?}", t(now), host.0, b.name);
        if attempt == b.attempt + 1 {
            if b.attempt > 0 {
                match b.backoff_until.take() {
                    Some(until) if now < until => problems.push(format!(
                        "{who}: attempt {attempt} dialed {:?} before its backoff ended at +{:.6}s (reconnect storm)",
                        until - now,
                        t(until)
                    )),
                    Some(until) if now > until => problems.push(format!(
                        "{who}: attempt {attempt} dialed {:?} after its backoff ended at +{:.6}s",
                        now - until,
                        t(until)
                    )),
                    Some(_) => {}
                    None => problems.push(format!(
                        "{who}: attempt {attempt} dialed without a backoff first"
                    )),
                }
            }
        } else if !(attempt == b.attempt && b.transports > 1) {
            problems.push(format!(
                "{who}: dial of attempt {attempt} after attempt {} ({} transports)",
                b.attempt, b.transports
            ));
        }
        b.attempt = attempt;
        b.last_dial = Some(now);
    }

    /// The bridge changed state at `now`.
    pub fn state_changed(
        &mut self,
        problems: &mut Vec<String>,
        base: Instant,
        (host, index): (HostId, usize),
        from: &BridgeState,
        to: &BridgeState,
        now: Instant,
    ) {
        let t = |i: Instant| i.saturating_duration_since(base).as_secs_f64();
        let Some(b) = self.bridges.get_mut(&(host, index)) else {
            return;
        };
        let who = format!("+{:.6}s host{} bridge {:?}", t(now), host.0, b.name);
        if from.name() != b.state {
            problems.push(format!(
                "{who}: state change from {} but the last change went to {}",
                from.name(),
                b.state
            ));
        }
        b.state = to.name();
        let attempt_failed = matches!(
            from,
            BridgeState::Dialing { .. } | BridgeState::Handshaking { .. }
        );
        match to {
            BridgeState::Connected { .. } => {
                b.connected_since = Some(now);
                b.consecutive_failures = 0;
            }
            BridgeState::Backoff { until } => {
                self.backoffs += 1;
                if attempt_failed {
                    b.consecutive_failures += 1;
                    if b.fail_fast {
                        problems.push(format!(
                            "{who}: fail_fast, but a failed attempt went to backoff instead of failed"
                        ));
                    }
                    if b.policy
                        .max_attempts
                        .is_some_and(|m| b.consecutive_failures >= m)
                    {
                        problems.push(format!(
                            "{who}: {} consecutive failed attempts and still retrying (max_attempts {:?})",
                            b.consecutive_failures, b.policy.max_attempts
                        ));
                    }
                } else if let Some(since) = b.connected_since.take() {
                    self.losses += 1;
                    // Mosquitto's rule: only a link that stayed up for
                    // `stable` earns the base delay again.
                    if now.saturating_duration_since(since) >= b.policy.stable {
                        self.resets += 1;
                        b.predictor.reset();
                        b.prev_delay = b.policy.base.min(b.policy.cap);
                    }
                }
                let delay = until.saturating_duration_since(now);
                let expected = b.predictor.next_delay();
                if delay != expected {
                    problems.push(format!(
                        "{who}: backoff of {delay:?}, the policy and seed give {expected:?}"
                    ));
                }
                let lo = b.policy.base.min(b.policy.cap);
                let hi = b.policy.cap.min(b.prev_delay.saturating_mul(3).max(lo));
                if delay < lo || delay > hi {
                    problems.push(format!(
                        "{who}: backoff of {delay:?} outside {lo:?}..={hi:?} (base, min(cap, 3 x previous {:?}))",
                        b.prev_delay
                    ));
                }
                b.prev_delay = delay;
                b.backoff_until = Some(*until);
            }
            BridgeState::Failed => {
                self.fatals += 1;
                let failures = b.consecutive_failures + u32::from(attempt_failed);
                let allowed =
                    attempt_failed && (b.fail_fast || b.policy.max_attempts == Some(failures));
                if !allowed {
                    problems.push(format!(
                        "{who}: gave up after {failures} consecutive failed attempts (fail_fast {}, max_attempts {:?})",
                        b.fail_fast, b.policy.max_attempts
                    ));
                }
            }
            BridgeState::Stopped => b.backoff_until = None,
            BridgeState::Idle | BridgeState::Dialing { .. } | BridgeState::Handshaking { .. } => {
                if matches!(from, BridgeState::Connected { .. }) {
                    problems.push(format!(
                        "{who}: connected -> {} without a backoff",
                        to.name()
                    ));
                }
            }
        }
    }

    /// At the end of a run: a bridge that is not connected, failed or
    /// stopped is still trying.
    pub fn finish(&self, problems: &mut Vec<String>, base: Instant, now: Instant) {
        let t = |i: Instant| i.saturating_duration_since(base).as_secs_f64();
        for ((host, _), b) in &self.bridges {
            let who = format!("host{} bridge {:?}", host.0, b.name);
            let dial_overdue = b
                .last_dial
                .is_none_or(|d| now.saturating_duration_since(d) > b.connect_timeout);
            let backoff_overdue = b.backoff_until.is_none_or(|u| u < now);
            match b.state {
                "dialing" | "handshaking" if dial_overdue => problems.push(format!(
                    "{who} is {} at +{:.6}s, its last dial was longer than the connect timeout ago",
                    b.state,
                    t(now)
                )),
                "backoff" if backoff_overdue => problems.push(format!(
                    "{who} stopped trying: in backoff at +{:.6}s past its end",
                    t(now)
                )),
                "idle" => problems.push(format!("{who} never started")),
                _ => {}
            }
        }
    }

    /// (host, bridge index, state name) of every tracked bridge.
    pub fn states(&self) -> Vec<(HostId, usize, &'static str)> {
        self.bridges
            .iter()
            .map(|((h, i), b)| (*h, *i, b.state))
            .collect()
    }
}
