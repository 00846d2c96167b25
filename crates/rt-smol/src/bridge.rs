//! Bridge transports: the TCP dialer and byte pump of one bridge link.
//!
//! The core task owns the [`mqtt_core::node::Node`] and its bridges' state
//! machines; on a `Dial { transport: Tcp, address }` it spawns
//! [`tcp_transport`], which connects (no timeout of its own: the bridge's
//! connect timeout is a core timer, and the core's `CloseTransport` abandons
//! the dial: the core task cancels this task), reports `BridgeUp` or `BridgeFailed`, then pumps bytes both
//! ways: reads go to the core as `BridgeRead` (raw bytes; the bridge's
//! client decodes them), writes come from the core's queue, and the end of
//! the socket (EOF, reset, error) is reported as `BridgeDown`.
//!
//! Every input carries the link's generation, so the core ignores inputs
//! from a transport it already closed or abandoned.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};

use async_channel::{Receiver, Sender};
use async_io::Async;
use bytes::BytesMut;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt, FutureExt};
use mqtt_core::bridge::TransportFailure;
use mqtt_core::node::BridgeId;
use tracing::debug;

use crate::server::{Input, Outbound};

/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;

/// One bridge link: which bridge, and which of its transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) id: BridgeId,
    pub(crate) generation: u64,
}

/// Resolve `address` ("host:port"). Blocking name lookups run on a plain
/// thread so they never stall an executor thread.
pub(crate) async fn resolve(address: String) -> io::Result<Vec<SocketAddr>> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let (tx, rx) = async_channel::bounded(1);
    std::thread::Builder::new()
        .name("sansmq-resolve".into())
        .spawn(move || {
            let r = address.to_socket_addrs().map(|i| i.collect::<Vec<_>>());
            let _ = tx.send_blocking(r);
        })?;
    rx.recv()
        .await
        .unwrap_or_else(|_| Err(io::Error::other("resolver thread ended")))
}

fn failure_of(e: &io::Error) -> TransportFailure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => TransportFailure::Refused,
        io::ErrorKind::TimedOut => TransportFailure::Timeout,
        _ => TransportFailure::Error(e.to_string()),
    }
}

async fn connect(address: String) -> Result<Async<TcpStream>, TransportFailure> {
    let addrs = resolve(address.clone())
        .await
        .map_err(|e| TransportFailure::Error(format!("cannot resolve {address}: {e}")))?;
    let mut last = TransportFailure::Error(format!("{address} resolved to no address"));
    for a in addrs {
        match Async::<TcpStream>::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = failure_of(&e),
        }
    }
    Err(last)
}

/// Dial `address` over TCP and pump bytes until either side ends.
pub(crate) async fn tcp_transport(
    link: Link,
    address: String,
    to_core: Sender<Input>,
    from_core: Receiver<Outbound>,
) {
    // No timeout here: the core's connect timeout ends an abandoned dial
    // by cancelling this task.
    let stream = match connect(address).await {
        Err(failure) => {
            let _ = to_core.send(Input::BridgeFailed { link, failure }).await;
            return;
        }
        Ok(s) => s,
    };
    if let Err(e) = stream.get_ref().set_nodelay(true) {
        debug!(error = %e, "bridge: cannot set TCP_NODELAY");
    }
    if to_core.send(Input::BridgeUp { link }).await.is_err() {
        return;
    }
    let reader = async {
        let mut r = &stream;
        let mut buf = vec![0u8; READ_CHUNK];
        let error = loop {
            match r.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => {
                    let bytes = BytesMut::from(&buf[..n]);
                    if to_core
                        .send(Input::BridgeRead { link, bytes })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        if let Some(e) = &error {
            debug!(bridge = link.id.0, error = %e, "bridge transport error");
        }
        let _ = to_core.send(Input::BridgeDown { link }).await;
        // Parked: the write half ends the task when the core closes it.
        future::pending::<()>().await;
    };
    let writer = async {
        let mut w = &stream;
        let mut failed = false;
        loop {
            match from_core.recv().await {
                Ok(Outbound::Data(d)) => {
                    if !failed && w.write_all(&d).await.is_err() {
                        // The read half sees the error too and reports it;
                        // drop what comes until the core closes the link.
                        failed = true;
                    }
                }
                Ok(Outbound::Close) | Err(_) => {
                    let _ = w.flush().await;
                    let _ = stream.get_ref().shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    };
    writer.or(reader).await;
}
