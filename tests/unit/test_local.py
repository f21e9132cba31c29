"""The local target (KServe-style fetch, vLLM start-up) and the smoke test against a stand-in
OpenAI server."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modelgate.deploy import DeploySpec
from modelgate.deploy.local import LocalVLLMTarget, resolve_vllm_python, stop_server
from modelgate.deploy.smoke import smoke_test
from modelgate.errors import (
    ConfigError,
    DeployError,
    DeployTimeoutError,
    SmokeTestError,
    StorageError,
)
from modelgate.processes import SERVERS_FILE_ENV, pid_alive, proc_stat, recorded_servers
from modelgate.storage import FileStore

pytestmark = pytest.mark.unit


class _OpenAI(BaseHTTPRequestHandler):
    completion = "5"
    chat = "five"

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["model"] == "tiny"
        if self.path == "/v1/completions":
            payload = {"choices": [{"text": self.completion}]}
        elif self.path == "/v1/chat/completions":
            payload = {"choices": [{"message": {"role": "assistant", "content": self.chat}}]}
        else:
            self.send_error(404)
            return
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def openai_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_smoke_test_returns_both_texts(openai_server):
    _, url = openai_server
    assert smoke_test(url, model="tiny") == {"completion": "5", "chat": "five"}


def test_smoke_test_fails_on_empty_text(openai_server, monkeypatch):
    _, url = openai_server
    monkeypatch.setattr(_OpenAI, "chat", "  ")
    with pytest.raises(SmokeTestError, match="chat/completions returned no text"):
        smoke_test(url, model="tiny")


def test_smoke_test_fails_on_http_error(openai_server):
    _, url = openai_server
    with pytest.raises(SmokeTestError, match="answered 404"):
        smoke_test(url + "/nothing-here", model="tiny", timeout=5)


def test_vllm_python_must_exist(monkeypatch, tmp_path):
    import modelgate.deploy.local as local

    monkeypatch.delenv("MODELGATE_VLLM_PYTHON", raising=False)
    monkeypatch.setattr(local, "vllm_python_candidates", lambda: [tmp_path / "none" / "python"])
    with pytest.raises(ConfigError, match="no vLLM interpreter found .*none/python.*make venvs"):
        resolve_vllm_python()
    with pytest.raises(ConfigError, match="--vllm-python.*does not exist"):
        resolve_vllm_python(str(tmp_path / "python"))
    monkeypatch.setenv("MODELGATE_VLLM_PYTHON", str(tmp_path / "env-python"))
    with pytest.raises(ConfigError, match="MODELGATE_VLLM_PYTHON.*does not exist"):
        resolve_vllm_python()


def test_vllm_python_is_found_from_the_installation_not_the_working_directory(
    monkeypatch, tmp_path
):
    import sys as _sys

    from modelgate.deploy.local import vllm_python_candidates

    monkeypatch.delenv("MODELGATE_VLLM_PYTHON", raising=False)
    monkeypatch.chdir(tmp_path)
    candidates = vllm_python_candidates()
    assert Path(_sys.prefix).parent / ".venv-vllm/bin/python" in candidates
    assert all(c.is_absolute() and not str(c).startswith(str(tmp_path)) for c in candidates)
    (tmp_path / ".venv-vllm/bin").mkdir(parents=True)
    (tmp_path / ".venv-vllm/bin/python").write_text("")  # a decoy in the working directory
    found = resolve_vllm_python() if any(c.is_file() for c in candidates) else None
    assert found is None or not found.startswith(str(tmp_path))


def _stored_model(tmp_path, files):
    store = FileStore(tmp_path / "store")
    with store.writer("org--m/abc1234/base-0123456789ab") as folder:
        for name, text in files.items():
            (folder / name).write_text(text)
    return store.uri("org--m/abc1234/base-0123456789ab")


def test_server_that_dies_at_start_reports_its_log(tmp_path):
    uri = _stored_model(tmp_path, {"config.json": "{}"})
    # this interpreter has no vLLM: the server exits at once with ModuleNotFoundError
    target = LocalVLLMTarget(python=sys.executable, log_dir=str(tmp_path), startup_timeout=60)
    spec = DeploySpec(name="tiny", storage_uri=uri)
    with pytest.raises(DeployError, match="(?s)exited with code 1.*No module named .vllm"):
        target.deploy(spec)
    cmd = target.command(spec, model_dir=str(tmp_path), port=1234)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert "--enforce-eager" in cmd and "--served-model-name=tiny" in cmd
    # the folder KServe's downloader filled is removed with the failed deployment
    assert not list(tmp_path.glob("tiny-models-*"))


def test_deploy_needs_a_model_folder(tmp_path):
    uri = _stored_model(tmp_path, {"weights.txt": "x"})
    target = LocalVLLMTarget(python=sys.executable, log_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="config.json"):
        target.deploy(DeploySpec(name="tiny", storage_uri=uri))


def test_deploy_refuses_an_incomplete_folder(tmp_path):
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # no marker: a write that did not finish
    target = LocalVLLMTarget(python=sys.executable, log_dir=str(tmp_path))
    with pytest.raises(StorageError, match="not a complete (model|stored) folder"):
        target.deploy(DeploySpec(name="tiny", storage_uri=folder.as_uri()))


# ------------------------------------------------------------------------------------------------
# Stopping the server: every process of its group, also when the step that started it is gone
# ------------------------------------------------------------------------------------------------

# Stands in for the vLLM interpreter: starts a worker that ignores SIGTERM (as a stuck vLLM
# engine core can), writes "<pid> <worker pid>" to $FAKE_VLLM_PIDS, never answers /health.
_FAKE_VLLM = """\
import os, signal, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", (
    "import signal, time\\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    "print('up', flush=True)\\n"
    "time.sleep(300)\\n"
)], stdout=subprocess.PIPE, text=True)
worker.stdout.readline()
with open(os.environ["FAKE_VLLM_PIDS"], "w") as fh:
    fh.write(f"{os.getpid()} {worker.pid}")
