//! Broker configuration: a plain struct, every field documented with its default.

use std::time::Duration;

use crate::codec::{QoS, MAX_PACKET_SIZE};

use super::types::SharedStrategy;

/// Everything the broker core can be told. Build it with
/// `BrokerConfig { field: value, ..Default::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    /// Node name used in `$SYS/brokers/{node}/...` topics. Default `"sansmq"`.
    pub node_name: String,
    /// Seed of the RNG used for assigned client identifiers and the random
    /// shared-subscription strategy. Same seed + same inputs = same outputs.
    /// Default `0`.
    pub rng_seed: u64,
    /// Open connections (with or without CONNECT) beyond which new ones are
    /// closed at once. Default `100_000`.
    pub max_connections: usize,
    /// Sessions kept (connected or not); a CONNECT that would create one
    /// more is refused with Quota exceeded (0x97; 3.x: Server unavailable).
    /// Default 1,000,000.
    pub max_sessions: usize,
    /// Time a new connection has to send CONNECT. Default 10 s.
    pub connect_timeout: Duration,
    /// Keepalive deadline = last packet received + keep alive x this
    /// (MQTT-3.1.2-24 says 1.5). Default `1.5`.
    pub keepalive_multiplier: f64,
    /// 5.0: the largest keep alive a client may use; a larger (or zero) value
    /// is replaced and returned as Server Keep Alive. `u16::MAX` = no cap.
    /// 3.x clients cannot be told, so their value stands. Default `u16::MAX`.
    pub max_keepalive: u16,
    /// 3.x only: resend unacknowledged QoS 1/2 messages (DUP) this long after
    /// sending them. `None` = resend only on reconnect, the only time the
    /// spec requires it (5.0 forbids anything else, MQTT-4.4.0-1). Default `None`.
    pub retry_interval: Option<Duration>,
    /// Largest packet we accept, fixed header included; announced to 5.0
    /// clients as Maximum Packet Size. Default 1 MiB.
    pub max_packet_size: u32,
    /// Receive Maximum announced in CONNACK: inbound QoS 2 messages a client
    /// may have awaiting PUBREL (QoS 1 is acknowledged at once). The
    /// effective value is `min(receive_maximum, max_awaiting_rel)`. Default 128.
    pub receive_maximum: u16,
    /// Bound of the inbound awaiting-PUBREL set per session (all versions;
    /// a client going over it is disconnected, 0x93). Default 128.
    pub max_awaiting_rel: usize,
    /// A QoS 2 packet id awaiting PUBREL longer than this is forgotten
    /// (counted). Default 300 s.
    pub await_rel_timeout: Duration,
    /// Outbound QoS 1/2 messages in flight per connection (also capped by a
    /// 5.0 client's Receive Maximum). Default 32.
    pub max_inflight: u16,
    /// Messages queued per session (offline, or waiting for the inflight
    /// window). Default 1000.
    pub max_queued_messages: usize,
    /// Payload + topic bytes queued per session. Default 16 MiB.
    pub max_queued_bytes: usize,
    /// Publisher flow control: `max_queued_messages` and `max_queued_bytes`
    /// are the high watermark of a connected session's queue. A QoS 1/2
    /// message that puts it there pauses the publisher's connection
    /// ([`super::Event::PauseReading`]; resumed at half the watermark), and
    /// QoS 1/2 messages keep being queued up to this many messages (and up to
    /// twice `max_queued_bytes`) past it, for the packets the runtime had
    /// already read; only past that are they dropped (`queue_full`). QoS 0
    /// is dropped at the watermark as before. Lossless as long as what the
    /// runtime had read before the pause took effect fits: its input
    /// channel (rt-smol: 128 inputs x 16 packets = 2,048; rt-std: 1,024 x
    /// 16 = 16,384), one input per connection blocked on it, and one read.
    /// Default 20,000.
    pub flow_control_overshoot: usize,
    /// Queue QoS 0 messages for offline persistent sessions. Default `true`.
    pub queue_qos0_messages: bool,
    /// Bytes handed out by `poll_transmit` and not yet reported written by
    /// `handle_written`, plus bytes queued, above which the connection is
    /// congested: QoS 0 to it is dropped (counted) and QoS 1/2 wait in the
    /// session queue. Default 1 MiB.
    pub max_pending_bytes_per_connection: usize,
    /// 3.x sessions with Clean Session 0 end this long after their
    /// connection closes. `None` = never. Default 2 hours.
    pub v3_session_expiry: Option<Duration>,
    /// 5.0: cap on the Session Expiry Interval a client asks for (seconds;
    /// `u32::MAX` = no cap; a capped value is returned in CONNACK).
    /// Default `u32::MAX`.
    pub max_session_expiry_interval: u32,
    /// Highest QoS we accept and grant; announced to 5.0 clients.
    /// Default `QoS::ExactlyOnce`.
    pub maximum_qos: QoS,
    /// Whether retained messages are supported. Default `true`.
    pub retain_available: bool,
    /// Retained messages kept; new topics beyond it are not stored (counted).
    /// Default 100,000.
    pub max_retained_messages: usize,
    /// Whether `+`/`#` filters are accepted. Default `true`.
    pub wildcard_subscription_available: bool,
    /// Whether `$share/{group}/{filter}` is accepted. Default `true`.
    pub shared_subscription_available: bool,
    /// Whether 5.0 Subscription Identifiers are accepted. Default `true`.
    pub subscription_identifier_available: bool,
    /// How a shared subscription picks a member. Default round robin.
    pub shared_subscription_strategy: SharedStrategy,
    /// Subscriptions per session; more are refused in SUBACK (0x97 / 0x80).
    /// Default 1000.
    pub max_subscriptions_per_client: usize,
    /// Topic levels allowed in a topic name or filter. Default 128.
    pub max_topic_levels: usize,
    /// Longest client identifier accepted (3.1 is always limited to 23).
    /// Default 256.
    pub max_client_id_len: usize,
    /// 5.0 Topic Alias Maximum we announce (inbound aliases per connection).
    /// Default 16.
    pub topic_alias_maximum: u16,
    /// 5.0: aliases we assign on outbound PUBLISH, at most the client's own
    /// Topic Alias Maximum; 0 = never assign. Default 0.
    pub outbound_topic_alias_maximum: u16,
    /// Publish `$SYS/brokers/{node}/clients/{id}/connected|disconnected`.
    /// Default `true`.
    pub sys_events: bool,
    /// Publish `$SYS/brokers/{node}/...` statistics this often. `None` = off.
    /// Default `None`.
    pub sys_interval: Option<Duration>,
    /// Emit [`super::Event::Storage`] for every change of persistent state.
    /// Default `false`.
    pub storage_events: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_name: "sansmq".to_owned(),
            rng_seed: 0,
            max_connections: 100_000,
            max_sessions: 1_000_000,
            connect_timeout: Duration::from_secs(10),
            keepalive_multiplier: 1.5,
            max_keepalive: u16::MAX,
            retry_interval: None,
            max_packet_size: 1024 * 1024,
            receive_maximum: 128,
            max_awaiting_rel: 128,
            await_rel_timeout: Duration::from_secs(300),
            max_inflight: 32,
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            flow_control_overshoot: 20_000,
            queue_qos0_messages: true,
            max_pending_bytes_per_connection: 1024 * 1024,
            v3_session_expiry: Some(Duration::from_secs(2 * 3600)),
            max_session_expiry_interval: u32::MAX,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            max_retained_messages: 100_000,
            wildcard_subscription_available: true,
            shared_subscription_available: true,
            subscription_identifier_available: true,
            shared_subscription_strategy: SharedStrategy::RoundRobin,
            max_subscriptions_per_client: 1000,
            max_topic_levels: 128,
            max_client_id_len: 256,
            topic_alias_maximum: 16,
            outbound_topic_alias_maximum: 0,
            sys_events: true,
            sys_interval: None,
            storage_events: false,
        }
    }
}

impl BrokerConfig {
    /// The configured limits, clamped to what the wire format and the spec
    /// allow (so a bad config can never make the broker misbehave).
    pub(crate) fn normalized(mut self) -> Self {
        self.max_packet_size = self.max_packet_size.clamp(64, MAX_PACKET_SIZE);
        self.receive_maximum = self.receive_maximum.max(1);
        self.max_awaiting_rel = self.max_awaiting_rel.max(1);
        self.max_inflight = self.max_inflight.max(1);
        self.max_keepalive = self.max_keepalive.max(1);
        if !self.keepalive_multiplier.is_finite() || self.keepalive_multiplier < 1.0 {
            self.keepalive_multiplier = 1.5;
        }
        self.max_topic_levels = self.max_topic_levels.max(1);
        self
    }

    /// Receive Maximum actually enforced (section 3.2.2.3.3).
    pub(crate) fn inbound_receive_maximum(&self) -> u16 {
        let cap = u16::try_from(self.max_awaiting_rel).unwrap_or(u16::MAX);
        self.receive_maximum.min(cap).max(1)
    }
}
