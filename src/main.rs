//! The `flagpost` binary: reads the command line and configuration, sets up logging and the
//! runtime, binds the listeners, and maps startup failures to exit codes (64: bad
//! configuration). `flagpost health` and `flagpost ready` probe a running flagpost, for container
//! images without a shell.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use flagpost::config::{Config, ConfigError, Invocation};
use flagpost::Listeners;

/// jemalloc, with background threads that give freed memory back to the system about a second
/// after it is freed (`.cargo/config.toml`): after a burst of connections or a large snapshot,
/// RSS falls back instead of staying at its peak as it does with glibc's per-thread arenas.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// EX_USAGE from sysexits.h: the configuration (or command line) is wrong.
const EXIT_BAD_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let config = match Config::from_args(std::env::args_os()) {
        Ok(Invocation::Serve(config)) => config,
        Ok(Invocation::CheckConfig(config)) => {
            #[allow(clippy::print_stdout)]
            {
                println!("# configuration is valid; effective values, secrets redacted:");
                for w in config.warnings() {
                    println!("# warning: {w}");
                }
                print!("{}", config.to_redacted_toml());
            }
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Probe { path, args }) => return probe(path, &args),
        Ok(Invocation::Explain(args)) => return explain(&args),
        Ok(Invocation::MarkdownHelp(text)) => {
            #[allow(clippy::print_stdout)]
            {
                print!("{text}");
            }
            return ExitCode::SUCCESS;
        }
        Err(ConfigError::Cli(e)) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_BAD_CONFIG)
            } else {
                ExitCode::SUCCESS // --help, --version
            };
        }
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("flagpost: configuration error: {e}");
            }
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("flagpost: cannot start the async runtime: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let pipeline = match tracing_and_logs(&config, &runtime) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let grace = config.server.shutdown_grace;
    let code = runtime.block_on(async move {
        let code = serve(config).await;
        // The last spans, while the runtime still runs, within the drain's grace.
        if let Some(pipeline) = pipeline {
            pipeline.finish(grace).await;
        }
        code
    });
    // Blocking work still running (a backup write on a stuck disk) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

/// The log and, with `[otel]`, the trace export (its task and gRPC channel made inside the
/// runtime they run on); then the start's warnings.
fn tracing_and_logs(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<flagpost::otel::Pipeline>, ExitCode> {
    let (tracer, pipeline) = match &config.otel {
        Some(otel) => {
            let _entered = runtime.enter();
            match flagpost::otel::pipeline(otel, &config.instance_id) {
                Ok((tracer, pipeline)) => (Some(tracer), Some(pipeline)),
                Err(e) => {
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!("flagpost: {e}");
                    }
                    return Err(ExitCode::from(EXIT_BAD_CONFIG));
                }
            }
        }
        None => (None, None),
    };
    flagpost::otel::logs::install(config.log_format, tracer);
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    if let Some(otel) = &config.otel {
        tracing::info!(endpoint = %otel.redacted_endpoint(), protocol = otel.protocol.name(), "exporting traces over OTLP");
    }
    Ok(pipeline)
}

/// Binds a listener; `::` accepts IPv4 too (dual stack), so IPv4 clients keep their address.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

async fn serve(config: Config) -> ExitCode {
    let signals = Signals::install();
    let mut listeners = Listeners::default();
    let mut bound = Vec::new();
    for (addr, https) in [
        (config.server.listen, false),
        (config.server.tls.as_ref().map(|t| t.listen), true),
    ] {
        let Some(addr) = addr else { continue };
        let listener = match bind(addr) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        bound.push(format!(
            "{}://{}",
            if https { "https" } else { "http" },
            listener.local_addr().unwrap_or(addr)
        ));
        if https {
            listeners.https = Some(listener);
        } else {
            listeners.http = Some(listener);
        }
    }
    let addr = bound
        .first()
        .map(|b| b.split("://").nth(1).unwrap_or("").to_string())
        .unwrap_or_default();
    tracing::info!(%addr, listening = ?bound, mode = config.mode.name(), version = env!("CARGO_PKG_VERSION"), "flagpost listening");
    tracing::info!(config = %config.to_redacted_json(), "effective configuration");
    match flagpost::run_with(config, listeners, signals.first()).await {
        Ok(()) => {
            tracing::info!("flagpost stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "flagpost cannot run");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT handlers, installed before flagpost says it listens, so a signal sent
/// right after start drains instead of killing the process.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(t), Ok(i)) => Some((t, i)),
                _ => {
                    tracing::warn!("cannot watch SIGTERM/SIGINT; only a kill stops flagpost");
                    None
                }
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Completes on the first SIGTERM or SIGINT; a second one ends the process at once.
    async fn first(self) {
        #[cfg(unix)]
        {
            let Some((mut term, mut int)) = self.streams else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::info!("shutdown signal received: draining (a second signal stops at once)");
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
                tracing::warn!("second shutdown signal: stopping now");
                std::process::exit(1);
            });
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutdown signal received: draining");
        }
    }
}

/// A client for asking a running flagpost, trusting `ca` too.
fn probe_client(ca: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(f)
}

/// `flagpost health` / `flagpost ready`: exit 0 when the running flagpost answers 200.
fn probe(path: &str, args: &flagpost::config::ProbeArgs) -> ExitCode {
    let url = format!("{}{path}", args.edge_url.trim_end_matches('/'));
    let result = block_on(async {
        let client = probe_client(args.ca_certificate_file.as_deref())?;
        let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
        Ok(response.status().as_u16())
    });
    #[allow(clippy::print_stdout, clippy::print_stderr)]
    match result {
        Ok(200) => {
            println!("{url}: 200");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("{url}: {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

// Indexing a `serde_json::Value` by key gives `Null` when the key is absent: it cannot panic.
#[allow(clippy::indexing_slicing)]
/// `flagpost explain TOKEN`: asks a running flagpost why it serves or refuses the token, and
/// prints it for a person (or the JSON). Exit 0: served; 1: refused; 2: could not ask.
fn explain(args: &flagpost::config::ExplainArgs) -> ExitCode {
    let url = format!(
        "{}/internal-backstage/explain",
        args.url.trim_end_matches('/')
    );
    let answer = block_on(async {
        let client = probe_client(args.ca_certificate_file.as_deref())?;
        let response = client
            .post(&url)
            .header(reqwest::header::AUTHORIZATION, args.token.trim())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| e.to_string())
    });
    #[allow(clippy::print_stdout, clippy::print_stderr)]
    match answer {
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::from(2)
        }
        Ok(v) => {
            if args.json {
                println!("{v:#}");
            } else {
                print!("{}", flagpost::explain::text(&v));
            }
            if v["answer"]["status"] == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
