//! # rt-std
//!
//! sansmq's broker core ([`mqtt_core::node::Node`]: the broker and its
//! bridges) driven with `std::net` and `std::thread` only: no async
//! runtime, no event-loop crate. For programs that embed the broker (a
//! gateway daemon built on threads, a test harness, an appliance with no
//! async runtime), and the proof that mqtt-core is really sans-IO: this
//! crate is the second runtime and holds no protocol logic of its own.
//!
//! ## What this crate owns
//! Sockets, threads, the clock, the channels between them, and the
//! embedding API ([`Broker`], [`Handle`], [`Subscription`]).
//!
//! ## What it must never do
//! Make a protocol decision or keep protocol state. Who may connect, what a
//! packet means, when a keepalive expires, what to drop when a consumer is
//! slow (the host's own subscriptions included), which DISCONNECT to send:
//! all of it is mqtt-core's. Framing a byte stream into packets, the log
//! lines and bridge link generations are shared with rt-smol through
//! rt-common. (The one thing it decides alone, like rt-smol, is treating a
//! write queue over its hard bound as a failed transport.)
//!
//! ## Threads
//! - one **core thread** owns the `Node`; it sleeps in `recv_timeout` on its
//!   bounded input channel until the next input or the earliest
//!   `poll_timeout()` deadline (no periodic tick);
//! - one **accept thread** per listener;
//! - two threads per TCP connection: a **reader** (blocking reads, framing,
//!   bounded channel to the core: backpressure) and a **writer** (the
//!   core's write queue to the socket, reporting bytes written);
//! - two threads per QUIC listener (datagram receiver, endpoint driver);
//! - two threads per live bridge link (TCP: dial + read, write; QUIC:
//!   receiver, driver).
//!
//! So a process with N connections runs about 2N + listeners + 1 threads.
//! See docs/ARCHITECTURE.md for the limits and when to choose rt-smol.
//!
//! ## Embedding
//! ```no_run
//! use rt_std::{config::Config, Broker, QoS};
//! let broker = Broker::start(&Config::default())?;
//! let sub = broker.subscribe("sensors/#", QoS::AtLeastOnce)?;
//! broker.publish("sensors/t1", "21.5", QoS::AtLeastOnce, false)?;
//! let m = sub.recv().expect("delivered");
//! assert_eq!(&m.payload[..], b"21.5");
//! broker.shutdown()?;
//! # Ok::<(), rt_std::Error>(())
//! ```
//!
//! Transports: TCP and QUIC listeners (`transport = "quic"`), TCP and QUIC
//! bridge links (see the `quic` module: quinn-proto driven over a
//! `std::net::UdpSocket`, two threads per listener and per QUIC link). Not
//! yet: TLS (no TLS listener exists in any runtime yet; a TLS bridge dial
//! is reported to the core as a failed transport, so a hybrid list falls
//! back to the next one).

mod bridge;
mod conn;
mod core;
mod host;
mod quic;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use mqtt_core::bridge::{BridgeConfigError, Transport as BridgeTransport};
use mqtt_core::broker::{ConnectionId, Message as CoreMessage};
use mqtt_core::codec::{Properties, ReasonCode};
use mqtt_core::node::Node;
use tracing::info;

pub use host::{Message, Subscription};
pub use mqtt_core::broker::Metrics;
pub use mqtt_core::codec::QoS;
pub use rt_common::config;

use crate::conn::{AcceptCtx, Acceptor, ConnSettings, Listener};
use crate::core::{CoreSetup, Input};
use crate::quic::QuicListener;
use config::Config;
use rt_common::quic::QuicSetupError;

