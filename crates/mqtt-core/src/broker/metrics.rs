//! Counters and gauges. Plain fields: a runtime exports them as it likes.

use std::time::Duration;

use crate::codec::PacketType;

/// Why a message was not delivered to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Published to a topic no session subscribes to.
    NoSubscribers,
    /// The session queue was full (count or bytes); the oldest QoS 0 went
    /// first, else the new message was refused.
    QueueFull,
    /// QoS 0 to a congested connection (`max_pending_bytes_per_connection`).
    SlowConsumer,
    /// Bigger than the client's Maximum Packet Size (MQTT-3.1.2-25).
    PacketTooLarge,
    /// Message Expiry Interval passed while queued or retained.
    Expired,
    /// QoS 0 to an offline session with `queue_qos0_messages` off.
    OfflineQoS0,
    /// A new retained topic beyond `max_retained_messages`.
    RetainedLimit,
    /// An inbound QoS 2 id forgotten after `await_rel_timeout`.
    AwaitRelTimeout,
    /// A client published to a `$SYS` topic.
    SysTopicFromClient,
    /// A queued message of a session that ended.
    SessionEnded,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::NoSubscribers,
        DropReason::QueueFull,
        DropReason::SlowConsumer,
        DropReason::PacketTooLarge,
        DropReason::Expired,
        DropReason::OfflineQoS0,
        DropReason::RetainedLimit,
        DropReason::AwaitRelTimeout,
        DropReason::SysTopicFromClient,
        DropReason::SessionEnded,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::NoSubscribers => "no_subscribers",
            DropReason::QueueFull => "queue_full",
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::PacketTooLarge => "packet_too_large",
            DropReason::Expired => "expired",
            DropReason::OfflineQoS0 => "offline_qos0",
            DropReason::RetainedLimit => "retained_limit",
            DropReason::AwaitRelTimeout => "await_rel_timeout",
            DropReason::SysTopicFromClient => "sys_topic_from_client",
            DropReason::SessionEnded => "session_ended",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds of the keepalive detection-latency buckets
/// (`handle_timeout` now - deadline); the last bucket is everything above.
pub const LATENCY_BUCKETS: [Duration; 7] = [
    Duration::ZERO,
    Duration::from_millis(1),
    Duration::from_millis(10),
    Duration::from_millis(100),
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(20),
];

/// A fixed-bucket histogram: `counts[i]` counts values `<= LATENCY_BUCKETS[i]`
/// (and above the previous bound); `counts[7]` counts the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    pub counts: [u64; 8],
    pub max: Duration,
    pub sum: Duration,
}

impl LatencyHistogram {
    pub fn record(&mut self, d: Duration) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| d <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.max = self.max.max(d);
        self.sum = self.sum.saturating_add(d);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Broker counters (monotonic) and gauges (current values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Gauge: open connections (with or without CONNECT).
    pub connections: u64,
    /// Gauge: connections past CONNACK.
    pub clients_connected: u64,
    /// Gauge: sessions (connected or not).
    pub sessions: u64,
    /// Gauge: subscriptions over all sessions.
    pub subscriptions: u64,
    /// Gauge: retained messages.
    pub retained_messages: u64,
    pub connections_opened: u64,
    pub connections_closed: u64,
    /// Connections refused at open because of `max_connections`.
    pub connections_refused: u64,
    /// Packets received, indexed by packet type (1..=15).
    pub packets_received: [u64; 16],
    /// Packets sent, indexed by packet type (1..=15).
    pub packets_sent: [u64; 16],
    pub bytes_received: u64,
    /// Bytes handed out by `poll_transmit`.
    pub bytes_sent: u64,
    /// PUBLISH packets accepted from clients (and wills, and injected).
    pub messages_received: u64,
    /// PUBLISH packets queued for sending to clients (retransmissions too).
    pub messages_sent: u64,
    /// Retransmissions with DUP (reconnect or retry interval).
    pub messages_retransmitted: u64,
    /// Dropped messages by cause, indexed like [`DropReason::ALL`].
    pub messages_dropped: [u64; 10],
    pub keepalive_timeouts: u64,
    pub connect_timeouts: u64,
    /// Wills published.
    pub wills_published: u64,
    /// Connections closed for a malformed packet or a protocol error.
    pub protocol_errors: u64,
    /// Publisher connections paused by flow control (`Event::PauseReading`).
    pub flow_control_pauses: u64,
    /// `handle_timeout` now - keepalive deadline, per keepalive close.
    pub keepalive_detection_latency: LatencyHistogram,
}

impl Metrics {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.messages_dropped
            .get(reason.index())
            .copied()
            .unwrap_or(0)
    }

    pub fn dropped_total(&self) -> u64 {
        self.messages_dropped.iter().sum()
    }

    pub fn packets_received_of(&self, t: PacketType) -> u64 {
        self.packets_received.get(t as usize).copied().unwrap_or(0)
    }

    pub fn packets_sent_of(&self, t: PacketType) -> u64 {
        self.packets_sent.get(t as usize).copied().unwrap_or(0)
    }

    pub(crate) fn drop(&mut self, reason: DropReason) {
        if let Some(c) = self.messages_dropped.get_mut(reason.index()) {
            *c += 1;
        }
    }

    pub(crate) fn count_in(&mut self, t: PacketType) {
        if let Some(c) = self.packets_received.get_mut(t as usize) {
            *c += 1;
        }
    }

    pub(crate) fn count_out(&mut self, t: PacketType) {
        if let Some(c) = self.packets_sent.get_mut(t as usize) {
            *c += 1;
        }
    }
}
