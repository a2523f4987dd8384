"""Runs ensemble-boxes (WBF or weighted NMS) on a batch of cases: the reference for trident's
ensemble fusion (edge-runtime/src/ensemble/fusion.rs).

Usage: wbf_reference.py CASES.json
CASES.json: {"cases": [{"method": "wbf" | "nms", "boxes": [[[x1, y1, x2, y2], ...] per model],
"scores": [[...] per model], "labels": [[...] per model], "weights": [...] | null,
"iou_thr": float, "skip_box_thr": float (wbf), "conf_type": str (wbf)}, ...]}
Boxes are normalised xyxy. Prints JSON {"version": ..., "results": [{"boxes", "scores",
"labels"}, ...]} in the package's output order, floats as exact repr() strings. The package's own prints (clipping notices) go to
stderr so that stdout stays JSON.
"""
import contextlib
import json
import sys
from importlib.metadata import version

import numpy as np
from ensemble_boxes import nms, weighted_boxes_fusion


def run(case):
    boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in case["boxes"]]
    scores = [np.asarray(s, dtype=np.float64) for s in case["scores"]]
    labels = [np.asarray(l, dtype=np.int64) for l in case["labels"]]
    weights = case.get("weights")
    if case["method"] == "wbf":
        b, s, l = weighted_boxes_fusion(
            boxes,
            scores,
            labels,
            weights=weights,
            iou_thr=case["iou_thr"],
            skip_box_thr=case["skip_box_thr"],
            conf_type=case["conf_type"],
        )
    elif case["method"] == "nms":
        # The package cannot concatenate zero per-class results; nothing in, nothing out.
        if sum(len(x) for x in boxes) == 0:
            b, s, l = np.zeros((0, 4)), np.zeros(0), np.zeros(0)
        else:
            b, s, l = nms(boxes, scores, labels, iou_thr=case["iou_thr"], weights=weights)
    else:
        raise ValueError("unknown method {!r}".format(case["method"]))
    return {
        "boxes": [[exact(x) for x in row] for row in np.asarray(b).reshape(-1, 4)],
        "scores": [exact(x) for x in s],
        "labels": [int(x) for x in l],
    }


def exact(x):
    """A float as its repr() string: the shortest decimal that reads back as the same double.
    (JSON numbers would do, but serde_json's default float parsing may be off by an ulp.)"""
    return repr(float(x))


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)["cases"]
    with contextlib.redirect_stdout(sys.stderr):
        results = [run(c) for c in cases]
    print(json.dumps({"version": version("ensemble-boxes"), "results": results}))


if __name__ == "__main__":
    main()
