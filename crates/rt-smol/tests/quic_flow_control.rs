//! Publisher flow control over QUIC, end to end on both runtimes: a QoS 1
//! publisher on a QUIC connection (`sansmq pub --quic`) sends far more than
//! a stalled subscriber's session queue holds plus the broker's overshoot.
//! The broker pauses the QUIC connection (its listener stops reading the
//! stream, QUIC flow control and the missing PUBACKs slow the publisher)
//! instead of dropping; once the subscriber reads again every message
//! arrives exactly once, in order, and the broker dropped nothing.

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use mqtt_core::codec::{ProtocolVersion, QoS};
use sansmq_tests::process::{wait_timeout, Runtime, Sansmq, TempDir};
use sansmq_tests::raw::RawClient;
use sansmq_tests::runtime_matrix;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sansmq"))
}

/// Small, so the test is quick: without flow control the broker would
/// drop everything past `MAX_QUEUED + OVERSHOOT` messages. With it, what
/// the broker reads past a pause is bounded by the publisher's inflight
/// window (100 unacknowledged messages for `sansmq pub`), well under the
/// overshoot.
const MAX_QUEUED: usize = 100;
const OVERSHOOT: usize = 500;
const MESSAGES: u32 = 2_000;
/// Bounded waits: generous, a loaded machine is slow, but the data must come.
const WAIT: Duration = Duration::from_secs(60);

/// A UDP port nobody uses right now.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral UDP port")
}

/// A QoS 1 publisher over QUIC into a stalled subscriber loses nothing.
fn a_quic_publisher_into_a_stalled_subscriber_loses_no_qos1_message(rt: Runtime) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("rcgen");
    let certs = TempDir::new("quic-fc-certs");
    let cert = certs.file("cert.pem", &ck.cert.pem());
    let key = certs.file("key.pem", &ck.key_pair.serialize_pem());
    let qport = free_udp_port();
    let config = format!(
        "[broker]\nmax_queued_messages = {MAX_QUEUED}\nflow_control_overshoot = {OVERSHOOT}\n\n\
         [[listeners]]\nname = \"mqtt\"\n\n[[listeners]]\nname = \"quic\"\n\
         transport = \"quic\"\nport = {qport}\ncert = {cert:?}\nkey = {key:?}\n",
    );
    let mut broker = Sansmq::start_on(rt, bin(), Some(&config), &[]);
    broker.expect_log(&["listening (QUIC)", "listener=quic"], WAIT);

    // The subscriber (TCP) subscribes, then reads nothing for now.
    let v = ProtocolVersion::V3_1_1;
    let (mut sub, _) = RawClient::connect(broker.addr, v, "slow", 0, None);
    sub.subscribe("fc/t", QoS::AtLeastOnce);

    // The publisher sends the numbers 1..=MESSAGES as QoS 1 messages, as
    // fast as the broker takes them, then waits for every PUBACK.
    let port = qport.to_string();
    let ca = cert.to_string_lossy().into_owned();
    let mut publisher = Command::new(bin())
        .args(["pub", "--quic", "-p", &port, "--cafile", &ca])
        .args(["-i", "quic-pub", "-t", "fc/t", "-q", "1", "-l"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sansmq pub");
    let pub_err = Arc::new(Mutex::new(Vec::new()));
    if let Some(stderr) = publisher.stderr.take() {
        let pub_err = pub_err.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[pub] {line}");
                if let Ok(mut e) = pub_err.lock() {
                    e.push(line);
                }
            }
        });
    }
    let mut stdin = publisher.stdin.take().expect("pub stdin");
    let feeder = thread::spawn(move || {
        for i in 1..=MESSAGES {
            if writeln!(stdin, "{i}").is_err() {
                return;
            }
        }
        // Dropping stdin ends the input: the tool disconnects once acked.
    });

    // The subscriber's queue fills and the broker pauses the QUIC
    // publisher (an event, not a delay).
    broker.expect_log(&["QUIC connection read gate", "paused=true"], WAIT);

    // Read again: every message, once, in order.
    sub.expect_numbered_qos1(MESSAGES, WAIT);
    feeder.join().expect("stdin feeder");
    let status = wait_timeout(&mut publisher, WAIT).unwrap_or_else(|| {
        let _ = publisher.kill();
        panic!("sansmq pub did not finish");
    });
    let pub_log = pub_err.lock().map(|e| e.join("\n")).unwrap_or_default();
    assert!(status.success(), "sansmq pub failed:\n{pub_log}");

    // No queue_full drop: the first drop of a cause is logged at once,
    // and everything the broker logged comes before "broker stopped".
    broker.signal("TERM");
    broker.expect_log(&["broker stopped"], WAIT);
    let log = broker.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("messages dropped") && l.contains("queue_full")),
        "queue_full drops in the broker log:\n{log}"
    );
    let _ = broker.wait_exit(WAIT);
}
runtime_matrix!(a_quic_publisher_into_a_stalled_subscriber_loses_no_qos1_message);
