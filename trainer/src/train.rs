//! The training loop of one variant.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Guards libtorch's global random generator while a job seeds it and draws initial weights.
static TORCH_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

use indicatif::ProgressBar;
use serde::Serialize;
use tch::{Device, Kind, nn};
use trident_core::dataset::{DatasetConfig, Split};
use trident_core::model_spec::ModelSpec;
use trident_eval::Evaluation;

use crate::checkpoint::{self, Checkpoint, CheckpointMeta, TrainingState, named};
use crate::config::TrainSettings;
use crate::data::loader::{EpochLoader, EpochPlan};
use crate::data::{CachedSplit, dataset_hash};
use crate::error::{Error, Result};
use crate::loss::{LossParts, detection_loss};
use crate::model::Detector;
use crate::optim::{Ema, LossScaler, Optimizer, StepSettings, lr_factor};
use crate::report::{self, BUILD, EpochRecord, FloorMetrics};
use crate::validate::ValSet;

pub use crate::device::select_device;

/// One variant's training run.
pub struct TrainJob<'a> {
    pub variant: String,
    pub settings: TrainSettings,
    pub dataset: PathBuf,
    /// `runs/<name>/<variant>`.
    pub out_dir: PathBuf,
    pub resume: bool,
    /// Start weights (fine-tuning): a trident checkpoint or a safetensors state dict, already
    /// resolved for this variant ([`crate::init::resolve`]). Ignored by a resume, which
    /// continues from its own `last`.
    pub weights: Option<PathBuf>,
    /// Replace an existing run in `out_dir`.
    pub exist_ok: bool,
    /// Fail on unreadable images or bad labels instead of skipping them.
    pub strict: bool,
    /// Set by Ctrl-C: stop after the current batch, keep the last completed epoch.
    pub stop: &'a AtomicBool,
    /// Makes a progress bar of the given length with a message (hidden when quiet).
    pub progress: &'a dyn Fn(u64, String) -> ProgressBar,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Completed,
    EarlyStopping,
    /// The validation mAP50 reached the settings' `target_map50`.
    TargetReached,
    TimeBudget,
    Interrupted,
}

/// What a finished (or stopped) run produced.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    pub variant: String,
    pub out_dir: PathBuf,
    pub best: PathBuf,
    pub last: PathBuf,
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_record: Option<EpochRecord>,
    /// Validation of the best checkpoint at its own confidence floor.
    pub at_floor: Option<FloorMetrics>,
    pub stop_reason: StopReason,
    pub wall_s: f64,
    pub peak_rss_mib: Option<f64>,
    pub device: String,
    /// What `--weights` loaded, when given.
    pub start: Option<crate::init::WeightsReport>,
}

struct Run<'a> {
    job: &'a TrainJob<'a>,
    s: &'a TrainSettings,
    spec: ModelSpec,
    device: Device,
    vs: nn::VarStore,
    model: Detector,
    ema_vs: nn::VarStore,
    ema_model: Detector,
    opt: Optimizer,
    scaler: LossScaler,
    ema: Ema,
    history: Vec<EpochRecord>,
    /// What `--weights` loaded (none when training from scratch or resuming).
    start: Option<crate::init::WeightsReport>,
    /// Class ids of the critical species, and each train image's draws per epoch.
    critical: Vec<usize>,
    repeat: Option<Arc<Vec<f64>>>,
    state: TrainingState,
}

