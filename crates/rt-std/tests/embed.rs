//! The embedding API on real loopback sockets: the host publishes and
//! subscribes in-process next to ordinary MQTT clients, backpressure on a
//! host that does not read, and a clean shutdown.

use std::time::Duration;

use mqtt_core::broker::DropReason;
use mqtt_core::codec::{Packet, ProtocolVersion, ReasonCode};
use rt_std::config::Config;
use rt_std::{Broker, Error, Handle, QoS};
use sansmq_tests::raw::RawClient;

const T: Duration = Duration::from_secs(10);

fn start(broker_toml: &str) -> Handle {
    let text = format!("[[listeners]]\nport = 0\n\n[broker]\n{broker_toml}");
    let config = Config::parse(&text, "test.toml").expect("valid config");
    Broker::start(&config).expect("broker starts")
}

fn addr(h: &Handle) -> std::net::SocketAddr {
    h.local_addrs()[0].1
}

#[test]
fn host_and_socket_clients_exchange_messages() {
    let broker = start("");
    let host = broker
        .subscribe("up/#", QoS::AtLeastOnce)
        .expect("subscribed");
    let (mut client, _) = RawClient::connect(addr(&broker), ProtocolVersion::V5, "dev", 0, None);
    client.subscribe("down/#", QoS::AtLeastOnce);

    // Host -> socket.
    broker
        .publish("down/dev", "hello", QoS::AtMostOnce, false)
        .expect("published");
    let p = client
        .recv_publish(T)
        .expect("delivered to the socket client");
    assert_eq!((&*p.topic, &p.payload[..]), ("down/dev", &b"hello"[..]));

    // Socket -> host, at the subscription's QoS.
    client.publish0("up/dev/t", b"21.5");
    let m = host.recv_timeout(T).expect("delivered in-process");
    assert_eq!((&*m.topic, &m.payload[..]), ("up/dev/t", &b"21.5"[..]));
    assert_eq!(m.qos, QoS::AtMostOnce);
    assert!(!m.retain);

    // Host -> host, QoS 1 capped by nothing.
    broker
        .publish("up/host", "x", QoS::AtLeastOnce, false)
        .expect("published");
    let m = host.recv_timeout(T).expect("host to host");
    assert_eq!((&*m.topic, m.qos), ("up/host", QoS::AtLeastOnce));
    broker.shutdown().expect("clean shutdown");
}

#[test]
fn retained_message_reaches_a_later_host_subscription() {
    let broker = start("");
    broker
        .publish("cfg/mode", "eco", QoS::AtLeastOnce, true)
        .expect("published");
    let sub = broker.subscribe("cfg/+", QoS::AtLeastOnce).expect("ok");
    let m = sub.recv_timeout(T).expect("the retained message");
    assert_eq!(&m.payload[..], b"eco");
    assert!(m.retain, "sent as retained to a new subscription");
    broker.shutdown().expect("clean shutdown");
}

#[test]
fn invalid_topic_and_filter_are_refused_before_reaching_the_core() {
    let broker = start("");
    let e = broker.publish("a/+", "x", QoS::AtMostOnce, false);
    assert!(matches!(e, Err(Error::InvalidTopic { .. })), "{e:?}");
    let e = broker.subscribe("a/#/b", QoS::AtMostOnce);
    assert!(matches!(e, Err(Error::Subscribe(_))), "{e:?}");
    // The broker still works.
    let sub = broker.subscribe("a/b", QoS::AtMostOnce).expect("valid");
    broker
        .publish("a/b", "ok", QoS::AtMostOnce, false)
        .expect("ok");
    assert!(sub.recv_timeout(T).is_some());
    broker.shutdown().expect("clean shutdown");
}

/// A host that does not read: its channel fills, further messages wait in
/// the runtime without their bytes being reported written, so the broker
/// sees a congested connection and applies its own queue policy. With a
/// queue large enough, every QoS 1 message arrives, in order, once the
/// host reads; nothing is dropped.
#[test]
fn slow_host_subscription_is_backpressured_not_lossy() {
    let n = 3000u32;
    let broker =
        start("max_pending_bytes_per_connection = \"4 KiB\"\nmax_queued_messages = 5000\n");
    let sub = broker.subscribe("load/#", QoS::AtLeastOnce).expect("ok");
    for i in 0..n {
        broker
            .publish("load/x", i.to_string(), QoS::AtLeastOnce, false)
            .expect("published");
    }
    for i in 0..n {
        let m = sub
            .recv_timeout(T)
            .unwrap_or_else(|| panic!("message {i} missing"));
        assert_eq!(&m.payload[..], i.to_string().as_bytes(), "in order");
    }
    let metrics = broker.shutdown().expect("clean shutdown");
    assert_eq!(losses(&metrics), 0, "{metrics:?}");
}

