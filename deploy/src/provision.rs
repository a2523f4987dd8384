//! `trident deploy provision`: first-time setup of a freshly flashed unit.
//!
//! The package given is verified here first (signature with the fleet's trusted key, every
//! sha256); its runtime becomes the unit's verifier (`/opt/trident/bin/trident-edge`, which
//! checks every later package on the unit before anything is installed) and its systemd unit
//! is installed. The unit gets the `/opt/trident` layout (`releases/`, `current`, `data/`,
//! `engines/`, `incoming/`), the `trident` service user (in `video`, for the camera and GPU),
//! the trusted public key, the inventory's nvpmodel power mode and the deployment profile that
//! goes with it (`/opt/trident/unit.env`), and Mender's Update Module for trident artifacts
//! (`/usr/share/mender/modules/v3/trident`, [`crate::mender_module`]). Units whose facts do not
//! fit the package (architecture, JetPack, TensorRT, glibc) are refused before anything
//! changes on them.

use std::path::{Path, PathBuf};

use trident_package::signature::PublicKey;
use trident_package::verify::{VerifyOptions, verify_package};

use crate::error::{Error, Result};
use crate::inventory::Unit;
use crate::mender_module::ModuleSettings;
use crate::ssh::Ssh;
use crate::unit_facts::{self, UnitFacts};

/// What provisioning found and did.
#[derive(Clone, Debug)]
pub struct Provisioned {
    pub before: UnitFacts,
    pub after: UnitFacts,
    /// Facts that could not be read (not a Jetson, …): warnings, not refusals.
    pub warnings: Vec<String>,
    /// `trident-edge doctor` on the fresh unit (no release yet, so no backend verdict): the Jetson
    /// media elements present and the power sensor, in one line; `None` when it did not answer.
    pub doctor: Option<String>,
}

/// doctor with the verifier just installed: what the unit offers before any release.
const DOCTOR: &str = r#"set -eu
T="$1/opt/trident"
"$T/bin/trident-edge" doctor --root "$1/" --backend tract --engine-cache "$T/engines" --json 2>/dev/null || true
"#;

/// One line from doctor's JSON: the Jetson elements it found (or none) and the power sensor.
pub fn doctor_line(json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
    let jetson: Vec<&str> = v["elements"]
        .as_array()?
        .iter()
        .filter(|e| e["present"] == true)
        .filter_map(|e| e["element"].as_str())
        .filter(|e| e.starts_with("nv"))
        .collect();
    let sensor = v["power_sensor"].as_str().unwrap_or("?");
    let sensor = if sensor.starts_with("INA3221") {
        "INA3221"
    } else {
        "no power sensor"
    };
    Some(format!(
        "Jetson elements: {}; {sensor}",
        if jetson.is_empty() {
            "none".to_string()
        } else {
            jetson.join(", ")
        }
    ))
}

/// `$1` root, `$2` nvpmodel mode, `$3` trusted key text, `$4` systemd unit text, `$5` the
/// deployment profile matching the power mode (read by the unit's `ExecStart` from `unit.env`),
/// `$6` the start guard the unit file runs, `$7` the Mender Update Module, `$8` its settings.
const PROVISION: &str = r#"set -eu
R="$1"; T="$R/opt/trident"; M="$R/usr/share/mender/modules/v3"
mkdir -p "$T/releases" "$T/data" "$T/engines" "$T/incoming" "$T/bin" "$R/etc/systemd/system" "$M"
printf '%s\n' "$6" > "$T/bin/trident-guard.tmp"
chmod 755 "$T/bin/trident-guard.tmp"
mv -f "$T/bin/trident-guard.tmp" "$T/bin/trident-guard"
# Mender's Update Module for trident artifacts: harmless where Mender is not installed.
printf '%s\n' "$7" > "$M/trident.tmp"
chmod 755 "$M/trident.tmp"
mv -f "$M/trident.tmp" "$M/trident"
printf '%s' "$8" > "$T/update-module.env.tmp" && mv -f "$T/update-module.env.tmp" "$T/update-module.env"
if ! id trident >/dev/null 2>&1; then
  useradd --system --home-dir /opt/trident --no-create-home --shell /usr/sbin/nologin --groups video trident
fi
chown trident:trident "$T/data" "$T/engines"
printf '%s\n' "$3" > "$T/trusted.pub.tmp" && mv -f "$T/trusted.pub.tmp" "$T/trusted.pub"
S="$R/etc/systemd/system/trident-edge.service"
printf '%s' "$4" > "$S.tmp" && mv -f "$S.tmp" "$S"
printf 'TRIDENT_PROFILE=%s\n' "$5" > "$T/unit.env.tmp" && mv -f "$T/unit.env.tmp" "$T/unit.env"
systemctl daemon-reload
systemctl enable trident-edge
# nvpmodel prints warnings on stdout ("NVPM WARN: …") even when it succeeds; they go to
# stderr so the one line of stdout stays this script's result.
nvpmodel -m "$2" >&2
echo ok
"#;

