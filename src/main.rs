//! The `tether` command: run, check, keygen, demo.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use clap::{Parser, Subcommand};
use tether::config::Config;

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "A sticky-session aware L7 reverse proxy for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy from a config file.
    Run {
        /// Path to tether.toml.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or non-zero naming the file, field and reason.
    Check {
        /// Path to tether.toml.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a fresh random signing key (base64 of 32 bytes) for `[[keys]] secret`.
    Keygen,
    /// Start three demo pods and the proxy in front of them; no cluster, no config.
    Demo {
        /// Proxy listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Keygen => {
            let key: [u8; 32] = rand::random();
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            ExitCode::SUCCESS
        }
        Command::Check { config } => match Config::from_file(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} backend(s), {} route(s), {} key(s))",
                    config.display(),
                    c.backends.len(),
                    c.routes.len(),
                    c.keys.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            init_logging();
            let config = match Config::from_file(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            exit(runtime(config.server.workers).and_then(|rt| rt.block_on(run(config))))
        }
        Command::Demo { listen, admin } => {
            init_logging();
            exit(runtime(None).and_then(|rt| rt.block_on(demo(listen, admin))))
        }
    }
}

fn exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    b.enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

async fn run(config: Config) -> anyhow::Result<()> {
    let running = tether::server::start(&config, tether::server::Options::from_env()).await?;
    running.run_until_signal().await;
    Ok(())
}

async fn demo(listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    let (running, pods) = tether::demo::start(listen, admin).await?;
    println!(
        "{}",
        tether::demo::instructions(running.proxy_addr, running.admin_addr, &pods)
    );
    running.run_until_signal().await;
    Ok(())
}
