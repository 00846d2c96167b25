//! The runtimes' table of open connections: per connection, the runtime's
//! write side, the bytes queued on it and not yet reported written, and
//! what the logs need (peer, whether it got past CONNECT).
//!
//! Write queues are bounded by bytes: the runtime counts what it queued and
//! its writers report what they wrote, so the core sees exactly the bytes
//! not yet on the socket and applies its own policy. A queue that would
//! pass `2 x max_pending_bytes_per_connection + max_packet_size + 64 KiB`
//! means the core's contract was broken: [`ConnTable::queue`] says so and
//! the runtime treats the connection as a failed transport.
//!
//! No protocol state (the core's) and no I/O: `W` is whatever the runtime
//! keeps per connection (a write queue, a socket).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::Bytes;
use bytestring::ByteString;
use mqtt_core::broker::{BrokerConfig, ConnectionId, ConnectionInfo, Event};
use tracing::{debug, error};

use crate::log::{self, ClientId, Peer};

/// The runtime's handle on one connection. No protocol state. Kept small
/// (40 bytes with an 8-byte `W`, pinned by a test): every idle connection
/// holds one in the table.
struct Conn<W> {
    io: W,
    /// Bytes queued and not yet reported written.
    queued: usize,
    peer: PeerAddr,
    /// Set by `ClientConnected`, for log lines only. (The client id is the
    /// core's to tell: one copy per connection is enough.)
    connected: bool,
}

/// A peer address in 16 bytes instead of `Option<SocketAddr>`'s 32: IPv4
/// inline, IPv6 (rarer, and larger) boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PeerAddr {
    None,
    V4(SocketAddrV4),
    V6(Box<SocketAddrV6>),
}

impl PeerAddr {
    fn new(addr: Option<SocketAddr>) -> Self {
        match addr {
            None => PeerAddr::None,
            Some(SocketAddr::V4(a)) => PeerAddr::V4(a),
            Some(SocketAddr::V6(a)) => PeerAddr::V6(Box::new(a)),
        }
    }

    fn get(&self) -> Option<SocketAddr> {
        match self {
            PeerAddr::None => None,
            PeerAddr::V4(a) => Some(SocketAddr::V4(*a)),
            PeerAddr::V6(a) => Some(SocketAddr::V6(**a)),
        }
    }
}

/// What [`ConnTable::queue`] did with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Handed to the writer (or refused by a writer that is gone, whose
    /// `Closed` is on the way).
    Sent,
    /// No such connection on our side; the core has been or is being told.
    Gone,
    /// The queue would pass its hard bound (logged): the runtime drops the
    /// connection without flushing and tells the core it closed.
    OverBound,
}

/// The open connections, keyed by the core's id.
pub struct ConnTable<W> {
    conns: HashMap<ConnectionId, Conn<W>>,
    /// Closed by the transport: forgotten after the current drain, so the
    /// events it causes are still logged with its peer.
    dead: Vec<ConnectionId>,
    queue_limit: usize,
}

impl<W> ConnTable<W> {
    /// An empty table whose hard bound derives from the core's (normalized)
    /// limits.
    pub fn new(limits: &BrokerConfig) -> Self {
        let queue_limit = limits
            .max_pending_bytes_per_connection
            .saturating_mul(2)
            .saturating_add(limits.max_packet_size as usize)
            .saturating_add(64 * 1024);
        Self {
            conns: HashMap::new(),
            dead: Vec::new(),
            queue_limit,
        }
    }

    /// A socket was accepted; `io` is its write side.
    pub fn opened(&mut self, conn: ConnectionId, info: &ConnectionInfo, io: W) {
        debug!(%conn, peer = %Peer(info.peer), listener = %info.listener, "connection opened");
        self.conns.insert(
            conn,
            Conn {
                io,
                queued: 0,
                peer: PeerAddr::new(info.peer),
                connected: false,
            },
        );
    }

