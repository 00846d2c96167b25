//! The broker's inputs and outputs as plain values: connection ids,
//! transmits, events and the typed reasons a connection ends.

use core::fmt;
use core::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use crate::codec::{DecodeError, PacketType, ProtocolVersion, QoS, ReasonCode};
use crate::timer::TimerKind;

/// A connection, named by the runtime. Unique while the connection is open;
/// the runtime may reuse a value after [`super::Broker::handle_connection_closed`]
/// or after the broker's `CloseConnection` event for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// What the runtime knows about a new connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionInfo {
    /// The remote address, when the transport has one.
    pub peer: Option<SocketAddr>,
    /// The name of the listener that accepted it ("tcp", "tls", "quic", ...).
    pub listener: String,
    /// Opened by the program itself (a bridge's local side, an embedding
    /// host's in-process session), not by a peer: only such a connection
    /// may use a client id under [`RESERVED_CLIENT_ID_PREFIXES`].
    pub internal: bool,
}

/// Client ids that name the broker's own sessions (`$bridge/<name>` for a
/// bridge's local side, `$host/<n>` for an embedding host). A CONNECT from
/// a peer with one of them is refused, so no network client can take such
/// a session over.
pub const RESERVED_CLIENT_ID_PREFIXES: &[&str] = &["$bridge/", "$host/"];

/// Bytes to write to one connection. All bytes queued for a connection since
/// the last `poll_transmit` come out as one `Transmit`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "the bytes must be written to the connection"]
pub struct Transmit {
    pub conn: ConnectionId,
    pub data: Bytes,
}

/// Something the runtime (or a storage layer, or a log) must act on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[must_use]
pub enum Event {
    /// Write the pending transmits of `conn` (they are queued before this
    /// event), then close it. The broker has forgotten the connection.
    CloseConnection {
        conn: ConnectionId,
        reason: DisconnectReason,
    },
    /// A CONNECT was accepted and CONNACK queued.
    ClientConnected {
        conn: ConnectionId,
        client_id: ByteString,
        version: ProtocolVersion,
        /// The keep alive in force (after `max_keepalive`), seconds.
        keep_alive: u16,
        clean_start: bool,
        session_present: bool,
        peer: Option<SocketAddr>,
    },
    /// A connected client's connection ended (always followed by
    /// `CloseConnection` for the same `conn`, unless the transport was
    /// already gone).
    ClientDisconnected {
        conn: ConnectionId,
        client_id: ByteString,
        reason: DisconnectReason,
    },
    /// Flow control: a session this connection publishes to has reached its
    /// queue's high watermark (`max_queued_messages` or `max_queued_bytes`).
    /// Stop reading the connection's transport (TCP flow control then slows
    /// the publisher) until [`Event::ResumeReading`] for it. Packets already
    /// read may still be handed in. Emitted once per pause.
    PauseReading { conn: ConnectionId },
    /// Flow control: every session that paused this connection drained to
    /// half its high watermark (or ended); read its transport again.
    ResumeReading { conn: ConnectionId },
    /// Persistence: state changed. Emitted only with `storage_events` on.
    Storage(StorageEvent),
}

/// A change to persistent state. Each names what changed; the storage layer
/// reads the current value with [`super::Broker::session_state`] /
/// [`super::Broker::retained_message`] (or writes the deletion).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageEvent {
    /// The session was created or its subscriptions, expiry, inflight or
    /// queued messages changed.
    SessionChanged {
        client_id: ByteString,
    },
    /// The session ended (expired, clean start, or ended with its connection).
    SessionRemoved {
        client_id: ByteString,
    },
    RetainedChanged {
        topic: ByteString,
    },
    RetainedRemoved {
        topic: ByteString,
    },
}

/// Which protocol rule a client broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    #[error("first packet was {0}, not CONNECT (MQTT-3.1.0-1)")]
    FirstPacketNotConnect(PacketType),
    #[error("second CONNECT on one connection (MQTT-3.1.0-2)")]
    SecondConnect,
    #[error("{0} is a server-to-client packet")]
    ServerOnlyPacket(PacketType),
    #[error("PUBLISH with QoS {0} above the maximum QoS announced in CONNACK (MQTT-3.2.2-11)")]
    QoSNotSupported(u8),
    #[error("PUBLISH with RETAIN while retain is not available (MQTT-3.2.2-14)")]
    RetainNotSupported,
    #[error("topic alias {alias} outside 1..={maximum} (MQTT-3.3.2-9)")]
    TopicAliasInvalid { alias: u16, maximum: u16 },
    #[error("topic alias {0} used with an empty topic before being set (MQTT-3.3.2-?)")]
    TopicAliasUnknown(u16),
    #[error("invalid topic name {0:?}")]
    TopicNameInvalid(String),
    #[error("no local on a shared subscription (MQTT-3.8.3-4)")]
    SharedSubscriptionNoLocal,
    #[error("subscription identifier while not available (MQTT-3.2.2-? 0xA1)")]
    SubscriptionIdentifiersNotSupported,
    #[error("DISCONNECT sets a session expiry interval after CONNECT set 0 (MQTT-3.14.2-?)")]
    SessionExpiryAfterZero,
    #[error("AUTH after a CONNECT without authentication method (5.0 section 4.12)")]
    UnexpectedAuth,
}

