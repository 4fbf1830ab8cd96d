"""PyTorch eager kernels: every aten op a forward pass dispatches is one kernel launch (eager fuses nothing).

``torch_kernels(module, inputs)`` traces a forward on meta tensors at the aten dispatch level (the tracer of
``latprof.cost``, so ``mult_adds`` and ``mem_access`` are the counts ``latprof count`` reports) and records, per op
call, a replayable description: the op's qualified name and its arguments with every tensor replaced by its shape,
strides and dtype. Views are kernels too here: in eager each is a dispatcher round trip, free of traffic but not of
time. ``replay_timer`` rebuilds one kernel's arguments with fresh tensors and times the op alone, so a calibration
reading and a network's kernel are the same call.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from latprof.cost.tracer import CostMode, ModuleStack
from latprof.predict.kernels import Kernel, shape4

_DTYPES = {str(d): d for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                               torch.int8, torch.uint8, torch.bool)}


def _spec(value: Any) -> Any:
    """JSON description of one argument: tensors by shape/stride/dtype, enums by name, plain values as they are."""
    if isinstance(value, torch.Tensor):
        return {"__tensor__": list(value.shape), "stride": list(value.stride()), "dtype": str(value.dtype)}
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value)}
    if isinstance(value, torch.memory_format):
        return {"__memory_format__": str(value).split(".")[-1]}
    if isinstance(value, torch.layout):
        return {"__layout__": str(value).split(".")[-1]}
    if isinstance(value, torch.device):
        return {"__device__": "cpu"}
    if isinstance(value, (list, tuple)):
        return [_spec(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": str(value)}
    return value


def _is_leaf(x: Any) -> bool:
    return isinstance(x, dict) and any(k.startswith("__") for k in x)


def build_value(spec: Any, generator: torch.Generator) -> Any:
    """Inverse of ``_spec``: fresh tensors (normal values; integer tensors zero, valid as indices)."""
    if isinstance(spec, list):
        return [build_value(v, generator) for v in spec]
    if not isinstance(spec, dict):
        return spec
    if "__tensor__" in spec:
        dtype = _DTYPES.get(spec["dtype"], torch.float32)
        shape, stride = spec["__tensor__"], spec["stride"]
        size = 1 + sum((s - 1) * st for s, st in zip(shape, stride) if s > 0) if all(s > 0 for s in shape) else 0
        base = torch.zeros(max(size, 1), dtype=dtype)
        if dtype.is_floating_point:
            base.normal_(generator=generator)
        return torch.as_strided(base, shape, stride)
    if "__dtype__" in spec:
        return _DTYPES[spec["__dtype__"]]
    if "__memory_format__" in spec:
        return getattr(torch, spec["__memory_format__"])
    if "__layout__" in spec:
        return getattr(torch, spec["__layout__"])
    if "__device__" in spec:
        return torch.device("cpu")
    if "__float__" in spec:
        return float(spec["__float__"])
    return spec


def resolve_op(qualified: str) -> Any:
    """``aten.convolution.default`` -> the OpOverload."""
    ns, name, overload = qualified.split(".")
    return getattr(getattr(getattr(torch.ops, ns), name), overload)


class KernelMode(CostMode):
    """``CostMode`` that also keeps a replayable description of every aten op call, views included."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, Any, Any, Any]] = []  # (qualified op, args spec, layer row or None, out shape)

    def _record(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        if getattr(func, "namespace", "aten") != "aten":
            return
        before = len(self.layers)
        super()._record(func, args, kwargs, out)
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if not outs:
            return
        row = self.layers[-1] if len(self.layers) > before else None
        spec = {"args": _spec(list(args)), "kwargs": {k: _spec(v) for k, v in kwargs.items()}}
        self.calls.append((f"aten.{func.overloadpacket.__name__}.{func._overloadname}", spec, row, list(outs[0].shape)))


def _tensor_shapes(spec: Any) -> list[list[int]]:
    out: list[list[int]] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict) and "__tensor__" in x:
            out.append(x["__tensor__"])
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)

    walk(spec)
    return out


def _conv_params(op: str, spec: dict[str, Any]) -> dict[str, float]:
    """Kernel size, stride, groups of a convolution call (aten.convolution's positional arguments)."""
    if "convolution" not in op:
        return {}
    a = spec["args"]
    w = a[1]["__tensor__"] if len(a) > 1 and isinstance(a[1], dict) else [0, 0, 1, 1]
    stride = a[3] if len(a) > 3 else [1]
    dilation = a[5] if len(a) > 5 else [1]
    groups = a[8] if len(a) > 8 else 1
    return {"k_h": w[2] if len(w) > 2 else 1, "k_w": w[3] if len(w) > 3 else 1, "stride": max(stride),
            "dilation": max(dilation), "groups": groups, "cin_per_group": w[1] if len(w) > 1 else 0}


