import copy
from pathlib import Path

import pytest

from latprof.measure.environment import (
    HARDWARE_ID_FIELDS,
    Environment,
    cache_sizes,
    collect,
    environment_warnings,
    hardware_differences,
    hardware_id,
    hardware_id_fields,
    hypervisor_info,
    parse_cpuinfo,
)


def test_fingerprint_has_the_design_fields():
    env = collect().as_dict()
    hw, sw = env["hardware"], env["software"]
    for key in ("cpu_model", "cpu_physical_cores", "cpu_logical_cores", "memory_gib", "gpus", "cpu_vendor", "cpu_family",
                "cpu_model_number", "cpu_stepping", "cpu_microcode", "cpu_isa_flags", "cpu_caches_kib", "cpu_freq_mhz",
                "virtualized", "hypervisor"):
        assert key in hw
    assert hw["hypervisor"] in {"none", "unknown"} or hw["virtualized"] is not False
    for key in ("os", "python", "torch", "onnxruntime", "onnx"):
        assert key in sw
    assert env["threads"]["torch_intra_op"] >= 1
    assert {"cpu_governor", "turbo", "load_avg_1m"} <= set(env["state"])
    assert len(env["hardware_id"]) == 16


def test_hardware_id_is_stable_and_ignores_software_and_state():
    a, b = collect(), collect()
    assert a.hardware_id == b.hardware_id
    b.software["torch"] = "0.0"
    b.state["load_avg_1m"] = 99.0
    assert a.hardware_id == b.hardware_id
    b.hardware["cpu_model"] = "another CPU"
    assert a.hardware_id != b.hardware_id


def _env(**state):
    hw = {"cpu_model": "x", "machine": "x86_64", "cpu_physical_cores": 2, "cpu_logical_cores": 2, "memory_gib": 8, "gpus": []}
    return Environment(hw, {}, {}, {"cpu_governor": "performance", "turbo": "on", "load_avg_1m": 0.1, **state})


def test_warnings_for_governor_turbo_and_load():
    assert environment_warnings(_env()) == []
    assert any("powersave" in w for w in environment_warnings(_env(cpu_governor="powersave")))
    assert any("not readable" in w for w in environment_warnings(_env(cpu_governor=None)))
    assert any("turbo" in w for w in environment_warnings(_env(turbo="unknown")))
    assert any("load is high" in w for w in environment_warnings(_env(load_avg_1m=1.9)))


# ---------------------------------------------------------------- parsing, from canned text (not this machine)
_X86_BLOCK = """processor\t: {n}
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
stepping\t: 8
microcode\t: 0x2b0004b1
cpu MHz\t\t: 2000.000
cache size\t: 107520 KB
flags\t\t: fpu vme de pse tsc msr sse sse2 ssse3 fma cx16 sse4_1 sse4_2 popcnt aes avx f16c rdrand hypervisor avx2 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_bf16 avx_vnni avx512_fp16 amx_bf16 amx_tile amx_int8 arch_capabilities
bugs\t\t: spectre_v1 spectre_v2
"""
X86_CPUINFO = _X86_BLOCK.format(n=0) + "\n" + _X86_BLOCK.format(n=1).replace("2000.000", "3800.000") + "\n"

_ARM_BLOCK = """processor\t: {n}
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1
"""
ARM_CPUINFO = _ARM_BLOCK.format(n=0) + "\n" + _ARM_BLOCK.format(n=1)


def test_parse_x86_cpuinfo() -> None:
    cpu = parse_cpuinfo(X86_CPUINFO)
    assert (cpu["cpu_vendor"], cpu["cpu_family"], cpu["cpu_model_number"], cpu["cpu_stepping"]) == ("GenuineIntel", 6, 143, 8)
    assert cpu["cpu_microcode"] == "0x2b0004b1"
    assert cpu["cpu_isa_flags"] == [
        "amx_bf16", "amx_int8", "amx_tile", "avx", "avx2", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx512bw",
        "avx512dq", "avx512f", "avx512vl", "avx_vnni", "f16c", "fma", "sse4_1", "sse4_2",
    ]  # curated and sorted: no avx512cd, aes, hypervisor...
    assert hypervisor_info(cpu, Path("/nonexistent"))[0] is True


