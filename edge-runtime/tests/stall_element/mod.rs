//! `tridentstall`: a stand-in for a camera that stops delivering without an error (a stuck CSI
//! sensor, an RTSP server that keeps the session open and sends nothing). A pass-through that
//! drops every buffer while its switch is on; the switch is named by the element's own `name`
//! (`tridentstall name=cam1`), so tests running side by side each hold their own.
//!
//! The pipeline stays PLAYING, the bus stays quiet and the appsink only times out — as on a
//! unit. What it cannot show: a driver that blocks inside a call (then nothing returns at all,
//! and only systemd's watchdog restarts the process).
#![allow(dead_code)] // the soak bench builds its own pipeline around the element

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;

/// The switch of the element named `name` (created off).
pub fn switch(name: &str) -> Arc<AtomicBool> {
    static SWITCHES: OnceLock<Mutex<HashMap<String, Arc<AtomicBool>>>> = OnceLock::new();
    let mut map = SWITCHES.get_or_init(Default::default).lock().unwrap();
    Arc::clone(map.entry(name.to_string()).or_default())
}

/// Registers `tridentstall` in this process (once).
pub fn register() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        gst::init().unwrap();
        gst::Element::register(None, "tridentstall", gst::Rank::NONE, Stall::static_type())
            .unwrap();
    });
}

/// A live 64×48 test pattern at 50 fps through the stall element named `name`.
pub fn stalling_source(name: &str) -> String {
    format!(
        "gst://videotestsrc is-live=true pattern=ball ! \
         video/x-raw,width=64,height=48,framerate=50/1 ! tridentstall name={name}"
    )
}

mod imp {
    use std::sync::OnceLock;

    use gstreamer as gst;
    use gstreamer::subclass::prelude::*;
    use gstreamer_base as gst_base;
    use gstreamer_base::subclass::prelude::*;

    use super::*;

    #[derive(Default)]
    pub struct Stall;

    #[glib::object_subclass]
    impl ObjectSubclass for Stall {
        const NAME: &'static str = "TridentTestStall";
        type Type = super::Stall;
        type ParentType = gst_base::BaseTransform;
    }

    impl ObjectImpl for Stall {}
    impl GstObjectImpl for Stall {}

    impl ElementImpl for Stall {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static M: OnceLock<gst::subclass::ElementMetadata> = OnceLock::new();
            Some(M.get_or_init(|| {
                gst::subclass::ElementMetadata::new(
                    "tridentstall",
                    "Filter",
                    "trident test stand-in: a source that stops delivering",
                    "trident",
                )
            }))
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static T: OnceLock<Vec<gst::PadTemplate>> = OnceLock::new();
            T.get_or_init(|| {
                let any = gst::Caps::new_any();
                [gst::PadDirection::Src, gst::PadDirection::Sink]
                    .into_iter()
                    .map(|d| {
                        let name = if d == gst::PadDirection::Src {
                            "src"
                        } else {
                            "sink"
                        };
                        gst::PadTemplate::new(name, d, gst::PadPresence::Always, &any).unwrap()
                    })
                    .collect()
            })
        }
    }

    impl BaseTransformImpl for Stall {
        const MODE: gst_base::subclass::BaseTransformMode =
            gst_base::subclass::BaseTransformMode::AlwaysInPlace;
        const PASSTHROUGH_ON_SAME_CAPS: bool = false;
        const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

        fn transform_ip(
            &self,
            _buf: &mut gst::BufferRef,
        ) -> Result<gst::FlowSuccess, gst::FlowError> {
            if switch(&self.obj().name()).load(Ordering::SeqCst) {
                Ok(gst_base::BASE_TRANSFORM_FLOW_DROPPED)
            } else {
                Ok(gst::FlowSuccess::Ok)
            }
        }
    }
}

glib::wrapper! {
    pub struct Stall(ObjectSubclass<imp::Stall>)
        @extends gstreamer_base::BaseTransform, gst::Element, gst::Object;
}
