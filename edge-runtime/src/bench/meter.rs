//! A background sampler for the benchmark: integrates the power sensor's readings into energy
//! and tracks the machine's peak memory in use, so that each phase of a run can ask "how many
//! joules and how much memory since this mark" without the measuring loop reading sysfs between
//! frames (which would show up in the frame times it measures).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::governor::PowerSource;

/// How often the sensor and `/proc/meminfo` are read. INA3221 updates its registers every few
/// milliseconds; 50 ms keeps the error of a phase boundary below one sample of a 1 s phase.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct State {
    /// Joules integrated up to `last`.
    energy_j: f64,
    /// The latest reading and when it was taken.
    last_w: Option<f64>,
    last: Option<Instant>,
    samples: u64,
    errors: u64,
    last_error: Option<String>,
    /// Highest memory in use since the last [`Meter::reset_memory_peak`] (MiB).
    peak_system_mib: Option<f64>,
}

/// A point in time to measure from.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    at: Instant,
    energy_j: f64,
    samples: u64,
    errors: u64,
}

/// What happened between a mark and now.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub seconds: f64,
    /// `None` without a sensor, or when no reading succeeded in the window.
    pub energy_j: Option<f64>,
    pub samples: u64,
    pub errors: u64,
}

impl Window {
    pub fn average_w(&self) -> Option<f64> {
        self.energy_j
            .filter(|_| self.seconds > 0.0)
            .map(|e| e / self.seconds)
    }
}

/// The sampler thread and what it has gathered.
pub struct Meter {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    sensor: Option<String>,
}

impl Meter {
    /// Starts sampling `sensor` (None: memory only) and `root`/proc/meminfo.
    pub fn start(sensor: Option<Box<dyn PowerSource>>, root: PathBuf) -> Meter {
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let name = sensor.as_ref().map(|s| s.name().to_string());
        let thread = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("bench-meter".into())
                .spawn(move || sample(sensor, &root, &state, &stop))
                .ok()
        };
        let meter = Meter {
            state,
            stop,
            thread,
            sensor: name,
        };
        // The first reading anchors the integral; wait for it so that a mark taken right after
        // `start` already measures.
        let deadline = Instant::now() + Duration::from_secs(2);
        while meter.sensor.is_some()
            && meter.lock().samples == 0
            && meter.lock().errors == 0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        meter
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sensor's name, when there is one.
    pub fn sensor(&self) -> Option<&str> {
        self.sensor.as_deref()
    }

    /// The latest sensor error, if any reading failed.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    pub fn mark(&self) -> Mark {
        let now = Instant::now();
        let s = self.lock();
        Mark {
            at: now,
            energy_j: energy_at(&s, now),
            samples: s.samples,
            errors: s.errors,
        }
    }

    /// Energy and samples from `mark` to now.
    pub fn since(&self, mark: Mark) -> Window {
        let now = Instant::now();
        let s = self.lock();
        let samples = s.samples - mark.samples;
        Window {
            seconds: now.duration_since(mark.at).as_secs_f64(),
            energy_j: (self.sensor.is_some() && samples > 0)
                .then(|| energy_at(&s, now) - mark.energy_j),
            samples,
            errors: s.errors - mark.errors,
        }
    }

    /// Starts a new peak of memory in use (from the current value).
    pub fn reset_memory_peak(&self) {
        self.lock().peak_system_mib = None;
    }

    /// Highest memory in use since the last reset (MiB).
    pub fn memory_peak_mib(&self) -> Option<f64> {
        self.lock().peak_system_mib
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The integral up to `now`, holding the latest reading since it was taken.
fn energy_at(s: &State, now: Instant) -> f64 {
    match (s.last, s.last_w) {
        (Some(t), Some(w)) => s.energy_j + w * now.saturating_duration_since(t).as_secs_f64(),
        _ => s.energy_j,
    }
}

fn sample(
    mut sensor: Option<Box<dyn PowerSource>>,
    root: &std::path::Path,
    state: &Mutex<State>,
    stop: &AtomicBool,
) {
    let t0 = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let memory = super::device::memory_in_use_mib(root);
        let reading = sensor.as_mut().map(|s| {
            let now = Instant::now();
            (now, s.read(now.duration_since(t0).as_secs_f64()))
        });
        {
            let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(m) = memory {
                s.peak_system_mib = Some(s.peak_system_mib.map_or(m, |p| p.max(m)));
            }
            match reading {
                Some((now, Ok(w))) if w.is_finite() && w >= 0.0 => {
                    // A reading is the power of the interval that ends with it: the average
                    // since the last read for RAPL, the present draw for INA3221 and
                    // tegrastats (sampled often enough for the difference not to matter).
                    if let Some(last) = s.last {
                        s.energy_j += w * now.duration_since(last).as_secs_f64();
                    }
                    s.last = Some(now);
                    s.last_w = Some(w);
                    s.samples += 1;
                }
                Some((_, Ok(w))) => {
                    s.errors += 1;
                    s.last_error = Some(format!("implausible reading {w} W"));
                }
                Some((_, Err(e))) => {
                    s.errors += 1;
                    s.last_error = Some(e.to_string());
                }
                None => {}
            }
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governor::Ina3221;

    #[test]
    fn a_constant_draw_integrates_to_power_times_time() {
        let dir = tempfile::tempdir().unwrap();
        let channel = dir.path().join("in_power0_input");
        std::fs::write(&channel, "4200\n").unwrap();
        let sensor = Ina3221::open(channel.clone()).unwrap();
        let meter = Meter::start(Some(Box::new(sensor)), dir.path().to_path_buf());
        assert_eq!(meter.sensor(), Some("ina3221"));
        let mark = meter.mark();
        std::thread::sleep(Duration::from_millis(400));
        let w = meter.since(mark);
        assert!(w.samples >= 3, "{w:?}");
        let avg = w.average_w().unwrap();
        assert!((avg - 4.2).abs() < 0.05, "{avg} W");
        // The draw doubles: the next window sees it.
        std::fs::write(&channel, "8400\n").unwrap();
        std::thread::sleep(Duration::from_millis(120));
        let mark = meter.mark();
        std::thread::sleep(Duration::from_millis(400));
        let avg = meter.since(mark).average_w().unwrap();
        assert!((avg - 8.4).abs() < 0.2, "{avg} W");
        // A sensor that stops reading is counted, not fatal.
        std::fs::remove_file(&channel).unwrap();
        let mark = meter.mark();
        std::thread::sleep(Duration::from_millis(200));
        let w = meter.since(mark);
        assert!(w.errors > 0 && w.samples == 0, "{w:?}");
        assert_eq!(w.energy_j, None);
        assert!(meter.last_error().unwrap().contains("in_power0_input"));
    }

    #[test]
    fn without_a_sensor_only_memory_is_tracked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(
            dir.path().join("proc/meminfo"),
            "MemTotal:        4059272 kB\nMemFree:          100000 kB\nMemAvailable:    2011016 kB\n",
        )
        .unwrap();
        let meter = Meter::start(None, dir.path().to_path_buf());
        let mark = meter.mark();
        std::thread::sleep(Duration::from_millis(120));
        let w = meter.since(mark);
        assert_eq!((w.energy_j, w.average_w()), (None, None));
        let peak = meter.memory_peak_mib().unwrap();
        assert!(
            (peak - (4059272.0 - 2011016.0) / 1024.0).abs() < 0.01,
            "{peak}"
        );
        meter.reset_memory_peak();
        assert_eq!(meter.memory_peak_mib(), None);
    }
}
