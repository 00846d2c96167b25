//! `cargo xtask fuzz <target>|all --seconds N`: run cargo-fuzz targets on
//! stable Rust and report corpus size, executions and crashes.
//!
//! cargo-fuzz passes nightly-only flags (`-Zsanitizer=address`, sancov
//! passes) to rustc. The machine has stable Rust only, so we set
//! `RUSTC_BOOTSTRAP=1`, which makes a stable compiler accept them. That is
//! fine for a fuzz build that never ships; it is never set for the workspace.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::util::{self, err, Result};

/// The cargo-fuzz version installed when missing; pinned so a new release
/// (with a newer minimum Rust) cannot break a fresh machine.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Sanitizer for fuzz builds. AddressSanitizer builds and runs on stable with
/// `RUSTC_BOOTSTRAP=1` here (checked on Rust 1.95, x86_64 Linux); mqtt-core
/// has no unsafe code, but its dependencies (bytes) do.
const DEFAULT_SANITIZER: &str = "address";

/// Options of one fuzz invocation.
#[derive(Debug, Clone)]
pub struct FuzzOptions {
    pub seconds: u64,
    pub sanitizer: String,
    /// Hide libFuzzer's per-input `NEW`/`REDUCE` lines (CI logs).
    pub quiet: bool,
}

impl Default for FuzzOptions {
    fn default() -> Self {
        Self {
            seconds: 60,
            sanitizer: DEFAULT_SANITIZER.to_owned(),
            quiet: false,
        }
    }
}

/// What one run did, from libFuzzer's final statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FuzzStats {
    pub execs: Option<u64>,
    pub execs_per_sec: Option<u64>,
    pub new_units: Option<u64>,
    pub peak_rss_mb: Option<u64>,
    pub coverage: Option<u64>,
    /// Inputs in libFuzzer's in-memory corpus at the end (seeds included).
    pub corpus_inputs: Option<u64>,
    /// Where libFuzzer saved a crashing (or timing out, or leaking) input.
    pub artifact: Option<String>,
}

/// The targets declared in fuzz/Cargo.toml (`[[bin]]` names), in order.
pub fn targets() -> Result<Vec<String>> {
    let manifest_path = util::repo_root().join("fuzz/Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)
        .map_err(|e| err!("cannot read {}: {e}", manifest_path.display()))?;
    Ok(parse_bin_names(&manifest))
}

fn parse_bin_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin {
            if let Some(v) = line.strip_prefix("name").map(str::trim_start) {
                if let Some(v) = v.strip_prefix('=') {
                    names.push(v.trim().trim_matches('"').to_owned());
                }
            }
        }
    }
    names
}

/// `cargo xtask fuzz <target>|all [--seconds N] [--sanitizer S]`.
pub fn run_cli(args: &[String]) -> Result<()> {
    let mut opts = FuzzOptions::default();
    let mut target = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                let v = it.next().ok_or("--seconds needs a number")?;
                opts.seconds = v
                    .parse()
                    .map_err(|_| err!("--seconds: `{v}` is not a whole number of seconds"))?;
            }
            "--sanitizer" => {
                opts.sanitizer = it.next().ok_or("--sanitizer needs a value")?.clone();
            }
            "--quiet" => opts.quiet = true,
            other if other.starts_with('-') => return Err(err!("fuzz: unknown option `{other}`")),
            other if target.is_none() => target = Some(other.to_owned()),
            other => return Err(err!("fuzz: unexpected argument `{other}`")),
        }
    }
    let all = targets()?;
    let target = target.ok_or_else(|| {
        err!(
            "usage: cargo xtask fuzz <target>|all [--seconds N]; targets: {}",
            all.join(", ")
        )
    })?;
    let chosen = if target == "all" {
        all
    } else if all.contains(&target) {
        vec![target]
    } else {
        return Err(err!(
            "unknown fuzz target `{target}`; targets: {}",
            all.join(", ")
        ));
    };
    let results = run_targets(&chosen, &opts)?;
    print_summary(&results);
    Ok(())
}

/// Build once, then run each target for `opts.seconds`; stops at the first
/// crash with an error naming the artifact.
pub fn run_targets(targets: &[String], opts: &FuzzOptions) -> Result<Vec<(String, FuzzStats)>> {
    ensure_cxx()?;
    let cargo_fuzz = ensure_cargo_fuzz()?;
    let rustc = util::output(Command::new("rustc").arg("--version")).unwrap_or_default();
    println!(
        "fuzz: {} with {} (RUSTC_BOOTSTRAP=1), sanitizer {}",
        util::display_cmd(&Command::new(&cargo_fuzz)),
        rustc.trim(),
        opts.sanitizer
    );
    // One build for every target: `cargo fuzz run` then finds them fresh.
    // cargo-fuzz's default profile: optimised, with debug assertions and
    // overflow checks on, so arithmetic overflow in the codec is a finding.
    let started = Instant::now();
    let mut build = cargo_fuzz_cmd(&cargo_fuzz);
    build.args(["build", "--sanitizer", &opts.sanitizer]);
    if let [only] = targets {
        build.arg(only);
    }
    util::run(&mut build).map_err(|e| err!("building the fuzz targets failed: {e}"))?;
    println!("fuzz: built in {}", util::human_duration(started.elapsed()));

    let mut results = Vec::new();
    for target in targets {
        let stats = run_one(&cargo_fuzz, target, opts)?;
        println!("fuzz: {}", stats_line(target, &stats));
        results.push((target.clone(), stats));
    }
    Ok(results)
}

