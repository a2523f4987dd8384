//! What a unit is and what it runs, read over SSH in one round trip: the kernel's architecture,
//! the L4T release file, the dpkg records that matter (libc6, TensorRT, GStreamer), free disk
//! under the install root, memory, the current release, the releases on disk and the deploy
//! journal. The L4T/dpkg texts are judged by the same code the device's `trident-edge verify`
//! uses ([`trident_package::facts`]), so host and unit cannot disagree on compatibility.

use std::collections::BTreeMap;

use trident_package::facts::DeviceFacts;

use crate::error::{Error, Result};
use crate::inventory::Unit;
use crate::ssh::Ssh;

/// Facts of one unit.
#[derive(Clone, Debug, Default)]
pub struct UnitFacts {
    /// `uname -m`: the architecture the unit runs.
    pub arch: String,
    pub device: Option<DeviceFacts>,
    /// The L4T release file's first line, as read.
    pub release_line: Option<String>,
    pub gstreamer: Option<String>,
    /// Free space under `<root>/opt` (or the root), KiB.
    pub disk_avail_kb: Option<u64>,
    pub mem_total_kb: Option<u64>,
    /// The release `current` points at.
    pub current: Option<String>,
    /// Release folders on the unit, sorted.
    pub releases: Vec<String>,
    /// The deploy journal's fields (`state`, `previous`, `target`), empty when there is none.
    pub journal: BTreeMap<String, String>,
    /// The unit was provisioned (layout, trusted key and verifier present).
    pub provisioned: bool,
    /// `(status, version)` of the unit's release history, oldest first (`good`, `failed`,
    /// `pending`); empty on a unit deployed before the history existed.
    pub history: Vec<(String, String)>,
    /// `<version> <n>`: starts of `current` that have not reached READY yet, per its guard.
    pub start_attempts: Option<(String, u32)>,
    /// How deploy steps become root on the unit.
    pub privilege: Privilege,
}

/// How the SSH user becomes root for the steps that change the unit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Privilege {
    /// The SSH user is root.
    #[default]
    Root,
    /// Through `sudo -n` (passwordless).
    Sudo,
    /// Neither: `user` is not root and `sudo -n` said `why`.
    None { user: String, why: String },
}

impl UnitFacts {
    /// Refuses a unit whose SSH user cannot become root, saying what to set up.
    pub fn require_root(&self, unit: &str) -> Result<()> {
        match &self.privilege {
            Privilege::Root | Privilege::Sudo => Ok(()),
            Privilege::None { user, why } => Err(Error::remote(
                unit,
                "preflight",
                format!(
                    "the SSH user `{user}` is not root and has no passwordless sudo (`sudo -n true`: {why}); \
                     on the unit: `echo '{user} ALL=(ALL) NOPASSWD: ALL' | sudo tee /etc/sudoers.d/trident`, \
                     or log in as root; nothing changed"
                ),
            )),
        }
    }
}

/// `$1`: the unit's root prefix. Sections start with `==name`.
const FACTS: &str = r#"set -u
R="$1"
T="$R/opt/trident"
echo "==uname"; uname -m
echo "==release"; [ -r "$R/etc/nv_tegra_release" ] && head -n 1 "$R/etc/nv_tegra_release"
echo "==dpkg"
if [ -r "$R/var/lib/dpkg/status" ]; then
  awk 'BEGIN { RS = ""; ORS = "\n\n" }
       /(^|\n)Package: (libc6|libnvinfer7|libnvinfer8|libnvinfer10|tensorrt|libgstreamer1\.0-0)(\n|$)/' "$R/var/lib/dpkg/status"
fi
echo "==df"; if [ -d "$R/opt" ]; then df -Pk "$R/opt"; else df -Pk "$R"; fi
echo "==mem"; awk '/^MemTotal:/ { print $2 }' /proc/meminfo 2>/dev/null
echo "==current"; [ -L "$T/current" ] && basename "$(readlink "$T/current")"
echo "==releases"; [ -d "$T/releases" ] && ls -1 "$T/releases"
echo "==journal"; [ -r "$T/deploy-journal" ] && cat "$T/deploy-journal"
echo "==history"; [ -r "$T/history" ] && cat "$T/history"
echo "==attempts"; [ -r "$T/start-attempts" ] && cat "$T/start-attempts"
echo "==privilege"
if [ "$(id -u)" = 0 ]; then echo root
elif command -v sudo > /dev/null 2>&1 && sudo -n true > /dev/null 2>&1; then echo sudo
else
  echo "none $(id -un 2>/dev/null || id -u)"
  if command -v sudo > /dev/null 2>&1; then sudo -n true 2>&1 | head -n 1; else echo "sudo is not installed"; fi
fi
echo "==provisioned"
if [ -d "$T/releases" ] && [ -r "$T/trusted.pub" ] && [ -x "$T/bin/trident-edge" ]; then echo yes; else echo no; fi
echo "==end"
"#;

/// Reads a unit's facts (one SSH round trip).
pub fn read(ssh: &Ssh, unit: &Unit) -> Result<UnitFacts> {
    let out = ssh.script_as_login(unit, "facts", FACTS, &[&unit.root])?;
    if !out.stdout.contains("==end") {
        return Err(Error::remote(
            &unit.name,
            "facts",
            format!(
                "incomplete answer: {}",
                out.stderr.lines().last().unwrap_or("no output")
            ),
        ));
    }
    parse(&out.stdout, &unit.name)
}

