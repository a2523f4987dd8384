//! The edge runtime keeps detecting through real faults and loses nothing it wrote:
//! - a source that stops delivering without an error is reopened, and the systemd watchdog is
//!   not fed while it only times out;
//! - a backend that fails for 10 s is retried and re-admitted, the governor running the best
//!   level whose models are up meanwhile; frames no model can run are skipped, not fatal;
//! - `kill -9` of the binary while it writes, again and again: every line but the last whole,
//!   nothing the runtime reported synced missing, no line twice;
//! - a run started with its output on a full file system (RLIMIT_FSIZE on the process, as
//!   `LimitFSIZE=` or a quota would set it) keeps detecting, says so on `/healthz`, and writes
//!   every kept line, in order and whole, once there is room.
#![cfg(feature = "gstreamer")]

use crate::common;
use crate::fixture_pair;
use crate::stall_element;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{NAMES, VARIANTS, s};
use rustix::process::{Pid, Resource, Rlimit, Signal};
use trident_edge::governor::{Governor, Profile};
use trident_edge::health::{Health, HealthConfig};
use trident_edge::output::jsonl::{FrameRecord, read};
use trident_edge::output::log::LogOptions;
use trident_edge::run::RunOptions;
use trident_edge::source::{Backoff, Frame, Pull, Source, SourceOptions};
use trident_edge::systemd::Notifier;

/// Polls `check` every 100 ms until it gives a value, or panics naming `what` after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(t0.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_source_that_stops_delivering_is_reopened_and_its_frames_come_back() {
    stall_element::register();
    let stalled = stall_element::switch("stall-source");
    let opts = SourceOptions {
        width: 64,
        height: 48,
        fps: 50,
        stall_after: Some(Duration::from_millis(400)),
        ..SourceOptions::default()
    };
    let uri = stall_element::stalling_source("stall-source");
    let mut source = Source::open(uri.parse().unwrap(), opts)
        .unwrap()
        .with_backoff(Backoff::new(0.05, 0.1));
    let mut frame = Frame::default();
    let mut pull = |source: &mut Source| source.next_frame(&mut frame, Duration::from_millis(100));
    wait_for("frames", Duration::from_secs(20), || {
        (pull(&mut source).unwrap() == Pull::Frame && source.stats().frames >= 3).then_some(())
    });

    stalled.store(true, Ordering::SeqCst);
    let since = Instant::now();
    let message = wait_for(
        "the stall to be noticed",
        Duration::from_secs(20),
        || match pull(&mut source).unwrap() {
            Pull::Failed { message, .. } => Some(message),
            Pull::Frame => panic!("a frame while stalled"),
            _ => None,
        },
    );
    assert!(since.elapsed() >= Duration::from_millis(400), "too early");
    assert!(message.contains("stalled"), "{message}");
    // Still stalled after the reopen: noticed again, not waited on forever.
    wait_for("a second stall", Duration::from_secs(20), || {
        pull(&mut source).unwrap();
        (source.stats().stalls >= 2).then_some(())
    });

    stalled.store(false, Ordering::SeqCst);
    wait_for("frames after the stall", Duration::from_secs(20), || {
        (pull(&mut source).unwrap() == Pull::Frame).then_some(())
    });
    let stats = source.stats();
    assert!(stats.reconnects >= 2, "{stats:?}");
    assert_eq!(stats.errors, stats.stalls, "{stats:?}");
}

/// `WATCHDOG=1` datagrams as they arrive, with their times.
fn watchdog_listener(path: &Path) -> Arc<Mutex<Vec<Instant>>> {
    let socket = UnixDatagram::bind(path).unwrap();
    let pings = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&pings);
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok(n) = socket.recv(&mut buf) {
            if &buf[..n] == b"WATCHDOG=1" {
                seen.lock().unwrap().push(Instant::now());
            }
        }
    });
    pings
}

