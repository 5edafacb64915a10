"""Import of the official CPSL/ProDA PyTorch checkpoints (``*_best_model.pkl``) into the Keras segmenter.

The official wrapper is ``{'ResNet101': {'model_state': state_dict, 'prototypes_ema': (K, 256)},
'iter': int, 'best_iou': numpy.float64}`` (docs/official-code.md section 2). Keys are PyTorch module paths;
the Keras layer of a key is its module path with dots replaced by underscores
(``layer3.5.bn2.running_var`` -> layer ``layer3_5_bn2``). The architecture (depth, width, head size,
``bn_pretrain``, class count) is read from the state dict itself; only the ASPP rates are not stored in
weights (official: 6/12/18/24).

PyTorch is needed only here (``pip install cpsl-tf[convert]``). The file is read with torch's safe loader
(``weights_only=True``), which builds tensors, containers and numbers and calls nothing else; the NumPy
types the official files hold (the float64 ``best_iou``, scalars and numeric arrays) are allowed by name
(:data:`NUMPY_SAFE_GLOBALS`). A file that needs anything more (a pickle that would import a module or
call a function, e.g. ``os.system``) is refused with :class:`UnsafeCheckpointError` before any of it runs.
``trust_code=True`` (``--trust-checkpoint-code``) unpickles without restriction, for a file you vouch for.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import re
from collections import defaultdict
from pathlib import Path

import keras
import numpy as np

from cpsl_tf.command import UserError
from cpsl_tf.config import ModelConfig
from cpsl_tf.io_utils import atomic_path
from cpsl_tf.labels import SUPPORTED_NUM_CLASSES, class_names
from cpsl_tf.models.checkpoint import save_model_checkpoint, sidecar_path
from cpsl_tf.models.official_checkpoint import OFFICIAL_ASPP_RATES, TRUST_FLAG
from cpsl_tf.models.resnet import RESNET_SPECS
from cpsl_tf.models.segmenter import build_segmenter
from cpsl_tf.user_paths import require_file

log = logging.getLogger(__name__)

# Buffers with no Keras counterpart.
IGNORED_LEAVES = ("num_batches_tracked",)


class ConversionError(UserError, ValueError):
    """The checkpoint is not an official DeepLab-v2/ProDA state dict this converter understands."""


class TorchMissingError(UserError, ImportError):
    """PyTorch, which reading an official checkpoint needs, is not installed."""


class UnsafeCheckpointError(ConversionError):
    """The checkpoint needs more than tensors, containers and NumPy numbers to unpickle: it could run code."""


def numpy_safe_globals() -> list:
    """What unpickling NumPy scalars and numeric arrays needs, and nothing more: ``scalar`` and
    ``_reconstruct`` (under their NumPy 2 and NumPy 1 module names, as files written by either name
    them), ``ndarray``, ``dtype`` and the bool / integer / float dtype classes. No object dtype: an object
    array could hold anything."""
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy < 1.26 has no numpy._core
        from numpy.core import multiarray
    named = [(function, f"{module}.{function.__name__}")
             for module in ("numpy._core.multiarray", "numpy.core.multiarray")
             for function in (multiarray.scalar, multiarray._reconstruct)]
    numeric = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
               np.float16, np.float32, np.float64)
    return [np.ndarray, np.dtype, *{type(np.dtype(t)) for t in numeric}, *named]


def _load_torch_file(torch, path: Path, trust_code: bool):
    """``torch.load`` with the safe loader (or without it when ``trust_code``); a refusal or an unreadable
    file becomes one message naming the file."""
    if trust_code:
        log.warning("%s: unpickling with weights_only=False (%s): any code in this file runs now", path,
                    TRUST_FLAG)
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"GLOBAL ([\w.]+)|(unrecognized function [^\n]+)|(Can only [^\n]+)", text)
        if found is not None:
            needs = next(group for group in found.groups() if group)
            raise UnsafeCheckpointError(
                f"{path}: refused: unpickling it needs {needs}, which could run code; official CPSL/ProDA "
                f"checkpoints hold only tensors, numbers and NumPy scalars/arrays. Convert it with "
                f"{TRUST_FLAG} only if you trust the file and its source") from None
        detail = re.search(r"WeightsUnpickler error: \s*([^\n]+)", text)
        raise ConversionError(
            f"{path}: not a checkpoint that torch's safe loader can read (damaged, or not written by "
            f"torch.save{': ' + detail.group(1).strip() if detail else ''})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConversionError(f"{path}: not a PyTorch checkpoint that can be read (damaged, or another "
                              f"format: {first})") from None


def read_official_checkpoint(path: str | Path, trust_code: bool = False
                             ) -> tuple[dict[str, np.ndarray], np.ndarray | None, dict]:
    """Read an official checkpoint -> (state dict as float32 NumPy, prototypes_ema or None, extra info such
    as ``iter`` and ``best_iou``). Bare state dicts and ``module.`` prefixes from DataParallel are accepted
    too. The file is read with torch's safe loader; :class:`UnsafeCheckpointError` when it needs more.
    ``trust_code=True`` unpickles without restriction (a file you vouch for: unpickling can run code)."""
    path = require_file(path, "an official CPSL/ProDA PyTorch checkpoint (.pth, *_best_model.pkl)")
    try:
        import torch
    except ImportError as err:
        raise TorchMissingError("converting PyTorch checkpoints needs torch: pip install 'cpsl-tf[convert]' "
                                "(torch==2.13.0, a CPU build is enough)") from err
    obj = _load_torch_file(torch, path, trust_code)
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: expected a dict (official wrapper or state dict), got {type(obj)}")
    prototypes, info = None, {}
    if "ResNet101" in obj:
        info = {k: _plain(obj[k]) for k in ("iter", "best_iou") if k in obj}
        obj = obj["ResNet101"]
        if "prototypes_ema" in obj:
            prototypes = _numpy(obj["prototypes_ema"])
    if "model_state" in obj:
        obj = obj["model_state"]
    state = {}
    for key, value in obj.items():
        key = key.removeprefix("module.")
        if key.rsplit(".", 1)[-1] not in IGNORED_LEAVES:
            state[key] = _numpy(value)
    return state, prototypes, info


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _plain(value):
    """A JSON-friendly scalar (the official ``best_iou`` is a numpy float64)."""
    return value.item() if hasattr(value, "item") else value


def _require_key(state: dict, key: str) -> np.ndarray:
    if key not in state:
        raise ConversionError(f"state dict has no {key!r}: not an official DeepLab-v2/ProDA checkpoint")
    return state[key]


def infer_architecture(state: dict[str, np.ndarray], aspp_rates=OFFICIAL_ASPP_RATES
                       ) -> tuple[ModelConfig, int, bool]:
    """(ModelConfig, num_classes, bn_pretrain) of the network that produced ``state``."""
    bottleneck = "layer1.0.conv3.weight" in state
    blocks = []
    for stage in range(1, 5):
        indices = {int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        if not indices:
            raise ConversionError(f"state dict has no layer{stage} blocks")
        blocks.append(max(indices) + 1)
    backbone = next((name for name, spec in RESNET_SPECS.items()
                     if spec.blocks == tuple(blocks) and spec.bottleneck == bottleneck), None)
    if backbone is None:
        raise ConversionError(f"state dict has blocks {blocks} ({'bottleneck' if bottleneck else 'basic'}), "
                              f"which is none of {', '.join(RESNET_SPECS)}")
    branches = len({k.split(".")[2] for k in state if k.startswith("layer5.conv2d_list.")})
    if branches != len(aspp_rates) + 1:
        raise ConversionError(f"head has {branches} branches, expected 1 + {len(aspp_rates)} ASPP rates "
                              f"({list(aspp_rates)}); pass the checkpoint's rates")
    classifier = _require_key(state, "layer5.head.1.weight")
    head_channels = classifier.shape[1]
    squeeze = _require_key(state, "layer5.bottleneck.0.se.0.weight")
    model_cfg = dataclasses.replace(
        ModelConfig(), backbone=backbone, base_width=int(_require_key(state, "conv1.weight").shape[0]),
        head_channels=int(head_channels), se_reduction=int(head_channels * branches // squeeze.shape[0]),
        aspp_rates=[int(r) for r in aspp_rates], input_mean=[0.0, 0.0, 0.0], input_std=[1.0, 1.0, 1.0],
        align_corners=True, imagenet_weights=False)
    return model_cfg, int(classifier.shape[0]), "bn_pretrain.weight" in state


def keras_layer_name(module_path: str) -> str:
    """PyTorch module path -> Keras layer name (``layer1.0.downsample.1`` -> ``layer1_0_downsample_1``)."""
    return module_path.replace(".", "_")


def _layer_values(layer: keras.layers.Layer, params: dict[str, np.ndarray], where: str) -> list[np.ndarray]:
    def take(*leaves):
        missing = [leaf for leaf in leaves if leaf not in params]
        if missing:
            raise ConversionError(f"{where}: missing {', '.join(where + '.' + m for m in missing)}")
        return [params[leaf] for leaf in leaves]

    if isinstance(layer, keras.layers.Conv2D):
        (weight,) = take("weight")
        values = [weight.transpose(2, 3, 1, 0)]  # OIHW -> HWIO
        if layer.use_bias:
            values += take("bias")
        expected = {"weight", "bias"} if layer.use_bias else {"weight"}
    elif isinstance(layer, keras.layers.Dense):
        weight, bias = take("weight", "bias")
        values, expected = [weight.T, bias], {"weight", "bias"}
    elif isinstance(layer, keras.layers.BatchNormalization):
        expected = {"weight", "bias", "running_mean", "running_var"}
        values = take("weight", "bias", "running_mean", "running_var")
    elif isinstance(layer, keras.layers.GroupNormalization):
        expected = {"weight", "bias"}
        values = take("weight", "bias")
    else:
        raise ConversionError(f"{where}: no conversion rule for Keras layer type {type(layer).__name__}")
    extra = set(params) - expected
    if extra:
        raise ConversionError(f"{where}: unexpected entries {sorted(extra)} for a {type(layer).__name__}")
    return values


def assign_state_dict(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Set every weighted layer of ``model`` from ``state``; every key must be used, every shape fit."""
    modules: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    module_paths = {}
    for key, value in state.items():
        module, leaf = key.rsplit(".", 1)
        modules[keras_layer_name(module)][leaf] = value
        module_paths[keras_layer_name(module)] = module
    weighted = [layer for layer in model.layers if layer.weights]
    unused = set(modules) - {layer.name for layer in weighted}
    if unused:
        raise ConversionError(f"state dict entries with no Keras layer: {sorted(unused)[:5]}")
    for layer in weighted:
        if layer.name not in modules:
            raise ConversionError(f"Keras layer {layer.name!r} has no entries in the state dict")
        where = module_paths[layer.name]
        values = _layer_values(layer, modules[layer.name], where)
        for variable, value in zip(layer.weights, values):
            if tuple(variable.shape) != value.shape:
                raise ConversionError(f"{where}: shape {value.shape} does not fit Keras {variable.path} "
                                      f"{tuple(variable.shape)}")
        layer.set_weights(values)


