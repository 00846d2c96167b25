//! MQTT over QUIC against the real binary, on loopback UDP: a QUIC
//! listener serving `sansmq pub`/`sub --quic`; an edge sansmq bridging
//! over QUIC to a cloud sansmq (messages both ways, the edge started
//! first with the cloud down, the cloud restarted mid-stream with no QoS 1
//! message lost); hybrid `["quic", "tcp"]` falling back to TCP when the
//! cloud has no QUIC listener. Certificates are generated at test time
//! (rcgen) into a temporary directory.
//!
//! The cloud is stopped with SIGTERM: it then finishes delivering what it
//! acknowledged before exiting (with SIGKILL, messages the cloud had
//! acknowledged but not yet delivered would die with it, which is the
//! cloud's loss, not the bridge's). As in the TCP bridge test, the edge is
//! frozen (SIGSTOP) while the cloud starts and its subscriber subscribes,
//! so nothing is forwarded to a cloud with nobody subscribed.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mqtt_core::codec::{ByteString, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS};
use sansmq_tests::process::{run_with_timeout, wait_timeout, Runtime, Sansmq, TempDir};
use sansmq_tests::raw::RawClient;
use sansmq_tests::runtime_matrix;

/// Generous bound on every wait (never a timing assertion).
const T: Duration = Duration::from_secs(30);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sansmq"))
}

/// A UDP port nobody uses right now.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral UDP port")
}

/// A self-signed certificate for "localhost" and 127.0.0.1, as PEM files.
struct Certs {
    dir: TempDir,
}

impl Certs {
    fn new() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("rcgen");
        let dir = TempDir::new("quic-certs");
        dir.file("cert.pem", &ck.cert.pem());
        dir.file("key.pem", &ck.key_pair.serialize_pem());
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// A TCP listener (first: the test helper reads its port) and a QUIC
    /// listener on `quic_port`.
    fn listeners(&self, quic_port: u16) -> String {
        format!(
            "[[listeners]]\nname = \"mqtt\"\n\n[[listeners]]\nname = \"quic\"\n\
             transport = \"quic\"\nport = {quic_port}\ncert = {:?}\nkey = {:?}\n",
            self.path("cert.pem"),
            self.path("key.pem"),
        )
    }
}

/// A `sansmq sub` child whose stdout lines and stderr lines are collected.
struct Sub {
    child: Child,
    out: mpsc::Receiver<String>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Sub {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(bin())
            .arg("sub")
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sansmq sub");
        let (tx, out) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let err = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let err = err.clone();
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[sub] {line}");
                    if let Ok(mut e) = err.lock() {
                        e.push(line);
                    }
                }
            });
        }
        Self { child, out, err }
    }

    /// Wait for `-d`'s SUBACK line.
    fn wait_subscribed(&self) {
        let deadline = Instant::now() + T;
        loop {
            if self
                .err
                .lock()
                .is_ok_and(|e| e.iter().any(|l| l.contains("SUBACK")))
            {
                return;
            }
            assert!(Instant::now() < deadline, "the subscriber never subscribed");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        self.err.lock().map(|e| e.join("\n")).unwrap_or_default()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn quic_clients_publish_and_subscribe_through_a_quic_listener(rt: Runtime) {
    let certs = Certs::new();
    let qport = free_udp_port();
    let broker = Sansmq::start_on(rt, bin(), Some(&certs.listeners(qport)), &[]);
    broker.expect_log(&["listening (QUIC)", "listener=quic"], T);
    let port = qport.to_string();
    let ca = certs.path("cert.pem");
    let quic = ["--quic", "-p", &port, "--cafile", &ca];

    let mut args = quic.to_vec();
    args.extend(["-t", "a/#", "-q", "1", "-v", "-C", "3", "-W", "30", "-d"]);
    let mut sub = Sub::start(&args);
    sub.wait_subscribed();
    let mut args = vec!["pub"];
    args.extend(quic);
    args.extend(["-t", "a/b", "-q", "1", "-m", "over quic", "-n", "3"]);
    let out = run_with_timeout(bin(), &args, T);
    assert!(
        out.status.success(),
        "pub --quic failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = Vec::new();
    while lines.len() < 3 {
        match sub.out.recv_timeout(T) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("got {lines:?}; sub stderr:\n{}", sub.stderr()),
        }
    }
    assert_eq!(lines, vec!["a/b over quic"; 3]);
    let status = wait_timeout(&mut sub.child, T).expect("sub -C 3 exits");
    assert!(status.success(), "sub stderr:\n{}", sub.stderr());
    // Ordinary connections of the core: logged like TCP ones, with the
    // QUIC listener's name.
    broker.expect_log(&["QUIC connection accepted", "listener=quic"], T);
    broker.expect_log(&["client connected"], T);

    // The same broker over TCP still works next to it, and a QUIC client
    // that does not trust the certificate fails saying why.
    let other = Certs::new();
    let bad_ca = other.path("cert.pem");
    let out = run_with_timeout(
        bin(),
        &[
            "pub", "--quic", "-p", &port, "--cafile", &bad_ca, "-t", "a/b", "-m", "x",
        ],
        T,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS"), "unclear failure: {err}");
}
runtime_matrix!(quic_clients_publish_and_subscribe_through_a_quic_listener);

/// A QoS 1 publisher on the edge (raw TCP client).
struct Publisher {
    c: RawClient,
    next_pid: u16,
}

impl Publisher {
    fn new(addr: SocketAddr) -> Self {
        let (c, _) = RawClient::connect(addr, ProtocolVersion::V5, "quic-test-pub", 0, None);
        Self { c, next_pid: 1 }
    }

    /// Publish `n` at QoS 1 on `t/{n}` and wait for its PUBACK.
    fn publish(&mut self, n: u32) {
        let id = PacketId::new(self.next_pid).expect("non-zero packet id");
        self.next_pid = self.next_pid % 60_000 + 1;
        self.c.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: ByteString::from(format!("t/{n}")),
            packet_id: Some(id),
            properties: Properties::default(),
            payload: Bytes::from(n.to_string()),
        }));
        let deadline = Instant::now() + T;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("no PUBACK in time");
            match self.c.recv(left) {
                Ok(Packet::PubAck(a)) if a.packet_id == id => return,
                Ok(_) => {}
                Err(e) => panic!("publisher: {e:?}"),
            }
        }
    }
}

