//! Log lines for what the core reports, shared by both runtimes: the
//! drop counts (rate-limited), connection ends, bridge state changes.
//! The core decides; these functions only tell the operator.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use mqtt_core::bridge::{BridgeMetrics, BridgeState};
use mqtt_core::broker::{DisconnectReason, DropReason, Metrics};
use tracing::{debug, warn, Level};

/// `tracing` levels are static per call site; pick one at run time.
#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)+) => {
        match $level {
            ::tracing::Level::ERROR => ::tracing::error!($($arg)+),
            ::tracing::Level::WARN => ::tracing::warn!($($arg)+),
            ::tracing::Level::INFO => ::tracing::info!($($arg)+),
            ::tracing::Level::DEBUG => ::tracing::debug!($($arg)+),
            _ => ::tracing::trace!($($arg)+),
        }
    };
}

/// Logs the messages the core dropped (it counts them by cause in
/// `Metrics`; deciding to drop is the core's, telling the operator is ours).
/// At most one line per cause per second, carrying the count since the last
/// line, so a flood cannot flood the log.
pub struct DropLog {
    logged: [u64; DropReason::ALL.len()],
    last_line: [Option<Instant>; DropReason::ALL.len()],
}

impl DropLog {
    const EVERY: Duration = Duration::from_secs(1);

    pub fn new() -> Self {
        Self {
            logged: [0; DropReason::ALL.len()],
            last_line: [None; DropReason::ALL.len()],
        }
    }

    pub fn log(&mut self, metrics: &Metrics, now: Instant) {
        for (i, reason) in DropReason::ALL.into_iter().enumerate() {
            let total = metrics.dropped(reason);
            let new = total.saturating_sub(self.logged[i]);
            let due = self.last_line[i].is_none_or(|t| now.duration_since(t) >= Self::EVERY);
            if new == 0 || !due {
                continue;
            }
            self.logged[i] = total;
            self.last_line[i] = Some(now);
            match reason {
                // Normal operation, not a loss anyone asked to avoid.
                DropReason::NoSubscribers | DropReason::SessionEnded => {
                    debug!(
                        cause = reason.name(),
                        count = new,
                        total,
                        "messages dropped"
                    )
                }
                _ => warn!(
                    cause = reason.name(),
                    count = new,
                    total,
                    "messages dropped"
                ),
            }
        }
    }
}

impl Default for DropLog {
    fn default() -> Self {
        Self::new()
    }
}

/// Log a bridge's state change: failures loudly, a lost link as a warning,
/// the rest at info.
pub fn bridge_state_changed(
    name: &str,
    from: &BridgeState,
    to: &BridgeState,
    metrics: Option<&BridgeMetrics>,
    now: Instant,
) {
    let level = match (from, to) {
        (_, BridgeState::Failed) => Level::ERROR,
        (BridgeState::Connected { .. }, _) => Level::WARN,
        (
            BridgeState::Dialing { .. } | BridgeState::Handshaking { .. },
            BridgeState::Backoff { .. },
        ) => Level::WARN,
        _ => Level::INFO,
    };
    let failed_attempts = metrics.map_or(0, |m| m.failed_attempts);
    let cache_depth = metrics.map_or(0, |m| m.cache_depth);
    match to {
        BridgeState::Backoff { until } => {
            let retry_in = until.saturating_duration_since(now);
            log_at!(level, bridge = %name, from = %from, ?retry_in, failed_attempts, cache_depth, "bridge state: backoff");
        }
        _ => {
            log_at!(level, bridge = %name, from = %from, to = %to, failed_attempts, cache_depth, "bridge state: {}", to.name())
        }
    }
}

/// Log level for a connection's end: what a client chose or a normal
/// server stop is `info`; what an operator may need to look at is `warn`.
pub fn level_for(reason: &DisconnectReason) -> Level {
    match reason {
        DisconnectReason::ClientDisconnect { .. }
        | DisconnectReason::TransportClosed
        | DisconnectReason::SessionTakenOver { .. }
        | DisconnectReason::ServerShuttingDown => Level::INFO,
        _ => Level::WARN,
    }
}

/// A peer address for logs ("-" when the transport has none).
pub struct Peer(pub Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("-"),
        }
    }
}

pub struct ClientId<'a>(pub Option<&'a ByteString>);

impl std::fmt::Display for ClientId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(id) => write!(f, "{id}"),
            None => f.write_str("-"),
        }
    }
}
