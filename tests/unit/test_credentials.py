"""Credentials go only where they are meant to: registry and Hub tokens, MLflow URL passwords,
and the local vLLM server's environment."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from modelgate.credentials import (
    ALLOW_INSECURE_TOKEN_ENV,
    is_loopback_host,
    is_secure_transport,
    redact_url,
    scrub,
    token_for,
)
from modelgate.errors import ConfigError, RegistryError
from modelgate.registry.base import RegisterRequest
from modelgate.registry.kubeflow import KubeflowModelRegistry
from tests.doubles.model_registry import FakeModelRegistry, fake_model_registry  # noqa: F401

pytestmark = pytest.mark.unit

#: Variables these tests set or that the code under test changes; restored after each test.
_ENV = (
    "MODEL_REGISTRY_URL",
    "MODEL_REGISTRY_TOKEN",
    "MODEL_REGISTRY_TOKEN_FILE",
    "MODEL_REGISTRY_INSECURE",
    "KF_PIPELINES_SA_TOKEN_PATH",
    ALLOW_INSECURE_TOKEN_ENV,
    "HF_TOKEN",
    "HF_ENDPOINT",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.setenv(name, "")  # recorded, so whatever the code sets is undone
        monkeypatch.delenv(name)


def _request(version: str = "v1") -> RegisterRequest:
    return RegisterRequest(
        model_name="org--m",
        version_name=version,
        uri=f"s3://models/org--m/{version}",
        description="candidate",
        properties={"source_repo": "org/M"},
    )


def _record_headers(
    fake: FakeModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, str]]:
    """Headers of every request the registry double receives."""
    seen: list[dict[str, str]] = []
    handle = fake.handle

    def recording(method: str, raw_path: str, headers: Any, raw_body: bytes) -> tuple[int, Any]:
        seen.append(dict(headers.items()))
        return handle(method, raw_path, headers, raw_body)

    monkeypatch.setattr(fake, "handle", recording)
    return seen


# --- 1. the Kubeflow Model Registry token -----------------------------------------------------
def test_registry_never_sends_the_pods_service_account_token(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    sa_token = tmp_path / "serviceaccount-token"
    sa_token.write_text("k8s-sa-token-must-stay-home")
    # where model-registry 0.3.18 looks when it is given no token (model_registry/_client.py)
    monkeypatch.setattr("model_registry._client.DEFAULT_K8S_SA_TOKEN_PATH", str(sa_token))
    headers = _record_headers(fake_model_registry, monkeypatch)

    backend = KubeflowModelRegistry(fake_model_registry.url, author="ci", connect_attempts=1)
    record = backend.register_version(_request())

    assert record.status == "registered"
    assert len(headers) > 3  # the probe, the client's connect probe, the registration
    assert not [h for h in headers if "Authorization" in h]

    # nor the file that KFP's variable names
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(sa_token))
    headers.clear()
    KubeflowModelRegistry(fake_model_registry.url, author="ci").register_version(_request("v2"))
    assert headers and not [h for h in headers if "Authorization" in h]


def test_registry_sends_the_token_it_is_given_by_env_or_file(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    fake_model_registry.token = "registry-token"
    headers = _record_headers(fake_model_registry, monkeypatch)
    token_file = tmp_path / "token"
    token_file.write_text("registry-token\n")
    monkeypatch.setenv("MODEL_REGISTRY_TOKEN_FILE", str(token_file))

    record = KubeflowModelRegistry(fake_model_registry.url, author="ci").register_version(
        _request()
    )

    assert record.status == "registered"
    assert {h.get("Authorization") for h in headers} == {"Bearer registry-token"}
    monkeypatch.setenv("MODEL_REGISTRY_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="MODEL_REGISTRY_TOKEN_FILE"):
        KubeflowModelRegistry(fake_model_registry.url, author="ci")


@pytest.mark.parametrize("how", ["argument", "env", "file"])
def test_registry_token_over_plain_http_to_another_host_is_refused(
    how: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = "http://model-registry-service.kubeflow.svc.cluster.local:8080"
    kw: dict[str, Any] = {}
    if how == "argument":
        kw["token"] = "s3cret"
    elif how == "env":
        monkeypatch.setenv("MODEL_REGISTRY_TOKEN", "s3cret")
    else:
        (tmp_path / "token").write_text("s3cret")
        monkeypatch.setenv("MODEL_REGISTRY_TOKEN_FILE", str(tmp_path / "token"))

    with pytest.raises(ConfigError) as info:
        KubeflowModelRegistry(url, author="ci", **kw)

    message = str(info.value)
    assert "https://" in message and ALLOW_INSECURE_TOKEN_ENV in message
    assert "s3cret" not in message
    # explicitly allowed, or no token at all: accepted
    KubeflowModelRegistry(url, author="ci", allow_insecure_token=True, **kw)
    monkeypatch.setenv(ALLOW_INSECURE_TOKEN_ENV, "1")
    KubeflowModelRegistry(url, author="ci", **kw)
    for name in ("MODEL_REGISTRY_TOKEN", "MODEL_REGISTRY_TOKEN_FILE", ALLOW_INSECURE_TOKEN_ENV):
        monkeypatch.delenv(name, raising=False)
    KubeflowModelRegistry(url, author="ci")


def test_registry_tls_verification_is_only_turned_off_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "https://registry.example"
    with pytest.raises(ConfigError, match="MODEL_REGISTRY_INSECURE"):
        KubeflowModelRegistry(url, author="ci", token="t", is_secure=False)

    assert KubeflowModelRegistry(url, author="ci", token="t")._verify() is True
    assert KubeflowModelRegistry(url, author="ci", token="t", insecure=True)._verify() is False
    monkeypatch.setenv("MODEL_REGISTRY_INSECURE", "1")
    assert KubeflowModelRegistry(url, author="ci", token="t")._verify() is False


def test_https_registry_without_a_configured_token_says_how_to_give_one() -> None:
    backend = KubeflowModelRegistry("https://registry.invalid", author="ci", connect_attempts=1)
    with pytest.raises(ConfigError, match="MODEL_REGISTRY_TOKEN_FILE"):
        backend.register_version(_request())


# --- 2. HF_TOKEN and the Hub endpoint ---------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "https://huggingface.co",
        "https://mirror.example:8443/hub",
        "http://127.0.0.1:8090",
        "http://127.3.4.5",
        "http://[::1]:8080",
        "http://localhost:5000",
        "mlflow+https://user:pw@mlflow.example",
    ],
)
def test_token_is_sent_over_https_and_to_loopback(url: str) -> None:
    assert is_secure_transport(url)
    assert token_for(url, "hf_secret") == "hf_secret"


@pytest.mark.parametrize(
    "url",
    [
        "http://mirror.example",
        "http://10.0.0.5:8080",
        "http://127.0.0.1.nip.io",
        "http://[::2]",
        "ftp://mirror.example",
    ],
)
def test_token_is_dropped_over_plain_http_unless_allowed(
    url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with caplog.at_level(logging.WARNING, logger="modelgate.credentials"):
        assert token_for(url, "hf_secret", what="HF_TOKEN") is None
    assert "HF_TOKEN is not sent" in caplog.text and ALLOW_INSECURE_TOKEN_ENV in caplog.text
    assert "hf_secret" not in caplog.text
    with pytest.raises(ConfigError, match="https://"):
        token_for(url, "hf_secret", refuse=True)

    assert token_for(url, "hf_secret", allow_insecure=True) == "hf_secret"
    monkeypatch.setenv(ALLOW_INSECURE_TOKEN_ENV, "1")
    assert token_for(url, "hf_secret") == "hf_secret"
    assert token_for(url, "hf_secret", allow_insecure=False) is None


def test_loopback_hosts() -> None:
    assert all(is_loopback_host(h) for h in ("localhost", "LOCALHOST.", "127.0.0.1", "::1"))
    assert not any(is_loopback_host(h) for h in ("", None, "localhost.example", "0.0.0.0"))


class _FakeApi:
    """``huggingface_hub.HfApi`` recording the token it is built with."""

    tokens: list[Any] = []

    def __init__(self, *, endpoint: str, token: Any) -> None:
        _FakeApi.tokens.append(token)

    def model_info(self, repo_id: str, *, revision: str) -> Any:
        siblings = [SimpleNamespace(rfilename=f) for f in ("model.safetensors", "tokenizer.json")]
        return SimpleNamespace(sha="a" * 40, siblings=siblings)


@pytest.mark.parametrize(
    ("endpoint", "allow", "sent"),
    [
        ("https://hub.example", None, "hf_secret"),
        ("http://127.0.0.1:8090", None, "hf_secret"),
        ("http://mirror.example", None, False),  # False: not even huggingface_hub's own login
        ("http://mirror.example", True, "hf_secret"),
    ],
)
def test_download_sends_hf_token_only_to_https_or_loopback(
    endpoint: str,
    allow: bool | None,
    sent: str | bool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import huggingface_hub

    from modelgate.download import resolve_snapshot

    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeApi)
    monkeypatch.setattr(_FakeApi, "tokens", [])
    monkeypatch.setenv("HF_TOKEN", "hf_secret")

    with caplog.at_level(logging.WARNING):
        snapshot = resolve_snapshot("org/m", endpoint=endpoint, allow_insecure_token=allow)

    assert snapshot.commit_sha == "a" * 40
    assert _FakeApi.tokens == [sent]
    assert ("HF_TOKEN is not sent" in caplog.text) is (sent is False)


@pytest.mark.parametrize(
    ("endpoint", "allow_env", "kept"),
    [
        ("https://hub.example", "", True),
        ("http://localhost:8090", "", True),
        ("http://mirror.example", "", False),
        ("http://mirror.example", "1", True),
    ],
)
def test_evaluate_keeps_hf_token_from_insecure_endpoints(
    endpoint: str,
    allow_env: str,
    kept: bool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    import modelgate.evaluate as evaluate

    seen: dict[str, str | None] = {}

    def fake_evaluate(model: str, **_: Any) -> tuple[Any, dict[str, list[Any]]]:
        seen["token"] = os.environ.get("HF_TOKEN")
        seen["implicit"] = os.environ.get("HF_HUB_DISABLE_IMPLICIT_TOKEN")
        return evaluate.EvalResult(model=model, backend="local-completions"), {}

    monkeypatch.setattr(evaluate, "_evaluate", fake_evaluate)
    monkeypatch.setattr(evaluate, "work_dir", lambda: tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    if allow_env:
        monkeypatch.setenv(ALLOW_INSECURE_TOKEN_ENV, allow_env)

    with caplog.at_level(logging.WARNING):
        evaluate.evaluate_model(
            "served", backend="local-completions", tasks=["t"], hf_endpoint=endpoint
        )

    assert seen["token"] == ("hf_secret" if kept else None)
    assert seen["implicit"] == (None if kept else "1")
    assert ("HF_TOKEN is not sent" in caplog.text) is (not kept)


# --- 3. MLflow URL passwords ------------------------------------------------------------------
def test_redact_url() -> None:
    assert redact_url("mlflow+https://user:pw@host:5000/x") == "mlflow+https://user:***@host:5000/x"
    assert redact_url("https://tok@host") == "https://***@host"
    assert redact_url("https://host/x?a=1&token=t") == "https://host/x?a=1&token=***"
    assert redact_url("mlflow+sqlite:////abs/mlflow.db") == "mlflow+sqlite:////abs/mlflow.db"
    scrubbed = scrub("POST http://u:p%40ss@h failed (p@ss)", "http://u:p%40ss@h")
    assert scrubbed == "POST http://u:***@h failed (***)"


def test_mlflow_password_never_leaves_the_backend(
    mlflow_server: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    from modelgate.evaluate import EvalResult, MetricValue
    from modelgate.registry import (
        promote_candidate,
        record_evaluation,
        register_candidate,
        registry_from_url,
    )
    from modelgate.registry.mlflow import browse_hint

    password = "pw-" + uuid.uuid4().hex
    host = mlflow_server.removeprefix("http://")
    url = f"mlflow+http://modelgate:{password}@{host}"  # the test server ignores the password
    request = _request().model_copy(update={"model_name": f"org--m-{uuid.uuid4().hex[:8]}"})
    results = EvalResult(
        model="m", backend="hf", tasks={"arc": {"acc": MetricValue(0.6, 0.01, True)}}
    )
    outputs: list[str] = []

    with caplog.at_level(logging.DEBUG):
        backend = registry_from_url(url)
        assert backend is not None
        backend.check()
        outputs += [backend.describe(), browse_hint(url)]
        record = register_candidate(registry_url=url, request=request)
        outputs.append(record.to_json())
        recorded = record_evaluation(
            record=record, registry_url=url, results=results, gate_passed=True, gate_report="ok"
        )
        outputs += [recorded.to_json(), promote_candidate(record=recorded, registry_url=url)]
        outputs.append(backend.find_version(request.model_name, request.version_name).to_json())
        with pytest.raises(RegistryError) as clash:  # the same version name, another uri
            register_candidate(
                registry_url=url, request=request.model_copy(update={"uri": "s3://other/uri"})
            )
        outputs.append(str(clash.value))
        # a later step given only the record's (redacted) registry is told what to do
        monkeypatch.delenv("MODEL_REGISTRY_URL", raising=False)
        with pytest.raises(ConfigError, match="MODEL_REGISTRY_URL") as redacted:
            promote_candidate(record=recorded, registry_url=None)
        outputs.append(str(redacted.value))

    assert record.status == "registered" and record.registry == redact_url(url)
    assert "modelgate:***@" in record.registry
    logged = caplog.text + "".join(
        str(r.args) for r in caplog.records if r.args
    )  # unformatted arguments too
    for text in [*outputs, logged]:
        assert password not in text


# --- 4. the local vLLM server's environment ---------------------------------------------------
_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIA",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "AWS_SESSION_TOKEN": "aws-session",
    "AWS_ENDPOINT_URL": "http://minio:9000",
    "HF_TOKEN": "hf_secret",
    "HUGGING_FACE_HUB_TOKEN": "hf_secret",
    "MODEL_REGISTRY_TOKEN": "mr-secret",
    "MODEL_REGISTRY_URL": "mlflow+https://u:pw@h",
    "KF_PIPELINES_TOKEN": "kfp-secret",
    "KF_PIPELINES_SA_TOKEN_PATH": "/var/run/secrets/kubeflow/pipelines/token",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-secret",
    "GITHUB_TOKEN": "gh-secret",
    "PYTHONPATH": "/work/main/src",
}
_KEPT = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/u",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TMPDIR": "/tmp/x",
    "VLLM_CPU_OMP_THREADS_BIND": "0-3",
    "OMP_NUM_THREADS": "4",
    "CUDA_VISIBLE_DEVICES": "0",
    "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
    "XDG_CACHE_HOME": "/home/u/.cache",
}


def test_vllm_server_env_is_an_allow_list() -> None:
    from modelgate.deploy.local import CPU_ENV, server_env

    env = server_env({**_SECRETS, **_KEPT}, device="cpu", extra={"VLLM_LOGGING_LEVEL": "DEBUG"})

    assert env == {**_KEPT, "HF_HUB_OFFLINE": "1", **CPU_ENV, "VLLM_LOGGING_LEVEL": "DEBUG"}
    gpu = server_env({**_SECRETS, **_KEPT}, device="cuda")
    assert not set(CPU_ENV) & set(gpu) and not set(_SECRETS) & set(gpu)


def test_vllm_server_is_started_with_the_minimal_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from modelgate.deploy import local
    from modelgate.deploy.spec import DeploySpec

    for name, value in {**_SECRETS, "VLLM_USE_V1": "1"}.items():
        monkeypatch.setenv(name, value)
    started: dict[str, Any] = {}

    class _Started(Exception):
        pass

    def fake_popen(cmd: list[str], **kw: Any) -> Any:
        started.update(kw)
        raise _Started

    monkeypatch.setattr(local.subprocess, "Popen", fake_popen)
    target = local.LocalVLLMTarget(python=__import__("sys").executable, port=8123)
    spec = DeploySpec(name="m", storage_uri="file:///nowhere")
    with pytest.raises(_Started):
        target._start(
            spec, model_dir=str(tmp_path), model_root=tmp_path, log_dir=tmp_path, production=None
        )

    env = started["env"]
    assert not set(_SECRETS) & set(env)
    assert env["VLLM_USE_V1"] == "1" and env["PATH"] == os.environ["PATH"]
