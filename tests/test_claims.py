"""The seed papers' claim experiments (``kernels/`` specs with ``group = "claims"``): the spec extensions they use,
their FLOPs against the papers' own figures, ``--guideline claims``/``all``, curve verdicts, and the claims table."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from latprof.analysis.verdicts import CONFIRMS, CONTRADICTS, DOES_NOT_HOLD, HOLDS
from latprof.catalog import list_topic
from latprof.cost import workload_counts
from latprof.errors import LatprofError
from latprof.experiments.spec import list_specs, load_spec, resolve_spec
from latprof.experiments.sweep import SweepRequest, SweepUnit, finish_sweep_unit, flops_constancy, plan_units, select_specs
from latprof.run.units import Unit

CLAIMS = {
    "dwsep", "mnv1-alpha", "mnv1-rho", "shufflenet-gconv", "shuffle-cost", "igcv1", "igcv2", "lowrank", "igcv3",
    "micronet-pw", "micronet-dw", "micronet-act", "fused-mbconv", "effnet-scaling", "design-dilated",
    "design-factorized", "design-gn", "design-depth",
}
CURVES = {"mnv1-alpha", "mnv1-rho", "effnet-scaling", "design-depth"}
# Low precision (FP32 vs INT8, --precision): claims too, specified and tested with the precision work
# (tests/test_precision.py); their sources state gains for whole networks, so they carry no per-block paper figure.
INT8 = {"int8-pointwise", "int8-depthwise"}


@pytest.fixture(scope="module")
def claims():
    return {s.id: s for s in list_specs("claims")}


def _counts(spec, variant, scale=1):
    return workload_counts(spec.workload(spec.variant(variant), scale, "arm", 1))


def _flops_predicted(spec, variant, scale=1):
    return _counts(spec, spec.baseline, scale)["mult_adds"] / _counts(spec, variant, scale)["mult_adds"]


def test_every_claim_is_listed_with_claim_source_and_direction(claims):
    listed = {x["id"]: x for x in list_topic("guidelines")}
    assert set(claims) == CLAIMS | INT8
    assert {i for i, x in listed.items() if x["group"] == "claims"} == CLAIMS | INT8
    assert {i for i, x in listed.items() if x["group"] == "guidelines"} == {"g1", "g2", "g3", "g4"}
    for sid, spec in ((i, claims[i]) for i in CLAIMS):
        assert listed[sid]["claim"] and listed[sid]["source"], sid
        assert all(v.expect in ("faster", "slower") for v in spec.variants if v.name != spec.baseline), sid
        assert spec.curve == (sid in CURVES)
        assert spec.key in spec.variants and spec.key.name != spec.baseline
        assert spec.key.paper_figure, sid  # the claims table shows the paper's own figure beside the key ratio


def test_guideline_words_all_and_claims():
    assert [s.id for s in select_specs(["all"], [])] == ["g1", "g2", "g3", "g4"]
    assert {s.id for s in select_specs(["claims"], [])} == CLAIMS | INT8
    assert [s.id for s in select_specs(["g2", "dwsep", "g2"], [])] == ["g2", "dwsep"]
    with pytest.raises(LatprofError, match="valid: .*claims"):
        select_specs(["nope"], [])
    units = plan_units(SweepRequest(guidelines=["claims"], backends=["ort-mobile"], quick=True))
    assert {u.spec.id for u in units} == CLAIMS | INT8 and {u.scale for u in units} == {1}


@pytest.mark.slow
def test_claim_flops_match_the_derivations():
    exact = {  # baseline mult_adds / variant mult_adds, from each spec's comment
        ("dwsep", "depthwise separable"): 1 / (1 / 64 + 1 / 9),
        ("lowrank", "rank 10"): 5.0, ("lowrank", "rank 25"): 2.0,
        ("micronet-pw", "Micro-Factorized"): 8.0,
        ("micronet-dw", "5x1 + 1x5 depthwise"): 2.5,
        ("design-dilated", "3x3 d=2"): 25 / 9,
        ("design-factorized", "5x1 + 1x5"): 2.5,
        ("igcv1", "IGC L=4"): 9 * 64 / (9 * 16 + 4),
        ("shuffle-cost", "shuffle"): 1.0, ("design-gn", "GroupNorm"): 1.0, ("micronet-act", "h-swish"): 1.0,
    }
    for (sid, variant), want in exact.items():
        spec = resolve_spec(sid)
        got = _flops_predicted(spec, variant)
        # BN and bias-free convs only: mult_adds are the convs' alone, so the ratios are exact
        assert got == pytest.approx(want, rel=2e-3 if sid in ("dwsep", "igcv1") else 1e-9), (sid, variant, got)


def test_depth_curve_holds_flops_within_two_percent():
    spec = resolve_spec("design-depth")
    for scale in spec.scales:
        flops = [_counts(spec, v.name, scale)["mult_adds"] for v in spec.variants]
        assert max(flops) / min(flops) - 1 < 0.02
        assert [spec.block_args(v, scale, "arm")["depth"] for v in spec.variants] == [8, 4, 2, 1]


def test_fused_mbconv_has_more_flops_and_the_papers_speed_ratio():
    spec = resolve_spec("fused-mbconv")
    flops = [_counts(spec, v.name)["mult_adds"] for v in spec.variants]
    assert flops == sorted(flops) and flops[-1] > 3 * flops[0]  # more FLOPs, claimed faster
    assert spec.paper_speed_ratio(spec.key, 1, "arm") == pytest.approx(216 / 155, rel=1e-3)


@pytest.mark.parametrize("sid", ["mnv1-alpha", "mnv1-rho"])
def test_mobilenet_curves_reproduce_the_papers_mult_adds(sid):
    spec = resolve_spec(sid)
    for v in spec.variants[1:]:
        assert _flops_predicted(spec, v.name) == pytest.approx(v.paper_ratio, rel=0.03), v.name
        assert spec.paper_ratio_metric == "mult_adds"
    assert spec.input_shape(spec.variant("128") if sid == "mnv1-rho" else spec.key, 1, "arm", 1)[1:] in (
        (3, 128, 128), (3, 224, 224))


def test_flops_constancy_ignores_claims():
    rows = [{"experiment": "dwsep", "experiment_group": "claims", "channels": "arm", "scale": 1, "variant": v,
             "mult_adds": m} for v, m in (("a", 100), ("b", 10))]
    assert flops_constancy(rows) == []
    assert flops_constancy([{**r, "experiment_group": "guidelines"} for r in rows])


# ------------------------------------------------------------------ spec format
BASE = """
[experiment]
id = "mine"
group = "claims"
block = "conv_norm"
repeat = 1
input_hw = [8, 8]
input_channels = "in_channels"
scales = [1]
scale_args = ["in_channels"]
baseline = "a"
paper_ratio_metric = "mult_adds"

