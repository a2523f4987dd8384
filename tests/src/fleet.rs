//! A fleet of fake Jetson Nano units on loopback, each a real OpenSSH server (`/usr/sbin/sshd`)
//! whose sessions see a "remote root prefix" folder `R` instead of `/`: everything a deploy
//! touches lives under `R` (`R/opt/trident/…`, `R/etc/…`, `R/var/…`), and `R/bin/` (first on the
//! sessions' `PATH`) holds fake `systemctl`, `nvpmodel`, `df`, `useradd`, `usermod`, `id` and
//! `chown` that record their calls in `R/var/log/fake-<tool>.log`.
//!
//! Layout under the fleet folder `dir`:
//! - `ssh/host_ed25519{,.pub}` (every unit's host key), `ssh/client_ed25519{,.pub}`,
//!   `ssh/authorized_keys`, `ssh/config` (a `Host <name>` block per unit), `ssh/known_hosts`;
//! - `units/<name>/{sshd_config,sshd.pid,sshd.log}` and `units/<name>/root` (= `R`).
//!
//! Under `R`: `etc/trident-test/{health_port,df_avail_kb,source,faults/<fault>,user-<name>,enabled/}`,
//! `etc/nv_tegra_release`, `var/lib/dpkg/status`, `var/lib/nvpmodel/status`, `run/trident-edge.pid`,
//! `run/fake-systemd/` (the systemd stand-in's FIFOs and notify socket), `var/log/trident-edge.log`
//! (the service's output, appended) and `var/log/fake-systemd.log` (its manager's transitions).
//!
//! `systemctl` talks to a systemd stand-in per unit (`fleet/systemd.rs`: a thread of the process
//! that owns the fleet, stopped with the service when the fleet drops) that runs the unit file
//! deployed to `R/etc/systemd/system/trident-edge.service` with `Type=notify` semantics.
//!
//! Faults (files in `R/etc/trident-test/faults/`, read at each start of the service; each of the
//! first three also as `<fault>-<release>`, only while `current` is that release):
//! - `start-fails`: the main process prints an error and exits 1 before `READY=1`;
//! - `unhealthy`: the runtime's camera is `file:///nonexistent/camera-unplugged.avi`; it exits
//!   with the error after `/healthz` came up, before `READY=1`;
//! - `no-frames`: a camera that opens but never delivers a frame; the runtime sends `READY=1` and
//!   serves `/healthz`, processing nothing;
//! - `fail-<tool>`: that tool records its call and exits 1.

mod login;
mod os;
mod scripts;
mod systemd;

pub use login::UNPRIVILEGED_UID;

use std::collections::BTreeSet;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::install_script;
use os::{alive, descendants, free_port, listens, processes_of, signal};

const SSHD: &str = "/usr/sbin/sshd";
const SETUP_HINT: &str = "`cargo xtask setup` installs openssh-server (sshd, ssh, ssh-keygen)";

/// What `/etc/nv_tegra_release` says on a Nano with JetPack 4.6.1 (L4T R32.7.1).
pub const NANO_L4T_RELEASE: &str = "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19 17:05:08 UTC 2022";

/// The fleet: one sshd per unit, all killed (with everything their sessions started) on drop.
pub struct TestFleet {
    dir: PathBuf,
    units: Vec<TestUnit>,
    /// One systemd stand-in per unit, stopped (with its service) first on drop.
    managers: Vec<systemd::Manager>,
}

/// One fake unit, reached as `root@127.0.0.1:port` (`Host <name>` in [`TestFleet::ssh_config`]).
pub struct TestUnit {
    pub name: String,
    pub port: u16,
    /// The unit's remote root prefix `R`.
    pub root: PathBuf,
    /// Where the service started by the fake `systemctl` serves `/healthz` (`127.0.0.1`).
    pub health_port: u16,
    /// `dir/units/<name>`: sshd_config, sshd.pid, sshd.log.
    pub dir: PathBuf,
    ssh_config: PathBuf,
    sshd: Mutex<Option<Child>>,
}

impl TestFleet {
    /// Starts one sshd per name (e.g. "reef-01") with its unit under `dir/units/<name>/root`.
    ///
    /// Panics (pointing at `cargo xtask setup`) when OpenSSH is not installed.
    pub fn start(dir: &Path, names: &[&str]) -> TestFleet {
        let started = Instant::now();
        for tool in [SSHD, "ssh", "ssh-keygen"] {
            let found = if tool.starts_with('/') {
                Path::new(tool).is_file()
            } else {
                Command::new(tool)
                    .arg("-V")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            };
            assert!(found, "{tool} is missing: {SETUP_HINT}");
        }
        let dir = dir.to_path_buf();
        let text = dir.to_str().expect("the fleet folder must be UTF-8");
        assert!(
            !text.contains(|c: char| c.is_whitespace() || "'\"\\$`".contains(c)),
            "the fleet folder {text:?} must not hold spaces or quotes (sshd_config and sh scripts name it)"
        );
        let mut seen = BTreeSet::new();
        for name in names {
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    && seen.insert(*name),
                "unit names must be distinct, non-empty [A-Za-z0-9._-]: {name:?}"
            );
        }

