//! `/metrics`: the health state in the Prometheus text format (0.0.4).

use std::time::Instant;

use super::exposition::{Exposition, format_value};
use super::{Health, ModelState, RUNTIME_VERSION, State, f};

impl Health {
    /// The `/metrics` body now (Prometheus text format 0.0.4).
    pub fn metrics(&self) -> String {
        self.metrics_at(Instant::now())
    }

    pub fn metrics_at(&self, now: Instant) -> String {
        let s = self.lock();
        let report = self.report_locked(&s, now);
        let mut e = Exposition::default();
        e.family(
            "trident_build_info",
            "gauge",
            "The package version (label absent without a package) and the runtime's (value 1).",
        );
        let mut labels = Vec::with_capacity(2);
        if let Some(v) = &s.version {
            labels.push(("version", v.as_str()));
        }
        labels.push(("runtime_version", RUNTIME_VERSION));
        e.sample("trident_build_info", &labels, 1.0);
        e.gauge(
            "trident_healthy",
            "1 when /healthz is ok, else 0.",
            f(report.ok),
        );
        e.gauge(
            "trident_uptime_seconds",
            "Seconds since the start.",
            report.uptime_s,
        );
        e.counter(
            "trident_frames_total",
            "Frames the ensemble processed.",
            s.frames,
        );
        e.counter(
            "trident_frames_unprocessed_total",
            "Frames skipped because no model of the level could run (all out, being retried).",
            s.frames_unprocessed,
        );
        e.counter(
            "trident_detections_total",
            "Detections reported (after fusion and thresholds).",
            s.detections,
        );
        e.gauge(
            "trident_frames_per_second",
            "Frames processed per second over the last window.",
            report.fps,
        );
        if let Some(age) = report.last_frame_age_s {
            e.gauge(
                "trident_last_frame_age_seconds",
                "Seconds since the last processed frame.",
                age,
            );
        }
        e.gauge(
            "trident_capturing",
            "0 while paused outside capture windows.",
            f(!s.paused),
        );
        let per_source = [
            (
                "trident_source_frames_total",
                "Frames pulled from the source.",
            ),
            (
                "trident_source_dropped_frames_total",
                "Frames the source replaced with newer ones before they were pulled.",
            ),
            (
                "trident_source_errors_total",
                "Source failures (each torn down).",
            ),
            (
                "trident_source_reconnects_total",
                "Source pipelines reopened.",
            ),
            (
                "trident_source_stalls_total",
                "Live sources that delivered nothing, without an error, for the stall timeout \
                 (torn down and reopened; counted in errors too).",
            ),
            (
                "trident_source_skipped_frames_total",
                "Frames that could not be converted to RGB and were skipped.",
            ),
        ];
        for (j, (name, help)) in per_source.into_iter().enumerate() {
            if s.sources.is_empty() {
                break;
            }
            e.family(name, "counter", help);
            for src in &s.sources {
                let c = &src.counters;
                let values = [
                    c.frames,
                    c.dropped,
                    c.errors,
                    c.reconnects,
                    c.stalls,
                    c.skipped,
                ];
                e.sample(name, &[("source", &src.uri)], values[j] as f64);
            }
        }
        if !s.models.is_empty() {
            let name = "trident_model_latency_seconds";
            e.family(
                name,
                "histogram",
                "Seconds per forward pass (letterbox, model, decode).",
            );
            for m in &s.models {
                for (le, n) in m.latency.cumulative() {
                    let bound = format_value(le);
                    e.sample(
                        "trident_model_latency_seconds_bucket",
                        &[("model", &m.name), ("le", &bound)],
                        n as f64,
                    );
                }
                let labels = [("model", m.name.as_str())];
                e.sample(
                    "trident_model_latency_seconds_sum",
                    &labels,
                    m.latency.sum(),
                );
                e.sample(
                    "trident_model_latency_seconds_count",
                    &labels,
                    m.latency.count() as f64,
                );
            }
            e.family(
                "trident_model_running",
                "gauge",
                "0 once the model was dropped.",
            );
            for m in &s.models {
                e.sample(
                    "trident_model_running",
                    &[("model", &m.name)],
                    f(m.dropped.is_none()),
                );
            }
            for (name, help, value) in [
                (
                    "trident_model_faults_total",
                    "Passes that failed (each takes the model out until a retry works).",
                    (|m: &ModelState| m.faults) as fn(&ModelState) -> u64,
                ),
                (
                    "trident_model_readmissions_total",
                    "Times the model came back after being out.",
                    |m: &ModelState| m.readmissions,
                ),
            ] {
                e.family(name, "counter", help);
                for m in &s.models {
                    e.sample(name, &[("model", &m.name)], value(m) as f64);
                }
            }
            e.family(
                "trident_model_backend_info",
                "gauge",
                "1 for the backend and precision each model runs on; fallback=\"1\" when a \
                 preferred backend did not load.",
            );
            for m in &s.models {
                e.sample(
                    "trident_model_backend_info",
                    &[
                        ("model", &m.name),
                        ("backend", &m.backend),
                        ("precision", &m.precision),
                        ("fallback", if m.fallback.is_some() { "1" } else { "0" }),
                    ],
                    1.0,
                );
            }
        }
        output(&mut e, &s);
        if let Some(level) = s.level {
            e.family(
                "trident_ladder_level",
                "gauge",
                "The governor's level (0 is the best).",
            );
            e.sample(
                "trident_ladder_level",
                &[("level_name", &s.level_name)],
                level as f64,
            );
        }
        if let Some(p) = &s.power {
            e.counter(
                "trident_level_changes_total",
                "Changes of ladder level.",
                p.level_changes,
            );
            e.gauge("trident_power_watts", "Power at the last sample.", p.last_w);
            e.gauge(
                "trident_power_average_watts",
                "Average power since the start.",
                p.average_w,
            );
            e.gauge("trident_power_cap_watts", "The average power cap.", p.cap_w);
            e.family(
                "trident_energy_joules_total",
                "counter",
                "Energy used since the start.",
            );
            e.sample("trident_energy_joules_total", &[], p.energy_j);
        }
        e.out
    }
}

