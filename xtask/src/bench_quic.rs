//! `cargo xtask bench quic`: an edge sansmq bridging to a cloud sansmq over
//! QUIC, side by side with the same bridge over TCP.
//!
//! For each transport: a FRESH cloud broker (TCP and QUIC listeners, the
//! Receive Maximum and inflight windows raised) and a FRESH edge broker
//! whose one bridge forwards `bench/#` at QoS 1 to the cloud over that
//! transport; once the edge logs the bridge connected, a `sansmq bench sub`
//! on the cloud (QoS 1, `bench/#`) and a `sansmq bench pub` on the edge
//! (QoS 1) run. Two loads per transport, each `--duration` long:
//!
//! - throughput: publishers as fast as their inflight windows allow;
//!   the figure is messages received at the cloud while publishing, per
//!   second (the subscriber stops with the publishers: what is still
//!   queued then shows as sent but not received);
//! - latency: a fixed total rate (`--rate`, 1,000 msg/s); p50/p99/max of
//!   publish-to-delivery time (the payload carries the send time; both
//!   ends read the same clock), the subscriber listening 5 s longer.
//!
//! First on loopback, then across two network namespaces joined by a veth
//! pair with `tc netem delay 50ms loss 2%` on both ends (100 ms RTT, 2%
//! loss each way), created and removed by this command (root needed). A
//! kernel without netem (`sch_netem`) refuses the qdisc: that part is
//! skipped and the output says so.
//!
//! The table goes to stdout and to target/bench-quic.md. Every process is
//! bounded in time and killed on the way out; the namespaces are deleted
//! even when a run fails.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::bench_util::{
    self, build_sansmq, free_tcp_port, log_files, parse_value, summary_json, tail, target_dir,
    wait_ready, KillOnDrop, Ready,
};
use crate::util::{self, err, Result};

const USAGE: &str = "\
usage: cargo xtask bench quic [--duration SECS] [--rate MSGS] [--clients N]
                              [--no-netem] [--sansmq PATH]

  --duration  seconds of load per run (default 10)
  --rate      total msg/s of the latency load (default 1000)
  --clients   publishers of the throughput load (default 4)
  --no-netem  loopback only (no network namespaces)
  --netns-without-netem
              the namespace runs without the netem qdisc (checks the
              plumbing on a kernel without netem; not a netem figure)
  --sansmq    use this sansmq binary instead of building one";

/// Names of the namespaces and veth ends this command creates.
const NS_EDGE: &str = "sansmq-bq-edge";
const NS_CLOUD: &str = "sansmq-bq-cloud";
const VETH_EDGE: &str = "sqbq-e";
const VETH_CLOUD: &str = "sqbq-c";
const IP_EDGE: &str = "10.77.0.1";
const IP_CLOUD: &str = "10.77.0.2";
const NETEM: &[&str] = &["delay", "50ms", "loss", "2%"];