pub fn train(job: &TrainJob<'_>) -> Result<TrainOutcome> {
    let started = Instant::now();
    let s = &job.settings;
    let device = select_device(&s.device)?;
    let threads = if s.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        s.threads
    };
    tch::set_num_threads(threads as i32);

    let ds = DatasetConfig::load(&job.dataset)?;
    if !ds.has_split(Split::Val) {
        return Err(Error::Dataset(format!(
            "{}: no `val` split; training validates every epoch (run `trident data split` first)",
            ds.yaml_path.display()
        )));
    }
    let spec = ModelSpec::preset(&s.model, ds.names.clone(), s.imgsz)?;
    let critical = critical_classes(s, &ds.names, &job.variant)?;
    prepare_out_dir(job)?;

    let pb = (job.progress)(0, format!("{} cache train", job.variant));
    let train_data = Arc::new(CachedSplit::load(
        &ds,
        Split::Train,
        Some(s.imgsz),
        job.strict,
        &pb,
    )?);
    pb.finish_and_clear();
    let repeat = oversampling(&train_data, &critical, s.oversample);
    if let Some(r) = &repeat {
        let with = r.iter().filter(|f| **f > 1.0).count();
        tracing::info!(
            "{}: {with} train images hold a critical species ({}), drawn {}× per epoch: {} draws per epoch for {} images",
            job.variant,
            s.critical.join(", "),
            s.oversample,
            crate::data::loader::epoch_len(Some(r), r.len()),
            r.len()
        );
    }
    let pb = (job.progress)(0, format!("{} cache val", job.variant));
    let val = ValSet::load(&ds, Split::Val, s.imgsz, job.strict, &pb)?;
    pb.finish_and_clear();
    tracing::info!(
        "{}: {} train images ({} background, {} objects, {} skipped), {} val images, {} classes, model {} ({} parameters), device {device:?}, {threads} threads",
        job.variant,
        train_data.samples.len(),
        train_data.background,
        train_data.instances,
        train_data.skipped.len(),
        val.len(),
        spec.num_classes(),
        s.model,
        spec.parameter_count()
    );

    // libtorch's generator is process-global: seeding and drawing the initial weights happen
    // under one lock, so concurrent jobs in one process (tests, embedders) get the weights their
    // seed names rather than whatever another job's draws left.
    let (vs, model, mut ema_vs, ema_model) = {
        let _init = TORCH_INIT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tch::manual_seed(s.seed as i64);
        let vs = nn::VarStore::new(device);
        let model = Detector::new(&vs.root(), &spec);
        let ema_vs = nn::VarStore::new(device);
        let ema_model = Detector::new(&ema_vs.root(), &spec);
        (vs, model, ema_vs, ema_model)
    };
    ema_vs.freeze();
    let start = match &job.weights {
        Some(w) if !job.resume => {
            let report = crate::init::load(w, &vs.variables(), &spec)?;
            Some(report)
        }
        _ => None,
    };
    let frozen = crate::init::freeze(&vs.variables(), s.freeze);
    let start = start.map(|mut r| {
        r.frozen_layers = s.freeze;
        r.frozen_tensors = frozen;
        r
    });
    if let Some(r) = &start {
        tracing::info!("{}: {}", job.variant, r.summary());
        for (name, why) in &r.reinitialised {
            tracing::debug!("{}: {name} re-initialised: {why}", job.variant);
        }
        let text = serde_json::to_string_pretty(r).expect("the report serialises");
        trident_core::fsutil::write_atomic(&job.out_dir.join("weights.json"), text.as_bytes())?;
    } else if frozen > 0 {
        tracing::info!(
            "{}: first {} layers frozen ({frozen} tensors)",
            job.variant,
            s.freeze
        );
    }
    let trainable: std::collections::HashMap<String, tch::Tensor> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    let opt = Optimizer::new(s.optimizer, &trainable, s.weight_decay);
    let ema = Ema::new(&vs.variables(), &ema_vs.variables());
    let config_json = serde_json::to_value(s).expect("settings serialise");
    let mut run = Run {
        job,
        s,
        spec,
        device,
        vs,
        model,
        ema_vs,
        ema_model,
        opt,
        scaler: LossScaler::new(device.is_cuda()),
        ema,
        history: Vec::new(),
        start,
        critical,
        repeat,
        state: TrainingState {
            epoch: 0,
            step: 0,
            ema_updates: 0,
            best_fitness: f64::NEG_INFINITY,
            best_epoch: 0,
            planned_epochs: s.epochs,
            elapsed_s: 0.0,
            config: config_json,
        },
    };
    if job.resume {
        run.resume()?;
    }
    let (stop_reason, mut best_eval) = run.epochs(&train_data, &val)?;
    let best_path = job.out_dir.join("best.safetensors");
    if best_eval.is_none() && best_path.exists() {
        // The best epoch predates this session (a resume): evaluate it once for the report.
        Checkpoint::open(&best_path)?.restore("", &run.ema_vs.variables())?;
        best_eval = Some(
            val.evaluate(&run.ema_model, device, s.batch * 2, &run.spec.names)?
                .0,
        );
    }

    let best = job.out_dir.join("best.safetensors");
    let last = job.out_dir.join("last.safetensors");
    let at_floor = best_eval
        .as_ref()
        .map(|ev| report::floor_metrics(ev, s.conf_floor));
    let best_record = run
        .history
        .iter()
        .find(|r| r.epoch == run.state.best_epoch)
        .cloned();
    let outcome = TrainOutcome {
        variant: job.variant.clone(),
        out_dir: job.out_dir.clone(),
        best,
        last,
        epochs: run.state.epoch,
        best_epoch: run.state.best_epoch,
        best_record,
        at_floor,
        stop_reason,
        wall_s: started.elapsed().as_secs_f64(),
        peak_rss_mib: report::peak_rss_mib(),
        device: format!("{device:?}"),
        start: run.start.clone(),
    };
    let hash = dataset_hash(&ds, &[Split::Train, Split::Val])?;
    write_metadata(
        &run,
        &outcome,
        &ds,
        &hash,
        &train_data,
        &val,
        threads,
        best_eval.as_ref(),
    )?;
    Ok(outcome)
}

