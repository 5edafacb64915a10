"""Rewrite the ONNX graph so that every runtime reads it the same way.

OpenCV's DNN module (5.0.0) computes ``ReduceMean`` wrongly over three or more axes of a 5-D tensor unless
they are the trailing axes (measured over every subset of axes, keepdims 0 and 1, for opset 17; 4-D
tensors and one or two axes are right). Keras' ``GroupNormalization`` exports exactly such a node: its
moments are ``ReduceMean`` over axes [1, 2, 4] of the (B, H, W, groups, channels per group) tensor. OpenCV
then agreed with ONNX Runtime on only 72 % of the benchmark model's pixels. The minimal reproduction is one
node, ``ReduceMean(axes=[1, 2, 4], keepdims=1)`` on a (1, 12, 24, 32, 8) input: OpenCV's result is 0.16
off NumPy's, ONNX Runtime's 6e-8.

:func:`split_wide_reductions` replaces each ``ReduceMean`` over more than two axes by a chain over at most
two axes each, the last axis first: a mean over equal-sized groups is the mean of their means, so the
result is the same up to float rounding, and each link is one that every runtime tested reads correctly.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

MAX_AXES_PER_REDUCTION = 2


def _axes(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> list[int] | None:
    for attribute in node.attribute:
        if attribute.name == "axes":
            return list(helper.get_attribute_value(attribute))
    if len(node.input) > 1 and node.input[1] in constants:  # opset 18+: axes as a constant input
        return [int(a) for a in numpy_helper.to_array(constants[node.input[1]])]
    return None


def _keepdims(node: onnx.NodeProto) -> bool:
    for attribute in node.attribute:
        if attribute.name == "keepdims":
            return bool(helper.get_attribute_value(attribute))
    return True


def _constant(graph: onnx.GraphProto, name: str, values: list[int]) -> str:
    graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
    return name


def _input_rank(model: onnx.ModelProto, name: str) -> int:
    inferred = onnx.shape_inference.infer_shapes(model)
    for info in (*inferred.graph.value_info, *inferred.graph.input):
        if info.name == name:
            return len(info.type.tensor_type.shape.dim)
    raise ValueError(f"the rank of {name!r} is unknown; cannot normalise negative reduction axes")


def split_wide_reductions(model: onnx.ModelProto) -> int:
    """Rewrite, in place, every ``ReduceMean`` over more than two axes into a chain of ``ReduceMean`` (kept
    dimensions, so axis numbers stay valid) over at most two axes each, the last axis first, and a
    ``Squeeze`` where the original dropped the reduced dimensions. Returns the number of nodes rewritten."""
    graph = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    constants = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for node in graph.node:
        axes = _axes(node, constants) if node.op_type == "ReduceMean" else None
        if axes is None or len(axes) <= MAX_AXES_PER_REDUCTION:
            nodes.append(node)
            continue
        if any(a < 0 for a in axes):
            rank = _input_rank(model, node.input[0])
            axes = [a % rank for a in axes]
        reduced = sorted(axes)
        remaining = list(reduced)
        groups = []
        while len(remaining) > MAX_AXES_PER_REDUCTION:
            groups.append([remaining.pop()])
        groups.append(remaining)
        keepdims = _keepdims(node)
        source = node.input[0]
        for step, group in enumerate(groups):
            name = f"{node.name}__split{step}"
            last = step == len(groups) - 1
            target = node.output[0] if keepdims and last else f"{node.output[0]}__split{step}"
            if opset >= 18:
                nodes.append(helper.make_node("ReduceMean", [source, _constant(graph, f"{name}_axes", group)],
                                              [target], name=name, keepdims=1))
            else:
                nodes.append(helper.make_node("ReduceMean", [source], [target], name=name, axes=group,
                                              keepdims=1))
            source = target
        if not keepdims:
            squeeze_axes = _constant(graph, f"{node.name}__axes", reduced)
            nodes.append(helper.make_node("Squeeze", [source, squeeze_axes], [node.output[0]],
                                          name=f"{node.name}__squeeze"))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten
