//! Session, message and retained state as plain data: everything here can
//! be exported, written by a storage layer and restored.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;

use crate::codec::{PacketId, Properties, ProtocolVersion, QoS, SubscriptionOptions};

/// An application message as the broker routes it. Shared (`Arc`) between
/// every session it goes to, so fan-out copies no payload or property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    /// QoS as published (already capped by `maximum_qos`).
    pub qos: QoS,
    pub retain: bool,
    /// 5.0 properties forwarded as published (payload format, content type,
    /// response topic, correlation data, user properties). Topic alias,
    /// subscription identifiers and message expiry are not kept here:
    /// they are per hop.
    pub properties: Properties,
    /// Client identifier of the publisher, for No Local.
    pub publisher: Option<ByteString>,
    /// When the Message Expiry Interval ends (5.0).
    pub expires_at: Option<Instant>,
}

impl Message {
    /// Bytes this message counts for against queue limits.
    pub fn weight(&self) -> usize {
        self.topic.len() + self.payload.len()
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }
}

/// One message on its way to one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// min(published QoS, subscription QoS).
    pub qos: QoS,
    /// RETAIN flag to send (retain-as-published, or a retained message sent
    /// because of a new subscription).
    pub retain: bool,
    /// Subscription identifiers of every matching subscription (5.0).
    pub subscription_identifiers: Vec<u32>,
}

/// Where an outbound QoS 1/2 message is in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflightState {
    /// QoS 1 PUBLISH sent.
    AwaitingPubAck,
    /// QoS 2 PUBLISH sent.
    AwaitingPubRec,
    /// PUBREC received, PUBREL sent.
    AwaitingPubComp,
}

/// An outbound QoS 1/2 message with its packet identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InflightMessage {
    pub packet_id: PacketId,
    pub delivery: Delivery,
    pub state: InflightState,
    /// When it (or its PUBREL) was last sent, for `retry_interval`.
    pub sent_at: Instant,
}

/// One subscription of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub options: SubscriptionOptions,
    pub subscription_identifier: Option<u32>,
}

/// A will waiting for its Will Delay Interval (5.0) after its connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWill {
    pub message: Message,
    pub publish_at: Instant,
}

/// A session: everything that outlives a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    pub client_id: ByteString,
    pub protocol_version: ProtocolVersion,
    /// Seconds after the connection closes; `u32::MAX` = never expires.
    pub session_expiry_interval: u32,
    /// Keyed by the filter as subscribed (with `$share/{group}/` if shared).
    pub subscriptions: BTreeMap<ByteString, Subscription>,
    /// Outbound QoS 1/2 messages in send order (MQTT-4.6.0-1).
    pub inflight: VecDeque<InflightMessage>,
    /// Messages waiting for the connection or the inflight window.
    pub queue: VecDeque<Delivery>,
    /// Sum of [`Message::weight`] over `queue`.
    pub queued_bytes: usize,
    /// Inbound QoS 2 packet ids whose PUBREL has not arrived, with the time
    /// the PUBLISH arrived (exactly-once across reconnects, Method B).
    pub awaiting_rel: BTreeMap<PacketId, Instant>,
    /// Last packet id handed out; the next search starts after it.
    pub last_packet_id: u16,
    /// When the last connection closed (`None` while connected).
    pub disconnected_at: Option<Instant>,
    /// Boxed: rare, and a `PendingWill` is ~0.5 KiB that every session
    /// would otherwise carry.
    pub pending_will: Option<Box<PendingWill>>,
}

impl SessionState {
    pub fn new(client_id: ByteString, protocol_version: ProtocolVersion) -> Self {
        Self {
            client_id,
            protocol_version,
            session_expiry_interval: 0,
            subscriptions: BTreeMap::new(),
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            awaiting_rel: BTreeMap::new(),
            last_packet_id: 0,
            disconnected_at: None,
            pending_will: None,
        }
    }

    /// A packet identifier not used by any inflight message (MQTT-2.2.1-3:
    /// never reuse one until its flow completes). `None` only when all
    /// 65,535 are in flight, which the inflight window prevents.
    pub fn next_packet_id(&mut self) -> Option<PacketId> {
        if self.inflight.len() >= usize::from(u16::MAX) {
            return None;
        }
        let mut candidate = self.last_packet_id;
        for _ in 0..u16::MAX {
            candidate = if candidate == u16::MAX {
                1
            } else {
                candidate + 1
            };
            let Some(id) = PacketId::new(candidate) else {
                continue;
            };
            if !self.inflight.iter().any(|m| m.packet_id == id) {
                self.last_packet_id = candidate;
                return Some(id);
            }
        }
        None
    }

    pub(crate) fn inflight_index(&self, id: PacketId) -> Option<usize> {
        self.inflight.iter().position(|m| m.packet_id == id)
    }
}

/// A retained message with the time its expiry is measured from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedMessage {
    pub message: Arc<Message>,
}

/// Everything persistent, for export/restore.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerState {
    pub sessions: Vec<SessionState>,
    pub retained: Vec<Arc<Message>>,
}
