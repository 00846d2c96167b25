//! [`ClientConfig`]: everything a [`Client`](super::Client) needs to know
//! before its first CONNECT, with documented defaults.

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;

use crate::codec::{ProtocolVersion, Will, MAX_PACKET_SIZE};

/// When the client sends PINGREQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeepAlivePolicy {
    /// The spec's rule (MQTT-3.1.2-23): PINGREQ when the keep alive interval
    /// has passed since the last packet *we sent*. Incoming traffic never
    /// postpones it; outgoing traffic does.
    #[default]
    IdleSend,
    /// PINGREQ every keep alive interval whatever else is sent, so a server
    /// that stopped answering is detected even while we only publish QoS 0.
    /// Still satisfies MQTT-3.1.2-23 (it only sends more than required).
    Periodic,
}

/// Configuration of one client connection. Plain data: build it with
/// `ClientConfig { client_id: "edge-1".into(), ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Client Identifier. Default: empty, which 3.1.1 and 5.0 servers may
    /// accept with a clean start; a 5.0 server then assigns one, which the
    /// client reuses on every later CONNECT so the session can resume.
    /// 3.1 requires a non-empty one.
    pub client_id: ByteString,
    /// Default: [`ProtocolVersion::V5`].
    pub protocol_version: ProtocolVersion,
    /// Keep Alive in seconds, sent in CONNECT; 0 disables PINGREQ.
    /// Default: 60. A 5.0 Server Keep Alive in CONNACK replaces it
    /// (MQTT-3.2.2-21).
    pub keep_alive: u16,
    /// Default: [`KeepAlivePolicy::IdleSend`].
    pub keep_alive_policy: KeepAlivePolicy,
    /// Clean Session (3.x) / Clean Start (5.0), used for every CONNECT
    /// (change it between connects with
    /// [`Client::set_clean_start`](super::Client::set_clean_start)).
    /// Default: true.
    pub clean_start: bool,
    /// 5.0 Session Expiry Interval in seconds (0 = session ends with the
    /// connection; `u32::MAX` = never expires). Default: 0.
    pub session_expiry_interval: u32,
    /// Default: none.
    pub username: Option<ByteString>,
    /// Default: none. 3.x requires a user name with a password
    /// (MQTT-3.1.2-22); 5.0 does not.
    pub password: Option<Bytes>,
    /// Will message. Default: none.
    pub will: Option<Will>,
    /// How many inbound QoS 1/2 publishes may be unacknowledged at once
    /// (5.0 Receive Maximum, sent in CONNECT when below 65,535). Also bounds
    /// the inbound QoS 2 awaiting-PUBREL set in every version. Default:
    /// 65,535 (the spec's default); 0 is invalid.
    pub receive_maximum: u16,
    /// Largest packet we accept (5.0 Maximum Packet Size, sent in CONNECT);
    /// bigger inbound packets are a protocol error (0x95). Enforced in 3.x
    /// too, where the server cannot know it. Default: 1 MiB (EMQX's default).
    pub maximum_packet_size: u32,
    /// How long to wait for PINGRESP after queueing PINGREQ before declaring
    /// the transport dead. Measured from when PINGREQ is queued, so a
    /// transport that stopped accepting writes is detected as well.
    /// Default: 15 s.
    pub ping_timeout: Duration,
    /// How long to wait for CONNACK after the transport came up.
    /// Default: 10 s.
    pub connect_timeout: Duration,
    /// Outgoing QoS 1/2 publishes in flight at once; the effective window is
    /// the minimum of this and the server's 5.0 Receive Maximum. Default:
    /// 100; 0 is invalid.
    pub max_inflight: u16,
    /// Publishes waiting to be sent (not yet in flight), all QoS together.
    /// Default: 10,000.
    pub max_queued_messages: usize,
    /// Bytes of topic + payload waiting to be sent. Default: 16 MiB.
    pub max_queued_bytes: usize,
    /// Soft cap on the bytes one `poll_transmit` call returns: packets are
    /// coalesced until the next one would pass it (one packet always goes,
    /// whatever its size). Keeping it small lets control packets queued
    /// later overtake data the runtime has not pulled yet. Default: 64 KiB.
    pub max_transmit_bytes: usize,
    /// 5.0 user properties for CONNECT. Default: none.
    pub user_properties: Vec<(ByteString, ByteString)>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            client_id: ByteString::new(),
            protocol_version: ProtocolVersion::V5,
            keep_alive: 60,
            keep_alive_policy: KeepAlivePolicy::IdleSend,
            clean_start: true,
            session_expiry_interval: 0,
            username: None,
            password: None,
            will: None,
            receive_maximum: u16::MAX,
            maximum_packet_size: 1024 * 1024,
            ping_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            max_inflight: 100,
            max_queued_messages: 10_000,
            max_queued_bytes: 16 * 1024 * 1024,
            max_transmit_bytes: 64 * 1024,
            user_properties: Vec::new(),
        }
    }
}

/// A configuration the client refuses at construction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("max_inflight must be at least 1")]
    ZeroMaxInflight,
    #[error("receive_maximum must be at least 1 (5.0 section 3.1.2.11.3)")]
    ZeroReceiveMaximum,
    #[error("maximum_packet_size must be between 1 and {MAX_PACKET_SIZE}")]
    InvalidMaximumPacketSize,
    #[error("a password requires a user name before MQTT 5.0 (MQTT-3.1.2-22)")]
    PasswordWithoutUsername,
    #[error("MQTT 3.1 requires a client identifier of 1 to 23 bytes")]
    InvalidV31ClientId,
    #[error("invalid will topic: {0}")]
    InvalidWillTopic(crate::topic::TopicError),
    /// CONNECT cannot be encoded (a field longer than 65,535 bytes, ...).
    #[error("CONNECT cannot be encoded: {0}")]
    Connect(crate::codec::EncodeError),
}

impl ClientConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_inflight == 0 {
            return Err(ConfigError::ZeroMaxInflight);
        }
        if self.receive_maximum == 0 {
            return Err(ConfigError::ZeroReceiveMaximum);
        }
        if self.maximum_packet_size == 0 || self.maximum_packet_size > MAX_PACKET_SIZE {
            return Err(ConfigError::InvalidMaximumPacketSize);
        }
        if !self.protocol_version.is_v5() && self.password.is_some() && self.username.is_none() {
            return Err(ConfigError::PasswordWithoutUsername);
        }
        if self.protocol_version == ProtocolVersion::V3_1
            && (self.client_id.is_empty() || self.client_id.len() > 23)
        {
            return Err(ConfigError::InvalidV31ClientId);
        }
        if let Some(will) = &self.will {
            crate::topic::validate_topic_name(&will.topic)
                .map_err(ConfigError::InvalidWillTopic)?;
        }
        Ok(())
    }
}