        let ssh_dir = dir.join("ssh");
        fs::create_dir_all(&ssh_dir).unwrap();
        let host_key = ssh_dir.join("host_ed25519");
        let client_key = ssh_dir.join("client_ed25519");
        let keygens: Vec<Child> = [
            (&host_key, "trident-test-host"),
            (&client_key, "trident-test-client"),
        ]
        .into_iter()
        .map(|(key, comment)| {
            let _ = fs::remove_file(key);
            let _ = fs::remove_file(pub_path(key));
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(key)
                .stdin(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run ssh-keygen ({e}): {SETUP_HINT}"))
        })
        .collect();
        for mut k in keygens {
            assert!(k.wait().unwrap().success(), "ssh-keygen failed");
        }
        let host_pub = public_key(&host_key);
        let client_pub = fs::read_to_string(pub_path(&client_key)).unwrap();
        let authorized_keys = ssh_dir.join("authorized_keys");
        fs::write(&authorized_keys, &client_pub).unwrap();
        // sshd's privilege-separation folder.
        fs::create_dir_all("/run/sshd").expect("create /run/sshd");

        let config_path = ssh_dir.join("config");
        // From here on, a panic drops `fleet`, which stops the sshds that did start.
        let mut fleet = TestFleet {
            dir,
            units: Vec::new(),
            managers: Vec::new(),
        };
        for name in names {
            let unit_dir = fleet.dir.join("units").join(name);
            let root = unit_dir.join("root");
            let health_port = free_port();
            populate_root(&root, health_port);
            fleet
                .managers
                .push(systemd::Manager::start(&root, name, health_port));
            let unit = TestUnit {
                name: name.to_string(),
                port: free_port(),
                root,
                health_port,
                dir: unit_dir,
                ssh_config: config_path.clone(),
                sshd: Mutex::new(None),
            };
            unit.write_sshd_config(&host_key, &authorized_keys);
            unit.spawn_sshd();
            fleet.units.push(unit);
        }
        for i in 0..fleet.units.len() {
            let mut tries = 0;
            while let Err(log) = fleet.units[i].wait_ready() {
                tries += 1;
                assert!(
                    tries < 5 && log.contains("Address already in use"),
                    "sshd of {} did not start: {log}",
                    fleet.units[i].name
                );
                // Another process took the port between our check and sshd's bind.
                fleet.units[i].port = free_port();
                fleet.units[i].write_sshd_config(&host_key, &authorized_keys);
                fleet.units[i].spawn_sshd();
            }
        }

        let mut config = String::new();
        let mut known_hosts = String::new();
        for u in &fleet.units {
            config.push_str(&format!(
                "Host {name}\n    HostName 127.0.0.1\n    Port {port}\n    User root\n    IdentityFile {key}\n    IdentitiesOnly yes\n    UserKnownHostsFile {kh}\n    StrictHostKeyChecking yes\n    BatchMode yes\n    ConnectTimeout 5\n    LogLevel ERROR\n\n",
                name = u.name,
                port = u.port,
                key = client_key.display(),
                kh = ssh_dir.join("known_hosts").display(),
            ));
            known_hosts.push_str(&format!("[127.0.0.1]:{} {host_pub}\n", u.port));
        }
        fs::write(&config_path, config).unwrap();
        fs::write(ssh_dir.join("known_hosts"), known_hosts).unwrap();
        eprintln!(
            "fleet of {} unit(s) up in {:.2} s",
            fleet.units.len(),
            started.elapsed().as_secs_f64()
        );
        fleet
    }

    /// The client config (`ssh -F`, `rsync -e 'ssh -F …'`) with a `Host <name>` block per unit.
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh/config")
    }

    /// The known_hosts file the client config uses (host key checking is on).
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("ssh/known_hosts")
    }

    /// The client's private key.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("ssh/client_ed25519")
    }

    /// The fleet folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn units(&self) -> &[TestUnit] {
        &self.units
    }

    /// The unit named `name` (panics if there is none).
    pub fn unit(&self, name: &str) -> &TestUnit {
        self.units
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no unit {name:?} in the fleet"))
    }

    /// Makes the unit unreachable: kills its sshd and every SSH session it serves (connections in
    /// flight drop). The service it started keeps running.
    pub fn stop_unit(&self, name: &str) {
        self.unit(name).stop_sshd(false);
    }

    /// Starts the unit's sshd again on the same port and waits until it accepts.
    pub fn start_unit(&self, name: &str) {
        let unit = self.unit(name);
        unit.stop_sshd(false);
        unit.spawn_sshd();
        if let Err(log) = unit.wait_ready() {
            panic!("sshd of {name} did not start again: {log}");
        }
    }
}

