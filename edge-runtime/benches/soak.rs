//! The fault soak: the run loop on a looping file source for a long time (default 30 minutes),
//! with a fault injected every few minutes — the camera stalls without an error (5 s), a model's
//! backend fails (10 s), the disk is full for the log (10 s, RLIMIT_FSIZE on this process) — and
//! what came through it: frames processed against frames offered, detection lines lost (none
//! outside the disk-full windows; inside them, only what the memory buffer could not hold), RSS
//! growth, and the time from the end of each fault until the runtime is whole again.
//!
//! `cargo xtask soak [--minutes 30] [--fault-every 180] [--fps 15] [--buffer-kib 16]`, which runs
//! `cargo bench -p trident-edge --bench soak -- …`. The models are two copies of the tiny YOLOv8
//! fixture through tract; the source is 60 JPEG frames looped by `multifilesrc` at `--fps`, in
//! real time. The log's memory buffer is small on purpose (16 KiB, about 5 s of lines) so that a
//! 10 s disk-full window overflows it and the loss is counted.

#[path = "../tests/fixture_pair/mod.rs"]
mod fixture_pair;
#[path = "../tests/stall_element/mod.rs"]
mod stall_element;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gstreamer as gst;
use gstreamer::prelude::*;
use rustix::process::{Resource, Rlimit};
use trident_edge::governor::{Governor, Profile};
use trident_edge::health::{Health, HealthConfig, HealthReport};
use trident_edge::output::jsonl::read;
use trident_edge::output::log::LogOptions;
use trident_edge::run::{RunOptions, RunSummary};
use trident_edge::source::{Source, SourceOptions};

struct Args {
    minutes: f64,
    fault_every_s: f64,
    fps: u32,
    buffer_kib: usize,
}

fn args() -> Args {
    let mut a = Args {
        minutes: 30.0,
        fault_every_s: 180.0,
        fps: 15,
        buffer_kib: 16,
    };
    let argv: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        argv.iter()
            .position(|x| x == name)
            .and_then(|i| argv.get(i + 1))
            .map(|v| {
                v.parse::<f64>()
                    .unwrap_or_else(|_| panic!("{name} {v}: expected a number"))
            })
    };
    if let Some(v) = value("--minutes") {
        a.minutes = v;
    }
    if let Some(v) = value("--fault-every") {
        a.fault_every_s = v;
    }
    if let Some(v) = value("--fps") {
        a.fps = v as u32;
    }
    if let Some(v) = value("--buffer-kib") {
        a.buffer_kib = v as usize;
    }
    a
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Stall,
    ModelError,
    DiskFull,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Stall => "camera stall, 5 s",
            Fault::ModelError => "model error, 10 s",
            Fault::DiskFull => "disk full, 10 s",
        }
    }

    fn seconds(self) -> f64 {
        match self {
            Fault::Stall => 5.0,
            _ => 10.0,
        }
    }
}

/// One injected fault: when (wall clock, for the log's timestamps) and how long until whole.
struct Injected {
    fault: Fault,
    from_unix: f64,
    to_unix: f64,
    recovered_s: Option<f64>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// 60 JPEG frames of a moving ball, 160×120.
fn frames(dir: &Path) -> String {
    gst::init().unwrap();
    let pattern = dir.join("f%03d.jpg");
    let p = gst::parse::launch(&format!(
        "videotestsrc pattern=ball num-buffers=60 ! video/x-raw,width=160,height=120 ! jpegenc ! \
         multifilesink location={}",
        pattern.display()
    ))
    .unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    )
    .expect("the frames are written");
    p.set_state(gst::State::Null).unwrap();
    pattern.display().to_string()
}

fn set_file_limit(bytes: Option<u64>) {
    rustix::process::setrlimit(
        Resource::Fsize,
        Rlimit {
            current: bytes,
            maximum: None,
        },
    )
    .unwrap();
}

