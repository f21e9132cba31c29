"""Interrupting ``modelgate run``: whatever it started goes with it.

A real local release (olah mirror, kfp.local steps, vLLM on CPU) is interrupted once its vLLM
server started: Ctrl-C to the whole foreground process group once the server answered and the
deploy step that started it is gone, and SIGTERM to the CLI alone (a ``kill``, a service
manager) while the deploy step waits for the server. Afterwards no vLLM process, no step
process, no staging folder and no run record may be left. Kept small: no quantization, 8
examples per evaluation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from modelgate.demo import demo_thresholds
from modelgate.processes import group_members, pid_alive, proc_stat, stop_process_group
from tests.e2e.helpers import REPO_ROOT, local_run_args

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not Path("/proc/self/stat").is_file(), reason="finds the run's processes in Linux /proc"
    ),
]

SERVER_TIMEOUT = 1200  # seconds until the run has started vLLM (steps before it on 2 CPUs)
STOP_TIMEOUT = 60  # seconds the interrupted CLI has to stop everything and exit


def _start_release(
    hub_mirror, task_dir: Path, root: Path, tmp: Path, console: Path
) -> subprocess.Popen[bytes]:
    """``modelgate run`` in its own session and process group, as a shell starts a job."""
    args = local_run_args(
        hub_mirror,
        task_dir,
        root,
        "--eval-limit",
        "8",
        thresholds=demo_thresholds(min_acc=0.0, min_recovery=0.01, min_vs_production=None),
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]),
        "COLUMNS": "200",
        "NO_COLOR": "1",
        "TMPDIR": str(tmp),  # the folder vLLM's model is fetched into goes here
    }
    env.pop("MODELGATE_SERVERS_FILE", None)  # this run keeps its own
    with console.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "modelgate.cli", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _vllm_process(tmp: Path) -> dict | None:
    """The vLLM server serving a model fetched into ``tmp``, found by its command line."""
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError):
            continue
        if "vllm.entrypoints.openai.api_server" in args and str(tmp) in " ".join(args):
            stat = proc_stat(int(entry.name))
            port = next(a.split("=", 1)[1] for a in args if a.startswith("--port="))
            if stat and not stat.gone:
                return {"pid": stat.pid, "pgid": stat.pgid, "endpoint": f"http://127.0.0.1:{port}"}
    return None


def _started_server(root: Path, tmp: Path, cli: subprocess.Popen[bytes], console: Path) -> dict:
    """The run's first vLLM server, once it started: from the run's record, else (a CLI that
    keeps none) from the process table."""
    deadline = time.monotonic() + SERVER_TIMEOUT
    found_at = None
    while time.monotonic() < deadline:
        assert cli.poll() is None, f"the run ended before vLLM started:\n{console.read_text()}"
        for path in root.glob(".servers-*.jsonl"):
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                if entry.get("event") == "started":
                    return entry
        process = _vllm_process(tmp)
        if process is not None:
            found_at = found_at or time.monotonic()
            if time.monotonic() - found_at > 5:  # no record came
                return process
        time.sleep(0.5)
    raise AssertionError(f"no vLLM server started within {SERVER_TIMEOUT}s")


def _wait_deployed(root: Path, cli: subprocess.Popen[bytes], console: Path) -> None:
    """Until the deploy step has finished: its server serves, the step that started it is gone."""
    deadline = time.monotonic() + SERVER_TIMEOUT
    while time.monotonic() < deadline:
        assert cli.poll() is None, f"the run ended before deploy did:\n{console.read_text()}"
        if list(root.glob("*/deploy-model/executor_output.json")):
            return
        time.sleep(0.2)
    raise AssertionError(f"the deploy step did not finish within {SERVER_TIMEOUT}s")


def _session(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the CLI's: every step it started)."""
    live = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))) is not None:
            if stat.sid == sid and not stat.gone:
                live.append(stat.pid)
    return live


@pytest.mark.parametrize("how", ["ctrl-c-while-vllm-serves", "sigterm-while-vllm-starts"])
def test_interrupted_run_leaves_nothing_behind(
    how, hub_mirror, addition_task_dir, tmp_path, record_property
):
    root, tmp, console = tmp_path / "root", tmp_path / "tmp", tmp_path / "console.txt"
    tmp.mkdir()
    started = time.monotonic()
    cli = _start_release(hub_mirror, addition_task_dir, root, tmp, console)
    server: dict = {}
    try:
        server = _started_server(root, tmp, cli, console)
        if how == "ctrl-c-while-vllm-serves":
            _wait_deployed(root, cli, console)
            assert requests.get(f"{server['endpoint']}/health", timeout=5).status_code == 200
        pid, pgid = server["pid"], server["pgid"]
        assert group_members(pgid), "vLLM is not running"
        interrupted = time.monotonic()
        record_property("seconds_until_interrupt", round(interrupted - started, 1))
        if how.startswith("ctrl-c"):
            os.killpg(cli.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        else:
            os.kill(cli.pid, signal.SIGTERM)  # to the CLI alone
        cli.wait(timeout=STOP_TIMEOUT)
        stopped_in = time.monotonic() - interrupted
        record_property("seconds_to_stop", round(stopped_in, 1))
        print(f"{how}: interrupted at {interrupted - started:.0f}s, stopped in {stopped_in:.1f}s")
        out = console.read_text()

        expected = 128 + (signal.SIGINT if how.startswith("ctrl-c") else signal.SIGTERM)
        assert cli.returncode == expected, out
        assert f"interrupted ({signal.Signals(expected - 128).name})" in out, out
        assert not pid_alive(pid) and group_members(pgid) == [], f"vLLM {pid} survived:\n{out}"
        assert _session(cli.pid) == [], "step processes survived"
        staging = [
            *root.glob("model-store/.staging/*"),
            *tmp.glob("tiny-llama-models-*"),
            *tmp.glob("store-*"),
        ]
        assert staging == [], staging
        assert list(root.glob(".servers-*")) == []  # the run's record went with it
        assert _vllm_process(tmp) is None
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
        # whatever survived a failed check
        for pid in _session(cli.pid):
            os.kill(pid, signal.SIGKILL)
        leftover = _vllm_process(tmp) or {}
        for pgid in {server.get("pgid"), leftover.get("pgid")} - {None}:
            stop_process_group(pgid, timeout=5)
