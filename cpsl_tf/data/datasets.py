"""Dataset readers in the official on-disk layouts, and checks of image/label pairs.

Layouts (``root`` is the folder given by the user):

* ``gta5``: ``<root>/images/NNNNN.png`` and ``<root>/labels/NNNNN.png`` (Cityscapes labelIds, palette PNG).
* ``synthia`` (SYNTHIA-RAND-CITYSCAPES): ``<root>/RGB/*.png`` and ``<root>/GT/LABELS/*.png`` (16-bit
  multi-channel PNG, class id in the first (red) channel).
* ``cityscapes``: ``<root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and
  ``<root>/gtFine/<split>/<city>/*_gtFine_labelIds.png``.
* ``folder``: every png/jpg/jpeg/bmp under ``<root>`` (recursive), optionally with a parallel label folder
  holding ``<same relative path>.png`` label images in Cityscapes labelIds.

The generated benchmark uses the GTA5 layout for its source and the Cityscapes layout for its target, so
it is read by these readers (see :func:`reader_for`).

Label PNGs of GTA5 are palette images whose pixel values are the ids; OpenCV always expands palettes to
colours, so 8-bit labels are read with Pillow. SYNTHIA's 16-bit labels are read with OpenCV.

The module is a little over 400 lines and holds one idea, the official layouts: listing each layout, reading
its images and labels, and checking a pair are the same knowledge of those layouts, kept in one place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cpsl_tf.command import UserError
from cpsl_tf.labels import SUPPORTED_NUM_CLASSES, map_labels
from cpsl_tf.user_paths import did_you_mean

logger = logging.getLogger(__name__)

READERS = ("gta5", "synthia", "cityscapes", "folder")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# Labels must be lossless.
LABEL_SUFFIXES = (".png", ".bmp")
BAD_SAMPLE_POLICIES = ("skip", "error")
# Raw ids a reader's label files may hold, void ids included; anything else is "unknown":
# Cityscapes labelIds 0-33, GTA5 also 34 (void in the official code), SYNTHIA-RAND-CITYSCAPES 0-22.
RAW_ID_COUNT = {"cityscapes": 34, "folder": 34, "gta5": 35, "synthia": 23}

# How many file names a log line or error message lists before summarising the rest.
_NAMES_SHOWN = 30


class DatasetError(UserError, ValueError):
    """A dataset root with the wrong layout, no samples, or an unreadable or inconsistent file."""


@dataclass(frozen=True)
class Sample:
    """One image and its label file (``None`` when the dataset has no label for it)."""

    name: str
    image: Path
    label: Path | None
    dataset: str


def reader_for(kind: str, role: str | None = None) -> str:
    """Reader name for a config's ``data.source`` / ``data.target`` value.

    ``"bench"`` is the generated benchmark: its source is in the GTA5 layout and its target in the
    Cityscapes layout, so ``role`` ("source" or "target") must be given for it.
    """
    if kind == "bench":
        if role == "source":
            return "gta5"
        if role == "target":
            return "cityscapes"
        raise DatasetError(
            f"dataset 'bench' is read as gta5 (source) or cityscapes (target); pass role='source' or "
            f"role='target', got role={role!r}"
        )
    if kind not in READERS:
        raise DatasetError(f"unknown dataset {kind!r}; expected one of {READERS + ('bench',)}")
    return kind


def _label_table_name(dataset: str) -> str:
    """Name of the label table in :mod:`cpsl_tf.labels` used for ``dataset``'s label files."""
    if dataset in ("gta5", "cityscapes", "synthia"):
        return dataset
    if dataset == "folder":
        return "cityscapes"
    raise DatasetError(f"unknown dataset {dataset!r}; expected one of {READERS}")


def _name_list(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_NAMES_SHOWN])
    if len(names) > _NAMES_SHOWN:
        shown += f", ... and {len(names) - _NAMES_SHOWN} more"
    return shown


# --------------------------------------------------------------------------------------------- layouts


def _describe_folder(root: Path) -> str:
    if not root.exists():
        return f"{root} does not exist{did_you_mean(root)}"
    if not root.is_dir():
        return f"{root} is a file, not a folder"
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    if not entries:
        return f"{root} is empty"
    return f"{root} contains: {_name_list(entries)}"


