//! Untrusted bytes as an ONNX file handed to `trident export --onnx`: decoding and the tensor
//! checks, the detection-layout inspector, the TensorRT lint and the FP16 twin must each return
//! an error, never panic (overflow checks are on); what the inspector accepts must have a side
//! and dimensions every later stage can size buffers from, and its FP16 twin must pass the same
//! checks.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use trident_exporter::inspect::{GraphDim, Hints, MAX_IMGSZ, inspect};
use trident_exporter::onnx::read::{check_model, parse};
use trident_exporter::{fp16, lint};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.onnx");
    let Ok(model) = parse(data, path) else {
        return;
    };
    let _ = lint::lint(&model);
    if let Ok((twin, _)) = fp16::convert(&model) {
        check_model(&twin, path).expect("the FP16 twin of a checked model passes the checks");
    }
    if let Ok(g) = inspect(&model, path, &Hints::default()) {
        assert!(
            (32..=MAX_IMGSZ).contains(&g.imgsz) && g.imgsz.is_multiple_of(32),
            "accepted side {}",
            g.imgsz
        );
        for d in g.input_shape.iter().chain(&g.output_shape) {
            if let GraphDim::Fixed(v) = d {
                assert!(
                    *v >= 1 && u32::try_from(*v).is_ok(),
                    "accepted dimension {v}"
                );
            }
        }
    }
});
