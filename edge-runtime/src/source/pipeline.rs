//! The GStreamer launch line of each source, for the machine it runs on.
//!
//! On a Jetson the hardware decoders (`nvv4l2decoder`, which decodebin prefers there, and
//! `nvjpegdec`) and the camera (`nvarguscamerasrc`) hand out `video/x-raw(memory:NVMM)` buffers,
//! which `videoconvert` cannot take ("not negotiated"). As in dusty-nv/jetson-utils, `nvvidconv`
//! follows them and copies into system memory (scaling there in hardware when asked); it accepts
//! system memory too, so a software decoder picked by decodebin still links. Whether the Jetson
//! elements exist is decided by a factory lookup ([`MediaElements::detect`]), never by guessing
//! from the architecture. Desktop machines keep the software path. Only elements and properties
//! of GStreamer 1.14 (JetPack 4.6) are used.

use super::uri::{SourceOptions, SourceUri, V4l2Caps, V4l2Format};

/// Which Jetson media elements this machine's GStreamer registry has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaElements {
    /// `nvvidconv`: NVMM ↔ system memory, colour conversion and scaling in hardware.
    pub nvvidconv: bool,
    /// `nvjpegdec`: hardware JPEG decoding (MJPEG USB cameras).
    pub nvjpegdec: bool,
}

impl MediaElements {
    /// A desktop: no Jetson elements.
    pub const DESKTOP: MediaElements = MediaElements {
        nvvidconv: false,
        nvjpegdec: false,
    };
    /// A Jetson with JetPack's GStreamer plugins.
    pub const JETSON: MediaElements = MediaElements {
        nvvidconv: true,
        nvjpegdec: true,
    };

    /// Looks the elements up in the registry (GStreamer must be initialised).
    #[cfg(feature = "gstreamer")]
    pub fn detect() -> Self {
        let has = |name: &str| gstreamer::ElementFactory::find(name).is_some();
        MediaElements {
            nvvidconv: has("nvvidconv"),
            nvjpegdec: has("nvjpegdec"),
        }
    }
}

/// GStreamer's own quoting for a property value in a launch line.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// After a decoder that may output NVMM: into system memory (hardware on a Jetson), then the
/// software converter the RGB caps need.
fn to_system_memory(el: &MediaElements) -> &'static str {
    if el.nvvidconv {
        "nvvidconv ! video/x-raw,format=BGRx ! videoconvert"
    } else {
        "videoconvert"
    }
}

/// The caps fields a V4L2 camera is asked for (`,width=1280,height=720,framerate=30/1`).
fn v4l2_fields(caps: &V4l2Caps, opts: &SourceOptions) -> String {
    let mut f = String::new();
    // Size and rate: the query's, else the capture options' when the query names a format (an
    // MJPEG camera must be asked for a size it encodes), else none (the camera's default mode,
    // scaled afterwards).
    let explicit = caps.width.is_some() || caps.height.is_some() || caps.framerate.is_some();
    let pick = |q: Option<u32>, default: u32| q.or((!explicit).then_some(default));
    if explicit || caps.format != V4l2Format::Any {
        if let Some(w) = pick(caps.width, opts.width) {
            f.push_str(&format!(",width={w}"));
        }
        if let Some(h) = pick(caps.height, opts.height) {
            f.push_str(&format!(",height={h}"));
        }
        if let Some(r) = pick(caps.framerate, opts.fps) {
            f.push_str(&format!(",framerate={r}/1"));
        }
    }
    f
}

