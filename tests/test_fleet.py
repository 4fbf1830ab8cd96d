"""Fleet runs on Ray (latprof/run/fleet.py): node naming and selection, per-node plans, the missing-Ray message, and
real runs on a local Ray cluster (a head with no CPUs and two nodes offering {"latprof": 1}), every Ray process
bound to 127.0.0.1.

The cluster tests share one cluster (module scope) and measure tiny units (conv_bn_relu on torch-cpu, 0.3 s caps):
completeness, no duplicates, one unit at a time per node (from the recorded start/end times), --nodes, --spread,
--resume across fleet runs, and a node removed mid-run.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from latprof.cli import main
from latprof.errors import LatprofError
from latprof.results import read_results
from latprof.run import fleet
from latprof.run.fleet import FleetNode, node_names, plan_jobs, select_nodes
from latprof.run.units import Unit

TINY = ["--backend", "torch-cpu", "--threads", "1", "--max-time", "0.3", "--min-time", "0.05"]


# ------------------------------------------------------------------ without a cluster
def test_executor_ray_without_ray_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it is not installed
    code = main(["profile", "--model", "conv_bn_relu", "--executor", "ray", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and 'pip install "latprof[ray]"' in err[0]
    assert not (tmp_path / "o" / "results.jsonl").exists()


@pytest.mark.parametrize("flags", [["--spread"], ["--nodes", "a"], ["--ray-address", "127.0.0.1:6379"]])
def test_fleet_flags_need_executor_ray(flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--guideline", "g2", "--out", str(tmp_path), *flags]) == 2
    assert "add --executor ray" in capsys.readouterr().err


def test_malformed_ray_address(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["profile", "--model", "conv_bn_relu", "--executor", "ray", "--ray-address", "nohost",
                 "--out", str(tmp_path)]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


def _node(nid: str, host: str, labels: dict[str, str] | None = None, backends: tuple[str, ...] = ("torch-cpu",),
          cores: int = 4) -> FleetNode:
    return FleetNode(nid, host, labels or {}, backends=list(backends),
                     unavailable={"torch-cuda": "no CUDA device"}, default_threads={b: cores for b in backends},
                     logical_cores=cores, environment={"hardware_id": f"hw-{host}"})


def test_node_names_label_hostname_and_collisions() -> None:
    nodes = [_node("aaaaaa01", "box"), _node("bbbbbb02", "box"), _node("cccccc03", "lab", {"latprof-node": "gpu"}),
             _node("dddddd04", "solo")]
    node_names(nodes)
    assert [n.name for n in nodes] == ["box-aaaaaa", "box-bbbbbb", "gpu", "solo"]
    twins = [_node("e1", "x", {"latprof-node": "same"}), _node("e2", "y", {"latprof-node": "same"})]
    with pytest.raises(LatprofError, match="latprof-node=same"):
        node_names(twins)


def test_select_nodes_by_label_name_and_id() -> None:
    nodes = [_node("abcdef0001", "a", {"arch": "arm", "latprof-node": "pi"}), _node("fedcba0002", "b", {"arch": "x86"})]
    node_names(nodes)
    assert [n.name for n in select_nodes(nodes, None)] == ["pi", "b"]
    assert [n.name for n in select_nodes(nodes, "arch=x86")] == ["b"]
    assert [n.name for n in select_nodes(nodes, "pi")] == ["pi"]
    assert [n.name for n in select_nodes(nodes, "fedcba,pi")] == ["b", "pi"]
    with pytest.raises(LatprofError, match="no fleet node carries"):
        select_nodes(nodes, "arch=riscv")
    with pytest.raises(LatprofError, match="unknown node"):
        select_nodes(nodes, "nosuch")
    with pytest.raises(LatprofError, match="not both"):
        select_nodes(nodes, "arch=arm,pi")


def _unit(backend: str, explicit: bool) -> Unit:
    t = {"record": "result", "workload": "w", "backend": backend, "threads": 2, "experiment": "", "variant": ""}
    return Unit("profile", f"w {backend}", {"backend": backend, "threads": 2, "options": {"threads": 2}}, [t],
                extra={"threads_explicit": explicit})


def test_plan_jobs_per_node_threads_and_skips() -> None:
    big, small = _node("n1", "big", cores=8), _node("n2", "small", backends=("torch-cpu", "torch-cuda"), cores=2)
    nodes = [big, small]
    node_names(nodes)
    skips: list[dict[str, Any]] = []
    jobs = plan_jobs([_unit("torch-cpu", False), _unit("torch-cuda", False)], nodes, False, "steady", skips)
    assert [(j.node.name, j.unit.payload["backend"], j.unit.payload["threads"]) for j in jobs if j.node] == [
        ("big", "torch-cpu", 8), ("small", "torch-cpu", 2), ("small", "torch-cuda", 2)]
    assert all(t["node"] == j.node.name and t["hardware_id"] == j.node.hardware_id and t["threads"] ==
               j.unit.payload["options"]["threads"] for j in jobs if j.node for t in j.unit.templates)
    assert [(s["node"], s["backend"]) for s in skips] == [("big", "torch-cuda")]
    assert "no CUDA device" in skips[0]["reason"]
    skips = []
    spread = plan_jobs([_unit("torch-cpu", False), _unit("torch-cpu", True)], nodes, True, "steady", skips)
    assert [(j.node, len(j.candidates), j.unit.payload["threads"]) for j in spread] == [(None, 2, 2), (None, 2, 2)]
    assert not skips
    explicit = plan_jobs([_unit("torch-cpu", True)], [_node("n3", "tiny", cores=1)], False, "steady", skips)
    assert explicit == [] and "exceeds its 1 logical cores" in skips[-1]["reason"]


# ------------------------------------------------------------------ a real local cluster
def _ray_pids(cluster: Any) -> set[int]:
    pids = set()
    for node in [cluster.head_node, *cluster.worker_nodes]:
        for infos in node.all_processes.values():
            pids.update(i.process.pid for i in infos)
    return pids


def _tree(pids: set[int]) -> list[psutil.Process]:
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out += [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(scope="module")
def cluster() -> Any:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    loop = {"num_cpus": 0, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20}
    c = Cluster(initialize_head=True, head_node_args={**loop, "include_dashboard": False})
    nodes = {name: c.add_node(resources={"latprof": 1}, labels={"latprof-node": name}, **loop)
             for name in ("node-a", "node-b")}
    c.wait_for_nodes()
    pids = _ray_pids(c)
    fleet.connect(c.address)  # the driver joins on loopback (tests run the CLI in this process)
    try:
        yield {"cluster": c, "nodes": nodes, "address": c.address, "loop": loop, "pids": pids}
    finally:
        ray.shutdown()
        fleet._connected.update(address=None, nodes={})
        pids |= _ray_pids(c)
        procs = _tree(pids)
        c.shutdown()
        gone, alive = psutil.wait_procs(procs, timeout=20)
        assert not alive, f"Ray processes left running: {[p.pid for p in alive]}"


def _result_lines(out: Path) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
            if r.get("record", "result") == "result"]


def _has_rows(out: Path, node: str | None = None) -> bool:
    """For polling while a run writes: whether a result row (of ``node``) is in the file yet."""
    try:
        return any(node in (None, r.get("node")) for r in _result_lines(out))
    except (FileNotFoundError, json.JSONDecodeError):  # not yet created, or a line being written
        return False


def _assert_exclusive(rows: list[dict[str, Any]]) -> None:
    """No two units overlapped on one node: per node, the recorded task intervals are disjoint."""
    per_node: dict[str, set[tuple[float, float]]] = {}
    for r in rows:
        for a, b in r.get("run_intervals") or []:
            per_node.setdefault(r["node"], set()).add((a, b))
    for node, intervals in per_node.items():
        ordered = sorted(intervals)
        for (a0, a1), (b0, b1) in zip(ordered, ordered[1:]):
            assert a1 <= b0, f"two units overlapped on {node}: {a0}-{a1} and {b0}-{b1}"


@pytest.mark.slow
def test_ray_listens_on_loopback_only(cluster: dict[str, Any]) -> None:
    pids = {p.pid for p in _tree(cluster["pids"])}
    conns = [c for c in psutil.net_connections(kind="inet") if c.pid in pids]
    assert any(c.status == psutil.CONN_LISTEN for c in conns)
    for c in conns:
        assert c.laddr.ip in ("127.0.0.1", "::ffff:127.0.0.1"), c
        if c.raddr:
            assert c.raddr.ip in ("127.0.0.1", "::ffff:127.0.0.1"), c


@pytest.mark.slow
def test_fleet_profile_every_unit_once_per_node(cluster: dict[str, Any], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fleet"
    args = ["profile", "--model", "conv_bn_relu,conv5x5", *TINY, "--executor", "ray", "--ray-address",
            cluster["address"], "--out", str(out)]
    assert main(args) == 0
    lines = _result_lines(out)
    assert Counter((r["workload"], r["node"]) for r in lines) == Counter(
        {(w, n): 1 for w in ("conv_bn_relu", "conv5x5") for n in ("node-a", "node-b")})
    assert all(r["status"] == "ok" and r["started_at"] <= r["ended_at"] for r in lines)
    if os.geteuid() == 0:  # a privileged worker leaves Ray's worker niceness (+15) for the raylet's, which is this
        # process's (the cluster's daemons are its children): 0 normally, 19 under `nice -n 19 python -m pytest`
        assert {r["process_conditions"]["nice"] for r in lines} == {os.getpriority(os.PRIO_PROCESS, 0)}
    envs = read_results(out).node_environments
    assert set(envs) == {"node-a", "node-b"}
    assert all(r["hardware_id"] == envs[r["node"]]["hardware_id"] for r in lines)
    _assert_exclusive(lines)
    html = (out / "report.html").read_text()
    assert "Fleet: 2 machines side by side" in html and "node-a" in html and "node-b" in html
    # --resume on a second fleet run: every (unit, node) is already there, nothing runs again
    assert main([*args, "--resume"]) == 0
    assert len(_result_lines(out)) == len(lines)
    assert "4 row(s) already present" in capsys.readouterr().out


@pytest.mark.slow
def test_fleet_spread_on_selected_nodes(cluster: dict[str, Any], tmp_path: Path) -> None:
    """--spread runs each unit once; --nodes LABEL=VALUE keeps it on the labelled node. With --processes 2 each
    unit's second process is a task of its own, on the node that ran its first, and every pass is stored."""
    assert main(["profile", "--model", "conv_bn_relu,conv5x5", *TINY, "--executor", "ray", "--ray-address",
                 cluster["address"], "--spread", "--nodes", "latprof-node=node-b", "--processes", "2",
                 "--out", str(tmp_path)]) == 0
    lines = _result_lines(tmp_path)
    assert sorted((r["workload"], r["processes"]) for r in lines) == [
        ("conv5x5", 1), ("conv5x5", 2), ("conv_bn_relu", 1), ("conv_bn_relu", 2)]
    spread = read_results(tmp_path).results
    assert sorted((r["workload"], r["node"]) for r in spread) == [("conv5x5", "node-b"), ("conv_bn_relu", "node-b")]
    assert all(len(r["run_intervals"]) == 2 and len(r["process_medians_ms"]) == 2 for r in spread)
    _assert_exclusive(spread)


