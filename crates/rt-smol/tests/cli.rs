//! The `sansmq` binary's command line: config example and errors, start-up
//! failures, graceful shutdown on signals.

use std::path::Path;
use std::time::Duration;

use mqtt_core::codec::{Packet, ProtocolVersion, ReasonCode};
use sansmq_tests::process::{run_with_timeout, Runtime, Sansmq, TempDir};
use sansmq_tests::raw::{RawClient, RecvError};
use sansmq_tests::runtime_matrix;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sansmq"))
}

const T: Duration = Duration::from_secs(20);

fn config_example_is_valid_and_starts_a_broker(rt: Runtime) {
    let out = run_with_timeout(bin(), &["config", "example"], T);
    assert!(out.status.success(), "config example failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8 example");
    for key in [
        "[broker]",
        "[[listeners]]",
        "max_inflight = 32",
        "connect_timeout = \"10s\"",
        "port = 1883",
        "bind = \"127.0.0.1\"",
    ] {
        assert!(text.contains(key), "example lacks {key:?}:\n{text}");
    }
    let dir = TempDir::new("example");
    let file = dir.file("sansmq.toml", &text);
    let file_str = file.to_str().expect("utf-8 path");
    let check = run_with_timeout(bin(), &["config", "check", file_str], T);
    assert!(check.status.success(), "config check failed: {check:?}");

    // The example as the config file of a real broker (port overridden).
    let mut broker = Sansmq::start_on(rt, bin(), Some(&text), &[]);
    let (_c, _) = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1, "ex", 0, None);
    broker.signal("TERM");
    let status = broker.wait_exit(T).expect("exit after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}
runtime_matrix!(config_example_is_valid_and_starts_a_broker);

fn start_fails(toml: &str) -> String {
    let dir = TempDir::new("badcfg");
    let file = dir.file("bad.toml", toml);
    let file_str = file.to_str().expect("utf-8 path");
    let out = run_with_timeout(bin(), &["start", "--port", "0", "--config", file_str], T);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "start with {toml:?} should exit 2; stderr:\n{stderr}"
    );
    stderr
}

#[test]
fn unknown_key_fails_naming_its_path() {
    let err = start_fails("[broker]\nmax_inflite = 3\n");
    assert!(err.contains("broker.max_inflite"), "{err}");
    assert!(err.contains("unknown field"), "{err}");
    assert!(err.contains("bad.toml"), "{err}");
    let err = start_fails("[[listeners]]\nname = \"a\"\nbindd = \"127.0.0.1\"\n");
    assert!(err.contains("listeners[0].bindd"), "{err}");
}

#[test]
fn bad_values_fail_naming_their_path() {
    let err = start_fails("[broker]\nconnect_timeout = \"ten\"\n");
    assert!(err.contains("broker.connect_timeout"), "{err}");
    assert!(err.contains("invalid duration"), "{err}");
    let err = start_fails("[[listeners]]\nport = 70000\n");
    assert!(err.contains("listeners[0].port"), "{err}");
    let err = start_fails("[broker]\nmaximum_qos = 3\n");
    assert!(err.contains("broker.maximum_qos"), "{err}");
    let err = start_fails("[broker]\nkeepalive_multiplier = 0.5\n");
    assert!(err.contains("broker.keepalive_multiplier"), "{err}");
    let err = start_fails("[broker\n");
    assert!(err.contains("bad.toml"), "{err}");
}

fn taken_port_fails_at_start(rt: Runtime) {
    let first = Sansmq::start_default_on(rt, bin());
    let port = first.port().to_string();
    let out = run_with_timeout(bin(), &["start", "--port", &port], T);
    assert!(!out.status.success(), "second broker on {port} started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen"), "{stderr}");
}
runtime_matrix!(taken_port_fails_at_start);

fn sigterm_and_sigint_shut_down_gracefully(rt: Runtime) {
    for signal in ["TERM", "INT"] {
        let mut broker = Sansmq::start_default_on(rt, bin());
        let (mut v5, _) =
            RawClient::connect(broker.addr, ProtocolVersion::V5, "v5-client", 0, None);
        let (mut v4, _) =
            RawClient::connect(broker.addr, ProtocolVersion::V3_1_1, "v4-client", 0, None);
        broker.signal(signal);
        // 5.0: DISCONNECT with 0x8B Server shutting down, then the close.
        let (packets, _) = v5.wait_closed(T).expect("v5 client closed");
        let disconnect = packets.iter().find_map(|p| match p {
            Packet::Disconnect(d) => Some(d.reason_code),
            _ => None,
        });
        assert_eq!(
            disconnect,
            Some(ReasonCode::SERVER_SHUTTING_DOWN),
            "SIG{signal}: packets before close: {packets:?}"
        );
        // 3.1.1 has no server DISCONNECT: just the close.
        match v4.wait_closed(T) {
            Ok((packets, _)) => assert!(packets.is_empty(), "{packets:?}"),
            Err(RecvError::Closed) => {}
            Err(e) => panic!("v4 client: {e:?}"),
        }
        let status = broker.wait_exit(T).expect("broker exits");
        assert!(status.success(), "SIG{signal}: exit status {status:?}");
        let log = broker.log();
        assert!(log.contains("shutting down"), "{log}");
        assert!(log.contains("broker stopped"), "{log}");
    }
}
runtime_matrix!(sigterm_and_sigint_shut_down_gracefully);
