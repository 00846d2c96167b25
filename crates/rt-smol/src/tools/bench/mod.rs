//! `sansmq bench pub|sub|conn|pubsub`: load generation against any MQTT
//! broker, like emqtt-bench or `nanomq_cli bench`.
//!
//! - `pub`: N publishers, each at `--rate` msg/s (or `--total-rate` shared),
//!   or as fast as the socket and the QoS 1/2 `--inflight` window allow.
//!   Every payload starts with the send time (8 bytes, big-endian
//!   nanoseconds since the Unix epoch) so subscribers measure latency.
//! - `sub`: N subscribers count messages and record latency (now minus the
//!   payload's timestamp) in an HDR histogram.
//! - `conn`: N connections opened at a rate and held idle for `--duration`
//!   (broker memory per idle connection; connect rate).
//! - `pubsub`: subscribers and publishers in one process, so the latency
//!   uses one clock and the run knows when everything is delivered. The
//!   order is: connect everyone (subscribers first) and wait for every
//!   SUBACK, publish for `--duration`, wait for the acknowledgements, wait
//!   until deliveries stop (at most 5 s), disconnect.
//!
//! Every run is bounded: connects time out, publishing stops after
//! `--duration` (or `--count`), and stragglers get 5 s to finish.
//!
//! Connections are spread over `--threads` OS threads, each running a
//! single-threaded executor (no work stealing, no locks on the hot path);
//! counters are batched per wake-up into shared atomics. The summary goes
//! to stdout (one JSON line with `--json`); live progress to stderr.

mod client;
mod report;

use std::cell::RefCell;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_executor::LocalExecutor;
use bytestring::ByteString;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mqtt_core::client::ClientConfig;
use mqtt_core::codec::{ProtocolVersion, QoS};

use client::{ClientSpec, PubPlan, RoleSpec, ThreadCtx, DRAIN};
pub use report::Summary;
use report::{new_histogram, process_cpu, raise_nofile, Shared};

/// `sansmq bench` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchArgs {
    /// Publishers only (latency is measured by a `bench sub` elsewhere).
    Pub(PubBench),
    /// Subscribers only: count messages and measure latency.
    Sub(SubBench),
    /// Open N connections at a rate and hold them idle for --duration.
    Conn(ConnBench),
    /// Subscribers and publishers in one process (latency on one clock).
    Pubsub(PubSubBench),
}

/// Flags every bench mode takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Broker host name or IP address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker TCP port.
    #[arg(short = 'p', long, default_value_t = 1883)]
    pub port: u16,
    /// Number of clients (publishers in `pubsub`).
    #[arg(short = 'c', long, default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub clients: u64,
    /// Milliseconds between two client connects (0: as fast as
    /// --connect-concurrency allows).
    #[arg(long = "interval-ms", value_name = "MS", default_value_t = 0.0,
          value_parser = parse_interval_ms)]
    pub interval_ms: f64,
    /// Connects in progress (TCP connect to CONNACK) at most.
    #[arg(long = "connect-concurrency", value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_concurrency: u64,
    /// MQTT version: 4 (3.1.1) or 5.
    #[arg(long = "version", value_name = "4|5", default_value = "5", value_parser = parse_version)]
    pub version: ProtocolVersion,
    /// QoS of publishes and subscriptions.
    #[arg(short = 'q', long, default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// How long to publish (pub, pubsub), listen (sub) or hold (conn):
    /// seconds, or a duration such as 500ms.
    #[arg(short = 'd', long, value_name = "DURATION", default_value = "10", value_parser = parse_duration)]
    pub duration: Duration,
    /// User name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password.
    #[arg(short = 'P', long)]
    pub password: Option<String>,
    /// Client ids are <prefix><p|s|c><index> (default: bench-<pid>-).
    #[arg(long = "client-id-prefix", value_name = "PREFIX")]
    pub client_id_prefix: Option<String>,
    /// Keep alive in seconds.
    #[arg(short = 'k', long, default_value_t = 300)]
    pub keepalive: u16,
    /// Threads running connections (default: the number of CPUs).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: Option<u64>,
    /// Print the summary as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// No live progress on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// --quic, --cafile, --insecure, --server-name (as `sansmq pub`).
    #[command(flatten)]
    pub transport: super::driver::TransportArgs,
}

