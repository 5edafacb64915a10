"""Segmenter checkpoints: ``<name>.weights.h5`` plus a sidecar ``<name>.json`` that says how to rebuild it.

The sidecar holds ``model`` (the ModelConfig as a dict), ``num_classes``, ``class_names``, ``bn_pretrain``
and whatever else the writer adds (stage, iteration, scores). A network other than the ModelConfig's
DeepLab-v2 (a distillation student) is named by ``architecture`` (:data:`ARCHITECTURES`: its name and
builder arguments). ``load_segmenter(path)`` needs nothing else.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import keras

from cpsl_tf.command import UserError
from cpsl_tf.config import ModelConfig
from cpsl_tf.io_utils import atomic_write_bytes, atomic_write_json
from cpsl_tf.models import lraspp
from cpsl_tf.models.segmenter import build_segmenter, has_bn_pretrain
from cpsl_tf.user_paths import did_you_mean

WEIGHTS_SUFFIX = ".weights.h5"
REQUIRED_META = ("model", "num_classes", "class_names")
# Networks a sidecar's ``architecture`` can name, with their builders (num_classes, **arguments).
ARCHITECTURES = {"lraspp_mobilenet_v3_large": lraspp.build_lraspp_student}
# Their input normalisation inside the graph, (mean, std), recorded in the sidecar's ``model`` entry.
NORMALISATION = {"lraspp_mobilenet_v3_large": (lraspp.INPUT_MEAN, lraspp.INPUT_STD)}


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, or its sidecar does not describe its weights."""


def sidecar_path(path: str | Path) -> Path:
    """``run/model.weights.h5`` -> ``run/model.json``."""
    path = Path(path)
    if not path.name.endswith(WEIGHTS_SUFFIX):
        raise CheckpointError(f"{path}: a segmenter checkpoint must end with {WEIGHTS_SUFFIX}")
    return path.with_name(path.name[: -len(WEIGHTS_SUFFIX)] + ".json")


def save_model_checkpoint(model: keras.Model, path: str | Path, meta: dict) -> dict:
    """Write ``model``'s weights to ``path`` and ``meta`` (+ ``bn_pretrain``) to the sidecar, atomically.

    ``meta["model"]`` may be a ModelConfig or its dict. Returns the meta as written.
    """
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise CheckpointError(f"checkpoint meta for {path} lacks {', '.join(missing)}")
    meta = dict(meta)
    if isinstance(meta["model"], ModelConfig):
        meta["model"] = dataclasses.asdict(meta["model"])
    meta["bn_pretrain"] = has_bn_pretrain(model)
    _check_class_count(meta, f"checkpoint meta for {path}")
    classes = model.output["logits"].shape[-1]
    if classes != meta["num_classes"]:
        raise CheckpointError(f"checkpoint meta for {path} says num_classes={meta['num_classes']} but the "
                              f"model has {classes} logits")
    sidecar = sidecar_path(path)
    atomic_write_bytes(path, weights_h5_bytes(model))
    atomic_write_json(sidecar, meta)
    return meta


class _WeightsBuffer(io.BytesIO):
    """An in-memory ``.weights.h5`` for ``model.save_weights``, which checks the suffix of ``str(filepath)``
    and hands a BytesIO to h5py as a file."""

    def __str__(self) -> str:
        return "memory" + WEIGHTS_SUFFIX


def weights_h5_bytes(model: keras.Model) -> bytes:
    """The ``.weights.h5`` file of ``model``, built in memory. HDF5 writing to a full disk left its library
    broken: the error was followed by a segmentation fault at exit. In memory, only the plain write of the
    bytes meets the disk, and a full disk is one :class:`~cpsl_tf.io_utils.DiskFullError`."""
    buffer = _WeightsBuffer()
    model.save_weights(buffer)
    return buffer.getvalue()


def _check_class_count(meta: dict, source: str) -> None:
    if len(meta["class_names"]) != meta["num_classes"]:
        raise CheckpointError(f"{source}: num_classes={meta['num_classes']} but "
                              f"{len(meta['class_names'])} class_names")


def read_checkpoint_meta(path: str | Path) -> dict:
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise CheckpointError(f"{sidecar}: sidecar of checkpoint {path} is missing (it says how to rebuild "
                              "the model)")
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{sidecar}: not valid JSON ({err})") from err
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise CheckpointError(f"{sidecar}: lacks {', '.join(missing)}")
    _check_class_count(meta, str(sidecar))
    return meta


def load_segmenter(path: str | Path, num_classes: int | None = None) -> tuple[keras.Model, dict]:
    """Rebuild the segmenter described by the sidecar of ``path`` and load its weights.

    ``num_classes``, when given, is the class count the caller needs; a checkpoint of another class count
    is an error rather than a silently wrong model.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint weights file does not exist{did_you_mean(path)}")
    meta = read_checkpoint_meta(path)
    if num_classes is not None and meta["num_classes"] != num_classes:
        raise CheckpointError(f"{path}: checkpoint has {meta['num_classes']} classes, {num_classes} "
                              "were expected")
    model, described = _build(meta, sidecar_path(path))
    try:
        model.load_weights(path)
    except ValueError as err:
        raise CheckpointError(f"{path}: weights do not fit the {described} with "
                              f"{meta['num_classes']} classes that {sidecar_path(path).name} describes "
                              f"({err})") from err
    except OSError as err:  # h5py: a truncated or overwritten file
        raise CheckpointError(f"{path}: the weights file is damaged ({err})") from err
    return model, meta


def build_architecture(architecture: dict, num_classes: int, **options) -> keras.Model:
    """The network a sidecar's ``architecture`` names (``{"name": ..., <builder arguments>}``), with
    builder ``options`` such as ``imagenet_weights``."""
    arguments = {key: value for key, value in architecture.items() if key != "name"}
    return ARCHITECTURES[architecture["name"]](num_classes, **arguments, **options)


def describe_network(meta: dict) -> dict:
    """The network a sidecar describes, by name and the settings that size it (for manifests and logs)."""
    architecture = meta.get("architecture")
    if architecture is not None:
        return dict(architecture)
    model = meta["model"] if isinstance(meta["model"], dict) else dataclasses.asdict(meta["model"])
    return {"name": f"deeplabv2_{model['backbone']}",
            **{key: model[key] for key in ("backbone", "base_width", "head_channels") if key in model}}


def _build(meta: dict, sidecar: Path) -> tuple[keras.Model, str]:
    """The network a sidecar describes, and its description for messages."""
    architecture = meta.get("architecture")
    if architecture is not None:
        if architecture.get("name") not in ARCHITECTURES:
            raise CheckpointError(f"{sidecar}: architecture {architecture.get('name')!r} is unknown; "
                                  f"expected one of {', '.join(ARCHITECTURES)}")
        try:
            model = build_architecture(architecture, meta["num_classes"])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{sidecar}: architecture {architecture} cannot be built ({err})") from err
        return model, f"{architecture['name']} network"
    try:
        model_cfg = ModelConfig(**meta["model"])
    except TypeError as err:
        raise CheckpointError(f"{sidecar}: 'model' is not a ModelConfig ({err})") from err
    model = build_segmenter(model_cfg, meta["num_classes"], bn_pretrain=bool(meta.get("bn_pretrain", False)))
    return model, f"{model_cfg.backbone} segmenter"
