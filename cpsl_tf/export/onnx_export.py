"""Keras segmenter -> deployable ONNX graph.

The deploy graph has a fixed height/width and a dynamic batch (a dynamic height/width turns dilated
convolutions into SpaceToBatch chains: 2,302 nodes instead of 256), takes RGB in [0, 1] in NHWC or NCHW
(normalisation is inside the model), upsamples the stride-8 logits to the input size with the project's
bilinear resize and emits either the logits or an argmax class map (``tf.argmax``, uint8 or int32;
``keras.ops.argmax`` exports to an invalid ONNX model).

Conversion uses ``tf2onnx.convert.from_function`` on a ``tf.function`` with a named input signature.
Keras' own ``model.export(path, format="onnx", input_signature=..., opset_version=...)`` also works with
Keras 3.15 / TF 2.21 (it calls tf2onnx too) but names the input ``args_0``; ``tf2onnx.convert.from_keras``
is broken for Keras 3. A mixed-precision model is first rebuilt with the float32 dtype policy. The converted
graph's wide reductions (GroupNorm's moments) are split so that OpenCV's DNN module reads them as ONNX
Runtime does (:mod:`cpsl_tf.export.portable`).
"""

from __future__ import annotations

import logging
import os
import traceback
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import onnx
import tensorflow as tf

from cpsl_tf.export.portable import split_wide_reductions
from cpsl_tf.io_utils import atomic_write_bytes
from cpsl_tf.resize import resize_bilinear

INPUT_NAME = "image"
LOGITS_NAME = "logits"
CLASS_MAP_NAME = "class_map"
# ONNX ops that betray a dilated convolution lowered through space-to-batch.
SPACE_TO_BATCH_OPS = ("SpaceToBatchND", "BatchToSpaceND", "SpaceToDepth", "DepthToSpace")
ELEMENTWISE_OPS = ("Mul", "Add", "Sub", "Div", "Cast")
# tf2onnx's switch for its optimizers' error recovery (tf2onnx.constants.ENV_TF2ONNX_CATCH_ERRORS).
CATCH_ERRORS = "TF2ONNX_CATCH_ERRORS"


def is_float32(model: keras.Model) -> bool:
    return all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers(include_self=False))


def float32_model(model: keras.Model) -> keras.Model:
    """The same functional model under the float32 dtype policy, with the weights copied.

    Mixed-precision variables are stored in float32 already, so the copy is exact.
    """
    if is_float32(model):
        return model

    def as_float32(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=as_float32)
    clone.set_weights(model.get_weights())
    return clone


def deploy_function(model: keras.Model, height: int, width: int, *, layout: str = "nhwc",
                    outputs: tuple[str, ...] = (CLASS_MAP_NAME,), argmax_dtype: str = "uint8",
                    align_corners: bool = True) -> tf.types.experimental.GenericFunction:
    """A ``tf.function`` image -> {output name: tensor} with a fixed size and a dynamic batch.

    ``outputs`` holds ``"logits"`` ((B, H, W, C), or (B, C, H, W) for the NCHW layout) and/or
    ``"class_map"`` ((B, H, W) of ``argmax_dtype``).
    """
    if layout not in ("nhwc", "nchw"):
        raise ValueError(f"layout must be 'nhwc' or 'nchw', got {layout!r}")
    if argmax_dtype not in ("uint8", "int32"):
        raise ValueError(f"argmax_dtype must be 'uint8' or 'int32', got {argmax_dtype!r}")
    unknown = set(outputs) - {LOGITS_NAME, CLASS_MAP_NAME}
    if not outputs or unknown:
        raise ValueError(f"outputs must be a non-empty subset of ('logits', 'class_map'), got {outputs!r}")
    model = float32_model(model)
    shape = [None, 3, height, width] if layout == "nchw" else [None, height, width, 3]

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)])
    def deploy(image):
        nhwc = tf.transpose(image, [0, 2, 3, 1]) if layout == "nchw" else image
        logits = model(nhwc, training=False)["logits"]
        logits = resize_bilinear(tf.cast(logits, tf.float32), (height, width), align_corners=align_corners)
        result = {}
        if LOGITS_NAME in outputs:
            result[LOGITS_NAME] = tf.identity(
                tf.transpose(logits, [0, 3, 1, 2]) if layout == "nchw" else logits, name=LOGITS_NAME)
        if CLASS_MAP_NAME in outputs:
            class_map = tf.argmax(logits, axis=-1, output_type=tf.int32)
            result[CLASS_MAP_NAME] = tf.identity(tf.cast(class_map, tf.as_dtype(argmax_dtype)),
                                                 name=CLASS_MAP_NAME)
        return result

    return deploy