def _layout_error(root: Path, expected: str, matches: Callable[[Path], bool]) -> DatasetError:
    """An error saying what was expected and found, suggesting a neighbouring folder that fits."""
    candidates: list[Path] = []
    if root.is_dir():
        candidates += sorted(p for p in root.iterdir() if p.is_dir())
    candidates += [root.parent, root.parent.parent]
    suggestion = next((c for c in candidates if c != root and c.is_dir() and matches(c)), None)
    message = f"wrong dataset layout: expected {expected}; found {_describe_folder(root)}"
    if suggestion is not None:
        message += f" — did you mean {suggestion}?"
    return DatasetError(message)


def _has_files(folder: Path, pattern: str) -> bool:
    return folder.is_dir() and next(folder.glob(pattern), None) is not None


def _paired_by_name(
    dataset: str, images: dict[str, Path], labels: dict[str, Path], image_dir: Path, label_dir: Path
) -> list[Sample]:
    """Samples of the names present in both maps; unpaired files are logged and left out."""
    images_only = sorted(set(images) - set(labels))
    labels_only = sorted(set(labels) - set(images))
    if images_only:
        logger.warning(
            "%s: skipping %d image(s) in %s without a label in %s: %s",
            dataset, len(images_only), image_dir, label_dir, _name_list(images_only),
        )
    if labels_only:
        logger.warning(
            "%s: ignoring %d label(s) in %s without an image in %s: %s",
            dataset, len(labels_only), label_dir, image_dir, _name_list(labels_only),
        )
    return [Sample(name, images[name], labels[name], dataset) for name in sorted(set(images) & set(labels))]


def _list_gta5(root: Path) -> list[Sample]:
    expected = f"{root}/images/NNNNN.png and {root}/labels/NNNNN.png (GTA5 layout)"

    def matches(path: Path) -> bool:
        return _has_files(path / "images", "*.png") and (path / "labels").is_dir()

    if not matches(root):
        raise _layout_error(root, expected, matches)
    image_dir, label_dir = root / "images", root / "labels"
    images = {p.stem: p for p in image_dir.glob("*.png")}
    labels = {p.stem: p for p in label_dir.glob("*.png")}
    return _paired_by_name("gta5", images, labels, image_dir, label_dir)


def _list_synthia(root: Path) -> list[Sample]:
    expected = f"{root}/RGB/*.png and {root}/GT/LABELS/*.png (SYNTHIA-RAND-CITYSCAPES layout)"

    def matches(path: Path) -> bool:
        return _has_files(path / "RGB", "*.png") and (path / "GT" / "LABELS").is_dir()

    if not matches(root):
        raise _layout_error(root, expected, matches)
    image_dir, label_dir = root / "RGB", root / "GT" / "LABELS"
    images = {p.stem: p for p in image_dir.glob("*.png")}
    labels = {p.stem: p for p in label_dir.glob("*.png")}
    return _paired_by_name("synthia", images, labels, image_dir, label_dir)


def _list_cityscapes(root: Path, split: str, require_labels: bool) -> list[Sample]:
    suffix = "_leftImg8bit.png"
    expected = f"{root}/leftImg8bit/{split}/<city>/*{suffix} (Cityscapes layout)"

    def matches(path: Path) -> bool:
        return _has_files(path / "leftImg8bit" / split, f"*/*{suffix}")

    if not matches(root):
        available = root / "leftImg8bit"
        if available.is_dir():
            splits = sorted(p.name for p in available.iterdir() if p.is_dir())
            raise DatasetError(
                f"wrong dataset layout: expected {expected}; {available} has the splits {splits} but no "
                f"images for split {split!r}"
            )
        raise _layout_error(root, expected, matches)
    image_dir = root / "leftImg8bit" / split
    label_dir = root / "gtFine" / split
    samples = []
    missing = []
    for image in sorted(image_dir.glob(f"*/*{suffix}")):
        name = image.name[: -len(suffix)]
        label = label_dir / image.parent.name / f"{name}_gtFine_labelIds.png"
        if not label.is_file():
            missing.append(name)
            label = None
        samples.append(Sample(name, image, label, "cityscapes"))
    if missing:
        if require_labels:
            raise DatasetError(
                f"cityscapes: {len(missing)} image(s) of split {split!r} have no "
                f"{label_dir}/<city>/<name>_gtFine_labelIds.png: {_name_list(missing)}"
            )
        level = logging.INFO if len(missing) == len(samples) else logging.WARNING
        logger.log(
            level, "cityscapes: %d of %d image(s) of split %r have no label in %s: %s",
            len(missing), len(samples), split, label_dir, _name_list(missing),
        )
    return samples


