//! # mqtt-quic
//!
//! MQTT over QUIC, sans-IO: a thin layer over [`quinn_proto`] that gives a
//! runtime (rt-smol, rt-std) and the deterministic simulator one object to
//! feed, [`QuicEndpoint`], with the same shape as every state machine of
//! mqtt-core. No sockets, threads, clocks, files or async here: every call
//! takes `now: Instant`, datagrams go in and out as bytes.
//!
//! - One UDP socket per endpoint (the runtime's); an endpoint can be a
//!   server (a listener), a client (bridges, `sansmq pub --quic`) or both.
//! - TLS 1.3 by rustls with the *ring* provider, ALPN `"mqtt"` ([`tls`]).
//! - MQTT rides **one bidirectional stream per connection**, the mode
//!   EMQX's QUIC listener and NanoMQ's bridge use: the client opens it as
//!   soon as the handshake completes, the server accepts it. Bytes in and
//!   out of that stream are raw MQTT; framing stays the runtime's (the same
//!   decoder as TCP).
//! - The **handshake timeout** is enforced here (quinn-proto has an idle
//!   timeout but no separate handshake timeout): a connection that has not
//!   reached `Connected` (client) / `Accepted` (server) within
//!   [`QuicSettings::handshake_timeout`] is closed with
//!   [`QuicCloseReason::HandshakeTimeout`]. QUIC keep-alive and idle timeout
//!   are quinn's; none of them is related to MQTT keep alive (PINGREQ is the
//!   MQTT client FSM's).
//!
//! ## Call order
//!
//! ```text
//! handle_datagram(now, remote, bytes) | handle_timeout(now) | connect | write | close
//!     then drain poll_transmit(now) until None   (datagrams to send)
//!     then drain poll_event() until None         (Connected, Accepted, Data, Closed)
//!     then sleep until poll_timeout() or the next datagram
//! ```
//!
//! `poll_timeout()` is only meaningful after `poll_transmit` returned
//! `None` (sending arms quinn's loss-detection timers). Spurious or early
//! `handle_timeout(now)` calls are harmless.
//!
//! ```
//! # use std::time::Instant;
//! # use mqtt_quic::{QuicEndpoint, QuicEvent};
//! fn run_once(ep: &mut QuicEndpoint, now: Instant, send: &mut dyn FnMut(mqtt_quic::Datagram)) {
//!     ep.handle_timeout(now);
//!     while let Some(d) = ep.poll_transmit(now) {
//!         send(d); // split by `segment_size` when set (GSO batch)
//!     }
//!     while let Some(ev) = ep.poll_event() {
//!         match ev {
//!             QuicEvent::Data { conn, bytes } => { /* decode MQTT */ let _ = (conn, bytes); }
//!             _ => {}
//!         }
//!     }
//!     let _sleep_until = ep.poll_timeout();
//! }
//! ```
//!
//! ## 0-RTT
//! With [`QuicSettings::enable_0rtt`] a client that holds a session ticket
//! from an earlier connection through the same endpoint reports
//! `Connected` at once and its first bytes (the MQTT CONNECT) travel in
//! 0-RTT packets. If the server rejects early data, the bytes written so
//! far are replayed on a fresh stream once the handshake completes. The
//! server side never hands 0-RTT data to MQTT before the handshake is
//! complete (it is replayable): `Accepted` waits for the handshake.
//!
//! ## Read pause (publisher flow control)
//! [`QuicEndpoint::set_read_paused`] stops reading one connection's MQTT
//! stream, as a TCP runtime stops reading a socket: received bytes wait in
//! quinn, no receive-window credit goes back, and the peer's writes block
//! by QUIC flow control once it used the window it had (at most the
//! stream receive window is held). Resuming reports what waited as `Data`
//! at once. Timers, writes, close and reset keep working while paused.
//!
//! ## `quic_qos_priority`
//! Not a stream-level mechanism here: with one stream there is nothing to
//! prioritise between, and the MQTT client FSM already queues control
//! packets (PINGREQ, SUBSCRIBE, acks) before data. The configuration key is
//! kept with that meaning.
//!
//! ## GSO and ECN
//! `poll_transmit` may return several datagrams of `segment_size` bytes
//! back to back (a GSO batch) when
//! [`QuicSettings::max_datagrams_per_transmit`] > 1; a runtime without GSO
//! sends them one by one. ECN is not used (std UDP sockets cannot read the
//! ECN bits).
//!
//! ## Determinism
//! `QuicEndpoint::new(.., Some(seed))` seeds quinn's endpoint RNG
//! (connection ids, packet number skips). TLS key shares and the server's
//! token key still come from the OS RNG (rustls/ring), so packet *contents*
//! differ between runs while sizes and timing, on a virtual clock, do not.

