//! The stand-in's reading of `trident-edge.service` and its drop-ins
//! (`trident-edge.service.d/*.conf`, applied in lexical order after the file, as systemd does).
//!
//! Stricter than systemd 237 where systemd only warns: an unknown key, a bad value, a second
//! `ExecStart=`, an Exec prefix or specifier the stand-in does not model are load errors that
//! name the file and line (systemd logs a warning, ignores the line and starts anyway).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::syntax::{assignments, parse_timespan, signal, specifiers, valid_name, words};

use rustix::process::Signal;

/// The one unit the stand-in knows.
pub(crate) const UNIT: &str = "trident-edge.service";
/// Where systemd reads it on the unit (under `R` here).
pub(crate) const REMOTE_PATH: &str = "/etc/systemd/system/trident-edge.service";

/// Keys systemd 237 knows that the stand-in reads but does not apply (documented in the module
/// docs of `fleet::systemd`): accepted so that the real unit loads, recorded in the manager's log.
const NOT_MODELLED: &[(&str, &str)] = &[
    ("Unit", "Documentation"),
    ("Unit", "After"),
    ("Unit", "Before"),
    ("Unit", "Wants"),
    ("Unit", "Requires"),
    ("Unit", "BindsTo"),
    ("Unit", "PartOf"),
    ("Unit", "Conflicts"),
    ("Unit", "DefaultDependencies"),
    ("Service", "User"),
    ("Service", "Group"),
    ("Service", "SupplementaryGroups"),
    ("Service", "ProtectSystem"),
    ("Service", "ProtectHome"),
    ("Service", "ReadWritePaths"),
    ("Service", "ReadOnlyPaths"),
    ("Service", "NoNewPrivileges"),
    ("Service", "PrivateTmp"),
    ("Service", "PrivateDevices"),
    ("Service", "LimitNOFILE"),
    ("Service", "Nice"),
    ("Service", "UMask"),
    ("Install", "RequiredBy"),
    ("Install", "Alias"),
    ("Install", "Also"),
];

/// `Restart=` values the stand-in models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Restart {
    No,
    Always,
    OnFailure,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotifyAccess {
    None,
    Main,
    Exec,
    All,
}

/// One `ExecStart*=` line: its flags and its words before `$` expansion (specifiers resolved).
#[derive(Clone, Debug)]
pub(crate) struct ExecCommand {
    /// `-`: a failure is ignored.
    pub ignore_failure: bool,
    /// `+`: systemd runs it with full privileges; here everything runs as the test's user, the
    /// flag is only recorded.
    pub privileged: bool,
    pub words: Vec<String>,
}

impl ExecCommand {
    /// `ExecStartPre=-/bin/true x` as `systemctl status` shows it.
    pub fn shown(&self) -> String {
        format!(
            "{}{}{}",
            if self.ignore_failure { "-" } else { "" },
            if self.privileged { "+" } else { "" },
            self.words.join(" ")
        )
    }
}

/// The loaded unit: the file plus drop-ins, with systemd's defaults for what they leave unset.
#[derive(Clone, Debug)]
pub(crate) struct UnitFile {
    pub description: String,
    /// The drop-in files applied (host paths), in order.
    pub dropins: Vec<PathBuf>,
    /// The modification times of the file and the drop-ins at load (systemd's
    /// `NeedDaemonReload=` compares them with the disk).
    pub stamps: Stamps,
    pub exec_start_pre: Vec<ExecCommand>,
    pub exec_start: ExecCommand,
    pub exec_start_post: Vec<ExecCommand>,
    pub environment: Vec<(String, String)>,
    /// `(path on the unit, optional)`.
    pub environment_files: Vec<(String, bool)>,
    /// `(path on the unit, optional)`.
    pub working_directory: Option<(String, bool)>,
    /// `None`: infinity.
    pub timeout_start: Option<Duration>,
    pub timeout_stop: Option<Duration>,
    pub restart: Restart,
    pub restart_sec: Duration,
    pub watchdog: Option<Duration>,
    pub notify_access: NotifyAccess,
    pub start_limit_interval: Duration,
    pub start_limit_burst: u32,
    pub kill_signal: (String, Signal),
    pub cache_directories: Vec<String>,
    /// `Key=` of every accepted but not modelled setting, for the manager's log.
    pub not_modelled: Vec<String>,
}

/// What `NeedDaemonReload=` compares: each file's path and modification time.
pub(crate) type Stamps = Vec<(PathBuf, Option<SystemTime>)>;

