//! `cargo xtask bench broker`: the `sansmq` broker side by side with
//! Mosquitto (and rumqttd with `--peers mosquitto,rumqttd`) on loopback.
//!
//! Every run starts a FRESH broker on a free loopback port (fd limit raised
//! to the hard limit), samples its RSS and CPU from /proc, runs one
//! `sansmq bench ... --json` load against it, samples again and stops it.
//! Each figure is the median of `--runs` runs (3). The table goes to stdout
//! and to target/bench-broker.md.
//!
//! The load generator runs on the same machine: its own CPU time is in the
//! table, so a run where it, not the broker, was the bottleneck shows.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench_util::{
    self, parse_value, summary_json, tail, wait_output, wait_ready, KillOnDrop, Ready,
};
use crate::util::{self, err, Result};

const USAGE: &str = "\
usage: cargo xtask bench broker [--peers mosquitto[,rumqttd]] [--runs N]
                                [--quick] [--duration SECS] [--only NAME,...]
                                [--runtime smol|std] [--sansmq PATH]
                                [--config FILE]

  --peers     brokers besides sansmq (default: mosquitto)
  --runs      runs per figure; each figure is the median (default 3)
  --quick     a smoke run: 1 run, 1 s loads, 1,000 idle connections
  --duration  seconds of load per run (default 5)
  --runtime   passed to `sansmq start`
  --sansmq    use this sansmq binary (broker and load generator) instead
              of building one (compare two builds, or a tree that does not
              build right now)
  --config    pass this config file to `sansmq start` (compare settings;
              --bind/--port still come from the runner)
  --only      scenarios to run (default: all): ";

#[derive(Debug, Clone)]
struct Options {
    peers: Vec<Broker>,
    runs: usize,
    quick: bool,
    duration: f64,
    only: Option<Vec<String>>,
    runtime: Option<String>,
    sansmq: Option<PathBuf>,
    config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broker {
    Sansmq,
    Mosquitto,
    Rumqttd,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Sansmq => "sansmq",
            Broker::Mosquitto => "mosquitto",
            Broker::Rumqttd => "rumqttd",
        }
    }
}

/// What a scenario's rows show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// As fast as possible: messages/s received.
    Throughput,
    /// At a fixed rate: latency percentiles.
    Latency,
    /// Idle connections: memory per connection and connect rate.
    Idle,
}

struct Scenario {
    name: &'static str,
    about: &'static str,
    kind: Kind,
    /// `sansmq bench` arguments (split on spaces), before the
    /// port/duration/json ones the runner adds.
    args: &'static str,
    /// Deliveries per publish (subscribers matching each topic).
    fanout: f64,
}

/// 100 publishers or subscribers per side, 64-byte payloads. The
/// throughput scenarios publish as fast as possible (QoS 1: within a
/// 64-message window per publisher), the latency ones at a fixed rate.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "fan-in-q0",
        about: "fan-in QoS 0: 100 publishers -> 1 subscriber on bench/#",
        kind: Kind::Throughput,
        args: "pubsub -c 100 --subs 1 -q 0 --topic bench/%i --sub-topic bench/#",
        fanout: 1.0,
    },
    Scenario {
        name: "fan-in-q1",
        about: "fan-in QoS 1: 100 publishers -> 1 subscriber on bench/#",
        kind: Kind::Throughput,
        args: "pubsub -c 100 --subs 1 -q 1 --topic bench/%i --sub-topic bench/#",
        fanout: 1.0,
    },
    Scenario {
        name: "fan-out-q0",
        about: "fan-out QoS 0: 1 publisher -> 100 subscribers of bench/x",
        kind: Kind::Throughput,
        args: "pubsub -c 1 --subs 100 -q 0 --topic bench/x --sub-topic bench/x",
        fanout: 100.0,
    },
    Scenario {
        name: "pairs-q0",
        about: "100 pub/sub pairs QoS 0 (bench/<i> -> bench/<i>)",
        kind: Kind::Throughput,
        args: "pubsub -c 100 --subs 100 -q 0 --topic bench/%i --sub-topic bench/%i",
        fanout: 1.0,
    },
    Scenario {
        name: "pairs-q1",
        about: "100 pub/sub pairs QoS 1",
        kind: Kind::Throughput,
        args: "pubsub -c 100 --subs 100 -q 1 --topic bench/%i --sub-topic bench/%i",
        fanout: 1.0,
    },
    Scenario {
        name: "latency-10k",
        about: "latency at 10,000 msg/s total: 100 pairs QoS 1",
        kind: Kind::Latency,
        args:
            "pubsub -c 100 --subs 100 -q 1 --topic bench/%i --sub-topic bench/%i --total-rate 10000",
        fanout: 1.0,
    },
    Scenario {
        name: "latency-20k",
        about: "latency at 20,000 msg/s total: 100 pairs QoS 1",
        kind: Kind::Latency,
        args:
            "pubsub -c 100 --subs 100 -q 1 --topic bench/%i --sub-topic bench/%i --total-rate 20000",
        fanout: 1.0,
    },
    Scenario {
        name: "conn-10k",
        about: "10,000 idle connections (keep alive 300 s)",
        kind: Kind::Idle,
        args: "conn -c 10000 --connect-concurrency 200",
        fanout: 0.0,
    },
];

