"""Zoo networks (MobileNet V1/V2/V3, EfficientNet-B0, ResNet-18/50, ShuffleNet V1/V2, MicroNet M0–M3, IGCV3-D):
1000 classes at 224×224, params and mult_adds against the published figures, exact counts, and blocks() that compose
to the network."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from latprof.cost import UnsupportedOpWarning, count_model
from latprof.workloads import build_registered, get_spec, list_workloads
from latprof.workloads.micronet import dsm_elementwise_counts

# name: published (mult_adds, params) at 224×224, copied from the papers and official releases (the ShuffleNet V2
# project's reference table), then the exact (mult_adds, params, mem_access) of the build at 1×3×224×224, which pin
# every layer. ShuffleNet V1 paper Table 2 gives 140M mult-adds for 1× g=8 and no parameter count. MicroNet's
# published MAdds include Dynamic Shift-Max's element-wise multiply-adds (see test_micronet_mult_adds_...).
COUNTS = {
    "mobilenet_v1_x1_0": (569e6, 4.2e6, 568_740_352, 4_231_976, 34_663_568),
    "mobilenet_v1_x0_75": (325e6, 2.6e6, 325_400_448, 2_585_560, 25_447_136),
    "mobilenet_v1_x0_5": (149e6, 1.3e6, 149_497_088, 1_331_592, 16_623_152),
    "mobilenet_v1_x0_25": (41e6, 0.5e6, 41_030_272, 470_072, 8_191_616),
    "mobilenet_v2_x1_0": (300e6, 3.4e6, 300_774_272, 3_504_872, 43_266_256),
    "mobilenet_v2_x1_4": (585e6, 6.9e6, 582_195_824, 6_108_776, 63_023_248),
    "mobilenet_v3_large": (219e6, 5.4e6, 216_589_760, 5_483_032, 34_004_672),
    "mobilenet_v3_small": (56e6, 2.5e6, 56_510_400, 2_542_856, 11_932_048),
    "efficientnet_b0": (390e6, 5.3e6, 385_814_752, 5_288_548, 52_355_708),
    "resnet18": (1.8e9, 11.7e6, 1_814_073_344, 11_689_512, 29_237_648),
    "resnet50": (3.8e9, 25.6e6, 3_857_973_248, 25_557_032, 103_337_872),
    "shufflenet_v1_g3_x1_0": (140e6, 1.9e6, 137_460_672, 1_865_728, 25_968_200),
    "shufflenet_v1_g8_x1_0": (140e6, None, 138_365_952, 2_434_768, 39_733_688),
    "shufflenet_v2_x0_5": (41e6, 1.4e6, 40_476_448, 1_366_792, 8_904_192),
    "shufflenet_v2_x1_0": (146e6, 2.3e6, 144_907_992, 2_278_604, 16_861_416),
    "shufflenet_v2_x1_5": (299e6, 3.5e6, 295_759_392, 3_503_624, 24_302_976),
    "shufflenet_v2_x2_0": (591e6, 7.4e6, 583_253_464, 7_393_996, 35_543_912),
    "micronet_m0": (4e6, 1.020e6, 3_448_880, 1_019_590, 7_055_694),
    "micronet_m1": (6e6, 1.778e6, 5_314_080, 1_777_587, 9_888_173),
    "micronet_m2": (12e6, 2.394e6, 10_338_128, 2_393_876, 22_652_216),
    "micronet_m3": (21e6, 2.623e6, 18_236_000, 2_622_960, 30_018_176),
    "igcv3_d_x1_0": (318e6, 3.5e6, 312_970_176, 3_491_688, 75_667_408),
}
REFERENCE = {name: c[:2] for name, c in COUNTS.items()}
EXACT = {name: c[2:] for name, c in COUNTS.items()}
NETWORKS = list(REFERENCE)
MICRONETS = [n for n in NETWORKS if n.startswith("micronet")]

# Published params that no faithful build reaches, each with the figure that replaces it in the 3% check:
# - MobileNetV1-0.25: the paper prints "0.5 M", rounded to one decimal; the model has 0.47 M (TF-slim release too).
# - MobileNetV2-1.0: the paper prints 3.4 M; the official TF-slim release has 3.47 M (its BatchNorm has no scale
#   parameter) and torchvision 3.50 M, the same layout as ours (3.9% and 3.1% above the paper's rounded figure).
# - MobileNetV2-1.4: the paper prints 6.9 M; the official TF-slim checkpoint has 6.06 M (+1001-class head:
#   6.09 M, as listed by OpenVINO's open_model_zoo), same as torchvision's width-1.4 build. Its 582 M mult-adds
#   match the paper's 585 M within 1%, so the paper's params figure is the outlier.
PARAMS_EXCEPTIONS = {"mobilenet_v1_x0_25": 0.47e6, "mobilenet_v2_x1_0": 3.47e6, "mobilenet_v2_x1_4": 6.09e6}

TOLERANCE = 0.03
# MicroNet conv+linear+DSM multiply-adds vs the published (rounded to 1M) figure; M2 is the outlier at +6.2%.
MICRONET_DSM_TOLERANCE = 0.07
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _counts(name: str, hw: int = 224) -> dict:
    """Output shape, params, mult_adds and mem_access at 1×3×hw×hw through latprof's cost model on the meta
    device, mult_adds cross-checked against torch's FlopCounterMode (2 flops per multiply-add of conv / linear / mm);
    for MicroNet also Dynamic Shift-Max's element-wise work (``dsm_elementwise_counts``)."""
    with torch.device("meta"):
        module = get_spec(name).factory().eval()
        x = torch.empty(1, 3, hw, hw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedOpWarning)  # every op of the zoo has a cost rule
        totals = count_model(module, (x,)).totals
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        out = module(x)
    assert counter.get_total_flops() == 2 * totals["mult_adds"], name
    dsm = dsm_elementwise_counts(module, x) if name in MICRONETS else None
    return {"shape": tuple(out.shape), "params": totals["params"], "mult_adds": totals["mult_adds"],
            "mem_access": totals["mem_access"], "dsm": dsm}


