"""Times ensemble-boxes (WBF or weighted NMS) image by image: the reference for the speed of
`trident fuse` (calibration/benches/fuse_speed.rs).

Usage: fuse_speed_reference.py DATA.json
DATA.json: {"repeat": int, "runs": [{"name": str, "method": "wbf" | "nms", "iou_thr": float,
"skip_box_thr": float (wbf), "conf_type": str (wbf), "weights": [...] | null}, ...],
"images": [{"boxes": [[[x1, y1, x2, y2], ...] per model], "scores": [[...] per model],
"labels": [[...] per model]}, ...]}, boxes normalised xyxy.
The arrays are built before the clock starts; only the loop over the images calling the package
is timed (time.perf_counter), best of `repeat`. Prints JSON {"version": ..., "runs": [{"name",
"seconds", "boxes_out"}, ...]}; the package's own prints go to stderr.
"""
import contextlib
import json
import sys
import time
from importlib.metadata import version

import numpy as np
from ensemble_boxes import nms, weighted_boxes_fusion


def fuse(run, image):
    boxes, scores, labels = image
    if run["method"] == "wbf":
        return weighted_boxes_fusion(
            boxes,
            scores,
            labels,
            weights=run["weights"],
            iou_thr=run["iou_thr"],
            skip_box_thr=run["skip_box_thr"],
            conf_type=run["conf_type"],
        )
    # A shallow copy: the package's nms() replaces the entries of the caller's score list with
    # the weighted scores, which would weight them again on the next repeat.
    return nms(boxes, list(scores), labels, iou_thr=run["iou_thr"], weights=run["weights"])


def main():
    with open(sys.argv[1]) as f:
        data = json.load(f)
    images = [
        (
            [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in im["boxes"]],
            [np.asarray(s, dtype=np.float64) for s in im["scores"]],
            [np.asarray(l, dtype=np.int64) for l in im["labels"]],
        )
        for im in data["images"]
    ]
    results = []
    with contextlib.redirect_stdout(sys.stderr):
        for run in data["runs"]:
            best, boxes_out = float("inf"), 0
            for _ in range(max(1, data.get("repeat", 1))):
                start = time.perf_counter()
                out = [fuse(run, im) for im in images]
                best = min(best, time.perf_counter() - start)
                boxes_out = sum(len(s) for _, s, _ in out)
            results.append({"name": run["name"], "seconds": best, "boxes_out": boxes_out})
    print(json.dumps({"version": version("ensemble-boxes"), "runs": results}))


if __name__ == "__main__":
    main()
