//! `/healthz` and `/metrics` over real sockets: the server on an ephemeral loopback port, the
//! health state updated as the run loop updates it, requests written by hand on a TcpStream
//! (HTTP/1.1), and one run of the real run loop on a GStreamer test pattern with a tiny YOLOv8.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "gstreamer")]
use crate::fixture_pair;

use trident_edge::governor::GovernorStats;
use trident_edge::health::{Health, HealthConfig, SourceCounters};
use trident_edge::http::HttpServer;

struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts.next().unwrap().parse().unwrap();
    let headers: BTreeMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    if method != "HEAD"
        && let Some(n) = headers.get("content-length")
    {
        assert_eq!(n.parse::<usize>().unwrap(), body.len(), "{raw}");
    }
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path)
}

fn serve(config: HealthConfig) -> (Arc<Health>, HttpServer) {
    let health = Arc::new(Health::new(config));
    let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&health)).unwrap();
    assert_ne!(server.local_addr().port(), 0);
    (health, server)
}

fn versioned() -> HealthConfig {
    HealthConfig {
        version: Some("1.2.3".into()),
        ..HealthConfig::default()
    }
}

fn governor_stats(level: usize, name: &str) -> GovernorStats {
    GovernorStats {
        elapsed_s: 20.0,
        energy_j: 123.25,
        average_w: 6.1625,
        last_w: 5.5,
        cap_w: 7.0,
        allowed_w: 7.0,
        level,
        level_name: name.into(),
        level_seconds: Vec::new(),
        paused_s: 0.0,
        level_changes: 2,
        last_change: None,
        frames: 0,
        last_frame_at_s: None,
        power_source: "ina3221".into(),
        power_ratio: 1.0,
        fallbacks: Vec::new(),
        budget_j: None,
        budget_remaining_j: None,
    }
}

const MODELS: [&str; 3] = ["high_recall", "balanced", "high_precision"];

#[test]
fn healthz_reports_the_run_as_json() {
    let (health, server) = serve(versioned());
    let addr = server.local_addr();

    // Before the run loop begins (models loading): not ok.
    let r = get(addr, "/healthz");
    assert_eq!(r.status, 503, "{}", r.body);
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0], "starting: the run loop has not begun");
    assert_eq!(v["models_running"], 0);
    assert_eq!(v["level_models"], serde_json::Value::Null);
    assert_eq!(v["min_level_model_frames"], serde_json::Value::Null);
    assert_eq!(v["pid"], std::process::id());
    assert_eq!(v["runtime_version"], env!("CARGO_PKG_VERSION"));

    health.update().begin(["test://ball"], MODELS);
    health.update().governor(&governor_stats(1, "ensemble"));
    assert_eq!(get(addr, "/healthz").json()["min_level_model_frames"], 0);
    for i in 0..20 {
        let mut u = health.update();
        u.frame(i % 3);
        u.level(1, "pair");
        u.level_models(&["high_recall", "high_precision"]);
        for k in [0, 2] {
            u.model_pass(k, 0.03);
        }
    }
    let r = get(addr, "/healthz");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), "application/json");
    let v = r.json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["problems"], serde_json::json!([]));
    assert_eq!(v["frames"], 20);
    // 0 + 1 + 2 + 0 + … over 20 frames.
    assert_eq!(v["detections"], (0..20).map(|i| i % 3).sum::<usize>());
    assert_eq!(v["level"], 1);
    assert_eq!(v["level_name"], "pair");
    assert_eq!(
        v["level_models"],
        serde_json::json!(["high_recall", "high_precision"])
    );
    assert_eq!(v["min_level_model_frames"], 20);
    let frames: Vec<&serde_json::Value> = (0..3).map(|k| &v["models"][k]["frames"]).collect();
    assert_eq!(frames, [20, 0, 20]);
    assert_eq!(v["power_w"], 5.5);
    assert_eq!(v["energy_j"], 123.25);
    assert_eq!(v["average_w"], 6.1625);
    assert_eq!(v["power_source"], "ina3221");
    assert_eq!(v["version"], "1.2.3");
    assert_eq!(v["models_running"], 3);
    assert_eq!(v["models_dropped"], serde_json::json!([]));
    assert_eq!(v["capturing"], true);
    let age = v["last_frame_age_s"].as_f64().unwrap();
    assert!((0.0..5.0).contains(&age), "{age}");
    assert!(v["fps"].as_f64().unwrap() > 0.0, "{v}");

    // A model dropped: still ok with the others; all dropped: 503.
    health
        .update()
        .model_dropped(2, "onnxruntime: CUDA out of memory");
    let v = get(addr, "/healthz").json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["models_running"], 2);
    assert_eq!(
        v["models_dropped"],
        serde_json::json!([{"model": "high_precision", "reason": "onnxruntime: CUDA out of memory"}])
    );
    health.update().model_dropped(0, "x");
    health.update().model_dropped(1, "y");
    let r = get(addr, "/healthz");
    assert_eq!(r.status, 503);
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["models_running"], 0);
    assert!(
        v["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("no model is running"),
        "{v}"
    );
}

