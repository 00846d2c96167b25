//! Shared harness for the `client_*` tests: a `Client` on a virtual clock
//! (one `Instant::now()` per test, then `t0 + Duration`), driven at packet
//! level. Included by the other files with `#[path]`; as its own test target
//! it only checks that the harness itself works.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use mqtt_core::client::{Client, ClientConfig, ClientEvent, TransportDeadReason};
use mqtt_core::codec::{
    ConnAck, Packet, PacketId, Properties, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode,
};

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

pub fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero packet id")
}

pub struct Harness {
    pub client: Client,
    pub t0: Instant,
    pub now: Instant,
    /// Every packet the client sent, with the virtual time it was sent.
    pub sent: Vec<(Duration, Packet)>,
    pub events: Vec<ClientEvent>,
}

impl Harness {
    pub fn new(config: ClientConfig) -> Self {
        // The one real clock read: the origin of virtual time.
        let t0 = Instant::now();
        let client = Client::new(config, t0).expect("valid config");
        Self {
            client,
            t0,
            now: t0,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn v5() -> Self {
        Self::new(ClientConfig {
            client_id: "c1".into(),
            ..Default::default()
        })
    }

    pub fn v311() -> Self {
        Self::new(ClientConfig {
            client_id: "c1".into(),
            protocol_version: ProtocolVersion::V3_1_1,
            ..Default::default()
        })
    }

    /// Move the virtual clock to `t0 + at` (never backwards).
    pub fn at(&mut self, at: Duration) -> Instant {
        let t = self.t0 + at;
        assert!(t >= self.now, "time goes forward");
        self.now = t;
        t
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Everything the client wants to send now, recorded.
    pub fn drain(&mut self) -> Vec<Packet> {
        let mut out = Vec::new();
        while let Some(p) = self.client.poll_packet() {
            self.sent.push((self.now - self.t0, p.clone()));
            out.push(p);
        }
        self.collect_events();
        out
    }

    pub fn collect_events(&mut self) {
        while let Some(e) = self.client.poll_event() {
            self.events.push(e);
        }
    }

    /// Take the events collected so far.
    pub fn take_events(&mut self) -> Vec<ClientEvent> {
        self.collect_events();
        std::mem::take(&mut self.events)
    }

    pub fn feed(&mut self, packet: Packet) -> Vec<Packet> {
        self.client.handle_packet(packet, self.now);
        self.drain()
    }

    /// Run timers up to `t0 + until` exactly as a runtime would: sleep to
    /// each `poll_timeout`, call `handle_timeout`, drain.
    pub fn run_until(&mut self, until: Duration) -> Vec<Packet> {
        let end = self.t0 + until;
        let mut out = Vec::new();
        while let Some(t) = self.client.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.client.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = self.now.max(end);
        out
    }

    /// Transport up, CONNECT out, CONNACK in; returns what was sent after
    /// CONNACK.
    pub fn connect_with(&mut self, connack: ConnAck) -> Vec<Packet> {
        self.client.handle_transport_up(self.now);
        let sent = self.drain();
        assert!(
            matches!(sent.as_slice(), [Packet::Connect(_)]),
            "only CONNECT before CONNACK: {sent:?}"
        );
        self.feed(Packet::ConnAck(connack))
    }

    pub fn connect(&mut self, session_present: bool) -> Vec<Packet> {
        self.connect_with(connack(session_present))
    }

    pub fn publish(&mut self, topic: &str, payload: &'static [u8], qos: QoS) -> Option<PacketId> {
        self.client
            .publish(
                topic.into(),
                Bytes::from_static(payload),
                qos,
                false,
                Properties::default(),
                self.now,
            )
            .expect("publish accepted")
    }

    pub fn transport_down(&mut self) {
        self.client.handle_transport_down(self.now);
        self.collect_events();
    }

    pub fn dead_reason(&mut self) -> Option<TransportDeadReason> {
        self.collect_events();
        self.events.iter().find_map(|e| match e {
            ClientEvent::TransportDead(r) => Some(r.clone()),
            _ => None,
        })
    }
}

pub fn connack(session_present: bool) -> ConnAck {
    ConnAck {
        session_present,
        reason_code: ReasonCode::SUCCESS,
        properties: Properties::default(),
    }
}

pub fn server_publish(topic: &str, qos: QoS, id: Option<u16>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: id.map(pid),
        properties: Properties::default(),
        payload: Bytes::from_static(b"x"),
    })
}

pub fn ack(id: PacketId) -> PubResponse {
    PubResponse::new(id)
}

pub fn publish_ids(packets: &[Packet]) -> Vec<(u16, bool)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.packet_id.map_or(0, |i| i.get()), p.dup)),
            _ => None,
        })
        .collect()
}

pub fn kinds(packets: &[Packet]) -> Vec<&'static str> {
    packets.iter().map(|p| p.packet_type().name()).collect()
}

#[test]
fn harness_connects() {
    let mut h = Harness::v5();
    h.connect(false);
    assert!(h.client.is_connected());
}
