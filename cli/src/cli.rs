//! The command-line interface: every command and option in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use trident_core::dataset::Split;

/// trident: detection models from a host GPU box to a fleet of Jetson Nano units.
#[derive(Debug, Parser)]
#[command(name = "trident", version, propagate_version = true)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, check and split datasets (Ultralytics layout).
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Evaluate a prediction file against a dataset split (COCO mAP, best-F1 operating point).
    Eval(EvalArgs),
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Generate a synthetic underwater dataset with train/val/test splits and dataset.yaml.
    Synth(SynthArgs),
    /// Validate dataset.yaml, every image and every label line; print a summary.
    Check(CheckArgs),
    /// Split a folder of images and labels into train/val/test, stratified by class.
    Split(SplitArgs),
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output folder (created; refused if it exists and is not empty, unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Generator settings (YAML, see configs/synth.yaml); the options below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Number of images.
    #[arg(long)]
    pub images: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub width: Option<u32>,
    #[arg(long)]
    pub height: Option<u32>,
    /// Class names, comma-separated (shapes: lionfish, urchin, abalone, starfish, jellyfish, then repeated in other colours).
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// `split`: train/val/test with dataset.yaml; `flat`: one images/ + labels/ pool with
    /// classes.txt (the input of `trident data split`).
    #[arg(long, value_enum)]
    pub layout: Option<LayoutArg>,
    /// Replace a non-empty output folder.
    #[arg(long)]
    pub force: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LayoutArg {
    Split,
    Flat,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The dataset's YAML file.
    #[arg(long)]
    pub data: PathBuf,
}

#[derive(Debug, Args)]
pub struct SplitArgs {
    /// Folder of images (searched recursively).
    #[arg(long)]
    pub images: PathBuf,
    /// Folder of YOLO label files mirroring --images.
    #[arg(long)]
    pub labels: PathBuf,
    /// Output dataset folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Fractions for train, val and test.
    #[arg(long, value_delimiter = ',', default_values_t = [0.7, 0.15, 0.15])]
    pub ratios: Vec<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Class names, comma-separated (default: classes.txt beside the labels).
    #[arg(long, value_delimiter = ',')]
    pub names: Option<Vec<String>>,
    /// How images reach the output.
    #[arg(long, value_enum, default_value_t = FileModeArg::Link)]
    pub mode: FileModeArg,
    /// Replace a non-empty output folder.
    #[arg(long)]
    pub force: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FileModeArg {
    /// Hard links, copies across file systems.
    Link,
    Copy,
    Symlink,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The dataset's YAML file.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "val")]
    pub split: Split,
    /// Prediction file: JSON array of {"image", "class", "score", "bbox": [x, y, w, h]} in pixels.
    #[arg(long)]
    pub predictions: PathBuf,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write PR and F1–confidence curves (PNG) into this folder.
    #[arg(long)]
    pub plots: Option<PathBuf>,
}