/// What publishers send.
#[derive(Debug, Clone, Args)]
pub struct PubOpts {
    /// Topic; %i is the client index, %c the client id.
    #[arg(short = 't', long, default_value = "bench/%i")]
    pub topic: String,
    /// Messages per second per client (0: as fast as possible, within the
    /// --inflight window for QoS 1/2).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Messages per second over all clients (overrides --rate).
    #[arg(long = "total-rate", value_name = "RATE")]
    pub total_rate: Option<f64>,
    /// Payload bytes (at least 8: the timestamp).
    #[arg(short = 's', long, default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(8..=1_000_000))]
    pub size: u64,
    /// Messages per client, then stop (0: until --duration ends).
    #[arg(short = 'n', long, default_value_t = 0)]
    pub count: u64,
    /// Set RETAIN on every publish.
    #[arg(long)]
    pub retain: bool,
    /// QoS 1/2 publishes in flight per client.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: u16,
}

#[derive(Debug, Clone, Args)]
pub struct PubBench {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub publish: PubOpts,
}

#[derive(Debug, Clone, Args)]
pub struct SubBench {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Topic filter; %i is the client index, %c the client id.
    #[arg(short = 't', long, default_value = "bench/#")]
    pub topic: String,
}

#[derive(Debug, Clone, Args)]
pub struct ConnBench {
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Args)]
pub struct PubSubBench {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub publish: PubOpts,
    /// Number of subscribers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub subs: u64,
    /// Subscribers' topic filter; %i is the subscriber index, %c its id.
    #[arg(long = "sub-topic", value_name = "FILTER", default_value = "bench/#")]
    pub sub_topic: String,
    /// Subscription QoS (default: --qos).
    #[arg(long = "sub-qos", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub sub_qos: Option<u8>,
}

fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "4" | "311" | "3.1.1" => Ok(ProtocolVersion::V3_1_1),
        "5" | "5.0" => Ok(ProtocolVersion::V5),
        _ => Err("expected 4 (3.1.1) or 5".into()),
    }
}

/// At most an hour between connects, so every later arithmetic is finite.
fn parse_interval_ms(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(ms) if ms.is_finite() && (0.0..=3_600_000.0).contains(&ms) => Ok(ms),
        _ => Err("expected milliseconds between 0 and 3600000".into()),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs > 0.0 && secs < 1e7 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err("expected a positive number of seconds".into());
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Run a bench and print its summary.
pub fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    let (common, summary) = match args {
        BenchArgs::Pub(a) => {
            let plan = pub_plan(&a.common, &a.publish)?;
            let load = Load {
                mode: "pub",
                pubs: a.common.clients,
                pub_topic: a.publish.topic.clone(),
                plan: Some(plan),
                subs: 0,
                sub_topic: String::new(),
                sub_qos: QoS::AtMostOnce,
                idle: 0,
                inflight: a.publish.inflight,
            };
            (a.common.clone(), run_load(&a.common, load)?)
        }
        BenchArgs::Sub(a) => {
            let load = Load {
                mode: "sub",
                pubs: 0,
                pub_topic: String::new(),
                plan: None,
                subs: a.common.clients,
                sub_topic: a.topic.clone(),
                sub_qos: qos(a.common.qos),
                idle: 0,
                inflight: INFLIGHT,
            };
            (a.common.clone(), run_load(&a.common, load)?)
        }
        BenchArgs::Conn(a) => {
            let load = Load {
                mode: "conn",
                pubs: 0,
                pub_topic: String::new(),
                plan: None,
                subs: 0,
                sub_topic: String::new(),
                sub_qos: QoS::AtMostOnce,
                idle: a.common.clients,
                inflight: INFLIGHT,
            };
            (a.common.clone(), run_load(&a.common, load)?)
        }
        BenchArgs::Pubsub(a) => {
            let plan = pub_plan(&a.common, &a.publish)?;
            let load = Load {
                mode: "pubsub",
                pubs: a.common.clients,
                pub_topic: a.publish.topic.clone(),
                plan: Some(plan),
                subs: a.subs,
                sub_topic: a.sub_topic.clone(),
                sub_qos: qos(a.sub_qos.unwrap_or(a.common.qos)),
                idle: 0,
                inflight: a.publish.inflight,
            };
            (a.common.clone(), run_load(&a.common, load)?)
        }
    };
    if common.json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.to_text());
    }
    Ok(())
}

