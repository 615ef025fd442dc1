//! The `flagpost` binary: reads the command line and configuration, sets up logging and the
//! runtime, binds the listener, and maps startup failures to exit codes (64: bad configuration).

use std::process::ExitCode;

use flagpost::config::{Config, ConfigError, Invocation, LogFormat};

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
    init_logging(config.log_format);
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let addr = config.server.listen;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(%addr, mode = mode_name(&config), "flagpost listening");
    tracing::debug!(config = %config.to_redacted_toml(), "effective configuration");
    match flagpost::run(config, listener, shutdown_signal()).await {
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

fn mode_name(config: &Config) -> &'static str {
    config.mode.name()
}

/// Completes on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops flagpost");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received: draining");
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
