//! Two `QuicEndpoint`s wired in memory on a virtual clock: datagrams move
//! through a queue with a fixed latency, time jumps to the next delivery
//! or `poll_timeout()`. No sockets, no sleeps; every drive is bounded in
//! steps and virtual time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_quic::{
    client_config, parse_certs_pem, parse_key_pem, server_config, CertificateDer, PrivateKeyDer,
    QuicCloseReason, QuicConnId, QuicEndpoint, QuicEvent, QuicSettings, ServerTrust,
};

const LATENCY: Duration = Duration::from_millis(5);
const MAX_STEPS: usize = 200_000;

struct Cert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn cert(name: &str) -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("rcgen");
    // Through PEM, so the parsers are exercised too.
    let chain = parse_certs_pem(ck.cert.pem().as_bytes(), "cert.pem").expect("cert pem");
    let key = parse_key_pem(ck.key_pair.serialize_pem().as_bytes(), "key.pem").expect("key pem");
    Cert { chain, key }
}

fn settings() -> QuicSettings {
    QuicSettings {
        keep_alive_interval: None,
        idle_timeout: Duration::from_secs(30),
        handshake_timeout: Duration::from_secs(5),
        initial_rtt: Duration::from_millis(50),
        ..QuicSettings::default()
    }
}

#[derive(Debug)]
struct Seen {
    at: Instant,
    event: QuicEvent,
}

struct Net {
    now: Instant,
    start: Instant,
    client: QuicEndpoint,
    server: QuicEndpoint,
    caddr: SocketAddr,
    saddr: SocketAddr,
    /// (deliver at, to server?, from, bytes)
    wire: VecDeque<(Instant, bool, SocketAddr, Bytes)>,
    drop_to_server: bool,
    drop_to_client: bool,
    cev: Vec<Seen>,
    sev: Vec<Seen>,
    /// (when, to the server?, bytes) of every datagram sent.
    sent: Vec<(Duration, bool, usize)>,
}

