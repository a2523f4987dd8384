//! tegrastats as a power source: the rail reading (`POM_5V_IN 2700/2700`, current/average mW)
//! from the log file tegrastats writes with `--logfile`. Tailing a file keeps reads non-blocking
//! and lets tests feed lines without a process.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Watts;
use super::power::{PowerSource, under};
use crate::error::{Error, Result};
use trident_core::profile::TegrastatsConfig;

/// The current reading of `rail` in a tegrastats line, in watts. Accepts JetPack 4's
/// `POM_5V_IN 2700/2700` and later releases' `VDD_IN 2700mW/2700mW`.
pub fn parse_rail(line: &str, rail: &str) -> Option<Watts> {
    let mut tokens = line.split_whitespace();
    tokens.find(|t| *t == rail)?;
    let current = tokens.next()?.split('/').next()?;
    let mw: f64 = current.trim_end_matches("mW").parse().ok()?;
    mw.is_finite().then_some(mw / 1e3)
}

/// Reads the newest `rail` value from a growing tegrastats log file.
#[derive(Debug)]
pub struct Tegrastats {
    logfile: PathBuf,
    rail: String,
    offset: u64,
    /// A reading older than this (seconds on the governor's clock) is an error.
    stale_after_s: f64,
    last: Option<Watts>,
    last_new_at: f64,
    child: Option<Child>,
}

impl Tegrastats {
    /// Follows `logfile` from its current end at time `now`.
    pub fn from_logfile(
        logfile: PathBuf,
        rail: &str,
        stale_after_s: f64,
        now: f64,
    ) -> Result<Tegrastats> {
        let offset = std::fs::metadata(&logfile).map(|m| m.len()).unwrap_or(0);
        Ok(Tegrastats {
            logfile,
            rail: rail.to_string(),
            offset,
            stale_after_s,
            last: None,
            last_new_at: now,
            child: None,
        })
    }

    /// Starts `tegrastats --interval MS --logfile FILE` (the binary resolved under `root`) and
    /// waits up to three intervals of real time for a first reading of the rail.
    pub fn spawn(config: &TegrastatsConfig, root: &Path, now: f64) -> Result<Tegrastats> {
        let binary = under(root, &config.binary);
        if !binary.is_file() {
            return Err(Error::Power(format!("{} not found", binary.display())));
        }
        let logfile = config.logfile.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("trident-tegrastats-{}.log", std::process::id()))
        });
        let interval = f64::from(config.interval_ms) / 1e3;
        let mut source = Tegrastats::from_logfile(
            logfile.clone(),
            &config.rail,
            (3.0 * interval).max(5.0),
            now,
        )?;
        let child = Command::new(&binary)
            .arg("--interval")
            .arg(config.interval_ms.to_string())
            .arg("--logfile")
            .arg(&logfile)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Power(format!("cannot start {}: {e}", binary.display())))?;
        source.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs_f64(3.0 * interval + 0.5);
        loop {
            if source.read(now).is_ok() && source.last.is_some() {
                return Ok(source);
            }
            if Instant::now() >= deadline {
                return Err(Error::Power(format!(
                    "{} wrote no {} reading to {} within {:.1} s",
                    binary.display(),
                    config.rail,
                    logfile.display(),
                    3.0 * interval + 0.5
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Complete lines appended since the last call.
    fn new_lines(&mut self) -> Result<String> {
        let mut file = std::fs::File::open(&self.logfile)
            .map_err(|e| Error::Power(format!("cannot open {}: {e}", self.logfile.display())))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated or replaced: start again from its beginning.
            self.offset = 0;
        }
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(self.offset))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|e| Error::Power(format!("cannot read {}: {e}", self.logfile.display())))?;
        // Leave a partly written last line for the next call.
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.offset += complete as u64;
        Ok(String::from_utf8_lossy(&bytes[..complete]).into_owned())
    }
}

impl PowerSource for Tegrastats {
    fn name(&self) -> &str {
        "tegrastats"
    }

    fn read(&mut self, now: f64) -> Result<Watts> {
        let lines = self.new_lines()?;
        if let Some(w) = lines.lines().rev().find_map(|l| parse_rail(l, &self.rail)) {
            self.last = Some(w);
            self.last_new_at = now;
        }
        match self.last {
            Some(w) if now - self.last_new_at <= self.stale_after_s => Ok(w),
            _ => Err(Error::Power(format!(
                "tegrastats: no {} reading in {} for {:.1} s",
                self.rail,
                self.logfile.display(),
                now - self.last_new_at
            ))),
        }
    }
}

impl Drop for Tegrastats {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
