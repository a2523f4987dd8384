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
    /// Train the ensemble variants (or one) of the YOLO-style detector with libtorch.
    Train(TrainArgs),
    /// Run a checkpoint over images and write a prediction file for `trident eval`.
    Predict(PredictArgs),
    /// Hard negatives: a checkpoint's false positives on a labelled split (counted) and on
    /// background footage (collected as background frames for the next training).
    Mine(MineArgs),
    /// Rank unlabelled frames by what a model would learn from their labels (uncertainty,
    /// entropy or the ensemble's disagreement) and write an annotation package.
    Select(SelectArgs),
    /// Evaluate a checkpoint, an ONNX, a models folder (the calibrated ensemble) or a package on
    /// a dataset split: per-class table, PR/F1 curves, the critical classes' recall.
    Val(ValArgs),
    /// Export checkpoints (or bring your own ONNX) to verified ONNX for TensorRT 8.2, with model
    /// cards, an FP16-weights twin and TensorRT engines.
    Export(ExportArgs),
    /// Fit the calibration tables of a three-model ensemble on validation data (temperatures,
    /// fusion, per-class thresholds, TTA views) and write calibration.yaml with a report.
    Calibrate(CalibrateArgs),
    /// Fuse prediction files of several models (WBF or NMS), as the `ensemble-boxes` package does.
    Fuse(FuseArgs),
    /// Deployment packages: verify one, create signing keys (`export --package` builds them).
    Package {
        #[command(subcommand)]
        command: PackageCommand,
    },
    /// Provision Jetson Nano units over SSH and roll packages out to them in waves, with
    /// health-gated rollback; fleet status.
    Deploy(DeployArgs),
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The fleet inventory (units, waves, trusted key; see configs/fleet.yaml).
    #[arg(
        long,
        global = true,
        env = "TRIDENT_FLEET",
        default_value = "configs/fleet.yaml"
    )]
    pub inventory: PathBuf,
    #[command(subcommand)]
    pub command: DeployCommand,
}

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// First-time setup of freshly flashed units: /opt/trident layout, service user, systemd
    /// unit, trusted key, power mode; reports each unit's facts and refuses incompatible ones.
    Provision(ProvisionArgs),
    /// Roll a package out: canaries first, then the rest; per unit upload → verify → prepare →
    /// switch → restart → health gate → commit, or automatic rollback.
    Push(PushArgs),
    /// Release, health, fps, ladder level, power mode and last contact of each unit.
    Status(StatusArgs),
    /// Switch a unit back to its previous release, with the same health gate.
    Rollback(RollbackArgs),
}