/// The unit file and its drop-ins as they are on disk now.
pub(crate) fn stamps_on_disk(root: &Path) -> Stamps {
    let file = root.join(REMOTE_PATH.trim_start_matches('/'));
    std::iter::once(file.clone())
        .chain(dropin_paths(&file))
        .map(|p| {
            let t = fs::metadata(&p).and_then(|m| m.modified()).ok();
            (p, t)
        })
        .collect()
}

fn dropin_paths(file: &Path) -> Vec<PathBuf> {
    let mut dir = file.as_os_str().to_owned();
    dir.push(".d");
    let mut out: Vec<PathBuf> = fs::read_dir(PathBuf::from(dir))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Why the unit is not loaded.
#[derive(Clone, Debug)]
pub(crate) enum LoadError {
    NotFound,
    Bad(String),
}

/// Loads `R/etc/systemd/system/trident-edge.service` and its drop-ins.
pub(crate) fn load(root: &Path) -> Result<UnitFile, LoadError> {
    let file = root.join(REMOTE_PATH.trim_start_matches('/'));
    let stamps = stamps_on_disk(root);
    let text = match fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::NotFound),
        Err(e) => return Err(LoadError::Bad(format!("{}: {e}", file.display()))),
    };
    let mut b = Builder::default();
    b.apply(&file, &text).map_err(LoadError::Bad)?;
    let dropins = dropin_paths(&file);
    for d in &dropins {
        let text =
            fs::read_to_string(d).map_err(|e| LoadError::Bad(format!("{}: {e}", d.display())))?;
        b.apply(d, &text).map_err(LoadError::Bad)?;
    }
    b.finish(dropins, stamps).map_err(LoadError::Bad)
}

/// The `[Install]` targets of the file on disk (what `systemctl enable` reads; it does not need
/// the loaded copy).
pub(crate) fn install_targets(root: &Path) -> Option<Vec<String>> {
    let file = root.join(REMOTE_PATH.trim_start_matches('/'));
    let text = fs::read_to_string(file).ok()?;
    let mut out = Vec::new();
    for (_, section, key, value) in assignments(&text).ok()? {
        if section == "Install" && matches!(key.as_str(), "WantedBy" | "RequiredBy" | "Alias") {
            out.extend(value.split_whitespace().map(String::from));
        }
    }
    Some(out)
}

#[derive(Default)]
struct Builder {
    description: Option<String>,
    pre: Vec<ExecCommand>,
    start: Vec<ExecCommand>,
    post: Vec<ExecCommand>,
    environment: Vec<(String, String)>,
    environment_files: Vec<(String, bool)>,
    working_directory: Option<(String, bool)>,
    service_type: Option<String>,
    timeout_start: Option<Option<Duration>>,
    timeout_stop: Option<Option<Duration>>,
    restart: Option<Restart>,
    restart_sec: Option<Duration>,
    watchdog: Option<Duration>,
    notify_access: Option<NotifyAccess>,
    start_limit_interval: Option<Duration>,
    start_limit_burst: Option<u32>,
    kill_signal: Option<(String, Signal)>,
    cache_directories: Vec<String>,
    not_modelled: Vec<String>,
}

impl Builder {
    fn apply(&mut self, path: &Path, text: &str) -> Result<(), String> {
        let lines = assignments(text).map_err(|(n, e)| format!("{}:{n}: {e}", path.display()))?;
        for (n, section, key, value) in lines {
            self.set(&section, &key, &value)
                .map_err(|e| format!("{}:{n}: [{section}] {key}={value}: {e}", path.display()))?;
        }
        Ok(())
    }