fn print_summary(results: &[(String, FuzzStats)]) {
    if results.len() > 1 {
        println!("fuzz summary:");
        for (target, stats) in results {
            println!("  {}", stats_line(target, stats));
        }
    }
}

fn stats_line(target: &str, s: &FuzzStats) -> String {
    let n = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
    let corpus_dir = util::repo_root().join("fuzz/corpus").join(target);
    let (files, bytes) = dir_size(&corpus_dir);
    format!(
        "{target}: {} execs ({} exec/s), corpus {} inputs in memory, {files} files / {} KiB in {}, cov {}, new units {}, peak RSS {} MB, no crash",
        n(s.execs),
        n(s.execs_per_sec),
        n(s.corpus_inputs),
        bytes.div_ceil(1024),
        util::rel(&corpus_dir),
        n(s.coverage),
        n(s.new_units),
        n(s.peak_rss_mb),
    )
}

fn dir_size(dir: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    entries
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
}

fn run_one(cargo_fuzz: &Path, target: &str, opts: &FuzzOptions) -> Result<FuzzStats> {
    let root = util::repo_root();
    let corpus = root.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .map_err(|e| err!("cannot create {}: {e}", corpus.display()))?;
    let seeds = root.join("fuzz/seeds").join(target);
    let mut cmd = cargo_fuzz_cmd(cargo_fuzz);
    cmd.args(["run", "--sanitizer", &opts.sanitizer, target])
        .arg(&corpus);
    if seeds.is_dir() {
        // Read-only: libFuzzer writes new inputs to the first directory only.
        cmd.arg(&seeds);
    }
    cmd.arg("--").args([
        format!("-max_total_time={}", opts.seconds),
        // A hang is a finding too; without this one input could run 20 min.
        "-timeout=10".to_owned(),
        "-print_final_stats=1".to_owned(),
    ]);
    println!("fuzz: {}", util::display_cmd(&cmd));
    cmd.stderr(Stdio::piped());
    let shown = util::display_cmd(&cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| err!("could not start `{shown}`: {e}"))?;
    let mut stats = FuzzStats::default();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.map_err(|e| err!("reading the fuzzer's output: {e}"))?;
            parse_line(&line, &mut stats);
            if !(opts.quiet && is_noise(&line)) {
                eprintln!("{line}");
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| err!("waiting for `{shown}`: {e}"))?;
    if let Some(artifact) = &stats.artifact {
        let artifact = util::rel(Path::new(artifact));
        let bin = tools_bin()?;
        return Err(err!(
            "fuzz target `{target}` found a crash; input saved at {artifact}\n  \
             reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run {target} {artifact}\n  \
             minimize:  RUSTC_BOOTSTRAP=1 cargo fuzz tmin {target} {artifact}\n  \
             (cargo-fuzz is in {})",
            bin.display()
        ));
    }
    if !status.success() {
        return Err(err!("`{shown}` failed ({status}) without saving an input"));
    }
    if stats.execs.is_none() {
        return Err(err!(
            "`{shown}` ended without libFuzzer's final statistics; did it run?"
        ));
    }
    Ok(stats)
}

/// libFuzzer's per-input progress lines and its recommended dictionary,
/// hidden in CI to keep logs short.
fn is_noise(line: &str) -> bool {
    (line.starts_with('#') && matches!(line.split_whitespace().nth(1), Some("NEW" | "REDUCE")))
        || (line.starts_with('"') && line.contains("# Uses:"))
        || line.starts_with("###### ")
}

/// Pick the statistics out of one line of libFuzzer's output.
pub fn parse_line(line: &str, stats: &mut FuzzStats) {
    let number = |s: &str| s.trim().parse::<u64>().ok();
    if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
        stats.execs = number(v);
    } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
        stats.execs_per_sec = number(v);
    } else if let Some(v) = line.strip_prefix("stat::new_units_added:") {
        stats.new_units = number(v);
    } else if let Some(v) = line.strip_prefix("stat::peak_rss_mb:") {
        stats.peak_rss_mb = number(v);
    } else if let Some(at) = line.find("Test unit written to ") {
        let path = line[at + "Test unit written to ".len()..].trim();
        stats.artifact = Some(path.to_owned());
    } else if line.starts_with('#') {
        // `#1234	DONE   cov: 321 ft: 654 corp: 45/1234b lim: 4 exec/s: 0 rss: 40Mb`
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            match w {
                "cov:" => stats.coverage = words.next().and_then(number),
                "corp:" => {
                    stats.corpus_inputs = words
                        .next()
                        .and_then(|v| v.split('/').next())
                        .and_then(number);
                }
                _ => {}
            }
        }
    }
}

