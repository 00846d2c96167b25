//! One bridge to one remote broker, as a sans-IO state machine.
//!
//! ```text
//! Idle -> Dialing{transport, address} -> Handshaking -> Connected
//!            ^   | next transport on refusal/error/timeout       |
//!            |   v (all transports failed)                       | lost
//!            +-- Backoff{until} <--------------------------------+
//!                |  fail_fast or max_attempts
//!                v
//!              Failed (terminal; a Fatal event was emitted)
//!
//! any state but Failed --shutdown--> Stopped (a connected bridge sends
//!                                   DISCONNECT first; terminal)
//! ```
//!
//! Every [`BridgeEvent::StateChanged`] into Backoff, Failed, Stopped (and a
//! hybrid fallback from one Dialing to the next) carries the
//! [`StateReason`], so a log line says why: refused, handshake timeout,
//! remote closed, keepalive timeout (no PINGRESP), CONNACK refused 0x87...
//!
//! The bridge owns two [`Client`]s: `remote` speaks MQTT to the remote
//! broker over the transport the runtime dials on [`BridgeEvent::Dial`];
//! `local` is an ordinary MQTT 5.0 client of the local broker over an
//! in-memory connection that [`crate::node::Node`] wires (no broker hooks).
//! The local client subscribes to the forward filters with No Local, so what
//! the bridge publishes locally never loops back to the remote.
//!
//! ## Delivery guarantee
//! A QoS 1/2 message is acknowledged to the broker it came from only once it
//! sits in the other side's client (its bounded queue or inflight window),
//! which keeps it until the far side acknowledges it, across reconnects.
//! When the offline cache is full of QoS 1/2 messages, the bridge stops
//! reading from that side (the message is held, not acknowledged): the local
//! broker then keeps the rest in the bridge's persistent session, under its
//! own bounds and counters. QoS 0 is dropped instead (oldest first), and
//! every drop is counted. So nothing acknowledged is lost while the process
//! lives; a crash loses what was only in memory (no persistence yet).
//!
//! ## Call order
//! After any `handle_*`, drain [`Bridge::poll_event`] and
//! [`Bridge::poll_remote_transmit`] (and the local pair, or let the Node do
//! it), then sleep until [`Bridge::poll_timeout`]. On
//! [`BridgeEvent::CloseTransport`] write the remote bytes already polled,
//! then close the transport; bytes polled after it are for the next one.

mod config;

pub use config::{
    Backoff, BridgeConfig, BridgeConfigError, Forward, ReconnectPolicy, Subscription, Transport,
};

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::client::{
    Client, ClientConfig, ClientError, ClientEvent, DropCause, KeepAlivePolicy, TransportDeadReason,
};
use crate::codec::{
    self, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
    SubscriptionOptions,
};

/// Where the bridge is. See the module docs for the transitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeState {
    /// Not started.
    Idle,
    /// A `Dial` was emitted; waiting for `handle_transport_up` / `_failed`.
    Dialing {
        transport: Transport,
        address: String,
    },
    /// Transport up, CONNECT sent, waiting for CONNACK.
    Handshaking {
        transport: Transport,
        address: String,
    },
    Connected {
        transport: Transport,
        address: String,
    },
    /// The next attempt starts at `until`.
    Backoff { until: Instant },
    /// Gave up (fail_fast or max_attempts). Terminal.
    Failed,
    /// Shut down by [`Bridge::shutdown`]. Terminal.
    Stopped,
}

impl BridgeState {
    /// A short name for metrics and `$SYS`.
    pub fn name(&self) -> &'static str {
        match self {
            BridgeState::Idle => "idle",
            BridgeState::Dialing { .. } => "dialing",
            BridgeState::Handshaking { .. } => "handshaking",
            BridgeState::Connected { .. } => "connected",
            BridgeState::Backoff { .. } => "backoff",
            BridgeState::Failed => "failed",
            BridgeState::Stopped => "stopped",
        }
    }
}

impl fmt::Display for BridgeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeState::Dialing { transport, address }
            | BridgeState::Handshaking { transport, address }
            | BridgeState::Connected { transport, address } => {
                write!(f, "{} {transport}://{address}", self.name())
            }
            _ => f.write_str(self.name()),
        }
    }
}

/// Why the runtime could not establish a transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportFailure {
    #[error("connection refused")]
    Refused,
    #[error("timed out")]
    Timeout,
    /// The transport closed before CONNACK.
    #[error("closed during the handshake")]
    Closed,
    #[error("{0}")]
    Error(String),
}