pub mod tls;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ConnectError, Connection, ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint,
    EndpointConfig, Event, ReadError, StreamEvent, StreamId, TransportErrorCode, VarInt,
    WriteError,
};

pub use tls::{
    client_config, parse_certs_pem, parse_key_pem, server_config, ClientIdentity, ServerTrust,
    TlsConfigError, ALPN_MQTT,
};

/// quinn-proto's configurations, as [`server_config`] and
/// [`client_config`] build them (runtimes keep them to build endpoints).
pub use quinn_proto::{ClientConfig, ServerConfig};
/// Re-exported so runtimes name certificate types without a direct
/// dependency on rustls-pki-types.
pub use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Application error code on CONNECTION_CLOSE and RESET_STREAM: no error.
pub const CODE_NO_ERROR: u32 = 0;
/// Application error code: the handshake did not complete in time.
pub const CODE_HANDSHAKE_TIMEOUT: u32 = 1;
/// Application error code: a stream this side does not use (MQTT needs one).
pub const CODE_UNEXPECTED_STREAM: u32 = 2;

/// QUIC transport settings. Defaults follow NanoMQ's bridge defaults where
/// NanoMQ has the setting (`quic_keepalive`, `quic_idle_timeout`,
/// `quic_handshake_timeout`, `quic_initial_rtt_ms`, `quic_max_ack_delay_ms`,
/// `quic_0rtt`), quinn's otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicSettings {
    /// QUIC PING this often when nothing else is sent (`quic_keepalive`,
    /// 120 s); capped at half the idle timeout (see
    /// [`QuicSettings::effective_keep_alive`]). `None` or zero: off.
    pub keep_alive_interval: Option<Duration>,
    /// Close a connection silent for this long (`quic_idle_timeout`, 120 s;
    /// the smaller of both sides' values applies). Zero: none.
    pub idle_timeout: Duration,
    /// From dial (client) or first packet (server) to an open MQTT stream
    /// (`quic_handshake_timeout`, 60 s).
    pub handshake_timeout: Duration,
    /// RTT assumed before the first sample (`quic_initial_rtt_ms`, 800 ms).
    pub initial_rtt: Duration,
    /// Largest ACK delay requested from the peer (`quic_max_ack_delay_ms`,
    /// 100 ms), through the ACK-frequency extension. `None`: the peer's own.
    pub max_ack_delay: Option<Duration>,
    /// 0-RTT resumption where a session ticket allows (`quic_0rtt`, true).
    pub enable_0rtt: bool,
    /// Bytes the peer may send on the stream before we read (quinn: 1.25 MB).
    pub stream_receive_window: u64,
    /// Bytes the peer may send on the connection in total.
    pub receive_window: u64,
    /// Bytes quinn buffers for sending per connection beyond what the peer
    /// acknowledged (quinn: 10 MB). Bytes past it wait in this crate
    /// ([`QuicEndpoint::buffered`]).
    pub send_window: u64,
    /// Bidirectional streams the peer may open (MQTT uses one; extra ones
    /// are stopped).
    pub max_bidi_streams: u32,
    /// Datagrams one `poll_transmit` may batch (GSO). 1: no batching.
    pub max_datagrams_per_transmit: usize,
}

impl Default for QuicSettings {
    fn default() -> Self {
        Self {
            keep_alive_interval: Some(Duration::from_secs(120)),
            idle_timeout: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(60),
            initial_rtt: Duration::from_millis(800),
            max_ack_delay: Some(Duration::from_millis(100)),
            enable_0rtt: true,
            stream_receive_window: 1_250_000,
            receive_window: 8 * 1_250_000,
            send_window: 8 * 1_250_000,
            max_bidi_streams: 4,
            max_datagrams_per_transmit: 1,
        }
    }
}

/// One QUIC connection of an endpoint. Never reused by the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuicConnId(pub u64);

impl fmt::Display for QuicConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "quic#{}", self.0)
    }
}

/// A UDP datagram to send (or a GSO batch of equal-size datagrams).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Datagram {
    pub destination: SocketAddr,
    pub contents: Bytes,
    /// `Some(n)`: `contents` is several datagrams of `n` bytes (the last
    /// may be shorter); send each separately without GSO.
    pub segment_size: Option<usize>,
}

