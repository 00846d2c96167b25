//! Sizes of what every idle connection holds in the broker (issue 4: RSS
//! per idle connection under 2 KiB). Each connection owns a boxed
//! `Connection`, a boxed `Session` (clean or not) and a keep alive timer;
//! these tests pin their sizes so they do not grow back unnoticed. If one
//! must grow, check `tests/broker_idle_memory.rs` and issue 4's numbers,
//! then update the pin here.

use std::mem::size_of;
use std::time::Instant;

use super::timers::{ConnDeadlines, ConnTimer};
use super::{Connection, ConnectionId, Session};

#[test]
fn idle_connection_sizes() {
    // Was 216: a whole `ConnectionInfo` (with its listener `String`), a
    // precomputed keep alive limit and a `usize` send window. Now 32 bytes
    // of timer deadlines are kept here instead of in a hash table.
    assert_eq!(size_of::<Connection>(), 176);
    assert_eq!(size_of::<Session>(), 200);
    // Connect timeout and keep alive share a slot; retry has its own.
    assert_eq!(size_of::<ConnDeadlines>(), 32);
}

#[test]
fn connection_timer_entry_is_small() {
    // One entry per armed connection timer in the broker's `TimerSet`.
    // Was 64 (a `(TimerOwner, TimerKind)` key, where `TimerOwner` can hold
    // a client id), and the same again in a `HashMap` index.
    assert_eq!(size_of::<(Instant, (ConnectionId, ConnTimer))>(), 32);
}