impl Drop for TestFleet {
    fn drop(&mut self) {
        // First, so that no restart races the kills below.
        systemd::stop_all(&mut self.managers);
        for u in &self.units {
            u.stop_sshd(true);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut left: Vec<u32> = Vec::new();
        while Instant::now() < deadline {
            left = self
                .units
                .iter()
                .flat_map(|u| processes_of(&u.root))
                .collect();
            if left.is_empty() {
                return;
            }
            signal("KILL", &left);
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("fleet processes still alive after 5 s: {left:?}");
    }
}

impl TestUnit {
    /// The lines a fake tool recorded, e.g. `calls("systemctl")` → `["restart trident-edge"]`.
    pub fn calls(&self, tool: &str) -> Vec<String> {
        fs::read_to_string(self.root.join(format!("var/log/fake-{tool}.log")))
            .map(|s| s.lines().map(String::from).collect())
            .unwrap_or_default()
    }

    /// Sets (creates) or clears `R/etc/trident-test/faults/<fault>`.
    pub fn set_fault(&self, fault: &str, on: bool) {
        let path = self.root.join("etc/trident-test/faults").join(fault);
        if on {
            fs::write(path, "").unwrap();
        } else if let Err(e) = fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            panic!("remove {}: {e}", path.display());
        }
    }

    /// The unit's camera: the service plays `uri` (looping a file) instead of the runtime's
    /// synthetic test pattern, so a deployed release can be seen detecting.
    pub fn set_camera(&self, uri: &str) {
        fs::write(
            self.root.join("etc/trident-test/source"),
            format!("{uri}\n"),
        )
        .unwrap();
    }

    /// What the fake `df` reports as available (KiB).
    pub fn set_disk_avail_kb(&self, kb: u64) {
        fs::write(
            self.root.join("etc/trident-test/df_avail_kb"),
            format!("{kb}\n"),
        )
        .unwrap();
    }

    /// Rewrites `R/etc/nv_tegra_release` (e.g. to play an unsupported L4T release).
    pub fn set_l4t(&self, release_line: &str) {
        fs::write(
            self.root.join("etc/nv_tegra_release"),
            format!("{release_line}\n"),
        )
        .unwrap();
    }

    /// The release `R/opt/trident/current` points at (its last path component, e.g. "1.2.3").
    pub fn current_release(&self) -> Option<String> {
        let target = fs::read_link(self.root.join("opt/trident/current")).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// The pid in `R/run/trident-edge.pid`, if the process is alive (not a zombie).
    pub fn service_pid(&self) -> Option<u32> {
        let pid = fs::read_to_string(self.root.join("run/trident-edge.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    /// Whether the fake service (started by the fake `systemctl`) is running.
    pub fn service_running(&self) -> bool {
        self.service_pid().is_some()
    }

    /// The unit's sshd (listener) pid while it runs.
    pub fn sshd_pid(&self) -> Option<u32> {
        self.sshd.lock().unwrap().as_ref().map(Child::id)
    }

    /// `R` + an absolute remote path: `unit.path("/opt/trident/current")`.
    pub fn path(&self, remote: &str) -> PathBuf {
        self.root.join(remote.trim_start_matches('/'))
    }

    /// Runs `ssh -F <config> <name> ARGS…` (the remote shell joins and parses ARGS).
    pub fn ssh(&self, args: &[&str]) -> Output {
        Command::new("ssh")
            .arg("-F")
            .arg(&self.ssh_config)
            .arg(&self.name)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run ssh ({e}): {SETUP_HINT}"))
    }

    /// `SHLVL=1` keeps the sessions' bash from sourcing root's `~/.bashrc` (Debian's bash does for
    /// a top-level shell run by sshd): here it runs `pyenv init`, which costs ~0.4 s a command,
    /// changes `PATH`, and leaves pyenv's machine-wide rehash lock behind when a session is
    /// killed (as [`TestFleet::stop_unit`] does), blocking every bash that starts later for 60 s.
    fn write_sshd_config(&self, host_key: &Path, authorized_keys: &Path) {
        let r = self.root.display();
        let text = format!(
            "# sshd of the trident fleet test unit {name}\n\
             Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             PidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {authorized_keys}\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             PrintMotd no\n\
             MaxStartups 64\n\
             MaxSessions 64\n\
             SetEnv PATH={r}/bin:/usr/local/bin:/usr/bin:/bin TRIDENT_TEST_UNIT={name} TRIDENT_TEST_ROOT={r} SHLVL=1\n\
             AcceptEnv none\n\
             Subsystem sftp internal-sftp\n\
             LogLevel ERROR\n",
            name = self.name,
            port = self.port,
            host_key = host_key.display(),
            dir = self.dir.display(),
            authorized_keys = authorized_keys.display(),
        );
        let mut text = text;
        if self.dir.join(login::MARKER).exists() {
            text.push_str(&login::force_command());
        }
        fs::write(self.dir.join("sshd_config"), text).unwrap();
    }

    fn spawn_sshd(&self) {
        let log = fs::File::create(self.dir.join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(self.dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {SSHD} ({e}): {SETUP_HINT}"));
        *self.sshd.lock().unwrap() = Some(child);
    }

    /// Waits (≤ 10 s) until this unit's own sshd listens on its port and accepts a connection;
    /// `Err(sshd.log)` when it exited or never did.
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let log = || fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default();
        loop {
            let pid = {
                let mut guard = self.sshd.lock().unwrap();
                let child = guard.as_mut().expect("sshd spawned");
                if let Some(status) = child.try_wait().unwrap() {
                    *guard = None;
                    return Err(format!("sshd exited ({status}): {}", log()));
                }
                child.id()
            };
            if listens(pid, self.port)
                && TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop_sshd(false);
                return Err(format!(
                    "sshd did not accept on {addr} within 10 s: {}",
                    log()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the sshd listener and its sessions (every process below it); with `everything`,
    /// also whatever its sessions started (the service included: every process whose environment
    /// holds `TRIDENT_TEST_ROOT=R`). Waits for the listener.
    fn stop_sshd(&self, everything: bool) {
        let mut guard = self.sshd.lock().unwrap();
        let mut doomed = Vec::new();
        if let Some(child) = guard.as_ref() {
            doomed = descendants(child.id());
        }
        if everything {
            doomed.extend(processes_of(&self.root));
        } else if let Some(service) = self.service_pid() {
            doomed.retain(|&p| p != service);
        }
        if let Some(mut child) = guard.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        signal("KILL", &doomed);
    }
}

fn pub_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// `ssh-ed25519 AAAA…` of a key pair (the comment dropped).
fn public_key(key: &Path) -> String {
    let text = fs::read_to_string(pub_path(key)).unwrap();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The unit's root: the folders of a Nano, the facts files and the fake tools.
fn populate_root(root: &Path, health_port: u16) {
    let text = root.to_str().unwrap();
    for d in [
        "bin",
        "etc/trident-test/faults",
        "etc/trident-test/enabled",
        "etc/systemd/system",
        "opt",
        "run",
        "tmp",
        "var/lib/dpkg",
        "var/lib/nvpmodel",
        "var/log",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(
        root.join("etc/trident-test/health_port"),
        format!("{health_port}\n"),
    )
    .unwrap();
    fs::write(
        root.join("etc/nv_tegra_release"),
        format!("{NANO_L4T_RELEASE}\n"),
    )
    .unwrap();
    fs::write(root.join("var/lib/nvpmodel/status"), "0\n").unwrap();
    fs::write(root.join("var/lib/dpkg/status"), DPKG_STATUS).unwrap();
    for (tool, script) in scripts::all(text) {
        install_script(&root.join("bin").join(tool), &script);
    }
}

const DPKG_STATUS: &str = "\
Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 12989
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u14
Description: GNU C Library: Shared libraries

Package: libnvinfer8
Status: install ok installed
Priority: optional
Section: multiverse/libs
Installed-Size: 356413
Maintainer: cudatools <cudatools@nvidia.com>
Architecture: amd64
Source: tensorrt
Version: 8.2.1-1+cuda10.2
Description: TensorRT runtime libraries

Package: libgstreamer1.0-0
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 3196
Maintainer: Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>
Architecture: arm64
Multi-Arch: same
Source: gstreamer1.0
Version: 1.14.5-0ubuntu1~18.04.2
Description: Core GStreamer libraries and elements

Package: gstreamer1.0-tools
Status: install ok installed
Priority: optional
Section: utils
Installed-Size: 109
Maintainer: Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>
Architecture: amd64
Source: gstreamer1.0
Version: 1.14.5-0ubuntu1~18.04.2
Description: Tools for use with GStreamer

";
