//! What the workspace benchmarks share: the three variants as the exporter writes them.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor, nn};
use trident_core::checkpoint::CheckpointMeta;
use trident_core::model_spec::ModelSpec;
use trident_exporter::export::{ExportOptions, from_checkpoint};
use trident_trainer::checkpoint::{named, save};
use trident_trainer::model::Detector;

pub const VARIANTS: [&str; 3] = ["high_recall", "balanced", "high_precision"];
pub const CLASSES: [&str; 3] = ["lionfish", "urchin", "abalone"];

/// The three variants of `preset` at `side` px with random weights (seeds 1–3; latency does not
/// depend on the values), exported into `dir/models` with their cards. Returns that folder.
///
/// With `spread_scores`, the class-score convolutions are rescaled: as initialised for training
/// every anchor scores about the prior (0.001–0.02), so nothing would be detected; rescaled,
/// each level's class logits spread as N(−6, 4²) over a random input, which leaves a few
/// anchors per frame clearly above the rest — work for NMS and fusion, and detections for a
/// reference to agree on. Latency is the same either way.
pub fn random_models(dir: &Path, preset: &str, side: u32, spread_scores: bool) -> PathBuf {
    let out = dir.join("models");
    for (i, v) in VARIANTS.iter().enumerate() {
        tch::manual_seed(i as i64 + 1);
        let names = CLASSES.iter().map(|c| c.to_string()).collect();
        let spec = ModelSpec::preset(preset, names, side).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Detector::new(&vs.root(), &spec);
        if spread_scores {
            spread(&vs, &model, &spec, side);
        }
        let meta = CheckpointMeta {
            spec,
            variant: Some(v.to_string()),
            conf_floor: 0.25,
            epoch: 0,
            metrics: None,
            training: None,
        };
        let ck = dir.join(format!("{v}.safetensors"));
        save(&ck, &named("", &vs.variables()), &meta).unwrap();
        from_checkpoint(&ck, &ExportOptions::default())
            .unwrap()
            .write(&out)
            .unwrap();
    }
    out
}

/// Rescales each level's class-score convolution so that its logits over a random input have
/// mean −6 and standard deviation 4 (a real scene spreads them less than noise does).
fn spread(vs: &nn::VarStore, model: &Detector, spec: &ModelSpec, side: u32) {
    let x = Tensor::rand(
        [1, 3, i64::from(side), i64::from(side)],
        (Kind::Float, Device::Cpu),
    );
    let feats = tch::no_grad(|| model.forward_t(&x, false));
    let reg = 4 * i64::from(spec.reg_max);
    let nc = spec.num_classes() as i64;
    let vars = vs.variables();
    tch::no_grad(|| {
        for (level, f) in feats.iter().enumerate() {
            let logits = f.narrow(1, reg, nc);
            let std = logits.std(true).double_value(&[]).max(1e-6);
            let weight = vars
                .iter()
                .find(|(n, _)| n.ends_with(&format!(".cv3.{level}.2.weight")))
                .map(|(_, t)| t.shallow_clone())
                .expect("class-score convolution");
            let bias = vars
                .iter()
                .find(|(n, _)| n.ends_with(&format!(".cv3.{level}.2.bias")))
                .map(|(_, t)| t.shallow_clone())
                .expect("class-score bias");
            let _ = weight
                .shallow_clone()
                .f_mul_(&Tensor::from(4.0 / std))
                .unwrap();
            let _ = bias.shallow_clone().f_fill_(-6.0).unwrap();
        }
    });
}
