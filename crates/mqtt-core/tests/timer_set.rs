//! `TimerSet` (deadlines kept by their owners, no index) fires exactly
//! like `TimerQueue`: the same operations give the same `next()` and the
//! same expiries, ties included, whether or not the owner clears a slot
//! after its timer fired (only `cancel`'s answer tells a stale slot).
// Tests play the runtime: one base instant, then durations.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use mqtt_core::timer::{TimerKind, TimerQueue, TimerSet};

const KEYS: usize = 6;
const KINDS: [TimerKind; 2] = [TimerKind::KeepAlive, TimerKind::Retry];

/// A small deterministic generator (no RNG crate needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn run(seed: u64, clear_slots: bool) {
    let t0 = Instant::now();
    let mut rng = Lcg(seed);
    let mut queue: TimerQueue<(u64, TimerKind)> = TimerQueue::new();
    let mut set: TimerSet<(u64, TimerKind)> = TimerSet::new();
    let mut slots = [[None; 2]; KEYS];
    let mut now = t0;
    for _ in 0..2_000 {
        let k = rng.next(KEYS as u64);
        let kind = rng.next(2) as usize;
        let key = (k, KINDS[kind]);
        let slot = &mut slots[k as usize][kind];
        match rng.next(4) {
            0 | 1 => {
                // Few distinct deadlines, so ties are common.
                let at = now + Duration::from_millis(rng.next(8) * 250);
                queue.set(key, at);
                set.set(slot, key, at);
            }
            2 => {
                let (a, b) = (set.cancel(slot, key), queue.cancel(&key));
                // A stale slot still names the deadline that fired.
                if clear_slots {
                    assert_eq!(a, b, "seed {seed}");
                }
            }
            _ => {
                now += Duration::from_millis(rng.next(4) * 250);
                loop {
                    let a = queue.pop_expired(now);
                    let b = set.pop_expired(now);
                    assert_eq!(a, b, "seed {seed}");
                    let Some((_, (k, kind))) = b else { break };
                    if clear_slots {
                        let i = KINDS.iter().position(|x| *x == kind).unwrap();
                        slots[k as usize][i] = None;
                    }
                }
            }
        }
        assert_eq!(set.next(), queue.next(), "seed {seed}");
        assert_eq!(set.len(), queue.len(), "seed {seed}");
    }
}

#[test]
fn fires_like_timer_queue() {
    for seed in 0..200 {
        run(seed, true);
    }
}

#[test]
fn stale_slots_are_harmless() {
    for seed in 0..200 {
        run(seed, false);
    }
}