/// Which units of the inventory a command addresses.
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub struct UnitSelectionArgs {
    /// Units by name (repeat, or separate with commas).
    #[arg(long = "unit", value_delimiter = ',')]
    pub units: Vec<String>,
    /// Every unit with this tag (repeat for several tags).
    #[arg(long = "tag", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Every unit of the inventory.
    #[arg(long, conflicts_with_all = ["units", "tags"])]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Units by name; or use --tag / --all.
    #[arg(
        value_name = "UNIT",
        value_delimiter = ',',
        required_unless_present_any = ["tags", "all"]
    )]
    pub names: Vec<String>,
    /// Every unit with this tag.
    #[arg(long = "tag", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Every unit of the inventory.
    #[arg(long, conflicts_with_all = ["names", "tags"])]
    pub all: bool,
    /// The signed package whose runtime becomes the units' verifier and whose systemd unit is
    /// installed (it is not installed as a release: `push` does that).
    #[arg(long)]
    pub package: PathBuf,
    /// Units provisioned at once (default: the inventory's waves.max_parallel).
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// When another deploy holds a unit's lock, wait up to this long for it (90s, 10m) instead
    /// of failing at once.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wait: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The signed package (`*.tar.zst`, its `.minisig` beside it).
    pub package: PathBuf,
    #[command(flatten)]
    pub select: UnitSelectionArgs,
    /// Canary units, updated first; a failing canary stops the rollout (default: the
    /// inventory's waves.canary).
    #[arg(long)]
    pub canary: Option<usize>,
    /// Units in flight at once (default: the inventory's waves.max_parallel).
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Seconds a restarted unit has to report healthy (default: the inventory's
    /// health.timeout_s).
    #[arg(long)]
    pub health_timeout: Option<u64>,
    /// Install even when the package is older than a unit's current release.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// When another deploy holds a unit's lock, wait up to this long for it (90s, 10m) instead
    /// of failing at once.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wait: Option<std::time::Duration>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Units by name (default: every unit).
    #[arg(long = "unit", value_delimiter = ',')]
    pub units: Vec<String>,
    /// Every unit with this tag.
    #[arg(long = "tag", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The unit to switch back.
    pub unit: String,
    /// Seconds the unit has to report healthy (default: the inventory's health.timeout_s).
    #[arg(long)]
    pub health_timeout: Option<u64>,
    /// When another deploy holds a unit's lock, wait up to this long for it (90s, 10m) instead
    /// of failing at once.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wait: Option<std::time::Duration>,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Generate a synthetic underwater dataset with train/val/test splits and dataset.yaml.
    Synth(SynthArgs),
    /// Validate dataset.yaml, every image and every label line; print a summary.
    Check(CheckArgs),
    /// Split a folder of images and labels into train/val/test, stratified by class.
    Split(SplitArgs),
    /// Bring annotations back from a labelling service (COCO JSON) as images/, labels/ and
    /// classes.txt, ready to list as a `train` source or to split.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("format").required(true).args(["coco"])))]
pub struct ImportArgs {
    /// COCO annotation file (`images`, `annotations`, `categories`; boxes in pixels).
    #[arg(long)]
    pub coco: Option<PathBuf>,
    /// Folder the annotation file's `file_name`s are relative to.
    #[arg(long)]
    pub images: PathBuf,
    /// Output folder (images/, labels/, classes.txt).
    #[arg(long)]
    pub out: PathBuf,
    /// The dataset whose class ids the labels must use (its `names`); every category must be
    /// one of them. Default: the categories in id order.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// How images reach the output.
    #[arg(long, value_enum, default_value_t = FileModeArg::Link)]
    pub mode: FileModeArg,
    /// Replace a non-empty output folder.
    #[arg(long)]
    pub force: bool,
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
    /// Keep each group of frames in one split: a regular expression over the file name (without
    /// extension) whose first capture group, or whole match, names the group — e.g.
    /// `^(dive\d+)_` for `dive12_f0042.jpg`. Every image must match.
    #[arg(long)]
    pub group_by: Option<String>,
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

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training config with the variants (see configs/training.yaml).
    #[arg(long, default_value = "configs/training.yaml")]
    pub config: PathBuf,
    /// Train only this variant (default: all of them, one after another).
    #[arg(long)]
    pub variant: Option<String>,
    /// Dataset YAML (overrides the config's `data`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub imgsz: Option<u32>,
    #[arg(long)]
    pub batch: Option<usize>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Model preset: tiny, nano or small.
    #[arg(long)]
    pub model: Option<String>,
    /// Wall-clock budget per variant in minutes (Ultralytics' `time=`); the schedule is fitted
    /// to it and the best checkpoint is kept when it runs out. How much a budget trains depends
    /// on the machine's speed: a warning says when it fits fewer epochs than the warm-up and the
    /// first useful ones. For a result that does not depend on the machine, use --epochs with a
    /// `target_map50` in the config.
    #[arg(long)]
    pub time: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// libtorch threads per variant (default: the cores divided among the concurrent jobs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Variants trained at the same time, each in its own process (default on CPU: all of them,
    /// sharing the cores; one on CUDA).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Output folder for this run (default: runs/<config name>); variants go in subfolders.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue each variant from its last.safetensors (weights, optimizer, EMA, epoch).
    #[arg(long, conflicts_with = "weights")]
    pub resume: bool,
    /// Start from these weights instead of random ones (fine-tuning): a trident checkpoint, an
    /// Ultralytics YOLOv8 state dict saved as safetensors, or a folder of runs (each variant
    /// from its own `<variant>/best.safetensors`). Tensors are matched by name and shape; the
    /// class branch is re-initialised when the classes differ; `weights.json` in the run
    /// reports what was loaded.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Freeze the first N layers (no gradient), e.g. 10 for YOLOv8's backbone.
    #[arg(long)]
    pub freeze: Option<usize>,
    /// The seed's hard-negative loop: N trainings of each variant, each after the first on the
    /// dataset plus the background frames the previous model fired on (`trident mine` over
    /// --background), fine-tuned from the previous model's weights.
    #[arg(long, requires = "background", conflicts_with = "resume")]
    pub hard_negatives: Option<usize>,
    /// Background footage for --hard-negatives (none of the classes in it); repeatable.
    #[arg(long, requires = "hard_negatives")]
    pub background: Vec<PathBuf>,
    /// Replace an existing run in the output folder.
    #[arg(long)]
    pub exist_ok: bool,
    /// Fail on unreadable images or bad label lines instead of skipping and counting them.
    #[arg(long)]
    pub strict: bool,
    /// Do not print the side-by-side table (used by concurrent jobs).
    #[arg(long, hide = true)]
    pub no_summary: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("model").required(true).args(["checkpoint", "models", "package"])))]