impl Datagram {
    /// The datagrams of this transmit one by one.
    pub fn segments(&self) -> impl Iterator<Item = Bytes> + '_ {
        let size = self.segment_size.unwrap_or(self.contents.len()).max(1);
        (0..self.contents.len()).step_by(size).map(move |start| {
            self.contents
                .slice(start..(start + size).min(self.contents.len()))
        })
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuicCloseReason {
    /// No open stream within [`QuicSettings::handshake_timeout`] (a peer
    /// that does not answer, a port nobody listens on, datagrams dropped).
    #[error("QUIC handshake timed out")]
    HandshakeTimeout,
    /// The server refused the connection (CONNECTION_REFUSED, or no
    /// server configuration on that endpoint).
    #[error("QUIC connection refused by the peer")]
    Refused,
    /// TLS failed (certificate not trusted, wrong name, no ALPN "mqtt"...).
    #[error("QUIC TLS handshake failed: {0}")]
    Tls(String),
    /// Nothing received for the idle timeout.
    #[error("QUIC idle timeout")]
    IdleTimeout,
    /// The peer closed the connection with an application code.
    #[error(
        "QUIC connection closed by the peer (code {code}{})",
        fmt_reason(reason)
    )]
    PeerClosed { code: u64, reason: String },
    /// The peer closed the connection with a transport error.
    #[error("QUIC connection aborted by the peer: {0}")]
    PeerAborted(String),
    /// Our side detected a protocol violation.
    #[error("QUIC transport error: {0}")]
    TransportError(String),
    /// Stateless reset: the peer lost the connection's state (restarted).
    #[error("QUIC connection reset by the peer (stateless reset)")]
    Reset,
    /// The peer reset our MQTT stream or stopped reading it.
    #[error("QUIC stream reset by the peer (code {code})")]
    StreamReset { code: u64 },
    /// The peer finished the MQTT stream (the QUIC analogue of TCP FIN).
    #[error("QUIC stream finished by the peer")]
    PeerFinished,
    /// This side closed it ([`QuicEndpoint::close`] or after `finish`).
    #[error("QUIC connection closed locally")]
    LocallyClosed,
    /// Anything else quinn reports (version mismatch, CIDs exhausted...).
    #[error("QUIC connection failed: {0}")]
    Other(String),
}

fn fmt_reason(r: &str) -> String {
    if r.is_empty() {
        String::new()
    } else {
        format!(": {r}")
    }
}

impl QuicCloseReason {
    fn from_connection_error(e: ConnectionError) -> Self {
        match e {
            ConnectionError::TimedOut => Self::IdleTimeout,
            ConnectionError::Reset => Self::Reset,
            ConnectionError::LocallyClosed => Self::LocallyClosed,
            ConnectionError::ApplicationClosed(c) => Self::PeerClosed {
                code: c.error_code.into_inner(),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            },
            ConnectionError::ConnectionClosed(c) => {
                let code = u64::from(c.error_code);
                if c.error_code == TransportErrorCode::CONNECTION_REFUSED {
                    Self::Refused
                } else if (0x100..0x200).contains(&code) {
                    Self::Tls(format!("alert from the peer: {c}"))
                } else {
                    Self::PeerAborted(c.to_string())
                }
            }
            ConnectionError::TransportError(t) => {
                if (0x100..0x200).contains(&u64::from(t.code)) {
                    Self::Tls(t.to_string())
                } else {
                    Self::TransportError(t.to_string())
                }
            }
            other => Self::Other(other.to_string()),
        }
    }
}

/// What an endpoint reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuicEvent {
    /// Client: the handshake completed (or 0-RTT is usable) and the MQTT
    /// stream is open; `write` now reaches the server.
    Connected {
        conn: QuicConnId,
        remote: SocketAddr,
    },
    /// Server: a handshake completed and the peer opened its MQTT stream.
    Accepted {
        conn: QuicConnId,
        remote: SocketAddr,
    },
    /// MQTT bytes from the stream, in order.
    Data { conn: QuicConnId, bytes: Bytes },
    /// The connection is over; the id is never used again. Reported once
    /// for every connection `connect` returned or `Accepted` announced.
    Closed {
        conn: QuicConnId,
        reason: QuicCloseReason,
    },
}

/// A call the endpoint cannot carry out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    #[error("this endpoint has no client configuration")]
    NoClientConfig,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("unknown or closed QUIC connection {0}")]
    UnknownConnection(QuicConnId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Client: waiting for the handshake. Server: waiting for the handshake
    /// and the peer's stream.
    Handshaking,
    /// Stream open, reported to the runtime.
    Open,
    /// Closing (local close, or a Closed already reported): waiting for
    /// quinn to drain the connection.
    Closing,
}

struct Conn {
    handle: ConnectionHandle,
    inner: Connection,
    remote: SocketAddr,
    is_client: bool,
    phase: Phase,
    /// The MQTT stream, once opened (client) or accepted (server).
    stream: Option<StreamId>,
    /// Server: the handshake completed (the stream may come before).
    handshake_done: bool,
    handshake_deadline: Option<Instant>,
    /// Bytes `write` took that quinn has not accepted yet.
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    /// Client in 0-RTT: a copy of what was written before the handshake
    /// completed, replayed if the server rejects early data.
    early: Option<Vec<Bytes>>,
    /// `finish` was called: FIN after `pending`, then close on ack.
    finish: bool,
    fin_sent: bool,
    /// A close decided without a `now` (in `write`), done by `process`.
    close_pending: bool,
    /// [`QuicEndpoint::set_read_paused`]: the stream is not read (so its
    /// receive windows are not extended and the peer's sends block).
    read_paused: bool,
    /// Whether the runtime knows this connection (a `Closed` is owed).
    announced: bool,
    closed_reported: bool,
    /// Its entry in the endpoint's timer set.
    timer: Option<Instant>,
}

