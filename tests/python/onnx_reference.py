"""Checks an ONNX file with the onnx checker and runs it with ONNX Runtime (CPU).

Usage: onnx_reference.py MODEL.onnx INPUT.f32 N C H W OUTPUT.f32
Reads the input as raw little-endian float32 of shape [N, C, H, W], writes the first output as
raw float32, prints JSON with the output shape, opset, IR version and metadata.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort

model_path, input_path, n, c, h, w, output_path = sys.argv[1:8]
model = onnx.load(model_path)
onnx.checker.check_model(model, full_check=True)
x = np.fromfile(input_path, dtype="<f4").reshape(int(n), int(c), int(h), int(w))
session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
inp = session.get_inputs()[0]
out = session.run(None, {inp.name: x})[0]
out.astype("<f4").tofile(output_path)
print(json.dumps({
    "input": inp.name,
    "output": session.get_outputs()[0].name,
    "shape": list(out.shape),
    "opset": model.opset_import[0].version,
    "ir_version": model.ir_version,
    "metadata": {p.key: p.value for p in model.metadata_props},
}))
