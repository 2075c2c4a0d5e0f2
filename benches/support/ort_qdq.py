"""ONNX Runtime's own int8 form of an fp32 bench model, its fast path: static QDQ quantisation
(ORT's pre-processing, then `onnxruntime.quantization.quantize_static`: per-channel int8 weights, uint8 activations,
min/max calibration), which ORT fuses into QLinearConv / QLinearMatMul when it loads the file.
The benches time it beside our int8 file, so ORT's int8 is measured at its best, not only in
the ConvInteger form our quantiser writes.

usage: ort_qdq.py IN.onnx OUT.onnx    (needs onnx, onnxruntime and numpy; target/pyenv has them)

Calibration: 8 seeded random inputs (sample ~ N(0, 1), a random training timestep, a random
class including the null one): the bench nets have random weights, so only the graph's shape
and ORT's kernels matter for timing. The edgediff metadata is copied over, so every engine
reads the same image size and classes from the file.
"""
import os
import sys

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

CALIBRATION_INPUTS = 8


class RandomInputs(CalibrationDataReader):
    def __init__(self, model):
        props = {p.key: p.value for p in model.metadata_props}
        self.channels = int(props["edgediff.channels"])
        self.size = int(props["edgediff.image_size"])
        self.timesteps = int(props.get("edgediff.num_train_timesteps", "1000"))
        self.classes = len([c for c in props.get("edgediff.class_names", "").split(",") if c.strip()])
        weights = {t.name for t in model.graph.initializer}
        self.inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input if i.name not in weights}
        self.rng = np.random.default_rng(0)
        self.left = CALIBRATION_INPUTS

    def get_next(self):
        if self.left == 0:
            return None
        self.left -= 1
        feed = {}
        for name, elem_type in self.inputs.items():
            if name == "sample":
                feed[name] = self.rng.standard_normal((1, self.channels, self.size, self.size), dtype=np.float32)
            elif name == "timestep":
                dtype = np.float32 if elem_type == onnx.TensorProto.FLOAT else np.int64
                feed[name] = np.array([self.rng.integers(0, self.timesteps)], dtype=dtype)
            elif name == "class_labels":
                feed[name] = np.array([self.rng.integers(0, self.classes + 1)], dtype=np.int64)
            else:
                sys.exit(f"ort_qdq.py: input `{name}` has no calibration values")
        return feed


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    model = onnx.load(src)
    tmp, prepared = dst + ".tmp", dst + ".pre.onnx"
    # ORT's recommended pre-processing (ONNX shape inference, graph optimisation; its symbolic
    # shape inference gives up on these graphs) before quantising.
    quant_pre_process(src, prepared, skip_symbolic_shape=True)
    quantize_static(prepared, tmp, RandomInputs(model), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    quantized = onnx.load(tmp)
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(model.metadata_props)
    onnx.save(quantized, tmp)
    os.replace(tmp, dst)
    os.remove(prepared)


if __name__ == "__main__":
    main()
