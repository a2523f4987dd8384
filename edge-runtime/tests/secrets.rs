//! A camera URL's credentials reach GStreamer and nothing else. The real run loop plays
//! `rtsp://user:s3cret@cam.local:8554/stream?token=s3cret` offline: a stand-in `rtspsrc`,
//! registered in this test process in place of the real one, plays a live test pattern and keeps
//! the `location` it was given. `/metrics`, `/healthz`, the JSON Lines log, snapshot file names,
//! the run summary, error messages and every log line (captured at debug level) must show the
//! masked URI, while the stand-in must have received the real one. Then the binary is run
//! against an RTSP camera that does not answer, and its error and logs are checked the same way.
#![cfg(feature = "gstreamer")]

// Only some of the binary tests' helpers are needed here.
#[allow(dead_code)]
mod common;
mod fixture_pair;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use trident_edge::governor::{Governor, Profile};
use trident_edge::health::{Health, HealthConfig};
use trident_edge::http::HttpServer;
use trident_edge::output::log::LogOptions;
use trident_edge::output::snapshot::{SnapshotOptions, Snapshots};
use trident_edge::run::RunOptions;
use trident_edge::source::{Source, SourceOptions, SourceUri};

const SECRET: &str = "s3cret";
const URI: &str = "rtsp://user:s3cret@cam.local:8554/stream?token=s3cret&channel=1";
const SHOWN: &str = "rtsp://***@cam.local:8554/stream?token=***&channel=1";

mod standin {
    use std::sync::{Mutex, OnceLock};

    use gstreamer as gst;
    use gstreamer::glib;
    use gstreamer::prelude::*;
    use gstreamer::subclass::prelude::*;

    /// Every `location` a stand-in was given, in order.
    pub fn locations() -> &'static Mutex<Vec<String>> {
        static L: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
        L.get_or_init(Default::default)
    }

    /// `rtspsrc`: a live test pattern, with the real element's `location` and `latency`. A host
    /// ending in `.invalid` fails to start with an error that quotes the location, as a network
    /// element may.
    pub mod imp {
        use super::*;

        #[derive(Default)]
        pub struct Imp {
            location: Mutex<String>,
            latency: Mutex<u32>,
        }

        #[glib::object_subclass]
        impl ObjectSubclass for Imp {
            const NAME: &'static str = "TridentStandinRtspSrc";
            type Type = RtspSrc;
            type ParentType = gst::Bin;
        }

        impl ObjectImpl for Imp {
            fn constructed(&self) {
                self.parent_constructed();
                let bin = self.obj();
                let src = gst::ElementFactory::make("videotestsrc")
                    .property("is-live", true)
                    .property_from_str("pattern", "ball")
                    .build()
                    .unwrap();
                bin.add(&src).unwrap();
                let templ = bin.pad_template("src").unwrap();
                let pad = gst::GhostPad::builder_from_template_with_target(
                    &templ,
                    &src.static_pad("src").unwrap(),
                )
                .unwrap()
                .build();
                bin.add_pad(&pad).unwrap();
            }

            fn properties() -> &'static [glib::ParamSpec] {
                static P: OnceLock<Vec<glib::ParamSpec>> = OnceLock::new();
                P.get_or_init(|| {
                    vec![
                        glib::ParamSpecString::builder("location").build(),
                        glib::ParamSpecUInt::builder("latency").build(),
                    ]
                })
            }

            fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
                match pspec.name() {
                    "location" => {
                        let location: String = value.get::<Option<String>>().unwrap().unwrap();
                        locations().lock().unwrap().push(location.clone());
                        *self.location.lock().unwrap() = location;
                    }
                    _ => *self.latency.lock().unwrap() = value.get().unwrap(),
                }
            }

            fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
                match pspec.name() {
                    "location" => self.location.lock().unwrap().to_value(),
                    _ => self.latency.lock().unwrap().to_value(),
                }
            }
        }
        impl GstObjectImpl for Imp {}
        impl BinImpl for Imp {}

        impl ElementImpl for Imp {
            fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
                static M: OnceLock<gst::subclass::ElementMetadata> = OnceLock::new();
                Some(M.get_or_init(|| {
                    gst::subclass::ElementMetadata::new(
                        "TridentStandinRtspSrc",
                        "Source/Network",
                        "trident test stand-in for rtspsrc",
                        "trident",
                    )
                }))
            }

            fn pad_templates() -> &'static [gst::PadTemplate] {
                static T: OnceLock<Vec<gst::PadTemplate>> = OnceLock::new();
                T.get_or_init(|| {
                    vec![
                        gst::PadTemplate::new(
                            "src",
                            gst::PadDirection::Src,
                            gst::PadPresence::Always,
                            &gst::Caps::builder("video/x-raw").build(),
                        )
                        .unwrap(),
                    ]
                })
            }

            fn change_state(
                &self,
                transition: gst::StateChange,
            ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
                let location = self.location.lock().unwrap().clone();
                if transition == gst::StateChange::NullToReady && location.contains(".invalid") {
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::OpenRead,
                        ("Could not connect to {location}"),
                        ["no route to {location}"]
                    );
                    return Err(gst::StateChangeError);
                }
                self.parent_change_state(transition)
            }
        }
    }

    glib::wrapper! {
        pub struct RtspSrc(ObjectSubclass<imp::Imp>)
            @extends gst::Bin, gst::Element, gst::Object;
    }

    /// Puts the stand-in in this process's registry under `rtspsrc` (replacing the real one).
    pub fn register() {
        static DONE: OnceLock<()> = OnceLock::new();
        DONE.get_or_init(|| {
            gst::init().unwrap();
            gst::Element::register(None, "rtspsrc", gst::Rank::NONE, RtspSrc::static_type())
                .unwrap();
        });
    }
}