pub struct PredictArgs {
    /// A checkpoint written by `trident train` (best.safetensors or last.safetensors), run
    /// through tch.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// A folder of exported models with their cards (`trident export --out`): the three-model
    /// ensemble through the edge runtime's own code — what a Nano computes.
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// An unpacked deployment package: its models and calibration tables, every file checked
    /// against the manifest.
    #[arg(long)]
    pub package: Option<PathBuf>,
    /// Calibration tables for --models/--package (default: the package's, or calibration.yaml
    /// beside the models when present).
    #[arg(long, conflicts_with = "no_calibration")]
    pub calibration: Option<PathBuf>,
    /// Ignore calibration tables: raw scores, --fusion, no thresholds.
    #[arg(long)]
    pub no_calibration: bool,
    /// Run the calibration tables' test-time views (as the top ladder level does).
    #[arg(long)]
    pub tta: bool,
    /// An image or a folder of images (searched recursively).
    #[arg(long)]
    pub source: PathBuf,
    /// Prediction file to write (JSON, the format `trident eval` reads).
    #[arg(long)]
    pub out: PathBuf,
    /// Confidence threshold in [0, 1] (default: the checkpoint's or each model's floor; use 0.001
    /// for mAP).
    #[arg(long, value_parser = trident_core::flags::unit_interval)]
    pub conf: Option<f32>,
    #[command(flatten)]
    pub run: Inference,
    /// Ensemble fusion for --models without tables.
    #[arg(long, value_enum, default_value_t = FuseMethod::Wbf)]
    pub fusion: FuseMethod,
    /// IoU threshold of the fusion.
    #[arg(long, default_value_t = 0.55)]
    pub fusion_iou: f64,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).multiple(true).args(["source", "data"])))]
pub struct MineArgs {
    /// A checkpoint of `trident train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// A folder of background footage (none of the classes in it); repeatable. Frames with any
    /// detection become background images in --out.
    #[arg(long, requires = "out")]
    pub source: Vec<PathBuf>,
    /// A labelled dataset: false positives on its --split are counted, and --out gets a
    /// dataset.yaml that adds the mined frames to its train split.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value = "train")]
    pub split: Split,
    /// Output folder of the mined pool (images/, labels/, mined.csv, dataset.yaml with --data).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Detections at or above this score count (default: the checkpoint's confidence floor).
    #[arg(long, value_parser = trident_core::flags::unit_interval)]
    pub conf: Option<f32>,
    /// Keep at most this many background frames, the most confident mistakes first.
    #[arg(long)]
    pub max_frames: Option<usize>,
    /// Prefix of the mined frames' names (unique per round when pools accumulate).
    #[arg(long, default_value = "hardneg_")]
    pub prefix: String,
    #[command(flatten)]
    pub run: Inference,
    /// How images reach the output.
    #[arg(long, value_enum, default_value_t = FileModeArg::Link)]
    pub mode: FileModeArg,
    /// Replace a non-empty output folder.
    #[arg(long)]
    pub force: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StrategyArg {
    /// Detections scored inside --band, weighted by closeness to 0.5.
    Uncertainty,
    /// The summed binary entropy of the detections' scores.
    Entropy,
    /// The ensemble's variants disagreeing (needs --models or several --checkpoint).
    Disagreement,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("model").required(true).args(["checkpoint", "models"])))]
