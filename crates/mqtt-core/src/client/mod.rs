//! The client side of one MQTT connection (3.1, 3.1.1 and 5.0), sans-IO.
//!
//! [`Client`] owns every protocol decision of a client: CONNECT/CONNACK,
//! PINGREQ on time and a missing PINGRESP detected, QoS 0/1/2 in both
//! directions with an inflight window, resending after reconnect, and
//! resubscribing when the server lost the session. It owns no socket and
//! reads no clock: the runtime feeds it inputs, each with `now`, and drains
//! its outputs. The same `Client` survives any number of transports: a
//! bridge keeps one for its whole life and calls
//! [`Client::handle_transport_up`] for every connection it dials.
//!
//! # Inputs and outputs
//! In (`handle_*` and commands, each with `now: Instant`):
//! - [`Client::handle_transport_up`]: a connection is open; CONNECT is queued.
//! - [`Client::handle_read`] (bytes) or [`Client::handle_packet`] (decoded).
//! - [`Client::handle_timeout`]: at or after [`Client::poll_timeout`].
//! - [`Client::handle_transport_down`]: the connection is gone, for whatever reason.
//! - Commands, valid in every state, also before the first connect:
//!   [`Client::publish`], [`Client::subscribe`], [`Client::unsubscribe`],
//!   [`Client::disconnect`].
//!
//! Out (`poll_*`, no `now`):
//! - [`Client::poll_transmit`]: bytes to write, control packets (PINGREQ,
//!   SUBSCRIBE, UNSUBSCRIBE, PUBACK/PUBREC/PUBREL/PUBCOMP, DISCONNECT) always
//!   before queued PUBLISH data, at most about `max_transmit_bytes` per call.
//!   [`Client::poll_packet`] is the same one packet at a time, unencoded, for
//!   in-memory harnesses (use one or the other on a connection).
//! - [`Client::poll_event`]: [`ClientEvent`]s for the application.
//! - [`Client::poll_timeout`]: the earliest deadline;
//!   [`Client::next_timeout`] also says which [`TimerKind`] it is.
//!
//! After any input, drain `poll_transmit` and `poll_event`, then sleep until
//! `poll_timeout` or the next input. A packet counts as sent (for keep alive)
//! at the time of the latest input when `poll_transmit` hands it out, so
//! call `poll_transmit` only when the transport can take more bytes: queued
//! control packets then overtake data that has not been pulled yet.
//! On [`ClientEvent::TransportDead`], drain `poll_transmit` first (a 5.0
//! DISCONNECT with the reason may be waiting), close the transport, and call
//! `handle_transport_down`.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::BytesMut;
//! use mqtt_core::client::{Client, ClientConfig, ClientEvent};
//! use mqtt_core::codec::{self, ConnAck, Packet, Properties, ProtocolVersion, QoS, ReasonCode};
//! use mqtt_core::codec::SubscriptionOptions;
//!
//! let t0 = Instant::now(); // the runtime's clock, never read inside the core
//! let mut client = Client::new(ClientConfig { client_id: "edge-1".into(), ..Default::default() }, t0)?;
//! // Before any connection: queued, sent after CONNACK.
//! let options = SubscriptionOptions::new(QoS::AtLeastOnce);
//! client.subscribe(vec![("cmd/#".into(), options)], Properties::default(), t0)?;
//! client.publish("hello".into(), "world".into(), QoS::AtLeastOnce, false, Properties::default(), t0)?;
//!
//! client.handle_transport_up(t0); // the runtime's socket connected
//! let mut server_side = BytesMut::new();
//! while let Some(bytes) = client.poll_transmit() {
//!     server_side.extend_from_slice(&bytes); // write to the socket
//! }
//! let connect = codec::decode(&mut server_side, ProtocolVersion::V5, codec::MAX_PACKET_SIZE)?;
//! assert!(matches!(connect, Some(Packet::Connect(_))));
//!
//! // The server answers; the runtime reads bytes and hands them over.
//! let mut from_server = BytesMut::new();
//! let connack = Packet::ConnAck(ConnAck {
//!     session_present: false,
//!     reason_code: ReasonCode::SUCCESS,
//!     properties: Properties::default(),
//! });
//! codec::encode(&connack, ProtocolVersion::V5, &mut from_server)?;
//! let t1 = t0 + Duration::from_millis(20);
//! client.handle_read(&mut from_server, t1);
//! while let Some(event) = client.poll_event() {
//!     if let ClientEvent::Connected(info) = event {
//!         assert!(!info.session_present);
//!     }
//! }
//! // SUBSCRIBE and PUBLISH go out now, the SUBSCRIBE first.
//! let bytes = client.poll_transmit().expect("queued packets");
//! assert_eq!(bytes[0] >> 4, 8); // SUBSCRIBE
//! // Sleep until the keep alive deadline (60 s after CONNECT, minus nothing sent since).
//! assert_eq!(client.poll_timeout(), Some(t1 + Duration::from_secs(60)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Decisions
//! - Keep alive follows MQTT-3.1.2-23: PINGREQ when nothing was *sent* for the
//!   keep alive; received traffic never postpones it. PINGRESP must arrive
//!   within `ping_timeout` of queueing PINGREQ (any other inbound packet does
//!   not count), else [`TransportDeadReason::PingTimeout`].
//! - Outgoing publishes keep their order (one FIFO): a QoS 1/2 message
//!   waiting for a window slot holds back the QoS 0 messages behind it.
//! - Packet identifiers are assigned by `publish`/`subscribe`/`unsubscribe`
//!   and stay with the message until its flow ends, across reconnects, so
//!   they are the application's handle for [`ClientEvent::PublishAcked`].
//! - The server's 5.0 Maximum QoS and Retain Available are obeyed
//!   (MQTT-3.2.2-11, MQTT-3.2.2-14) by *downgrading*: the QoS is lowered to
//!   the maximum and RETAIN cleared, so the message is still delivered
//!   (counted in [`ClientStats::downgraded`]). Maximum Packet Size
//!   (MQTT-3.2.2-15) is obeyed by *refusing*: an error from `publish` when
//!   already known, else [`ClientEvent::Dropped`] at send time.
//! - When the queue is full, `publish` evicts the oldest queued QoS 0
//!   messages ([`ClientEvent::Dropped`] with [`DropCause::QueueFull`]) if
//!   that makes room, else returns [`ClientError::QueueFull`] with the
//!   message, which the caller still owns; nothing is lost silently.
//! - Reconnecting with the session present resends unacknowledged PUBLISH
//!   with DUP = 1 and PUBREL for the PUBREC stage, in their original order
//!   (MQTT-4.4.0-1, MQTT-4.6.0-1), within the new inflight window. Without a
//!   session, unacknowledged QoS 1/2 publishes are sent again as new
//!   publishes, publishes already past PUBREC count as delivered (PUBREC
//!   gave the receiver ownership, 5.0 section 4.3.3; a new session cannot
//!   take their PUBREL), the inbound awaiting-PUBREL set is cleared, and every
//!   active subscription is re-issued before pending SUBSCRIBE/UNSUBSCRIBE.
//! - Server protocol violations queue a 5.0 DISCONNECT with the reason code
//!   (none in 3.x, where DISCONNECT would suppress the will) and report
//!   [`ClientEvent::TransportDead`]. Nothing the server sends panics.
//! - Exactly-once cannot survive a lost session: a QoS 2 message resent as
//!   new after the server dropped the session may be delivered twice. MQTT
//!   3.1 has no Session Present flag, so a 3.1 reconnect always takes the
//!   "no session" path (QoS 1 duplicates, allowed).
//! - 5.0 enhanced authentication and topic aliases are not implemented:
//!   CONNECT allows no aliases, and a server using one is a protocol error.

