//! Shared helpers for sansmq's end-to-end and simulation tests.
//!
//! - [`process`]: the real `sansmq` binary as a child process on a free
//!   loopback port, with its log captured; external tools required loudly.
//! - [`raw`]: a byte-exact blocking MQTT client for keepalive and
//!   malformed-input tests.

pub mod process;
pub mod raw;
pub mod sim;
