//! `trident-edge`: the binary every Nano unit runs. It links only crates that cross-compile to
//! aarch64 without tch, Python or a GPU (the dependency-boundary test checks this). Device
//! commands — run, verify, prepare, status, bench — arrive with their stages.

use clap::Parser;

/// trident-edge: the on-device runtime of trident (Jetson Nano, JetPack 4.6).
#[derive(Debug, Parser)]
#[command(name = "trident-edge", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TRIDENT_EDGE_TARGET"), ")"))]
struct Cli {}

fn main() {
    Cli::parse();
    println!(
        "trident-edge {}: no device commands in this release yet; see `trident-edge --help`",
        env!("CARGO_PKG_VERSION")
    );
}