/// One QUIC endpoint (one UDP socket's worth of connections). See the
/// crate docs for the call order.
pub struct QuicEndpoint {
    endpoint: Endpoint,
    server: Option<Arc<ServerConfig>>,
    client: Option<ClientConfig>,
    handshake_timeout: Duration,
    max_datagrams: usize,
    conns: BTreeMap<QuicConnId, Conn>,
    by_handle: HashMap<ConnectionHandle, QuicConnId>,
    next_id: u64,
    /// (deadline, conn): each connection's earliest timer.
    timers: BTreeSet<(Instant, QuicConnId)>,
    /// Connections that may have datagrams to send, in order.
    dirty: VecDeque<QuicConnId>,
    dirty_set: BTreeSet<QuicConnId>,
    /// Endpoint-level datagrams (stateless resets, refusals, version
    /// negotiation).
    responses: VecDeque<Datagram>,
    events: VecDeque<QuicEvent>,
    buf: Vec<u8>,
    /// New connections are refused (CONNECTION_REFUSED), e.g. while the
    /// server shuts down.
    refusing: bool,
}

impl fmt::Debug for QuicEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicEndpoint")
            .field("server", &self.server.is_some())
            .field("client", &self.client.is_some())
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl QuicEndpoint {
    /// An endpoint that accepts connections when `server` is set and dials
    /// when `client` is set. `settings` gives the handshake timeout and the
    /// GSO batch (the transport settings are inside the configs).
    /// `rng_seed` seeds quinn's endpoint RNG (the simulator's determinism).
    pub fn new(
        server: Option<Arc<ServerConfig>>,
        client: Option<ClientConfig>,
        settings: &QuicSettings,
        rng_seed: Option<[u8; 32]>,
    ) -> Self {
        let mut config = EndpointConfig::default();
        config.rng_seed(rng_seed);
        Self {
            // No path MTU discovery: it needs sockets that never fragment
            // (IP_DONTFRAG), which plain std/async-io UDP sockets do not
            // promise. Datagrams stay at quinn's safe 1200-byte start.
            endpoint: Endpoint::new(Arc::new(config), server.clone(), false, None),
            server,
            client,
            handshake_timeout: settings.handshake_timeout,
            max_datagrams: settings.max_datagrams_per_transmit.max(1),
            conns: BTreeMap::new(),
            by_handle: HashMap::new(),
            next_id: 1,
            timers: BTreeSet::new(),
            dirty: VecDeque::new(),
            dirty_set: BTreeSet::new(),
            responses: VecDeque::new(),
            events: VecDeque::new(),
            buf: Vec::new(),
            refusing: false,
        }
    }

    /// Refuse new connections (CONNECTION_REFUSED) from now on, or accept
    /// them again. Open connections are not affected.
    pub fn set_refusing(&mut self, refusing: bool) {
        self.refusing = refusing;
    }

    /// Open connections (handshaking, open or closing).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Dial `remote`; `server_name` is checked against its certificate
    /// (a DNS name or an IP address). `Connected` or `Closed` follows.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<QuicConnId, QuicError> {
        let config = self.client.clone().ok_or(QuicError::NoClientConfig)?;
        let (handle, inner) = self
            .endpoint
            .connect(now, config, remote, server_name)
            .map_err(|e: ConnectError| QuicError::Connect(e.to_string()))?;
        let id = self.insert(handle, inner, remote, true, now);
        if let Some(c) = self.conns.get_mut(&id) {
            c.announced = true;
            // 0-RTT: a session ticket allows early data, so the stream opens
            // now and the first flight carries MQTT.
            if c.inner.has_0rtt() {
                open_client_stream(c, &mut self.events, id);
                c.early = Some(Vec::new());
            }
        }
        self.process(id, now);
        Ok(id)
    }

    /// A datagram from `remote`.
    pub fn handle_datagram(&mut self, now: Instant, remote: SocketAddr, data: BytesMut) {
        self.buf.clear();
        let Some(event) = self
            .endpoint
            .handle(now, remote, None, None, data, &mut self.buf)
        else {
            return;
        };
        match event {
            DatagramEvent::ConnectionEvent(handle, event) => {
                if let Some(&id) = self.by_handle.get(&handle) {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.inner.handle_event(event);
                    }
                    self.process(id, now);
                }
            }
            DatagramEvent::NewConnection(incoming) => {
                if self.server.is_none() || self.refusing {
                    self.buf.clear();
                    let t = self.endpoint.refuse(incoming, &mut self.buf);
                    self.push_response(t);
                    return;
                }
                self.buf.clear();
                match self.endpoint.accept(incoming, now, &mut self.buf, None) {
                    Ok((handle, inner)) => {
                        let remote = inner.remote_address();
                        let id = self.insert(handle, inner, remote, false, now);
                        self.process(id, now);
                    }
                    Err(e) => {
                        if let Some(t) = e.response {
                            self.push_response(t);
                        }
                    }
                }
            }
            DatagramEvent::Response(t) => self.push_response(t),
        }
    }

    /// Run every timer due at `now` (quinn's, and handshake timeouts).
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<QuicConnId> = self
            .timers
            .range(..=(now, QuicConnId(u64::MAX)))
            .map(|(_, id)| *id)
            .collect();
        for id in due {
            if let Some(c) = self.conns.get_mut(&id) {
                if c.handshake_deadline.is_some_and(|d| d <= now) {
                    c.handshake_deadline = None;
                    if c.phase == Phase::Handshaking {
                        c.inner.close(
                            now,
                            VarInt::from_u32(CODE_HANDSHAKE_TIMEOUT),
                            Bytes::from_static(b"handshake timeout"),
                        );
                        report_closed(c, &mut self.events, id, QuicCloseReason::HandshakeTimeout);
                    }
                }
                c.inner.handle_timeout(now);
            }
            self.process(id, now);
        }
    }

    /// The earliest timer, over all connections. Valid after
    /// `poll_transmit` returned `None`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        if let Some(d) = self.responses.pop_front() {
            return Some(d);
        }
        while let Some(&id) = self.dirty.front() {
            let Some(c) = self.conns.get_mut(&id) else {
                self.dirty.pop_front();
                self.dirty_set.remove(&id);
                continue;
            };
            self.buf.clear();
            match c
                .inner
                .poll_transmit(now, self.max_datagrams, &mut self.buf)
            {
                Some(t) => {
                    let d = Datagram {
                        destination: t.destination,
                        contents: Bytes::copy_from_slice(&self.buf[..t.size]),
                        segment_size: t.segment_size,
                    };
                    // Sending arms loss detection; endpoint events may follow.
                    self.process_quiet(id, now);
                    return Some(d);
                }
                None => {
                    self.dirty.pop_front();
                    self.dirty_set.remove(&id);
                    self.process_quiet(id, now);
                }
            }
        }
        None
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<QuicEvent> {
        self.events.pop_front()
    }

    /// Queue MQTT bytes on the connection's stream. Bytes beyond what
    /// quinn takes now wait here ([`Self::buffered`]); nothing is dropped.
    /// Writing before `Connected` is allowed (the bytes leave once the
    /// stream opens).
    pub fn write(&mut self, conn: QuicConnId, bytes: Bytes) -> Result<(), QuicError> {
        let c = self
            .conns
            .get_mut(&conn)
            .filter(|c| c.phase != Phase::Closing && !c.finish)
            .ok_or(QuicError::UnknownConnection(conn))?;
        if bytes.is_empty() {
            return Ok(());
        }
        if let Some(early) = &mut c.early {
            early.push(bytes.clone());
        }
        c.pending_bytes += bytes.len();
        c.pending.push_back(bytes);
        self.flush(conn);
        self.mark_dirty(conn);
        Ok(())
    }

    /// Bytes `write` accepted that quinn has not taken yet (flow control or
    /// the send window): the runtime's backpressure signal.
    pub fn buffered(&self, conn: QuicConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.pending_bytes)
    }

    /// Whether the connection exists and is not closing.
    pub fn is_open(&self, conn: QuicConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.phase != Phase::Closing)
    }

    /// Graceful end: send what is queued, FIN the stream, and close the
    /// connection once the peer acknowledged everything (or at the idle
    /// timeout). `Closed { LocallyClosed }` follows.
    pub fn finish(&mut self, now: Instant, conn: QuicConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.phase == Phase::Closing {
            return;
        }
        if c.stream.is_none() {
            // Nothing to finish: no stream was ever opened.
            self.close(now, conn, CODE_NO_ERROR, "");
            return;
        }
        c.finish = true;
        self.flush(conn);
        self.mark_dirty(conn);
        self.process(conn, now);
    }

    /// Close now (CONNECTION_CLOSE with an application `code`); what is
    /// still queued is dropped. `Closed { LocallyClosed }` follows.
    pub fn close(&mut self, now: Instant, conn: QuicConnId, code: u32, reason: &str) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.phase != Phase::Closing {
            c.inner.close(
                now,
                VarInt::from_u32(code),
                Bytes::copy_from_slice(reason.as_bytes()),
            );
            report_closed(c, &mut self.events, conn, QuicCloseReason::LocallyClosed);
        }
        self.mark_dirty(conn);
        self.process(conn, now);
    }

    /// Abort the MQTT stream: RESET_STREAM and STOP_SENDING with `code`.
    /// The peer sees [`QuicCloseReason::StreamReset`] and closes the
    /// connection; here `Closed { LocallyClosed }` follows at once.
    pub fn reset(&mut self, now: Instant, conn: QuicConnId, code: u32) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.phase == Phase::Closing {
            return;
        }
        match c.stream {
            Some(s) => {
                let code = VarInt::from_u32(code);
                let _ = c.inner.send_stream(s).reset(code);
                let _ = c.inner.recv_stream(s).stop(code);
                report_closed(c, &mut self.events, conn, QuicCloseReason::LocallyClosed);
            }
            None => {
                c.inner.close(now, VarInt::from_u32(code), Bytes::new());
                report_closed(c, &mut self.events, conn, QuicCloseReason::LocallyClosed);
            }
        }
        self.process(conn, now);
    }

    /// Flow control of one connection's input: while `paused`, its MQTT
    /// stream is not read, so no `Data` is reported and quinn stops
    /// extending the stream's and the connection's receive windows: the
    /// peer's sends block by QUIC flow control once the window it has is
    /// used. Received bytes wait in quinn (at most the stream receive
    /// window). Resuming reads what waited at once (`Data` events follow)
    /// and returns the credit to the peer. Timers, keep-alive, writes,
    /// `close`, `finish` and `reset` are unaffected; a reset by the peer is
    /// still reported at once (it discards the data). If the peer closes
    /// the connection (or it times out) while paused, what waited is
    /// reported as `Data` before `Closed`. Unknown connections are ignored;
    /// pausing before `Accepted`/`Connected` holds the first bytes back
    /// too.
    pub fn set_read_paused(&mut self, now: Instant, conn: QuicConnId, paused: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.read_paused == paused {
            return;
        }
        c.read_paused = paused;
        if !paused && c.phase == Phase::Open {
            read_stream(c, &mut self.events, conn, now);
        }
        // Resuming may owe the peer MAX_STREAM_DATA / MAX_DATA.
        self.process(conn, now);
    }

    /// Whether [`Self::set_read_paused`] paused this connection.
    pub fn is_read_paused(&self, conn: QuicConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.read_paused)
    }

    /// Whether the server accepted this client connection's 0-RTT data.
    pub fn accepted_0rtt(&self, conn: QuicConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.inner.accepted_0rtt())
    }

    // ----- internals -------------------------------------------------------

    fn insert(
        &mut self,
        handle: ConnectionHandle,
        inner: Connection,
        remote: SocketAddr,
        is_client: bool,
        now: Instant,
    ) -> QuicConnId {
        let id = QuicConnId(self.next_id);
        self.next_id += 1;
        self.by_handle.insert(handle, id);
        self.conns.insert(
            id,
            Conn {
                handle,
                inner,
                remote,
                is_client,
                phase: Phase::Handshaking,
                stream: None,
                handshake_done: false,
                handshake_deadline: Some(now + self.handshake_timeout),
                pending: VecDeque::new(),
                pending_bytes: 0,
                early: None,
                finish: false,
                fin_sent: false,
                close_pending: false,
                read_paused: false,
                announced: false,
                closed_reported: false,
                timer: None,
            },
        );
        self.mark_dirty(id);
        id
    }

    fn push_response(&mut self, t: quinn_proto::Transmit) {
        self.responses.push_back(Datagram {
            destination: t.destination,
            contents: Bytes::copy_from_slice(&self.buf[..t.size]),
            segment_size: t.segment_size,
        });
    }

    fn mark_dirty(&mut self, id: QuicConnId) {
        if self.dirty_set.insert(id) {
            self.dirty.push_back(id);
        }
    }

    /// After any input to a connection: endpoint events, application
    /// events, writes, timers; forget it once drained.
    fn process(&mut self, id: QuicConnId, now: Instant) {
        self.mark_dirty(id);
        self.process_quiet(id, now);
    }

    fn process_quiet(&mut self, id: QuicConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if std::mem::take(&mut c.close_pending) {
            c.inner
                .close(now, VarInt::from_u32(CODE_NO_ERROR), Bytes::new());
        }
        // Endpoint <-> connection bookkeeping (CIDs, drained).
        while let Some(ev) = c.inner.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(c.handle, ev) {
                c.inner.handle_event(back);
            }
        }
        while let Some(ev) = c.inner.poll() {
            match ev {
                Event::HandshakeDataReady | Event::DatagramReceived | Event::DatagramsUnblocked => {
                }
                Event::Connected => {
                    c.handshake_done = true;
                    if c.is_client {
                        if c.early.is_some() && !c.inner.accepted_0rtt() {
                            // Early data rejected: quinn dropped the stream;
                            // replay what was written on a fresh one.
                            let early = c.early.take().unwrap_or_default();
                            c.stream = None;
                            c.pending.clear();
                            c.pending_bytes = 0;
                            c.fin_sent = false;
                            for b in early {
                                c.pending_bytes += b.len();
                                c.pending.push_back(b);
                            }
                            if let Some(s) = c.inner.streams().open(Dir::Bi) {
                                c.stream = Some(s);
                            }
                        } else if c.phase == Phase::Handshaking {
                            open_client_stream(c, &mut self.events, id);
                        }
                        c.early = None;
                    } else if c.stream.is_some() && c.phase == Phase::Handshaking {
                        accept_server_stream(c, &mut self.events, id, now);
                    }
                }
                Event::ConnectionLost { reason } => {
                    if c.phase == Phase::Open {
                        // Bytes a pause left unread arrived before the end:
                        // hand them over first, as TCP would before EOF.
                        drain_stream(c, &mut self.events, id);
                    }
                    let reason = QuicCloseReason::from_connection_error(reason);
                    report_closed(c, &mut self.events, id, reason);
                }
                Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                    while let Some(s) = c.inner.streams().accept(Dir::Bi) {
                        if c.stream.is_none() && !c.is_client {
                            c.stream = Some(s);
                            if c.handshake_done && c.phase == Phase::Handshaking {
                                accept_server_stream(c, &mut self.events, id, now);
                            }
                        } else {
                            // MQTT uses one stream; refuse the others.
                            let code = VarInt::from_u32(CODE_UNEXPECTED_STREAM);
                            let _ = c.inner.recv_stream(s).stop(code);
                            let _ = c.inner.send_stream(s).reset(code);
                        }
                    }
                }
                Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                    while let Some(s) = c.inner.streams().accept(Dir::Uni) {
                        let _ = c
                            .inner
                            .recv_stream(s)
                            .stop(VarInt::from_u32(CODE_UNEXPECTED_STREAM));
                    }
                }
                Event::Stream(StreamEvent::Readable { id: s }) => {
                    if Some(s) == c.stream && c.phase == Phase::Open {
                        read_stream(c, &mut self.events, id, now);
                    }
                }
                Event::Stream(StreamEvent::Writable { .. }) => {}
                Event::Stream(StreamEvent::Finished { id: s }) => {
                    if Some(s) == c.stream && c.finish {
                        // Everything we sent, FIN included, is acknowledged.
                        c.inner
                            .close(now, VarInt::from_u32(CODE_NO_ERROR), Bytes::new());
                        report_closed(c, &mut self.events, id, QuicCloseReason::LocallyClosed);
                    }
                }
                Event::Stream(StreamEvent::Stopped { id: s, error_code }) => {
                    if Some(s) == c.stream && c.phase != Phase::Closing {
                        c.inner
                            .close(now, VarInt::from_u32(CODE_NO_ERROR), Bytes::new());
                        report_closed(
                            c,
                            &mut self.events,
                            id,
                            QuicCloseReason::StreamReset {
                                code: error_code.into_inner(),
                            },
                        );
                    }
                }
                Event::Stream(StreamEvent::Available { .. }) => {}
            }
        }
        flush_conn(c, Some(now), &mut self.events, id);
        // Forget a drained connection.
        if c.inner.is_drained() {
            if !c.closed_reported && c.announced {
                self.events.push_back(QuicEvent::Closed {
                    conn: id,
                    reason: QuicCloseReason::LocallyClosed,
                });
            }
            if let Some(t) = c.timer {
                self.timers.remove(&(t, id));
            }
            let handle = c.handle;
            self.conns.remove(&id);
            self.by_handle.remove(&handle);
            return;
        }
        // Re-file its earliest deadline.
        let next = [c.inner.poll_timeout(), c.handshake_deadline]
            .into_iter()
            .flatten()
            .min();
        if next != c.timer {
            if let Some(t) = c.timer {
                self.timers.remove(&(t, id));
            }
            if let Some(t) = next {
                self.timers.insert((t, id));
            }
            c.timer = next;
        }
    }

    /// Flush from `write`, which has no `now`: a close it finds is
    /// carried out by the next `process` (`poll_transmit` runs it).
    fn flush(&mut self, id: QuicConnId) {
        if let Some(c) = self.conns.get_mut(&id) {
            flush_conn(c, None, &mut self.events, id);
        }
    }
}

