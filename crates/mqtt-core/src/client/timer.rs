//! The client's three timers in one table keyed by [`TimerKind`]
//! (quinn-proto's `TimerTable` shape): the next deadline is the minimum,
//! and firing is idempotent, so a spurious `handle_timeout` does nothing.

use std::time::{Duration, Instant};

/// Why the client wants to be woken up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// No CONNACK yet: fires `connect_timeout` after the transport came up.
    ConnAck,
    /// A PINGREQ is outstanding: fires `ping_timeout` after it was queued.
    PingResp,
    /// Time to send PINGREQ: keep alive after the last packet sent
    /// (MQTT-3.1.2-23), or after the last PINGREQ with
    /// [`KeepAlivePolicy::Periodic`](super::KeepAlivePolicy::Periodic).
    KeepAlive,
}

impl TimerKind {
    /// In the order they are handled when several expire at once: a dead
    /// transport is declared before another PINGREQ is queued.
    pub const ALL: [TimerKind; 3] = [
        TimerKind::ConnAck,
        TimerKind::PingResp,
        TimerKind::KeepAlive,
    ];

    const fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; 3],
}

impl TimerTable {
    /// Arm `kind` for `from + after`; a deadline past what `Instant` can
    /// hold (a configured `Duration::MAX`) means never.
    pub(crate) fn set_after(&mut self, kind: TimerKind, from: Instant, after: Duration) {
        self.deadlines[kind.index()] = from.checked_add(after);
    }

    pub(crate) fn stop(&mut self, kind: TimerKind) {
        self.deadlines[kind.index()] = None;
    }

    pub(crate) fn get(&self, kind: TimerKind) -> Option<Instant> {
        self.deadlines[kind.index()]
    }

    pub(crate) fn clear(&mut self) {
        self.deadlines = [None; 3];
    }

    /// The earliest deadline and its kind; ties go to the first in
    /// [`TimerKind::ALL`].
    pub(crate) fn next(&self) -> Option<(Instant, TimerKind)> {
        TimerKind::ALL
            .iter()
            .filter_map(|&k| self.get(k).map(|at| (at, k)))
            .min_by_key(|&(at, _)| at)
    }

    /// Stop and return whether `kind` is due at `now`.
    pub(crate) fn expire(&mut self, kind: TimerKind, now: Instant) -> bool {
        match self.get(kind) {
            Some(at) if at <= now => {
                self.stop(kind);
                true
            }
            _ => false,
        }
    }
}