mod config;
mod event;
mod timer;

pub use config::{ClientConfig, ConfigError, KeepAlivePolicy};
pub use event::{
    ClientError, ClientEvent, ClientStats, Connected, DropCause, ProtocolError, TransportDeadReason,
};
pub use timer::TimerKind;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::codec::{
    self, ConnAck, Connect, Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubResponse,
    Publish, QoS, ReasonCode, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use timer::TimerTable;

/// Where the client is in the life of its current transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// No transport. Commands queue.
    Disconnected,
    /// Transport up, CONNECT queued or sent, no CONNACK yet.
    Connecting,
    /// CONNACK accepted: everything flows.
    Connected,
    /// [`Client::disconnect`] was called: our DISCONNECT waits behind the
    /// control packets already queued; no more data is sent.
    Closing,
    /// [`ClientEvent::TransportDead`] was reported; waiting for
    /// [`Client::handle_transport_down`].
    Dead,
}

/// Filters per resubscription SUBSCRIBE, so one packet stays far below any
/// sensible Maximum Packet Size.
const RESUBSCRIBE_CHUNK: usize = 64;

/// An outgoing publish and its bookkeeping.
#[derive(Debug)]
struct OutMessage {
    publish: Publish,
    /// Order of acceptance; resends keep it (MQTT-4.6.0-1).
    seq: u64,
    /// Sent on an earlier connection and not acknowledged: DUP = 1 if the
    /// session resumes (MQTT-3.3.1-1).
    sent_before: bool,
    /// Topic + payload bytes, what the queue byte bound counts.
    size: usize,
    /// The encoded PUBLISH's size with a packet id (QoS 1/2), for the
    /// server's Maximum Packet Size.
    encoded_len: usize,
}

/// What an in-flight outgoing publish waits for, named after the packet.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    PubAck,
    PubRec,
    PubComp,
}

#[derive(Debug)]
struct Inflight {
    msg: OutMessage,
    stage: Stage,
}

#[derive(Debug, Clone)]
enum Request {
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
}

impl Request {
    fn packet_id(&self) -> PacketId {
        match self {
            Request::Subscribe(s) => s.packet_id,
            Request::Unsubscribe(u) => u.packet_id,
        }
    }

    fn to_packet(&self) -> Packet {
        match self {
            Request::Subscribe(s) => Packet::Subscribe(s.clone()),
            Request::Unsubscribe(u) => Packet::Unsubscribe(u.clone()),
        }
    }
}

/// A subscription the server confirmed, kept to re-issue it when a
/// reconnect finds no session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ActiveSubscription {
    filter: ByteString,
    options: SubscriptionOptions,
    /// The SUBSCRIBE's properties (subscription identifier, user properties).
    properties: Properties,
}

/// What CONNACK told us about the server (defaults until then).
#[derive(Debug, Clone, Copy)]
struct ServerLimits {
    receive_maximum: u16,
    maximum_qos: QoS,
    retain_available: bool,
    maximum_packet_size: Option<u32>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            receive_maximum: u16::MAX,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            maximum_packet_size: None,
        }
    }
}

/// The client side of one MQTT connection. See the [module docs](self).
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    state: ConnectionState,
    /// The latest `now` of any input; the send time of what is polled.
    now: Instant,
    assigned_client_id: Option<ByteString>,
    /// The keep alive in force (ours, or the 5.0 Server Keep Alive).
    keep_alive: u16,
    server: ServerLimits,
    last_sent: Instant,
    /// A PINGREQ sits in `control`, not sent yet: do not queue another.
    ping_queued: bool,
    timers: TimerTable,
    /// Control packets, always sent before `queue`.
    control: VecDeque<Packet>,
    /// The DISCONNECT to send last (Closing, or Dead after a protocol error).
    final_disconnect: Option<Disconnect>,
    /// Encoded bytes that did not fit in the previous `poll_transmit`.
    stash: Option<BytesMut>,
    /// Publishes not yet in flight, in order.
    queue: VecDeque<OutMessage>,
    queued_bytes: usize,
    queued_qos0: usize,
    queued_qos0_bytes: usize,
    /// Ordered maps and sets, not hashed ones: no per-process random seed,
    /// so the same inputs give the same outputs (the simulator replays).
    inflight: BTreeMap<PacketId, Inflight>,
    /// SUBSCRIBE / UNSUBSCRIBE not acknowledged yet, in the order to send them.
    requests: Vec<Request>,
    subscriptions: Vec<ActiveSubscription>,
    ids_in_use: BTreeSet<PacketId>,
    next_id: u16,
    next_seq: u64,
    /// Inbound QoS 2 packet ids between PUBREC and PUBREL (MQTT-4.3.3-2 /
    /// MQTT-4.3.3-10: delivered once).
    awaiting_pubrel: BTreeSet<PacketId>,
    /// PUBACKs queued and not yet sent: those inbound QoS 1 messages are
    /// still unacknowledged for Receive Maximum.
    pending_pubacks: usize,
    events: VecDeque<ClientEvent>,
    stats: ClientStats,
}

