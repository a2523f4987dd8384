//! `trident`: the host-side command line. A thin layer over the library crates: parse the
//! command line, call the library, print results. Errors print as `error: <context>: <cause>`;
//! bad input exits with status 2, other failures with 1.

mod calibrate;
mod cli;
mod data;
mod deploy;
mod eval;
mod export;
mod fuse;
mod hard_negatives;
mod mine;
mod package;
mod predict;
mod select;
mod train;
mod ui;
mod val;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // Training reports each epoch on an info line: on by default for `train`.
    let training = matches!(args.command, cli::Command::Train(_));
    ui::init_logging(args.verbose.max(u8::from(training)), args.quiet);
    match run(args.command, args.quiet) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(ui::exit_status(&err))
        }
    }
}

fn run(command: cli::Command, quiet: bool) -> anyhow::Result<ExitCode> {
    match command {
        cli::Command::Data { command } => data::run(command),
        cli::Command::Eval(args) => eval::run(args),
        cli::Command::Train(args) => train::run(args, quiet),
        cli::Command::Predict(args) => predict::run(args),
        cli::Command::Val(args) => val::run(args),
        cli::Command::Select(args) => select::run(args),
        cli::Command::Mine(args) => mine::run(args),
        cli::Command::Export(args) => export::run(args),
        cli::Command::Calibrate(args) => calibrate::run(args),
        cli::Command::Fuse(args) => fuse::run(args),
        cli::Command::Package { command } => package::run(command),
        cli::Command::Deploy(args) => deploy::run(args),
    }
}
