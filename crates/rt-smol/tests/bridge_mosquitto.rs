//! TCP bridging over real loopback sockets: a `sansmq` with a `[[bridge]]`
//! forwarding `t/#` to a remote broker (a real Mosquitto, or a second
//! sansmq), started while the remote is down; QoS 1 messages published
//! locally meanwhile reach a subscriber on the remote, in order; the remote
//! is then stopped and restarted mid-stream and no QoS 1 message is lost
//! (duplicates allowed). Also: `fail_fast` with the remote down exits
//! non-zero naming the bridge. Fails (never skips) without Mosquitto.
//!
//! The subscriber on the remote must be subscribed before the bridge
//! delivers (a broker drops messages nobody subscribed to, correctly): the
//! bridging sansmq is frozen (SIGSTOP) while the remote starts and the
//! subscriber subscribes, then resumed (SIGCONT). The remote is stopped
//! with SIGTERM: both brokers then finish delivering what they acknowledged
//! (Mosquitto also persists the subscriber's session).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mqtt_core::codec::{
    ByteString, Connect, Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubResponse,
    Publish, QoS, ReasonCode,
};
use sansmq_tests::process::{
    require_tool, run_with_timeout, wait_timeout, Runtime, Sansmq, TempDir,
};
use sansmq_tests::raw::{RawClient, RecvError};
use sansmq_tests::runtime_matrix;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sansmq"))
}

const T: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn wait_port(port: u16, timeout: Duration) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing accepts on {addr} after {timeout:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn pid(v: u16) -> PacketId {
    PacketId::new(v).expect("non-zero packet id")
}

/// The remote broker of the bridge, on a fixed loopback port.
enum Kind {
    Mosquitto,
    Sansmq,
}

enum Proc {
    Mosquitto(Child),
    Sansmq(Box<Sansmq>),
}

struct Remote {
    kind: Kind,
    /// The runtime of a sansmq remote (the one under test).
    rt: Runtime,
    port: u16,
    dir: TempDir,
    proc: Option<Proc>,
}

impl Remote {
    fn new(kind: Kind, rt: Runtime) -> Self {
        let dir = TempDir::new("bridge-remote");
        Self {
            kind,
            rt,
            port: free_port(),
            dir,
            proc: None,
        }
    }

    fn start(&mut self) {
        assert!(self.proc.is_none(), "remote already running");
        let port = self.port;
        let proc = match self.kind {
            Kind::Mosquitto => {
                let tool = require_tool("mosquitto");
                let conf = self.dir.file(
                    "mosquitto.conf",
                    &format!(
                        "listener {port} 127.0.0.1\nallow_anonymous true\n\
                         persistence true\npersistence_location {}/\n",
                        self.dir.path().display()
                    ),
                );
                let child = Command::new(tool)
                    .arg("-c")
                    .arg(conf)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start mosquitto");
                Proc::Mosquitto(child)
            }
            Kind::Sansmq => {
                // `Sansmq::start` moves the first listener to a free port;
                // the bridge dials the second, fixed one.
                let toml = format!(
                    "[[listeners]]\nname = \"probe\"\nport = 0\n\n\
                     [[listeners]]\nname = \"fixed\"\nport = {port}\n"
                );
                Proc::Sansmq(Box::new(Sansmq::start_on(self.rt, bin(), Some(&toml), &[])))
            }
        };
        self.proc = Some(proc);
        wait_port(port, T);
    }

    /// SIGTERM and wait for the exit.
    fn stop(&mut self) {
        match self.proc.take() {
            Some(Proc::Mosquitto(mut c)) => {
                let ok = Command::new("kill")
                    .arg("-TERM")
                    .arg(c.id().to_string())
                    .status()
                    .expect("run kill(1)")
                    .success();
                assert!(ok, "kill -TERM mosquitto failed");
                assert!(wait_timeout(&mut c, T).is_some(), "mosquitto did not exit");
            }
            Some(Proc::Sansmq(mut s)) => {
                s.signal("TERM");
                assert!(s.wait_exit(T).is_some(), "remote sansmq did not exit");
            }
            None => panic!("remote not running"),
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(Proc::Mosquitto(mut c)) = self.proc.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

enum SubEvent {
    Subscribed,
    Message(u32),
}

/// A subscriber on the remote: reconnects (persistent session) and
/// resubscribes until `stop`, acknowledging every QoS 1 message.
fn subscriber(port: u16, stop: Arc<AtomicBool>, tx: mpsc::Sender<SubEvent>) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        // One session; a broker going away mid-call panics inside the raw
        // client (a write to a closed socket): caught, then reconnect.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let mut c = RawClient::tcp(addr, ProtocolVersion::V3_1_1);
            c.send(&Packet::Connect(Connect {
                protocol_version: ProtocolVersion::V3_1_1,
                clean_start: false,
                keep_alive: 0,
                client_id: ByteString::from("bridge-test-sub"),
                will: None,
                username: None,
                password: None,
                properties: Properties::default(),
            }));
            let Ok(Packet::ConnAck(_)) = c.recv(Duration::from_secs(5)) else {
                return;
            };
            c.subscribe("t/#", QoS::AtLeastOnce);
            if tx.send(SubEvent::Subscribed).is_err() {
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                match c.recv(Duration::from_millis(200)) {
                    Ok(Packet::Publish(p)) => {
                        if let Some(id) = p.packet_id {
                            c.send(&Packet::PubAck(PubResponse::new(id)));
                        }
                        let n = std::str::from_utf8(&p.payload)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .expect("numeric payload");
                        if tx.send(SubEvent::Message(n)).is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(RecvError::Timeout) => {}
                    Err(_) => return,
                }
            }
            c.send(&Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::SUCCESS,
                properties: Properties::default(),
            }));
        }));
    }
}

