"""Writes the state dict of an Ultralytics YOLOv8n (random initialisation by Ultralytics' own
model code from its bundled yolov8n.yaml; nothing is downloaded) as safetensors — what a user
brings to `trident train --weights` from `YOLO("yolov8n.pt").model.state_dict()`.

usage: yolov8n_state_dict.py OUT.safetensors NUM_CLASSES
"""
import os
import sys

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

from safetensors.torch import save_file  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402

out, nc = sys.argv[1], int(sys.argv[2])
model = DetectionModel("yolov8n.yaml", nc=nc, verbose=False)
state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
save_file(state, out)
print(len(state))