#[test]
fn the_run_goes_on_through_a_stall_a_backend_down_for_ten_seconds_and_every_model_down() {
    stall_element::register();
    let dir = tempfile::tempdir().unwrap();
    let failing: Vec<Arc<AtomicBool>> = (0..2).map(|_| Arc::default()).collect();
    let switches = failing.clone();
    let mut ensemble = fixture_pair::ensemble_with(0.25, move |name, inner| {
        let k = usize::from(name == "b");
        Box::new(fixture_pair::Faulty {
            inner,
            failing: Arc::clone(&switches[k]),
        })
    });
    ensemble.set_model_retry(Backoff::new(0.5, 1.0));
    let profile_path = dir.path().join("profile.yaml");
    std::fs::write(
        &profile_path,
        "name: test\ntarget_fps: 20\npower: { cap_w: 100.0, source: estimate }\n\
         control: { period_s: 0.2, min_dwell_s: 1.0 }\n\
         estimates: { idle_w: 2.0, tta_factor: 2.0, models: { a: { latency_ms: 5.0, active_w: 1.0 }, b: { latency_ms: 5.0, active_w: 1.0 } } }\n\
         ladder:\n  - { name: pair, models: [a, b], fps: 20 }\n  - { name: b-only, models: [b], fps: 20 }\n",
    )
    .unwrap();
    let mut governor = Governor::new(Profile::load(&profile_path).unwrap(), None, 0.0).unwrap();
    let stall_after = Duration::from_millis(600);
    let opts = SourceOptions {
        width: 64,
        height: 48,
        fps: 50,
        stall_after: Some(stall_after),
        ..SourceOptions::default()
    };
    let stalled = stall_element::switch("stall-run");
    let uri = stall_element::stalling_source("stall-run");
    let mut sources = vec![
        Source::open(uri.parse().unwrap(), opts)
            .unwrap()
            .with_backoff(Backoff::new(0.1, 0.2)),
    ];
    let socket = dir.path().join("notify.sock");
    let pings = watchdog_listener(&socket);
    let mut run_opts = RunOptions {
        duration: None,
        detections: dir.path().join("detections.jsonl"),
        log: LogOptions::default(),
        notifier: Some(Notifier::new(socket, Some(Duration::from_millis(100)))),
        snapshots: None,
    };
    let health = Health::new(HealthConfig::default());
    let stop = Arc::new(AtomicBool::new(false));
    let frames = || health.report().frames;

    let (summary, (seen, stall_window)) = fixture_pair::run_while(
        &mut sources,
        &mut ensemble,
        &mut governor,
        &mut run_opts,
        &stop,
        &health,
        |_| {
            let mut seen = Vec::new();
            wait_for("frames at level 0", Duration::from_secs(60), || {
                (frames() > 10).then_some(())
            });
            seen.push(health.report());

            // Model a fails for 10 s.
            failing[0].store(true, Ordering::SeqCst);
            let a_down = Instant::now();
            wait_for("the level without a", Duration::from_secs(20), || {
                let r = health.report();
                (r.level_name.as_deref() == Some("b-only")).then_some(())
            });
            let n = frames();
            wait_for("frames without a", Duration::from_secs(20), || {
                (frames() > n + 5).then_some(())
            });
            seen.push(health.report());

            // The camera stalls for 2 s.
            stalled.store(true, Ordering::SeqCst);
            let stall_on = Instant::now();
            std::thread::sleep(Duration::from_secs(2));
            stalled.store(false, Ordering::SeqCst);
            let stall_off = Instant::now();
            let n = frames();
            wait_for("frames after the stall", Duration::from_secs(20), || {
                (frames() > n + 5).then_some(())
            });

            // Every model down for 1.5 s: frames are skipped, the run goes on.
            failing[1].store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1500));
            seen.push(health.report());
            failing[1].store(false, Ordering::SeqCst);

            std::thread::sleep(Duration::from_secs(10).saturating_sub(a_down.elapsed()));
            failing[0].store(false, Ordering::SeqCst);
            wait_for(
                "a re-admitted and level 0 again",
                Duration::from_secs(30),
                || {
                    let r = health.report();
                    (r.models_running == 2 && r.level == Some(0)).then_some(())
                },
            );
            let n = frames();
            wait_for("frames at level 0 again", Duration::from_secs(20), || {
                (frames() > n + 5).then_some(())
            });
            stop.store(true, Ordering::SeqCst);
            (seen, (stall_on, stall_off))
        },
    );

    // Before: both models; with a down: ok, a warning, level b-only; every model down: still
    // ok to systemd's eyes (the run goes on), frames skipped and counted.
    assert_eq!(seen[0].models_running, 2);
    let r = &seen[1];
    assert!(r.ok, "{r:?}");
    assert_eq!(r.models_running, 1);
    assert!(
        r.warnings.iter().any(|w| w.contains("model a is out")),
        "{r:?}"
    );
    assert!(seen[2].frames_unprocessed > 0, "{:?}", seen[2]);
    assert!(summary.frames_unprocessed >= seen[2].frames_unprocessed);
    let faults: Vec<(String, u64, u64)> = summary.model_faults.clone();
    assert!(faults[0].1 >= 2 && faults[0].2 >= 1, "a: {faults:?}");
    assert!(faults[1].1 >= 1 && faults[1].2 >= 1, "b: {faults:?}");
    assert!(summary.dropped_models.is_empty(), "{summary:?}");
    let stats = &summary.sources[0].1;
    assert!(stats.stalls >= 1 && stats.reconnects >= 1, "{stats:?}");

    // The log: frames at both levels, the last ones at level 0 again; none lost or repeated.
    let (records, torn) = read(&run_opts.detections).unwrap();
    assert!(!torn);
    assert_eq!(records.len() as u64, summary.frames);
    assert!(records.iter().any(|r| r.level == 1));
    assert_eq!(records.last().unwrap().level, 0);
    assert!(records.windows(2).all(|w| w[0].frame < w[1].frame));

    // The watchdog went unfed for at least the stall timeout while the source only timed out,
    // and was fed again once the source was being reopened and after.
    let pings = pings.lock().unwrap().clone();
    let (on, off) = stall_window;
    let during: Vec<&Instant> = pings.iter().filter(|t| **t > on && **t < off).collect();
    let longest = during
        .windows(2)
        .map(|w| w[1].duration_since(*w[0]))
        .chain(during.first().map(|t| t.duration_since(on)))
        .max()
        .unwrap_or(off - on);
    assert!(longest >= stall_after.mul_f64(0.9), "{longest:?}");
    assert!(!during.is_empty(), "fed while reconnecting");
    assert!(pings.last().unwrap() > &off, "fed again after the stall");
}

