//! One bench connection: a [`Client`] (the core's client FSM) over one TCP
//! socket, as a task on a per-thread [`async_executor::LocalExecutor`].
//!
//! Unlike the `pub`/`sub` driver, many of these share a thread, so the loop
//! yields after a bounded amount of work, counts into batches flushed once
//! per wake-up, cuts payloads out of a per-connection arena (no allocation
//! per message), keeps one timer per connection, and sizes its read buffer
//! by role (an idle connection holds a few hundred bytes).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Timer;
use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use futures_lite::future;
use hdrhistogram::Histogram;
use mqtt_core::client::{Client, ClientConfig, ClientEvent, TransportDeadReason};
use mqtt_core::codec::{Properties, QoS, ReasonCode, SubscriptionOptions};

use super::report::{unix_nanos, Pending, Shared, LATENCY_MAX_US};
use crate::tools::driver::Dialer;

/// Publishes kept queued in the client ahead of the socket.
const QUEUE_TARGET: usize = 128;
/// Payload bytes cut from one arena allocation.
const ARENA: usize = 64 * 1024;
/// Work passes before a connection yields to the others on its thread.
const PASSES_BEFORE_YIELD: u32 = 16;
/// How long publishers wait for outstanding acknowledgements after their
/// last publish, and every connection for its DISCONNECT to go out after
/// the stop signal.
pub(super) const DRAIN: Duration = Duration::from_secs(5);

/// What the publishers do (shared by all of them).
#[derive(Debug)]
pub(super) struct PubPlan {
    pub qos: QoS,
    pub retain: bool,
    pub size: usize,
    /// Messages per second per client; 0 = as fast as the window allows.
    pub rate: f64,
    /// Messages per client; 0 = until the duration ends.
    pub count: u64,
    pub duration: Duration,
}

#[derive(Debug)]
pub(super) enum RoleSpec {
    Pub {
        plan: Arc<PubPlan>,
        topic: ByteString,
    },
    Sub {
        filter: ByteString,
        qos: QoS,
    },
    Idle,
}

#[derive(Debug)]
pub(super) struct ClientSpec {
    pub config: ClientConfig,
    pub role: RoleSpec,
    /// When to start connecting.
    pub start: Instant,
}

/// What the tasks of one thread share.
pub(super) struct ThreadCtx {
    pub shared: Arc<Shared>,
    pub addrs: Arc<[SocketAddr]>,
    /// TCP, or QUIC with `--quic` (the tools' dialer).
    pub dialer: Arc<Dialer>,
    /// Closed by the coordinator when publishing starts.
    pub go: async_channel::Receiver<()>,
    /// Closed by the coordinator when everyone should disconnect.
    pub stop: async_channel::Receiver<()>,
    /// Connect slots: a token is held from TCP connect until CONNACK, which
    /// bounds connects in progress.
    pub slots: (async_channel::Sender<()>, async_channel::Receiver<()>),
    pub hist: RefCell<Histogram<u64>>,
}

enum Wake {
    Read(std::io::Result<usize>),
    Timer,
    Go,
    Stop,
}

/// The role's state on a live connection.
enum Role {
    Pub(Publisher),
    Sub,
    Idle,
}

struct Publisher {
    plan: Arc<PubPlan>,
    topic: ByteString,
    /// Publishing started at (after the go signal).
    t0: Option<Instant>,
    produced: u64,
    /// No more publishes: the duration ended, the count is reached, or stop.
    stopped: bool,
    /// Give up waiting for acknowledgements at.
    drain_until: Option<Instant>,
    arena: BytesMut,
}

impl Publisher {
    fn payload(&mut self, stamp: u64) -> Bytes {
        let size = self.plan.size;
        if self.arena.capacity() < size {
            self.arena = BytesMut::with_capacity(ARENA.max(size));
        }
        self.arena.put_u64(stamp);
        self.arena.put_bytes(b'x', size - 8);
        self.arena.split().freeze()
    }

    fn stop(&mut self, now: Instant) {
        if !self.stopped {
            self.stopped = true;
            self.drain_until = Some(now + DRAIN);
        }
    }

