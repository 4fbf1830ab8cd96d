"""--precision: INT8 static quantisation (QDQ graph, cache key, output check), refusals, and precision in row identity."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import onnx
import pytest
import torch

from latprof.backends import BackendError, BackendOptions, create_backend
from latprof.backends.onnx_export import export_workload
from latprof.backends.onnx_precision import convert_model, lowp_key, node_counts
from latprof.backends.precision import (
    SQNR_MIN_DB, QuantSettings, check_int8_output, check_precision, precision_fields, sqnr_db,
)
from latprof.cli import main
from latprof.errors import LatprofError
from latprof.results import KEY_FIELDS, row_key, write_csv
from tests.backend_models import tiny_workload

FAST = {"exporter": "torchscript"}  # the dynamo exporter takes seconds per model


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATPROF_CACHE", str(tmp_path / "onnx-cache"))


def _one_line(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    for n in needles:
        assert n in err[0], err[0]
    assert "Traceback" not in err[0]
    return err[0]


# ------------------------------------------------------------------ quantised model and its cache
def test_int8_model_has_qdq_nodes_and_is_cached_beside_the_fp32_file():
    w = tiny_workload()
    fp32 = export_workload(w, "torchscript")
    first = convert_model(fp32, "int8", w, QuantSettings())
    counts = node_counts(first.path)
    # every Conv/Gemm input quantised and dequantised: 3 convs + 1 gemm, weights and activations
    assert counts["QuantizeLinear"] >= 4 and counts["DequantizeLinear"] >= 8, counts
    assert "QLinearConv" not in counts
    assert first.path.parent == fp32.path.parent and first.path.name.startswith(fp32.path.stem + ".int8-")
    props = {p.key: p.value for p in onnx.load(str(first.path)).metadata_props}
    assert props["latprof_lowp_key"] == first.key and json.loads(props["latprof_quant_settings"])["format"] == "QDQ"
    again = convert_model(fp32, "int8", w, QuantSettings())
    assert again.cached and not first.cached and again.path == first.path


def test_quantisation_is_deterministic(tmp_path, monkeypatch):
    """Same FP32 model and settings, two empty caches: byte-identical INT8 files (seeded calibration)."""
    w = tiny_workload()
    files = []
    for name in ("a", "b"):
        monkeypatch.setenv("LATPROF_CACHE", str(tmp_path / name))
        files.append(convert_model(export_workload(w, "torchscript"), "int8", w, QuantSettings()).path.read_bytes())
    assert files[0] == files[1]


def test_qoperator_format_gives_qlinear_ops():
    w = tiny_workload()
    q = convert_model(export_workload(w, "torchscript"), "int8", w, QuantSettings(format="QOperator"))
    counts = node_counts(q.path)
    assert counts.get("QLinearConv", 0) == 3, counts


def test_cache_key_differs_by_every_setting_and_precision():
    w = tiny_workload()
    fp32 = export_workload(w, "torchscript")
    base = lowp_key(fp32, "int8", w, QuantSettings())
    assert lowp_key(fp32, "int8", w, QuantSettings()) == base
    others = [QuantSettings(format="QOperator"), QuantSettings(per_channel=False), QuantSettings(reduce_range=True),
              QuantSettings(activation_type="QUInt8"), QuantSettings(weight_type="QUInt8"),
              QuantSettings(calibration="Percentile"), QuantSettings(calibration_batches=4)]
    keys = {lowp_key(fp32, "int8", w, s) for s in others}
    assert len(keys) == len(others) and base not in keys
    assert lowp_key(fp32, "fp16", w, None) not in keys | {base}
    other_model = export_workload(tiny_workload(batch=2), "torchscript")  # another FP32 file: another key
    assert lowp_key(other_model, "int8", tiny_workload(batch=2), QuantSettings()) != base


def test_fp16_conversion_makes_a_half_model():
    w = tiny_workload()
    half = convert_model(export_workload(w, "torchscript"), "fp16", w)
    model = onnx.load(str(half.path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert all(i.data_type != onnx.TensorProto.FLOAT for i in model.graph.initializer)


# ------------------------------------------------------------------ the backend at int8
def test_ort_cpu_int8_run_records_settings_and_check():
    w = tiny_workload()
    run = create_backend("ort-cpu", BackendOptions(threads=1, extra=FAST, precision="int8",
                                                   quant={"per_channel": False})).prepare(w)
    try:
        run.timer(2)
    finally:
        run.close()
    assert run.check["output_check"] == f"int8: SQNR >= {SQNR_MIN_DB:g} dB vs PyTorch eager FP32"
    assert run.check["output_sqnr_db"] >= SQNR_MIN_DB
    assert run.settings["quant_per_channel"] is False and run.settings["precision"] == "int8"
    assert run.settings["lowp_quant_nodes"]["QuantizeLinear"] >= 4


def test_user_onnx_file_at_int8_is_checked_against_the_fp32_file_and_cached_outside_its_folder(tmp_path):
    from latprof.backends.onnx_export import cache_dir
    from latprof.workloads.registry import Workload

    user_dir = tmp_path / "mine"
    exported = export_workload(tiny_workload(), "torchscript", root=user_dir)
    w = Workload("user.onnx", None, (1, 3, 16, 16), source="onnx", onnx_path=str(exported.path))
    run = create_backend("ort-cpu", BackendOptions(threads=1, precision="int8")).prepare(w)
    run.close()
    assert run.check["output_check"].endswith("vs the FP32 model on ONNX Runtime")
    assert run.check["output_sqnr_db"] >= SQNR_MIN_DB
    lowp = Path(run.settings["lowp_path"])
    assert lowp.parent == cache_dir() and sorted(p.name for p in user_dir.iterdir()) == [exported.path.name]


def test_int8_output_check_fails_a_wrong_model():
    w = tiny_workload()
    w._reference = -w.reference_output()  # eager says the opposite: SQNR about -6 dB
    with pytest.raises(BackendError, match="INT8 output too far from PyTorch eager FP32"):
        create_backend("ort-cpu", BackendOptions(threads=1, extra=FAST, precision="int8")).prepare(w)


def test_torch_backend_refuses_int8_at_prepare_too():
    """Defence in depth: the plan refuses first, but a backend asked directly never runs FP32 under an int8 label."""
    with pytest.raises(LatprofError, match="ort-cpu, ort-mobile"):
        check_precision("int8", ["torch-cpu"])


# ------------------------------------------------------------------ the output-check rule
def test_sqnr_rule_passes_rounding_noise_and_fails_wrong_outputs():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(4, 1000, generator=g, dtype=torch.float64)
    noise = torch.randn(4, 1000, generator=g, dtype=torch.float64)
    unit = noise / noise.norm() * ref.norm()  # noise of the signal's power: 0 dB
    for db, passes in ((30.0, True), (SQNR_MIN_DB + 0.5, True), (SQNR_MIN_DB - 0.5, False), (0.0, False)):
        out = ref + unit * 10 ** (-db / 20)
        assert sqnr_db(out, ref) == pytest.approx(db, abs=1e-6)
        if passes:
            fields = check_int8_output("x", out, ref)
            assert fields["output_sqnr_db"] == pytest.approx(db, abs=1e-6)
            assert 0 <= fields["output_top1_agreement"] <= 1 and fields["output_cosine"] > 0.9
        else:
            with pytest.raises(BackendError, match="SQNR"):
                check_int8_output("x", out, ref)
    with pytest.raises(BackendError):  # NaN never passes
        check_int8_output("x", torch.full_like(ref, float("nan")), ref)
    with pytest.raises(BackendError, match="shape"):
        check_int8_output("x", ref[:2], ref)
    assert check_int8_output("x", ref[0], ref[0])["output_top1_agreement"] is None  # not (batch, classes)
    assert check_int8_output("x", ref, ref)["output_sqnr_db"] == float("inf")


# ------------------------------------------------------------------ refusals (one line, exit 2)
def test_int8_on_torch_cpu_exits_2_naming_the_backends_that_run_it(capsys):
    _one_line(capsys, ["profile", "--model", "conv_bn_relu", "--backend", "torch-cpu", "--precision", "int8"],
              "--precision int8 is not available on torch-cpu", "ort-cpu, ort-mobile")


def test_fp16_on_a_cpu_backend_exits_2(capsys):
    _one_line(capsys, ["profile", "--model", "conv_bn_relu", "--backend", "ort-cpu", "--precision", "fp16"],
              "not available on ort-cpu", "torch-cuda")


def test_sweep_int8_on_torch_cpu_exits_2(capsys):
    _one_line(capsys, ["sweep", "--guideline", "g1", "--backend", "torch-cpu", "--precision", "int8"],
              "not available on torch-cpu")


@pytest.mark.parametrize("argv, needle", [
    (["--precision", "fp32", "--quant", "per_channel=false"], "needs --precision int8"),
    (["--precision", "int8", "--quant", "per_chanel=false"], "did you mean per_channel"),
    (["--precision", "int8", "--quant", "per_channel=maybe"], "true or false"),
    (["--precision", "int8", "--quant", "format=QDQQ"], "QOperator"),
    (["--precision", "int8", "--quant", "calibration_batches=0"], "positive integer"),
    (["--precision", "int8", "--quant", "novalue"], "KEY=VALUE"),
    (["--precision", "int4"], "invalid choice"),
])
def test_bad_precision_or_quant_exits_2(capsys, argv, needle):
    _one_line(capsys, ["profile", "--model", "conv_bn_relu", "--backend", "ort-cpu", *argv], needle)


def test_per_block_refuses_int8(capsys):
    _one_line(capsys, ["profile", "--model", "mobilenet_v2_x1_0", "--backend", "ort-cpu", "--per-block",
                       "--precision", "int8"], "--per-block measures fp32 only")


def test_quant_parse():
    q = QuantSettings.parse(["per_channel=off", "calibration_batches=3", "activation_type=QUInt8"])
    assert (q.per_channel, q.calibration_batches, q.activation_type) == (False, 3, "QUInt8")
    assert q.label() == "QDQ per-tensor A:U8 W:S8 MinMax x3"
    assert QuantSettings(reduce_range=True).label().endswith(" reduce-range")


# ------------------------------------------------------------------ rows: precision in every row and its identity
def test_precision_is_part_of_row_identity_and_old_rows_read_as_fp32():
    assert "precision" in KEY_FIELDS and "quantization" in KEY_FIELDS
    base = {"workload": "w", "backend": "ort-cpu", "threads": 1, "batch": 1, "input_shape": "1x3x8x8"}
    fp32 = {**base, **precision_fields("fp32", None)}
    int8 = {**base, **precision_fields("int8", None)}
    per_tensor = {**base, **precision_fields("int8", {"per_channel": False})}
    assert len({row_key(fp32), row_key(int8), row_key(per_tensor)}) == 3
    assert row_key(base) == row_key(fp32)  # a row written before precision was recorded is an FP32 reading
    assert int8["quant_format"] == "QDQ" and fp32["quant_format"] is None and fp32["quantization"] == ""


@pytest.mark.slow  # the whole profile path: dynamo export, quantisation, counting, measuring (~25 s here)
def test_profile_writes_int8_row_with_settings_and_check(tmp_path):
    from latprof.measure.protocol import MeasureConfig
    from latprof.profile import ProfileRequest, run_profile
    from latprof.run.engine import RunOptions

    files = run_profile(ProfileRequest(
        models=["conv_bn_relu"], backends=["ort-cpu"], threads=1, precision="int8",
        config=MeasureConfig(target_ci=0.5, max_time_s=0.5, min_time_s=0.1), out=tmp_path / "out",
        run=RunOptions(in_process=True)))
    [row] = files.rows
    assert row["status"] == "ok", row.get("error")
    assert row["precision"] == "int8" and row["quantization"] == QuantSettings().label()
    assert row["quant_per_channel"] is True and row["quant_calibration_batches"] == QuantSettings().calibration_batches
    assert row["output_check"].startswith("int8: SQNR") and row["output_sqnr_db"] >= SQNR_MIN_DB
    csv = (tmp_path / "out" / "results.csv").read_text().splitlines()
    header = csv[0].split(",")
    assert csv[1].split(",")[header.index("precision")] == "int8"


def test_csv_tells_int8_from_fp32(tmp_path):
    rows = [{"workload": "w", "backend": "ort-cpu", "status": "ok", **precision_fields(p, None)}
            for p in ("fp32", "int8")]
    import pandas as pd

    df = pd.read_csv(write_csv(rows, tmp_path / "r.csv"))
    assert list(df["precision"]) == ["fp32", "int8"]
    assert df["quantization"].fillna("").tolist() == ["", QuantSettings().label()]


# ------------------------------------------------------------------ specs: FP32 vs INT8 as variants
def _spec(tmp_path: Path, variant_extra: str) -> Path:
    p = tmp_path / "lowp.toml"
    p.write_text(f"""
