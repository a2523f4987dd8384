//! A Jetson's media path, stricter than a desktop: stand-in GStreamer elements registered in this
//! test process under the Jetson names — `nvarguscamerasrc` (a live pattern in NVMM, with
//! `sensor-id`; no camera behind any other sensor), `nvv4l2decoder` (a JPEG decoder here, ranked above
//! jpegdec as NVIDIA's is, so decodebin picks it) whose output is `video/x-raw(memory:NVMM)`, and
//! `nvvidconv`, the only element that takes NVMM back to system memory — so a pipeline that would
//! not negotiate on a Jetson does not negotiate here either.
//!
//! The old `decodebin ! videoconvert` chain fails ("not negotiated": videoconvert cannot bring NVMM
//! into system memory), and the runtime's own source (which looks the elements up in the registry)
//! plays the same clip through nvvidconv. What the stand-ins cannot show: the real NVMM buffers,
//! the hardware decoders' formats (NV12) and their behaviour on malformed streams.
#![cfg(feature = "gstreamer")]

use std::path::Path;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use trident_edge::source::{Frame, MediaElements, Pull, Source, SourceOptions, SourceUri};

mod standin {
    use std::sync::OnceLock;

    use gstreamer as gst;
    use gstreamer::glib;
    use gstreamer::prelude::*;
    use gstreamer::subclass::prelude::*;
    use gstreamer_base as gst_base;
    use gstreamer_base::subclass::prelude::*;

    pub const NVMM: &str = "memory:NVMM";

    /// `caps` with every structure given the NVMM feature, or system memory.
    fn in_memory(caps: &gst::Caps, nvmm: bool) -> gst::Caps {
        let mut out = gst::Caps::new_empty();
        {
            let out = out.get_mut().expect("new caps are writable");
            for s in caps.iter() {
                let features = if nvmm {
                    gst::CapsFeatures::new([NVMM])
                } else {
                    gst::CAPS_FEATURES_MEMORY_SYSTEM_MEMORY.clone()
                };
                out.append_structure_full(s.to_owned(), Some(features));
            }
        }
        out
    }

    fn raw(nvmm: bool) -> gst::Caps {
        in_memory(&gst::Caps::builder("video/x-raw").build(), nvmm)
    }

    fn metadata(name: &str, klass: &str) -> gst::subclass::ElementMetadata {
        gst::subclass::ElementMetadata::new(
            name,
            klass,
            "trident test stand-in for a Jetson element",
            "trident",
        )
    }

