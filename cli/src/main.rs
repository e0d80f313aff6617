//! `oss`: parse the command line, run it on a tokio runtime, and turn any failure into one
//! `oss: ...` line on stderr and a non-zero exit status.

use std::process::ExitCode;

use clap::Parser;

use oss_cli::args::Cli;
use oss_cli::error::{BrokenPipe, CliError, EXIT_FAILURE};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    // Quiet unless asked: stderr is for the one error line (RUST_LOG=debug to see more).
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .try_init();

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oss: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = rt.block_on(oss_cli::run(cli));
    // A stdin read may still sit on a blocking thread after a failed upload; don't wait for it.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<BrokenPipe>() => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<CliError>() {
            Some(c) => {
                eprintln!("oss: {}", c.msg);
                ExitCode::from(c.code)
            }
            None => {
                eprintln!("oss: {}", one_line(&format!("{e:#}")));
                ExitCode::from(EXIT_FAILURE)
            }
        },
    }
}

/// Help and version go to stdout with status 0; a usage mistake is one `oss:` line, status 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            let text = e.render().to_string();
            // clap's message is the block before the blank line that precedes "Usage:".
            let first = text
                .lines()
                .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            eprintln!("oss: {first} (see 'oss --help')");
            ExitCode::from(2)
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
