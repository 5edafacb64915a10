"""Label tables: raw dataset ids -> training ids, class names, subsets and the Cityscapes palette.

One ignore index (255) is used throughout the project. The official CPSL code uses 250; fixtures that
carry 250 are mapped with :func:`official_to_project_ignore`.

Class protocols (see ``docs/official-code.md`` section 10):

* 19 classes: the Cityscapes training classes (GTA5 uses the Cityscapes label ids).
* 16 classes: SYNTHIA -> Cityscapes; terrain, truck and train are dropped.
* 13 classes (mIoU*): the 16 classes without wall, fence and pole, reported from one 16-class model.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255
OFFICIAL_IGNORE_INDEX = 250
# What the pixels of a predicted label PNG hold: Cityscapes labelIds, or class indices (train ids).
PRED_FORMATS = ("labelid", "trainid")

CLASS_NAMES_19 = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "light", "sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)

# Cityscapes labelIds of the 19 training classes, in trainId order.
CITYSCAPES_IDS_19 = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)

# Positions (19-class trainIds) kept by the 16- and 13-class protocols.
TRAIN_IDS_16 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
TRAIN_IDS_13 = (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)

# SYNTHIA GT/LABELS class ids (channel 0 of the 16-bit PNG) for each protocol, in class order.
SYNTHIA_IDS_19 = (3, 4, 2, 21, 5, 7, 15, 9, 6, 16, 1, 10, 17, 8, 18, 19, 20, 12, 11)
SYNTHIA_IDS_16 = (3, 4, 2, 21, 5, 7, 15, 9, 6, 1, 10, 17, 8, 19, 12, 11)
SYNTHIA_IDS_13 = (3, 4, 2, 15, 9, 6, 1, 10, 17, 8, 19, 12, 11)

# GTA5 void ids that the official code sends to ignore explicitly (everything unlisted is ignored anyway).
GTA5_VOID_IDS = (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, 34, -1)

PALETTE_19 = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)

# Classes where CPSL claims its gain (paper section 4.2); used for the rare-class mean in benchmarks.
RARE_CLASSES = ("light", "sign", "rider", "motorcycle", "bicycle", "train")

SUPPORTED_NUM_CLASSES = (19, 16, 13)
DATASETS = ("cityscapes", "gta5", "synthia")


def _kept_train_ids(num_classes: int) -> tuple[int, ...]:
    if num_classes == 19:
        return tuple(range(19))
    if num_classes == 16:
        return TRAIN_IDS_16
    if num_classes == 13:
        return TRAIN_IDS_13
    raise ValueError(f"num_classes must be one of {SUPPORTED_NUM_CLASSES}, got {num_classes}")


def class_names(num_classes: int = 19) -> tuple[str, ...]:
    """Names of the classes of a 19-, 16- or 13-class protocol, in class-index order."""
    return tuple(CLASS_NAMES_19[i] for i in _kept_train_ids(num_classes))


def palette(num_classes: int = 19) -> np.ndarray:
    """(num_classes, 3) uint8 Cityscapes colours of the protocol's classes."""
    return PALETTE_19[list(_kept_train_ids(num_classes))]


def raw_ids(dataset: str, num_classes: int = 19) -> tuple[int, ...]:
    """Raw label ids of ``dataset`` that map to class 0, 1, ... of the protocol."""
    if dataset in ("cityscapes", "gta5"):
        return tuple(CITYSCAPES_IDS_19[i] for i in _kept_train_ids(num_classes))
    if dataset == "synthia":
        _kept_train_ids(num_classes)
        return {19: SYNTHIA_IDS_19, 16: SYNTHIA_IDS_16, 13: SYNTHIA_IDS_13}[num_classes]
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")


def lookup_table(dataset: str, num_classes: int = 19, size: int | None = None) -> np.ndarray:
    """uint8 table ``t`` with ``t[raw_id] = class index`` and 255 for every id outside the protocol.

    ``size`` defaults to 256 (8-bit label PNGs) and to 65536 for SYNTHIA's 16-bit labels.
    """
    if size is None:
        size = 65536 if dataset == "synthia" else 256
    table = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    for class_index, raw in enumerate(raw_ids(dataset, num_classes)):
        table[raw] = class_index
    return table


def map_labels(raw: np.ndarray, dataset: str, num_classes: int = 19) -> np.ndarray:
    """Map a raw label image to class indices (uint8, 255 = ignore). Negative ids become ignore."""
    raw = np.asarray(raw)
    table = lookup_table(dataset, num_classes, size=max(256, int(raw.max(initial=0)) + 1))
    out = np.full(raw.shape, IGNORE_INDEX, dtype=np.uint8)
    valid = raw >= 0
    out[valid] = table[raw[valid]]
    return out


def subset_indices(num_classes: int, subset: int) -> tuple[int, ...]:
    """Indices, in a ``num_classes`` model's output space, of the classes of a smaller protocol.

    ``subset_indices(16, 13)`` gives the positions of the 13 mIoU* classes among the 16 SYNTHIA classes.
    """
    full = _kept_train_ids(num_classes)
    kept = _kept_train_ids(subset)
    missing = set(kept) - set(full)
    if missing:
        raise ValueError(f"a {subset}-class subset is not contained in the {num_classes}-class protocol")
    return tuple(full.index(t) for t in kept)


def official_to_project_ignore(labels: np.ndarray) -> np.ndarray:
    """Replace the official code's ignore label 250 by the project's 255."""
    labels = np.array(labels, copy=True)
    labels[labels == OFFICIAL_IGNORE_INDEX] = IGNORE_INDEX
    return labels


def colorize(class_map: np.ndarray, num_classes: int = 19) -> np.ndarray:
    """RGB uint8 image of a class map; ignored pixels are black."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    colours[:num_classes] = palette(num_classes)
    return colours[np.asarray(class_map, dtype=np.uint8)]


def train_ids_to_label_ids(class_map: np.ndarray, num_classes: int = 19) -> np.ndarray:
    """Convert class indices back to Cityscapes labelIds (for benchmark submission); ignore -> 0."""
    table = np.zeros(256, dtype=np.uint8)
    for class_index, raw in enumerate(raw_ids("cityscapes", num_classes)):
        table[class_index] = raw
    return table[np.asarray(class_map, dtype=np.uint8)]
