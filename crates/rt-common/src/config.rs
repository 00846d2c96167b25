//! The `sansmq.toml` file: listeners, runtime knobs, logging, every
//! [`BrokerConfig`] field, and `[[bridge]]` sections (one per
//! [`BridgeConfig`], defaults read from `BridgeConfig::default()`; the
//! example shows one commented out, since there is none by default).
//!
//! - Every key is optional; a missing key takes its default. The defaults
//!   of the `[broker]` section are *read from* `BrokerConfig::default()`, so
//!   they cannot drift from the core, and [`example`] prints the same values
//!   the code uses.
//! - Unknown keys and bad values are errors naming the key path
//!   (`broker.max_inflight: invalid value ...`).
//! - Durations are an integer number of seconds (`10`) or a string with
//!   units (`"10s"`, `"500ms"`, `"2h"`, `"1h 30m"`). Optional durations also
//!   take `"off"` (or `"never"`). Sizes in bytes are an integer (`1048576`)
//!   or a string with a unit (`"1MiB"`, `"64KiB"`, `"16MB"`).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use mqtt_core::bridge::{
    BridgeConfig, Forward, ReconnectPolicy, Subscription, Transport as BridgeTransport,
};
use mqtt_core::broker::{BrokerConfig, SharedStrategy};
use mqtt_core::codec::{ProtocolVersion, QoS, MAX_PACKET_SIZE};
use serde::{Deserialize, Serialize};

use crate::quic::QuicSetupError;

/// A configuration problem, always naming where it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// TOML syntax error (the message carries line and column).
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    /// An unknown key or a value of the wrong type or form.
    #[error("{file}: {path}: {message}")]
    Key {
        file: String,
        path: String,
        message: String,
    },
    /// A value of the right type outside what it may be.
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub log: LogConfig,
    pub runtime: RuntimeConfig,
    /// At least one. `--bind` / `--port` override the first.
    pub listeners: Vec<ListenerConfig>,
    pub broker: BrokerSection,
    /// `[[bridge]]` sections; none by default.
    #[serde(rename = "bridge")]
    pub bridges: Vec<BridgeSection>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            log: LogConfig::default(),
            runtime: RuntimeConfig::default(),
            listeners: vec![ListenerConfig::default()],
            broker: BrokerSection::default(),
            bridges: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter directive (`info`, `debug`, `info,rt_smol=trace`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// smol executor threads at most; 0 = one per CPU core. One runs
    /// always; the others join only while the core is busy. rt-std
    /// ignores it.
    pub worker_threads: usize,
    /// How long a graceful shutdown waits for sockets to flush.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            worker_threads: 0,
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// The transport a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// MQTT over plain TCP.
    #[default]
    Tcp,
    /// MQTT over QUIC (UDP): TLS 1.3, ALPN "mqtt", one bidirectional
    /// stream per connection; needs `cert` and `key`.
    Quic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Shown in logs and given to the core as `ConnectionInfo::listener`.
    pub name: String,
    pub transport: Transport,
    pub bind: IpAddr,
    /// 0 = any free port (the chosen one is logged).
    pub port: u16,
    /// QUIC: PEM certificate chain presented to clients ("" = none).
    pub cert: String,
    /// QUIC: PEM private key of `cert` ("" = none).
    pub key: String,
    /// QUIC: PEM CA certificates client certificates must chain to; ""
    /// = clients are not asked for a certificate.
    pub client_ca: String,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            name: "mqtt".to_owned(),
            transport: Transport::Tcp,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 1883,
            cert: String::new(),
            key: String::new(),
            client_ca: String::new(),
        }
    }
}

impl ListenerConfig {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }
}

/// `[broker]`: one key per [`BrokerConfig`] field (see its docs for the
/// meaning of each), in a file-friendly form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    pub node_name: String,
    pub rng_seed: u64,
    pub max_connections: usize,
    pub max_sessions: usize,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    pub keepalive_multiplier: f64,
    pub max_keepalive: u16,
    #[serde(with = "opt_duration")]
    pub retry_interval: Option<Duration>,
    #[serde(with = "byte_size_u32")]
    pub max_packet_size: u32,
    pub receive_maximum: u16,
    pub max_awaiting_rel: usize,
    #[serde(with = "duration")]
    pub await_rel_timeout: Duration,
    pub max_inflight: u16,
    pub max_queued_messages: usize,
    #[serde(with = "byte_size")]
    pub max_queued_bytes: usize,
    pub flow_control_overshoot: usize,
    pub queue_qos0_messages: bool,
    #[serde(with = "byte_size")]
    pub max_pending_bytes_per_connection: usize,
    #[serde(with = "opt_duration")]
    pub v3_session_expiry: Option<Duration>,
    pub max_session_expiry_interval: u32,
    #[serde(with = "qos")]
    pub maximum_qos: QoS,
    pub retain_available: bool,
    pub max_retained_messages: usize,
    pub wildcard_subscription_available: bool,
    pub shared_subscription_available: bool,
    pub subscription_identifier_available: bool,
    pub shared_subscription_strategy: Strategy,
    pub max_subscriptions_per_client: usize,
    pub max_topic_levels: usize,
    pub max_client_id_len: usize,
    pub topic_alias_maximum: u16,
    pub outbound_topic_alias_maximum: u16,
    pub sys_events: bool,
    #[serde(with = "opt_duration")]
    pub sys_interval: Option<Duration>,
}

/// [`SharedStrategy`] as it is spelled in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    RoundRobin,
    Random,
}

impl Default for BrokerSection {
    fn default() -> Self {
        Self::from(BrokerConfig::default())
    }
}

impl From<BrokerConfig> for BrokerSection {
    fn from(c: BrokerConfig) -> Self {
        // Destructured without `..`: a field added to the core fails to
        // compile here until the file format covers it.
        let BrokerConfig {
            node_name,
            rng_seed,
            max_connections,
            max_sessions,
            connect_timeout,
            keepalive_multiplier,
            max_keepalive,
            retry_interval,
            max_packet_size,
            receive_maximum,
            max_awaiting_rel,
            await_rel_timeout,
            max_inflight,
            max_queued_messages,
            max_queued_bytes,
            flow_control_overshoot,
            queue_qos0_messages,
            max_pending_bytes_per_connection,
            v3_session_expiry,
            max_session_expiry_interval,
            maximum_qos,
            retain_available,
            max_retained_messages,
            wildcard_subscription_available,
            shared_subscription_available,
            subscription_identifier_available,
            shared_subscription_strategy,
            max_subscriptions_per_client,
            max_topic_levels,
            max_client_id_len,
            topic_alias_maximum,
            outbound_topic_alias_maximum,
            sys_events,
            sys_interval,
            // No storage layer in this runtime yet: nothing would consume them.
            storage_events: _,
        } = c;
        Self {
            node_name,
            rng_seed,
            max_connections,
            max_sessions,
            connect_timeout,
            keepalive_multiplier,
            max_keepalive,
            retry_interval,
            max_packet_size,
            receive_maximum,
            max_awaiting_rel,
            await_rel_timeout,
            max_inflight,
            max_queued_messages,
            max_queued_bytes,
            flow_control_overshoot,
            queue_qos0_messages,
            max_pending_bytes_per_connection,
            v3_session_expiry,
            max_session_expiry_interval,
            maximum_qos,
            retain_available,
            max_retained_messages,
            wildcard_subscription_available,
            shared_subscription_available,
            subscription_identifier_available,
            shared_subscription_strategy: match shared_subscription_strategy {
                SharedStrategy::RoundRobin => Strategy::RoundRobin,
                SharedStrategy::Random => Strategy::Random,
            },
            max_subscriptions_per_client,
            max_topic_levels,
            max_client_id_len,
            topic_alias_maximum,
            outbound_topic_alias_maximum,
            sys_events,
            sys_interval,
        }
    }
}

