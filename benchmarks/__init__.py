"""edgeprune's device-side benchmark suite.

Copy this folder next to exported bundles on a board and run `python -m benchmarks BUNDLE_OR_FILES ...`.
It needs Python 3.9+, numpy and one runtime (ai-edge-litert, tflite-runtime, or TensorFlow's tf.lite as a last
resort; onnxruntime for .onnx). It never imports torch, TensorFlow (except that fallback) or edgeprune.
"""

__version__ = "0.1.0"