#[test]
fn a_stalled_run_turns_healthz_503_and_a_frame_restores_it() {
    let (health, server) = serve(HealthConfig {
        stale_after: Duration::from_millis(800),
        startup_grace: Duration::ZERO,
        ..HealthConfig::default()
    });
    let addr = server.local_addr();
    health.update().begin(["test://ball"], ["balanced"]);
    health.update().frame(0);
    let r = get(addr, "/healthz");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["version"], serde_json::Value::Null);

    std::thread::sleep(Duration::from_millis(1200));
    let r = get(addr, "/healthz");
    assert_eq!(r.status, 503, "{}", r.body);
    let v = r.json();
    assert_eq!(v["ok"], false);
    let problem = v["problems"][0].as_str().unwrap();
    assert!(
        problem.starts_with("no frame for ") && problem.ends_with("(stale after 0.8 s)"),
        "{problem}"
    );
    assert!(v["last_frame_age_s"].as_f64().unwrap() >= 1.2);
    assert!(get(addr, "/metrics").body.contains("\ntrident_healthy 0\n"));

    health.update().frame(0);
    assert_eq!(get(addr, "/healthz").status, 200);

    // Paused outside a capture window: never stale.
    health.update().capturing(false);
    std::thread::sleep(Duration::from_millis(1200));
    let r = get(addr, "/healthz");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["capturing"], false);

    health.update().end();
    let r = get(addr, "/healthz");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["problems"][0], "the run has ended");
}

/// One exposition line: name, labels (unescaped), value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses the Prometheus text format strictly enough to catch malformed output: every sample
/// belongs to a family declared by `# HELP` and `# TYPE` before it, counters end in `_total`,
/// label values are quoted with `\\`, `\"` and `\n` escapes, values parse.
fn parse_exposition(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'));
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split_once(' ').unwrap().0.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(helped.last().is_some_and(|h| h == name), "{line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "{name} declared twice"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "{line}");
        let name_end = line.find(['{', ' ']).unwrap();
        let name = &line[..name_end];
        assert!(name.starts_with("trident_"), "{line}");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices();
            let mut key = String::new();
            loop {
                let (_, c) = chars.next().expect("a closed label set");
                match c {
                    '}' => break,
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                        let mut value = String::new();
                        loop {
                            match chars.next().expect("a closed label value").1 {
                                '\\' => match chars.next().unwrap().1 {
                                    '\\' => value.push('\\'),
                                    '"' => value.push('"'),
                                    'n' => value.push('\n'),
                                    other => panic!("bad escape \\{other} in {line}"),
                                },
                                '"' => break,
                                '\n' => panic!("raw newline in {line}"),
                                c => value.push(c),
                            }
                        }
                        labels.push((std::mem::take(&mut key), value));
                    }
                    c => key.push(c),
                }
            }
            let consumed = chars.next().map_or(r.len(), |(i, _)| i);
            rest = &r[consumed..];
        }
        let value = rest.strip_prefix(' ').expect("a space before the value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("value `{v}` in {line}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "{line}: no # TYPE for {family} before it"
        );
        samples.push((name.to_string(), labels, value));
    }
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
        .2
}