impl BrokerSection {
    /// The core's configuration.
    pub fn to_broker_config(&self) -> BrokerConfig {
        let s = self.clone();
        BrokerConfig {
            node_name: s.node_name,
            rng_seed: s.rng_seed,
            max_connections: s.max_connections,
            max_sessions: s.max_sessions,
            connect_timeout: s.connect_timeout,
            keepalive_multiplier: s.keepalive_multiplier,
            max_keepalive: s.max_keepalive,
            retry_interval: s.retry_interval,
            max_packet_size: s.max_packet_size,
            receive_maximum: s.receive_maximum,
            max_awaiting_rel: s.max_awaiting_rel,
            await_rel_timeout: s.await_rel_timeout,
            max_inflight: s.max_inflight,
            max_queued_messages: s.max_queued_messages,
            max_queued_bytes: s.max_queued_bytes,
            flow_control_overshoot: s.flow_control_overshoot,
            queue_qos0_messages: s.queue_qos0_messages,
            max_pending_bytes_per_connection: s.max_pending_bytes_per_connection,
            v3_session_expiry: s.v3_session_expiry,
            max_session_expiry_interval: s.max_session_expiry_interval,
            maximum_qos: s.maximum_qos,
            retain_available: s.retain_available,
            max_retained_messages: s.max_retained_messages,
            wildcard_subscription_available: s.wildcard_subscription_available,
            shared_subscription_available: s.shared_subscription_available,
            subscription_identifier_available: s.subscription_identifier_available,
            shared_subscription_strategy: match s.shared_subscription_strategy {
                Strategy::RoundRobin => SharedStrategy::RoundRobin,
                Strategy::Random => SharedStrategy::Random,
            },
            max_subscriptions_per_client: s.max_subscriptions_per_client,
            max_topic_levels: s.max_topic_levels,
            max_client_id_len: s.max_client_id_len,
            topic_alias_maximum: s.topic_alias_maximum,
            outbound_topic_alias_maximum: s.outbound_topic_alias_maximum,
            sys_events: s.sys_events,
            sys_interval: s.sys_interval,
            storage_events: false,
        }
    }
}

/// A bridge transport as it is spelled in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BridgeTransportName {
    Tcp,
    /// Not built yet (there is no TLS listener issue): a dial fails at
    /// once, so a transport list falls back to the next one.
    Tls,
    /// MQTT over QUIC (the `quic_*` keys).
    Quic,
}

/// The MQTT version a bridge speaks to its remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BridgeProtocol {
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5.0", alias = "5")]
    V5,
}

/// `forwards = [{ filter = "sensors/#", qos = 1, remote_prefix = "edge1/" }]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSection {
    /// A topic filter on the local broker.
    pub filter: String,
    /// Default: 1.
    #[serde(with = "qos", default = "qos_one")]
    pub qos: QoS,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_topic: Option<String>,
}

/// `subscriptions = [{ filter = "cmd/#", qos = 1, local_prefix = "cloud/" }]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSection {
    /// A topic filter on the remote broker.
    pub filter: String,
    /// Default: 1.
    #[serde(with = "qos", default = "qos_one")]
    pub qos: QoS,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_topic: Option<String>,
}

fn qos_one() -> QoS {
    QoS::AtLeastOnce
}

/// One `[[bridge]]` section: one key per [`BridgeConfig`] field, defaults
/// read from `BridgeConfig::default()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeSection {
    pub name: String,
    pub addresses: Vec<String>,
    pub transports: Vec<BridgeTransportName>,
    /// "" = `sansmq-bridge-{name}`.
    pub client_id: String,
    /// "" = none.
    pub username: String,
    /// "" = none.
    pub password: String,
    pub protocol_version: BridgeProtocol,
    pub keep_alive: u16,
    #[serde(with = "duration")]
    pub ping_timeout: Duration,
    pub clean_start: bool,
    pub session_expiry_interval: u32,
    pub forwards: Vec<ForwardSection>,
    pub subscriptions: Vec<SubscriptionSection>,
    #[serde(with = "duration")]
    pub reconnect_base: Duration,
    #[serde(with = "duration")]
    pub reconnect_cap: Duration,
    #[serde(with = "duration")]
    pub reconnect_stable: Duration,
    /// 0 = never give up.
    pub max_attempts: u32,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    pub fail_fast: bool,
    pub cache_max_messages: usize,
    #[serde(with = "byte_size")]
    pub cache_max_bytes: usize,
    pub max_inflight: u16,
    pub seed: u64,
    /// QUIC keys (NanoMQ's names): used when `transports` has "quic".
    #[serde(with = "opt_duration")]
    pub quic_keepalive: Option<Duration>,
    #[serde(with = "duration")]
    pub quic_idle_timeout: Duration,
    #[serde(with = "duration")]
    pub quic_handshake_timeout: Duration,
    pub quic_initial_rtt_ms: u64,
    pub quic_max_ack_delay_ms: u64,
    pub quic_0rtt: bool,
    pub quic_qos_priority: bool,
    /// PEM CA certificates the remote's certificate must chain to.
    pub cacertfile: String,
    /// PEM client certificate chain and key, for remotes that verify
    /// clients ("" = none).
    pub certfile: String,
    pub keyfile: String,
    /// Accept any server certificate (encryption without authentication).
    pub insecure_skip_verify: bool,
    /// Name checked against the remote's certificate; "" = the host part
    /// of the address being dialed.
    pub server_name: String,
}

/// NanoMQ's defaults for its bridge keys of the same names (and
/// `mqtt_quic::QuicSettings::default()`; rt-smol checks they agree).
pub mod quic_defaults {
    use std::time::Duration;
    pub const KEEPALIVE: Duration = Duration::from_secs(120);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
    pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const INITIAL_RTT_MS: u64 = 800;
    pub const MAX_ACK_DELAY_MS: u64 = 100;
    pub const ZERO_RTT: bool = true;
    pub const QOS_PRIORITY: bool = true;
}

impl Default for BridgeSection {
    fn default() -> Self {
        Self::from(BridgeConfig::default())
    }
}

impl BridgeSection {
    /// Whether any of its transports is QUIC.
    pub fn uses_quic(&self) -> bool {
        self.transports.contains(&BridgeTransportName::Quic)
    }
}

fn opt_str(s: &str) -> Option<ByteString> {
    (!s.is_empty()).then(|| ByteString::from(s))
}