/// Why one connect attempt (or one transport of it) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttemptFailure {
    #[error("{transport}://{address}: {failure}")]
    Transport {
        transport: Transport,
        address: String,
        failure: TransportFailure,
    },
    /// No CONNACK within `connect_timeout` of the Dial.
    #[error("{transport}://{address}: no CONNACK within the connect timeout")]
    HandshakeTimeout {
        transport: Transport,
        address: String,
    },
    /// The remote answered CONNACK with a failure code.
    #[error("{transport}://{address}: CONNACK refused {reason_code}")]
    Refused {
        transport: Transport,
        address: String,
        reason_code: ReasonCode,
    },
    /// The remote client declared the transport dead during the handshake.
    #[error("{transport}://{address}: {reason}")]
    Dead {
        transport: Transport,
        address: String,
        reason: TransportDeadReason,
    },
}

/// Why the bridge gave up for good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FatalReason {
    #[error("fail_fast: connect attempt {attempt} failed: {last}")]
    FailFast { attempt: u32, last: AttemptFailure },
    #[error("{attempts} consecutive connect attempts failed, the last: {last}")]
    MaxAttempts { attempts: u32, last: AttemptFailure },
}

/// Why an established link to the remote was lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkLoss {
    /// The runtime reported the transport closed (FIN, RST, error).
    #[error("remote closed the connection")]
    Closed,
    /// Our PINGREQ got no PINGRESP within `ping_timeout`.
    #[error("keepalive timeout (no PINGRESP)")]
    PingTimeout,
    /// The remote sent DISCONNECT (5.0).
    #[error("remote sent DISCONNECT {reason_code}")]
    Disconnected { reason_code: ReasonCode },
    /// Anything else the remote client declared fatal (protocol error...).
    #[error("{0}")]
    Dead(TransportDeadReason),
}

impl From<TransportDeadReason> for LinkLoss {
    fn from(reason: TransportDeadReason) -> Self {
        match reason {
            TransportDeadReason::PingTimeout => LinkLoss::PingTimeout,
            TransportDeadReason::ServerDisconnect { reason_code, .. } => {
                LinkLoss::Disconnected { reason_code }
            }
            other => LinkLoss::Dead(other),
        }
    }
}

/// Why the bridge changed state, carried by [`BridgeEvent::StateChanged`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateReason {
    /// A connect attempt, or one transport of it, failed (into Backoff, or
    /// to the next transport of a hybrid list).
    #[error("{0}")]
    Attempt(AttemptFailure),
    /// The connected link was lost (into Backoff).
    #[error("{0}")]
    Lost(LinkLoss),
    /// The bridge gave up (into Failed).
    #[error("{0}")]
    Fatal(FatalReason),
    /// [`Bridge::shutdown`] (into Stopped).
    #[error("shutdown")]
    Shutdown,
}

/// What the bridge asks of the runtime or reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub enum BridgeEvent {
    /// Open a transport to `address`, then call `handle_transport_up` or
    /// `handle_transport_failed`. `attempt` counts from 1 since start.
    Dial {
        attempt: u32,
        transport: Transport,
        address: String,
    },
    /// Close the current transport (or abandon the dial in progress).
    CloseTransport,
    /// `reason` says why for every transition caused by a failure, a loss
    /// or a shutdown; `None` for the normal steps (dial, handshake,
    /// connected, backoff over).
    StateChanged {
        from: BridgeState,
        to: BridgeState,
        reason: Option<StateReason>,
    },
    /// The bridge is Failed; the binary exits non-zero.
    Fatal { reason: FatalReason },
}

/// Counters and gauges of one bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeMetrics {
    pub state: BridgeState,
    /// Successful CONNACKs.
    pub connects: u64,
    /// Successful CONNACKs after the first.
    pub reconnects: u64,
    /// Established connections that were lost.
    pub connection_losses: u64,
    /// Connect attempts that failed (over all transports).
    pub failed_attempts: u64,
    /// Transports that failed (a hybrid fallback counts one).
    pub transport_failures: u64,
    /// Messages waiting for or in flight to the remote.
    pub cache_depth: usize,
    /// Topic + payload bytes waiting for the remote (not in flight).
    pub cache_bytes: usize,
    /// QoS 0 refused because the cache was full of QoS 1/2.
    pub dropped_cache_full: u64,
    /// QoS 0 evicted from the full cache by a newer message.
    pub dropped_evicted: u64,
    /// Messages the remote (or local) side can never take (too large,
    /// invalid mapped topic).
    pub dropped_unsendable: u64,
    /// Messages accepted for the remote.
    pub forwarded: u64,
    /// Messages received from the remote and published locally.
    pub received: u64,
    /// Times reading from one side paused because the other was full.
    pub backpressure: u64,
}

