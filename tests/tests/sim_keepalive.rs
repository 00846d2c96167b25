//! Keepalive in the deterministic simulator: thousands of clients with
//! random keep alives (1..=600 s) and random silences. Every expiry happens
//! exactly at last packet + 1.5 x keep alive (MQTT-3.1.2-24), compared as
//! `Instant`s: none early, none late, none missed.
//! Replay a seed: `SIM_SEED=<n> cargo test -p sansmq-tests --test sim_keepalive -- <name> --exact`.

use std::time::Duration;

use mqtt_core::broker::BrokerConfig;
use sansmq_tests::sim::scenario::{self, KeepaliveParams};
use sansmq_tests::sim::{run_seeds, seeds_from_env};

const TEST: &str = "sim_keepalive";

/// MQTT-3.1.2-24 for 2,000 clients, half of which go silent once.
#[test]
fn expiry_is_exact_for_2000_clients() {
    let name = "expiry_is_exact_for_2000_clients";
    run_seeds(TEST, name, &seeds_from_env(0..1), |seed| {
        let s = scenario::keepalive(seed, &KeepaliveParams::default())?;
        eprintln!("seed {seed}: {s:?}");
        // The scenario must have exercised expiry, and reconnects after it.
        assert!(
            s.keepalive_expiries > 100,
            "only {} expiries: {s:?}",
            s.keepalive_expiries
        );
        assert!(s.connects > 2000, "{s:?}");
        Ok(())
    });
}

/// MQTT-3.1.2-24 still exact with the 3.x retry interval resending QoS 1
/// to frozen subscribers (retry timers are separate from keepalive timers).
#[test]
fn expiry_is_exact_with_retry_interval() {
    let name = "expiry_is_exact_with_retry_interval";
    run_seeds(TEST, name, &seeds_from_env(10..11), |seed| {
        let params = KeepaliveParams {
            broker: BrokerConfig {
                retry_interval: Some(Duration::from_secs(7)),
                ..BrokerConfig::default()
            },
            subscriber_share: 0.1,
            v5_share: 0.2,
            ..KeepaliveParams::default()
        };
        let s = scenario::keepalive(seed, &params)?;
        eprintln!("seed {seed}: {s:?}");
        assert!(s.keepalive_expiries > 100, "{s:?}");
        assert!(s.deliveries > 0, "{s:?}");
        Ok(())
    });
}

/// Clients that keep pinging never expire (MQTT-3.1.2-23 on the client,
/// MQTT-3.1.2-24 on the broker), even at keep alive 1 s over jittery links.
#[test]
fn clients_that_keep_pinging_never_expire() {
    let name = "clients_that_keep_pinging_never_expire";
    run_seeds(TEST, name, &seeds_from_env(20..21), |seed| {
        let params = KeepaliveParams {
            clients: 1000,
            max_keep_alive: 30,
            silence_share: 0.0,
            ..KeepaliveParams::default()
        };
        let s = scenario::keepalive(seed, &params)?;
        eprintln!("seed {seed}: {s:?}");
        assert_eq!(s.keepalive_expiries, 0, "{s:?}");
        Ok(())
    });
}
