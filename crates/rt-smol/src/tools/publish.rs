//! `sansmq pub`: publish messages, wait until every QoS 1/2 one is
//! acknowledged, then DISCONNECT.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::Bytes;
use bytestring::ByteString;
use clap::{ArgAction, ArgGroup, Args};
use mqtt_core::client::{Client, ClientEvent};
use mqtt_core::codec::{Properties, QoS, ReasonCode};

use super::driver::{self, Tool, TransportArgs};
use super::{parse_user_property, ConnArgs};

/// Publishes queued in the client at once; more are queued as they leave.
const QUEUE_TARGET: usize = 256;
/// Stdin lines read ahead of the client (the reader thread blocks beyond).
const STDIN_AHEAD: usize = 64;

/// `sansmq pub` flags.
#[derive(Debug, Clone, Args)]
#[command(disable_help_flag = true)]
#[command(group(ArgGroup::new("source").required(true).args(["message", "file", "stdin_line"])))]
pub struct PubArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Topic to publish to.
    #[arg(short = 't', long, value_name = "TOPIC")]
    pub topic: String,
    /// QoS 0, 1 or 2.
    #[arg(short = 'q', long, value_name = "QOS", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Set the RETAIN flag.
    #[arg(short = 'r', long)]
    pub retain: bool,
    /// The message payload.
    #[arg(short = 'm', long, value_name = "MESSAGE")]
    pub message: Option<String>,
    /// Send the whole content of this file as one message.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Read stdin and send each line as a message (without its line end;
    /// empty lines are sent as empty messages).
    #[arg(short = 'l', long = "stdin-line")]
    pub stdin_line: bool,
    /// Send the -m/-f message this many times.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1, conflicts_with = "stdin_line",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// 5.0 user property on every PUBLISH (repeatable).
    #[arg(long = "user-property", value_name = "KEY=VALUE", value_parser = parse_user_property)]
    pub user_property: Vec<(ByteString, ByteString)>,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
}

/// Run `sansmq pub`.
pub fn run_pub(args: PubArgs) -> anyhow::Result<()> {
    let config = args.conn.client_config("pub")?;
    if !args.conn.protocol.is_v5() && !args.user_property.is_empty() {
        bail!("--user-property needs MQTT 5 (-V 5)");
    }
    mqtt_core::topic::validate_topic_name(&args.topic)
        .map_err(|e| anyhow::anyhow!("-t/--topic {:?}: {e}", args.topic))?;
    let (payload, remaining, input) = if args.stdin_line {
        (Bytes::new(), 0, Some(spawn_stdin_reader()))
    } else if let Some(m) = &args.message {
        (Bytes::copy_from_slice(m.as_bytes()), args.count, None)
    } else if let Some(path) = &args.file {
        let data = std::fs::read(path)
            .with_context(|| format!("-f/--file: cannot read {}", path.display()))?;
        (Bytes::from(data), args.count, None)
    } else {
        bail!("give the message with -m, -f or -l");
    };
    let addrs = args.conn.addrs()?;
    let properties = Properties {
        user_properties: args.user_property.clone(),
        ..Properties::default()
    };
    let mut tool = Publisher {
        topic: args.topic.as_str().into(),
        qos: QoS::from_u8(args.qos).unwrap_or(QoS::AtMostOnce),
        retain: args.retain,
        properties,
        payload,
        remaining,
        input,
        input_done: !args.stdin_line,
        disconnecting: false,
    };
    driver::run(
        &addrs,
        &args.conn.host,
        &args.transport,
        config,
        args.conn.debug,
        &mut tool,
    )
}

/// Lines of stdin, read on a thread (stdin has no portable async reader).
fn spawn_stdin_reader() -> async_channel::Receiver<Vec<u8>> {
    let (tx, rx) = async_channel::bounded(STDIN_AHEAD);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        loop {
            let mut line = Vec::new();
            match lock.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    if tx.send_blocking(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

struct Publisher {
    topic: ByteString,
    qos: QoS,
    retain: bool,
    properties: Properties,
    payload: Bytes,
    /// -m/-f messages not yet handed to the client.
    remaining: u64,
    input: Option<async_channel::Receiver<Vec<u8>>>,
    input_done: bool,
    disconnecting: bool,
}

impl Publisher {
    fn publish(&self, client: &mut Client, payload: Bytes, now: Instant) -> anyhow::Result<()> {
        client
            .publish(
                self.topic.clone(),
                payload,
                self.qos,
                self.retain,
                self.properties.clone(),
                now,
            )
            .context("cannot publish")?;
        Ok(())
    }
}

impl Tool for Publisher {
    fn step(&mut self, client: &mut Client, now: Instant) -> anyhow::Result<()> {
        while self.remaining > 0 && client.queued_len() < QUEUE_TARGET {
            self.publish(client, self.payload.clone(), now)?;
            self.remaining -= 1;
        }
        if !self.disconnecting
            && self.remaining == 0
            && self.input_done
            && client.is_connected()
            && client.is_idle()
        {
            self.disconnecting = true;
            client
                .disconnect(ReasonCode::NORMAL_DISCONNECTION, Properties::default(), now)
                .context("cannot disconnect")?;
        }
        Ok(())
    }

    fn on_event(
        &mut self,
        _client: &mut Client,
        event: ClientEvent,
        _now: Instant,
    ) -> anyhow::Result<()> {
        match event {
            ClientEvent::ConnectRefused {
                reason_code,
                properties,
            } => refused(reason_code, &properties),
            ClientEvent::PublishAcked {
                reason_code,
                properties,
                ..
            } if !reason_code.is_success() => match &properties.reason_string {
                Some(s) => bail!("the server refused a publish: {reason_code} ({s})"),
                None => bail!("the server refused a publish: {reason_code}"),
            },
            ClientEvent::Dropped { cause, .. } => bail!("a message was dropped: {cause}"),
            _ => Ok(()),
        }
    }

    fn input(&self, client: &Client) -> Option<async_channel::Receiver<Vec<u8>>> {
        if self.input_done || client.queued_len() >= QUEUE_TARGET {
            return None;
        }
        self.input.clone()
    }

    fn on_input(
        &mut self,
        item: Option<Vec<u8>>,
        client: &mut Client,
        now: Instant,
    ) -> anyhow::Result<()> {
        match item {
            Some(line) => self.publish(client, Bytes::from(line), now),
            None => {
                self.input_done = true;
                Ok(())
            }
        }
    }
}

pub(crate) fn refused(reason_code: ReasonCode, properties: &Properties) -> anyhow::Result<()> {
    match &properties.reason_string {
        Some(s) => bail!("connection refused by the server: {reason_code} ({s})"),
        None => bail!("connection refused by the server: {reason_code}"),
    }
}
