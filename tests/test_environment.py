from latprof.measure.environment import Environment, collect, environment_warnings


def test_fingerprint_has_the_design_fields():
    env = collect().as_dict()
    hw, sw = env["hardware"], env["software"]
    for key in ("cpu_model", "cpu_physical_cores", "cpu_logical_cores", "memory_gib", "gpus"):
        assert key in hw
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
