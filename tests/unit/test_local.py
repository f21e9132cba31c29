"""The local target (KServe-style fetch, vLLM start-up) and the smoke test against a stand-in
OpenAI server."""

import contextlib
import dataclasses
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
import requests

from modelgate.cli.local import _kept_server, _teardown
from modelgate.deploy import DeploySpec
from modelgate.deploy.local import (
    LocalVLLMTarget,
    candidate_records,
    production_path,
    read_record,
    resolve_vllm_python,
    stop_server,
    write_record,
)
from modelgate.deploy.smoke import smoke_test
from modelgate.errors import (
    ConfigError,
    DeployError,
    DeployTimeoutError,
    SmokeTestError,
    StorageError,
)
from modelgate.paths import local_serving_dir
from modelgate.processes import (
    SERVERS_FILE_ENV,
    Interruption,
    pid_alive,
    proc_stat,
    recorded_servers,
    servers_file,
    start_time,
    stop_process_group,
)
from modelgate.storage import FileStore

pytestmark = pytest.mark.unit

needs_proc = pytest.mark.skipif(
    not Path("/proc/self/stat").is_file(), reason="needs Linux /proc to tell a reused pid"
)


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


# ------------------------------------------------------------------------------------------------
# Production and candidates: the canary flow on one machine, with a stand-in server
# ------------------------------------------------------------------------------------------------

# Stands in for the vLLM interpreter: takes vLLM's arguments, answers /health (503 once the model
# folder holds a file "unhealthy") and /v1/completions with the "tag" of the model's config.json.
_FAKE_SERVER = """\
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
model = Path(args["model"])
tag = json.loads((model / "config.json").read_text())["tag"]

class Handler(BaseHTTPRequestHandler):
    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            self._send(503 if (model / "unhealthy").exists() else 200, {})
        else:
            self._send(404, {})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(200, {"model": args["served-model-name"], "choices": [{"text": tag}]})

    def log_message(self, *a):
        pass

HTTPServer((args["host"], int(args["port"])), Handler).serve_forever()
"""


class Serving:
    """Deploys of stand-in servers under one name, each by a fresh target (all state is on
    disk, as for the pipeline's steps); stops whatever is left at the end."""

    def __init__(self, tmp_path: Path, python: str) -> None:
        self.tmp_path = tmp_path
        self.python = python
        self.started: list[dict] = []

    def target(self) -> LocalVLLMTarget:
        return LocalVLLMTarget(
            python=self.python, log_dir=str(self.tmp_path / "logs"), startup_timeout=30
        )

    def uri(self, tag: str) -> str:
        store = FileStore(self.tmp_path / "store")
        if not store.is_complete(tag):
            with store.writer(tag) as folder:
                (folder / "config.json").write_text(json.dumps({"tag": tag}))
        return store.uri(tag)

    def deploy(self, tag: str, *, run_id: str | None = None):
        spec = DeploySpec(name="tiny", storage_uri=self.uri(tag), run_id=run_id)
        deployment = self.target().deploy(spec)
        self.started.append(deployment.details)
        return deployment

    def stop_all(self) -> None:
        for details in self.started:
            stop_server(details)


