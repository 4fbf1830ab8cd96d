"""Trace a forward pass at the aten dispatch level and charge every op by the rules in ``latprof.cost.rules``.

Dispatch level (below autograd, after composite ops are decomposed) sees what really runs: functional ops
(``x + y``, ``torch.cat``), the ``clone`` a ``contiguous()`` becomes, ``addmm`` behind ``nn.Linear``, and views as
view ops, which move no data. Forward pre/post hooks keep a module stack so each op is charged to the module path
that issued it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from latprof.cost.report import LayerCost
from latprof.cost.rules import FREE_OPS, OpCall, OpCost, lookup

ROOT = "(root)"


def distinct_elements(t: torch.Tensor) -> int:
    """Elements a read really touches: a broadcast (stride-0) dimension is read once, not per repeat."""
    if t.numel() == 0:
        return 0
    return math.prod(int(s) for s, st in zip(t.shape, t.stride(), strict=True) if st != 0)


def _tensors(obj: Any) -> list[torch.Tensor]:
    return [t for t in tree_leaves(obj) if isinstance(t, torch.Tensor)]


class ModuleStack:
    """Forward pre/post hooks on every submodule: ``current`` is the path of the innermost running module."""

    def __init__(self, module: nn.Module) -> None:
        self.stack: list[str] = []
        self._handles = []
        for name, sub in module.named_modules():
            path = name or ROOT
            self._handles.append(sub.register_forward_pre_hook(lambda *_a, _p=path: self.stack.append(_p)))
            self._handles.append(sub.register_forward_hook(lambda *_a, _p=path: self._pop(_p), always_call=True))

    def _pop(self, path: str) -> None:
        if self.stack and self.stack[-1] == path:
            self.stack.pop()

    @property
    def current(self) -> str:
        return self.stack[-1] if self.stack else ROOT

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class CostMode(TorchDispatchMode):
    """Records one ``LayerCost`` per non-view aten op; collects op names that have no rule."""

    def __init__(
        self, modules: ModuleStack, weights: Iterable[tuple[torch.Tensor, bool]], fold_bn: bool, meta: bool = True
    ) -> None:
        super().__init__()
        self.modules = modules
        self.meta = meta
        self._meta_of: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.fold_bn = fold_bn
        self.layers: list[LayerCost] = []
        self.unsupported: dict[str, None] = {}
        # id(tensor) -> (base weight tensor, is_parameter); views of weights are added as they appear.
        self._weights: dict[int, tuple[torch.Tensor, bool]] = {id(t): (t, p) for t, p in weights}
        self._keep: list[torch.Tensor] = []  # keeps weight views alive so their ids stay unique
        self._counted: set[int] = set()
        self._last_conv: tuple[LayerCost, torch.Tensor, bool] | None = None

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # The mode never compiles; not wrapping it in dynamo.disable spares a 3 s import of torch._dynamo.
        return False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self.meta:  # run on shapes only; rows are still built from the original arguments (weight identity)
            margs, mkwargs = tree_map(self._to_meta, (args, kwargs))
            out = func(*margs, **mkwargs)
        else:
            out = func(*args, **kwargs)
        if getattr(func, "namespace", "aten") == "aten":
            self._record(func, args, kwargs, out)
        return out

    def _to_meta(self, t: Any) -> Any:
        """Meta twin of a real tensor (weights, constants made inside forward), cached: no data, no arithmetic."""
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return t
        hit = self._meta_of.get(id(t))
        if hit is None:
            hit = (t, t.to("meta"))
            self._meta_of[id(t)] = hit
        return hit[1]

    def _record(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        outputs = _tensors(out)
        if not outputs:
            return
        name = func.overloadpacket.__name__
        inputs = _tensors((args, kwargs))
        if func.is_view or name in FREE_OPS:
            base = self._weights.get(id(inputs[0])) if inputs else None
            if base is not None:
                for o in outputs:
                    self._weights[id(o)] = base
                    self._keep.append(o)
            return
        handler, family = lookup(name)
        call = OpCall(name, args, kwargs, inputs, outputs)
        if handler is None:
            self.unsupported.setdefault(name, None)
            cost = OpCost()
        else:
            cost = handler(call)
        if family == "batch_norm" and self.fold_bn and self._fold_into_conv(inputs[0]):
            self.layers.append(LayerCost(self.modules.current, f"{name} (folded)", params=self._params(inputs),
                                         output_shape=list(outputs[0].shape)))
            self._last_conv = None
            return
        row = self._row(name, call, cost)
        self.layers.append(row)
        self._last_conv = (row, outputs[0], len(inputs) > 2) if family == "conv" else None

    def _params(self, inputs: list[torch.Tensor]) -> int:
        """Parameters this op reads for the first time (each parameter counted once per model)."""
        n = 0
        for t in inputs:
            w = self._weights.get(id(t))
            if w is not None and w[1] and id(w[0]) not in self._counted:
                self._counted.add(id(w[0]))
                n += int(w[0].numel())
        return n

    def _row(self, name: str, call: OpCall, cost: OpCost) -> LayerCost:
        reads = call.inputs if cost.reads is None else cost.reads
        writes = call.outputs if cost.writes is None else cost.writes
        seen: set[int] = set()
        elems = nbytes = 0
        for t in reads:
            if id(t) in seen:
                continue
            seen.add(id(t))
            n = distinct_elements(t)
            elems += n
            nbytes += n * t.element_size()
        for t in writes:
            n = int(t.numel())
            elems += n
            nbytes += n * t.element_size()
        return LayerCost(self.modules.current, name, int(cost.mult_adds), int(cost.elementwise_ops), elems, nbytes,
                         self._params(call.inputs), list(call.outputs[0].shape))

    def _fold_into_conv(self, bn_input: torch.Tensor) -> bool:
        """Fold a BN that directly follows the conv producing its input, as inference runtimes do: the BN costs
        nothing and the conv gains a bias (read once) if it had none."""
        if self._last_conv is None or self._last_conv[1] is not bn_input:
            return False
        conv_row, conv_out, had_bias = self._last_conv
        if not had_bias:
            channels = int(conv_out.shape[1]) if conv_out.dim() > 1 else 1
            conv_row.mem_access += channels
            conv_row.mem_bytes += channels * conv_out.element_size()
        return True
