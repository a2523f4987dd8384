//! The benchmarks make their models with the trainer (tch, a dev-dependency); an
//! rpath lets that binary find libtorch. Nothing else here links it.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg-benches=-Wl,-rpath,{dir}/lib");
    }
}
