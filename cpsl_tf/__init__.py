"""cpsl-tf: Class-balanced Pixel-level Self-Labeling (CVPR 2022) in Keras 3 / TensorFlow."""

__version__ = "0.1.0"
