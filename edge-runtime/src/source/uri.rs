//! Source URIs as jetson-inference spells them, and the GStreamer pipeline each one becomes.
//! Only elements and properties present in GStreamer 1.14 (JetPack 4.6) are used.
//!
//! A URI's `Display` is what every log line, metric label, detections record, snapshot name and
//! error shows: credentials masked (see [`super::secret`]). Only the pipeline builder asks for
//! the real text, through [`SecretText::expose_secret`].

use std::path::PathBuf;
use std::str::FromStr;

use super::secret::{SecretText, redact};
use crate::error::{Error, Result};

/// Where frames come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceUri {
    /// `csi://N`: a MIPI CSI camera through nvarguscamerasrc (Jetson only).
    Csi { sensor: u32 },
    /// `v4l2:///dev/videoN[?width=W&height=H&framerate=F&format=mjpeg|raw]`: a USB or V4L2
    /// camera, raw or MJPEG (most USB cameras at 720p and above only offer MJPEG).
    V4l2 { device: PathBuf, caps: V4l2Caps },
    /// `file://clip.mp4` (relative or absolute): anything decodebin decodes.
    File { path: PathBuf },
    /// `rtsp://[user:pass@]host/stream`: a network camera; the URL may carry credentials.
    Rtsp { url: SecretText },
    /// `test://` or `test://PATTERN`: videotestsrc (smpte, ball, snow, …) for demos and tests.
    Test { pattern: String },
    /// `gst://LAUNCH`: a custom GStreamer launch line for unusual cameras; trident appends the
    /// RGB conversion and its appsink. Treated as live. May carry credentials (an rtspsrc
    /// `location` or `user-pw`).
    Gst { launch: SecretText },
}

const SCHEMES: &str = "csi://N, v4l2:///dev/videoN[?width=W&height=H&framerate=F&format=mjpeg|raw], file://PATH, rtsp://HOST/PATH, test://[pattern], gst://LAUNCH";

/// What a V4L2 camera is asked for, from the URI's query (jetson-inference's spelling); `None`
/// leaves the choice to the capture options (`--width`, `--height`) or the camera.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct V4l2Caps {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub framerate: Option<u32>,
    pub format: V4l2Format,
}

/// The camera's pixel format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum V4l2Format {
    /// Raw or MJPEG, whichever the camera offers at the size (decodebin decides).
    #[default]
    Any,
    /// Motion JPEG (`format=mjpeg`).
    Mjpeg,
    /// Uncompressed YUYV and the like (`format=raw`, `yuyv`).
    Raw,
}

impl V4l2Caps {
    /// `width=1280&height=720&framerate=30&format=mjpeg`; unknown keys and bad values are errors.
    fn parse_query(query: &str) -> std::result::Result<Self, String> {
        let mut caps = V4l2Caps::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}`: expected key=value"))?;
            let number = || {
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|v| (1..=10_000).contains(v))
                    .ok_or_else(|| format!("{key}={value}: expected a positive whole number"))
            };
            match key {
                "width" => caps.width = Some(number()?),
                "height" => caps.height = Some(number()?),
                "framerate" | "fps" => caps.framerate = Some(number()?),
                "format" | "codec" => {
                    caps.format = match value.to_ascii_lowercase().as_str() {
                        "mjpeg" | "mjpg" | "jpeg" => V4l2Format::Mjpeg,
                        "raw" | "yuyv" | "yuy2" => V4l2Format::Raw,
                        _ => return Err(format!("{key}={value}: expected mjpeg or raw")),
                    }
                }
                _ => {
                    return Err(format!(
                        "unknown option `{key}` (width, height, framerate, format)"
                    ));
                }
            }
        }
        Ok(caps)
    }
}

impl FromStr for SourceUri {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        // A URI that does not parse may still carry a password.
        let bad = |why: &str| Error::Source {
            source_uri: redact(s).into_owned(),
            message: format!("{why}; expected one of {SCHEMES}"),
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
        match scheme {
            "csi" => rest
                .parse()
                .map(|sensor| SourceUri::Csi { sensor })
                .map_err(|_| bad("csi:// takes a sensor number")),
            "v4l2" if rest.starts_with('/') => {
                let (device, query) = rest.split_once('?').unwrap_or((rest, ""));
                let caps = V4l2Caps::parse_query(query).map_err(|why| bad(&why))?;
                Ok(SourceUri::V4l2 {
                    device: PathBuf::from(device),
                    caps,
                })
            }
            "v4l2" => Err(bad(
                "v4l2:// takes an absolute device path (v4l2:///dev/video0)",
            )),
            "file" if !rest.is_empty() => Ok(SourceUri::File {
                path: PathBuf::from(rest),
            }),
            "file" => Err(bad("file:// takes a path")),
            "rtsp" | "rtsps" => Ok(SourceUri::Rtsp {
                url: SecretText::new(s),
            }),
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
                launch: SecretText::new(rest.trim()),
            }),
            "gst" => Err(bad("gst:// takes a launch line")),
            _ => Err(bad(&format!("unknown scheme `{scheme}`"))),
        }
    }
}

/// The redacted URI (`rtsp://***@cam.local/stream`): safe for logs, labels and file names.
impl std::fmt::Display for SourceUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceUri::Csi { sensor } => write!(f, "csi://{sensor}"),
            SourceUri::V4l2 { device, .. } => write!(f, "v4l2://{}", device.display()),
            SourceUri::File { path } => write!(f, "file://{}", path.display()),
            SourceUri::Rtsp { url } => write!(f, "{url}"),
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
    /// A live source that delivers no frame for this long, without an error, is torn down and
    /// reopened with the reconnection backoff (a stalled camera or stream; `None`: never). Keep
    /// it under the unit's `WatchdogSec`: the watchdog is not fed while a source only times out.
    pub stall_after: Option<std::time::Duration>,
}