fn open_client_stream(c: &mut Conn, events: &mut VecDeque<QuicEvent>, id: QuicConnId) {
    if c.stream.is_none() {
        c.stream = c.inner.streams().open(Dir::Bi);
    }
    if c.stream.is_some() && c.phase == Phase::Handshaking {
        c.phase = Phase::Open;
        c.handshake_deadline = None;
        events.push_back(QuicEvent::Connected {
            conn: id,
            remote: c.remote,
        });
    }
}

fn accept_server_stream(
    c: &mut Conn,
    events: &mut VecDeque<QuicEvent>,
    id: QuicConnId,
    now: Instant,
) {
    c.phase = Phase::Open;
    c.handshake_deadline = None;
    c.announced = true;
    events.push_back(QuicEvent::Accepted {
        conn: id,
        remote: c.remote,
    });
    // Data that arrived with the stream (0-RTT or before the handshake
    // completed) was left unread until now.
    read_stream(c, events, id, now);
}

fn read_stream(c: &mut Conn, events: &mut VecDeque<QuicEvent>, id: QuicConnId, now: Instant) {
    let Some(s) = c.stream else { return };
    let mut end: Option<QuicCloseReason> = None;
    if c.read_paused {
        // Nothing is read (no credit goes back to the peer); only a reset
        // is taken now, which discards the stream's data anyway.
        if let Ok(Some(code)) = c.inner.recv_stream(s).received_reset() {
            end = Some(QuicCloseReason::StreamReset {
                code: code.into_inner(),
            });
        }
    } else {
        let mut recv = c.inner.recv_stream(s);
        let Ok(mut chunks) = recv.read(true) else {
            return;
        };
        loop {
            match chunks.next(usize::MAX) {
                Ok(Some(chunk)) => events.push_back(QuicEvent::Data {
                    conn: id,
                    bytes: chunk.bytes,
                }),
                Ok(None) => {
                    end = Some(QuicCloseReason::PeerFinished);
                    break;
                }
                Err(ReadError::Blocked) => break,
                Err(ReadError::Reset(code)) => {
                    end = Some(QuicCloseReason::StreamReset {
                        code: code.into_inner(),
                    });
                    break;
                }
            }
        }
        // Returns flow-control credit to the peer.
        let _ = chunks.finalize();
    }
    if let Some(reason) = end {
        if c.phase != Phase::Closing {
            c.inner
                .close(now, VarInt::from_u32(CODE_NO_ERROR), Bytes::new());
            report_closed(c, events, id, reason);
        }
    }
}

