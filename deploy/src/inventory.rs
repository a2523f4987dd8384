//! The fleet inventory, `configs/fleet.yaml`: the units (name, host, port, user, tags, power
//! mode, optional remote root prefix), wave settings, the health gate, and the public key the
//! units trust. Errors name `file:line` and the field.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use trident_core::yaml::parse_yaml;

use crate::error::{Error, Result};
use crate::quote::{is_host, is_plain, is_safe_path};

/// The inventory as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// The minisign public key the units trust (relative to the inventory file).
    pub trusted_key: PathBuf,
    /// Releases kept on a unit, the current one included (≥ 2, so a rollback has a target).
    #[serde(default = "default_keep")]
    pub keep_releases: usize,
    #[serde(default)]
    pub waves: Waves,
    #[serde(default)]
    pub health: HealthGate,
    #[serde(default)]
    pub ssh: SshSettings,
    #[serde(default)]
    pub defaults: UnitDefaults,
    pub units: Vec<UnitEntry>,
}

fn default_keep() -> usize {
    3
}

/// How a rollout proceeds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Waves {
    /// Units updated first, as a wave of their own; one failing stops the rollout.
    pub canary: usize,
    /// Units updated at once after the canaries.
    pub max_parallel: usize,
}

impl Default for Waves {
    fn default() -> Self {
        Waves {
            canary: 1,
            max_parallel: 4,
        }
    }
}

/// When a switched unit counts as healthy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthGate {
    /// Seconds after the restart within which `/healthz` must answer ok (models load, the
    /// camera opens, the first frames arrive).
    pub timeout_s: u64,
    /// Frames every model of the active ladder level must have processed before the gate
    /// passes: a release whose camera never delivers a frame is not committed.
    pub min_frames: u64,
}

impl Default for HealthGate {
    fn default() -> Self {
        HealthGate {
            timeout_s: 90,
            min_frames: 1,
        }
    }
}

/// The OpenSSH client's settings beyond `~/.ssh/config`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    /// An ssh_config file to use instead of `~/.ssh/config` (`ssh -F`).
    #[serde(default)]
    pub config: Option<PathBuf>,
}

/// Values a unit entry may leave out.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnitDefaults {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub power_mode: PowerMode,
    pub root: String,
    pub health_addr: SocketAddr,
}

impl Default for UnitDefaults {
    fn default() -> Self {
        UnitDefaults {
            user: None,
            port: None,
            power_mode: PowerMode::Maxn,
            root: "/".into(),
            health_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

/// A unit as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitEntry {
    pub name: String,
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub power_mode: Option<PowerMode>,
    /// Remote root prefix for non-standard installs (`/` on a normal unit).
    #[serde(default)]
    pub root: Option<String>,
    /// Where the unit's runtime serves `/healthz` (on the unit).
    #[serde(default)]
    pub health_addr: Option<SocketAddr>,
}

/// The Nano's nvpmodel modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum PowerMode {
    /// nvpmodel 0, 10 W.
    #[serde(rename = "maxn", alias = "10w", alias = "MAXN")]
    Maxn,
    /// nvpmodel 1, 5 W.
    #[serde(rename = "5w", alias = "5W")]
    FiveWatt,
}

impl PowerMode {
    pub fn nvpmodel_id(self) -> u8 {
        match self {
            PowerMode::Maxn => 0,
            PowerMode::FiveWatt => 1,
        }
    }

    /// The package's deployment profile for this mode (`profiles/<name>.yaml`).
    pub fn profile(self) -> &'static str {
        match self {
            PowerMode::Maxn => "nano-10w",
            PowerMode::FiveWatt => "nano-5w",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            PowerMode::Maxn => "MAXN (10 W)",
            PowerMode::FiveWatt => "5W",
        }
    }
}

/// A unit with every default applied and every field checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    pub name: String,
    pub host: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub tags: Vec<String>,
    pub power_mode: PowerMode,
    /// Absolute, ends without `/` unless it is `/`.
    pub root: String,
    pub health_addr: SocketAddr,
}