/// The default stall timeout: a third of the unit's `WatchdogSec=30`.
pub const DEFAULT_STALL_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            width: 1280,
            height: 720,
            fps: 30,
            loop_file: false,
            realtime_file: false,
            stall_after: Some(DEFAULT_STALL_AFTER),
        }
    }
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
                device: "/dev/video1".into(),
                caps: V4l2Caps::default()
            }
        );
        // jetson-inference's query: size, rate and MJPEG.
        assert_eq!(
            "v4l2:///dev/video0?width=1280&height=720&framerate=30&format=mjpeg"
                .parse::<SourceUri>()
                .unwrap(),
            SourceUri::V4l2 {
                device: "/dev/video0".into(),
                caps: V4l2Caps {
                    width: Some(1280),
                    height: Some(720),
                    framerate: Some(30),
                    format: V4l2Format::Mjpeg
                }
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
            "v4l2:///dev/video0?width=wide",
            "v4l2:///dev/video0?exposure=3",
            "v4l2:///dev/video0?format=h264",
        ] {
            let err = bad.parse::<SourceUri>().unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("csi://N"), "{err}");
        }
    }

    #[test]
    fn credentials_are_kept_for_gstreamer_and_masked_when_shown() {
        let rtsp: SourceUri = "rtsp://user:s3cret@cam.local:8554/stream?password=p&channel=1"
            .parse()
            .unwrap();
        let SourceUri::Rtsp { url } = &rtsp else {
            panic!("{rtsp:?}")
        };
        assert_eq!(
            url.expose_secret(),
            "rtsp://user:s3cret@cam.local:8554/stream?password=p&channel=1"
        );
        assert_eq!(
            rtsp.to_string(),
            "rtsp://***@cam.local:8554/stream?password=***&channel=1"
        );
        assert!(!format!("{rtsp:?}").contains("s3cret"), "{rtsp:?}");
        let gst: SourceUri = "gst://rtspsrc location=rtsp://admin:s3cret@[::1]/s"
            .parse()
            .unwrap();
        assert_eq!(gst.to_string(), "gst://rtspsrc location=rtsp://***@[::1]/s");
        // Without credentials a URI shows as it was given.
        for plain in ["rtsp://cam.local/stream", "csi://0", "test://ball"] {
            assert_eq!(plain.parse::<SourceUri>().unwrap().to_string(), plain);
        }
        // A URI the parser refuses is masked in the error too.
        let err = "http://user:s3cret@cam.local/x"
            .parse::<SourceUri>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http://***@cam.local/x") && !err.contains("s3cret"),
            "{err}"
        );
    }
}