pub struct SelectArgs {
    /// A checkpoint of `trident train`; repeat for several (disagreement compares them).
    #[arg(long)]
    pub checkpoint: Vec<PathBuf>,
    /// A folder of exported models: the ensemble (with its tables), each member's own output
    /// for disagreement.
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Folder of unlabelled images (searched recursively).
    #[arg(long)]
    pub source: PathBuf,
    /// How many frames to select at most.
    #[arg(long, default_value_t = 2000)]
    pub num: usize,
    #[arg(long, value_enum, default_value_t = StrategyArg::Uncertainty)]
    pub strategy: StrategyArg,
    /// The uncertain score band of `uncertainty`: low,high.
    #[arg(long, value_delimiter = ',', default_values_t = [0.3, 0.7])]
    pub band: Vec<f64>,
    /// The annotation package to write (a zip).
    #[arg(long)]
    pub out: PathBuf,
    /// A labelled dataset: its classes must be the models', and its train split gives the
    /// guidelines' example crops (default: the most confident detections).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Detections below this score are not looked at.
    #[arg(long, default_value_t = 0.05, value_parser = trident_core::flags::unit_interval)]
    pub conf: f32,
    /// Pre-annotations in the package: detections at or above this score.
    #[arg(long, default_value_t = 0.25, value_parser = trident_core::flags::unit_interval)]
    pub pre_annotation_conf: f32,
    #[command(flatten)]
    pub run: Inference,
}

/// How `predict`, `val` and `select` run models.
#[derive(Debug, Args)]
pub struct Inference {
    /// IoU threshold of the non-maximum suppression.
    #[arg(long, default_value_t = 0.7)]
    pub iou: f32,
    /// Maximum detections per image.
    #[arg(long, default_value_t = 300)]
    pub max_det: usize,
    /// Images per forward pass (checkpoints).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// auto, cpu, cuda or cuda:N (checkpoints).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Inference backends for ONNX models, tried in order (tensorrt, onnxruntime, tract).
    #[arg(long, value_delimiter = ',', default_value = "onnxruntime,tract")]
    pub backend: Vec<trident_infer::BackendKind>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("model").required(true).args(["checkpoint", "onnx", "models", "package"])))]
