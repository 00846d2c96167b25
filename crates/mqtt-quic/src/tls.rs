//! TLS 1.3 for QUIC: rustls with the *ring* provider, ALPN `"mqtt"`.
//!
//! Builds the quinn-proto server and client configurations from
//! [`QuicSettings`] and certificates, and parses PEM. Reading files is the
//! runtime's job (this crate opens nothing): it passes the bytes and the
//! file name, which every error names.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{AckFrequencyConfig, IdleTimeout, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::QuicSettings;

/// The ALPN protocol id MQTT over QUIC uses (EMQX, NanoMQ).
pub const ALPN_MQTT: &[u8] = b"mqtt";

/// A configuration problem: bad PEM, a key that does not match, an
/// unusable setting. Always names what it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A PEM file that holds no certificate, or an unreadable one.
    #[error("{file}: {message}")]
    Pem { file: String, message: String },
    /// rustls refused the certificate/key pair or a root.
    #[error("{what}: {source}")]
    Rustls {
        what: &'static str,
        source: rustls::Error,
    },
    /// The client CA roots or the server roots cannot build a verifier.
    #[error("{what}: {message}")]
    Verifier { what: &'static str, message: String },
    /// A [`QuicSettings`] value quinn-proto cannot take.
    #[error("QUIC setting {key}: {message}")]
    Setting { key: &'static str, message: String },
}

/// Every certificate in a PEM file (`file` names it in errors).
pub fn parse_certs_pem(
    pem: &[u8],
    file: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::Pem {
            file: file.to_owned(),
            message: format!("invalid PEM certificate: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::Pem {
            file: file.to_owned(),
            message: "no \"BEGIN CERTIFICATE\" block found".to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn parse_key_pem(pem: &[u8], file: &str) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsConfigError::Pem {
        file: file.to_owned(),
        message: format!("no usable private key: {e}"),
    })
}

/// Whom a client trusts.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// These CA certificates (a `cacertfile`).
    Roots(Vec<CertificateDer<'static>>),
    /// Any certificate: encryption without authentication. For tests and
    /// lab setups only; the runtimes log a loud warning when it is used.
    InsecureSkipVerify,
}

/// A client certificate for servers that verify clients (mutual TLS).
#[derive(Debug)]
pub struct ClientIdentity {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        Self {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport(s: &QuicSettings) -> Result<TransportConfig, TlsConfigError> {
    let mut t = TransportConfig::default();
    let idle = if s.idle_timeout.is_zero() {
        None
    } else {
        Some(
            IdleTimeout::try_from(s.idle_timeout).map_err(|_| TlsConfigError::Setting {
                key: "idle_timeout",
                message: format!("{:?} is too large", s.idle_timeout),
            })?,
        )
    };
    t.max_idle_timeout(idle);
    t.keep_alive_interval(s.effective_keep_alive());
    t.initial_rtt(s.initial_rtt);
    if let Some(d) = s.max_ack_delay {
        // Requested from the peer through the ACK-frequency extension
        // (quinn peers honour it); our own advertised max_ack_delay stays
        // quinn's 25 ms.
        let mut ack = AckFrequencyConfig::default();
        ack.max_ack_delay(Some(d));
        t.ack_frequency_config(Some(ack));
    }
    let window = |key: &'static str, v: u64| {
        VarInt::from_u64(v).map_err(|_| TlsConfigError::Setting {
            key,
            message: format!("{v} is too large"),
        })
    };
    t.stream_receive_window(window("stream_receive_window", s.stream_receive_window)?);
    t.receive_window(window("receive_window", s.receive_window)?);
    t.send_window(s.send_window);
    // MQTT rides one bidirectional stream: the peer may open one (a few
    // more are tolerated and stopped), and never a unidirectional one.
    t.max_concurrent_bidi_streams(VarInt::from_u32(s.max_bidi_streams));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.enable_segmentation_offload(s.max_datagrams_per_transmit > 1);
    Ok(t)
}

/// The server side: the certificate chain and key it presents, and the
/// CA roots client certificates must chain to (`None`: no client
/// certificates are asked for).
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<Vec<CertificateDer<'static>>>,
    settings: &QuicSettings,
) -> Result<Arc<quinn_proto::ServerConfig>, TlsConfigError> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsConfigError::Rustls {
            what: "TLS 1.3",
            source,
        })?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(cas) => {
            let mut roots = RootCertStore::empty();
            for c in cas {
                roots.add(c).map_err(|source| TlsConfigError::Rustls {
                    what: "client CA certificate",
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsConfigError::Verifier {
                    what: "client CA certificates",
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut tls = builder
        .with_single_cert(cert_chain, key)
        .map_err(|source| TlsConfigError::Rustls {
            what: "server certificate and key",
            source,
        })?;
    tls.alpn_protocols = vec![ALPN_MQTT.to_vec()];
    // QUIC allows only 0 or u32::MAX here (RFC 9001 4.6.1).
    tls.max_early_data_size = if settings.enable_0rtt { u32::MAX } else { 0 };
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsConfigError::Setting {
        key: "cipher suites",
        message: e.to_string(),
    })?;
    let mut config = quinn_proto::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport(settings)?));
    Ok(Arc::new(config))
}

/// The client side: whom it trusts, and an optional client certificate.
pub fn client_config(
    trust: ServerTrust,
    identity: Option<ClientIdentity>,
    settings: &QuicSettings,
) -> Result<quinn_proto::ClientConfig, TlsConfigError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsConfigError::Rustls {
            what: "TLS 1.3",
            source,
        })?;
    let builder = match trust {
        ServerTrust::Roots(cas) => {
            let mut roots = RootCertStore::empty();
            for c in cas {
                roots.add(c).map_err(|source| TlsConfigError::Rustls {
                    what: "CA certificate",
                    source,
                })?;
            }
            builder.with_root_certificates(roots)
        }
        ServerTrust::InsecureSkipVerify => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipServerVerification(provider))),
    };
    let mut tls = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(id.cert_chain, id.key)
            .map_err(|source| TlsConfigError::Rustls {
                what: "client certificate and key",
                source,
            })?,
    };
    tls.alpn_protocols = vec![ALPN_MQTT.to_vec()];
    // Session tickets are kept in rustls' in-memory cache of this config,
    // so 0-RTT works on reconnects through the same endpoint.
    tls.enable_early_data = settings.enable_0rtt;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsConfigError::Setting {
        key: "cipher suites",
        message: e.to_string(),
    })?;
    let mut config = quinn_proto::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport(settings)?));
    Ok(config)
}

/// Accepts any server certificate but still checks the handshake
/// signatures, so the session is encrypted (though not authenticated).
struct SkipServerVerification(Arc<CryptoProvider>);

impl fmt::Debug for SkipServerVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SkipServerVerification")
    }
}

impl ServerCertVerifier for SkipServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl QuicSettings {
    /// The QUIC keep-alive actually used: `keep_alive_interval`, but at
    /// most half the idle timeout, so a PING always lands before the idle
    /// timer of either side fires (NanoMQ's defaults set both to 120 s).
    pub fn effective_keep_alive(&self) -> Option<Duration> {
        let k = self.keep_alive_interval?;
        if k.is_zero() {
            return None;
        }
        if self.idle_timeout.is_zero() {
            return Some(k);
        }
        Some(k.min(self.idle_timeout / 2))
    }
}
