//! Simulated stream connections between hosts.
//!
//! Everything a connection carries is an entry of one delivery queue ordered
//! by (virtual time, sequence number), so ties resolve the same way on every
//! run. Within one direction of a connection deliveries never reorder (a
//! stream): a segment is delivered at `max(now + latency + jitter + stall,
//! previous delivery in that direction)`, which also makes one stalled
//! segment hold back the ones behind it, as TCP's head-of-line blocking does.
//!
//! Datagrams ([`Network::send_datagram`], for QUIC over simulated UDP,
//! issue 6) share the delivery queue, latency model and partitions, and add
//! loss, duplication and reordering ([`DatagramConfig`]); they skip the
//! per-direction ordering clamp and any partition loses them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::SimRng;

/// A host; also the index of the node it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub u32);

impl HostId {
    /// The host's address (10.0.0.0/16), for `ConnectionInfo::peer` and logs.
    pub fn addr(self, port: u16) -> SocketAddr {
        let [_, _, hi, lo] = self.0.to_be_bytes();
        SocketAddr::from(([10, 0, hi, lo], port))
    }
}

/// One end of a connection, named for the node that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SockId(pub u64);

/// A connection (both ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What a node learns from the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// Listener side: a dial reached us.
    Accepted {
        sock: SockId,
        peer: HostId,
    },
    /// Dialer side: the connection is up.
    Connected {
        sock: SockId,
    },
    /// Dialer side: refused (after one RTT) or timed out in a partition.
    DialFailed {
        sock: SockId,
    },
    Data {
        sock: SockId,
        data: Bytes,
    },
    /// The peer closed (FIN, after all its data) or reset the connection, or
    /// the local interface dropped it ([`Network::vanish`]).
    Closed {
        sock: SockId,
        reset: bool,
    },
    /// A datagram from `from` (see [`Network::send_datagram`]).
    Datagram {
        from: HostId,
        data: Bytes,
    },
}

impl NetEvent {
    pub fn sock(&self) -> SockId {
        match self {
            NetEvent::Accepted { sock, .. }
            | NetEvent::Connected { sock }
            | NetEvent::DialFailed { sock }
            | NetEvent::Data { sock, .. }
            | NetEvent::Closed { sock, .. } => *sock,
            // Datagrams have no socket of ours; hosts own one UDP port.
            NetEvent::Datagram { .. } => SockId(0),
        }
    }
}

/// Latency model of the link between two hosts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// One way.
    pub latency: Duration,
    /// Extra uniform delay in `0..=jitter` per segment.
    pub jitter: Duration,
    /// Probability that a segment stalls (a retransmission, a full window).
    pub stall_probability: f64,
    /// A stall adds uniform `0..=stall_max`.
    pub stall_max: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(2),
            stall_probability: 0.0,
            stall_max: Duration::ZERO,
        }
    }
}

/// How datagrams misbehave (besides the link's latency and jitter).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DatagramConfig {
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is delivered twice (the copy later).
    pub duplicate: f64,
    /// Probability a datagram is delayed by up to `reorder_delay` extra,
    /// letting later ones overtake it.
    pub reorder: f64,
    pub reorder_delay: Duration,
}

/// What a partition does to traffic between its two hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKind {
    /// Segments wait until the partition heals (TCP retransmits), then go.
    Hold,
    /// Segments are lost. A stream cannot skip bytes, so the connection is
    /// dead from then on and neither end is told: each must notice by its
    /// own timers. Dials fail after `dial_timeout`.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Partition {
    a: HostId,
    b: HostId,
    from: Instant,
    until: Instant,
    kind: PartitionKind,
}

#[derive(Debug, Clone, Copy)]
struct End {
    host: HostId,
    sock: SockId,
    open: bool,
}

#[derive(Debug)]
struct Conn {
    /// `[dialer, listener]`; direction `d` carries bytes from `ends[d]`.
    ends: [End; 2],
    /// Black-holed: nothing is delivered any more, nobody is told.
    broken: bool,
    /// The last delivery time per direction (stream order).
    last: [Instant; 2],
}

#[derive(Debug)]
struct Pending {
    /// `ConnId(0)` for datagrams.
    conn: ConnId,
    /// Set for datagrams: the host it goes to.
    datagram_to: Option<HostId>,
    /// The end that receives it.
    to_side: usize,
    event: NetEvent,
}

