//! QUIC setup both runtimes share: certificates named by the config file,
//! a listener's server configuration, a bridge's client configuration and
//! settings, and how a QUIC connection's end maps to a bridge transport
//! failure. Moved out of rt-smol's `quic.rs` so rt-std builds the same
//! endpoints from the same keys. No sockets, no threads, no clock: the
//! runtimes drive `mqtt_quic::QuicEndpoint` themselves.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mqtt_core::bridge::TransportFailure;
use mqtt_core::broker::ConnectionId;
use mqtt_quic::{
    ClientIdentity, QuicCloseReason, QuicConnId, QuicEndpoint, QuicSettings, ServerTrust,
};
use tracing::{debug, warn};

use crate::config::{BridgeSection, ListenerConfig};

/// Why QUIC could not be set up (a certificate file, a setting).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicSetupError {
    #[error("cannot read {path} ({key}): {source}")]
    Read {
        key: String,
        path: String,
        source: io::Error,
    },
    #[error("{key}: {source}")]
    Tls {
        key: String,
        source: mqtt_quic::TlsConfigError,
    },
}

fn read_file(key: &str, path: &str) -> Result<Vec<u8>, QuicSetupError> {
    std::fs::read(Path::new(path)).map_err(|source| QuicSetupError::Read {
        key: key.to_owned(),
        path: path.to_owned(),
        source,
    })
}

fn tls_err(key: &str) -> impl Fn(mqtt_quic::TlsConfigError) -> QuicSetupError + '_ {
    move |source| QuicSetupError::Tls {
        key: key.to_owned(),
        source,
    }
}

/// PEM certificates from `path`; `key` names the config key in errors.
pub fn load_certs(
    key: &str,
    path: &str,
) -> Result<Vec<mqtt_quic::CertificateDer<'static>>, QuicSetupError> {
    mqtt_quic::parse_certs_pem(&read_file(key, path)?, path).map_err(tls_err(key))
}

/// A PEM private key from `path`.
pub fn load_key(
    key: &str,
    path: &str,
) -> Result<mqtt_quic::PrivateKeyDer<'static>, QuicSetupError> {
    mqtt_quic::parse_key_pem(&read_file(key, path)?, path).map_err(tls_err(key))
}

/// The server configuration of a `transport = "quic"` listener (`index`:
/// its position in the config, for error paths), with `settings`.
pub fn listener_server_config(
    l: &ListenerConfig,
    index: usize,
    settings: &QuicSettings,
) -> Result<Arc<mqtt_quic::ServerConfig>, QuicSetupError> {
    let at = |k: &str| format!("listeners[{index}].{k}");
    let certs = load_certs(&at("cert"), &l.cert)?;
    let key = load_key(&at("key"), &l.key)?;
    let client_ca = if l.client_ca.is_empty() {
        None
    } else {
        Some(load_certs(&at("client_ca"), &l.client_ca)?)
    };
    mqtt_quic::server_config(certs, key, client_ca, settings).map_err(tls_err(&at("cert")))
}

/// Bytes quinn buffers per accepted connection beyond what the client
/// acknowledged (in flight or waiting for the client's flow control): kept
/// near the core's per-connection bound instead of quinn's 10 MB, since
/// bytes quinn took count as written for the core.
pub const LISTENER_SEND_WINDOW: u64 = 1 << 20;

/// The endpoint of a `transport = "quic"` listener (`index`: its position
/// in the config, for error paths): its certificates, the listener send
/// window. The runtime binds its UDP socket and drives it.
pub fn listener_endpoint(l: &ListenerConfig, index: usize) -> Result<QuicEndpoint, QuicSetupError> {
    let settings = QuicSettings {
        send_window: LISTENER_SEND_WINDOW,
        ..QuicSettings::default()
    };
    let server = listener_server_config(l, index, &settings)?;
    Ok(QuicEndpoint::new(Some(server), None, &settings, None))
}

/// Per bridge, in index order: its QUIC client setup (None: no QUIC
/// transport), after warning about insecure settings. The first failure
/// stops.
pub fn bridges_quic(
    bridges: &[BridgeSection],
) -> Result<Vec<Option<Arc<BridgeQuic>>>, QuicSetupError> {
    bridges
        .iter()
        .enumerate()
        .map(|(i, b)| {
            warn_insecure(b);
            BridgeQuic::from_section(b, i)
        })
        .collect()
}

/// The QUIC settings a bridge section describes.
pub fn bridge_settings(b: &BridgeSection) -> QuicSettings {
    QuicSettings {
        keep_alive_interval: b.quic_keepalive,
        idle_timeout: b.quic_idle_timeout,
        handshake_timeout: b.quic_handshake_timeout,
        initial_rtt: Duration::from_millis(b.quic_initial_rtt_ms),
        max_ack_delay: (b.quic_max_ack_delay_ms > 0)
            .then(|| Duration::from_millis(b.quic_max_ack_delay_ms)),
        enable_0rtt: b.quic_0rtt,
        ..QuicSettings::default()
    }
}

