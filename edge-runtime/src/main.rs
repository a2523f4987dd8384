//! `trident-edge`: the binary every Nano unit runs. It links only crates that cross-compile to
//! aarch64 without tch, Python or a GPU (the dependency-boundary test checks this). A thin layer
//! over the library: parse the command line, call the library, print a summary. Errors print as
//! `error: <context>: <cause>`; bad input exits with status 2, other failures with 1.

mod bench_command;
mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `/healthz`'s `started_at_unix_s`: taken before anything else.
    trident_edge::health::process_start();
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose, args.quiet, args.log_format);
    match cli::run(args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            // The one rule (`trident_core::blame`): every library's error type registers there.
            ExitCode::from(trident_core::blame::exit_status(err.chain()))
        }
    }
}
