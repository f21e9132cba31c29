"""Shared pytest fixtures.

Model fixtures are built locally (no Hugging Face Hub access) and cached across runs under
``$MODELGATE_TEST_CACHE`` or ``<repo>/.cache/test-models``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from modelgate.deploy import Deployment
    from modelgate.testing.hub_mirror import PublishedModel

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _local_data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Local runs that name no pipeline root write to ``$MODELGATE_HOME``: a temp folder here,
    never the user's own data folder (tests that check the default set it themselves)."""
    saved = os.environ.get("MODELGATE_HOME")
    os.environ["MODELGATE_HOME"] = str(tmp_path_factory.mktemp("modelgate-home"))
    yield
    if saved is None:
        os.environ.pop("MODELGATE_HOME", None)
    else:
        os.environ["MODELGATE_HOME"] = saved


def model_cache_dir() -> Path:
    """Return ``$MODELGATE_TEST_CACHE`` or ``<repo>/.cache/test-models``, the model cache."""
    configured = os.environ.get("MODELGATE_TEST_CACHE")
    return Path(configured) if configured else REPO_ROOT / ".cache" / "test-models"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A tiny Llama trained for ~60 s on single-digit addition (built once, then cached)."""
    from modelgate.testing.tiny_model import build_tiny_model

    return build_tiny_model(model_cache_dir() / "tiny-llama").path


@pytest.fixture(scope="session")
def untrained_model_dir() -> Path:
    """The same tiny Llama without training: it scores near chance, so gates must stop it."""
    from modelgate.testing.tiny_model import build_tiny_model

    return build_tiny_model(model_cache_dir() / "tiny-llama-untrained", train_seconds=0).path


@pytest.fixture(scope="session")
def addition_task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding the ``modelgate_addition`` lm-eval task; use as ``include_path``."""
    from modelgate.testing.tasks import write_addition_task

    task_dir = tmp_path_factory.mktemp("lm-eval-tasks")
    write_addition_task(task_dir)
    return task_dir


@pytest.fixture(scope="session")
def hub_mirror(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PublishedModel]:
    """An olah mirror on loopback serving ``tiny_model_dir`` as ``modelgate/tiny-llama@main``.

    Yields a :class:`~modelgate.testing.hub_mirror.PublishedModel` with ``endpoint``, ``repo_id``,
    ``commit_sha`` and ``repos_root`` (publish more repos there while the session runs).
    """
    from modelgate.testing.hub_mirror import LocalHubMirror

    with LocalHubMirror(tmp_path_factory.mktemp("hub-repos")) as mirror:
        yield mirror.publish(tiny_model_dir)


@dataclass(frozen=True)
class S3Server:
    """An S3-protocol server on loopback and the environment that points clients at it."""

    endpoint: str
    env: dict[str, str]

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (idempotent) and return it."""
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        )
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server (``moto[server]``) on a free loopback port for the whole session."""
    from moto.server import ThreadedMotoServer

    from modelgate.processes import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        yield S3Server(
            endpoint=endpoint,
            env={
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "modelgate-test",
                "AWS_SECRET_ACCESS_KEY": "modelgate-test-secret",
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        )
    finally:
        server.stop()


@pytest.fixture()
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The S3 server's endpoint and keys in this test's environment."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def no_registry_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No registry URL or token from this process's environment (registry tests name their
    registry themselves): ``pytestmark = pytest.mark.usefixtures("no_registry_env")``."""
    for name in ("MODEL_REGISTRY_URL", "MODEL_REGISTRY_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff's delays (:mod:`modelgate.retry`), recorded instead of slept."""
    import time
    from types import SimpleNamespace

    slept: list[float] = []
    monkeypatch.setattr(
        "modelgate.retry.time", SimpleNamespace(sleep=slept.append, monotonic=time.monotonic)
    )
    return slept


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite backend) on a free loopback port; yields its URL."""
    import sys

    from modelgate.processes import free_port
    from modelgate.testing.servers import http_server

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow = Path(sys.executable).parent / "mlflow"
    args = [
        str(mlflow), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root", (root / "artifacts").as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with http_server(args, url=url, log_path=root / "server.log", what="mlflow server"):
        yield url


@pytest.fixture(scope="module")
def served_tiny_model(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """vLLM (``.venv-vllm``, CPU) serving the tiny model through the local deploy target, once
    per test module; skipped without a vLLM runtime."""
    from modelgate.processes import pid_alive
    from modelgate.testing.servers import vllm_serving
    from tests.e2e.helpers import vllm_python

    python, work = vllm_python(), tmp_path_factory.mktemp("vllm")
    with vllm_serving(tiny_model_dir, python=python, work=work) as deployment:
        yield deployment
    assert not pid_alive(deployment.details["pid"])