/// The connection was lost: hand over the stream bytes still buffered
/// (left unread by a pause), ignoring the stream's end or reset (the
/// connection's reason is what gets reported).
fn drain_stream(c: &mut Conn, events: &mut VecDeque<QuicEvent>, id: QuicConnId) {
    let Some(s) = c.stream else { return };
    let mut recv = c.inner.recv_stream(s);
    let Ok(mut chunks) = recv.read(true) else {
        return;
    };
    while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
        events.push_back(QuicEvent::Data {
            conn: id,
            bytes: chunk.bytes,
        });
    }
    let _ = chunks.finalize();
}

/// Hand quinn what it takes from `pending`; FIN after the last byte when
/// finishing.
fn flush_conn(
    c: &mut Conn,
    now: Option<Instant>,
    events: &mut VecDeque<QuicEvent>,
    id: QuicConnId,
) {
    let Some(s) = c.stream else { return };
    if c.phase == Phase::Closing {
        return;
    }
    let mut stopped: Option<u64> = None;
    while let Some(front) = c.pending.front_mut() {
        match c.inner.send_stream(s).write(front) {
            Ok(n) => {
                c.pending_bytes -= n;
                if n == front.len() {
                    c.pending.pop_front();
                } else {
                    let _ = front.split_to(n);
                }
            }
            Err(WriteError::Blocked) => break,
            Err(WriteError::Stopped(code)) => {
                stopped = Some(code.into_inner());
                break;
            }
            Err(WriteError::ClosedStream) => break,
        }
    }
    if let Some(code) = stopped {
        match now {
            Some(now) => c
                .inner
                .close(now, VarInt::from_u32(CODE_NO_ERROR), Bytes::new()),
            None => c.close_pending = true,
        }
        report_closed(c, events, id, QuicCloseReason::StreamReset { code });
        return;
    }
    if c.finish && !c.fin_sent && c.pending.is_empty() {
        c.fin_sent = true;
        let _ = c.inner.send_stream(s).finish();
    }
}

fn report_closed(
    c: &mut Conn,
    events: &mut VecDeque<QuicEvent>,
    id: QuicConnId,
    reason: QuicCloseReason,
) {
    c.phase = Phase::Closing;
    c.handshake_deadline = None;
    c.pending.clear();
    c.pending_bytes = 0;
    if c.announced && !c.closed_reported {
        c.closed_reported = true;
        events.push_back(QuicEvent::Closed { conn: id, reason });
    }
}
