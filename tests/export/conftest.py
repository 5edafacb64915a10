"""Tiny segmenters for the export tests.

``tiny_segmenter`` uses the real ``build_segmenter`` with the shrunken config (resnet18, base width 8,
head 32) when the models package provides it, else a stand-in with the same contract: RGB in [0, 1],
normalisation inside, {"logits", "features"} at output stride 8, dilated convolutions.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cpsl_tf.labels import class_names

NUM_CLASSES = 19


def standin_segmenter(num_classes: int = NUM_CLASSES, dtype: str | None = None) -> keras.Model:
    kwargs = {"dtype": dtype} if dtype else {}
    image = keras.Input((None, None, 3), name="image")
    x = keras.layers.Rescaling(1 / 0.25, offset=-0.45 / 0.25, **kwargs)(image)
    for width in (8, 12, 16):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, **kwargs)(x)
        x = keras.layers.BatchNormalization(**kwargs)(x)
        x = keras.layers.ReLU(**kwargs)(x)
    x = keras.layers.Conv2D(16, 3, dilation_rate=2, padding="same", activation="relu", **kwargs)(x)
    features = keras.layers.Conv2D(16, 3, dilation_rate=4, padding="same", activation="relu", **kwargs)(x)
    logits = keras.layers.Conv2D(num_classes, 1, **kwargs)(features)
    model = keras.Model(image, {"logits": logits, "features": features}, name="standin")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta, rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2, var.shape)])
    return model


def real_builder():
    try:
        from cpsl_tf.config import load_config, shrink
        from cpsl_tf.models.segmenter import build_segmenter
    except ImportError:
        return None

    def build(num_classes=NUM_CLASSES):
        cfg = shrink(load_config())
        return build_segmenter(cfg.model, num_classes), cfg.model

    return build


def tiny_model_and_meta(num_classes: int = NUM_CLASSES):
    build = real_builder()
    if build is not None:
        import dataclasses

        model, model_cfg = build(num_classes)
        model_dict = dataclasses.asdict(model_cfg)
    else:
        model = standin_segmenter(num_classes)
        model_dict = {"align_corners": True, "input_mean": [0.45] * 3, "input_std": [0.25] * 3}
    meta = {"model": model_dict, "num_classes": num_classes, "class_names": list(class_names(num_classes))}
    return model, meta


@pytest.fixture(scope="session")
def tiny_model():
    return tiny_model_and_meta()


def write_image_folder(root, count: int, size=(40, 72), num_classes: int = NUM_CLASSES, seed: int = 0):
    """Smooth random images and blocky labels: ``root/images/*.png`` and ``root/labels/*.png``."""
    import cv2

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        small = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3)).astype(np.uint8)
        image = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        label = np.kron(rng.integers(0, num_classes, (size[0] // 8, size[1] // 8)),
                        np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
        label[0, :] = 255
        cv2.imwrite(str(root / "images" / f"img{index:03d}.png"), image)
        cv2.imwrite(str(root / "labels" / f"img{index:03d}.png"), label)
    return root / "images", root / "labels"
