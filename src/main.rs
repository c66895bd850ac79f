//! The `call-outcome` binary: parses the command line and hands over to the library.

use clap::Parser;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = call_outcome::cli::Cli::parse();
    let runtime = match call_outcome::server::runtime::runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(call_outcome::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = error.exit_code();
            // `serve` logged its fatal error already, in the log's format.
            if !error.logged() {
                eprintln!("error: {}", call_outcome::cli::error_text(&error));
            }
            code
        }
    }
}
