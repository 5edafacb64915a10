"""Deployment: ONNX export with parity gates, INT8/FP16 ONNX, TensorRT engines, runners, manifests.

The top-level ``export/`` folder of the repository is a deployment kit (README for the GPU host,
``build_engine.sh`` template); the importable code lives here so that no generic top-level ``export``
package is installed.
"""
