//! Deterministic simulations of the governor on a virtual clock: a simulated Nano whose true
//! per-model latency and power differ from the profile's estimates, a sensor that reads its true
//! energy (optionally noisy, optionally failing), and the runtime loop the device runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use trident_edge::error::{Error, Result};
use trident_edge::governor::{
    CaptureState, EnergyBudget, Governor, GovernorStats, LevelChange, Pacer, PowerSource, Profile,
};

fn profile(name: &str) -> Profile {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../configs/profiles/{name}.yaml"));
    Profile::load(&path).unwrap()
}

/// The true device: energy drawn so far, at the clock `t`.
#[derive(Default)]
struct Truth {
    t: f64,
    energy_j: f64,
}

/// A Nano that runs 5 % slower and draws 5 % more active power and 0.1 W more idle power than
/// the profile says.
struct SimNano {
    truth: Arc<Mutex<Truth>>,
    idle_w: f64,
    models: BTreeMap<String, (f64, f64)>,
    tta_factor: f64,
}

impl SimNano {
    fn new(p: &Profile) -> SimNano {
        SimNano {
            truth: Arc::default(),
            idle_w: p.estimates.idle_w + 0.1,
            models: p
                .estimates
                .models
                .iter()
                .map(|(n, m)| (n.clone(), (m.latency_ms / 1e3 * 1.05, m.active_w * 1.05)))
                .collect(),
            tta_factor: p.estimates.tta_factor,
        }
    }

    fn idle_until(&self, t: f64) {
        let mut truth = self.truth.lock().unwrap();
        truth.energy_j += self.idle_w * (t - truth.t).max(0.0);
        truth.t = truth.t.max(t);
    }

    /// Runs `model` (all passes); returns the seconds it took.
    fn run(&self, model: &str, tta: bool) -> f64 {
        let (latency, active) = self.models[model];
        let seconds = latency * if tta { self.tta_factor } else { 1.0 };
        let mut truth = self.truth.lock().unwrap();
        truth.energy_j += (self.idle_w + active) * seconds;
        truth.t += seconds;
        seconds
    }

    fn energy_j(&self) -> f64 {
        self.truth.lock().unwrap().energy_j
    }
}

/// Average power since the previous read (an integrating sensor), with deterministic noise of
/// ±`noise` (relative); fails from `fail_from` until `fail_until`.
struct SimSensor {
    truth: Arc<Mutex<Truth>>,
    last: (f64, f64),
    noise: f64,
    seed: u64,
    fail: (f64, f64),
}

impl SimSensor {
    fn new(nano: &SimNano, noise: f64, fail: (f64, f64)) -> SimSensor {
        SimSensor {
            truth: nano.truth.clone(),
            last: (0.0, 0.0),
            noise,
            seed: 0x2545_f491_4f6c_dd1d,
            fail,
        }
    }
}

impl PowerSource for SimSensor {
    fn name(&self) -> &str {
        "sim"
    }

    fn read(&mut self, now: f64) -> Result<f64> {
        if (self.fail.0..self.fail.1).contains(&now) {
            return Err(Error::Power(
                "ina3221: i2c read failed: No such device".into(),
            ));
        }
        let truth = self.truth.lock().unwrap();
        let (t0, e0) = self.last;
        self.last = (now, truth.energy_j);
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let u = (self.seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        Ok((truth.energy_j - e0) / (now - t0).max(1e-9) * (1.0 + self.noise * u))
    }
}

struct Run {
    changes: Vec<LevelChange>,
    frame_starts: Vec<f64>,
    /// (time, true energy) after every frame or pause.
    energy: Vec<(f64, f64)>,
    stats: GovernorStats,
}

impl Run {
    /// True average power over [a, b].
    fn average_w(&self, a: f64, b: f64) -> f64 {
        let at = |t: f64| {
            self.energy
                .iter()
                .rfind(|(s, _)| *s <= t)
                .unwrap_or(&self.energy[0])
        };
        let (ta, ea) = *at(a);
        let (tb, eb) = *at(b);
        (eb - ea) / (tb - ta)
    }