impl From<BridgeConfig> for BridgeSection {
    fn from(c: BridgeConfig) -> Self {
        // Destructured without `..`: a field added to the core fails to
        // compile here until the file format covers it.
        let BridgeConfig {
            name,
            addresses,
            transports,
            client_id,
            username,
            password,
            protocol_version,
            keep_alive,
            ping_timeout,
            clean_start,
            session_expiry_interval,
            forwards,
            subscriptions,
            reconnect,
            connect_timeout,
            fail_fast,
            cache_max_messages,
            cache_max_bytes,
            max_inflight,
            seed,
        } = c;
        Self {
            name,
            addresses,
            transports: transports
                .iter()
                .map(|t| match t {
                    BridgeTransport::Tls => BridgeTransportName::Tls,
                    BridgeTransport::Quic => BridgeTransportName::Quic,
                    _ => BridgeTransportName::Tcp,
                })
                .collect(),
            client_id: client_id.map(|s| s.to_string()).unwrap_or_default(),
            username: username.map(|s| s.to_string()).unwrap_or_default(),
            password: password
                .map(|p| String::from_utf8_lossy(&p).into_owned())
                .unwrap_or_default(),
            protocol_version: match protocol_version {
                ProtocolVersion::V5 => BridgeProtocol::V5,
                _ => BridgeProtocol::V311,
            },
            keep_alive,
            ping_timeout,
            clean_start,
            session_expiry_interval,
            forwards: forwards
                .into_iter()
                .map(|f| ForwardSection {
                    filter: f.local_filter.to_string(),
                    qos: f.qos,
                    remote_prefix: f.remote_prefix.map(|s| s.to_string()),
                    remote_topic: f.remote_topic.map(|s| s.to_string()),
                })
                .collect(),
            subscriptions: subscriptions
                .into_iter()
                .map(|s| SubscriptionSection {
                    filter: s.remote_filter.to_string(),
                    qos: s.qos,
                    local_prefix: s.local_prefix.map(|s| s.to_string()),
                    local_topic: s.local_topic.map(|s| s.to_string()),
                })
                .collect(),
            reconnect_base: reconnect.base,
            reconnect_cap: reconnect.cap,
            reconnect_stable: reconnect.stable,
            max_attempts: reconnect.max_attempts.unwrap_or(0),
            connect_timeout,
            fail_fast,
            cache_max_messages,
            cache_max_bytes,
            max_inflight,
            seed,
            quic_keepalive: Some(quic_defaults::KEEPALIVE),
            quic_idle_timeout: quic_defaults::IDLE_TIMEOUT,
            quic_handshake_timeout: quic_defaults::HANDSHAKE_TIMEOUT,
            quic_initial_rtt_ms: quic_defaults::INITIAL_RTT_MS,
            quic_max_ack_delay_ms: quic_defaults::MAX_ACK_DELAY_MS,
            quic_0rtt: quic_defaults::ZERO_RTT,
            quic_qos_priority: quic_defaults::QOS_PRIORITY,
            cacertfile: String::new(),
            certfile: String::new(),
            keyfile: String::new(),
            insecure_skip_verify: false,
            server_name: String::new(),
        }
    }
}

impl BridgeSection {
    /// The core's configuration.
    pub fn to_bridge_config(&self) -> BridgeConfig {
        let s = self.clone();
        BridgeConfig {
            name: s.name,
            addresses: s.addresses,
            transports: s
                .transports
                .iter()
                .map(|t| match t {
                    BridgeTransportName::Tcp => BridgeTransport::Tcp,
                    BridgeTransportName::Tls => BridgeTransport::Tls,
                    BridgeTransportName::Quic => BridgeTransport::Quic,
                })
                .collect(),
            client_id: opt_str(&s.client_id),
            username: opt_str(&s.username),
            password: (!s.password.is_empty()).then(|| Bytes::from(s.password.into_bytes())),
            protocol_version: match s.protocol_version {
                BridgeProtocol::V311 => ProtocolVersion::V3_1_1,
                BridgeProtocol::V5 => ProtocolVersion::V5,
            },
            keep_alive: s.keep_alive,
            ping_timeout: s.ping_timeout,
            clean_start: s.clean_start,
            session_expiry_interval: s.session_expiry_interval,
            forwards: s
                .forwards
                .iter()
                .map(|f| Forward {
                    local_filter: ByteString::from(f.filter.as_str()),
                    remote_prefix: f.remote_prefix.as_deref().map(ByteString::from),
                    remote_topic: f.remote_topic.as_deref().map(ByteString::from),
                    qos: f.qos,
                })
                .collect(),
            subscriptions: s
                .subscriptions
                .iter()
                .map(|f| Subscription {
                    remote_filter: ByteString::from(f.filter.as_str()),
                    local_prefix: f.local_prefix.as_deref().map(ByteString::from),
                    local_topic: f.local_topic.as_deref().map(ByteString::from),
                    qos: f.qos,
                })
                .collect(),
            reconnect: ReconnectPolicy {
                base: s.reconnect_base,
                cap: s.reconnect_cap,
                stable: s.reconnect_stable,
                max_attempts: (s.max_attempts > 0).then_some(s.max_attempts),
            },
            connect_timeout: s.connect_timeout,
            fail_fast: s.fail_fast,
            cache_max_messages: s.cache_max_messages,
            cache_max_bytes: s.cache_max_bytes,
            max_inflight: s.max_inflight,
            seed: s.seed,
        }
    }
}