def torch_kernels(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[list[Kernel], int]:
    """The kernels of one forward of ``module`` (deduplicated with counts) and the number of module calls."""
    kernels, module_calls, _ = traced_calls(module, inputs)
    return kernels, module_calls


def traced_calls(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[list[Kernel], int, list[int]]:
    """``torch_kernels`` and, for every op call of the forward in dispatch order, the index of its kernel."""
    weights = [(p, True) for p in module.parameters()] + [(b, False) for b in module.buffers()]
    stack = ModuleStack(module)
    calls = [0]
    handles = [m.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1)) for m in module.modules()]
    training = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        meta_inputs = tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, inputs)
        mode = KernelMode(stack, weights, False, meta=True)
        with torch.no_grad(), mode:
            module(*meta_inputs)
    finally:
        stack.remove()
        for h in handles:
            h.remove()
        for m, flag in training:
            m.training = flag
    found: dict[str, Kernel] = {}
    order: list[int] = []
    position: dict[str, int] = {}
    for op, spec, row, out_shape in mode.calls:
        key = json.dumps([op, spec], sort_keys=True)
        if key in found:
            found[key].count += 1
            order.append(position[key])
            continue
        position[key] = len(found)
        order.append(len(found))
        shapes = _tensor_shapes(spec)
        x = shape4(shapes[0] if shapes else [])
        y = shape4(out_shape)
        features = {
            "mult_adds": float(row.mult_adds) if row else 0.0,
            "elementwise_ops": float(row.elementwise_ops) if row else 0.0,
            "mem_access": float(row.mem_access) if row else 0.0,
            "in_n": x[0], "in_c": x[1], "in_h": x[2], "in_w": x[3],
            "out_n": y[0], "out_c": y[1], "out_h": y[2], "out_w": y[3],
            "in_numel": float(math.prod(shapes[0])) if shapes else 0.0,
            "out_numel": float(math.prod(out_shape)),
            "n_inputs": float(len(shapes)),
            **_conv_params(op, spec),
        }
        found[key] = Kernel(op=_family(op, spec), label=op, features=features, spec={"op": op, **spec})
    return list(found.values()), calls[0], order


def _family(op: str, spec: dict[str, Any]) -> str:
    """The regressor family of an aten op: the op name, with convolutions split into depthwise and the rest."""
    name = op.split(".")[1].rstrip("_")
    if name == "convolution":
        p = _conv_params(op, spec)
        return "convolution_dw" if p.get("groups", 1) > 1 and p.get("cin_per_group") == 1 else "convolution"
    return name


def replay_timer(spec: dict[str, Any], seed: int = 0,
                 evict: Callable[[], None] | None = None) -> Callable[[int], float]:
    """A batch timer calling the kernel's op alone on fresh tensors of its recorded shapes and strides; with
    ``evict``, each call after the caches were evicted and its first tensor argument read back (weights cold,
    input warm: ``latprof.predict.cold``), as a network meets it."""
    from latprof.measure.protocol import wall_clock_timer
    from latprof.predict.cold import cold_timer, reader

    g = torch.Generator().manual_seed(seed)
    op = resolve_op(spec["op"])
    args = build_value(spec["args"], g)
    kwargs = {k: build_value(v, g) for k, v in spec["kwargs"].items()}

    def call() -> Any:
        return op(*args, **kwargs)

    with torch.inference_mode():
        call()

    timer = wall_clock_timer(call) if evict is None else cold_timer(call, evict, reader(args))

    def run(n: int) -> float:
        with torch.inference_mode():
            return timer(n)

    return run


def block_input_shapes(module: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """(name, block, input shape) of a zoo network's ``blocks()``, found on meta tensors (nothing runs), as
    ``Workload.blocks`` finds them with a real forward."""
    named: list[tuple[str, nn.Module]] = list(module.blocks())  # type: ignore[operator]
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [m.register_forward_pre_hook(lambda _m, args, _n=n: shapes.setdefault(_n, tuple(args[0].shape)) and None)
             for n, m in named]
    try:
        torch_kernels(module, (torch.zeros(input_shape, device="meta"),))
    finally:
        for h in hooks:
            h.remove()
    return [(n, m, shapes[n]) for n, m in named if n in shapes]