/// The detections log and the snapshots.
fn output(e: &mut Exposition, s: &State) {
    let log = &s.log;
    e.gauge(
        "trident_log_writable",
        "0 while writing the detections log fails (lines wait in memory and are retried).",
        f(log.failing.is_none()),
    );
    for (name, help, value) in [
        (
            "trident_log_lines_written_total",
            "Detection lines written to the log.",
            log.lines_written,
        ),
        (
            "trident_log_lines_synced_total",
            "Detection lines on disk as of the last fdatasync.",
            log.lines_synced,
        ),
        (
            "trident_log_lines_dropped_total",
            "Detection lines dropped: the memory buffer was full while writes failed.",
            log.lines_dropped,
        ),
        (
            "trident_log_detections_dropped_total",
            "Detections in the dropped lines.",
            log.detections_dropped,
        ),
        (
            "trident_log_write_errors_total",
            "Failed attempts to open, write or sync the detections log.",
            log.write_errors,
        ),
        (
            "trident_log_rotation_errors_total",
            "Rotations that could not happen (the current file stays in use).",
            log.rotation_errors,
        ),
    ] {
        e.counter(name, help, value);
    }
    e.gauge(
        "trident_log_lines_pending",
        "Detection lines waiting in memory to be written.",
        log.lines_pending as f64,
    );
    let Some(snaps) = &s.snapshots else { return };
    for (name, help, value) in [
        (
            "trident_snapshots_saved_total",
            "Snapshots written.",
            snaps.saved,
        ),
        (
            "trident_snapshots_failed_total",
            "Snapshots that could not be written (skipped).",
            snaps.failed,
        ),
        (
            "trident_snapshots_removed_total",
            "Snapshots removed to keep the folder within its bounds.",
            snaps.removed,
        ),
    ] {
        e.counter(name, help, value);
    }
    e.gauge(
        "trident_snapshots_kept",
        "Snapshots in the folder.",
        snaps.kept as f64,
    );
    e.gauge(
        "trident_snapshots_kept_bytes",
        "Bytes of the snapshots in the folder.",
        snaps.kept_bytes as f64,
    );
}
