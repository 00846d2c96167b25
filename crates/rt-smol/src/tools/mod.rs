//! `sansmq pub` and `sansmq sub`: the everyday command-line clients.
//!
//! Both run one [`mqtt_core::client::Client`] (the sans-IO client FSM) over
//! one TCP connection with async-io, on the calling thread. The driver here
//! is a runtime like the broker's: it moves bytes between the socket and the
//! client and hands it the time. It sleeps until the earliest of socket
//! readability, the client's `poll_timeout()`, the tool's own deadline
//! (`sub -W`) and the tool's input (`pub -l` stdin lines); there is no
//! periodic tick. Every protocol decision (keep alive, acknowledgements,
//! inflight window, what DISCONNECT means) is the client's.
//!
//! There is no reconnection: a connection that ends other than by our own
//! DISCONNECT is an error, and the tool exits non-zero saying why.

pub mod bench;
mod driver;
mod publish;
mod subscribe;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};
use bytestring::ByteString;
use clap::Args;
use mqtt_core::client::ClientConfig;
use mqtt_core::codec::ProtocolVersion;

pub use publish::{run_pub, PubArgs};
pub use subscribe::{run_sub, SubArgs};

/// How long the TCP connect may take.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection flags shared by `pub` and `sub` (mosquitto_pub/sub's names).
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Broker host name or IP address.
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker TCP port.
    #[arg(short = 'p', long, default_value_t = 1883)]
    pub port: u16,
    /// MQTT version: 311 (also 3.1.1, mqttv311) or 5 (also 5.0, mqttv5).
    #[arg(short = 'V', long = "protocol", value_name = "VERSION", default_value = "5", value_parser = parse_version)]
    pub protocol: ProtocolVersion,
    /// Client identifier (default: sansmq-pub-<pid> / sansmq-sub-<pid>).
    #[arg(short = 'i', long = "id", value_name = "ID")]
    pub id: Option<String>,
    /// Keep alive in seconds (0 disables PINGREQ).
    #[arg(
        short = 'k',
        long = "keepalive",
        value_name = "SECS",
        default_value_t = 60
    )]
    pub keepalive: u16,
    /// Clean start / clean session off: resume the session the broker kept.
    #[arg(short = 'c', long = "no-clean")]
    pub no_clean: bool,
    /// 5.0 Session Expiry Interval in seconds (4294967295 = never).
    #[arg(short = 'x', long = "session-expiry", value_name = "SECS")]
    pub session_expiry: Option<u32>,
    /// User name.
    #[arg(short = 'u', long = "username", value_name = "USER")]
    pub username: Option<String>,
    /// Password (3.1.1 requires -u with it).
    #[arg(short = 'P', long = "password", value_name = "PASSWORD")]
    pub password: Option<String>,
    /// Print the client's events (connected, subscribed, acknowledged...)
    /// on stderr.
    #[arg(short = 'd', long)]
    pub debug: bool,
}

fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "311" | "3.1.1" | "mqttv311" => Ok(ProtocolVersion::V3_1_1),
        "5" | "5.0" | "mqttv5" => Ok(ProtocolVersion::V5),
        _ => Err("expected 311 or 5".into()),
    }
}

/// `key=value` for `--user-property`.
pub(crate) fn parse_user_property(s: &str) -> Result<(ByteString, ByteString), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.into(), v.into())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

impl ConnArgs {
    /// The client configuration these flags describe; `kind` names the
    /// default client id ("pub" or "sub").
    pub(crate) fn client_config(&self, kind: &str) -> anyhow::Result<ClientConfig> {
        let v5 = self.protocol.is_v5();
        if !v5 && self.session_expiry.is_some() {
            bail!("-x/--session-expiry needs MQTT 5 (-V 5)");
        }
        if !v5 && self.password.is_some() && self.username.is_none() {
            bail!("-P/--password needs -u/--username with MQTT 3.1.1");
        }
        let client_id = self
            .id
            .clone()
            .unwrap_or_else(|| format!("sansmq-{kind}-{}", std::process::id()));
        Ok(ClientConfig {
            client_id: client_id.into(),
            protocol_version: self.protocol,
            keep_alive: self.keepalive,
            clean_start: !self.no_clean,
            session_expiry_interval: self.session_expiry.unwrap_or(0),
            username: self.username.as_deref().map(ByteString::from),
            password: self
                .password
                .as_ref()
                .map(|p| bytes::Bytes::copy_from_slice(p.as_bytes())),
            ..ClientConfig::default()
        })
    }

    /// The addresses `--host`/`--port` resolve to.
    pub(crate) fn addrs(&self) -> anyhow::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve -h/--host {:?}", self.host))?
            .collect();
        if addrs.is_empty() {
            bail!("-h/--host {:?} resolves to no address", self.host);
        }
        Ok(addrs)
    }
}