    fn set(&mut self, section: &str, key: &str, value: &str) -> Result<(), String> {
        let time = |v: &str| parse_timespan(v).ok_or_else(|| format!("not a time span: {v:?}"));
        // systemd: 0 disables these timeouts, as infinity does.
        let timeout = |v: &str| time(v).map(|d| d.filter(|d| !d.is_zero()));
        let finite = |v: &str| time(v)?.ok_or_else(|| "infinity is not allowed here".to_string());
        match (section, key) {
            ("Unit", "Description") => self.description = Some(value.to_string()),
            ("Unit", "StartLimitIntervalSec") | ("Service", "StartLimitInterval") => {
                self.start_limit_interval = Some(finite(value)?)
            }
            ("Unit", "StartLimitBurst") | ("Service", "StartLimitBurst") => {
                self.start_limit_burst = Some(value.parse().map_err(|_| "not a number")?)
            }
            ("Service", "Type") => self.service_type = Some(value.to_string()),
            ("Service", "ExecStartPre") => exec_list(&mut self.pre, value)?,
            ("Service", "ExecStart") => exec_list(&mut self.start, value)?,
            ("Service", "ExecStartPost") => exec_list(&mut self.post, value)?,
            ("Service", "Environment") => {
                if value.is_empty() {
                    self.environment.clear();
                }
                for word in words(value)? {
                    let word = specifiers(&word)?;
                    let (k, v) = word
                        .split_once('=')
                        .filter(|(k, _)| valid_name(k))
                        .ok_or_else(|| format!("{word:?} is not an assignment NAME=VALUE"))?;
                    self.environment.retain(|(e, _)| e != k);
                    self.environment.push((k.to_string(), v.to_string()));
                }
            }
            ("Service", "EnvironmentFile") => {
                if value.is_empty() {
                    self.environment_files.clear();
                } else {
                    self.environment_files.push(optional_path(value)?);
                }
            }
            ("Service", "WorkingDirectory") => {
                self.working_directory = (!value.is_empty())
                    .then(|| optional_path(value))
                    .transpose()?
            }
            ("Service", "TimeoutStartSec") => self.timeout_start = Some(timeout(value)?),
            ("Service", "TimeoutStopSec") => self.timeout_stop = Some(timeout(value)?),
            ("Service", "TimeoutSec") => {
                self.timeout_start = Some(timeout(value)?);
                self.timeout_stop = Some(timeout(value)?);
            }
            ("Service", "Restart") => {
                self.restart = Some(match value {
                    "no" => Restart::No,
                    "always" => Restart::Always,
                    "on-failure" => Restart::OnFailure,
                    _ => return Err("the stand-in models no, always and on-failure".into()),
                })
            }
            ("Service", "RestartSec") => self.restart_sec = Some(finite(value)?),
            ("Service", "WatchdogSec") => self.watchdog = Some(timeout(value)?.unwrap_or_default()),
            ("Service", "NotifyAccess") => {
                self.notify_access = Some(match value {
                    "none" => NotifyAccess::None,
                    "main" => NotifyAccess::Main,
                    "exec" => NotifyAccess::Exec,
                    "all" => NotifyAccess::All,
                    _ => return Err("expected none, main, exec or all".into()),
                })
            }
            ("Service", "KillSignal") => self.kill_signal = Some(signal(value)?),
            ("Service", "KillMode") if value == "control-group" => {}
            ("Service", "KillMode") => {
                return Err("the stand-in models only KillMode=control-group".into());
            }
            ("Service", "CacheDirectory") => {
                if value.is_empty() {
                    self.cache_directories.clear();
                }
                for d in value.split_whitespace() {
                    if d.starts_with('/') || d.split('/').any(|c| c == "..") {
                        return Err(format!("{d:?} must be a relative path below /var/cache"));
                    }
                    self.cache_directories.push(d.to_string());
                }
            }
            // Read from the disk by `enable` ([`install_targets`]), as systemctl does.
            ("Install", "WantedBy") => {}
            _ if NOT_MODELLED.contains(&(section, key)) => {
                let k = format!("{key}=");
                if !self.not_modelled.contains(&k) {
                    self.not_modelled.push(k);
                }
            }
            ("Unit" | "Service" | "Install", _) => {
                return Err(format!(
                    "unknown key, or one the fleet's systemd stand-in does not model, in [{section}] \
                     (systemd 237 would warn and ignore a misspelt key)"
                ));
            }
            _ => return Err(format!("unknown section [{section}]")),
        }
        Ok(())
    }

