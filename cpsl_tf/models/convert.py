"""Import of the official CPSL/ProDA PyTorch checkpoints (``*_best_model.pkl``) into the Keras segmenter.

The official wrapper is ``{'ResNet101': {'model_state': state_dict, 'prototypes_ema': (K, 256)},
'iter': int, 'best_iou': numpy.float64}`` (notes section 2). Keys are PyTorch module paths; the Keras
layer of a key is its module path with dots replaced by underscores (``layer3.5.bn2.running_var`` ->
layer ``layer3_5_bn2``). The architecture (depth, width, head size, ``bn_pretrain``, class count) is read
from the state dict itself; only the ASPP rates are not stored in weights (official: 6/12/18/24).

PyTorch is needed only here (``pip install cpsl-tf[convert]``). The file is unpickled with
``weights_only=False`` because the official files hold a NumPy float64 that torch's safe loader refuses:
convert only checkpoints you trust, as unpickling can run code.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from pathlib import Path

import keras
import numpy as np

from cpsl_tf.config import ModelConfig
from cpsl_tf.io_utils import atomic_path
from cpsl_tf.labels import SUPPORTED_NUM_CLASSES, class_names
from cpsl_tf.models.checkpoint import save_model_checkpoint, sidecar_path
from cpsl_tf.models.resnet import RESNET_SPECS
from cpsl_tf.models.segmenter import build_segmenter

OFFICIAL_ASPP_RATES = (6, 12, 18, 24)
# Buffers with no Keras counterpart.
IGNORED_LEAVES = ("num_batches_tracked",)


class ConversionError(ValueError):
    """The checkpoint is not an official DeepLab-v2/ProDA state dict this converter understands."""


def read_official_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], np.ndarray | None, dict]:
    """Unpickle an official checkpoint (trusted file) -> (state dict as float32 NumPy, prototypes_ema or
    None, extra info such as ``iter`` and ``best_iou``). Bare state dicts and ``module.`` prefixes from
    DataParallel are accepted too."""
    try:
        import torch
    except ImportError as err:
        raise ImportError("converting PyTorch checkpoints needs torch: pip install 'cpsl-tf[convert]' "
                          "(torch==2.13.0, a CPU build is enough)") from err
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file does not exist")
    # Trusted file only: the official wrapper holds numpy.float64 (best_iou), refused by weights_only=True.
    obj = torch.load(path, map_location="cpu", weights_only=False)
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
                       aspp_rates=OFFICIAL_ASPP_RATES) -> dict:
    """Official ``.pth``/``.pkl`` -> ``destination`` (``.weights.h5``) + sidecar JSON (+ prototypes .npy).
    Returns the sidecar meta."""
    state, prototypes, info = read_official_checkpoint(source)
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
