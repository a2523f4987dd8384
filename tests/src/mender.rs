//! The real Mender client (Debian's `mender-client`, 3.x) in standalone mode, run against a
//! fleet unit's root folder `R` (see [`crate::fleet`]).
//!
//! Mender looks for Update Modules only in `/usr/share/mender/modules/v3` and reads
//! `/etc/mender/artifact_info` from fixed paths, whatever its configuration says. Each call
//! therefore runs in a private mount namespace (`unshare -m`, root only, as CI and the fleet
//! harness run) where `R/usr/share/mender/modules/v3` and `R/etc/mender` are bind-mounted over
//! those paths, and `--data R/var/lib/mender` holds its state database and `device_type`. The
//! host's own folders are never changed. The client's child processes get the unit's `PATH`
//! (`R/bin` first, with the fleet's `systemctl`, `runuser`, … stand-ins), as sshd gives the
//! unit's sessions.
//!
//! What this cannot show: the client as a daemon polling a server (deployments, retries,
//! inventory), and a Mender 4.x client (C++, the same Update Module protocol v3).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Where the client and its tool come from.
pub const SETUP_HINT: &str =
    "`cargo xtask setup` installs Debian's mender-client and mender-artifact";

/// A Mender client on one fleet unit.
pub struct MenderClient {
    root: PathBuf,
}

/// One client call: its exit status and everything it printed.
#[derive(Debug)]
pub struct MenderRun {
    pub ok: bool,
    pub code: Option<i32>,
    pub output: String,
}

impl MenderClient {
    /// Prepares the unit's Mender folders: `device_type` (what artifacts must list),
    /// `artifact_info` (the factory image's artifact name), an empty `mender.conf` (standalone:
    /// no server).
    pub fn new(unit_root: &Path, device_type: &str) -> Self {
        let etc = unit_root.join("etc/mender");
        let data = unit_root.join("var/lib/mender");
        for d in [&etc, &data, &unit_root.join("usr/share/mender/modules/v3")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(etc.join("mender.conf"), "{}\n").unwrap();
        std::fs::write(etc.join("artifact_info"), "artifact_name=factory-image\n").unwrap();
        std::fs::write(
            data.join("device_type"),
            format!("device_type={device_type}\n"),
        )
        .unwrap();
        for dir in ["/usr/share/mender/modules/v3", "/etc/mender"] {
            assert!(
                Path::new(dir).is_dir(),
                "{dir} is missing (the mount point of the unit's copy): {SETUP_HINT}"
            );
        }
        MenderClient {
            root: unit_root.to_path_buf(),
        }
    }

    /// Makes the client refuse artifacts not signed with the key whose public half (PEM) is
    /// `public_pem`, as a production `mender.conf` with `ArtifactVerifyKey` does.
    pub fn require_signatures(&self, public_pem: &Path) {
        let etc = self.root.join("etc/mender");
        std::fs::copy(public_pem, etc.join("artifact-verify-key.pem")).unwrap();
        std::fs::write(
            etc.join("mender.conf"),
            "{\"ArtifactVerifyKey\": \"/etc/mender/artifact-verify-key.pem\"}\n",
        )
        .unwrap();
    }

    /// `mender ARGS…` (`install FILE`, `commit`, `rollback`, `show-artifact`, `show-provides`).
    pub fn run(&self, args: &[&str]) -> MenderRun {
        let r = self.root.to_str().expect("UTF-8 unit root");
        let script = r#"set -e
mount --bind "$1/usr/share/mender/modules/v3" /usr/share/mender/modules/v3
mount --bind "$1/etc/mender" /etc/mender
data="$1/var/lib/mender"
shift
exec mender --no-syslog --log-level info --data "$data" \
  --fallback-config /etc/mender/mender.conf "$@""#;
        let out: Output = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
                r,
            ])
            .args(args)
            .env(
                "PATH",
                format!("{r}/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
            )
            .env("TRIDENT_TEST_ROOT", r)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run unshare ({e}): util-linux is needed"));
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !output.contains("mender: not found") && !output.contains("mender: No such file"),
            "the Mender client is missing: {SETUP_HINT}\n{output}"
        );
        assert!(
            !output.contains("unshare: unshare failed") && !output.contains("mount: "),
            "a private mount namespace is needed (root): {output}"
        );
        MenderRun {
            ok: out.status.success(),
            code: out.status.code(),
            output,
        }
    }

    /// The artifact name the client records as installed.
    pub fn installed_artifact(&self) -> String {
        let r = self.run(&["show-artifact"]);
        assert!(r.ok, "mender show-artifact failed: {}", r.output);
        r.output
            .lines()
            .rfind(|l| !l.trim().is_empty() && !l.contains("level="))
            .unwrap_or("")
            .trim()
            .to_string()
    }
}
