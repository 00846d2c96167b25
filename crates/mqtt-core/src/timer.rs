//! A deadline queue: one deadline per key, earliest first.
//!
//! [`TimerQueue`] is keyed by any ordered key (the broker's session and
//! `$SYS` timers; the client and bridge state machines can key it by their
//! own enums). Every operation is O(log n): a `BTreeSet<(Instant, K)>`
//! orders the deadlines and a `HashMap<K, Instant>` finds a key's current
//! deadline so that re-arming or cancelling never scans. [`TimerSet`] is
//! the same order without the `HashMap`, for owners that keep their own
//! deadlines (the broker's connection timers, one per idle connection).
//!
//! There is no periodic tick anywhere: [`TimerQueue::next`] is what a state
//! machine's `poll_timeout()` returns, and [`TimerQueue::pop_expired`] hands
//! out exactly the timers whose deadline is `<= now`, so a spurious or early
//! `handle_timeout(now)` call finds nothing and changes nothing.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// What a broker timer is for. Each kind has its own deadline per owner, so
/// re-arming one (a retry) never moves another (a keepalive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// A socket opened and has not sent CONNECT yet.
    ConnectTimeout,
    /// Last packet received + keep alive x multiplier.
    KeepAlive,
    /// 3.x resend of unacknowledged QoS 1/2 messages (`retry_interval`).
    Retry,
    /// Oldest inbound QoS 2 packet id still waiting for PUBREL.
    AwaitRel,
    /// A disconnected session's delayed will (5.0 Will Delay Interval).
    WillDelay,
    /// A disconnected session ends.
    SessionExpiry,
    /// The next queued or retained message to expire.
    MessageExpiry,
    /// Periodic `$SYS` statistics.
    SysInterval,
}

impl TimerKind {
    /// A short lower-case name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            TimerKind::ConnectTimeout => "connect timeout",
            TimerKind::KeepAlive => "keep alive",
            TimerKind::Retry => "retry",
            TimerKind::AwaitRel => "await PUBREL",
            TimerKind::WillDelay => "will delay",
            TimerKind::SessionExpiry => "session expiry",
            TimerKind::MessageExpiry => "message expiry",
            TimerKind::SysInterval => "$SYS interval",
        }
    }
}

impl core::fmt::Display for TimerKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// One deadline per key, ordered by deadline then key (so ties are
/// deterministic: the same inputs expire in the same order on every run).
/// A [`TimerSet`] plus the index that keeps each key's deadline.
#[derive(Debug, Clone)]
pub struct TimerQueue<K> {
    set: TimerSet<K>,
    by_key: HashMap<K, Instant>,
}

impl<K> Default for TimerQueue<K> {
    fn default() -> Self {
        Self {
            set: TimerSet::default(),
            by_key: HashMap::new(),
        }
    }
}

impl<K: Ord + Hash + Clone> TimerQueue<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Arm `key` at `deadline`, replacing its previous deadline if any.
    pub fn set(&mut self, key: K, deadline: Instant) {
        let mut slot = self.by_key.get(&key).copied();
        if slot == Some(deadline) {
            return;
        }
        self.set.set(&mut slot, key.clone(), deadline);
        self.by_key.insert(key, deadline);
    }

    /// Disarm `key`; returns the deadline it had.
    pub fn cancel(&mut self, key: &K) -> Option<Instant> {
        let mut slot = self.by_key.remove(key);
        self.set.cancel(&mut slot, key.clone())
    }

    /// The deadline of `key`, if armed.
    pub fn get(&self, key: &K) -> Option<Instant> {
        self.by_key.get(key).copied()
    }

    /// The earliest deadline and its key.
    pub fn next(&self) -> Option<(Instant, &K)> {
        self.set.next()
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.set.next_deadline()
    }

    /// Remove and return the earliest timer whose deadline is `<= now`.
    /// Call it in a loop: each expired timer comes out exactly once.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(Instant, K)> {
        let (deadline, key) = self.set.pop_expired(now)?;
        self.by_key.remove(&key);
        Some((deadline, key))
    }

    /// Every timer expired at `now`, earliest first (convenience for tests
    /// and for state machines with few timers).
    pub fn expired(&mut self, now: Instant) -> Vec<(Instant, K)> {
        let mut out = Vec::new();
        while let Some(t) = self.pop_expired(now) {
            out.push(t);
        }
        out
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Deadlines ordered like a [`TimerQueue`]'s (deadline, then key), without
/// its index: the owner of each key keeps that key's deadline in a slot
/// (`Option<Instant>`) and hands the slot in, so an armed timer costs one
/// ordered entry and no hash-table entry. The broker keys its connection
/// timers this way: thousands of idle connections each hold one.
///
/// A slot must only ever be used with one key. [`TimerSet::pop_expired`]
/// cannot reach the slot: the caller clears it (a stale slot is harmless,
/// since `set` and `cancel` never rely on the entry being there).
#[derive(Debug, Clone)]
pub struct TimerSet<K> {
    by_deadline: BTreeSet<(Instant, K)>,
}

impl<K> Default for TimerSet<K> {
    fn default() -> Self {
        Self {
            by_deadline: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone> TimerSet<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Arm `key` at `deadline`, replacing the deadline its `slot` holds.
    pub fn set(&mut self, slot: &mut Option<Instant>, key: K, deadline: Instant) {
        if let Some(old) = slot.replace(deadline) {
            self.by_deadline.remove(&(old, key.clone()));
        }
        self.by_deadline.insert((deadline, key));
    }

    /// Disarm `key`; returns the deadline its `slot` held.
    pub fn cancel(&mut self, slot: &mut Option<Instant>, key: K) -> Option<Instant> {
        let old = slot.take()?;
        self.by_deadline.remove(&(old, key));
        Some(old)
    }

    /// The earliest deadline and its key.
    pub fn next(&self) -> Option<(Instant, &K)> {
        self.by_deadline.first().map(|(t, k)| (*t, k))
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(t, _)| *t)
    }

    /// Remove and return the earliest timer whose deadline is `<= now`;
    /// the caller clears its slot.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(Instant, K)> {
        let (deadline, _) = self.by_deadline.first()?;
        if *deadline > now {
            return None;
        }
        self.by_deadline.pop_first()
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.by_deadline.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_deadline.is_empty()
    }
}
