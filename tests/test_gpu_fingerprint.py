"""The GPU fingerprint from recorded nvidia-smi output: matching by UUID (also under CUDA_VISIBLE_DEVICES and MIG),
field fall-backs for other drivers, what hardware_id hashes, warnings, and clocks sampled under load."""

from __future__ import annotations

import sys

import pytest

from latprof.measure import gpu
from latprof.measure.environment import hardware_differences, hardware_id

QUERY_FIELDS = ["index", *(alts[0] for alts in gpu.SMI_FIELDS.values())]
UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
MIG0 = "MIG-99999999-8888-7777-6666-555555555555"


def smi_line(index: int, uuid: str, name: str, *, mig: str = "Disabled", throttle: str = "0x0000000000000001",
             power: str = "700.00", default_power: str = "700.00", persistence: str = "Enabled") -> str:
    """One line of ``--query-gpu=<QUERY_FIELDS> --format=csv,noheader,nounits`` as driver 550 prints it."""
    values = {
        "index": str(index), "uuid": uuid, "name": name, "pci.bus_id": f"00000000:{0x18 + index:02X}:00.0",
        "driver_version": "550.54.15", "memory.total": "81559", "compute_cap": "9.0", "persistence_mode": persistence,
        "pstate": "P0", "clocks.sm": "345", "clocks.mem": "2619", "clocks.max.sm": "1980", "clocks.max.mem": "2619",
        "clocks.applications.graphics": "1980", "clocks.applications.memory": "2619",
        "clocks.default_applications.graphics": "1980", "power.limit": power, "power.default_limit": default_power,
        "enforced.power.limit": power, "mig.mode.current": mig, "temperature.gpu": "31",
        "clocks_event_reasons.active": throttle,
    }
    return ", ".join(values[f] for f in QUERY_FIELDS)


# Two H100s; nvidia-smi lists them by PCI bus. CUDA (fastest first) may number them the other way round.
TWO_GPUS = "\n".join([smi_line(0, UUID0, "NVIDIA H100 80GB HBM3"), smi_line(1, UUID1, "NVIDIA H100 80GB HBM3",
                                                                             throttle="0x0000000000000004",
                                                                             power="500.00")]) + "\n"
SMI_LIST_MIG = f"""GPU 0: NVIDIA A100-SXM4-40GB (UUID: {UUID0})
  MIG 3g.20gb     Device  0: (UUID: {MIG0})
  MIG 3g.20gb     Device  1: (UUID: MIG-00000000-1111-2222-3333-444444444444)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: {UUID1})
"""


def runner_for(query_output: str, list_output: str = "", rejects: tuple[str, ...] = ()):
    """A fake nvidia-smi: answers --query-gpu with the recorded output (restricted to the asked fields), -L with
    ``list_output``; fields in ``rejects`` make the driver refuse the query, as an older driver does."""
    rows = gpu.parse_smi_csv(query_output, QUERY_FIELDS)
    calls: list[list[str]] = []

    def run(args):
        calls.append(list(args))
        if args == ["-L"]:
            return list_output
        fields = args[0].split("=", 1)[1].split(",")
        bad = [f for f in fields if f in rejects or (f not in QUERY_FIELDS and f != "clocks_throttle_reasons.active")]
        if bad:
            return f'Field "{bad[0]}" is not a valid field to query.\n'
        out = []
        for r in rows:
            out.append(", ".join((r.get(f) if f != "clocks_throttle_reasons.active" else r.get("clocks_event_reasons.active"))
                                 or "[N/A]" for f in fields))
        return "\n".join(out) + "\n"

    run.calls = calls
    return run


def torch_dev(index: int, uuid: str | None, name: str = "NVIDIA H100 80GB HBM3") -> dict:
    return {"index": index, "name": name, "uuid": uuid, "memory_gib": 79.1, "capability": "9.0", "multiprocessors": 132}


