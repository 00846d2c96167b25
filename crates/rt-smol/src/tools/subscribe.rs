//! `sansmq sub`: subscribe and print each message on its own line.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{ArgAction, Args};
use mqtt_core::client::{Client, ClientEvent};
use mqtt_core::codec::{Properties, Publish, QoS, ReasonCode, SubscriptionOptions};

use super::driver::{self, Tool, TransportArgs};
use super::publish::refused;
use super::ConnArgs;

/// `sansmq sub` flags.
#[derive(Debug, Clone, Args)]
#[command(disable_help_flag = true)]
pub struct SubArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Topic filter to subscribe to (repeatable).
    #[arg(short = 't', long, value_name = "FILTER", required = true)]
    pub topic: Vec<String>,
    /// Maximum QoS of the subscriptions: 0, 1 or 2.
    #[arg(short = 'q', long, value_name = "QOS", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Print "topic payload" instead of the payload alone.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Exit (0) after this many messages.
    #[arg(short = 'C', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Exit non-zero if not done (-C) after this many seconds; without -C,
    /// exit 0 after this many seconds.
    #[arg(short = 'W', long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// Output format instead of the payload: %t topic, %p payload, %q QoS,
    /// %r retain (0/1), %P 5.0 user properties (key:value, space
    /// separated), %% a percent sign.
    #[arg(short = 'F', long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
}

/// Run `sansmq sub`.
pub fn run_sub(args: SubArgs) -> anyhow::Result<()> {
    let config = args.conn.client_config("sub")?;
    let qos = QoS::from_u8(args.qos).unwrap_or(QoS::AtMostOnce);
    let filters = args
        .topic
        .iter()
        .map(|t| (t.as_str().into(), SubscriptionOptions::new(qos)))
        .collect();
    let addrs = args.conn.addrs()?;
    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut tool = Subscriber {
        args: &args,
        filters: Some(filters),
        received: 0,
        deadline,
        disconnecting: false,
        out: std::io::stdout(),
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

struct Subscriber<'a> {
    args: &'a SubArgs,
    /// Handed to the client on the first `step`.
    filters: Option<Vec<(bytestring::ByteString, SubscriptionOptions)>>,
    received: u64,
    deadline: Option<Instant>,
    disconnecting: bool,
    out: std::io::Stdout,
}

impl Subscriber<'_> {
    fn done(&self) -> bool {
        self.args.count.is_some_and(|n| self.received >= n)
    }

    fn disconnect(&mut self, client: &mut Client, now: Instant) -> anyhow::Result<()> {
        if !self.disconnecting {
            self.disconnecting = true;
            client
                .disconnect(ReasonCode::NORMAL_DISCONNECTION, Properties::default(), now)
                .context("cannot disconnect")?;
        }
        Ok(())
    }

    fn print(&mut self, message: &Publish) -> anyhow::Result<()> {
        let mut line = Vec::with_capacity(message.topic.len() + message.payload.len() + 2);
        match &self.args.format {
            Some(format) => format_message(format, message, &mut line),
            None => {
                if self.args.verbose {
                    line.extend_from_slice(message.topic.as_bytes());
                    line.push(b' ');
                }
                line.extend_from_slice(&message.payload);
            }
        }
        line.push(b'\n');
        let mut out = self.out.lock();
        out.write_all(&line)
            .and_then(|()| out.flush())
            .context("cannot write to stdout")
    }
}

fn format_message(format: &str, m: &Publish, line: &mut Vec<u8>) {
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            let mut b = [0u8; 4];
            line.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            continue;
        }
        match chars.next() {
            Some('t') => line.extend_from_slice(m.topic.as_bytes()),
            Some('p') => line.extend_from_slice(&m.payload),
            Some('q') => line.extend_from_slice((m.qos as u8).to_string().as_bytes()),
            Some('r') => line.push(if m.retain { b'1' } else { b'0' }),
            Some('P') => {
                let props: Vec<String> = m
                    .properties
                    .user_properties
                    .iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect();
                line.extend_from_slice(props.join(" ").as_bytes());
            }
            Some('%') => line.push(b'%'),
            Some(other) => {
                line.push(b'%');
                let mut b = [0u8; 4];
                line.extend_from_slice(other.encode_utf8(&mut b).as_bytes());
            }
            None => line.push(b'%'),
        }
    }
}

impl Tool for Subscriber<'_> {
    fn step(&mut self, client: &mut Client, now: Instant) -> anyhow::Result<()> {
        if let Some(filters) = self.filters.take() {
            client
                .subscribe(filters, Properties::default(), now)
                .context("-t/--topic")?;
        }
        if self.done() && client.is_connected() {
            self.disconnect(client, now)?;
        }
        Ok(())
    }

    fn on_event(
        &mut self,
        client: &mut Client,
        event: ClientEvent,
        now: Instant,
    ) -> anyhow::Result<()> {
        match event {
            ClientEvent::ConnectRefused {
                reason_code,
                properties,
            } => refused(reason_code, &properties),
            ClientEvent::Subscribed(suback) => {
                for (filter, code) in self.args.topic.iter().zip(&suback.reason_codes) {
                    if !code.is_success() {
                        bail!("the server refused the subscription to {filter:?}: {code}");
                    }
                }
                Ok(())
            }
            ClientEvent::Message(message) => {
                if self.done() {
                    // Already counted out; the client acknowledged it anyway.
                    return Ok(());
                }
                self.received += 1;
                self.print(&message)?;
                if self.done() {
                    self.disconnect(client, now)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        if self.disconnecting {
            return None;
        }
        self.deadline
    }

    fn on_deadline(&mut self, client: &mut Client, now: Instant) -> anyhow::Result<()> {
        let secs = self.args.timeout.unwrap_or(0);
        match self.args.count {
            Some(n) => bail!(
                "-W/--timeout: {} of {n} messages received within {secs} s",
                self.received
            ),
            None if !client.is_connected() => {
                bail!("-W/--timeout: not connected within {secs} s")
            }
            // Without -C, -W is how long to listen: a normal end.
            None => self.disconnect(client, now),
        }
    }
}
