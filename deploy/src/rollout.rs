//! Rolling a package out to many units: the canaries first, as a wave of their own, then the
//! rest with at most `max_parallel` units in flight. A canary that does not end on the new
//! release (failed, or rolled back by its health gate) stops the rollout before any other unit
//! is touched.
//!
//! Each unit's push is blocking work (OpenSSH child processes), so the tokio runtime runs them
//! on its blocking pool and a semaphore bounds how many are in flight; units start in
//! inventory order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use trident_core::package::Manifest;

use crate::error::{Error, Result};
use crate::inventory::Unit;
use crate::push::{Outcome, PushOptions, Report, push_unit};
use crate::ssh::Ssh;

/// How a rollout proceeds.
#[derive(Clone, Debug)]
pub struct RolloutOptions {
    /// Units updated first (clamped to the number selected); one failing stops the rollout.
    pub canary: usize,
    /// Units in flight at once, canaries included.
    pub max_parallel: usize,
    pub push: PushOptions,
}

/// Which wave a unit was in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wave {
    Canary,
    Main,
}

impl Wave {
    pub fn label(self) -> &'static str {
        match self {
            Wave::Canary => "canary",
            Wave::Main => "main",
        }
    }
}

/// How one unit's part of a rollout ended.
#[derive(Debug)]
pub enum UnitResult {
    /// The push ran to an end: updated, already current, or rolled back by the health gate.
    Finished(Outcome),
    /// The push stopped with an error; the unit is on the release it had (see the error).
    Failed(Error),
    /// Not attempted, and why.
    Skipped(String),
}

impl UnitResult {
    /// True when the unit ends on the package's release.
    pub fn succeeded(&self) -> bool {
        matches!(
            self,
            UnitResult::Finished(Outcome::Updated { .. } | Outcome::AlreadyCurrent(_))
        )
    }

    /// One line for a summary.
    pub fn describe(&self) -> String {
        match self {
            UnitResult::Finished(Outcome::Updated { from, to, doctor }) => {
                let doctor = doctor
                    .as_ref()
                    .map(|d| format!(" (doctor: {d})"))
                    .unwrap_or_default();
                match from {
                    Some(from) => format!("updated {from} → {to}{doctor}"),
                    None => format!("installed {to}{doctor}"),
                }
            }
            UnitResult::Finished(Outcome::AlreadyCurrent(v)) => format!("already on {v}"),
            UnitResult::Finished(Outcome::RolledBack { failed, to, why }) => {
                format!("ROLLED BACK to {to}: {failed} was not healthy ({why})")
            }
            UnitResult::Failed(e) => format!("FAILED: {e}"),
            UnitResult::Skipped(why) => format!("skipped: {why}"),
        }
    }
}

/// One unit's line of a rollout's result.
#[derive(Debug)]
pub struct UnitReport {
    pub unit: String,
    pub wave: Wave,
    pub result: UnitResult,
    pub elapsed: Duration,
}

/// What the caller sees of a rollout while it runs (progress bars, logs).
pub trait Progress: Send + Sync {
    /// `unit` starts; its steps and upload progress go to the returned reporter.
    fn started(&self, unit: &Unit, wave: Wave) -> Arc<dyn Report + Send + Sync>;
    /// `report.unit` is done (or skipped).
    fn finished(&self, report: &UnitReport);
}

/// No display.
pub struct Quiet;

impl Progress for Quiet {
    fn started(&self, _: &Unit, _: Wave) -> Arc<dyn Report + Send + Sync> {
        Arc::new(())
    }
    fn finished(&self, _: &UnitReport) {}
}