def convert(function, opset: int = 17) -> onnx.ModelProto:
    """tf.function -> ONNX ModelProto with the pinned ``opset`` (17: the newest TensorRT 8.6 parses).

    By default tf2onnx deep-copies the whole graph, weights included, before each of its graph optimizers,
    to roll back one that fails; the copies wait for the cycle collector, and converting DeepLab-v2 R101
    (250 MB of weights) peaked at 15 GiB of host memory. ``TF2ONNX_CATCH_ERRORS=FALSE`` turns the copies
    off. When an optimizer then fails, the conversion runs once more with the copies, so that tf2onnx rolls
    that optimizer back and goes on: its transpose optimizer (1.16) fails on a bias-free convolution
    followed by the addition of a scalar (``max()`` of an empty shape), which MobileNetV3's hard-swish makes
    wherever BatchNorm folds to a zero offset, as in a freshly initialised student.
    """
    try:
        model_proto = _from_function(function, opset, catch_errors=False)
    except Exception as err:  # noqa: BLE001 (only an optimizer's failure is retried)
        if not _raised_in_tf2onnx_optimizer(err):
            raise
        logging.getLogger(__name__).info("tf2onnx optimizer failed (%s: %s); converting again with its "
                                         "rollback", type(err).__name__, err)
        model_proto = _from_function(function, opset, catch_errors=True)
    split_wide_reductions(model_proto)
    onnx.checker.check_model(model_proto)
    return model_proto


def _from_function(function, opset: int, catch_errors: bool) -> onnx.ModelProto:
    import tf2onnx

    previous = os.environ.get(CATCH_ERRORS)
    # tf2onnx 1.16 compares the variable's name, not its value, with "TRUE": any value turns the rollback
    # off, and only an unset variable leaves it on.
    if catch_errors:
        os.environ.pop(CATCH_ERRORS, None)
    else:
        os.environ[CATCH_ERRORS] = "FALSE"
    try:
        model_proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                                       opset=opset)
    finally:
        if previous is None:
            os.environ.pop(CATCH_ERRORS, None)
        else:
            os.environ[CATCH_ERRORS] = previous
    return model_proto


