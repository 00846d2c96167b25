//! # mqtt-core
//!
//! The sans-IO heart of sansmq: the MQTT 3.1 / 3.1.1 / 5.0 codec, topics and
//! the subscription trie, and (in later modules) the broker, client and
//! bridge state machines with their timers.
//!
//! ## What this crate must never do
//! Read a clock, open a socket or file, spawn a thread, sleep, or use async.
//! Time comes in as `now: Instant` arguments; bytes come in and go out
//! through `handle_*` / `poll_*` methods; randomness comes from a seeded RNG
//! the caller provides. `cargo xtask ci` enforces this (see
//! `xtask/src/arch.rs`), and `clippy.toml` bans `Instant::now`.
//! There is no `unsafe` code here.

// Nothing a peer sends may panic the core; tests may unwrap (clippy.toml).
#![warn(clippy::unwrap_used)]

pub mod bridge;
pub mod broker;
pub mod client;
pub mod codec;
pub mod node;
pub mod timer;
pub mod topic;