/// Decoded-packet intake of one side: what arrived, what is held back.
#[derive(Debug, Default)]
struct Inbound {
    buf: BytesMut,
    /// A PUBLISH the other side could not take yet: not acknowledged, and
    /// nothing behind it is read until it goes.
    blocked: Option<Publish>,
    /// Inbound QoS 2 ids passed on and not released yet, so a DUP resend is
    /// not passed on twice (mirrors the client's awaiting-PUBREL set).
    qos2: BTreeSet<PacketId>,
}

enum Take {
    /// Hand the packet to the client (which acknowledges it).
    Go,
    /// Keep it; stop reading this side.
    Hold,
}

/// One bridge. See the [module docs](self).
#[derive(Debug)]
pub struct Bridge {
    config: BridgeConfig,
    remote: Client,
    local: Client,
    state: BridgeState,
    /// The latest `now` of any input.
    now: Instant,
    /// Attempts since start (the Dial's `attempt`).
    attempt: u32,
    consecutive_failures: u32,
    transport_idx: usize,
    /// Dial/handshake timeout, or the end of Backoff.
    deadline: Option<Instant>,
    backoff: Backoff,
    connected_since: Option<Instant>,
    remote_out: VecDeque<Bytes>,
    remote_in: Inbound,
    local_in: Inbound,
    local_dead: bool,
    events: VecDeque<BridgeEvent>,
    m: BridgeMetrics,
}

/// Properties that belong to one hop and must not be forwarded.
fn hop_properties(mut p: Properties) -> Properties {
    p.topic_alias = None;
    p.subscription_identifiers.clear();
    p
}

/// Hand a PUBLISH that arrived on one side to the other side's client.
/// QoS 2 packet ids already relayed are remembered (`seen_qos2`) so a
/// resent PUBLISH (DUP) is not relayed twice. A full offline cache drops
/// QoS 0 (counted) and holds QoS 1/2 (`Take::Hold`: stop reading that side,
/// so its sender keeps the message unacknowledged).
fn relay(
    p: &Publish,
    topic: ByteString,
    seen_qos2: &mut BTreeSet<PacketId>,
    to: &mut Client,
    m: &mut BridgeMetrics,
    count_relayed: impl FnOnce(&mut BridgeMetrics),
    now: Instant,
) -> Take {
    let qos2_id = p.packet_id.filter(|_| p.qos == QoS::ExactlyOnce);
    if qos2_id.is_some_and(|id| seen_qos2.contains(&id)) {
        return Take::Go;
    }
    let result = to.publish(
        topic,
        p.payload.clone(),
        p.qos,
        p.retain,
        hop_properties(p.properties.clone()),
        now,
    );
    match result {
        Ok(_) => {
            count_relayed(m);
            if let Some(id) = qos2_id {
                seen_qos2.insert(id);
            }
            Take::Go
        }
        Err(ClientError::QueueFull { .. }) if p.qos == QoS::AtMostOnce => {
            m.dropped_cache_full += 1;
            Take::Go
        }
        Err(ClientError::QueueFull { .. } | ClientError::PacketIdsExhausted) => {
            m.backpressure += 1;
            Take::Hold
        }
        Err(_) => {
            m.dropped_unsendable += 1;
            Take::Go
        }
    }
}

fn map_topic(topic: &str, prefix: Option<&ByteString>, replace: Option<&ByteString>) -> ByteString {
    match (replace, prefix) {
        (Some(t), _) => t.clone(),
        (None, Some(p)) => ByteString::from(format!("{p}{topic}")),
        (None, None) => ByteString::from(topic),
    }
}

