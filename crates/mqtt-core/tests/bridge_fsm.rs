//! The bridge FSM on virtual time: backoff schedule, fail_fast,
//! max_attempts, hybrid transport fallback.
#![allow(clippy::disallowed_methods)]

mod bridge_support;

use bridge_support::*;
use mqtt_core::bridge::{
    Backoff, BridgeEvent, BridgeState, FatalReason, ReconnectPolicy, Transport,
};

fn policy() -> ReconnectPolicy {
    ReconnectPolicy {
        base: secs(1),
        cap: secs(30),
        stable: secs(60),
        max_attempts: None,
    }
}

#[test]
fn backoff_delays_stay_between_base_and_cap_and_replay() {
    let p = policy();
    let mut a = Backoff::new(&p, 42);
    let mut b = Backoff::new(&p, 42);
    let mut prev = p.base;
    for _ in 0..1000 {
        let d = a.next_delay();
        assert_eq!(d, b.next_delay(), "same seed, same schedule");
        assert!(d >= p.base && d <= p.cap, "{d:?}");
        assert!(
            d <= prev * 3,
            "decorrelated jitter: at most 3x the previous"
        );
        prev = d;
    }
}

#[test]
fn unreachable_for_ten_minutes_follows_the_schedule_then_connects() {
    let mut cfg = bridge_config();
    cfg.reconnect = policy();
    let seed = cfg.seed;
    let mut w = World::new(cfg);
    w.reachable = false;
    w.run_until(secs(600));

    // Every dial is refused one RTT later; the next dial is exactly one
    // backoff delay after that, from the same seeded schedule.
    let rtt = w.latency * 2;
    let mut expected = Backoff::new(&policy(), seed);
    assert_eq!(w.dials[0].0, secs(0));
    for pair in w.dials.windows(2) {
        let (t_prev, n_prev, _) = pair[0];
        let (t, n, _) = pair[1];
        assert_eq!(n, n_prev + 1);
        assert_eq!(t, t_prev + rtt + expected.next_delay(), "attempt {n}");
    }
    // Never gave up: the last attempt is within one cap of the end.
    let last = w.dials.last().unwrap().0;
    assert!(last + secs(30) + rtt >= secs(600), "last dial at {last:?}");
    assert!(w.dials.len() > 20, "{} dials", w.dials.len());
    assert_eq!(w.metrics().failed_attempts, w.dials.len() as u64);
    assert_eq!(w.bridge_state(), "backoff");

    // Reachable again: connected within one backoff interval + the
    // transport and MQTT handshakes (2 RTT here).
    w.reachable = true;
    let BridgeState::Backoff { until } = w
        .edge
        .bridge(mqtt_core::node::BridgeId(0))
        .unwrap()
        .state()
        .clone()
    else {
        panic!("not in backoff");
    };
    let at = w
        .run_until_cond(secs(700), ms(10), |w| w.bridge_state() == "connected")
        .expect("connects");
    let connected = w.connected_at()[0];
    assert!(connected <= at);
    assert_eq!(connected, (until - w.t0) + rtt * 2);
    assert!(connected <= secs(600) + secs(30) + rtt * 2);
    assert_eq!(w.metrics().connects, 1);
}

#[test]
fn fail_fast_is_fatal_at_the_first_failed_connect() {
    let mut cfg = bridge_config();
    cfg.fail_fast = true;
    let mut w = World::new(cfg);
    w.reachable = false;
    w.run_until(secs(300));
    assert_eq!(w.dials.len(), 1);
    let fatal: Vec<_> = w
        .events
        .iter()
        .filter(|(_, e)| matches!(e, BridgeEvent::Fatal { .. }))
        .collect();
    assert_eq!(fatal.len(), 1);
    assert_eq!(fatal[0].0, w.latency * 2, "fatal when the refusal arrives");
    assert!(matches!(
        fatal[0].1,
        BridgeEvent::Fatal {
            reason: FatalReason::FailFast { attempt: 1, .. }
        }
    ));
    assert_eq!(w.bridge_state(), "failed");
}

