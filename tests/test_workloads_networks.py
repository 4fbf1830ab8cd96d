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
from latprof.workloads.published import published_figures

# The exact (mult_adds, params, mem_access) of each build at 1×3×224×224, which pin every layer. The published figures
# they are checked against live in one data file, latprof/workloads/published.toml (read through published_figures).
EXACT = {
    "mobilenet_v1_x1_0": (568_740_352, 4_231_976, 34_663_568),
    "mobilenet_v1_x0_75": (325_400_448, 2_585_560, 25_447_136),
    "mobilenet_v1_x0_5": (149_497_088, 1_331_592, 16_623_152),
    "mobilenet_v1_x0_25": (41_030_272, 470_072, 8_191_616),
    "mobilenet_v2_x1_0": (300_774_272, 3_504_872, 43_266_256),
    "mobilenet_v2_x1_4": (582_195_824, 6_108_776, 63_023_248),
    "mobilenet_v3_large": (216_589_760, 5_483_032, 34_004_672),
    "mobilenet_v3_small": (56_510_400, 2_542_856, 11_932_048),
    "efficientnet_b0": (385_814_752, 5_288_548, 52_355_708),
    "resnet18": (1_814_073_344, 11_689_512, 29_237_648),
    "resnet50": (3_857_973_248, 25_557_032, 103_337_872),
    "shufflenet_v1_g3_x1_0": (137_460_672, 1_865_728, 25_968_200),
    "shufflenet_v1_g8_x1_0": (138_365_952, 2_434_768, 39_733_688),
    "shufflenet_v2_x0_5": (40_476_448, 1_366_792, 8_904_192),
    "shufflenet_v2_x1_0": (144_907_992, 2_278_604, 16_861_416),
    "shufflenet_v2_x1_5": (295_759_392, 3_503_624, 24_302_976),
    "shufflenet_v2_x2_0": (583_253_464, 7_393_996, 35_543_912),
    "micronet_m0": (3_448_880, 1_019_590, 7_055_694),
    "micronet_m1": (5_314_080, 1_777_587, 9_888_173),
    "micronet_m2": (10_338_128, 2_393_876, 22_652_216),
    "micronet_m3": (18_236_000, 2_622_960, 30_018_176),
    "igcv3_d_x1_0": (312_970_176, 3_491_688, 75_667_408),
    # at their own resolution (published.toml's `resolution`): 240, 260, 300, 384
    "efficientnet_b1": (686_802_832, 7_794_184, 85_476_288),
    "efficientnet_b2": (993_561_872, 9_109_994, 107_979_882),
    "efficientnet_b3": (1_827_141_392, 12_233_232, 182_197_880),
    "efficientnetv2_s": (8_365_617_152, 21_458_488, 272_932_496),
}
PUBLISHED = published_figures()
NETWORKS = sorted(s.name for s in list_workloads("network"))
MICRONETS = [n for n in NETWORKS if PUBLISHED.get(n) and PUBLISHED[n].mult_adds_with_dsm]

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
    return {name: _counts(name, PUBLISHED[name].resolution) for name in NETWORKS}


@pytest.fixture(scope="module")
def built() -> dict[str, object]:
    """Each network built once on the CPU (real, seeded weights) at a small input, reused by the block tests."""
    return {name: build_registered(name, input_shape=(2, 3, 32, 32)) for name in NETWORKS}


def test_every_network_is_registered_at_224_with_published_figures_and_exact_counts() -> None:
    """A network added to the zoo must bring its published figures (published.toml) and pinned exact counts; its
    default input is 224×224, or the resolution its paper counts it at (EfficientNet B1-B3, V2-S)."""
    specs = {s.name: s for s in list_workloads("network")}
    for name in NETWORKS:
        r = PUBLISHED[name].resolution
        assert specs[name].input_for({}) == (1, 3, r, r), name
    assert set(NETWORKS) == set(PUBLISHED), "published.toml and the registry's networks differ"
    assert set(NETWORKS) == set(EXACT), "EXACT and the registry's networks differ"