def test_cuda_device_matched_by_uuid_not_index():
    """CUDA_VISIBLE_DEVICES=1: CUDA's device 0 is nvidia-smi's GPU 1 (power-capped, throttled); its UUID finds it."""
    devs = gpu.gpu_devices(runner_for(TWO_GPUS), env={"CUDA_VISIBLE_DEVICES": "1"},
                           devices=[torch_dev(0, UUID1.removeprefix("GPU-"))])  # torch prints the UUID bare
    [d] = devs
    assert d["match"] == "uuid" and d["smi_index"] == 1 and d["gpu_uuid"] == UUID1
    assert d["power_limit_w"] == 500 and d["power_default_limit_w"] == 700 and d["throttle_reasons"] == ["sw_power_cap"]
    assert d["driver"] == "550.54.15" and d["clock_sm_max_mhz"] == 1980 and d["clock_sm_application_mhz"] == 1980
    assert d["mig_mode"] == "Disabled" and d["mig_profile"] is None and d["pci_bus_id"] == "00000000:19:00.0"
    assert gpu.gpu_warnings(devs) == ["GPU 0 (NVIDIA H100 80GB HBM3): clocks held down now (sw_power_cap)",
                                      "GPU 0 (NVIDIA H100 80GB HBM3): power limit 500 W is below the default 700 W"]