#[test]
fn metrics_are_prometheus_text_with_cumulative_histograms_and_escaped_labels() {
    let (health, server) = serve(versioned());
    let addr = server.local_addr();
    let odd = r#"rtsp://cam.local/"live"\stream"#;
    health.update().begin(["test://ball", odd], ["a", "b"]);
    for s in [0.003, 0.02, 0.02, 0.7, 3.0] {
        health.update().model_pass(0, s);
    }
    health.update().model_pass(1, 0.05);
    health.update().source(
        1,
        SourceCounters {
            frames: 7,
            dropped: 2,
            errors: 1,
            reconnects: 1,
            ..SourceCounters::default()
        },
    );
    for _ in 0..5 {
        health.update().frame(2);
    }
    health.update().governor(&governor_stats(1, "pair"));
    health.update().model_dropped(1, "failed");

    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = &r.body;
    // The raw escaping, as Prometheus reads it.
    assert!(
        text.contains(
            "trident_source_reconnects_total{source=\"rtsp://cam.local/\\\"live\\\"\\\\stream\"} 1\n"
        ),
        "{text}"
    );
    assert!(text.contains(
        "# HELP trident_frames_total Frames the ensemble processed.\n\
         # TYPE trident_frames_total counter\ntrident_frames_total 5\n"
    ));
    assert!(text.contains("# TYPE trident_model_latency_seconds histogram\n"));

    let s = parse_exposition(text);
    assert_eq!(
        value(
            &s,
            "trident_build_info",
            &[
                ("version", "1.2.3"),
                ("runtime_version", env!("CARGO_PKG_VERSION"))
            ]
        ),
        1.0
    );
    assert_eq!(value(&s, "trident_healthy", &[]), 1.0);
    assert_eq!(value(&s, "trident_frames_total", &[]), 5.0);
    assert_eq!(value(&s, "trident_detections_total", &[]), 10.0);
    assert_eq!(
        value(&s, "trident_source_frames_total", &[("source", odd)]),
        7.0
    );
    assert_eq!(
        value(
            &s,
            "trident_source_dropped_frames_total",
            &[("source", odd)]
        ),
        2.0
    );
    assert_eq!(
        value(&s, "trident_source_errors_total", &[("source", odd)]),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "trident_source_frames_total",
            &[("source", "test://ball")]
        ),
        0.0
    );
    let buckets = [
        ("0.005", 1.0),
        ("0.01", 1.0),
        ("0.025", 3.0),
        ("0.05", 3.0),
        ("0.1", 3.0),
        ("0.25", 3.0),
        ("0.5", 3.0),
        ("1", 4.0),
        ("2.5", 4.0),
        ("+Inf", 5.0),
    ];
    for (le, n) in buckets {
        assert_eq!(
            value(
                &s,
                "trident_model_latency_seconds_bucket",
                &[("model", "a"), ("le", le)]
            ),
            n,
            "le={le}"
        );
    }
    let sum = value(&s, "trident_model_latency_seconds_sum", &[("model", "a")]);
    assert!((sum - 3.743).abs() < 1e-9, "{sum}");
    assert_eq!(
        value(&s, "trident_model_latency_seconds_count", &[("model", "a")]),
        5.0
    );
    assert_eq!(
        value(
            &s,
            "trident_model_latency_seconds_bucket",
            &[("model", "b"), ("le", "0.05")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "trident_model_latency_seconds_bucket",
            &[("model", "b"), ("le", "0.025")]
        ),
        0.0
    );
    assert_eq!(value(&s, "trident_model_running", &[("model", "a")]), 1.0);
    assert_eq!(value(&s, "trident_model_running", &[("model", "b")]), 0.0);
    assert_eq!(
        value(&s, "trident_ladder_level", &[("level_name", "pair")]),
        1.0
    );
    assert_eq!(value(&s, "trident_level_changes_total", &[]), 2.0);
    assert_eq!(value(&s, "trident_power_watts", &[]), 5.5);
    assert_eq!(value(&s, "trident_power_average_watts", &[]), 6.1625);
    assert_eq!(value(&s, "trident_energy_joules_total", &[]), 123.25);
    assert!(value(&s, "trident_frames_per_second", &[]) > 0.0);
    // Buckets are cumulative for every model.
    for model in ["a", "b"] {
        let counts: Vec<f64> = s
            .iter()
            .filter(|(n, l, _)| {
                n == "trident_model_latency_seconds_bucket"
                    && l.iter().any(|(k, v)| k == "model" && v == model)
            })
            .map(|x| x.2)
            .collect();
        assert_eq!(counts.len(), 10);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    }
}

#[test]
fn unknown_paths_are_404_and_other_methods_405() {
    let (health, server) = serve(HealthConfig::default());
    health.update().begin(["test://ball"], ["m"]);
    let addr = server.local_addr();
    for path in ["/", "/health", "/healthz/x", "/metrics.txt", "/favicon.ico"] {
        let r = get(addr, path);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.body.contains("/healthz, /metrics"), "{}", r.body);
    }
    // A query string does not change the path.
    assert_eq!(get(addr, "/metrics?x=1").status, 200);
    let r = request(addr, "POST", "/healthz");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "GET, HEAD");
    let r = request(addr, "HEAD", "/metrics");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[test]