/// Epochs at full learning rate, after the warm-up, before a model of this size on data like the
/// demo's detects much: runs of 3–4 epochs detected nothing (mAP50 < 0.1), runs of 8 reached
/// 0.95. A time budget that plans fewer is almost certainly a mistake, so it is said out loud.
pub const MIN_USEFUL_EPOCHS: usize = 5;

/// The warning for a `--time` budget that fits fewer epochs than the warm-up plus
/// [`MIN_USEFUL_EPOCHS`], or `None`. Ultralytics' `time=` fits the schedule silently, and a slow
/// or busy machine then gets a model that detects nothing; this says so once, after the first
/// epoch has measured the pace.
pub fn short_budget_warning(
    variant: &str,
    s: &TrainSettings,
    planned: usize,
    per_epoch_s: f64,
) -> Option<String> {
    let minutes = s.time?;
    let warmup = s.warmup_epochs.ceil() as usize;
    let needed = warmup + MIN_USEFUL_EPOCHS;
    (planned < needed).then(|| {
        format!(
            "{variant}: the time budget of {minutes} min fits only {planned} epoch(s) at {per_epoch_s:.0} s each, \
             but the warm-up takes {warmup} and a model needs about {MIN_USEFUL_EPOCHS} more to detect anything: \
             this run will likely end with a model that detects little or nothing. \
             Give it at least {:.1} min, or train by --epochs (with `target_map50` to stop early)",
            per_epoch_s * needed as f64 / 60.0
        )
    })
}

/// Settings that differ between a run's recorded config and the current one, other than those a
/// resume may change.
fn changed_settings(recorded: &serde_json::Value, current: &serde_json::Value) -> Vec<String> {
    const MAY_CHANGE: [&str; 5] = ["epochs", "time", "target_map50", "threads", "device"];
    let (Some(a), Some(b)) = (recorded.as_object(), current.as_object()) else {
        return vec!["config".into()];
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !MAY_CHANGE.contains(&k.as_str()) && a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k} {} → {}",
                a.get(k).unwrap_or(&serde_json::Value::Null),
                b.get(k).unwrap_or(&serde_json::Value::Null)
            )
        })
        .collect()
}

/// A NaN or infinite loss ends training (the last good checkpoint stays on disk).
fn check_finite(parts: &LossParts, epoch: usize, batch: usize) -> Result<()> {
    if parts.total().is_finite() {
        return Ok(());
    }
    Err(Error::NonFiniteLoss {
        epoch,
        batch,
        value: parts.total(),
        box_loss: parts.box_loss,
        cls_loss: parts.cls_loss,
        dfl_loss: parts.dfl_loss,
    })
}

fn prepare_out_dir(job: &TrainJob<'_>) -> Result<()> {
    let last = job.out_dir.join("last.safetensors");
    if job.resume {
        if !last.exists() {
            return Err(Error::checkpoint(
                &last,
                "--resume: there is no last checkpoint to resume from",
            ));
        }
    } else if last.exists() && !job.exist_ok {
        return Err(Error::config(
            job.out_dir.display().to_string(),
            "already holds a training run; pass --resume to continue it, --exist-ok to replace it, or another --out",
        ));
    }
    std::fs::create_dir_all(&job.out_dir)
        .map_err(|e| trident_core::Error::io("cannot create", &job.out_dir, e))?;
    Ok(())
}

