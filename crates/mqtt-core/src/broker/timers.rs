//! The broker's timers, split by owner so that a connection's timer costs
//! as little as possible (thousands of idle connections each hold a keep
//! alive timer):
//!
//! - connection timers: a [`TimerSet`] keyed by (connection id, kind), 32
//!   bytes an entry, with each deadline kept in the connection itself
//!   ([`ConnDeadlines`]), so no hash-table entry;
//! - session timers: a [`TimerQueue`] keyed by (client id, kind);
//! - broker timers ($SYS): a [`TimerQueue`] keyed by kind.
//!
//! They fire in exactly the order of one queue keyed by
//! ([`TimerOwner`], [`TimerKind`]): deadline first, then connection before
//! session before broker, then connection id / client id, then kind.

use std::time::Instant;

use bytestring::ByteString;

use super::types::{ConnectionId, TimerOwner};
use crate::timer::{TimerKind, TimerQueue, TimerSet};

/// The kinds of timer a connection owns, in [`TimerKind`]'s order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum ConnTimer {
    ConnectTimeout,
    KeepAlive,
    Retry,
}

impl ConnTimer {
    const fn kind(self) -> TimerKind {
        match self {
            ConnTimer::ConnectTimeout => TimerKind::ConnectTimeout,
            ConnTimer::KeepAlive => TimerKind::KeepAlive,
            ConnTimer::Retry => TimerKind::Retry,
        }
    }

    /// The timers that share `self`'s slot.
    const fn slot_sharers(self) -> &'static [ConnTimer] {
        match self {
            ConnTimer::ConnectTimeout | ConnTimer::KeepAlive => {
                &[ConnTimer::ConnectTimeout, ConnTimer::KeepAlive]
            }
            ConnTimer::Retry => &[ConnTimer::Retry],
        }
    }
}

/// A connection's armed deadlines. The connect timeout (armed only before
/// CONNECT) and the keep alive (armed only after it) share one slot, so a
/// connection carries two, 32 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ConnDeadlines {
    watchdog: Option<Instant>,
    retry: Option<Instant>,
}

impl ConnDeadlines {
    fn slot(&mut self, t: ConnTimer) -> &mut Option<Instant> {
        match t {
            ConnTimer::ConnectTimeout | ConnTimer::KeepAlive => &mut self.watchdog,
            ConnTimer::Retry => &mut self.retry,
        }
    }
}

/// A timer that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Due {
    Connection(ConnectionId, TimerKind),
    Session(ByteString, TimerKind),
    Broker(TimerKind),
}

/// Which queue holds the earliest timer; the order breaks deadline ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Connection,
    Session,
    Broker,
}

#[derive(Debug, Default)]
pub(super) struct BrokerTimers {
    conns: TimerSet<(ConnectionId, ConnTimer)>,
    sessions: TimerQueue<(ByteString, TimerKind)>,
    broker: TimerQueue<TimerKind>,
}

impl BrokerTimers {
    pub(super) fn set_conn(
        &mut self,
        conn: ConnectionId,
        deadlines: &mut ConnDeadlines,
        t: ConnTimer,
        at: Instant,
    ) {
        self.cancel_conn(conn, deadlines, t);
        self.conns.set(deadlines.slot(t), (conn, t), at);
    }

    pub(super) fn cancel_conn(
        &mut self,
        conn: ConnectionId,
        deadlines: &mut ConnDeadlines,
        t: ConnTimer,
    ) {
        // Whichever timer holds the slot goes (the connect timeout and the
        // keep alive are never armed together).
        if let Some(old) = deadlines.slot(t).take() {
            for &k in t.slot_sharers() {
                self.conns.cancel(&mut Some(old), (conn, k));
            }
        }
    }

    /// A connection timer fired: clear its slot (`pop_expired` cannot).
    pub(super) fn fired_conn(deadlines: &mut ConnDeadlines, kind: TimerKind) {
        let t = match kind {
            TimerKind::ConnectTimeout => ConnTimer::ConnectTimeout,
            TimerKind::KeepAlive => ConnTimer::KeepAlive,
            _ => ConnTimer::Retry,
        };
        *deadlines.slot(t) = None;
    }

    pub(super) fn set_session(&mut self, client_id: ByteString, kind: TimerKind, at: Instant) {
        self.sessions.set((client_id, kind), at);
    }

    pub(super) fn cancel_session(&mut self, client_id: &ByteString, kind: TimerKind) {
        self.sessions.cancel(&(client_id.clone(), kind));
    }

    pub(super) fn set_broker(&mut self, kind: TimerKind, at: Instant) {
        self.broker.set(kind, at);
    }

    pub(super) fn cancel_broker(&mut self, kind: TimerKind) {
        self.broker.cancel(&kind);
    }

