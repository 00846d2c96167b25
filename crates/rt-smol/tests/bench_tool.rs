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

/// The one-line JSON summary: the raw line and its numeric fields (`mode`
/// is the only string and is checked through the raw line).
struct Summary {
    line: String,
    map: BTreeMap<String, f64>,
}

impl Summary {
    fn parse(stdout: &[u8]) -> Self {
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
        Self { line, map }
    }

    fn field(&self, key: &str) -> f64 {
        *self
            .map
            .get(key)
            .unwrap_or_else(|| panic!("summary lacks {key}: {:?}", self.map))
    }

    /// `key` is exactly `want`.
    fn expect(&self, key: &str, want: f64) {
        assert_eq!(self.field(key), want, "{}", self.line);
    }

    /// The summary is of a `bench <mode>` run.
    fn expect_mode(&self, mode: &str) {
        let quoted = format!("\"mode\":\"{mode}\"");
        assert!(self.line.contains(&quoted), "{}", self.line);
    }

    fn assert_latency_ordered(&self) {
        let m = &self.map;
        let (p50, p90, p99, max) = (
            self.field("lat_p50_us"),
            self.field("lat_p90_us"),
            self.field("lat_p99_us"),
            self.field("lat_max_us"),
        );
        assert!(p50 >= 1.0, "p50 missing: {m:?}");
        assert!(
            p50 <= p90 && p90 <= p99 && p99 <= max,
            "percentiles out of order: {m:?}"
        );
        assert_eq!(
            self.field("lat_count"),
            self.field("received"),
            "one latency per message"
        );
    }
}

/// `bench <mode> --port <broker's port> <args> --json` (`args` split on
/// white space).
fn bench_args(broker: &Sansmq, mode: &str, args: &str) -> Vec<String> {
    let port = broker.addr.port().to_string();
    ["bench", mode, "--port", &port]
        .into_iter()
        .chain(args.split_whitespace())
        .chain(["--json"])
        .map(str::to_owned)
        .collect()
}

/// `sansmq bench <mode> <args> --json` against `broker`; it must succeed.
fn bench(broker: &Sansmq, mode: &str, args: &str) -> Summary {
    let args = bench_args(broker, mode, args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_with_timeout(bin(), &args, T);
    assert!(
        out.status.success(),
        "sansmq {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Summary::parse(&out.stdout)
}

/// [`bench`] against a broker of its own.
fn bench_fresh(mode: &str, args: &str) -> Summary {
    let broker = Sansmq::start_default(bin());
    bench(&broker, mode, args)
}

#[test]
fn pubsub_qos1_delivers_every_acknowledged_message() {
    // 4 pub/sub pairs, 200 messages each at 400 msg/s per client (0.5 s).
    let s = bench_fresh(
        "pubsub",
        "-c 4 --subs 4 -q 1 --topic smoke/%i --sub-topic smoke/%i --count 200 --rate 400 -d 5",
    );
    s.expect_mode("pubsub");
    s.expect("connected", 8.0);
    s.expect("errors", 0.0);
    s.expect("sent", 800.0);
    // QoS 1: everything sent was acknowledged and delivered exactly to its
    // pair (the broker queues far fewer than its limit here).
    s.expect("acked", 800.0);
    s.expect("received", 800.0);
    s.assert_latency_ordered();
    assert!(s.field("cpu_s") > 0.0, "own CPU time missing: {}", s.line);
}

#[test]
fn pubsub_qos0_fan_in_on_a_wildcard() {
    let s = bench_fresh(
        "pubsub",
        "-c 5 --subs 1 --count 100 --total-rate 2000 --size 100 -d 5 --version 4",
    );
    s.expect("errors", 0.0);
    s.expect("sent", 500.0);
    let received = s.field("received");
    assert!(received > 0.0 && received <= 500.0, "{}", s.line);
    s.assert_latency_ordered();
}

/// `bench sub` and `bench pub` as separate processes (wall-clock
/// timestamps): the subscriber says when it is ready on stderr.
#[test]
fn separate_pub_and_sub_processes() {
    let broker = Sansmq::start_default(bin());
    let mut sub = Command::new(bin())
        .args(bench_args(&broker, "sub", "-c 2 -t split/%i -q 1 -d 2"))
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

    let s = bench(&broker, "pub", "-c 2 -t split/%i -q 1 --count 50 -d 5");
    s.expect_mode("pub");
    s.expect("acked", 100.0);

    let status = wait_timeout(&mut sub, T).expect("bench sub ends after its duration");
    let out = sub.wait_with_output().expect("bench sub output");
    assert!(status.success(), "bench sub failed: {status}");
    let s = Summary::parse(&out.stdout);
    s.expect_mode("sub");
    s.expect("received", 100.0);
    s.expect("errors", 0.0);
    s.assert_latency_ordered();
}

#[test]
fn conn_holds_idle_connections() {
    let s = bench_fresh("conn", "-c 50 --interval-ms 2 -d 0.5");
    s.expect_mode("conn");
    s.expect("connected", 50.0);
    s.expect("connect_errors", 0.0);
    s.expect("conn_lost", 0.0);
    assert!(s.field("connect_rate") > 0.0, "{}", s.line);
}

#[test]
fn refuses_a_payload_too_small_for_the_timestamp() {
    let out = run_with_timeout(bin(), &["bench", "pub", "--size", "4"], T);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
}