@pytest.mark.parametrize(("env", "match", "smi_index"), [
    ({"CUDA_VISIBLE_DEVICES": "1"}, "CUDA_VISIBLE_DEVICES", 1),
    ({"CUDA_VISIBLE_DEVICES": "GPU-aaaaaaaa"}, "CUDA_VISIBLE_DEVICES", 1),  # a UUID prefix, as CUDA accepts
    ({"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, "index (PCI_BUS_ID order)", 0),
    ({}, "unmatched", None),  # CUDA's default order is fastest first: never guessed
])
def test_without_a_uuid_only_safe_rules_match(env, match, smi_index):
    [d] = gpu.gpu_devices(runner_for(TWO_GPUS), env=env, devices=[torch_dev(0, None)])
    assert d["match"] == match and d["smi_index"] == smi_index
    if match == "unmatched":
        assert d["driver"] is None and d["clock_sm_mhz"] is None
        assert "not matched" in gpu.gpu_warnings([d])[0]


def test_mig_instance_names_its_parent_gpu_and_profile():
    smi = smi_line(0, UUID0, "NVIDIA A100-SXM4-40GB", mig="Enabled") + "\n" + smi_line(1, UUID1, "NVIDIA A100-SXM4-40GB")
    run = runner_for(smi, SMI_LIST_MIG)
    [d] = gpu.gpu_devices(run, env={"CUDA_VISIBLE_DEVICES": MIG0},
                          devices=[torch_dev(0, MIG0, "NVIDIA A100-SXM4-40GB MIG 3g.20gb")])
    assert d["match"] == "mig uuid" and d["gpu_uuid"] == UUID0 and d["mig_profile"] == "3g.20gb"
    assert d["mig_instance"] == MIG0 and d["mig_mode"] == "Enabled"
    assert ["-L"] in run.calls
    assert gpu.parse_smi_list(SMI_LIST_MIG)[MIG0] == {"gpu_uuid": UUID0, "mig_profile": "3g.20gb"}


def test_older_driver_fields_found_one_by_one():
    """A driver without compute_cap and with the old throttle field name: the full query fails, each field is asked
    alone, the rest is still read and the old name is used."""
    run = runner_for(TWO_GPUS, rejects=("compute_cap", "clocks_event_reasons.active"))
    rows = gpu.query_smi(run)
    assert [r["smi_index"] for r in rows] == [0, 1]
    assert rows[1]["throttle_reasons"] == ["sw_power_cap"] and rows[0]["smi_compute_cap"] is None
    assert rows[0]["clock_sm_max_mhz"] == 1980
    assert gpu.THROTTLE_FIELD[0] == "clocks_throttle_reasons.active"
    gpu.THROTTLE_FIELD[0] = "clocks_event_reasons.active"


def test_no_nvidia_smi_and_no_cuda_is_no_gpus():
    assert gpu.gpu_devices(lambda args: "", env={}, devices=[]) == []


def test_smi_only_devices_follow_cuda_visible_devices():
    """torch without CUDA beside onnxruntime-gpu: the devices come from nvidia-smi in CUDA_VISIBLE_DEVICES order."""
    devs = gpu.gpu_devices(runner_for(TWO_GPUS), env={"CUDA_VISIBLE_DEVICES": "1,0"}, devices=[])
    assert [(d["index"], d["gpu_uuid"], d["match"]) for d in devs] == [(0, UUID1, "uuid"), (1, UUID0, "uuid")]
    assert devs[0]["memory_gib"] == round(81559 / 1024, 1) and devs[0]["capability"] == "9.0"


def test_decode_throttle():
    assert gpu.decode_throttle("0x0000000000000045") == ["gpu_idle", "sw_power_cap", "hw_thermal_slowdown"]
    assert gpu.decode_throttle("0x0") == [] and gpu.decode_throttle("[N/A]") is None and gpu.decode_throttle(None) is None


def _env_with(gpus: list[dict]) -> dict:
    return {"hardware": {"machine": "x86_64", "cpu_model": "x", "gpus": gpus}}


def test_hardware_id_hashes_the_gpu_model_and_slice_not_the_card():
    h100 = {"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "multiprocessors": 132, "memory_gib": 79.1,
            "mig_profile": None, "uuid": UUID0, "driver": "550", "power_limit_w": 700}
    other_card = {**h100, "uuid": UUID1, "driver": "560", "power_limit_w": 500, "clock_sm_mhz": 1410}
    slice_ = {**h100, "mig_profile": "3g.40gb", "memory_gib": 39.5, "multiprocessors": 60}
    fewer_sms = {**h100, "multiprocessors": 114}  # same name, a cut-down part
    assert hardware_id(_env_with([h100])) == hardware_id(_env_with([other_card]))
    assert hardware_id(_env_with([h100])) != hardware_id(_env_with([slice_]))
    assert hardware_id(_env_with([h100])) != hardware_id(_env_with([fewer_sms]))
    assert hardware_differences(_env_with([h100]), _env_with([slice_])) == [
        "gpus: NVIDIA H100 80GB HBM3 (9.0, multiprocessors 132, memory_gib 79.1) != "
        "NVIDIA H100 80GB HBM3 (9.0, multiprocessors 60, memory_gib 39.5, mig_profile 3g.40gb)"]


# ------------------------------------------------------------------ clocks under load
LOAD_TEXT = """0, 345, 2619, 70.12, 31, 0x0000000000000001
87, 1980, 2619, 512.40, 45, 0x0000000000000000
100, 1755, 2619, 690.03, 52, 0x0000000000000004
93, 1830, 2619, 655.10, 55, 0x0000000000000004
"""


def test_parse_load_samples_keeps_the_loaded_ones():
    s = gpu.parse_load_samples(LOAD_TEXT)
    assert s["samples"] == 4 and s["samples_under_load"] == 3
    assert s["clock_sm_mhz"] == {"min": 1755, "median": 1830, "max": 1980}
    assert s["clock_mem_mhz"] == {"min": 2619, "median": 2619, "max": 2619}
    assert s["power_draw_w_median"] == pytest.approx(655.10) and s["temperature_c_max"] == 55
    assert s["throttle_reasons"] == ["sw_power_cap"]


def test_sampler_is_shared_and_gives_each_holder_its_samples(tmp_path):
    """A fake nvidia-smi that prints one line, waits for a file, prints the rest: the second holder starts after
    the first line and sees only what came after it."""
    go = tmp_path / "go"
    script = ("import sys, time, pathlib\n"
              "print('0, 345, 2619, 70, 31, 0x1', flush=True)\n"
              f"p = pathlib.Path({str(go)!r})\n"
              "while not p.exists(): time.sleep(0.01)\n"
              "print('90, 1900, 2619, 500, 40, 0x0', flush=True)\n"
              "print('95, 1800, 2619, 520, 41, 0x0', flush=True)\n"
              "time.sleep(30)\n")
    sampler = gpu.GpuLoadSampler("GPU-fake", command=[sys.executable, "-c", script])
    first = sampler.hold()
    import time

    deadline = time.time() + 20
    while not sampler._lines() and time.time() < deadline:
        time.sleep(0.02)
    second = sampler.hold()
    go.write_text("")
    while len(sampler._lines()) < 3 and time.time() < deadline:
        time.sleep(0.02)
    a = sampler.release(first)
    assert sampler._proc is not None and sampler._proc.poll() is None  # still held by the second run
    b = sampler.release(second)
    assert (a["samples"], a["samples_under_load"]) == (3, 2) and (b["samples"], b["samples_under_load"]) == (2, 2)
    assert b["clock_sm_mhz"]["median"] == 1850 and a["gpu"] == "GPU-fake"
    assert sampler._proc is None and sampler._file is None  # stopped and cleaned up with the last holder


def test_sampler_without_nvidia_smi_says_so(monkeypatch):
    monkeypatch.setattr(gpu.shutil, "which", lambda name: None)
    sampler = gpu.GpuLoadSampler("0")
    assert sampler.release(sampler.hold()) == {"note": "not sampled: nvidia-smi not found"}