impl Net {
    fn new(client: QuicEndpoint, server: QuicEndpoint) -> Self {
        let now = Instant::now();
        Self {
            now,
            start: now,
            client,
            server,
            caddr: "127.0.0.1:40000".parse().expect("addr"),
            saddr: "127.0.0.1:14567".parse().expect("addr"),
            wire: VecDeque::new(),
            drop_to_server: false,
            drop_to_client: false,
            cev: Vec::new(),
            sev: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn pair(s: &QuicSettings, c: &Cert, trust: ServerTrust) -> Self {
        Self::pair_seeded(s, c, trust, ([1; 32], [2; 32]))
    }

    /// A client trusting `trust` and a server with `c`, endpoints seeded
    /// with `seeds` (client, server).
    fn pair_seeded(
        s: &QuicSettings,
        c: &Cert,
        trust: ServerTrust,
        seeds: ([u8; 32], [u8; 32]),
    ) -> Self {
        let server = server_config(c.chain.clone(), c.key.clone_key(), None, s).expect("server");
        let client = client_config(trust, None, s).expect("client");
        Self::new(
            QuicEndpoint::new(None, Some(client), s, Some(seeds.0)),
            QuicEndpoint::new(Some(server), None, s, Some(seeds.1)),
        )
    }

    /// A server with a fresh `localhost` certificate and a client that
    /// trusts exactly it.
    fn trusted(s: &QuicSettings) -> (Cert, Self) {
        let c = cert("localhost");
        let net = Self::pair(s, &c, ServerTrust::Roots(c.chain.clone()));
        (c, net)
    }

    /// [`Net::trusted`] with [`settings`], established with `first` sent.
    fn established(first: &[u8]) -> (Self, QuicConnId, QuicConnId) {
        let (_c, mut net) = Self::trusted(&settings());
        let (cid, sid) = net.establish(first);
        (net, cid, sid)
    }

    /// The client connects to the server (`localhost`) now.
    fn connect(&mut self) -> QuicConnId {
        let now = self.now;
        self.client
            .connect(now, self.saddr, "localhost")
            .expect("connect")
    }

    /// Run until the client side of `cid` closed; when and why.
    fn client_closes(&mut self, limit: Duration, cid: QuicConnId) -> (Instant, QuicCloseReason) {
        self.run_until(limit, |n| Net::closed(&n.cev, cid).is_some());
        Net::closed(&self.cev, cid).expect("closed")
    }

    /// Run until the server side of `sid` closed; when and why.
    fn server_closes(&mut self, limit: Duration, sid: QuicConnId) -> (Instant, QuicCloseReason) {
        self.run_until(limit, |n| Net::closed(&n.sev, sid).is_some());
        Net::closed(&self.sev, sid).expect("closed")
    }

    /// Run until both sides closed `cid` / `sid`.
    fn both_close(&mut self, limit: Duration, cid: QuicConnId, sid: QuicConnId) {
        self.run_until(limit, |n| {
            Net::closed(&n.cev, cid).is_some() && Net::closed(&n.sev, sid).is_some()
        });
    }

    /// Run until both endpoints forgot every connection (30 s at most).
    fn drain(&mut self) {
        self.run_until(Duration::from_secs(30), |n| {
            n.client.connection_count() == 0 && n.server.connection_count() == 0
        });
    }

    /// Run until the client received exactly `want` on `cid`.
    fn client_gets(&mut self, limit: Duration, cid: QuicConnId, want: &[u8]) {
        self.run_until(limit, |n| Net::data(&n.cev, cid) == want);
    }

    /// Run until the server accepted a connection and received exactly
    /// `want` on it.
    fn server_gets(&mut self, limit: Duration, want: &[u8]) {
        self.run_until(limit, |n| {
            n.server_accepted()
                .is_some_and(|s| Net::data(&n.sev, s) == want)
        });
    }

    /// The server answers CONNACK, the client reads it within `limit`,
    /// closes the connection, and both endpoints drain.
    fn connack_then_close(&mut self, limit: Duration, cid: QuicConnId, sid: QuicConnId) {
        self.server
            .write(sid, Bytes::from_static(b"CONNACK"))
            .expect("write");
        self.client_gets(limit, cid, b"CONNACK");
        let now = self.now;
        self.client.close(now, cid, 0, "");
        self.drain();
    }

    /// Move everything that is ready now; true if anything moved.
    fn pump(&mut self) -> bool {
        let mut moved = false;
        let now = self.now;
        // The client's datagrams first, then the server's.
        for to_server in [true, false] {
            let (from, (endpoint, to, dropped)) = if to_server {
                (
                    self.caddr,
                    (&mut self.client, self.saddr, self.drop_to_server),
                )
            } else {
                (
                    self.saddr,
                    (&mut self.server, self.caddr, self.drop_to_client),
                )
            };
            while let Some(d) = endpoint.poll_transmit(now) {
                assert_eq!(d.destination, to);
                moved = true;
                for seg in d.segments() {
                    self.sent.push((now - self.start, to_server, seg.len()));
                    if !dropped {
                        self.wire.push_back((now + LATENCY, to_server, from, seg));
                    }
                }
            }
        }
        while let Some(event) = self.client.poll_event() {
            moved = true;
            self.cev.push(Seen { at: now, event });
        }
        while let Some(event) = self.server.poll_event() {
            moved = true;
            self.sev.push(Seen { at: now, event });
        }
        moved
    }

    /// One step: pump, then jump to the next delivery or timer and run it.
    /// False when nothing is scheduled.
    fn step(&mut self) -> bool {
        while self.pump() {}
        let next = [
            self.wire.front().map(|w| w.0),
            self.client.poll_timeout(),
            self.server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return false };
        self.now = self.now.max(next);
        while self.wire.front().is_some_and(|w| w.0 <= self.now) {
            let Some((_, to_server, from, bytes)) = self.wire.pop_front() else {
                break;
            };
            let data = BytesMut::from(&bytes[..]);
            if to_server {
                self.server.handle_datagram(self.now, from, data);
            } else {
                self.client.handle_datagram(self.now, from, data);
            }
        }
        let now = self.now;
        self.client.handle_timeout(now);
        self.server.handle_timeout(now);
        true
    }

    /// Step until `done` holds; bounded in steps and virtual time.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) {
        for _ in 0..MAX_STEPS {
            while self.pump() {}
            if done(self) {
                return;
            }
            assert!(
                self.now - self.start <= limit,
                "condition not met within {limit:?} of virtual time"
            );
            if !self.step() {
                while self.pump() {}
                assert!(done(self), "nothing scheduled and the condition is not met");
                return;
            }
        }
        panic!("condition not met within {MAX_STEPS} steps");
    }

    fn client_connected(&self) -> Option<QuicConnId> {
        self.cev.iter().find_map(|s| match s.event {
            QuicEvent::Connected { conn, .. } => Some(conn),
            _ => None,
        })
    }

    fn server_accepted(&self) -> Option<QuicConnId> {
        self.sev.iter().find_map(|s| match s.event {
            QuicEvent::Accepted { conn, .. } => Some(conn),
            _ => None,
        })
    }

    fn data(events: &[Seen], id: QuicConnId) -> Vec<u8> {
        let mut out = Vec::new();
        for s in events {
            if let QuicEvent::Data { conn, bytes } = &s.event {
                if *conn == id {
                    out.extend_from_slice(bytes);
                }
            }
        }
        out
    }

    fn closed(events: &[Seen], id: QuicConnId) -> Option<(Instant, QuicCloseReason)> {
        events.iter().find_map(|s| match &s.event {
            QuicEvent::Closed { conn, reason } if *conn == id => Some((s.at, reason.clone())),
            _ => None,
        })
    }

    /// Connect, send `first` from the client (MQTT's CONNECT role), and
    /// wait until the server accepted the stream.
    fn establish(&mut self, first: &[u8]) -> (QuicConnId, QuicConnId) {
        let now = self.now;
        let c = self
            .client
            .connect(now, self.saddr, "localhost")
            .expect("connect");
        self.client
            .write(c, Bytes::copy_from_slice(first))
            .expect("write before connected is queued");
        self.run_until(Duration::from_secs(10), |n| {
            n.client_connected().is_some() && n.server_accepted().is_some()
        });
        let s = self.server_accepted().expect("accepted");
        (c, s)
    }
}

#[test]
fn handshake_then_bytes_both_ways_in_order() {
    let (mut net, cid, sid) = Net::established(b"CONNECT");
    net.run_until(Duration::from_secs(10), |n| {
        Net::data(&n.sev, sid) == b"CONNECT"
    });
    net.server
        .write(sid, Bytes::from_static(b"CONNACK"))
        .expect("server write");
    net.client
        .write(cid, Bytes::from_static(b"PUBLISH-1"))
        .expect("client write");
    net.client
        .write(cid, Bytes::from_static(b"PUBLISH-2"))
        .expect("client write");
    net.run_until(Duration::from_secs(10), |n| {
        Net::data(&n.cev, cid) == b"CONNACK"
            && Net::data(&n.sev, sid) == b"CONNECTPUBLISH-1PUBLISH-2"
    });
    assert!(net.client.is_open(cid) && net.server.is_open(sid));
    assert!(Net::closed(&net.cev, cid).is_none());
    // The client's Connected comes before any of its Data.
    let first = net
        .cev
        .iter()
        .position(|s| matches!(s.event, QuicEvent::Connected { .. }));
    let data = net
        .cev
        .iter()
        .position(|s| matches!(s.event, QuicEvent::Data { .. }));
    assert!(first < data, "{:?}", net.cev);
}

#[test]
fn handshake_timeout_fires_exactly_when_datagrams_are_dropped() {
    let s = settings();
    let (_c, mut net) = Net::trusted(&s);
    net.drop_to_server = true;
    let t0 = net.now;
    let cid = net.connect();
    let (at, reason) = net.client_closes(Duration::from_secs(20), cid);
    assert_eq!(reason, QuicCloseReason::HandshakeTimeout);
    // Exact in virtual time: the deadline is a timer, not a poll.
    assert_eq!(at - t0, s.handshake_timeout);
    assert!(net.client_connected().is_none());
}

#[test]
fn idle_timeout_when_the_peer_goes_silent() {
    let s = settings();
    let (_c, mut net) = Net::trusted(&s);
    let (cid, sid) = net.establish(b"hi");
    // The peer vanishes: nothing gets through any more, either way.
    net.drop_to_server = true;
    net.drop_to_client = true;
    let t0 = net.now;
    net.both_close(Duration::from_secs(120), cid, sid);
    let (at, reason) = Net::closed(&net.cev, cid).expect("client closed");
    assert_eq!(reason, QuicCloseReason::IdleTimeout);
    // RFC 9000 10.1: at least the idle timeout (or 3 PTO if larger).
    assert!(
        at - t0 >= s.idle_timeout - Duration::from_secs(1),
        "{:?}",
        at - t0
    );
    let (_, reason) = Net::closed(&net.sev, sid).expect("server closed");
    assert_eq!(reason, QuicCloseReason::IdleTimeout);
}

#[test]
fn quic_keep_alive_keeps_an_idle_connection_open() {
    let s = QuicSettings {
        keep_alive_interval: Some(Duration::from_secs(5)),
        ..settings()
    };
    let (_c, mut net) = Net::trusted(&s);
    let (cid, _) = net.establish(b"hi");
    let until = net.now + 3 * s.idle_timeout;
    net.run_until(4 * s.idle_timeout, |n| n.now >= until);
    assert!(net.client.is_open(cid));
    assert!(Net::closed(&net.cev, cid).is_none());
}

#[test]
fn peer_close_surfaces_with_its_code() {
    let (mut net, cid, sid) = Net::established(b"hi");
    let now = net.now;
    net.server.close(now, sid, 7, "bye");
    let (_, reason) = net.client_closes(Duration::from_secs(10), cid);
    assert_eq!(
        reason,
        QuicCloseReason::PeerClosed {
            code: 7,
            reason: "bye".into()
        }
    );
    let (_, local) = Net::closed(&net.sev, sid).expect("server closed too");
    assert_eq!(local, QuicCloseReason::LocallyClosed);
    // Both sides forget the connection once drained.
    net.drain();
}

#[test]
fn stream_reset_surfaces_as_stream_reset() {
    let (mut net, cid, sid) = Net::established(b"hi");
    let now = net.now;
    net.client.reset(now, cid, 9);
    let (_, reason) = net.server_closes(Duration::from_secs(10), sid);
    assert_eq!(reason, QuicCloseReason::StreamReset { code: 9 });
    net.drain();
}

#[test]
fn finish_delivers_everything_then_the_peer_sees_the_end() {
    let (mut net, cid, sid) = Net::established(b"CONNECT");
    let now = net.now;
    net.server
        .write(sid, Bytes::from_static(b"DISCONNECT"))
        .expect("write");
    net.server.finish(now, sid);
    assert!(net.server.write(sid, Bytes::from_static(b"x")).is_err());
    net.both_close(Duration::from_secs(10), cid, sid);
    assert_eq!(Net::data(&net.cev, cid), b"DISCONNECT");
    let (_, reason) = Net::closed(&net.cev, cid).expect("closed");
    // FIN arrives first (PeerFinished); our reaction closes the connection.
    assert!(
        matches!(
            reason,
            QuicCloseReason::PeerFinished | QuicCloseReason::PeerClosed { code: 0, .. }
        ),
        "{reason:?}"
    );
}

#[test]
fn large_transfer_respects_flow_control_and_arrives_intact() {
    let s = QuicSettings {
        stream_receive_window: 64 * 1024,
        receive_window: 128 * 1024,
        send_window: 64 * 1024,
        max_datagrams_per_transmit: 10,
        ..settings()
    };
    let (_c, mut net) = Net::trusted(&s);
    let (cid, sid) = net.establish(b"C");
    let total = 2 * 1024 * 1024;
    let payload: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    for chunk in payload.chunks(10_000) {
        net.client
            .write(cid, Bytes::copy_from_slice(chunk))
            .expect("write");
    }
    // quinn took at most its send window; the rest waits here.
    let waiting = net.client.buffered(cid);
    assert!(
        waiting >= total - 64 * 1024 - 1,
        "only {waiting} bytes wait: the send window was not respected"
    );
    let mut max_seen_buffered = 0;
    net.run_until(Duration::from_secs(60), |n| {
        max_seen_buffered = max_seen_buffered.max(n.client.buffered(cid));
        Net::data(&n.sev, sid).len() == total + 1
    });
    let got = Net::data(&net.sev, sid);
    assert_eq!(got[0], b'C');
    assert!(got[1..] == payload[..], "payload corrupted or reordered");
    assert_eq!(net.client.buffered(cid), 0);
    // GSO batches were produced and split by `segments()` above.
    assert!(max_seen_buffered > 0);
}

/// Small windows, so a paused reader blocks the peer after little data.
fn paused_settings() -> QuicSettings {
    QuicSettings {
        stream_receive_window: 64 * 1024,
        receive_window: 128 * 1024,
        send_window: 64 * 1024,
        keep_alive_interval: Some(Duration::from_secs(5)),
        ..settings()
    }
}

/// Established with [`paused_settings`] (QUIC keep-alive on, so waiting
/// on a paused connection jumps to keep-alives, not to the idle timeout),
/// `C` received by the server.
fn established_with_keep_alive() -> (Net, QuicConnId, QuicConnId) {
    let (_c, mut net) = Net::trusted(&paused_settings());
    let (cid, sid) = net.establish(b"C");
    net.server_gets(Duration::from_secs(10), b"C");
    (net, cid, sid)
}

/// Data events of `id` in `events` from index `from` on.
fn data_events_since(events: &[Seen], id: QuicConnId, from: usize) -> usize {
    events[from..]
        .iter()
        .filter(|s| matches!(&s.event, QuicEvent::Data { conn, .. } if *conn == id))
        .count()
}

#[test]
fn a_paused_reader_blocks_the_peer_by_flow_control_then_gets_everything_in_order() {
    let s = paused_settings();
    let (_c, mut net) = Net::trusted(&s);
    let (cid, sid) = net.establish(b"C");
    net.server_gets(Duration::from_secs(10), b"C");
    let now = net.now;
    net.server.set_read_paused(now, sid, true);
    assert!(net.server.is_read_paused(sid));
    let seen_before = net.sev.len();

    // Far more than the stream window (64 KiB).
    let total = 1024 * 1024;
    let payload: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    for chunk in payload.chunks(10_000) {
        net.client
            .write(cid, Bytes::copy_from_slice(chunk))
            .expect("write");
    }
    // Paused for longer than the idle timeout: QUIC keep-alive still runs.
    let until = net.now + s.idle_timeout + Duration::from_secs(10);
    net.run_until(s.idle_timeout * 2, |n| n.now >= until);
    assert!(net.client.is_open(cid) && net.server.is_open(sid));
    assert!(Net::closed(&net.cev, cid).is_none() && Net::closed(&net.sev, sid).is_none());
    // Nothing past what was read before the pause...
    assert_eq!(data_events_since(&net.sev, sid, seen_before), 0);
    assert_eq!(Net::data(&net.sev, sid), b"C");
    // ...and the client is blocked: its quinn took at most what the
    // server may buffer plus its own send window; the rest waits.
    let taken = total - net.client.buffered(cid);
    let bound = (s.stream_receive_window + s.send_window) as usize;
    assert!(
        taken <= bound,
        "the client got {taken} bytes out (bound {bound})"
    );
    assert!(taken > 0, "nothing was sent at all");

    // Resume: what waited comes at once, then the rest, in order.
    let now = net.now;
    net.server.set_read_paused(now, sid, false);
    assert!(!net.server.is_read_paused(sid));
    let mut first = Vec::new();
    while let Some(ev) = net.server.poll_event() {
        if let QuicEvent::Data { bytes, .. } = &ev {
            first.extend_from_slice(bytes);
        }
        net.sev.push(Seen { at: now, event: ev });
    }
    assert!(
        !first.is_empty(),
        "the buffered bytes are reported on resume"
    );
    assert!(first[..] == payload[..first.len()]);
    net.run_until(Duration::from_secs(120), |n| {
        Net::data(&n.sev, sid).len() == total + 1
    });
    let got = Net::data(&net.sev, sid);
    assert!(got[1..] == payload[..], "payload corrupted or reordered");
    assert_eq!(net.client.buffered(cid), 0);
}

#[test]
fn pausing_twice_or_resuming_an_unpaused_connection_changes_nothing() {
    let (mut net, cid, sid) = established_with_keep_alive();
    let now = net.now;
    net.server.set_read_paused(now, sid, false);
    net.server.set_read_paused(now, sid, true);
    net.server.set_read_paused(now, sid, true);
    net.client
        .write(cid, Bytes::from_static(b"-more"))
        .expect("write");
    let until = net.now + Duration::from_secs(1);
    net.run_until(Duration::from_secs(10), |n| n.now >= until);
    assert_eq!(Net::data(&net.sev, sid), b"C");
    let now = net.now;
    net.server.set_read_paused(now, sid, false);
    net.server_gets(Duration::from_secs(10), b"C-more");
    // Unknown connections are ignored.
    net.server.set_read_paused(now, QuicConnId(999), true);
    assert!(!net.server.is_read_paused(QuicConnId(999)));
}

#[test]
fn a_reset_is_reported_while_paused() {
    let (mut net, cid, sid) = established_with_keep_alive();
    let now = net.now;
    net.server.set_read_paused(now, sid, true);
    net.client
        .write(cid, Bytes::from_static(b"unread"))
        .expect("write");
    let until = net.now + Duration::from_secs(1);
    net.run_until(Duration::from_secs(10), |n| n.now >= until);
    let now = net.now;
    net.client.reset(now, cid, 9);
    let (_, reason) = net.server_closes(Duration::from_secs(10), sid);
    assert_eq!(reason, QuicCloseReason::StreamReset { code: 9 });
    // A reset discards the stream's data.
    assert_eq!(Net::data(&net.sev, sid), b"C");
    net.drain();
}

#[test]
fn a_paused_connection_closed_by_the_peer_hands_over_what_waited_first() {
    let (mut net, cid, sid) = established_with_keep_alive();
    let now = net.now;
    net.server.set_read_paused(now, sid, true);
    net.client
        .write(cid, Bytes::from_static(b"-DISCONNECT"))
        .expect("write");
    // The client finishes: once its FIN is acknowledged (not read) it
    // closes the connection.
    net.client.finish(now, cid);
    let (_, reason) = net.server_closes(Duration::from_secs(10), sid);
    assert!(
        matches!(reason, QuicCloseReason::PeerClosed { code: 0, .. }),
        "{reason:?}"
    );
    assert_eq!(Net::data(&net.sev, sid), b"C-DISCONNECT");
    // Data first, then Closed.
    let last = net
        .sev
        .iter()
        .rposition(|s| matches!(s.event, QuicEvent::Data { .. }));
    let closed = net
        .sev
        .iter()
        .position(|s| matches!(s.event, QuicEvent::Closed { .. }));
    assert!(last < closed);
    net.drain();
}

#[test]
fn a_local_close_works_while_paused() {
    let (mut net, cid, sid) = established_with_keep_alive();
    let now = net.now;
    net.server.set_read_paused(now, sid, true);
    net.server.close(now, sid, 3, "bye");
    let (_, reason) = net.client_closes(Duration::from_secs(10), cid);
    assert_eq!(
        reason,
        QuicCloseReason::PeerClosed {
            code: 3,
            reason: "bye".into()
        }
    );
    net.drain();
}

/// The client connects to a server with `server_cert`, trusting `trust`,
/// and the handshake fails with a TLS reason.
fn tls_failure(server_cert: &Cert, trust: ServerTrust) -> Net {
    let mut net = Net::pair(&settings(), server_cert, trust);
    let cid = net.connect();
    let (_, reason) = net.client_closes(Duration::from_secs(10), cid);
    assert!(matches!(reason, QuicCloseReason::Tls(_)), "{reason:?}");
    net
}

#[test]
fn untrusted_certificate_fails_with_a_tls_reason() {
    let server_cert = cert("localhost");
    let other = cert("localhost");
    let net = tls_failure(&server_cert, ServerTrust::Roots(other.chain.clone()));
    assert!(net.server_accepted().is_none());
}

#[test]
fn wrong_server_name_fails_with_a_tls_reason() {
    let c = cert("broker.example");
    tls_failure(&c, ServerTrust::Roots(c.chain.clone()));
}

#[test]
fn insecure_skip_verify_accepts_any_certificate() {
    let c = cert("broker.example");
    let mut net = Net::pair(&settings(), &c, ServerTrust::InsecureSkipVerify);
    let (_, sid) = net.establish(b"x");
    net.run_until(Duration::from_secs(10), |n| Net::data(&n.sev, sid) == b"x");
}

#[test]
fn a_refusing_server_refuses_new_connections() {
    let s = settings();
    let (_c, mut net) = Net::trusted(&s);
    net.server.set_refusing(true);
    let now = net.now;
    let cid = net.connect();
    let (at, reason) = net.client_closes(Duration::from_secs(10), cid);
    assert_eq!(reason, QuicCloseReason::Refused);
    // A refusal is an answer, long before the handshake timeout.
    assert!(at - now < s.handshake_timeout);
}

#[test]
fn client_certificates_are_verified_when_a_client_ca_is_set() {
    let server = cert("localhost");
    let client_ok = cert("edge1");
    let client_bad = cert("edge2");
    let s = settings();
    let sc = server_config(
        server.chain.clone(),
        server.key.clone_key(),
        Some(client_ok.chain.clone()),
        &s,
    )
    .expect("server");
    for (identity, ok) in [(&client_ok, true), (&client_bad, false)] {
        let cc = client_config(
            ServerTrust::Roots(server.chain.clone()),
            Some(mqtt_quic::ClientIdentity {
                cert_chain: identity.chain.clone(),
                key: identity.key.clone_key(),
            }),
            &s,
        )
        .expect("client");
        let mut net = Net::new(
            QuicEndpoint::new(None, Some(cc), &s, Some([5; 32])),
            QuicEndpoint::new(Some(sc.clone()), None, &s, Some([6; 32])),
        );
        let cid = net.connect();
        net.client
            .write(cid, Bytes::from_static(b"CONNECT"))
            .expect("write");
        net.run_until(Duration::from_secs(10), |n| {
            n.server_accepted().is_some() || Net::closed(&n.cev, cid).is_some()
        });
        assert_eq!(net.server_accepted().is_some(), ok);
        if !ok {
            let (_, reason) = Net::closed(&net.cev, cid).expect("closed");
            assert!(matches!(reason, QuicCloseReason::Tls(_)), "{reason:?}");
        }
    }
}

#[test]
fn zero_rtt_resumption_sends_mqtt_in_the_first_flight() {
    let (mut net, cid, sid) = Net::established(b"CONNECT-1");
    // Let the session tickets arrive, then end the first connection.
    net.connack_then_close(Duration::from_secs(5), cid, sid);
    net.cev.clear();
    net.sev.clear();

    let now = net.now;
    let cid2 = net.connect();
    // Connected at once, before any datagram went anywhere: 0-RTT.
    while let Some(event) = net.client.poll_event() {
        net.cev.push(Seen { at: now, event });
    }
    assert_eq!(net.client_connected(), Some(cid2), "{:?}", net.cev);
    net.client
        .write(cid2, Bytes::from_static(b"CONNECT-2"))
        .expect("write");
    net.server_gets(Duration::from_secs(5), b"CONNECT-2");
    assert!(net.client.accepted_0rtt(cid2));
}

#[test]
fn rejected_zero_rtt_is_replayed_on_a_fresh_stream() {
    let s = settings();
    let (c, mut net) = Net::trusted(&s);
    let (cid, sid) = net.establish(b"CONNECT-1");
    net.connack_then_close(Duration::from_secs(5), cid, sid);
    // The server restarts: it no longer knows the client's session ticket.
    let sc = server_config(c.chain.clone(), c.key.clone_key(), None, &s).expect("server");
    net.server = QuicEndpoint::new(Some(sc), None, &s, Some([7; 32]));
    net.cev.clear();
    net.sev.clear();
    let cid2 = net.connect();
    net.client
        .write(cid2, Bytes::from_static(b"CONNECT-2"))
        .expect("write");
    net.server_gets(Duration::from_secs(5), b"CONNECT-2");
    assert!(!net.client.accepted_0rtt(cid2));
    // Exactly one Connected for the connection, and it stays usable.
    let connected = net
        .cev
        .iter()
        .filter(|s| matches!(s.event, QuicEvent::Connected { .. }))
        .count();
    assert_eq!(connected, 1);
    net.client
        .write(cid2, Bytes::from_static(b"+more"))
        .expect("write");
    net.server_gets(Duration::from_secs(5), b"CONNECT-2+more");
}

#[test]
fn pem_errors_name_the_file() {
    let e = parse_certs_pem(b"not a pem", "/etc/sansmq/cert.pem").expect_err("no cert");
    assert!(e.to_string().contains("/etc/sansmq/cert.pem"), "{e}");
    let e = parse_key_pem(b"", "/etc/sansmq/key.pem").expect_err("no key");
    assert!(e.to_string().contains("/etc/sansmq/key.pem"), "{e}");
}

#[test]
fn effective_keep_alive_stays_below_the_idle_timeout() {
    let d = QuicSettings::default();
    assert_eq!(d.keep_alive_interval, Some(Duration::from_secs(120)));
    assert_eq!(d.effective_keep_alive(), Some(Duration::from_secs(60)));
    let off = QuicSettings {
        keep_alive_interval: None,
        ..d.clone()
    };
    assert_eq!(off.effective_keep_alive(), None);
    let no_idle = QuicSettings {
        idle_timeout: Duration::ZERO,
        ..d
    };
    assert_eq!(
        no_idle.effective_keep_alive(),
        Some(Duration::from_secs(120))
    );
}

/// Everything observable of one run, on the virtual clock: the events
/// (with their times) and the size and time of every datagram sent.
fn trace_of_a_run(c: &Cert, seeds: ([u8; 32], [u8; 32])) -> Vec<String> {
    let s = settings();
    let mut net = Net::pair_seeded(&s, c, ServerTrust::Roots(c.chain.clone()), seeds);
    let (cid, sid) = net.establish(b"CONNECT");
    net.connack_then_close(Duration::from_secs(10), cid, sid);
    let mut trace: Vec<String> = net
        .cev
        .iter()
        .map(|s| format!("c {:?} {:?}", s.at - net.start, s.event))
        .chain(
            net.sev
                .iter()
                .map(|s| format!("s {:?} {:?}", s.at - net.start, s.event)),
        )
        .collect();
    trace.extend(net.sent.iter().map(|d| format!("d {d:?}")));
    trace.push(format!("end {:?}", net.now - net.start));
    trace
}

#[test]
fn same_seeds_give_the_same_virtual_time_trace() {
    // Ed25519: fixed-size signatures, so TLS message sizes do not vary
    // between runs (ECDSA's DER signatures do). Key shares and randoms
    // still come from the OS; the trace must not depend on them.
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519 key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let cert = params.self_signed(&kp).expect("self-signed");
    let c = Cert {
        chain: parse_certs_pem(cert.pem().as_bytes(), "cert.pem").expect("cert"),
        key: parse_key_pem(kp.serialize_pem().as_bytes(), "key.pem").expect("key"),
    };
    let a = trace_of_a_run(&c, ([1; 32], [2; 32]));
    let b = trace_of_a_run(&c, ([1; 32], [2; 32]));
    assert_eq!(a, b);
    assert!(a.len() > 4, "{a:?}");
}
