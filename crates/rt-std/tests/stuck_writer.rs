//! A peer that stops reading must not keep a writer thread blocked in
//! `write` after the core closed its connection: the final flush is
//! bounded by `runtime.shutdown_timeout`, then the socket is shut down
//! under the writer. Alone in its test binary, so the process's thread
//! count is this test's to read.

use std::time::{Duration, Instant};

use mqtt_core::codec::{ProtocolVersion, QoS};
use rt_std::config::Config;
use rt_std::Broker;
use sansmq_tests::raw::RawClient;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

#[test]
fn writer_blocked_on_a_peer_that_stopped_reading_ends_after_the_close() {
    let text = "[runtime]\nshutdown_timeout = \"1s\"\n\n[[listeners]]\nport = 0\n";
    let config = Config::parse(text, "test.toml").expect("valid config");
    let broker = Broker::start(&config).expect("starts");
    let addr = broker.local_addrs()[0].1;
    let before = threads();

    // Keep alive 1 s: the core closes it 1.5 s after its last packet.
    let (mut client, _) = RawClient::connect(addr, ProtocolVersion::V5, "mute", 1, None);
    client.subscribe("big/#", QoS::AtMostOnce);
    assert_eq!(threads(), before + 2, "a reader and a writer");
    // More than the socket buffers hold; the client reads none of it.
    let payload = vec![b'x'; 64 * 1024];
    for _ in 0..400 {
        broker
            .publish("big/x", payload.clone(), QoS::AtMostOnce, false)
            .expect("published");
    }

    // Keep alive expiry (1.5 s) + the bounded flush (1 s), with margin.
    let deadline = Instant::now() + Duration::from_secs(15);
    while threads() > before {
        assert!(
            Instant::now() < deadline,
            "the connection's threads are still running ({} > {before})",
            threads()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(client);
    broker.shutdown().expect("clean shutdown");
}