pub fn run_cli(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}{}", scenario_names());
        return Ok(());
    }
    let opts = parse(args)?;
    let started = Instant::now();
    let sansmq = match &opts.sansmq {
        Some(path) if path.is_file() => path.clone(),
        Some(path) => return Err(err!("--sansmq: no file at {}", path.display())),
        None => bench_util::build_sansmq("bench broker")?,
    };
    let mut brokers = vec![Broker::Sansmq];
    for peer in &opts.peers {
        match peer {
            Broker::Mosquitto => crate::ci::system_tools()?,
            Broker::Rumqttd => {
                rumqttd_bin()?;
            }
            Broker::Sansmq => continue,
        }
        brokers.push(*peer);
    }
    let scenarios: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| {
            opts.only
                .as_ref()
                .is_none_or(|o| o.iter().any(|n| n == s.name))
        })
        .collect();
    if scenarios.is_empty() {
        return Err(err!(
            "--only matches no scenario; scenarios: {}",
            scenario_names()
        ));
    }
    let work = util::repo_root().join("target/bench-broker");
    std::fs::create_dir_all(&work).map_err(|e| err!("cannot create {}: {e}", work.display()))?;
    let ticks = clock_ticks();

    // results[scenario][broker] = one Sample per run.
    let mut results: BTreeMap<&str, BTreeMap<&str, Vec<Sample>>> = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();
    for scenario in &scenarios {
        println!("bench broker: {} ({})", scenario.name, scenario.about);
        for &broker in &brokers {
            for run in 1..=opts.runs {
                let outcome = run_once(&opts, &sansmq, broker, scenario, &work, ticks);
                match outcome {
                    Ok(sample) => {
                        println!(
                            "  {:<9} run {run}: {}",
                            broker.name(),
                            sample.one_line(scenario.kind)
                        );
                        if sample.errors > 0.0 {
                            notes.push(format!(
                                "{} on {} run {run}: {} errors ({})",
                                scenario.name,
                                broker.name(),
                                sample.errors,
                                sample.error_kinds
                            ));
                        }
                        results
                            .entry(scenario.name)
                            .or_default()
                            .entry(broker.name())
                            .or_default()
                            .push(sample);
                    }
                    Err(e) => {
                        println!("  {:<9} run {run}: FAILED: {e}", broker.name());
                        notes.push(format!(
                            "{} on {} run {run} failed: {e}",
                            scenario.name,
                            broker.name()
                        ));
                    }
                }
            }
        }
    }

    let table = render(
        &opts,
        &brokers,
        &scenarios,
        &results,
        &notes,
        started.elapsed(),
    );
    println!("\n{table}");
    let out = util::repo_root().join("target/bench-broker.md");
    std::fs::write(&out, &table).map_err(|e| err!("cannot write {}: {e}", out.display()))?;
    println!("written to {}", util::rel(&out));
    Ok(())
}