@pytest.fixture(scope="module")
def counts() -> dict[str, dict]:
    return {name: _counts(name) for name in NETWORKS}


@pytest.fixture(scope="module")
def built() -> dict[str, object]:
    """Each network built once on the CPU (real, seeded weights) at a small input, reused by the block tests."""
    return {name: build_registered(name, input_shape=(2, 3, 32, 32)) for name in NETWORKS}


def test_every_network_is_registered_at_224() -> None:
    specs = {s.name: s for s in list_workloads("network")}
    for name in NETWORKS:
        assert name in specs, name
        assert specs[name].input_for({}) == (1, 3, 224, 224)


@pytest.mark.parametrize("name", NETWORKS)
def test_forward_at_224_gives_1000_classes(name: str, counts: dict) -> None:
    assert counts[name]["shape"] == (1, 1000)


@pytest.mark.parametrize("name", [n for n in NETWORKS if n not in MICRONETS])
def test_mult_adds_match_the_paper(name: str, counts: dict) -> None:
    mult_adds = counts[name]["mult_adds"]
    published = REFERENCE[name][0]
    assert abs(mult_adds - published) / published <= TOLERANCE, f"{name}: {mult_adds / 1e6:.1f} M vs {published / 1e6:.0f} M"


@pytest.mark.parametrize("name", MICRONETS)
def test_micronet_mult_adds_with_dynamic_shift_max(name: str, counts: dict) -> None:
    conv_linear, dsm = counts[name]["mult_adds"], counts[name]["dsm"]
    total = conv_linear + dsm["mult_adds"]
    ref = REFERENCE[name][0]
    assert 0.8 * ref < conv_linear < ref  # DSM's element-wise work is part of the published figure
    assert abs(total / ref - 1) <= MICRONET_DSM_TOLERANCE, f"{name}: +DSM {total / 1e6:.3f}M vs {ref / 1e6:.0f}M"


@pytest.mark.parametrize("name", NETWORKS)
def test_params_match_the_paper(name: str, counts: dict) -> None:
    params = counts[name]["params"]
    if name in MICRONETS:  # the official release's parameter count, to the thousand
        assert round(params / 1e6, 3) == REFERENCE[name][1] / 1e6
        return
    if REFERENCE[name][1] is None:
        assert 2.3e6 < params < 2.6e6  # g=8 has more params than g=3 at equal mult-adds (no published figure)
        return
    published = PARAMS_EXCEPTIONS.get(name, REFERENCE[name][1])
    assert abs(params - published) / published <= TOLERANCE, f"{name}: {params / 1e6:.3f} M vs {published / 1e6:.2f} M"


def test_exact_params_of_known_builds(counts: dict) -> None:
    """Exact counts of the reference implementations with the same layout (torchvision / TF-slim)."""
    assert counts["resnet18"]["params"] == 11_689_512
    assert counts["resnet50"]["params"] == 25_557_032
    assert counts["mobilenet_v2_x1_0"]["params"] == 3_504_872
    assert counts["mobilenet_v3_large"]["params"] == 5_483_032
    assert counts["mobilenet_v3_small"]["params"] == 2_542_856
    assert counts["efficientnet_b0"]["params"] == 5_288_548
    assert counts["mobilenet_v3_small"]["mult_adds"] == 56_510_400


@pytest.mark.parametrize("name", NETWORKS)
def test_exact_counts(name: str, counts: dict) -> None:
    c = counts[name]
    assert (c["mult_adds"], c["params"], c["mem_access"]) == EXACT[name]


def test_resolution_scales_mult_adds_like_the_paper() -> None:
    """MobileNetV1 1.0 at 160×160: paper Table 7 gives 290 M."""
    assert abs(_counts("mobilenet_v1_x1_0", 160)["mult_adds"] - 290e6) / 290e6 <= TOLERANCE


@pytest.mark.parametrize("name", NETWORKS)
def test_blocks_compose_to_the_network(name: str, built: dict) -> None:
    w = built[name]
    (x,) = w.make_inputs()
    named = w.module.blocks()
    assert named[0][0] == "stem" and named[-1][0] == "head"
    with torch.inference_mode():
        expected = w.module(x)
        y = x
        for _, block in named:
            y = block(y)
    assert tuple(expected.shape) == (2, 1000)
    assert torch.equal(y, expected)
    assert sum(p.numel() for _, b in named for p in b.parameters()) == sum(p.numel() for p in w.module.parameters())
    instances = w.blocks()
    assert [b.name for b in instances] == [n for n, _ in named]
    assert instances[0].input_shape == (2, 3, 32, 32)
    assert instances[-1].input_shape[0] == 2 and len(instances[-1].input_shape) == 4


def test_workload_blocks_report_input_shapes() -> None:
    w = build_registered("shufflenet_v2_x1_0")
    blocks = w.blocks()
    assert [b.name for b in blocks][:2] == ["stem", "stage2_0"]
    assert blocks[0].input_shape == (1, 3, 224, 224)
    assert blocks[1].input_shape == (1, 24, 56, 56)
    assert blocks[-1].name == "head" and blocks[-1].input_shape == (1, 1024, 7, 7)
    assert len(blocks) == 1 + 16 + 2
