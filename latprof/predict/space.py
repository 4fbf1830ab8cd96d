"""The calibration space: small "cells" drawn from the building blocks the zoo networks are made of.

A cell is a stem, a chain of one to three zoo blocks (``latprof list blocks``: inverted residuals, MBConv with SE,
ShuffleNet V1/V2 units, ResNet units, IGCV3 and MicroNet blocks, ...) with sampled widths, kernel sizes, strides,
expansions and activations at a sampled resolution, or a classifier head. Ranges follow what the zoo spans (widths
8-2048, resolutions 224 down to 7, expansions 1-6, kernels 3-7); no zoo network is built or measured. A cell is
plain JSON, so a worker process rebuilds it exactly.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
from torch import nn

from latprof.errors import LatprofError
from latprof.workloads.layers import activation, conv_norm_act
from latprof.workloads.micronet import MicroHead, MicroStem

# Resolution -> (min, max) channels the zoo uses there (wider at lower resolution).
CHANNELS_AT = {112: (8, 96), 56: (12, 256), 28: (16, 512), 14: (32, 1024), 7: (64, 2048)}
RESOLUTIONS = (112, 56, 28, 14, 7)
# Cap on expanded widths (the zoo's widest: ResNet-50's 2048, MobileNet V2 x1.4's 2688 at 7x7).
MAX_EXPANDED = 2700
BLOCKS = ("inverted_residual", "mbconv", "fused_mbconv", "depthwise_separable", "resnet_basic", "resnet_bottleneck",
          "shufflenet_v1_unit", "shufflenet_v2_unit", "igcv3_block", "micronet_block_a", "micronet_block_b",
          "micronet_block_c", "conv_bn_relu")
CELL_TYPES = (*BLOCKS, "stem", "head")
STEM_RESOLUTIONS = (224, 224, 192, 160, 128)
STEM_CHANNELS = (8, 16, 24, 32, 48, 64)


def _channels(rng: random.Random, h: int, multiple: int = 4) -> int:
    lo, hi = CHANNELS_AT[min(CHANNELS_AT, key=lambda r: abs(r - h))]
    c = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return max(multiple, int(round(c / multiple)) * multiple)


def _block_kwargs(name: str, c: int, h: int, rng: random.Random,
                  fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sampled factory arguments for one zoo block with ``c`` input channels at resolution ``h``; ``fixed``:
    arguments given instead of drawn (``STRUCTURAL_KWARGS``: a neighbour's structure; widths follow its stride and
    groups)."""
    kw = _draw_block_kwargs(name, c, h, rng, fixed or {})
    kw.update({k: v for k, v in (fixed or {}).items() if k in kw and (k != "stride" or h > 7)})
    return kw


