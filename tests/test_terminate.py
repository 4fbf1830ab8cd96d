"""SIGTERM/SIGHUP take the Ctrl-C path (worker stopped, scratch folder removed, finished rows kept); a parent killed
outright takes its worker with it (Linux's parent-death signal). Real subprocesses."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from latprof.run.executors import remove_orphaned_scratch
from latprof.run.interrupts import Terminated, termination_as_interrupt


def test_sigterm_raises_terminated_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as caught:
        with termination_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs at the next bytecode boundary; never reached
    assert caught.value.signum == signal.SIGTERM
    assert isinstance(caught.value, KeyboardInterrupt)  # every Ctrl-C handler applies
    assert signal.getsignal(signal.SIGTERM) is before


def _start_long_profile(tmp_path):
    """A CLI run whose only unit samples for a minute, and the worker process measuring it."""
    cmd = [sys.executable, "-m", "latprof.cli", "profile", "--model", "conv_bn_relu", "--threads", "1",
           "--min-time", "60", "--max-time", "60", "--out", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        children = psutil.Process(proc.pid).children()
        if children and list(tmp_path.glob("latprof-worker-*/unit.json")):
            return proc, children[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.kill()
    pytest.fail("no worker started within 120 s")


def _gone(process: psutil.Process, within_s: float) -> bool:
    try:
        process.wait(timeout=within_s)
    except psutil.TimeoutExpired:
        return False
    except psutil.NoSuchProcess:
        pass
    return True


@pytest.mark.slow  # one real CLI run with a worker (~5 s)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_stops_the_worker_and_reports_in_one_line(tmp_path, signum):
    proc, worker = _start_long_profile(tmp_path)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert f"terminated by {signal.Signals(signum).name}" in err.strip().splitlines()[-1]
    assert _gone(worker, 10)
    assert not list(tmp_path.glob("latprof-worker-*"))  # the scratch folder went with it


@pytest.mark.slow  # one real CLI run with a worker (~5 s)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_killed_parent_takes_its_worker_with_it(tmp_path):
    proc, worker = _start_long_profile(tmp_path)
    proc.kill()
    proc.communicate(timeout=30)
    assert _gone(worker, 10), "the worker outlived its SIGKILLed parent"
    left = list(tmp_path.glob("latprof-worker-*"))
    assert [p.name.split("-")[2] for p in left] == [str(proc.pid)]  # nobody could remove it, its parent's pid named
    assert remove_orphaned_scratch(str(tmp_path)) == []  # not yet: an hour untouched first
    assert remove_orphaned_scratch(str(tmp_path), min_age_s=0) == [str(left[0])]  # a later run's executor does
    assert not left[0].exists()


def test_orphaned_scratch_goes_and_a_live_parents_stays(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"latprof-worker-{dead.stdout.strip()}-abc"
    live = tmp_path / f"latprof-worker-{os.getpid()}-def"
    unnamed = tmp_path / "latprof-worker-xyz12345"  # an older folder, whose parent cannot be told: left alone
    for folder in (orphan, live, unnamed):
        folder.mkdir()
        (folder / "unit.json").write_text("{}")
    assert remove_orphaned_scratch(str(tmp_path), min_age_s=0) == [str(orphan)]
    assert not orphan.exists() and live.exists() and unnamed.exists()
