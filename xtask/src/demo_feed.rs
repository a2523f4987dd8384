//! The demo's test feed and the scoring of what the edge runtime detected on it.
//!
//! The feed is the held-out test stills muxed into an MJPEG clip at a known frame rate. The
//! runtime logs each processed frame with its presentation time (`pts`), so a logged frame is
//! tied back to its still — and to that still's annotations — even when the governor skipped
//! frames or the clip looped. The runtime's detections are then scored with `trident eval`
//! against the stills it processed, exactly as a prediction file would be.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use trident_core::dataset::{DatasetConfig, Split};
use trident_core::prediction::{Prediction, save_predictions};

use crate::cmd;

/// `trident-edge SUBCOMMAND --package RELEASE --profile host-cpu --source <the test feed>`: how
/// the demo's run and bench stages both start the runtime on this host.
pub fn edge_on_feed(edge: &Path, subcommand: &str, release: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(edge);
    c.current_dir(crate::root())
        .arg(subcommand)
        .arg("--package")
        .arg(release)
        .args([
            "--profile",
            "configs/profiles/host-cpu.yaml",
            "--source",
            "file://demo/test_feed.avi",
        ]);
    c
}

/// Frames per second of the demo's test feed.
pub const FEED_FPS: u32 = 10;

/// The test stills in feed order (sorted by file name).
pub fn feed_stills(images: &Path) -> Result<Vec<PathBuf>> {
    let mut stills: Vec<_> = std::fs::read_dir(images)
        .with_context(|| format!("reading {}", images.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    stills.sort();
    anyhow::ensure!(!stills.is_empty(), "{}: no JPEG frames", images.display());
    Ok(stills)
}

/// Muxes `stills` into `<out>.avi` with GStreamer, without re-encoding: the feed the edge
/// runtime plays in the demo.
pub fn make_test_feed(stills: &[PathBuf], out: &Path) -> Result<PathBuf> {
    let (w, h) = image::image_dimensions(&stills[0])?;
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::create_dir_all(out)?;
    for (i, p) in stills.iter().enumerate() {
        std::fs::copy(p, out.join(format!("{i:05}.jpg")))?;
    }
    let clip = out.with_extension("avi");
    // multifilesrc hands avimux a byte-format segment, which makes GStreamer print
    // assertion noise per frame while writing a valid file: its stderr is dropped.
    crate::exec(
        cmd("gst-launch-1.0")
            .stderr(std::process::Stdio::null())
            .args([
                "-q",
                "multifilesrc",
                &format!("location={}/%05d.jpg", out.display()),
                "index=0",
                &format!("stop-index={}", stills.len() - 1),
                &format!("caps=image/jpeg,framerate={FEED_FPS}/1,width={w},height={h}"),
                "!",
                "avimux",
                "!",
                "filesink",
                &format!("location={}", clip.display()),
            ]),
    )?;
    Ok(clip)
}

/// What the runtime's log says about the feed.
pub struct FeedDetections {
    /// Frames logged (loops included).
    pub frames_logged: usize,
    /// Stills the runtime processed at least once.
    pub stills_covered: usize,
    pub predictions: Vec<Prediction>,
    pub covered: Vec<PathBuf>,
}

/// Reads `detections.jsonl` and keeps, for each still, the first pass over it.
pub fn read_feed_detections(log: &Path, stills: &[PathBuf]) -> Result<FeedDetections> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let mut first: BTreeMap<usize, Vec<Prediction>> = BTreeMap::new();
    let mut frames_logged = 0;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a frame record", log.display(), n + 1))?;
        frames_logged += 1;
        let pts = rec["pts"]
            .as_f64()
            .with_context(|| format!("{}:{}: the frame has no `pts`", log.display(), n + 1))?;
        let index = (pts * f64::from(FEED_FPS)).round() as usize;
        let Some(still) = stills.get(index) else {
            anyhow::bail!(
                "{}:{}: pts {pts} s is past the feed's {} frames",
                log.display(),
                n + 1,
                stills.len()
            );
        };
        if first.contains_key(&index) {
            continue;
        }
        let stem = still
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let preds = rec["detections"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let b: Vec<f64> = d["box"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| v.as_f64().unwrap_or(f64::NAN))
                    .collect();
                anyhow::ensure!(
                    b.len() == 4,
                    "{}:{}: a box is not [x1, y1, x2, y2]",
                    log.display(),
                    n + 1
                );
                Ok(Prediction {
                    image: stem.clone(),
                    class: d["class"].as_u64().unwrap_or(u64::MAX) as usize,
                    score: d["score"].as_f64().unwrap_or(f64::NAN),
                    bbox: [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        first.insert(index, preds);
    }
    let covered: Vec<PathBuf> = first.keys().map(|&i| stills[i].clone()).collect();
    Ok(FeedDetections {
        frames_logged,
        stills_covered: covered.len(),
        predictions: first.into_values().flatten().collect(),
        covered,
    })
}

/// Writes a dataset of the covered stills (an image list over the original dataset, so their
/// labels are found where they are) and the predictions, ready for `trident eval --split test`.
pub fn write_feed_eval(
    dataset: &Path,
    feed: &FeedDetections,
    out: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let ds = DatasetConfig::load(dataset)?;
    anyhow::ensure!(
        ds.has_split(Split::Test),
        "{}: no test split",
        dataset.display()
    );
    std::fs::create_dir_all(out)?;
    let list = out.join("frames.txt");
    let mut text = String::new();
    for p in &feed.covered {
        let abs = std::path::absolute(p)?;
        text.push_str(&abs.to_string_lossy());
        text.push('\n');
    }
    std::fs::write(&list, text)?;
    let yaml = out.join("dataset.yaml");
    // The layout needs train and val too; every split is the processed stills.
    let list = std::path::absolute(&list)?.display().to_string();
    let names: Vec<String> = ds.names.iter().map(|n| format!("\"{n}\"")).collect();
    std::fs::write(
        &yaml,
        format!(
            "# The test stills the edge runtime processed on the demo's feed (written by the demo).\n\
             path: {}\ntrain: {list}\nval: {list}\ntest: {list}\nnames: [{}]\n",
            ds.root.display(),
            names.join(", ")
        ),
    )?;
    let preds = out.join("predictions.json");
    save_predictions(&preds, &feed.predictions)?;
    Ok((yaml, preds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_map_to_stills_by_pts_first_pass_only() {
        let d = tempfile::tempdir().unwrap();
        let stills: Vec<PathBuf> = (0..3).map(|i| d.path().join(format!("s{i}.jpg"))).collect();
        let log = d.path().join("detections.jsonl");
        // Frame 1 skipped in the first pass; the clip loops and frame 0 comes again with
        // another detection, which is ignored.
        std::fs::write(
            &log,
            r#"{"time":1,"source":"file://f.avi","frame":1,"pts":0.0,"level":0,"detections":[{"class":1,"name":"u","score":0.9,"box":[10,20,30,60]}]}
{"time":2,"source":"file://f.avi","frame":2,"pts":0.2,"level":0,"detections":[]}
{"time":3,"source":"file://f.avi","frame":3,"pts":0.0,"level":0,"detections":[{"class":0,"name":"l","score":0.5,"box":[0,0,1,1]}]}
"#,
        )
        .unwrap();
        let f = read_feed_detections(&log, &stills).unwrap();
        assert_eq!(f.frames_logged, 3);
        assert_eq!(f.stills_covered, 2);
        assert_eq!(f.covered, [stills[0].clone(), stills[2].clone()]);
        assert_eq!(f.predictions.len(), 1);
        let p = &f.predictions[0];
        assert_eq!((p.image.as_str(), p.class), ("s0", 1));
        assert_eq!(p.bbox, [10.0, 20.0, 20.0, 40.0]);

        std::fs::write(
            &log,
            r#"{"time":1,"source":"x","frame":1,"level":0,"detections":[]}"#,
        )
        .unwrap();
        let e = read_feed_detections(&log, &stills)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(":1: the frame has no `pts`"), "{e}");
        std::fs::write(
            &log,
            r#"{"time":1,"source":"x","frame":1,"pts":0.5,"level":0,"detections":[]}"#,
        )
        .unwrap();
        let e = read_feed_detections(&log, &stills)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("past the feed's 3 frames"), "{e}");
    }
}
