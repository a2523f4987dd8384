//! Rollout scaling: the time to push one package to 8 loopback units at once vs to 1 unit
//! (target: ≤ 2×), for a fresh install and for an update, plus the default canary-then-rest
//! rollout. Every unit is a real sshd with its own root and a real `trident-edge` restarted
//! and health-checked, so the figures include upload, verify, prepare, switch and health gate.
//!
//! The units share this machine's cores, which real units do not: on a small host the 8-unit
//! time is an upper bound of what a real fleet sees.
//!
//! `cargo bench -p trident-deploy --bench fleet_push` (needs `target/release/trident-edge`:
//! `cargo xtask bench` builds it).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trident_deploy::inventory::Unit;
use trident_deploy::provision::{ProvisionKit, provision_with};
use trident_deploy::push::{PushOptions, Report};
use trident_deploy::rollout::{Progress, RolloutOptions, UnitReport, Wave, each_unit, rollout};

/// Seconds spent in each step, summed over units.
#[derive(Default)]
struct Steps(Arc<Mutex<BTreeMap<String, f64>>>);

struct UnitSteps {
    total: Arc<Mutex<BTreeMap<String, f64>>>,
    current: Mutex<(String, Instant)>,
}

impl UnitSteps {
    fn close(&self, next: &str) {
        let mut cur = self.current.lock().unwrap();
        let spent = cur.1.elapsed().as_secs_f64();
        *self.total.lock().unwrap().entry(cur.0.clone()).or_default() += spent;
        *cur = (next.to_string(), Instant::now());
    }
}

impl Drop for UnitSteps {
    fn drop(&mut self) {
        self.close("");
    }
}

impl Report for UnitSteps {
    fn step(&self, step: &str) {
        self.close(step);
    }
    fn uploaded(&self, _: u64, _: u64) {}
}

impl Progress for Steps {
    fn started(&self, _: &Unit, _: Wave) -> Arc<dyn Report + Send + Sync> {
        Arc::new(UnitSteps {
            total: self.0.clone(),
            current: Mutex::new(("start".into(), Instant::now())),
        })
    }
    fn finished(&self, _: &UnitReport) {}
}

/// Busy and total CPU time of the whole machine so far (`/proc/stat`, clock ticks).
fn cpu_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU seconds of this process and its waited-for children (the ssh and rsync clients):
/// the rollout's own cost on the host, `/proc/self/stat` fields 14-17.
fn host_cpu_s() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|x| x.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

/// One timed push.
struct Timed {
    wall: Duration,
    slowest: Duration,
    /// Share of the machine's CPU that was busy meanwhile.
    busy: f64,
    /// CPU seconds the host side spent (this process, ssh and rsync clients).
    host_cpu: f64,
}