/// Every log line of this process, at debug level, as text.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Capture(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs_text() -> String {
    String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned()
}

/// `GET path` on a fresh connection: the whole response, head and body.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw
}

fn governor(dir: &Path) -> Governor {
    let profile_path = dir.join("profile.yaml");
    std::fs::write(
        &profile_path,
        "name: test\ntarget_fps: 10\npower: { cap_w: 100.0, source: estimate }\n\
         estimates: { idle_w: 2.0, tta_factor: 2.0, models: { a: { latency_ms: 5.0, active_w: 1.0 }, b: { latency_ms: 5.0, active_w: 1.0 } } }\n\
         ladder:\n  - { name: pair, models: [a, b], fps: 10 }\n",
    )
    .unwrap();
    Governor::new(Profile::load(&profile_path).unwrap(), None, 0.0).unwrap()
}

fn assert_masked(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET) && !text.contains("user:"),
        "{what} shows the credentials:\n{text}"
    );
}

#[test]
fn a_camera_password_reaches_gstreamer_and_no_output() {
    let _ = captured_logs();
    standin::register();
    let uri: SourceUri = URI.parse().unwrap();
    assert_eq!(uri.to_string(), SHOWN);
    let opts = SourceOptions {
        width: 160,
        height: 120,
        fps: 10,
        ..SourceOptions::default()
    };
    let mut sources = vec![Source::open(uri, opts.clone()).unwrap()];
    // GStreamer got the real URL.
    assert!(
        standin::locations()
            .lock()
            .unwrap()
            .iter()
            .any(|l| l == URI),
        "{:?}",
        standin::locations()
    );

    let dir = tempfile::tempdir().unwrap();
    let snapshots = dir.path().join("snapshots");
    let mut run_opts = RunOptions {
        duration: Some(Duration::from_millis(2000)),
        detections: dir.path().join("detections.jsonl"),
        log: LogOptions::default(),
        notifier: None,
        snapshots: Some(
            Snapshots::new(SnapshotOptions {
                dir: snapshots.clone(),
                classes: vec![0, 1, 2],
                min_score: 0.0,
                min_interval_s: 1e-6,
                keep: 10_000,
                max_bytes: u64::MAX,
            })
            .unwrap(),
        ),
    };
    let health = Arc::new(Health::new(HealthConfig::default()));
    let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&health)).unwrap();
    let addr = server.local_addr();
    // Every candidate kept (floor 0), so the test pattern yields detections and snapshots.
    let mut ensemble = fixture_pair::ensemble(0.0);
    let mut governor = governor(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let (summary, during) = fixture_pair::run_while(
        &mut sources,
        &mut ensemble,
        &mut governor,
        &mut run_opts,
        &stop,
        &health,
        |_| {
            std::thread::sleep(Duration::from_millis(1200));
            [get(addr, "/metrics"), get(addr, "/healthz")]
        },
    );
    assert!(summary.frames > 0);

    // /metrics labels the source with the masked URI (quotes and backslashes as the exposition
    // format escapes them; the masked URI has neither).
    let metrics = get(addr, "/metrics");
    assert!(
        metrics.contains(&format!(
            "trident_source_frames_total{{source=\"{SHOWN}\"}}"
        )),
        "{metrics}"
    );
    for (what, text) in [
        ("/metrics during the run", &during[0]),
        ("/healthz during the run", &during[1]),
        ("/metrics", &metrics),
        ("/healthz", &get(addr, "/healthz")),
    ] {
        assert_masked(what, text);
    }
    server.shutdown();

    // The detections log names the source masked on every line.
    let log = std::fs::read_to_string(&run_opts.detections).unwrap();
    assert!(log.lines().count() > 0);
    for line in log.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["source"], SHOWN, "{line}");
    }
    assert_masked("the detections log", &log);

    // Snapshot names carry the source (masked, then made file-name safe).
    let saved = run_opts.snapshots.as_ref().unwrap().counters().saved;
    assert!(saved > 0, "no snapshot taken; the test needs one");
    let names: Vec<String> = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.contains("-rtsp_______cam_local_8554_stream_token_____channel_1-")),
        "{names:?}"
    );
    assert_masked("snapshot names", &names.join("\n"));

    // The run summary, as printed at the end.
    assert_eq!(summary.sources[0].0, SHOWN);
    assert_masked("the run summary", &format!("{summary:?}"));

    // A camera that cannot be reached: the error, its retries and their log lines.
    let offline: SourceUri = "rtsp://user:s3cret@cam.invalid/stream".parse().unwrap();
    let err = Source::open(offline, opts).err().expect("cannot connect");
    let err = err.to_string();
    assert!(
        err.contains("rtsp://***@cam.invalid/stream") && err.contains("Could not connect"),
        "{err}"
    );
    assert_masked("the source error", &err);

    // Every log line of the run: the pipeline (debug), snapshots, the end of the source.
    let logs = logs_text();
    assert!(
        logs.contains(&format!("source {SHOWN}: rtspsrc location=\"{SHOWN}\"")),
        "{logs}"
    );
    assert_masked("the logs", &logs);
}

/// The binary, asked to run an RTSP camera that refuses connections (with the real rtspsrc, or
/// none: either way the source fails to open), with debug logs: neither its error nor its logs
/// show the password.
#[test]
fn the_binary_does_not_print_a_camera_password() {
    use common::{NAMES, VARIANTS, s, text};
    let dir = tempfile::tempdir().unwrap();
    let (models, _) = trident_e2e::fixture_models(dir.path(), &VARIANTS, &NAMES);
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let uri = format!("rtsp://user:{SECRET}@{closed}/stream?passwd={SECRET}");
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/profiles/host-cpu.yaml");
    let out = dir.path().join("out");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_trident-edge"))
        .args([
            "-vv",
            "run",
            "--models",
            s(&models),
            "--profile",
            s(&profile),
            "--source",
            &uri,
            "--backend",
            "tract",
            "--http",
            "off",
            "--duration",
            "5s",
            "--out",
            s(&out),
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    let all = text(&o);
    assert!(
        all.contains(&format!("rtsp://***@{closed}/stream?passwd=***")),
        "{all}"
    );
    assert_masked("the binary's output", &all);
}
