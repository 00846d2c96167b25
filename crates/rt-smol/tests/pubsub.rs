//! `sansmq pub` and `sansmq sub` end to end: against a real `sansmq start`
//! on a free loopback port, against each other, and against Mosquitto's
//! `mosquitto_pub`/`mosquitto_sub` (required: these tests fail, never skip,
//! when the tools are missing).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sansmq_tests::process::{require_tool, run_with_timeout, wait_timeout, Runtime, Sansmq};
use sansmq_tests::runtime_matrix;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sansmq"))
}

const T: Duration = Duration::from_secs(20);

/// A running `sansmq sub -d`: stdout lines are messages; it is ready once
/// it printed its SUBACK on stderr.
struct Sub {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    err_seen: Vec<String>,
}

fn line_reader(src: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(src).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Sub {
    /// `sansmq sub -d -p <port> <args>`, returned once subscribed.
    fn start(port: u16, args: &[&str]) -> Self {
        let mut child = Command::new(bin())
            .args(["sub", "-d", "-p", &port.to_string()])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sansmq sub");
        let out = line_reader(child.stdout.take().expect("stdout"));
        let err = line_reader(child.stderr.take().expect("stderr"));
        let mut sub = Self {
            child,
            out,
            err,
            err_seen: Vec::new(),
        };
        let deadline = Instant::now() + T;
        while !sub.err_seen.iter().any(|l| l.starts_with("SUBACK")) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("sansmq sub not subscribed: {:#?}", sub.err_seen));
            match sub.err.recv_timeout(left) {
                Ok(l) => sub.err_seen.push(l),
                Err(_) => panic!("sansmq sub not subscribed: {:#?}", sub.err_seen),
            }
        }
        sub
    }

    /// Wait for the exit (it exits by itself with -C/-W) and return the
    /// message lines; panics unless it exited 0.
    fn finish(mut self) -> Vec<String> {
        let status = wait_timeout(&mut self.child, T);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let lines: Vec<String> = drain(&self.out);
        self.err_seen.extend(drain(&self.err));
        assert!(
            status.is_some_and(|s| s.success()),
            "sansmq sub exit status {status:?}; stdout {lines:#?}; stderr {:#?}",
            self.err_seen
        );
        lines
    }
}

/// Every line until EOF (bounded wait).
fn drain(rx: &mpsc::Receiver<String>) -> Vec<String> {
    let mut lines = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    lines
}