time.sleep(300)
"""


@pytest.fixture()
def fake_vllm(tmp_path, monkeypatch):
    """``(python, pids_file)``: an executable that plays a vLLM server with a stubborn worker."""
    monkeypatch.setattr("modelgate.deploy.local.STOP_TIMEOUT", 1.0)  # its SIGKILL comes sooner
    python = tmp_path / "fake-vllm-python"
    python.write_text(f"#!{sys.executable}\n{_FAKE_VLLM}")
    python.chmod(0o755)
    pids = tmp_path / "fake-vllm.pids"
    yield str(python), pids
    if pids.is_file():
        for pid in map(int, pids.read_text().split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _pids(path: Path, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while not (path.is_file() and len(path.read_text().split()) == 2):
        assert time.monotonic() < deadline, "the fake vLLM did not start"
        time.sleep(0.05)
    return [int(p) for p in path.read_text().split()]


def _gone(pid: int) -> bool:
    stat = proc_stat(pid)
    return not pid_alive(pid) and (stat is None or stat.gone)


def test_server_that_never_gets_healthy_is_stopped_with_its_workers(
    tmp_path, fake_vllm, monkeypatch
):
    python, pids_file = fake_vllm
    record = tmp_path / "servers.jsonl"
    monkeypatch.setenv(SERVERS_FILE_ENV, str(record))
    uri = _stored_model(tmp_path, {"config.json": "{}"})
    target = LocalVLLMTarget(
        python=python,
        log_dir=str(tmp_path / "logs"),
        startup_timeout=3,
        env={"FAKE_VLLM_PIDS": str(pids_file)},
    )
    with pytest.raises(DeployTimeoutError):
        target.deploy(DeploySpec(name="tiny", storage_uri=uri))
    pids = _pids(pids_file)
    assert [pid for pid in pids if not _gone(pid)] == []
    events = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(e["event"], e["pid"]) for e in events] == [("started", pids[0]), ("stopped", pids[0])]
    assert events[0]["pgid"] == pids[0] and events[0]["model_dir"].startswith(str(tmp_path))
    assert recorded_servers(record) == []
    assert not list((tmp_path / "logs").glob("tiny-models-*"))


_DEPLOY = """\
import sys
from modelgate.deploy import DeploySpec, local
from modelgate.deploy.local import LocalVLLMTarget
local.STOP_TIMEOUT = 1.0
python, log_dir, pids, uri = sys.argv[1:]
target = LocalVLLMTarget(python=python, log_dir=log_dir, startup_timeout=300,
                         env={"FAKE_VLLM_PIDS": pids})
target.deploy(DeploySpec(name="tiny", storage_uri=uri))
"""


def _deploy_in_a_step(tmp_path, fake_vllm, record: Path) -> tuple[subprocess.Popen, list[int]]:
    """Run the local deploy in a subprocess (a kfp.local step) until its server started."""
    python, pids_file = fake_vllm
    uri = _stored_model(tmp_path, {"config.json": "{}"})
    step = subprocess.Popen(
        [sys.executable, "-c", _DEPLOY, python, str(tmp_path / "logs"), str(pids_file), uri],
        env={**os.environ, SERVERS_FILE_ENV: str(record)},
    )
    return step, _pids(pids_file)


def test_a_server_whose_step_was_killed_is_found_and_stopped_from_the_record(tmp_path, fake_vllm):
    record = tmp_path / "servers.jsonl"
    step, pids = _deploy_in_a_step(tmp_path, fake_vllm, record)
    step.kill()  # SIGKILL: no clean-up of its own
    step.wait()
    assert not any(_gone(pid) for pid in pids)  # the server outlived its step

    (server,) = recorded_servers(record)
    assert server["pid"] == server["pgid"] == pids[0]
    stop_server(server)

    assert [pid for pid in pids if not _gone(pid)] == []
    assert not Path(server["model_dir"]).exists()
    stop_server(server)  # idempotent


def test_sigterm_to_the_deploy_step_stops_its_server(tmp_path, fake_vllm):
    record = tmp_path / "servers.jsonl"
    step, pids = _deploy_in_a_step(tmp_path, fake_vllm, record)
    step.terminate()  # SIGTERM: unwinds like Ctrl-C
    assert step.wait(timeout=60) != 0
    assert [pid for pid in pids if not _gone(pid)] == []
    assert recorded_servers(record) == []
    assert not list((tmp_path / "logs").glob("tiny-models-*"))