#[test]
fn fail_fast_on_a_silent_remote_after_the_connect_timeout() {
    let mut cfg = bridge_config();
    cfg.fail_fast = true;
    let mut w = World::new(cfg);
    w.blackhole = true;
    w.run_until(secs(300));
    assert_eq!(w.dials.len(), 1);
    let (t, e) = w
        .events
        .iter()
        .find(|(_, e)| matches!(e, BridgeEvent::Fatal { .. }))
        .unwrap();
    assert_eq!(*t, secs(5), "connect_timeout");
    assert!(matches!(e, BridgeEvent::Fatal { .. }));
}

#[test]
fn max_attempts_stops_after_exactly_n_tries() {
    for n in [1u32, 3, 7] {
        let mut cfg = bridge_config();
        cfg.reconnect.max_attempts = Some(n);
        let mut w = World::new(cfg);
        w.reachable = false;
        w.run_until(secs(3600));
        assert_eq!(w.dials.len(), n as usize, "max_attempts = {n}");
        assert_eq!(w.bridge_state(), "failed");
        let fatal = w
            .events
            .iter()
            .filter(|(_, e)| {
                matches!(e, BridgeEvent::Fatal { reason: FatalReason::MaxAttempts { attempts, .. } } if *attempts == n)
            })
            .count();
        assert_eq!(fatal, 1);
        assert_eq!(w.edge.poll_timeout(), w.edge.broker().poll_timeout());
    }
}

#[test]
fn hybrid_falls_back_within_the_attempt_and_retries_the_first_next_time() {
    let mut cfg = bridge_config();
    cfg.transports = vec![Transport::Quic, Transport::Tcp];
    let mut w = World::new(cfg);
    w.silent_transports = vec![Transport::Quic];
    w.run_until(secs(20));
    assert_eq!(w.dials[0], (secs(0), 1, Transport::Quic));
    // QUIC gets no answer: after the connect timeout, TCP in the same attempt.
    assert_eq!(w.dials[1], (secs(5), 1, Transport::Tcp));
    assert_eq!(w.bridge_state(), "connected");
    assert_eq!(w.connected_at(), vec![secs(5) + w.latency * 4]);

    // The link breaks: the next attempt starts with QUIC again, which
    // now works.
    w.silent_transports.clear();
    w.reset_link();
    w.run_until(secs(120));
    let (_, attempt, transport) = w.dials[2];
    assert_eq!((attempt, transport), (2, Transport::Quic));
    assert_eq!(w.dials.len(), 3);
    assert_eq!(w.bridge_state(), "connected");
    assert_eq!(w.metrics().reconnects, 1);
}

#[test]
fn a_flapping_remote_does_not_reset_the_backoff() {
    let mut cfg = bridge_config();
    cfg.reconnect = policy();
    let seed = cfg.seed;
    let mut w = World::new(cfg);
    // Connect, drop after 1 s, twelve times: each delay continues the
    // schedule (no reset to base since the link was never up for `stable`).
    let mut expected = Backoff::new(&policy(), seed);
    let mut delays = Vec::new();
    for _ in 0..12 {
        let t = w
            .run_until_cond(secs(10_000), ms(5), |w| w.bridge_state() == "connected")
            .unwrap();
        w.run_until(t + secs(1));
        let down_at = w.elapsed();
        w.reset_link();
        delays.push((down_at, expected.next_delay()));
        let dials = w.dials.len();
        w.run_until_cond(secs(10_000), ms(5), |w| w.dials.len() > dials)
            .unwrap();
        let dial_at = w.dials.last().unwrap().0;
        assert_eq!(dial_at, down_at + delays.last().unwrap().1);
    }
    // Now stay up past `stable`: the next delay is drawn from the base again.
    let t = w
        .run_until_cond(secs(10_000), ms(5), |w| w.bridge_state() == "connected")
        .unwrap();
    w.run_until(t + secs(61));
    let down_at = w.elapsed();
    w.reset_link();
    expected.reset();
    let d = expected.next_delay();
    assert!(d <= secs(3));
    let dials = w.dials.len();
    w.run_until_cond(secs(10_000), ms(5), |w| w.dials.len() > dials)
        .unwrap();
    assert_eq!(w.dials.last().unwrap().0, down_at + d);
}