/// The runtime on the fixture models, with `/healthz` on `addr` and extra arguments.
fn spawn_edge(dir: &Path, out: &Path, addr: SocketAddr, extra: &[&str]) -> Child {
    let models = dir.join("models");
    if !models.exists() {
        trident_e2e::fixture_models(dir, &VARIANTS, &NAMES);
    }
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/profiles/host-cpu.yaml");
    let addr = addr.to_string();
    let mut args = vec![
        "run",
        "--models",
        s(&models),
        "--profile",
        s(&profile),
        "--source",
        "test://ball",
        "--width",
        "160",
        "--height",
        "120",
        "--backend",
        "tract",
        "--http",
        &addr,
        "--out",
        s(out),
    ];
    args.extend(extra);
    Command::new(env!("CARGO_BIN_EXE_trident-edge"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `/healthz` as JSON, or `None` while the server does not answer.
fn healthz(addr: SocketAddr) -> Option<serde_json::Value> {
    let (_, body) = common::http_get(addr, "/healthz")?;
    serde_json::from_str(&body).ok()
}

/// The log's complete lines (parsed) and whether a torn last line followed them.
fn lines_of(path: &Path) -> (Vec<FrameRecord>, bool) {
    if !path.exists() {
        return (Vec::new(), false);
    }
    read(path).unwrap()
}

#[test]
fn kill_9_while_writing_leaves_every_line_whole_but_the_last_and_nothing_synced_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = out.join("detections.jsonl");
    let mut before = 0usize;
    for round in 0..4 {
        let addr = free_addr();
        // Short batches and syncs, so kills land in every phase of writing.
        let mut child = spawn_edge(dir.path(), &out, addr, &["--log-fsync-every", "0.3s"]);
        let synced = wait_for("synced lines", Duration::from_secs(90), || {
            let v = healthz(addr)?;
            let synced = v["output"]["log"]["lines_synced"].as_u64()?;
            (synced >= 10 + round * 7).then_some(synced)
        });
        // A little more writing after the reading, then kill -9.
        std::thread::sleep(Duration::from_millis(150 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        let (records, _torn) = lines_of(&log);
        assert!(
            records.len() >= before + synced as usize,
            "round {round}: {} lines, {before} before and {synced} synced in this run",
            records.len()
        );
        before = records.len();
    }
    // Restarts cut a torn last line before appending; frames of each run are in order, and no
    // line appears twice.
    let (records, _) = lines_of(&log);
    let mut runs = 1;
    for w in records.windows(2) {
        if w[1].frame <= w[0].frame {
            runs += 1;
            assert_eq!(w[1].frame, 1, "a run starts at frame 1: {:?}", w[1]);
        }
    }
    assert!(runs <= 4, "{runs} runs in the log");
    let mut keys: Vec<(u64, u64)> = records
        .iter()
        .map(|r| (r.time.to_bits(), r.frame))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), records.len(), "a line appears twice");
}

/// Sets the file-size limit of process `pid` (`None`: unlimited), as a full disk for its writes.
fn limit_file_size(pid: u32, bytes: Option<u64>) {
    let pid = Pid::from_raw(pid as i32).unwrap();
    rustix::process::prlimit(
        Some(pid),
        Resource::Fsize,
        Rlimit {
            current: bytes,
            maximum: None,
        },
    )
    .unwrap();
}

#[test]
fn a_run_started_on_a_full_disk_keeps_detecting_says_so_and_writes_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = out.join("detections.jsonl");
    let addr = free_addr();
    let child = spawn_edge(dir.path(), &out, addr, &[]);
    // Full from the start: the models are still loading, nothing is written yet.
    limit_file_size(child.id(), Some(0));
    assert_eq!(std::fs::metadata(&log).map_or(0, |m| m.len()), 0);

    let full = wait_for("frames on a full disk", Duration::from_secs(90), || {
        let v = healthz(addr)?;
        let log = &v["output"]["log"];
        (v["frames"].as_u64()? >= 20 && log["lines_pending"].as_u64()? >= 10).then_some(v)
    });
    assert_eq!(full["ok"], true, "{full}");
    assert_eq!(full["output"]["log"]["lines_written"], 0, "{full}");
    assert!(
        full["output"]["log"]["failing"]
            .as_str()
            .unwrap()
            .contains("File too large"),
        "{full}"
    );
    let warnings = full["warnings"].to_string();
    assert!(warnings.contains("not being written"), "{full}");

    // Room for a few lines: a batch that does not fit is cut back, never left torn.
    limit_file_size(child.id(), Some(2000));
    wait_for("some lines written", Duration::from_secs(30), || {
        let v = healthz(addr)?;
        (v["output"]["log"]["lines_written"].as_u64()? > 0).then_some(())
    });
    let text = std::fs::read(&log).unwrap();
    assert!(
        text.len() <= 2000 && text.ends_with(b"\n"),
        "{} bytes",
        text.len()
    );

    // Room again: every kept line reaches the file, and the warning goes.
    limit_file_size(child.id(), None);
    let recovered = wait_for("writing again", Duration::from_secs(30), || {
        let v = healthz(addr)?;
        let log = &v["output"]["log"];
        (log["failing"].is_null() && log["lines_written"].as_u64()? > 50).then_some(v)
    });
    assert!(
        recovered["output"]["log"]["write_errors"].as_u64().unwrap() >= 2,
        "{recovered}"
    );
    assert_eq!(recovered["output"]["log"]["lines_dropped"], 0);
    rustix::process::kill_process(Pid::from_raw(child.id() as i32).unwrap(), Signal::TERM).unwrap();
    let o = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", common::text(&o));
    assert!(stdout.contains(" 0 dropped (0 detections)"), "{stdout}");
    let (records, torn) = read(&log).unwrap();
    assert!(!torn);
    assert_eq!(
        records.first().unwrap().frame,
        1,
        "the oldest kept line first"
    );
    assert!(
        records.windows(2).all(|w| w[1].frame == w[0].frame + 1),
        "every frame, in order, once"
    );
}

#[test]
fn a_snapshot_interval_of_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = common::edge(&[
        "run",
        "--models",
        s(dir.path()),
        "--profile",
        "p.yaml",
        "--source",
        "test://ball",
        "--snapshot-every",
        "0s",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", common::text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--snapshot-every"), "{err}");
}
