"""ONNX Runtime kernels: the nodes of the optimised graph the session actually runs.

ONNX Runtime fuses before it runs (Conv+BN folded, Conv+Relu/Clip/Sigmoid as one node, Conv+Add+Relu as an NCHWc
Conv with a summand, SiLU as QuickGelu, Gemm+activation) and on x86 moves convolutions into the blocked NCHWc
layout with Reorder nodes at the boundaries. The session writes that graph when asked
(``optimized_model_filepath``); its nodes are the kernels. Shapes of the tensors the optimiser renamed are not in
the saved graph, so they are propagated here from the graph input and the weights (NCHWc convolutions carry their
weights, ReorderOutput its channel count); everything the optimiser left alone keeps its inferred shape.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from latprof.predict.kernels import Kernel, shape4

Dims = list[int]
_SHAPELESS = {"Shape", "Constant", "Size"}


def optimized_model(backend: Any, onnx_path: Path, save_to: Path | None = None) -> Any:
    """The graph ``backend``'s session runs for ``onnx_path`` (its own session options, optimisation level
    included), as an ``onnx.ModelProto``. Builds a session; runs nothing. ``save_to`` keeps the optimised file: a
    profile that must name the same nodes runs that file (``latprof.predict.measure_cells.node_medians``), since
    ONNX Runtime numbers the nodes it inserts (``ReorderOutput_token_295``) anew in every session (EfficientNet-B0:
    37 of its 69 such nodes named differently by two sessions)."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="latprof-ortopt-") as tmp:
        so = backend.session_options()
        so.optimized_model_filepath = str(save_to or Path(tmp) / "optimized.onnx")
        backend.create_session(onnx_path, so)
        return onnx.load(so.optimized_model_filepath, load_external_data=False)


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _conv_out(x: Dims, w: Dims, a: dict[str, Any]) -> Dims:
    k = list(a.get("kernel_shape") or w[2:])
    spatial = x[2:]
    n = len(spatial)
    strides = list(a.get("strides") or [1] * n)
    dil = list(a.get("dilations") or [1] * n)
    pads = list(a.get("pads") or [0] * (2 * n))
    out = []
    for i in range(n):
        eff = (k[i] - 1) * dil[i] + 1
        out.append((spatial[i] + pads[i] + pads[i + n] - eff) // strides[i] + 1)
    return [x[0], w[0], *out]


def _pool_out(x: Dims, a: dict[str, Any]) -> Dims:
    k = list(a.get("kernel_shape") or [1, 1])
    n = len(x) - 2
    strides = list(a.get("strides") or [1] * n)
    pads = list(a.get("pads") or [0] * (2 * n))
    ceil = bool(a.get("ceil_mode", 0))
    out = []
    for i in range(n):
        span = x[2 + i] + pads[i] + pads[i + n] - k[i]
        out.append((math.ceil(span / strides[i]) if ceil else span // strides[i]) + 1)
    return [x[0], x[1], *out]


def _broadcast(shapes: list[Dims]) -> Dims:
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = [s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0]
        out.append(max(dims))
    return out


class _Shapes:
    """Tensor name -> shape for one optimised graph: inferred shapes where the saved graph has them, the rest
    propagated node by node."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        g = model.graph
        self.dims: dict[str, Dims] = {}
        self.consts: dict[str, list[int]] = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            tt = vi.type.tensor_type
            if tt.HasField("shape") and tt.shape.dim and all(d.HasField("dim_value") for d in tt.shape.dim):
                self.dims[vi.name] = [int(d.dim_value) for d in tt.shape.dim]
        self.weights: set[str] = set()
        for t in g.initializer:
            self.dims[t.name] = [int(d) for d in t.dims]
            self.weights.add(t.name)
            if t.data_type in (6, 7) and len(t.dims) <= 1:  # int32 / int64 vectors: shapes, axes, splits
                self.consts[t.name] = [int(v) for v in numpy_helper.to_array(t).reshape(-1)]

    def get(self, name: str) -> Dims | None:
        return self.dims.get(name) if name else None

    def infer(self, node: Any, a: dict[str, Any]) -> None:
        ins = [self.get(i) for i in node.input]
        x = ins[0] if ins else None
        op = node.op_type
        outs: list[Dims | None]
        if op in ("Conv", "FusedConv") and x and len(ins) > 1 and ins[1]:
            outs = [_conv_out(x, ins[1], a)]
        elif op == "ReorderOutput" and x:
            outs = [[x[0], int(a.get("channels", x[1])), *x[2:]]]
        elif op in ("MaxPool", "AveragePool") and x:
            outs = [_pool_out(x, a)]
        elif op in ("GlobalAveragePool", "GlobalMaxPool") and x:
            outs = [[*x[:2], *([1] * (len(x) - 2))]]
        elif op in ("Gemm", "FusedGemm") and x and len(ins) > 1 and ins[1]:
            m = x[1] if a.get("transA") else x[0]
            n = ins[1][0] if a.get("transB") else ins[1][1]
            outs = [[m, n]]
        elif op in ("MatMul", "FusedMatMul") and x and len(ins) > 1 and ins[1]:
            outs = [[*x[:-1], ins[1][-1]]]
        elif op == "Concat" and all(ins):
            axis = int(a.get("axis", 1)) % len(x)
            outs = [[*x[:axis], sum(s[axis] for s in ins), *x[axis + 1:]]]
        elif op == "Transpose" and x:
            perm = a.get("perm") or list(reversed(range(len(x))))
            outs = [[x[p] for p in perm]]
        elif op == "Reshape" and x and len(node.input) > 1 and node.input[1] in self.consts:
            target = list(self.consts[node.input[1]])
            target = [x[i] if v == 0 and not a.get("allowzero") else v for i, v in enumerate(target)]
            if -1 in target:
                known = math.prod(v for v in target if v != -1)
                target[target.index(-1)] = math.prod(x) // max(known, 1)
            outs = [target]
        elif op == "Flatten" and x:
            axis = int(a.get("axis", 1))
            outs = [[math.prod(x[:axis]), math.prod(x[axis:])]]
        elif op == "Split" and x:
            axis = int(a.get("axis", 0)) % len(x)
            parts = self.consts.get(node.input[1]) if len(node.input) > 1 else None
            n = len(node.output)
            parts = parts or a.get("split") or [x[axis] // n] * n
            outs = [[*x[:axis], p, *x[axis + 1:]] for p in parts]
        elif op.startswith("Reduce") and x:
            axes = a.get("axes") or (self.consts.get(node.input[1]) if len(node.input) > 1 else None)
            keep = bool(a.get("keepdims", 1))
            axes = [ax % len(x) for ax in (axes if axes is not None else range(len(x)))]
            outs = [[1 if i in axes else d for i, d in enumerate(x)] if keep else
                    [d for i, d in enumerate(x) if i not in axes]]
        elif x and len([s for s in ins if s]) > 1 and op not in ("Clip",):
            outs = [_broadcast([s for s in ins if s])]
        else:  # unary element-wise (activations, ReorderInput, Clip, QuickGelu, ...) and anything unknown
            outs = [x]
        for name, shape in zip(node.output, outs):
            if name and name not in self.dims and shape is not None:
                self.dims[name] = list(shape)


def _op_key(node: Any, a: dict[str, Any]) -> str:
    """Family of a node: its type (NCHWc ops prefixed), what it fused, and whether a summand is fused in."""
    key = ("nchwc." if node.domain == "com.microsoft.nchwc" else "") + node.op_type
    if len(node.input) >= 4 and node.input[3] and "Conv" in node.op_type:
        key += "+Add"
    if a.get("activation"):
        key += "+" + str(a["activation"])
    return key


def graph_kernels(model: Any) -> list[Kernel]:
    """One kernel per node of an optimised graph (metadata-only nodes included: each is a kernel call)."""
    shapes = _Shapes(model)
    kernels: list[Kernel] = []
    for node in model.graph.node:
        a = _attrs(node)
        shapes.infer(node, a)
        if node.op_type in _SHAPELESS:
            continue
        ins = [shapes.get(i) for i in node.input]
        outs = [shapes.get(o) for o in node.output]
        data_ins = [s for i, s in zip(node.input, ins) if s is not None and i not in shapes.weights]
        x = data_ins[0] if data_ins else (ins[0] if ins and ins[0] else [])
        y = outs[0] or []
        features: dict[str, float] = {}
        xs, ys = shape4(x), shape4(y)
        features.update(in_n=xs[0], in_c=xs[1], in_h=xs[2], in_w=xs[3], out_n=ys[0], out_c=ys[1], out_h=ys[2],
                        out_w=ys[3], in_numel=float(math.prod(x)) if x else 0.0,
                        out_numel=float(math.prod(y)) if y else 0.0, n_inputs=float(len(data_ins)))
        mem = sum(math.prod(s) for s in ins if s) + sum(math.prod(s) for s in outs if s)
        mult_adds = 0.0
        if "Conv" in node.op_type and len(ins) > 1 and ins[1] and y:
            w = ins[1]
            mult_adds = float(math.prod(y) * math.prod(w[1:]))
            groups = int(a.get("group", 1))
            features.update(k_h=float(w[2]) if len(w) > 2 else 1.0, k_w=float(w[3]) if len(w) > 3 else 1.0,
                            stride=float(max(a.get("strides") or [1])), groups=float(groups),
                            cin_per_group=float(w[1]))
        elif node.op_type in ("Gemm", "FusedGemm", "MatMul", "FusedMatMul") and len(ins) > 1 and ins[1] and y:
            k = ins[1][1] if a.get("transB") else ins[1][0]
            mult_adds = float(math.prod(y) * k)
        features.update(mult_adds=mult_adds, mem_access=float(mem),
                        elementwise_ops=float(math.prod(y)) if y and not mult_adds else 0.0)
        kernels.append(Kernel(op=_op_key(node, a), label=f"{node.name} ({_op_key(node, a)})", features=features,
                              spec={"node": node.name}))
    return kernels


def ort_kernels(backend: Any, workload: Any) -> list[Kernel]:
    """The kernels ``backend`` (an ONNX Runtime backend) runs for ``workload``: export (cached), optimise, read."""
    exported = backend.export(workload)
    return graph_kernels(optimized_model(backend, exported.path))
