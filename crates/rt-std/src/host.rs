//! The host program's own subscriptions: in-process, no socket.
//!
//! Each [`Subscription`] is an ordinary MQTT 5.0 session of the broker
//! over an in-memory connection, driven by the core's client state machine
//! (`mqtt_core::client::Client`), the way the core's `Node` links a bridge's
//! local side. So the broker treats the host like any client (subscription
//! options, retained messages, QoS flows, its queue limits) and this module
//! only moves bytes between the two state machines on the core thread.
//!
//! Backpressure: a message goes to the host's bounded channel; when the
//! host is behind, it waits here and the bytes that carried it are not
//! reported written to the broker yet. The broker then sees a congested
//! connection and applies its own policy (past
//! `max_pending_bytes_per_connection` it holds QoS 1/2 in the session queue
//! and drops QoS 0, counting it), exactly as for a slow socket. Nothing is
//! decided here.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use mqtt_core::broker::{ConnectionId, ConnectionInfo};
use mqtt_core::client::{Client, ClientConfig, ClientEvent};
use mqtt_core::codec::{Properties, QoS, ReasonCode, SubscriptionOptions};
use mqtt_core::node::Node;
use tracing::debug;

use crate::core::Input;
use crate::Error;

/// An application message delivered to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    /// The QoS it was delivered at (min of published and subscribed).
    pub qos: QoS,
    pub retain: bool,
}

/// Shared between a [`Subscription`] and its link on the core thread.
#[derive(Debug)]
pub(crate) struct Waker {
    /// The core holds messages for this subscription: the host pokes it
    /// after taking one, so they move without waiting for other input.
    held: AtomicBool,
    to_core: SyncSender<Input>,
    conn: ConnectionId,
}

impl Waker {
    pub(crate) fn new(to_core: SyncSender<Input>, conn: ConnectionId) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicBool::new(false),
            to_core,
            conn,
        })
    }

    fn took_one(&self) {
        if self.held.load(Ordering::Acquire) {
            // Full channel: the core is busy and looks at held messages
            // after every batch anyway.
            let _ = self.to_core.try_send(Input::HostDrained);
        }
    }
}

/// The messages of one [`crate::Handle::subscribe`]. Dropping it ends the
/// in-process session (the broker forgets the subscription). The stream
/// ends (`recv` returns `None`) when the broker shuts down.
#[derive(Debug)]
pub struct Subscription {
    rx: Receiver<Message>,
    waker: Arc<Waker>,
    /// A message `is_closed` had to take off the channel to look: handed
    /// out first by the next receive, so looking never loses one.
    peeked: Mutex<Option<Message>>,
}

impl Subscription {
    pub(crate) fn new(rx: Receiver<Message>, waker: Arc<Waker>) -> Self {
        Self {
            rx,
            waker,
            peeked: Mutex::new(None),
        }
    }

    fn peeked(&self) -> std::sync::MutexGuard<'_, Option<Message>> {
        // A panic elsewhere cannot leave an `Option` half-written.
        self.peeked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next message; `None` once the broker has stopped.
    pub fn recv(&self) -> Option<Message> {
        if let Some(m) = self.peeked().take() {
            return Some(m);
        }
        let m = self.rx.recv().ok()?;
        self.waker.took_one();
        Some(m)
    }