impl Config {
    /// Bind every listener, in config order: TCP ones with `tcp`, QUIC ones
    /// with `quic` (given the listener's index, for error paths). The
    /// runtime opens the sockets; a socket that cannot be bound fails with
    /// `bind_err` (listener name, address, cause). The first failure stops.
    pub fn bind_listeners<T, Q, E: From<QuicSetupError>>(
        &self,
        mut tcp: impl FnMut(&ListenerConfig) -> std::io::Result<T>,
        mut quic: impl FnMut(&ListenerConfig, usize) -> Result<std::io::Result<Q>, QuicSetupError>,
        bind_err: impl Fn(String, SocketAddr, std::io::Error) -> E,
    ) -> Result<(Vec<T>, Vec<Q>), E> {
        let mut listeners = Vec::with_capacity(self.listeners.len());
        let mut quic_listeners = Vec::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let bound = if l.transport == Transport::Quic {
                quic(l, i)?.map(|q| quic_listeners.push(q))
            } else {
                tcp(l).map(|t| listeners.push(t))
            };
            bound.map_err(|source| bind_err(l.name.clone(), l.addr(), source))?;
        }
        Ok((listeners, quic_listeners))
    }

    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and validate config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
            file: file.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let mut message = inner.message().trim_end().to_owned();
            if let Some(span) = inner.span() {
                let start = span.start.min(text.len());
                let line = text.as_bytes()[..start]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count()
                    + 1;
                let _ = write!(message, " (line {line})");
            }
            ConfigError::Key {
                file: file.to_owned(),
                path,
                message,
            }
        })?;
        config
            .validate()
            .map_err(|(path, message)| ConfigError::Invalid {
                file: file.to_owned(),
                path,
                message,
            })?;
        Ok(config)
    }

    /// Values of the right type that are still unusable. The core would
    /// clamp some of them silently; refusing them at start-up is kinder.
    pub fn validate(&self) -> Result<(), (String, String)> {
        fn bad(path: &str, message: impl Into<String>) -> Result<(), (String, String)> {
            Err((path.to_owned(), message.into()))
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            return bad(
                "log.level",
                format!("invalid log filter {:?}: {e}", self.log.level),
            );
        }
        if self.listeners.is_empty() {
            return bad("listeners", "at least one listener is required");
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.name.is_empty() {
                return bad(&format!("listeners[{i}].name"), "must not be empty");
            }
            if self.listeners[..i].iter().any(|o| o.name == l.name) {
                return bad(
                    &format!("listeners[{i}].name"),
                    format!("duplicate listener name {:?}", l.name),
                );
            }
            match l.transport {
                Transport::Quic => {
                    for (key, v) in [("cert", &l.cert), ("key", &l.key)] {
                        if v.is_empty() {
                            return bad(
                                &format!("listeners[{i}].{key}"),
                                "a quic listener needs a PEM certificate chain (cert) and key (key)",
                            );
                        }
                    }
                }
                Transport::Tcp => {
                    for (key, v) in [
                        ("cert", &l.cert),
                        ("key", &l.key),
                        ("client_ca", &l.client_ca),
                    ] {
                        if !v.is_empty() {
                            return bad(
                                &format!("listeners[{i}].{key}"),
                                "only a quic listener takes certificates (TLS over TCP is not available)",
                            );
                        }
                    }
                }
            }
        }
        let b = &self.broker;
        if !b.keepalive_multiplier.is_finite() || b.keepalive_multiplier < 1.0 {
            return bad(
                "broker.keepalive_multiplier",
                format!("must be a number >= 1.0, got {}", b.keepalive_multiplier),
            );
        }
        if !(64..=MAX_PACKET_SIZE).contains(&b.max_packet_size) {
            return bad(
                "broker.max_packet_size",
                format!(
                    "must be between 64 and {MAX_PACKET_SIZE} bytes, got {}",
                    b.max_packet_size
                ),
            );
        }
        if b.connect_timeout.is_zero() {
            return bad("broker.connect_timeout", "must be more than 0");
        }
        let at_least_one: [(&str, u64); 7] = [
            ("broker.receive_maximum", u64::from(b.receive_maximum)),
            ("broker.max_awaiting_rel", b.max_awaiting_rel as u64),
            ("broker.max_inflight", u64::from(b.max_inflight)),
            ("broker.max_keepalive", u64::from(b.max_keepalive)),
            ("broker.max_topic_levels", b.max_topic_levels as u64),
            ("broker.max_connections", b.max_connections as u64),
            ("broker.max_sessions", b.max_sessions as u64),
        ];
        for (path, v) in at_least_one {
            if v == 0 {
                return bad(path, "must be at least 1");
            }
        }
        if b.node_name.is_empty() || b.node_name.contains(['/', '+', '#']) {
            return bad(
                "broker.node_name",
                "must be non-empty and contain no '/', '+' or '#' (it is a $SYS topic level)",
            );
        }
        for (i, br) in self.bridges.iter().enumerate() {
            let at = |key: &str| format!("bridge[{i}].{key}");
            if br.name.is_empty() || br.name.contains(['/', '+', '#']) {
                return bad(
                    &at("name"),
                    "must be non-empty and contain no '/', '+' or '#' (it is a $SYS topic level)",
                );
            }
            if self.bridges[..i].iter().any(|o| o.name == br.name) {
                return bad(&at("name"), format!("duplicate bridge name {:?}", br.name));
            }
            if br.addresses.is_empty() {
                return bad(&at("addresses"), "at least one \"host:port\" is required");
            }
            if let Some(a) = br.addresses.iter().find(|a| {
                a.rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            }) {
                return bad(&at("addresses"), format!("{a:?} is not \"host:port\""));
            }
            if br.transports.is_empty() {
                return bad(&at("transports"), "at least one transport is required");
            }
            if br.connect_timeout.is_zero() {
                return bad(&at("connect_timeout"), "must be more than 0");
            }
            if br.max_inflight == 0 {
                return bad(&at("max_inflight"), "must be at least 1");
            }
            if br.uses_quic() {
                if br.cacertfile.is_empty() && !br.insecure_skip_verify {
                    return bad(
                        &at("cacertfile"),
                        "a quic transport verifies the remote's certificate: set cacertfile \
                         (PEM CA certificates) or, for tests only, insecure_skip_verify = true",
                    );
                }
                if br.quic_handshake_timeout.is_zero() {
                    return bad(&at("quic_handshake_timeout"), "must be more than 0");
                }
                if br.quic_initial_rtt_ms == 0 || br.quic_initial_rtt_ms > 60_000 {
                    return bad(
                        &at("quic_initial_rtt_ms"),
                        format!("must be 1..=60000 ms, got {}", br.quic_initial_rtt_ms),
                    );
                }
                if br.quic_max_ack_delay_ms >= 1 << 14 {
                    return bad(
                        &at("quic_max_ack_delay_ms"),
                        format!("must be below 16384 ms, got {}", br.quic_max_ack_delay_ms),
                    );
                }
            }
            if br.certfile.is_empty() != br.keyfile.is_empty() {
                let key = if br.certfile.is_empty() {
                    "certfile"
                } else {
                    "keyfile"
                };
                return bad(&at(key), "certfile and keyfile go together");
            }
            // The core's own checks (filters, reconnect policy, client settings).
            if let Err(e) =
                mqtt_core::bridge::Bridge::new(br.to_bridge_config(), std::time::Instant::now())
            {
                return bad(&format!("bridge[{i}]"), e.to_string());
            }
        }
        Ok(())
    }
}

