//! One [`Client`] over one TCP or QUIC connection: the tools' runtime.
//!
//! It only moves bytes and time: reads go to `handle_read`, `poll_transmit`
//! goes to the socket, `poll_timeout` sets the timer, events go to the
//! [`Tool`]. The tool decides what to publish, subscribe and when to
//! disconnect, through the client's commands.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use async_io::{Async, Timer};
use bytes::BytesMut;
use clap::Args;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use mqtt_core::client::{Client, ClientConfig, ClientEvent, TransportDeadReason};
use mqtt_quic::ServerTrust;

use super::TCP_CONNECT_TIMEOUT;
use crate::quic::{load_certs, QuicClientConn};

/// Transport flags shared by `pub` and `sub` (mosquitto's `--cafile` and
/// `--insecure`).
#[derive(Debug, Clone, Default, Args)]
pub struct TransportArgs {
    /// MQTT over QUIC (UDP; TLS 1.3, ALPN "mqtt", one stream) instead of
    /// TCP. Needs --cafile or --insecure.
    #[arg(long)]
    pub quic: bool,
    /// PEM CA certificates the server's certificate must chain to (--quic).
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<PathBuf>,
    /// Do not verify the server's certificate (--quic; tests only).
    #[arg(long)]
    pub insecure: bool,
    /// Name the server's certificate must carry (--quic; default: --host).
    #[arg(long = "server-name", value_name = "NAME")]
    pub server_name: Option<String>,
}

/// The connection a tool talks over.
pub(crate) enum Link {
    Tcp(Async<TcpStream>),
    Quic(Box<QuicClientConn>),
}

impl Link {
    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Tcp(s) => s.read(buf).await,
            Link::Quic(q) => q.read(buf).await,
        }
    }

    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Link::Tcp(s) => s.write_all(bytes).await,
            Link::Quic(q) => q.write_all(bytes).await,
        }
    }

    /// Flush and end our side (FIN for TCP after a flush, stream FIN for QUIC).
    pub(crate) async fn finish(&mut self) {
        match self {
            Link::Tcp(s) => {
                let _ = s.flush().await;
                let _ = s.get_ref().shutdown(std::net::Shutdown::Both);
            }
            Link::Quic(q) => q.finish(Duration::from_secs(1)).await,
        }
    }
}

/// Opens [`Link`]s as the transport flags say (the CA file is read once).
pub(crate) struct Dialer {
    /// `Some((trust, server name))` for QUIC.
    quic: Option<(ServerTrust, String)>,
}

impl Dialer {
    /// Check the flags and load the CA file; `host` is the default server
    /// name for QUIC.
    pub(crate) fn new(transport: &TransportArgs, host: &str) -> anyhow::Result<Self> {
        transport.check()?;
        let quic = if transport.quic {
            let name = transport.server_name.as_deref().unwrap_or(host).to_owned();
            Some((transport.trust()?, name))
        } else {
            None
        };
        Ok(Self { quic })
    }

    /// Connect to the first address that accepts.
    pub(crate) async fn dial(&self, addrs: &[SocketAddr]) -> anyhow::Result<Link> {
        Ok(match &self.quic {
            Some((trust, name)) => {
                Link::Quic(Box::new(connect_quic(addrs, name, trust.clone()).await?))
            }
            None => Link::Tcp(connect(addrs).await?),
        })
    }
}

impl TransportArgs {
    fn check(&self) -> anyhow::Result<()> {
        if !self.quic && (self.cafile.is_some() || self.insecure || self.server_name.is_some()) {
            bail!("--cafile, --insecure and --server-name need --quic");
        }
        if self.quic && self.cafile.is_none() && !self.insecure {
            bail!("--quic verifies the server's certificate: give --cafile FILE (or --insecure)");
        }
        Ok(())
    }