def _draw_block_kwargs(name: str, c: int, h: int, rng: random.Random, fixed: dict[str, Any]) -> dict[str, Any]:
    stride = fixed.get("stride", rng.choice((1, 1, 2))) if h > 7 else 1
    widen = rng.choice((1.0, 1.0, 1.5, 2.0))
    out = max(8, int(round(c * widen / 8)) * 8) if stride == 2 or rng.random() < 0.4 else c
    if name == "inverted_residual":
        e = rng.choice((1, 2, 3, 4, 6, 6))
        return dict(in_channels=c, out_channels=out, stride=stride, expansion=float(min(e, MAX_EXPANDED // c or 1)),
                    kernel_size=rng.choice((3, 3, 5, 7)), act=rng.choice(("relu6", "relu6", "relu", "hswish")))
    if name == "mbconv":
        e = rng.choice((3, 4, 6))
        return dict(in_channels=c, out_channels=out, stride=stride, expansion=float(min(e, MAX_EXPANDED // c or 1)),
                    kernel_size=rng.choice((3, 5)), se=rng.random() < 0.7, act=rng.choice(("hswish", "relu", "swish")))
    if name == "fused_mbconv":
        return dict(in_channels=c, out_channels=out, stride=stride, expansion=float(rng.choice((1, 4))),
                    kernel_size=3, se=False, act="swish")
    if name == "depthwise_separable":
        return dict(in_channels=c, out_channels=out, stride=stride, kernel_size=rng.choice((3, 3, 5)),
                    act=rng.choice(("relu", "relu6")))
    if name == "resnet_basic":
        return dict(in_channels=c, out_channels=out, stride=stride)
    if name == "resnet_bottleneck":
        mid = max(8, int(round(c / rng.choice((1, 2, 4)) / 8)) * 8)
        return dict(in_channels=c, mid_channels=min(mid, 512), out_channels=out, stride=stride)
    if name == "shufflenet_v1_unit":
        g = fixed.get("groups", rng.choice((3, 8)))
        unit = 4 * g
        cin = max(unit, c // unit * unit)
        # stride 2 concatenates the average-pooled input with the branch: twice the channels, as the zoo's stages
        return dict(in_channels=cin, out_channels=cin if stride == 1 else 2 * cin, stride=stride, groups=g)
    if name == "shufflenet_v2_unit":
        cin = max(8, c // 2 * 2)
        return dict(in_channels=cin, out_channels=cin if stride == 1 else max(cin, out // 2 * 2), stride=stride)
    if name == "igcv3_block":
        cin = max(8, c // 8 * 8)
        return dict(in_channels=cin, out_channels=max(8, out // 8 * 8), stride=stride, expansion=float(rng.choice((3, 6))),
                    groups=2)
    if name.startswith("micronet_block"):
        scale = rng.choice((1, 2, 3, 4, 6))
        base = {"micronet_block_a": (8, 12), "micronet_block_b": (16, 32), "micronet_block_c": (32, 32)}[name]
        return dict(in_channels=base[0] * scale, out_channels=base[1] * scale, stride=stride,
                    kernel_size=rng.choice((3, 5)))
    if name == "conv_bn_relu":
        return dict(in_channels=c, out_channels=out, kernel_size=rng.choice((1, 1, 3)), stride=stride)
    raise LatprofError(f"unknown calibration block {name!r}; valid: {', '.join(BLOCKS)}")


def sample_cell(rng: random.Random, cell_type: str | None = None, max_blocks: int = 3) -> dict[str, Any]:
    """One cell spec (plain JSON); ``cell_type`` picks the kind (a block name, ``stem`` or ``head``)."""
    kind = cell_type or rng.choice(CELL_TYPES)
    if kind == "stem":
        h = rng.choice(STEM_RESOLUTIONS)
        return {"type": "stem", "input": [1, 3, h, h], "out_channels": rng.choice(STEM_CHANNELS),
                "kernel_size": rng.choice((3, 3, 3, 7)), "act": rng.choice(("relu", "relu6", "hswish", "swish")),
                "maxpool": rng.random() < 0.3, "micro": rng.random() < 0.15}
    if kind == "head":
        h = rng.choice((7, 7, 7, 5, 6))
        c = _channels(rng, 7, 8) // rng.choice((1, 2))
        return {"type": "head", "input": [1, c, h, h], "conv_channels": rng.choice((0, 0, c * 2, 576, 960, 1280)),
                "hidden": rng.choice((0, 0, 1024, 1280, 640)), "act": rng.choice(("relu", "hswish", "swish")),
                "micro": rng.random() < 0.15}
    h = rng.choice(RESOLUTIONS)
    c = _channels(rng, h)
    blocks = []
    cc, hh = c, h
    for i in range(rng.randint(1, max_blocks)):
        name = kind if i == 0 else rng.choice(BLOCKS)
        kw = _block_kwargs(name, cc, hh, rng)
        if i == 0:
            c = int(kw.get("in_channels", c))
        elif int(kw.get("in_channels", cc)) != cc:
            break
        blocks.append({"name": name, "kwargs": kw})
        cc = int(kw.get("out_channels") or kw.get("in_channels"))
        hh = -(-hh // int(kw.get("stride", 1)))  # ceil: what a padded convolution of that stride gives
    return {"type": "chain", "input": [1, c, h, h], "blocks": blocks}


class _Head(nn.Module):
    def __init__(self, c: int, conv_channels: int, hidden: int, act: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if conv_channels:
            layers.append(conv_norm_act(c, conv_channels, 1, act=act))
            c = conv_channels
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        if hidden:
            layers += [nn.Linear(c, hidden), activation(act)]
            c = hidden
        layers.append(nn.Linear(c, 1000))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def build_cell(spec: dict[str, Any]) -> tuple[nn.Module, tuple[int, ...]]:
    """The module of a cell spec and its input shape (eval mode, seeded weights)."""
    from latprof.workloads import create_workload

    torch.manual_seed(0)
    shape = tuple(int(d) for d in spec["input"])
    if spec["type"] == "stem":
        if spec.get("micro"):
            module: nn.Module = MicroStem((2, 2) if spec["out_channels"] <= 16 else (3, 4))
        else:
            layers = [conv_norm_act(3, spec["out_channels"], spec["kernel_size"], 2, act=spec["act"])]
            if spec.get("maxpool"):
                layers.append(nn.MaxPool2d(3, 2, 1))
            module = nn.Sequential(*layers)
    elif spec["type"] == "head":
        if spec.get("micro"):
            module = MicroHead(shape[1], spec.get("hidden") or 640, 1000, 0.0)
        else:
            module = _Head(shape[1], spec["conv_channels"], spec["hidden"], spec["act"])
    else:
        parts = []
        for b in spec["blocks"]:
            w = create_workload(b["name"], **b["kwargs"])
            parts.append(w.module)
        module = nn.Sequential(*parts)
    return module.eval(), shape


def cell_type(spec: dict[str, Any]) -> str:
    """The kind a cell was drawn as (its first block's name, ``stem`` or ``head``)."""
    return spec["type"] if spec["type"] != "chain" else spec["blocks"][0]["name"]


# Block arguments that decide which kernels a block runs (a stride-2 ShuffleNet V1 unit's average pool, an SE
# gate, a grouped convolution): a neighbour keeps them and varies the widths.
STRUCTURAL_KWARGS = ("stride", "groups", "se", "act", "kernel_size")


def block_cells(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Each block of a chain cell as a one-block cell at the input it gets in the chain (a stem or head: itself).
    Every zoo block pads to keep the resolution, so a stride of 2 takes h to ceil(h / 2)."""
    if spec["type"] != "chain":
        return [spec]
    out, h = [], int(spec["input"][2])
    for b in spec["blocks"]:
        c = int(b["kwargs"].get("in_channels", spec["input"][1]))
        out.append({"type": "chain", "input": [1, c, h, h], "blocks": [b]})
        h = -(-h // int(b["kwargs"].get("stride", 1)))
    return out


def producing_blocks(spec: dict[str, Any], family: str) -> list[int]:
    """The blocks of a chain cell whose PyTorch eager kernels include ``family`` (traced on meta tensors, nothing
    runs); empty when none does, as for a family of another backend (ONNX Runtime's fused nodes)."""
    from latprof.predict.torch_kernels import torch_kernels

    found = []
    for i, cell in enumerate(block_cells(spec)):
        try:
            module, shape = build_cell(cell)
            kernels, _ = torch_kernels(module, (torch.zeros(shape, device="meta"),))
        except Exception:  # noqa: BLE001  (a block that does not build alone: not a producer we can use)
            continue
        if any(k.op == family for k in kernels):
            found.append(i)
    return found


def _neighbour(spec: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """``spec`` with the same structure (kind, strides, options) at another width and resolution (a block: its own
    or the next one up or down, within the widths the zoo uses there); a chain of one block (``mutate_cell`` picks
    it). Kept at its cell's resolution, a family first read at one stayed there: p21's ort-mobile channel splits
    were all read at 112x112 (38-130 us, past the L2), ShuffleNet V2 splits 28x28 to 7x7 maps (about 6.5 us), and
    its 13 splits were predicted at 0.61 ms against 0.085 ms profiled."""
    if spec["type"] == "stem":
        h = rng.choice(STEM_RESOLUTIONS)
        return {**spec, "input": [1, 3, h, h], "out_channels": rng.choice(STEM_CHANNELS)}
    if spec["type"] == "head":
        c = max(8, int(round(spec["input"][1] * rng.uniform(0.7, 1.4) / 8)) * 8)
        h = rng.choice((7, 7, 7, 5, 6))
        return {**spec, "input": [1, c, h, h]}
    first = spec["blocks"][0]
    h, c = spec["input"][2], spec["input"][1]
    h = rng.choice([r for r in RESOLUTIONS if h / 2 <= r <= h * 2])  # this resolution or the next one up or down
    lo, hi = CHANNELS_AT[min(CHANNELS_AT, key=lambda r: abs(r - h))]
    c = min(max(c * rng.uniform(0.7, 1.4), lo), hi)
    structure = {k: first["kwargs"][k] for k in STRUCTURAL_KWARGS if k in first["kwargs"]}
    kw = _block_kwargs(first["name"], max(8, int(round(c / 4)) * 4), h, rng, structure)
    return {"type": "chain", "input": [1, int(kw.get("in_channels", c)), h, h],
            "blocks": [{"name": first["name"], "kwargs": kw}]}


def mutate_cell(spec: dict[str, Any], rng: random.Random, blocks: list[int] | None = None) -> dict[str, Any]:
    """A neighbour of a cell: the same kind and structure (strides, groups, SE, activation, kernel size; a stem's
    max-pool) at a nearby width (adaptive sampling near errors, and more samples of a scarce kernel family). Of a
    chain, a neighbour of one of its blocks at that block's input: one of ``blocks`` (indices) when given, else any.
    Always the first block, as before, repeated a lone 1x1 convolution in 4 of one calibration's 45 cells while the
    scarce family it was meant to sample (a squeeze-excite's hard sigmoid) sat in the chain's second block."""
    parts = block_cells(spec)
    spec = parts[rng.choice([i for i in blocks or [] if i < len(parts)] or range(len(parts)))]
    for _ in range(10):
        new = _neighbour(spec, rng)
        if valid_cell(new):
            return new
    return sample_cell(rng, cell_type(spec))


def coverage_cells(rng: random.Random) -> list[dict[str, Any]]:
    """One cell of every structural option the space has, measured in the first rounds: stems with a max-pool, plain
    and MicroNet's; heads with a hidden layer, with a convolution and MicroNet's; every block at stride 2 and at
    stride 1. Drawn at random, a stem with a max-pool is 2% of cells: a 900 s calibration (135 cells) had none, and
    eager CPU max-pool is slow (2.3 ms of ShuffleNet's 2.8 ms stem), so every network with one was predicted 15-20%
    low. A stride-1 ShuffleNet V2 unit is the only cell that splits a feature map by channels; p20's ort-mobile
    calibration drew its ShuffleNet V2 cells as neighbours of the stride-2 coverage cell, read only the small splits
    of MicroNet blocks, and predicted the ShuffleNet V2 networks 31-61% high."""
    cells = [
        {**sample_cell(rng, "stem"), "maxpool": True, "micro": False},
        {**sample_cell(rng, "stem"), "maxpool": False, "micro": False},
        {**sample_cell(rng, "stem"), "micro": True},
        {**sample_cell(rng, "head"), "hidden": 1280, "micro": False},
        {**sample_cell(rng, "head"), "conv_channels": 960, "hidden": 0, "micro": False},
        {**sample_cell(rng, "head"), "micro": True},
    ]
    for stride in (2, 1):
        for name in BLOCKS:
            for _ in range(20):
                h = rng.choice(RESOLUTIONS[:-1])  # stride 2 needs more than 7x7
                kw = _block_kwargs(name, _channels(rng, h), h, rng, fixed={"stride": stride})
                spec = {"type": "chain", "input": [1, int(kw.get("in_channels", 8)), h, h],
                        "blocks": [{"name": name, "kwargs": kw}]}
                if valid_cell(spec):
                    cells.append(spec)
                    break
    return cells


def valid_cell(spec: dict[str, Any]) -> bool:
    """Whether a cell builds and runs on its input (checked on meta tensors, no arithmetic)."""
    try:
        module, shape = build_cell(spec)
        with torch.no_grad():
            module.to("meta")(torch.zeros(shape, device="meta"))
        return True
    except Exception:  # noqa: BLE001  (a combination a block rejects)
        return False


def draw_cells(rng: random.Random, n: int, weights: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """``n`` valid cells, cell kinds drawn by ``weights`` (uniform when None)."""
    kinds = list(CELL_TYPES)
    w = [max(1e-3, (weights or {}).get(k, 1.0)) for k in kinds]
    out: list[dict[str, Any]] = []
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        spec = sample_cell(rng, rng.choices(kinds, w)[0])
        if valid_cell(spec):
            out.append(spec)
    return out


# ------------------------------------------------------------------ chains (cache residency)
# Footprints the chains are drawn around (log2 bytes): 2 MiB to 128 MiB, from twice a 1 MiB L2 to four times a
# 32 MiB last-level cache (the zoo's largest network, ResNet-50, carries about 100 MiB of weights).
CHAIN_FOOTPRINT_LOG2 = tuple(range(21, 28))
CHAIN_BLOCKS = (4, 16)  # how many blocks a chain has
# Where a chain starts: as often at the high resolutions a network starts at (big activations, small weights) as
# at the low ones (weights dominate). Chains starting at 56x56 and below read near cold from about 14 MiB on, where
# the zoo's networks of those footprints read near warm; starting at 112 too did not change that (docs/predict.md,
# "Measured").
CHAIN_START_RESOLUTIONS = (112, 112, 56, 56, 28, 14, 7)
MAX_CHAIN_MULT_ADDS = 1.5e9  # a chain's forward stays within tens of milliseconds on one core


def chain_size(spec: dict[str, Any]) -> tuple[float, float]:
    """(footprint bytes, mult-adds) of a chain, from a build on the meta device (no weights allocated)."""
    from latprof.predict.residency import footprint_bytes
    from latprof.predict.torch_kernels import torch_kernels

    with torch.device("meta"):
        module, shape = build_cell(spec)
    kernels, _ = torch_kernels(module, (torch.zeros(shape, device="meta"),))
    return footprint_bytes(module, kernels), sum(k.count * k.features.get("mult_adds", 0.0) for k in kernels)


def chain_estimate(spec: dict[str, Any]) -> tuple[float, float]:
    """``chain_size`` estimated from one plain forward on the meta device instead of the aten tracer (the draw of a
    chain tries up to 40 candidates, in the parent between the calibration's units; drawing 7 chains took 6.7 s
    instead of 9.1 s): weights and buffers once, the largest output of any module twice, and the mult-adds of its
    convolutions and linear layers (what the tracer counts for them)."""
    from latprof.predict.residency import activation_bytes, weight_bytes

    with torch.device("meta"):
        module, shape = build_cell(spec)
    largest, mult_adds = 0.0, 0.0

    def hook(m: nn.Module, inputs: Any, out: Any) -> None:
        nonlocal largest, mult_adds
        if isinstance(out, torch.Tensor):
            largest = max(largest, float(out.numel()))
            if isinstance(m, nn.Conv2d):
                mult_adds += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            elif isinstance(m, nn.Linear):
                mult_adds += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.no_grad():
            module(torch.zeros(shape, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return weight_bytes(module) + activation_bytes([{"out_numel": largest}]), mult_adds


def sample_chain(rng: random.Random, target_log2: float | None = None, tries: int = 40) -> dict[str, Any]:
    """A chain of 4-16 of the zoo's blocks, one feeding the next (strides included), whose footprint lies near
    ``2**target_log2`` bytes (the closest of ``tries`` draws within the mult-adds cap). Timed in a loop as a network
    is, chains are what the cache-residency curve is fitted on (``latprof.predict.residency``)."""
    best: tuple[float, dict[str, Any]] | None = None
    for _ in range(tries):
        h = rng.choice(CHAIN_START_RESOLUTIONS)
        c = _channels(rng, h)
        blocks: list[dict[str, Any]] = []
        cc, hh = c, h
        for _ in range(rng.randint(*CHAIN_BLOCKS)):
            for _ in range(6):  # a block that takes this width as it is
                name = rng.choice(BLOCKS)
                kw = _block_kwargs(name, cc, hh, rng)
                if not blocks:
                    c = cc = int(kw.get("in_channels", cc))
                if int(kw.get("in_channels", cc)) == cc and int(kw.get("out_channels") or cc) <= MAX_EXPANDED:
                    blocks.append({"name": name, "kwargs": kw})
                    cc = int(kw.get("out_channels") or kw.get("in_channels"))
                    hh = -(-hh // int(kw.get("stride", 1)))  # ceil: what a padded convolution of that stride gives
                    break
        spec = {"type": "chain", "input": [1, c, h, h], "blocks": blocks, "residency": True}
        if not blocks:
            continue
        try:
            footprint, mult_adds = chain_estimate(spec)
        except Exception:  # noqa: BLE001  (a combination a block rejects: draw again)
            continue
        if mult_adds > MAX_CHAIN_MULT_ADDS:
            continue
        miss = 0.0 if target_log2 is None else abs(math.log2(footprint) - target_log2)
        if best is None or miss < best[0]:
            best = (miss, spec)
        if miss <= 0.5:
            break
    if best is None:
        raise LatprofError("no calibration chain within the mult-adds cap could be drawn")
    return best[1]