    fn min_dwell(&self) -> f64 {
        let times: Vec<f64> = std::iter::once(0.0)
            .chain(self.changes.iter().map(|c| c.at_s))
            .collect();
        times
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(f64::INFINITY, f64::min)
    }
}

/// The device's loop for `duration` seconds of virtual time.
fn simulate(p: Profile, noise: f64, fail: (f64, f64), duration: f64) -> Run {
    let nano = SimNano::new(&p);
    let sensor = SimSensor::new(&nano, noise, fail);
    let mut governor = Governor::new(p, Some(Box::new(sensor)), 0.0).unwrap();
    let mut pacer = Pacer::new(governor.fps());
    let (mut t, mut run) = (
        0.0,
        Run {
            changes: Vec::new(),
            frame_starts: Vec::new(),
            energy: vec![(0.0, 0.0)],
            stats: governor.stats(),
        },
    );
    while t < duration {
        if let CaptureState::PausedUntil(until) = governor.capture_state(t) {
            run.changes.extend(governor.tick(t));
            t = until.min(duration);
            nano.idle_until(t);
            pacer.reset();
        } else {
            pacer.set_fps(governor.fps());
            let start = t + pacer.delay(t);
            nano.idle_until(start);
            t = start;
            if governor.capture_state(t) == CaptureState::Capturing && t < duration {
                run.frame_starts.push(t);
                let level = governor.level().clone();
                let busy: Vec<(&str, f64)> = level
                    .models
                    .iter()
                    .map(|m| (m.as_str(), nano.run(m, level.tta)))
                    .collect();
                t += busy.iter().map(|b| b.1).sum::<f64>();
                governor.record_frame(t, &busy);
            }
        }
        run.changes.extend(governor.tick(t));
        run.energy.push((t, nano.energy_j()));
    }
    run.stats = governor.stats();
    run
}

#[test]
fn average_power_settles_at_the_cap() {
    let mut p = profile("nano-10w");
    p.budget = None;
    p.power.cap_w = 5.0;
    let run = simulate(p, 0.05, (f64::INFINITY, f64::INFINITY), 1800.0);
    let settled = run.average_w(300.0, 1800.0);
    eprintln!(
        "cap 5.0 W: average {settled:.3} W over 300–1800 s ({:.3} W over the run, governor's \
         {:.3} W); {} level changes, shortest dwell {:.2} s; time per level {:?}",
        run.average_w(0.0, 1800.0),
        run.stats.average_w,
        run.changes.len(),
        run.min_dwell(),
        run.stats
            .level_seconds
            .iter()
            .map(|l| (l.name.as_str(), l.seconds.round()))
            .collect::<Vec<_>>()
    );
    assert!((settled - 5.0).abs() <= 0.05 * 5.0, "average {settled} W");
    // The cap falls between two levels: the governor must alternate, not sit on one.
    let used: Vec<_> = run
        .stats
        .level_seconds
        .iter()
        .filter(|l| l.seconds > 60.0)
        .collect();
    assert_eq!(used.len(), 2, "{:?}", run.stats.level_seconds);
    assert!(run.min_dwell() >= 10.0);
}

#[test]
fn energy_budget_is_spent_but_not_exceeded() {
    let mut p = profile("nano-10w");
    p.power.cap_w = 20.0;
    let budget_j = 4.0 * 3600.0;
    p.budget = Some(EnergyBudget {
        energy_wh: 4.0,
        duration_h: 1.0,
    });
    let run = simulate(p, 0.03, (f64::INFINITY, f64::INFINITY), 3600.0);
    let spent = run.energy.last().unwrap().1;
    eprintln!(
        "budget {budget_j} J over 3600 s: spent {spent:.0} J = {:.3} of it; {} level changes, \
         shortest dwell {:.2} s",
        spent / budget_j,
        run.changes.len(),
        run.min_dwell()
    );
    assert!(
        spent >= 0.9 * budget_j && spent <= budget_j,
        "spent {spent} of {budget_j}"
    );
    // Never ran out before the end.
    assert!(run.energy.iter().all(|&(_, e)| e < budget_j));
    assert!(run.min_dwell() >= 10.0);
}

#[test]
fn level_changes_never_beat_the_minimum_dwell() {
    // A short cap memory, no margins and a noisy sensor make the controller want to switch
    // about every second; only the dwell time holds it.
    let mut p = profile("nano-10w");
    p.budget = None;
    p.power.cap_w = 5.0;
    p.control.cap_horizon_s = 3.0;
    p.control.up_margin = 0.0;
    p.control.down_margin = 0.0;
    p.control.min_dwell_s = 10.0;
    let run = simulate(p, 0.2, (f64::INFINITY, f64::INFINITY), 900.0);
    let dwell = run.min_dwell();
    eprintln!(
        "{} level changes in 900 s, shortest dwell {dwell:.2} s",
        run.changes.len()
    );
    assert!(
        run.changes.len() >= 20,
        "the scenario must push for changes"
    );
    assert!(dwell >= 10.0, "changes {dwell} s apart");
}

#[test]
fn lost_sensor_falls_back_to_the_estimate() {
    let mut p = profile("nano-10w");
    p.budget = None;
    p.power.cap_w = 5.0;
    p.control.sensor_retry_s = 0.0;
    let run = simulate(p.clone(), 0.05, (600.0, f64::INFINITY), 1800.0);
    let s = &run.stats;
    assert_eq!(s.power_source, "estimate");
    assert_eq!(s.fallbacks.len(), 1, "{:?}", s.fallbacks);
    let f = &s.fallbacks[0];
    assert!((600.0..601.0).contains(&f.at_s), "{f:?}");
    assert_eq!(f.source, "sim");
    assert!(f.reason.contains("No such device"), "{f:?}");
    // The estimate, corrected by what the sensor taught it, keeps the device near the cap and
    // keeps counting energy.
    let after = run.average_w(900.0, 1800.0);
    let truth = run.energy.last().unwrap().1;
    eprintln!(
        "sensor lost at {:.1} s: true average {after:.3} W afterwards; energy counted {:.0} J vs \
         true {truth:.0} J",
        f.at_s, s.energy_j
    );
    assert!((after - 5.0).abs() <= 0.05 * 5.0, "{after} W");
    assert!((s.energy_j - truth).abs() <= 0.05 * truth);
    // A sensor that comes back is used again after the retry interval.
    p.control.sensor_retry_s = 30.0;
    let run = simulate(p, 0.05, (600.0, 700.0), 1800.0);
    let f = &run.stats.fallbacks[0];
    assert_eq!(run.stats.power_source, "sim");
    let back = f.recovered_at_s.unwrap();
    assert!((700.0..731.0).contains(&back), "{f:?}");
}

#[test]
fn capture_windows_pause_the_pipeline_and_pacing_counts_the_pauses() {
    let mut p = profile("nano-10w");
    p.power.cap_w = 20.0;
    p.capture = Some(trident_edge::governor::CaptureWindows {
        window_s: 60.0,
        period_s: 300.0,
        offset_s: 0.0,
    });
    // 12 windows in the hour: 720 s capturing, 2880 s paused at ~1.8 W (5.2 kJ), which leaves
    // ~5 W for the windows. Pacing that ignored the pauses would allow 2.5 W and spend ~75 %.
    let budget_j = 2.5 * 3600.0;
    p.budget = Some(EnergyBudget {
        energy_wh: 2.5,
        duration_h: 1.0,
    });
    let run = simulate(p, 0.03, (f64::INFINITY, f64::INFINITY), 3600.0);
    assert!(run.frame_starts.iter().all(|t| t.rem_euclid(300.0) < 60.0));
    assert!(
        run.frame_starts.len() > 12 * 60 * 3,
        "{} frames",
        run.frame_starts.len()
    );
    assert!(
        (run.stats.paused_s - 2880.0).abs() < 5.0,
        "{}",
        run.stats.paused_s
    );
    let spent = run.energy.last().unwrap().1;
    eprintln!(
        "windows 60/300 s, budget {budget_j} J: spent {spent:.0} J = {:.3}; paused {:.0} s; \
         time per level {:?}",
        spent / budget_j,
        run.stats.paused_s,
        run.stats
            .level_seconds
            .iter()
            .map(|l| (l.name.as_str(), l.seconds.round()))
            .collect::<Vec<_>>()
    );
    assert!(
        spent >= 0.9 * budget_j && spent <= budget_j,
        "spent {spent} of {budget_j}"
    );
    assert!(run.energy.iter().all(|&(_, e)| e < budget_j));
}

/// Runs the governor on the model estimate alone with frames that take exactly the profile's
/// latencies, from `t` for `seconds`; returns the new time.
fn run_exact(governor: &mut Governor, mut t: f64, seconds: f64) -> f64 {
    let end = t + seconds;
    while t < end {
        let level = governor.level().clone();
        let passes = if level.tta {
            governor.profile().estimates.tta_factor
        } else {
            1.0
        };
        let busy: Vec<(&str, f64)> = level
            .models
            .iter()
            .map(|m| (m.as_str(), governor.profile().model_latency_s(m) * passes))
            .collect();
        t += 1.0 / governor.fps();
        governor.record_frame(t, &busy);
        governor.tick(t);
    }
    t
}

#[test]
fn up_and_down_margins_are_separate() {
    let mut p = profile("nano-10w");
    p.budget = None;
    p.power.cap_w = 10.0;
    // Without dwell or cap memory, only the margins decide.
    p.control.min_dwell_s = 0.0;
    p.control.cap_horizon_s = 1e9;
    p.control.up_margin = 0.10;
    p.control.down_margin = 0.05;
    let top = p.predicted_power(0);
    let mut g = Governor::new(p, None, 0.0).unwrap();
    let mut t = run_exact(&mut g, 0.0, 20.0);
    assert_eq!(g.level_index(), 0);
    // Over the cap by 3 %: within the down margin, the level holds.
    g.set_power_cap(top / 1.03);
    t = run_exact(&mut g, t, 60.0);
    assert_eq!(g.level_index(), 0, "stepped down inside the down margin");
    // Over by 8 %: down.
    g.set_power_cap(top / 1.08);
    t = run_exact(&mut g, t, 5.0);
    assert_eq!(g.level_index(), 1);
    // 5 % headroom is not the 10 % needed to go back up…
    g.set_power_cap(top * 1.05);
    t = run_exact(&mut g, t, 60.0);
    assert_eq!(g.level_index(), 1, "stepped up inside the up margin");
    // …12 % is.
    g.set_power_cap(top * 1.12);
    run_exact(&mut g, t, 5.0);
    assert_eq!(g.level_index(), 0);
    assert_eq!(g.stats().level_changes, 2);
}

#[test]
fn governor_rejects_an_invalid_profile() {
    let mut p = profile("nano-5w");
    p.ladder[1].fps = 0.0;
    let err = Governor::new(p, None, 0.0)
        .err()
        .expect("invalid profile accepted");
    assert!(err.to_string().contains("ladder[1].fps"), "{err}");
    assert!(err.is_input_error());
}

/// Models out of the ensemble: the governor leaves a level that needs one at once (no dwell),
/// runs the best level whose models are all up, keeps its level when none is whole, and goes
/// back up through the usual control period and dwell once they return.
#[test]
fn levels_whose_models_are_out_are_left_at_once_and_regained_after_the_dwell() {
    let p = profile("nano-10w");
    let best_without = |out: &str| {
        p.ladder
            .iter()
            .position(|l| !l.models.iter().any(|m| m == out))
            .unwrap()
    };
    let dwell = p.control.min_dwell_s;
    let mut g = Governor::new(p.clone(), None, 0.0).unwrap();
    let mut t = 0.0;
    // Settle at the best level the estimate allows.
    for _ in 0..200 {
        t += 0.1;
        g.tick(t);
    }
    let settled = g.level_index();
    let needs_hp = |g: &Governor| g.level().models.iter().any(|m| m == "high_precision");
    assert!(needs_hp(&g), "the settled level runs high_precision");

    let change = g
        .set_models_out(t, &["high_precision"])
        .expect("left at once");
    assert_eq!(change.from, settled);
    assert!(!needs_hp(&g));
    assert!(g.level_index() >= best_without("high_precision"));
    assert!(
        g.set_models_out(t, &["high_precision"]).is_none(),
        "no news"
    );
    for _ in 0..50 {
        t += 0.1;
        g.tick(t);
        assert!(
            !needs_hp(&g),
            "a level needing the model out is never chosen"
        );
    }

    // Every model out: no level is whole, the current one stays.
    let level = g.level_index();
    assert!(
        g.set_models_out(t, &["high_recall", "balanced", "high_precision"])
            .is_none()
    );
    assert_eq!(g.level_index(), level);

    // Back: not at once, but within the dwell and a period.
    assert!(g.set_models_out::<&str>(t, &[]).is_none());
    let back = t;
    while g.level_index() != settled {
        t += 0.1;
        g.tick(t);
        assert!(
            t - back < dwell + 2.0 * p.control.period_s + 1.0,
            "not regained"
        );
    }
}