fn scenario_names() -> String {
    SCENARIOS
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse(args: &[String]) -> Result<Options> {
    let mut opts = Options {
        peers: vec![Broker::Mosquitto],
        runs: 3,
        quick: false,
        duration: 5.0,
        only: None,
        runtime: None,
        sansmq: None,
        config: None,
    };
    let mut duration = None;
    let mut runs = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| err!("bench broker: {name} needs a value"))
        };
        match arg.as_str() {
            "--peers" => {
                opts.peers = Vec::new();
                for p in value("--peers")?.split(',').filter(|p| !p.is_empty()) {
                    opts.peers.push(match p {
                        "mosquitto" => Broker::Mosquitto,
                        "rumqttd" => Broker::Rumqttd,
                        other => {
                            return Err(err!(
                                "bench broker: unknown peer `{other}` (mosquitto, rumqttd)"
                            ))
                        }
                    });
                }
            }
            "--runs" => {
                let v = value("--runs")?;
                runs = Some(parse_value(
                    "--runs",
                    &v,
                    |n: &usize| *n >= 1,
                    "a positive integer",
                )?);
            }
            "--duration" => {
                let v = value("--duration")?;
                let ok = |d: &f64| *d > 0.0 && *d <= 600.0;
                duration = Some(parse_value("--duration", &v, ok, "seconds (0 to 600)")?);
            }
            "--quick" => opts.quick = true,
            "--only" => opts.only = Some(value("--only")?.split(',').map(str::to_owned).collect()),
            "--runtime" => opts.runtime = Some(value("--runtime")?),
            "--sansmq" => opts.sansmq = Some(PathBuf::from(value("--sansmq")?)),
            "--config" => {
                let path = PathBuf::from(value("--config")?);
                if !path.is_file() {
                    return Err(err!(
                        "bench broker: --config: no file at {}",
                        path.display()
                    ));
                }
                opts.config = Some(path);
            }
            other => {
                return Err(err!(
                    "bench broker: unexpected argument `{other}`\n{USAGE}{}",
                    scenario_names()
                ))
            }
        }
    }
    if opts.quick {
        opts.runs = 1;
        opts.duration = 1.0;
    }
    if let Some(r) = runs {
        opts.runs = r;
    }
    if let Some(d) = duration {
        opts.duration = d;
    }
    Ok(opts)
}

/// rumqttd from ~/.cache/sansmq-tools, installed there on first use.
fn rumqttd_bin() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let root = Path::new(&home).join(".cache/sansmq-tools");
    let bin = root.join("bin/rumqttd");
    if bin.is_file() {
        return Ok(bin);
    }
    println!("bench broker: installing rumqttd into {}", root.display());
    let install = |locked: bool| {
        let mut cmd = util::cargo();
        cmd.args(["install", "rumqttd"]);
        if locked {
            cmd.arg("--locked");
        }
        cmd.arg("--root").arg(&root);
        util::run(&mut cmd)
    };
    // rumqttd 0.20's lock file pins metrics 0.22.1, which current compilers
    // reject (rust-lang/rust#141402); unlocked it resolves a fixed release.
    install(true).or_else(|e| {
        println!("bench broker: `cargo install rumqttd --locked` failed ({e}); retrying without --locked");
        install(false)
    })?;
    if !bin.is_file() {
        return Err(err!("{} is missing after cargo install", bin.display()));
    }
    Ok(bin)
}

/// Measurements of one run.
#[derive(Debug, Clone, Default)]
struct Sample {
    sent_rate: f64,
    recv_rate: f64,
    /// Deliveries missing: 1 - received / (sent x fanout), in %.
    loss_pct: f64,
    p50: f64,
    p99: f64,
    max: f64,
    errors: f64,
    /// Which errors, when there were some.
    error_kinds: String,
    bench_cpu_pct: f64,
    broker_cpu_pct: f64,
    broker_us_per_msg: f64,
    connect_rate: f64,
    connected: f64,
    rss_kib_per_conn: f64,
    rss_before_mib: f64,
}

impl Sample {
    fn one_line(&self, kind: Kind) -> String {
        match kind {
            Kind::Idle => format!(
                "{:.0} connected at {:.0}/s, {:.1} KiB RSS per connection (from {:.1} MiB), broker cpu {:.0} %",
                self.connected, self.connect_rate, self.rss_kib_per_conn, self.rss_before_mib, self.broker_cpu_pct
            ),
            _ => format!(
                "sent {:.0}/s, received {:.0}/s ({:.1} % not delivered), p50 {:.0} µs, p99 {:.0} µs, broker {:.2} µs/msg ({:.0} % cpu), bench cpu {:.0} %",
                self.sent_rate,
                self.recv_rate,
                self.loss_pct,
                self.p50,
                self.p99,
                self.broker_us_per_msg,
                self.broker_cpu_pct,
                self.bench_cpu_pct
            ),
        }
    }
}

/// A broker process, killed on drop if still running.
struct Running {
    child: KillOnDrop,
    port: u16,
}