fn sansmq_pub(port: u16, args: &[&str]) -> Output {
    let port = port.to_string();
    let mut all = vec!["pub", "-p", &port];
    all.extend_from_slice(args);
    let out = run_with_timeout(bin(), &all, T);
    assert!(
        out.status.success(),
        "sansmq {all:?}: {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sub_receives_what_pub_sends_at_every_qos_and_version(rt: Runtime) {
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    for version in ["311", "5"] {
        for qos in ["0", "1", "2"] {
            let topic = format!("pubsub/{version}/{qos}");
            let payload = format!("hello v{version} q{qos}");
            let sub = Sub::start(
                port,
                &[
                    "-V", version, "-q", qos, "-t", &topic, "-C", "3", "-W", "15",
                ],
            );
            sansmq_pub(
                port,
                &[
                    "-V", version, "-q", qos, "-t", &topic, "-m", &payload, "-n", "3",
                ],
            );
            let lines = sub.finish();
            assert_eq!(lines, vec![payload.clone(); 3], "v{version} qos {qos}");
        }
    }
}
runtime_matrix!(sub_receives_what_pub_sends_at_every_qos_and_version);

fn verbose_and_format_show_topic_qos_retain(rt: Runtime) {
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    let sub = Sub::start(port, &["-q", "2", "-t", "fmt/#", "-v", "-C", "1"]);
    sansmq_pub(port, &["-q", "1", "-t", "fmt/a", "-m", "x y"]);
    assert_eq!(sub.finish(), vec!["fmt/a x y".to_owned()]);

    let sub = Sub::start(
        port,
        &["-q", "2", "-t", "fmt/#", "-F", "%t|%q|%r|%p%%", "-C", "1"],
    );
    sansmq_pub(port, &["-q", "2", "-t", "fmt/b", "-m", "z"]);
    assert_eq!(sub.finish(), vec!["fmt/b|2|0|z%".to_owned()]);
}
runtime_matrix!(verbose_and_format_show_topic_qos_retain);

fn retained_message_reaches_a_later_subscriber(rt: Runtime) {
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    for version in ["311", "5"] {
        let topic = format!("retained/{version}");
        sansmq_pub(
            port,
            &["-V", version, "-q", "1", "-r", "-t", &topic, "-m", "kept"],
        );
        // Subscribed after the publish: only the retained copy can arrive.
        let sub = Sub::start(
            port,
            &[
                "-V", version, "-q", "1", "-t", &topic, "-F", "%r %p", "-C", "1", "-W", "10",
            ],
        );
        assert_eq!(sub.finish(), vec!["1 kept".to_owned()], "v{version}");
    }
}
runtime_matrix!(retained_message_reaches_a_later_subscriber);

fn stdin_line_mode_sends_each_line(rt: Runtime) {
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    let sub = Sub::start(port, &["-q", "1", "-t", "lines", "-C", "4", "-W", "15"]);
    let mut child = Command::new(bin())
        .args([
            "pub",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            "lines",
            "-l",
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sansmq pub -l");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"first\nsecond line\r\n\nlast")
        .expect("write stdin");
    drop(stdin); // EOF: pub finishes its acknowledgements and exits.
    let status = wait_timeout(&mut child, T);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        status.is_some_and(|s| s.success()),
        "sansmq pub -l: {status:?}"
    );
    assert_eq!(
        sub.finish(),
        vec!["first", "second line", "", "last"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    );
}
runtime_matrix!(stdin_line_mode_sends_each_line);

fn file_message_is_sent_whole(rt: Runtime) {
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    let dir = sansmq_tests::process::TempDir::new("pubfile");
    let path = dir.file("msg.txt", "from a file");
    let sub = Sub::start(port, &["-t", "file", "-C", "1", "-W", "10"]);
    sansmq_pub(
        port,
        &["-t", "file", "-f", path.to_str().expect("utf-8 path")],
    );
    assert_eq!(sub.finish(), vec!["from a file".to_owned()]);
}
runtime_matrix!(file_message_is_sent_whole);

fn user_properties_arrive_at_sansmq_sub_and_mosquitto_sub(rt: Runtime) {
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    let sub = Sub::start(port, &["-q", "1", "-t", "props", "-F", "%P|%p", "-C", "1"]);
    let props = ["--user-property", "k=v", "--user-property", "k2=v=2"];
    let mut args = vec!["-q", "1", "-t", "props", "-m", "p"];
    args.extend_from_slice(&props);
    sansmq_pub(port, &args);
    assert_eq!(sub.finish(), vec!["k:v k2:v=2|p".to_owned()]);

    // Retained, so mosquitto_sub (whose readiness cannot be observed) gets
    // it whenever it subscribes.
    let mut args = vec!["-q", "1", "-r", "-t", "props/kept", "-m", "r"];
    args.extend_from_slice(&props);
    sansmq_pub(port, &args);
    let out = mosquitto(
        "mosquitto_sub",
        port,
        &[
            "-V",
            "mqttv5",
            "-t",
            "props/kept",
            "-F",
            "%P|%p",
            "-C",
            "1",
            "-W",
            "10",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "k:v k2:v=2|r\n");
}
runtime_matrix!(user_properties_arrive_at_sansmq_sub_and_mosquitto_sub);

#[test]
fn user_property_needs_v5() {
    let out = run_with_timeout(
        bin(),
        &[
            "pub",
            "-p",
            "1",
            "-V",
            "311",
            "-t",
            "t",
            "-m",
            "m",
            "--user-property",
            "a=b",
        ],
        T,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--user-property"));
}

fn mosquitto(tool: &str, port: u16, args: &[&str]) -> Output {
    let path: PathBuf = require_tool(tool);
    let port = port.to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &port];
    all.extend_from_slice(args);
    let out = run_with_timeout(&path, &all, T);
    assert!(
        out.status.success(),
        "{tool} {all:?}: {:?}; stdout: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mosquitto_sub_receives_from_sansmq_pub(rt: Runtime) {
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    let tool = require_tool("mosquitto_sub");
    for (version, mversion) in [("311", "mqttv311"), ("5", "mqttv5")] {
        for qos in ["1", "2"] {
            let topic = format!("interop/out/{version}/{qos}");
            let payload = format!("to mosquitto v{version} q{qos}");
            let mut child = Command::new(&tool)
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", mversion])
                .args(["-q", qos, "-t", &topic, "-C", "1", "-W", "15"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start mosquitto_sub");
            let out = line_reader(child.stdout.take().expect("stdout"));
            // mosquitto_sub's readiness is not observable (block-buffered
            // stdout): publish every 300 ms until it exits (bounded by T).
            let deadline = Instant::now() + T;
            let status = loop {
                sansmq_pub(
                    port,
                    &["-V", version, "-q", qos, "-t", &topic, "-m", &payload],
                );
                if let Some(s) = wait_timeout(&mut child, Duration::from_millis(300)) {
                    break Some(s);
                }
                if Instant::now() >= deadline {
                    break None;
                }
            };
            let _ = child.kill();
            let _ = child.wait();
            let lines = drain(&out);
            assert!(
                status.is_some_and(|s| s.success()),
                "mosquitto_sub: {status:?}"
            );
            assert_eq!(lines, vec![payload], "v{version} qos {qos}");
        }
    }
}
runtime_matrix!(mosquitto_sub_receives_from_sansmq_pub);

fn sansmq_sub_receives_from_mosquitto_pub(rt: Runtime) {
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    for (version, mversion) in [("311", "mqttv311"), ("5", "mqttv5")] {
        for qos in ["0", "1", "2"] {
            let topic = format!("interop/in/{version}/{qos}");
            let payload = format!("from mosquitto v{version} q{qos}");
            let sub = Sub::start(
                port,
                &[
                    "-V", version, "-q", qos, "-t", &topic, "-C", "1", "-W", "15",
                ],
            );
            mosquitto(
                "mosquitto_pub",
                port,
                &["-V", mversion, "-q", qos, "-t", &topic, "-m", &payload],
            );
            assert_eq!(sub.finish(), vec![payload], "v{version} qos {qos}");
        }
    }
}
runtime_matrix!(sansmq_sub_receives_from_mosquitto_pub);

#[test]
fn bad_flags_exit_non_zero_naming_the_flag() {
    let cases: [(&[&str], &str); 7] = [
        (&["pub", "-t", "t", "-m", "m", "--bogus"], "--bogus"),
        (&["pub", "-t", "t", "-m", "m", "-q", "3"], "--qos"),
        (&["pub", "-t", "t", "-m", "m", "-V", "4"], "--protocol"),
        (&["pub", "-t", "t"], "--message"),
        (
            &["pub", "-t", "t", "-m", "m", "--user-property", "novalue"],
            "--user-property",
        ),
        (&["sub", "-t", "t", "-C", "0"], "--count"),
        (&["sub", "-q", "1"], "--topic"),
    ];
    for (args, flag) in cases {
        let out = run_with_timeout(bin(), args, T);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?} should name {flag}: {stderr}"
        );
    }
}

fn failures_exit_non_zero_with_a_reason(rt: Runtime) {
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port().to_string();
    // Refused: 3.1.1, empty client id without clean session.
    let out = run_with_timeout(
        bin(),
        &[
            "pub", "-p", &port, "-V", "311", "-i", "", "-c", "-t", "t", "-m", "m",
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connection refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing listens on the port a closed listener had.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
        .to_string();
    let out = run_with_timeout(bin(), &["pub", "-p", &closed, "-t", "t", "-m", "m"], T);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
    // -C not reached within -W.
    let out = run_with_timeout(
        bin(),
        &["sub", "-p", &port, "-t", "silent", "-C", "1", "-W", "1"],
        T,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-W/--timeout"));
}
runtime_matrix!(failures_exit_non_zero_with_a_reason);

fn no_clean_and_session_expiry_keep_the_session_across_runs(rt: Runtime) {
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    for version in ["311", "5"] {
        let id = format!("pubsub-persist-{version}");
        let topic = format!("persist/{version}");
        let mut flags = vec!["-V", version, "-i", &id, "-c", "-q", "1", "-t", &topic];
        if version == "5" {
            flags.extend_from_slice(&["-x", "60"]);
        }
        // First run subscribes, listens 1 s (-W without -C: a normal end).
        let mut first = flags.clone();
        first.extend_from_slice(&["-W", "1"]);
        Sub::start(port, &first).finish();
        sansmq_pub(
            port,
            &["-V", version, "-q", "1", "-t", &topic, "-m", "offline"],
        );
        // The session kept the subscription and the message.
        let mut second = vec!["sub", "-p"];
        let port_s = port.to_string();
        second.push(&port_s);
        second.extend_from_slice(&flags);
        second.extend_from_slice(&["-C", "1", "-W", "10"]);
        let out = run_with_timeout(bin(), &second, T);
        assert!(
            out.status.success(),
            "v{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "offline\n",
            "v{version}"
        );
    }
}
runtime_matrix!(no_clean_and_session_expiry_keep_the_session_across_runs);

fn many_qos2_messages_are_all_acknowledged_and_received(rt: Runtime) {
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    let sub = Sub::start(port, &["-q", "2", "-t", "many", "-C", "500", "-W", "15"]);
    // More than the client's inflight window (100) and the tool's queue
    // target (256), and below the broker's default per-session queue
    // (max_queued_messages = 1000), which a burst beyond would overflow:
    // the broker then drops by its policy, not a tool concern.
    sansmq_pub(port, &["-q", "2", "-t", "many", "-m", "m", "-n", "500"]);
    let lines = sub.finish();
    assert_eq!(lines.len(), 500);
    assert!(lines.iter().all(|l| l == "m"));
}
runtime_matrix!(many_qos2_messages_are_all_acknowledged_and_received);