@pytest.fixture()
def serving(tmp_path, monkeypatch):
    """A fresh local data folder and a :class:`Serving` of stand-in servers."""
    monkeypatch.setenv("MODELGATE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(SERVERS_FILE_ENV, raising=False)
    python = tmp_path / "fake-server-python"
    python.write_text(f"#!{sys.executable}\n{_FAKE_SERVER}")
    python.chmod(0o755)
    helper = Serving(tmp_path, str(python))
    yield helper
    helper.stop_all()


def _answers(endpoint: str) -> str:
    """The tag of the model the server at ``endpoint`` serves (its completion)."""
    body = {"model": "tiny", "prompt": "2+3=", "max_tokens": 1}
    reply = requests.post(f"{endpoint}/v1/completions", json=body, timeout=5)
    reply.raise_for_status()
    return reply.json()["choices"][0]["text"]


def _production() -> dict | None:
    return read_record(production_path("tiny"))


def _production_pid() -> int | None:
    record = _production()
    return None if record is None else int(record["pid"])


def _candidates() -> list[int]:
    return sorted(int(r["pid"]) for r in candidate_records("tiny"))


def test_a_first_deploy_is_production_only_once_promoted(serving):
    first = serving.deploy("a", run_id="run-1")
    assert first.details["role"] == "first" and first.details["run_id"] == "run-1"
    assert "production_pid" not in first.details
    assert _answers(first.endpoint) == "a"
    assert _production() is None and _candidates() == [first.details["pid"]]

    done = serving.target().promote(first)

    assert (
        done == f"local vLLM pid {first.details['pid']} at {first.endpoint} is production for tiny"
    )
    record = _production()
    assert record is not None and production_path("tiny").parent == local_serving_dir()
    assert {k: record[k] for k in ("pid", "pgid", "endpoint", "run_id", "model_dir")} == {
        "pid": first.details["pid"],
        "pgid": first.details["pid"],
        "endpoint": first.endpoint,
        "run_id": "run-1",
        "model_dir": first.details["model_dir"],
    }
    assert record["storage_uri"] == serving.uri("a")
    assert record["start_time"] == first.details["start_time"]
    assert record["started"] and record["promoted"]
    assert _candidates() == []
    assert "already production" in serving.target().promote(first)  # idempotent


_PROMOTE_STEP = """\
import json, sys
from modelgate.deploy import Deployment, make_target
print(make_target("local").promote(Deployment(**json.loads(sys.argv[1]))))
"""


def test_a_candidate_runs_beside_production_and_promoting_it_stops_the_old_one(serving):
    old = serving.deploy("a", run_id="run-1")
    serving.target().promote(old)

    new = serving.deploy("b", run_id="run-2")

    assert new.details["role"] == "candidate"
    assert new.details["production_pid"] == old.details["pid"]
    assert new.details["production_endpoint"] == old.endpoint
    assert new.endpoint != old.endpoint and new.details["pid"] != old.details["pid"]
    assert (_answers(old.endpoint), _answers(new.endpoint)) == ("a", "b")
    assert _production_pid() == old.details["pid"]  # still production while gated

    # the promote step is its own process, as under kfp.local: it knows only the deployment
    step = subprocess.run(
        [sys.executable, "-c", _PROMOTE_STEP, json.dumps(dataclasses.asdict(new))],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    assert f"stopped the previous production server (pid {old.details['pid']})" in step.stdout
    assert _gone(old.details["pid"])
    assert not Path(old.details["model_dir"]).exists()
    assert _production_pid() == new.details["pid"] and _candidates() == []
    assert _answers(new.endpoint) == "b"


def test_rollback_stops_the_candidate_and_production_keeps_answering(serving):
    production = serving.deploy("a")
    serving.target().promote(production)
    candidate = serving.deploy("b")

    done = serving.target().rollback(candidate)

    assert done == (
        f"stopped the candidate vLLM server (pid {candidate.details['pid']}); production (pid "
        f"{production.details['pid']}) keeps serving at {production.endpoint}"
    )
    assert _gone(candidate.details["pid"])
    assert not Path(candidate.details["model_dir"]).exists()
    assert _answers(production.endpoint) == "a"
    assert _production_pid() == production.details["pid"] and _candidates() == []


def test_rollback_run_stops_only_what_that_run_started_and_did_not_promote(serving):
    production = serving.deploy("a", run_id="run-1")
    serving.target().promote(production)
    mine = serving.deploy("b", run_id="run-2")
    other = serving.deploy("c", run_id="run-3")
    target = serving.target()

    done = target.rollback_run("tiny", None, "run-2")

    assert done == (
        f"stopped the vLLM server(s) of tiny run run-2 started: pid {mine.details['pid']}; "
        f"production (pid {production.details['pid']}) keeps serving at {production.endpoint}"
    )
    assert _gone(mine.details["pid"]) and not Path(mine.details["model_dir"]).exists()
    assert _answers(other.endpoint) == "c" and _answers(production.endpoint) == "a"
    assert _candidates() == [other.details["pid"]]
    # idempotent, and production is never undone, even by the run that promoted it
    assert target.rollback_run("tiny", None, "run-2").startswith("nothing to undo")
    assert target.rollback_run("tiny", "any-namespace", "run-1").startswith("nothing to undo")
    assert _answers(production.endpoint) == "a" and _answers(other.endpoint) == "c"


def test_rollback_run_finds_a_server_in_the_runs_record_of_servers(serving, tmp_path, monkeypatch):
    monkeypatch.setenv(SERVERS_FILE_ENV, str(tmp_path / "servers.jsonl"))
    candidate = serving.deploy("a", run_id="run-1")
    # its candidate record is lost (say, a step killed between the two writes)
    (local_serving_dir() / f"tiny.candidate-{candidate.details['pid']}.json").unlink()

    done = serving.target().rollback_run("tiny", None, "run-1")

    assert (
        done
        == f"stopped the vLLM server(s) of tiny run run-1 started: pid {candidate.details['pid']}"
    )
    assert _gone(candidate.details["pid"]) and recorded_servers(tmp_path / "servers.jsonl") == []


def test_a_stale_production_record_is_dropped(serving, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = serving.tmp_path / "tiny-models-old"
    leftover.mkdir()
    stale = {"pid": dead.pid, "pgid": dead.pid, "endpoint": "http://127.0.0.1:9"}
    write_record(production_path("tiny"), {**stale, "model_dir": str(leftover)})

    with caplog.at_level("WARNING", logger="modelgate.deploy.local"):
        deployment = serving.deploy("a")

    assert deployment.details["role"] == "first"
    assert f"dropped the stale production record of tiny: pid {dead.pid}" in caplog.text
    assert _production() is None and not leftover.exists()


@needs_proc
def test_a_production_record_whose_pid_was_reused_is_dropped_and_that_process_left_alone(
    serving, caplog
):
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    try:
        ticks = start_time(stranger.pid)
        assert ticks is not None
        reused = {"pid": stranger.pid, "pgid": stranger.pid, "start_time": ticks - 1}
        write_record(production_path("tiny"), {**reused, "endpoint": "http://127.0.0.1:9"})
        with caplog.at_level("WARNING", logger="modelgate.deploy.local"):
            deployment = serving.deploy("a")
        assert deployment.details["role"] == "first"
        assert "dropped the stale production record" in caplog.text
        serving.target().promote(deployment)
        assert stranger.poll() is None  # never signalled
        assert _production_pid() == deployment.details["pid"]
    finally:
        stranger.kill()
        stranger.wait()


@needs_proc
def test_a_candidate_record_whose_pid_was_reused_is_forgotten_without_a_signal(serving):
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    try:
        ticks = start_time(stranger.pid)
        assert ticks is not None
        record = {"pid": stranger.pid, "pgid": stranger.pid, "start_time": ticks - 1}
        path = local_serving_dir() / f"tiny.candidate-{stranger.pid}.json"
        write_record(path, {**record, "name": "tiny", "run_id": "run-1"})

        done = serving.target().rollback_run("tiny", None, "run-1")

        assert done.startswith("nothing to undo") and not path.exists()
        assert stranger.poll() is None  # never signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_a_production_server_that_does_not_answer_is_replaced_on_promote(serving, caplog):
    sick = serving.deploy("a")
    serving.target().promote(sick)
    (Path(sick.details["model_dir"]) / "unhealthy").write_text("")

    with caplog.at_level("WARNING", logger="modelgate.deploy.local"):
        new = serving.deploy("b")

    assert new.details["role"] == "first" and "does not answer /health" in caplog.text
    assert not _gone(sick.details["pid"])  # left alone until the new one is promoted
    assert "stopped the previous production server" in serving.target().promote(new)
    assert _gone(sick.details["pid"]) and _production_pid() == new.details["pid"]


def test_a_candidate_that_stopped_is_not_promoted(serving):
    production = serving.deploy("a")
    serving.target().promote(production)
    candidate = serving.deploy("b")
    stop_process_group(candidate.details["pid"])  # it died after its gates

    with pytest.raises(DeployError, match="no longer runs.*production is left as it is"):
        serving.target().promote(candidate)

    assert _production_pid() == production.details["pid"]
    assert _answers(production.endpoint) == "a"


_LOCKED_INCREMENTS = """\
import sys, time
from modelgate.deploy.local import production_path, read_record, serving_lock, write_record
for _ in range(int(sys.argv[1])):
    with serving_lock("tiny"):
        record = read_record(production_path("tiny"))
        time.sleep(0.002)  # a read-modify-write that another process would interleave
        write_record(production_path("tiny"), {"pid": 1, "count": record["count"] + 1})
"""


def test_concurrent_record_writes_are_serialized_and_never_torn(serving):
    write_record(production_path("tiny"), {"pid": 1, "count": 0})
    writers = [
        subprocess.Popen([sys.executable, "-c", _LOCKED_INCREMENTS, "25"], env=os.environ.copy())
        for _ in range(4)
    ]
    torn = 0
    while any(w.poll() is None for w in writers):  # a reader without the lock
        torn += read_record(production_path("tiny")) is None
        time.sleep(0.0005)  # leave the writers a CPU
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]

    assert read_record(production_path("tiny")) == {"pid": 1, "count": 100}  # no lost update
    assert torn == 0  # every read saw a whole record
    assert not list(local_serving_dir().glob(".*.tmp"))


# ------------------------------------------------------------------------------------------------
# modelgate run's end: --keep-serving leaves production; without it the run's servers stop
# ------------------------------------------------------------------------------------------------


def test_without_keep_serving_the_run_stops_its_promoted_server_and_forgets_it(
    serving, tmp_path, capsys
):
    servers = tmp_path / ".servers-1.jsonl"
    with servers_file(servers):
        deployment = serving.deploy("a", run_id="run-1")
        serving.target().promote(deployment)
        kept = _kept_server(servers, keep=False)
        _teardown(servers, kept=kept, interruption=Interruption())

    assert kept is None and _gone(deployment.details["pid"])
    assert _production() is None and not servers.exists()
    out = capsys.readouterr().out
    assert f"stopped local vLLM (pid {deployment.details['pid']}, production of tiny" in out


def test_a_run_leaves_a_kept_server_alone_unless_it_replaces_it(serving, tmp_path, capsys):
    first_run = tmp_path / ".servers-1.jsonl"
    with servers_file(first_run):
        kept_deployment = serving.deploy("a", run_id="run-1")
        serving.target().promote(kept_deployment)
        kept = _kept_server(first_run, keep=True)
        _teardown(first_run, kept=kept, interruption=Interruption())
    pid = kept_deployment.details["pid"]
    out = capsys.readouterr().out
    assert f"vLLM keeps serving tiny at {kept_deployment.endpoint} (pid {pid})" in out
    assert f"record: {production_path('tiny')}" in out and f"kill -- -{pid}" in out
    assert _answers(kept_deployment.endpoint) == "a" and _production_pid() == pid

    # a later release whose candidate fails its gate: the kept server keeps answering
    second_run = tmp_path / ".servers-2.jsonl"
    with servers_file(second_run):
        failed = serving.deploy("b", run_id="run-2")
        assert failed.details["role"] == "candidate" and failed.details["production_pid"] == pid
        serving.target().rollback_run("tiny", None, "run-2")
        _teardown(
            second_run, kept=_kept_server(second_run, keep=False), interruption=Interruption()
        )
    assert _gone(failed.details["pid"]) and _answers(kept_deployment.endpoint) == "a"
    assert _production_pid() == pid

    # one whose candidate passes takes over (kept again), and the old server stops
    third_run = tmp_path / ".servers-3.jsonl"
    with servers_file(third_run):
        passed = serving.deploy("c", run_id="run-3")
        serving.target().promote(passed)
        serving.target().rollback_run("tiny", None, "run-3")  # the exit handler: nothing to undo
        kept = _kept_server(third_run, keep=True)
        _teardown(third_run, kept=kept, interruption=Interruption())
    assert kept is not None and kept["details"]["pid"] == passed.details["pid"]
    assert _gone(pid) and _answers(passed.endpoint) == "c"
    assert _production_pid() == passed.details["pid"]