[experiment]
id = "lowp"
block = "pointwise_pair"
repeat = 1
input_hw = [8, 8]
input_channels = "c1"
scales = [1]
scale_args = ["c1", "c2"]
baseline = "fp32"

[[variants]]
name = "fp32"
arm = {{ c1 = 8, c2 = 8 }}

[[variants]]
name = "int8"
expect = "faster"
arm = {{ c1 = 8, c2 = 8 }}
{variant_extra}
""")
    return p


def test_spec_variant_precision_and_quant(tmp_path):
    from latprof.experiments.spec import load_spec

    spec = load_spec(_spec(tmp_path, 'precision = "int8"\nquant = { per_channel = false }'))
    assert [v.precision for v in spec.variants] == [None, "int8"]
    assert spec.variants[1].quant == asdict(QuantSettings(per_channel=False))
    assert spec.precisions("fp32") == ["fp32", "int8"]
    with pytest.raises(LatprofError, match=r"variants\[1\] \(int8\)\.precision"):
        load_spec(_spec(tmp_path, 'precision = "int4"'))
    with pytest.raises(LatprofError, match=r"\.quant: INT8 settings need precision"):
        load_spec(_spec(tmp_path, 'quant = { per_channel = false }'))
    with pytest.raises(LatprofError, match="did you mean per_channel"):
        load_spec(_spec(tmp_path, 'precision = "int8"\nquant = { per_chanel = false }'))


def test_sweep_plan_leaves_int8_specs_out_on_torch_backends(tmp_path):
    from latprof.experiments.sweep import SweepRequest, plan_units, precision_skips, unit_rows_template

    path = _spec(tmp_path, 'precision = "int8"')
    request = SweepRequest(spec_paths=[path], guidelines=["g1"], backends=["torch-cpu", "ort-cpu"], quick=True)
    units = plan_units(request)
    assert sorted((u.spec.id, u.backend) for u in units) == [("g1", "ort-cpu"), ("g1", "torch-cpu"), ("lowp", "ort-cpu")]
    assert precision_skips(request) == ["lowp not run on torch-cpu: its variants need fp32/int8"]
    lowp = next(u for u in units if u.spec.id == "lowp")
    assert [(r["variant"], r["precision"]) for r in unit_rows_template(lowp)] == [("fp32", "fp32"), ("int8", "int8")]
    with pytest.raises(LatprofError, match="use --backend ort-cpu,ort-mobile"):
        plan_units(SweepRequest(spec_paths=[path], backends=["torch-cpu"], quick=True))


def test_int8_sweep_defaults_to_the_backends_that_run_it():
    from latprof.experiments.sweep import SweepRequest, plan_units

    units = plan_units(SweepRequest(guidelines=["g1"], precision="int8", quick=True))
    assert {u.backend for u in units} == {"ort-cpu", "ort-mobile"}
    assert all(r["precision"] == "int8" for u in units for r in unit_rows_template_of(u))


def unit_rows_template_of(unit):
    from latprof.experiments.sweep import unit_rows_template

    return unit_rows_template(unit)


def test_shipped_int8_specs_load_and_are_not_in_all():
    from latprof.experiments.spec import resolve_spec
    from latprof.experiments.sweep import select_specs

    for sid, block in (("int8-pointwise", "pointwise_pair"), ("int8-depthwise", "conv_bn_relu")):
        spec = resolve_spec(sid)
        assert spec.block == block and spec.baseline == "fp32"
        assert [v.precision for v in spec.variants] == ["fp32", "int8", "int8"]
        assert spec.variants[2].quant["per_channel"] is False
    assert [s.id for s in select_specs(["all"], [])] == ["g1", "g2", "g3", "g4"]
