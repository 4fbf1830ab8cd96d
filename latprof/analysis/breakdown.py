"""Per-operator time breakdown in the categories of ShuffleNet V2's Figure 2: Conv / Elemwise / Data / Shuffle / Other.

Mapping (documented in docs/backends.md; ONNX op types and aten op names, ``aten::`` prefix dropped):

| category | ops |
|---|---|
| Conv | Conv, FusedConv, ConvTranspose, QLinearConv, ConvInteger, Gemm, FusedGemm, MatMul, MatMulInteger; aten conv*, convolution*, addmm, mm, bmm, matmul, linear |
| Elemwise | activations, Add/Sub/Mul/Div/Sum, BatchNormalization, Clip, Sigmoid, HardSwish...; aten relu/add/mul/batch_norm/hardtanh/...; inductor fused pointwise kernels |
| Data | Concat, Split, Slice, Gather, Transpose, Reshape, Flatten, (Un)Squeeze, Identity, Pad, Expand, Tile, Cast, ReorderInput/ReorderOutput (NCHWc layout), Memcpy*; aten cat/copy_/clone/contiguous/slice/view/... |
| Shuffle | the channel shuffle: 5-D Transpose with perm (0,2,1,3,4) and its Reshapes (ONNX); a copy of a 5-D tensor or aten channel_shuffle (PyTorch) |
| Other | pooling, Softmax, reductions, anything not listed |

A fused node (e.g. Conv with ``activation=Relu``) counts where its main op counts: Conv. Depthwise convolution stays
in Conv and is *also* reported as ``depthwise_ms``, because the paper argues it behaves like an element-wise op.

Pure: it takes a profile (``latprof.backends.op_profiling``, which runs the profilers: ``per_op_breakdown``) and
returns records and table rows; printing them is ``latprof.views.breakdown``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from latprof.rows import Record

if TYPE_CHECKING:  # the profiles' types only: analysis never imports the backends (nor torch)
    from latprof.backends.op_profiling import OpProfile, OpTime

CATEGORIES = ("Conv", "Elemwise", "Data", "Shuffle", "Other")

# ShuffleNet V2 (Ma et al., ECCV 2018), Figure 2: share of run time in percent, same order as CATEGORIES.
# None: the network has no channel shuffle. Copied from the paper's reference data; never read at run time.
PAPER_FIGURE2: dict[str, list[float | None]] = {
    "gpu_shufflenet_v1": [50, 15, 20, 5, 10],
    "gpu_mobilenet_v2": [54, 23, 22, None, 1],
    "arm_shufflenet_v1": [87, 4, 1, 0, 8],
    "arm_mobilenet_v2": [89, 10.5, 0.3, None, 0.2],
}

ONNX_CATEGORY: dict[str, str] = {
    **dict.fromkeys(["Conv", "FusedConv", "ConvTranspose", "QLinearConv", "ConvInteger", "NhwcConv",
                     "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul"], "Conv"),
    **dict.fromkeys(["Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu",
                     "Selu", "Gelu", "FastGelu", "BiasGelu", "QuickGelu", "Erf", "Exp", "Log", "Sqrt", "Pow",
                     "Reciprocal", "Neg", "Abs", "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean",
                     "BatchNormalization", "InstanceNormalization", "GroupNorm", "LayerNormalization",
                     "Softplus", "Mish", "Where", "Not", "And", "Or", "Equal", "Less", "Greater",
                     "QuantizeLinear", "DequantizeLinear"], "Elemwise"),
    **dict.fromkeys(["Concat", "Split", "Slice", "Gather", "GatherElements", "Transpose", "Reshape", "Flatten",
                     "Squeeze", "Unsqueeze", "Identity", "Pad", "Expand", "Tile", "Cast", "Shape", "Size",
                     "ReorderInput", "ReorderOutput", "MemcpyToHost", "MemcpyFromHost", "DepthToSpace",
                     "SpaceToDepth", "Resize", "Upsample"], "Data"),
}

_TORCH_CONV = ("conv", "convolution", "addmm", "mm", "bmm", "matmul", "linear", "baddbmm")
_TORCH_ELEMWISE = ("relu", "relu6", "hardtanh", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu", "tanh",
                   "threshold", "clamp", "clamp_min", "clamp_max", "add", "sub", "mul", "div", "batch_norm",
                   "native_batch_norm", "_native_batch_norm_legit_no_training", "group_norm", "layer_norm",
                   "native_group_norm", "native_layer_norm", "leaky_relu", "elu", "prelu", "_prelu_kernel",
                   "where", "exp", "sqrt", "rsqrt", "pow", "neg", "abs", "fill_", "zero_")
_TORCH_DATA = ("cat", "_cat", "stack", "copy_", "clone", "contiguous", "slice", "narrow", "chunk", "split",
               "split_with_sizes", "view", "reshape", "_reshape_alias", "_unsafe_view", "flatten", "transpose",
               "permute", "t", "select", "index", "index_select", "as_strided", "to", "_to_copy", "expand",
               "squeeze", "unsqueeze", "empty", "empty_like", "empty_strided", "zeros", "detach", "pad",
               "constant_pad_nd", "alias", "resize_", "unbind")


def torch_category(op: str) -> str:
    """Category of an aten op (``aten::`` prefix optional) or an inductor fused kernel name."""
    name = op.split("::")[-1]
    if "channel_shuffle" in name:
        return "Shuffle"
    if "fused" in name or name.startswith("triton_"):  # inductor kernels, named after what they fuse
        return "Data" if any(k in name for k in ("cat", "clone", "copy")) and "relu" not in name else "Elemwise"
    base = name.rstrip("_") if name not in ("copy_", "fill_", "zero_", "resize_") else name
    if base in _TORCH_CONV or name.startswith(("conv", "mkldnn_conv", "cudnn_conv", "_convolution",
                                                "_slow_conv", "thnn_conv", "_nnpack", "mkldnn_linear")):
        return "Conv"
    if base in _TORCH_ELEMWISE or "batch_norm" in name:
        return "Elemwise"
    if base in _TORCH_DATA:
        return "Data"
    return "Other"


def onnx_category(op_type: str) -> str:
    return ONNX_CATEGORY.get(op_type, "Other")


def categorize(op: OpTime, source: str) -> str:
    """The Figure 2 category of one profiled op; the shuffle pattern wins over its generic Data category."""
    if op.shuffle:
        return "Shuffle"
    return onnx_category(op.op_type) if source == "onnxruntime" else torch_category(op.op_type)


def reconciliation(profiled_total_ms: float, profiled_run_ms: float | None, end_to_end_ms: float | None,
                   source: str, clock: str = "cpu") -> str:
    """How the sum of op times relates to the unprofiled end-to-end median (the latency row).

    ``clock`` (``OpProfile.clock``) decides what a gap means: on the CPU, work outside the operators; with GPU
    kernel times, time the GPU sat idle (launches, the per-call synchronisation); with host launch times (ONNX
    Runtime's CUDA provider, stock build), nothing about GPU time at all, which the line says first.
    """
    if not end_to_end_ms:
        return f"op sum {profiled_total_ms:.4g} ms; no end-to-end latency to compare with"
    ratio = profiled_total_ms / end_to_end_ms
    run = f"; a whole profiled run took {profiled_run_ms:.4g} ms" if profiled_run_ms else ""
    head = (f"op sum {profiled_total_ms:.4g} ms = {ratio:.1%} of the unprofiled end-to-end median "
            f"{end_to_end_ms:.4g} ms{run}")
    if clock == "host-launch":
        return (f"{head}. These op times are host timestamps around asynchronous GPU launches (the stock "
                "onnxruntime-gpu build records no kernel times): they measure launch cost, not GPU execution, so "
                "the op sum is not comparable with the latency and the shares are shares of launch time, not of "
                "GPU time.")
    if clock == "gpu":
        gap = ("the rest is time the GPU sat idle between kernels: host-side launch work (Python, dispatcher, "
               "kernel launches) and the synchronisation after each call")
        over = "kernels on several streams overlapped, or the profiler's own device work added time"
    else:
        gap = ("the rest is work outside the operators: " + (
            "session.run setup, input/output binding, memory allocation and thread-pool hand-offs between nodes"
            if source == "onnxruntime" else
            "Python and dispatcher overhead between aten ops, module call overhead"))
        over = "the profiler's own per-op overhead and timer granularity inflate small ops"
    verdict = gap if ratio <= 1 else over
    return f"{head}; {verdict}. Shares are of the op sum, not of the latency."


def breakdown_record(profile: OpProfile, end_to_end_ms: float | None, /, **ident: Any) -> dict[str, Any]:
    """A ``record: "per_op"`` line (docs/backends.md, "Per-operator breakdown"); ``ident`` supplies workload, backend,
    threads, batch, ..."""
    cats = dict.fromkeys(CATEGORIES, 0.0)
    ops = []
    for op in profile.ops:
        cat = categorize(op, profile.source)
        cats[cat] += op.time_ms
        entry: dict[str, Any] = {"name": op.name, "op_type": op.op_type, "category": cat,
                                 "time_ms": op.time_ms, "calls": op.calls}
        if op.depthwise:
            entry["depthwise"] = True
        if op.fused_ops:
            entry["fused_ops"] = op.fused_ops
        ops.append(entry)
    total = sum(cats.values())
    return {
        "record": Record.PER_OP.value,
        **ident,
        "categories_ms": cats,
        "categories_percent": {c: (100.0 * v / total if total > 0 else 0.0) for c, v in cats.items()},
        "depthwise_ms": sum(o.time_ms for o in profile.ops if o.depthwise),
        # time of nodes where the runtime fused element-wise work into a conv (counted in Conv, as the runtime ran it)
        "fused_conv_elemwise_ms": sum(o.time_ms for o in profile.ops if o.fused_ops),
        "ops": ops,
        "profiled_total_ms": total,
        "profiled_run_ms": profile.profiled_run_ms,
        "end_to_end_median_ms": end_to_end_ms,
        "op_sum_over_end_to_end": (total / end_to_end_ms) if end_to_end_ms else None,
        "reconciliation": reconciliation(total, profile.profiled_run_ms, end_to_end_ms, profile.source,
                                         getattr(profile, "clock", "cpu")),
        "op_clock": getattr(profile, "clock", "cpu"),
        "method": profile.method,
        "mapping": "latprof.analysis.breakdown (docs/backends.md)",
    }


def category_rows(record: dict[str, Any]) -> list[list[Any]]:
    """Rows for a table: category, measured ms and %, then the paper's Figure 2 shares for reference."""
    rows = []
    for i, c in enumerate(CATEGORIES):
        rows.append([c, record["categories_ms"][c], record["categories_percent"][c],
                     *[PAPER_FIGURE2[k][i] for k in PAPER_FIGURE2]])
    rows.append(["(depthwise, within Conv)", record["depthwise_ms"],
                 100.0 * record["depthwise_ms"] / record["profiled_total_ms"] if record["profiled_total_ms"] else 0.0,
                 *[None] * len(PAPER_FIGURE2)])
    fused = record.get("fused_conv_elemwise_ms") or 0.0
    if fused:
        rows.append(["(conv+elemwise fused nodes, within Conv)", fused,
                     100.0 * fused / record["profiled_total_ms"] if record["profiled_total_ms"] else 0.0,
                     *[None] * len(PAPER_FIGURE2)])
    return rows


def category_columns() -> list[str]:
    return ["category", "ms", "%", *[f"paper {k} %" for k in PAPER_FIGURE2]]