impl Client {
    /// A client that is not connected yet. Commands work right away.
    pub fn new(config: ClientConfig, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let client = Self {
            keep_alive: config.keep_alive,
            config,
            state: ConnectionState::Disconnected,
            now,
            assigned_client_id: None,
            server: ServerLimits::default(),
            last_sent: now,
            ping_queued: false,
            timers: TimerTable::default(),
            control: VecDeque::new(),
            final_disconnect: None,
            stash: None,
            queue: VecDeque::new(),
            queued_bytes: 0,
            queued_qos0: 0,
            queued_qos0_bytes: 0,
            inflight: BTreeMap::new(),
            requests: Vec::new(),
            subscriptions: Vec::new(),
            ids_in_use: BTreeSet::new(),
            next_id: 1,
            next_seq: 0,
            awaiting_pubrel: BTreeSet::new(),
            pending_pubacks: 0,
            events: VecDeque::new(),
            stats: ClientStats::default(),
        };
        // Catch a CONNECT the codec cannot represent (a 70 kB user property)
        // now rather than at every connect.
        codec::encoded_len(&Packet::Connect(client.build_connect()), client.version())
            .map_err(ConfigError::Connect)?;
        Ok(client)
    }

    // ----- accessors -------------------------------------------------------

    pub fn state(&self) -> ConnectionState {
        self.state
    }

    pub fn is_connected(&self) -> bool {
        self.state == ConnectionState::Connected
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn protocol_version(&self) -> ProtocolVersion {
        self.config.protocol_version
    }

    /// The client id the next CONNECT carries: the 5.0 Assigned Client
    /// Identifier once the server gave one, else the configured one.
    pub fn client_id(&self) -> &ByteString {
        self.assigned_client_id
            .as_ref()
            .unwrap_or(&self.config.client_id)
    }

    /// Used by every later CONNECT (e.g. clean on the first connect, then
    /// resume).
    pub fn set_clean_start(&mut self, clean_start: bool) {
        self.config.clean_start = clean_start;
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// The keep alive in force, in seconds (0 = none).
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    /// Outgoing QoS 1/2 publishes sent and not completed.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// min(max_inflight, the server's Receive Maximum).
    pub fn inflight_window(&self) -> usize {
        usize::from(self.config.max_inflight.min(self.server.receive_maximum))
    }

    /// Publishes waiting to be sent.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// Topic + payload bytes waiting to be sent.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// True when no publish is queued or in flight and no SUBSCRIBE or
    /// UNSUBSCRIBE awaits its acknowledgement: a graceful `disconnect` now
    /// loses nothing.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.inflight.is_empty() && self.requests.is_empty()
    }

    /// Whether `packet_id` belongs to an outgoing publish still queued or in
    /// flight.
    pub fn is_pending(&self, packet_id: PacketId) -> bool {
        self.inflight.contains_key(&packet_id)
            || self
                .queue
                .iter()
                .any(|m| m.publish.packet_id == Some(packet_id))
    }

    /// The topic filters the server confirmed, in subscription order.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&ByteString, SubscriptionOptions)> {
        self.subscriptions.iter().map(|s| (&s.filter, s.options))
    }