[[variants]]
name = "a"
arm = { in_channels = 8 }

[[variants]]
name = "b"
block = "depthwise_separable"
expect = "faster"
input_hw = [4, 4]
arm = { in_channels = 8, out_channels = 8 }
paper_ratio = 2.0
paper_figure = "twice as cheap"
"""


def _spec(tmp_path, text):
    p = tmp_path / "mine.toml"
    p.write_text(text)
    return load_spec(p)


def test_variant_block_resolution_and_paper_ratio(tmp_path):
    spec = _spec(tmp_path, BASE)
    b = spec.variant("b")
    assert (b.block, b.input_hw, b.paper_ratio, b.paper_figure) == ("depthwise_separable", (4, 4), 2.0, "twice as cheap")
    assert spec.workload(b, 1, "arm", 1).name == "mine:depthwise_separable*1"
    assert spec.input_shape(b, 1, "arm", 1) == (1, 8, 4, 4)
    assert spec.paper_speed_ratio(b, 1, "arm") is None  # a mult-adds ratio is not a speed


@pytest.mark.parametrize("change, field", [
    (('block = "depthwise_separable"', 'block = "nope"'), "variants[1] (b).block"),
    (("arm = { in_channels = 8, out_channels = 8 }", 'arm = { in_channels = 8, norm = "gn" }'),
     "variants[1] (b).arm.norm"),  # conv_norm's argument, not depthwise_separable's
    (('paper_ratio_metric = "mult_adds"', 'paper_ratio_metric = "joules"'), "experiment.paper_ratio_metric"),
    (('paper_ratio_metric = "mult_adds"\n', ""), "variants[1] (b).paper_ratio"),
    (('group = "claims"', 'group = "misc"'), "experiment.group"),
    (('baseline = "a"', 'baseline = "a"\nkey_variant = "z"'), "experiment.key_variant"),
    ([('baseline = "a"', 'baseline = "b"\ncurve = true'), ('name = "a"\n', 'name = "a"\nexpect = "slower"\n')],
     "experiment.curve"),
    (("input_hw = [4, 4]", "input_hw = [4]"), "variants[1] (b).input_hw"),
])
def test_malformed_claim_spec_names_the_field(tmp_path, change, field):
    text = BASE
    for old, new in change if isinstance(change, list) else [change]:
        text = text.replace(old, new)
    with pytest.raises(LatprofError) as exc:
        _spec(tmp_path, text)
    assert f"field {field}" in str(exc.value)


def test_fixed_input_channels_for_networks(tmp_path):
    text = BASE.replace('input_channels = "in_channels"', "input_channels = 3").replace(
        'scale_args = ["in_channels"]', "scale_args = []")
    spec = _spec(tmp_path, text)
    assert spec.input_shape(spec.variant("a"), 1, "arm", 2) == (2, 3, 8, 8)


# ------------------------------------------------------------------ curve verdicts
def _row(name, samples, ident):
    lat = sorted(samples)
    return {**ident, "variant": name, "status": "ok", "samples_ms": samples, "n_samples": len(samples),
            "latency_ci_low_ms": lat[len(lat) // 4], "latency_ci_high_ms": lat[3 * len(lat) // 4],
            "mult_adds": 100, "mem_access": 100}


def _finish(spec, medians):
    ident = {"experiment": spec.id, "backend": "torch-cpu", "scale": 1}
    rows = [_row(v.name, [m * (1 + 0.001 * (i % 5)) for i in range(40)], ident)
            for v, m in zip(spec.variants, medians)]
    unit = Unit("sweep", "t", {}, [], extra={"sweep_unit": SweepUnit(spec, "torch-cpu", 1, "arm", 1, 1), "margin": 0.05})
    return {r["variant"]: r for r in finish_sweep_unit(unit, rows)}


def test_a_curve_is_judged_step_by_step():
    spec = resolve_spec("design-depth")  # 8 -> 4 -> 2 -> 1 layers, each expected faster than the one before
    monotone = _finish(spec, [8.0, 6.0, 4.0, 2.0])
    assert {r["verdict"] for r in monotone.values()} == {HOLDS}
    assert monotone["2 layers"]["reference_variant"] == "4 layers"
    assert monotone["2 layers"]["speed_vs_previous"] == pytest.approx(6.0 / 4.0, rel=0.01)
    assert monotone["2 layers"]["speed_vs_baseline"] == pytest.approx(2.0, rel=0.01)
    # every variant faster than the baseline, but 2 layers slower than 4: the curve does not hold
    kinked = _finish(spec, [8.0, 4.0, 6.0, 2.0])
    assert kinked["2 layers"]["speed_vs_baseline"] > 1
    assert kinked["2 layers"]["variant_outcome"] == CONTRADICTS and kinked["1 layer"]["variant_outcome"] == CONFIRMS
    assert {r["verdict"] for r in kinked.values()} == {DOES_NOT_HOLD}


def test_claim_rows_carry_predictions_and_the_papers_figure():
    spec = resolve_spec("lowrank")
    rows = _finish(spec, [3.0, 2.0, 1.0])
    for r in rows.values():
        for key in ("verdict", "speed_vs_baseline", "speed_vs_baseline_ci_low", "speed_vs_baseline_ci_high",
                    "flops_predicted_speed_vs_baseline", "mac_predicted_speed_vs_baseline"):
            assert r[key] is not None and not (isinstance(r[key], float) and math.isnan(r[key])), key
        assert r["experiment_group"] == "claims" and r["claim"] and r["source"] and r["key_variant"] == "rank 10"
    assert rows["rank 10"]["paper_ratio"] == 5.0 and rows["rank 10"]["paper_ratio_metric"] == "mult_adds"
    assert rows["rank 25"]["paper_ratio_metric"] == "" and rows["rank 10"]["reference_variant"] == "dense 100x100"


# ------------------------------------------------------------------ report
def test_claims_table_in_the_report(tmp_path):
    import json

    from latprof.report import build_report
    from latprof.results import SCHEMA_VERSION

    spec = resolve_spec("lowrank")
    rows = _finish(spec, [3.0, 2.0, 1.0])
    path = tmp_path / "results.jsonl"
    with path.open("w") as f:
        for r in rows.values():
            r.update(kind="sweep", schema_version=SCHEMA_VERSION, guideline_title=spec.title, baseline_variant=spec.baseline,
                     channels="arm", threads=1, batch=1, latency_median_ms=1.0, hardware_id="h", workload="w")
            f.write(json.dumps({"record": "result", **r}) + "\n")
    out = build_report([path], tmp_path / "report.html")
    html = Path(out[0] if isinstance(out, tuple) else out).read_text()
    assert "Seed-paper claims" in html and "rank 10 vs dense 100x100" in html
    assert "paper ratio 5.00× (mult-adds)" in html
    assert "Which guidelines hold" not in html  # no guideline rows: no guideline summary
    claims_csv = next(tmp_path.glob("*_claims.csv")).read_text()
    assert "flops_predicted_speed_vs_baseline" in claims_csv


# ------------------------------------------------------------------ command line
def test_cli_lists_claims_and_rejects_an_unknown_id(capsys):
    import json

    from latprof.cli import main

    assert main(["list", "guidelines", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    beyond = [x for x in items if x["id"] not in ("g1", "g2", "g3", "g4")]
    assert len(beyond) >= 10 and all(x["claim"] and x["source"] for x in beyond)
    assert main(["list", "guidelines"]) == 0
    assert "claims" in capsys.readouterr().out  # the group column of the table
    assert main(["sweep", "--guideline", "dwsepp", "--backend", "torch-cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dwsep" in err[0] and "claims" in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("spec", list_specs(), ids=lambda s: s.id)
def test_every_shipped_spec_builds_at_every_scale(spec):
    """Every variant of every shipped experiment builds and traces at each of its scales and channel sets: a scaled
    argument that leaves a stacked block's widths mismatched (igcv2 at x2 did) fails here, not in a user's sweep."""
    for v in spec.variants:
        for channels in v.args:
            for scale in spec.scales:
                counts = workload_counts(spec.workload(v, scale, channels, 1))
                assert counts["mult_adds"] > 0, (spec.id, channels, scale, v.name)