pub struct ValArgs {
    /// A checkpoint of `trident train`, run through tch.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// One exported ONNX with its model card beside it, run alone through trident-infer.
    #[arg(long)]
    pub onnx: Option<PathBuf>,
    /// A folder of exported models: the ensemble with its calibration tables, as a unit runs it.
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// An unpacked deployment package (verified against its manifest).
    #[arg(long)]
    pub package: Option<PathBuf>,
    /// The dataset's YAML file.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "val")]
    pub split: Split,
    /// Classes whose recall is reported on its own (and gated by --min-recall), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub critical: Vec<String>,
    /// Fail (exit 1) when a critical class's recall at the operating point is below this.
    #[arg(long, value_parser = trident_core::flags::unit_interval)]
    pub min_recall: Option<f32>,
    /// Confidence threshold of the predictions (default: 0.001 for a checkpoint or an ONNX,
    /// as mAP wants; the models' floors and tables for an ensemble, as a unit outputs).
    #[arg(long, value_parser = trident_core::flags::unit_interval)]
    pub conf: Option<f32>,
    #[command(flatten)]
    pub run: Inference,
    /// Run the calibration tables' test-time views.
    #[arg(long)]
    pub tta: bool,
    /// Write the PR and F1 curves (PNG) to this folder.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Also write the predictions (the format `trident eval` reads).
    #[arg(long)]
    pub save_predictions: Option<PathBuf>,
    /// Print the evaluation as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).multiple(true).args(["checkpoint", "onnx", "package"])))]
pub struct ExportArgs {
    /// A checkpoint written by `trident train`; repeat for several (e.g. the three variants).
    #[arg(long)]
    pub checkpoint: Vec<PathBuf>,
    /// A detection ONNX you already have (Ultralytics YOLOv8/YOLO11 `format=onnx`, or trident's);
    /// repeatable.
    #[arg(long)]
    pub onnx: Vec<PathBuf>,
    /// Output folder: `<variant>.onnx`, `<variant>.card.json` (and `.fp16.onnx`).
    #[arg(long, default_value = "models")]
    pub out: PathBuf,
    /// ONNX opset, 11–13 (TensorRT 8.2 on JetPack 4.6 parses up to 13).
    #[arg(long, default_value_t = DEFAULT_OPSET)]
    pub opset: i64,
    /// Square input side (default: the training size, or the ONNX's own).
    #[arg(long)]
    pub imgsz: Option<u32>,
    /// A symbolic batch dimension (default: batch 1, what TensorRT 8.2 and DeepStream 6.0 want).
    #[arg(long)]
    pub dynamic_batch: bool,
    /// Also write an FP16-weights ONNX and check its mAP50 on the validation split.
    #[arg(long)]
    pub half: bool,
    /// Largest mAP50 drop of the FP16 twin, in percentage points.
    #[arg(long, default_value_t = DEFAULT_FP16_MAX_DROP, value_parser = trident_core::flags::non_negative)]
    pub fp16_max_drop: f64,
    /// Fail the export when a critical class's recall at the model's confidence floor on the
    /// verification images is below this: CLASS=RECALL, repeatable (e.g. lionfish=0.7). The
    /// figures go into the model card.
    #[arg(long, value_parser = class_recall, conflicts_with = "no_validate")]
    pub min_recall: Vec<(String, f64)>,
    /// Skip verification (numerical and task parity); the card records that it was skipped.
    #[arg(long)]
    pub no_validate: bool,
    /// Dataset for verification (default: the dataset the checkpoint was trained on, from
    /// metadata.json beside it).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value = "val")]
    pub split: Split,
    /// Images of the split used for verification (the first N by path; at least 1, or
    /// --no-validate).
    #[arg(long, default_value_t = DEFAULT_VERIFY_IMAGES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub verify_images: usize,
    /// Write graphs the TensorRT 8.2 lint rejects (the findings go into the card).
    #[arg(long)]
    pub allow_unsupported: bool,
    /// Class names for an ONNX without `names` metadata, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub names: Option<Vec<String>>,
    /// Device of the checkpoint's reference forward pass: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = DEFAULT_EXPORT_DEVICE)]
    pub device: String,
    /// Also build a TensorRT engine from each FP32 ONNX (needs TensorRT here: the `tensorrt`
    /// feature or trtexec); engines are keyed by ONNX content, TensorRT version, GPU, precision
    /// and shape.
    #[arg(long)]
    pub engine: bool,
    /// Engine precision: fp16 or fp32.
    #[arg(long, default_value = "fp16")]
    pub precision: trident_tensorrt::Precision,
    /// Engine cache folder (default: <out>/engines).
    #[arg(long)]
    pub engine_cache: Option<PathBuf>,
    /// TensorRT builder workspace in MiB (sized for a 4 GB Nano by default).
    #[arg(long, default_value_t = DEFAULT_WORKSPACE_MIB)]
    pub workspace_mib: u64,
    #[command(flatten)]
    pub package: PackageArgs,
}

pub const DEFAULT_OPSET: i64 = 13;
pub const DEFAULT_FP16_MAX_DROP: f64 = 0.5;
pub const DEFAULT_VERIFY_IMAGES: usize = 200;
pub const DEFAULT_EXPORT_DEVICE: &str = "cpu";
pub const DEFAULT_WORKSPACE_MIB: u64 = 1024;

impl ExportArgs {
    /// `trident export --checkpoint … [--data D] --out OUT` with every other option at its
    /// default: what a package build runs for the checkpoints its release config names (no
    /// command line is parsed again).
    pub fn for_checkpoints(checkpoints: Vec<PathBuf>, data: Option<PathBuf>, out: PathBuf) -> Self {
        ExportArgs {
            checkpoint: checkpoints,
            onnx: Vec::new(),
            out,
            opset: DEFAULT_OPSET,
            imgsz: None,
            dynamic_batch: false,
            half: false,
            fp16_max_drop: DEFAULT_FP16_MAX_DROP,
            min_recall: Vec::new(),
            no_validate: false,
            data,
            split: Split::Val,
            verify_images: DEFAULT_VERIFY_IMAGES,
            allow_unsupported: false,
            names: None,
            device: DEFAULT_EXPORT_DEVICE.into(),
            engine: false,
            precision: trident_tensorrt::Precision::Fp16,
            engine_cache: None,
            workspace_mib: DEFAULT_WORKSPACE_MIB,
            package: PackageArgs::default(),
        }
    }
}

/// `export --package`: the signed deployment package (release CI); an alias of `trident package
/// build`, so the export-only options conflict with it rather than being ignored.
#[derive(Debug, Default, Args)]
pub struct PackageArgs {
    /// Build the deployment package described by --config into --out instead of exporting (the
    /// same as `trident package build`): `<name>-<version>-<target>.tar.zst` and its minisign
    /// signature `.minisig`.
    #[arg(
        long = "package",
        requires = "config",
        conflicts_with_all = [
            "checkpoint", "onnx", "opset", "imgsz", "dynamic_batch", "half", "fp16_max_drop", "min_recall",
            "no_validate", "data", "split", "verify_images", "allow_unsupported", "names",
            "device", "engine", "precision", "engine_cache", "workspace_mib",
        ]
    )]
    pub package: bool,
    /// Release config (configs/release.yaml): models, calibration tables, profiles, runtime
    /// binary, systemd unit, device facts.
    #[arg(long, requires = "package")]
    pub config: Option<PathBuf>,
    /// Minisign secret key file (default: the key text in $TRIDENT_SIGN_KEY). An encrypted
    /// key's password comes from $TRIDENT_SIGN_KEY_PASSWORD. Neither is ever printed.
    #[arg(long, requires = "package")]
    pub sign_key: Option<PathBuf>,
    /// Build an unsigned package (units refuse it unless verified with --allow-unsigned).
    #[arg(long, requires = "package", conflicts_with = "sign_key")]
    pub unsigned: bool,
    /// Exported models folder instead of the config's models.dir.
    #[arg(long = "models", requires = "package")]
    pub models: Option<PathBuf>,
    /// Calibration tables instead of the config's.
    #[arg(long = "calibration", requires = "package")]
    pub calibration: Option<PathBuf>,
    /// Runtime binary instead of the config's (aarch64, from `cargo xtask cross`).
    #[arg(long = "binary", requires = "package")]
    pub binary: Option<PathBuf>,
    /// Package version instead of the config's (default: this trident's version).
    #[arg(long = "release-version", requires = "package")]
    pub release_version: Option<String>,
}