/// Capacity of the channel into the core thread (read backpressure).
const INPUT_CAPACITY: usize = 1024;
/// Messages a host subscription buffers before the broker sees it as a
/// congested connection.
const SUBSCRIPTION_CAPACITY: usize = 1024;
/// How long a closing socket waits for the peer's FIN after ours.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// How long `subscribe` waits for the broker's SUBACK.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong starting, using or stopping the broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot listen on {addr} (listener {name:?}): {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
    #[error("invalid bridge configuration: {0}")]
    BridgeConfig(#[from] BridgeConfigError),
    /// A QUIC listener's or bridge's certificates or settings.
    #[error(transparent)]
    Quic(#[from] QuicSetupError),
    /// A bridge gave up (`fail_fast`, or `max_attempts` reached).
    #[error("bridge {bridge:?} failed: {reason}")]
    BridgeFatal { bridge: String, reason: String },
    #[error("invalid topic name {topic:?}: {reason}")]
    InvalidTopic { topic: String, reason: String },
    #[error("cannot subscribe: {0}")]
    Subscribe(String),
    /// The broker refused the subscription (SUBACK or CONNACK reason code).
    #[error("subscription refused: {0:?}")]
    SubscribeRefused(ReasonCode),
    /// The broker has stopped (or is stopping).
    #[error("the broker has stopped")]
    Stopped,
    /// The core thread panicked: a bug.
    #[error("the core thread panicked")]
    CorePanicked,
}

/// Starts brokers; see [`Broker::start`].
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// Bind every listener of `config` (a taken port fails here, before
    /// anything runs), then start the core and accept threads. The broker
    /// runs until [`Handle::shutdown`] (or a trigger, or dropping the
    /// handle), or until a bridge gives up ([`Handle::wait`] returns
    /// [`Error::BridgeFatal`]). `runtime.worker_threads` does not apply
    /// (threads follow connections); `runtime.shutdown_timeout` does.
    pub fn start(config: &Config) -> Result<Handle, Error> {
        let (listeners, quic_listeners) = config.bind_listeners(
            |l| {
                Ok(Listener {
                    name: l.name.clone(),
                    socket: TcpListener::bind(l.addr())?,
                })
            },
            QuicListener::bind,
            |name, addr, source| Error::Bind { name, addr, source },
        )?;
        let quic_bridges = rt_common::quic::bridges_quic(&config.bridges)?;
        let bridges: Vec<_> = config
            .bridges
            .iter()
            .map(|b| b.to_bridge_config())
            .collect();
        rt_common::log::bridges_configured(&bridges, &[BridgeTransport::Tls]);
        let node = Node::new(config.broker.to_broker_config(), bridges, Instant::now())?;
        let settings = ConnSettings {
            // The core's normalized limit, never re-derived.
            max_packet_size: node.broker().config().max_packet_size,
            linger: CLOSE_LINGER,
        };

        let (to_core, rx) = mpsc::sync_channel(INPUT_CAPACITY);
        // Never sent on: it disconnects when the last writer drops its clone.
        let (alive, alive_rx) = mpsc::channel::<()>();
        let next_id = Arc::new(AtomicU64::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = AcceptCtx {
            to_core: to_core.clone(),
            alive,
            next_id: next_id.clone(),
            settings,
            stop: stop.clone(),
        };
        let mut addrs = Vec::new();
        let mut acceptors = Vec::new();
        for l in listeners {
            if let Ok(addr) = l.socket.local_addr() {
                info!(listener = %l.name, %addr, runtime = "std", "listening");
                addrs.push((l.name.clone(), addr));
            }
            match Acceptor::spawn(l, ctx.clone()) {
                Ok(a) => acceptors.push(a),
                Err(e) => {
                    stop.store(true, Ordering::Release);
                    for a in acceptors {
                        a.stop();
                    }
                    return Err(Error::Thread(e));
                }
            }
        }
        let mut quic_handles = Vec::new();
        for l in quic_listeners {
            let name = l.name.clone();
            let addr = l.local_addr();
            let started = quic::start_listener(
                l,
                to_core.clone(),
                next_id.clone(),
                settings.max_packet_size,
                ctx.alive.clone(),
            );
            match started {
                Ok(h) => {
                    if let Some(addr) = addr {
                        info!(listener = %name, %addr, runtime = "std", "listening (QUIC)");
                        addrs.push((name, addr));
                    }
                    quic_handles.push(h);
                }
                Err(e) => {
                    stop.store(true, Ordering::Release);
                    for a in acceptors {
                        a.stop();
                    }
                    for q in &quic_handles {
                        q.stop(Duration::ZERO);
                    }
                    return Err(Error::Thread(e));
                }
            }
        }
        drop(ctx);
        let setup = CoreSetup {
            node,
            rx,
            to_core: to_core.clone(),
            acceptors,
            quic_listeners: quic_handles,
            quic_bridges,
            stop_accepting: stop,
            alive_rx,
            shutdown_timeout: config.runtime.shutdown_timeout,
        };
        let core = thread::Builder::new()
            .name("sansmq-core".into())
            .spawn(move || core::run(setup))
            .map_err(Error::Thread)?;
        Ok(Handle {
            to_core,
            core: Some(core),
            addrs,
            next_id,
        })
    }
}

/// A running broker. Dropping it shuts the broker down (as
/// [`Handle::shutdown`], ignoring the result).
#[derive(Debug)]
pub struct Handle {
    to_core: SyncSender<Input>,
    core: Option<JoinHandle<Result<Metrics, Error>>>,
    addrs: Vec<(String, SocketAddr)>,
    next_id: Arc<AtomicU64>,
}

/// Stops the broker from any thread (a signal handler thread, say).
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(SyncSender<Input>);

impl ShutdownTrigger {
    /// Start a graceful shutdown (5.0 clients get DISCONNECT 0x8B). Does
    /// nothing if the broker already stopped.
    pub fn trigger(&self) {
        let _ = self.0.send(Input::Shutdown);
    }
}

impl Handle {
    /// The bound addresses by listener name (port 0 resolved).
    pub fn local_addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// Publish as the broker itself: delivered to every matching
    /// subscriber (sockets and in-process alike), retained if `retain`.
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), Error> {
        mqtt_core::topic::validate_topic_name(topic).map_err(|e| Error::InvalidTopic {
            topic: topic.to_owned(),
            reason: e.to_string(),
        })?;
        let message = CoreMessage {
            topic: ByteString::from(topic),
            payload: payload.into(),
            qos,
            retain,
            properties: Properties::default(),
            publisher: None,
            expires_at: None,
        };
        self.to_core
            .send(Input::HostPublish(Box::new(message)))
            .map_err(|_| Error::Stopped)
    }

    /// Subscribe in-process to `filter` (wildcards and `$share` allowed),
    /// at most at `qos`. Returns once the broker granted it (retained
    /// messages may already be waiting). The broker sees an ordinary MQTT
    /// 5.0 session named `$host/<n>` (a reserved id: no network client can take it over).
    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<Subscription, Error> {
        let conn = ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::sync_channel(SUBSCRIPTION_CAPACITY);
        let (reply, verdict) = mpsc::sync_channel(1);
        let waker = host::Waker::new(self.to_core.clone(), conn);
        let req = host::SubscribeRequest {
            conn,
            filter: ByteString::from(filter),
            qos,
            tx,
            waker: waker.clone(),
            reply,
        };
        self.to_core
            .send(Input::HostSubscribe(req))
            .map_err(|_| Error::Stopped)?;
        let sub = Subscription::new(rx, waker);
        match verdict.recv_timeout(SUBSCRIBE_TIMEOUT) {
            Ok(Ok(())) => Ok(sub),
            Ok(Err(e)) => Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(Error::Subscribe("no SUBACK within 10 s".into()))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::Stopped),
        }
    }

    /// A trigger that shuts the broker down from another thread.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger(self.to_core.clone())
    }

    /// Shut down gracefully and wait: every connection is closed by the
    /// core (5.0 clients get DISCONNECT 0x8B), sockets flush for up to
    /// `runtime.shutdown_timeout`. Returns the core's final metrics, or
    /// [`Error::BridgeFatal`] if a bridge had given up first.
    pub fn shutdown(self) -> Result<Metrics, Error> {
        self.shutdown_trigger().trigger();
        self.wait()
    }

    /// Wait until the broker stops (a trigger, or a bridge's fatal error).
    pub fn wait(mut self) -> Result<Metrics, Error> {
        self.join()
    }

    fn join(&mut self) -> Result<Metrics, Error> {
        match self.core.take() {
            Some(t) => t.join().unwrap_or(Err(Error::CorePanicked)),
            None => Err(Error::Stopped),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.core.is_some() {
            let _ = self.to_core.send(Input::Shutdown);
            let _ = self.join();
        }
    }
}
