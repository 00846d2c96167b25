//! Mosquitto's own command-line clients against a broker started with no
//! config file, as a newcomer would try them. Fails (never skips) when the
//! tools are missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sansmq_tests::process::{require_tool, run_with_timeout, wait_timeout, Runtime, Sansmq};
use sansmq_tests::runtime_matrix;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sansmq"))
}

const T: Duration = Duration::from_secs(15);

/// A running `mosquitto_sub -d`, its output split into debug lines and messages.
struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Sub {
    fn start(tool: &Path, port: u16, version: &str, qos: u8, topic: &str, count: u32) -> Self {
        let mut child = Command::new(tool)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
            .args(["-q", &qos.to_string(), "-t", topic, "-v", "-d"])
            // Exit by itself after `count` messages or 15 s without one.
            .args(["-C", &count.to_string(), "-W", "15"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mosquitto_sub");
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Self { child, lines: rx }
    }

    /// Wait for the process to exit by itself (it does after `-C` messages),
    /// calling `poke` every 300 ms meanwhile, and return its output lines.
    ///
    /// mosquitto_sub's stdout is block-buffered when piped, so "subscribed"
    /// cannot be observed live: the publisher repeats instead (bounded).
    fn finish_while(mut self, poke: impl Fn()) -> Vec<String> {
        let deadline = Instant::now() + T;
        let status = loop {
            poke();
            if let Some(s) = wait_timeout(&mut self.child, Duration::from_millis(300)) {
                break Some(s);
            }
            if Instant::now() >= deadline {
                break None;
            }
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread ends at EOF; wait for it (bounded).
        let mut lines = Vec::new();
        let until = Instant::now() + Duration::from_secs(5);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        assert!(
            status.is_some_and(|s| s.success()),
            "mosquitto_sub exit status {status:?}; output: {lines:#?}"
        );
        lines
    }
}

/// Lines that are messages (`-v`: "topic payload"), not `-d` debug output.
fn messages(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| !l.starts_with("Client ") && !l.starts_with("Subscribed"))
        .map(String::as_str)
        .collect()
}

/// The QoS of the first PUBLISH the subscriber received, from its debug line
/// "Client x received PUBLISH (d0, q1, r0, m1, 'topic', ... (5 bytes))".
fn received_qos(lines: &[String]) -> Option<u8> {
    let l = lines.iter().find(|l| l.contains("received PUBLISH"))?;
    let q = l.split(", q").nth(1)?;
    q.chars()
        .next()?
        .to_digit(10)
        .and_then(|d| u8::try_from(d).ok())
}

fn publish(tool: &Path, port: u16, version: &str, qos: u8, topic: &str, msg: &str, retain: bool) {
    let port = port.to_string();
    let qos = qos.to_string();
    let mut args = vec![
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        version,
        "-q",
        &qos,
        "-t",
        topic,
        "-m",
        msg,
    ];
    if retain {
        args.push("-r");
    }
    let out = run_with_timeout(tool, &args, T);
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tools() -> (PathBuf, PathBuf) {
    (require_tool("mosquitto_pub"), require_tool("mosquitto_sub"))
}

fn pub_sub_every_qos_both_versions(rt: Runtime) {
    let (pub_tool, sub_tool) = tools();
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    for version in ["mqttv311", "mqttv5"] {
        for sub_qos in 0..=2u8 {
            for pub_qos in 0..=2u8 {
                let topic = format!("newcomer/{version}/s{sub_qos}/p{pub_qos}");
                let msg = format!("hello {version} {sub_qos} {pub_qos}");
                let sub = Sub::start(&sub_tool, port, version, sub_qos, &topic, 1);
                let lines = sub.finish_while(|| {
                    publish(&pub_tool, port, version, pub_qos, &topic, &msg, false)
                });
                let expected = format!("{topic} {msg}");
                assert_eq!(messages(&lines), [expected.as_str()], "{lines:#?}");
                // Delivered at the lower of the two QoS levels.
                assert_eq!(
                    received_qos(&lines),
                    Some(sub_qos.min(pub_qos)),
                    "{lines:#?}"
                );
            }
        }
    }
    let log = broker.log();
    assert!(log.contains("client connected"), "{log}");
    assert!(log.contains("client sent DISCONNECT"), "{log}");
}
runtime_matrix!(pub_sub_every_qos_both_versions);

fn retained_message_reaches_a_later_subscriber(rt: Runtime) {
    let (pub_tool, sub_tool) = tools();
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    for (version, qos) in [("mqttv311", 1u8), ("mqttv5", 2u8)] {
        let topic = format!("retained/{version}");
        publish(&pub_tool, port, version, qos, &topic, "kept", true);
        let sub = Sub::start(&sub_tool, port, version, qos, &topic, 1);
        let lines = sub.finish_while(|| {});
        let expected = format!("{topic} kept");
        assert_eq!(messages(&lines), [expected.as_str()], "{lines:#?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("received PUBLISH (d0, q") && l.contains(", r1,")),
            "retain flag set on delivery: {lines:#?}"
        );
        // An empty retained message clears it.
        publish(&pub_tool, port, version, qos, &topic, "", true);
    }
}
runtime_matrix!(retained_message_reaches_a_later_subscriber);