    fn earliest(&self) -> Option<(Instant, Rank)> {
        let c = self.conns.next_deadline().map(|t| (t, Rank::Connection));
        let s = self.sessions.next_deadline().map(|t| (t, Rank::Session));
        let b = self.broker.next_deadline().map(|t| (t, Rank::Broker));
        [c, s, b].into_iter().flatten().min()
    }

    /// The earliest deadline over every timer.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.earliest().map(|(t, _)| t)
    }

    /// The earliest timer, as its owner and kind.
    pub(super) fn next(&self) -> Option<(Instant, TimerOwner, TimerKind)> {
        let (at, rank) = self.earliest()?;
        let (owner, kind) = match rank {
            Rank::Connection => {
                let (_, &(conn, t)) = self.conns.next()?;
                (TimerOwner::Connection(conn), t.kind())
            }
            Rank::Session => {
                let (_, (client_id, kind)) = self.sessions.next()?;
                (TimerOwner::Session(client_id.clone()), *kind)
            }
            Rank::Broker => {
                let (_, kind) = self.broker.next()?;
                (TimerOwner::Broker, *kind)
            }
        };
        Some((at, owner, kind))
    }

    /// Remove and return the earliest timer whose deadline is `<= now`.
    /// A connection timer's slot is the caller's to clear
    /// ([`Self::fired_conn`]).
    pub(super) fn pop_expired(&mut self, now: Instant) -> Option<(Instant, Due)> {
        let (at, rank) = self.earliest()?;
        if at > now {
            return None;
        }
        match rank {
            Rank::Connection => {
                let (at, (conn, t)) = self.conns.pop_expired(now)?;
                Some((at, Due::Connection(conn, t.kind())))
            }
            Rank::Session => {
                let (at, (client_id, kind)) = self.sessions.pop_expired(now)?;
                Some((at, Due::Session(client_id, kind)))
            }
            Rank::Broker => {
                let (at, kind) = self.broker.pop_expired(now)?;
                Some((at, Due::Broker(kind)))
            }
        }
    }

    /// Number of armed timers.
    pub(super) fn len(&self) -> usize {
        self.conns.len() + self.sessions.len() + self.broker.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The split queues fire in the order of the single
    /// `TimerQueue<(TimerOwner, TimerKind)>` they replaced, ties included.
    #[test]
    #[allow(clippy::disallowed_methods)] // the test's one base instant
    fn fires_in_the_order_of_one_queue() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut split = BrokerTimers::default();
        let mut one: TimerQueue<(TimerOwner, TimerKind)> = TimerQueue::new();
        let mut deadlines = [ConnDeadlines::default(); 3];
        for (i, d) in deadlines.iter_mut().enumerate().rev() {
            let conn = ConnectionId(i as u64);
            split.set_conn(conn, d, ConnTimer::KeepAlive, at(100));
            one.set(
                (TimerOwner::Connection(conn), TimerKind::KeepAlive),
                at(100),
            );
            split.set_conn(conn, d, ConnTimer::Retry, at(100 * i as u64));
            one.set(
                (TimerOwner::Connection(conn), TimerKind::Retry),
                at(100 * i as u64),
            );
        }
        for id in ["b", "a"] {
            for kind in [TimerKind::SessionExpiry, TimerKind::AwaitRel] {
                split.set_session(id.into(), kind, at(100));
                one.set((TimerOwner::Session(id.into()), kind), at(100));
            }
        }
        split.set_broker(TimerKind::SysInterval, at(100));
        one.set((TimerOwner::Broker, TimerKind::SysInterval), at(100));
        assert_eq!(split.len(), one.len());
        let mut got = Vec::new();
        while let Some((t, due)) = split.pop_expired(at(1_000)) {
            let (owner, kind) = match due {
                Due::Connection(c, k) => (TimerOwner::Connection(c), k),
                Due::Session(s, k) => (TimerOwner::Session(s), k),
                Due::Broker(k) => (TimerOwner::Broker, k),
            };
            got.push((t, (owner, kind)));
        }
        assert_eq!(got, one.expired(at(1_000)));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the test's one base instant
    fn connect_timeout_and_keep_alive_share_a_slot() {
        let t0 = Instant::now();
        let mut timers = BrokerTimers::default();
        let mut d = ConnDeadlines::default();
        let conn = ConnectionId(7);
        timers.set_conn(conn, &mut d, ConnTimer::ConnectTimeout, t0);
        timers.cancel_conn(conn, &mut d, ConnTimer::ConnectTimeout);
        timers.set_conn(conn, &mut d, ConnTimer::KeepAlive, t0);
        assert_eq!(timers.len(), 1);
        assert_eq!(
            timers.next(),
            Some((t0, TimerOwner::Connection(conn), TimerKind::KeepAlive))
        );
        timers.cancel_conn(conn, &mut d, ConnTimer::KeepAlive);
        assert_eq!(timers.len(), 0);
        assert_eq!(d, ConnDeadlines::default());
    }
}