fn v4l2_head(device: &str, caps: &V4l2Caps, opts: &SourceOptions, el: &MediaElements) -> String {
    let src = format!("v4l2src device={}", quoted(device));
    let fields = v4l2_fields(caps, opts);
    let scale = if fields.is_empty() {
        // The camera's default mode, scaled to the capture size on the CPU. The converter after
        // the scale's caps keeps two caps filters from following each other, which GStreamer's
        // parser refuses after a decodebin ("no element video").
        format!(
            " ! videoscale ! video/x-raw,width={},height={} ! videoconvert",
            opts.width, opts.height
        )
    } else {
        String::new()
    };
    match caps.format {
        V4l2Format::Raw => format!("{src} ! video/x-raw{fields} ! videoconvert{scale}"),
        V4l2Format::Mjpeg if el.nvjpegdec && el.nvvidconv => format!(
            "{src} ! image/jpeg{fields} ! nvjpegdec ! video/x-raw ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert{scale}"
        ),
        V4l2Format::Mjpeg => {
            format!("{src} ! image/jpeg{fields} ! jpegdec ! videoconvert{scale}")
        }
        // Either: both structures in one filter, decodebin passes raw through or decodes JPEG.
        V4l2Format::Any if fields.is_empty() => {
            format!("{src} ! decodebin ! {}{scale}", to_system_memory(el))
        }
        V4l2Format::Any => format!(
            "{src} ! capsfilter caps={} ! decodebin ! {}",
            quoted(&format!("video/x-raw{fields};image/jpeg{fields}")),
            to_system_memory(el)
        ),
    }
}