fn qos(q: u8) -> QoS {
    QoS::from_u8(q).unwrap_or(QoS::AtMostOnce)
}

fn pub_plan(common: &CommonArgs, p: &PubOpts) -> anyhow::Result<PubPlan> {
    let rate = match p.total_rate {
        Some(total) => total / common.clients as f64,
        None => p.rate,
    };
    if !rate.is_finite() || rate < 0.0 {
        bail!("--rate/--total-rate must be 0 or positive");
    }
    Ok(PubPlan {
        qos: qos(common.qos),
        retain: p.retain,
        size: usize::try_from(p.size).context("--size")?,
        rate,
        count: p.count,
        duration: common.duration,
    })
}

/// Who connects, in one run.
struct Load {
    mode: &'static str,
    pubs: u64,
    pub_topic: String,
    plan: Option<PubPlan>,
    subs: u64,
    sub_topic: String,
    sub_qos: QoS,
    idle: u64,
    /// QoS 1/2 publishes in flight per publisher.
    inflight: u16,
}

/// Inflight window of clients that do not publish.
const INFLIGHT: u16 = 100;
/// Poll the counters this often (progress, phase changes).
const TICK: Duration = Duration::from_millis(100);
/// Deliveries count as finished when nothing arrived for this long.
const QUIET: Duration = Duration::from_millis(500);