def _list_folder(root: Path, label_root: Path | None, require_labels: bool) -> list[Sample]:
    expected = f"image files ({', '.join(IMAGE_SUFFIXES)}) anywhere under {root}"

    def image_files(path: Path) -> Iterable[Path]:
        return (p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())

    if not root.is_dir():
        raise _layout_error(root, expected, lambda path: False)
    if label_root is not None and not label_root.is_dir():
        raise DatasetError(f"label folder {label_root} does not exist or is not a folder")
    images = sorted(image_files(root))
    if label_root is not None:
        label_root_resolved = label_root.resolve()
        images = [p for p in images if not p.resolve().is_relative_to(label_root_resolved)]
    samples = []
    missing = []
    for image in images:
        relative = image.relative_to(root).with_suffix("")
        label = None
        if label_root is not None:
            label = next(
                (c for s in LABEL_SUFFIXES if (c := label_root / relative.with_suffix(s)).is_file()), None
            )
            if label is None:
                missing.append(relative.as_posix())
        samples.append(Sample(relative.as_posix(), image, label, "folder"))
    if missing:
        message = (
            f"folder: {len(missing)} image(s) under {root} have no label "
            f"<label_root>/<relative path>.png in {label_root}: {_name_list(missing)}"
        )
        if require_labels:
            raise DatasetError(message)
        logger.warning(message)
    return samples


def list_samples(
    dataset: str,
    root: str | Path,
    split: str = "train",
    num_classes: int = 19,
    *,
    label_root: str | Path | None = None,
    require_labels: bool = False,
) -> list[Sample]:
    """All samples of ``dataset`` under ``root``, sorted by name.

    ``split`` selects the Cityscapes split (GTA5 and SYNTHIA have none). ``label_root`` is the parallel
    label folder of a ``folder`` dataset. Images of GTA5/SYNTHIA without a label are logged and left out
    (a source needs labels); Cityscapes/folder images without a label get ``label=None`` (logged), or
    raise when ``require_labels`` is set. Raises :class:`DatasetError` on a wrong layout or no samples.
    """
    if num_classes not in SUPPORTED_NUM_CLASSES:
        raise DatasetError(f"num_classes must be one of {SUPPORTED_NUM_CLASSES}, got {num_classes}")
    if label_root is not None and dataset != "folder":
        raise DatasetError(f"label_root is only used by the 'folder' dataset, not by {dataset!r}")
    root = Path(root).expanduser()
    if dataset == "gta5":
        samples = _list_gta5(root)
    elif dataset == "synthia":
        samples = _list_synthia(root)
    elif dataset == "cityscapes":
        samples = _list_cityscapes(root, split, require_labels)
    elif dataset == "folder":
        labels = Path(label_root).expanduser() if label_root is not None else None
        samples = _list_folder(root, labels, require_labels)
    else:
        raise DatasetError(
            f"unknown dataset {dataset!r}; expected one of {READERS} (map 'bench' with reader_for)"
        )
    if not samples:
        where = f"split {split!r} of " if dataset == "cityscapes" else ""
        raise DatasetError(f"{dataset}: no samples found in {where}{root} ({_describe_folder(root)})")
    return sorted(samples, key=lambda s: s.name)


# --------------------------------------------------------------------------------------------- reading


def _read_bytes(path: Path) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error


