//! `cargo xtask ci`: everything CI checks, in order, failing fast.

use std::time::{Duration, Instant};

use crate::util::{self, err, Result};
use crate::{arch, fuzz};

/// Total time for the fuzz smoke run, split evenly over the targets.
const FUZZ_SMOKE_SECONDS: u64 = 30;

struct Options {
    fuzz: bool,
    fuzz_seconds: u64,
}

pub fn run_cli(args: &[String]) -> Result<()> {
    let mut opts = Options {
        fuzz: true,
        fuzz_seconds: FUZZ_SMOKE_SECONDS,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--no-fuzz" => opts.fuzz = false,
            "--fuzz-seconds" => {
                let v = it.next().ok_or("--fuzz-seconds needs a number")?;
                opts.fuzz_seconds = v
                    .parse()
                    .map_err(|_| err!("--fuzz-seconds: `{v}` is not a whole number"))?;
            }
            other => return Err(err!("ci: unknown argument `{other}` (try --no-fuzz)")),
        }
    }
    run(&opts)
}

type StepFn = Box<dyn Fn() -> Result<()>>;

fn run(opts: &Options) -> Result<()> {
    preflight()?;
    system_tools()?;
    let mut steps: Vec<(&str, StepFn)> = vec![
        (
            "fmt",
            Box::new(|| util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))),
        ),
        (
            "clippy",
            Box::new(|| {
                util::run(util::cargo().args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]))
            }),
        ),
        ("arch", Box::new(arch::run)),
        (
            "test",
            Box::new(|| util::run(util::cargo().args(["test", "--workspace"]))),
        ),
    ];
    if opts.fuzz {
        let seconds = opts.fuzz_seconds;
        steps.push(("fuzz", Box::new(move || fuzz_smoke(seconds))));
    }

    let total = steps.len();
    let mut done: Vec<(&str, Duration)> = Vec::new();
    let started = Instant::now();
    for (i, (name, step)) in steps.iter().enumerate() {
        println!("\n==> ci [{}/{total}] {name}", i + 1);
        let t = Instant::now();
        let result = step();
        let took = t.elapsed();
        match result {
            Ok(()) => {
                println!(
                    "==> ci [{}/{total}] {name}: ok ({})",
                    i + 1,
                    util::human_duration(took)
                );
                done.push((name, took));
            }
            Err(e) => {
                print_summary(&done, Some((name, took)), started.elapsed());
                return Err(err!("ci step `{name}` failed: {e}"));
            }
        }
    }
    if !opts.fuzz {
        println!("\n(fuzz smoke run skipped: --no-fuzz)");
    }
    print_summary(&done, None, started.elapsed());
    Ok(())
}

fn print_summary(done: &[(&str, Duration)], failed: Option<(&str, Duration)>, total: Duration) {
    println!("\nci summary:");
    for (name, took) in done {
        println!("  ok      {name:<8} {}", util::human_duration(*took));
    }
    if let Some((name, took)) = failed {
        println!("  FAILED  {name:<8} {}", util::human_duration(took));
    }
    println!("  total            {}", util::human_duration(total));
}

/// Print the toolchain, and make sure rustfmt and clippy exist before the
/// first step, so a machine without them fails with a clear message.
fn preflight() -> Result<()> {
    let version = util::output(util::cargo().arg("--version"))?;
    println!("ci: {}", version.trim());
    for (component, subcommand) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        let present = util::cargo()
            .args([subcommand, "--version"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if present {
            continue;
        }
        println!("ci: `cargo {subcommand}` is missing; rustup component add {component}");
        util::run(std::process::Command::new("rustup").args(["component", "add", component]))
            .map_err(|e| err!("ci needs {component} and installing it failed: {e}"))?;
    }
    Ok(())
}

/// Programs the end-to-end tests run: Mosquitto's broker and clients
/// (interop), and `kill` from procps (signals to the `sansmq` process).
/// (program, Debian package that provides it)
const SYSTEM_TOOLS: [(&str, &str); 4] = [
    ("mosquitto", "mosquitto"),
    ("mosquitto_pub", "mosquitto-clients"),
    ("mosquitto_sub", "mosquitto-clients"),
    ("kill", "procps"),
];

/// Install whatever the end-to-end tests need and is missing, with apt-get
/// (sudo when not root). The tests never skip for a missing tool, so a
/// machine where this cannot work fails here, loudly, naming the package.
pub(crate) fn system_tools() -> Result<()> {
    let on_path = |program: &str| {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join(program).is_file())
        }) || std::path::Path::new("/usr/sbin").join(program).is_file()
    };
    let mut missing: Vec<&str> = SYSTEM_TOOLS
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| *package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    println!("ci: installing {} with apt-get", missing.join(", "));
    let is_root =
        util::output(std::process::Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0");
    let apt = |args: &[&str]| {
        let mut cmd = if is_root {
            std::process::Command::new("apt-get")
        } else {
            let mut c = std::process::Command::new("sudo");
            c.arg("apt-get");
            c
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        util::run(&mut cmd)
    };
    let installed = apt(&["update", "-q"]).and_then(|()| {
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(missing.iter().copied());
        apt(&args)
    });
    installed.map_err(|e| {
        err!(
            "the end-to-end tests need the Debian packages {} and installing them failed: {e}",
            missing.join(", ")
        )
    })?;
    if let Some((program, package)) = SYSTEM_TOOLS.iter().find(|(p, _)| !on_path(p)) {
        return Err(err!(
            "`{program}` is still missing after installing {package}"
        ));
    }
    Ok(())
}

/// Every fuzz target for a short while: catches a target that no longer
/// builds and shallow crashes, not deep ones.
fn fuzz_smoke(total_seconds: u64) -> Result<()> {
    let targets = fuzz::targets()?;
    if targets.is_empty() {
        return Err("fuzz/Cargo.toml declares no fuzz target".into());
    }
    let opts = fuzz::FuzzOptions {
        seconds: (total_seconds / targets.len() as u64).max(1),
        quiet: true,
        ..fuzz::FuzzOptions::default()
    };
    fuzz::run_targets(&targets, &opts).map(|_| ())
}