    /// Queue what is due. Returns true when it is time to disconnect.
    fn step(&mut self, client: &mut Client, now: Instant, pend: &mut Pending) -> bool {
        let Some(t0) = self.t0 else {
            return false;
        };
        let plan = Arc::clone(&self.plan);
        if !self.stopped
            && (now >= t0 + plan.duration || (plan.count > 0 && self.produced >= plan.count))
        {
            self.stop(now);
        }
        if !self.stopped && client.is_connected() {
            let due = if plan.rate > 0.0 {
                // Message k (from 0) is due at t0 + k / rate.
                (now.duration_since(t0).as_secs_f64() * plan.rate) as u64 + 1
            } else {
                u64::MAX
            };
            let due = if plan.count > 0 {
                due.min(plan.count)
            } else {
                due
            };
            let room = QUEUE_TARGET.saturating_sub(client.queued_len()) as u64;
            let n = due.saturating_sub(self.produced).min(room);
            if n > 0 {
                let stamp = unix_nanos();
                for _ in 0..n {
                    let payload = self.payload(stamp);
                    match client.publish(
                        self.topic.clone(),
                        payload,
                        plan.qos,
                        plan.retain,
                        Properties::default(),
                        now,
                    ) {
                        Ok(_) => {
                            self.produced += 1;
                            pend.sent += 1;
                        }
                        Err(_) => {
                            pend.publish_errors += 1;
                            break;
                        }
                    }
                }
            }
        }
        self.stopped
            && (client.is_idle() || self.drain_until.is_some_and(|d| now >= d))
            && client.is_connected()
    }

    fn wake_at(&self) -> Option<Instant> {
        let t0 = self.t0?;
        if self.stopped {
            return self.drain_until;
        }
        let end = t0 + self.plan.duration;
        if self.plan.rate > 0.0 {
            let next = t0 + Duration::from_secs_f64(self.produced as f64 / self.plan.rate);
            Some(next.min(end))
        } else {
            Some(end)
        }
    }
}

/// Apply `%i` (the client index) and `%c` (the client id) to a topic.
pub(super) fn expand(template: &str, index: usize, client_id: &str) -> String {
    if !template.contains('%') {
        return template.to_owned();
    }
    template
        .replace("%i", &index.to_string())
        .replace("%c", client_id)
}

/// Run one connection from its start time to the end.
pub(super) async fn run(spec: ClientSpec, ctx: &ThreadCtx) {
    let is_pub = matches!(spec.role, RoleSpec::Pub { .. });
    let is_sub = matches!(spec.role, RoleSpec::Sub { .. });
    let outcome = connection(spec, ctx).await;
    let shared = &ctx.shared;
    match outcome {
        Outcome::NotConnected => {
            shared.connect_errors.fetch_add(1, Ordering::Relaxed);
            if is_sub {
                shared.subs_not_connected.fetch_add(1, Ordering::Relaxed);
            }
        }
        Outcome::Lost => {
            shared.conn_lost.fetch_add(1, Ordering::Relaxed);
        }
        Outcome::Done | Outcome::Cancelled => {}
    }
    if is_pub {
        shared.pubs_done.fetch_add(1, Ordering::Relaxed);
    }
    shared.tasks_done.fetch_add(1, Ordering::Relaxed);
}

enum Outcome {
    /// Ended by our DISCONNECT (or while stopping).
    Done,
    /// Stopped before connecting.
    Cancelled,
    /// TCP connect, CONNACK or its timeout failed.
    NotConnected,
    /// Lost after CONNACK.
    Lost,
}