fn the_server_stops_with_its_handle_and_a_taken_address_is_an_error_naming_it() {
    let (_health, server) = serve(HealthConfig::default());
    let addr = server.local_addr();
    // A connection open at shutdown does not keep the server alive.
    let idle = TcpStream::connect(addr).unwrap();
    assert_eq!(get(addr, "/healthz").status, 503);
    server.shutdown();
    drop(idle);
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = HttpServer::start(addr, Arc::new(Health::new(HealthConfig::default())))
        .err()
        .expect("the address is taken");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

/// The real run loop: a GStreamer test pattern, two copies of a tiny YOLOv8 through tract, the
/// estimate as power source; /healthz and /metrics are read while it runs and after it ends.
#[cfg(feature = "gstreamer")]
#[test]
fn the_run_loop_keeps_healthz_and_metrics_current() {
    use std::sync::atomic::AtomicBool;

    use trident_edge::governor::{Governor, Profile};
    use trident_edge::output::log::LogOptions;
    use trident_edge::run::RunOptions;
    use trident_edge::source::{Source, SourceOptions};

    let mut ensemble = fixture_pair::ensemble(0.25);
    let dir = tempfile::tempdir().unwrap();
    let profile_path = dir.path().join("profile.yaml");
    std::fs::write(
        &profile_path,
        "name: test\ntarget_fps: 20\npower: { cap_w: 100.0, source: estimate }\n\
         estimates: { idle_w: 2.0, tta_factor: 2.0, models: { a: { latency_ms: 5.0, active_w: 1.0 }, b: { latency_ms: 5.0, active_w: 1.0 } } }\n\
         ladder:\n  - { name: pair, models: [a, b], fps: 20 }\n",
    )
    .unwrap();
    let mut governor = Governor::new(Profile::load(&profile_path).unwrap(), None, 0.0).unwrap();
    let opts = SourceOptions {
        width: 160,
        height: 120,
        fps: 20,
        ..SourceOptions::default()
    };
    let mut sources = vec![Source::open("test://ball".parse().unwrap(), opts).unwrap()];
    let mut run_opts = RunOptions {
        duration: Some(Duration::from_millis(2500)),
        detections: dir.path().join("detections.jsonl"),
        log: LogOptions::default(),
        notifier: None,
        snapshots: None,
    };
    let (health, server) = serve(versioned());
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));

    let (summary, during) = fixture_pair::run_while(
        &mut sources,
        &mut ensemble,
        &mut governor,
        &mut run_opts,
        &stop,
        &health,
        |_| {
            std::thread::sleep(Duration::from_millis(1500));
            get(addr, "/healthz")
        },
    );

    assert_eq!(during.status, 200, "{}", during.body);
    let v = during.json();
    assert_eq!(v["ok"], true);
    assert!(v["frames"].as_u64().unwrap() > 0, "{v}");
    assert!(v["fps"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["level"], 0);
    assert_eq!(v["level_name"], "pair");
    assert_eq!(v["models_running"], 2);
    assert_eq!(v["power_source"], "estimate");
    assert!(v["power_w"].as_f64().unwrap() > 0.0, "{v}");
    // The level's models from the governor's ladder, and every one of them has run.
    assert_eq!(v["level_models"], serde_json::json!(["a", "b"]));
    assert!(v["min_level_model_frames"].as_u64().unwrap() > 0, "{v}");

    // After the run: the final figures, and not ok.
    let r = get(addr, "/healthz");
    assert_eq!(r.status, 503);
    let v = r.json();
    assert_eq!(v["problems"][0], "the run has ended");
    let fewest = summary.models.iter().map(|m| m.1).min().unwrap();
    assert_eq!(v["min_level_model_frames"].as_u64(), Some(fewest), "{v}");
    assert_eq!(v["frames"].as_u64().unwrap(), summary.frames);
    let g = summary.governor.as_ref().unwrap();
    assert_eq!(v["energy_j"].as_f64().unwrap(), g.energy_j);
    assert!(g.energy_j > 0.0);

    let s = parse_exposition(&get(addr, "/metrics").body);
    assert!(summary.frames > 0);
    assert_eq!(
        value(&s, "trident_frames_total", &[]),
        summary.frames as f64
    );
    let models = v["models"].as_array().unwrap();
    for (name, passes, mean) in &summary.models {
        let reported = models.iter().find(|m| m["model"] == name.as_str()).unwrap();
        assert_eq!(reported["frames"].as_u64(), Some(*passes), "{v}");
        let model = [("model", name.as_str())];
        assert_eq!(
            value(&s, "trident_model_latency_seconds_count", &model),
            *passes as f64
        );
        let sum = value(&s, "trident_model_latency_seconds_sum", &model);
        assert!(
            (sum - mean * *passes as f64).abs() < 1e-9,
            "{sum} vs {mean} × {passes}"
        );
    }
    let (uri, stats) = &summary.sources[0];
    assert_eq!(
        value(&s, "trident_source_frames_total", &[("source", uri)]),
        stats.frames as f64
    );
    server.shutdown();
}
