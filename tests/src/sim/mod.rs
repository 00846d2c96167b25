//! A deterministic simulator for sansmq: the real mqtt-core [`Broker`] and
//! [`Client`] state machines on a virtual clock, over simulated links, all
//! decided by one seed (in the style of turmoil, quinn-proto's test harness
//! and TigerBeetle's VOPR).
//!
//! - [`World`] owns the virtual clock (one base `Instant` read at creation,
//!   then `base + offset`), the hosts and the [`Network`]. [`World::step`]
//!   advances to the earliest of: a node's `poll_timeout`, a network delivery,
//!   a scheduled scenario action; calls the node and drains its outputs.
//!   A step budget fails loudly on livelock (too many steps at one instant).
//! - A host runs one [`Node`]: [`BrokerNode`], [`ClientNode`],
//!   [`BridgedBrokerNode`] (a `mqtt_core::node::Node`: a broker and its
//!   bridges, whose transports are simulated connections to other hosts),
//!   and (next) QUIC endpoints; a node sees the network only through
//!   [`Cx`] (dial, send, close, reset) and [`NetEvent`]s.
//! - [`Network`]: stream connections with per-link latency, jitter and
//!   stalls (never loss or reordering within a stream), partitions that hold
//!   or drop traffic between two hosts, refused dials (fail after one RTT),
//!   peers that vanish without FIN, and resets.
//! - [`Checks`]: invariants every scenario gets: the QoS contract and
//!   per-publisher order ([`Ledger`]), keepalive expiry exactly at last
//!   packet + 1.5 x keep alive ([`KeepaliveCheck`]), bridges' reconnect
//!   schedule and no reconnect storm ([`BackoffCheck`]).
//! - [`scenario`]: the random-scenario generator behind `cargo xtask sim`.
//!
//! A failing run prints its seed and the command that replays it; the trace
//! hash ([`World::trace_hash`]) is the same for the same seed.
//!
//! [`Broker`]: mqtt_core::broker::Broker
//! [`Client`]: mqtt_core::client::Client

mod bridge_node;
mod check;
mod net;
mod nodes;
pub mod quic;
pub mod scenario;
mod world;

pub use bridge_node::{BridgeRecord, BridgedBrokerNode, DialRecord, StateRecord};
pub use check::{BackoffCheck, Checks, KeepaliveCheck, KeepaliveExpiry, Ledger, MsgId};
pub use net::{
    ConnId, DatagramConfig, HostId, LinkConfig, NetEvent, Network, PartitionKind, SockId,
};
pub use nodes::{BrokerNode, ClientNode, ReconnectPolicy};
pub use quic::{QuicStats, SimQuic};
pub use world::{describe_packets, Cx, Failure, Node, Trace, World};

use rand_xoshiro::rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::time::Duration;

/// The one source of randomness of a run. Everything random in a run comes
/// from the world's `SimRng` (or one forked from it), so a seed replays.
#[derive(Debug, Clone)]
pub struct SimRng(Xoshiro256PlusPlus);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        Self(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    /// An independent stream, e.g. one per scenario generator, so adding a
    /// draw in one place does not shift every other.
    pub fn fork(&mut self) -> Self {
        Self::new(self.0.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo + 1;
        lo + self.0.next_u64() % span
    }

    /// Uniform index in `0..n` (`n > 0`).
    pub fn index(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `p` (0.0..=1.0).
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// Uniform in `lo..=hi`, to the microsecond.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let lo_us = lo.as_micros() as u64;
        let hi_us = hi.as_micros() as u64;
        Duration::from_micros(self.range(lo_us, hi_us))
    }
}

/// The seeds a `sim_*` test runs: `SIM_SEED=n` replays one, else `default`.
pub fn seeds_from_env(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("SIM_SEED") {
        Ok(s) => vec![s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SIM_SEED={s:?} is not a u64"))],
        Err(_) => default.collect(),
    }
}

/// The command that replays `seed` of test `test`, function `name`.
pub fn replay_command(test: &str, name: &str, seed: u64) -> String {
    format!(
        "SIM_SEED={seed} cargo test -p sansmq-tests --test {test} -- {name} --exact --nocapture"
    )
}

/// Run `f` for every seed; a panic or an `Err` is reported with its seed
/// and replay command, and the whole call panics at the end if any failed.
pub fn run_seeds<F>(test: &str, name: &str, seeds: &[u64], f: F)
where
    F: Fn(u64) -> Result<(), Failure>,
{
    let mut failed = Vec::new();
    for &seed in seeds {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(seed)));
        let msg = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(failure)) => failure.to_string(),
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".to_owned()),
        };
        eprintln!(
            "\nsim: seed {seed} FAILED\n{msg}\nreplay: {}\n",
            replay_command(test, name, seed)
        );
        failed.push(seed);
    }
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed: {failed:?}",
        failed.len(),
        seeds.len()
    );
}