/// A QoS 1 publisher on the bridging sansmq.
struct Publisher {
    c: RawClient,
    next_pid: u16,
}

impl Publisher {
    fn new(addr: SocketAddr) -> Self {
        let (c, _) = RawClient::connect(addr, ProtocolVersion::V5, "bridge-test-pub", 0, None);
        Self { c, next_pid: 1 }
    }

    /// Publish `n` at QoS 1 on `t/{n}` and wait for its PUBACK.
    fn publish(&mut self, n: u32) {
        let id = pid(self.next_pid);
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

struct Received {
    rx: mpsc::Receiver<SubEvent>,
    messages: Vec<u32>,
    subscribed: usize,
}

impl Received {
    fn pump(&mut self, timeout: Duration) -> bool {
        match self.rx.recv_timeout(timeout) {
            Ok(SubEvent::Message(n)) => {
                self.messages.push(n);
                true
            }
            Ok(SubEvent::Subscribed) => {
                self.subscribed += 1;
                true
            }
            Err(_) => false,
        }
    }

    fn wait_subscribed(&mut self, count: usize) {
        let deadline = Instant::now() + T;
        while self.subscribed < count {
            assert!(Instant::now() < deadline, "subscriber never subscribed");
            self.pump(Duration::from_millis(100));
        }
    }

    fn wait_for(&mut self, n: u32) {
        let deadline = Instant::now() + T;
        while !self.messages.contains(&n) {
            assert!(
                Instant::now() < deadline,
                "message {n} never arrived; received {:?}",
                self.messages
            );
            self.pump(Duration::from_millis(100));
        }
    }

    fn wait_all(&mut self, upto: u32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(1..=upto).all(|n| self.messages.contains(&n)) {
            assert!(
                Instant::now() < deadline,
                "messages lost: missing {:?}; received {:?}",
                (1..=upto)
                    .filter(|n| !self.messages.contains(n))
                    .collect::<Vec<_>>(),
                self.messages
            );
            self.pump(Duration::from_millis(100));
        }
    }
}

fn bridge_config(remote_port: u16) -> String {
    format!(
        "[[bridge]]\nname = \"up\"\naddresses = [\"127.0.0.1:{remote_port}\"]\n\
         reconnect_base = \"200ms\"\nreconnect_cap = \"1s\"\nconnect_timeout = \"3s\"\n\
         keep_alive = 10\nforwards = [{{ filter = \"t/#\", qos = 1 }}]\n"
    )
}

/// The scenario of both remote kinds.
fn bridge_survives_remote(kind: Kind, rt: Runtime) {
    let mut remote = Remote::new(kind, rt);
    let started = Instant::now();
    let local = Sansmq::start_on(rt, bin(), Some(&bridge_config(remote.port)), &[]);
    // The remote is down: the first attempt fails and the bridge backs off.
    local.expect_log(&["bridge state: backoff", "bridge=up"], T);

    let mut publisher = Publisher::new(local.addr);
    for n in 1..=20 {
        publisher.publish(n);
    }
    // The remote comes up ~5 s after the bridging broker.
    if let Some(left) = Duration::from_secs(5).checked_sub(started.elapsed()) {
        thread::sleep(left);
    }

    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let mut received = Received {
        rx,
        messages: Vec::new(),
        subscribed: 0,
    };
    let port = remote.port;
    let sub = {
        let stop = stop.clone();
        thread::spawn(move || subscriber(port, stop, tx))
    };

    local.signal("STOP");
    remote.start();
    received.wait_subscribed(1);
    local.signal("CONT");
    local.expect_log(&["bridge state: connected", "bridge=up"], T);

    // Mid-stream: the remote stops while messages flow (some in flight on
    // the bridge, some in its cache), and stays down for a while.
    let flow = thread::spawn(move || {
        for n in 21..=80 {
            publisher.publish(n);
            thread::sleep(Duration::from_millis(2));
        }
        publisher
    });
    received.wait_for(40);
    remote.stop();
    let mut publisher = flow.join().expect("publisher thread");
    local.signal("STOP");
    remote.start();
    received.wait_subscribed(2);
    local.signal("CONT");
    for n in 81..=100 {
        publisher.publish(n);
    }
    received.wait_all(100);
    stop.store(true, Ordering::Relaxed);
    let _ = sub.join();

    // In order: the first arrival of each message follows publish order.
    let mut firsts = Vec::new();
    for &n in &received.messages {
        if !firsts.contains(&n) {
            firsts.push(n);
        }
    }
    eprintln!(
        "received {} messages, {} duplicates",
        received.messages.len(),
        received.messages.len() - firsts.len()
    );
    let mut sorted = firsts.clone();
    sorted.sort_unstable();
    assert_eq!(firsts, sorted, "out of order: {:?}", received.messages);
    // Two connects: the reconnect after the remote's restart is counted.
    local.expect_log(&["bridge state: connected", "bridge=up"], T);
    assert!(
        local.log().matches("bridge state: connected").count() >= 2,
        "the bridge did not reconnect; log:\n{}",
        local.log()
    );
}

fn bridge_to_mosquitto_started_late_and_restarted_loses_no_qos1(rt: Runtime) {
    bridge_survives_remote(Kind::Mosquitto, rt);
}
runtime_matrix!(bridge_to_mosquitto_started_late_and_restarted_loses_no_qos1);

fn bridge_to_sansmq_started_late_and_restarted_loses_no_qos1(rt: Runtime) {
    bridge_survives_remote(Kind::Sansmq, rt);
}
runtime_matrix!(bridge_to_sansmq_started_late_and_restarted_loses_no_qos1);

fn fail_fast_bridge_with_remote_down_exits_nonzero_naming_it(rt: Runtime) {
    let dir = TempDir::new("bridge-ff");
    let port = free_port();
    let config = dir.file(
        "sansmq.toml",
        &format!(
            "[[bridge]]\nname = \"cloud-ff\"\naddresses = [\"127.0.0.1:{port}\"]\n\
             fail_fast = true\nforwards = [{{ filter = \"t/#\" }}]\n"
        ),
    );
    let config = config.to_str().expect("utf-8 temp path");
    let out = run_with_timeout(
        bin(),
        &[
            "start",
            "--runtime",
            rt.arg(),
            "--port",
            "0",
            "--config",
            config,
        ],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("bridge \"cloud-ff\" failed")
            && last.contains("fail_fast")
            && last.contains("connection refused"),
        "unclear exit message; stderr:\n{stderr}"
    );
}
runtime_matrix!(fail_fast_bridge_with_remote_down_exits_nonzero_naming_it);

// The hybrid ["quic", "tcp"] fallback is tested in quic.rs, against a
// real QUIC-capable bridge (hybrid_quic_then_tcp_falls_back_to_tcp_when_
// the_cloud_has_no_quic), on both runtimes.
