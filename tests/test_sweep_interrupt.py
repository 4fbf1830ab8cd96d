"""SIGINT mid-sweep keeps every finished unit; --resume completes it without duplicates (a real subprocess)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latprof.results import read_results, row_key

TINY = Path(__file__).parent / "data" / "tiny_spec.toml"


def _cmd(out, *extra):
    return [sys.executable, "-m", "latprof.cli", "sweep", "--spec", str(TINY), "--backend", "torch-cpu",
            "--threads", "1", "--scale", "1,2,3", "--max-time", "0.3", "--min-time", "0.05", "--no-roofline",
            "--out", str(out), *extra]


def _rows(path):
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if '"record": "result"' in x]


@pytest.mark.slow  # two real CLI sweeps, a fresh worker process per unit (~17 s on one core)
def test_sigint_mid_sweep_then_resume(tmp_path):
    results = tmp_path / "results.jsonl"
    # A test runner started in the background (nohup, '&') ignores SIGINT, and a child inherits that: give the
    # latprof process the default disposition, as an interactive shell does, so Ctrl-C is what is tested.
    proc = subprocess.Popen(_cmd(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 120
    while time.time() < deadline and len(_rows(results)) < 2:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    for line in results.read_text().splitlines():
        json.loads(line)
    kept = read_results(results).results
    assert 2 <= len(kept) < 6 and len(kept) % 2 == 0  # whole units only (3 units of 2 variants each)
    assert (tmp_path / "summary.csv").exists()  # outputs reflect the finished units

    done = subprocess.run(_cmd(tmp_path, "--resume"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = _rows(results)
    keys = [row_key(r) for r in rows]
    assert len(keys) == len(set(keys)) == 6
    assert (tmp_path / "report.html").exists()