impl Bridge {
    /// A bridge in `Idle`. Forwards and subscriptions are queued on the two
    /// clients at once, so they take effect on the first connect.
    pub fn new(config: BridgeConfig, now: Instant) -> Result<Self, BridgeConfigError> {
        let name = config.name.clone();
        if config.addresses.is_empty() {
            return Err(BridgeConfigError::NoAddresses(name));
        }
        if config.transports.is_empty() {
            return Err(BridgeConfigError::NoTransports(name));
        }
        if config.reconnect.base.is_zero() {
            return Err(BridgeConfigError::ZeroBaseDelay(name));
        }
        let bad_filter = |filter: &ByteString| {
            crate::topic::validate_topic_filter(filter).map_err(|error| {
                BridgeConfigError::InvalidFilter {
                    bridge: name.clone(),
                    filter: filter.clone(),
                    error,
                }
            })
        };
        for f in &config.forwards {
            bad_filter(&f.local_filter)?;
        }
        for s in &config.subscriptions {
            bad_filter(&s.remote_filter)?;
        }
        let remote_cfg = ClientConfig {
            client_id: config
                .client_id
                .clone()
                .unwrap_or_else(|| ByteString::from(format!("sansmq-bridge-{name}"))),
            protocol_version: config.protocol_version,
            keep_alive: config.keep_alive,
            // PINGREQ on schedule whatever the traffic: incoming data never
            // postpones it and a silent remote is noticed under load too.
            keep_alive_policy: KeepAlivePolicy::Periodic,
            clean_start: config.clean_start,
            session_expiry_interval: config.session_expiry_interval,
            username: config.username.clone(),
            password: config.password.clone(),
            ping_timeout: config.ping_timeout,
            connect_timeout: config.connect_timeout,
            max_inflight: config.max_inflight.max(1),
            max_queued_messages: config.cache_max_messages,
            max_queued_bytes: config.cache_max_bytes,
            ..ClientConfig::default()
        };
        let mut remote =
            Client::new(remote_cfg, now).map_err(|error| BridgeConfigError::RemoteClient {
                bridge: name.clone(),
                error,
            })?;
        let local_cfg = ClientConfig {
            client_id: ByteString::from(format!("$bridge/{name}")),
            protocol_version: ProtocolVersion::V5,
            // In-memory link: it cannot vanish silently, and pausing reads
            // (backpressure) must not look like a dead server.
            keep_alive: 0,
            clean_start: false,
            session_expiry_interval: u32::MAX,
            ..ClientConfig::default()
        };
        let mut local =
            Client::new(local_cfg, now).map_err(|error| BridgeConfigError::LocalClient {
                bridge: name.clone(),
                error,
            })?;
        if !config.forwards.is_empty() {
            let filters = config
                .forwards
                .iter()
                .map(|f| {
                    let mut o = SubscriptionOptions::new(f.qos);
                    o.no_local = true;
                    o.retain_as_published = true;
                    (f.local_filter.clone(), o)
                })
                .collect();
            local
                .subscribe(filters, Properties::default(), now)
                .map_err(|e| client_filter_error(&name, e))?;
        }
        if !config.subscriptions.is_empty() {
            let v5 = config.protocol_version.is_v5();
            let filters = config
                .subscriptions
                .iter()
                .map(|s| {
                    let mut o = SubscriptionOptions::new(s.qos);
                    // Do not get back what we forward (5.0 only).
                    o.no_local = v5;
                    o.retain_as_published = v5;
                    (s.remote_filter.clone(), o)
                })
                .collect();
            remote
                .subscribe(filters, Properties::default(), now)
                .map_err(|e| client_filter_error(&name, e))?;
        }
        Ok(Self {
            backoff: Backoff::new(&config.reconnect, config.seed),
            remote,
            local,
            state: BridgeState::Idle,
            now,
            attempt: 0,
            consecutive_failures: 0,
            transport_idx: 0,
            deadline: None,
            connected_since: None,
            remote_out: VecDeque::new(),
            remote_in: Inbound::default(),
            local_in: Inbound::default(),
            local_dead: false,
            events: VecDeque::new(),
            m: BridgeMetrics {
                state: BridgeState::Idle,
                connects: 0,
                reconnects: 0,
                connection_losses: 0,
                failed_attempts: 0,
                transport_failures: 0,
                cache_depth: 0,
                cache_bytes: 0,
                dropped_cache_full: 0,
                dropped_evicted: 0,
                dropped_unsendable: 0,
                forwarded: 0,
                received: 0,
                backpressure: 0,
            },
            config,
        })
    }