def load_image(path: str | bytes | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB image; raises :class:`DatasetError` naming the file if it cannot be decoded."""
    path = Path(os.fsdecode(path))  # bytes paths arrive from tf.numpy_function
    data = _read_bytes(path)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise DatasetError(f"{path}: not a readable image (empty, truncated, corrupt or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_raw_label(path: str | bytes | Path, dataset: str) -> np.ndarray:
    """(H, W) int32 raw label ids as stored in the file (before mapping to classes)."""
    path = Path(os.fsdecode(path))  # bytes paths arrive from tf.numpy_function
    if _label_table_name(dataset) == "synthia":
        data = _read_bytes(path)
        raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if raw is None:
            raise DatasetError(f"{path}: not a readable label PNG (empty, truncated or corrupt)")
        if raw.ndim == 3:
            # The class id is in the PNG's first channel (red); OpenCV returns BGR(A), so red is index 2.
            # A two-channel (grey + alpha) PNG keeps the id in index 0.
            raw = raw[..., 2] if raw.shape[2] >= 3 else raw[..., 0]
        return raw.astype(np.int32)
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            raw = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"{path}: not a readable label image ({error})") from error
    if mode not in ("L", "P", "I", "I;16"):
        raise DatasetError(
            f"{path}: expected a single-channel label image of raw ids (mode L or P), got mode {mode}; "
            "is this a colour visualisation (e.g. *_gtFine_color.png) instead of the labelIds?"
        )
    return raw.astype(np.int32)


def load_label(path: str | bytes | Path, dataset: str, num_classes: int = 19, *,
               strict: bool = False) -> np.ndarray:
    """(H, W) uint8 class indices of the ``num_classes`` protocol, 255 = ignore.

    Ids outside the dataset's id table become ignore; with ``strict`` (the training pipeline) they raise
    :class:`DatasetError` naming the file instead: such a file is usually a label of another dataset, a
    train-id or a colour image, whose pixels would silently drop out of training.
    """
    raw = read_raw_label(path, dataset)
    id_count = RAW_ID_COUNT[dataset]
    unknown = np.unique(raw[raw >= id_count]) if strict else ()
    if len(unknown):
        raise DatasetError(
            f"{os.fsdecode(path)}: label ids {unknown[:10].tolist()} are outside the {dataset} id table "
            f"(0-{id_count - 1}); is it a label file of another dataset or a train-id image? Fix or remove "
            "it (python scripts/prepare_data.py verify lists every such file)"
        )
    return map_labels(raw, _label_table_name(dataset), num_classes)


def image_shape(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image or label file, from its header only (cheap; does not detect truncation)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"{path}: not a readable image header ({error})") from error
    return height, width


# --------------------------------------------------------------------------------------------- checks


def sample_problem(sample: Sample, decode: bool = False) -> str | None:
    """Why ``sample`` cannot be used (unreadable file, image/label size mismatch), or ``None``.

    With ``decode`` the pixel data are decoded too, which also finds truncated files.
    """
    try:
        if decode:
            image_hw = load_image(sample.image).shape[:2]
            label_hw = read_raw_label(sample.label, sample.dataset).shape if sample.label else None
        else:
            image_hw = image_shape(sample.image)
            label_hw = image_shape(sample.label) if sample.label else None
    except DatasetError as error:
        return f"unreadable: {error}"
    if label_hw is not None and tuple(label_hw) != tuple(image_hw):
        return (
            f"size mismatch: image {sample.image.name} is {image_hw[1]}x{image_hw[0]} (WxH) but label "
            f"{sample.label.name} is {label_hw[1]}x{label_hw[0]}"
        )
    return None


def check_pairs(
    samples: Sequence[Sample], bad_samples: str = "skip", decode: bool = False
) -> tuple[list[Sample], list[tuple[Sample, str]]]:
    """Split ``samples`` into usable ones and ``(sample, reason)`` for unreadable or mismatched pairs.

    ``bad_samples="skip"`` logs the bad ones (naming the files) and returns them apart; ``"error"`` raises
    :class:`DatasetError` listing them. Headers only are read unless ``decode`` is set.
    """
    if bad_samples not in BAD_SAMPLE_POLICIES:
        raise DatasetError(f"bad_samples must be one of {BAD_SAMPLE_POLICIES}, got {bad_samples!r}")
    good: list[Sample] = []
    bad: list[tuple[Sample, str]] = []
    for sample in samples:
        problem = sample_problem(sample, decode=decode)
        if problem is None:
            good.append(sample)
        else:
            bad.append((sample, problem))
    if bad:
        listing = _name_list([f"{s.name} ({reason})" for s, reason in bad])
        if bad_samples == "error":
            raise DatasetError(
                f"{len(bad)} of {len(samples)} sample(s) are unusable (set data.bad_samples='skip' to "
                f"leave them out): {listing}"
            )
        logger.warning("skipping %d of %d unusable sample(s): %s", len(bad), len(samples), listing)
    return good, bad


def class_pixel_counts(samples: Sequence[Sample], num_classes: int) -> np.ndarray:
    """Pixels per class of the samples' label files (ignored pixels not counted)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for sample in samples:
        label = load_label(sample.label, sample.dataset, num_classes)
        counts += np.bincount(label[label < num_classes].ravel(), minlength=num_classes)[:num_classes]
    return counts