/// A started broker that is still alive after settling, with its RSS then.
/// The free port is chosen before the broker binds it, so another process
/// may take it in between (the broker then exits while our connect reached
/// the other one): try again on a new port, three times.
fn start_settled(
    opts: &Options,
    sansmq: &Path,
    broker: Broker,
    work: &Path,
) -> Result<(Running, u64)> {
    let mut last = None;
    for _ in 0..3 {
        let mut running = start_broker(opts, sansmq, broker, work)?;
        // Let the broker settle after start-up before the baseline.
        std::thread::sleep(Duration::from_millis(200));
        let child = running.child.child()?;
        let alive = matches!(child.try_wait(), Ok(None));
        match rss_kib(child.id(), "VmRSS:") {
            Ok(rss) if alive => return Ok((running, rss)),
            Ok(_) => last = Some(err!("{} exited right after start", broker.name())),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| err!("{} did not start", broker.name())))
}

fn start_broker(opts: &Options, sansmq: &Path, broker: Broker, work: &Path) -> Result<Running> {
    let port = bench_util::free_tcp_port()?;
    let log = work.join(format!("{}.log", broker.name()));
    let (program, args): (PathBuf, Vec<String>) = match broker {
        Broker::Sansmq => {
            let mut args = vec![
                "start".into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--log-level".into(),
                "warn".into(),
            ];
            if let Some(rt) = &opts.runtime {
                args.push("--runtime".into());
                args.push(rt.clone());
            }
            if let Some(config) = &opts.config {
                args.push("--config".into());
                args.push(config.display().to_string());
            }
            (sansmq.to_path_buf(), args)
        }
        Broker::Mosquitto => {
            let conf = work.join("mosquitto.conf");
            // max_connections -1: no limit (the fd limit is raised below);
            // the rest are Mosquitto's defaults, stated.
            let text = format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n"
            );
            std::fs::write(&conf, text)
                .map_err(|e| err!("cannot write {}: {e}", conf.display()))?;
            let program = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from("mosquitto"));
            (program, vec!["-c".into(), conf.display().to_string()])
        }
        Broker::Rumqttd => {
            let conf = work.join("rumqttd.toml");
            std::fs::write(&conf, rumqttd_config(port))
                .map_err(|e| err!("cannot write {}: {e}", conf.display()))?;
            (
                rumqttd_bin()?,
                vec!["--config".into(), conf.display().to_string(), "-q".into()],
            )
        }
    };
    let (log_file, log_err) = bench_util::log_files(&log)?;
    // The soft fd limit goes up to the hard one before exec (10k idle
    // connections need more than the usual 1,024).
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; exec \"$0\" \"$@\"")
        .arg(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
    let child = cmd
        .spawn()
        .map_err(|e| err!("cannot start {}: {e}", program.display()))?;
    let mut child = KillOnDrop::new(child);
    let listening = || TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok();
    match wait_ready(child.child()?, Duration::from_secs(15), listening) {
        Ready::Yes => Ok(Running { child, port }),
        Ready::Exited(status) => {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Err(err!(
                "{} exited at start ({status}); log {}:\n{}",
                broker.name(),
                log.display(),
                tail(&text, 20)
            ))
        }
        Ready::TimedOut => Err(err!(
            "{} did not listen on port {port} within 15 s (log {})",
            broker.name(),
            log.display()
        )),
    }
}

/// rumqttd on loopback only: v4 and v5 listeners on the same port would
/// clash, so 3.1.1 clients get `port` and nothing else listens. Limits are
/// raised to what the scenarios need (connections, inflight, packet size).
fn rumqttd_config(port: u16) -> String {
    format!(
        r#"id = 0

[router]
id = 0
max_connections = 100010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 1048576
    max_inflight_count = 100
    dynamic_filters = true
"#
    )
}

/// /proc/<pid>/stat utime + stime, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| err!("cannot read /proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which may contain spaces) in ")".
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let get = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    match (get(14), get(15)) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => Err("malformed /proc stat".into()),
    }
}

/// VmRSS from /proc/<pid>/status, in KiB.
fn rss_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| err!("cannot read /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .ok_or_else(|| err!("no {field} in /proc/{pid}/status"))
}