/// `trident package build`: the deployment package a release config describes.
#[derive(Debug, Args)]
pub struct PackageBuildArgs {
    /// Release config (configs/release.yaml): models, calibration tables, profiles, runtime
    /// binary, systemd unit, device facts.
    #[arg(long)]
    pub config: PathBuf,
    /// Output folder for the archive and its signature.
    #[arg(long, default_value = "dist")]
    pub out: PathBuf,
    /// Minisign secret key file (default: the key text in $TRIDENT_SIGN_KEY). An encrypted
    /// key's password comes from $TRIDENT_SIGN_KEY_PASSWORD. Neither is ever printed.
    #[arg(long)]
    pub sign_key: Option<PathBuf>,
    /// Build an unsigned package (units refuse it unless verified with --allow-unsigned).
    #[arg(long, conflicts_with = "sign_key")]
    pub unsigned: bool,
    /// Exported models folder instead of the config's models.dir.
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Calibration tables instead of the config's.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Runtime binary instead of the config's (aarch64, from `cargo xtask cross`).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Package version instead of the config's (default: this trident's version).
    #[arg(long)]
    pub release_version: Option<String>,
}

impl PackageBuildArgs {
    /// The same build asked through `trident export --package … --out OUT`.
    pub fn from_export(a: &ExportArgs) -> Option<Self> {
        let p = &a.package;
        Some(PackageBuildArgs {
            config: p.config.clone()?,
            out: a.out.clone(),
            sign_key: p.sign_key.clone(),
            unsigned: p.unsigned,
            models: p.models.clone(),
            calibration: p.calibration.clone(),
            binary: p.binary.clone(),
            release_version: p.release_version.clone(),
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum PackageCommand {
    /// Build the signed deployment package a release config describes (release CI):
    /// `<name>-<version>-<target>.tar.zst` and its minisign signature `.minisig`.
    Build(PackageBuildArgs),
    /// Check a package on this host: signature, manifest schema, every file's sha256, the
    /// runtime binary (and a device's facts with --device-root).
    Verify(VerifyPackageArgs),
    /// Create a minisign key pair for signing packages (trident.key, trident.pub).
    Keygen(KeygenArgs),
    /// Wrap a signed package in a Mender artifact (format 3, payload type `trident`) for fleets
    /// updated through a Mender server: `<package stem>.mender`.
    Mender(MenderArgs),
}

#[derive(Debug, Args)]
pub struct MenderArgs {
    /// The signed package (`*.tar.zst`, its `.minisig` beside it).
    pub package: PathBuf,
    /// Mender device type that may install it (the unit's /var/lib/mender/device_type); repeat
    /// for several.
    #[arg(long = "device-type", required = true, value_name = "TYPE")]
    pub device_types: Vec<String>,
    /// Output folder.
    #[arg(long, default_value = "dist")]
    pub out: PathBuf,
    /// Check the package's signature with this minisign public key (file or base64 line) first.
    #[arg(long)]
    pub pubkey: Option<String>,
    /// Artifact name (default: `<package name>-<version>`).
    #[arg(long)]
    pub artifact_name: Option<String>,
    /// Let units install it over a newer release (a deliberate downgrade from the server).
    #[arg(long)]
    pub allow_downgrade: bool,
}

#[derive(Debug, Args)]
pub struct VerifyPackageArgs {
    /// The package (`*.tar.zst`); its signature is `<package>.minisig` unless --signature.
    pub package: PathBuf,
    /// Minisign public key file (or the key's base64 line).
    #[arg(long)]
    pub pubkey: Option<String>,
    /// Detached signature (default: `<package>.minisig`).
    #[arg(long)]
    pub signature: Option<PathBuf>,
    /// Accept a package without a signature (or without --pubkey); every sha256 is still checked.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Check compatibility with the system under this root (a Nano's mounted root file system:
    /// /etc/nv_tegra_release, the dpkg database).
    #[arg(long)]
    pub device_root: Option<PathBuf>,
    /// Also unpack the verified package into this new folder (atomically).
    #[arg(long)]
    pub extract: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Folder for trident.key (0600) and trident.pub; existing keys are never overwritten.
    #[arg(long)]
    pub out: PathBuf,
    /// Write the secret key without a password (throwaway keys, tests). Otherwise the password
    /// comes from $TRIDENT_SIGN_KEY_PASSWORD.
    #[arg(long)]
    pub unencrypted: bool,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// A folder of exported models with their cards (`trident export --out`).
    #[arg(long)]
    pub models: PathBuf,
    /// dataset.yaml of the validation data; its class names must be the models'.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "val")]
    pub split: Split,
    /// Output folder: calibration.yaml, report.md, metrics.json and plots.
    #[arg(long)]
    pub out: PathBuf,
    /// Calibration settings (YAML, see configs/calibrate.yaml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Inference backends, tried in order (tensorrt, onnxruntime, tract).
    #[arg(long, value_delimiter = ',', default_value = "onnxruntime,tract")]
    pub backend: Vec<trident_infer::BackendKind>,
    /// Use only the first N images of the split (by path).
    #[arg(long)]
    pub max_images: Option<usize>,
    /// Replace a non-empty output folder.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct FuseArgs {
    /// Prediction files (the format `trident predict` writes), one per model, in weight order.
    #[arg(required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = FuseMethod::Wbf)]
    pub method: FuseMethod,
    /// IoU threshold (default: 0.55 for WBF, 0.5 for NMS, as ensemble-boxes).
    #[arg(long)]
    pub iou: Option<f64>,
    /// WBF: drop boxes scoring below this before fusion.
    #[arg(long, default_value_t = 0.0)]
    pub skip: f64,
    /// One weight per input file, comma-separated (default: all 1).
    #[arg(long, value_delimiter = ',')]
    pub weights: Option<Vec<f64>>,
    /// WBF score of a fused box: avg, max, box_and_model_avg or absent_model_aware_avg.
    #[arg(long, default_value = "avg")]
    pub conf_type: trident_core::calibration::ConfType,
    /// Prediction file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FuseMethod {
    Wbf,
    Nms,
}

impl FuseMethod {
    /// The name on the command line (`wbf`, `nms`).
    pub fn name(self) -> &'static str {
        match self {
            FuseMethod::Wbf => "wbf",
            FuseMethod::Nms => "nms",
        }
    }
}

/// `CLASS=RECALL` with a recall in [0, 1].
fn class_recall(s: &str) -> Result<(String, f64), String> {
    let (class, value) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("expected CLASS=RECALL (e.g. lionfish=0.7), got `{s}`"))?;
    let recall: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    if class.trim().is_empty() || !(0.0..=1.0).contains(&recall) {
        return Err(format!(
            "expected CLASS=RECALL with a recall in [0, 1], got `{s}`"
        ));
    }
    Ok((class.trim().to_string(), recall))
}