    // ----- accessors -------------------------------------------------------

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }

    pub fn state(&self) -> &BridgeState {
        &self.state
    }

    pub fn metrics(&self) -> BridgeMetrics {
        let mut m = self.m.clone();
        m.state = self.state.clone();
        m.cache_depth = self.remote.queued_len() + self.remote.inflight_len();
        m.cache_bytes = self.remote.queued_bytes();
        m
    }

    /// The client towards the remote broker (read-only: stats, keep alive).
    pub fn remote_client(&self) -> &Client {
        &self.remote
    }

    /// The client towards the local broker.
    pub fn local_client(&self) -> &Client {
        &self.local
    }

    // ----- lifecycle -------------------------------------------------------

    /// Leave `Idle`: the first attempt dials now. Later calls do nothing.
    pub fn start(&mut self, now: Instant) {
        self.now = now;
        if self.state == BridgeState::Idle {
            self.begin_attempt(now);
        }
        self.process(now);
    }

    /// Stop for good (the process is shutting down). A connected bridge
    /// sends DISCONNECT (0x00 normal disconnection; after the control
    /// packets already queued, never behind data) and then emits
    /// [`BridgeEvent::CloseTransport`]: write the remote bytes polled
    /// before it, then close. A dial or handshake in progress is abandoned
    /// (CloseTransport too). Ends in [`BridgeState::Stopped`], where every
    /// later input does nothing (a late transport is closed).
    pub fn shutdown(&mut self, now: Instant) {
        self.now = now;
        match self.state {
            // Failed stays what it is: the Fatal event said why.
            BridgeState::Stopped | BridgeState::Failed => return,
            BridgeState::Connected { .. } => {
                // The client is then Closing: control packets, DISCONNECT,
                // and its TransportDead(ClientDisconnect), which Stopped
                // ignores.
                let _ = self.remote.disconnect(
                    ReasonCode::NORMAL_DISCONNECTION,
                    Properties::default(),
                    now,
                );
                while let Some(b) = self.remote.poll_transmit() {
                    self.remote_out.push_back(b);
                }
                self.events.push_back(BridgeEvent::CloseTransport);
            }
            BridgeState::Handshaking { .. } => {
                self.remote.handle_transport_down(now);
                self.events.push_back(BridgeEvent::CloseTransport);
            }
            BridgeState::Dialing { .. } => self.events.push_back(BridgeEvent::CloseTransport),
            BridgeState::Idle | BridgeState::Backoff { .. } => {}
        }
        // What the remote sent and we have not read is resent to our
        // session next time.
        self.remote_in.buf.clear();
        self.remote_in.blocked = None;
        self.deadline = None;
        self.connected_since = None;
        self.set_state(BridgeState::Stopped, Some(StateReason::Shutdown));
        self.process(now);
    }

    /// The transport of the last `Dial` is open.
    pub fn handle_transport_up(&mut self, now: Instant) {
        self.now = now;
        match &self.state {
            BridgeState::Dialing { transport, address } => {
                let to = BridgeState::Handshaking {
                    transport: *transport,
                    address: address.clone(),
                };
                self.remote.handle_transport_up(now);
                self.set_state(to, None);
            }
            // A dial we abandoned completed late: close it.
            _ => self.events.push_back(BridgeEvent::CloseTransport),
        }
        self.process(now);
    }

    /// The dial of the last `Dial` failed (refused, timed out, error).
    pub fn handle_transport_failed(&mut self, failure: TransportFailure, now: Instant) {
        self.now = now;
        if matches!(
            self.state,
            BridgeState::Dialing { .. } | BridgeState::Handshaking { .. }
        ) {
            self.transport_failed(Some(failure), now);
        }
        self.process(now);
    }

    /// The open transport closed (FIN, RST, error) without the bridge asking.
    pub fn handle_transport_down(&mut self, now: Instant) {
        self.now = now;
        match self.state {
            BridgeState::Dialing { .. } | BridgeState::Handshaking { .. } => {
                self.transport_failed(Some(TransportFailure::Closed), now);
            }
            BridgeState::Connected { .. } => self.connection_lost(LinkLoss::Closed, now),
            _ => {}
        }
        self.process(now);
    }

    /// Bytes from the remote transport. Complete packets are consumed.
    pub fn handle_remote_read(&mut self, buf: &mut BytesMut, now: Instant) {
        self.now = now;
        if matches!(
            self.state,
            BridgeState::Handshaking { .. } | BridgeState::Connected { .. }
        ) {
            self.remote_in.buf.extend_from_slice(buf);
        }
        buf.clear();
        self.process(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            match self.state.clone() {
                BridgeState::Dialing { .. } => {
                    self.events.push_back(BridgeEvent::CloseTransport);
                    self.transport_failed(Some(TransportFailure::Timeout), now);
                }
                BridgeState::Handshaking { .. } => {
                    self.events.push_back(BridgeEvent::CloseTransport);
                    self.transport_failed(None, now);
                }
                BridgeState::Backoff { .. } => self.begin_attempt(now),
                _ => {}
            }
        }
        self.remote.handle_timeout(now);
        self.local.handle_timeout(now);
        self.process(now);
    }

    // ----- outputs ---------------------------------------------------------

    #[must_use]
    pub fn poll_event(&mut self) -> Option<BridgeEvent> {
        self.events.pop_front()
    }

    /// Bytes for the remote transport.
    #[must_use]
    pub fn poll_remote_transmit(&mut self) -> Option<Bytes> {
        if let Some(b) = self.remote_out.pop_front() {
            return Some(b);
        }
        let data = self.remote.poll_transmit()?;
        // Sending moved queued messages into flight: a held local message
        // may fit now.
        if self.local_in.blocked.is_some() {
            let now = self.now;
            self.process(now);
        }
        Some(data)
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.deadline,
            self.remote.poll_timeout(),
            self.local.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- the local (in-memory) link, driven by the Node ------------------

    /// The in-memory connection to the local broker is open.
    pub fn handle_local_up(&mut self, now: Instant) {
        self.now = now;
        self.local_dead = false;
        self.local.handle_transport_up(now);
        self.process(now);
    }

    /// The in-memory connection is gone. The broker redelivers what was not
    /// acknowledged when the persistent session resumes.
    pub fn handle_local_down(&mut self, now: Instant) {
        self.now = now;
        self.local.handle_transport_down(now);
        self.local_in.buf.clear();
        self.local_in.blocked = None;
        self.process(now);
    }

    pub fn handle_local_read(&mut self, buf: &mut BytesMut, now: Instant) {
        self.now = now;
        self.local_in.buf.extend_from_slice(buf);
        buf.clear();
        self.process(now);
    }

    #[must_use]
    pub fn poll_local_transmit(&mut self) -> Option<Bytes> {
        let data = self.local.poll_transmit()?;
        if self.remote_in.blocked.is_some() {
            let now = self.now;
            self.process(now);
        }
        Some(data)
    }

    /// True once after the local client declared its link dead: the Node
    /// closes the virtual connection and opens a new one.
    pub fn take_local_dead(&mut self) -> bool {
        std::mem::take(&mut self.local_dead)
    }

    // ----- internals -------------------------------------------------------

    fn set_state(&mut self, to: BridgeState, reason: Option<StateReason>) {
        if to != self.state {
            let from = std::mem::replace(&mut self.state, to.clone());
            self.events
                .push_back(BridgeEvent::StateChanged { from, to, reason });
        }
    }

    fn current_target(&self) -> (Transport, String) {
        let transports = &self.config.transports;
        let transport = transports[self.transport_idx.min(transports.len() - 1)];
        let addrs = &self.config.addresses;
        let idx = (self.attempt.saturating_sub(1) as usize) % addrs.len();
        (transport, addrs[idx].clone())
    }

    fn begin_attempt(&mut self, now: Instant) {
        self.attempt = self.attempt.saturating_add(1);
        self.transport_idx = 0;
        self.dial(None, now);
    }

    /// `reason`: why the previous transport of this attempt was given up.
    fn dial(&mut self, reason: Option<StateReason>, now: Instant) {
        // Bytes for an earlier transport must not reach the new one.
        self.remote_out.clear();
        self.remote_in.buf.clear();
        self.remote_in.blocked = None;
        let (transport, address) = self.current_target();
        self.deadline = Some(now + self.config.connect_timeout);
        self.set_state(
            BridgeState::Dialing {
                transport,
                address: address.clone(),
            },
            reason,
        );
        self.events.push_back(BridgeEvent::Dial {
            attempt: self.attempt,
            transport,
            address,
        });
    }

    /// The current transport failed before CONNACK: the next transport of
    /// this attempt, or the attempt failed. `None` = handshake timeout.
    fn transport_failed(&mut self, failure: Option<TransportFailure>, now: Instant) {
        let (transport, address) = self.current_target();
        if matches!(self.state, BridgeState::Handshaking { .. }) {
            self.remote.handle_transport_down(now);
        }
        self.m.transport_failures += 1;
        let failure = match failure {
            Some(failure) => AttemptFailure::Transport {
                transport,
                address,
                failure,
            },
            None => AttemptFailure::HandshakeTimeout { transport, address },
        };
        if self.transport_idx + 1 < self.config.transports.len() {
            self.transport_idx += 1;
            self.dial(Some(StateReason::Attempt(failure)), now);
        } else {
            self.attempt_failed(failure, now);
        }
    }

    fn attempt_failed(&mut self, last: AttemptFailure, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.m.failed_attempts += 1;
        if self.config.fail_fast {
            self.fail(FatalReason::FailFast {
                attempt: self.attempt,
                last,
            });
        } else if self
            .config
            .reconnect
            .max_attempts
            .is_some_and(|max| self.consecutive_failures >= max)
        {
            self.fail(FatalReason::MaxAttempts {
                attempts: self.consecutive_failures,
                last,
            });
        } else {
            self.enter_backoff(StateReason::Attempt(last), now);
        }
    }

    fn enter_backoff(&mut self, reason: StateReason, now: Instant) {
        let until = now + self.backoff.next_delay();
        self.deadline = Some(until);
        self.set_state(BridgeState::Backoff { until }, Some(reason));
    }

    fn fail(&mut self, reason: FatalReason) {
        self.deadline = None;
        self.set_state(
            BridgeState::Failed,
            Some(StateReason::Fatal(reason.clone())),
        );
        self.events.push_back(BridgeEvent::Fatal { reason });
    }

    fn connection_lost(&mut self, loss: LinkLoss, now: Instant) {
        self.remote.handle_transport_down(now);
        // Unacknowledged remote input is resent by the remote on resume.
        self.remote_in.buf.clear();
        self.remote_in.blocked = None;
        self.m.connection_losses += 1;
        // Only a link that stayed up for `stable` earns the base delay again.
        if self
            .connected_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.config.reconnect.stable)
        {
            self.backoff.reset();
        }
        self.connected_since = None;
        self.enter_backoff(StateReason::Lost(loss), now);
    }

    /// The remote client reported TransportDead.
    fn remote_dead(&mut self, reason: TransportDeadReason, now: Instant) {
        // A final DISCONNECT may wait: it goes before the close.
        while let Some(b) = self.remote.poll_transmit() {
            self.remote_out.push_back(b);
        }
        match self.state.clone() {
            BridgeState::Handshaking { transport, address } => {
                self.events.push_back(BridgeEvent::CloseTransport);
                match reason {
                    // The server answered: another transport reaches the
                    // same server, so the attempt failed.
                    TransportDeadReason::ConnectRefused(reason_code) => {
                        self.remote.handle_transport_down(now);
                        self.m.transport_failures += 1;
                        self.attempt_failed(
                            AttemptFailure::Refused {
                                transport,
                                address,
                                reason_code,
                            },
                            now,
                        );
                    }
                    TransportDeadReason::ConnAckTimeout => self.transport_failed(None, now),
                    reason => {
                        self.remote.handle_transport_down(now);
                        self.m.transport_failures += 1;
                        self.attempt_failed(
                            AttemptFailure::Dead {
                                transport,
                                address,
                                reason,
                            },
                            now,
                        );
                    }
                }
            }
            BridgeState::Connected { .. } => {
                self.events.push_back(BridgeEvent::CloseTransport);
                self.connection_lost(reason.into(), now);
            }
            _ => {}
        }
    }

    fn connected(&mut self, session_present: bool, now: Instant) {
        let BridgeState::Handshaking { transport, address } = self.state.clone() else {
            return;
        };
        self.deadline = None;
        self.m.connects += 1;
        if self.m.connects > 1 {
            self.m.reconnects += 1;
        }
        self.connected_since = Some(now);
        self.consecutive_failures = 0;
        if !session_present {
            self.remote_in.qos2.clear();
        }
        self.set_state(BridgeState::Connected { transport, address }, None);
    }

    /// Run both clients' events and intakes until nothing changes.
    fn process(&mut self, now: Instant) {
        loop {
            let mut progress = false;
            while let Some(ev) = self.remote.poll_event() {
                progress = true;
                match ev {
                    ClientEvent::Connected(c) => self.connected(c.session_present, now),
                    ClientEvent::TransportDead(reason) => self.remote_dead(reason, now),
                    ClientEvent::Dropped { cause, .. } => match cause {
                        DropCause::QueueFull => self.m.dropped_evicted += 1,
                        _ => self.m.dropped_unsendable += 1,
                    },
                    _ => {}
                }
            }
            while let Some(ev) = self.local.poll_event() {
                progress = true;
                match ev {
                    ClientEvent::TransportDead(_) => self.local_dead = true,
                    ClientEvent::Dropped { .. } => self.m.dropped_unsendable += 1,
                    _ => {}
                }
            }
            progress |= self.pump_local(now);
            progress |= self.pump_remote(now);
            if !progress {
                break;
            }
        }
    }

    /// Packets from the local broker: PUBLISH goes to the remote client
    /// before the local client sees (and acknowledges) it.
    fn pump_local(&mut self, now: Instant) -> bool {
        let mut progress = false;
        loop {
            let packet = match self.local_in.blocked.take() {
                Some(p) => Packet::Publish(p),
                None => {
                    if self.local_in.buf.is_empty() {
                        break;
                    }
                    match codec::decode(
                        &mut self.local_in.buf,
                        ProtocolVersion::V5,
                        self.local.config().maximum_packet_size,
                    ) {
                        Ok(Some(p)) => p,
                        Ok(None) => break,
                        Err(_) => {
                            // The client reports the same error and dies.
                            let mut rest = self.local_in.buf.split();
                            self.local.handle_read(&mut rest, now);
                            progress = true;
                            break;
                        }
                    }
                }
            };
            match packet {
                Packet::Publish(p) => match self.forward_to_remote(&p, now) {
                    Take::Go => self.local.handle_packet(Packet::Publish(p), now),
                    Take::Hold => {
                        self.local_in.blocked = Some(p);
                        break;
                    }
                },
                other => {
                    if let Packet::PubRel(r) = &other {
                        self.local_in.qos2.remove(&r.packet_id);
                    }
                    self.local.handle_packet(other, now);
                }
            }
            progress = true;
        }
        progress
    }

    fn forward_to_remote(&mut self, p: &Publish, now: Instant) -> Take {
        let Some(fwd) = self
            .config
            .forwards
            .iter()
            .find(|f| crate::topic::matches(&f.local_filter, &p.topic))
        else {
            return Take::Go;
        };
        let topic = map_topic(
            &p.topic,
            fwd.remote_prefix.as_ref(),
            fwd.remote_topic.as_ref(),
        );
        let m = &mut self.m;
        let to = &mut self.remote;
        relay(
            p,
            topic,
            &mut self.local_in.qos2,
            to,
            m,
            |m| m.forwarded += 1,
            now,
        )
    }

    /// Packets from the remote broker, the mirror of `pump_local`.
    fn pump_remote(&mut self, now: Instant) -> bool {
        let mut progress = false;
        loop {
            let packet = match self.remote_in.blocked.take() {
                Some(p) => Packet::Publish(p),
                None => {
                    if self.remote_in.buf.is_empty() {
                        break;
                    }
                    match codec::decode(
                        &mut self.remote_in.buf,
                        self.remote.protocol_version(),
                        self.remote.config().maximum_packet_size,
                    ) {
                        Ok(Some(p)) => p,
                        Ok(None) => break,
                        Err(_) => {
                            // The client recognises a 3.1.1 refusal of our
                            // 5.0 CONNECT, or reports the protocol error.
                            let mut rest = self.remote_in.buf.split();
                            self.remote.handle_read(&mut rest, now);
                            progress = true;
                            break;
                        }
                    }
                }
            };
            match packet {
                Packet::Publish(p) => match self.deliver_locally(&p, now) {
                    Take::Go => self.remote.handle_packet(Packet::Publish(p), now),
                    Take::Hold => {
                        self.remote_in.blocked = Some(p);
                        break;
                    }
                },
                other => {
                    if let Packet::PubRel(r) = &other {
                        self.remote_in.qos2.remove(&r.packet_id);
                    }
                    self.remote.handle_packet(other, now);
                }
            }
            progress = true;
            // A CONNACK or error may have changed the state: events first.
            if self.remote.state() != crate::client::ConnectionState::Connected {
                break;
            }
        }
        progress
    }

    fn deliver_locally(&mut self, p: &Publish, now: Instant) -> Take {
        if !self.remote.is_connected() {
            // Before CONNACK: the client rejects it as a protocol error.
            return Take::Go;
        }
        let Some(sub) = self
            .config
            .subscriptions
            .iter()
            .find(|s| crate::topic::matches(&s.remote_filter, &p.topic))
        else {
            return Take::Go;
        };
        let topic = map_topic(
            &p.topic,
            sub.local_prefix.as_ref(),
            sub.local_topic.as_ref(),
        );
        let m = &mut self.m;
        let to = &mut self.local;
        relay(
            p,
            topic,
            &mut self.remote_in.qos2,
            to,
            m,
            |m| m.received += 1,
            now,
        )
    }
}

fn client_filter_error(bridge: &str, error: ClientError) -> BridgeConfigError {
    match error {
        ClientError::InvalidTopicFilter { filter, error } => BridgeConfigError::InvalidFilter {
            bridge: bridge.to_owned(),
            filter,
            error,
        },
        error => BridgeConfigError::Subscribe {
            bridge: bridge.to_owned(),
            error,
        },
    }
}
