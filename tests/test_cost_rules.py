"""Exact, hand-computed counts for every per-op rule (small shapes; each expected value is derived in the test)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from latprof.cost import count_model


class Fn(nn.Module):
    """Wrap a function of the inputs as a module (the functional ops under test run at the root)."""

    def __init__(self, fn, *mods: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleList(mods)

    def forward(self, *xs):
        return self.fn(*xs)


def totals(module: nn.Module, *inputs: torch.Tensor, **kw) -> dict:
    return count_model(module, inputs, **kw).totals


def x(*shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape).to(dtype)


# ------------------------------------------------------------ ShuffleNet V2 guidelines G1 and G2 (paper's MAC)
@pytest.mark.parametrize("c1,c2", [(32, 32), (22, 44), (13, 78), (9, 108)])
def test_g1_pointwise_conv_mac_matches_paper_formula(c1: int, c2: int) -> None:
    h = w = 56
    t = totals(nn.Conv2d(c1, c2, 1, bias=False), x(1, c1, h, w))
    assert t["mem_access"] == h * w * (c1 + c2) + c1 * c2
    assert t["mult_adds"] == h * w * c1 * c2
    assert t["params"] == c1 * c2
    assert t["mem_bytes"] == 4 * t["mem_access"]
    assert t["arithmetic_intensity"] == pytest.approx(2 * h * w * c1 * c2 / (4 * t["mem_access"]))


# The paper's ARM column lists c=180 with g=8, which no conv can have (180 is not a multiple of 8); its GPU column
# (128/1, 180/2, 256/4, 360/8) is valid throughout, and 184 is the nearest buildable width to the ARM g=8 setting.
@pytest.mark.parametrize("c,g", [(64, 1), (90, 2), (128, 4), (184, 8), (128, 1), (180, 2), (256, 4), (360, 8)])
def test_g2_group_conv_mac_matches_paper_formula(c: int, g: int) -> None:
    h = w = 56
    t = totals(nn.Conv2d(c, c, 1, groups=g, bias=False), x(1, c, h, w))
    assert t["mem_access"] == h * w * (c + c) + c * c // g
    assert t["mult_adds"] == h * w * c * c // g


def test_g1_block_is_sum_of_its_two_convs() -> None:
    c1, c2, hw = 22, 44, 56 * 56
    block = nn.Sequential(nn.Conv2d(c1, c2, 1, bias=False), nn.Conv2d(c2, c1, 1, bias=False))
    t = totals(block, x(1, c1, 56, 56))
    assert t["mem_access"] == 2 * (hw * (c1 + c2) + c1 * c2)
    assert t["mult_adds"] == 2 * hw * c1 * c2


# ------------------------------------------------------------ convolution variants
def test_conv_stride_padding_dilation_with_bias() -> None:
    # out = floor((9 + 2*2 - 2*(3-1) - 1) / 2) + 1 = 5
    t = totals(nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2), x(1, 4, 9, 9))
    assert t["mult_adds"] == 5 * 5 * 6 * 4 * 9
    assert t["mem_access"] == 4 * 81 + 6 * 4 * 9 + 6 + 6 * 25  # input, weight, bias, output
    assert t["params"] == 6 * 4 * 9 + 6
    assert t["elementwise_ops"] == 0  # bias add is the accumulator's initial value


def test_depthwise_conv() -> None:
    t = totals(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), x(1, 8, 6, 6))
    assert t["mult_adds"] == 8 * 36 * 1 * 9
    assert t["mem_access"] == 8 * 36 + 8 * 9 + 8 * 36
    assert t["params"] == 72


def test_grouped_conv() -> None:
    t = totals(nn.Conv2d(8, 12, 3, groups=4, bias=False), x(1, 8, 6, 6))
    assert t["mult_adds"] == 12 * 16 * (8 // 4) * 9  # 4x4 output, Cin/g = 2 inputs per output
    assert t["mem_access"] == 8 * 36 + 12 * 2 * 9 + 12 * 16


def test_transposed_grouped_conv() -> None:
    # out = (5-1)*2 + 3 = 11; every input element is scattered into Cout/g * 9 outputs
    t = totals(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, bias=False), x(1, 4, 5, 5))
    assert t["mult_adds"] == 4 * 25 * 3 * 9
    assert t["mem_access"] == 100 + 4 * 3 * 9 + 6 * 121
    assert t["params"] == 108


def test_conv1d_and_conv3d() -> None:
    assert totals(nn.Conv1d(2, 3, 3, bias=False), x(1, 2, 10))["mult_adds"] == 3 * 8 * 2 * 3
    assert totals(nn.Conv3d(2, 3, 3, bias=False), x(1, 2, 4, 4, 4))["mult_adds"] == 3 * 8 * 2 * 27


def test_batch_of_two_doubles_activation_counts_not_weights() -> None:
    one = totals(nn.Conv2d(3, 4, 1, bias=False), x(1, 3, 5, 5))
    two = totals(nn.Conv2d(3, 4, 1, bias=False), x(2, 3, 5, 5))
    assert two["mult_adds"] == 2 * one["mult_adds"]
    assert two["mem_access"] == 2 * (one["mem_access"] - 12) + 12


# ------------------------------------------------------------ linear / matmul
def test_linear_is_addmm_with_free_bias_add() -> None:
    t = totals(nn.Linear(8, 5), x(3, 8))
    assert t["mult_adds"] == 3 * 8 * 5
    assert t["mem_access"] == 5 + 3 * 8 + 8 * 5 + 3 * 5  # bias, input, weight (transposed view), output
    assert t["params"] == 45


def test_linear_on_3d_input() -> None:
    assert totals(nn.Linear(8, 5), x(2, 3, 8))["mult_adds"] == 2 * 3 * 8 * 5


def test_bmm_mm_matmul() -> None:
    t = totals(Fn(torch.bmm), x(2, 3, 4), x(2, 4, 5))
    assert (t["mult_adds"], t["mem_access"]) == (2 * 3 * 4 * 5, 24 + 40 + 30)
    assert totals(Fn(torch.mm), x(3, 4), x(4, 5))["mult_adds"] == 60
    assert totals(Fn(torch.matmul), x(2, 3, 4), x(2, 4, 5))["mult_adds"] == 120


# ------------------------------------------------------------ batch norm, unfolded and folded
def test_batch_norm_unfolded_is_two_ops_per_element() -> None:
    t = totals(nn.BatchNorm2d(4), x(1, 4, 3, 3))
    assert t["elementwise_ops"] == 2 * 36
    assert t["mem_access"] == 36 + 4 * 4 + 36  # x; weight, bias, running mean, running var; y
    assert t["params"] == 8  # running statistics are buffers, not parameters


def test_batch_norm_folded_into_preceding_conv() -> None:
    m = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4))
    unfolded = count_model(m, x(1, 3, 5, 5))
    folded = count_model(m, x(1, 3, 5, 5), fold_bn=True)
    conv_mac = 75 + 12 + 100
    assert unfolded.totals["mem_access"] == conv_mac + (100 + 16 + 100)
    assert unfolded.totals["elementwise_ops"] == 200
    assert folded.totals["mem_access"] == conv_mac + 4  # the folded conv reads a bias
    assert folded.totals["elementwise_ops"] == 0
    assert folded.totals["mult_adds"] == unfolded.totals["mult_adds"] == 4 * 25 * 3
    assert folded.totals["params"] == unfolded.totals["params"] == 12 + 8
    assert [r.op for r in folded.layers] == ["convolution", "native_batch_norm (folded)"]


def test_batch_norm_without_preceding_conv_stays_unfolded() -> None:
    m = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(4))
    assert totals(m, x(1, 4, 3, 3), fold_bn=True)["elementwise_ops"] == 36 + 72


# ------------------------------------------------------------ activations
@pytest.mark.parametrize("act,per", [
    (nn.ReLU(), 1), (nn.ReLU6(), 2), (nn.Hardtanh(), 2), (nn.Hardswish(), 5), (nn.Hardsigmoid(), 4),
    (nn.Sigmoid(), 3), (nn.SiLU(), 4), (nn.GELU(), 5), (nn.GELU(approximate="tanh"), 9), (nn.Tanh(), 1),
    (nn.ReLU(inplace=True), 1), (nn.ReLU6(inplace=True), 2), (nn.Hardswish(inplace=True), 5),
])
def test_activations(act: nn.Module, per: int) -> None:
    t = totals(act, x(1, 2, 3, 3))
    assert t["elementwise_ops"] == per * 18
    assert t["mem_access"] == 18 + 18  # read once, write once (in place too)
    assert t["mult_adds"] == 0


# ------------------------------------------------------------ binary element-wise, functional ops
@pytest.mark.parametrize("fn", [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b,
                                torch.add, torch.mul])
def test_binary_ops_count_functional_calls(fn) -> None:
    t = totals(Fn(fn), x(1, 2, 3, 3), x(1, 2, 3, 3))
    assert (t["elementwise_ops"], t["mem_access"]) == (18, 54)


def test_inplace_add_reads_both_writes_one() -> None:
    def f(a, b):
        a = a.clone()
        a += b
        return a

    t = count_model(Fn(f), (x(1, 2, 3, 3), x(1, 2, 3, 3)))
    assert [r.op for r in t.layers] == ["clone", "add_"]
    assert t.layers[1].mem_access == 54 and t.layers[1].elementwise_ops == 18


def test_broadcast_add_reads_the_small_operand_once() -> None:
    t = totals(Fn(lambda a, b: a + b), x(1, 4, 3, 3), x(1, 4, 1, 1))
    assert (t["elementwise_ops"], t["mem_access"]) == (36, 36 + 4 + 36)


def test_same_tensor_twice_is_read_once() -> None:
    assert totals(Fn(lambda a: a * a), x(1, 2, 3, 3))["mem_access"] == 36


def test_where_counts_bool_condition_bytes() -> None:
    cond = torch.zeros(1, 2, 3, 3, dtype=torch.bool)
    t = totals(Fn(torch.where), cond, x(1, 2, 3, 3), x(1, 2, 3, 3))
    assert (t["elementwise_ops"], t["mem_access"]) == (18, 4 * 18)
    assert t["mem_bytes"] == 18 * 1 + 3 * 18 * 4


# ------------------------------------------------------------ data movement: cat, split, views, copies, shuffle
def test_cat_is_a_copy() -> None:
    t = totals(Fn(lambda a, b: torch.cat([a, b], 1)), x(1, 2, 3, 3), x(1, 3, 3, 3))
    assert (t["elementwise_ops"], t["mem_access"]) == (0, 18 + 27 + 45)


def test_split_chunk_and_slicing_are_free() -> None:
    t = totals(Fn(lambda a: a.chunk(2, 1)[0] + a.split(1, 1)[1] + a[:, :1]), x(1, 2, 3, 3))
    # only the two adds cost: each reads two 9-element views and writes 9
    assert (t["elementwise_ops"], t["mem_access"]) == (18, 2 * 27)


def test_pure_views_are_free() -> None:
    def views(a):
        return a.view(1, 18).reshape(2, 9).t().unsqueeze(0).squeeze(0).transpose(0, 1).permute(1, 0).detach()

    report = count_model(Fn(views), (x(1, 2, 3, 3),))
    assert report.layers == [] and report.totals["mem_access"] == 0


def test_channel_shuffle_contiguous_is_charged() -> None:
    def shuffle(a, groups=2):
        n, c, h, w = a.shape
        return a.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)

    report = count_model(Fn(shuffle), (x(1, 4, 3, 3),))
    assert [r.op for r in report.layers] == ["clone"]
    assert report.totals["mem_access"] == 2 * 36 and report.totals["elementwise_ops"] == 0


def test_clone_and_dtype_copy() -> None:
    assert totals(Fn(torch.clone), x(2, 5))["mem_access"] == 20
    t = totals(Fn(lambda a: a.to(torch.float16)), x(2, 5))
    assert (t["mem_access"], t["mem_bytes"]) == (20, 10 * 4 + 10 * 2)


# ------------------------------------------------------------ pooling, reductions, softmax
def test_max_pool_writes_values_not_indices() -> None:
    t = totals(nn.MaxPool2d(2), x(1, 2, 4, 4))
    assert (t["elementwise_ops"], t["mem_access"]) == (8 * 4, 32 + 8)


def test_avg_pool() -> None:
    t = totals(nn.AvgPool2d(3, stride=1, padding=1), x(1, 2, 4, 4))
    assert (t["elementwise_ops"], t["mem_access"]) == (32 * 9, 64)


def test_global_adaptive_avg_pool_is_a_mean() -> None:
    t = totals(nn.AdaptiveAvgPool2d(1), x(1, 2, 4, 4))
    assert (t["elementwise_ops"], t["mem_access"]) == (32, 32 + 2)


@pytest.mark.parametrize("pool", [nn.AdaptiveAvgPool2d(3), nn.AdaptiveMaxPool2d(3)])
def test_adaptive_pool_windows(pool: nn.Module) -> None:
    # 4 -> 3: windows [0,2) [1,3) [2,4) are 2 wide each: 6 per dim, 36 per channel
    t = totals(pool, x(1, 2, 4, 4))
    assert (t["elementwise_ops"], t["mem_access"]) == (2 * 36, 32 + 18)


def test_mean_and_softmax() -> None:
    assert totals(Fn(lambda a: a.mean((2, 3))), x(1, 2, 4, 4))["elementwise_ops"] == 32
    t = totals(Fn(lambda a: a.softmax(1)), x(2, 5))
    assert (t["elementwise_ops"], t["mem_access"]) == (5 * 10, 20)


# ------------------------------------------------------------ resampling and normalisation
def test_interpolate_nearest_and_bilinear() -> None:
    near = totals(Fn(lambda a: F.interpolate(a, scale_factor=2)), x(1, 2, 3, 3))
    bil = totals(Fn(lambda a: F.interpolate(a, scale_factor=2, mode="bilinear")), x(1, 2, 3, 3))
    assert (near["elementwise_ops"], near["mem_access"]) == (0, 18 + 72)
    assert (bil["elementwise_ops"], bil["mem_access"]) == (7 * 72, 18 + 72)


def test_group_norm_and_layer_norm() -> None:
    g = totals(nn.GroupNorm(2, 4), x(1, 4, 3, 3))
    assert (g["elementwise_ops"], g["mem_access"], g["params"]) == (7 * 36, 36 + 8 + 36, 8)
    ln = totals(nn.LayerNorm(3), x(2, 3))
    assert (ln["elementwise_ops"], ln["mem_access"]) == (7 * 6, 6 + 6 + 6)
