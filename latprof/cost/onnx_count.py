"""Count an ``.onnx`` graph node by node with the same columns as the PyTorch tracer.

Shapes come from ``onnx.shape_inference``. Each node reads its inputs and writes its outputs once; ONNX has no
views, so only pure metadata nodes (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout, Shape arithmetic) are
free, while Transpose, Split, Slice, Concat are copies, as ONNX Runtime executes them. Arithmetic uses the
constants of ``latprof.cost.rules`` so a model exported from PyTorch gets the same ``mult_adds``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, shape_inference

from latprof.cost.report import CostReport, LayerCost
from latprof.cost.rules import ELEMENTWISE_OPS_PER_ELEMENT
from latprof.errors import LatprofError, one_line
from latprof.shapes import Shape, format_shape

Dims = tuple[int, ...]

FREE_NODES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape", "Constant",
                        "Size", "ConstantOfShape", "Range", "CastLike"})
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
_ELEMENTWISE = {
    "Relu": "relu", "Clip": "clamp", "HardSigmoid": "hardsigmoid", "HardSwish": "hardswish", "Sigmoid": "sigmoid",
    "Tanh": "tanh", "LeakyRelu": "leaky_relu", "Elu": "elu", "Mish": "mish", "Softplus": "softplus",
    "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Where": "where", "Max": "maximum", "Min": "minimum",
    "Neg": "neg", "Abs": "abs", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Reciprocal": "reciprocal",
    "Pow": "pow", "Erf": "erf", "Greater": "gt", "Less": "lt", "GreaterOrEqual": "ge", "LessOrEqual": "le",
    "Equal": "eq", "Not": "logical_not", "And": "logical_and", "Or": "logical_or", "Sign": "sign",
    "Round": "round", "Floor": "floor", "Ceil": "ceil",
}
_COPIES = frozenset({"Concat", "Transpose", "Split", "Slice", "Pad", "Gather", "Tile", "Expand", "Cast",
                     "DepthToSpace", "SpaceToDepth"})
_REDUCTIONS = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
                         "ReduceLogSumExp", "GlobalAveragePool", "GlobalMaxPool"})


class _Graph:
    """Shapes, element types and initializers of an inferred ONNX graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.shapes: dict[str, Dims] = {}
        self.types: dict[str, int] = {}
        self.init: dict[str, onnx.TensorProto] = {t.name: t for t in g.initializer}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            tt = vi.type.tensor_type
            if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                self.shapes[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
            self.types[vi.name] = tt.elem_type
        for t in g.initializer:
            self.shapes[t.name] = tuple(int(d) for d in t.dims)
            self.types[t.name] = t.data_type
        for node in g.node:  # Constant nodes: shapes of their values
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value":
                        self.shapes[node.output[0]] = tuple(int(d) for d in a.t.dims)
                        self.types[node.output[0]] = a.t.data_type
                        self.init.setdefault(node.output[0], a.t)

    def shape(self, name: str, node: onnx.NodeProto) -> Dims:
        if name not in self.shapes:
            raise LatprofError(f"ONNX shape inference left {name!r} (input of {node.op_type} node {node.name!r}) "
                               "without a static shape; pass --input with a fixed shape")
        return self.shapes[name]

    def numel(self, name: str, node: onnx.NodeProto) -> int:
        return math.prod(self.shape(name, node))

    def itemsize(self, name: str) -> int:
        elem = self.types.get(name, onnx.TensorProto.FLOAT)
        try:
            return int(np.dtype(helper.tensor_dtype_to_np_dtype(elem)).itemsize)
        except (KeyError, TypeError, ValueError):
            return 4


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


NodeRule = Callable[[onnx.NodeProto, _Graph, dict[str, Any]], tuple[int, int]]


def _conv(node: onnx.NodeProto, g: _Graph, a: dict[str, Any]) -> tuple[int, int]:
    w = g.shape(node.input[1], node)
    return g.numel(node.output[0], node) * w[1] * math.prod(w[2:]), 0


def _conv_transpose(node: onnx.NodeProto, g: _Graph, a: dict[str, Any]) -> tuple[int, int]:
    w = g.shape(node.input[1], node)
    return g.numel(node.input[0], node) * w[1] * math.prod(w[2:]), 0


def _gemm(node: onnx.NodeProto, g: _Graph, a: dict[str, Any]) -> tuple[int, int]:
    sa = g.shape(node.input[0], node)
    k = sa[0] if a.get("transA", 0) else sa[1]
    return g.numel(node.output[0], node) * k, 0


def _matmul(node: onnx.NodeProto, g: _Graph, a: dict[str, Any]) -> tuple[int, int]:
    sa = g.shape(node.input[0], node)
    return g.numel(node.output[0], node) * sa[-1], 0


def _elementwise(node: onnx.NodeProto, g: _Graph, a: dict[str, Any]) -> tuple[int, int]:
    return 0, ELEMENTWISE_OPS_PER_ELEMENT[_ELEMENTWISE[node.op_type]] * g.numel(node.output[0], node)


def _gelu(node: onnx.NodeProto, g: _Graph, a: dict[str, Any]) -> tuple[int, int]:
    per = 9 if a.get("approximate", b"none") in (b"tanh", "tanh") else 5
    return 0, per * g.numel(node.output[0], node)


def _batch_norm(node: onnx.NodeProto, g: _Graph, a: dict[str, Any]) -> tuple[int, int]:
    return 0, 2 * g.numel(node.output[0], node)


def _norm(node: onnx.NodeProto, g: _Graph, a: dict[str, Any]) -> tuple[int, int]:
    affine = len([i for i in node.input[1:] if i]) > 0
    return 0, (5 + (2 if affine else 0)) * g.numel(node.input[0], node)


def _softmax(node: onnx.NodeProto, g: _Graph, a: dict[str, Any]) -> tuple[int, int]:
    return 0, 5 * g.numel(node.input[0], node)


def _reduction(node: onnx.NodeProto, g: _Graph, a: dict[str, Any]) -> tuple[int, int]:
    return 0, g.numel(node.input[0], node)


def _pool(node: onnx.NodeProto, g: _Graph, a: dict[str, Any]) -> tuple[int, int]:
    return 0, g.numel(node.output[0], node) * math.prod(a["kernel_shape"])


def _resize(node: onnx.NodeProto, g: _Graph, a: dict[str, Any]) -> tuple[int, int]:
    mode = a.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    sin, sout = g.shape(node.input[0], node), g.shape(node.output[0], node)
    resized = sum(1 for i, o in zip(sin, sout, strict=True) if i != o) or max(len(sout) - 2, 1)
    per = {"nearest": 0, "linear": 2 ** (resized + 1) - 1, "cubic": 31}.get(mode, 0)
    return 0, per * g.numel(node.output[0], node)


def _copy(node: onnx.NodeProto, g: _Graph, a: dict[str, Any]) -> tuple[int, int]:
    return 0, 0


#: The ONNX handler table: op_type -> rule returning (mult_adds, elementwise_ops).
ONNX_RULES: dict[str, NodeRule] = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "Gemm": _gemm, "MatMul": _matmul, "Gelu": _gelu,
    "BatchNormalization": _batch_norm, "InstanceNormalization": _norm, "GroupNormalization": _norm,
    "LayerNormalization": _norm, "Softmax": _softmax, "LogSoftmax": _softmax,
    "MaxPool": _pool, "AveragePool": _pool, "Resize": _resize, "Upsample": _resize,
    **{op: _elementwise for op in _ELEMENTWISE}, **{op: _reduction for op in _REDUCTIONS},
    **{op: _copy for op in _COPIES},
}


