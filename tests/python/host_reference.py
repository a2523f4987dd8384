"""The Python reference pipeline of the host comparison harness (issue 9).

The host benchmark runs trident's ensemble and this script on the same ONNX models and the same
frames, and compares their throughput and their detections. This is what a competent Python
user would write for the job: ONNX Runtime (CPU) for inference, OpenCV for the letterbox, numpy
for decoding and NMS, and `ensemble-boxes` for weighted boxes fusion. It lives in the test venv
(`.venv`, `cargo xtask setup`) and is not part of the product.

It reproduces trident's semantics so that the detections can be compared box for box:
- letterbox as core/src/letterbox.rs (Ultralytics `LetterBox(auto=False, center=True)`):
  round-half-even sizes and `round(pad - 0.1)`, bilinear on float pixels in 0-255, grey 114,
  then `/ 255` in float32 (the Rust order; leaves at most 1-ulp differences from OpenCV's
  weights);
- decoding and NMS as core/src/postprocess.rs `decode` with `NmsOptions::inference(floor)`:
  best class per anchor, kept if its score is strictly above the floor (float32), boxes in
  float64, empty boxes dropped, stable sort by descending score, 30 000 candidates, greedy NMS
  per class (a kept box suppresses IoU > 0.7 as float32, i.e. 0.699999988...), `max_det` per
  class and then overall, output in descending score order;
- boxes mapped back as edge-runtime/src/detector.rs `to_source` (undo pad and scale, clip to
  the frame, drop boxes that collapse);
- fusion as the ensemble runner: one model's detections pass through unfused, several are fused
  with `weighted_boxes_fusion` and scaled back. The runner fuses frame pixels; the package wants
  [0, 1], so the boxes are divided by a power of two >= the frame's larger side, not by the frame
  size: that scaling is exact, so every IoU and weighted average is the pixel one, bit for bit.
  Dividing by 640 and 480 rounds, and that breaks exact IoU ties, which `np.argmax` gives to the
  first cluster: a box on the 16 px anchor grid halfway between two same-sized clusters overlaps
  both by 11/19 (0.5789473684210527) in pixels, but by 0.5789473684210525 and ...528 normalised,
  and joins the second cluster where the runner puts it into the first.

Usage:
  host_reference.py --frames FILE --width W --height H --count N
      --model PATH:FLOOR [--model PATH:FLOOR ...] [--warmup K] [--nms-iou 0.7] [--max-det 300]
      [--max-candidates 30000] [--wbf-iou 0.55] [--skip-box-thr 0.0] [--conf-type avg]
      [--threads T] [--detections OUT.json]
FILE holds N raw RGB frames (uint8, N x H x W x 3). Prints one JSON object with the timing of
the N frames (after K warm-up frames); OUT.json gets the fused detections of each frame as
[[x1, y1, x2, y2, score, class], ...] in frame pixels.
"""
import argparse
import contextlib
import json
import sys
import time

import cv2
import numpy as np
import onnxruntime as ort
from ensemble_boxes import weighted_boxes_fusion


class Model:
    def __init__(self, path, floor, threads):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        _, _, self.input_h, self.input_w = inp.shape
        self.floor = np.float32(floor)


def letterbox_geometry(w, h, dst_w, dst_h):
    """(scale, resized_w, resized_h, pad_left, pad_top); Python's round() is half-to-even."""
    scale = min(dst_h / h, dst_w / w)
    rw = min(max(round(w * scale), 1), dst_w)
    rh = min(max(round(h * scale), 1), dst_h)
    left = max(round((dst_w - rw) / 2 - 0.1), 0)
    top = max(round((dst_h - rh) / 2 - 0.1), 0)
    return scale, rw, rh, left, top


def letterbox(pixels, geometry, dst_w, dst_h):
    """HWC float32 pixels in 0-255 -> NCHW float32 input in 0-1."""
    _, rw, rh, left, top = geometry
    h, w = pixels.shape[:2]
    resized = pixels if (rw, rh) == (w, h) else cv2.resize(
        pixels, (rw, rh), interpolation=cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(resized, top, dst_h - rh - top, left, dst_w - rw - left,
                                cv2.BORDER_CONSTANT, value=(114.0, 114.0, 114.0))
    return np.ascontiguousarray(padded.transpose(2, 0, 1))[None] / np.float32(255)


def iou_with(box, boxes):
    """IoU of one kept box with many (0 where they do not overlap), in float64."""
    iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = iw * ih
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area(box) + area(boxes) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((iw > 0) & (ih > 0) & (union > 0), iou, 0.0)


def greedy_nms(boxes, iou_thr, max_det):
    """Indices kept by greedy NMS over boxes already sorted by descending score."""
    order, keep = np.arange(len(boxes)), []
    while order.size and len(keep) < max_det:
        keep.append(order[0])
        rest = order[1:]
        order = rest[iou_with(boxes[order[0]], boxes[rest]) <= iou_thr]
    return keep


def decode(output, floor, args):
    """[4 + nc, N] YOLOv8 output -> (boxes xyxy float64, scores float32, classes), input pixels,
    descending score."""
    scores_all = output[4:]
    classes = scores_all.argmax(axis=0)
    scores = scores_all[classes, np.arange(output.shape[1])]
    cx, cy, w, h = output[:4].astype(np.float64)
    hw, hh = w / 2, h / 2
    boxes = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)
    ok = (scores > floor) & np.isfinite(scores)
    ok &= (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
    boxes, scores, classes = boxes[ok], scores[ok], classes[ok]
    order = np.argsort(-scores, kind="stable")[: args.max_candidates]
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    iou_thr = float(np.float32(args.nms_iou))  # trident's threshold is an f32
    kept = []
    for c in np.unique(classes):
        members = np.flatnonzero(classes == c)
        kept.extend(members[greedy_nms(boxes[members], iou_thr, args.max_det)])
    kept = np.sort(np.asarray(kept, dtype=np.int64))[: args.max_det]
    return boxes[kept], scores[kept], classes[kept]


def to_source(boxes, geometry, w, h):
    """Input pixels -> frame pixels, clipped to the frame; returns the boxes and a keep mask."""
    scale, _, _, left, top = geometry
    out = (boxes - np.array([left, top, left, top], dtype=np.float64)) / scale
    out = np.clip(out, 0.0, np.array([w, h, w, h], dtype=np.float64))
    return out, (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])


