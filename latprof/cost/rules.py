"""Per-op cost rules for aten ops: ONE table keyed by op name, one handler per op family (fvcore style).

A handler receives the call (op, arguments, outputs) and returns its arithmetic (``mult_adds``,
``elementwise_ops``) and, where the default is wrong, which tensors it really reads and writes. The default traffic
is "every tensor input read once, every tensor output written once" (ShuffleNet V2's MAC assumption); the tracer
turns reads and writes into ``mem_access`` / ``mem_bytes``. To support a new op, add a handler with ``@rule(...)``.
The scalar-operation constants are documented in docs/cost.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class OpCall:
    """One aten op call as the tracer saw it."""

    name: str  # overload packet name, e.g. "convolution", "add_"
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    inputs: list[torch.Tensor]  # tensor arguments, lists flattened, in order
    outputs: list[torch.Tensor]  # tensor results, in order

    def arg(self, index: int, key: str, default: Any = None) -> Any:
        if len(self.args) > index:
            return self.args[index]
        return self.kwargs.get(key, default)


@dataclass
class OpCost:
    """What one op costs. ``reads`` / ``writes`` = None means every tensor input / output."""

    mult_adds: int = 0
    elementwise_ops: int = 0
    reads: list[torch.Tensor] | None = None
    writes: list[torch.Tensor] | None = None
    family: str = ""
    notes: list[str] = field(default_factory=list)


Handler = Callable[[OpCall], OpCost]

#: The handler table: aten op name (overload packet, in-place ``_`` variants included) -> handler.
RULES: dict[str, Handler] = {}
#: Op family of each name (``conv``, ``matmul``, ``batch_norm``, ...), used for BN folding and ``by="op"`` tables.
FAMILY: dict[str, str] = {}

#: Aten ops that only allocate, alias or read metadata: no arithmetic, no traffic. Views are detected from the op
#: schema (``OpOverload.is_view``); these are the aliasing / allocation ops whose schema does not say so.
FREE_OPS = frozenset({
    "_unsafe_view", "view", "reshape", "_reshape_alias", "alias", "detach", "lift_fresh", "empty", "empty_like",
    "empty_strided", "new_empty", "new_empty_strided", "resize_", "set_", "_local_scalar_dense", "dropout",
    "feature_dropout", "alpha_dropout", "_has_compatible_shallow_copy_type", "t", "numpy_T",
})


def rule(*names: str, family: str) -> Callable[[Handler], Handler]:
    """Register ``handler`` for aten op names (and their in-place ``name_`` variants) under one family."""

    def register(handler: Handler) -> Handler:
        for n in names:
            for key in (n, f"{n}_"):
                if key in RULES:
                    raise ValueError(f"cost rule for {key!r} registered twice")
                RULES[key] = handler
                FAMILY[key] = family
        return handler

    return register


def lookup(name: str) -> tuple[Handler | None, str]:
    handler = RULES.get(name)
    return handler, FAMILY.get(name, "")


def _prod(xs: Sequence[int]) -> int:
    return math.prod(int(x) for x in xs)


def _numel(t: torch.Tensor) -> int:
    return int(t.numel())


# ----------------------------------------------------------------- conv / matmul (mult_adds)
@rule("convolution", "_convolution", "conv2d", "conv1d", "conv3d", "cudnn_convolution", "mkldnn_convolution",
      family="conv")
def _conv(c: OpCall) -> OpCost:
    """Direct convolution: every output element takes Cin/g * prod(k) multiply-adds (padded taps included).
    Transposed: every input element is scattered into Cout/g * prod(k) outputs. Bias adds are free (accumulator
    initialisation), but the bias tensor is read."""
    x, w = c.inputs[0], c.inputs[1]
    transposed = bool(c.arg(6, "transposed", False)) if c.name in ("convolution", "_convolution") else False
    k = _prod(w.shape[2:])
    if transposed:  # weight (Cin, Cout/g, *k)
        ma = _numel(x) * int(w.shape[1]) * k
    else:  # weight (Cout, Cin/g, *k)
        ma = _numel(c.outputs[0]) * int(w.shape[1]) * k
    return OpCost(mult_adds=ma)


@rule("mm", "bmm", "addmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "vdot", family="matmul")
def _matmul(c: OpCall) -> OpCost:
    """(.., M, K) @ (.., K, N): M*K*N multiply-adds per batch; the ``add`` of addmm/baddbmm is the accumulator's
    initial value (free, like a conv bias)."""
    a, b = (c.inputs[1], c.inputs[2]) if c.name in ("addmm", "baddbmm", "addbmm", "addmv") else (c.inputs[0], c.inputs[1])
    if b.dim() == 1:  # mv, dot: every element of a is multiplied once
        return OpCost(mult_adds=_numel(a))
    return OpCost(mult_adds=_numel(a) * int(b.shape[-1]))


# ----------------------------------------------------------------- normalisation
@rule("native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "cudnn_batch_norm",
      "miopen_batch_norm", "batch_norm", family="batch_norm")
def _batch_norm(c: OpCall) -> OpCost:
    """Inference BN is y = x*scale + shift with per-channel scale/shift: 2 ops per element. Only the normalised
    output is written (saved statistics are a training artefact)."""
    return OpCost(elementwise_ops=2 * _numel(c.outputs[0]), writes=c.outputs[:1])


@rule("native_group_norm", "native_layer_norm", "group_norm", "layer_norm", family="norm")
def _group_layer_norm(c: OpCall) -> OpCost:
    """Statistics 3 ops/element (sum; square, sum), normalisation 2 (subtract mean, multiply by rstd), affine 2
    (multiply weight, add bias) when present. Only the normalised output is written."""
    has_affine = len(c.inputs) > 1
    per = 5 + (2 if has_affine else 0)
    return OpCost(elementwise_ops=per * _numel(c.inputs[0]), writes=c.outputs[:1])


# ----------------------------------------------------------------- element-wise
#: Scalar operations per output element (transcendentals count as one). See docs/cost.md for the derivations.
ELEMENTWISE_OPS_PER_ELEMENT: dict[str, int] = {
    "relu": 1,  # max(x, 0)
    "hardtanh": 2, "clamp": 2, "clip": 2,  # relu6 = min(max(x, 0), 6)
    "clamp_min": 1, "clamp_max": 1,
    "hardsigmoid": 4,  # min(max(x + 3, 0), 6) / 6
    "hardswish": 5,  # x * hardsigmoid(x)
    "sigmoid": 3,  # 1 / (1 + exp(-x))
    "silu": 4,  # x * sigmoid(x)
    "tanh": 1,
    "leaky_relu": 2,  # max(x, a*x)
    "elu": 3, "mish": 5, "softplus": 3,
    "add": 1, "sub": 1, "rsub": 1, "mul": 1, "div": 1, "where": 1, "maximum": 1, "minimum": 1,
    "neg": 1, "abs": 1, "exp": 1, "log": 1, "sqrt": 1, "rsqrt": 1, "reciprocal": 1, "pow": 1, "erf": 1,
    "gt": 1, "lt": 1, "ge": 1, "le": 1, "eq": 1, "ne": 1, "sign": 1, "round": 1, "floor": 1, "ceil": 1,
    "logical_and": 1, "logical_or": 1, "logical_not": 1, "bitwise_and": 1, "bitwise_or": 1,
}


@rule(*ELEMENTWISE_OPS_PER_ELEMENT, family="elementwise")
def _elementwise(c: OpCall) -> OpCost:
    per = ELEMENTWISE_OPS_PER_ELEMENT[c.name.rstrip("_")]
    return OpCost(elementwise_ops=per * _numel(c.outputs[0]))


@rule("gelu", family="elementwise")
def _gelu(c: OpCall) -> OpCost:
    """Exact: 0.5*x*(1 + erf(x/sqrt2)) = 5 ops; tanh approximation 0.5*x*(1 + tanh(a*(x + b*x^3))) = 9 ops."""
    per = 9 if c.kwargs.get("approximate", c.args[1] if len(c.args) > 1 else "none") == "tanh" else 5
    return OpCost(elementwise_ops=per * _numel(c.outputs[0]))


@rule("_softmax", "softmax", "_log_softmax", "log_softmax", family="softmax")
def _softmax(c: OpCall) -> OpCost:
    """Per element: max-reduce, subtract, exp, sum-reduce, divide (log-softmax: log instead of divide) = 5."""
    return OpCost(elementwise_ops=5 * _numel(c.inputs[0]))


@rule("mean", "sum", "amax", "amin", "max", "min", "prod", "var", "std", "norm", "logsumexp", family="reduction")
def _reduction(c: OpCall) -> OpCost:
    """One op per input element (n-1 adds/compares per output plus the final divide of a mean)."""
    return OpCost(elementwise_ops=_numel(c.inputs[0]), writes=c.outputs[:1])


# ----------------------------------------------------------------- pooling
def _window(kernel: Any, spatial: int) -> int:
    ks = [kernel] * spatial if isinstance(kernel, int) else list(kernel)
    if len(ks) == 1 and spatial > 1:
        ks = ks * spatial
    return _prod(ks)


@rule("max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
      "max_pool1d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d", "mkldnn_max_pool2d", family="pool")
def _pool(c: OpCall) -> OpCost:
    """One op per window element per output (max: compares; average: adds and the final divide). Indices of
    max pooling are a training artefact: only the pooled values are written."""
    out = c.outputs[0]
    spatial = out.dim() - 2 if out.dim() >= 3 else 1
    return OpCost(elementwise_ops=_numel(out) * _window(c.arg(1, "kernel_size"), spatial), writes=c.outputs[:1])


def _adaptive_windows(in_size: Sequence[int], out_size: Sequence[int]) -> int:
    """Sum over output positions of the adaptive window size (PyTorch's start=floor, end=ceil rule)."""
    total = 1
    for i_n, o_n in zip(in_size, out_size, strict=True):
        i_n, o_n = int(i_n), int(o_n)
        total *= sum(-((-(j + 1) * i_n) // o_n) - (j * i_n) // o_n for j in range(o_n))
    return total


@rule("_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_avg_pool1d", "adaptive_max_pool1d",
      "adaptive_max_pool2d", "adaptive_max_pool3d", "_adaptive_avg_pool1d", family="pool")
def _adaptive_pool(c: OpCall) -> OpCost:
    x, out = c.inputs[0], c.outputs[0]
    spatial = out.dim() - 2 if out.dim() >= 3 else 1
    lead = _prod(out.shape[:-spatial])
    return OpCost(elementwise_ops=lead * _adaptive_windows(x.shape[-spatial:], out.shape[-spatial:]),
                  writes=c.outputs[:1])


# ----------------------------------------------------------------- data movement (copies: read + write, no math)
@rule("clone", "_to_copy", "copy", "contiguous", "cat", "stack", "constant_pad_nd", "reflection_pad1d",
      "reflection_pad2d", "replication_pad2d", "flip", "roll", "repeat", "index_select", "narrow_copy",
      "channel_shuffle", "native_channel_shuffle", "pixel_shuffle", "pixel_unshuffle", "_unsafe_index", "index",
      "gather", "split_with_sizes_copy", "split_copy", "permute_copy", "view_copy", "expand_copy", "slice_copy",
      "transpose_copy", "unsqueeze_copy", "squeeze_copy", "masked_fill", "lift_fresh_copy", "to", family="copy")
def _copy(c: OpCall) -> OpCost:
    """A materialising copy: reads its inputs, writes its outputs, no arithmetic (cat, a shuffle's contiguous())."""
    if c.name == "copy_":  # dst.copy_(src): dst is only written
        return OpCost(reads=c.inputs[1:2])
    return OpCost()


@rule("fill", "zero", "zeros_like", "ones_like", "full_like", "scalar_tensor", "zeros", "ones", "full", family="copy")
def _fill(c: OpCall) -> OpCost:
    """Fills write their output and read nothing (a fill value tensor is read)."""
    return OpCost(reads=[t for t in c.inputs[1:] if t.numel() == 1])


# ----------------------------------------------------------------- resampling
_INTERP_OPS = {
    "upsample_nearest1d": 0, "upsample_nearest2d": 0, "upsample_nearest3d": 0, "_upsample_nearest_exact1d": 0,
    "_upsample_nearest_exact2d": 0, "_upsample_nearest_exact3d": 0,
    "upsample_linear1d": 3, "upsample_bilinear2d": 7, "upsample_trilinear3d": 15, "upsample_bicubic2d": 31,
    "_upsample_bilinear2d_aa": 7, "_upsample_bicubic2d_aa": 31,
}


@rule(*_INTERP_OPS, family="interpolate")
def _interpolate(c: OpCall) -> OpCost:
    """Nearest is a gather (0 ops); an n-linear output is a weighted sum of 2^n taps (2^n mul + 2^n-1 add);
    bicubic a weighted sum of 16 taps (31 ops)."""
    return OpCost(elementwise_ops=_INTERP_OPS[c.name] * _numel(c.outputs[0]))
