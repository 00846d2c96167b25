//! Random interleavings of commands, transport up/down, timeouts and broker
//! responses against `Client`. Invariants checked after every step:
//! - nothing panics;
//! - a QoS 1/2 PUBLISH is only sent within the inflight window
//!   (min(max_inflight, server Receive Maximum), 5.0 section 4.9);
//! - packet ids are never handed out twice while in use (MQTT-2.2.1-3);
//! - every accepted QoS 1/2 publish is acknowledged, dropped with an event,
//!   or still held by the client: nothing is lost silently;
//!
//! At the end, a well-behaved broker gets every one of them acknowledged.

// One real `Instant` per test is the origin of virtual time; the client never reads the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mqtt_core::client::{Client, ClientConfig, ClientEvent, ConnectionState};
use mqtt_core::codec::{
    ConnAck, Packet, PacketId, Properties, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode,
    SubAck, SubscriptionOptions, UnsubAck,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Publish {
        qos: u8,
        size: u8,
    },
    Subscribe(u8),
    Unsubscribe(u8),
    Up {
        session_present: bool,
        receive_maximum: Option<u16>,
        maximum_qos: Option<u8>,
        maximum_packet_size: Option<u32>,
    },
    Down,
    Advance(u16),
    Ack(u8),
    ServerPublish {
        qos: u8,
        id: u16,
    },
    ServerPubRel(u16),
    PingResp,
    Disconnect,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3, any::<u8>()).prop_map(|(qos, size)| Op::Publish { qos, size }),
        1 => (0u8..4).prop_map(Op::Subscribe),
        1 => (0u8..4).prop_map(Op::Unsubscribe),
        2 => (
            any::<bool>(),
            proptest::option::of(1u16..6),
            proptest::option::of(0u8..3),
            proptest::option::weighted(0.2, 20u32..600),
        )
            .prop_map(|(session_present, receive_maximum, maximum_qos, maximum_packet_size)| {
                Op::Up { session_present, receive_maximum, maximum_qos, maximum_packet_size }
            }),
        1 => Just(Op::Down),
        2 => (0u16..8000).prop_map(Op::Advance),
        6 => any::<u8>().prop_map(Op::Ack),
        2 => (0u8..3, 1u16..5).prop_map(|(qos, id)| Op::ServerPublish { qos, id }),
        1 => (1u16..5).prop_map(Op::ServerPubRel),
        1 => Just(Op::PingResp),
        1 => Just(Op::Disconnect),
    ]
}

/// 5.0 CONNACK properties the model broker announces.
#[derive(Debug, Clone, Copy, Default)]
struct ServerLimits {
    receive_maximum: Option<u16>,
    maximum_qos: Option<QoS>,
    maximum_packet_size: Option<u32>,
}

/// What the model broker owes the client.
#[derive(Debug, Clone)]
enum Owed {
    PubAck(PacketId),
    PubRec(PacketId),
    PubComp(PacketId),
    SubAck(PacketId, usize),
    UnsubAck(PacketId, usize),
}

impl Owed {
    fn into_packet(self) -> Packet {
        match self {
            Owed::PubAck(id) => Packet::PubAck(PubResponse::new(id)),
            Owed::PubRec(id) => Packet::PubRec(PubResponse::new(id)),
            Owed::PubComp(id) => Packet::PubComp(PubResponse::new(id)),
            Owed::SubAck(id, n) => Packet::SubAck(SubAck {
                packet_id: id,
                reason_codes: vec![ReasonCode::GRANTED_QOS_1; n],
                properties: Properties::default(),
            }),
            Owed::UnsubAck(id, n) => Packet::UnsubAck(UnsubAck {
                packet_id: id,
                reason_codes: vec![ReasonCode::SUCCESS; n],
                properties: Properties::default(),
            }),
        }
    }
}

struct World {
    client: Client,
    now: Instant,
    owed: Vec<Owed>,
    /// QoS 1/2 publishes accepted and not yet finished.
    outstanding: HashSet<PacketId>,
}

impl World {
    fn new(version: ProtocolVersion, max_inflight: u16) -> Self {
        let t0 = Instant::now();
        let config = ClientConfig {
            client_id: "prop".into(),
            protocol_version: version,
            clean_start: false,
            keep_alive: 5,
            ping_timeout: Duration::from_secs(2),
            max_inflight,
            max_queued_messages: 8,
            max_queued_bytes: 2000,
            max_transmit_bytes: 256,
            ..Default::default()
        };
        Self {
            client: Client::new(config, t0).expect("valid config"),
            now: t0,
            owed: Vec::new(),
            outstanding: HashSet::new(),
        }
    }

    /// Pull everything the client sends, as a runtime would, and let the
    /// model broker note what it owes. Then handle events.
    fn pump(&mut self) -> Result<(), TestCaseError> {
        loop {
            let mut progressed = false;
            while let Some(packet) = self.client.poll_packet() {
                progressed = true;
                match packet {
                    Packet::Publish(p) => {
                        if let Some(id) = p.packet_id {
                            prop_assert!(
                                self.client.inflight_len() <= self.client.inflight_window(),
                                "inflight {} > window {}",
                                self.client.inflight_len(),
                                self.client.inflight_window()
                            );
                            self.owed.push(if p.qos == QoS::AtLeastOnce {
                                Owed::PubAck(id)
                            } else {
                                Owed::PubRec(id)
                            });
                        }
                    }
                    Packet::PubRel(r) => self.owed.push(Owed::PubComp(r.packet_id)),
                    Packet::Subscribe(s) => {
                        self.owed.push(Owed::SubAck(s.packet_id, s.filters.len()))
                    }
                    Packet::Unsubscribe(u) => {
                        self.owed.push(Owed::UnsubAck(u.packet_id, u.filters.len()))
                    }
                    _ => {}
                }
            }
            while let Some(event) = self.client.poll_event() {
                progressed = true;
                match event {
                    ClientEvent::PublishAcked { packet_id, .. } => {
                        prop_assert!(
                            self.outstanding.remove(&packet_id),
                            "ack for {packet_id} not outstanding"
                        );
                    }
                    ClientEvent::Dropped { message, .. } => {
                        if let Some(id) = message.packet_id {
                            prop_assert!(self.outstanding.remove(&id));
                        }
                    }
                    ClientEvent::TransportDead(_) => {
                        // The runtime drains and closes.
                        while self.client.poll_packet().is_some() {}
                        self.client.handle_transport_down(self.now);
                        self.owed.clear();
                    }
                    _ => {}
                }
            }
            if !progressed {
                break;
            }
        }
        for id in &self.outstanding {
            prop_assert!(self.client.is_pending(*id), "{id} lost silently");
        }
        Ok(())
    }

