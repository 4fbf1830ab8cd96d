"""The zoo's layer library (``latprof.workloads.layers``) and network registration: channel shuffle is a permutation,
make_divisible's rounding, conv_norm_act's structure, the network container's blocks() contract, the classifier head,
and the network factories ``register_networks`` makes."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from latprof.workloads import get_spec, list_workloads, shufflenet
from latprof.workloads.blocks import ConvBNReLU
from latprof.workloads.layers import (ChannelShuffle, ClassifierHead, SequentialNetwork, channel_shuffle,
                                      conv_norm_act, make_divisible, shuffle_permutation)
from latprof.workloads.registry import coerce_kwargs


# ------------------------------------------------------------------ channel shuffle
def test_channel_shuffle_known_order_and_inverse() -> None:
    x = torch.arange(6.0).view(1, 6, 1, 1).expand(2, 6, 3, 3).contiguous()
    y = channel_shuffle(x, 2)
    assert y[0, :, 0, 0].tolist() == [0, 3, 1, 4, 2, 5]
    assert torch.equal(channel_shuffle(y, 3), x)  # shuffling by C/g undoes shuffling by g


@pytest.mark.parametrize(("channels", "groups"), [(12, 3), (24, 8), (116, 2), (240, 4)])
def test_channel_shuffle_is_a_true_permutation(channels: int, groups: int) -> None:
    x = torch.randn(2, channels, 4, 4)
    y = channel_shuffle(x, groups)
    perm = shuffle_permutation(channels, groups)
    assert sorted(perm.tolist()) == list(range(channels))
    assert perm.tolist() != list(range(channels))
    assert torch.equal(y, x[:, perm])
    assert torch.equal(channel_shuffle(y, channels // groups), x)
    assert y.is_contiguous()


def test_channel_shuffle_rejects_bad_groups_and_module_identity_for_one_group() -> None:
    with pytest.raises(ValueError, match="groups"):
        channel_shuffle(torch.randn(1, 10, 2, 2), 3)
    x = torch.randn(1, 8, 2, 2)
    assert ChannelShuffle(1)(x) is x


# ------------------------------------------------------------------ rounding, conv-norm-act, head
def test_make_divisible() -> None:
    assert make_divisible(32 * 1.4) == 48
    assert make_divisible(1280 * 1.4) == 1792
    assert make_divisible(72 / 4) == 24  # never drop more than 10%
    assert make_divisible(3) == 8
    assert make_divisible(7, 4) == 8 and make_divisible(1, 4) == 4  # Dynamic Shift-Max's squeeze width


def test_conv_norm_act_structure_and_padding() -> None:
    block = conv_norm_act(8, 16, 3, 2, groups=8)
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    conv = block[0]
    assert conv.padding == (1, 1) and conv.stride == (2, 2) and conv.groups == 8 and conv.bias is None
    assert [type(m) for m in conv_norm_act(8, 16, 1, act=None)] == [nn.Conv2d, nn.BatchNorm2d]
    assert type(conv_norm_act(8, 8, 3, act="relu6")[2]) is nn.ReLU6
    assert conv_norm_act(8, 8, (1, 5))[0].padding == (0, 2)
    assert conv_norm_act(8, 8, 3, dilation=2)[0].padding == (2, 2)
    assert conv_norm_act(8, 8, 3, norm="none")[0].bias is not None


def test_conv_bn_relu_keeps_its_former_name() -> None:
    assert [type(m) for m in ConvBNReLU(4, 8, 3)] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]


def test_classifier_head() -> None:
    head = ClassifierHead(16, 10)
    assert [type(m) for m in head] == [nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear]
    assert head[2].bias is not None
    assert type(ClassifierHead(16, 10, dropout=0.2)[2]) is nn.Dropout
    assert head(torch.randn(2, 16, 3, 3)).shape == (2, 10)


# ------------------------------------------------------------------ network container and registration
def test_sequential_network_blocks_compose_to_forward() -> None:
    net = SequentialNetwork([("stem", conv_norm_act(3, 8, 3, 2)), ("block1", conv_norm_act(8, 8)),
                             ("head", ClassifierHead(8, 5))]).eval()
    named = net.blocks()
    assert [n for n, _ in named] == ["stem", "block1", "head"]
    assert all(m is getattr(net, n) for n, m in named)
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        y = x
        for _, block in named:
            y = block(y)
        assert torch.equal(y, net(x))


def test_every_registered_network_is_a_sequential_network() -> None:
    networks = list_workloads("network")
    assert len(networks) >= 22
    for spec in networks:
        with torch.device("meta"):
            assert isinstance(spec.factory(), SequentialNetwork), spec.name


def test_registered_network_factories_keep_name_signature_and_description() -> None:
    spec = get_spec("shufflenet_v2_x1_0")
    factory = spec.factory
    assert factory.__name__ == "shufflenet_v2_x1_0" and factory.__module__ == "latprof.workloads.shufflenet"
    assert str(inspect.signature(factory)) == "(num_classes: 'int' = 1000) -> 'nn.Module'"
    assert spec.description == "ShuffleNet V2 1.0× (paper: 146M mult-adds, 2.3M params)."
    assert spec.input_for({}) == (1, 3, 224, 224)
    assert coerce_kwargs(spec.name, factory, {"num_classes": "10"}) == {"num_classes": 10}
    assert shufflenet.shufflenet_v2_x1_0 is factory  # still reachable as a module:callable reference
    with torch.device("meta"):
        assert factory(num_classes=10).head[-1].out_features == 10
