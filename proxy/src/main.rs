//! `oss-proxy`: parse flags, set up logging, bind, run.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use oss_proxy::config::{parse_duration, Config};

#[derive(Parser, Debug)]
#[command(
    name = "oss-proxy",
    version,
    about = "The oss proxy: the only door for clients"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Directory holding the ring and the cluster state.
    #[arg(long)]
    state: PathBuf,
    /// The cluster secret shared with the storage servers: a file of at least 32 random
    /// bytes as text, readable by its owner only. Required (optional here only so that its
    /// absence gets one clear line).
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Number of partitions, a power of two (first start only; default 1024).
    #[arg(long)]
    partitions: Option<u32>,
    /// Replicas of every object (first start only; default 2).
    #[arg(long)]
    replicas: Option<u8>,
    /// A storage server's address (first start only); repeat for each server.
    #[arg(long = "disk")]
    disks: Vec<String>,
    /// A server that misses its disk checks for this long is declared offline.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    offline_after: std::time::Duration,
    /// Also serve the OpenStack Swift object API over HTTP on this address (port 0 picks a
    /// free port; the bound address is printed).
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// How long a Swift door token lasts.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    token_life: std::time::Duration,
    /// Interval between disk checks.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    check_interval: std::time::Duration,
    /// A client that sends no request (or does not finish logging in) for this long is
    /// disconnected.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    idle_timeout: std::time::Duration,
    /// How often the replicator asks every storage server which partitions it holds, so
    /// that copies on stand-ins go home even when no write recorded them.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    replicate_interval: std::time::Duration,
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oss-proxy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let secret_file = args.secret_file.as_deref().context(
        "--secret-file FILE is required (the cluster secret shared with the storage servers)",
    )?;
    let secret = oss_proto::auth::read_secret_file(secret_file)?;
    let mut cfg = Config::new(args.state, secret);
    cfg.partitions = args.partitions;
    cfg.replicas = args.replicas;
    cfg.disks = args.disks;
    cfg.offline_after = args.offline_after;
    cfg.check_interval = args.check_interval;
    anyhow::ensure!(
        !args.idle_timeout.is_zero(),
        "--idle-timeout must be more than 0"
    );
    cfg.idle_timeout = args.idle_timeout;
    anyhow::ensure!(
        !args.replicate_interval.is_zero(),
        "--replicate-interval must be more than 0"
    );
    cfg.replicate_interval = args.replicate_interval;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Open (and validate) the state before binding, so a bad flag fails fast.
        let proxy = oss_proxy::Proxy::open(cfg)?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let http = match &args.http {
            Some(a) => Some(oss_proxy::HttpDoor {
                listener: tokio::net::TcpListener::bind(a)
                    .await
                    .with_context(|| format!("cannot listen on {a} (--http)"))?,
                token_life: args.token_life,
            }),
            None => None,
        };
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "oss-proxy listening on {addr}")?;
            if let Some(h) = &http {
                writeln!(
                    out,
                    "oss-proxy swift api listening on {}",
                    h.listener.local_addr()?
                )?;
            }
            out.flush()?;
        }
        oss_proxy::run(listener, http, proxy, shutdown_signal()).await;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
