//! The `tether` command: run, check, keygen, cookie, demo, migrate.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use clap::{Parser, Subcommand, ValueEnum};
use tether::config::Config;

/// mimalloc instead of glibc's malloc: the request path allocates a few dozen small
/// objects per request (HTTP/2 above all), and mimalloc's thread-local free lists take
/// a fraction of the instructions (benches/load/instructions.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
enum CookieCommand {
    /// Verify and decode a cookie value: key id, session, endpoint, ages; exits non-zero
    /// when it is not valid under the config's keys.
    Inspect {
        /// Path to tether.toml (its keys verify; its static endpoints name the token).
        #[arg(long, short)]
        config: PathBuf,
        /// The cookie value (without `name=`).
        value: String,
    },
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
    /// Work with affinity cookies.
    Cookie {
        #[command(subcommand)]
        command: CookieCommand,
    },
    /// Start three demo pods and the proxy in front of them; no cluster, no config.
    Demo {
        /// Proxy listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
    /// Read ingress-nginx Ingress manifests (offline) and print the equivalent Gateway and
    /// HTTPRoutes with sessionPersistence, the tether.toml, and how each annotation maps.
    Migrate {
        /// Multi-document YAML of Ingresses (`kubectl get ingress -A -o yaml` works);
        /// standard input when absent or `-`.
        file: Option<PathBuf>,
        /// `gatewayClassName` of the Gateways written.
        #[arg(long, default_value = "tether")]
        gateway_class: String,
        /// What to print: the Gateway API objects, the TOML, the report, or all three
        /// (TOML and report as YAML comments after the objects).
        #[arg(long, value_enum, default_value = "all")]
        format: Format,
    },
}

/// `tether migrate --format`.
#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// The Gateways and HTTPRoutes (YAML).
    Gateway,
    /// The tether.toml.
    Toml,
    /// The annotation table (Markdown).
    Report,
    /// All three.
    All,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Keygen => {
            let key: [u8; 32] = rand::random();
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            ExitCode::SUCCESS
        }
        Command::Cookie {
            command: CookieCommand::Inspect { config, value },
        } => match Config::from_file(&config) {
            Ok(c) => inspect(&c, value.trim().trim_start_matches("tether=")),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Check { config } => match Config::from_file(&config) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "{}: ok ({} backend(s), {} route(s), {} key(s))",
                    config.display(),
                    c.backends.len(),
                    c.routes.len(),
                    c.keys.len()
                );
                print!("{}", route_sources(&c));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            let config_path = config.clone();
            let config = match Config::from_file(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(config.server.log_json);
            for w in &config.warnings {
                tracing::warn!("{w}");
            }
            let path = config_path;
            exit(runtime(config.server.workers).and_then(|rt| rt.block_on(run(config, path))))
        }
        Command::Migrate {
            file,
            gateway_class,
            format,
        } => migrate(file, gateway_class, format),
        Command::Demo { listen, admin } => {
            init_logging(false);
            exit(runtime(None).and_then(|rt| rt.block_on(demo(listen, admin))))
        }
    }
}