    /// An always-present `src` pad with `src` caps and, when given, a `sink` pad.
    fn templates(src: &gst::Caps, sink: Option<&gst::Caps>) -> Vec<gst::PadTemplate> {
        let mut t = vec![
            gst::PadTemplate::new("src", gst::PadDirection::Src, gst::PadPresence::Always, src)
                .unwrap(),
        ];
        if let Some(sink) = sink {
            t.push(
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    sink,
                )
                .unwrap(),
            );
        }
        t
    }

    /// A buffer-preserving element that only changes the caps' memory feature: `TO_NVMM` labels
    /// system memory as NVMM (the decoder's output stage); otherwise it takes NVMM (or system
    /// memory, as nvvidconv does) to system memory.
    macro_rules! retag {
        ($module:ident, $name:ident, $type_name:literal, $to_nvmm:expr) => {
            pub mod $module {
                use super::*;

                #[derive(Default)]
                pub struct Imp;

                #[glib::object_subclass]
                impl ObjectSubclass for Imp {
                    const NAME: &'static str = $type_name;
                    type Type = $name;
                    type ParentType = gst_base::BaseTransform;
                }

                impl ObjectImpl for Imp {}
                impl GstObjectImpl for Imp {}

                impl ElementImpl for Imp {
                    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
                        static M: OnceLock<gst::subclass::ElementMetadata> = OnceLock::new();
                        Some(M.get_or_init(|| metadata($type_name, "Filter/Converter/Video")))
                    }

                    fn pad_templates() -> &'static [gst::PadTemplate] {
                        static T: OnceLock<Vec<gst::PadTemplate>> = OnceLock::new();
                        T.get_or_init(|| {
                            let (sink, src) = if $to_nvmm {
                                (raw(false), raw(true))
                            } else {
                                let mut both = raw(true);
                                both.merge(raw(false));
                                (both, raw(false))
                            };
                            templates(&src, Some(&sink))
                        })
                    }
                }

                impl BaseTransformImpl for Imp {
                    const MODE: gst_base::subclass::BaseTransformMode =
                        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
                    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
                    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

                    fn transform_caps(
                        &self,
                        direction: gst::PadDirection,
                        caps: &gst::Caps,
                        filter: Option<&gst::Caps>,
                    ) -> Option<gst::Caps> {
                        // Caps of the sink pad → what the src pad offers, and back.
                        let out = match (direction, $to_nvmm) {
                            (gst::PadDirection::Sink, to_nvmm) => in_memory(caps, to_nvmm),
                            (_, true) => in_memory(caps, false),
                            (_, false) => {
                                let mut both = in_memory(caps, true);
                                both.merge(in_memory(caps, false));
                                both
                            }
                        };
                        Some(match filter {
                            Some(f) => f.intersect_with_mode(&out, gst::CapsIntersectMode::First),
                            None => out,
                        })
                    }

                    fn transform_ip(
                        &self,
                        _buf: &mut gst::BufferRef,
                    ) -> Result<gst::FlowSuccess, gst::FlowError> {
                        Ok(gst::FlowSuccess::Ok)
                    }
                }
            }

            glib::wrapper! {
                pub struct $name(ObjectSubclass<$module::Imp>)
                    @extends gst_base::BaseTransform, gst::Element, gst::Object;
            }
        };
    }

    retag!(to_nvmm, ToNvmm, "TridentStandinToNvmm", true);
    retag!(from_nvmm, FromNvmm, "TridentStandinFromNvmm", false);

    /// A bin of `inner` elements behind ghost pads made from the bin's own templates.
    fn ghost(bin: &gst::Bin, first: &gst::Element, last: &gst::Element) {
        let element = bin.upcast_ref::<gst::Element>();
        for (name, target) in [("sink", first), ("src", last)] {
            let templ = element.pad_template(name).unwrap();
            let pad = gst::GhostPad::builder_from_template_with_target(
                &templ,
                &target.static_pad(name).unwrap(),
            )
            .unwrap()
            .build();
            element.add_pad(&pad).unwrap();
        }
    }

    macro_rules! bin {
        ($module:ident, $name:ident, $type_name:literal, $klass:literal, $sink:expr, $src:expr, $inner:expr) => {
            pub mod $module {
                use super::*;

                #[derive(Default)]
                pub struct Imp;

                #[glib::object_subclass]
                impl ObjectSubclass for Imp {
                    const NAME: &'static str = $type_name;
                    type Type = $name;
                    type ParentType = gst::Bin;
                }

                impl ObjectImpl for Imp {
                    fn constructed(&self) {
                        self.parent_constructed();
                        let bin = self.obj();
                        let inner: Vec<gst::Element> = $inner;
                        bin.add_many(&inner).unwrap();
                        gst::Element::link_many(&inner).unwrap();
                        ghost(
                            bin.upcast_ref(),
                            inner.first().unwrap(),
                            inner.last().unwrap(),
                        );
                    }
                }
                impl GstObjectImpl for Imp {}
                impl BinImpl for Imp {}

                impl ElementImpl for Imp {
                    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
                        static M: OnceLock<gst::subclass::ElementMetadata> = OnceLock::new();
                        Some(M.get_or_init(|| metadata($type_name, $klass)))
                    }

                    fn pad_templates() -> &'static [gst::PadTemplate] {
                        static T: OnceLock<Vec<gst::PadTemplate>> = OnceLock::new();
                        T.get_or_init(|| templates(&$src, Some(&$sink)))
                    }
                }
            }

            glib::wrapper! {
                pub struct $name(ObjectSubclass<$module::Imp>)
                    @extends gst::Bin, gst::Element, gst::Object;
            }
        };
    }

    bin!(
        decoder,
        NvV4l2Decoder,
        "TridentStandinNvV4l2Decoder",
        "Codec/Decoder/Video/Hardware",
        gst::Caps::builder("image/jpeg").build(),
        raw(true),
        vec![
            gst::ElementFactory::make("jpegdec").build().unwrap(),
            glib::Object::new::<ToNvmm>().upcast(),
        ]
    );

    bin!(
        converter,
        NvVidConv,
        "TridentStandinNvVidConv",
        "Filter/Converter/Video/Scaler/Hardware",
        {
            let mut both = raw(true);
            both.merge(raw(false));
            both
        },
        raw(false),
        vec![
            glib::Object::new::<FromNvmm>().upcast(),
            gst::ElementFactory::make("videoconvert").build().unwrap(),
            gst::ElementFactory::make("videoscale").build().unwrap(),
        ]
    );

    /// `nvarguscamerasrc`: a live test pattern handed out as NVMM, with the real element's
    /// `sensor-id`; a sensor other than 0 has no camera behind it and fails to start, as the real
    /// one does ("No cameras available").
    pub mod camera {
        use std::sync::atomic::{AtomicI32, Ordering};

        use super::*;

        #[derive(Default)]
        pub struct Imp {
            sensor_id: AtomicI32,
        }

        #[glib::object_subclass]
        impl ObjectSubclass for Imp {
            const NAME: &'static str = "TridentStandinNvArgusCameraSrc";
            type Type = NvArgusCameraSrc;
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
                let tag: gst::Element = glib::Object::new::<ToNvmm>().upcast();
                bin.add_many([&src, &tag]).unwrap();
                src.link(&tag).unwrap();
                let templ = bin.pad_template("src").unwrap();
                let pad = gst::GhostPad::builder_from_template_with_target(
                    &templ,
                    &tag.static_pad("src").unwrap(),
                )
                .unwrap()
                .build();
                bin.add_pad(&pad).unwrap();
            }

            fn properties() -> &'static [glib::ParamSpec] {
                static P: OnceLock<Vec<glib::ParamSpec>> = OnceLock::new();
                P.get_or_init(|| {
                    vec![
                        glib::ParamSpecInt::builder("sensor-id")
                            .minimum(0)
                            .maximum(255)
                            .build(),
                    ]
                })
            }

            fn set_property(&self, _id: usize, value: &glib::Value, _pspec: &glib::ParamSpec) {
                self.sensor_id.store(value.get().unwrap(), Ordering::SeqCst);
            }

            fn property(&self, _id: usize, _pspec: &glib::ParamSpec) -> glib::Value {
                self.sensor_id.load(Ordering::SeqCst).to_value()
            }
        }
        impl GstObjectImpl for Imp {}
        impl BinImpl for Imp {}

        impl ElementImpl for Imp {
            fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
                static M: OnceLock<gst::subclass::ElementMetadata> = OnceLock::new();
                Some(M.get_or_init(|| {
                    metadata("TridentStandinNvArgusCameraSrc", "Video/Capture/Source")
                }))
            }

            fn pad_templates() -> &'static [gst::PadTemplate] {
                static T: OnceLock<Vec<gst::PadTemplate>> = OnceLock::new();
                T.get_or_init(|| templates(&raw(true), None))
            }

            fn change_state(
                &self,
                transition: gst::StateChange,
            ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
                if transition == gst::StateChange::NullToReady
                    && self.sensor_id.load(Ordering::SeqCst) != 0
                {
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::NotFound,
                        ["No cameras available"]
                    );
                    return Err(gst::StateChangeError);
                }
                self.parent_change_state(transition)
            }
        }
    }

    glib::wrapper! {
        pub struct NvArgusCameraSrc(ObjectSubclass<camera::Imp>)
            @extends gst::Bin, gst::Element, gst::Object;
    }

    /// Registers the stand-ins in this process's registry (once).
    pub fn register() {
        static DONE: OnceLock<()> = OnceLock::new();
        DONE.get_or_init(|| {
            gst::init().unwrap();
            // NVIDIA's decoders outrank the software ones (jpegdec is PRIMARY).
            gst::Element::register(
                None,
                "nvv4l2decoder",
                gst::Rank::PRIMARY + 10,
                NvV4l2Decoder::static_type(),
            )
            .unwrap();
            gst::Element::register(None, "nvvidconv", gst::Rank::NONE, NvVidConv::static_type())
                .unwrap();
            gst::Element::register(
                None,
                "nvarguscamerasrc",
                gst::Rank::NONE,
                NvArgusCameraSrc::static_type(),
            )
            .unwrap();
        });
    }
}

