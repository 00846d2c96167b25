//! Random scenarios (random mixes of clients, keep alives, silences,
//! partitions, publishes at QoS 0/1/2, reconnects, bridges whose remote
//! fails in every way), one per seed. The
//! ignored test is what `cargo xtask sim --seeds N [--start S]` runs.

use sansmq_tests::sim::scenario;
use sansmq_tests::sim::{run_seeds, seeds_from_env};

const TEST: &str = "sim_random";

#[test]
fn random_scenarios() {
    run_seeds(TEST, "random_scenarios", &seeds_from_env(0..200), |seed| {
        scenario::random(seed).map(|_| ())
    });
}

/// Random bridge runs only (random() draws one about 30% of the time):
/// random links with stalls, bridge versions, keep alives, reconnect
/// policies, hybrid transports, QoS mixes and remote failures, with the
/// Ledger, the KeepaliveCheck and the BackoffCheck.
#[test]
fn random_bridge_scenarios() {
    run_seeds(
        TEST,
        "random_bridge_scenarios",
        &seeds_from_env(0..300),
        |seed| scenario::random_bridge_from_seed(seed).map(|_| ()),
    );
}

/// `SIM_SEEDS=N SIM_START=S`: seeds S..S+N (xtask sets them).
#[test]
#[ignore = "run by `cargo xtask sim`"]
fn random_scenarios_from_env() {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a u64"))
            })
            .unwrap_or(default)
    };
    let start = var("SIM_START", 0);
    let n = var("SIM_SEEDS", 100);
    let seeds: Vec<u64> = (start..start.saturating_add(n)).collect();
    let t0 = std::time::Instant::now();
    run_seeds(TEST, "random_scenarios", &seeds, |seed| {
        scenario::random(seed).map(|_| ())
    });
    println!("sim: {n} seeds from {start} passed in {:?}", t0.elapsed());
}