/// Waits (polling every 50 ms, at most 120 s) until `whole` holds; the seconds waited.
fn until(health: &Health, whole: impl Fn(&HealthReport) -> bool) -> Option<f64> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(120) {
        if whole(&health.report()) {
            return Some(t0.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    stall_element::register();
    // A write past the limit fails with EFBIG instead of SIGXFSZ ending the process.
    signal_hook::flag::register(signal_hook::consts::SIGXFSZ, Arc::default()).unwrap();
    let pattern = frames(dir.path());
    let source_uri = format!(
        "gst://multifilesrc location={pattern} loop=true caps=image/jpeg,framerate={}/1 ! \
         jpegdec ! identity sync=true ! tridentstall name=soak",
        a.fps
    );
    let stalled = stall_element::switch("soak");
    let model_down = Arc::new(AtomicBool::new(false));
    let switch = Arc::clone(&model_down);
    let mut ensemble = fixture_pair::ensemble_with(0.1, move |name, inner| {
        let failing = if name == "a" {
            Arc::clone(&switch)
        } else {
            Arc::default()
        };
        Box::new(fixture_pair::Faulty { inner, failing })
    });
    let fps = a.fps;
    let profile = Profile::parse(
        &format!(
            "name: soak\ntarget_fps: {fps}\npower: {{ cap_w: 100.0, source: estimate }}\n\
             estimates: {{ idle_w: 2.0, tta_factor: 2.0, models: {{ a: {{ latency_ms: 5.0, active_w: 1.0 }}, b: {{ latency_ms: 5.0, active_w: 1.0 }} }} }}\n\
             ladder:\n  - {{ name: pair, models: [a, b], fps: {fps} }}\n  - {{ name: b-only, models: [b], fps: {fps} }}\n"
        ),
        Path::new("soak.yaml"),
    )
    .unwrap();
    let mut governor = Governor::new(profile, None, 0.0).unwrap();
    let opts = SourceOptions {
        width: 160,
        height: 120,
        fps: a.fps,
        stall_after: Some(Duration::from_secs(2)),
        ..SourceOptions::default()
    };
    let mut sources = vec![Source::open(source_uri.parse().unwrap(), opts).unwrap()];
    let log_path = dir.path().join("detections.jsonl");
    let mut run_opts = RunOptions {
        duration: Some(Duration::from_secs_f64(a.minutes * 60.0)),
        detections: log_path.clone(),
        log: LogOptions {
            buffer_bytes: a.buffer_kib << 10,
            ..LogOptions::default()
        },
        notifier: None,
        snapshots: None,
    };
    let health = Health::new(HealthConfig::default());
    let stop = Arc::new(AtomicBool::new(false));
    println!(
        "\n== trident-edge fault soak: {:.0} min, a fault every {:.0} s, {} fps offered ==",
        a.minutes, a.fault_every_s, a.fps
    );

    let t0 = Instant::now();
    let (summary, (injected, rss)) = fixture_pair::run_while(
        &mut sources,
        &mut ensemble,
        &mut governor,
        &mut run_opts,
        &stop,
        &health,
        |finished| {
            let mut injected = Vec::new();
            let mut rss = (0.0, 0.0);
            let end = Duration::from_secs_f64(a.minutes * 60.0);
            let mut next = a.fault_every_s;
            let cycle = [Fault::Stall, Fault::ModelError, Fault::DiskFull];
            while !finished() {
                let now = t0.elapsed().as_secs_f64();
                if rss.0 == 0.0 && now >= 30.0_f64.min(a.fault_every_s / 2.0) {
                    rss.0 = trident_e2e::stats::rss_mib();
                }
                rss.1 = f64::max(rss.1, trident_e2e::stats::rss_mib());
                let fault = cycle[injected.len() % cycle.len()];
                // A fault and its recovery must fit before the end.
                if now >= next && now + fault.seconds() + 60.0 < end.as_secs_f64() {
                    injected.push(inject(fault, &health, &stalled, &model_down, &log_path));
                    next += a.fault_every_s;
                    continue;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (injected, rss)
        },
    );
    report(&a, &summary, &injected, rss, &log_path);
}

fn inject(
    fault: Fault,
    health: &Health,
    stalled: &AtomicBool,
    model_down: &AtomicBool,
    log: &Path,
) -> Injected {
    let from_unix = unix_now();
    let hold = Duration::from_secs_f64(fault.seconds());
    let recovered_s = match fault {
        Fault::Stall => {
            stalled.store(true, Ordering::SeqCst);
            std::thread::sleep(hold);
            stalled.store(false, Ordering::SeqCst);
            let frames = health.report().frames;
            until(health, |r| r.frames > frames)
        }
        Fault::ModelError => {
            model_down.store(true, Ordering::SeqCst);
            std::thread::sleep(hold);
            model_down.store(false, Ordering::SeqCst);
            until(health, |r| r.models_running == 2)
        }
        Fault::DiskFull => {
            let size = std::fs::metadata(log).map_or(0, |m| m.len());
            set_file_limit(Some(size));
            std::thread::sleep(hold);
            set_file_limit(None);
            until(health, |r| r.output.log.failing.is_none())
        }
    };
    Injected {
        fault,
        from_unix,
        to_unix: from_unix + fault.seconds(),
        recovered_s,
    }
}

fn report(a: &Args, s: &RunSummary, injected: &[Injected], rss: (f64, f64), log: &Path) {
    let (_, stats) = &s.sources[0];
    let offered = stats.frames + stats.dropped + stats.skipped;
    println!(
        "frames: {} processed of {} offered ({:.1} %); {} pulled but no model could run; {} \
         replaced by newer ones before they were pulled",
        s.frames,
        offered,
        100.0 * s.frames as f64 / offered.max(1) as f64,
        s.frames_unprocessed,
        stats.dropped
    );
    // Lines missing from the log are gaps in the frame numbers (every pulled frame is processed
    // here); each is placed in time by its neighbours.
    let (records, torn) = read(log).unwrap();
    let (mut inside, mut outside) = (0u64, 0u64);
    for w in records.windows(2) {
        let missing = w[1].frame.saturating_sub(w[0].frame + 1);
        if missing == 0 {
            continue;
        }
        let in_window = injected.iter().any(|f| {
            f.fault == Fault::DiskFull
                && w[1].time >= f.from_unix
                && w[0].time <= f.to_unix + f.recovered_s.unwrap_or(0.0) + 1.0
        });
        if in_window {
            inside += missing;
        } else {
            outside += missing;
        }
    }
    println!(
        "log: {} lines ({} written, torn last line: {torn}); lines lost: {outside} outside the \
         disk-full windows, {inside} inside (counted by the runtime: {} lines, {} detections)",
        records.len(),
        s.log.lines_written,
        s.log.lines_dropped,
        s.log.detections_dropped
    );
    println!(
        "RSS: {:.1} MiB after warm-up, {:.1} MiB at most ({:+.1} MiB)",
        rss.0,
        rss.1,
        rss.1 - rss.0
    );
    println!("\n| fault | injected at | recovered after the fault ended |");
    println!("|---|---|---|");
    let start = injected.first().map_or(0.0, |f| f.from_unix);
    for f in injected {
        println!(
            "| {} | +{:.0} s | {} |",
            f.fault.name(),
            f.from_unix - start,
            f.recovered_s
                .map_or("not within 120 s".into(), |r| format!("{r:.1} s"))
        );
    }
    let faults: Vec<String> = s
        .model_faults
        .iter()
        .map(|(m, n, back)| format!("{m}: {n} failed passes, {back} re-admissions"))
        .collect();
    println!(
        "\nsource: {} stalls, {} reconnects; models: {}",
        stats.stalls,
        stats.reconnects,
        faults.join("; ")
    );
    println!(
        "(run of {:.1} min, {} fps asked; `cargo xtask soak --minutes {} --fault-every {}`)",
        s.seconds / 60.0,
        a.fps,
        a.minutes,
        a.fault_every_s
    );
}