/// Encodes `frames` of videotestsrc into an MJPEG AVI (only plugins from -base and -good).
fn make_clip(path: &Path, frames: u32) {
    gst::init().unwrap();
    let line = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width=96,height=64,framerate=10/1 \
         ! jpegenc ! avimux ! filesink location=\"{}\"",
        path.display()
    );
    run_to_end(&line).expect("encoding finished");
}

/// Plays `line` to its end; the error text when it fails. A warning counts as a failure: a
/// decodebin pad that cannot be linked ("Delayed linking failed") is only a warning, after which
/// the pipeline stalls — on a Jetson as here.
fn run_to_end(line: &str) -> Result<(), String> {
    let pipeline = gst::parse::launch(line).map_err(|e| e.to_string())?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("{e:?}"))?;
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[
                gst::MessageType::Eos,
                gst::MessageType::Error,
                gst::MessageType::Warning,
            ],
        )
        .ok_or("no end within 30 s")?;
    pipeline.set_state(gst::State::Null).unwrap();
    match msg.view() {
        gst::MessageView::Eos(_) => Ok(()),
        gst::MessageView::Error(e) => Err(format!("{} ({:?})", e.error(), e.debug())),
        gst::MessageView::Warning(w) => Err(format!("{} ({:?})", w.error(), w.debug())),
        _ => unreachable!(),
    }
}