def process(frame, models, geometries, args, stages):
    w, h = args.width, args.height
    per_model = []
    t0 = time.perf_counter()
    pixels = frame.astype(np.float32)
    stages["letterbox"] += time.perf_counter() - t0
    for model, geometry in zip(models, geometries):
        t0 = time.perf_counter()
        blob = letterbox(pixels, geometry, model.input_w, model.input_h)
        t1 = time.perf_counter()
        output = model.session.run(None, {model.input_name: blob})[0]
        t2 = time.perf_counter()
        if output.ndim != 3 or output.shape[0] != 1 or output.shape[1] < 5:
            sys.exit(f"model output {output.shape} is not the YOLOv8 layout [1, 4 + nc, N]")
        boxes, scores, classes = decode(output[0], model.floor, args)
        boxes, keep = to_source(boxes, geometry, w, h)
        per_model.append((boxes[keep], scores[keep], classes[keep]))
        t3 = time.perf_counter()
        stages["letterbox"] += t1 - t0
        stages["infer"] += t2 - t1
        stages["decode_nms"] += t3 - t2
    t0 = time.perf_counter()
    if len(per_model) == 1:  # trident's runner does not fuse a single model's detections
        boxes, scores, classes = per_model[0]
    else:
        size = float(1 << (max(w, h) - 1).bit_length())  # exact: see the module docstring
        with contextlib.redirect_stdout(sys.stderr):  # the package prints its warnings
            boxes, scores, classes = weighted_boxes_fusion(
                [b / size for b, _, _ in per_model],
                [s.astype(np.float64) for _, s, _ in per_model],
                [c for _, _, c in per_model],
                weights=None, iou_thr=args.wbf_iou, skip_box_thr=args.skip_box_thr,
                conf_type=args.conf_type)
        boxes = np.asarray(boxes).reshape(-1, 4) * size
    stages["wbf"] += time.perf_counter() - t0
    return [[*map(float, b), float(s), int(c)] for b, s, c in zip(boxes, scores, classes)]


def model_arg(text):
    path, sep, floor = text.rpartition(":")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected PATH:FLOOR, got {text!r}")
    return path, float(floor)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--model", type=model_arg, action="append", required=True,
                   help="PATH:FLOOR, repeated in ensemble order")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--nms-iou", type=float, default=0.7)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--max-candidates", type=int, default=30000)
    p.add_argument("--wbf-iou", type=float, default=0.55)
    p.add_argument("--skip-box-thr", type=float, default=0.0)
    p.add_argument("--conf-type", default="avg")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    p.add_argument("--detections", help="write the fused detections of each frame here")
    args = p.parse_args()

    n = args.count
    frames = np.fromfile(args.frames, dtype=np.uint8)
    if n < 1 or frames.size != n * args.height * args.width * 3:
        sys.exit(f"{args.frames}: {frames.size} bytes, not {n} frames of "
                 f"{args.width}x{args.height} RGB")
    frames = frames.reshape(n, args.height, args.width, 3)
    models = [Model(path, floor, args.threads) for path, floor in args.model]
    geometries = [letterbox_geometry(args.width, args.height, m.input_w, m.input_h)
                  for m in models]

    stages = dict.fromkeys(["letterbox", "infer", "decode_nms", "wbf"], 0.0)
    for i in range(args.warmup):
        process(frames[i % n], models, geometries, args, stages)
    stages = dict.fromkeys(stages, 0.0)
    start = time.perf_counter()
    detections = [process(frame, models, geometries, args, stages) for frame in frames]
    seconds = time.perf_counter() - start

    if args.detections:
        with open(args.detections, "w") as f:
            json.dump(detections, f)
    print(json.dumps({
        "frames": n,
        "seconds": seconds,
        "fps": n / seconds,
        "stages_ms": {k: v * 1000 / n for k, v in stages.items()},
        "onnxruntime": ort.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
