//! `cargo xtask sim --seeds N [--start S]`: N random simulator scenarios
//! (seeds S..S+N), each a random mix of clients, keep alives, silences,
//! partitions, QoS 0/1/2 publishes and reconnects on the real mqtt-core.
//!
//! The scenarios live in the tests crate (tests/src/sim/scenario.rs); this
//! runs its ignored test `sim_random::random_scenarios_from_env` with the
//! seed range in `SIM_SEEDS` / `SIM_START`. A failing seed is printed with
//! the command that replays it alone.

use crate::util::{self, err, Result};

const USAGE: &str = "usage: cargo xtask sim --seeds N [--start S]";

pub fn run_cli(args: &[String]) -> Result<()> {
    let mut seeds: u64 = 100;
    let mut start: u64 = 0;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<u64> {
            let v = it
                .next()
                .ok_or_else(|| err!("sim: {name} needs a value; {USAGE}"))?;
            v.parse()
                .map_err(|_| err!("sim: {name} {v:?} is not a number; {USAGE}"))
        };
        match arg.as_str() {
            "--seeds" => seeds = value("--seeds")?,
            "--start" => start = value("--start")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(err!("sim: unexpected argument `{other}`; {USAGE}")),
        }
    }
    println!("sim: seeds {start}..{}", start.saturating_add(seeds));
    util::run(
        util::cargo()
            .args([
                "test",
                "-p",
                "sansmq-tests",
                "--test",
                "sim_random",
                "--",
                "--ignored",
                "--exact",
                "random_scenarios_from_env",
                "--nocapture",
            ])
            .env("SIM_SEEDS", seeds.to_string())
            .env("SIM_START", start.to_string()),
    )
}