    fn trust(&self) -> anyhow::Result<ServerTrust> {
        match &self.cafile {
            Some(path) => {
                let path = path.to_string_lossy();
                Ok(ServerTrust::Roots(
                    load_certs("--cafile", &path).map_err(|e| anyhow!("{e}"))?,
                ))
            }
            None => {
                eprintln!("warning: --insecure: the server's certificate is not verified");
                Ok(ServerTrust::InsecureSkipVerify)
            }
        }
    }
}

/// Bytes read from the socket per read call.
const READ_CHUNK: usize = 64 * 1024;

/// What a tool does with the client. Every method may issue client commands.
pub(crate) trait Tool {
    /// Called before each drain of `poll_transmit`: queue more publishes,
    /// or `disconnect` once done.
    fn step(&mut self, client: &mut Client, now: Instant) -> anyhow::Result<()>;
    /// One event from the client (never `TransportDead`, which ends the run).
    fn on_event(
        &mut self,
        client: &mut Client,
        event: ClientEvent,
        now: Instant,
    ) -> anyhow::Result<()>;
    /// The tool's own deadline (`sub -W`): `on_deadline` runs once it passes.
    fn deadline(&self) -> Option<Instant> {
        None
    }
    /// The deadline passed: give up (an error) or disconnect.
    fn on_deadline(&mut self, _client: &mut Client, _now: Instant) -> anyhow::Result<()> {
        Ok(())
    }
    /// An input to wait for (stdin lines), when the tool wants one now.
    fn input(&self, _client: &Client) -> Option<async_channel::Receiver<Vec<u8>>> {
        None
    }
    /// One input item; `None` when the input has ended.
    fn on_input(
        &mut self,
        _item: Option<Vec<u8>>,
        _client: &mut Client,
        _now: Instant,
    ) -> anyhow::Result<()> {
        Ok(())
    }
}

enum Wake {
    Read(std::io::Result<usize>),
    Timer,
    Input(Option<Vec<u8>>),
}

/// Connect to the first address that accepts and run `tool` until the
/// connection ends. `Ok` only when it ended with our own DISCONNECT.
pub(crate) fn run(
    addrs: &[SocketAddr],
    host: &str,
    transport: &TransportArgs,
    config: ClientConfig,
    debug: bool,
    tool: &mut dyn Tool,
) -> anyhow::Result<()> {
    let dialer = Dialer::new(transport, host)?;
    let mut client = Client::new(config, Instant::now())
        .map_err(|e| anyhow!("invalid client configuration: {e}"))?;
    future::block_on(async {
        let mut stream = dialer.dial(addrs).await?;
        if debug {
            match &stream {
                Link::Tcp(s) => eprintln!("connected to {}", s.get_ref().peer_addr()?),
                Link::Quic(_) => eprintln!("connected over QUIC to {host}"),
            }
        }
        let reason = drive(&mut stream, &mut client, debug, tool).await?;
        if debug {
            eprintln!("connection ended: {reason}");
        }
        stream.finish().await;
        client.handle_transport_down(Instant::now());
        match reason {
            TransportDeadReason::ClientDisconnect => Ok(()),
            TransportDeadReason::ServerDisconnect {
                reason_code,
                reason_string,
                ..
            } => match reason_string {
                Some(s) => bail!("disconnected by the server: {reason_code} ({s})"),
                None => bail!("disconnected by the server: {reason_code}"),
            },
            other => bail!("connection ended: {other}"),
        }
    })
}