    /// The writer put `n` more bytes on the socket.
    pub fn written(&mut self, conn: ConnectionId, n: usize) {
        if let Some(h) = self.conns.get_mut(&conn) {
            h.queued = h.queued.saturating_sub(n);
        }
    }

    /// The socket ended: logged, and forgotten at the next [`Self::forget_dead`].
    pub fn closed(&mut self, conn: ConnectionId, error: Option<&io::Error>) {
        if let Some(h) = self.conns.get(&conn) {
            if !h.connected {
                debug!(%conn, peer = %Peer(h.peer.get()), error = ?error, "connection closed before CONNECT");
            } else if let Some(e) = error {
                debug!(%conn, peer = %Peer(h.peer.get()), error = %e, "socket error");
            }
        }
        self.dead.push(conn);
    }

    /// Forget `conn` at the next [`Self::forget_dead`].
    pub fn mark_dead(&mut self, conn: ConnectionId) {
        self.dead.push(conn);
    }

    /// Forget the connections closed since the last call (dropping their
    /// write sides).
    pub fn forget_dead(&mut self) {
        for conn in self.dead.drain(..) {
            self.conns.remove(&conn);
        }
    }

    /// Queue `data` on `conn` with `send` (false: the writer is gone),
    /// unless that would pass the hard bound. `client_id` is asked only
    /// for the log line of that case.
    pub fn queue<'a>(
        &mut self,
        conn: ConnectionId,
        data: Bytes,
        client_id: impl FnOnce() -> Option<&'a ByteString>,
        send: impl FnOnce(&W, Bytes) -> bool,
    ) -> Queued {
        let Some(h) = self.conns.get_mut(&conn) else {
            return Queued::Gone;
        };
        let len = data.len();
        if h.queued.saturating_add(len) > self.queue_limit {
            error!(
                conn = %conn,
                peer = %Peer(h.peer.get()),
                client_id = %ClientId(client_id()),
                queued = h.queued,
                incoming = len,
                limit = self.queue_limit,
                "write queue over its hard bound: dropping the connection"
            );
            return Queued::OverBound;
        }
        if send(&h.io, data) {
            h.queued += len;
        }
        Queued::Sent
    }

    /// Log a core event with the connection's peer, and note a connection
    /// that got past CONNECT.
    pub fn event(&mut self, ev: &Event) {
        let (peer, connected) = match ev {
            Event::ClientDisconnected { conn, .. } | Event::CloseConnection { conn, .. } => self
                .conns
                .get(conn)
                .map_or((None, false), |h| (h.peer.get(), h.connected)),
            _ => (None, false),
        };
        log::broker_event(ev, peer, connected);
        if let Event::ClientConnected { conn, .. } = ev {
            if let Some(h) = self.conns.get_mut(conn) {
                h.connected = true;
            }
        }
    }

    /// The connection's write side.
    pub fn get(&self, conn: ConnectionId) -> Option<&W> {
        self.conns.get(&conn).map(|h| &h.io)
    }

    /// Forget the connection now, handing back its write side.
    pub fn remove(&mut self, conn: ConnectionId) -> Option<W> {
        self.conns.remove(&conn).map(|h| h.io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle connection holds one entry (inside a hash table that
    /// keeps up to about half of its slots spare): keep it from growing
    /// back unnoticed (issue 4, memory per idle connection).
    #[test]
    fn entry_stays_small() {
        assert_eq!(std::mem::size_of::<PeerAddr>(), 16);
        assert_eq!(std::mem::size_of::<Conn<std::sync::Arc<()>>>(), 40);
    }

    #[test]
    fn peer_addr_round_trips() {
        for addr in [
            None,
            Some("192.0.2.7:1883".parse().unwrap()),
            Some("[2001:db8::1%3]:8883".parse().unwrap()),
        ] {
            assert_eq!(PeerAddr::new(addr).get(), addr);
        }
    }
}