def _raised_in_tf2onnx_optimizer(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return any(f"tf2onnx{os.sep}optimizer{os.sep}" in frame.filename for frame in frames)


def export_onnx(model: keras.Model, path: str | Path, *, height: int, width: int, layout: str = "nhwc",
                output: str = "argmax", argmax_dtype: str = "uint8", opset: int = 17,
                align_corners: bool = True) -> onnx.ModelProto:
    """Write the deploy graph of ``model`` to ``path`` (atomically) and return it."""
    if output not in ("argmax", "logits"):
        raise ValueError(f"output must be 'argmax' or 'logits', got {output!r}")
    outputs = (CLASS_MAP_NAME,) if output == "argmax" else (LOGITS_NAME,)
    function = deploy_function(model, height, width, layout=layout, outputs=outputs,
                               argmax_dtype=argmax_dtype, align_corners=align_corners)
    model_proto = convert(function, opset)
    atomic_write_bytes(path, model_proto.SerializeToString())
    return model_proto


def with_logits_output(model_proto: onnx.ModelProto, layout: str) -> onnx.ModelProto:
    """A copy of an argmax deploy graph that also emits the logits its ArgMax reads, as ``"logits"`` in the
    layout's convention ((B, H, W, C) for NHWC, (B, C, H, W) for NCHW).

    The parity gate checks an argmax artefact's logits through this copy: the same nodes and weights, with
    one more output, where converting the deploy function once more would cost another conversion's time
    and memory (about 10 GiB for DeepLab-v2 R101 at 1024x2048) and check a different graph.
    """
    argmaxes = [node for node in model_proto.graph.node if node.op_type == "ArgMax"]
    if len(argmaxes) != 1:
        raise ValueError(f"expected one ArgMax in the deploy graph, found {len(argmaxes)}")
    (argmax,) = argmaxes
    axis = _attribute(argmax, "axis", 0) % 4  # the logits are (B, ., ., .)
    channels = 1 if layout == "nchw" else 3
    twin = onnx.ModelProto()
    twin.CopyFrom(model_proto)
    if axis == channels:
        node = onnx.helper.make_node("Identity", [argmax.input[0]], [LOGITS_NAME])
    else:
        others = [a for a in (1, 2, 3) if a != axis]
        perm = [0, axis, *others] if channels == 1 else [0, *others, axis]
        node = onnx.helper.make_node("Transpose", [argmax.input[0]], [LOGITS_NAME], perm=perm)
    twin.graph.node.append(node)
    twin.graph.output.append(onnx.helper.make_tensor_value_info(LOGITS_NAME, onnx.TensorProto.FLOAT, None))
    return twin


def _attribute(node, name, default=None):
    for attr in node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def graph_report(model_proto: onnx.ModelProto) -> dict:
    """What the exported graph contains: op counts, dilated Convs, Resize modes, Transposes."""
    graph = model_proto.graph
    graph_inputs = {i.name for i in graph.input}
    graph_outputs = {o.name for o in graph.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    producers = {out: node for node in graph.node for out in node.output}

    def from_input(name: str) -> bool:
        # An input transpose may sit behind the in-graph normalisation (elementwise ops on the input).
        while name not in graph_inputs:
            node = producers.get(name)
            if node is None or node.op_type not in ELEMENTWISE_OPS:
                return False
            name = next((i for i in node.input if i in graph_inputs or i in producers), "")
        return True

    transposes = []
    for node in graph.node:
        if node.op_type != "Transpose":
            continue
        # An output transpose either produces a graph output or feeds only the final ArgMax.
        at_output = node.output[0] in graph_outputs or all(
            c.op_type == "ArgMax" for c in consumers.get(node.output[0], []))
        transposes.append({"name": node.name, "io": from_input(node.input[0]) or at_output})
    return {
        "num_nodes": len(graph.node),
        "op_counts": dict(Counter(n.op_type for n in graph.node)),
        "opset": max((o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")),
                     default=None),
        "dilated_convs": sum(1 for n in convs if max(_attribute(n, "dilations", [1, 1])) > 1),
        "dilations": sorted({tuple(_attribute(n, "dilations", [1, 1])) for n in convs}),
        "resize_modes": sorted({(_attribute(n, "mode", "nearest"),
                                 _attribute(n, "coordinate_transformation_mode", "half_pixel"))
                                for n in graph.node if n.op_type == "Resize"}),
        "space_to_batch_nodes": sum(1 for n in graph.node if n.op_type in SPACE_TO_BATCH_OPS),
        "transposes": transposes,
    }


def expected_dilated_convs(model: keras.Model) -> int:
    """How many dilated Conv2D layers the Keras model has (each must reach ONNX as one dilated Conv)."""
    count = 0
    for layer in model._flatten_layers(include_self=False):
        rate = getattr(layer, "dilation_rate", None)
        if isinstance(layer, keras.layers.Conv2D) and rate is not None and max(np.atleast_1d(rate)) > 1:
            count += 1
    return count


def graph_problems(report: dict, *, align_corners: bool, expected_dilated: int | None = None) -> list[str]:
    """Reasons the graph is not the intended deploy graph (empty when it is)."""
    problems = []
    if report["space_to_batch_nodes"]:
        problems.append(f"{report['space_to_batch_nodes']} space-to-batch nodes: dilated convolutions were "
                        "lowered through SpaceToBatch (export with a fixed height and width)")
    if expected_dilated is not None and report["dilated_convs"] != expected_dilated:
        problems.append(f"{report['dilated_convs']} Conv nodes with dilations > 1, "
                        f"expected {expected_dilated}")
    wanted = "align_corners" if align_corners else "half_pixel"
    for mode, transform in report["resize_modes"]:
        if mode != "linear" or transform != wanted:
            problems.append(f"Resize mode={mode} coordinate_transformation_mode={transform}, expected "
                            f"linear/{wanted}")
    return problems


def inner_transposes(report: dict) -> list[str]:
    """Layout transposes inside the graph (a cost, not an error: Keras GroupNormalization makes some)."""
    return [t["name"] for t in report["transposes"] if not t["io"]]
