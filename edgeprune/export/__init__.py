"""Export stage: ONNX and TFLite at float32, float16, dynamic-range int8 and full-integer int8, every artifact
run in its real runtime and checked against the source model before it is accepted.

    from edgeprune.export import export
    manifest = export("runs/base", "export/", calib=x_train[:200], eval_x=x_test, eval_y=y_test)

PyTorch checkpoints go torch -> ONNX (TorchScript exporter, opset 17) -> TFLite through one onnx2tf 1.x call;
Keras checkpoints go to TFLite through tf.lite.TFLiteConverter. Imports of torch / TensorFlow are lazy.
"""

from __future__ import annotations

from edgeprune.export.convert import DEFAULT_THRESHOLDS, FORMATS, QUANTS, export

__all__ = ["export", "FORMATS", "QUANTS", "DEFAULT_THRESHOLDS"]