    /// The next message within `timeout`; `None` on timeout or once the
    /// broker has stopped (see [`Self::is_closed`] to tell them apart).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Message> {
        if let Some(m) = self.peeked().take() {
            return Some(m);
        }
        match self.rx.recv_timeout(timeout) {
            Ok(m) => {
                self.waker.took_one();
                Some(m)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// A message if one is waiting.
    pub fn try_recv(&self) -> Option<Message> {
        if let Some(m) = self.peeked().take() {
            return Some(m);
        }
        let m = self.rx.try_recv().ok()?;
        self.waker.took_one();
        Some(m)
    }

    /// True once the broker has stopped and every message was taken.
    pub fn is_closed(&self) -> bool {
        let mut peeked = self.peeked();
        if peeked.is_some() {
            return false;
        }
        match self.rx.try_recv() {
            Ok(m) => {
                self.waker.took_one();
                *peeked = Some(m);
                false
            }
            Err(TryRecvError::Empty) => false,
            Err(TryRecvError::Disconnected) => true,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // If the core's channel is full, the link is found dead on its next
        // delivery instead.
        let _ = self.waker.to_core.try_send(Input::HostUnsubscribed {
            conn: self.waker.conn,
        });
    }
}

/// What the host asked for, carried to the core thread.
pub(crate) struct SubscribeRequest {
    pub(crate) conn: ConnectionId,
    pub(crate) filter: ByteString,
    pub(crate) qos: QoS,
    pub(crate) tx: SyncSender<Message>,
    pub(crate) waker: Arc<Waker>,
    /// Answered with the SUBACK's verdict.
    pub(crate) reply: SyncSender<Result<(), Error>>,
}

struct HostLink {
    client: Client,
    tx: SyncSender<Message>,
    waker: Arc<Waker>,
    /// Delivered by the client, not yet taken by the host's channel.
    held: VecDeque<Message>,
    /// Bytes from the broker not yet reported written (held back while
    /// messages are held: that is the broker's congestion signal).
    unreported: usize,
    reply: Option<SyncSender<Result<(), Error>>>,
    /// The host dropped its Subscription, or the client gave up.
    dead: bool,
}

/// Every host subscription, by its connection id.
#[derive(Default)]
pub(crate) struct Hosts {
    links: HashMap<ConnectionId, HostLink>,
}

impl Hosts {
    pub(crate) fn contains(&self, conn: ConnectionId) -> bool {
        self.links.contains_key(&conn)
    }

    /// Open the in-memory connection and queue CONNECT and SUBSCRIBE.
    pub(crate) fn open(&mut self, node: &mut Node, req: SubscribeRequest, now: Instant) {
        let config = ClientConfig {
            client_id: format!("$host/{}", req.conn.0).into(),
            // No PINGREQ: the link cannot fail silently.
            keep_alive: 0,
            ..Default::default()
        };
        let client = Client::new(config, now).map_err(|e| Error::Subscribe(e.to_string()));
        let subscribed = client.and_then(|mut c| {
            c.subscribe(
                vec![(req.filter.clone(), SubscriptionOptions::new(req.qos))],
                Properties::default(),
                now,
            )
            .map_err(|e| Error::Subscribe(e.to_string()))?;
            Ok(c)
        });
        let mut client = match subscribed {
            Ok(c) => c,
            Err(e) => {
                let _ = req.reply.try_send(Err(e));
                return;
            }
        };
        node.handle_connection_opened(
            req.conn,
            ConnectionInfo {
                peer: None,
                listener: "host".into(),
                internal: true,
            },
            now,
        );
        client.handle_transport_up(now);
        self.links.insert(
            req.conn,
            HostLink {
                client,
                tx: req.tx,
                waker: req.waker,
                held: VecDeque::new(),
                unreported: 0,
                reply: Some(req.reply),
                dead: false,
            },
        );
    }

    /// Bytes the broker wrote to a host connection.
    pub(crate) fn on_transmit(&mut self, conn: ConnectionId, data: &[u8], now: Instant) {
        if let Some(l) = self.links.get_mut(&conn) {
            l.unreported += data.len();
            let mut buf = BytesMut::from(data);
            l.client.handle_read(&mut buf, now);
        }
    }

    /// The broker closed a host connection (it has forgotten it).
    pub(crate) fn on_closed(&mut self, conn: ConnectionId) {
        if let Some(mut l) = self.links.remove(&conn) {
            if let Some(reply) = l.reply.take() {
                let _ = reply.try_send(Err(Error::Stopped));
            }
            // Dropping `tx` ends the host's stream once it took the rest.
            debug!(%conn, held = l.held.len(), "host subscription closed");
        }
    }

    pub(crate) fn unsubscribed(&mut self, conn: ConnectionId) {
        if let Some(l) = self.links.get_mut(&conn) {
            l.dead = true;
        }
    }

    /// Move bytes from the host clients to the broker, their events to the
    /// host, held messages into free channel slots. True if anything moved.
    pub(crate) fn pump(&mut self, node: &mut Node, now: Instant) -> bool {
        let mut progressed = false;
        let mut closed = Vec::new();
        for (&conn, l) in &mut self.links {
            while let Some(data) = l.client.poll_transmit() {
                progressed = true;
                let mut buf = BytesMut::from(&data[..]);
                node.handle_read(conn, &mut buf, now);
            }
            while let Some(ev) = l.client.poll_event() {
                progressed = true;
                match ev {
                    ClientEvent::Message(p) => l.held.push_back(Message {
                        topic: p.topic,
                        payload: p.payload,
                        qos: p.qos,
                        retain: p.retain,
                    }),
                    ClientEvent::Subscribed(suback) => {
                        let verdict = match suback.reason_codes.first() {
                            Some(code) if code.is_success() => Ok(()),
                            Some(code) => Err(Error::SubscribeRefused(*code)),
                            None => Err(Error::SubscribeRefused(ReasonCode::UNSPECIFIED_ERROR)),
                        };
                        if let Some(reply) = l.reply.take() {
                            let _ = reply.try_send(verdict);
                        }
                    }
                    ClientEvent::ConnectRefused { reason_code, .. } => {
                        if let Some(reply) = l.reply.take() {
                            let _ = reply.try_send(Err(Error::SubscribeRefused(reason_code)));
                        }
                    }
                    ClientEvent::TransportDead(reason) => {
                        debug!(%conn, %reason, "host subscription's client ended");
                        l.dead = true;
                    }
                    _ => {}
                }
            }
            while let Some(m) = l.held.pop_front() {
                match l.tx.try_send(m) {
                    Ok(()) => progressed = true,
                    Err(TrySendError::Full(m)) => {
                        l.held.push_front(m);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        l.dead = true;
                        l.held.clear();
                    }
                }
            }
            l.waker.held.store(!l.held.is_empty(), Ordering::Release);
            if l.held.is_empty() && l.unreported > 0 {
                progressed = true;
                node.handle_written(conn, std::mem::take(&mut l.unreported), now);
            }
            if l.dead {
                closed.push(conn);
            }
        }
        for conn in closed {
            progressed = true;
            self.links.remove(&conn);
            node.handle_connection_closed(conn, now);
        }
        progressed
    }

    /// The earliest deadline of the host clients (CONNACK timeout).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.links
            .values()
            .filter_map(|l| l.client.poll_timeout())
            .min()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        for l in self.links.values_mut() {
            if l.client.poll_timeout().is_some_and(|d| d <= now) {
                l.client.handle_timeout(now);
            }
        }
    }
}