    fn finish(self, dropins: Vec<PathBuf>, stamps: Stamps) -> Result<UnitFile, String> {
        let file = REMOTE_PATH;
        match self.service_type.as_deref() {
            Some("notify") => {}
            other => {
                return Err(format!(
                    "{file}: Type={} is not modelled: the fleet's systemd stand-in runs Type=notify services only",
                    other.unwrap_or("(unset, i.e. simple)")
                ));
            }
        }
        let mut start = self.start;
        if start.len() > 1 {
            return Err(format!(
                "{file}: Service has more than one ExecStart= setting, which is only allowed for Type=oneshot services. Refusing."
            ));
        }
        let exec_start = start.pop().ok_or_else(|| {
            format!("{file}: Service lacks both ExecStart= and ExecStop= setting. Refusing.")
        })?;
        Ok(UnitFile {
            description: self.description.unwrap_or_else(|| UNIT.to_string()),
            dropins,
            stamps,
            exec_start_pre: self.pre,
            exec_start,
            exec_start_post: self.post,
            environment: self.environment,
            environment_files: self.environment_files,
            working_directory: self.working_directory,
            // systemd 237's DefaultTimeoutStartSec= and DefaultTimeoutStopSec=.
            timeout_start: self.timeout_start.unwrap_or(Some(Duration::from_secs(90))),
            timeout_stop: self.timeout_stop.unwrap_or(Some(Duration::from_secs(90))),
            restart: self.restart.unwrap_or(Restart::No),
            restart_sec: self.restart_sec.unwrap_or(Duration::from_millis(100)),
            watchdog: self.watchdog.filter(|d| !d.is_zero()),
            // Type=notify without NotifyAccess=: main.
            notify_access: self.notify_access.unwrap_or(NotifyAccess::Main),
            start_limit_interval: self.start_limit_interval.unwrap_or(Duration::from_secs(10)),
            start_limit_burst: self.start_limit_burst.unwrap_or(5),
            kill_signal: self
                .kill_signal
                .unwrap_or_else(|| ("SIGTERM".into(), Signal::TERM)),
            cache_directories: self.cache_directories,
            not_modelled: self.not_modelled,
        })
    }
}

/// `[-+]/abs/path words…`, or empty: clears the list.
fn exec_list(list: &mut Vec<ExecCommand>, value: &str) -> Result<(), String> {
    if value.is_empty() {
        list.clear();
        return Ok(());
    }
    let mut rest = value;
    let (mut ignore_failure, mut privileged) = (false, false);
    loop {
        match rest.chars().next() {
            Some('-') if !ignore_failure => ignore_failure = true,
            Some('+') if !privileged => privileged = true,
            Some(c @ ('@' | '!' | ':')) => {
                return Err(format!(
                    "the Exec prefix `{c}` is not modelled by the stand-in (only `-` and `+`)"
                ));
            }
            _ => break,
        }
        rest = &rest[1..];
    }
    let mut out = Vec::new();
    for w in words(rest)? {
        if w == ";" {
            return Err("several commands on one Exec line (`;`) are not modelled".into());
        }
        out.push(specifiers(&w)?);
    }
    match out.first() {
        Some(p) if p.starts_with('/') => {}
        Some(p) => return Err(format!("Executable path is not absolute: {p}")),
        None => return Err("empty command".into()),
    }
    list.push(ExecCommand {
        ignore_failure,
        privileged,
        words: out,
    });
    Ok(())
}

fn optional_path(value: &str) -> Result<(String, bool), String> {
    let (path, optional) = match value.strip_prefix('-') {
        Some(p) => (p, true),
        None => (value, false),
    };
    let path = specifiers(path)?;
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    Ok((path, optional))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_unit_loads_and_a_misspelt_key_does_not() {
        let text =
            fs::read_to_string(crate::workspace_root().join("deploy/systemd/trident-edge.service"))
                .unwrap();
        let mut b = Builder::default();
        b.apply(Path::new("trident-edge.service"), &text).unwrap();
        let u = b.finish(vec![], vec![]).unwrap();
        assert_eq!(
            u.exec_start.words[0],
            "/opt/trident/current/bin/trident-edge"
        );
        assert!(
            u.exec_start
                .words
                .iter()
                .any(|w| w.ends_with("/profiles/${TRIDENT_PROFILE}.yaml"))
        );
        assert_eq!(u.restart, Restart::Always);
        assert_eq!(u.watchdog, Some(Duration::from_secs(30)));
        assert_eq!(
            u.environment_files,
            [("/opt/trident/unit.env".to_string(), true)]
        );
        let mut b = Builder::default();
        let err = b
            .apply(Path::new("x.conf"), "[Service]\nRestartSecs=1\n")
            .unwrap_err();
        assert!(
            err.contains("x.conf:2") && err.contains("RestartSecs"),
            "{err}"
        );
        // systemd 237 reads StartLimitIntervalSec= only in [Unit].
        let mut b = Builder::default();
        assert!(
            b.apply(Path::new("x.conf"), "[Service]\nStartLimitIntervalSec=5\n")
                .is_err()
        );
    }
}
