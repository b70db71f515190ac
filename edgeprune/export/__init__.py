"""Export stage: ONNX and TFLite at float32, float16, dynamic-range int8 and full-integer int8, every artifact
run in its real runtime and checked against the source model before it is accepted.

    from edgeprune.export import InputSpec, export, export_model
    manifest = export("runs/base", "export/", calib=x_train[:200], eval_x=x_test, eval_y=y_test)
    manifest = export_model(my_conv1d_net, InputSpec((40, 101), "NCW"), "export/", calib=x[:200], eval_x=x_test)

PyTorch models go torch -> ONNX (TorchScript exporter, opset 17) -> TFLite through one onnx2tf 1.x call;
Keras models go to TFLite through tf.lite.TFLiteConverter. Imports of torch / TensorFlow are lazy.
"""

from __future__ import annotations

from edgeprune.export.convert import DEFAULT_THRESHOLDS, FORMATS, QUANTS, export, export_model
from edgeprune.models.input_spec import InputSpec

__all__ = ["export", "export_model", "InputSpec", "FORMATS", "QUANTS", "DEFAULT_THRESHOLDS"]