/// One line or more of documentation per key, in file order. The example
/// is built from these and the serialized defaults; a test checks that both
/// name the same keys.
const DOCS: &[(&str, &str)] = &[
    ("log", "Logging (to stderr)."),
    (
        "log.level",
        "A tracing filter: error, warn, info, debug, trace, or directives such as\n\
         \"info,rt_smol=debug\". RUST_LOG overrides it; --log-level overrides both.",
    ),
    (
        "runtime",
        "Runtime knobs (`sansmq start --runtime smol|std`).",
    ),
    (
        "runtime.worker_threads",
        "smol executor threads at most; 0 = one per CPU core. One thread runs always;\n\
         the others join while the broker is busy (a flood of messages) and park\n\
         again after ~2 s of calm, because waking a second thread for every message\n\
         costs more than it gains at low rates. Ignored with --runtime std (it uses\n\
         a thread per connection).",
    ),
    (
        "runtime.shutdown_timeout",
        "On SIGINT/SIGTERM: how long to wait for sockets to flush before exiting.",
    ),
    (
        "listeners",
        "Listeners; at least one. --bind and --port override the first one.",
    ),
    ("listeners.name", "Name shown in logs."),
    (
        "listeners.transport",
        "\"tcp\" (MQTT over TCP) or \"quic\" (MQTT over QUIC on UDP: TLS 1.3, ALPN \"mqtt\",\n\
         one bidirectional stream per connection; needs cert and key).",
    ),
    (
        "listeners.bind",
        "IP address to listen on; \"0.0.0.0\" or \"::\" for every interface.",
    ),
    (
        "listeners.port",
        "TCP (or, for quic, UDP) port; 0 = any free port (the chosen one is logged).",
    ),
    (
        "listeners.cert",
        "quic: PEM certificate chain the listener presents (\"\" = none).",
    ),
    (
        "listeners.key",
        "quic: PEM private key of cert (\"\" = none).",
    ),
    (
        "listeners.client_ca",
        "quic: PEM CA certificates client certificates must chain to; \"\" = clients\n\
         are not asked for a certificate.",
    ),
    (
        "broker",
        "The MQTT broker core. Durations: integer seconds or \"10s\", \"500ms\", \"2h\";\n\
         optional ones also \"off\". Sizes: integer bytes or \"64KiB\", \"1MiB\", \"16MB\".",
    ),
    (
        "broker.node_name",
        "Node name used in $SYS/brokers/{node}/... topics.",
    ),
    (
        "broker.rng_seed",
        "Seed for assigned client ids and random shared-subscription choice.",
    ),
    (
        "broker.max_connections",
        "Open connections beyond which new ones are closed at once.",
    ),
    (
        "broker.max_sessions",
        "Sessions kept (connected or not); a CONNECT that would create one more is refused.",
    ),
    (
        "broker.connect_timeout",
        "Time a new connection has to send CONNECT.",
    ),
    (
        "broker.keepalive_multiplier",
        "A client is disconnected after keep alive x this without a packet (>= 1.0).",
    ),
    (
        "broker.max_keepalive",
        "5.0: largest keep alive (seconds) a client may use; 65535 = no cap.",
    ),
    (
        "broker.retry_interval",
        "3.x: resend unacknowledged QoS 1/2 messages after this; \"off\" = only on reconnect.",
    ),
    (
        "broker.max_packet_size",
        "Largest packet accepted (announced to 5.0 clients).",
    ),
    (
        "broker.receive_maximum",
        "Receive Maximum announced to 5.0 clients (inbound QoS 2 awaiting PUBREL).",
    ),
    (
        "broker.max_awaiting_rel",
        "Inbound QoS 2 messages awaiting PUBREL per session; over it the client is disconnected.",
    ),
    (
        "broker.await_rel_timeout",
        "A QoS 2 packet id awaiting PUBREL longer than this is forgotten.",
    ),
    (
        "broker.max_inflight",
        "Outbound QoS 1/2 messages in flight per connection.",
    ),
    (
        "broker.max_queued_messages",
        "Messages queued per session (offline, or waiting for the inflight window).",
    ),
    (
        "broker.max_queued_bytes",
        "Payload + topic bytes queued per session.",
    ),
    (
        "broker.flow_control_overshoot",
        "Flow control: max_queued_messages/max_queued_bytes are the high watermark of a\n\
         connected session's queue; a QoS 1/2 message reaching it pauses reading from the\n\
         publisher until the queue drains to half. QoS 1/2 messages already read keep being\n\
         queued up to this many messages (and 2 x max_queued_bytes) past the watermark;\n\
         beyond that they are dropped (queue_full). QoS 0 is dropped at the watermark.\n\
         It must cover what the runtime read before the pause took effect (rt-std's\n\
         input channel alone holds 16,384 packets, rt-smol's 2,048).",
    ),
    (
        "broker.queue_qos0_messages",
        "Queue QoS 0 messages for offline persistent sessions.",
    ),
    (
        "broker.max_pending_bytes_per_connection",
        "Unwritten bytes above which a connection is congested: QoS 0 to it is dropped\n\
         (counted) and QoS 1/2 wait in its session queue.",
    ),
    (
        "broker.v3_session_expiry",
        "3.x sessions with clean session 0 end this long after disconnecting; \"never\" = keep.",
    ),
    (
        "broker.max_session_expiry_interval",
        "5.0: cap on a client's Session Expiry Interval, seconds; 4294967295 = no cap.",
    ),
    (
        "broker.maximum_qos",
        "Highest QoS accepted and granted: 0, 1 or 2.",
    ),
    (
        "broker.retain_available",
        "Whether retained messages are supported.",
    ),
    (
        "broker.max_retained_messages",
        "Retained messages kept; new topics beyond it are not stored (counted).",
    ),
    (
        "broker.wildcard_subscription_available",
        "Whether + and # filters are accepted.",
    ),
    (
        "broker.shared_subscription_available",
        "Whether $share/{group}/{filter} is accepted.",
    ),
    (
        "broker.subscription_identifier_available",
        "5.0: whether Subscription Identifiers are accepted.",
    ),
    (
        "broker.shared_subscription_strategy",
        "How a shared subscription picks a member: \"round_robin\" or \"random\".",
    ),
    (
        "broker.max_subscriptions_per_client",
        "Subscriptions per session; more are refused in SUBACK.",
    ),
    (
        "broker.max_topic_levels",
        "Topic levels allowed in a topic name or filter.",
    ),
    (
        "broker.max_client_id_len",
        "Longest client identifier accepted (3.1 clients are always limited to 23).",
    ),
    (
        "broker.topic_alias_maximum",
        "5.0: Topic Alias Maximum announced (inbound aliases per connection).",
    ),
    (
        "broker.outbound_topic_alias_maximum",
        "5.0: topic aliases the broker assigns on outbound PUBLISH; 0 = never.",
    ),
    (
        "broker.sys_events",
        "Publish $SYS/brokers/{node}/clients/{id}/connected|disconnected.",
    ),
    (
        "broker.sys_interval",
        "Publish $SYS/brokers/{node}/... statistics this often; \"off\" = never.",
    ),
    (
        "bridge",
        "Bridges to remote brokers: none by default. Uncomment and repeat [[bridge]]\n\
         per bridge (remove the leading '#' of each key). State changes are logged.",
    ),
];

/// The `[[bridge]]` keys, documented in the example's commented-out
/// bridge section (there is no bridge by default).
const BRIDGE_DOCS: &[(&str, &str)] = &[
    ("name", "Names the bridge in logs and $SYS/brokers/{node}/bridges/{name}/...;\nthe local client id is $bridge/{name}."),
    ("addresses", "Remote brokers as \"host:port\", one per connect attempt in rotation."),
    ("transports", "Tried in order within one attempt (hybrid: the next one after a failure,\nrefusal or handshake timeout; the first one again on the next attempt), e.g.\n[\"quic\", \"tcp\"]. \"tcp\" or \"quic\"; \"tls\" is not available in this version\n(it fails at once)."),
    ("client_id", "Client id on the remote; \"\" = \"sansmq-bridge-{name}\"."),
    ("username", "\"\" = none."),
    ("password", "\"\" = none."),
    ("protocol_version", "\"5.0\" or \"3.1.1\"."),
    ("keep_alive", "Seconds; PINGREQ goes out this often whatever the traffic."),
    ("ping_timeout", "How long to wait for PINGRESP before declaring the link dead."),
    ("clean_start", "false: the remote keeps the bridge's session across reconnects."),
    ("session_expiry_interval", "5.0 Session Expiry Interval on the remote, seconds."),
    ("reconnect_base", "Reconnect delay: decorrelated jitter between this base..."),
    ("reconnect_cap", "...and this cap."),
    ("reconnect_stable", "The delay returns to the base only after the link stayed up this long."),
    ("max_attempts", "Consecutive failed connect attempts before giving up (the broker\nthen exits non-zero); 0 = never give up."),
    ("connect_timeout", "From dial to CONNACK, per transport."),
    ("fail_fast", "Give up at the first failed connect attempt: the broker exits non-zero\nnaming the bridge (for orchestrators that restart it)."),
    ("cache_max_messages", "Offline cache: messages kept while the remote is away (QoS 0 dropped\nfirst when full; every drop counted)."),
    ("cache_max_bytes", "Offline cache: topic + payload bytes."),
    ("max_inflight", "Outgoing QoS 1/2 in flight on the remote link."),
    ("seed", "Seeds the reconnect jitter."),
    ("quic_keepalive", "quic: QUIC PING this often when idle (capped at half quic_idle_timeout);\n\"off\" = none. Independent of the MQTT keep_alive."),
    ("quic_idle_timeout", "quic: close the QUIC connection after this long without a packet\n(the smaller of both sides' values applies)."),
    ("quic_handshake_timeout", "quic: from dial to an open QUIC stream; then the next transport\nis tried (connect_timeout still bounds dial to CONNACK)."),
    ("quic_initial_rtt_ms", "quic: round-trip time assumed before the first measurement, ms."),
    ("quic_max_ack_delay_ms", "quic: largest ACK delay requested from the remote, ms (through the\nACK-frequency extension; remotes without it use their own); 0 = ask nothing."),
    ("quic_0rtt", "quic: 0-RTT resumption: on reconnect, CONNECT travels in the first\nflight when the remote's session ticket allows."),
    ("quic_qos_priority", "quic: QoS 1/2 and control packets before QoS 0. MQTT rides one stream,\nwhose order the bridge's client already gives control packets first;\nthis key keeps that meaning."),
    ("cacertfile", "quic: PEM CA certificates the remote's certificate must chain to."),
    ("certfile", "quic: PEM client certificate chain, for remotes that verify clients\n(\"\" = none)."),
    ("keyfile", "quic: PEM private key of certfile."),
    ("insecure_skip_verify", "quic: accept any remote certificate (no authentication; tests only).\nA warning is logged at start when set."),
    ("server_name", "quic: name checked against the remote's certificate; \"\" = the host of the\naddress being dialed."),
    ("forwards", "Local messages to the remote: { filter, qos (default 1), remote_prefix,\nremote_topic (replaces the topic) }."),
    ("subscriptions", "Remote messages published locally: { filter, qos (default 1),\nlocal_prefix, local_topic (replaces the topic) }."),
];