    // ----- outputs ---------------------------------------------------------

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// The earliest deadline, for the runtime to call
    /// [`Client::handle_timeout`] at or after it.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next().map(|(at, _)| at)
    }

    /// The earliest deadline and why it is set (str0m's
    /// `last_timeout_reason`), for logs and timing tests.
    pub fn next_timeout(&self) -> Option<(Instant, TimerKind)> {
        self.timers.next()
    }

    /// Bytes to write, coalesced up to about `max_transmit_bytes`: control
    /// packets first, then queued publishes as the inflight window allows.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let budget = self.config.max_transmit_bytes;
        let mut buf = self.stash.take().unwrap_or_default();
        while buf.len() < budget {
            let Some(packet) = self.next_packet() else {
                break;
            };
            let mark = buf.len();
            if let Err(e) = codec::encode(&packet, self.version(), &mut buf) {
                buf.truncate(mark);
                self.unsendable(packet, DropCause::Encode(e));
                continue;
            }
            self.on_sent(&packet);
            if mark > 0 && buf.len() > budget {
                // Over budget: this packet leads the next call instead.
                self.stash = Some(buf.split_off(mark));
                break;
            }
        }
        if buf.is_empty() {
            return None;
        }
        self.stats.bytes_sent += buf.len() as u64;
        Some(buf.freeze())
    }

    /// The next packet to send, unencoded: the packet-level twin of
    /// [`Client::poll_transmit`] for in-memory harnesses.
    #[must_use]
    pub fn poll_packet(&mut self) -> Option<Packet> {
        debug_assert!(self.stash.is_none(), "mixing poll_packet and poll_transmit");
        let packet = self.next_packet()?;
        self.on_sent(&packet);
        Some(packet)
    }

    // ----- transport lifecycle ---------------------------------------------

    /// A transport to the server is open: CONNECT is queued and the CONNACK
    /// timer starts. Called in any state other than `Disconnected`, the old
    /// transport is first taken down.
    pub fn handle_transport_up(&mut self, now: Instant) {
        self.advance(now);
        if self.state != ConnectionState::Disconnected {
            self.handle_transport_down(now);
        }
        self.state = ConnectionState::Connecting;
        self.server = ServerLimits::default();
        self.keep_alive = self.config.keep_alive;
        self.control
            .push_back(Packet::Connect(self.build_connect()));
        self.timers
            .set_after(TimerKind::ConnAck, now, self.config.connect_timeout);
        self.stats.connects += 1;
    }

    /// The transport is gone (closed by us after `TransportDead`, by the
    /// peer, or broken). Unacknowledged publishes return to the front of the
    /// queue, in order, to be resent after the next CONNACK.
    pub fn handle_transport_down(&mut self, now: Instant) {
        self.advance(now);
        self.state = ConnectionState::Disconnected;
        self.timers.clear();
        self.control.clear();
        self.final_disconnect = None;
        self.stash = None;
        self.ping_queued = false;
        self.pending_pubacks = 0;

        let mut unacked: Vec<PacketId> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.stage != Stage::PubComp)
            .map(|(&id, _)| id)
            .collect();
        // Highest seq first, each pushed to the front: the queue ends up in
        // the original order.
        unacked.sort_by_key(|id| std::cmp::Reverse(self.inflight.get(id).map_or(0, |f| f.msg.seq)));
        for id in unacked {
            if let Some(mut f) = self.inflight.remove(&id) {
                f.msg.sent_before = true;
                self.queued_bytes += f.msg.size;
                self.queue.push_front(f.msg);
            }
        }
    }

    /// Bytes read from the transport. Complete packets are consumed from
    /// `buf`; a partial packet stays for the next call.
    pub fn handle_read(&mut self, buf: &mut BytesMut, now: Instant) {
        self.advance(now);
        while self.accepts_input() && !buf.is_empty() {
            // A 3.1.1-only server answers a level-5 CONNECT with a 3.1.1
            // CONNACK "unacceptable protocol version", which does not decode
            // as 5.0: recognise it so the caller learns why.
            let v311_refusal = (self.state == ConnectionState::Connecting
                && self.version().is_v5()
                && buf.len() >= 4
                && buf[..3] == [0x20, 0x02, 0x00])
            .then(|| ReasonCode::from_v3_connack_code(buf[3]))
            .flatten()
            .filter(|code| !code.is_success());
            match codec::decode(buf, self.version(), self.config.maximum_packet_size) {
                Ok(Some(packet)) => self.on_packet(packet),
                Ok(None) => break,
                Err(e) => {
                    match v311_refusal {
                        Some(code) => self.refused(code, Properties::default()),
                        None => self.protocol_error(ProtocolError::Decode(e)),
                    }
                    break;
                }
            }
        }
    }

    /// One decoded packet from the server.
    pub fn handle_packet(&mut self, packet: Packet, now: Instant) {
        self.advance(now);
        if self.accepts_input() {
            self.on_packet(packet);
        }
    }

    /// Timers due at `now` fire; early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        for kind in TimerKind::ALL {
            if !self.timers.expire(kind, now) {
                continue;
            }
            match kind {
                TimerKind::ConnAck => {
                    if self.state == ConnectionState::Connecting {
                        self.die(TransportDeadReason::ConnAckTimeout, None);
                    }
                }
                TimerKind::PingResp => {
                    if matches!(
                        self.state,
                        ConnectionState::Connected | ConnectionState::Closing
                    ) {
                        self.stats.ping_timeouts += 1;
                        self.die(TransportDeadReason::PingTimeout, None);
                    }
                }
                TimerKind::KeepAlive => self.keep_alive_due(now),
            }
        }
    }

    // ----- commands --------------------------------------------------------

    /// Queue an application message. Returns its packet identifier for QoS
    /// 1/2 (the key of the later [`ClientEvent::PublishAcked`]), `None` for
    /// QoS 0. Works in every state; while disconnected the message waits in
    /// the bounded queue.
    pub fn publish(
        &mut self,
        topic: ByteString,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: Properties,
        now: Instant,
    ) -> Result<Option<PacketId>, ClientError> {
        self.advance(now);
        crate::topic::validate_topic_name(&topic).map_err(ClientError::InvalidTopicName)?;
        let publish = Publish {
            dup: false,
            qos,
            retain,
            topic,
            packet_id: (qos != QoS::AtMostOnce).then_some(NonZeroU16::MIN),
            properties,
            payload,
        };
        let len = codec::encoded_len(&Packet::Publish(publish.clone()), self.version())
            .map_err(ClientError::Encode)?;
        if self.is_connected() {
            if let Some(max) = self.server.maximum_packet_size {
                if len > max as usize {
                    return Err(ClientError::PacketTooLarge { size: len, max });
                }
            }
        }
        let size = publish.topic.len() + publish.payload.len();
        let mut publish = self.make_room(publish, size)?;
        if qos != QoS::AtMostOnce {
            publish.packet_id = Some(self.alloc_id()?);
        }
        let packet_id = publish.packet_id;
        self.enqueue(publish, size, len);
        Ok(packet_id)
    }

    /// Queue a SUBSCRIBE. Works in every state: before the first connect
    /// (or while disconnected) it is sent right after CONNACK. The SUBACK
    /// arrives as [`ClientEvent::Subscribed`] with the returned id; filters
    /// it grants are re-issued whenever a reconnect finds no session.
    pub fn subscribe(
        &mut self,
        filters: Vec<(ByteString, SubscriptionOptions)>,
        properties: Properties,
        now: Instant,
    ) -> Result<PacketId, ClientError> {
        self.advance(now);
        if filters.is_empty() {
            return Err(ClientError::NoTopicFilters);
        }
        for (filter, _) in &filters {
            check_filter(filter)?;
        }
        let mut subscribe = Subscribe {
            packet_id: NonZeroU16::MIN,
            filters,
            properties,
        };
        codec::encoded_len(&Packet::Subscribe(subscribe.clone()), self.version())
            .map_err(ClientError::Encode)?;
        subscribe.packet_id = self.alloc_id()?;
        Ok(self.push_request(Request::Subscribe(subscribe)))
    }

    /// Queue an UNSUBSCRIBE. The filters stop being re-issued at once.
    pub fn unsubscribe(
        &mut self,
        filters: Vec<ByteString>,
        properties: Properties,
        now: Instant,
    ) -> Result<PacketId, ClientError> {
        self.advance(now);
        if filters.is_empty() {
            return Err(ClientError::NoTopicFilters);
        }
        for filter in &filters {
            check_filter(filter)?;
        }
        let mut unsubscribe = Unsubscribe {
            packet_id: NonZeroU16::MIN,
            filters,
            properties,
        };
        codec::encoded_len(&Packet::Unsubscribe(unsubscribe.clone()), self.version())
            .map_err(ClientError::Encode)?;
        unsubscribe.packet_id = self.alloc_id()?;
        self.subscriptions
            .retain(|s| !unsubscribe.filters.contains(&s.filter));
        Ok(self.push_request(Request::Unsubscribe(unsubscribe)))
    }

    /// Close the connection gracefully. Connected: DISCONNECT goes out after
    /// the control packets already queued (acknowledgements), no more data
    /// is sent, and [`TransportDeadReason::ClientDisconnect`] follows it.
    /// Connecting: the transport is declared dead at once. Otherwise
    /// nothing happens. Queued and in-flight publishes stay for the next
    /// connection; wait for [`Client::is_idle`] first to flush them.
    /// In 3.x `reason_code` and `properties` are not sent.
    pub fn disconnect(
        &mut self,
        reason_code: ReasonCode,
        properties: Properties,
        now: Instant,
    ) -> Result<(), ClientError> {
        self.advance(now);
        if self.config.session_expiry_interval == 0
            && properties.session_expiry_interval.is_some_and(|s| s != 0)
        {
            return Err(ClientError::SessionExpiryAfterZero);
        }
        match self.state {
            ConnectionState::Connected => {
                self.state = ConnectionState::Closing;
                self.timers.stop(TimerKind::KeepAlive);
                self.final_disconnect = Some(Disconnect {
                    reason_code,
                    properties,
                });
            }
            ConnectionState::Connecting => self.die(TransportDeadReason::ClientDisconnect, None),
            ConnectionState::Disconnected | ConnectionState::Closing | ConnectionState::Dead => {}
        }
        Ok(())
    }

    // ----- internals: sending ----------------------------------------------

    fn version(&self) -> ProtocolVersion {
        self.config.protocol_version
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn accepts_input(&self) -> bool {
        matches!(
            self.state,
            ConnectionState::Connecting | ConnectionState::Connected | ConnectionState::Closing
        )
    }

    fn build_connect(&self) -> Connect {
        let mut properties = Properties::default();
        if self.version().is_v5() {
            if self.config.session_expiry_interval != 0 {
                properties.session_expiry_interval = Some(self.config.session_expiry_interval);
            }
            if self.config.receive_maximum != u16::MAX {
                properties.receive_maximum = Some(self.config.receive_maximum);
            }
            properties.maximum_packet_size = Some(self.config.maximum_packet_size);
            properties.user_properties = self.config.user_properties.clone();
        }
        Connect {
            protocol_version: self.version(),
            clean_start: self.config.clean_start,
            keep_alive: self.config.keep_alive,
            client_id: self.client_id().clone(),
            will: self.config.will.clone(),
            username: self.config.username.clone(),
            password: self.config.password.clone(),
            properties,
        }
    }

    /// The next packet in send order, with its queue bookkeeping done.
    fn next_packet(&mut self) -> Option<Packet> {
        match self.state {
            ConnectionState::Disconnected => None,
            ConnectionState::Connecting => self.control.pop_front(),
            ConnectionState::Connected => self.control.pop_front().or_else(|| self.next_data()),
            ConnectionState::Closing => self.control.pop_front().or_else(|| {
                let disconnect = self.final_disconnect.take()?;
                self.state = ConnectionState::Dead;
                self.timers.clear();
                self.events.push_back(ClientEvent::TransportDead(
                    TransportDeadReason::ClientDisconnect,
                ));
                Some(Packet::Disconnect(disconnect))
            }),
            ConnectionState::Dead => self.final_disconnect.take().map(Packet::Disconnect),
        }
    }

    /// The next queued publish, if the inflight window lets it go.
    fn next_data(&mut self) -> Option<Packet> {
        loop {
            let head = self.queue.front()?;
            let qos = head.publish.qos.min(self.server.maximum_qos);
            if qos != QoS::AtMostOnce && self.inflight.len() >= self.inflight_window() {
                return None;
            }
            let mut msg = self.dequeue_front()?;
            if let Some(max) = self.server.maximum_packet_size {
                // MQTT-3.2.2-15. Checked before any downgrade so the Dropped
                // event carries the message as the application gave it; a
                // downgrade to QoS 0 removes the packet id's 2 bytes.
                let id_len = if qos == QoS::AtMostOnce && msg.publish.packet_id.is_some() {
                    2
                } else {
                    0
                };
                let len = msg.encoded_len - id_len;
                if len > max as usize {
                    if let Some(id) = msg.publish.packet_id {
                        self.ids_in_use.remove(&id);
                    }
                    let cause = DropCause::PacketTooLarge { size: len, max };
                    self.drop_message(msg.publish, cause, false);
                    continue;
                }
            }
            let mut downgraded_to_qos0 = None;
            if msg.publish.qos != qos {
                // MQTT-3.2.2-11: never above the server's Maximum QoS.
                self.stats.downgraded += 1;
                msg.publish.qos = qos;
                if qos == QoS::AtMostOnce {
                    downgraded_to_qos0 = msg.publish.packet_id.take();
                    msg.publish.dup = false;
                }
            }
            if msg.publish.retain && !self.server.retain_available {
                // MQTT-3.2.2-14: no RETAIN when Retain Available is 0.
                self.stats.downgraded += 1;
                msg.publish.retain = false;
            }
            if let Some(id) = downgraded_to_qos0 {
                self.ids_in_use.remove(&id);
                self.events.push_back(ClientEvent::PublishAcked {
                    packet_id: id,
                    qos: QoS::AtMostOnce,
                    reason_code: ReasonCode::SUCCESS,
                    properties: Box::default(),
                });
            }
            if msg.publish.dup {
                self.stats.resent_dup += 1;
            }
            msg.sent_before = false;
            let packet = Packet::Publish(msg.publish.clone());
            if let Some(id) = msg.publish.packet_id {
                let stage = if qos == QoS::AtLeastOnce {
                    Stage::PubAck
                } else {
                    Stage::PubRec
                };
                self.inflight.insert(id, Inflight { msg, stage });
            }
            return Some(packet);
        }
    }

    /// Bookkeeping for a packet handed to the transport at `self.now`.
    fn on_sent(&mut self, packet: &Packet) {
        self.last_sent = self.now;
        match packet {
            Packet::PingReq => {
                self.ping_queued = false;
                self.stats.pings_sent += 1;
            }
            Packet::PubAck(_) => self.pending_pubacks = self.pending_pubacks.saturating_sub(1),
            _ => {}
        }
        let rearm = match self.config.keep_alive_policy {
            KeepAlivePolicy::IdleSend => true,
            KeepAlivePolicy::Periodic => matches!(packet, Packet::PingReq),
        };
        if rearm && self.state == ConnectionState::Connected && !self.ping_queued {
            self.arm_keep_alive(self.now);
        }
    }

    fn arm_keep_alive(&mut self, from: Instant) {
        if self.keep_alive > 0 {
            let interval = Duration::from_secs(u64::from(self.keep_alive));
            self.timers.set_after(TimerKind::KeepAlive, from, interval);
        }
    }

    fn keep_alive_due(&mut self, now: Instant) {
        if self.state != ConnectionState::Connected || self.keep_alive == 0 || self.ping_queued {
            return;
        }
        // At the front: a PINGREQ never waits behind other packets
        // (MQTT-3.1.2-23 must hold under any load).
        self.control.push_front(Packet::PingReq);
        self.ping_queued = true;
        if self.timers.get(TimerKind::PingResp).is_none() {
            self.timers
                .set_after(TimerKind::PingResp, now, self.config.ping_timeout);
        }
    }

    /// A packet the codec refused at send time.
    fn unsendable(&mut self, packet: Packet, cause: DropCause) {
        match packet {
            Packet::Publish(publish) => {
                if let Some(id) = publish.packet_id {
                    self.inflight.remove(&id);
                    self.ids_in_use.remove(&id);
                }
                self.drop_message(publish, cause, false);
            }
            // Our own control packets were validated when created (and
            // the server's packet ids always encode); should one still fail,
            // skipping it beats panicking.
            _ => self.stats.dropped_unsendable += 1,
        }
    }

    fn drop_message(&mut self, publish: Publish, cause: DropCause, evicted: bool) {
        if evicted {
            self.stats.dropped_queue_full += 1;
        } else {
            self.stats.dropped_unsendable += 1;
        }
        self.events.push_back(ClientEvent::Dropped {
            message: Box::new(publish),
            cause,
        });
    }

    // ----- internals: the queue and packet ids -----------------------------

    fn enqueue(&mut self, publish: Publish, size: usize, encoded_len: usize) {
        if publish.qos == QoS::AtMostOnce {
            self.queued_qos0 += 1;
            self.queued_qos0_bytes += size;
        }
        self.queued_bytes += size;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back(OutMessage {
            publish,
            seq,
            sent_before: false,
            size,
            encoded_len,
        });
    }

    fn dequeue_front(&mut self) -> Option<OutMessage> {
        let msg = self.queue.pop_front()?;
        self.account_removed(&msg);
        Some(msg)
    }

    fn account_removed(&mut self, msg: &OutMessage) {
        self.queued_bytes = self.queued_bytes.saturating_sub(msg.size);
        if msg.publish.qos == QoS::AtMostOnce {
            self.queued_qos0 = self.queued_qos0.saturating_sub(1);
            self.queued_qos0_bytes = self.queued_qos0_bytes.saturating_sub(msg.size);
        }
    }

    /// Evict the oldest QoS 0 messages if that makes room for one more of
    /// `size` bytes; refuse (handing the message back) if it cannot.
    fn make_room(&mut self, publish: Publish, size: usize) -> Result<Publish, ClientError> {
        let fits = |count: usize, bytes: usize, c: &ClientConfig| {
            count < c.max_queued_messages && bytes + size <= c.max_queued_bytes
        };
        if fits(self.queue.len(), self.queued_bytes, &self.config) {
            return Ok(publish);
        }
        let keep_count = self.queue.len() - self.queued_qos0;
        let keep_bytes = self.queued_bytes.saturating_sub(self.queued_qos0_bytes);
        if !fits(keep_count, keep_bytes, &self.config) {
            self.stats.refused_queue_full += 1;
            return Err(ClientError::QueueFull {
                message: Box::new(publish),
                messages: self.queue.len(),
                bytes: self.queued_bytes,
            });
        }
        while !fits(self.queue.len(), self.queued_bytes, &self.config) {
            let Some(i) = self
                .queue
                .iter()
                .position(|m| m.publish.qos == QoS::AtMostOnce)
            else {
                break;
            };
            if let Some(msg) = self.queue.remove(i) {
                self.account_removed(&msg);
                self.drop_message(msg.publish, DropCause::QueueFull, true);
            }
        }
        Ok(publish)
    }

    fn alloc_id(&mut self) -> Result<PacketId, ClientError> {
        for _ in 0..u16::MAX {
            let candidate = NonZeroU16::new(self.next_id);
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if let Some(id) = candidate {
                if self.ids_in_use.insert(id) {
                    return Ok(id);
                }
            }
        }
        Err(ClientError::PacketIdsExhausted)
    }

    fn push_request(&mut self, request: Request) -> PacketId {
        let id = request.packet_id();
        // Only on an accepted connection; otherwise CONNACK sends it.
        if matches!(self.state, ConnectionState::Connected) {
            self.control.push_back(request.to_packet());
        }
        self.requests.push(request);
        id
    }

    // ----- internals: receiving --------------------------------------------

    fn on_packet(&mut self, packet: Packet) {
        let connecting = self.state == ConnectionState::Connecting;
        match packet {
            Packet::ConnAck(ack) if connecting => self.on_connack(ack),
            Packet::Disconnect(d) => self.die(
                TransportDeadReason::ServerDisconnect {
                    reason_code: d.reason_code,
                    reason_string: d.properties.reason_string,
                    server_reference: d.properties.server_reference,
                },
                None,
            ),
            // MQTT-3.2.0-1: the first packet from the server is CONNACK.
            other if connecting => {
                self.protocol_error(ProtocolError::UnexpectedPacket(other.packet_type()))
            }
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(r) => self.on_puback(r),
            Packet::PubRec(r) => self.on_pubrec(r),
            Packet::PubRel(r) => self.on_pubrel(r),
            Packet::PubComp(r) => self.on_pubcomp(r),
            Packet::SubAck(s) => self.on_suback(s),
            Packet::UnsubAck(u) => self.on_unsuback(u),
            Packet::PingResp => self.timers.stop(TimerKind::PingResp),
            other @ (Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq
            | Packet::Auth(_)) => {
                self.protocol_error(ProtocolError::UnexpectedPacket(other.packet_type()))
            }
        }
    }

    fn on_connack(&mut self, ack: ConnAck) {
        self.timers.stop(TimerKind::ConnAck);
        if !ack.reason_code.is_success() {
            self.refused(ack.reason_code, ack.properties);
            return;
        }
        if ack.session_present && self.config.clean_start {
            self.protocol_error(ProtocolError::SessionPresentAfterCleanStart);
            return;
        }
        let props = &ack.properties;
        self.server = ServerLimits {
            receive_maximum: props.receive_maximum.unwrap_or(u16::MAX).max(1),
            maximum_qos: props.maximum_qos.unwrap_or(QoS::ExactlyOnce),
            retain_available: props.retain_available.unwrap_or(true),
            maximum_packet_size: props.maximum_packet_size,
        };
        if let Some(id) = &props.assigned_client_identifier {
            self.assigned_client_id = Some(id.clone());
        }
        // MQTT-3.2.2-21: the Server Keep Alive replaces ours.
        self.keep_alive = props.server_keep_alive.unwrap_or(self.config.keep_alive);
        self.state = ConnectionState::Connected;
        self.stats.connacks += 1;
        // The keep alive runs from the last packet sent: CONNECT.
        self.arm_keep_alive(self.last_sent);
        self.events
            .push_back(ClientEvent::Connected(Box::new(Connected {
                session_present: ack.session_present,
                assigned_client_identifier: props.assigned_client_identifier.clone(),
                keep_alive: self.keep_alive,
                inflight_window: self.config.max_inflight.min(self.server.receive_maximum),
                maximum_qos: self.server.maximum_qos,
                retain_available: self.server.retain_available,
                maximum_packet_size: self.server.maximum_packet_size,
                properties: ack.properties,
            })));
        if ack.session_present {
            self.resume_session();
        } else {
            self.restart_session();
        }
        for request in &self.requests {
            self.control.push_back(request.to_packet());
        }
    }

    /// MQTT-4.4.0-1 / MQTT-4.4.0-2: resend PUBREL for the PUBREC stage and
    /// unacknowledged PUBLISH with DUP = 1, in original order.
    fn resume_session(&mut self) {
        let mut released: Vec<(u64, PacketId)> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.stage == Stage::PubComp)
            .map(|(&id, f)| (f.msg.seq, id))
            .collect();
        released.sort_unstable();
        for (_, id) in released {
            self.control.push_back(Packet::PubRel(PubResponse::new(id)));
        }
        for msg in self.queue.iter_mut().take_while(|m| m.sent_before) {
            msg.publish.dup = true;
        }
    }

    /// No session on the server: everything unacknowledged is sent as new,
    /// and the subscriptions are re-issued.
    fn restart_session(&mut self) {
        self.awaiting_pubrel.clear();
        let mut released: Vec<(u64, PacketId)> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.stage == Stage::PubComp)
            .map(|(&id, f)| (f.msg.seq, id))
            .collect();
        released.sort_unstable();
        for (_, id) in released {
            // PUBREC transferred ownership to the receiver; the new session
            // cannot take the PUBREL, so the flow ends here.
            self.inflight.remove(&id);
            self.ids_in_use.remove(&id);
            self.events.push_back(ClientEvent::PublishAcked {
                packet_id: id,
                qos: QoS::ExactlyOnce,
                reason_code: ReasonCode::SUCCESS,
                properties: Box::default(),
            });
        }
        let mut republished = Vec::new();
        for msg in self.queue.iter_mut().take_while(|m| m.sent_before) {
            msg.sent_before = false;
            msg.publish.dup = false;
            if let Some(id) = msg.publish.packet_id {
                republished.push(id);
            }
        }
        if !republished.is_empty() {
            self.stats.republished += republished.len() as u64;
            self.events.push_back(ClientEvent::Republishing {
                packet_ids: republished,
            });
        }
        self.resubscribe();
    }

    /// Re-issue the confirmed subscriptions, grouped by identical SUBSCRIBE
    /// properties, ahead of the pending requests.
    fn resubscribe(&mut self) {
        let mut groups: Vec<(Properties, Vec<(ByteString, SubscriptionOptions)>)> = Vec::new();
        // A filter in a pending SUBSCRIBE (a user's, or an earlier
        // resubscription that got no SUBACK) is sent again with it.
        let pending = |filter: &ByteString| {
            self.requests.iter().any(|r| {
                matches!(r, Request::Subscribe(s) if s.filters.iter().any(|(f, _)| f == filter))
            })
        };
        for sub in self.subscriptions.iter().filter(|s| !pending(&s.filter)) {
            match groups
                .iter_mut()
                .find(|(p, f)| *p == sub.properties && f.len() < RESUBSCRIBE_CHUNK)
            {
                Some((_, filters)) => filters.push((sub.filter.clone(), sub.options)),
                None => groups.push((
                    sub.properties.clone(),
                    vec![(sub.filter.clone(), sub.options)],
                )),
            }
        }
        let mut resubscribes = Vec::with_capacity(groups.len());
        for (properties, filters) in groups {
            let Ok(packet_id) = self.alloc_id() else {
                // Every id is held by a pending packet; the filters stay in
                // the table and are re-issued on the next reconnect.
                break;
            };
            self.stats.resubscribes += 1;
            self.events.push_back(ClientEvent::Resubscribing {
                packet_id,
                filters: filters.iter().map(|(f, _)| f.clone()).collect(),
            });
            resubscribes.push(Request::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            }));
        }
        // Ahead of pending requests, so a pending UNSUBSCRIBE still wins.
        self.requests.splice(0..0, resubscribes);
    }

    fn refused(&mut self, reason_code: ReasonCode, properties: Properties) {
        self.events.push_back(ClientEvent::ConnectRefused {
            reason_code,
            properties: Box::new(properties),
        });
        self.die(TransportDeadReason::ConnectRefused(reason_code), None);
    }

    fn on_publish(&mut self, publish: Publish) {
        if let Some(alias) = publish.properties.topic_alias {
            self.protocol_error(ProtocolError::TopicAliasInvalid(alias));
            return;
        }
        let Some(id) = publish.packet_id else {
            self.deliver(publish);
            return;
        };
        let duplicate = publish.qos == QoS::ExactlyOnce && self.awaiting_pubrel.contains(&id);
        if !duplicate {
            // 5.0 section 4.9: unacknowledged QoS 1/2 publishes from the
            // server may not exceed our Receive Maximum. In every version it
            // bounds the awaiting-PUBREL set.
            let unacked = self.awaiting_pubrel.len()
                + if self.version().is_v5() {
                    self.pending_pubacks
                } else {
                    0
                };
            let counted = self.version().is_v5() || publish.qos == QoS::ExactlyOnce;
            if counted && unacked >= usize::from(self.config.receive_maximum) {
                self.protocol_error(ProtocolError::ReceiveMaximumExceeded);
                return;
            }
        }
        match publish.qos {
            QoS::AtLeastOnce => {
                self.deliver(publish);
                self.pending_pubacks += 1;
                self.control.push_back(Packet::PubAck(PubResponse::new(id)));
            }
            _ => {
                if duplicate {
                    // MQTT-4.3.3-2 (3.1.1) / MQTT-4.3.3-10 (5.0): acknowledge
                    // again, do not deliver again.
                    self.stats.duplicates_suppressed += 1;
                } else {
                    self.awaiting_pubrel.insert(id);
                    self.deliver(publish);
                }
                self.control.push_back(Packet::PubRec(PubResponse::new(id)));
            }
        }
    }

    fn deliver(&mut self, publish: Publish) {
        self.stats.messages_received += 1;
        self.events.push_back(ClientEvent::Message(publish));
    }

    fn on_puback(&mut self, ack: PubResponse) {
        self.finish_flow(ack, Stage::PubAck, codec::PacketType::PubAck);
    }

    fn on_pubcomp(&mut self, ack: PubResponse) {
        self.finish_flow(ack, Stage::PubComp, codec::PacketType::PubComp);
    }

    fn finish_flow(&mut self, ack: PubResponse, stage: Stage, packet_type: codec::PacketType) {
        match self.inflight.get(&ack.packet_id).map(|f| f.stage) {
            None => self.stats.unknown_acks += 1,
            Some(s) if s == stage => self.complete(ack),
            Some(_) => self.protocol_error(ProtocolError::AckMismatch {
                packet_type,
                packet_id: ack.packet_id,
            }),
        }
    }

    fn complete(&mut self, ack: PubResponse) {
        let Some(flight) = self.inflight.remove(&ack.packet_id) else {
            return;
        };
        self.ids_in_use.remove(&ack.packet_id);
        self.events.push_back(ClientEvent::PublishAcked {
            packet_id: ack.packet_id,
            qos: flight.msg.publish.qos,
            reason_code: ack.reason_code,
            properties: Box::new(ack.properties),
        });
    }

    fn on_pubrec(&mut self, ack: PubResponse) {
        let id = ack.packet_id;
        match self.inflight.get_mut(&id) {
            None => {
                self.stats.unknown_acks += 1;
                if self.version().is_v5() {
                    self.control.push_back(Packet::PubRel(PubResponse {
                        reason_code: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                        ..PubResponse::new(id)
                    }));
                }
            }
            Some(f) if f.stage == Stage::PubRec => {
                if !ack.reason_code.is_success() {
                    // MQTT-4.3.3-4: a failed PUBREC ends the flow, no PUBREL.
                    self.complete(ack);
                    return;
                }
                f.stage = Stage::PubComp;
                // Once PUBREL is sent the PUBLISH is never resent
                // (MQTT-4.3.3-1 in 3.1.1): free the payload now.
                f.msg.publish.payload = Bytes::new();
                self.control.push_back(Packet::PubRel(PubResponse::new(id)));
            }
            // A repeated PUBREC: answer it again.
            Some(f) if f.stage == Stage::PubComp => {
                self.control.push_back(Packet::PubRel(PubResponse::new(id)));
            }
            Some(_) => self.protocol_error(ProtocolError::AckMismatch {
                packet_type: codec::PacketType::PubRec,
                packet_id: id,
            }),
        }
    }

    fn on_pubrel(&mut self, rel: PubResponse) {
        let id = rel.packet_id;
        let known = self.awaiting_pubrel.remove(&id);
        let reason_code = if known || !self.version().is_v5() {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        self.control.push_back(Packet::PubComp(PubResponse {
            reason_code,
            ..PubResponse::new(id)
        }));
    }

    fn take_request(&mut self, packet_id: PacketId, subscribe: bool) -> Option<Request> {
        let i = self.requests.iter().position(|r| {
            r.packet_id() == packet_id && matches!(r, Request::Subscribe(_)) == subscribe
        })?;
        Some(self.requests.remove(i))
    }

    fn on_suback(&mut self, ack: SubAck) {
        let Some(pos) = self
            .requests
            .iter()
            .position(|r| matches!(r, Request::Subscribe(s) if s.packet_id == ack.packet_id))
        else {
            self.stats.unknown_acks += 1;
            return;
        };
        let Request::Subscribe(request) = &self.requests[pos] else {
            return;
        };
        if request.filters.len() != ack.reason_codes.len() {
            // MQTT-3.8.4-6: one reason code per filter.
            let expected = request.filters.len();
            self.protocol_error(ProtocolError::ReasonCodeCountMismatch {
                packet_type: codec::PacketType::SubAck,
                expected,
                got: ack.reason_codes.len(),
            });
            return;
        }
        let Some(Request::Subscribe(request)) = self.take_request(ack.packet_id, true) else {
            return;
        };
        self.ids_in_use.remove(&ack.packet_id);
        for ((filter, options), code) in request.filters.into_iter().zip(&ack.reason_codes) {
            let existing = self.subscriptions.iter().position(|s| s.filter == filter);
            match (code.is_success(), existing) {
                (true, Some(i)) => {
                    self.subscriptions[i].options = options;
                    self.subscriptions[i].properties = request.properties.clone();
                }
                (true, None) => self.subscriptions.push(ActiveSubscription {
                    filter,
                    options,
                    properties: request.properties.clone(),
                }),
                (false, Some(i)) => {
                    self.subscriptions.remove(i);
                }
                (false, None) => {}
            }
        }
        self.events.push_back(ClientEvent::Subscribed(ack));
    }

    fn on_unsuback(&mut self, ack: UnsubAck) {
        let Some(pos) = self
            .requests
            .iter()
            .position(|r| matches!(r, Request::Unsubscribe(u) if u.packet_id == ack.packet_id))
        else {
            self.stats.unknown_acks += 1;
            return;
        };
        let Request::Unsubscribe(request) = &self.requests[pos] else {
            return;
        };
        // 5.0 section 3.11.3: one reason code per filter; 3.x has none.
        if self.version().is_v5() && request.filters.len() != ack.reason_codes.len() {
            let expected = request.filters.len();
            self.protocol_error(ProtocolError::ReasonCodeCountMismatch {
                packet_type: codec::PacketType::UnsubAck,
                expected,
                got: ack.reason_codes.len(),
            });
            return;
        }
        let Some(Request::Unsubscribe(request)) = self.take_request(ack.packet_id, false) else {
            return;
        };
        self.ids_in_use.remove(&ack.packet_id);
        // A SUBACK that arrived after `unsubscribe` may have re-added them.
        self.subscriptions
            .retain(|s| !request.filters.contains(&s.filter));
        self.events.push_back(ClientEvent::Unsubscribed(ack));
    }

    // ----- internals: failure ----------------------------------------------

    fn protocol_error(&mut self, error: ProtocolError) {
        let code = error.reason_code();
        self.die(TransportDeadReason::ProtocolError(error), Some(code));
    }

    /// Report the transport dead. Only a 5.0 DISCONNECT with
    /// `disconnect_code` may still be sent; everything else waits for the
    /// next connection.
    fn die(&mut self, reason: TransportDeadReason, disconnect_code: Option<ReasonCode>) {
        if self.state == ConnectionState::Dead {
            return;
        }
        self.state = ConnectionState::Dead;
        self.timers.clear();
        self.control.clear();
        self.stash = None;
        self.ping_queued = false;
        self.pending_pubacks = 0;
        self.final_disconnect =
            disconnect_code
                .filter(|_| self.version().is_v5())
                .map(|reason_code| Disconnect {
                    reason_code,
                    properties: Properties::default(),
                });
        self.events.push_back(ClientEvent::TransportDead(reason));
    }
}

fn check_filter(filter: &ByteString) -> Result<(), ClientError> {
    crate::topic::validate_topic_filter(filter).map_err(|error| ClientError::InvalidTopicFilter {
        filter: filter.clone(),
        error,
    })
}
