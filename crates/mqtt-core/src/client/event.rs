//! What the client tells the application ([`ClientEvent`]) and the errors its
//! commands return ([`ClientError`]).

use bytestring::ByteString;

use crate::codec::{
    DecodeError, EncodeError, PacketId, PacketType, Properties, Publish, QoS, ReasonCode, SubAck,
    UnsubAck,
};
use crate::topic::TopicError;

/// What the server granted in CONNACK, with the values the client now obeys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    /// The server resumed a session (5.0 section 3.2.2.1.1).
    pub session_present: bool,
    /// 5.0 Assigned Client Identifier, when we sent an empty one.
    pub assigned_client_identifier: Option<ByteString>,
    /// The keep alive in force: the 5.0 Server Keep Alive when the server
    /// sent one (MQTT-3.2.2-21), else ours. 0 = no PINGREQ.
    pub keep_alive: u16,
    /// The outgoing inflight window: min(max_inflight, server Receive Maximum).
    pub inflight_window: u16,
    /// 5.0 Maximum QoS (QoS 2 when absent).
    pub maximum_qos: QoS,
    /// 5.0 Retain Available (true when absent).
    pub retain_available: bool,
    /// 5.0 Maximum Packet Size (no limit but the protocol's when absent).
    pub maximum_packet_size: Option<u32>,
    /// Every CONNACK property as received (wildcard / shared / subscription
    /// identifier availability, response information, user properties...).
    pub properties: Properties,
}

/// Why the transport must be closed. After [`ClientEvent::TransportDead`] the
/// runtime drains `poll_transmit` (a final DISCONNECT may be waiting), closes
/// the socket and calls `handle_transport_down`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportDeadReason {
    /// No PINGRESP within `ping_timeout` of PINGREQ.
    #[error("no PINGRESP within the ping timeout")]
    PingTimeout,
    /// No CONNACK within `connect_timeout` of the transport coming up.
    #[error("no CONNACK within the connect timeout")]
    ConnAckTimeout,
    /// CONNACK with a failure reason code (also reported as
    /// [`ClientEvent::ConnectRefused`]).
    #[error("connection refused: {0}")]
    ConnectRefused(ReasonCode),
    /// The server broke the protocol; a 5.0 DISCONNECT with
    /// [`ProtocolError::reason_code`] is queued.
    #[error("protocol error: {0}")]
    ProtocolError(ProtocolError),
    /// The server sent DISCONNECT (5.0).
    #[error("disconnected by the server: {reason_code}")]
    ServerDisconnect {
        reason_code: ReasonCode,
        reason_string: Option<ByteString>,
        server_reference: Option<ByteString>,
    },
    /// Our own DISCONNECT (from [`Client::disconnect`](super::Client::disconnect))
    /// has been handed to the transport.
    #[error("disconnected by the client")]
    ClientDisconnect,
}

/// A protocol violation by the server, detected by the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Bytes that do not decode (malformed, too large, ...).
    #[error("undecodable packet: {0}")]
    Decode(DecodeError),
    /// A packet the server may not send, or not in this state (anything but
    /// CONNACK first: MQTT-3.2.0-1; a second CONNACK; CONNECT, SUBSCRIBE,
    /// UNSUBSCRIBE or PINGREQ from a server; AUTH when we did not ask for
    /// enhanced authentication).
    #[error("unexpected {0} from the server")]
    UnexpectedPacket(PacketType),
    /// Session Present = 1 although we sent Clean Start = 1 (MQTT-3.2.2-1 in
    /// 3.1.1, MQTT-3.2.2-2 in 5.0).
    #[error("session present after a clean start")]
    SessionPresentAfterCleanStart,
    /// More unacknowledged inbound QoS 1/2 publishes than our Receive
    /// Maximum (5.0 section 4.9, reason 0x93).
    #[error("the server exceeded our receive maximum")]
    ReceiveMaximumExceeded,
    /// A Topic Alias although our CONNECT allowed none (Topic Alias Maximum
    /// absent = 0, 5.0 section 3.1.2.11.5; reason 0x94).
    #[error("topic alias {0} used; we allow none")]
    TopicAliasInvalid(u16),
    /// SUBACK / UNSUBACK with a reason code count different from the
    /// request's filter count (MQTT-3.8.4-6; 5.0 section 3.11.3).
    #[error("{packet_type} has {got} reason codes for {expected} filters")]
    ReasonCodeCountMismatch {
        packet_type: PacketType,
        expected: usize,
        got: usize,
    },
    /// An acknowledgement of the wrong kind for the packet id's flow (a
    /// PUBACK for a QoS 2 publish, a PUBCOMP before PUBREC, ...).
    #[error("{packet_type} for packet id {packet_id} does not match its flow")]
    AckMismatch {
        packet_type: PacketType,
        packet_id: PacketId,
    },
}

impl ProtocolError {
    /// The 5.0 reason code the client puts in its DISCONNECT.
    pub const fn reason_code(&self) -> ReasonCode {
        match self {
            ProtocolError::Decode(e) => e.reason_code(),
            ProtocolError::ReceiveMaximumExceeded => ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
            ProtocolError::TopicAliasInvalid(_) => ReasonCode::TOPIC_ALIAS_INVALID,
            ProtocolError::UnexpectedPacket(_)
            | ProtocolError::SessionPresentAfterCleanStart
            | ProtocolError::ReasonCodeCountMismatch { .. }
            | ProtocolError::AckMismatch { .. } => ReasonCode::PROTOCOL_ERROR,
        }
    }
}

