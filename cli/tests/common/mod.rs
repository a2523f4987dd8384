//! Helpers shared by the CLI test files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn trident(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trident"))
        .args(args)
        .output()
        .expect("run trident")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn synth(dir: &Path, name: &str, images: usize, seed: u64) -> PathBuf {
    let out = dir.join(name);
    let o = trident(&[
        "data",
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--images",
        &images.to_string(),
        "--seed",
        &seed.to_string(),
        "--width",
        "200",
        "--height",
        "120",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `trident train` of configs/training.yaml for one epoch at 96 px, batch 8, on CPU, plus
/// `extra` options.
pub fn train(data: &Path, runs: &Path, extra: &[&str]) -> Output {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/training.yaml");
    let yaml = data.join("dataset.yaml");
    let mut args = vec![
        "train",
        "--config",
        s(&config),
        "--data",
        s(&yaml),
        "--out",
        s(runs),
        "--epochs",
        "1",
        "--imgsz",
        "96",
        "--batch",
        "8",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    trident(&args)
}

/// Trains `high_precision` for one epoch (a few seconds on CPU); returns best.safetensors.
pub fn train_one_epoch(data: &Path, runs: &Path) -> PathBuf {
    let o = train(data, runs, &["--variant", "high_precision"]);
    assert!(o.status.success(), "{}", stderr(&o));
    runs.join("high_precision/best.safetensors")
}

/// Parses a JSON file.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