def test_parse_arm_cpuinfo() -> None:
    cpu = parse_cpuinfo(ARM_CPUINFO)
    assert (cpu["cpu_vendor"], cpu["cpu_family"], cpu["cpu_model_number"], cpu["cpu_stepping"]) == ("ARM", 8, "0xd40", "r1p1")
    assert cpu["cpu_microcode"] is None
    assert cpu["cpu_isa_flags"] == ["asimd", "asimddp", "asimdfhm", "asimdhp", "bf16", "fphp", "i8mm", "sve", "svebf16", "svei8mm"]


def test_parse_empty_cpuinfo_degrades_to_none() -> None:
    cpu = parse_cpuinfo("")  # macOS, Windows: no /proc/cpuinfo
    assert all(cpu[k] is None for k in ("cpu_vendor", "cpu_family", "cpu_model_number", "cpu_stepping", "cpu_microcode", "cpu_isa_flags"))
    assert hypervisor_info(cpu, Path("/nonexistent")) == (None, "unknown")


def test_hypervisor_info(tmp_path: Path) -> None:
    bare = parse_cpuinfo(X86_CPUINFO.replace(" hypervisor", ""))
    vm = parse_cpuinfo(X86_CPUINFO)
    none = tmp_path / "absent"
    assert hypervisor_info(bare, none) == (False, "none")
    assert hypervisor_info(vm, none) == (True, "unknown")
    assert hypervisor_info(vm, none, detect_virt=lambda: "kvm") == (True, "kvm")
    xen = tmp_path / "type"
    xen.write_text("xen\n")
    assert hypervisor_info(parse_cpuinfo(ARM_CPUINFO), xen) == (True, "xen")
    assert hypervisor_info(parse_cpuinfo(ARM_CPUINFO), none) == (None, "unknown")
    assert hypervisor_info(parse_cpuinfo(ARM_CPUINFO), none, detect_virt=lambda: "none") == (None, "none")


def _cache_tree(root: Path, entries: list[tuple[str, str, str]]) -> Path:
    for i, (level, kind, size) in enumerate(entries):
        d = root / f"index{i}"
        d.mkdir(parents=True)
        (d / "level").write_text(level + "\n")
        (d / "type").write_text(kind + "\n")
        (d / "size").write_text(size + "\n")
    (root / "uevent").write_text("")
    return root


def test_cache_sizes_from_sysfs_tree(tmp_path: Path) -> None:
    root = _cache_tree(tmp_path / "cache", [("1", "Data", "48K"), ("1", "Instruction", "32K"), ("2", "Unified", "2048K"), ("3", "Unified", "105M")])
    assert cache_sizes(root) == {"L1d": 48, "L1i": 32, "L2": 2048, "L3": 107520}
    assert cache_sizes(tmp_path / "missing") is None


# ---------------------------------------------------------------- hardware_id and its fields
def _hw_env() -> dict:
    cpu = parse_cpuinfo(X86_CPUINFO)
    hw = {
        "cpu_model": "Intel(R) Xeon(R) Platinum 8480+", **{k: cpu[k] for k in ("cpu_vendor", "cpu_family", "cpu_model_number", "cpu_stepping", "cpu_microcode", "cpu_isa_flags")},
        "cpu_caches_kib": {"L1d": 48, "L1i": 32, "L2": 2048, "L3": 107520}, "machine": "x86_64",
        "cpu_physical_cores": 56, "cpu_logical_cores": 112, "cpu_freq_mhz": {"current": 2000.0, "min": 800.0, "max": 3800.0},
        "memory_gib": 512, "virtualized": False, "hypervisor": "none",
        "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "driver": "550.54", "clock_sm_mhz": "1980"}],
    }
    return {"hardware_id": "", "hardware": hw, "software": {"torch": "2.5"}, "threads": {}, "state": {}}


