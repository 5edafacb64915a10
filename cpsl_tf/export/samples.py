"""Images (and labels) fed to the parity gate, the INT8 calibration and the benchmarks.

Two sources: a folder of images with an optional folder of train-id label PNGs of the same stem, or a
dataset split read with ``cpsl_tf.data.datasets`` (``list_samples``, ``load_image``, ``load_label``).
A sample is ``(image_path, label_path_or_None)``; pixels are read lazily, batch by batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from cpsl_tf.data.datasets import DatasetError
from cpsl_tf.export.preprocess import batch_inputs, read_rgb
from cpsl_tf.user_paths import require_file, require_folder

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def folder_samples(images: str | Path, labels: str | Path | None = None,
                   limit: int | None = None) -> list[tuple[Path, Path | None]]:
    """Images of ``images`` (sorted) paired with ``labels/<stem>.png`` when ``labels`` is given."""
    images = require_folder(images, f"a folder of images ({', '.join(IMAGE_SUFFIXES)})")
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DatasetError(f"{images}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    samples = []
    for path in paths[:limit]:
        label = None
        if labels is not None:
            label = require_file(Path(labels) / f"{path.stem}.png", f"the train-id label PNG of {path}")
        samples.append((path, label))
    return samples


def dataset_samples(dataset: str, root: str | Path, split: str, num_classes: int = 19,
                    limit: int | None = None) -> list:
    """Samples of a dataset split read through ``cpsl_tf.data.datasets`` (labels mapped to train ids)."""
    from cpsl_tf.data import datasets

    samples = datasets.list_samples(dataset, root, split, num_classes)
    return [("dataset", sample, num_classes) for sample in samples[:limit]]


def load_sample(sample) -> tuple[np.ndarray, np.ndarray | None]:
    """-> (RGB uint8 image, train-id label or None)."""
    if sample[0] == "dataset":
        from cpsl_tf.data import datasets

        _, item, num_classes = sample
        label = None if item.label is None else datasets.load_label(item.label, item.dataset, num_classes)
        return datasets.load_image(item.image), label
    image_path, label_path = sample
    label = None
    if label_path is not None:
        label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        if label is None:
            raise FileNotFoundError(f"{label_path}: not a readable label PNG")
        if label.ndim == 3:
            label = label[..., 0]
    return read_rgb(image_path), label


def sample_paths(samples: Sequence) -> set[str]:
    """Resolved image paths of the samples (to prove calibration and evaluation sets are disjoint)."""
    return {str(Path(s[1].image if s[0] == "dataset" else s[0]).resolve()) for s in samples}


def batches(samples: Sequence, size: tuple[int, int], batch_size: int,
            align_corners: bool = True) -> Iterator[tuple[np.ndarray, list]]:
    """Yield ``(model input batch, [label or None, ...])`` over the samples."""
    for start in range(0, len(samples), batch_size):
        loaded = [load_sample(s) for s in samples[start:start + batch_size]]
        yield batch_inputs([image for image, _ in loaded], size, align_corners), [lab for _, lab in loaded]