/// Numbers received by the cloud's subscribers ("t/N N" lines).
fn collect(sub: &Sub, into: &mut Vec<u32>, until: impl Fn(&[u32]) -> bool, what: &str) {
    let deadline = Instant::now() + T;
    while !until(into) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("{what}: received {into:?}; sub stderr:\n{}", sub.stderr()));
        if let Ok(line) = sub.out.recv_timeout(left.min(Duration::from_millis(200))) {
            let n = line
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {line:?}"));
            into.push(n);
        }
    }
}

fn edge_config(certs: &Certs, cloud_quic: u16) -> String {
    format!(
        "[[bridge]]\nname = \"up\"\naddresses = [\"127.0.0.1:{cloud_quic}\"]\n\
         transports = [\"quic\"]\ncacertfile = {:?}\n\
         reconnect_base = \"200ms\"\nreconnect_cap = \"1s\"\nconnect_timeout = \"5s\"\n\
         quic_handshake_timeout = \"3s\"\nkeep_alive = 10\n\
         forwards = [{{ filter = \"t/#\", qos = 1 }}]\n\
         subscriptions = [{{ filter = \"cmd/#\", qos = 1 }}]\n",
        certs.path("cert.pem")
    )
}

fn edge_bridges_over_quic_both_ways_started_first_and_survives_a_cloud_restart(rt: Runtime) {
    let certs = Certs::new();
    let qport = free_udp_port();
    let cloud_config = certs.listeners(qport);
    let port = qport.to_string();
    let ca = certs.path("cert.pem");
    let sub_args = [
        "--quic", "-p", &port, "--cafile", &ca, "-t", "t/#", "-q", "1", "-v", "-d", "-k", "5",
    ];

    // The edge starts first: nobody listens on the cloud's UDP port, the
    // QUIC dial is refused (ICMP) and the bridge backs off.
    let edge = Sansmq::start_on(rt, bin(), Some(&edge_config(&certs, qport)), &[]);
    edge.expect_log(&["bridge dial failed", "bridge=up", "refused"], T);
    edge.expect_log(&["bridge state: backoff", "bridge=up"], T);
    let mut publisher = Publisher::new(edge.addr);
    for n in 1..=20 {
        publisher.publish(n);
    }

    // The cloud comes up; its subscriber subscribes while the edge is frozen.
    edge.signal("STOP");
    let mut cloud = Sansmq::start_on(rt, bin(), Some(&cloud_config), &[]);
    let sub1 = Sub::start(&sub_args);
    sub1.wait_subscribed();
    edge.signal("CONT");
    edge.expect_log(
        &["bridge state: connected", "bridge=up", "quic://127.0.0.1"],
        T,
    );
    let mut got = Vec::new();
    collect(
        &sub1,
        &mut got,
        |g| (1..=20).all(|n| g.contains(&n)),
        "cached 1..=20",
    );

    // Cloud -> edge: the bridge's subscription (cmd/#) brings a message
    // published on the cloud over QUIC to a subscriber on the edge.
    let edge_port = edge.port().to_string();
    let edge_sub = Sub::start(&["-p", &edge_port, "-t", "cmd/#", "-q", "1", "-v", "-d"]);
    edge_sub.wait_subscribed();
    let deadline = Instant::now() + T;
    let line = loop {
        let out = run_with_timeout(
            bin(),
            &[
                "pub",
                "--quic",
                "-p",
                &port,
                "--cafile",
                &ca,
                "-t",
                "cmd/edge1",
                "-q",
                "1",
                "-m",
                "reboot",
            ],
            T,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Until the bridge's SUBSCRIBE is in place, nobody is subscribed.
        if let Ok(line) = edge_sub.out.recv_timeout(Duration::from_millis(500)) {
            break line;
        }
        assert!(Instant::now() < deadline, "cloud -> edge never arrived");
    };
    assert_eq!(line, "cmd/edge1 reboot");

    // Mid-stream: the cloud stops while messages flow, then comes back.
    let flow = thread::spawn(move || {
        for n in 21..=80 {
            publisher.publish(n);
            thread::sleep(Duration::from_millis(2));
        }
        publisher
    });
    collect(&sub1, &mut got, |g| g.contains(&40), "message 40");
    cloud.signal("TERM");
    assert!(cloud.wait_exit(T).is_some(), "the cloud did not stop");
    let mut publisher = flow.join().expect("publisher thread");
    // What the cloud acknowledged, it delivered before exiting.
    while let Ok(line) = sub1.out.recv_timeout(Duration::from_millis(200)) {
        if let Some(n) = line.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            got.push(n);
        }
    }
    edge.expect_log(&["bridge state: backoff", "bridge=up"], T);

    edge.signal("STOP");
    drop(cloud);
    let cloud = Sansmq::start_on(rt, bin(), Some(&cloud_config), &[]);
    let sub2 = Sub::start(&sub_args);
    sub2.wait_subscribed();
    edge.signal("CONT");
    for n in 81..=100 {
        publisher.publish(n);
    }
    collect(
        &sub2,
        &mut got,
        |g| (1..=100).all(|n| g.contains(&n)),
        "no QoS 1 loss",
    );
    let mut firsts = Vec::new();
    for &n in &got {
        if !firsts.contains(&n) {
            firsts.push(n);
        }
    }
    eprintln!(
        "received {} messages, {} duplicates",
        got.len(),
        got.len() - firsts.len()
    );
    // The reconnect is logged (the log reader thread may lag a little).
    let deadline = Instant::now() + T;
    while edge.log().matches("bridge state: connected").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the bridge did not reconnect; log:\n{}",
            edge.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    drop(cloud);
}
runtime_matrix!(edge_bridges_over_quic_both_ways_started_first_and_survives_a_cloud_restart);