/// The launch line for `uri` on a machine with `elements`, ending in an `appsink name=sink` that
/// delivers packed RGB. It holds the URI's credentials: show it through [`super::redact`].
pub fn pipeline_for(uri: &SourceUri, opts: &SourceOptions, elements: &MediaElements) -> String {
    let (w, h, fps) = (opts.width, opts.height, opts.fps);
    let head = match uri {
        // NVMM from the ISP, scaled by nvvidconv while still in hardware.
        SourceUri::Csi { sensor } => format!(
            "nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width={w},height={h},framerate={fps}/1 \
             ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert"
        ),
        SourceUri::V4l2 { device, caps } => {
            v4l2_head(&device.display().to_string(), caps, opts, elements)
        }
        SourceUri::File { path } => format!(
            "filesrc location={} ! decodebin ! {}",
            quoted(&path.display().to_string()),
            to_system_memory(elements)
        ),
        // The one place the credentials go: to GStreamer, which needs them.
        SourceUri::Rtsp { url } => format!(
            "rtspsrc location={} latency=200 ! decodebin ! {}",
            quoted(url.expose_secret()),
            to_system_memory(elements)
        ),
        SourceUri::Test { pattern } => format!(
            "videotestsrc pattern={pattern} is-live=true ! video/x-raw,width={w},height={h},framerate={fps}/1 ! videoconvert"
        ),
        SourceUri::Gst { launch } => format!("{} ! videoconvert", launch.expose_secret()),
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

/// [`pipeline_for`] a desktop (no Jetson elements), credentials masked: what the pipeline text
/// shows without a registry to ask. For display only; GStreamer gets [`pipeline_for`]'s.
pub fn pipeline_description(uri: &SourceUri, opts: &SourceOptions) -> String {
    super::redact(&pipeline_for(uri, opts, &MediaElements::DESKTOP)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(uri: &str, el: &MediaElements) -> String {
        pipeline_for(&uri.parse().unwrap(), &SourceOptions::default(), el)
    }

    #[test]
    fn live_sources_drop_stale_frames_and_files_apply_back_pressure() {
        let live = line("test://ball", &MediaElements::DESKTOP);
        assert!(
            live.contains("pattern=ball") && live.contains("drop=true sync=false"),
            "{live}"
        );
        let file = line("file:///tmp/a \"q\".mp4", &MediaElements::DESKTOP);
        assert!(file.contains(r#"location="/tmp/a \"q\".mp4""#), "{file}");
        assert!(file.contains("drop=false sync=false"), "{file}");
        let csi = line("csi://1", &MediaElements::JETSON);
        assert!(
            csi.contains("nvarguscamerasrc sensor-id=1") && csi.contains("nvvidconv"),
            "{csi}"
        );
    }

    #[test]
    fn decoders_are_followed_by_nvvidconv_on_a_jetson_only() {
        for uri in ["file:///clips/reef.mp4", "rtsp://cam/stream"] {
            let jetson = line(uri, &MediaElements::JETSON);
            assert!(
                jetson.contains("decodebin ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert"),
                "{jetson}"
            );
            let desktop = line(uri, &MediaElements::DESKTOP);
            assert!(desktop.contains("decodebin ! videoconvert"), "{desktop}");
            assert!(!desktop.contains("nvvidconv"), "{desktop}");
        }
    }

    #[test]
    fn gstreamer_gets_the_credentials_and_the_shown_line_does_not() {
        let uri: SourceUri = "rtsp://user:s3cret@cam.local/stream?token=t0k"
            .parse()
            .unwrap();
        let real = pipeline_for(&uri, &SourceOptions::default(), &MediaElements::DESKTOP);
        assert!(
            real.contains(r#"location="rtsp://user:s3cret@cam.local/stream?token=t0k""#),
            "{real}"
        );
        let shown = pipeline_description(&uri, &SourceOptions::default());
        assert!(
            shown.contains(r#"location="rtsp://***@cam.local/stream?token=***""#),
            "{shown}"
        );
        let gst: SourceUri = "gst://rtspsrc location=rtsp://u:s3cret@cam/s user-pw=s3cret"
            .parse()
            .unwrap();
        let real = pipeline_for(&gst, &SourceOptions::default(), &MediaElements::DESKTOP);
        assert!(real.starts_with("rtspsrc location=rtsp://u:s3cret@cam/s user-pw=s3cret !"));
        assert!(!pipeline_description(&gst, &SourceOptions::default()).contains("s3cret"));
    }

    #[test]
    fn v4l2_cameras_take_mjpeg_or_raw_at_the_size_and_rate_asked() {
        let mjpeg = "v4l2:///dev/video0?width=1280&height=720&framerate=30&format=mjpeg";
        let desktop = line(mjpeg, &MediaElements::DESKTOP);
        assert!(
            desktop.contains(
                r#"v4l2src device="/dev/video0" ! image/jpeg,width=1280,height=720,framerate=30/1 ! jpegdec ! videoconvert"#
            ),
            "{desktop}"
        );
        let jetson = line(mjpeg, &MediaElements::JETSON);
        assert!(
            jetson.contains("image/jpeg,width=1280,height=720,framerate=30/1 ! nvjpegdec ! video/x-raw ! nvvidconv"),
            "{jetson}"
        );
        let raw = line(
            "v4l2:///dev/video1?width=640&height=480&format=raw",
            &MediaElements::DESKTOP,
        );
        assert!(
            raw.contains("video/x-raw,width=640,height=480 ! videoconvert !"),
            "{raw}"
        );
        // No format: raw or MJPEG at the asked size, decodebin deciding.
        let any = line(
            "v4l2:///dev/video0?width=1920&height=1080",
            &MediaElements::JETSON,
        );
        assert!(
            any.contains(r#"! capsfilter caps="video/x-raw,width=1920,height=1080;image/jpeg,width=1920,height=1080" ! decodebin ! nvvidconv"#),
            "{any}"
        );
        // Nothing asked: the camera's own mode, scaled to the capture size.
        let plain = line("v4l2:///dev/video0", &MediaElements::DESKTOP);
        assert!(
            plain.contains(
                "decodebin ! videoconvert ! videoscale ! video/x-raw,width=1280,height=720"
            ),
            "{plain}"
        );
    }

    /// Every desktop line is one GStreamer itself accepts (elements, properties and caps), for
    /// each kind of source; nothing is played (no camera here).
    #[cfg(feature = "gstreamer")]
    #[test]
    fn desktop_lines_parse_in_gstreamer() {
        gstreamer::init().unwrap();
        for uri in [
            "file:///clips/reef.mp4",
            "rtsp://cam/stream",
            "rtsp://user:p%40ss@cam:8554/stream?token=t",
            "v4l2:///dev/video0",
            "v4l2:///dev/video0?width=1280&height=720&framerate=30&format=mjpeg",
            "v4l2:///dev/video0?width=640&height=480&format=raw",
            "v4l2:///dev/video0?width=1920&height=1080",
            "test://ball",
        ] {
            let text = line(uri, &MediaElements::DESKTOP);
            gstreamer::parse::launch(&text).unwrap_or_else(|e| panic!("{uri}: {e}: {text}"));
        }
    }
}