/// `tether cookie inspect`: what a cookie says, and whether this config accepts it.
fn inspect(config: &Config, value: &str) -> ExitCode {
    use tether::affinity::{cookie, KeyRing};
    if config.keys.is_empty() {
        eprintln!("invalid: the config has no [[keys]]; cookies signed with an ephemeral key cannot be checked");
        return ExitCode::from(1);
    }
    let keys = KeyRing::from_config(&config.keys);
    let v = match cookie::decode(&keys, value) {
        Ok(v) => v,
        Err(e) => {
            println!("invalid: {e}");
            return ExitCode::from(1);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let age =
        |t: u64| humantime::format_duration(std::time::Duration::from_secs(now.saturating_sub(t)));
    let key_id = keys
        .id(v.key_index)
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    // Name the endpoint when the config lists it statically.
    let endpoint = config
        .backends
        .iter()
        .filter_map(|b| match &b.source {
            tether::config::Source::Static(eps) => Some((b, eps)),
            tether::config::Source::Kubernetes(_) => None,
            tether::config::Source::Weighted(_) => None,
        })
        .flat_map(|(b, eps)| eps.iter().map(move |e| (b, e)))
        .find_map(|(b, e)| {
            let identity = e.name.clone().unwrap_or_else(|| e.address.to_string());
            (keys.endpoint_token(v.key_index, &identity) == v.claims.endpoint_token)
                .then(|| format!("{identity} ({}, backend {})", e.address, b.name))
        })
        .unwrap_or_else(|| {
            format!(
                "token {:016x} (not a static endpoint of this config: a Kubernetes pod or one that left)",
                v.claims.endpoint_token
            )
        });
    println!("valid");
    println!(
        "key:      {key_id}{}",
        if v.key_index == 0 {
            " (current signing key)"
        } else {
            " (older key: re-issued on next request)"
        }
    );
    println!("session:  {}", v.claims.session.to_hex().as_str());
    println!("endpoint: {endpoint}");
    println!("issued:   {} ago", age(v.claims.issued));
    println!("placed:   {} ago", age(v.claims.placed));
    println!("seen:     {} ago", age(v.claims.seen));
    ExitCode::SUCCESS
}

/// `tether migrate`: exit 0 with the translation, or 2 naming the document and field.
fn migrate(file: Option<PathBuf>, gateway_class: String, format: Format) -> ExitCode {
    use std::io::Read;
    use tether::ingress::migrate;
    let text = match file.as_deref() {
        Some(p) if p.as_os_str() != "-" => std::fs::read_to_string(p),
        _ => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map(|_| s)
        }
    };
    let source = match file.as_deref() {
        Some(p) if p.as_os_str() != "-" => p.display().to_string(),
        _ => "<stdin>".into(),
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {source}: cannot read: {e}");
            return ExitCode::from(2);
        }
    };
    let options = migrate::Options { gateway_class };
    let m = match migrate::migrate(&text, &options) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {source}: {e}");
            return ExitCode::from(2);
        }
    };
    for n in &m.notes {
        eprintln!("note: {n}");
    }
    let out = match format {
        Format::Gateway => m.gateway_yaml(),
        Format::Toml => Ok(m.toml.clone()),
        Format::Report => Ok(m.report()),
        Format::All => m.all(),
    };
    match out {
        Ok(o) => {
            print!("{o}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
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

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: `kubectl logs` and log shippers get plain
    // text (https://no-color.org: any `NO_COLOR` turns it off too).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        fmt.json().flatten_event(true).init();
    } else {
        fmt.init();
    }
}

fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    // With `workers` set, the main thread runs a current-thread runtime and the other
    // workers are accept threads with runtimes of their own (thread per core): no
    // cross-thread wakeups or work stealing on the request path. Without it, tokio's
    // multi-thread scheduler, one worker per CPU.
    let mut b = if workers.is_some() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = workers {
            b.worker_threads(n);
        }
        b
    };
    b.enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

async fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    let options = tether::server::Options {
        config_path: Some(path),
        // The main thread's runtime serves too: `workers` threads in all.
        accept_threads: config.server.workers.map_or(0, |w| w.saturating_sub(1)),
        ..tether::server::Options::from_env()
    };
    let running = tether::server::start(&config, options).await?;
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

/// Where `tether check`'s config gets its routes: the file's, in file order, and the
/// Kubernetes objects that add theirs at run time (README: Ingress mode,
/// Gateway API), with the rule that decides a clash.
fn route_sources(c: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "routes from this file (routing ranks the host first: exact, then wildcard, then \
         any host, shown *; then the exact path, the longest prefix, method, headers, query):\n",
    );
    for r in &c.routes {
        let _ = writeln!(
            out,
            "  {}{} -> {}",
            r.host.as_deref().unwrap_or("*"),
            r.path_prefix,
            match &r.to {
                tether::config::RouteTo::Backend(i) => c
                    .backends
                    .get(*i)
                    .map_or("?".to_string(), |b| b.name.clone()),
                tether::config::RouteTo::Answer(a) => a.to_string(),
            }
        );
    }
    if let Some(i) = &c.kubernetes.ingress {
        let _ = writeln!(
            out,
            "routes from Ingresses (at run time): those of IngressClasses with controller {}, \
             added after this file's; a backend name or host and path this file has stays this \
             file's",
            i.controller
        );
    }
    if let Some(g) = &c.kubernetes.gateway {
        let _ = writeln!(
            out,
            "routes from HTTPRoutes (at run time): those attached to Gateways of GatewayClasses \
             with controllerName {}, added after the Ingresses'; a backend name this file or an \
             Ingress has, or a host and path this file routes, stays theirs",
            g.controller_name
        );
    }
    out
}
