//! The `call-outcome` binary: parses the command line and hands over to the library.

use clap::Parser;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = call_outcome::cli::Cli::parse();
    match call_outcome::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = error.exit_code();
            // `serve` logged its fatal error already, in the log's format.
            if !error.logged() {
                eprintln!("error: {}", chain(&anyhow::Error::from(error)));
            }
            code
        }
    }
}

/// The error and its causes, each once: many messages already quote their cause, and
/// a person should not read the same sentence twice.
fn chain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
