//! Shared helpers for sansmq's end-to-end and simulation tests.
//!
//! - [`process`]: the real `sansmq` binary as a child process on a free
//!   loopback port, with its log captured; external tools required loudly.
//! - [`raw`]: a byte-exact blocking MQTT client for keepalive and
//!   malformed-input tests.
//! - [`runtime_matrix!`]: one end-to-end test body run once per runtime
//!   ([`process::Runtime`]: rt-smol and rt-std).

pub mod process;
pub mod raw;
pub mod sim;

/// One test body, run once per runtime (rt-smol, rt-std), the way rustls
/// runs one body over its crypto providers. The body is an ordinary
/// function taking the [`Runtime`](process::Runtime) (so rustfmt and
/// clippy see it as usual); the macro adds a module of the same name with
/// one test per runtime, `<name>::on_smol` and `<name>::on_std` (so
/// `cargo test on_std` runs every matrix test on rt-std):
///
/// ```ignore
/// /// What the test checks.
/// fn retained_message_reaches_a_later_subscriber(rt: Runtime) {
///     let broker = Sansmq::start_default_on(rt, bin());
///     // ...
/// }
/// runtime_matrix!(retained_message_reaches_a_later_subscriber);
///
/// // An async body names its test attribute:
/// async fn v5_every_qos(rt: Runtime) { /* ... */ }
/// runtime_matrix!(#[tokio::test] async v5_every_qos);
/// ```
#[macro_export]
macro_rules! runtime_matrix {
    ($name:ident) => {
        mod $name {
            #[test]
            fn on_smol() {
                super::$name($crate::process::Runtime::Smol)
            }

            #[test]
            fn on_std() {
                super::$name($crate::process::Runtime::Std)
            }
        }
    };
    (#[$attr:meta] async $name:ident) => {
        mod $name {
            #[$attr]
            async fn on_smol() {
                super::$name($crate::process::Runtime::Smol).await
            }

            #[$attr]
            async fn on_std() {
                super::$name($crate::process::Runtime::Std).await
            }
        }
    };
}