/// The commented-out `[[bridge]]` of the example: every key, its default
/// (the address, forward and subscription are samples).
fn bridge_example() -> String {
    let sample = BridgeSection {
        name: "cloud".to_owned(),
        addresses: vec!["cloud.example.com:1883".to_owned()],
        forwards: vec![ForwardSection {
            filter: "sensors/#".to_owned(),
            qos: QoS::AtLeastOnce,
            remote_prefix: Some("edge1/".to_owned()),
            remote_topic: None,
        }],
        subscriptions: vec![SubscriptionSection {
            filter: "commands/edge1/#".to_owned(),
            qos: QoS::AtLeastOnce,
            local_prefix: None,
            local_topic: None,
        }],
        ..BridgeSection::default()
    };
    let mut out = String::from("#[[bridge]]\n");
    let Ok(table) = toml::Table::try_from(sample) else {
        return out;
    };
    for (key, value) in &table {
        if let Some((_, d)) = BRIDGE_DOCS.iter().find(|(k, _)| k == key) {
            for line in d.lines() {
                let _ = writeln!(out, "# {line}");
            }
        }
        let _ = writeln!(out, "#{key} = {value}");
    }
    out
}

fn doc(path: &str) -> Option<&'static str> {
    DOCS.iter().find(|(p, _)| *p == path).map(|(_, d)| *d)
}

fn push_doc(out: &mut String, path: &str) {
    if let Some(d) = doc(path) {
        for line in d.lines() {
            let _ = writeln!(out, "# {line}");
        }
    }
}

fn push_table(out: &mut String, prefix: &str, table: &toml::Table) {
    for (key, value) in table {
        push_doc(out, &format!("{prefix}.{key}"));
        let _ = writeln!(out, "{key} = {value}");
    }
}

/// A complete, commented `sansmq.toml` holding every key with its default.
pub fn example() -> String {
    let mut out = String::from(
        "# sansmq configuration file (`sansmq start --config sansmq.toml`).\n\
         # Generated by `sansmq config example`: every key, set to its default.\n\
         # Every key is optional; delete the ones you do not change.\n",
    );
    let value = match toml::Table::try_from(Config::default()) {
        Ok(v) => v,
        // Serializing plain defaults cannot fail; say so rather than panic.
        Err(e) => return format!("# cannot render the example: {e}\n"),
    };
    for (section, v) in &value {
        out.push('\n');
        match v {
            toml::Value::Table(t) => {
                push_doc(&mut out, section);
                let _ = writeln!(out, "[{section}]");
                push_table(&mut out, section, t);
            }
            toml::Value::Array(items) => {
                push_doc(&mut out, section);
                for item in items {
                    if let toml::Value::Table(t) = item {
                        let _ = writeln!(out, "[[{section}]]");
                        push_table(&mut out, section, t);
                    }
                }
            }
            other => {
                push_doc(&mut out, section);
                let _ = writeln!(out, "{section} = {other}");
            }
        }
        if section == "bridge" {
            out.push_str(&bridge_example());
        }
    }
    out
}

/// Every key path the defaults serialize to (arrays of tables by their
/// element keys), for the example's completeness test.
pub fn default_key_paths() -> Vec<String> {
    let mut paths = Vec::new();
    let Ok(value) = toml::Table::try_from(Config::default()) else {
        return paths;
    };
    for (section, v) in &value {
        paths.push(section.clone());
        let tables: Vec<&toml::Table> = match v {
            toml::Value::Table(t) => vec![t],
            toml::Value::Array(items) => items.iter().filter_map(|i| i.as_table()).collect(),
            _ => vec![],
        };
        for t in tables {
            for key in t.keys() {
                let p = format!("{section}.{key}");
                if !paths.contains(&p) {
                    paths.push(p);
                }
            }
        }
    }
    paths
}

/// Paths the documentation table covers.
pub fn documented_key_paths() -> Vec<String> {
    DOCS.iter().map(|(p, _)| (*p).to_owned()).collect()
}

/// Durations: integer seconds, or a string humantime understands.
mod duration {
    use super::*;
    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(
                "a duration: integer seconds or a string such as \"10s\", \"500ms\", \"2h\"",
            )
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("a duration cannot be negative ({v})")))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v.trim())
                .map_err(|e| E::custom(format!("invalid duration {v:?}: {e}")))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

/// Optional durations: as [`duration`], or `"off"` / `"never"` / `"none"`.
mod opt_duration {
    use super::*;
    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_str("off"),
        }
    }

    struct V;

    impl Visitor<'_> for V {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration (integer seconds or \"10s\") or \"off\"")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            duration::DurationVisitor.visit_i64(v).map(Some)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Duration::from_secs(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            match v.trim() {
                "off" | "never" | "none" => Ok(None),
                _ => duration::DurationVisitor.visit_str(v).map(Some),
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(V)
    }
}

/// Parse "1MiB", "64 KiB", "16MB", "512" (bytes).
fn parse_byte_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: u64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number then a unit such as KiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        u => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {u:?} (use B, KB, KiB, MB, MiB, GB or GiB)"
            ))
        }
    };
    num.checked_mul(mult)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// Render a size with the largest binary unit that divides it.
fn format_byte_size(n: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size && n % size == 0 {
            return format!("{}{unit}", n / size);
        }
    }
    format!("{n}B")
}

mod byte_size {
    use super::*;
    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(n: &usize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_byte_size(*n as u64))
    }

    pub(super) struct V;

    impl Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a size: integer bytes or a string such as \"64KiB\", \"1MiB\"")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("a size cannot be negative ({v})")))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse_byte_size(v).map_err(E::custom)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let n = d.deserialize_any(V)?;
        usize::try_from(n).map_err(|_| de::Error::custom(format!("size {n} is too large")))
    }
}