async fn connection(spec: ClientSpec, ctx: &ThreadCtx) -> Outcome {
    let shared = &*ctx.shared;
    let mut stop = pin!(ctx.stop.recv());
    let mut go = pin!(ctx.go.recv());

    // Wait for the start time, then for a connect slot; stop cancels both.
    if spec.start > Instant::now() {
        let started = future::or(
            async {
                Timer::at(spec.start).await;
                true
            },
            async {
                let _ = stop.as_mut().await;
                false
            },
        )
        .await;
        if !started {
            return Outcome::Cancelled;
        }
    }
    let slot = future::or(async { ctx.slots.1.recv().await.is_ok() }, async {
        let _ = stop.as_mut().await;
        false
    })
    .await;
    if !slot {
        return Outcome::Cancelled;
    }
    let mut slot_held = true;
    let release = |held: &mut bool| {
        if std::mem::take(held) {
            let _ = ctx.slots.0.try_send(());
        }
    };
    shared
        .first_attempt_ns
        .fetch_min(shared.since_base(Instant::now()), Ordering::Relaxed);

    let stream = match ctx.dialer.dial(&ctx.addrs).await.ok() {
        Some(s) => s,
        None => {
            release(&mut slot_held);
            return Outcome::NotConnected;
        }
    };
    let mut stream = stream;
    let now = Instant::now();
    let mut client = match Client::new(spec.config, now) {
        Ok(c) => c,
        Err(_) => {
            release(&mut slot_held);
            return Outcome::NotConnected;
        }
    };
    let (mut role, chunk_len) = match spec.role {
        RoleSpec::Pub { plan, topic } => (
            Role::Pub(Publisher {
                plan,
                topic,
                t0: None,
                produced: 0,
                stopped: false,
                drain_until: None,
                arena: BytesMut::new(),
            }),
            4 * 1024,
        ),
        RoleSpec::Sub { filter, qos } => {
            if client
                .subscribe(
                    vec![(filter, SubscriptionOptions::new(qos))],
                    Properties::default(),
                    now,
                )
                .is_err()
            {
                shared.subscribe_errors.fetch_add(1, Ordering::Relaxed);
            }
            (Role::Sub, 64 * 1024)
        }
        RoleSpec::Idle => (Role::Idle, 512),
    };
    let mut go_seen = !matches!(role, Role::Pub(_));
    let mut stop_seen = false;
    let mut hard_deadline: Option<Instant> = None;
    let mut disconnecting = false;
    let mut connected = false;
    let mut pend = Pending::default();
    let mut rbuf = BytesMut::with_capacity(chunk_len);
    let mut chunk = vec![0u8; chunk_len];
    let mut timer = Timer::never();
    // Wall-clock time of the latest read, taken at its first message.
    let mut recv_ns: Option<u64> = None;
    client.handle_transport_up(now);

    let outcome = 'conn: loop {
        // Work until nothing moves, yielding now and then.
        let mut passes = 0;
        loop {
            let now = Instant::now();
            if let Role::Pub(p) = &mut role {
                if !disconnecting && p.step(&mut client, now, &mut pend) {
                    disconnecting = true;
                    // What never left the queue was not sent.
                    pend.unsent += client.queued_len() as u64;
                    let _ = client.disconnect(
                        ReasonCode::NORMAL_DISCONNECTION,
                        Properties::default(),
                        now,
                    );
                }
            }
            let mut progressed = false;
            while let Some(bytes) = client.poll_transmit() {
                progressed = true;
                if stream.write_all(&bytes).await.is_err() {
                    break 'conn if connected {
                        lost(stop_seen)
                    } else {
                        Outcome::NotConnected
                    };
                }
            }
            while let Some(event) = client.poll_event() {
                progressed = true;
                match event {
                    ClientEvent::Connected(_) => {
                        connected = true;
                        release(&mut slot_held);
                        shared.connected.fetch_add(1, Ordering::Relaxed);
                        shared
                            .last_connack_ns
                            .fetch_max(shared.since_base(Instant::now()), Ordering::Relaxed);
                    }
                    ClientEvent::Subscribed(ack) => {
                        if ack.reason_codes.iter().all(|c| c.is_success()) {
                            shared.subscribed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            shared.subscribe_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    ClientEvent::PublishAcked { reason_code, .. } => {
                        if reason_code.is_success() {
                            pend.acked += 1;
                        } else {
                            pend.publish_errors += 1;
                        }
                    }
                    ClientEvent::Dropped { .. } => pend.publish_errors += 1,
                    ClientEvent::Message(m) => {
                        pend.received += 1;
                        if let Some(stamp) = m.payload.get(..8) {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(stamp);
                            let sent = u64::from_be_bytes(b);
                            // One clock read per socket read, not per message.
                            let now = *recv_ns.get_or_insert_with(unix_nanos);
                            let us = now.saturating_sub(sent) / 1000;
                            ctx.hist
                                .borrow_mut()
                                .saturating_record(us.clamp(1, LATENCY_MAX_US));
                        }
                    }
                    ClientEvent::TransportDead(reason) => {
                        while let Some(bytes) = client.poll_transmit() {
                            let _ = stream.write_all(&bytes).await;
                        }
                        break 'conn match reason {
                            TransportDeadReason::ClientDisconnect => Outcome::Done,
                            _ if !connected => Outcome::NotConnected,
                            _ => lost(stop_seen),
                        };
                    }
                    _ => {}
                }
            }
            if !progressed {
                break;
            }
            passes += 1;
            if passes >= PASSES_BEFORE_YIELD {
                pend.flush(shared, Instant::now());
                future::yield_now().await;
                passes = 0;
            }
        }
        pend.flush(shared, Instant::now());

        // Sleep until readable, a deadline, or a signal.
        let role_wake = match &role {
            Role::Pub(p) if !disconnecting => p.wake_at(),
            _ => None,
        };
        let deadline = [client.poll_timeout(), role_wake, hard_deadline]
            .into_iter()
            .flatten()
            .min();
        match deadline {
            Some(at) => timer.set_at(at),
            None => timer.set_after(Duration::from_secs(3600)),
        }
        let wake = future::or(
            async { Wake::Read(stream.read(&mut chunk).await) },
            future::or(
                async {
                    (&mut timer).await;
                    Wake::Timer
                },
                async {
                    if !go_seen {
                        let _ = go.as_mut().await;
                        Wake::Go
                    } else if !stop_seen {
                        let _ = stop.as_mut().await;
                        Wake::Stop
                    } else {
                        future::pending().await
                    }
                },
            ),
        )
        .await;
        let now = Instant::now();
        match wake {
            Wake::Read(Ok(0)) | Wake::Read(Err(_)) => {
                break if !connected {
                    Outcome::NotConnected
                } else {
                    lost(stop_seen)
                };
            }
            Wake::Read(Ok(n)) => {
                rbuf.extend_from_slice(&chunk[..n]);
                recv_ns = None;
                client.handle_read(&mut rbuf, now);
            }
            Wake::Timer => {}
            Wake::Go => {
                go_seen = true;
                if let Role::Pub(p) = &mut role {
                    p.t0 = Some(shared.t0.get().copied().unwrap_or(now));
                }
            }
            Wake::Stop => {
                stop_seen = true;
                hard_deadline = Some(now + DRAIN);
                match &mut role {
                    Role::Pub(p) => p.stop(now),
                    Role::Sub | Role::Idle => {
                        if !disconnecting {
                            disconnecting = true;
                            let _ = client.disconnect(
                                ReasonCode::NORMAL_DISCONNECTION,
                                Properties::default(),
                                now,
                            );
                        }
                    }
                }
                if !connected {
                    break Outcome::Cancelled;
                }
            }
        }
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
        }
        if hard_deadline.is_some_and(|t| t <= now) {
            break Outcome::Done;
        }
    };
    release(&mut slot_held);
    pend.flush(shared, Instant::now());
    stream.finish().await;
    client.handle_transport_down(Instant::now());
    outcome
}

/// A connection that died while we were stopping was ending anyway.
fn lost(stopping: bool) -> Outcome {
    if stopping {
        Outcome::Done
    } else {
        Outcome::Lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_expand_index_and_client_id() {
        assert_eq!(expand("bench/%i", 7, "c7"), "bench/7");
        assert_eq!(expand("b/%c/%i", 3, "x-3"), "b/x-3/3");
        assert_eq!(expand("plain", 1, "c"), "plain");
    }
}
