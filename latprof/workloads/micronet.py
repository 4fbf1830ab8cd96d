"""MicroNet (Li et al., ICCV 2021): Micro-Factorized convolutions, Dynamic Shift-Max, micro-blocks and M0–M3.

The networks follow the official release (liyunsheng13/micronet: ``backbone/micronet.py``, ``microconfig.py`` and
the ``eval_micronet_m*.sh`` settings) layer for layer, so parameter counts match it exactly. The official code tiles
the network differently from the paper's Figure 3: its units are

* ``MicroBlockA`` (rows with no first pointwise conv): Micro-Factorized depthwise conv that expands channels →
  Dynamic Shift-Max → shuffle → group 1×1 conv that squeezes → Dynamic Shift-Max (J=1) → shuffle. This is the
  paper's Micro-Block-A.
* ``MicroBlockC`` (all later rows): group 1×1 expand → DSM → shuffle → Micro-Factorized depthwise (k×1, 1×k) →
  DSM → shuffle → group 1×1 squeeze → DSM (J=1) → shuffle, with an identity shortcut when shapes match. Two
  consecutive units' squeeze + expand form one Micro-Factorized pointwise conv (P·Φ·Qᵀ), the paper's Micro-Block-C
  with the block boundary moved into the middle of its pointwise conv.
* ``MicroPointwise`` (last row): group 1×1 expand → DSM (J=1).

The registered ``micronet_block_b`` is the paper's Micro-Block-B (depthwise expand, then a *full* Micro-Factorized
pointwise conv: squeeze and expand). In the official networks it is the seam between the last A unit and the first
C unit, so the networks below do not instantiate it separately.

For the claim experiments (``kernels/``): ``micro_factorized_pointwise`` and ``micro_depthwise`` time each
Micro-Factorized conv against its dense counterpart, and ``micronet_block_c(act=...)`` swaps every Dynamic Shift-Max
of the block for ReLU or h-swish, nothing else changed.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from latprof.workloads.layers import (NUM_CLASSES, ChannelShuffle, SequentialNetwork, activation, channels_input,
                                      conv_norm_act, make_divisible)
from latprof.workloads.registry import register_networks, register_workload

Row = tuple[int, int, int, int, int, int, int, int, int, int, int, int, int, int, int]


def _rows(*table: str) -> tuple[Row, ...]:
    """Rows of the official config, each written as its 15 numbers separated by spaces."""
    return tuple(tuple(int(v) for v in line.split()) for line in table)  # type: ignore[return-value]


# Official per-row config, liyunsheng13/micronet backbone/microconfig.py, one row a string of 15 numbers:
#   s n   c k e1 e2 g1 g2 c3 g3 g4 y1 y2 y3 r
# s stride, n repeats, c out channels, k kernel, (e1, e2) dw_expand, g1 pw1_groups (0: a Micro-Block-A row),
# g2 shift_groups, c3 pw2_out (0 marks the last row), g3 pw2_groups, g4 pw2_shift_groups, (y1, y2, y3) dsm
# (J of the 3 activations; 0 = ReLU6 or none), r reduction multiplier.
MICRONET_ROWS: dict[str, tuple[Row, ...]] = {
    "m0": _rows(
        "2 1   8 3 2 2  0  4   8  2  2 2 0 1 1",
        "2 1  12 3 2 2  0  8  12  4  4 2 2 1 1",
        "2 1  16 5 2 2  0 12  16  4  4 2 2 1 1",
        "1 1  32 5 1 4  4  4  32  4  4 2 2 1 1",
        "2 1  64 5 1 4  8  8  64  8  8 2 2 1 1",
        "1 1  96 3 1 4  8  8  96  8  8 2 2 1 2",
        "1 1 384 3 1 4 12 12   0  0  0 2 2 1 2",
    ),
    "m1": _rows(
        "2 1   8 3 2 2  0  6   8  2  2 2 0 1 1",
        "2 1  16 3 2 2  0  8  16  4  4 2 2 1 1",
        "2 1  16 5 2 2  0 16  16  4  4 2 2 1 1",
        "1 1  32 5 1 6  4  4  32  4  4 2 2 1 1",
        "2 1  64 5 1 6  8  8  64  8  8 2 2 1 1",
        "1 1  96 3 1 6  8  8  96  8  8 2 2 1 2",
        "1 1 576 3 1 6 12 12   0  0  0 2 2 1 2",
    ),
    "m2": _rows(
        "2 1  12 3 2 2  0  8  12  4  4 2 0 1 1",
        "2 1  16 3 2 2  0 12  16  4  4 2 2 1 1",
        "1 1  24 3 2 2  0 16  24  4  4 2 2 1 1",
        "2 1  32 5 1 6  6  6  32  4  4 2 2 1 1",
        "1 1  32 5 1 6  8  8  32  4  4 2 2 1 2",
        "1 1  64 5 1 6  8  8  64  8  8 2 2 1 2",
        "2 1  96 5 1 6  8  8  96  8  8 2 2 1 2",
        "1 1 128 3 1 6 12 12 128  8  8 2 2 1 2",
        "1 1 768 3 1 6 16 16   0  0  0 2 2 1 2",
    ),
    "m3": _rows(
        "2 1  16 3 2 2  0 12  16  4  4 0 2 0 1",
        "2 1  24 3 2 2  0 16  24  4  4 0 2 0 1",
        "1 1  24 3 2 2  0 24  24  4  4 0 2 0 1",
        "2 1  32 5 1 6  6  6  32  4  4 0 2 0 1",
        "1 1  32 5 1 6  8  8  32  4  4 0 2 0 2",
        "1 1  64 5 1 6  8  8  48  8  8 0 2 0 2",
        "1 1  80 5 1 6  8  8  80  8  8 0 2 0 2",
        "1 1  80 5 1 6 10 10  80  8  8 0 2 0 2",
        "2 1 120 5 1 6 10 10 120 10 10 0 2 0 2",
        "1 1 120 5 1 6 12 12 120 10 10 0 2 0 2",
        "1 1 144 3 1 6 12 12 144 12 12 0 2 0 2",
        "1 1 864 3 1 6 12 12   0  0  0 0 2 0 2",
    ),
}


# stem groups (g1, g2) → g1*g2 stem channels; head width; dropout; DSM init (a1, a2), (b1, b2)
MICRONET_SETTINGS: dict[str, dict[str, Any]] = {
    "m0": {"stem": (2, 2), "head": 640, "dropout": 0.05, "init_a": (1.0, 1.0), "init_b": (0.0, 0.0)},
    "m1": {"stem": (3, 2), "head": 960, "dropout": 0.05, "init_a": (1.0, 1.0), "init_b": (0.0, 0.0)},
    "m2": {"stem": (4, 2), "head": 1024, "dropout": 0.1, "init_a": (1.0, 1.0), "init_b": (0.0, 0.0)},
    "m3": {"stem": (4, 3), "head": 1024, "dropout": 0.1, "init_a": (1.0, 0.5), "init_b": (0.0, 0.5)},
}
BASE_REDUCTION = 8
ACT_MAX = 2.0
LAST_INIT_A = (1.0, 0.0)
LAST_INIT_B = (0.0, 0.0)


def micro_factorized_groups(channels: int, ratio: int) -> int:
    """The paper's group count G = sqrt(C/R), moved to the nearest divisor of both C and C/R."""
    squeezed = max(1, channels // ratio)
    target = math.sqrt(channels / ratio)
    divisors = [g for g in range(1, squeezed + 1) if channels % g == 0 and squeezed % g == 0]
    return min(divisors, key=lambda g: (abs(g - target), g))


def shift_index(channels: int, groups: int) -> torch.Tensor:
    """Source channel of each output channel of the DSM shift: next group, next channel within the group (circular)."""
    if groups < 1 or channels % groups:
        raise ValueError(f"Dynamic Shift-Max: {channels} channels do not split into {groups} groups")
    per = channels // groups
    g = (torch.arange(groups) + 1) % groups
    c = (torch.arange(per) + 1) % per
    return (g[:, None] * per + c[None, :]).reshape(-1)


class DynamicShiftMax(nn.Module):
    """Dynamic Shift-Max: out = max_j (a_j·x + b_j·x₂), x₂ = x shifted by one group and one channel.

    The 2J coefficients per channel come from avgpool → linear → ReLU → linear → hard-sigmoid rescaled to
    [-ACT_MAX, ACT_MAX] plus the init offsets. J=1 drops the max. Its own module so cost models can attribute the
    element-wise multiply-adds (J×2 per output element plus J−1 max) to it by module path.
    """

    def __init__(self, channels: int, groups: int, j: int = 2, reduction: int = 8,
                 init_a: tuple[float, float] = (1.0, 1.0), init_b: tuple[float, float] = (0.0, 0.0),
                 act_max: float = ACT_MAX) -> None:
        super().__init__()
        if j not in (1, 2):
            raise ValueError(f"Dynamic Shift-Max J must be 1 or 2, got {j}")
        self.channels, self.groups, self.j = channels, groups, j
        self.init_a, self.init_b, self.act_max = tuple(init_a), tuple(init_b), act_max
        squeeze = max(4, make_divisible(channels // reduction, 4))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Flatten(1), nn.Linear(channels, squeeze), nn.ReLU(inplace=True),
                                nn.Linear(squeeze, channels * 2 * j), nn.Hardsigmoid())
        self.register_buffer("index", shift_index(channels, groups), persistent=False)

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 2J·C, 1, 1] coefficients in [-act_max, act_max] before the init offsets."""
        y = self.fc(self.pool(x))
        return ((y - 0.5) * (2 * self.act_max)).view(x.shape[0], -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coef = self.coefficients(x)
        x2 = x[:, self.index]
        if self.j == 1:
            a1, b1 = coef.split(self.channels, 1)
            return x * (a1 + self.init_a[0]) + x2 * (b1 + self.init_b[0])
        a1, b1, a2, b2 = coef.split(self.channels, 1)
        z1 = x * (a1 + self.init_a[0]) + x2 * (b1 + self.init_b[0])
        z2 = x * (a2 + self.init_a[1]) + x2 * (b2 + self.init_b[1])
        return torch.max(z1, z2)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}, J={self.j}"


def _group_pointwise(cin: int, cout: int, groups: int) -> nn.Sequential:
    if cin % groups or cout % groups:
        raise ValueError(f"group 1×1 conv {cin}→{cout} channels does not divide into groups={groups}")
    return conv_norm_act(cin, cout, 1, groups=groups, act=None)


class MicroDepthwise(nn.Module):
    """Micro-Factorized depthwise conv: k×1 depthwise (×e1 channels) → BN → 1×k depthwise (×e2 channels) → BN."""

    def __init__(self, channels: int, expand: tuple[int, int] = (1, 1), kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        e1, e2 = expand
        mid, out = channels * e1, channels * e1 * e2
        pad = kernel_size // 2
        self.conv = nn.Sequential(
            nn.Conv2d(channels, mid, (kernel_size, 1), (stride, 1), (pad, 0), groups=channels, bias=False),
            nn.BatchNorm2d(mid),
            nn.Conv2d(mid, out, (1, kernel_size), (1, stride), (0, pad), groups=mid, bias=False),
            nn.BatchNorm2d(out),
        )
        self.out_channels = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _activation(channels: int, j: int, groups: int, reduction: int, init_a: tuple[float, float],
                init_b: tuple[float, float], act: str = "dsm") -> nn.Module:
    """DSM with J = j, or ReLU6 where the config says 0 (the official code's switch); ``act`` other than ``dsm``
    puts that activation where a DSM would be (the activation experiment)."""
    if j == 0:
        return nn.ReLU6(inplace=True)
    if act != "dsm":
        return activation(act)
    return DynamicShiftMax(channels, groups, j, reduction, init_a, init_b)


def _squeeze(hidden: int, out_channels: int, groups: tuple[int, int], dsm: int, reduction: int,
             act: str = "dsm") -> list[nn.Module]:
    """The end of Micro-Blocks A and C: group 1×1 squeeze (groups[0]) → [DSM(J=1)] → shuffle(groups[1]), then,
    after a DSM, shuffle(out/2) when the channels are even (the official code's switches)."""
    layers: list[nn.Module] = [_group_pointwise(hidden, out_channels, groups[0])]
    if dsm:
        layers.append(_activation(out_channels, 1, groups[1], reduction, LAST_INIT_A, LAST_INIT_B, act))
    layers.append(ChannelShuffle(groups[1]))
    if dsm and out_channels % 2 == 0:
        layers.append(ChannelShuffle(out_channels // 2))
    return layers


class MicroUnit(nn.Module):
    """A MicroNet unit: its ``layers`` in sequence, plus the input when ``identity`` (stride 1 and in == out)."""

    def __init__(self, layers: list[nn.Module], identity: bool = False) -> None:
        super().__init__()
        self.identity = identity
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return out + x if self.identity else out


class MicroStem(MicroUnit):
    """Stem: 3×1 conv (stride 2 rows, g1 ch) → BN → 1×3 depthwise-like conv (×g2, stride 2 cols) → BN → shuffle → ReLU6."""

    def __init__(self, groups: tuple[int, int]) -> None:
        g1, g2 = groups
        super().__init__([
            nn.Conv2d(3, g1, (3, 1), (2, 1), (1, 0), bias=False), nn.BatchNorm2d(g1),
            nn.Conv2d(g1, g1 * g2, (1, 3), (1, 2), (0, 1), groups=g1, bias=False), nn.BatchNorm2d(g1 * g2),
            ChannelShuffle(g1), nn.ReLU6(inplace=True),
        ])


class MicroBlockA(MicroUnit):
    """Micro-Block-A: Micro-Factorized dw (expanding) → DSM → shuffle → group 1×1 squeeze → DSM(J=1) → shuffle."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dw_expand: tuple[int, int] = (2, 2), shift_groups: int = 4, pw_groups: tuple[int, int] = (2, 2),
                 dsm: tuple[int, int] = (2, 1), reduction: int = 8, init_a: tuple[float, float] = (1.0, 1.0),
                 init_b: tuple[float, float] = (0.0, 0.0)) -> None:
        dw = MicroDepthwise(in_channels, dw_expand, kernel_size, stride)
        hidden = dw.out_channels
        layers: list[nn.Module] = [
            dw,
            _activation(hidden, dsm[0], shift_groups, reduction, init_a, init_b),
            ChannelShuffle(shift_groups),
        ]
        if dsm[0]:
            layers.append(ChannelShuffle(hidden // 2))
        layers += _squeeze(hidden, out_channels, pw_groups, dsm[1], reduction // 2)
        super().__init__(layers, stride == 1 and in_channels == out_channels)


class MicroBlockC(MicroUnit):
    """Micro-Block-C (official tiling): group 1×1 expand → DSM → shuffle → Micro-Factorized dw → DSM → shuffle →
    group 1×1 squeeze → DSM(J=1) → shuffle; identity shortcut when stride 1 and in == out."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 1,
                 expansion: int = 4, pw1_groups: int = 4, shift_groups: int = 4, pw_groups: tuple[int, int] = (4, 4),
                 dsm: tuple[int, int, int] = (2, 2, 1), reduction: int = 8, init_a: tuple[float, float] = (1.0, 1.0),
                 init_b: tuple[float, float] = (0.0, 0.0), act: str = "dsm") -> None:
        hidden = in_channels * expansion
        y1, y2, y3 = dsm
        dw_shift = hidden // shift_groups if shift_groups != 1 else 1
        layers: list[nn.Module] = [
            _group_pointwise(in_channels, hidden, pw1_groups),
            _activation(hidden, y1, shift_groups, reduction, init_a, init_b, act),
            ChannelShuffle(shift_groups),
            MicroDepthwise(hidden, (1, 1), kernel_size, stride),
            _activation(hidden, y2, dw_shift, reduction, init_a, init_b, act),
        ]
        if y1 and y2:
            layers.append(ChannelShuffle(hidden // 4))
        elif y1 or y2:
            layers.append(ChannelShuffle(hidden // 2))
        layers += _squeeze(hidden, out_channels, pw_groups, y3, reduction // 2 if out_channels < hidden else reduction,
                           act)
        super().__init__(layers, stride == 1 and in_channels == out_channels)


class MicroBlockB(MicroUnit):
    """Micro-Block-B (paper Fig. 3): Micro-Factorized dw (expanding) → DSM → full Micro-Factorized pointwise
    (group 1×1 squeeze → DSM(J=1) → shuffle → group 1×1 expand → DSM(J=1) → shuffle)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dw_expand: tuple[int, int] = (1, 4), ratio: int = 4, j: int = 2, reduction: int = 8) -> None:
        dw = MicroDepthwise(in_channels, dw_expand, kernel_size, stride)
        hidden = dw.out_channels
        squeezed = max(1, out_channels // ratio)
        g_in = micro_factorized_groups(hidden, max(1, hidden // squeezed))
        g_out = micro_factorized_groups(out_channels, ratio)
        super().__init__([
            dw,
            DynamicShiftMax(hidden, g_in, j, reduction),
            ChannelShuffle(g_in),
            _group_pointwise(hidden, squeezed, g_in),
            DynamicShiftMax(squeezed, g_out, 1, reduction // 2, LAST_INIT_A, LAST_INIT_B),
            ChannelShuffle(g_out),
            _group_pointwise(squeezed, out_channels, g_out),
            DynamicShiftMax(out_channels, g_out, 1, reduction, LAST_INIT_A, LAST_INIT_B),
            ChannelShuffle(g_out),
        ])


class MicroPointwise(MicroUnit):
    """Last unit of the official networks: group 1×1 expand → BN → DSM(J=1) (or nothing when the config says 0)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, shift_groups: int, dsm: int,
                 reduction: int) -> None:
        layers: list[nn.Module] = [_group_pointwise(in_channels, out_channels, groups)]
        if dsm:
            layers.append(DynamicShiftMax(out_channels, shift_groups, 1, reduction, LAST_INIT_A, LAST_INIT_B))
        super().__init__(layers)


class MicroHead(nn.Module):
    """ReLU6 → global avgpool → h-swish → linear+BN+h-swish → dropout → linear+BN+h-swish (official head)."""

    def __init__(self, in_channels: int, width: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.ReLU6(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Hardswish(), nn.Flatten(1))
        self.classifier = nn.Sequential(
            nn.Linear(in_channels, width), nn.BatchNorm1d(width), nn.Hardswish(),
            nn.Dropout(dropout),
            nn.Linear(width, num_classes), nn.BatchNorm1d(num_classes), nn.Hardswish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(x))


def build_micronet(variant: str, num_classes: int = NUM_CLASSES) -> SequentialNetwork:
    """MicroNet M0–M3 as in the official release (exact parameter counts)."""
    if variant not in MICRONET_ROWS:
        raise ValueError(f"MicroNet variant must be one of {sorted(MICRONET_ROWS)}, got {variant!r}")
    cfg = MICRONET_SETTINGS[variant]
    init_a, init_b = cfg["init_a"], cfg["init_b"]
    blocks: list[tuple[str, nn.Module]] = [("stem", MicroStem(cfg["stem"]))]
    cin = cfg["stem"][0] * cfg["stem"][1]
    for i, row in enumerate(MICRONET_ROWS[variant]):
        s, n, c, k, e1, e2, g1, g2, _c3, g3, g4, y1, y2, y3, r = row
        red = BASE_REDUCTION * r
        for rep in range(n):
            stride = s if rep == 0 else 1
            unit: nn.Module
            if g1 == 0:
                name = "micro_a"
                unit = MicroBlockA(cin, c, k, stride, (e1, e2), g2, (g3, g4), (y2, y3), red, init_a, init_b)
            elif g4 == 0:
                name = "micro_pw"
                unit = MicroPointwise(cin, cin * e1 * e2, g1, g2, y3, red)
            else:
                name = "micro_c"
                unit = MicroBlockC(cin, c, k, stride, e1 * e2, g1, g2, (g3, g4), (y1, y2, y3), red, init_a, init_b)
            blocks.append((f"{name}{i}_{rep}", unit))
            cin = c
    blocks.append(("head", MicroHead(cin, cfg["head"], num_classes, cfg["dropout"])))
    return SequentialNetwork(blocks)


def dsm_elementwise_counts(module: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Element-wise work of every Dynamic Shift-Max in ``module`` for input ``x``, from its output sizes.

    ``mult_adds``: J×2 per output element (a_j·x and b_j·x₂, accumulated, for each of the J branches).
    ``max``: J−1 comparisons per output element (the max over branches; not a multiply-add).
    The coefficient MLP is a pair of linear layers and is counted with conv/linear, not here.
    """
    counts = {"mult_adds": 0, "max": 0}

    def hook(m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        counts["mult_adds"] += out.numel() * 2 * m.j
        counts["max"] += out.numel() * (m.j - 1)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, DynamicShiftMax)]
    try:
        with torch.inference_mode():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return counts


@register_workload(kind="block", family="micronet", default_input=channels_input("in_channels", 8))
def micronet_block_a(in_channels: int = 8, out_channels: int = 12, kernel_size: int = 3, stride: int = 1,
                     dw_expand: tuple[int, int] = (2, 2), shift_groups: int = 8, pw_groups: tuple[int, int] = (4, 4),
                     j: int = 2, reduction: int = 8) -> nn.Module:
    """MicroNet Micro-Block-A: k×1,1×k dw expanding channels → DSM → shuffle → group 1×1 squeeze → DSM(J=1)."""
    return MicroBlockA(in_channels, out_channels, kernel_size, stride, tuple(dw_expand), shift_groups,
                       tuple(pw_groups), (j, 1), reduction)


@register_workload(kind="block", family="micronet", default_input=channels_input("in_channels", 16))
def micronet_block_b(in_channels: int = 16, out_channels: int = 32, kernel_size: int = 5, stride: int = 1,
                     dw_expand: tuple[int, int] = (1, 4), ratio: int = 4, j: int = 2, reduction: int = 8) -> nn.Module:
    """MicroNet Micro-Block-B: dw expanding → DSM → full Micro-Factorized pointwise (squeeze, shuffle, expand)."""
    return MicroBlockB(in_channels, out_channels, kernel_size, stride, tuple(dw_expand), ratio, j, reduction)


@register_workload(kind="block", family="micronet", default_input=channels_input("in_channels", 32))
def micronet_block_c(in_channels: int = 32, out_channels: int = 32, kernel_size: int = 5, stride: int = 1,
                     expansion: int = 4, groups: int = 8, j: int = 2, reduction: int = 8, act: str = "dsm") -> nn.Module:
    """MicroNet Micro-Block-C: group 1×1 expand → DSM → shuffle → k×1,1×k dw → DSM → group 1×1 squeeze → DSM(J=1);
    ``act`` relu|hswish|... replaces every DSM (same convs and shuffles)."""
    if act != "dsm":
        activation(act)  # an unknown name: one line naming the choices
    return MicroBlockC(in_channels, out_channels, kernel_size, stride, expansion, groups, groups, (groups, groups),
                       (j, j, 1), reduction, act=act)


@register_workload(kind="block", family="micronet", default_input=channels_input("in_channels", 128))
def micro_factorized_pointwise(in_channels: int = 128, out_channels: int | None = None, ratio: int = 4,
                               factorized: bool = True) -> nn.Module:
    """Micro-Factorized 1×1 (group 1×1 C→C/R, G = √(C/R) groups → shuffle → group 1×1 C/R→C'), or dense 1×1-BN."""
    out_channels = out_channels or in_channels
    if not factorized:
        return conv_norm_act(in_channels, out_channels, 1, act=None)
    squeezed = max(1, in_channels // ratio)
    groups = micro_factorized_groups(in_channels, ratio)
    return nn.Sequential(_group_pointwise(in_channels, squeezed, groups), ChannelShuffle(groups),
                         _group_pointwise(squeezed, out_channels, groups))


@register_workload(kind="block", family="micronet", default_input=channels_input("in_channels", 64))
def micro_depthwise(in_channels: int = 64, kernel_size: int = 3, stride: int = 1, factorized: bool = True) -> nn.Module:
    """Micro-Factorized depthwise (k×1 dw → BN → 1×k dw → BN), or the dense k×k depthwise conv → BN it replaces."""
    if factorized:
        return MicroDepthwise(in_channels, (1, 1), kernel_size, stride)
    return conv_norm_act(in_channels, in_channels, kernel_size, stride, groups=in_channels, act=None)


register_networks("micronet", build_micronet, {
    "micronet_m0": ("MicroNet-M0 (official: 1.020M params; 4M mult-adds incl. Dynamic Shift-Max).", "m0"),
    "micronet_m1": ("MicroNet-M1 (official: 1.778M params; 6M mult-adds incl. Dynamic Shift-Max).", "m1"),
    "micronet_m2": ("MicroNet-M2 (official: 2.394M params; 12M mult-adds incl. Dynamic Shift-Max).", "m2"),
    "micronet_m3": ("MicroNet-M3 (official: 2.623M params; 21M mult-adds incl. Dynamic Shift-Max).", "m3"),
})
