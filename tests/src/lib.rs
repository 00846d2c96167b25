//! Shared helpers for sansmq's end-to-end and simulation tests.