/// Connections, partitions and the delivery queue.
#[derive(Debug)]
pub struct Network {
    listening: Vec<bool>,
    default_link: LinkConfig,
    links: HashMap<(HostId, HostId), LinkConfig>,
    /// A dial into a `Drop` partition (or a `Hold` one that outlasts it)
    /// fails after this long (SYN retries giving up). Default 5 s.
    pub dial_timeout: Duration,
    /// Loss, duplication and reordering of datagrams. Default: none.
    pub datagrams: DatagramConfig,
    partitions: Vec<Partition>,
    conns: BTreeMap<ConnId, Conn>,
    socks: HashMap<SockId, (ConnId, usize)>,
    queue: BTreeMap<(Instant, u64), Pending>,
    seq: u64,
    next_sock: u64,
    next_conn: u64,
}

impl Network {
    pub fn new(default_link: LinkConfig) -> Self {
        Self {
            listening: Vec::new(),
            default_link,
            links: HashMap::new(),
            dial_timeout: Duration::from_secs(5),
            datagrams: DatagramConfig::default(),
            partitions: Vec::new(),
            conns: BTreeMap::new(),
            socks: HashMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            next_sock: 1,
            next_conn: 1,
        }
    }

    pub(crate) fn add_host(&mut self, listening: bool) -> HostId {
        self.listening.push(listening);
        HostId((self.listening.len() - 1) as u32)
    }

    /// Whether dials to `host` are accepted (else refused after one RTT).
    pub fn set_listening(&mut self, host: HostId, listening: bool) {
        if let Some(l) = self.listening.get_mut(host.0 as usize) {
            *l = listening;
        }
    }

    /// The link between `a` and `b` (both directions).
    pub fn set_link(&mut self, a: HostId, b: HostId, link: LinkConfig) {
        self.links.insert((a.min(b), a.max(b)), link);
    }

    pub fn link(&self, a: HostId, b: HostId) -> LinkConfig {
        self.links
            .get(&(a.min(b), a.max(b)))
            .copied()
            .unwrap_or(self.default_link)
    }

    /// Cut `a` from `b` during `from..until`.
    pub fn partition(
        &mut self,
        a: HostId,
        b: HostId,
        from: Instant,
        until: Instant,
        kind: PartitionKind,
    ) {
        self.partitions.push(Partition {
            a,
            b,
            from,
            until,
            kind,
        });
    }

    fn partition_at(&self, a: HostId, b: HostId, t: Instant) -> Option<Partition> {
        // The harshest active one wins: Drop over Hold, then the longest.
        self.partitions
            .iter()
            .filter(|p| {
                ((p.a == a && p.b == b) || (p.a == b && p.b == a)) && p.from <= t && t < p.until
            })
            .max_by_key(|p| (p.kind == PartitionKind::Drop, p.until))
            .copied()
    }

