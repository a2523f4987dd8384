//! Frame sources through real GStreamer pipelines: a live test pattern, a clip file (made here
//! with GStreamer, MJPEG in AVI: only plugins from -base and -good), looping, the end of a file,
//! a camera that is not there, and row padding removed from odd-width frames.
#![cfg(feature = "gstreamer")]

use std::path::Path;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use trident_edge::source::{Backoff, Frame, Pull, Source, SourceOptions, SourceUri};

/// Encodes `frames` of videotestsrc at `w`×`h` into an MJPEG AVI.
fn make_clip(path: &Path, frames: u32, w: u32, h: u32) {
    gst::init().unwrap();
    let line = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width={w},height={h},framerate=10/1 \
         ! jpegenc ! avimux ! filesink location=\"{}\"",
        path.display()
    );
    let pipeline = gst::parse::launch(&line).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("encoding finished");
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    pipeline.set_state(gst::State::Null).unwrap();
}

fn pull_all(source: &mut Source, max: usize) -> (Vec<Frame>, Pull) {
    let mut frames = Vec::new();
    let mut frame = Frame::default();
    loop {
        match source
            .next_frame(&mut frame, Duration::from_secs(5))
            .unwrap()
        {
            Pull::Frame => {
                frames.push(frame.clone());
                if frames.len() == max {
                    return (frames, Pull::Frame);
                }
            }
            Pull::Timeout => continue,
            other => return (frames, other),
        }
    }
}

#[test]
fn a_test_pattern_delivers_rgb_frames_without_row_padding() {
    // 161 × 3 = 483 bytes per row; GStreamer pads RGB rows to 484.
    let opts = SourceOptions {
        width: 161,
        height: 90,
        fps: 30,
        ..SourceOptions::default()
    };
    let mut source = Source::open("test://ball".parse().unwrap(), opts).unwrap();
    let (frames, _) = pull_all(&mut source, 5);
    assert_eq!(frames.len(), 5);
    for f in &frames {
        assert_eq!((f.width, f.height, f.rgb.len()), (161, 90, 161 * 90 * 3));
    }
    // The ball moves: consecutive frames differ, and no frame is a single colour.
    assert_ne!(frames[0].rgb, frames[4].rgb);
    assert!(frames[0].rgb.iter().any(|&v| v != frames[0].rgb[0]));
    // videotestsrc's background is black and the ball white: padding bytes would shear rows
    // and put non-zero bytes in the first column of later rows.
    let f = &frames[0];
    let first_column_max = (0..90).map(|y| f.rgb[y * 161 * 3]).max().unwrap();
    let ball_max = *f.rgb.iter().max().unwrap();
    assert!(
        ball_max > 200 && first_column_max < 50,
        "{first_column_max} {ball_max}"
    );
    assert_eq!(source.stats().frames, 5);
}

#[test]
fn a_file_delivers_every_frame_then_ends_or_loops() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.avi");
    make_clip(&clip, 12, 96, 64);
    let uri: SourceUri = format!("file://{}", clip.display()).parse().unwrap();

    let mut once = Source::open(uri.clone(), SourceOptions::default()).unwrap();
    let (frames, end) = pull_all(&mut once, 100);
    assert_eq!(end, Pull::Eos);
    assert_eq!(
        frames.len(),
        12,
        "back-pressure: no frame of a file is dropped"
    );
    assert_eq!((frames[0].width, frames[0].height), (96, 64));
    assert_eq!(once.stats().dropped, 0);

    let looping = SourceOptions {
        loop_file: true,
        ..SourceOptions::default()
    };
    let mut again = Source::open(uri, looping).unwrap();
    let (frames, end) = pull_all(&mut again, 30);
    assert_eq!((frames.len(), end), (30, Pull::Frame));
    assert_eq!(
        again.stats().dropped,
        0,
        "buffers waiting or flushed by a rewind are not drops"
    );
}

#[test]
fn a_live_source_read_slowly_counts_the_frames_it_replaced() {
    let live: SourceUri =
        "gst://videotestsrc is-live=true ! video/x-raw,width=64,height=48,framerate=100/1"
            .parse()
            .unwrap();
    let mut source = Source::open(live, SourceOptions::default()).unwrap();
    let mut frame = Frame::default();
    let mut pulled = 0;
    while pulled < 3 {
        if source
            .next_frame(&mut frame, Duration::from_secs(5))
            .unwrap()
            == Pull::Frame
        {
            pulled += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let stats = source.stats();
    assert_eq!(stats.frames, 3);
    // ~20 frames arrive per 200 ms at 100 fps; all but the newest are replaced.
    assert!(
        stats.dropped >= 10,
        "latest-frame semantics drop what was not taken: {stats:?}"
    );
}

#[test]
fn missing_sources_fail_clearly_and_a_dead_camera_is_retried_with_backoff() {
    let err = Source::open(
        "file:///nonexistent/clip.mp4".parse().unwrap(),
        SourceOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("/nonexistent/clip.mp4") && err.contains("no such file"),
        "{err}"
    );

    // A V4L2 device that does not exist fails to start: the error names the source.
    let dead: SourceUri = "v4l2:///dev/video-trident-missing".parse().unwrap();
    let err = Source::open(dead, SourceOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("v4l2:///dev/video-trident-missing"), "{err}");

    // A camera that fails mid-run (identity posts an error after 3 buffers): the failure is
    // reported with the backoff delay, the pipeline is reopened, frames flow again, and the
    // delay starts over after a frame.
    let flaky: SourceUri =
        "gst://videotestsrc is-live=true ! video/x-raw,width=64,height=48,framerate=100/1 ! identity error-after=3"
            .parse()
            .unwrap();
    let mut source = Source::open(flaky, SourceOptions::default())
        .unwrap()
        .with_backoff(Backoff::new(0.05, 0.2));
    let mut frame = Frame::default();
    let mut events = Vec::new();
    while events.iter().filter(|e| *e == "failed 0.05").count() < 2 {
        match source
            .next_frame(&mut frame, Duration::from_secs(5))
            .unwrap()
        {
            Pull::Frame => events.push("frame".to_string()),
            Pull::Failed {
                retry_in_s,
                message,
            } => {
                assert!(message.contains("identity"), "{message}");
                events.push(format!("failed {retry_in_s}"));
            }
            Pull::Reconnecting => events.push("reconnecting".into()),
            Pull::Timeout | Pull::Skipped { .. } => {}
            Pull::Eos => panic!("a live source does not end"),
        }
        assert!(events.len() < 50, "{events:?}");
    }
    let first_failure = events.iter().position(|e| e.starts_with("failed")).unwrap();
    assert!(first_failure >= 1, "frames before the failure: {events:?}");
    let after = &events[first_failure + 1..];
    assert!(
        after.contains(&"reconnecting".to_string()) && after.contains(&"frame".to_string()),
        "{events:?}"
    );
    let stats = source.stats();
    assert_eq!((stats.errors, stats.reconnects), (2, 1), "{stats:?}");
}