impl Run<'_> {
    fn resume(&mut self) -> Result<()> {
        let path = self.job.out_dir.join("last.safetensors");
        let ck = Checkpoint::open(&path)?;
        let Some(state) = ck.meta.training.clone() else {
            return Err(Error::checkpoint(
                &path,
                "has no training state (a `best` checkpoint cannot be resumed)",
            ));
        };
        if ck.meta.spec != self.spec {
            return Err(Error::checkpoint(
                &path,
                "was trained with another model spec (model preset, imgsz or classes differ); --resume needs the same settings",
            ));
        }
        let changed = changed_settings(&state.config, &self.state.config);
        if !changed.is_empty() {
            return Err(Error::checkpoint(
                &path,
                format!(
                    "--resume with settings other than the run's: {} (only epochs, time, target_map50, threads and device may change)",
                    changed.join(", ")
                ),
            ));
        }
        ck.restore("train.", &self.vs.variables())?;
        ck.restore("", &self.ema_vs.variables())?;
        ck.restore("train.optim.", &self.opt.state_map())?;
        self.opt.step = state.step;
        self.ema.updates = state.ema_updates;
        let mut state = state;
        state.config = self.state.config.clone();
        // Without a time budget `--epochs` may extend a run on resume; with one, the plan holds.
        if self.s.time.is_none() {
            state.planned_epochs = self.s.epochs;
        }
        self.state = state;
        let csv = self.job.out_dir.join("metrics.csv");
        if csv.exists() {
            self.history = report::read_metrics_csv(&csv)?;
            self.history.retain(|r| r.epoch <= self.state.epoch);
        }
        tracing::info!(
            "{}: resuming after epoch {} from {}",
            self.job.variant,
            self.state.epoch,
            path.display()
        );
        Ok(())
    }

    fn epochs(
        &mut self,
        data: &Arc<CachedSplit>,
        val: &ValSet,
    ) -> Result<(StopReason, Option<Evaluation>)> {
        let s = self.s;
        let session = Instant::now();
        let elapsed_before = self.state.elapsed_s;
        let budget_s = s.time.map(|m| m * 60.0);
        let draws = crate::data::loader::epoch_len(
            self.repeat.as_deref().map(Vec::as_slice),
            data.samples.len(),
        );
        let nb = draws.div_ceil(s.batch);
        let scales = s.multi_scale.sizes(s.imgsz);
        let warmup = (s.warmup_epochs * nb as f64).round() as u64;
        let mut best_eval = None;
        let mut epochs_this_session = 0usize;
        let names = self.spec.names.clone();
        while self.state.epoch < self.state.planned_epochs {
            let epoch = self.state.epoch;
            let epoch_start = Instant::now();
            let plan = EpochPlan {
                seed: s.seed,
                epoch: epoch as u64,
                batch: s.batch,
                size: s.imgsz,
                augmentation: s.augment.resolve().expect("validated"),
                mosaic: epoch + s.close_mosaic < self.state.planned_epochs,
                repeat: self.repeat.clone(),
            };
            let loader = EpochLoader::start(Arc::clone(data), plan);
            let pb = (self.job.progress)(
                nb as u64,
                format!(
                    "{} {}/{}",
                    self.job.variant,
                    epoch + 1,
                    self.state.planned_epochs
                ),
            );
            let mut sums = LossParts::default();
            let (mut seen, mut batches) = (0usize, 0usize);
            let (mut interrupted, mut time_up) = (false, false);
            let mut lr_now = 0.0;
            for (i, batch) in loader.enumerate() {
                let step = self.opt.step;
                let lf = lr_factor(epoch, self.state.planned_epochs, s.lrf, s.cos_lr);
                let target = s.lr0 * lf;
                let settings = if step < warmup {
                    let x = step as f64 / warmup as f64;
                    StepSettings {
                        lr: target * x,
                        lr_bias: s.warmup_bias_lr + (target - s.warmup_bias_lr) * x,
                        momentum: s.warmup_momentum + (s.momentum - s.warmup_momentum) * x,
                    }
                } else {
                    StepSettings {
                        lr: target,
                        lr_bias: target,
                        momentum: s.momentum,
                    }
                };
                lr_now = settings.lr;
                let (mut x, mut targets) = batch.to_device(self.device);
                if let Some(sizes) = &scales {
                    (x, targets) = crate::data::loader::multi_scale(
                        x, targets, s.imgsz, sizes, s.seed, epoch, i,
                    );
                }
                let amp = self.device.is_cuda();
                let (loss, parts) = tch::autocast(amp, || {
                    let feats = self.model.forward_t(&x, true);
                    let feats: Vec<_> = feats.iter().map(|f| f.to_kind(Kind::Float)).collect();
                    detection_loss(&feats, &targets, &self.spec)
                });
                if let Err(e) = check_finite(&parts, epoch + 1, i + 1) {
                    pb.abandon();
                    return Err(e);
                }
                self.opt.zero_grad();
                self.scaler.scale_loss(&loss).backward();
                if self.scaler.unscale(&mut self.opt) {
                    self.opt.clip_grad_norm(s.grad_clip);
                    self.opt.apply(settings);
                    self.ema.update();
                } else {
                    tracing::debug!(
                        "float16 gradient overflow: step skipped, loss scale now {}",
                        self.scaler.scale
                    );
                }
                batches += 1;
                seen += batch.len();
                sums.box_loss += parts.box_loss;
                sums.cls_loss += parts.cls_loss;
                sums.dfl_loss += parts.dfl_loss;
                let n = batches as f64;
                pb.set_message(format!(
                    "{} {}/{} box {:.3} cls {:.3} dfl {:.3} {:.1} img/s",
                    self.job.variant,
                    epoch + 1,
                    self.state.planned_epochs,
                    sums.box_loss / n,
                    sums.cls_loss / n,
                    sums.dfl_loss / n,
                    seen as f64 / epoch_start.elapsed().as_secs_f64()
                ));
                pb.inc(1);
                if self.job.stop.load(Ordering::Relaxed) {
                    interrupted = true;
                    break;
                }
                if budget_s.is_some_and(|b| elapsed_before + session.elapsed().as_secs_f64() > b) {
                    time_up = true; // validate and save what we have
                    break;
                }
            }
            pb.finish_and_clear();
            if interrupted {
                tracing::warn!(
                    "{}: interrupted in epoch {}; {} holds the last completed epoch ({}) and --resume continues from it",
                    self.job.variant,
                    epoch + 1,
                    self.job.out_dir.join("last.safetensors").display(),
                    self.state.epoch
                );
                return Ok((StopReason::Interrupted, best_eval));
            }
            let train_s = epoch_start.elapsed().as_secs_f64();
            let (ev, _) = val.evaluate(&self.ema_model, self.device, s.batch * 2, &names)?;
            let n = batches.max(1) as f64;
            epochs_this_session += 1;
            self.state.epoch = epoch + 1;
            self.state.step = self.opt.step;
            self.state.ema_updates = self.ema.updates;
            self.state.elapsed_s = elapsed_before + session.elapsed().as_secs_f64();
            let record = EpochRecord {
                epoch: epoch + 1,
                box_loss: sums.box_loss / n,
                cls_loss: sums.cls_loss / n,
                dfl_loss: sums.dfl_loss / n,
                precision: ev.precision,
                recall: ev.recall,
                map50: ev.map50,
                map50_95: ev.map50_95,
                lr: lr_now,
                images_per_s: seen as f64 / train_s,
                epoch_s: epoch_start.elapsed().as_secs_f64(),
                elapsed_s: self.state.elapsed_s,
                critical_recall: self
                    .critical
                    .iter()
                    .map(|&c| {
                        let r = ev.recall_at(c, f64::from(s.conf_floor)).unwrap_or(0.0);
                        (self.spec.names[c].clone(), r)
                    })
                    .collect(),
            };
            // While nothing is detected yet (fitness 0) the best epoch keeps moving, so patience
            // only counts from the first epoch that found something (as Ultralytics does).
            let improved = ev.map50_95 > self.state.best_fitness || self.state.best_fitness <= 0.0;
            if improved {
                self.state.best_fitness = ev.map50_95;
                self.state.best_epoch = epoch + 1;
            }
            tracing::info!(
                "{} epoch {}/{}: box {:.3} cls {:.3} dfl {:.3} | P {:.3} R {:.3} mAP50 {:.3} mAP50-95 {:.3}{} | {:.1} img/s, {:.1} s",
                self.job.variant,
                epoch + 1,
                self.state.planned_epochs,
                record.box_loss,
                record.cls_loss,
                record.dfl_loss,
                ev.precision,
                ev.recall,
                ev.map50,
                ev.map50_95,
                if improved { " (best)" } else { "" },
                record.images_per_s,
                record.epoch_s
            );
            self.history.push(record.clone());
            // Plan the schedule to the time budget from the measured epoch time (Ultralytics'
            // `time=`): validation included, so the last epoch ends inside the budget.
            let mut reason = time_up.then_some(StopReason::TimeBudget);
            if let Some(budget) = budget_s {
                let per_epoch = session.elapsed().as_secs_f64() / epochs_this_session as f64;
                let fits = ((budget - elapsed_before) / per_epoch).floor().max(0.0) as usize;
                let before = self.state.epoch - epochs_this_session;
                self.state.planned_epochs = (before + fits).max(self.state.epoch);
                if epochs_this_session == 1
                    && let Some(w) = short_budget_warning(
                        &self.job.variant,
                        s,
                        self.state.planned_epochs,
                        per_epoch,
                    )
                {
                    tracing::warn!("{w}");
                }
                if self.state.epoch >= self.state.planned_epochs {
                    reason = Some(StopReason::TimeBudget);
                }
            }
            if s.target_map50.is_some_and(|t| ev.map50 >= t) {
                tracing::info!(
                    "{}: validation mAP50 {:.3} reached the target {:.3} in epoch {}",
                    self.job.variant,
                    ev.map50,
                    s.target_map50.unwrap_or_default(),
                    epoch + 1
                );
                reason = Some(StopReason::TargetReached);
            }
            if s.patience > 0 && self.state.epoch - self.state.best_epoch >= s.patience {
                reason = Some(StopReason::EarlyStopping);
            }
            self.save(improved, &ev)?;
            if improved {
                best_eval = Some(ev);
            }
            if let Some(r) = reason {
                return Ok((r, best_eval));
            }
        }
        Ok((StopReason::Completed, best_eval))
    }

    /// Writes the run's CSV and curves, then `best` (when improved), then `last`: a resume trims a
    /// CSV that is ahead of `last`, so nothing is lost whichever write a crash interrupts.
    fn save(&self, improved: bool, ev: &Evaluation) -> Result<()> {
        let dir = &self.job.out_dir;
        let mut metrics = serde_json::json!({
            "map50": ev.map50, "map50_95": ev.map50_95, "precision": ev.precision,
            "recall": ev.recall, "best_f1_conf": ev.best_f1_conf,
        });
        // The critical species' recall at the floor travels with the checkpoint into the model
        // card (`trident export` copies these metrics).
        if !self.critical.is_empty() {
            let recall: serde_json::Map<String, serde_json::Value> = self
                .critical
                .iter()
                .map(|&c| {
                    (
                        self.spec.names[c].clone(),
                        serde_json::json!(ev.recall_at(c, f64::from(self.s.conf_floor))),
                    )
                })
                .collect();
            metrics["critical_recall_at_floor"] = serde_json::Value::Object(recall);
        }
        let mut meta = CheckpointMeta {
            spec: self.spec.clone(),
            variant: Some(self.job.variant.clone()),
            conf_floor: self.s.conf_floor,
            epoch: self.state.epoch,
            metrics: Some(metrics),
            training: None,
        };
        self.spec.save(&dir.join("model.yaml"))?;
        report::write_metrics_csv(&dir.join("metrics.csv"), &self.history)?;
        report::write_curves(&dir.join("curves.png"), &self.history)?;
        let deployable = named("", &self.ema_vs.variables());
        if improved {
            checkpoint::save(&dir.join("best.safetensors"), &deployable, &meta)?;
        }
        meta.training = Some(self.state.clone());
        let mut all = deployable;
        all.extend(named("train.", &self.vs.variables()));
        all.extend(
            self.opt
                .state()
                .into_iter()
                .map(|(k, v)| (format!("train.optim.{k}"), v)),
        );
        checkpoint::save(&dir.join("last.safetensors"), &all, &meta)?;
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn write_metadata(
    run: &Run<'_>,
    outcome: &TrainOutcome,
    ds: &DatasetConfig,
    hash: &str,
    train: &CachedSplit,
    val: &ValSet,
    threads: usize,
    best_eval: Option<&Evaluation>,
) -> Result<()> {
    let doc = serde_json::json!({
        "variant": outcome.variant,
        "trident_version": BUILD.trident,
        "git_revision": BUILD.git_revision,
        "tch_version": BUILD.tch,
        "libtorch_version": BUILD.libtorch,
        "device": outcome.device,
        "threads": threads,
        "seed": run.s.seed,
        "config": run.s,
        "spec": run.spec,
        "parameters": run.spec.parameter_count(),
        "dataset": {
            "yaml": absolute(&ds.yaml_path),
            "sha256": hash,
            "names": ds.names,
            "train_images": train.samples.len(),
            "train_skipped": train.skipped,
            "val_images": val.len(),
            "val_skipped": val.skipped,
        },
        "epochs_completed": outcome.epochs,
        "best_epoch": outcome.best_epoch,
        "stop_reason": outcome.stop_reason,
        "wall_time_s": outcome.wall_s,
        "training_time_s": run.state.elapsed_s,
        "peak_rss_mib": outcome.peak_rss_mib,
        "final_metrics": outcome.best_record,
        "at_conf_floor": outcome.at_floor,
        "per_class": best_eval.map(|e| &e.per_class),
        "start_weights": run.start,
        "critical": critical_report(run, best_eval),
    });
    let text = serde_json::to_string_pretty(&doc).expect("json values serialise");
    trident_core::fsutil::write_atomic(&outcome.out_dir.join("metadata.json"), text.as_bytes())?;
    Ok(())
}

/// The settings' critical species as class ids; a name the dataset does not have is an error.
fn critical_classes(s: &TrainSettings, names: &[String], variant: &str) -> Result<Vec<usize>> {
    s.critical
        .iter()
        .map(|c| {
            names.iter().position(|n| n == c).ok_or_else(|| {
                Error::config(
                    format!("variant `{variant}`: critical"),
                    format!("`{c}` is not a class of the dataset ({})", names.join(", ")),
                )
            })
        })
        .collect()
}

/// Each train image's draws per epoch: `oversample` for images holding a critical species,
/// 1 otherwise; `None` when nothing is oversampled.
fn oversampling(data: &CachedSplit, critical: &[usize], oversample: f64) -> Option<Arc<Vec<f64>>> {
    if critical.is_empty() || oversample == 1.0 {
        return None;
    }
    Some(Arc::new(
        data.samples
            .iter()
            .map(|s| {
                if s.boxes.iter().any(|(c, _)| critical.contains(c)) {
                    oversample
                } else {
                    1.0
                }
            })
            .collect(),
    ))
}

/// The critical species' recall at the variant's confidence floor on the best epoch's
/// validation, with the oversampling that trained it.
fn critical_report(run: &Run<'_>, best_eval: Option<&Evaluation>) -> serde_json::Value {
    if run.critical.is_empty() {
        return serde_json::Value::Null;
    }
    let recall: Vec<serde_json::Value> = run
        .critical
        .iter()
        .map(|&c| {
            serde_json::json!({
                "class": run.spec.names[c],
                "recall_at_conf_floor": best_eval.and_then(|e| e.recall_at(c, f64::from(run.s.conf_floor))),
            })
        })
        .collect();
    serde_json::json!({
        "classes": run.s.critical,
        "oversample": run.s.oversample,
        "train_images_oversampled": run.repeat.as_ref().map_or(0, |r| r.iter().filter(|f| **f > 1.0).count()),
        "recall": recall,
    })
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_accepts_new_epochs_but_not_new_learning_rates() {
        let a = serde_json::to_value(TrainSettings::default()).unwrap();
        let more = serde_json::to_value(TrainSettings {
            epochs: 90,
            threads: 1,
            ..TrainSettings::default()
        })
        .unwrap();
        assert!(changed_settings(&a, &more).is_empty());
        let hotter = serde_json::to_value(TrainSettings {
            lr0: 0.01,
            ..TrainSettings::default()
        })
        .unwrap();
        assert_eq!(
            changed_settings(&a, &hotter),
            vec!["lr0 0.002 → 0.01".to_string()]
        );
    }

    #[test]
    fn a_non_finite_loss_is_an_error_naming_where_and_what() {
        let ok = LossParts {
            box_loss: 1.0,
            cls_loss: 0.5,
            dfl_loss: 0.2,
        };
        assert!(check_finite(&ok, 1, 1).is_ok());
        let bad = LossParts {
            cls_loss: f64::NAN,
            ..ok
        };
        let e = check_finite(&bad, 4, 17).unwrap_err().to_string();
        assert!(
            e.contains("epoch 4, batch 17") && e.contains("last good checkpoint"),
            "{e}"
        );
    }
}