#[derive(Debug, Clone)]
struct Options {
    duration: f64,
    rate: u64,
    clients: u64,
    netem: bool,
    /// Namespaces and veth without the qdisc (checks the plumbing where
    /// the kernel has no netem).
    netns_only: bool,
    sansmq: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BridgeTransport {
    Quic,
    Tcp,
}

impl BridgeTransport {
    fn name(self) -> &'static str {
        match self {
            BridgeTransport::Quic => "quic",
            BridgeTransport::Tcp => "tcp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Throughput,
    Latency,
}

/// Where the two brokers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Loopback,
    /// Edge and cloud in their own namespaces, joined by the veth pair
    /// (with netem when `true`).
    Netns(bool),
}

impl Place {
    fn label(self) -> &'static str {
        match self {
            Place::Loopback => "loopback",
            Place::Netns(true) => "netem 50ms 2%",
            Place::Netns(false) => "netns, no netem",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Edge,
    Cloud,
}

/// One load's figures.
#[derive(Debug, Clone, Default)]
struct Sample {
    sent: f64,
    received: f64,
    /// Received per second of publishing.
    recv_rate: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    conn_lost: f64,
}

pub fn run_cli(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    let sansmq = match &opts.sansmq {
        Some(p) => p.clone(),
        None => build_sansmq("bench quic")?,
    };
    let work = target_dir().join("bench-quic");
    std::fs::create_dir_all(&work).map_err(|e| err!("cannot create {}: {e}", work.display()))?;
    make_certs(&work)?;

    let mut results: Vec<(Place, BridgeTransport, Load, Result<Sample>)> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let run_place = |place: Place, results: &mut Vec<_>| {
        for transport in [BridgeTransport::Quic, BridgeTransport::Tcp] {
            for load in [Load::Throughput, Load::Latency] {
                println!(
                    "bench quic: {} bridge over {}, {} load ({} s)",
                    place.label(),
                    transport.name(),
                    match load {
                        Load::Throughput => "throughput",
                        Load::Latency => "latency",
                    },
                    opts.duration
                );
                let r = run_once(&opts, &sansmq, &work, place, transport, load);
                if let Err(e) = &r {
                    println!("bench quic:   failed: {e}");
                }
                results.push((place, transport, load, r));
            }
        }
    };
    run_place(Place::Loopback, &mut results);

    if opts.netem {
        match Netns::create() {
            Err(e) => {
                let msg = format!("netem part SKIPPED: cannot create the network namespaces: {e}");
                println!("bench quic: {msg}");
                notes.push(msg);
            }
            Ok(ns) if opts.netns_only => {
                notes.push("namespaces WITHOUT netem (--netns-without-netem): plumbing check, not a netem figure".to_owned());
                run_place(Place::Netns(false), &mut results);
                drop(ns);
            }
            Ok(ns) => match ns.netem() {
                Err(e) => {
                    let msg = format!(
                        "netem part SKIPPED: the kernel refused `tc qdisc add dev {VETH_EDGE} root netem {}`: {e}",
                        NETEM.join(" ")
                    );
                    println!("bench quic: {msg}");
                    notes.push(msg);
                }
                Ok(()) => {
                    notes.push(format!(
                        "netem: edge and cloud in network namespaces joined by a veth pair, `netem {}` on both ends (100 ms RTT, 2% loss each way)",
                        NETEM.join(" ")
                    ));
                    run_place(Place::Netns(true), &mut results);
                }
            },
        }
    } else {
        notes.push("netem part not run (--no-netem)".to_owned());
    }

    let table = render(&opts, &results, &notes);
    println!("\n{table}");
    let out = target_dir().join("bench-quic.md");
    std::fs::write(&out, &table).map_err(|e| err!("cannot write {}: {e}", out.display()))?;
    println!("bench quic: written to {}", out.display());
    let failed = results.iter().filter(|r| r.3.is_err()).count();
    if failed > 0 {
        return Err(err!(
            "{failed} of {} runs failed (see above)",
            results.len()
        ));
    }
    Ok(())
}

fn parse(args: &[String]) -> Result<Options> {
    let mut opts = Options {
        duration: 10.0,
        rate: 1000,
        clients: 4,
        netem: true,
        netns_only: false,
        sansmq: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| err!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--duration" => {
                let v = value("--duration")?;
                let ok = |d: &f64| d.is_finite() && *d > 0.0 && *d <= 600.0;
                opts.duration = parse_value("--duration", &v, ok, "seconds in (0, 600]")?;
            }
            "--rate" => {
                let v = value("--rate")?;
                opts.rate = parse_value("--rate", &v, |r| *r > 0, "a positive integer")?;
            }
            "--clients" => {
                let v = value("--clients")?;
                let ok = |r: &u64| (1..=1000).contains(r);
                opts.clients = parse_value("--clients", &v, ok, "1..=1000")?;
            }
            "--no-netem" => opts.netem = false,
            "--netns-without-netem" => opts.netns_only = true,
            "--sansmq" => opts.sansmq = Some(PathBuf::from(value("--sansmq")?)),
            other => return Err(err!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(opts)
}

/// A self-signed certificate (ECDSA P-256, not a CA) for the cloud's QUIC
/// listener, valid for both places' cloud addresses; the edge's bridge
/// trusts exactly it (`cacertfile`).
fn make_certs(work: &Path) -> Result<()> {
    let san = format!("subjectAltName=DNS:localhost,IP:127.0.0.1,IP:{IP_CLOUD}");
    util::output(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=sansmq-bench",
            ])
            .args([
                "-addext",
                &san,
                "-addext",
                "basicConstraints=critical,CA:FALSE",
            ])
            .arg("-keyout")
            .arg(work.join("key.pem"))
            .arg("-out")
            .arg(work.join("cert.pem")),
    )
    .map_err(|e| err!("cannot make the test certificate with openssl: {e}"))?;
    Ok(())
}

fn free_udp_port() -> Result<u16> {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| err!("cannot find a free UDP port: {e}"))
}

