//! Test harness for the broker: virtual time, byte-level clients, and
//! inboxes of decoded packets per connection.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_core::broker::{
    Broker, BrokerConfig, ConnectionId, ConnectionInfo, DisconnectReason, Event,
};
use mqtt_core::codec::{
    decode, encode, ConnAck, Connect, Packet, PacketId, Properties, ProtocolVersion, PubResponse,
    Publish, QoS, SubAck, Subscribe, SubscriptionOptions, Will, MAX_PACKET_SIZE,
};

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero packet id")
}

pub struct Harness {
    pub broker: Broker,
    pub t0: Instant,
    pub now: Instant,
    next_conn: u64,
    versions: HashMap<ConnectionId, ProtocolVersion>,
    /// Decoded packets each connection received, in order.
    pub inbox: HashMap<ConnectionId, Vec<Packet>>,
    /// Connections the broker closed, with the reason and the instant.
    pub closed: HashMap<ConnectionId, (DisconnectReason, Instant)>,
    pub events: Vec<Event>,
    /// Report bytes as written right away (no backpressure) when true.
    pub auto_written: bool,
    rx: HashMap<ConnectionId, BytesMut>,
}

impl Harness {
    pub fn new(config: BrokerConfig) -> Self {
        let t0 = Instant::now();
        Self {
            broker: Broker::new(config, t0),
            t0,
            now: t0,
            next_conn: 1,
            versions: HashMap::new(),
            inbox: HashMap::new(),
            closed: HashMap::new(),
            events: Vec::new(),
            auto_written: true,
            rx: HashMap::new(),
        }
    }

    pub fn open(&mut self) -> ConnectionId {
        let c = ConnectionId(self.next_conn);
        self.next_conn += 1;
        self.broker
            .handle_connection_opened(c, ConnectionInfo::default(), self.now);
        self.pump();
        c
    }

    /// Encode `p` like a client of `version` would and feed the bytes.
    pub fn send(&mut self, conn: ConnectionId, p: Packet) {
        let version = match &p {
            Packet::Connect(c) => {
                self.versions.insert(conn, c.protocol_version);
                c.protocol_version
            }
            _ => self.version(conn),
        };
        let mut buf = BytesMut::new();
        encode(&p, version, &mut buf).expect("test packet encodes");
        self.send_bytes(conn, &buf);
    }

    pub fn send_bytes(&mut self, conn: ConnectionId, bytes: &[u8]) {
        let mut buf = BytesMut::from(bytes);
        self.broker.handle_read(conn, &mut buf, self.now);
        self.pump();
    }

    pub fn version(&self, conn: ConnectionId) -> ProtocolVersion {
        self.versions
            .get(&conn)
            .copied()
            .unwrap_or(ProtocolVersion::V5)
    }

    pub fn pump(&mut self) {
        while let Some(t) = self.broker.poll_transmit() {
            let version = self.version(t.conn);
            let rx = self.rx.entry(t.conn).or_default();
            rx.extend_from_slice(&t.data);
            while let Some(p) = decode(rx, version, MAX_PACKET_SIZE).expect("broker output decodes")
            {
                self.inbox.entry(t.conn).or_default().push(p);
            }
            if self.auto_written {
                self.broker.handle_written(t.conn, t.data.len(), self.now);
            }
        }
        while let Some(e) = self.broker.poll_event() {
            if let Event::CloseConnection { conn, reason } = &e {
                self.closed.insert(*conn, (reason.clone(), self.now));
            }
            self.events.push(e);
        }
    }

    /// Step virtual time to `t`, firing every deadline on the way exactly at
    /// its instant (as a runtime sleeping until `poll_timeout` would).
    pub fn advance_to(&mut self, t: Instant) {
        let mut steps = 0u64;
        while let Some(d) = self.broker.poll_timeout() {
            if d > t {
                break;
            }
            self.now = self.now.max(d);
            self.broker.handle_timeout(self.now);
            self.pump();
            steps += 1;
            assert!(steps < 10_000_000, "livelock in advance_to");
        }
        self.now = self.now.max(t);
    }

    pub fn advance(&mut self, d: Duration) {
        let t = self.now + d;
        self.advance_to(t);
    }

    pub fn take(&mut self, conn: ConnectionId) -> Vec<Packet> {
        self.inbox.remove(&conn).unwrap_or_default()
    }

    pub fn is_closed(&self, conn: ConnectionId) -> bool {
        self.closed.contains_key(&conn)
    }

    /// Open a connection, CONNECT, and check the CONNACK is a success.
    pub fn connect_with(&mut self, connect: Connect) -> (ConnectionId, ConnAck) {
        let conn = self.open();
        self.send(conn, Packet::Connect(connect));
        let mut got = self.take(conn);
        assert!(!got.is_empty(), "no CONNACK");
        let Packet::ConnAck(ack) = got.remove(0) else {
            panic!("first packet is not CONNACK");
        };
        // Anything after CONNACK (resent or queued messages) stays in the inbox.
        if !got.is_empty() {
            self.inbox.insert(conn, got);
        }
        (conn, ack)
    }

    pub fn connect(&mut self, id: &str, version: ProtocolVersion) -> ConnectionId {
        let (conn, ack) = self.connect_with(connect(id, version, true, 0));
        assert!(ack.reason_code.is_success(), "refused: {ack:?}");
        conn
    }

    pub fn subscribe(&mut self, conn: ConnectionId, filter: &str, qos: QoS) -> SubAck {
        self.subscribe_opts(
            conn,
            filter,
            SubscriptionOptions::new(qos),
            Properties::default(),
        )
    }

    pub fn subscribe_opts(
        &mut self,
        conn: ConnectionId,
        filter: &str,
        options: SubscriptionOptions,
        properties: Properties,
    ) -> SubAck {
        self.send(
            conn,
            Packet::Subscribe(Subscribe {
                packet_id: pid(1000),
                filters: vec![(filter.into(), options)],
                properties,
            }),
        );
        let got = self.take(conn);
        let mut suback = None;
        let mut rest = Vec::new();
        for p in got {
            match p {
                Packet::SubAck(s) if suback.is_none() => suback = Some(s),
                other => rest.push(other),
            }
        }
        if !rest.is_empty() {
            self.inbox.insert(conn, rest);
        }
        suback.expect("SUBACK")
    }

    pub fn publish(&mut self, conn: ConnectionId, topic: &str, payload: &str, qos: QoS, id: u16) {
        self.send(conn, Packet::Publish(publish(topic, payload, qos, id)));
    }

    /// PUBLISH packets in a connection's inbox (taken), others dropped.
    pub fn publishes(&mut self, conn: ConnectionId) -> Vec<Publish> {
        self.take(conn)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
            .collect()
    }
}

pub fn connect(id: &str, version: ProtocolVersion, clean: bool, keep_alive: u16) -> Connect {
    Connect {
        protocol_version: version,
        clean_start: clean,
        keep_alive,
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

pub fn will(topic: &str, payload: &str, qos: QoS, retain: bool) -> Will {
    Will {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain,
        properties: Properties::default(),
    }
}

pub fn publish(topic: &str, payload: &str, qos: QoS, id: u16) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: (qos != QoS::AtMostOnce).then(|| pid(id)),
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

pub fn ack(id: PacketId) -> PubResponse {
    PubResponse::new(id)
}
