//! What the sansmq runtimes (rt-smol, rt-std) share that is neither
//! protocol nor I/O:
//!
//! - [`config`]: the `sansmq.toml` file, parsed into the core's
//!   `BrokerConfig` and `BridgeConfig` plus listener and runtime settings;
//! - [`log`]: how the core's events, bridge state changes and drop counts
//!   become log lines, so both runtimes say the same thing the same way.
//!
//! It must never hold protocol state or make a protocol decision (that is
//! mqtt-core's), and never open a socket, spawn a thread or read a clock
//! (that is the runtimes'): every function here gets `now` from its caller.
//! The one file it reads is the config file, on request.

pub mod config;
pub mod log;