impl Unit {
    /// A path on the unit under its root prefix: `remote("/opt/trident")`.
    pub fn remote(&self, path: &str) -> String {
        debug_assert!(path.starts_with('/'));
        if self.root == "/" {
            path.to_string()
        } else {
            format!("{}{path}", self.root.trim_end_matches('/'))
        }
    }
}

/// A loaded inventory.
#[derive(Clone, Debug)]
pub struct Fleet {
    pub path: PathBuf,
    pub trusted_key: PathBuf,
    pub keep_releases: usize,
    pub waves: Waves,
    pub health: HealthGate,
    pub ssh_config: Option<PathBuf>,
    pub units: Vec<Unit>,
}

/// Which units a command addresses.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub units: Vec<String>,
    pub tags: Vec<String>,
}

impl Fleet {
    /// Reads and checks an inventory file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            action: "cannot read the inventory",
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks inventory text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let inv: Inventory = parse_yaml(text, path)?;
        let file = path.display().to_string();
        // `file:line:column: field`, from the YAML locator every config shares.
        let at = |field: &str| match trident_core::yaml::locate(text, field) {
            Some((line, column)) => format!("{file}:{line}:{column}: {field}"),
            None => format!("{file}: {field}"),
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_relative() {
                base.join(p)
            } else {
                p.to_path_buf()
            }
        };
        if inv.keep_releases < 2 {
            return Err(Error::inventory(
                at("keep_releases"),
                format!(
                    "{}: keep at least 2 (the current release and one to roll back to)",
                    inv.keep_releases
                ),
            ));
        }
        if inv.waves.max_parallel == 0 {
            return Err(Error::inventory(
                at("waves.max_parallel"),
                "must be at least 1",
            ));
        }
        if inv.health.timeout_s == 0 {
            return Err(Error::inventory(
                at("health.timeout_s"),
                "must be at least 1 second",
            ));
        }
        if inv.units.is_empty() {
            return Err(Error::inventory(at("units"), "lists no unit"));
        }
        let d = &inv.defaults;
        if !is_safe_path(&d.root) {
            return Err(Error::inventory(
                at("defaults.root"),
                format!("`{}`: expected an absolute path of plain names", d.root),
            ));
        }
        let mut seen = BTreeSet::new();
        // Two entries for one unit would run two deploys at once against one install (the
        // unit's lock would refuse the second mid-rollout; refusing here is clearer).
        let mut places: std::collections::BTreeMap<(String, u16, String), String> =
            Default::default();
        let mut units = Vec::new();
        for (i, u) in inv.units.iter().enumerate() {
            let field = |f: &str| at(&format!("units[{i}].{f}"));
            if !is_plain(&u.name) {
                return Err(Error::inventory(
                    field("name"),
                    format!("`{}`: expected letters, digits, `.`, `_`, `+`, `-`", u.name),
                ));
            }
            if !seen.insert(u.name.clone()) {
                return Err(Error::inventory(
                    field("name"),
                    format!("`{}` is listed twice", u.name),
                ));
            }
            if !is_host(&u.host) {
                return Err(Error::inventory(
                    field("host"),
                    format!("`{}`: expected a host name or an IP address", u.host),
                ));
            }
            let user = u.user.clone().or_else(|| d.user.clone());
            if let Some(user) = &user
                && !is_plain(user)
            {
                return Err(Error::inventory(
                    field("user"),
                    format!("`{user}`: expected a plain user name"),
                ));
            }
            if u.port == Some(0) {
                return Err(Error::inventory(field("port"), "0 is not a port"));
            }
            for t in &u.tags {
                if !is_plain(t) {
                    return Err(Error::inventory(
                        field("tags"),
                        format!("`{t}`: expected a plain tag"),
                    ));
                }
            }
            let root = u.root.clone().unwrap_or_else(|| d.root.clone());
            if !is_safe_path(&root) {
                return Err(Error::inventory(
                    field("root"),
                    format!("`{root}`: expected an absolute path of plain names"),
                ));
            }
            let root = if root == "/" {
                root
            } else {
                root.trim_end_matches('/').to_string()
            };
            let port = u.port.or(d.port);
            let place = (
                u.host.to_ascii_lowercase(),
                port.unwrap_or(22),
                root.clone(),
            );
            if let Some(other) = places.insert(place, u.name.clone()) {
                return Err(Error::inventory(
                    field("host"),
                    format!(
                        "`{}` names the same unit as `{other}` (host {}, port {}, root {root}): one entry per install",
                        u.name,
                        u.host,
                        port.unwrap_or(22)
                    ),
                ));
            }
            units.push(Unit {
                name: u.name.clone(),
                host: u.host.clone(),
                port,
                user,
                tags: u.tags.clone(),
                power_mode: u.power_mode.unwrap_or(d.power_mode),
                root,
                health_addr: u.health_addr.unwrap_or(d.health_addr),
            });
        }
        if inv.waves.canary > units.len() {
            return Err(Error::inventory(
                at("waves.canary"),
                format!(
                    "{} canaries but only {} unit(s)",
                    inv.waves.canary,
                    units.len()
                ),
            ));
        }
        Ok(Fleet {
            path: path.to_path_buf(),
            trusted_key: resolve(&inv.trusted_key),
            keep_releases: inv.keep_releases,
            waves: inv.waves.clone(),
            health: inv.health.clone(),
            ssh_config: inv.ssh.config.as_deref().map(resolve),
            units,
        })
    }

    pub fn unit(&self, name: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.name == name)
    }

    /// The units named or tagged, in inventory order; everything when the selection is empty.
    /// Unknown names and tags that match nothing are errors.
    pub fn select(&self, s: &Selection) -> Result<Vec<Unit>> {
        let file = self.path.display().to_string();
        for name in &s.units {
            if self.unit(name).is_none() {
                return Err(Error::inventory(
                    file.clone(),
                    format!(
                        "no unit `{name}` (the inventory has {})",
                        self.units
                            .iter()
                            .map(|u| u.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        for tag in &s.tags {
            if !self.units.iter().any(|u| u.tags.contains(tag)) {
                return Err(Error::inventory(
                    file.clone(),
                    format!("no unit is tagged `{tag}`"),
                ));
            }
        }
        if s.units.is_empty() && s.tags.is_empty() {
            return Ok(self.units.clone());
        }
        Ok(self
            .units
            .iter()
            .filter(|u| s.units.contains(&u.name) || u.tags.iter().any(|t| s.tags.contains(t)))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "trusted_key: keys/trident.pub
keep_releases: 3
waves: { canary: 1, max_parallel: 4 }
defaults:
  user: admin
units:
  - name: reef-01
    host: 10.0.0.11
    tags: [reef, north]
    power_mode: 10w
  - name: reef-02
    host: reef-02.local
    port: 2222
    user: ubuntu
    tags: [reef]
    power_mode: 5w
    root: /media/sd/
";

    fn parse(text: &str) -> Result<Fleet> {
        Fleet::parse(text, Path::new("/etc/trident/fleet.yaml"))
    }

    #[test]
    fn the_shipped_example_inventory_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/fleet.yaml");
        let f = Fleet::load(&path).unwrap();
        assert_eq!(f.units.len(), 4);
        assert_eq!(f.unit("reef-02").unwrap().power_mode, PowerMode::FiveWatt);
        assert_eq!(f.unit("kelp-07").unwrap().port, Some(2222));
        assert_eq!(
            f.unit("bench-nano").unwrap().remote("/opt/trident"),
            "/mnt/sdcard/opt/trident"
        );
        assert!(f.trusted_key.ends_with("keys/trident.pub"));
        assert_eq!((f.waves.canary, f.waves.max_parallel), (1, 4));
    }

    #[test]
    fn defaults_apply_and_paths_resolve() {
        let f = parse(BASE).unwrap();
        assert_eq!(f.trusted_key, Path::new("/etc/trident/keys/trident.pub"));
        let a = f.unit("reef-01").unwrap();
        assert_eq!(a.user.as_deref(), Some("admin"));
        assert_eq!(a.power_mode.nvpmodel_id(), 0);
        assert_eq!(a.remote("/opt/trident"), "/opt/trident");
        let b = f.unit("reef-02").unwrap();
        assert_eq!((b.port, b.user.as_deref()), (Some(2222), Some("ubuntu")));
        assert_eq!(b.power_mode, PowerMode::FiveWatt);
        assert_eq!(b.remote("/opt/trident"), "/media/sd/opt/trident");
        let sel = |units: &[&str], tags: &[&str]| {
            f.select(&Selection {
                units: units.iter().map(|s| s.to_string()).collect(),
                tags: tags.iter().map(|s| s.to_string()).collect(),
            })
            .map(|v| v.into_iter().map(|u| u.name).collect::<Vec<_>>())
        };
        assert_eq!(sel(&[], &["north"]).unwrap(), ["reef-01"]);
        assert_eq!(sel(&[], &[]).unwrap(), ["reef-01", "reef-02"]);
        assert!(
            sel(&["reef-09"], &[])
                .unwrap_err()
                .to_string()
                .contains("reef-09")
        );
        assert!(
            sel(&[], &["south"])
                .unwrap_err()
                .to_string()
                .contains("south")
        );
    }

    #[test]
    fn bad_entries_name_file_line_and_field() {
        for (from, to, line, field) in [
            (
                "host: 10.0.0.11",
                "host: \"10.0.0.11; reboot\"",
                8,
                "units[0].host",
            ),
            ("name: reef-02", "name: reef-01", 11, "units[1].name"),
            ("user: ubuntu", "user: \"$(id)\"", 14, "units[1].user"),
            (
                "root: /media/sd/",
                "root: /media/../etc",
                17,
                "units[1].root",
            ),
            ("tags: [reef]", "tags: [\"a b\"]", 15, "units[1].tags"),
            ("keep_releases: 3", "keep_releases: 1", 2, "keep_releases"),
            ("canary: 1", "canary: 5", 3, "waves.canary"),
        ] {
            let text = BASE.replace(from, to);
            let e = parse(&text).unwrap_err().to_string();
            // `file:line:column: field`, the field's own line.
            assert!(
                e.contains(&format!("fleet.yaml:{line}:")) && e.contains(&format!(": {field}")),
                "{from} → {to}: {e}"
            );
        }
        let e = parse(&BASE.replace("power_mode: 5w", "power_mode: 7w"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fleet.yaml:16:"), "{e}");
        let e = parse(&BASE.replace("keep_releases: 3", "keep_releases: 3\nretries: 2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("retries"), "{e}");
    }

    #[test]
    fn two_entries_for_one_install_are_refused() {
        // Same host, port and root under another name (host names compare case-blind; no port
        // means 22).
        let twin = format!("{BASE}  - name: reef-01b\n    host: 10.0.0.11\n    port: 22\n");
        let e = parse(&twin).unwrap_err().to_string();
        assert!(
            e.contains("fleet.yaml:19:11: units[2].host") && e.contains("same unit as `reef-01`"),
            "{e}"
        );
        // Another root on the same host is another install (a bench unit with two trees).
        let other_root = format!("{twin}    root: /mnt/b\n");
        assert!(parse(&other_root).is_ok());
        let upper = BASE.replace("host: reef-02.local", "host: REEF-02.local")
            + "  - name: reef-02b\n    host: reef-02.local\n    port: 2222\n    root: /media/sd\n";
        assert!(parse(&upper).unwrap_err().to_string().contains("reef-02"));
    }
}
