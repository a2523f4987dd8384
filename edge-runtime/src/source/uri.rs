//! Source URIs as jetson-inference spells them, and the GStreamer pipeline each one becomes.
//! Only elements and properties present in GStreamer 1.14 (JetPack 4.6) are used.

use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Where frames come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceUri {
    /// `csi://N`: a MIPI CSI camera through nvarguscamerasrc (Jetson only).
    Csi { sensor: u32 },
    /// `v4l2:///dev/videoN`: a USB or V4L2 camera.
    V4l2 { device: PathBuf },
    /// `file://clip.mp4` (relative or absolute): anything decodebin decodes.
    File { path: PathBuf },
    /// `rtsp://host/stream`: a network camera.
    Rtsp { url: String },
    /// `test://` or `test://PATTERN`: videotestsrc (smpte, ball, snow, …) for demos and tests.
    Test { pattern: String },
    /// `gst://LAUNCH`: a custom GStreamer launch line for unusual cameras; trident appends the
    /// RGB conversion and its appsink. Treated as live.
    Gst { launch: String },
}

const SCHEMES: &str =
    "csi://N, v4l2:///dev/videoN, file://PATH, rtsp://HOST/PATH, test://[pattern], gst://LAUNCH";

impl FromStr for SourceUri {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::Source {
            source_uri: s.to_string(),
            message: format!("{why}; expected one of {SCHEMES}"),
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
        match scheme {
            "csi" => rest
                .parse()
                .map(|sensor| SourceUri::Csi { sensor })
                .map_err(|_| bad("csi:// takes a sensor number")),
            "v4l2" if rest.starts_with('/') => Ok(SourceUri::V4l2 {
                device: PathBuf::from(rest),
            }),
            "v4l2" => Err(bad(
                "v4l2:// takes an absolute device path (v4l2:///dev/video0)",
            )),
            "file" if !rest.is_empty() => Ok(SourceUri::File {
                path: PathBuf::from(rest),
            }),
            "file" => Err(bad("file:// takes a path")),
            "rtsp" | "rtsps" => Ok(SourceUri::Rtsp { url: s.to_string() }),
            "test" => {
                let pattern = if rest.is_empty() { "smpte" } else { rest };
                if !pattern
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
                {
                    return Err(bad("test:// takes a videotestsrc pattern name"));
                }
                Ok(SourceUri::Test {
                    pattern: pattern.to_string(),
                })
            }
            "gst" if !rest.trim().is_empty() => Ok(SourceUri::Gst {
                launch: rest.trim().to_string(),
            }),
            "gst" => Err(bad("gst:// takes a launch line")),
            _ => Err(bad(&format!("unknown scheme `{scheme}`"))),
        }
    }
}

impl std::fmt::Display for SourceUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceUri::Csi { sensor } => write!(f, "csi://{sensor}"),
            SourceUri::V4l2 { device } => write!(f, "v4l2://{}", device.display()),
            SourceUri::File { path } => write!(f, "file://{}", path.display()),
            SourceUri::Rtsp { url } => f.write_str(url),
            SourceUri::Test { pattern } => write!(f, "test://{pattern}"),
            SourceUri::Gst { launch } => write!(f, "gst://{launch}"),
        }
    }
}

impl SourceUri {
    /// Live sources produce frames in real time: stale frames are dropped. A file is read as
    /// fast as it is consumed (every frame processed) unless played in real time.
    pub fn is_live(&self) -> bool {
        !matches!(self, SourceUri::File { .. })
    }
}

/// Capture settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceOptions {
    /// Camera capture size and rate (CSI, V4L2, test).
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// At end of file, start again instead of ending the source.
    pub loop_file: bool,
    /// Play files at their own frame rate, dropping what the pipeline cannot keep up with (as a
    /// camera would).
    pub realtime_file: bool,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            width: 1280,
            height: 720,
            fps: 30,
            loop_file: false,
            realtime_file: false,
        }
    }
}

/// GStreamer's own quoting for a property value in a launch line.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The launch line for `uri`, ending in an `appsink name=sink` that delivers packed RGB.
/// On Jetson, nvvidconv converts from NVMM memory in hardware before the CPU sees a pixel.
pub fn pipeline_description(uri: &SourceUri, opts: &SourceOptions) -> String {
    let (w, h, fps) = (opts.width, opts.height, opts.fps);
    let head = match uri {
        SourceUri::Csi { sensor } => format!(
            "nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width={w},height={h},framerate={fps}/1 \
             ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert"
        ),
        SourceUri::V4l2 { device } => format!(
            "v4l2src device={} ! videoconvert ! videoscale ! video/x-raw,width={w},height={h}",
            quoted(&device.display().to_string())
        ),
        SourceUri::File { path } => format!(
            "filesrc location={} ! decodebin ! videoconvert",
            quoted(&path.display().to_string())
        ),
        SourceUri::Rtsp { url } => format!(
            "rtspsrc location={} latency=200 ! decodebin ! videoconvert",
            quoted(url)
        ),
        SourceUri::Test { pattern } => format!(
            "videotestsrc pattern={pattern} is-live=true ! video/x-raw,width={w},height={h},framerate={fps}/1 ! videoconvert"
        ),
        SourceUri::Gst { launch } => format!("{launch} ! videoconvert"),
    };
    // Live: keep one buffer and drop older ones (latest-frame semantics, never a backlog).
    // Files: back-pressure, so every frame is processed unless played in real time.
    let (drop, sync) = match (uri.is_live(), opts.realtime_file) {
        (true, _) => ("true", "false"),
        (false, true) => ("true", "true"),
        (false, false) => ("false", "false"),
    };
    format!(
        "{head} ! video/x-raw,format=RGB ! appsink name=sink max-buffers=1 drop={drop} sync={sync} emit-signals=false"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_like_jetson_inference_and_errors_list_the_schemes() {
        assert_eq!(
            "csi://0".parse::<SourceUri>().unwrap(),
            SourceUri::Csi { sensor: 0 }
        );
        assert_eq!(
            "v4l2:///dev/video1".parse::<SourceUri>().unwrap(),
            SourceUri::V4l2 {
                device: "/dev/video1".into()
            }
        );
        assert_eq!(
            "file://clips/a b.mp4".parse::<SourceUri>().unwrap(),
            SourceUri::File {
                path: "clips/a b.mp4".into()
            }
        );
        assert_eq!(
            "test://".parse::<SourceUri>().unwrap(),
            SourceUri::Test {
                pattern: "smpte".into()
            }
        );
        for bad in [
            "camera0",
            "csi://front",
            "v4l2://video0",
            "ftp://x",
            "test://a;b",
        ] {
            let err = bad.parse::<SourceUri>().unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("csi://N"), "{err}");
        }
    }

    #[test]
    fn live_sources_drop_stale_frames_and_files_apply_back_pressure() {
        let opts = SourceOptions::default();
        let live = pipeline_description(&"test://ball".parse().unwrap(), &opts);
        assert!(
            live.contains("pattern=ball") && live.contains("drop=true sync=false"),
            "{live}"
        );
        let file = pipeline_description(&"file:///tmp/a \"q\".mp4".parse().unwrap(), &opts);
        assert!(file.contains(r#"location="/tmp/a \"q\".mp4""#), "{file}");
        assert!(file.contains("drop=false sync=false"), "{file}");
        let csi = pipeline_description(&"csi://1".parse().unwrap(), &opts);
        assert!(
            csi.contains("nvarguscamerasrc sensor-id=1") && csi.contains("nvvidconv"),
            "{csi}"
        );
    }
}