def test_hardware_id_fields_are_exactly_what_is_hashed() -> None:
    env = _hw_env()
    fields = hardware_id_fields(env)
    assert tuple(fields) == HARDWARE_ID_FIELDS
    assert "cpu_microcode" not in fields and "cpu_freq_mhz" not in fields and "hypervisor" not in fields
    assert fields["gpus"] == [{"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "multiprocessors": None,
                               "memory_gib": None, "mig_profile": None}]
    assert len(hardware_id(env)) == 16 and hardware_id(env) == hardware_id(copy.deepcopy(env))
    env["hardware_id"] = hardware_id(env)
    assert Environment(env["hardware"], {}, {}, {}).hardware_id == env["hardware_id"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cpu_family", 25), ("cpu_model_number", 207), ("cpu_stepping", 7), ("cpu_vendor", "AuthenticAMD"),
        ("cpu_isa_flags", ["avx", "avx2", "fma"]), ("cpu_caches_kib", {"L1d": 48, "L1i": 32, "L2": 2048, "L3": 61440}),
        ("cpu_logical_cores", 56), ("memory_gib", 256), ("virtualized", True),
        ("gpus", [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "capability": "8.0"}]),
    ],
)
def test_hardware_id_changes_with_the_hardware(key: str, value: object) -> None:
    a, b = _hw_env(), _hw_env()
    b["hardware"][key] = value
    assert hardware_id(a) != hardware_id(b)
    assert [line.split(":")[0] for line in hardware_differences(a, b)] == [key]


def test_hardware_id_ignores_microcode_frequency_hypervisor_name_and_gpu_clocks() -> None:
    a, b = _hw_env(), _hw_env()
    b["hardware"].update(cpu_microcode="0x2b000600", cpu_freq_mhz={"current": 3100.0, "min": 0.0, "max": 0.0}, hypervisor="unknown")
    b["hardware"]["gpus"][0].update(driver="560.1", clock_sm_mhz="1410")
    b["software"]["torch"] = "2.6"
    b["hardware"]["cpu_isa_flags"] = list(reversed(b["hardware"]["cpu_isa_flags"]))  # order does not matter
    assert hardware_id(a) == hardware_id(b)
    assert hardware_differences(a, b) == []


def test_hardware_differences_lines() -> None:
    a, b = _hw_env(), _hw_env()
    b["hardware"].update(cpu_model_number=207, cpu_caches_kib={"L1d": 48, "L1i": 32, "L2": 2048, "L3": 61440})
    b["hardware"]["cpu_isa_flags"] = [f for f in a["hardware"]["cpu_isa_flags"] if not f.startswith("amx")] + ["avx512_vp2x"]
    b["hardware"]["gpus"] = []
    assert hardware_differences(a, b) == [
        "cpu_model_number: 143 != 207",
        "cpu_isa_flags: baseline only [amx_bf16 amx_int8 amx_tile] current only [avx512_vp2x]",
        "cpu_caches_kib: L3=107520 != L3=61440",
        "gpus: NVIDIA H100 80GB HBM3 (9.0) != none",
    ]


def test_hardware_differences_tolerates_old_records() -> None:
    new = _hw_env()
    old = {"record": "environment", "hardware_id": "33e6e1430b36e8d5",
           "hardware": {k: new["hardware"][k] for k in ("cpu_model", "machine", "cpu_physical_cores", "cpu_logical_cores", "memory_gib", "gpus")}}
    diffs = hardware_differences(old, new)
    assert "cpu_family: missing in baseline" in diffs and "cpu_isa_flags: missing in baseline" in diffs
    assert not any(d.startswith(("cpu_model:", "memory_gib", "gpus")) for d in diffs)
    assert "cpu_family: missing in current" in hardware_differences(new, old)
    assert hardware_differences({"hardware_id": "x"}, {"hardware_id": "y"}) == []