async fn connect_quic(
    addrs: &[SocketAddr],
    server_name: &str,
    trust: ServerTrust,
) -> anyhow::Result<QuicClientConn> {
    let mut last = None;
    for addr in addrs {
        match QuicClientConn::connect(*addr, server_name, trust.clone(), TCP_CONNECT_TIMEOUT).await
        {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(anyhow!("cannot connect over QUIC to {addr}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no address to connect to")))
}

async fn connect(addrs: &[SocketAddr]) -> anyhow::Result<Async<TcpStream>> {
    let mut last = None;
    for addr in addrs {
        let attempt = future::or(
            async { Some(Async::<TcpStream>::connect(*addr).await) },
            async {
                Timer::after(TCP_CONNECT_TIMEOUT).await;
                None
            },
        )
        .await;
        match attempt {
            Some(Ok(stream)) => {
                let _ = stream.get_ref().set_nodelay(true);
                return Ok(stream);
            }
            Some(Err(e)) => last = Some(anyhow!("cannot connect to {addr}: {e}")),
            None => {
                last = Some(anyhow!(
                    "cannot connect to {addr}: no answer within {TCP_CONNECT_TIMEOUT:?}"
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no address to connect to")))
}

/// The loop. Returns why the transport died (after writing what the client
/// still had to send), or an error from the socket or the tool.
async fn drive(
    stream: &mut Link,
    client: &mut Client,
    debug: bool,
    tool: &mut dyn Tool,
) -> anyhow::Result<TransportDeadReason> {
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    client.handle_transport_up(Instant::now());
    loop {
        // Work until nothing moves: each pass either writes, handles an
        // event, or ends the inner loop, and the client's queues are bounded.
        loop {
            let now = Instant::now();
            tool.step(client, now)?;
            let mut progressed = false;
            while let Some(bytes) = client.poll_transmit() {
                stream
                    .write_all(&bytes)
                    .await
                    .context("cannot write to the server")?;
                progressed = true;
            }
            while let Some(event) = client.poll_event() {
                progressed = true;
                if debug {
                    describe(&event);
                }
                if let ClientEvent::TransportDead(reason) = event {
                    // A final DISCONNECT may be waiting.
                    while let Some(bytes) = client.poll_transmit() {
                        let _ = stream.write_all(&bytes).await;
                    }
                    return Ok(reason);
                }
                tool.on_event(client, event, Instant::now())?;
            }
            if !progressed {
                break;
            }
        }

        // Sleep until the earliest of readability, a deadline, an input.
        let client_deadline = client.poll_timeout();
        let tool_deadline = tool.deadline();
        let deadline = match (client_deadline, tool_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let input = tool.input(client);
        let read = async { Wake::Read(stream.read(&mut chunk).await) };
        let timer = async {
            match deadline {
                Some(at) => {
                    Timer::at(at).await;
                }
                None => future::pending::<()>().await,
            }
            Wake::Timer
        };
        let inp = async {
            match input {
                Some(rx) => Wake::Input(rx.recv().await.ok()),
                None => future::pending().await,
            }
        };
        let wake = future::or(read, future::or(timer, inp)).await;
        let now = Instant::now();
        match wake {
            Wake::Read(Ok(0)) => bail!("the server closed the connection"),
            Wake::Read(Ok(n)) => {
                rbuf.extend_from_slice(&chunk[..n]);
                client.handle_read(&mut rbuf, now);
            }
            Wake::Read(Err(e)) => return Err(e).context("cannot read from the server"),
            Wake::Timer => {}
            Wake::Input(item) => tool.on_input(item, client, now)?,
        }
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
        }
        if tool.deadline().is_some_and(|at| at <= now) {
            tool.on_deadline(client, now)?;
        }
    }
}

/// One line on stderr per event, for `-d`.
fn describe(event: &ClientEvent) {
    match event {
        ClientEvent::Connected(c) => eprintln!(
            "CONNACK: connected (session present: {}, keep alive {} s)",
            c.session_present, c.keep_alive
        ),
        ClientEvent::Subscribed(s) => {
            let codes: Vec<String> = s.reason_codes.iter().map(|c| c.to_string()).collect();
            eprintln!(
                "SUBACK: subscribed (packet id {}: {})",
                s.packet_id,
                codes.join(", ")
            );
        }
        ClientEvent::PublishAcked {
            packet_id,
            qos,
            reason_code,
            ..
        } => eprintln!(
            "publish {packet_id} acknowledged at QoS {}: {reason_code}",
            *qos as u8
        ),
        ClientEvent::Message(m) => eprintln!(
            "PUBLISH received on {:?} (QoS {}, retain {}, {} bytes)",
            m.topic,
            m.qos as u8,
            m.retain,
            m.payload.len()
        ),
        other => eprintln!("{other:?}"),
    }
}
