//! `sansmq`: the broker (`sansmq start`) and its tools.
//!
//! Subcommands: `start`, `config example`, `config check`. The companion
//! tools (`pub`, `sub`, `bench`) are further variants of [`Command`].
//!
//! Exit codes: 0 on success (including a graceful shutdown on SIGINT or
//! SIGTERM), 2 for a usage or configuration error, 1 for any other failure.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use async_signal::{Signal, Signals};
use clap::{Args, Parser, Subcommand};
use futures_lite::{future, StreamExt};
use rt_smol::config::{self, Config};
use rt_smol::Server;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

// glibc malloc's arena locks and consolidation cost ~20% of broker CPU
// under QoS 1 load (perf, issue 4); jemalloc removes that and keeps idle
// memory low. The library crates leave the choice to their embedder.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "sansmq",
    version,
    about = "sansmq: an MQTT 3.1 / 3.1.1 / 5.0 broker"
)]
struct Cli {
    /// Log filter: error, warn, info, debug, trace, or tracing directives
    /// such as "info,rt_smol=debug". Overrides RUST_LOG and the config file.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (no config file needed: MQTT on 127.0.0.1:1883).
    Start(StartArgs),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Publish messages (like mosquitto_pub).
    Pub(rt_smol::tools::PubArgs),
    /// Subscribe and print messages (like mosquitto_sub).
    Sub(rt_smol::tools::SubArgs),
    /// Load generator: publishers, subscribers, idle connections.
    #[command(subcommand)]
    Bench(rt_smol::tools::bench::BenchArgs),
}

#[derive(Debug, Args)]
struct StartArgs {
    /// A sansmq.toml (see `sansmq config example`); defaults apply without one.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// IP address for the first listener (overrides the config file).
    #[arg(long, value_name = "IP")]
    bind: Option<IpAddr>,
    /// TCP port for the first listener; 0 picks a free one (overrides the config file).
    #[arg(short, long, value_name = "PORT")]
    port: Option<u16>,
    /// The runtime that drives the broker core: `smol` (async, the default)
    /// or `std` (plain threads, two per connection; see rt-std).
    #[arg(long, value_enum, default_value_t = RuntimeKind::Smol)]
    runtime: RuntimeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RuntimeKind {
    Smol,
    Std,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print a commented sansmq.toml with every key set to its default.
    Example,
    /// Check a config file: exit 0 if it is valid, else name the problem.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(ConfigCommand::Example) => {
            print!("{}", config::example());
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check { file }) => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sansmq: invalid configuration: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Start(args) => start(args, cli.log_level.as_deref()),
        Command::Pub(args) => tool_exit("pub", rt_smol::tools::run_pub(args)),
        Command::Sub(args) => tool_exit("sub", rt_smol::tools::run_sub(args)),
        Command::Bench(args) => tool_exit("bench", rt_smol::tools::bench::run_bench(args)),
    }
}

fn start(args: StartArgs, log_flag: Option<&str>) -> ExitCode {
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("sansmq: invalid configuration: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => Config::default(),
    };
    if let Some(first) = config.listeners.first_mut() {
        if let Some(bind) = args.bind {
            first.bind = bind;
        }
        if let Some(port) = args.port {
            first.port = port;
        }
    }
    if let Err(e) = init_logging(log_flag, &config.log.level) {
        eprintln!("sansmq: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let result = match args.runtime {
        RuntimeKind::Smol => run(config),
        RuntimeKind::Std => run_std(config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status of `pub`/`sub`: 0, or 1 with the error on stderr.
fn tool_exit(name: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sansmq {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--log-level` beats RUST_LOG, which beats the file's `log.level`.
fn init_logging(flag: Option<&str>, file_level: &str) -> Result<(), String> {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (directives, source) = match (flag, env) {
        (Some(f), _) => (f.to_owned(), "--log-level"),
        (None, Some(env)) => (env, "RUST_LOG"),
        (None, None) => (file_level.to_owned(), "log.level"),
    };
    let filter = EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| format!("{source}: invalid log filter {directives:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

fn run(config: Config) -> anyhow::Result<()> {
    // Installed before anything listens, so no signal is missed.
    let mut signals = Signals::new([Signal::Int, Signal::Term])
        .context("cannot install the SIGINT/SIGTERM handlers")?;
    let server = Server::bind(&config)?;
    let shutdown = async move {
        loop {
            match signals.next().await {
                Some(Ok(signal)) => {
                    info!(?signal, "shutting down");
                    return;
                }
                Some(Err(e)) => warn!(error = %e, "signal stream error"),
                None => future::pending::<()>().await,
            }
        }
    };
    server.run(shutdown)?;
    Ok(())
}

/// `--runtime std`: the same broker on rt-std's threads. Signals are read on
/// a thread of their own, which triggers the same graceful shutdown.
fn run_std(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::new([Signal::Int, Signal::Term])
        .context("cannot install the SIGINT/SIGTERM handlers")?;
    let handle = rt_std::Broker::start(&config)?;
    let trigger = handle.shutdown_trigger();
    std::thread::Builder::new()
        .name("sansmq-signals".into())
        .spawn(move || loop {
            match async_io::block_on(signals.next()) {
                Some(Ok(signal)) => {
                    info!(?signal, "shutting down");
                    trigger.trigger();
                    return;
                }
                Some(Err(e)) => warn!(error = %e, "signal stream error"),
                None => return,
            }
        })
        .context("cannot start the signal thread")?;
    handle.wait()?;
    Ok(())
}