def segmenter_from_state_dict(state: dict[str, np.ndarray], aspp_rates=OFFICIAL_ASPP_RATES
                              ) -> tuple[keras.Model, ModelConfig, int]:
    model_cfg, num_classes, bn_pretrain = infer_architecture(state, aspp_rates)
    model = build_segmenter(model_cfg, num_classes, bn_pretrain=bn_pretrain)
    assign_state_dict(model, state)
    return model, model_cfg, num_classes


def prototypes_path(weights_path: str | Path) -> Path:
    """``out.weights.h5`` -> ``out.prototypes.npy`` (the (K, 256) prototypes_ema of f_SL)."""
    sidecar = sidecar_path(weights_path)
    return sidecar.with_name(sidecar.stem + ".prototypes.npy")


def convert_checkpoint(source: str | Path, destination: str | Path,
                       aspp_rates=OFFICIAL_ASPP_RATES, trust_code: bool = False) -> dict:
    """Official ``.pth``/``.pkl`` -> ``destination`` (``.weights.h5``) + sidecar JSON (+ prototypes .npy).
    Returns the sidecar meta. ``trust_code``: see :func:`read_official_checkpoint`."""
    state, prototypes, info = read_official_checkpoint(source, trust_code=trust_code)
    model, model_cfg, num_classes = segmenter_from_state_dict(state, aspp_rates)
    names = (list(class_names(num_classes)) if num_classes in SUPPORTED_NUM_CLASSES
             else [f"class_{i}" for i in range(num_classes)])
    meta = {"model": dataclasses.asdict(model_cfg), "num_classes": num_classes, "class_names": names,
            "converted_from": str(source), **{f"official_{k}": v for k, v in info.items()}}
    if prototypes is not None:
        if prototypes.shape != (num_classes, model_cfg.head_channels):
            raise ConversionError(f"{source}: prototypes_ema has shape {prototypes.shape}, expected "
                                  f"({num_classes}, {model_cfg.head_channels})")
        with atomic_path(prototypes_path(destination)) as tmp:
            np.save(tmp, prototypes)
        meta["prototypes"] = prototypes_path(destination).name
    return save_model_checkpoint(model, destination, meta)