#[test]
fn config_errors_are_typed() {
    use mqtt_core::bridge::{Bridge, BridgeConfig, BridgeConfigError, Forward};
    use mqtt_core::codec::QoS;
    let now = std::time::Instant::now();
    let e = Bridge::new(BridgeConfig::default(), now).unwrap_err();
    assert!(matches!(e, BridgeConfigError::NoAddresses(_)));
    let mut cfg = bridge_config();
    cfg.transports.clear();
    assert!(matches!(
        Bridge::new(cfg, now).unwrap_err(),
        BridgeConfigError::NoTransports(_)
    ));
    let mut cfg = bridge_config();
    cfg.forwards = vec![Forward::new("a/#/b", QoS::AtLeastOnce)];
    assert!(matches!(
        Bridge::new(cfg, now).unwrap_err(),
        BridgeConfigError::InvalidFilter { .. }
    ));
}

#[test]
fn a_late_transport_after_giving_up_on_the_dial_is_closed() {
    use mqtt_core::bridge::{Bridge, TransportFailure};
    let t0 = std::time::Instant::now();
    let mut b = Bridge::new(bridge_config(), t0).unwrap();
    b.start(t0);
    let events: Vec<_> = std::iter::from_fn(|| b.poll_event()).collect();
    assert!(matches!(
        events.last(),
        Some(BridgeEvent::Dial { attempt: 1, .. })
    ));
    b.handle_transport_failed(TransportFailure::Refused, t0 + ms(10));
    assert_eq!(b.state().name(), "backoff");
    while b.poll_event().is_some() {}
    // The runtime's dial completes anyway: the bridge asks to close it and
    // stays in backoff; stray bytes and downs are ignored.
    b.handle_transport_up(t0 + ms(20));
    assert_eq!(b.poll_event(), Some(BridgeEvent::CloseTransport));
    b.handle_remote_read(
        &mut bytes::BytesMut::from(&[0x20u8, 0x02, 0, 0][..]),
        t0 + ms(21),
    );
    b.handle_transport_down(t0 + ms(22));
    assert_eq!(b.state().name(), "backoff");
    assert_eq!(b.poll_event(), None);
    assert!(b.poll_remote_transmit().is_none());
    // Spurious and early timeouts change nothing.
    b.handle_timeout(t0 + ms(23));
    assert_eq!(b.state().name(), "backoff");
    let at = b.poll_timeout().unwrap();
    b.handle_timeout(at);
    assert!(matches!(
        b.poll_event(),
        Some(BridgeEvent::StateChanged { .. })
    ));
    assert!(matches!(
        b.poll_event(),
        Some(BridgeEvent::Dial { attempt: 2, .. })
    ));
}

#[test]
fn a_silent_remote_is_detected_within_keepalive_plus_ping_timeout() {
    let mut w = World::new(bridge_config());
    w.run_until(secs(1));
    assert_eq!(w.bridge_state(), "connected");
    let connected = w.connected_at()[0];
    w.blackhole = true;
    w.run_until(secs(60));
    let lost = w
        .events
        .iter()
        .find(|(_, e)| matches!(e, BridgeEvent::CloseTransport))
        .map(|(t, _)| *t)
        .unwrap();
    // PINGREQ one keep alive after CONNECT went out, no PINGRESP within the
    // ping timeout: exactly then, and not before.
    let connect_sent = connected - w.latency * 2;
    assert_eq!(lost, connect_sent + secs(10) + secs(5));
    assert_eq!(w.metrics().connection_losses, 1);
}