def _load(path: str | Path) -> onnx.ModelProto:
    p = Path(path)
    if not p.is_file():
        raise LatprofError(f"ONNX file not found: {str(p)!r}")
    try:
        return onnx.load(str(p))
    except Exception as exc:  # noqa: BLE001  (protobuf decode errors have no common public base)
        raise LatprofError(f"{str(p)!r} is not a readable ONNX model: {one_line(exc) or type(exc).__name__}") from None


def _set_input_shape(model: onnx.ModelProto, input_shape: Shape | None) -> list[list[int]]:
    """Fix the (first) graph input to ``input_shape``; return the shapes of all graph inputs."""
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if not inputs:
        raise LatprofError("the ONNX model has no graph input")
    if input_shape is not None:
        dims = inputs[0].type.tensor_type.shape.dim
        if len(dims) != len(input_shape):
            raise LatprofError(f"input shape {format_shape(input_shape)} has rank {len(input_shape)}; the ONNX "
                               f"model's input {inputs[0].name!r} has rank {len(dims)}")
        for d, v in zip(dims, input_shape, strict=True):
            if d.HasField("dim_value") and d.dim_value != v:
                raise LatprofError(f"the ONNX model rejects input shape {format_shape(input_shape)}: input "
                                   f"{inputs[0].name!r} is fixed to {format_shape([x.dim_value for x in dims])}")
            d.Clear()
            d.dim_value = int(v)
    shapes = []
    for i in inputs:
        dims = i.type.tensor_type.shape.dim
        if not all(d.HasField("dim_value") for d in dims):
            raise LatprofError(f"ONNX input {i.name!r} has a dynamic dimension; pass --input with a fixed shape")
        shapes.append([int(d.dim_value) for d in dims])
    return shapes


