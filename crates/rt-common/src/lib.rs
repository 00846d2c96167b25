//! What the sansmq runtimes (rt-smol, rt-std) share that is neither
//! protocol nor I/O:
//!
//! - [`config`]: the `sansmq.toml` file, parsed into the core's
//!   `BrokerConfig` and `BridgeConfig` plus listener and runtime settings;
//! - [`log`]: how the core's events, bridge state changes and drop counts
//!   become log lines, so both runtimes say the same thing the same way;
//! - [`conns`]: the open connections' write sides, the bytes queued on
//!   each (the hard write-queue bound) and what their log lines need;
//! - [`frame`]: splitting a connection's byte stream into packets for the
//!   read paths (the core keeps every verdict on bytes that do not decode);
//! - [`links`]: which transport of which bridge is current (generations),
//!   so inputs from a closed link are ignored;
//! - [`quic`]: QUIC endpoint setup from the config (certificates named by
//!   it, bridge settings) and how a QUIC dial's end is reported.
//!
//! It must never hold protocol state or make a protocol decision (that is
//! mqtt-core's), and never open a socket, spawn a thread or read a clock
//! (that is the runtimes'): every function here gets `now` from its caller.
//! The files it reads are the config file and the certificates it names,
//! on request.

pub mod config;
pub mod conns;
pub mod frame;
pub mod links;
pub mod log;
pub mod quic;