/// Pushes `package` to `units`: canaries, then the rest. Returns one report per unit, in the
/// order given.
pub fn rollout(
    ssh: &Ssh,
    units: &[Unit],
    package: &Path,
    manifest: &Manifest,
    opts: &RolloutOptions,
    progress: Arc<dyn Progress>,
) -> Result<Vec<UnitReport>> {
    if opts.max_parallel == 0 {
        return Err(Error::inventory("--max-parallel", "must be at least 1"));
    }
    let job = Arc::new(PushJob {
        ssh: ssh.clone(),
        package: package.to_path_buf(),
        manifest: manifest.clone(),
        opts: opts.push.clone(),
    });
    let canaries = opts.canary.min(units.len());
    let (canary_units, main_units) = units.split_at(canaries);
    runtime()?.block_on(async {
        let push = |wave: Wave| {
            let job = job.clone();
            let progress = progress.clone();
            move |unit: &Unit| {
                let reporter = progress.started(unit, wave);
                let started = Instant::now();
                let result = match push_unit(
                    &job.ssh,
                    unit,
                    &job.package,
                    &job.manifest,
                    &job.opts,
                    &*reporter,
                ) {
                    Ok(outcome) => UnitResult::Finished(outcome),
                    Err(e) => UnitResult::Failed(e),
                };
                let report = UnitReport {
                    unit: unit.name.clone(),
                    wave,
                    result,
                    elapsed: started.elapsed(),
                };
                progress.finished(&report);
                report
            }
        };
        let mut reports = for_each_unit(canary_units, opts.max_parallel, push(Wave::Canary)).await;
        let failed_canary = reports.iter().find(|r| !r.result.succeeded());
        match failed_canary {
            Some(canary) => {
                let why = format!("canary {} did not take the release", canary.unit);
                tracing::warn!("{why}; the rollout stops");
                for unit in main_units {
                    let report = UnitReport {
                        unit: unit.name.clone(),
                        wave: Wave::Main,
                        result: UnitResult::Skipped(why.clone()),
                        elapsed: Duration::ZERO,
                    };
                    progress.finished(&report);
                    reports.push(report);
                }
            }
            None => {
                reports.extend(for_each_unit(main_units, opts.max_parallel, push(Wave::Main)).await)
            }
        }
        Ok(reports)
    })
}

struct PushJob {
    ssh: Ssh,
    package: PathBuf,
    manifest: Manifest,
    opts: PushOptions,
}

/// A runtime for one command: blocking work runs on its pool, so one thread drives it.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Error::Io {
            action: "cannot start the async runtime",
            path: PathBuf::from("tokio"),
            source: e,
        })
}

/// Runs blocking `work` for every unit (provisioning, status), at most `max_parallel` at once;
/// results come back in the order given.
pub fn each_unit<T, F>(units: &[Unit], max_parallel: usize, work: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(&Unit) -> T + Send + Sync + 'static,
{
    Ok(runtime()?.block_on(for_each_unit(units, max_parallel, work)))
}

/// Runs blocking `work` for every unit, at most `max_parallel` at once, starting them in the
/// given order; results come back in that order.
pub(crate) async fn for_each_unit<T, F>(units: &[Unit], max_parallel: usize, work: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(&Unit) -> T + Send + Sync + 'static,
{
    let work = Arc::new(work);
    let slots = Arc::new(Semaphore::new(max_parallel.max(1)));
    let mut tasks = JoinSet::new();
    for (i, unit) in units.iter().enumerate() {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let work = work.clone();
        let unit = unit.clone();
        tasks.spawn_blocking(move || {
            let _slot = slot;
            (i, work(&unit))
        });
    }
    let mut results: Vec<Option<T>> = (0..units.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, value)) => results[i] = Some(value),
            // A panic in a unit's work is a bug; surface it rather than lose the unit.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every task reported"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::PowerMode;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn unit(name: &str) -> Unit {
        Unit {
            name: name.into(),
            host: name.into(),
            port: None,
            user: None,
            tags: vec![],
            power_mode: PowerMode::Maxn,
            root: "/".into(),
            health_addr: ([127, 0, 0, 1], 8080).into(),
        }
    }

    #[test]
    fn for_each_unit_bounds_concurrency_and_keeps_order() {
        let units: Vec<Unit> = (0..9).map(|i| unit(&format!("u{i}"))).collect();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(Mutex::new(Vec::new()));
        let (f, p, s) = (in_flight.clone(), peak.clone(), started.clone());
        let names = runtime()
            .unwrap()
            .block_on(for_each_unit(&units, 3, move |u| {
                s.lock().unwrap().push(u.name.clone());
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(40));
                f.fetch_sub(1, Ordering::SeqCst);
                u.name.clone()
            }));
        let expected: Vec<String> = units.iter().map(|u| u.name.clone()).collect();
        assert_eq!(names, expected);
        assert_eq!(
            peak.load(Ordering::SeqCst),
            3,
            "three in flight at most, and used"
        );
        // Slots are granted in order: u0..u2 start before any later unit.
        let started = started.lock().unwrap();
        let mut first: Vec<String> = started[..3].to_vec();
        first.sort();
        assert_eq!(first, ["u0", "u1", "u2"]);
    }

    #[test]
    fn one_slot_runs_units_one_after_another() {
        let units: Vec<Unit> = (0..4).map(|i| unit(&format!("u{i}"))).collect();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let f = in_flight.clone();
        let overlaps = runtime()
            .unwrap()
            .block_on(for_each_unit(&units, 1, move |_| {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                std::thread::sleep(Duration::from_millis(10));
                f.fetch_sub(1, Ordering::SeqCst);
                now
            }));
        assert_eq!(overlaps, [1, 1, 1, 1]);
    }
}
