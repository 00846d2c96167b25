//! [`BridgeConfig`]: one bridge's settings as plain data, with documented
//! defaults, and the reconnect policy with its decorrelated-jitter backoff.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use rand_xoshiro::rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::codec::{ProtocolVersion, QoS};

/// How a bridge reaches its remote broker. The runtime maps each to a dialer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    Tcp,
    Tls,
    Quic,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Quic => "quic",
        })
    }
}

/// Local messages matching `local_filter` go to the remote broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// A topic filter on the local broker.
    pub local_filter: ByteString,
    /// Prepended to the local topic (`"edge1/"` + `"sensors/t"`).
    pub remote_prefix: Option<ByteString>,
    /// Replaces the whole topic (wins over `remote_prefix`).
    pub remote_topic: Option<ByteString>,
    /// Maximum QoS of the forwarded messages (the local subscription's QoS).
    pub qos: QoS,
}

impl Forward {
    /// Forward `filter` unchanged at `qos`.
    pub fn new(filter: impl Into<ByteString>, qos: QoS) -> Self {
        Self {
            local_filter: filter.into(),
            remote_prefix: None,
            remote_topic: None,
            qos,
        }
    }
}

/// Remote messages matching `remote_filter` are published locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// A topic filter on the remote broker.
    pub remote_filter: ByteString,
    /// Prepended to the remote topic.
    pub local_prefix: Option<ByteString>,
    /// Replaces the whole topic (wins over `local_prefix`).
    pub local_topic: Option<ByteString>,
    /// The remote subscription's QoS.
    pub qos: QoS,
}

impl Subscription {
    pub fn new(filter: impl Into<ByteString>, qos: QoS) -> Self {
        Self {
            remote_filter: filter.into(),
            local_prefix: None,
            local_topic: None,
            qos,
        }
    }
}

/// When to dial again. Delays use "decorrelated jitter" (the AWS
/// architecture blog's name; Mosquitto's bridge backoff):
/// `next = min(cap, uniform(base, prev * 3))`, starting from `prev = base`.
/// `prev` returns to `base` only after a connection stayed up for `stable`,
/// so a remote that accepts and drops at once still sees growing delays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Default: 1 s.
    pub base: Duration,
    /// Default: 60 s.
    pub cap: Duration,
    /// Default: 60 s.
    pub stable: Duration,
    /// Consecutive failed connect attempts (each over every transport)
    /// before the bridge gives up (Failed, Fatal). Reset by a successful
    /// CONNACK. Default: `None` = never give up.
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            stable: Duration::from_secs(60),
            max_attempts: None,
        }
    }
}

/// The backoff schedule as a value: the same policy and seed give the same
/// delays, which is how tests predict a bridge's attempts exactly.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    prev: Duration,
    rng: Xoshiro256PlusPlus,
}

impl Backoff {
    pub fn new(policy: &ReconnectPolicy, seed: u64) -> Self {
        let base = policy.base.min(policy.cap);
        Self {
            base,
            cap: policy.cap,
            prev: base,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    /// The next delay: `min(cap, uniform(base, prev * 3))`, inclusive.
    pub fn next_delay(&mut self) -> Duration {
        let lo = self.base.as_nanos();
        let hi = self.prev.saturating_mul(3).as_nanos().max(lo);
        let span = hi - lo;
        let r = u128::from(self.rng.next_u64());
        // span + 1 cannot overflow: hi is at most 3 * Duration::MAX in nanos.
        let pick = lo + r % (span + 1);
        let d = Duration::from_nanos(u64::try_from(pick).unwrap_or(u64::MAX));
        self.prev = d.min(self.cap);
        self.prev
    }

    /// Back to the base (the link stayed up for `stable`).
    pub fn reset(&mut self) {
        self.prev = self.base;
    }
}

/// One bridge. Plain data: `BridgeConfig { name: "cloud".into(),
/// addresses: vec!["cloud:1883".into()], ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Names the bridge in events, metrics, `$SYS` and the local client id
    /// `$bridge/{name}`. Default: "bridge".
    pub name: String,
    /// Remote addresses, one per attempt in rotation. Default: none (invalid).
    pub addresses: Vec<String>,
    /// Transports tried in order within one attempt (hybrid mode, e.g.
    /// QUIC then TCP): the next one after a refusal, an error or a
    /// handshake timeout; each attempt starts again from the first.
    /// Default: `[Tcp]`.
    pub transports: Vec<Transport>,
    /// Client id on the remote. Default: `sansmq-bridge-{name}`.
    pub client_id: Option<ByteString>,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
    /// Default: 5.0.
    pub protocol_version: ProtocolVersion,
    /// Seconds. PINGREQ goes out every keep alive whatever the traffic
    /// (the remote must not drop us, and a silent remote must be noticed
    /// under load too). Default: 60.
    pub keep_alive: u16,
    /// How long to wait for PINGRESP. Default: 10 s.
    pub ping_timeout: Duration,
    /// Default: false: the remote keeps our session (and our QoS 1/2 state)
    /// across reconnects.
    pub clean_start: bool,
    /// 5.0 Session Expiry Interval on the remote, seconds. Default: 1 hour.
    pub session_expiry_interval: u32,
    pub forwards: Vec<Forward>,
    pub subscriptions: Vec<Subscription>,
    pub reconnect: ReconnectPolicy,
    /// From Dial to CONNACK, per transport. Default: 10 s.
    pub connect_timeout: Duration,
    /// Fatal at the first failed connect attempt. Default: false.
    pub fail_fast: bool,
    /// Messages waiting for the remote (offline cache), all QoS.
    /// Default: 10,000.
    pub cache_max_messages: usize,
    /// Topic + payload bytes in the offline cache. Default: 16 MiB.
    pub cache_max_bytes: usize,
    /// Outgoing QoS 1/2 in flight on the remote link. Default: 100.
    pub max_inflight: u16,
    /// Seeds the backoff jitter. Default: 0.
    pub seed: u64,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            name: "bridge".into(),
            addresses: Vec::new(),
            transports: vec![Transport::Tcp],
            client_id: None,
            username: None,
            password: None,
            protocol_version: ProtocolVersion::V5,
            keep_alive: 60,
            ping_timeout: Duration::from_secs(10),
            clean_start: false,
            session_expiry_interval: 3600,
            forwards: Vec::new(),
            subscriptions: Vec::new(),
            reconnect: ReconnectPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            fail_fast: false,
            cache_max_messages: 10_000,
            cache_max_bytes: 16 * 1024 * 1024,
            max_inflight: 100,
            seed: 0,
        }
    }
}

/// A bridge configuration refused at construction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeConfigError {
    #[error("bridge {0:?}: at least one remote address is required")]
    NoAddresses(String),
    #[error("bridge {0:?}: at least one transport is required")]
    NoTransports(String),
    #[error("bridge {0:?}: the reconnect base delay must be above zero")]
    ZeroBaseDelay(String),
    #[error("bridge {bridge:?}: invalid topic filter {filter:?}: {error}")]
    InvalidFilter {
        bridge: String,
        filter: ByteString,
        error: crate::topic::TopicError,
    },
    /// The forwards or subscriptions do not fit in one SUBSCRIBE.
    #[error("bridge {bridge:?}: cannot subscribe: {error}")]
    Subscribe {
        bridge: String,
        error: crate::client::ClientError,
    },
    #[error("bridge {bridge:?}: remote client: {error}")]
    RemoteClient {
        bridge: String,
        error: crate::client::ConfigError,
    },
    #[error("bridge {bridge:?}: local client: {error}")]
    LocalClient {
        bridge: String,
        error: crate::client::ConfigError,
    },
}
