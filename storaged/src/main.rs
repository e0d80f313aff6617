//! `oss-storaged --listen ADDR --data DIR --secret-file FILE [--audit-interval SECS]
//! [--audit-rate MBPS] [--idle-timeout DURATION]`
//!
//! Parses flags, sets up logging, opens the store, binds, prints
//! `oss-storaged listening on <addr>` on stdout, and serves until SIGTERM or SIGINT.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use oss_proto::flags::parse_duration;
use oss_storaged::{Config, Server};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "oss-storaged", version, about = "oss storage server")]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Data directory (created if missing).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// The cluster secret (shared with the proxy): a file of at least 32 random bytes as
    /// text, readable by its owner only.
    /// Required; optional here only so that its absence gets one clear line.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Seconds between background audit passes; 0 = only when asked.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    audit_interval: u64,
    /// Audit read rate in megabytes (10^6 bytes) per second; 0 = unlimited.
    #[arg(long, value_name = "MBPS", default_value_t = 50)]
    audit_rate: u64,
    /// A connection that sends no next request (or does not finish logging in) for this
    /// long is closed (`500ms`, `30s`, `5m`, or seconds).
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = parse_duration)]
    idle_timeout: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oss-storaged: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(serve(args));
    // Blocking work left over (an audit piece, a write being dropped) gets a moment, no more.
    rt.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oss-storaged: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let secret_file = args
        .secret_file
        .as_deref()
        .context("--secret-file FILE is required (the cluster secret shared with the proxy)")?;
    let secret = oss_proto::auth::read_secret_file(secret_file)?;
    let mut cfg = Config::new(&args.data, secret);
    cfg.audit_interval =
        (args.audit_interval > 0).then(|| Duration::from_secs(args.audit_interval));
    cfg.audit_rate = args.audit_rate.saturating_mul(1_000_000);
    anyhow::ensure!(
        !args.idle_timeout.is_zero(),
        "--idle-timeout must be more than 0"
    );
    cfg.idle_timeout = args.idle_timeout;
    let server = tokio::task::spawn_blocking(move || Server::open(cfg)).await??;
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // Signals are caught from before the address is announced, so a test that stops the
    // server right after reading it gets a clean exit.
    let shutdown = shutdown_signal()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "oss-storaged listening on {addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, data = %args.data.display(), "listening");
    server.serve(listener, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    })
}
