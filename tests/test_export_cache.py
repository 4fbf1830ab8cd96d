"""ONNX export cache keyed by what the model computes (issue 12): variants that differ only in ``forward`` get their
own cached files, and ONNX Runtime runs the model PyTorch eager runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from latprof.backends import BackendOptions, create_backend, onnx_export
from latprof.backends.onnx_export import KEY_VERSION, export_workload, key_ingredients, workload_hash
from latprof.experiments.spec import resolve_spec
from latprof.workloads import create_workload
from latprof.workloads.registry import Workload

FAST = {"exporter": "torchscript"}  # seconds faster per model than dynamo; one test uses the default (dynamo)


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "onnx-cache"
    monkeypatch.setenv("LATPROF_CACHE", str(root))
    return root


def _prepare_checked(workload: Workload, extra: dict | None = None) -> dict:
    """ort-cpu's prepare compares with eager and raises BackendError on a mismatch; return the run's settings."""
    run = create_backend("ort-cpu", BackendOptions(threads=1, extra=extra or {})).prepare(workload)
    try:
        assert run.max_abs_error is not None
        return run.settings
    finally:
        run.close()


def _assert_distinct_and_correct(workloads: list[Workload], cache: Path, extra: dict | None = None) -> None:
    paths = []
    for w in workloads:  # in order: the later ones would have hit the first one's file under the old key
        settings = _prepare_checked(w, extra)
        assert settings["output_check"] == "compared with PyTorch eager"
        assert not settings["onnx_cached"], f"{w.name} {w.kwargs} reused another variant's file"
        paths.append(settings["onnx_path"])
    assert len(set(paths)) == len(workloads)
    assert sorted(p.name for p in cache.glob("*.onnx")) == sorted(Path(p).name for p in paths)


def test_resnet_bottleneck_shortcut_variants_default_exporter(cache):
    """The reproduction of issue 12 with the default (dynamo) exporter: shortcut=True then shortcut=False."""
    on = create_workload("resnet_bottleneck", in_channels=32, mid_channels=8, shortcut=True)
    off = create_workload("resnet_bottleneck", in_channels=32, mid_channels=8, shortcut=False)
    _assert_distinct_and_correct([on, off], cache)
    again = _prepare_checked(create_workload("resnet_bottleneck", in_channels=32, mid_channels=8, shortcut=False))
    assert again["onnx_cached"]  # the same model still hits its own file


@pytest.mark.parametrize("guideline", ["g3", "g4"])
def test_guideline_variants_get_distinct_files(cache, guideline):
    spec = resolve_spec(guideline)
    workloads = [spec.workload(v, 1, "arm", 1) for v in spec.variants]
    assert len({w.name for w in workloads}) == 1  # one name for all variants: the name alone cannot key the cache
    _assert_distinct_and_correct(workloads, cache, FAST)


def test_attribute_flip_on_the_same_module_changes_the_key(cache):
    """Same object, same weights, same repr: only the ``use_shortcut`` attribute that ``forward`` reads differs."""
    w = create_workload("resnet_bottleneck", in_channels=32, mid_channels=8)
    before = workload_hash(w, "torchscript", 18)
    assert workload_hash(w, "torchscript", 18) == before  # deterministic
    repr_before = repr(w.module)
    w.module.use_shortcut = False
    assert repr(w.module) == repr_before
    assert workload_hash(w, "torchscript", 18) != before


def test_structure_alone_tells_forward_variants_apart(cache, monkeypatch):
    """The second line of defence: with the recorded computation unavailable, class attributes still differ."""
    monkeypatch.setattr(onnx_export, "computation_digest", lambda module, inputs: "unavailable: test")
    w = create_workload("resnet_bottleneck", in_channels=32, mid_channels=8)
    before = workload_hash(w, "torchscript", 18)
    w.module.use_shortcut = False
    assert workload_hash(w, "torchscript", 18) != before
    spec = resolve_spec("g3")
    series = spec.workload("2-fragment-series", 1, "arm", 1)
    parallel = spec.workload("2-fragment-parallel", 1, "arm", 1)
    parallel.kwargs = dict(series.kwargs)  # identity alike too: only the modules' attribute differs
    assert workload_hash(series, "torchscript", 18) != workload_hash(parallel, "torchscript", 18)


def test_computation_alone_tells_forward_variants_apart(cache, monkeypatch):
    """The recorded aten ops differ where identity, module tree, weights and attributes all look alike."""
    monkeypatch.setattr(onnx_export, "structure_digest", lambda module: "hidden")
    spec = resolve_spec("g3")
    series = spec.workload("2-fragment-series", 1, "arm", 1)
    parallel = spec.workload("2-fragment-parallel", 1, "arm", 1)
    parallel.kwargs = dict(series.kwargs)
    assert workload_hash(series, "torchscript", 18) != workload_hash(parallel, "torchscript", 18)
    w = create_workload("resnet_bottleneck", in_channels=32, mid_channels=8)
    before = workload_hash(w, "torchscript", 18)
    w.module.use_shortcut = False
    assert workload_hash(w, "torchscript", 18) != before
    digest = onnx_export.computation_digest
    assert digest(w.module, w.make_inputs()) == digest(w.module, w.make_inputs())  # deterministic


def test_key_records_its_ingredients_and_version(cache, monkeypatch):
    w = create_workload("resnet_bottleneck", in_channels=32, mid_channels=8, shortcut=False)
    ing = key_ingredients(w, 18)
    assert ing["key_version"] == KEY_VERSION >= 2
    assert ing["workload"]["name"] == "resnet_bottleneck"
    assert ing["workload"]["kwargs"]["shortcut"] is False
    assert ing["workload"]["input_shape"] == [1, 32, 56, 56]
    assert not ing["computation"].startswith("unavailable")
    assert set(ing["versions"]) >= {"torch", "onnx", "onnxscript"}
    before = workload_hash(w, "torchscript", 18)
    monkeypatch.setattr(onnx_export, "KEY_VERSION", KEY_VERSION + 1)
    assert workload_hash(w, "torchscript", 18) != before  # an older key's entries are never reused

    exported = export_workload(w, "torchscript")
    import onnx

    props = {p.key: p.value for p in onnx.load(str(exported.path), load_external_data=False).metadata_props}
    assert props["latprof_cache_key"] == exported.workload_hash
    assert exported.workload_hash in exported.path.name


def test_identity_is_in_the_key(cache):
    a = create_workload("resnet_bottleneck", in_channels=32, mid_channels=8)
    b = create_workload("resnet_bottleneck", in_channels=32, mid_channels=8)
    assert workload_hash(a, "torchscript", 18) == workload_hash(b, "torchscript", 18)
    b.name = "another_name"
    assert workload_hash(a, "torchscript", 18) != workload_hash(b, "torchscript", 18)
    c = create_workload("resnet_bottleneck", in_channels=32, mid_channels=8)
    c.origin = {"file_sha256": "0" * 64}
    assert workload_hash(a, "torchscript", 18) != workload_hash(c, "torchscript", 18)
    with torch.no_grad():
        next(c.module.parameters()).add_(1.0)
    c.origin = {}
    assert workload_hash(a, "torchscript", 18) != workload_hash(c, "torchscript", 18)


def test_user_file_content_is_in_the_key(cache, tmp_path):
    """Two edits of one user file with the same module tree and weights: different keys, different files."""
    model = tmp_path / "mymodel.py"
    template = (
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 3, 1)\n"
        "    def forward(self, x):\n"
        "        return {body}\n"
        "def build():\n"
        "    return Net(), (1, 3, 8, 8)\n"
    )
    model.write_text(template.format(body="self.conv(x)"))
    first = create_workload(f"{model}:build")
    assert first.origin["file_sha256"]
    model.write_text(template.format(body="self.conv(x) + x"))
    second = create_workload(f"{model}:build")
    assert first.origin["file_sha256"] != second.origin["file_sha256"]
    _assert_distinct_and_correct([first, second], cache, FAST)


@pytest.mark.slow
def test_cli_sweep_g3_g4_ort_cpu_has_no_error_rows(tmp_path, monkeypatch):
    """End to end through the CLI (the sweep engine may change; the command line stays): an empty cache, every
    variant of G3 and G4 on ort-cpu, no error row (one pass: the adaptive budget and the roofline are off). The
    exports happen in the worker processes, which inherit ``LATPROF_CACHE``; the smallest time caps, since what is
    checked is that every variant exports and runs, not its latency."""
    from latprof.cli import main

    out = tmp_path / "sweep"
    monkeypatch.setenv("LATPROF_CACHE", str(tmp_path / "onnx-cache"))
    code = main(["sweep", "--guideline", "g3,g4", "--backend", "ort-cpu", "--quick", "--max-time", "0.3",
                 "--min-time", "0.05", "--budget", "1", "--no-roofline", "--out", str(out)])
    assert code in (0, 1)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    errors = [r for r in rows if r.get("status") == "error"]
    assert not errors, [(r.get("workload"), r.get("variant"), r.get("error")) for r in errors][:5]
    measured = [r for r in rows if r.get("status") == "ok" and r.get("backend") == "ort-cpu"]
    assert measured
    variants = {(str(r.get("workload")), str(r.get("variant"))) for r in measured}
    assert len(variants) >= 9  # 5 G3 and 4 G4 variants
    assert len(list((tmp_path / "onnx-cache").glob("g3*.onnx"))) >= 5
    assert len(list((tmp_path / "onnx-cache").glob("g4*.onnx"))) >= 4
