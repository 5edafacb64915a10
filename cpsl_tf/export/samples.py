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

from cpsl_tf.export.preprocess import batch_inputs, read_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def folder_samples(images: str | Path, labels: str | Path | None = None,
                   limit: int | None = None) -> list[tuple[Path, Path | None]]:
    """Images of ``images`` (sorted) paired with ``labels/<stem>.png`` when ``labels`` is given."""
    images = Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: image folder not found")
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{images}: no images ({', '.join(IMAGE_SUFFIXES)})")
    samples = []
    for path in paths[:limit]:
        label = None
        if labels is not None:
            label = Path(labels) / f"{path.stem}.png"
            if not label.is_file():
                raise FileNotFoundError(f"{label}: label for image {path} not found")
        samples.append((path, label))
    return samples


def dataset_samples(dataset: str, root: str | Path, split: str, num_classes: int = 19,
                    limit: int | None = None) -> list:
    """Samples of a dataset split through the data package (images and train-id labels)."""
    try:
        from cpsl_tf.data import datasets
    except ImportError as err:
        raise RuntimeError("--dataset needs cpsl_tf.data.datasets (list_samples, load_image, load_label); "
                           f"it is not importable here ({err}); pass --images/--labels folders instead"
                           ) from err
    samples = list(datasets.list_samples(dataset, root, split))
    if not samples:
        raise ValueError(f"dataset {dataset!r} at {root}: split {split!r} has no samples")
    return [("dataset", dataset, sample, num_classes) for sample in samples[:limit]]


def load_sample(sample) -> tuple[np.ndarray, np.ndarray | None]:
    """-> (RGB uint8 image, train-id label or None)."""
    if sample[0] == "dataset":
        from cpsl_tf.data import datasets

        _, dataset, item, num_classes = sample
        return (np.asarray(datasets.load_image(item)),
                np.asarray(datasets.load_label(item, dataset=dataset, num_classes=num_classes)))
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
    paths = set()
    for sample in samples:
        item = sample[2] if sample[0] == "dataset" else sample[0]
        image = getattr(item, "image", None) or (item.get("image") if isinstance(item, dict) else item)
        paths.add(str(Path(str(image)).resolve()))
    return paths


def batches(samples: Sequence, size: tuple[int, int], batch_size: int,
            align_corners: bool = True) -> Iterator[tuple[np.ndarray, list]]:
    """Yield ``(model input batch, [label or None, ...])`` over the samples."""
    for start in range(0, len(samples), batch_size):
        loaded = [load_sample(s) for s in samples[start:start + batch_size]]
        yield batch_inputs([image for image, _ in loaded], size, align_corners), [lab for _, lab in loaded]
