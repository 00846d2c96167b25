//! `cargo xtask bench <name> [-- <criterion args>]`.
//!
//! Today every benchmark is a criterion bench in the `sansmq-benches` crate
//! (benches/benches/<name>.rs), run with
//! `cargo bench -p sansmq-benches --bench <name> -- <args>`.
//!
//! Benchmarks that are not criterion benches (the broker binary against
//! Mosquitto and other brokers on loopback, later QUIC vs TCP bridges) have
//! an entry in [`SYSTEM_BENCHES`] with their own runner and flags. A system
//! bench takes precedence over a criterion bench of the same name; the
//! criterion bench of the broker core (benches/benches/broker.rs) is
//! therefore `broker-core` here (see [`RENAMED`]).

use crate::util::{self, err, Result};

/// A benchmark that is not a criterion bench: its name, what it measures,
/// and its runner, which gets the arguments after the name.
pub struct SystemBench {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&[String]) -> Result<()>,
}

pub const SYSTEM_BENCHES: &[SystemBench] = &[
    SystemBench {
        name: "broker",
        about: "sansmq vs Mosquitto (and rumqttd) on loopback: cargo xtask bench broker --help",
        run: crate::bench_broker::run_cli,
    },
    SystemBench {
        name: "quic",
        about: "QUIC vs TCP bridge, loopback and netem: cargo xtask bench quic --help",
        run: crate::bench_quic::run_cli,
    },
];

/// Criterion benches whose xtask name differs from their file stem:
/// (name, file stem).
const RENAMED: &[(&str, &str)] = &[("broker-core", "broker")];

fn file_stem_of(name: &str) -> &str {
    RENAMED
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(name, |(_, stem)| stem)
}

/// The criterion benches present, by xtask name (benches/benches/*.rs file
/// stems, renamed per [`RENAMED`]).
pub fn criterion_benches() -> Result<Vec<String>> {
    let dir = util::repo_root().join("benches/benches");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = util::files_with_ext(&dir, "rs")?
        .iter()
        .filter(|p| p.parent() == Some(dir.as_path()))
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .map(|stem| {
            RENAMED
                .iter()
                .find(|(_, s)| *s == stem)
                .map_or(stem.clone(), |(name, _)| (*name).to_owned())
        })
        .collect();
    names.sort();
    Ok(names)
}

pub fn run_cli(args: &[String]) -> Result<()> {
    let criterion = criterion_benches()?;
    let Some(name) = args.first().filter(|a| !a.starts_with('-')) else {
        println!("usage: cargo xtask bench <name> [-- <criterion args>]");
        println!("criterion benches (benches/benches/): {}", list(&criterion));
        for b in SYSTEM_BENCHES {
            println!("{:<10} {}", b.name, b.about);
        }
        return Ok(());
    };
    let rest = &args[1..];
    if let Some(bench) = SYSTEM_BENCHES.iter().find(|b| b.name == name) {
        return (bench.run)(rest);
    }
    if !criterion.contains(name) {
        return Err(err!(
            "unknown benchmark `{name}`; criterion benches: {}",
            list(&criterion)
        ));
    }
    // Everything after the name goes to criterion; a leading `--` is optional.
    let passthrough = rest.strip_prefix(&["--".to_owned()]).unwrap_or(rest);
    util::run(
        util::cargo()
            .args([
                "bench",
                "-p",
                "sansmq-benches",
                "--bench",
                file_stem_of(name),
                "--",
            ])
            .args(passthrough),
    )
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none yet)".to_owned()
    } else {
        names.join(", ")
    }
}