/// A command run on `side` of `place` (inside its namespace when there).
fn command(place: Place, side: Side, program: &Path) -> Command {
    match place {
        Place::Loopback => Command::new(program),
        Place::Netns(_) => {
            let mut c = Command::new("ip");
            c.args([
                "netns",
                "exec",
                match side {
                    Side::Edge => NS_EDGE,
                    Side::Cloud => NS_CLOUD,
                },
            ])
            .arg(program);
            c
        }
    }
}

/// A broker process, killed when dropped.
struct Broker {
    child: KillOnDrop,
    log: PathBuf,
    name: &'static str,
}

impl Broker {
    /// The `side` broker of run `tag`, configured by `<work>/<side>-<tag>.toml`,
    /// logging to `<work>/<side>-<tag>.log`.
    fn start(place: Place, side: Side, sansmq: &Path, work: &Path, tag: &str) -> Result<Self> {
        let name = match side {
            Side::Edge => "edge",
            Side::Cloud => "cloud",
        };
        let config = work.join(format!("{name}-{tag}.toml"));
        let log = work.join(format!("{name}-{tag}.log"));
        let (file, file2) = log_files(&log)?;
        let mut cmd = command(place, side, sansmq);
        cmd.arg("start")
            .arg("--config")
            .arg(&config)
            .args(["--log-level", "info"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2);
        let child = cmd
            .spawn()
            .map_err(|e| err!("cannot start the {name} broker: {e}"))?;
        Ok(Self {
            child: KillOnDrop::new(child),
            log,
            name,
        })
    }

    /// Wait until the log has a line containing every one of `all`.
    fn wait_log(&mut self, all: &[&str], limit: Duration) -> Result<()> {
        let logged = || {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            text.lines().any(|l| all.iter().all(|w| l.contains(w)))
        };
        let ready = wait_ready(self.child.child()?, limit, logged);
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        match ready {
            Ready::Yes => Ok(()),
            Ready::Exited(status) => Err(err!(
                "the {} broker exited ({status}); log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&text, 20)
            )),
            Ready::TimedOut => Err(err!(
                "the {} broker logged no {all:?} within {limit:?}; log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&text, 20)
            )),
        }
    }
}

/// Windows raised for a 100 ms RTT: a QoS 1 link needs rate x RTT in flight.
const BROKER_LIMITS: &str = "[broker]\nreceive_maximum = 10000\nmax_awaiting_rel = 10000\n\
     max_inflight = 10000\nmax_queued_messages = 1000000\n";

fn run_once(
    opts: &Options,
    sansmq: &Path,
    work: &Path,
    place: Place,
    transport: BridgeTransport,
    load: Load,
) -> Result<Sample> {
    let (cloud_tcp, cloud_quic, edge_tcp) = match place {
        Place::Loopback => (free_tcp_port()?, free_udp_port()?, free_tcp_port()?),
        Place::Netns(_) => (1883, 14567, 1883),
    };
    let (bind, cloud_ip) = match place {
        Place::Loopback => ("127.0.0.1", "127.0.0.1"),
        Place::Netns(_) => ("0.0.0.0", IP_CLOUD),
    };
    let tag = format!(
        "{}-{}-{}",
        match place {
            Place::Loopback => "lo",
            Place::Netns(true) => "netem",
            Place::Netns(false) => "netns",
        },
        transport.name(),
        match load {
            Load::Throughput => "tput",
            Load::Latency => "lat",
        }
    );
    let cert = work.join("cert.pem");
    let key = work.join("key.pem");
    let cloud_conf = work.join(format!("cloud-{tag}.toml"));
    std::fs::write(
        &cloud_conf,
        format!(
            "[[listeners]]\nname = \"mqtt\"\nbind = \"{bind}\"\nport = {cloud_tcp}\n\n\
             [[listeners]]\nname = \"quic\"\ntransport = \"quic\"\nbind = \"{bind}\"\nport = {cloud_quic}\n\
             cert = {:?}\nkey = {:?}\n\n{BROKER_LIMITS}",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .map_err(|e| err!("cannot write {}: {e}", cloud_conf.display()))?;
    let remote_port = match transport {
        BridgeTransport::Quic => cloud_quic,
        BridgeTransport::Tcp => cloud_tcp,
    };
    let edge_conf = work.join(format!("edge-{tag}.toml"));
    std::fs::write(
        &edge_conf,
        format!(
            "[[listeners]]\nname = \"mqtt\"\nbind = \"127.0.0.1\"\nport = {edge_tcp}\n\n{BROKER_LIMITS}\n\
             [[bridge]]\nname = \"bench\"\naddresses = [\"{cloud_ip}:{remote_port}\"]\n\
             transports = [\"{}\"]\ncacertfile = {:?}\nkeep_alive = 10\nmax_inflight = 10000\n\
             cache_max_messages = 1000000\nreconnect_base = \"200ms\"\nreconnect_cap = \"2s\"\n\
             quic_initial_rtt_ms = 100\nforwards = [{{ filter = \"bench/#\", qos = 1 }}]\n",
            transport.name(),
            cert.display().to_string()
        ),
    )
    .map_err(|e| err!("cannot write {}: {e}", edge_conf.display()))?;

    let mut cloud = Broker::start(place, Side::Cloud, sansmq, work, &tag)?;
    cloud.wait_log(&["listening (QUIC)"], Duration::from_secs(15))?;
    let mut edge = Broker::start(place, Side::Edge, sansmq, work, &tag)?;
    edge.wait_log(&["bridge state: connected"], Duration::from_secs(30))?;

    let d = opts.duration;
    let common = |c: &mut Command, port: u16, secs: f64| {
        c.arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .args(["-q", "1", "--json", "--quiet", "--threads", "1"])
            .arg("--duration")
            .arg(format!("{secs}"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    };
    // The subscriber listens through the load (throughput: the figure is
    // what arrived while publishing), or through the load and a drain
    // period (latency: every message should arrive, late ones included).
    let warmup = 1.5;
    let drain = match load {
        Load::Throughput => 0.2,
        Load::Latency => 5.0,
    };
    let mut sub = command(place, Side::Cloud, sansmq);
    sub.args(["bench", "sub", "-t", "bench/#", "--client-id-prefix"])
        .arg(format!("bq-{tag}-"));
    common(&mut sub, cloud_tcp, warmup + d + drain);
    let sub_child = sub
        .spawn()
        .map_err(|e| err!("cannot start the bench subscriber: {e}"))?;
    let sub_child = KillOnDrop::new(sub_child);
    // The subscriber connects and subscribes within this (loopback).
    std::thread::sleep(Duration::from_secs_f64(warmup));

    let mut publ = command(place, Side::Edge, sansmq);
    publ.args([
        "bench",
        "pub",
        "-t",
        "bench/%i",
        "-s",
        "64",
        "--client-id-prefix",
    ])
    .arg(format!("bq-{tag}-"));
    match load {
        Load::Throughput => {
            publ.arg("-c")
                .arg(opts.clients.to_string())
                .args(["--inflight", "1000"]);
        }
        Load::Latency => {
            publ.args(["-c", "1", "--inflight", "10000", "--total-rate"])
                .arg(opts.rate.to_string());
        }
    }
    common(&mut publ, edge_tcp, d);
    let pub_out = wait_output(
        publ.spawn()
            .map_err(|e| err!("cannot start the bench publisher: {e}"))?,
        Duration::from_secs_f64(d + 60.0),
    )?;
    let pub_json = summary_json(&pub_out, "the bench publisher")?;
    let sub_out = wait_output(sub_child.take()?, Duration::from_secs_f64(d + drain + 30.0))?;
    let sub_json = summary_json(&sub_out, "the bench subscriber")?;
    drop(edge);
    drop(cloud);

    let p = |k: &str| pub_json.get(k).copied().unwrap_or(0.0);
    let s = |k: &str| sub_json.get(k).copied().unwrap_or(0.0);
    Ok(Sample {
        sent: p("sent"),
        received: s("received"),
        recv_rate: s("received") / d,
        p50_us: s("lat_p50_us"),
        p99_us: s("lat_p99_us"),
        max_us: s("lat_max_us"),
        conn_lost: p("conn_lost") + s("conn_lost"),
    })
}

/// Wait for `child` at most `limit` (then kill it and fail).
fn wait_output(child: Child, limit: Duration) -> Result<std::process::Output> {
    match bench_util::wait_output(child, limit)? {
        (_, true) => Err(err!(
            "a bench process did not finish within {limit:?} and was killed"
        )),
        (out, false) => Ok(out),
    }
}

/// The two namespaces and the veth pair; deleted when dropped.
struct Netns;

impl Netns {
    fn create() -> Result<Self> {
        // Leftovers of an interrupted run first.
        Self::delete();
        let ns = Netns;
        let ip = |args: &[&str]| util::output(Command::new("ip").args(args)).map(|_| ());
        ip(&["netns", "add", NS_EDGE])?;
        ip(&["netns", "add", NS_CLOUD])?;
        ip(&[
            "link", "add", VETH_EDGE, "netns", NS_EDGE, "type", "veth", "peer", "name", VETH_CLOUD,
            "netns", NS_CLOUD,
        ])?;
        for (ns_name, dev, addr) in [
            (NS_EDGE, VETH_EDGE, IP_EDGE),
            (NS_CLOUD, VETH_CLOUD, IP_CLOUD),
        ] {
            let cidr = format!("{addr}/24");
            ip(&["-n", ns_name, "addr", "add", &cidr, "dev", dev])?;
            ip(&["-n", ns_name, "link", "set", dev, "up"])?;
            ip(&["-n", ns_name, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }

    /// `tc qdisc add dev <veth> root netem delay 50ms loss 2%` on both ends.
    fn netem(&self) -> Result<()> {
        for (ns_name, dev) in [(NS_EDGE, VETH_EDGE), (NS_CLOUD, VETH_CLOUD)] {
            util::output(
                Command::new("ip")
                    .args([
                        "netns", "exec", ns_name, "tc", "qdisc", "add", "dev", dev, "root", "netem",
                    ])
                    .args(NETEM),
            )?;
        }
        Ok(())
    }

    fn delete() {
        for ns in [NS_EDGE, NS_CLOUD] {
            // Deleting a namespace deletes its veth end, and so the pair.
            let _ = Command::new("ip")
                .args(["netns", "delete", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        Self::delete();
    }
}

fn render(
    opts: &Options,
    results: &[(Place, BridgeTransport, Load, Result<Sample>)],
    notes: &[String],
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# QUIC vs TCP bridge (edge sansmq -> cloud sansmq), QoS 1, 64-byte payloads, {} s per run\n",
        opts.duration
    );
    let _ = writeln!(
        t,
        "| network | load | bridge | sent | received | msg/s received | p50 ms | p99 ms | max ms | conn lost |"
    );
    let _ = writeln!(t, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (place, transport, load, r) in results {
        let load_name = match load {
            Load::Throughput => format!("max rate, {} publishers", opts.clients),
            Load::Latency => format!("{} msg/s", opts.rate),
        };
        match r {
            Ok(s) => {
                let _ = writeln!(
                    t,
                    "| {} | {load_name} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} |",
                    place.label(),
                    transport.name(),
                    s.sent,
                    s.received,
                    s.recv_rate,
                    s.p50_us / 1000.0,
                    s.p99_us / 1000.0,
                    s.max_us / 1000.0,
                    s.conn_lost
                );
            }
            Err(e) => {
                let first = e.to_string().lines().next().unwrap_or_default().to_owned();
                let _ = writeln!(
                    t,
                    "| {} | {load_name} | {} | failed: {first} | | | | | | |",
                    place.label(),
                    transport.name()
                );
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(t);
        for n in notes {
            let _ = writeln!(t, "- {n}");
        }
    }
    t
}
