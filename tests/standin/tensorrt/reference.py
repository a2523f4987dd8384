"""The stand-in TensorRT shim's reference: runs an ONNX model with ONNX Runtime for the C stand-in
(tests/standin/tensorrt/standin_shim.c), which feeds it over a pipe.

Protocol: one text line `in D0 D1 D2 D3 out E0 E1 E2` on stdout, then for each float32 input block
read from stdin (the input's element count), the float32 output block on stdout. Ends at EOF.
"""
import sys

import numpy as np
import onnxruntime as ort


def main():
    sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    out = sess.get_outputs()[0]
    shape = [int(d) for d in inp.shape]
    # The output shape is fixed by the (static) input shape: one dry run tells it.
    probe = sess.run([out.name], {inp.name: np.zeros(shape, np.float32)})[0]
    stdout = sys.stdout.buffer
    header = "in " + " ".join(map(str, shape)) + " out " + " ".join(map(str, probe.shape))
    header += " names " + inp.name + " " + out.name + "\n"
    stdout.write(header.encode())
    stdout.flush()
    n = int(np.prod(shape)) * 4
    stdin = sys.stdin.buffer
    while True:
        block = stdin.read(n)
        if len(block) < n:
            return
        x = np.frombuffer(block, np.float32).reshape(shape)
        y = sess.run([out.name], {inp.name: x})[0].astype(np.float32)
        stdout.write(y.tobytes())
        stdout.flush()


if __name__ == "__main__":
    main()