/// The reasons carried by the state changes into Backoff and Failed, with
/// their log text.
fn reasons(w: &World) -> Vec<(String, String)> {
    w.events
        .iter()
        .filter_map(|(_, e)| match e {
            BridgeEvent::StateChanged {
                to,
                reason: Some(r),
                ..
            } => Some((to.name().to_owned(), r.to_string())),
            _ => None,
        })
        .collect()
}

#[test]
fn state_changes_say_why_the_dial_failed() {
    use mqtt_core::bridge::{AttemptFailure, StateReason, TransportFailure};
    // Refused.
    let mut w = World::new(bridge_config());
    w.reachable = false;
    w.run_until(secs(1));
    let first = w
        .events
        .iter()
        .find_map(|(_, e)| match e {
            BridgeEvent::StateChanged {
                to: BridgeState::Backoff { .. },
                reason,
                ..
            } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(matches!(
        first,
        Some(StateReason::Attempt(AttemptFailure::Transport {
            failure: TransportFailure::Refused,
            ..
        }))
    ));
    assert_eq!(
        reasons(&w)[0],
        (
            "backoff".into(),
            "tcp://cloud:1883: connection refused".into()
        )
    );
    // No answer to the dial at all: the connect timeout.
    let mut w = World::new(bridge_config());
    w.blackhole = true;
    w.run_until(secs(6));
    assert_eq!(
        reasons(&w)[0],
        ("backoff".into(), "tcp://cloud:1883: timed out".into())
    );
    // The transport comes up but no CONNACK: handshake timeout.
    let mut w = World::new(bridge_config());
    w.run_until(ms(30)); // the dial reached the cloud; the CONNECT will not
    w.blackhole = true;
    w.run_until(secs(6));
    assert_eq!(
        reasons(&w)[0],
        (
            "backoff".into(),
            "tcp://cloud:1883: no CONNACK within the connect timeout".into()
        )
    );
    // The remote refuses the CONNECT (client id too long: 0x85), and
    // fail_fast makes it fatal; the Failed state says why too.
    let mut cfg = bridge_config();
    cfg.fail_fast = true;
    let cloud = mqtt_core::broker::BrokerConfig {
        max_client_id_len: 5,
        ..broker_config("cloud")
    };
    let mut w = World::with_brokers(cfg, broker_config("edge"), cloud);
    w.run_until(secs(1));
    let r = reasons(&w);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].0, "failed");
    assert!(
        r[0].1.starts_with(
            "fail_fast: connect attempt 1 failed: tcp://cloud:1883: CONNACK refused 0x85"
        ),
        "{r:?}"
    );
}

#[test]
fn state_changes_say_why_the_link_was_lost() {
    let mut w = World::new(bridge_config());
    w.run_until(secs(1));
    assert_eq!(w.bridge_state(), "connected");
    // The normal steps carry no reason.
    assert!(reasons(&w).is_empty(), "{:?}", reasons(&w));
    // RST / FIN from the remote.
    w.reset_link();
    let t = w
        .run_until_cond(secs(60), ms(5), |w| w.bridge_state() == "connected")
        .unwrap();
    // The remote's session is taken over: DISCONNECT 0x8E.
    w.run_until(t + secs(1));
    w.takeover("sansmq-bridge-up");
    // The DISCONNECT is one way away.
    w.run_until_cond(secs(120), ms(5), |w| w.bridge_state() != "connected")
        .unwrap();
    let t = w
        .run_until_cond(secs(120), ms(5), |w| w.bridge_state() == "connected")
        .unwrap();
    // The remote goes silent: no PINGRESP.
    w.run_until(t + secs(1));
    w.blackhole = true;
    w.run_until(t + secs(30));
    let r = reasons(&w);
    let lost: Vec<&str> = r
        .iter()
        .filter(|(to, _)| to == "backoff")
        .map(|(_, why)| why.as_str())
        .collect();
    assert_eq!(
        lost[..3],
        [
            "remote closed the connection",
            "remote sent DISCONNECT 0x8E Session taken over",
            "keepalive timeout (no PINGRESP)",
        ],
        "{r:?}"
    );
}