fn hybrid_quic_then_tcp_falls_back_to_tcp_when_the_cloud_has_no_quic(rt: Runtime) {
    // The cloud listens on TCP only: the QUIC dial to the same port number
    // over UDP is refused, and the bridge connects over TCP.
    let cloud = Sansmq::start_on(rt, bin(), None, &[]);
    let toml = format!(
        "[[bridge]]\nname = \"hyb\"\naddresses = [\"127.0.0.1:{}\"]\n\
         transports = [\"quic\", \"tcp\"]\ninsecure_skip_verify = true\n\
         forwards = [{{ filter = \"t/#\" }}]\n",
        cloud.port()
    );
    let edge = Sansmq::start_on(rt, bin(), Some(&toml), &[]);
    // Verification off is said loudly.
    edge.expect_log(&["WARN", "INSECURE", "bridge=hyb"], T);
    edge.expect_log(&["bridge dial failed", "bridge=hyb", "refused"], T);
    edge.expect_log(
        &["bridge state: connected", "bridge=hyb", "tcp://127.0.0.1"],
        T,
    );
}
runtime_matrix!(hybrid_quic_then_tcp_falls_back_to_tcp_when_the_cloud_has_no_quic);

/// A numeric field of `bench --json`'s one-line summary.
fn json_field(line: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\":");
    let start = line
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + pat.len();
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {line}"))
}

fn bench_pubsub_runs_over_quic(rt: Runtime) {
    let certs = Certs::new();
    let qport = free_udp_port();
    let broker = Sansmq::start_on(rt, bin(), Some(&certs.listeners(qport)), &[]);
    broker.expect_log(&["listening (QUIC)"], T);
    let port = qport.to_string();
    let ca = certs.path("cert.pem");
    let out = run_with_timeout(
        bin(),
        &[
            "bench",
            "pubsub",
            "--quic",
            "--cafile",
            &ca,
            "--port",
            &port,
            "-c",
            "2",
            "--subs",
            "2",
            "-q",
            "1",
            "--topic",
            "qb/%i",
            "--sub-topic",
            "qb/%i",
            "--count",
            "200",
            "--rate",
            "400",
            "-d",
            "5",
            "--json",
            "--quiet",
        ],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench --quic failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON summary: {stdout}"));
    assert_eq!(json_field(line, "connected"), 4.0, "{line}");
    assert_eq!(json_field(line, "errors"), 0.0, "{line}");
    assert_eq!(json_field(line, "sent"), 400.0, "{line}");
    assert_eq!(json_field(line, "acked"), 400.0, "{line}");
    assert_eq!(json_field(line, "received"), 400.0, "{line}");
}
runtime_matrix!(bench_pubsub_runs_over_quic);