def _measuring_workers(cluster: dict[str, Any]) -> list[psutil.Process]:
    out = []
    for p in _tree(cluster["pids"]):
        try:
            if "latprof.run.worker" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.slow
def test_ctrl_c_cancels_tasks_keeps_rows_exits_130(cluster: dict[str, Any], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C arriving once the first unit's rows are stored: the outstanding tasks are cancelled (their measuring
    workers stop), the stored rows stay, the CLI exits 130."""
    absorb = fleet.FleetRun.absorb

    def absorb_then_interrupt(self: Any, *args: Any) -> bool:
        absorb(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(fleet.FleetRun, "absorb", absorb_then_interrupt)
    cluster["pids"] |= {p.pid for p in _tree(cluster["pids"])}
    models = "conv_bn_relu,conv5x5,dilated_conv3x3"
    code = main(["profile", "--model", models, *TINY, "--max-time", "2", "--min-time", "1.5", "--executor", "ray",
                 "--ray-address", cluster["address"], "--out", str(tmp_path)])
    assert code == 130
    kept = _result_lines(tmp_path)
    assert len(kept) == 1 and kept[0]["status"] == "ok"
    assert (tmp_path / "report.html").exists()
    deadline = time.monotonic() + 30  # the cancelled tasks stop their measuring workers
    while _measuring_workers(cluster) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _measuring_workers(cluster)


@pytest.mark.slow
def test_node_removed_mid_run_loses_and_duplicates_nothing(cluster: dict[str, Any], tmp_path: Path) -> None:
    from latprof.measure.protocol import MeasureConfig
    from latprof.profile import ProfileRequest, run_profile
    from latprof.run.engine import RunOptions
    from latprof.run.fleet import FleetOptions

    c, out = cluster["cluster"], tmp_path / "lost"
    models = ["conv_bn_relu", "conv5x5", "dilated_conv3x3"]
    request = ProfileRequest(models=models, backends=["torch-cpu"], threads=1,
                             config=MeasureConfig(max_time_s=0.3, min_time_s=0.05), out=out,
                             run=RunOptions(fleet=FleetOptions(address=cluster["address"])))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_profile(request)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # remove node-b once it has finished its first unit
        if _has_rows(out, "node-b"):
            break
        time.sleep(0.2)
    c.remove_node(cluster["nodes"].pop("node-b"))
    worker.join(timeout=180)
    assert not worker.is_alive() and not errors, errors
    lines = _result_lines(out)
    assert Counter((r["workload"], r["node"]) for r in lines) == Counter(
        {(m, n): 1 for m in models for n in ("node-a", "node-b")})
    lost = [r for r in lines if r.get("node_lost")]
    assert lost and all(r["node"] == "node-b" and r["status"] == "error" for r in lost)
    assert all(r["status"] == "ok" for r in lines if r["node"] == "node-a")
    _assert_exclusive(lines)
    # node-b comes back (a new Ray node under the same name): --resume measures exactly the lost units there
    cluster["nodes"]["node-b"] = c.add_node(resources={"latprof": 1}, labels={"latprof-node": "node-b"},
                                            **cluster["loop"])
    c.wait_for_nodes()
    request.resume = True
    files = run_profile(request)
    assert files.skipped == 2 * len(models) - len(lost)
    final = read_results(out).results
    assert Counter((r["workload"], r["node"]) for r in final) == Counter(
        {(m, n): 1 for m in models for n in ("node-a", "node-b")})
    assert all(r["status"] == "ok" for r in final)
    assert len(_result_lines(out)) == len(lines) + len(lost)


# ------------------------------------------------------------------ the report (no cluster)
def test_report_fleet_section_one_column_per_machine(tmp_path: Path) -> None:
    from latprof.report import build_report
    from latprof.results import ResultStore
    from tests.report_fixture import environment, result

    store = ResultStore(tmp_path / "results.jsonl")
    envs = {"laptop": environment("hw-laptop"), "armbox": environment("hw-armbox")}
    envs["armbox"]["hardware"]["cpu_model"] = "Cortex-A76 box"
    store.append_many([{**e, "node": n} for n, e in envs.items()])
    rows = []
    for node, ms in (("laptop", 1.5), ("armbox", 6.0)):
        rows.append(result(workload="conv_bn_relu", backend="torch-cpu", latency_median_ms=ms, node=node,
                           hardware_id=f"hw-{node}", started_at=1.0, ended_at=2.0, run_intervals=[[1.0, 2.0]]))
    rows.append(result(workload="conv5x5", backend="torch-cpu", status="error", error="node armbox left the fleet",
                       node="armbox", node_lost=True, hardware_id="hw-armbox"))
    store.append_many(rows)
    store.append({"record": "fleet_skip", "node": "laptop", "unit": "conv_bn_relu torch-cuda",
                  "backend": "torch-cuda", "reason": "backend torch-cuda is not available there (no CUDA device)"})
    html = build_report([tmp_path], tmp_path / "report.html").read_text()
    section = html[html.index("Fleet: 2 machines side by side"):]
    for text in ("laptop", "armbox", "hw-laptop", "hw-armbox", "Cortex-A76 box", "1.5 [1.47, 1.53]",
                 "6 [5.88, 6.12]", "no CUDA device", "armbox: 1"):
        assert text in section, text
    machines = (tmp_path / "report_fleet_machines.csv").read_text().splitlines()
    assert machines[0] == "field,laptop,armbox"