/// Why a publish accepted earlier was dropped without being sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DropCause {
    /// Evicted (oldest QoS 0 first) to make room for a newer message.
    #[error("evicted from the full outgoing queue")]
    QueueFull,
    /// Bigger than the server's 5.0 Maximum Packet Size (MQTT-3.2.2-15).
    #[error("packet of {size} bytes exceeds the server's maximum packet size {max}")]
    PacketTooLarge { size: usize, max: u32 },
    /// The codec cannot represent it.
    #[error("cannot encode: {0}")]
    Encode(EncodeError),
}

/// Output of the client for the application, from `poll_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// CONNACK with success. Queued publishes and subscriptions go out now.
    Connected(Box<Connected>),
    /// CONNACK with a failure reason code; [`ClientEvent::TransportDead`]
    /// follows.
    ConnectRefused {
        reason_code: ReasonCode,
        properties: Box<Properties>,
    },
    /// An application message from the server, delivered once per the QoS
    /// contract (QoS 2 duplicates are not delivered again: MQTT-4.3.3-2 in 3.1.1,
    /// MQTT-4.3.3-10 in 5.0).
    Message(Publish),
    /// The end of an outgoing QoS 1/2 flow: PUBACK, PUBCOMP, or PUBREC with a
    /// failure code. `qos` is the QoS the flow ran at (lower than asked when
    /// downgraded to the server's Maximum QoS; for a downgrade to QoS 0 this
    /// is emitted when the PUBLISH is handed to the transport).
    PublishAcked {
        packet_id: PacketId,
        qos: QoS,
        reason_code: ReasonCode,
        properties: Box<Properties>,
    },
    /// SUBACK for a `subscribe` (or a resubscription).
    Subscribed(SubAck),
    /// UNSUBACK for an `unsubscribe`.
    Unsubscribed(UnsubAck),
    /// The server had no session: these unacknowledged QoS 1/2 publishes are
    /// sent again as new publishes (DUP = 0), in their original order.
    Republishing { packet_ids: Vec<PacketId> },
    /// The server had no session: the active subscriptions are re-issued in
    /// this SUBSCRIBE; its SUBACK arrives as [`ClientEvent::Subscribed`].
    Resubscribing {
        packet_id: PacketId,
        filters: Vec<ByteString>,
    },
    /// A publish accepted earlier will never be sent.
    Dropped {
        message: Box<Publish>,
        cause: DropCause,
    },
    /// Close the transport (after draining `poll_transmit`), then call
    /// `handle_transport_down`.
    TransportDead(TransportDeadReason),
}

/// Why a command was refused. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The outgoing queue is full of messages that may not be evicted (QoS
    /// 1/2, or QoS 0 newer than this one). The message is handed back.
    #[error("outgoing queue full ({messages} messages, {bytes} bytes)")]
    QueueFull {
        message: Box<Publish>,
        messages: usize,
        bytes: usize,
    },
    /// All 65,535 packet identifiers are held by queued or in-flight packets.
    #[error("no packet identifier free")]
    PacketIdsExhausted,
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    #[error("invalid topic filter {filter:?}: {error}")]
    InvalidTopicFilter {
        filter: ByteString,
        error: TopicError,
    },
    /// SUBSCRIBE / UNSUBSCRIBE need at least one filter (MQTT-3.8.3-2, MQTT-3.10.3-2).
    #[error("at least one topic filter is required")]
    NoTopicFilters,
    /// Larger than the connected server's Maximum Packet Size.
    #[error("packet of {size} bytes exceeds the server's maximum packet size {max}")]
    PacketTooLarge { size: usize, max: u32 },
    #[error("cannot encode: {0}")]
    Encode(EncodeError),
    /// A DISCONNECT may not set a non-zero Session Expiry Interval when
    /// CONNECT set 0 (5.0 section 3.14.2.2.2).
    #[error("session expiry interval cannot be raised from 0 in DISCONNECT")]
    SessionExpiryAfterZero,
}

/// Counters, for metrics and tests. They only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// CONNECT packets queued.
    pub connects: u64,
    /// Successful CONNACKs.
    pub connacks: u64,
    pub pings_sent: u64,
    pub ping_timeouts: u64,
    /// Publishes refused by `publish` because the queue was full.
    pub refused_queue_full: u64,
    /// Publishes evicted from the queue ([`DropCause::QueueFull`]).
    pub dropped_queue_full: u64,
    /// Publishes dropped at send time as too large or unencodable.
    pub dropped_unsendable: u64,
    /// Publishes whose QoS was lowered to the server's Maximum QoS, or whose
    /// RETAIN was cleared because Retain Available = 0.
    pub downgraded: u64,
    /// Publishes re-sent with DUP after reconnecting into a present session.
    pub resent_dup: u64,
    /// Publishes re-sent as new after reconnecting without a session.
    pub republished: u64,
    /// SUBSCRIBE packets re-issued after reconnecting without a session.
    pub resubscribes: u64,
    /// Acknowledgements for packet ids we do not know (ignored).
    pub unknown_acks: u64,
    /// Inbound QoS 2 duplicates not delivered again.
    pub duplicates_suppressed: u64,
    pub messages_received: u64,
    pub bytes_sent: u64,
}
