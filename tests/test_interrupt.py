"""Ctrl-C keeps every finished row; --resume completes the run without duplicates (a real subprocess)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from latprof.results import read_results, row_key

# Three units (a fresh worker each): the Ctrl-C comes once the first one's row is stored, while the second runs; the
# third has not started.
MODELS = ["conv_bn_relu", "pointwise_pair", "pointwise_group_conv"]


def _cmd(out, *extra):
    cmd = [sys.executable, "-m", "latprof.cli", "profile", "--threads", "1", "--max-time", "0.3", "--min-time", "0.05",
           "--out", str(out)]
    for m in MODELS:
        cmd += ["--model", m]
    return cmd + list(extra)


def _result_lines(path):
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if '"record": "result"' in x]


@pytest.mark.slow  # two real CLI runs, a fresh worker process per unit (~14 s on one core)
def test_sigint_keeps_finished_rows_and_resume_completes(tmp_path):
    results = tmp_path / "results.jsonl"
    # A test runner started in the background (nohup, '&') ignores SIGINT, and a child inherits that: give the
    # latprof process the default disposition, as an interactive shell does, so Ctrl-C is what is tested.
    proc = subprocess.Popen(_cmd(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 120
    while time.time() < deadline and len(_result_lines(results)) < 1:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted" in err
    lines = results.read_text().splitlines()
    for line in lines:
        json.loads(line)  # every line parses
    kept = read_results(results).results
    assert 1 <= len(kept) < len(MODELS)
    assert (tmp_path / "results.csv").exists()

    done = subprocess.run(_cmd(tmp_path, "--resume"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = _result_lines(results)
    keys = [row_key(r) for r in rows]
    assert len(keys) == len(set(keys)) == len(MODELS)  # no duplicates, nothing missing
    assert {r["workload"] for r in rows} == set(MODELS)
