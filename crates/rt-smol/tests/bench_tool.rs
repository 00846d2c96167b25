//! `sansmq bench` smoke tests: the load generator works against a real
//! `sansmq start` on a free loopback port. Small, short loads (about a
//! second each); no timing assertions, only what the JSON summary must say.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use sansmq_tests::process::{run_with_timeout, wait_timeout, Sansmq};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sansmq"))
}

/// Every load below stops by itself within a few seconds; this only bounds
/// a hang.
const T: Duration = Duration::from_secs(60);

/// The one-line JSON summary: numeric fields only (`mode` is the only
/// string and is checked by the caller through the raw line).
fn parse_summary(stdout: &[u8]) -> (String, BTreeMap<String, f64>) {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON summary in {text:?}"))
        .to_owned();
    let body = line
        .strip_prefix('{')
        .and_then(|l| l.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not one JSON object: {line}"));
    let mut map = BTreeMap::new();
    for pair in body.split(',') {
        let (k, v) = pair
            .split_once(':')
            .unwrap_or_else(|| panic!("bad pair {pair:?} in {line}"));
        if let Ok(v) = v.parse::<f64>() {
            map.insert(k.trim_matches('"').to_owned(), v);
        }
    }
    (line, map)
}

fn field(map: &BTreeMap<String, f64>, key: &str) -> f64 {
    *map.get(key)
        .unwrap_or_else(|| panic!("summary lacks {key}: {map:?}"))
}

fn bench(args: &[&str]) -> (String, BTreeMap<String, f64>) {
    let out = run_with_timeout(bin(), args, T);
    assert!(
        out.status.success(),
        "sansmq {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_summary(&out.stdout)
}

fn assert_latency_ordered(m: &BTreeMap<String, f64>) {
    let (p50, p90, p99, max) = (
        field(m, "lat_p50_us"),
        field(m, "lat_p90_us"),
        field(m, "lat_p99_us"),
        field(m, "lat_max_us"),
    );
    assert!(p50 >= 1.0, "p50 missing: {m:?}");
    assert!(
        p50 <= p90 && p90 <= p99 && p99 <= max,
        "percentiles out of order: {m:?}"
    );
    assert_eq!(
        field(m, "lat_count"),
        field(m, "received"),
        "one latency per message"
    );
}

#[test]
fn pubsub_qos1_delivers_every_acknowledged_message() {
    let broker = Sansmq::start_default(bin());
    let port = broker.addr.port().to_string();
    // 4 pub/sub pairs, 200 messages each at 400 msg/s per client (0.5 s).
    let (line, m) = bench(&[
        "bench",
        "pubsub",
        "--port",
        &port,
        "-c",
        "4",
        "--subs",
        "4",
        "-q",
        "1",
        "--topic",
        "smoke/%i",
        "--sub-topic",
        "smoke/%i",
        "--count",
        "200",
        "--rate",
        "400",
        "-d",
        "5",
        "--json",
    ]);
    assert!(line.contains("\"mode\":\"pubsub\""), "{line}");
    assert_eq!(field(&m, "connected"), 8.0, "{line}");
    assert_eq!(field(&m, "errors"), 0.0, "{line}");
    assert_eq!(field(&m, "sent"), 800.0, "{line}");
    // QoS 1: everything sent was acknowledged and delivered exactly to its
    // pair (the broker queues far fewer than its limit here).
    assert_eq!(field(&m, "acked"), 800.0, "{line}");
    assert_eq!(field(&m, "received"), 800.0, "{line}");
    assert_latency_ordered(&m);
    assert!(field(&m, "cpu_s") > 0.0, "own CPU time missing: {line}");
}

#[test]
fn pubsub_qos0_fan_in_on_a_wildcard() {
    let broker = Sansmq::start_default(bin());
    let port = broker.addr.port().to_string();
    let (line, m) = bench(&[
        "bench",
        "pubsub",
        "--port",
        &port,
        "-c",
        "5",
        "--subs",
        "1",
        "--count",
        "100",
        "--total-rate",
        "2000",
        "--size",
        "100",
        "-d",
        "5",
        "--version",
        "4",
        "--json",
    ]);
    assert_eq!(field(&m, "errors"), 0.0, "{line}");
    assert_eq!(field(&m, "sent"), 500.0, "{line}");
    let received = field(&m, "received");
    assert!(received > 0.0 && received <= 500.0, "{line}");
    assert_latency_ordered(&m);
}

/// `bench sub` and `bench pub` as separate processes (wall-clock
/// timestamps): the subscriber says when it is ready on stderr.
#[test]
fn separate_pub_and_sub_processes() {
    let broker = Sansmq::start_default(bin());
    let port = broker.addr.port().to_string();
    let mut sub = Command::new(bin())
        .args([
            "bench", "sub", "--port", &port, "-c", "2", "-t", "split/%i", "-q", "1", "-d", "2",
            "--json",
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bench sub");
    let stderr = sub.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = rx
        .recv_timeout(T)
        .unwrap_or_else(|_| panic!("bench sub never said it was ready"));
    assert!(
        ready.contains("ready: 2/2 connected") && ready.contains("2 subscribed"),
        "{ready}"
    );

    let (line, m) = bench(&[
        "bench", "pub", "--port", &port, "-c", "2", "-t", "split/%i", "-q", "1", "--count", "50",
        "-d", "5", "--json",
    ]);
    assert!(line.contains("\"mode\":\"pub\""), "{line}");
    assert_eq!(field(&m, "acked"), 100.0, "{line}");

    let status = wait_timeout(&mut sub, T).expect("bench sub ends after its duration");
    let out = sub.wait_with_output().expect("bench sub output");
    assert!(status.success(), "bench sub failed: {status}");
    let (line, m) = parse_summary(&out.stdout);
    assert!(line.contains("\"mode\":\"sub\""), "{line}");
    assert_eq!(field(&m, "received"), 100.0, "{line}");
    assert_eq!(field(&m, "errors"), 0.0, "{line}");
    assert_latency_ordered(&m);
}

#[test]
fn conn_holds_idle_connections() {
    let broker = Sansmq::start_default(bin());
    let port = broker.addr.port().to_string();
    let (line, m) = bench(&[
        "bench",
        "conn",
        "--port",
        &port,
        "-c",
        "50",
        "--interval-ms",
        "2",
        "-d",
        "0.5",
        "--json",
    ]);
    assert!(line.contains("\"mode\":\"conn\""), "{line}");
    assert_eq!(field(&m, "connected"), 50.0, "{line}");
    assert_eq!(field(&m, "connect_errors"), 0.0, "{line}");
    assert_eq!(field(&m, "conn_lost"), 0.0, "{line}");
    assert!(field(&m, "connect_rate") > 0.0, "{line}");
}

#[test]
fn refuses_a_payload_too_small_for_the_timestamp() {
    let out = run_with_timeout(bin(), &["bench", "pub", "--size", "4"], T);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
}
