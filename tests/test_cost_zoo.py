"""Counting a zoo network from its exported ONNX graph gives the PyTorch count (BN folded by the exporter).

The networks' counts against their published figures are checked in test_workloads_networks.py, from the one data
file latprof/workloads/published.toml.
"""

from __future__ import annotations

import warnings

import pytest

from latprof.cost import count_workload
from tests.test_workloads_onnx import SMALL_INPUT


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "mobilenet_v3_small"])
def test_exported_zoo_network_onnx_count_equals_torch(name: str) -> None:
    """Exported as ONNX Runtime backends export it (latprof's default exporter, no fallback), into the session's
    export cache at test_workloads_onnx.py's input, so the two files share one export of each network."""
    from latprof.backends.onnx_export import export_workload
    from latprof.cost import count_onnx
    from latprof.workloads import create_workload

    wl = create_workload(name, input_shape=SMALL_INPUT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = export_workload(wl)
        assert exported.exporter == "dynamo", exported.note
        onnx_totals = count_onnx(exported.path).totals
        folded = count_workload(wl, fold_bn=True).totals
    assert onnx_totals["mult_adds"] == folded["mult_adds"] == count_workload(wl).totals["mult_adds"]
    assert onnx_totals["elementwise_ops"] == folded["elementwise_ops"]  # the exporter folds BN
