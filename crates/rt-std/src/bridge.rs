//! Bridge transports: one TCP link of one bridge on two threads.
//!
//! The core thread owns the bridges' state machines (inside the `Node`);
//! on a `Dial { transport: Tcp, .. }` it starts [`spawn_tcp`]: a thread
//! that resolves and connects (bounded by [`DIAL_LIMIT`]; the bridge's own
//! connect timeout is a core timer), reports `BridgeUp` or `BridgeFailed`,
//! starts a writer thread for the core's queue, then reads until the socket
//! ends (`BridgeDown`). Every input carries the link's generation
//! ([`rt_common::links`]), so the core ignores a link it already closed or
//! abandoned; an abandoned link's writer sees its queue's sender dropped,
//! closes the socket, and both threads end.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_core::bridge::TransportFailure;
use rt_common::links::Link;
use tracing::debug;

use crate::core::{Input, Outbound};

/// The core's handle on a bridge link's queue. Dropping it tells the link
/// to close (after what was queued); a dial still in progress closes as
/// soon as it connects.
pub(crate) struct LinkTx(pub(crate) Sender<Outbound>);

impl Drop for LinkTx {
    fn drop(&mut self) {
        let _ = self.0.send(Outbound::Close);
    }
}

/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// The longest a dial thread waits for one address, so an abandoned dial
/// to a black hole does not keep its thread for the OS's own timeout.
pub(crate) const DIAL_LIMIT: Duration = Duration::from_secs(30);

fn failure_of(e: &io::Error) -> TransportFailure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => TransportFailure::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => TransportFailure::Timeout,
        _ => TransportFailure::Error(e.to_string()),
    }
}

fn connect(address: &str) -> Result<TcpStream, TransportFailure> {
    let addrs = address
        .to_socket_addrs()
        .map_err(|e| TransportFailure::Error(format!("cannot resolve {address}: {e}")))?;
    let mut last = TransportFailure::Error(format!("{address} resolved to no address"));
    for a in addrs {
        match TcpStream::connect_timeout(&a, DIAL_LIMIT) {
            Ok(s) => return Ok(s),
            Err(e) => last = failure_of(&e),
        }
    }
    Err(last)
}

/// Dial `address` over TCP on a new thread and pump bytes until either
/// side ends.
pub(crate) fn spawn_tcp(
    link: Link,
    address: String,
    to_core: SyncSender<Input>,
    from_core: Receiver<Outbound>,
) -> io::Result<()> {
    thread::Builder::new()
        .name(format!("sansmq-bridge-{}", link.id.0))
        .spawn(move || tcp_link(link, &address, &to_core, from_core))
        .map(|_| ())
}

fn tcp_link(link: Link, address: &str, to_core: &SyncSender<Input>, from_core: Receiver<Outbound>) {
    let stream = match connect(address) {
        Ok(s) => s,
        Err(failure) => {
            let _ = to_core.send(Input::BridgeFailed { link, failure });
            return;
        }
    };
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "bridge: cannot set TCP_NODELAY");
    }
    let writer = stream.try_clone().and_then(|w| {
        thread::Builder::new()
            .name(format!("sansmq-bridge-{}-w", link.id.0))
            .spawn(move || write_loop(&w, from_core))
    });
    if let Err(e) = writer {
        let failure = TransportFailure::Error(format!("cannot start the writer thread: {e}"));
        let _ = to_core.send(Input::BridgeFailed { link, failure });
        return;
    }
    if to_core.send(Input::BridgeUp { link }).is_err() {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let mut r = &stream;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let bytes = BytesMut::from(&buf[..n]);
                if to_core.send(Input::BridgeRead { link, bytes }).is_err() {
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                debug!(bridge = link.id.0, error = %e, "bridge transport error");
                break;
            }
        }
    }
    let _ = to_core.send(Input::BridgeDown { link });
}

/// Write the core's queue; on `Close` or when the core drops the queue,
/// flush and close the socket (which also ends the reader).
fn write_loop(stream: &TcpStream, from_core: Receiver<Outbound>) {
    let mut w = stream;
    let mut failed = false;
    loop {
        match from_core.recv() {
            Ok(Outbound::Data(d)) => {
                if !failed && w.write_all(&d).is_err() {
                    // The reader sees the error too and reports it; drop
                    // what comes until the core closes the link.
                    failed = true;
                }
            }
            Ok(Outbound::Wake) => {}
            Ok(Outbound::Close) | Err(_) => {
                let _ = w.flush();
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}