impl ProtocolViolation {
    pub const fn reason_code(&self) -> ReasonCode {
        match self {
            ProtocolViolation::QoSNotSupported(_) => ReasonCode::QOS_NOT_SUPPORTED,
            ProtocolViolation::RetainNotSupported => ReasonCode::RETAIN_NOT_SUPPORTED,
            ProtocolViolation::TopicAliasInvalid { .. } => ReasonCode::TOPIC_ALIAS_INVALID,
            ProtocolViolation::TopicNameInvalid(_) => ReasonCode::TOPIC_NAME_INVALID,
            ProtocolViolation::SubscriptionIdentifiersNotSupported => {
                ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED
            }
            _ => ReasonCode::PROTOCOL_ERROR,
        }
    }
}

/// Why a connection ended. `Display` is one log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DisconnectReason {
    #[error("client sent DISCONNECT ({reason_code}){}", if *.will_published { ", will published" } else { "" })]
    ClientDisconnect {
        reason_code: ReasonCode,
        will_published: bool,
    },
    #[error("keep alive timeout: no packet for {:?} (keep alive {keep_alive}s x multiplier)", .deadline.saturating_duration_since(*.last_packet))]
    KeepAliveTimeout {
        keep_alive: u16,
        last_packet: Instant,
        deadline: Instant,
    },
    #[error("no CONNECT within {0:?} of the connection opening")]
    ConnectTimeout(Duration),
    #[error("malformed packet: {0}")]
    MalformedPacket(DecodeError),
    #[error("protocol error: {0}")]
    ProtocolError(ProtocolViolation),
    #[error("CONNECT refused with {reason_code}: {detail}")]
    ConnectRefused {
        reason_code: ReasonCode,
        detail: &'static str,
    },
    #[error("session taken over by a new connection {by}")]
    SessionTakenOver { by: ConnectionId },
    #[error("connection closed by the transport without DISCONNECT")]
    TransportClosed,
    #[error("server shutting down")]
    ServerShuttingDown,
    #[error("receive maximum of {maximum} exceeded (QoS 2 messages awaiting PUBREL)")]
    ReceiveMaximumExceeded { maximum: u16 },
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    PacketTooLarge { size: usize, max: u32 },
    #[error("client not reading: {pending} bytes pending, limit {limit}")]
    SlowConsumer { pending: usize, limit: usize },
    #[error("connection limit of {0} reached")]
    ServerBusy(usize),
}

impl DisconnectReason {
    /// The 5.0 reason code sent in DISCONNECT (or CONNACK) for this reason.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DisconnectReason::ClientDisconnect { reason_code, .. } => *reason_code,
            DisconnectReason::KeepAliveTimeout { .. } => ReasonCode::KEEP_ALIVE_TIMEOUT,
            DisconnectReason::ConnectTimeout(_) => ReasonCode::MAXIMUM_CONNECT_TIME,
            DisconnectReason::MalformedPacket(e) => e.reason_code(),
            DisconnectReason::ProtocolError(v) => v.reason_code(),
            DisconnectReason::ConnectRefused { reason_code, .. } => *reason_code,
            DisconnectReason::SessionTakenOver { .. } => ReasonCode::SESSION_TAKEN_OVER,
            DisconnectReason::TransportClosed => ReasonCode::UNSPECIFIED_ERROR,
            DisconnectReason::ServerShuttingDown => ReasonCode::SERVER_SHUTTING_DOWN,
            DisconnectReason::ReceiveMaximumExceeded { .. } => ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
            DisconnectReason::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DisconnectReason::SlowConsumer { .. } => ReasonCode::QUOTA_EXCEEDED,
            DisconnectReason::ServerBusy(_) => ReasonCode::SERVER_BUSY,
        }
    }

    /// Whether this end publishes the will (everything but a client
    /// DISCONNECT with 0x00, section 3.1.2.5 / MQTT-3.1.2-8, 3.1.1 MQTT-3.1.2-10).
    pub fn publishes_will(&self) -> bool {
        match self {
            DisconnectReason::ClientDisconnect { reason_code, .. } => {
                *reason_code == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE
            }
            _ => true,
        }
    }
}

/// Who owns a timer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerOwner {
    Connection(ConnectionId),
    /// A session by client identifier (its connection may be gone).
    Session(ByteString),
    Broker,
}

/// Why [`super::Broker::poll_timeout`] returns what it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeoutReason {
    pub deadline: Instant,
    pub owner: TimerOwner,
    pub kind: TimerKind,
}

impl fmt::Display for TimeoutReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.owner {
            TimerOwner::Connection(c) => write!(f, "{} of {c}", self.kind),
            TimerOwner::Session(s) => write!(f, "{} of session {s:?}", self.kind),
            TimerOwner::Broker => write!(f, "{}", self.kind),
        }
    }
}

/// How a shared subscription picks the member that receives a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SharedStrategy {
    /// Each group member in turn (connected members first).
    #[default]
    RoundRobin,
    /// A member chosen by the seeded RNG (connected members first).
    Random,
}

pub(crate) fn qos_min(a: QoS, b: QoS) -> QoS {
    if a <= b {
        a
    } else {
        b
    }
}
