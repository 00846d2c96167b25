//! `cargo xtask bench <name> [-- <criterion args>]`.
//!
//! Today every benchmark is a criterion bench in the `sansmq-benches` crate
//! (benches/benches/<name>.rs), run with
//! `cargo bench -p sansmq-benches --bench <name> -- <args>`.
//!
//! Later issues add benchmarks that are not criterion benches (the broker
//! binary against Mosquitto and other brokers on loopback, QUIC vs TCP
//! bridges): give each an entry in [`SYSTEM_BENCHES`] with its own runner
//! and flags (`--runtime std`, ...). A system bench takes precedence over a
//! criterion bench of the same name, so when `bench broker` becomes the
//! side-by-side broker comparison, the criterion bench of the broker core
//! should be renamed (e.g. `broker-core`).

use crate::util::{self, err, Result};

/// A benchmark that is not a criterion bench: its name, what it measures,
/// and its runner, which gets the arguments after the name.
pub struct SystemBench {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&[String]) -> Result<()>,
}

/// None yet: the runtime issue adds `broker` here.
pub const SYSTEM_BENCHES: &[SystemBench] = &[];

/// The criterion benches present: benches/benches/*.rs file stems.
pub fn criterion_benches() -> Result<Vec<String>> {
    let dir = util::repo_root().join("benches/benches");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = util::files_with_ext(&dir, "rs")?
        .iter()
        .filter(|p| p.parent() == Some(dir.as_path()))
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
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
            .args(["bench", "-p", "sansmq-benches", "--bench", name, "--"])
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