@pytest.mark.parametrize("name", NETWORKS)
def test_forward_at_224_gives_1000_classes(name: str, counts: dict) -> None:
    assert counts[name]["shape"] == (1, 1000)


@pytest.mark.parametrize("name", [n for n in NETWORKS if n not in MICRONETS])
def test_mult_adds_match_the_paper(name: str, counts: dict) -> None:
    mult_adds = counts[name]["mult_adds"]
    published = PUBLISHED[name].mult_adds_checked
    assert abs(mult_adds - published) / published <= TOLERANCE, f"{name}: {mult_adds / 1e6:.1f} M vs {published / 1e6:.0f} M"


@pytest.mark.parametrize("name", MICRONETS)
def test_micronet_mult_adds_with_dynamic_shift_max(name: str, counts: dict) -> None:
    conv_linear, dsm = counts[name]["mult_adds"], counts[name]["dsm"]
    total = conv_linear + dsm["mult_adds"]
    ref = PUBLISHED[name].mult_adds
    assert 0.8 * ref < conv_linear < ref  # DSM's element-wise work is part of the published figure
    assert abs(total / ref - 1) <= MICRONET_DSM_TOLERANCE, f"{name}: +DSM {total / 1e6:.3f}M vs {ref / 1e6:.0f}M"


@pytest.mark.parametrize("name", NETWORKS)
def test_params_match_the_paper(name: str, counts: dict) -> None:
    params, pub = counts[name]["params"], PUBLISHED[name]
    if name in MICRONETS:  # the official release's parameter count, to the thousand
        assert round(params / 1e6, 3) == pub.params / 1e6
        return
    if pub.params is None:
        pytest.skip(f"{name}: no published parameter count ({pub.source})")
    want = pub.params_checked
    assert abs(params - want) / want <= TOLERANCE, f"{name}: {params / 1e6:.3f} M vs {want / 1e6:.2f} M"


@pytest.mark.parametrize("name", NETWORKS)
def test_exact_counts(name: str, counts: dict) -> None:
    c = counts[name]
    assert (c["mult_adds"], c["params"], c["mem_access"]) == EXACT[name]


def test_zoo_docs_print_the_published_figures() -> None:
    """docs/zoo.md's table gives, for every network, the published figures of published.toml."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "zoo.md").read_text()
    cells = {line.split("|")[1].strip().strip("`"): line.split("|")[4].strip()
             for line in doc.splitlines() if line.startswith("| `") and line.count("|") >= 6}
    for name, pub in PUBLISHED.items():
        assert name in cells, f"docs/zoo.md has no row for {name}"
        assert cells[name].startswith(pub.text()), f"docs/zoo.md {name}: {cells[name]!r}, published.toml: {pub.text()!r}"


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



def test_unreachable_published_mult_adds_are_explained() -> None:
    """Only EfficientNetV2-S's paper figure is out of reach; the check uses the released architecture's, with why."""
    out_of_reach = {n: p for n, p in PUBLISHED.items() if p.mult_adds_reachable is not None}
    assert set(out_of_reach) == {"efficientnetv2_s"}
    p = out_of_reach["efficientnetv2_s"]
    assert p.mult_adds == 8.8e9 and "torchvision" in p.mult_adds_why
    assert abs(p.mult_adds_checked / p.mult_adds - 1) > TOLERANCE  # why it needs the exception


def test_compound_scaling_repeats_and_widths() -> None:
    """B3 = B0 with width 1.2 (channels rounded to 8) and depth 1.4 (ceil of repeats): 26 MBConv blocks, stem 40."""
    from latprof.workloads.layers import MBConv

    with torch.device("meta"):
        b0, b3 = get_spec("efficientnet_b0").factory(), get_spec("efficientnet_b3").factory()
    assert sum(isinstance(m, MBConv) for m in b0.modules()) == 16
    assert sum(isinstance(m, MBConv) for m in b3.modules()) == 26  # ceil(1.4 * (1, 2, 2, 3, 3, 4, 1))
    assert b3.stem[0].out_channels == 40 and b3.head[0][0].out_channels == 1536
