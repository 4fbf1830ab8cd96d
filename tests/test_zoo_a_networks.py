"""Zoo networks (MobileNet V1/V2/V3, EfficientNet-B0, ResNet): output shape, published complexity, blocks, ONNX."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from latprof.cost import UnsupportedOpWarning, count_model
from latprof.workloads import build_registered, get_spec, list_workloads

NETWORKS = [
    "mobilenet_v1_x1_0", "mobilenet_v1_x0_75", "mobilenet_v1_x0_5", "mobilenet_v1_x0_25",
    "mobilenet_v2_x1_0", "mobilenet_v2_x1_4", "mobilenet_v3_large", "mobilenet_v3_small",
    "efficientnet_b0", "resnet18", "resnet50",
]

# Published (mult_adds, params) at 224×224 — /work/shared/reference/model_complexity.json, copied here.
REFERENCE = {
    "mobilenet_v1_x1_0": (569e6, 4.2e6),
    "mobilenet_v1_x0_75": (325e6, 2.6e6),
    "mobilenet_v1_x0_5": (149e6, 1.3e6),
    "mobilenet_v1_x0_25": (41e6, 0.5e6),
    "mobilenet_v2_x1_0": (300e6, 3.4e6),
    "mobilenet_v2_x1_4": (585e6, 6.9e6),
    "mobilenet_v3_large": (219e6, 5.4e6),
    "mobilenet_v3_small": (56e6, 2.5e6),
    "efficientnet_b0": (390e6, 5.3e6),
    "resnet18": (1.8e9, 11.7e6),
    "resnet50": (3.8e9, 25.6e6),
}

# Published params that no faithful build reaches, each with the figure that replaces it in the 3% check:
# - MobileNetV1-0.25: the paper prints "0.5 M", rounded to one decimal; the model has 0.47 M (TF-slim release too).
# - MobileNetV2-1.0: the paper prints 3.4 M; the official TF-slim release has 3.47 M (its BatchNorm has no scale
#   parameter) and torchvision 3.50 M, the same layout as ours (3.9% and 3.1% above the paper's rounded figure).
# - MobileNetV2-1.4: the paper prints 6.9 M; the official TF-slim checkpoint has 6.06 M (+1001-class head:
#   6.09 M, as listed by OpenVINO's open_model_zoo), same as torchvision's width-1.4 build. Its 582 M mult-adds
#   match the paper's 585 M within 1%, so the paper's params figure is the outlier.
PARAMS_EXCEPTIONS = {"mobilenet_v1_x0_25": 0.47e6, "mobilenet_v2_x1_0": 3.47e6, "mobilenet_v2_x1_4": 6.09e6}

TOLERANCE = 0.03


def _counts(name: str, hw: int = 224) -> tuple[torch.Size, int, float]:
    """Output shape, params and mult_adds at 1×3×hw×hw through latprof's cost model, on the meta device."""
    spec = get_spec(name)
    with torch.device("meta"):
        module = spec.factory().eval()
        x = torch.empty(1, 3, hw, hw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedOpWarning)  # every op of the zoo has a cost rule
        totals = count_model(module, (x,)).totals
    with torch.inference_mode():
        out = module(x)
    return out.shape, totals["params"], totals["mult_adds"]


def test_cost_model_agrees_with_torch_flop_counter() -> None:
    """An independent count: torch's FlopCounterMode (2 per multiply-add of conv / linear / mm)."""
    with torch.device("meta"):
        module = get_spec("mobilenet_v3_small").factory().eval()
        x = torch.empty(1, 3, 224, 224)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(x)
    assert counter.get_total_flops() / 2 == count_model(module, (x,)).totals["mult_adds"] == 56_510_400


@pytest.fixture(scope="module")
def counts() -> dict[str, tuple[torch.Size, int, float]]:
    return {name: _counts(name) for name in NETWORKS}


@pytest.fixture(scope="module")
def built() -> dict[str, object]:
    """Each network built once on the CPU (real weights), reused by the forward, block and ONNX tests."""
    return {name: build_registered(name, input_shape=(2, 3, 32, 32)) for name in NETWORKS}


def test_every_network_is_registered_at_224() -> None:
    specs = {s.name: s for s in list_workloads("network")}
    for name in NETWORKS:
        assert name in specs, name
        assert specs[name].input_for({}) == (1, 3, 224, 224)


@pytest.mark.parametrize("name", NETWORKS)
def test_forward_at_224_gives_1000_classes(name: str, counts: dict) -> None:
    assert tuple(counts[name][0]) == (1, 1000)


@pytest.mark.parametrize("name", NETWORKS)
def test_mult_adds_match_the_paper(name: str, counts: dict) -> None:
    mult_adds = counts[name][2]
    published = REFERENCE[name][0]
    assert abs(mult_adds - published) / published <= TOLERANCE, f"{name}: {mult_adds / 1e6:.1f} M vs {published / 1e6:.0f} M"


@pytest.mark.parametrize("name", NETWORKS)
def test_params_match_the_paper(name: str, counts: dict) -> None:
    params = counts[name][1]
    published = PARAMS_EXCEPTIONS.get(name, REFERENCE[name][1])
    assert abs(params - published) / published <= TOLERANCE, f"{name}: {params / 1e6:.3f} M vs {published / 1e6:.2f} M"


def test_exact_params_of_known_builds(counts: dict) -> None:
    """Exact counts of the reference implementations with the same layout (torchvision / TF-slim)."""
    assert counts["resnet18"][1] == 11_689_512
    assert counts["resnet50"][1] == 25_557_032
    assert counts["mobilenet_v2_x1_0"][1] == 3_504_872
    assert counts["mobilenet_v3_large"][1] == 5_483_032
    assert counts["mobilenet_v3_small"][1] == 2_542_856
    assert counts["efficientnet_b0"][1] == 5_288_548


def test_resolution_scales_mult_adds_like_the_paper() -> None:
    """MobileNetV1 1.0 at 160×160: paper Table 7 gives 290 M."""
    assert abs(_counts("mobilenet_v1_x1_0", 160)[2] - 290e6) / 290e6 <= TOLERANCE


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
    torch.testing.assert_close(y, expected)
    instances = w.blocks()
    assert [b.name for b in instances] == [n for n, _ in named]
    assert instances[0].input_shape == (2, 3, 32, 32)
    assert instances[-1].input_shape[0] == 2 and len(instances[-1].input_shape) == 4


# Width variants repeat an exported layout and ResNet-50 is the slowest export: marked slow (deselect with -m "not slow").
_SLOW_EXPORTS = {"mobilenet_v1_x1_0", "mobilenet_v1_x0_75", "mobilenet_v1_x0_5", "mobilenet_v2_x1_4", "resnet50"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_EXPORTS else n for n in NETWORKS]
)
def test_exports_to_onnx(name: str, built: dict, tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    w = built[name]
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(w.module, w.make_inputs(), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      do_constant_folding=False)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [2, 1000]