/// A package made ready for provisioning, once for any number of units: verified with the
/// fleet's trusted key and unpacked (its runtime and systemd unit are what units get).
pub struct ProvisionKit {
    key_text: String,
    manifest: trident_core::package::Manifest,
    binary: PathBuf,
    service_text: String,
    module: ModuleSettings,
    _unpacked: tempfile::TempDir,
}

impl ProvisionKit {
    pub fn prepare(package: &Path, trusted_key: &Path) -> Result<Self> {
        let key = PublicKey::from_file(trusted_key)?;
        let key_text = std::fs::read_to_string(trusted_key).map_err(|e| Error::Io {
            action: "cannot read",
            path: trusted_key.to_path_buf(),
            source: e,
        })?;
        let scratch = tempfile::tempdir().map_err(|e| Error::Io {
            action: "cannot create a temporary folder in",
            path: std::env::temp_dir(),
            source: e,
        })?;
        let unpacked = scratch.path().join("package");
        let verified = verify_package(
            package,
            &VerifyOptions {
                public_key: Some(&key),
                ..Default::default()
            },
            Some(&unpacked),
        )?;
        let binary = verified
            .manifest
            .binary
            .as_ref()
            .map(|b| unpacked.join(&b.file))
            .ok_or_else(|| {
                Error::inventory(
                    package.display().to_string(),
                    "the package carries no runtime binary to verify with",
                )
            })?;
        let service = unpacked.join("systemd/trident-edge.service");
        let service_text = std::fs::read_to_string(&service).map_err(|e| Error::Io {
            action: "cannot read",
            path: service.clone(),
            source: e,
        })?;
        Ok(ProvisionKit {
            key_text,
            manifest: verified.manifest,
            binary,
            service_text,
            module: ModuleSettings::default(),
            _unpacked: scratch,
        })
    }

    /// The gate and pruning settings the unit's Mender Update Module uses (the inventory's, as
    /// `trident deploy push` uses them); the health address is each unit's own.
    pub fn with_module_settings(mut self, settings: ModuleSettings) -> Self {
        self.module = settings;
        self
    }

    /// The verified package's manifest.
    pub fn manifest(&self) -> &trident_core::package::Manifest {
        &self.manifest
    }
}

/// Provisions one unit with `package` (verified with `trusted_key` on this host first). For
/// several units, prepare a [`ProvisionKit`] once and call [`provision_with`].
pub fn provision(
    ssh: &Ssh,
    unit: &Unit,
    package: &Path,
    trusted_key: &Path,
) -> Result<Provisioned> {
    provision_with(
        ssh,
        unit,
        &ProvisionKit::prepare(package, trusted_key)?,
        None,
    )
}

/// Provisions one unit from a prepared package, waiting up to `lock_wait` for a deploy that
/// holds the unit's lock.
pub fn provision_with(
    ssh: &Ssh,
    unit: &Unit,
    kit: &ProvisionKit,
    lock_wait: Option<std::time::Duration>,
) -> Result<Provisioned> {
    let before = unit_facts::read(ssh, unit)?;
    // A user who cannot become root would fail at the first mkdir; say why before anything.
    before.require_root(&unit.name)?;
    let device = before
        .device
        .clone()
        .ok_or_else(|| Error::remote(&unit.name, "facts", "no facts"))?;
    let warnings =
        trident_package::facts::check(&kit.manifest, &device).map_err(|e| Error::Incompatible {
            unit: unit.name.clone(),
            message: e.to_string(),
        })?;

    let _lock = ssh.lock(unit, &crate::lock::holder("provision"), lock_wait)?;
    let mode = unit.power_mode.nvpmodel_id().to_string();
    let guard = crate::unit_scripts::guard();
    let module = crate::mender_module::update_module(&unit.root);
    let settings = ModuleSettings {
        health_addr: unit.health_addr,
        ..kit.module.clone()
    }
    .env_text();
    let out = ssh.check(
        unit,
        "provision",
        PROVISION,
        &[
            &unit.root,
            &mode,
            kit.key_text.trim_end(),
            &kit.service_text,
            unit.power_mode.profile(),
            &guard,
            &module,
            &settings,
        ],
    )?;
    if out.trim() != "ok" {
        return Err(Error::remote(
            &unit.name,
            "provision",
            out.trim().to_string(),
        ));
    }
    let verifier = unit.remote("/opt/trident/bin/trident-edge");
    ssh.upload(unit, &kit.binary, &verifier, &|_| {}, None)?;
    ssh.check(unit, "provision", "chmod 755 \"$1\"", &[&verifier])?;
    let after = unit_facts::read(ssh, unit)?;
    if !after.provisioned {
        return Err(Error::remote(
            &unit.name,
            "provision",
            "the layout, trusted key or verifier is missing after provisioning",
        ));
    }
    let doctor = ssh
        .check(unit, "doctor", DOCTOR, &[&unit.root])
        .ok()
        .and_then(|json| doctor_line(&json));
    Ok(Provisioned {
        before,
        after,
        warnings,
        doctor,
    })
}