    fn feed(&mut self, packet: Packet) {
        self.client.handle_packet(packet, self.now);
    }

    fn up(&mut self, session_present: bool, limits: ServerLimits) {
        self.client.handle_transport_up(self.now);
        self.owed.clear();
        let mut ack = ConnAck {
            session_present,
            reason_code: ReasonCode::SUCCESS,
            properties: Properties::default(),
        };
        if self.client.protocol_version().is_v5() {
            ack.properties.receive_maximum = limits.receive_maximum;
            ack.properties.maximum_qos = limits.maximum_qos;
            ack.properties.maximum_packet_size = limits.maximum_packet_size;
        }
        while self.client.poll_packet().is_some() {} // CONNECT
        self.feed(Packet::ConnAck(ack));
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Publish { qos, size } => {
                let qos = QoS::from_u8(qos).expect("0..3");
                let payload = Bytes::from(vec![0u8; usize::from(size) * 4]);
                if let Ok(Some(id)) = self.client.publish(
                    "t/x".into(),
                    payload,
                    qos,
                    false,
                    Properties::default(),
                    self.now,
                ) {
                    prop_assert!(
                        self.outstanding.insert(id),
                        "packet id {id} reused while in use"
                    );
                }
            }
            Op::Subscribe(f) => {
                let filter = format!("f/{f}");
                let _ = self.client.subscribe(
                    vec![(filter.into(), SubscriptionOptions::new(QoS::AtLeastOnce))],
                    Properties::default(),
                    self.now,
                );
            }
            Op::Unsubscribe(f) => {
                let _ = self.client.unsubscribe(
                    vec![format!("f/{f}").into()],
                    Properties::default(),
                    self.now,
                );
            }
            Op::Up {
                session_present,
                receive_maximum,
                maximum_qos,
                maximum_packet_size,
            } => {
                let limits = ServerLimits {
                    receive_maximum,
                    maximum_qos: maximum_qos.and_then(|q| QoS::from_u8(q.min(1))),
                    maximum_packet_size,
                };
                self.up(session_present, limits);
            }
            Op::Down => {
                self.client.handle_transport_down(self.now);
                self.owed.clear();
            }
            Op::Advance(ms) => {
                self.now += Duration::from_millis(u64::from(ms));
                self.client.handle_timeout(self.now);
            }
            Op::Ack(i) => {
                if !self.owed.is_empty() && self.client.state() == ConnectionState::Connected {
                    let owed = self.owed.remove(usize::from(i) % self.owed.len());
                    self.feed(owed.into_packet());
                }
            }
            Op::ServerPublish { qos, id } => {
                if self.client.is_connected() {
                    let qos = QoS::from_u8(qos).expect("0..3");
                    self.feed(Packet::Publish(Publish {
                        dup: false,
                        qos,
                        retain: false,
                        topic: "in".into(),
                        packet_id: (qos != QoS::AtMostOnce)
                            .then(|| PacketId::new(id).expect("1..5")),
                        properties: Properties::default(),
                        payload: Bytes::new(),
                    }));
                }
            }
            Op::ServerPubRel(id) => self.feed(Packet::PubRel(PubResponse::new(
                PacketId::new(id).expect("1..5"),
            ))),
            Op::PingResp => self.feed(Packet::PingResp),
            Op::Disconnect => {
                let _ =
                    self.client
                        .disconnect(ReasonCode::SUCCESS, Properties::default(), self.now);
            }
        }
        self.pump()
    }

    /// A well-behaved broker answers everything until the client is idle.
    fn settle(&mut self, session_present: bool) -> Result<(), TestCaseError> {
        if self.client.state() != ConnectionState::Disconnected {
            self.client.handle_transport_down(self.now);
        }
        self.up(session_present, ServerLimits::default());
        self.pump()?;
        let mut rounds = 0;
        while !self.owed.is_empty() {
            rounds += 1;
            prop_assert!(rounds < 10_000, "livelock");
            let owed = self.owed.remove(0);
            self.feed(owed.into_packet());
            self.pump()?;
        }
        prop_assert!(self.client.is_connected());
        prop_assert!(
            self.client.is_idle(),
            "not idle: {} queued, {} in flight",
            self.client.queued_len(),
            self.client.inflight_len()
        );
        prop_assert!(
            self.outstanding.is_empty(),
            "never acknowledged: {:?}",
            self.outstanding
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_interleavings_keep_the_invariants(
        v5 in any::<bool>(),
        max_inflight in 1u16..6,
        ops in proptest::collection::vec(op(), 1..120),
        final_session in any::<bool>(),
    ) {
        let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V3_1_1 };
        let mut world = World::new(version, max_inflight);
        for op in ops {
            world.step(op)?;
        }
        world.settle(final_session)?;
    }
}
