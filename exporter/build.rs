//! The parity tests link tch (as a dev-dependency) to compare against the trainer's forward pass;
//! an rpath lets those binaries find libtorch. The library itself never links it.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{dir}/lib");
    }
}
