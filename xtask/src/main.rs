//! `cargo xtask <command>`: the project's tooling (the `xtask` alias lives
//! in .cargo/config.toml). Std only, so it builds in seconds and still runs
//! when the code it checks does not compile.

mod arch;
mod bench;
mod bench_broker;
mod bench_quic;
mod bench_util;
mod ci;
mod fuzz;
mod sim;
mod util;

use std::process::ExitCode;

use util::{err, Result};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci [--no-fuzz] [--fuzz-seconds N]
        everything CI runs, in order, failing fast: fmt check, clippy -D
        warnings, the architecture check, cargo test --workspace, and a
        fuzz smoke run of every target (30 s in total)
  arch  the architecture check: mqtt-core stays sans-IO
  fuzz <target>|all [--seconds N] [--sanitizer address|none]
        run cargo-fuzz targets (installed on first use); fails on a crash
  fuzz-seeds
        regenerate the seed corpora in fuzz/seeds/ from the codec's encoder
  bench [<name> [-- <criterion args>]]
        run a benchmark; without a name, list them
  sim --seeds N [--start S]
        N random deterministic-simulator scenarios (seeds S..S+N); a
        failure prints its seed and the command that replays it

planned with later issues: interop";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let Some(command) = args.first() else {
        println!("{USAGE}");
        return Err("no command given".into());
    };
    let rest = &args[1..];
    match command.as_str() {
        "ci" => ci::run_cli(rest),
        "arch" => no_args("arch", rest).and_then(|()| arch::run()),
        "fuzz" => fuzz::run_cli(rest),
        "fuzz-seeds" => no_args("fuzz-seeds", rest).and_then(|()| fuzz_seeds()),
        "bench" => bench::run_cli(rest),
        "sim" => sim::run_cli(rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => {
            println!("{USAGE}");
            Err(err!("unknown command `{other}`"))
        }
    }
}

fn no_args(command: &str, rest: &[String]) -> Result<()> {
    match rest.first() {
        None => Ok(()),
        Some(arg) => Err(err!("{command}: unexpected argument `{arg}`")),
    }
}

/// The seed generator needs mqtt-core's encoder, which is behind the
/// `seeds` feature so the everyday xtask stays std-only (see Cargo.toml).
fn fuzz_seeds() -> Result<()> {
    let out = util::repo_root().join("fuzz/seeds");
    util::run(
        util::cargo()
            .args([
                "run",
                "--quiet",
                "-p",
                "xtask",
                "--features",
                "seeds",
                "--bin",
                "fuzz-seeds",
                "--",
            ])
            .arg(&out),
    )
}