mod byte_size_u32 {
    use super::*;
    use serde::de::{self, Deserializer};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(n: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_byte_size(u64::from(*n)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let n = d.deserialize_any(byte_size::V)?;
        u32::try_from(n).map_err(|_| {
            de::Error::custom(format!(
                "size {n} is too large (at most {} bytes)",
                u32::MAX
            ))
        })
    }
}

mod qos {
    use super::*;
    use serde::de::{self, Deserializer};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(q: &QoS, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*q as u8)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<QoS, D::Error> {
        let v = i64::deserialize(d)?;
        u8::try_from(v)
            .ok()
            .and_then(QoS::from_u8)
            .ok_or_else(|| de::Error::custom(format!("QoS must be 0, 1 or 2, got {v}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_back_to_the_defaults() {
        let text = example();
        let parsed = Config::parse(&text, "example").expect("example parses");
        assert_eq!(parsed, Config::default());
        assert_eq!(
            parsed.broker.to_broker_config(),
            BrokerConfig {
                storage_events: false,
                ..BrokerConfig::default()
            }
        );
    }

    #[test]
    fn example_documents_every_key_and_nothing_else() {
        let mut keys = default_key_paths();
        let mut docs = documented_key_paths();
        keys.sort();
        docs.sort();
        assert_eq!(keys, docs);
        // Every key appears in the example as an assignment.
        let text = example();
        for p in default_key_paths() {
            if let Some((_, key)) = p.split_once('.') {
                assert!(
                    text.lines().any(|l| l.starts_with(&format!("{key} = "))),
                    "{p} missing from the example"
                );
            }
        }
    }

    #[test]
    fn example_bridge_uncommented_parses_and_documents_every_key() {
        let text = example();
        let bridge: String = text
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.starts_with(|c: char| c == '[' || c.is_ascii_lowercase()))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = Config::parse(&bridge, "example bridge").expect("uncommented bridge parses");
        assert_eq!(c.bridges.len(), 1);
        let b = &c.bridges[0];
        assert_eq!(b.name, "cloud");
        assert_eq!(b.forwards.len(), 1);
        let defaults = BridgeSection::default();
        assert_eq!(b.reconnect_base, defaults.reconnect_base);
        assert_eq!(b.cache_max_bytes, defaults.cache_max_bytes);
        let cfg = b.to_bridge_config();
        let d = BridgeConfig::default();
        assert_eq!(cfg.keep_alive, d.keep_alive);
        assert_eq!(cfg.reconnect, d.reconnect);
        assert_eq!(cfg.protocol_version, d.protocol_version);
        assert_eq!(cfg.client_id, None);
        let Ok(toml::Value::Table(t)) = toml::Value::try_from(defaults) else {
            panic!("bridge defaults serialize to a table");
        };
        for key in t.keys() {
            assert!(
                BRIDGE_DOCS.iter().any(|(k, _)| k == key),
                "bridge.{key} is undocumented"
            );
        }
    }

    #[test]
    fn bridge_sections_map_to_the_core() {
        let c = Config::parse(
            "[[bridge]]\nname = \"a\"\naddresses = [\"127.0.0.1:1883\"]\n\
             transports = [\"quic\", \"tcp\"]\ncacertfile = \"ca.pem\"\nprotocol_version = \"3.1.1\"\n\
             reconnect_base = \"200ms\"\nreconnect_cap = \"1s\"\nmax_attempts = 3\n\
             fail_fast = true\nusername = \"u\"\n\
             forwards = [{ filter = \"t/#\", remote_prefix = \"e/\" }]\n\
             subscriptions = [{ filter = \"c/#\", qos = 0 }]\n",
            "f",
        )
        .expect("parses");
        let b = c.bridges[0].to_bridge_config();
        assert_eq!(
            b.transports,
            vec![BridgeTransport::Quic, BridgeTransport::Tcp]
        );
        assert_eq!(b.protocol_version, ProtocolVersion::V3_1_1);
        assert_eq!(b.reconnect.base, Duration::from_millis(200));
        assert_eq!(b.reconnect.cap, Duration::from_secs(1));
        assert_eq!(b.reconnect.max_attempts, Some(3));
        assert!(b.fail_fast);
        assert_eq!(b.username.as_deref(), Some("u"));
        assert_eq!(b.password, None);
        assert_eq!(b.forwards[0].qos, QoS::AtLeastOnce);
        assert_eq!(b.forwards[0].remote_prefix.as_deref(), Some("e/"));
        assert_eq!(b.subscriptions[0].qos, QoS::AtMostOnce);
    }

    #[test]
    fn bad_bridge_sections_name_their_path() {
        let ok = "name = \"a\"\naddresses = [\"h:1\"]\n";
        let cases = [
            (
                format!("[[bridge]]\n{ok}adresses = 1\n"),
                "bridge[0].adresses",
            ),
            (
                "[[bridge]]\nname = \"a\"\n".to_owned(),
                "bridge[0].addresses",
            ),
            (
                format!("[[bridge]]\n{ok}[[bridge]]\n{ok}"),
                "bridge[1].name",
            ),
            (
                format!("[[bridge]]\n{ok}transports = [\"udp\"]\n"),
                "bridge[0].transports",
            ),
            (
                format!("[[bridge]]\n{ok}protocol_version = \"4\"\n"),
                "bridge[0].protocol_version",
            ),
            (
                format!("[[bridge]]\n{ok}forwards = [{{ filter = \"a/#/b\" }}]\n"),
                "bridge[0]",
            ),
            (
                format!("[[bridge]]\n{ok}forwards = [{{ filter = \"a\", qs = 1 }}]\n"),
                "bridge[0].forwards[0].qs",
            ),
            (
                "[[bridge]]\nname = \"a\"\naddresses = [\"nohost\"]\n".to_owned(),
                "bridge[0].addresses",
            ),
            (format!("[[bridge]]\n{ok}reconnect_base = 0\n"), "bridge[0]"),
        ];
        for (text, path) in cases {
            let e = Config::parse(&text, "f.toml").expect_err(&text);
            assert!(e.to_string().contains(path), "{text:?}: {e}");
        }
    }

    #[test]
    fn quic_listener_keys() {
        let c = Config::parse(
            "[[listeners]]\nname = \"quic\"\ntransport = \"quic\"\nport = 14567\n\
             cert = \"/etc/sansmq/cert.pem\"\nkey = \"/etc/sansmq/key.pem\"\n\
             client_ca = \"/etc/sansmq/ca.pem\"\n",
            "f",
        )
        .expect("parses");
        let l = &c.listeners[0];
        assert_eq!(l.transport, Transport::Quic);
        assert_eq!(l.port, 14567);
        assert_eq!(l.cert, "/etc/sansmq/cert.pem");
        assert_eq!(l.key, "/etc/sansmq/key.pem");
        assert_eq!(l.client_ca, "/etc/sansmq/ca.pem");
        let cases = [
            (
                "[[listeners]]\ntransport = \"quic\"\ncert = \"c.pem\"\n",
                "listeners[0].key",
            ),
            ("[[listeners]]\ntransport = \"quic\"\n", "listeners[0].cert"),
            ("[[listeners]]\ncert = \"c.pem\"\n", "listeners[0].cert"),
            (
                "[[listeners]]\nclient_ca = \"c.pem\"\n",
                "listeners[0].client_ca",
            ),
            (
                "[[listeners]]\ntransport = \"udp\"\n",
                "listeners[0].transport",
            ),
        ];
        for (text, path) in cases {
            let e = Config::parse(text, "f.toml").expect_err(text);
            assert!(e.to_string().contains(path), "{text:?}: {e}");
        }
    }

    #[test]
    fn bridge_quic_keys_and_their_defaults() {
        let d = BridgeSection::default();
        assert_eq!(d.quic_keepalive, Some(Duration::from_secs(120)));
        assert_eq!(d.quic_idle_timeout, Duration::from_secs(120));
        assert_eq!(d.quic_handshake_timeout, Duration::from_secs(60));
        assert_eq!(d.quic_initial_rtt_ms, 800);
        assert_eq!(d.quic_max_ack_delay_ms, 100);
        assert!(d.quic_0rtt && d.quic_qos_priority && !d.insecure_skip_verify);
        let c = Config::parse(
            "[[bridge]]\nname = \"a\"\naddresses = [\"cloud:14567\"]\n\
             transports = [\"quic\", \"tcp\"]\nquic_keepalive = \"off\"\n\
             quic_idle_timeout = \"30s\"\nquic_handshake_timeout = 5\n\
             quic_initial_rtt_ms = 100\nquic_max_ack_delay_ms = 25\nquic_0rtt = false\n\
             quic_qos_priority = false\ncacertfile = \"ca.pem\"\ncertfile = \"c.pem\"\n\
             keyfile = \"k.pem\"\nserver_name = \"cloud.example\"\n",
            "f",
        )
        .expect("parses");
        let b = &c.bridges[0];
        assert!(b.uses_quic());
        assert_eq!(b.quic_keepalive, None);
        assert_eq!(b.quic_idle_timeout, Duration::from_secs(30));
        assert_eq!(b.quic_handshake_timeout, Duration::from_secs(5));
        assert_eq!((b.quic_initial_rtt_ms, b.quic_max_ack_delay_ms), (100, 25));
        assert!(!b.quic_0rtt && !b.quic_qos_priority);
        assert_eq!(
            (
                b.cacertfile.as_str(),
                b.certfile.as_str(),
                b.keyfile.as_str()
            ),
            ("ca.pem", "c.pem", "k.pem")
        );
        assert_eq!(b.server_name, "cloud.example");
        assert_eq!(
            b.to_bridge_config().transports,
            vec![BridgeTransport::Quic, BridgeTransport::Tcp]
        );
        let ok = "name = \"a\"\naddresses = [\"h:1\"]\ntransports = [\"quic\"]\n";
        let cases = [
            (format!("[[bridge]]\n{ok}"), "bridge[0].cacertfile"),
            (
                format!("[[bridge]]\n{ok}insecure_skip_verify = true\nquic_initial_rtt_ms = 0\n"),
                "bridge[0].quic_initial_rtt_ms",
            ),
            (
                format!("[[bridge]]\n{ok}cacertfile = \"ca\"\nquic_handshake_timeout = 0\n"),
                "bridge[0].quic_handshake_timeout",
            ),
            (
                format!("[[bridge]]\n{ok}cacertfile = \"ca\"\nquic_max_ack_delay_ms = 20000\n"),
                "bridge[0].quic_max_ack_delay_ms",
            ),
            (
                format!("[[bridge]]\n{ok}cacertfile = \"ca\"\ncertfile = \"c\"\n"),
                "bridge[0].keyfile",
            ),
            (
                format!("[[bridge]]\n{ok}cacertfile = \"ca\"\nquic_idle_timeout = \"soon\"\n"),
                "bridge[0].quic_idle_timeout",
            ),
            (
                format!("[[bridge]]\n{ok}cacertfile = \"ca\"\nquic_0rtt = \"yes\"\n"),
                "bridge[0].quic_0rtt",
            ),
        ];
        for (text, path) in cases {
            let e = Config::parse(&text, "f.toml").expect_err(&text);
            assert!(e.to_string().contains(path), "{text:?}: {e}");
        }
        // A tcp-only bridge needs no CA.
        Config::parse("[[bridge]]\nname = \"a\"\naddresses = [\"h:1\"]\n", "f")
            .expect("tcp bridge without CA parses");
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("", "x").expect("parses"), Config::default());
    }

    #[test]
    fn unknown_key_names_its_path() {
        let e = Config::parse("[broker]\nmax_inflite = 3\n", "f.toml").expect_err("unknown key");
        let s = e.to_string();
        assert!(s.contains("broker.max_inflite"), "{s}");
        assert!(s.contains("unknown field"), "{s}");
        let e = Config::parse("[[listeners]]\nprot = 1\n", "f.toml").expect_err("unknown key");
        assert!(e.to_string().contains("listeners[0].prot"), "{e}");
        let e = Config::parse("bogus = 1\n", "f.toml").expect_err("unknown key");
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn bad_values_name_their_path() {
        let cases = [
            (
                "[broker]\nconnect_timeout = \"ten\"\n",
                "broker.connect_timeout",
            ),
            ("[broker]\nmax_inflight = -1\n", "broker.max_inflight"),
            ("[broker]\nmaximum_qos = 3\n", "broker.maximum_qos"),
            (
                "[broker]\nmax_packet_size = \"2 parsecs\"\n",
                "broker.max_packet_size",
            ),
            (
                "[broker]\nkeepalive_multiplier = 0.5\n",
                "broker.keepalive_multiplier",
            ),
            ("[broker]\nmax_inflight = 0\n", "broker.max_inflight"),
            ("[log]\nlevel = \"info,=[\"\n", "log.level"),
            ("[[listeners]]\nport = 70000\n", "listeners[0].port"),
            (
                "[[listeners]]\nbind = \"localhost:1\"\n",
                "listeners[0].bind",
            ),
            ("listeners = []\n", "listeners"),
            (
                "[runtime]\nshutdown_timeout = -3\n",
                "runtime.shutdown_timeout",
            ),
            (
                "[broker]\nshared_subscription_strategy = \"first\"\n",
                "broker.shared_subscription_strategy",
            ),
        ];
        for (text, path) in cases {
            let e = Config::parse(text, "f.toml").expect_err(text);
            assert!(e.to_string().contains(path), "{text:?}: {e}");
        }
    }

    #[test]
    fn readable_values() {
        let c = Config::parse(
            "[broker]\nconnect_timeout = 3\nretry_interval = \"1m 30s\"\nsys_interval = \"off\"\n\
             v3_session_expiry = \"never\"\nmax_packet_size = \"64KiB\"\nmax_queued_bytes = 1000\n\
             max_pending_bytes_per_connection = \"2MB\"\n",
            "f",
        )
        .expect("parses");
        assert_eq!(c.broker.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.broker.retry_interval, Some(Duration::from_secs(90)));
        assert_eq!(c.broker.sys_interval, None);
        assert_eq!(c.broker.v3_session_expiry, None);
        assert_eq!(c.broker.max_packet_size, 65536);
        assert_eq!(c.broker.max_queued_bytes, 1000);
        assert_eq!(c.broker.max_pending_bytes_per_connection, 2_000_000);
    }
}
