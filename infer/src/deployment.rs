//! What a unit runs — the models and the calibration tables fitted for them — from a models
//! folder (`trident export --out`, optionally with `calibration.yaml` beside the models) or from
//! an unpacked deployment package (every file checked against its manifest first). The device
//! (`trident-edge run`) and the host (`trident predict`) resolve their inputs here, so both run
//! the same models with the same tables.

use std::path::{Path, PathBuf};

use trident_core::calibration::{self, CalibrationTables};
use trident_core::package::{Manifest, PackageDir};
use trident_core::profile::Profile;

use crate::backend::{BackendKind, BackendOptions};
use crate::ensemble::fusion::Fusion;
use crate::ensemble::runner::Ensemble;
use crate::error::{Error, Result};
use crate::models::ModelSet;

/// Where the models come from.
#[derive(Clone, Copy, Debug)]
pub enum ModelsFrom<'a> {
    /// A folder of ONNX models with their cards.
    Dir(&'a Path),
    /// An unpacked deployment package (its `manifest.json` is verified).
    Package(&'a Path),
}

/// Which calibration tables to apply.
#[derive(Clone, Copy, Debug, Default)]
pub enum TablesChoice<'a> {
    /// The package's tables, or `calibration.yaml` in the models folder when there is one.
    #[default]
    Auto,
    /// This file.
    File(&'a Path),
    /// None: raw scores, the configured fusion, no thresholds, no TTA.
    Off,
}

/// How [`Deployment::ensemble`] starts the models.
#[derive(Clone, Debug)]
pub struct EnsembleStart<'a> {
    /// Backends to try, in order.
    pub order: &'a [BackendKind],
    /// Where the order came from (`--backend`, the profile's `backends`), for the fallback
    /// warnings.
    pub order_from: &'a str,
    pub backend: BackendOptions,
    /// The fusion until calibration tables replace it.
    pub fusion: Fusion,
}

/// The resolved inputs of an ensemble.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub set: ModelSet,
    pub tables: Option<(CalibrationTables, PathBuf)>,
    /// The manifest when the models came from a package.
    pub manifest: Option<Manifest>,
}

impl Deployment {
    /// Loads the models and the tables; tables fitted for other models or classes are refused
    /// here, before anything runs.
    pub fn load(from: ModelsFrom<'_>, tables: TablesChoice<'_>) -> Result<Self> {
        let (set, auto_tables, manifest) = match from {
            ModelsFrom::Dir(dir) => {
                let set = ModelSet::load_dir(dir)?;
                let beside = dir.join(calibration::FILE_NAME);
                (set, beside.is_file().then_some(beside), None)
            }
            ModelsFrom::Package(root) => {
                let package = PackageDir::open(root)?;
                let set = ModelSet::load_dir(&package.models_dir())?;
                check_package_models(&package.manifest, &set, root)?;
                (set, package.calibration(), Some(package.manifest))
            }
        };
        let path = match tables {
            TablesChoice::Auto => auto_tables,
            TablesChoice::File(p) => Some(p.to_path_buf()),
            TablesChoice::Off => None,
        };
        let tables = match path {
            Some(p) => {
                let t = CalibrationTables::load(&p)?;
                let origin = p.display().to_string();
                t.check_models(
                    &origin,
                    &set.names,
                    set.models
                        .iter()
                        .map(|m| (m.name(), m.card.sha256.as_str())),
                )?;
                Some((t, p))
            }
            None => None,
        };
        Ok(Deployment {
            set,
            tables,
            manifest,
        })
    }

    /// The ensemble of this deployment, the one way every command starts it (`trident-edge run`
    /// and `bench`, `trident predict`): checks that every ladder level of `profile` runs loaded
    /// models, loads each model on the first backend of `start.order` that works (warning for each
    /// model that ends on a later one), applies the calibration tables and fits the profile's TTA
    /// levels to what the tables measured.
    pub fn ensemble(
        &self,
        start: &EnsembleStart<'_>,
        profile: Option<(&mut Profile, &Path)>,
    ) -> Result<Ensemble> {
        let names: Vec<&str> = self.set.models.iter().map(|m| m.name()).collect();
        if let Some((p, path)) = &profile {
            p.check_models(path, &names)?;
        }
        let mut ensemble =
            Ensemble::load(&self.set, start.order, &start.backend, start.fusion.clone())?;
        for m in &ensemble.members {
            if let Some(why) = &m.fallback {
                tracing::warn!(
                    "{}: runs on {} ({}), not on {} as {} asks: {why}",
                    m.name,
                    m.backend,
                    m.precision,
                    start.order[0],
                    start.order_from
                );
            }
        }
        self.calibrate(&mut ensemble)?;
        // The tables know what their TTA views cost (measured when they were fitted); the
        // profile's figure is a guess for tables not yet seen.
        if let (Some(cost), Some((profile, _))) = (ensemble.tta_cost(), profile) {
            tracing::info!(
                "TTA levels cost ×{cost:.2} per frame (calibration tables; the profile said ×{:.2})",
                profile.estimates.tta_factor
            );
            let dropped = profile.fit_tta(cost, ensemble.has_tta());
            if !dropped.is_empty() {
                tracing::info!(
                    "the calibration tables keep no TTA view: ladder level(s) {} would repeat \
                     their plain twin, dropped",
                    dropped.join(", ")
                );
            }
        }
        Ok(ensemble)
    }

    /// Applies the tables (if any) to an ensemble loaded from [`Self::set`].
    pub fn calibrate(&self, ensemble: &mut Ensemble) -> Result<()> {
        if let Some((t, p)) = &self.tables {
            ensemble.calibrate(t, &p.display().to_string())?;
            tracing::info!(
                "calibration tables {}: {} TTA view(s), {} class threshold(s)",
                p.display(),
                t.tta.len(),
                t.thresholds.len()
            );
        }
        Ok(())
    }
}

/// The models folder must hold exactly the models the manifest lists, with its digests.
fn check_package_models(manifest: &Manifest, set: &ModelSet, root: &Path) -> Result<()> {
    for m in &set.models {
        let listed = manifest.models.iter().find(|p| p.variant == m.name());
        match listed {
            Some(p) if p.sha256.eq_ignore_ascii_case(&m.card.sha256) => {}
            Some(_) => {
                return Err(Error::Models(format!(
                    "{}: model `{}` is not the one its manifest lists (sha256 differs)",
                    root.display(),
                    m.name()
                )));
            }
            None => {
                return Err(Error::Models(format!(
                    "{}: model `{}` is in models/ but not in the manifest",
                    root.display(),
                    m.name()
                )));
            }
        }
    }
    if let Some(missing) = manifest
        .models
        .iter()
        .find(|p| set.get(&p.variant).is_none())
    {
        return Err(Error::Models(format!(
            "{}: the manifest lists model `{}`, which models/ lacks (or has no FP32 card for)",
            root.display(),
            missing.variant
        )));
    }
    Ok(())
}