#[test]
fn nvmm_frames_need_nvvidconv_as_on_a_jetson() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("reef.avi");
    make_clip(&clip, 5);
    standin::register();
    assert!(
        MediaElements::detect().nvvidconv,
        "the registry lookup sees them"
    );

    // decodebin now picks the "hardware" decoder, whose NVMM output videoconvert cannot bring to
    // system memory: the desktop chain does not negotiate, as on a Jetson.
    let desktop = format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! video/x-raw,format=RGB ! fakesink",
        clip.display()
    );
    let err = run_to_end(&desktop).unwrap_err();
    assert!(
        err.contains("Delayed linking failed") || err.contains("not-negotiated"),
        "{err}"
    );

    // And nvvidconv after the decoder does.
    let jetson = format!(
        "filesrc location=\"{}\" ! decodebin ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=RGB ! fakesink",
        clip.display()
    );
    run_to_end(&jetson).unwrap();

    // The runtime's own source decides by the registry and plays every frame through nvvidconv.
    let mut source = Source::open(
        SourceUri::File { path: clip.clone() },
        SourceOptions::default(),
    )
    .unwrap();
    let mut frame = Frame::default();
    let mut frames = 0;
    while let Pull::Frame = source
        .next_frame(&mut frame, Duration::from_secs(10))
        .unwrap()
    {
        frames += 1;
    }
    assert_eq!(frames, 5);
    assert_eq!((frame.width, frame.height), (96, 64));
}

#[test]
fn a_csi_camera_is_read_through_nvvidconv_and_a_missing_one_is_reported() {
    standin::register();
    // NVMM straight into videoconvert does not negotiate, as on a Jetson.
    let err = run_to_end(
        "nvarguscamerasrc ! video/x-raw(memory:NVMM),width=64,height=48,framerate=10/1 \
         ! videoconvert ! video/x-raw,format=RGB ! fakesink",
    );
    let err = err.expect_err("NVMM into videoconvert must not negotiate");
    assert!(
        !err.contains("no end within"),
        "a failure, not a stall: {err}"
    );

    // csi://0 through the runtime's source: nvvidconv after the camera, frames at the asked size.
    let opts = SourceOptions {
        width: 64,
        height: 48,
        fps: 10,
        ..SourceOptions::default()
    };
    let mut source = Source::open(SourceUri::Csi { sensor: 0 }, opts.clone()).unwrap();
    let mut frame = Frame::default();
    let mut frames = 0;
    for _ in 0..20 {
        if let Pull::Frame = source
            .next_frame(&mut frame, Duration::from_secs(5))
            .unwrap()
        {
            frames += 1;
            if frames == 3 {
                break;
            }
        }
    }
    assert_eq!(frames, 3);
    assert_eq!((frame.width, frame.height), (64, 48));

    // Sensor 1 has no camera: opening it fails with the camera's own words.
    let e = Source::open(SourceUri::Csi { sensor: 1 }, opts)
        .err()
        .expect("no camera on sensor 1")
        .to_string();
    assert!(e.contains("No cameras available"), "{e}");
}