    /// The earliest pending delivery.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(t, _)| *t)
    }

    /// The next delivery due at or before `now`, with the host it goes to.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(HostId, NetEvent)> {
        loop {
            let (&key, _) = self.queue.iter().next()?;
            if key.0 > now {
                return None;
            }
            let p = self.queue.remove(&key)?;
            if let Some(host) = p.datagram_to {
                return Some((host, p.event));
            }
            let Some(conn) = self.conns.get_mut(&p.conn) else {
                continue;
            };
            let end = conn.ends[p.to_side];
            match &p.event {
                NetEvent::Accepted { .. }
                | NetEvent::Connected { .. }
                | NetEvent::Datagram { .. } => {}
                NetEvent::DialFailed { .. } => {
                    conn.ends[p.to_side].open = false;
                }
                NetEvent::Data { .. } => {
                    if !end.open || conn.broken {
                        continue;
                    }
                }
                NetEvent::Closed { .. } => {
                    if !end.open {
                        continue;
                    }
                    conn.ends[p.to_side].open = false;
                }
            }
            return Some((end.host, p.event));
        }
    }

    fn push(&mut self, at: Instant, conn: ConnId, to_side: usize, event: NetEvent) {
        self.seq += 1;
        self.queue.insert(
            (at, self.seq),
            Pending {
                conn,
                datagram_to: None,
                to_side,
                event,
            },
        );
    }

    fn new_sock(&mut self) -> SockId {
        let s = SockId(self.next_sock);
        self.next_sock += 1;
        s
    }

    fn one_way(&self, a: HostId, b: HostId, rng: &mut SimRng) -> Duration {
        let link = self.link(a, b);
        let mut d = link.latency + rng.duration(Duration::ZERO, link.jitter);
        if link.stall_probability > 0.0 && rng.chance(link.stall_probability) {
            d += rng.duration(Duration::ZERO, link.stall_max);
        }
        d
    }

    /// Open a connection from `from` to `to`. The dialer gets `Connected`
    /// one RTT later (the listener `Accepted` after one way), or
    /// `DialFailed`.
    pub fn dial(&mut self, now: Instant, from: HostId, to: HostId, rng: &mut SimRng) -> SockId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let s0 = self.new_sock();
        let s1 = self.new_sock();
        let listening = self.listening.get(to.0 as usize).copied().unwrap_or(false);
        let there = self.one_way(from, to, rng);
        let back = self.one_way(to, from, rng);
        let mut start = now;
        let mut fail_at = None;
        match self.partition_at(from, to, now) {
            Some(p) if p.kind == PartitionKind::Drop || p.until >= now + self.dial_timeout => {
                fail_at = Some(now + self.dial_timeout);
            }
            Some(p) => start = p.until,
            None => {}
        }
        if fail_at.is_none() && !listening {
            fail_at = Some(start + there + back);
        }
        let accept_at = start + there;
        let connect_at = accept_at + back;
        self.conns.insert(
            id,
            Conn {
                ends: [
                    End {
                        host: from,
                        sock: s0,
                        open: true,
                    },
                    End {
                        host: to,
                        sock: s1,
                        open: fail_at.is_none(),
                    },
                ],
                broken: false,
                last: [accept_at, connect_at],
            },
        );
        self.socks.insert(s0, (id, 0));
        match fail_at {
            Some(t) => self.push(t, id, 0, NetEvent::DialFailed { sock: s0 }),
            None => {
                self.socks.insert(s1, (id, 1));
                self.push(
                    accept_at,
                    id,
                    1,
                    NetEvent::Accepted {
                        sock: s1,
                        peer: from,
                    },
                );
                self.push(connect_at, id, 0, NetEvent::Connected { sock: s0 });
            }
        }
        s0
    }

    /// When a segment sent now from `side` arrives; `None` = lost (and the
    /// connection black-holed).
    fn arrival(
        &mut self,
        now: Instant,
        id: ConnId,
        side: usize,
        rng: &mut SimRng,
    ) -> Option<Instant> {
        let conn = self.conns.get(&id)?;
        if conn.broken || !conn.ends[side].open {
            return None;
        }
        let (a, b) = (conn.ends[side].host, conn.ends[1 - side].host);
        let mut start = now;
        match self.partition_at(a, b, now) {
            Some(p) if p.kind == PartitionKind::Drop => {
                self.blackhole(now, id);
                return None;
            }
            Some(p) => start = p.until,
            None => {}
        }
        let t = start + self.one_way(a, b, rng);
        let conn = self.conns.get_mut(&id)?;
        let t = t.max(conn.last[side]);
        conn.last[side] = t;
        Some(t)
    }

    /// Write bytes on `sock`; they arrive in order, or never if the
    /// connection is black-holed.
    pub fn send(&mut self, now: Instant, sock: SockId, data: Bytes, rng: &mut SimRng) {
        let Some(&(id, side)) = self.socks.get(&sock) else {
            return;
        };
        let Some(at) = self.arrival(now, id, side, rng) else {
            return;
        };
        let Some(peer) = self.conns.get(&id).map(|c| c.ends[1 - side].sock) else {
            return;
        };
        self.push(at, id, 1 - side, NetEvent::Data { sock: peer, data });
    }

    /// Send one datagram from `from` to `to`: maybe lost, duplicated or
    /// reordered per [`Network::datagrams`]; lost in any partition.
    pub fn send_datagram(
        &mut self,
        now: Instant,
        from: HostId,
        to: HostId,
        data: Bytes,
        rng: &mut SimRng,
    ) {
        let d = self.datagrams;
        if self.partition_at(from, to, now).is_some() || (d.loss > 0.0 && rng.chance(d.loss)) {
            return;
        }
        let copies = if d.duplicate > 0.0 && rng.chance(d.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = now + self.one_way(from, to, rng);
            if d.reorder > 0.0 && rng.chance(d.reorder) {
                at += rng.duration(Duration::ZERO, d.reorder_delay);
            }
            self.seq += 1;
            self.queue.insert(
                (at, self.seq),
                Pending {
                    conn: ConnId(0),
                    datagram_to: Some(to),
                    to_side: 0,
                    event: NetEvent::Datagram {
                        from,
                        data: data.clone(),
                    },
                },
            );
        }
    }

    /// Close `sock` gracefully: the peer gets `Closed` after the data
    /// already sent. Nothing more is delivered to `sock`.
    pub fn close(&mut self, now: Instant, sock: SockId, rng: &mut SimRng) {
        let Some(&(id, side)) = self.socks.get(&sock) else {
            return;
        };
        let at = self.arrival(now, id, side, rng);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.ends[side].open = false;
        let peer = conn.ends[1 - side].sock;
        if let Some(at) = at {
            self.push(
                at,
                id,
                1 - side,
                NetEvent::Closed {
                    sock: peer,
                    reset: false,
                },
            );
        }
    }

    /// Reset from `sock`'s side: the peer gets `Closed { reset: true }`
    /// after one way, ahead of any data still in flight (which is lost).
    pub fn reset(&mut self, now: Instant, sock: SockId, rng: &mut SimRng) {
        let Some(&(id, side)) = self.socks.get(&sock) else {
            return;
        };
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        if conn.broken || !conn.ends[side].open {
            return;
        }
        let (a, b) = (conn.ends[side].host, conn.ends[1 - side].host);
        let peer = conn.ends[1 - side].sock;
        let at = now + self.one_way(a, b, rng);
        self.purge(now, id, false);
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.ends[side].open = false;
        }
        self.push(
            at,
            id,
            1 - side,
            NetEvent::Closed {
                sock: peer,
                reset: true,
            },
        );
    }

    /// A middlebox resets the connection: both ends get `Closed { reset:
    /// true }` now; data in flight is lost.
    pub fn reset_conn(&mut self, now: Instant, id: ConnId) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        if conn.broken {
            return;
        }
        let socks = [conn.ends[0].sock, conn.ends[1].sock];
        self.purge(now, id, false);
        for (side, sock) in socks.into_iter().enumerate() {
            self.push(now, id, side, NetEvent::Closed { sock, reset: true });
        }
    }

    /// The connection silently stops carrying anything; nobody is told.
    pub fn blackhole(&mut self, now: Instant, id: ConnId) {
        self.purge(now, id, true);
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.broken = true;
        }
    }

    /// `sock`'s end vanishes without FIN (its host lost the interface, a NAT
    /// forgot the mapping): its own node gets `Closed { reset: true }` now,
    /// the peer is never told.
    pub fn vanish(&mut self, now: Instant, sock: SockId) {
        let Some(&(id, side)) = self.socks.get(&sock) else {
            return;
        };
        let open = self.conns.get(&id).is_some_and(|c| c.ends[side].open);
        self.blackhole(now, id);
        if open {
            self.push(now, id, side, NetEvent::Closed { sock, reset: true });
        }
    }

    /// Drop what is in flight on `id`. A dial still in its handshake fails
    /// after `dial_timeout` when `fail_dial` (its SYN/ACK is lost), else
    /// the caller delivers a close instead.
    fn purge(&mut self, now: Instant, id: ConnId, fail_dial: bool) {
        let mut dialing = None;
        self.queue.retain(|_, p| {
            if p.conn != id {
                return true;
            }
            match p.event {
                NetEvent::DialFailed { .. } => true,
                NetEvent::Connected { sock } => {
                    dialing = Some(sock);
                    false
                }
                _ => false,
            }
        });
        if let (true, Some(sock)) = (fail_dial, dialing) {
            self.push(
                now + self.dial_timeout,
                id,
                0,
                NetEvent::DialFailed { sock },
            );
        }
    }

    /// The connection `sock` belongs to.
    pub fn conn_of(&self, sock: SockId) -> Option<ConnId> {
        self.socks.get(&sock).map(|(c, _)| *c)
    }

    /// Open, not black-holed connections between `a` and `b`.
    pub fn conns_between(&self, a: HostId, b: HostId) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| {
                !c.broken
                    && c.ends.iter().any(|e| e.open)
                    && ((c.ends[0].host == a && c.ends[1].host == b)
                        || (c.ends[0].host == b && c.ends[1].host == a))
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The socket of `host` on connection `id`.
    pub fn sock_of(&self, id: ConnId, host: HostId) -> Option<SockId> {
        let c = self.conns.get(&id)?;
        c.ends.iter().find(|e| e.host == host).map(|e| e.sock)
    }
}