fn run_load(common: &CommonArgs, load: Load) -> anyhow::Result<Summary> {
    let wall0 = Instant::now();
    let cpu0 = process_cpu();
    let total = load.pubs + load.subs + load.idle;
    // One descriptor per connection, plus the executor's and stdio.
    let needed = total + 64;
    if let Some(limit) = raise_nofile(needed) {
        if limit < needed {
            bail!(
                "{total} connections need {needed} file descriptors; RLIMIT_NOFILE allows {limit}"
            );
        }
    }
    let addrs: Arc<[std::net::SocketAddr]> = super::ConnArgs {
        host: common.host.clone(),
        port: common.port,
        protocol: common.version,
        id: None,
        keepalive: common.keepalive,
        no_clean: false,
        session_expiry: None,
        username: None,
        password: None,
        debug: false,
    }
    .addrs()?
    .into();
    let dialer = Arc::new(super::driver::Dialer::new(&common.transport, &common.host)?);
    let prefix = common
        .client_id_prefix
        .clone()
        .unwrap_or_else(|| format!("bench-{}-", std::process::id()));
    let threads = common
        .threads
        .map(|t| t as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .min(usize::try_from(total).unwrap_or(usize::MAX))
        .max(1);

    // Connection specs in connect order: subscribers, publishers, idle.
    let plan = load.plan.map(Arc::new);
    let interval = Duration::from_secs_f64((common.interval_ms.max(0.0)) / 1000.0);
    let start = Instant::now() + Duration::from_millis(20);
    let mut per_thread: Vec<Vec<ClientSpec>> = (0..threads).map(|_| Vec::new()).collect();
    let split = if load.subs > 0 && load.pubs + load.idle > 0 && threads >= 2 {
        threads / 2
    } else {
        0
    };
    let mut n = 0usize;
    let mut add = |kind: char, index: u64, make: &dyn Fn(&str) -> anyhow::Result<RoleSpec>| {
        let id = format!("{prefix}{kind}{index}");
        let role = make(&id)?;
        let config = ClientConfig {
            client_id: id.into(),
            protocol_version: common.version,
            keep_alive: common.keepalive,
            username: common.username.as_deref().map(ByteString::from),
            password: common
                .password
                .as_ref()
                .map(|p| bytes::Bytes::copy_from_slice(p.as_bytes())),
            max_inflight: load.inflight,
            ..ClientConfig::default()
        };
        // Subscribers get threads of their own when there are publishers
        // too: sharing an executor with flooding publishers would delay
        // their acknowledgements and measure the generator, not the broker.
        let thread = if kind == 's' && split > 0 {
            index as usize % split
        } else {
            split + n % (threads - split)
        };
        per_thread[thread].push(ClientSpec {
            config,
            role,
            start: start + interval.mul_f64(n as f64),
        });
        n += 1;
        anyhow::Ok(())
    };
    for i in 0..load.subs {
        add('s', i, &|id| {
            let filter = client::expand(&load.sub_topic, i as usize, id);
            mqtt_core::topic::validate_topic_filter(&filter)
                .map_err(|e| anyhow::anyhow!("subscription filter {filter:?}: {e}"))?;
            Ok(RoleSpec::Sub {
                filter: filter.into(),
                qos: load.sub_qos,
            })
        })?;
    }
    if let Some(plan) = &plan {
        for i in 0..load.pubs {
            add('p', i, &|id| {
                let topic = client::expand(&load.pub_topic, i as usize, id);
                mqtt_core::topic::validate_topic_name(&topic)
                    .map_err(|e| anyhow::anyhow!("topic {topic:?}: {e}"))?;
                Ok(RoleSpec::Pub {
                    plan: Arc::clone(plan),
                    topic: topic.into(),
                })
            })?;
        }
    }
    for i in 0..load.idle {
        add('c', i, &|_| Ok(RoleSpec::Idle))?;
    }

    let shared = Arc::new(Shared::new());
    let (go_tx, go_rx) = async_channel::bounded::<()>(1);
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let slots = async_channel::bounded::<()>(common.connect_concurrency as usize);
    for _ in 0..common.connect_concurrency {
        let _ = slots.0.try_send(());
    }
    let mut handles = Vec::with_capacity(threads);
    for (t, specs) in per_thread.into_iter().enumerate() {
        let ctx = ThreadCtx {
            shared: Arc::clone(&shared),
            addrs: Arc::clone(&addrs),
            dialer: Arc::clone(&dialer),
            go: go_rx.clone(),
            stop: stop_rx.clone(),
            slots: slots.clone(),
            hist: RefCell::new(new_histogram()),
        };
        let handle = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || {
                {
                    let ex = LocalExecutor::new();
                    let ctx = &ctx;
                    async_io::block_on(ex.run(async {
                        let tasks: Vec<_> = specs
                            .into_iter()
                            .map(|spec| ex.spawn(client::run(spec, ctx)))
                            .collect();
                        for task in tasks {
                            task.await;
                        }
                    }));
                }
                ctx.hist.into_inner()
            })
            .context("cannot start a bench thread")?;
        handles.push(handle);
    }
    drop((go_rx, stop_rx, slots));

    let bar = progress_bar(common);
    let progress = |phase: &str| {
        let g = |c: &std::sync::atomic::AtomicU64| Shared::get(c);
        bar.set_message(format!(
            "{phase}: connected {}/{total} ({} errors), subscribed {}, sent {}, acked {}, received {}",
            g(&shared.connected),
            g(&shared.connect_errors),
            g(&shared.subscribed),
            g(&shared.sent),
            g(&shared.acked),
            g(&shared.received),
        ));
        bar.tick();
    };

    // Phase 1: everyone connects, subscribers subscribe. Bounded by the
    // schedule plus the TCP and CONNACK timeouts.
    let connect_bound = start
        + interval.mul_f64(total as f64)
        + super::TCP_CONNECT_TIMEOUT
        + ClientConfig::default().connect_timeout
        + Duration::from_secs(5)
        + Duration::from_secs_f64(total as f64 / 1000.0);
    loop {
        let g = |c: &std::sync::atomic::AtomicU64| Shared::get(c);
        let connects_settled = g(&shared.connected) + g(&shared.connect_errors) >= total;
        let subs_settled =
            g(&shared.subscribed) + g(&shared.subscribe_errors) + g(&shared.subs_not_connected)
                >= load.subs;
        if (connects_settled && subs_settled)
            || g(&shared.tasks_done) >= total
            || Instant::now() >= connect_bound
        {
            break;
        }
        progress("connecting");
        std::thread::sleep(TICK);
    }
    if !common.quiet {
        // Also a readiness signal for scripts: a `bench pub` started after
        // this line reaches every subscriber.
        let what = match load.mode {
            "pub" | "pubsub" => "publishing",
            "sub" => "listening",
            _ => "holding",
        };
        let line = format!(
            "bench {}: ready: {}/{total} connected ({} connect errors), {} subscribed; {what} for {:?}",
            load.mode,
            Shared::get(&shared.connected),
            Shared::get(&shared.connect_errors),
            Shared::get(&shared.subscribed),
            common.duration,
        );
        bar.suspend(|| eprintln!("{line}"));
    }
    let t0 = Instant::now();
    let _ = shared.t0.set(t0);
    drop(go_tx);

    // Phase 2: publish, listen or hold.
    let duration = common.duration;
    match load.mode {
        "pub" | "pubsub" => {
            let bound = t0 + duration + DRAIN + Duration::from_secs(2);
            while Shared::get(&shared.pubs_done) < load.pubs && Instant::now() < bound {
                progress("publishing");
                std::thread::sleep(TICK);
            }
            if load.subs > 0 {
                // Deliveries finish: nothing new for QUIET, at most DRAIN.
                let bound = Instant::now() + DRAIN;
                let mut last = Shared::get(&shared.received);
                let mut last_change = Instant::now();
                while Instant::now() < bound && last_change.elapsed() < QUIET {
                    progress("draining");
                    std::thread::sleep(TICK);
                    let now = Shared::get(&shared.received);
                    if now != last {
                        last = now;
                        last_change = Instant::now();
                    }
                }
            }
        }
        _ => {
            while t0.elapsed() < duration && Shared::get(&shared.tasks_done) < total {
                progress(if load.mode == "conn" {
                    "holding"
                } else {
                    "listening"
                });
                std::thread::sleep(TICK.min(duration.saturating_sub(t0.elapsed())));
            }
        }
    }
    drop(stop_tx);
    let mut hist = new_histogram();
    for handle in handles {
        match handle.join() {
            Ok(h) => {
                hist.add(&h).context("merging latency histograms")?;
            }
            Err(_) => bail!("a bench thread panicked"),
        }
    }
    bar.finish_and_clear();

    let g = |c: &std::sync::atomic::AtomicU64| Shared::get(c);
    let at = |ns: u64| shared.base + Duration::from_nanos(ns);
    let secs_since_t0 = |ns: u64| {
        if ns == 0 {
            0.0
        } else {
            at(ns).saturating_duration_since(t0).as_secs_f64()
        }
    };
    let first_attempt = g(&shared.first_attempt_ns);
    let connect_s = if first_attempt == u64::MAX || g(&shared.last_connack_ns) == 0 {
        0.0
    } else {
        at(g(&shared.last_connack_ns))
            .saturating_duration_since(at(first_attempt))
            .as_secs_f64()
    };
    let mut s = Summary {
        mode: load.mode,
        pub_clients: load.pubs,
        sub_clients: load.subs,
        idle_clients: load.idle,
        qos: common.qos,
        size: plan.as_ref().map_or(0, |p| p.size as u64),
        connected: g(&shared.connected),
        connect_errors: g(&shared.connect_errors),
        connect_s,
        connect_rate: rate(g(&shared.connected), connect_s),
        subscribe_errors: g(&shared.subscribe_errors),
        conn_lost: g(&shared.conn_lost),
        sent: g(&shared.sent),
        acked: g(&shared.acked),
        publish_errors: g(&shared.publish_errors),
        received: g(&shared.received),
        send_s: secs_since_t0(g(&shared.last_sent_ns)),
        recv_s: match load.mode {
            "sub" => t0.elapsed().as_secs_f64().min(duration.as_secs_f64()),
            _ => secs_since_t0(g(&shared.last_recv_ns)),
        },
        cpu_s: process_cpu().saturating_sub(cpu0).as_secs_f64(),
        wall_s: wall0.elapsed().as_secs_f64(),
        ..Summary::default()
    };
    s.sent_rate = rate(s.sent, s.send_s);
    s.recv_rate = rate(s.received, s.recv_s);
    s.set_latency(&hist);
    Ok(s)
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn progress_bar(common: &CommonArgs) -> ProgressBar {
    if common.quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar
}
