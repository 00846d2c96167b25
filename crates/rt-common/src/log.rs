//! Log lines for what the core reports, shared by both runtimes: the
//! drop counts (rate-limited), connection ends, bridge state changes.
//! The core decides; these functions only tell the operator.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use mqtt_core::bridge::{BridgeConfig, BridgeMetrics, BridgeState, StateReason, Transport};
use mqtt_core::broker::{DisconnectReason, DropReason, Event, Metrics};
use tracing::{debug, info, warn, Level};

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

    /// When drops counted but not yet logged (held back by the one line per
    /// second rule) are due: the runtime wakes by then, so the line comes
    /// out on time even when nothing else happens.
    pub fn next_deadline(&self, metrics: &Metrics) -> Option<Instant> {
        DropReason::ALL
            .into_iter()
            .enumerate()
            .filter(|&(i, reason)| metrics.dropped(reason) > self.logged[i])
            .filter_map(|(i, _)| self.last_line[i].map(|t| t + Self::EVERY))
            .min()
    }
}

impl Default for DropLog {
    fn default() -> Self {
        Self::new()
    }
}

/// Log a bridge's state change: failures loudly, a lost link as a warning,
/// the rest at info; with the core's reason when it gave one ("refused",
/// "keepalive timeout (no PINGRESP)", "CONNACK refused 0x87 ...").
pub fn bridge_state_changed(
    name: &str,
    from: &BridgeState,
    to: &BridgeState,
    reason: Option<&StateReason>,
    metrics: Option<&BridgeMetrics>,
    now: Instant,
) {
    let level = match (from, to) {
        (_, BridgeState::Failed) => Level::ERROR,
        (_, BridgeState::Stopped) => Level::INFO,
        (BridgeState::Connected { .. }, _) => Level::WARN,
        (
            BridgeState::Dialing { .. } | BridgeState::Handshaking { .. },
            BridgeState::Backoff { .. },
        ) => Level::WARN,
        _ => Level::INFO,
    };
    let failed_attempts = metrics.map_or(0, |m| m.failed_attempts);
    let cache_depth = metrics.map_or(0, |m| m.cache_depth);
    let reason = reason.map_or_else(String::new, ToString::to_string);
    match to {
        BridgeState::Backoff { until } => {
            let retry_in = until.saturating_duration_since(now);
            log_at!(level, bridge = %name, from = %from, %reason, ?retry_in, failed_attempts, cache_depth, "bridge state: backoff");
        }
        _ => {
            log_at!(level, bridge = %name, from = %from, to = %to, %reason, failed_attempts, cache_depth, "bridge state: {}", to.name())
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

/// Log one of the broker's events the way both runtimes do. `peer` is the
/// connection's peer as the runtime knows it; `connected` says whether the
/// core reported `ClientConnected` for it (a connection that never got that
/// far has no "client disconnected" line, so its close says why instead).
/// Logging only: acting on the event (closing the socket) is the caller's.
pub fn broker_event(ev: &Event, peer: Option<SocketAddr>, connected: bool) {
    match ev {
        Event::ClientConnected {
            conn,
            client_id,
            version,
            keep_alive,
            clean_start,
            session_present,
            peer,
        } => {
            tracing::info!(
                client_id = %client_id,
                peer = %Peer(*peer),
                %conn,
                %version,
                keep_alive,
                clean_start,
                session_present,
                "client connected"
            );
        }
        Event::ClientDisconnected {
            conn,
            client_id,
            reason,
        } => {
            log_at!(
                level_for(reason),
                client_id = %client_id,
                peer = %Peer(peer),
                %conn,
                reason = %reason,
                "client disconnected"
            );
        }
        Event::CloseConnection { conn, reason } => {
            if connected {
                debug!(%conn, reason = %reason, "closing connection");
            } else {
                log_at!(
                    level_for(reason),
                    peer = %Peer(peer),
                    %conn,
                    reason = %reason,
                    "connection closed"
                );
            }
        }
        Event::PauseReading { conn } => {
            debug!(%conn, peer = %Peer(peer), "flow control: pausing reads");
        }
        Event::ResumeReading { conn } => {
            debug!(%conn, peer = %Peer(peer), "flow control: resuming reads");
        }
        // `storage_events` is off: no runtime has a storage layer yet.
        Event::Storage(_) => {}
        other => debug!(event = ?other, "unhandled broker event"),
    }
}

/// One line per configured bridge, and a warning for each transport the
/// runtime does not have (`missing`): its dials fail at once.
pub fn bridges_configured(bridges: &[BridgeConfig], missing: &[Transport]) {
    for b in bridges {
        let addresses = b.addresses.join(", ");
        info!(bridge = %b.name, %addresses, transports = ?b.transports, "bridge configured");
        for t in &b.transports {
            if missing.contains(t) {
                warn!(
                    bridge = %b.name,
                    transport = %t,
                    "this runtime has no {t} bridge transport yet: every {t} dial fails \
                     at once (a hybrid transport list falls back to the next transport)"
                );
            }
        }
    }
}

/// The final summary lines of a stopped broker and its bridges (`bridges`
/// in index order: name and metrics).
pub fn broker_stopped<'a>(
    m: &Metrics,
    bridges: impl IntoIterator<Item = (&'a str, &'a BridgeMetrics)>,
) {
    tracing::info!(
        connections_opened = m.connections_opened,
        messages_received = m.messages_received,
        messages_sent = m.messages_sent,
        messages_dropped = m.dropped_total(),
        bytes_received = m.bytes_received,
        bytes_sent = m.bytes_sent,
        "broker stopped"
    );
    for (name, b) in bridges {
        tracing::info!(
            bridge = %name,
            state = %b.state,
            connects = b.connects,
            reconnects = b.reconnects,
            failed_attempts = b.failed_attempts,
            forwarded = b.forwarded,
            received = b.received,
            cache_depth = b.cache_depth,
            dropped = b.dropped_cache_full + b.dropped_evicted + b.dropped_unsendable,
            "bridge stopped"
        );
    }
}

#[cfg(test)]
mod drop_log_tests {
    use super::*;

    #[test]
    fn held_back_drops_have_a_deadline_one_second_after_the_last_line() {
        let t0 = Instant::now();
        let mut m = Metrics::default();
        let mut log = DropLog::new();
        assert_eq!(log.next_deadline(&m), None);
        // `Metrics::dropped(reason)` reads slot i for reason ALL[i].
        let slot = DropReason::ALL
            .iter()
            .position(|r| *r == DropReason::QueueFull)
            .expect("QueueFull is a drop reason");
        m.messages_dropped[slot] += 1;
        assert_eq!(m.dropped(DropReason::QueueFull), 1);
        // First drop: logged at once, nothing held back.
        log.log(&m, t0);
        assert_eq!(log.next_deadline(&m), None);
        // More within the second: held back until t0 + 1 s.
        m.messages_dropped[slot] += 1;
        log.log(&m, t0 + Duration::from_millis(10));
        assert_eq!(log.next_deadline(&m), Some(t0 + DropLog::EVERY));
        // At the deadline they are logged and nothing is pending.
        log.log(&m, t0 + DropLog::EVERY);
        assert_eq!(log.next_deadline(&m), None);
    }
}
