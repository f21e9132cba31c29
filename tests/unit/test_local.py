"""The local target (KServe-style fetch, vLLM start-up) and the smoke test against a stand-in
OpenAI server."""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modelgate.deploy import DeploySpec
from modelgate.deploy.local import LocalVLLMTarget, resolve_vllm_python
from modelgate.deploy.smoke import smoke_test
from modelgate.errors import ConfigError, DeployError, SmokeTestError, StorageError
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
    with pytest.raises(StorageError, match="not a complete model folder"):
        target.deploy(DeploySpec(name="tiny", storage_uri=folder.as_uri()))