/// Drops of messages that had a subscriber (the broker's own `$SYS`
/// publishes may find none).
fn losses(m: &rt_std::Metrics) -> u64 {
    m.dropped_total() - m.dropped(DropReason::NoSubscribers)
}

/// The same slow host with a small queue: the broker's policy decides what
/// is lost (QoS 1 refused once its session queue is full, counted by
/// cause), and everything not counted as dropped arrives. Host publishes
/// cannot be paused, so with no flow-control overshoot the queue's bound is
/// its hard cap.
#[test]
fn slow_host_losses_are_the_brokers_counted_decision() {
    let n = 3000u32;
    let broker = start(
        "max_pending_bytes_per_connection = \"4 KiB\"\nmax_queued_messages = 100\n\
         flow_control_overshoot = 0\n",
    );
    let sub = broker.subscribe("load/#", QoS::AtLeastOnce).expect("ok");
    for i in 0..n {
        broker
            .publish("load/x", i.to_string(), QoS::AtLeastOnce, false)
            .expect("published");
    }
    let trigger = broker.shutdown_trigger();
    let mut received = 0u64;
    while sub.recv_timeout(Duration::from_millis(500)).is_some() {
        received += 1;
    }
    trigger.trigger();
    let metrics = broker.wait().expect("clean shutdown");
    let queue_full = metrics.dropped(DropReason::QueueFull);
    assert!(queue_full > 0, "the small queue overflowed: {metrics:?}");
    assert!(
        received > 100,
        "more than one queue's worth arrived: {received}"
    );
    assert_eq!(received + losses(&metrics), u64::from(n), "{metrics:?}");
}

/// Shutdown closes socket clients the 5.0 way (DISCONNECT 0x8B, server
/// shutting down) and ends host subscriptions' streams.
#[test]
fn shutdown_disconnects_clients_and_ends_subscriptions() {
    let broker = start("");
    let sub = broker.subscribe("#", QoS::AtMostOnce).expect("ok");
    let (mut client, _) = RawClient::connect(addr(&broker), ProtocolVersion::V5, "c5", 0, None);
    let metrics = broker.shutdown().expect("clean shutdown");
    assert!(metrics.connections_opened >= 2, "{metrics:?}");
    let (packets, _) = client.wait_closed(T).expect("closed by the broker");
    assert!(
        packets.iter().any(|p| matches!(p, Packet::Disconnect(d)
            if d.reason_code == ReasonCode::SERVER_SHUTTING_DOWN)),
        "{packets:?}"
    );
    assert!(sub.recv_timeout(T).is_none());
    assert!(sub.is_closed());
}

#[test]
fn a_taken_port_fails_at_start() {
    let first = start("");
    let port = addr(&first).port();
    let text = format!("[[listeners]]\nport = {port}\n");
    let config = Config::parse(&text, "test.toml").expect("valid config");
    let e = Broker::start(&config);
    assert!(matches!(e, Err(Error::Bind { .. })), "{e:?}");
    first.shutdown().expect("clean shutdown");
}

#[test]
fn dropping_the_handle_shuts_down() {
    let broker = start("");
    let sub = broker.subscribe("x", QoS::AtMostOnce).expect("ok");
    drop(broker);
    assert!(sub.recv_timeout(T).is_none());
    assert!(sub.is_closed());
}

#[test]
fn is_closed_never_loses_a_waiting_message() {
    let broker = start("");
    let sub = broker.subscribe("p/#", QoS::AtLeastOnce).expect("ok");
    broker
        .publish("p/a", "one", QoS::AtLeastOnce, false)
        .expect("published");
    // Ask while the message arrives (an in-process delivery takes
    // microseconds; this asks for up to a second): asking must not eat it.
    for _ in 0..1000 {
        assert!(!sub.is_closed(), "the broker is running");
        std::thread::sleep(Duration::from_millis(1));
    }
    let m = sub.recv_timeout(T).expect("the message is still there");
    assert_eq!((&*m.topic, &m.payload[..]), ("p/a", &b"one"[..]));
    broker.shutdown().expect("clean shutdown");
    assert!(sub.recv_timeout(T).is_none());
    assert!(sub.is_closed());
}
