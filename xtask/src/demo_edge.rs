//! The demo's edge stages: `trident-edge prepare`, then `trident-edge run` of the installed
//! package on the test feed, its detections scored with `trident eval` against the feed's ground
//! truth and set against the same package's ensemble on the test stills (`trident predict`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Result;
use trident_core::prediction::{load_predictions, save_predictions};

use crate::demo::{Demo, Stage, eval_json, eval_line, num};
use crate::demo_feed::{read_feed_detections, write_feed_eval};
use crate::demo_floors::{self as floors, Verdict};
use crate::root;

/// How long the edge runtime plays the test feed (it loops).
const EDGE_SECONDS: &str = "20s";

pub(crate) fn run(d: &mut Demo, release: &Path, stills: &[PathBuf]) -> Result<()> {
    let edge = d.bin.join("trident-edge");
    // On a Jetson this builds and validates the TensorRT engines; here it says why there is
    // nothing to do.
    let t = Instant::now();
    let mut prepare = Command::new(&edge);
    prepare.current_dir(root()).args([
        "prepare",
        "--models",
        "demo/models",
        "--engine-cache",
        "demo/engines",
    ]);
    let report = stdout_of(&mut prepare, "trident-edge prepare")?;
    d.push(Stage::new(
        "edge prepare",
        Verdict::Pass,
        report
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("trident-edge prepare: "),
        t.elapsed().as_secs_f64(),
    ));

    let t = Instant::now();
    let out = d.dir.join("edge");
    let _ = std::fs::remove_dir_all(&out);
    // The models and tables of the installed package (its manifest is checked again at load).
    let mut run = crate::demo_feed::edge_on_feed(&edge, "run", release);
    run.args([
        "--loop-files",
        "--duration",
        EDGE_SECONDS,
        "--out",
        "demo/edge",
        // /healthz and /metrics on a free port, so a busy 8080 cannot fail the demo.
        "--http",
        "127.0.0.1:0",
    ]);
    let summary = stdout_of(&mut run, "trident-edge run")?;
    let headline = summary
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("trident-edge run: ")
        .to_string();
    let run_s = t.elapsed().as_secs_f64();

    // Score: the runtime's first pass over each still vs the ground truth of those stills, and
    // the same package's ensemble on the same stills.
    let t = Instant::now();
    let dataset = d.dir.join("dataset/dataset.yaml");
    let feed = read_feed_detections(&out.join("detections.jsonl"), stills)?;
    let (feed_yaml, feed_preds) = write_feed_eval(&dataset, &feed, &d.dir.join("feed_eval"))?;
    let all_stills = d.dir.join("feed_eval/stills_all.json");
    crate::demo::run_cmd(
        Command::new(d.bin.join("trident"))
            .current_dir(root())
            .arg("predict")
            .arg("--package")
            .arg(release)
            .args(["--source", "demo/dataset/images/test", "--out"])
            .arg(&all_stills),
    )?;
    // The same stills as the feed's score: those the runtime processed.
    let covered: HashSet<String> = feed
        .covered
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let mut on_covered = load_predictions(&all_stills)?;
    on_covered.retain(|p| covered.contains(&p.image));
    let stills_preds = d.dir.join("feed_eval/stills_predictions.json");
    save_predictions(&stills_preds, &on_covered)?;
    let eval = |preds: &Path| {
        let mut c = Command::new(d.bin.join("trident"));
        c.current_dir(root())
            .arg("eval")
            .arg("--data")
            .arg(&feed_yaml)
            .args(["--split", "test", "--json", "--predictions"])
            .arg(preds);
        eval_json(&mut c)
    };
    let on_feed = eval(&feed_preds)?;
    let on_stills = eval(&stills_preds)?;
    let (feed_map, stills_map) = (num(&on_feed["map50"]), num(&on_stills["map50"]));
    d.push(Stage::new(
        "edge runtime",
        floors::feed_verdict(feed_map, stills_map),
        headline,
        run_s,
    ));
    // The detections log: every line written reached the disk, nothing dropped or failed.
    let (log_verdict, log_line) = floors::log_verdict(&summary)
        .ok_or_else(|| anyhow::anyhow!("the run summary has no `log:` line:\n{summary}"))?;
    d.push(Stage::new("edge log", log_verdict, log_line, 0.0));
    d.push(Stage::new(
        "edge score",
        floors::feed_verdict(feed_map, stills_map),
        format!(
            "test feed ({} of {} frames processed, {} logged): {}; same package on the stills: mAP50 {stills_map:.3} (floor: within {})",
            feed.stills_covered,
            stills.len(),
            feed.frames_logged,
            eval_line(&on_feed),
            floors::FEED_VS_STILLS
        ),
        t.elapsed().as_secs_f64(),
    ));
    Ok(())
}

/// Runs a command, echoing it and its standard output; fails with its standard error.
fn stdout_of(c: &mut Command, what: &str) -> Result<String> {
    println!();
    eprintln!("$ {}", crate::describe(c));
    let out = c.output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    print!("{text}");
    anyhow::ensure!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text)
}