/// The QUIC side of one bridge, built once at start: its TLS client
/// configuration (whose session cache makes 0-RTT possible on reconnects)
/// and settings.
pub struct BridgeQuic {
    pub client: mqtt_quic::ClientConfig,
    pub settings: QuicSettings,
    /// `server_name` from the config; else the host of the address dialed.
    pub server_name: Option<String>,
}

impl BridgeQuic {
    /// `None` when the bridge has no QUIC transport. `index` is the
    /// bridge's position in the config (for error paths).
    pub fn from_section(
        b: &BridgeSection,
        index: usize,
    ) -> Result<Option<Arc<Self>>, QuicSetupError> {
        if !b.uses_quic() {
            return Ok(None);
        }
        let at = |k: &str| format!("bridge[{index}].{k}");
        let settings = bridge_settings(b);
        let trust = if b.insecure_skip_verify {
            ServerTrust::InsecureSkipVerify
        } else {
            ServerTrust::Roots(load_certs(&at("cacertfile"), &b.cacertfile)?)
        };
        let identity = if b.certfile.is_empty() {
            None
        } else {
            Some(ClientIdentity {
                cert_chain: load_certs(&at("certfile"), &b.certfile)?,
                key: load_key(&at("keyfile"), &b.keyfile)?,
            })
        };
        let client = mqtt_quic::client_config(trust, identity, &settings)
            .map_err(tls_err(&at("cacertfile")))?;
        Ok(Some(Arc::new(Self {
            client,
            settings,
            server_name: (!b.server_name.is_empty()).then(|| b.server_name.clone()),
        })))
    }

    /// The TLS server name for a dial of `address`.
    pub fn server_name_for(&self, address: &str) -> String {
        self.server_name
            .clone()
            .unwrap_or_else(|| host_of(address).to_owned())
    }
}

/// The host part of "host:port" ("[::1]:1883" gives "::1").
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// How the end of a QUIC dial is reported to the bridge.
pub fn failure_of(reason: &QuicCloseReason) -> TransportFailure {
    match reason {
        // Before the MQTT stream is up, quinn's idle timeout is a handshake
        // that got no answer: a timeout like ours.
        QuicCloseReason::HandshakeTimeout | QuicCloseReason::IdleTimeout => {
            TransportFailure::Timeout
        }
        QuicCloseReason::Refused => TransportFailure::Refused,
        other => TransportFailure::Error(other.to_string()),
    }
}

/// Log loudly about bridges that do not verify their remote.
pub fn warn_insecure(b: &BridgeSection) {
    if b.uses_quic() && b.insecure_skip_verify {
        warn!(
            bridge = %b.name,
            "INSECURE: insecure_skip_verify = true: the remote's certificate is NOT verified; \
             anyone on the path can impersonate it. Use cacertfile outside tests."
        );
    }
}

/// Pause or resume reading an accepted connection's stream (publisher flow
/// control), if that changes anything: `ep_paused` is the runtime's record
/// of what the endpoint was last told. Resuming reports what quinn held as
/// `Data` at once.
pub fn set_read_paused(
    ep: &mut QuicEndpoint,
    ep_paused: &mut bool,
    qid: QuicConnId,
    conn: ConnectionId,
    paused: bool,
    now: std::time::Instant,
) {
    if *ep_paused != paused {
        *ep_paused = paused;
        ep.set_read_paused(now, qid, paused);
        debug!(%conn, paused, "QUIC connection read gate");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_defaults_are_mqtt_quic_defaults() {
        // The config documents NanoMQ's defaults; mqtt-quic has its own:
        // they must not drift apart.
        assert_eq!(
            bridge_settings(&BridgeSection::default()),
            QuicSettings::default()
        );
    }

    #[test]
    fn server_name_is_the_host_of_the_address() {
        assert_eq!(host_of("cloud.example.com:14567"), "cloud.example.com");
        assert_eq!(host_of("127.0.0.1:1883"), "127.0.0.1");
        assert_eq!(host_of("[::1]:1883"), "::1");
    }

    #[test]
    fn missing_certificate_files_name_the_key_and_the_path() {
        let l = ListenerConfig {
            transport: crate::config::Transport::Quic,
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            ..ListenerConfig::default()
        };
        let Err(e) = listener_server_config(&l, 2, &QuicSettings::default()) else {
            panic!("configured without a certificate");
        };
        let s = e.to_string();
        assert!(
            s.contains("listeners[2].cert") && s.contains("/nonexistent/cert.pem"),
            "{s}"
        );
    }
}
