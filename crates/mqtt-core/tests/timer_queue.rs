//! The deadline queue behind every `poll_timeout()`: earliest first,
//! re-arming one key never moves another, spurious calls are harmless.
// Tests play the runtime: one base instant, then durations.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use mqtt_core::timer::{TimerKind, TimerQueue};

#[test]
fn earliest_first_and_rearm_moves_only_that_key() {
    let t0 = Instant::now();
    let mut q = TimerQueue::new();
    q.set(
        (1u64, TimerKind::KeepAlive),
        t0 + Duration::from_millis(7500),
    );
    q.set((1u64, TimerKind::Retry), t0 + Duration::from_secs(1));
    q.set((2u64, TimerKind::KeepAlive), t0 + Duration::from_secs(3));
    assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(1)));
    // Re-arming the retry timer does not touch the keepalive of the same owner.
    q.set((1u64, TimerKind::Retry), t0 + Duration::from_secs(10));
    assert_eq!(
        q.get(&(1, TimerKind::KeepAlive)),
        Some(t0 + Duration::from_millis(7500))
    );
    assert_eq!(q.len(), 3);
    assert_eq!(
        q.next(),
        Some((t0 + Duration::from_secs(3), &(2, TimerKind::KeepAlive)))
    );
    assert_eq!(
        q.cancel(&(2, TimerKind::KeepAlive)),
        Some(t0 + Duration::from_secs(3))
    );
    assert_eq!(q.cancel(&(2, TimerKind::KeepAlive)), None);
    assert_eq!(q.len(), 2);
}

#[test]
fn pop_expired_is_exact_and_spurious_calls_are_harmless() {
    let t0 = Instant::now();
    let mut q = TimerQueue::new();
    let d = t0 + Duration::from_millis(7500);
    q.set(7u32, d);
    // Early and repeated calls find nothing.
    assert_eq!(q.pop_expired(t0), None);
    assert_eq!(q.pop_expired(d - Duration::from_nanos(1)), None);
    assert_eq!(q.pop_expired(d), Some((d, 7)));
    assert_eq!(q.pop_expired(d), None);
    assert!(q.is_empty());
}

#[test]
fn setting_the_same_deadline_twice_keeps_one_entry() {
    let t0 = Instant::now();
    let mut q = TimerQueue::new();
    q.set(1u8, t0);
    q.set(1u8, t0);
    assert_eq!(q.expired(t0), vec![(t0, 1)]);
    assert!(q.is_empty());
}

#[test]
fn many_keys_come_out_in_deadline_order() {
    let t0 = Instant::now();
    let mut q = TimerQueue::new();
    for i in 0..1000u32 {
        q.set(i, t0 + Duration::from_millis(u64::from((i * 7919) % 1000)));
    }
    let all = q.expired(t0 + Duration::from_secs(1));
    assert_eq!(all.len(), 1000);
    assert!(all.windows(2).all(|w| w[0].0 <= w[1].0));
}
