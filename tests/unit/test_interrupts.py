"""Interrupted runs: the smoke test's rollback on any exception or signal, and what
``modelgate run`` stops when it ends (tests/e2e/test_interrupt.py does it with a real run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from modelgate import postdeploy
from modelgate.cli.local import _teardown
from modelgate.deploy import Deployment
from modelgate.errors import SmokeTestError
from modelgate.processes import (
    SERVERS_FILE_ENV,
    Interruption,
    pid_alive,
    proc_stat,
    record_server,
    servers_file,
)

pytestmark = pytest.mark.unit

needs_proc = pytest.mark.skipif(
    not os.path.isfile("/proc/self/stat"), reason="needs Linux /proc to find the run's processes"
)


@pytest.fixture()
def sigterm_noted():
    """A SIGTERM handler that only notes the signal, so no SIGTERM kills pytest."""
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    yield received
    signal.signal(signal.SIGTERM, previous)


class _Target:
    name = "kserve"

    def __init__(self) -> None:
        self.rolled_back: list[Deployment] = []

    def rollback(self, deployment: Deployment) -> str:
        self.rolled_back.append(deployment)
        return "restored the previous spec"


@pytest.fixture()
def target(monkeypatch) -> _Target:
    fake = _Target()
    monkeypatch.setattr(postdeploy, "make_target", lambda name: fake)
    return fake


DEPLOYMENT = Deployment(
    target="kserve", name="m", endpoint="http://m", model="m", ready_seconds=1.0
)


def test_failed_smoke_test_leaves_the_undo_to_the_rollback_step(target, monkeypatch):
    def fail(*a, **kw):
        raise SmokeTestError("completions returned no text")

    monkeypatch.setattr(postdeploy, "smoke_test", fail)
    with pytest.raises(SmokeTestError, match="no text"):
        postdeploy.run_smoke_test(DEPLOYMENT, prompt="2+3=")
    assert target.rolled_back == []  # the run's exit handler undoes it


def test_ctrl_c_during_the_smoke_test_rolls_back(target, monkeypatch):
    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(postdeploy, "smoke_test", interrupted)
    with pytest.raises(KeyboardInterrupt) as info:
        postdeploy.run_smoke_test(DEPLOYMENT, prompt="2+3=")
    assert target.rolled_back == [DEPLOYMENT]
    assert info.value.__notes__ == ["restored the previous spec"]


def test_sigterm_during_the_smoke_test_rolls_back(target, monkeypatch, sigterm_noted):
    def cancelled(*a, **kw):  # a KFP cancel while the model answers slowly
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(2)
        return {"completion": "5", "chat": "five"}

    monkeypatch.setattr(postdeploy, "smoke_test", cancelled)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        postdeploy.run_smoke_test(DEPLOYMENT, prompt="2+3=")
    assert target.rolled_back == [DEPLOYMENT]
    assert not sigterm_noted


# ------------------------------------------------------------------------------------------------
# modelgate run's teardown
# ------------------------------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    stat = proc_stat(pid)
    return not pid_alive(pid) and (stat is None or stat.gone)


def _server() -> subprocess.Popen:
    """A stand-in server in its own session, as the local target starts vLLM."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )


@pytest.fixture()
def started():
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if not _gone(proc.pid):
            proc.kill()
        proc.wait()


@needs_proc
def test_teardown_after_sigterm_stops_steps_and_every_server(tmp_path, started):
    record = tmp_path / ".servers-1.jsonl"
    with servers_file(record):
        step = subprocess.Popen(  # a step still running: it carries the run's mark
            [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(300)"],
            stdout=subprocess.PIPE,
            text=True,
        )
        recorded, unrecorded = _server(), _server()  # its step died before recording the 2nd
        started.extend([step, recorded, unrecorded])
        record_server(recorded.pid, model_dir=str(tmp_path / "tiny-models-x"))
    (tmp_path / "tiny-models-x").mkdir()
    assert step.stdout and step.stdout.readline().strip() == "up"

    _teardown(record, kept=None, interruption=Interruption(signal.SIGTERM))

    assert [p.pid for p in started if not _gone(p.pid)] == []
    assert not (tmp_path / "tiny-models-x").exists()
    assert not record.exists()


def test_teardown_of_a_finished_run_keeps_the_server_asked_for(tmp_path, started):
    record = tmp_path / ".servers-1.jsonl"
    with servers_file(record):
        kept, failed = _server(), _server()
        started.extend([kept, failed])
        record_server(kept.pid)
        record_server(failed.pid)  # e.g. a first deploy whose step was killed
    deployment = {"endpoint": "http://127.0.0.1:1", "details": {"pid": kept.pid}}

    _teardown(record, kept=deployment, interruption=Interruption())

    assert pid_alive(kept.pid) and _gone(failed.pid)
    assert SERVERS_FILE_ENV not in os.environ or os.environ[SERVERS_FILE_ENV] != str(record)


# ------------------------------------------------------------------------------------------------
# modelgate demo: its Hub mirror goes too
# ------------------------------------------------------------------------------------------------

# `modelgate demo` with a stand-in mirror (a process group, stopped through the demo's exit
# stack like the real one) and a stand-in run that only waits.
_DEMO = """\
import subprocess, sys, time
from types import SimpleNamespace
import modelgate.cli.local as cli_local
import modelgate.demo
from modelgate.cli import app
from modelgate.processes import stop_process_group

def demo_release(stack, **kw):
    mirror = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    stack.callback(stop_process_group, mirror.pid)
    print(mirror.pid, flush=True)
    return SimpleNamespace(endpoint="http://127.0.0.1:1", repo_id="m/x", commit_sha="0" * 40), None

def run_local(release, **kw):
    print("running", flush=True)
    time.sleep(300)
    return 0

modelgate.demo.demo_release = demo_release
cli_local.run_local = run_local
app(["demo", "--pipeline-root", sys.argv[1]])
"""


def test_sigterm_to_the_demo_stops_its_hub_mirror(tmp_path):
    demo = subprocess.Popen(
        [sys.executable, "-c", _DEMO, str(tmp_path / "root")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    mirror = None
    try:
        assert demo.stdout
        lines = iter(demo.stdout.readline, "")
        mirror = int(next(line for line in lines if line.strip().isdigit()))
        next(line for line in lines if "running" in line)
        demo.send_signal(signal.SIGTERM)
        out = demo.communicate(timeout=30)[0]
        assert demo.returncode != 0
        assert "stopped the local Hub mirror" in out
        assert _gone(mirror)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if mirror is not None and not _gone(mirror):
            os.kill(mirror, signal.SIGKILL)