fn main() {
    let names: Vec<String> = (1..=9).map(|i| format!("nano-{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let started = Instant::now();
    let t = common::TestSetup::new(&refs);
    let units: Vec<Unit> = refs.iter().map(|n| common::unit(&t.fleet, n)).collect();
    let kit = ProvisionKit::prepare(&t.package, &t.public_key).unwrap();
    let ssh = t.ssh.clone();
    for r in each_unit(&units, 9, move |u| provision_with(&ssh, u, &kit, None)).unwrap() {
        r.unwrap();
    }
    let size = std::fs::metadata(&t.package).unwrap().len();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "fleet_push: 9 loopback units provisioned in {:.1} s; package {:.1} MiB; {cores} cores shared by this host and every unit",
        started.elapsed().as_secs_f64(),
        size as f64 / (1 << 20) as f64,
    );

    let push = |units: &[Unit],
                pkg: &std::path::Path,
                canary: usize,
                max_parallel: usize,
                steps: &Steps|
     -> Timed {
        let manifest = t.manifest(pkg);
        let opts = RolloutOptions {
            canary,
            max_parallel,
            push: PushOptions {
                health_timeout_s: 120,
                keep_releases: 3,
                ..Default::default()
            },
        };
        let progress = Arc::new(Steps(steps.0.clone()));
        let (busy0, total0) = cpu_ticks();
        let host0 = host_cpu_s();
        let start = Instant::now();
        let reports = rollout(&t.ssh, units, pkg, &manifest, &opts, progress).unwrap();
        let wall = start.elapsed();
        let (busy1, total1) = cpu_ticks();
        let host_cpu = host_cpu_s() - host0;
        for r in &reports {
            assert!(r.result.succeeded(), "{}: {}", r.unit, r.result.describe());
        }
        Timed {
            wall,
            slowest: reports.iter().map(|r| r.elapsed).max().unwrap_or_default(),
            busy: (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64,
            host_cpu,
        }
    };

    let (one, eight) = (&units[8..], &units[..8]);
    println!(
        "\n{:<30} {:>8} {:>9} {:>9} {:>7} {:>9} {:>13}",
        "case", "1 unit", "8 units", "slowest", "ratio", "CPU busy", "host CPU/unit"
    );
    let row = |label: &str, a: &Timed, b: &Timed| {
        let ratio = b.wall.as_secs_f64() / a.wall.as_secs_f64();
        println!(
            "{label:<30} {:>6.2} s {:>7.2} s {:>7.2} s {:>6.2}× {:>3.0}%|{:>3.0}% {:>5.0}|{:>3.0} ms",
            a.wall.as_secs_f64(),
            b.wall.as_secs_f64(),
            b.slowest.as_secs_f64(),
            ratio,
            a.busy * 100.0,
            b.busy * 100.0,
            a.host_cpu * 1000.0,
            b.host_cpu * 1000.0 / 8.0
        );
        ratio
    };
    // A fresh install once, then three updates: the median update counts.
    let mut breakdown = Vec::new();
    let mut fresh = 0.0;
    let mut updates = Vec::new();
    for (i, version) in ["1.0.0", "1.1.0", "1.2.0", "1.3.0"].into_iter().enumerate() {
        let pkg = if i == 0 {
            t.package.clone()
        } else {
            t.package_version(version)
        };
        let (s1, s8) = (Steps::default(), Steps::default());
        let a = push(one, &pkg, 0, 8, &s1);
        let b = push(eight, &pkg, 0, 8, &s8);
        let label = if i == 0 {
            "fresh install, all at once".to_string()
        } else {
            format!("update {i}, all at once")
        };
        let ratio = row(&label, &a, &b);
        if i == 0 {
            fresh = ratio;
        } else {
            updates.push(ratio);
        }
        breakdown.push((label, s1, s8));
    }
    // The default rollout: one canary, then the other seven together.
    let pkg = t.package_version("1.4.0");
    let a = push(one, &pkg, 0, 8, &Steps::default());
    let b = push(eight, &pkg, 1, 8, &Steps::default());
    row("update, 1 canary then 7", &a, &b);
    // The same 8 units one at a time: what the concurrency buys on this machine.
    let pkg = t.package_version("1.5.0");
    let a = push(one, &pkg, 0, 8, &Steps::default());
    let serial = push(eight, &pkg, 0, 1, &Steps::default());
    row("update, one unit at a time", &a, &serial);

    println!("\nseconds per unit in each step (1 unit | mean of 8 at once):");
    for (label, s1, s8) in &breakdown {
        let (a, b) = (s1.0.lock().unwrap(), s8.0.lock().unwrap());
        let cells: Vec<String> = b
            .iter()
            .filter(|(k, _)| !k.is_empty() && k.as_str() != "start")
            .map(|(k, v)| format!("{k} {:.2}|{:.2}", a.get(k).copied().unwrap_or(0.0), v / 8.0))
            .collect();
        println!("  {label}: {}", cells.join(", "));
    }
    let median = trident_e2e::stats::median(&updates);
    let verdict = |r: f64| if r <= 2.0 { "met" } else { "NOT met" };
    println!(
        "\n8 units at once vs 1 (target ≤ 2×): fresh install {fresh:.2}× ({}), update {median:.2}× (median of {}, {})",
        verdict(fresh),
        updates.len(),
        verdict(median)
    );
    println!(
        "serial would be 8×. Units here share the host's {cores} cores: where CPU busy nears 100% the 8-unit time is bound by this machine, not by the rollout."
    );
}