/// `$HOME/.cache/sansmq-tools/bin`, where xtask installs its tools.
fn tools_bin() -> Result<PathBuf> {
    Ok(tools_root()?.join("bin"))
}

fn tools_root() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").ok_or("HOME is not set; cannot find the tool cache")?;
    Ok(PathBuf::from(home).join(".cache/sansmq-tools"))
}

/// libfuzzer-sys compiles libFuzzer's C++ sources: make sure a C++ compiler
/// exists, installing Debian's g++ when we can (CI runs as root).
fn ensure_cxx() -> Result<()> {
    let works = |program: &str| {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    if works(&cxx) {
        return Ok(());
    }
    println!("fuzz: no C++ compiler (`{cxx}`) found; installing g++ with apt-get");
    util::run(Command::new("apt-get").args(["install", "-y", "--no-install-recommends", "g++"]))
        .or_else(|_| {
            util::run(Command::new("apt-get").arg("update"))?;
            util::run(Command::new("apt-get").args([
                "install",
                "-y",
                "--no-install-recommends",
                "g++",
            ]))
        })
        .map_err(|e| err!("libFuzzer needs a C++ compiler and installing g++ failed: {e}"))?;
    if works(&cxx) {
        Ok(())
    } else {
        Err(err!("installed g++ but `{cxx} --version` still fails"))
    }
}

/// The cargo-fuzz binary, installed into the tool cache if missing.
fn ensure_cargo_fuzz() -> Result<PathBuf> {
    let bin = tools_bin()?.join("cargo-fuzz");
    if bin.is_file() {
        return Ok(bin);
    }
    let root = tools_root()?;
    println!(
        "fuzz: cargo-fuzz is missing from {}; installing {CARGO_FUZZ_VERSION} (about a minute)",
        root.join("bin").display()
    );
    util::run(
        util::cargo()
            .args([
                "install",
                "cargo-fuzz",
                "--locked",
                "--version",
                CARGO_FUZZ_VERSION,
            ])
            .arg("--root")
            .arg(&root),
    )
    .map_err(|e| err!("installing cargo-fuzz failed: {e}"))?;
    if !bin.is_file() {
        return Err(err!(
            "cargo install finished but {} does not exist",
            bin.display()
        ));
    }
    Ok(bin)
}

/// `cargo fuzz ...` in the repository root with cargo-fuzz on PATH and
/// `RUSTC_BOOTSTRAP=1` (see the module docs). The target directory is
/// cargo-fuzz's default (fuzz/target) unless CARGO_TARGET_DIR is set.
fn cargo_fuzz_cmd(cargo_fuzz: &Path) -> Command {
    let mut cmd = util::cargo();
    cmd.arg("fuzz").env("RUSTC_BOOTSTRAP", "1");
    if let Some(dir) = cargo_fuzz.parent() {
        let mut paths = vec![dir.to_path_buf()];
        if let Some(old) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&old));
        }
        if let Ok(joined) = std::env::join_paths(paths) {
            cmd.env("PATH", joined);
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bin_names() {
        let manifest = "[package]\nname = \"sansmq-fuzz\"\n[lib]\nname = \"x\"\n\
                        [[bin]]\nname = \"decode_v3\"\npath = \"a\"\n[[bin]]\nname=\"roundtrip\"\n";
        assert_eq!(parse_bin_names(manifest), vec!["decode_v3", "roundtrip"]);
    }

    #[test]
    fn parses_libfuzzer_output() {
        let mut s = FuzzStats::default();
        for line in [
            "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb",
            "#88817\tDONE   cov: 321 ft: 654 corp: 45/1234b lim: 4 exec/s: 2960 rss: 40Mb",
            "Done 88817 runs in 31 second(s)",
            "stat::number_of_executed_units: 88817",
            "stat::average_exec_per_sec:     2865",
            "stat::new_units_added:          44",
            "stat::slowest_unit_time_sec:    0",
            "stat::peak_rss_mb:              40",
        ] {
            parse_line(line, &mut s);
        }
        assert_eq!(
            s,
            FuzzStats {
                execs: Some(88817),
                execs_per_sec: Some(2865),
                new_units: Some(44),
                peak_rss_mb: Some(40),
                coverage: Some(321),
                corpus_inputs: Some(45),
                artifact: None,
            }
        );
        parse_line(
            "artifact_prefix='/r/fuzz/artifacts/decode_v3/'; Test unit written to /r/fuzz/artifacts/decode_v3/crash-da39a3ee",
            &mut s,
        );
        assert_eq!(
            s.artifact.as_deref(),
            Some("/r/fuzz/artifacts/decode_v3/crash-da39a3ee")
        );
        assert!(is_noise("#123\tNEW    cov: 1 ft: 2 corp: 3/4b"));
        assert!(!is_noise("#123\tDONE   cov: 1 ft: 2 corp: 3/4b"));
        assert!(is_noise("\"\\377\\025\" # Uses: 6"));
        assert!(is_noise("###### End of recommended dictionary. ######"));
        assert!(!is_noise("stat::peak_rss_mb:              40"));
    }
}
