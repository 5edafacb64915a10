"""Images (and labels) fed to the parity gate, the INT8 calibration and the benchmarks.

Two sources: a folder of images with an optional folder of train-id label PNGs of the same stem, or a
dataset split read with ``cpsl_tf.data.datasets``. Either way a sample is a ``datasets.Sample``; labels of
a folder carry the reader name :data:`TRAIN_IDS` (their pixels are class indices already).
:func:`eval_dataset` streams them as ``cpsl_tf.data.pipeline.make_eval_dataset`` batches with the export
preprocessing (``cpsl_tf.export.preprocess``), the input of ``cpsl_tf.evaluation.evaluate.evaluate``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from cpsl_tf.data import datasets
from cpsl_tf.data.pipeline import make_eval_dataset
from cpsl_tf.user_paths import require_file, require_folder

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TRAIN_IDS = "trainid"


def folder_samples(images: str | Path, labels: str | Path | None = None,
                   limit: int | None = None) -> list[datasets.Sample]:
    """Images of ``images`` (sorted) paired with ``labels/<stem>.png`` when ``labels`` is given."""
    images = require_folder(images, f"a folder of images ({', '.join(IMAGE_SUFFIXES)})")
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise datasets.DatasetError(f"{images}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    samples = []
    for path in paths[:limit]:
        label = None
        if labels is not None:
            label = require_file(Path(labels) / f"{path.stem}.png", f"the train-id label PNG of {path}")
        samples.append(datasets.Sample(name=path.stem, image=path, label=label, dataset=TRAIN_IDS))
    return samples


def dataset_samples(dataset: str, root: str | Path, split: str, num_classes: int = 19,
                    limit: int | None = None) -> list[datasets.Sample]:
    """Samples of a dataset split read through ``cpsl_tf.data.datasets`` (labels mapped to train ids)."""
    return datasets.list_samples(dataset, root, split, num_classes)[:limit]


def load_label(path: str | bytes | Path, dataset: str, num_classes: int) -> np.ndarray:
    """Train-id label of a sample: a folder's PNG as stored, a dataset's label mapped by its reader."""
    if dataset != TRAIN_IDS:
        return datasets.load_label(path, dataset, num_classes)
    path = os.fsdecode(path)  # bytes paths arrive from tf.numpy_function
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise FileNotFoundError(f"{path}: not a readable label PNG")
    return label[..., 0] if label.ndim == 3 else label


def eval_dataset(samples: Sequence[datasets.Sample], size: tuple[int, int], batch_size: int,
                 num_classes: int = 19) -> tf.data.Dataset:
    """``(images, labels)`` batches of the samples at the model's input ``size`` (images alone when a
    sample has no label): [0, 1] scaling, then the align-corners bilinear resize, as
    ``cpsl_tf.export.preprocess.to_model_input``."""
    return make_eval_dataset(samples, size, batch_size, num_classes, load_image=datasets.load_image,
                             load_label=load_label, scale_first=True)


def sample_paths(samples: Sequence[datasets.Sample]) -> set[str]:
    """Resolved image paths of the samples (to prove calibration and evaluation sets are disjoint)."""
    return {str(Path(sample.image).resolve()) for sample in samples}
