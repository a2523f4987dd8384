"""Reference COCO box evaluation with pycocotools, for trident's parity tests and benchmark.

usage: coco_reference.py GT.json DT.json  ->  JSON on stdout:
  {"map50_95", "map50", "per_class": {cat_id: {"ap50", "ap50_95"}}, "seconds"}
"seconds" covers COCOeval evaluate + accumulate + summarize (not JSON loading).
"""
import contextlib
import json
import sys
import time

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def main(gt_path, dt_path):
    with contextlib.redirect_stdout(sys.stderr):
        gt = COCO(gt_path)
        dt = gt.loadRes(dt_path)
        ev = COCOeval(gt, dt, "bbox")
        start = time.perf_counter()
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        seconds = time.perf_counter() - start
    precision = ev.eval["precision"]  # [T, R, K, A, M]; area 'all' = 0, maxDets 100 = 2
    per_class = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, 2]
        if (p > -1).any():
            per_class[str(cat)] = {"ap50": float(np.mean(p[0][p[0] > -1])), "ap50_95": float(np.mean(p[p > -1]))}
    json.dump({"map50_95": float(ev.stats[0]), "map50": float(ev.stats[1]), "per_class": per_class, "seconds": seconds}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
