//! Model-based property test: random sequences of connect / subscribe /
//! publish / disconnect / drop / reconnect / time steps from several clients
//! (3.1.1 and 5.0), checked against a simple reference model:
//! - QoS 1 delivered at least once and QoS 2 exactly once to every matching
//!   session that exists (4.3.2, 4.3.3; MQTT-4.4.0-1 redelivery on reconnect),
//! - per-publisher per-topic order kept for QoS >= 1 (4.6, MQTT-4.6.0-5/-6),
//! - no message routed twice to one session (only DUP redeliveries repeat),
//! - retained state equal to the model's.
// The tests play the runtime: they read the clock once, for a base instant.
#![allow(clippy::disallowed_methods)]

mod broker_support;

use std::collections::{BTreeMap, HashMap, HashSet};

use broker_support::*;
use bytes::Bytes;
use mqtt_core::broker::{BrokerConfig, ConnectionId};
use mqtt_core::codec::{Disconnect, Packet, ProtocolVersion, PubResponse, QoS};
use mqtt_core::topic;
use proptest::prelude::*;

const CLIENTS: usize = 4;
const TOPICS: [&str; 3] = ["a", "b", "a/b"];
const FILTERS: [&str; 5] = ["a", "b", "a/+", "#", "a/b"];

#[derive(Debug, Clone)]
enum Op {
    Connect(usize),
    CleanConnect(usize),
    Disconnect(usize),
    Drop(usize),
    Subscribe(usize, usize, u8),
    Unsubscribe(usize, usize),
    Publish(usize, usize, u8, bool),
    ClearRetained(usize, usize),
    /// Process the inbox (ack everything received).
    Process(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS;
    prop_oneof![
        3 => c.clone().prop_map(Op::Connect),
        1 => c.clone().prop_map(Op::CleanConnect),
        1 => c.clone().prop_map(Op::Disconnect),
        2 => c.clone().prop_map(Op::Drop),
        3 => (c.clone(), 0..FILTERS.len(), 0..3u8).prop_map(|(c, f, q)| Op::Subscribe(c, f, q)),
        1 => (c.clone(), 0..FILTERS.len()).prop_map(|(c, f)| Op::Unsubscribe(c, f)),
        8 => (c.clone(), 0..TOPICS.len(), 0..3u8, proptest::bool::weighted(0.2))
            .prop_map(|(c, t, q, r)| Op::Publish(c, t, q, r)),
        1 => (c.clone(), 0..TOPICS.len()).prop_map(|(c, t)| Op::ClearRetained(c, t)),
        4 => c.prop_map(Op::Process),
        1 => (0..40_000u64).prop_map(Op::Advance),
    ]
}

fn qos(q: u8) -> QoS {
    QoS::from_u8(q).unwrap_or(QoS::AtMostOnce)
}

struct Client {
    id: String,
    version: ProtocolVersion,
    conn: Option<ConnectionId>,
    /// The broker holds a session for this client (model view).
    has_session: bool,
    /// Current connection used Clean Session 1 (3.1.1: session ends with it).
    clean: bool,
    subs: BTreeMap<&'static str, QoS>,
    /// Inbound QoS 2 packet ids awaiting PUBREL (client-side Method B).
    qos2_ids: HashSet<u16>,
    next_pid: u16,
}

struct World {
    h: Harness,
    clients: Vec<Client>,
    seq: u64,
    /// seq -> (publisher, topic)
    msgs: HashMap<u64, (usize, &'static str)>,
    /// (receiver, seq) -> expected QoS (>= 1 only); removed when the session ends.
    expected: HashMap<(usize, u64), QoS>,
    /// (receiver, seq) -> application deliveries (after QoS 2 dedupe).
    delivered: HashMap<(usize, u64), u32>,
    /// (receiver, seq) -> deliveries without DUP.
    fresh: HashMap<(usize, u64), u32>,
    /// receiver -> first deliveries at QoS >= 1 in order: (publisher, topic, seq)
    order: HashMap<usize, Vec<(usize, &'static str, u64)>>,
    retained: BTreeMap<&'static str, Bytes>,
}

impl World {
    fn new() -> Self {
        let h = Harness::new(BrokerConfig {
            sys_events: false,
            max_inflight: 3,
            v3_session_expiry: None,
            ..Default::default()
        });
        let clients = (0..CLIENTS)
            .map(|i| Client {
                id: format!("c{i}"),
                version: if i % 2 == 0 {
                    ProtocolVersion::V5
                } else {
                    ProtocolVersion::V3_1_1
                },
                conn: None,
                has_session: false,
                clean: false,
                subs: BTreeMap::new(),
                qos2_ids: HashSet::new(),
                next_pid: 0,
            })
            .collect();
        Self {
            h,
            clients,
            seq: 0,
            msgs: HashMap::new(),
            expected: HashMap::new(),
            delivered: HashMap::new(),
            fresh: HashMap::new(),
            order: HashMap::new(),
            retained: BTreeMap::new(),
        }
    }

    /// Notice connections the broker closed (keepalive).
    fn sync_closed(&mut self) {
        for i in 0..CLIENTS {
            if let Some(c) = self.clients[i].conn {
                if self.h.is_closed(c) {
                    self.lost(i);
                }
            }
        }
    }

    /// The connection of `i` is gone: unprocessed packets are lost.
    fn lost(&mut self, i: usize) {
        if let Some(c) = self.clients[i].conn.take() {
            self.h.take(c);
            if self.clients[i].clean && self.clients[i].version != ProtocolVersion::V5 {
                self.session_ended(i);
            }
        }
    }

    fn session_ended(&mut self, i: usize) {
        let cl = &mut self.clients[i];
        cl.has_session = false;
        cl.subs.clear();
        cl.qos2_ids.clear();
        let delivered = &self.delivered;
        self.expected
            .retain(|(r, s), _| *r != i || delivered.contains_key(&(*r, *s)));
    }

    fn connect(&mut self, i: usize, clean: bool) {
        if self.clients[i].conn.is_some() {
            self.disconnect(i);
        }
        let cl = &self.clients[i];
        let mut c = connect(&cl.id, cl.version, clean, 30);
        if cl.version == ProtocolVersion::V5 {
            c.properties.session_expiry_interval = Some(u32::MAX);
        }
        if clean {
            self.session_ended(i);
        }
        let (conn, ack) = self.h.connect_with(c);
        assert!(ack.reason_code.is_success());
        assert_eq!(
            ack.session_present,
            !clean && self.clients[i].has_session,
            "session present"
        );
        let cl = &mut self.clients[i];
        cl.conn = Some(conn);
        cl.has_session = true;
        cl.clean = clean;
    }

    fn disconnect(&mut self, i: usize) {
        if let Some(c) = self.clients[i].conn {
            self.process(i, false);
            if let Some(c2) = self.clients[i].conn {
                debug_assert_eq!(c, c2);
                self.h.send(c, Packet::Disconnect(Disconnect::default()));
            }
            self.lost(i);
        }
    }

    fn drop_conn(&mut self, i: usize) {
        if let Some(c) = self.clients[i].conn {
            self.h.broker.handle_connection_closed(c, self.h.now);
            self.h.pump();
            self.lost(i);
        }
    }

    fn next_pid(&mut self, i: usize) -> u16 {
        let cl = &mut self.clients[i];
        cl.next_pid = cl.next_pid % 60_000 + 1;
        cl.next_pid
    }

    fn publish(&mut self, i: usize, t: usize, q: u8, retain: bool, payload: Option<Bytes>) {
        let Some(c) = self.clients[i].conn else {
            return;
        };
        let topic_name = TOPICS[t];
        let q = qos(q);
        let clear = payload.is_some();
        self.seq += 1;
        let seq = self.seq;
        let payload = payload.unwrap_or_else(|| Bytes::from(seq.to_string()));
        let pid = self.next_pid(i);
        let mut p = publish(topic_name, "", q, pid);
        p.payload = payload.clone();
        p.retain = retain;
        // Model: who must get it.
        if !clear {
            self.msgs.insert(seq, (i, topic_name));
            for (r, cl) in self.clients.iter().enumerate() {
                if !cl.has_session {
                    continue;
                }
                let granted = cl
                    .subs
                    .iter()
                    .filter(|(f, _)| topic::matches(f, topic_name))
                    .map(|(_, q)| *q)
                    .max();
                if let Some(g) = granted {
                    let eq = q.min(g);
                    if eq != QoS::AtMostOnce {
                        self.expected.insert((r, seq), eq);
                    }
                }
            }
        }
        if retain {
            if payload.is_empty() {
                self.retained.remove(topic_name);
            } else {
                self.retained.insert(topic_name, payload);
            }
        }
        self.h.send(c, Packet::Publish(p));
        // The publisher completes its own flow (PUBREC -> PUBREL) at once.
        self.process(i, false);
    }

    /// Handle the inbox of `i`. `all`: also acknowledge deliveries; else
    /// only the client's own publish flow and leave the rest queued.
    fn process(&mut self, i: usize, all: bool) {
        for _ in 0..100 {
            let Some(c) = self.clients[i].conn else {
                return;
            };
            let inbox = self.h.take(c);
            if inbox.is_empty() {
                return;
            }
            let mut keep = Vec::new();
            let mut replies = Vec::new();
            for p in inbox {
                match p {
                    Packet::PubRec(r) => {
                        replies.push(Packet::PubRel(PubResponse::new(r.packet_id)))
                    }
                    Packet::PubAck(_)
                    | Packet::PubComp(_)
                    | Packet::SubAck(_)
                    | Packet::UnsubAck(_)
                    | Packet::PingResp => {}
                    other if !all => keep.push(other),
                    Packet::Publish(p) => {
                        let seq: Option<u64> = std::str::from_utf8(&p.payload)
                            .ok()
                            .and_then(|s| s.parse().ok());
                        let mut deliver = true;
                        match (p.qos, p.packet_id) {
                            (QoS::AtLeastOnce, Some(id)) => {
                                replies.push(Packet::PubAck(PubResponse::new(id)))
                            }
                            (QoS::ExactlyOnce, Some(id)) => {
                                deliver = self.clients[i].qos2_ids.insert(id.get());
                                replies.push(Packet::PubRec(PubResponse::new(id)));
                            }
                            _ => {}
                        }
                        if let (true, false, Some(seq)) = (deliver, p.retain, seq) {
                            *self.delivered.entry((i, seq)).or_default() += 1;
                            if !p.dup {
                                *self.fresh.entry((i, seq)).or_default() += 1;
                            }
                            if p.qos != QoS::AtMostOnce && self.delivered[&(i, seq)] == 1 {
                                if let Some(&(publisher, t)) = self.msgs.get(&seq) {
                                    self.order.entry(i).or_default().push((publisher, t, seq));
                                }
                            }
                        }
                    }
                    Packet::PubRel(r) => {
                        self.clients[i].qos2_ids.remove(&r.packet_id.get());
                        replies.push(Packet::PubComp(PubResponse::new(r.packet_id)));
                    }
                    other => panic!("unexpected packet to a client: {other:?}"),
                }
            }
            if !keep.is_empty() {
                self.h.inbox.insert(c, keep);
            }
            if replies.is_empty() {
                return;
            }
            for r in replies {
                if self.h.is_closed(c) {
                    break;
                }
                // Keep what arrived meanwhile after what we kept.
                let kept = self.h.take(c);
                self.h.send(c, r);
                let new = self.h.take(c);
                let mut all_pk = kept;
                all_pk.extend(new);
                if !all_pk.is_empty() {
                    self.h.inbox.insert(c, all_pk);
                }
            }
            if !all {
                // Own-flow replies may have produced more own-flow packets.
                continue;
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Connect(i) => {
                if self.clients[i].conn.is_none() {
                    self.connect(i, false);
                }
            }
            Op::CleanConnect(i) => self.connect(i, true),
            Op::Disconnect(i) => self.disconnect(i),
            Op::Drop(i) => self.drop_conn(i),
            Op::Subscribe(i, f, q) => {
                if let Some(c) = self.clients[i].conn {
                    let ack = self.h.subscribe(c, FILTERS[f], qos(q));
                    assert!(ack.reason_codes[0].is_success());
                    self.clients[i].subs.insert(FILTERS[f], qos(q));
                }
            }
            Op::Unsubscribe(i, f) => {
                if let Some(c) = self.clients[i].conn {
                    self.h.send(
                        c,
                        Packet::Unsubscribe(mqtt_core::codec::Unsubscribe {
                            packet_id: pid(2000),
                            filters: vec![FILTERS[f].into()],
                            properties: Default::default(),
                        }),
                    );
                    self.clients[i].subs.remove(FILTERS[f]);
                    self.process(i, false);
                }
            }
            Op::Publish(i, t, q, r) => self.publish(i, t, q, r, None),
            Op::ClearRetained(i, t) => self.publish(i, t, 0, true, Some(Bytes::new())),
            Op::Process(i) => self.process(i, true),
            Op::Advance(ms_) => {
                let now = self.h.now;
                self.h.advance_to(now + ms(ms_));
            }
        }
        self.sync_closed();
    }

    fn finish(&mut self) {
        for i in 0..CLIENTS {
            if self.clients[i].conn.is_none() && self.clients[i].has_session {
                self.connect(i, false);
            }
        }
        for _ in 0..50 {
            for i in 0..CLIENTS {
                self.process(i, true);
            }
            self.sync_closed();
        }
    }

    fn check(&self) {
        for (&(r, seq), &q) in &self.expected {
            let n = self.delivered.get(&(r, seq)).copied().unwrap_or(0);
            match q {
                QoS::AtLeastOnce => assert!(n >= 1, "QoS 1 message {seq} never reached c{r}"),
                QoS::ExactlyOnce => assert_eq!(n, 1, "QoS 2 message {seq} reached c{r} {n} times"),
                QoS::AtMostOnce => {}
            }
        }
        for (&(r, seq), &n) in &self.fresh {
            assert!(n <= 1, "message {seq} routed {n} times to c{r} without DUP");
        }
        for (r, list) in &self.order {
            let mut last: HashMap<(usize, &str), u64> = HashMap::new();
            for &(p, t, seq) in list {
                if let Some(prev) = last.insert((p, t), seq) {
                    assert!(
                        prev < seq,
                        "c{r}: message {seq} from c{p} on {t} after {prev}"
                    );
                }
            }
        }
        let state = self.h.broker.export();
        let broker_retained: BTreeMap<String, Bytes> = state
            .retained
            .iter()
            .map(|m| (m.topic.to_string(), m.payload.clone()))
            .collect();
        let model: BTreeMap<String, Bytes> = self
            .retained
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert_eq!(broker_retained, model, "retained state");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn broker_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..150)) {
        let mut w = World::new();
        for op in &ops {
            w.apply(op);
        }
        w.finish();
        w.check();
    }
}