def count_onnx(path: str | Path, input_shape: Shape | None = None) -> CostReport:
    """Count an ``.onnx`` file per node; ``input_shape`` fixes the first graph input (needed if it is dynamic)."""
    model = _load(path)
    shapes = _set_input_shape(model, tuple(input_shape) if input_shape else None)
    try:
        inferred = shape_inference.infer_shapes(model, check_type=False, strict_mode=True, data_prop=True)
    except Exception as exc:  # noqa: BLE001  (onnx raises InferenceError/ValidationError or RuntimeError)
        raise LatprofError(f"{str(path)!r}: ONNX shape inference failed for input "
                           f"{format_shape(shapes[0])}: {one_line(exc)}") from None
    g = _Graph(inferred)
    missing = [o for n in inferred.graph.node for o in n.output if o and o not in g.shapes]
    if missing:
        _shapes_from_runtime(model, shapes, missing, g)
    float_init = {n for n, t in g.init.items() if t.data_type in _FLOAT_TYPES and n in
                  {i.name for i in inferred.graph.initializer}}
    counted: set[str] = set()
    layers: list[LayerCost] = []
    unsupported: dict[str, None] = {}
    for idx, node in enumerate(inferred.graph.node):
        outs = [o for o in node.output if o]
        name = node.name or f"{node.op_type}_{idx}"
        if node.op_type in FREE_NODES or _is_shape_arithmetic(node, g):
            continue
        rule_fn = ONNX_RULES.get(node.op_type)
        attrs = _attrs(node)
        if rule_fn is None:
            unsupported.setdefault(node.op_type, None)
            ma, ew = 0, 0
        else:
            ma, ew = rule_fn(node, g, attrs)
        reads = [i for i in dict.fromkeys(node.input) if i and not _is_argument(i, g, node)]
        writes = outs[:1] if node.op_type in ("MaxPool", "BatchNormalization", "LayerNormalization") else outs
        elems = sum(g.numel(t, node) for t in reads) + sum(g.numel(t, node) for t in writes)
        nbytes = sum(g.numel(t, node) * g.itemsize(t) for t in reads + writes)
        params = 0
        for t in node.input:
            if t in float_init and t not in counted:
                counted.add(t)
                params += g.numel(t, node)
        layers.append(LayerCost(name, node.op_type, int(ma), int(ew), int(elems), int(nbytes), params,
                                list(g.shapes.get(outs[0], ())) if outs else []))
    total_params = sum(math.prod(g.shapes[n]) for n in float_init)
    report = CostReport(Path(path).name, shapes, layers, list(unsupported), total_params, False, "onnx")
    if unsupported:
        from latprof.cost.api import UnsupportedOpWarning

        warnings.warn(f"{Path(path).name}: no cost rule for ONNX op(s) {', '.join(unsupported)}; their tensor "
                      "traffic is counted, their arithmetic is not", UnsupportedOpWarning, stacklevel=2)
    return report


def _shapes_from_runtime(model: onnx.ModelProto, input_shapes: list[list[int]], names: list[str], g: _Graph) -> None:
    """Shapes that static inference could not resolve (shape arithmetic the data propagation does not cover):
    run the graph once in ONNX Runtime on zeros with those tensors exposed as outputs, and read their shapes."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for n in names:
        if n not in known:
            probe.graph.output.append(helper.make_empty_tensor_value_info(n))
    init = {t.name for t in probe.graph.initializer}
    graph_inputs = [i for i in probe.graph.input if i.name not in init]
    feeds = {
        i.name: np.zeros(s, dtype=helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type))
        for i, s in zip(graph_inputs, input_shapes, strict=True)
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values = session.run(names, feeds)
    except Exception as exc:  # noqa: BLE001  (ORT raises its own exception types)
        raise LatprofError(f"the ONNX model rejects input shape {format_shape(input_shapes[0])}: "
                           f"{one_line(exc)}") from None
    for n, v in zip(names, values, strict=True):
        g.shapes[n] = tuple(int(d) for d in np.shape(v))
        g.types.setdefault(n, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype))


def _is_argument(name: str, g: _Graph, node: onnx.NodeProto) -> bool:
    """Operator arguments stored as tensors (Clip bounds, Slice starts, Reshape shapes, Resize scales): PyTorch
    passes them as Python numbers, so they are not tensor traffic."""
    shape = g.shape(name, node)
    if g.types.get(name) in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) and len(shape) <= 1:
        return True
    return name in g.init and math.prod(shape) <= 1


def _is_shape_arithmetic(node: onnx.NodeProto, g: _Graph) -> bool:
    """Nodes that only compute shapes (integer tensors of rank <= 1): metadata, not data traffic."""
    outs = [o for o in node.output if o]
    return bool(outs) and all(
        g.types.get(o) in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) and len(g.shapes.get(o, (0, 0))) <= 1
        for o in outs
    )
