"""User models: module:callable, file.py:callable, torchvision:/timm: (present or missing), .onnx, weights, errors."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest
import torch
from torch import nn

from latprof.cli import main
from latprof.errors import LatprofError
from latprof.workloads import create_workload

MODEL_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Tiny(nn.Module):
        '''A tiny user model.'''
        def __init__(self, width=4):
            super().__init__()
            self.conv = nn.Conv2d(3, width, 3, padding=1)
            self.fc = nn.Linear(width, 10)
        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    def build(width=4):
        return Tiny(width)

    def build_with_shape():
        return Tiny(), (1, 3, 16, 16)

    def not_a_model():
        return 42

    def broken():
        raise RuntimeError("boom\\nsecond line")

    CONSTANT = 3
    """
)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(MODEL_SOURCE)
    return path


def test_file_callable_with_input(model_file) -> None:
    w = create_workload(f"{model_file}:build", input_shape=(1, 3, 32, 32), width=6)
    assert w.source == "user" and w.module.conv.out_channels == 6 and not w.module.training
    assert w.reference_output().shape == (1, 10)
    assert w.description == "A tiny user model."


def test_callable_may_return_its_input_shape(model_file) -> None:
    w = create_workload(f"{model_file}:build_with_shape", batch=3)
    assert w.input_shape == (3, 3, 16, 16)
    assert create_workload(f"{model_file}:build_with_shape", input_shape=(2, 3, 8, 8)).input_shape == (2, 3, 8, 8)


def test_module_callable(model_file, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(model_file.parent))
    w = create_workload("my_model:build", input_shape=(1, 3, 8, 8))
    assert w.reference_output().shape == (1, 10)
    w2 = create_workload("latprof.workloads.resnet:resnet_basic", input_shape=(1, 64, 8, 8))
    assert w2.reference_output().shape == (1, 64, 8, 8)


@pytest.mark.parametrize(
    "ref, message",
    [
        ("{file}:build", "input shape unknown; pass --input"),
        ("{file}:nope", "unknown callable in .*'nope'.*valid: .*build"),
        ("{file}:CONSTANT", "is a int, not a callable"),
        ("{file}:not_a_model", "returned int; expected an nn.Module"),
        ("{file}:broken", r"failed: RuntimeError: boom$"),
        ("/no/such/file.py:build", "model file not found"),
        ("no_such_pkg_xyz.mod:build", "cannot import module 'no_such_pkg_xyz.mod'"),
        ("{file}", "malformed model reference"),
        ("missing.onnx", "ONNX file not found"),
    ],
)
def test_bad_references_are_one_line_errors(model_file, ref: str, message: str) -> None:
    with pytest.raises(LatprofError, match=message) as info:
        create_workload(ref.format(file=model_file))
    assert "\n" not in str(info.value)


def test_import_error_inside_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import no_such_module_xyz\n")
    with pytest.raises(LatprofError, match="importing .*bad.py failed: ModuleNotFoundError"):
        create_workload(f"{bad}:build", input_shape=(1, 3, 8, 8))


def test_weights_are_loaded_weights_only(model_file, tmp_path) -> None:
    w = create_workload(f"{model_file}:build", input_shape=(1, 3, 8, 8))
    path = tmp_path / "w.pt"
    torch.save({"state_dict": w.module.state_dict()}, path)
    w2 = create_workload(f"{model_file}:build", input_shape=(1, 3, 8, 8), weights_file=str(path))
    torch.testing.assert_close(w2.reference_output(), w.reference_output())
    unsafe = tmp_path / "unsafe.pt"
    torch.save(types.SimpleNamespace(a=1), unsafe)  # an arbitrary object: refused by weights_only=True
    with pytest.raises(LatprofError, match="weights_only=True"):
        create_workload(f"{model_file}:build", input_shape=(1, 3, 8, 8), weights_file=str(unsafe))
    other = tmp_path / "other.pt"
    torch.save(nn.Linear(2, 2).state_dict(), other)
    with pytest.raises(LatprofError, match="do not fit the model"):
        create_workload(f"{model_file}:build", input_shape=(1, 3, 8, 8), weights_file=str(other))


@pytest.mark.parametrize("package", ["torchvision", "timm"])
def test_missing_package_names_what_to_install(package: str, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # import now fails as if not installed
    with pytest.raises(LatprofError, match=f"install {package} to use {package}:resnet18"):
        create_workload(f"{package}:resnet18")


def test_torchvision_models_built_without_weights(monkeypatch) -> None:
    calls = []

    def get_model(name, weights=None, **kwargs):
        calls.append((name, weights, kwargs))
        return nn.Conv2d(3, 4, 1)

    fake = types.ModuleType("torchvision")
    fake.models = types.SimpleNamespace(list_models=lambda: ["resnet18", "resnet34"], get_model=get_model)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    w = create_workload("torchvision:resnet18", num_classes=10)
    assert w.source == "torchvision" and w.input_shape == (1, 3, 224, 224)
    assert calls == [("resnet18", None, {"num_classes": 10})]
    with pytest.raises(LatprofError, match="unknown torchvision model 'resnet19'.*did you mean"):
        create_workload("torchvision:resnet19")


def test_timm_models_take_their_default_input(monkeypatch) -> None:
    module = nn.Conv2d(3, 4, 1)
    module.pretrained_cfg = {"input_size": (3, 256, 256)}
    fake = types.ModuleType("timm")
    fake.is_model = lambda name: name == "tiny_net"
    fake.list_models = lambda: ["tiny_net"]
    fake.create_model = lambda name, pretrained=False, **kw: module if not pretrained else None
    monkeypatch.setitem(sys.modules, "timm", fake)
    assert create_workload("timm:tiny_net").input_shape == (1, 3, 256, 256)
    with pytest.raises(LatprofError, match="unknown timm model"):
        create_workload("timm:tiny_nett")


def _export(tmp_path, name: str, dynamic: dict | None = None):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    path = tmp_path / name
    torch.onnx.export(model.eval(), (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes=dynamic)
    return path


def test_onnx_file_static_shape(tmp_path) -> None:
    path = _export(tmp_path, "static.onnx")
    w = create_workload(str(path))
    assert w.module is None and w.onnx_path == str(path) and w.source == "onnx"
    assert w.input_shape == (1, 3, 8, 8)
    assert create_workload(str(path), batch=4).input_shape == (4, 3, 8, 8)
    with pytest.raises(LatprofError, match="takes no --arg"):
        create_workload(str(path), width=3)


def test_onnx_file_dynamic_shape_needs_input(tmp_path) -> None:
    batch_only = _export(tmp_path, "batch.onnx", {"x": {0: "N"}})
    assert create_workload(str(batch_only)).input_shape == (1, 3, 8, 8)
    assert create_workload(str(batch_only), batch=2).input_shape == (2, 3, 8, 8)
    spatial = _export(tmp_path, "spatial.onnx", {"x": {0: "N", 2: "H", 3: "W"}})
    with pytest.raises(LatprofError, match=r"shape Nx3xHxW with symbolic dimensions; pass --input"):
        create_workload(str(spatial))
    assert create_workload(str(spatial), input_shape=(1, 3, 16, 16)).input_shape == (1, 3, 16, 16)
    with pytest.raises(LatprofError, match="rank 2"):
        create_workload(str(spatial), input_shape=(1, 3))


def test_cli_bad_user_model_exits_2(tmp_path, capsys) -> None:
    assert main(["profile", "--model", "/no/such/model.py:build", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model file not found" in err
    assert main(["profile", "--model", "torchvision", "--out", str(tmp_path)]) == 2