/// Parses the sections of [`FACTS`]' output.
pub fn parse(text: &str, unit: &str) -> Result<UnitFacts> {
    let mut sections: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut name = "";
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("==") {
            name = n.trim();
            sections.entry(name).or_default();
        } else if !name.is_empty() {
            sections.entry(name).or_default().push(line);
        }
    }
    let section = |n: &str| sections.get(n).cloned().unwrap_or_default();
    let first = |n: &str| {
        section(n)
            .into_iter()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string)
    };
    let arch = first("uname").ok_or_else(|| Error::remote(unit, "facts", "no `uname -m`"))?;
    // The L4T and dpkg texts go through the package crate's parser, from a scratch root.
    let scratch = tempfile::tempdir().map_err(|e| Error::Io {
        action: "cannot create a temporary folder in",
        path: std::env::temp_dir(),
        source: e,
    })?;
    let release_line = first("release");
    let write = |rel: &str, text: String| {
        let p = scratch.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("relative file")).ok();
        std::fs::write(&p, text).ok();
    };
    if let Some(l) = &release_line {
        write(trident_package::facts::NV_TEGRA_RELEASE, format!("{l}\n"));
    }
    let dpkg = section("dpkg").join("\n");
    write(trident_package::facts::DPKG_STATUS, dpkg.clone());
    let mut device = DeviceFacts::probe(scratch.path());
    device.arch = match arch.as_str() {
        "arm64" => "aarch64".into(),
        a => a.to_string(),
    };
    device.arch_origin = format!("`uname -m` on {unit}");
    device.root = unit.into();
    let gstreamer = dpkg
        .split("\n\n")
        .find(|s| s.lines().any(|l| l.trim() == "Package: libgstreamer1.0-0"))
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Version: ")))
        .map(|v| v.split(['-', '+', '~']).next().unwrap_or(v).to_string());
    // `df -Pk`: header, then `fs 1K-blocks used available capacity mount`.
    let disk_avail_kb = section("df")
        .get(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok());
    let journal = section("journal")
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(UnitFacts {
        arch: device.arch.clone(),
        device: Some(device),
        release_line,
        gstreamer,
        disk_avail_kb,
        mem_total_kb: first("mem").and_then(|v| v.parse().ok()),
        current: first("current"),
        releases: section("releases")
            .into_iter()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        journal,
        provisioned: first("provisioned").as_deref() == Some("yes"),
        history: section("history")
            .iter()
            .filter_map(|l| l.trim().split_once(' '))
            .map(|(s, v)| (s.to_string(), v.trim().to_string()))
            .collect(),
        start_attempts: first("attempts").and_then(|l| {
            let (v, n) = l.split_once(' ')?;
            Some((v.to_string(), n.trim().parse().ok()?))
        }),
        privilege: {
            let lines = section("privilege");
            let mut lines = lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty());
            match lines.next() {
                Some("sudo") => Privilege::Sudo,
                Some(l) if l.starts_with("none") => Privilege::None {
                    user: l["none".len()..].trim().to_string(),
                    why: lines.next().unwrap_or("no answer").to_string(),
                },
                _ => Privilege::Root,
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "==uname
aarch64
==release
# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19 17:05:08 UTC 2022
==dpkg
Package: libc6
Status: install ok installed
Architecture: arm64
Version: 2.27-3ubuntu1.6

Package: libnvinfer8
Status: install ok installed
Architecture: arm64
Version: 8.2.1-1+cuda10.2

Package: libgstreamer1.0-0
Status: install ok installed
Architecture: arm64
Version: 1.14.5-0ubuntu1~18.04.2

==df
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/mmcblk0p1    30502376 14217780  14990008      49% /
==mem
4051048
==current
1.2.3
==releases
1.2.2
1.2.3
==journal
state=committed
target=1.2.3
==history
good 1.2.2
failed 1.2.4
good 1.2.3
==attempts
1.2.3 2
==privilege
none pilot
sudo: a password is required
==provisioned
yes
==end
";

    #[test]
    fn a_jetpack_4_6_1_nano_reads_as_such() {
        let f = parse(ANSWER, "reef-01").unwrap();
        let d = f.device.clone().unwrap();
        assert_eq!(f.arch, "aarch64");
        assert_eq!(d.l4t.as_deref(), Some("32.7.1"));
        assert_eq!(d.jetpack.as_deref(), Some("4.6.1"));
        assert_eq!(d.tensorrt.as_deref(), Some("8.2.1"));
        assert_eq!(d.glibc.as_deref(), Some("2.27"));
        assert_eq!(f.gstreamer.as_deref(), Some("1.14.5"));
        assert_eq!(f.disk_avail_kb, Some(14_990_008));
        assert_eq!(f.mem_total_kb, Some(4_051_048));
        assert_eq!(f.current.as_deref(), Some("1.2.3"));
        assert_eq!(f.releases, ["1.2.2", "1.2.3"]);
        assert_eq!(f.journal["state"], "committed");
        assert!(f.provisioned);
        let history: Vec<(&str, &str)> = f
            .history
            .iter()
            .map(|(s, v)| (s.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            history,
            [("good", "1.2.2"), ("failed", "1.2.4"), ("good", "1.2.3")]
        );
        assert_eq!(f.start_attempts, Some(("1.2.3".into(), 2)));
        let e = f.require_root("reef-01").unwrap_err().to_string();
        assert!(
            e.contains("`pilot` is not root") && e.contains("a password is required"),
            "{e}"
        );
    }

    #[test]
    fn a_fresh_host_without_jetson_files_has_none_of_them() {
        let f = parse("==uname\nx86_64\n==release\n==dpkg\n==df\n==current\n==releases\n==journal\n==provisioned\nno\n==end\n", "lab").unwrap();
        let d = f.device.unwrap();
        assert_eq!((d.l4t, d.tensorrt, f.current), (None, None, None));
        assert!(!f.provisioned);
        assert!(
            parse("==release\n", "lab")
                .unwrap_err()
                .to_string()
                .contains("uname")
        );
    }
}