fn clock_ticks() -> f64 {
    util::output(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

fn run_once(
    opts: &Options,
    sansmq: &Path,
    broker: Broker,
    scenario: &Scenario,
    work: &Path,
    ticks: f64,
) -> Result<Sample> {
    let (mut running, rss0) = start_settled(opts, sansmq, broker, work)?;
    let pid = running.child.child()?.id();
    let cpu0 = cpu_ticks(pid)?;
    let t0 = Instant::now();

    let mut args: Vec<String> = vec!["bench".into()];
    let mut scenario_args: Vec<String> = scenario
        .args
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if opts.quick && scenario.kind == Kind::Idle {
        // 1,000 connections in a smoke run.
        if let Some(i) = scenario_args.iter().position(|a| a == "-c") {
            scenario_args[i + 1] = "1000".into();
        }
    }
    args.push(scenario_args.remove(0));
    args.extend([
        "--port".into(),
        running.port.to_string(),
        "--duration".into(),
        format!("{}", opts.duration),
        "--json".into(),
        "--quiet".into(),
        "--client-id-prefix".into(),
        format!("{}-", scenario.name),
    ]);
    if opts.peers.contains(&Broker::Rumqttd) {
        // The generated rumqttd config has a 3.1.1 listener only (its 5.0
        // support is partial); every broker then gets 3.1.1, so the
        // columns compare the same protocol.
        args.extend(["--version".into(), "4".into()]);
    }
    args.extend(scenario_args);
    let mut bench = Command::new(sansmq);
    bench
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = util::display_cmd(&bench);
    let child = bench
        .spawn()
        .map_err(|e| err!("cannot start `{shown}`: {e}"))?;
    // The load stops by itself; this bound only catches a hang.
    let limit = Duration::from_secs_f64(opts.duration + 90.0);
    let (out, hung) = wait_output(child, limit)?;
    let peak = rss_kib(pid, "VmHWM:").unwrap_or(0);
    let cpu1 = cpu_ticks(pid)?;
    let wall = t0.elapsed().as_secs_f64();
    drop(running);
    if hung {
        return Err(err!(
            "`{shown}` did not finish within {limit:?} and was killed"
        ));
    }
    let m = summary_json(&out, &format!("`{shown}`"))?;
    let f = |k: &str| m.get(k).copied().unwrap_or(0.0);
    let broker_cpu = (cpu1.saturating_sub(cpu0)) as f64 / ticks;
    let received = f("received");
    let connected = f("connected");
    Ok(Sample {
        sent_rate: f("sent_rate"),
        recv_rate: f("recv_rate"),
        loss_pct: if f("sent") * scenario.fanout > 0.0 {
            100.0 * (1.0 - f("received") / (f("sent") * scenario.fanout)).max(0.0)
        } else {
            0.0
        },
        p50: f("lat_p50_us"),
        p99: f("lat_p99_us"),
        max: f("lat_max_us"),
        errors: f("errors"),
        error_kinds: format!(
            "connect {}, subscribe {}, lost {}, publish {}",
            f("connect_errors"),
            f("subscribe_errors"),
            f("conn_lost"),
            f("publish_errors")
        ),
        bench_cpu_pct: 100.0 * f("cpu_s") / f("wall_s").max(1e-9),
        broker_cpu_pct: 100.0 * broker_cpu / wall.max(1e-9),
        broker_us_per_msg: if received > 0.0 {
            broker_cpu * 1e6 / received
        } else {
            0.0
        },
        connect_rate: f("connect_rate"),
        connected,
        rss_kib_per_conn: if connected > 0.0 {
            peak.saturating_sub(rss0) as f64 / connected
        } else {
            0.0
        },
        rss_before_mib: rss0 as f64 / 1024.0,
    })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The rows of one scenario: (label, how to read it from a sample, decimals).
type Row = (&'static str, fn(&Sample) -> f64, usize);

fn rows(kind: Kind) -> Vec<Row> {
    match kind {
        Kind::Throughput => vec![
            ("received msg/s (higher is better)", |s| s.recv_rate, 0),
            ("sent msg/s", |s| s.sent_rate, 0),
            (
                "not delivered % (dropped or still queued at the end)",
                |s| s.loss_pct,
                1,
            ),
            ("latency p50 µs", |s| s.p50, 0),
            ("latency p99 µs", |s| s.p99, 0),
            (
                "broker CPU µs/msg received (lower is better)",
                |s| s.broker_us_per_msg,
                2,
            ),
            ("broker CPU % of one core", |s| s.broker_cpu_pct, 0),
            ("load generator CPU %", |s| s.bench_cpu_pct, 0),
        ],
        Kind::Latency => vec![
            ("latency p50 µs (lower is better)", |s| s.p50, 0),
            ("latency p99 µs (lower is better)", |s| s.p99, 0),
            ("latency max µs", |s| s.max, 0),
            ("received msg/s", |s| s.recv_rate, 0),
            (
                "not delivered % (dropped or still queued at the end)",
                |s| s.loss_pct,
                1,
            ),
            (
                "broker CPU µs/msg received (lower is better)",
                |s| s.broker_us_per_msg,
                2,
            ),
            ("load generator CPU %", |s| s.bench_cpu_pct, 0),
        ],
        Kind::Idle => vec![
            ("connected", |s| s.connected, 0),
            (
                "broker RSS KiB per idle connection (lower is better)",
                |s| s.rss_kib_per_conn,
                1,
            ),
            ("broker RSS MiB before", |s| s.rss_before_mib, 1),
            (
                "connects/s (first attempt to last CONNACK)",
                |s| s.connect_rate,
                0,
            ),
            ("broker CPU % of one core", |s| s.broker_cpu_pct, 0),
        ],
    }
}

fn render(
    opts: &Options,
    brokers: &[Broker],
    scenarios: &[&Scenario],
    results: &BTreeMap<&str, BTreeMap<&str, Vec<Sample>>>,
    notes: &[String],
    took: Duration,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "# cargo xtask bench broker\n");
    let _ = writeln!(
        s,
        "Median of {} run(s), {} s of load each, loopback, {} CPUs shared by the broker and the load generator (`sansmq bench`); 64-byte payloads; MQTT {}. Took {}.{}{}\n",
        opts.runs,
        opts.duration,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if brokers.contains(&Broker::Rumqttd) {
            "3.1.1 (rumqttd listens for 3.1.1 only)"
        } else {
            "5"
        },
        util::human_duration(took),
        opts.runtime.as_ref().map(|r| format!(" sansmq runtime: {r}.")).unwrap_or_default(),
        opts.config
            .as_ref()
            .map(|c| format!(" sansmq config: {}.", c.display()))
            .unwrap_or_default(),
    );
    let mut header = String::from("| scenario | metric |");
    let mut rule = String::from("| --- | --- |");
    for b in brokers {
        let _ = write!(header, " {} |", b.name());
        rule.push_str(" ---: |");
    }
    for b in brokers.iter().skip(1) {
        let _ = write!(header, " sansmq / {} |", b.name());
        rule.push_str(" ---: |");
    }
    let _ = writeln!(s, "{header}\n{rule}");
    for sc in scenarios {
        for (label, get, decimals) in rows(sc.kind) {
            let mut line = format!("| {} | {label} |", sc.name);
            let values: Vec<Option<f64>> = brokers
                .iter()
                .map(|b| {
                    results
                        .get(sc.name)
                        .and_then(|m| m.get(b.name()))
                        .and_then(|v| median(v.iter().map(get).collect()))
                })
                .collect();
            for v in &values {
                match v {
                    Some(v) => {
                        let _ = write!(line, " {v:.decimals$} |");
                    }
                    None => line.push_str(" n/a |"),
                }
            }
            for v in values.iter().skip(1) {
                match (values[0], v) {
                    (Some(a), Some(b)) if *b > 0.0 => {
                        let _ = write!(line, " {:.2} |", a / b);
                    }
                    _ => line.push_str(" n/a |"),
                }
            }
            let _ = writeln!(s, "{line}");
        }
    }
    let _ = writeln!(s, "\nScenarios:\n");
    for sc in scenarios {
        let _ = writeln!(
            s,
            "- `{}`: {}; `sansmq bench {}`",
            sc.name, sc.about, sc.args
        );
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "\nNotes:\n");
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn quick_means_one_short_run() {
        let o = parse(&["--quick".to_owned()]).expect("parses");
        assert_eq!((o.runs, o.duration), (1, 1.0));
        let o = parse(&[
            "--peers".into(),
            "mosquitto,rumqttd".into(),
            "--runs".into(),
            "5".into(),
        ])
        .expect("parses");
        assert_eq!(o.peers, vec![Broker::Mosquitto, Broker::Rumqttd]);
        assert_eq!(o.runs, 5);
        assert!(parse(&["--peers".into(), "emqx".into()]).is_err());
    }
}
