//! # rt-smol
//!
//! The reference runtime of sansmq: it drives [`mqtt_core::node::Node`] (the
//! broker and its bridges) over TCP and QUIC with smol (async-io, async-executor), and holds the `sansmq`
//! binary's configuration file format ([`config`]).
//!
//! ## What this crate owns
//! Sockets, the clock, threads, the configuration file, signals and logging.
//!
//! ## What it must never do
//! Make a protocol decision or keep protocol state. Who may connect, what a
//! packet means, when a keepalive expires, what to drop when a consumer is
//! slow, which DISCONNECT to send: all of it is the core's. The runtime moves
//! bytes and packets between sockets and the core and does what the core's
//! events say. (The one thing it decides alone is the transport failure of
//! a write queue that overflows its hard bound; see [`server`].)
//!
//! ## Shape
//! - One **core task** owns the `Node` (the `Broker` and its bridges). It sleeps until the earliest of an
//!   input on its channel and `poll_timeout()` (an async-io `Timer::at`, made
//!   only when the channel is empty); there is no periodic tick. After each
//!   batch of inputs it drains `poll_transmit`, then `poll_event`.
//! - One **connection task** per socket: its read half reads and *decodes*
//!   (`mqtt_core::codec::decode`) and sends whole `Packet`s to the core task
//!   (`handle_packet`); its write half writes the core's transmits and
//!   reports them with `handle_written`.
//! - One **bridge transport task** per bridge link: it dials TCP on the
//!   core's `Dial` event and pumps raw bytes between the socket and the
//!   core task (see [`server`]).
//! - How both cores are used: the executor runs on up to
//!   `runtime.worker_threads` threads (default: one per core). The core
//!   task does routing, session bookkeeping and encoding (inside the
//!   `Broker`), serially; socket reads, decoding and socket writes happen on
//!   connection tasks, which any worker thread runs in parallel with the
//!   core task. One thread runs always; the others join only while the core
//!   is busy (`server::Scale`), because at low rates waking another thread
//!   for every message costs more CPU and latency than it saves. Under load
//!   one thread is mostly busy with the core task and the others with socket
//!   I/O and decoding.
//!
//! ```no_run
//! use rt_smol::{config::Config, Server};
//! let server = Server::bind(&Config::default())?;
//! // Runs until the future completes, then shuts down gracefully.
//! server.run(async { async_io::Timer::after(std::time::Duration::from_secs(60)).await; })?;
//! # Ok::<(), rt_smol::Error>(())
//! ```

mod bridge;
pub use rt_common::config;
mod conn;
mod quic;
pub mod server;
pub mod tools;

pub use server::{Error, Server};
