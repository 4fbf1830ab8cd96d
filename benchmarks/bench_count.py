"""Counting speed and agreement: latprof's count vs fvcore ``FlopCountAnalysis`` vs torch ``FlopCounterMode``.

Usage::

    PYTHONPATH=$PWD python benchmarks/bench_count.py [--repeats 5] [--networks resnet50,conv_bn_relu,...]

For every network (by registry name; names not registered are skipped with a note) each counter runs once to
warm up, then ``--repeats`` times; the table gives the median wall time per count (warm, in this process) and
each tool's headline number. The second table lists, per op family, where the three disagree on multiply-adds
and why. fvcore is a benchmark-only dependency (``pip install fvcore``); without it its columns are empty.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latprof.console import stdout, table
from latprof.cost import UnsupportedOpWarning, count_model
from latprof.errors import LatprofError

DEFAULT_NETWORKS = ("resnet50", "resnet18", "mobilenet_v2_x1_0", "mobilenet_v3_large", "shufflenet_v2_x1_0",
                    "efficientnet_b0", "conv_bn_relu", "functional_ops")

#: fvcore / FlopCounterMode op names -> the family latprof reports them under.
FAMILY = {
    "conv": "conv", "convolution": "conv", "_convolution": "conv", "conv2d": "conv",
    "addmm": "matmul", "mm": "matmul", "bmm": "matmul", "linear": "matmul", "matmul": "matmul", "baddbmm": "matmul",
    "einsum": "matmul", "batch_norm": "batch_norm", "native_batch_norm": "batch_norm",
    "adaptive_avg_pool2d": "pool", "_adaptive_avg_pool2d": "pool", "mean": "pool",
    "upsample_nearest2d": "interpolate", "upsample_bilinear2d": "interpolate",
    "group_norm": "norm", "layer_norm": "norm", "native_group_norm": "norm", "native_layer_norm": "norm",
}
WHY = {
    "conv": "FlopCounterMode reports 2 flops per multiply-add (its figure is halved here); all three agree",
    "matmul": "FlopCounterMode reports 2 flops per multiply-add (halved here); bias adds are free in all three",
    "batch_norm": "fvcore adds BN's per-element work to its total; latprof counts it as elementwise_ops "
                  "(2/element, 0 with --fold-bn); FlopCounterMode ignores it",
    "pool": "fvcore adds adaptive pooling's input elements to its total; latprof: elementwise_ops; "
            "FlopCounterMode ignores it",
    "interpolate": "fvcore counts upsampling in its total; latprof: elementwise_ops; FlopCounterMode ignores it",
    "norm": "fvcore counts group/layer norm in its total; latprof: elementwise_ops; FlopCounterMode ignores it",
}


class FunctionalOps(nn.Module):
    """A ShuffleNet V2 unit written with functional ops: split, cat, x + y, channel shuffle, hardswish, matmul."""

    def __init__(self, c: int = 48) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.pw1 = nn.Conv2d(c // 2, c // 2, 1, bias=False)
        self.dw = nn.Conv2d(c // 2, c // 2, 3, padding=1, groups=c // 2, bias=False)
        self.pw2 = nn.Conv2d(c // 2, c // 2, 1, bias=False)
        self.proj = nn.Parameter(torch.randn(c, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        a, b = x.chunk(2, dim=1)
        b = F.hardswish(self.pw2(self.dw(F.relu(self.pw1(b))))) + b
        x = torch.cat([a, b], 1)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        x = F.interpolate(x, scale_factor=0.5, mode="bilinear")
        return torch.matmul(x.mean((2, 3)), self.proj)


def build(name: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]] | None:
    if name == "functional_ops":
        return FunctionalOps().eval(), (torch.randn(1, 3, 224, 224),)
    from latprof.workloads import create_workload

    try:
        wl = create_workload(name)
    except LatprofError as exc:
        print(f"note: skipping {name}: {exc}", file=sys.stderr)
        return None
    return wl.module, wl.make_inputs()


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    result = fn()  # warm-up (lazy imports, tracer caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def latprof_count(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsupportedOpWarning)
        report = count_model(model, inputs)
    fam: dict[str, float] = {}
    from latprof.cost.rules import FAMILY as LATPROF_FAMILY

    for row in report.layers:
        if row.mult_adds:
            key = LATPROF_FAMILY.get(row.op, row.op)
            fam[key] = fam.get(key, 0) + row.mult_adds
    return {"total": report.totals["mult_adds"], **fam}


def fvcore_count(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, float]:
    from fvcore.nn import FlopCountAnalysis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fca = FlopCountAnalysis(model, inputs).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_op = fca.by_operator()
    fam: dict[str, float] = {}
    for op, v in by_op.items():
        fam[FAMILY.get(op, op)] = fam.get(FAMILY.get(op, op), 0) + v
    return {"total": fca.total(), **fam}


def torch_count(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, float]:
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False)
    with torch.no_grad(), mode:
        model(*inputs)
    fam: dict[str, float] = {}
    for op, v in mode.get_flop_counts().get("Global", {}).items():
        key = FAMILY.get(op.__name__, op.__name__)
        fam[key] = fam.get(key, 0) + v / 2
    return {"total": mode.get_total_flops() / 2, **fam}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--networks", default=",".join(DEFAULT_NETWORKS))
    args = parser.parse_args(argv)
    try:
        import fvcore  # noqa: F401

        have_fvcore = True
    except ImportError:
        have_fvcore = False
        print("note: fvcore is not installed (pip install fvcore); its columns stay empty", file=sys.stderr)
    torch.set_grad_enabled(False)
    tools: dict[str, Callable[..., dict[str, float]]] = {"latprof": latprof_count, "torch FlopCounterMode": torch_count}
    if have_fvcore:
        tools["fvcore"] = fvcore_count
    speed_rows, diff_rows = [], []
    for name in [n.strip() for n in args.networks.split(",") if n.strip()]:
        built = build(name)
        if built is None:
            continue
        model, inputs = built
        model.eval()
        times, counts = {}, {}
        for tool, fn in tools.items():
            times[tool], counts[tool] = timed(lambda fn=fn: fn(model, inputs), args.repeats)
        speed_rows.append([name, "x".join(map(str, inputs[0].shape)),
                           times["latprof"] * 1e3, times.get("fvcore", float("nan")) * 1e3,
                           times["torch FlopCounterMode"] * 1e3, counts["latprof"]["total"],
                           counts.get("fvcore", {}).get("total"), counts["torch FlopCounterMode"]["total"]])
        families = sorted({k for c in counts.values() for k in c if k != "total"})
        for fam in families:
            vals = [counts[t].get(fam, 0) for t in tools]
            if len(set(vals)) > 1:
                diff_rows.append([name, fam, counts["latprof"].get(fam, 0), counts.get("fvcore", {}).get(fam),
                                  counts["torch FlopCounterMode"].get(fam, 0), WHY.get(fam, "")])
    stdout.print(table(f"Counting time, median of {args.repeats} warm runs (ms) and mult_adds",
                       ["network", "input", "latprof ms", "fvcore ms", "FlopCounterMode ms", "latprof mult_adds",
                        "fvcore total", "FlopCounterMode flops/2"], speed_rows))
    stdout.print(table("Where the counters disagree (per op family, multiply-adds)",
                       ["network", "family", "latprof", "fvcore", "FlopCounterMode/2", "why"], diff_rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
