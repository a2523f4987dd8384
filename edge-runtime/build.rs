// Records the target triple so `trident-edge --version` says which build is on a unit.
fn main() {
    println!(
        "cargo:rustc-env=TRIDENT_EDGE_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
}
