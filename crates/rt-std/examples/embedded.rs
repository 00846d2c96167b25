//! Embed the broker in a plain threaded program: MQTT clients connect on
//! the listener, and the host publishes and subscribes in-process.
//! Run: `cargo run -p rt-std --example embedded`
use std::time::Duration;

use rt_std::{config::Config, Broker, QoS};

fn main() -> Result<(), rt_std::Error> {
    let mut config = Config::default();
    config.listeners[0].port = 0; // any free port
    let broker = Broker::start(&config)?;
    for (name, addr) in broker.local_addrs() {
        println!("listener {name} on {addr}");
    }

    // In-process: no socket for the host's own messages.
    let commands = broker.subscribe("gateway/+/command", QoS::AtLeastOnce)?;
    broker.publish("gateway/status", "online", QoS::AtLeastOnce, true)?;
    broker.publish("gateway/pump/command", "start", QoS::AtLeastOnce, false)?;

    if let Some(m) = commands.recv_timeout(Duration::from_secs(5)) {
        let text = String::from_utf8_lossy(&m.payload);
        println!("{} -> {text}", m.topic);
    }

    // Graceful: MQTT 5.0 clients get DISCONNECT 0x8B (server shutting down).
    let metrics = broker.shutdown()?;
    println!("messages received: {}", metrics.messages_received);
    Ok(())
}
