"""Transient registry failures: the probe and idempotent calls are retried within
``REGISTRY_RETRY``, and a create whose answer was lost is adopted, on both backends.

Kubeflow: the REST double (``fail`` answers an error without acting, ``lose`` acts and then
loses the answer). MLflow: a real ``mlflow server`` behind a loopback proxy that does the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from modelgate.errors import RegistryError
from modelgate.params import ReleaseParams
from modelgate.preflight import preflight, release_checks
from modelgate.processes import free_port
from modelgate.registry import candidate_request, registry_from_url
from modelgate.registry.base import REGISTRATION_ID_PROPERTY, REGISTRY_RETRY
from modelgate.registry.kubeflow import KubeflowModelRegistry
from modelgate.registry.mlflow import MLflowRegistry
from modelgate.retry import RetryPolicy, backoff
from tests.doubles.http import serve, stop_serving
from tests.doubles.model_registry import FakeModelRegistry, fake_model_registry  # noqa: F401

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("no_registry_env")]
SHA = "0123456789abcdef0123456789abcdef01234567"


def _request(run: str, repo: str = "org/M"):
    return candidate_request(
        model_uri=f"s3://models/org--m/{SHA}/fp8_dynamic-{run}",
        repo_id=repo,
        revision="main",
        commit_sha=SHA,
        scheme="FP8_DYNAMIC",
        pipeline_run_id=run,
    )


def _preflight_registry(url: str) -> str:
    """The registry check exactly as ``modelgate preflight`` and the pipeline's step run it."""
    params = ReleaseParams(model_id="org/m", model_store="file:///tmp/x", registry_url=url)
    (result,) = preflight({"registry": release_checks(params, local=True)["registry"]})
    return result.detail


# --- the helper --------------------------------------------------------------------------------
def test_backoff_stops_at_the_deadline_and_only_retries_what_is_transient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(
        "modelgate.retry.time", SimpleNamespace(sleep=sleep, monotonic=lambda: clock[0])
    )
    calls = []

    def down() -> None:
        calls.append(clock[0])
        clock[0] += 2.0  # each call waits out a 2 s timeout
        raise TimeoutError("no answer")

    with pytest.raises(TimeoutError):
        RetryPolicy(attempts=10, base_delay=0.5, max_delay=4.0, deadline=10.0).call(
            down, retry_on=(TimeoutError,)
        )
    assert calls == [0.0, 2.5, 5.5, 9.5]  # no retry would start after 10 s
    assert slept == [0.5, 1.0, 2.0]

    with pytest.raises(ValueError):
        backoff(lambda: int("x"), retry_if=lambda e: isinstance(e, KeyError))
    assert len(slept) == 3  # a permanent error is raised at once


# --- Kubeflow Model Registry -------------------------------------------------------------------
def test_kubeflow_preflight_waits_out_a_registry_answering_503_twice(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
    sleeps: list[float],
) -> None:
    fake_model_registry.fail("get_registered_models", status=503, times=2)

    assert _preflight_registry(fake_model_registry.url).endswith("answers")

    probes = [r for r in fake_model_registry.requests if r.path.endswith("/registered_models")]
    assert [r.status for r in probes] == [503, 503, 200]


def test_kubeflow_dead_registry_fails_within_seconds(sleeps: list[float]) -> None:
    backend = KubeflowModelRegistry(f"http://127.0.0.1:{free_port()}", author="ci")
    with pytest.raises(RegistryError, match="unreachable.*MODEL_REGISTRY_URL"):
        backend.check()
    assert len(sleeps) == REGISTRY_RETRY.attempts - 1
    assert sum(sleeps) <= (REGISTRY_RETRY.deadline or 0)


def test_kubeflow_register_completes_when_a_create_answers_503_twice(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
    sleeps: list[float],
) -> None:
    fake_model_registry.fail("create_model_version", status=503, times=2)
    backend = KubeflowModelRegistry(fake_model_registry.url, author="ci")

    record = backend.register_version(_request("run1"))

    assert record.status == "registered" and record.stage == "candidate"
    (mv,) = fake_model_registry.model_versions.values()
    assert mv["state"] == "LIVE" and record.model_version_id == mv["id"]
    assert fake_model_registry.artifacts_of(mv["id"])[0]["uri"] == record.uri
    creates = [r.status for r in fake_model_registry.requests if r.operation.startswith("create_m")]
    assert creates == [503, 503, 201]


@pytest.mark.parametrize("lost", ["503", "timeout"])
def test_kubeflow_lost_create_is_adopted_not_archived(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
    sleeps: list[float],
    lost: str,
) -> None:
    """The server created the version; the client saw a 503 (or no answer in time)."""
    if lost == "503":
        fake_model_registry.lose("create_model_version", status=503)
    else:  # the answer comes long after the client's timeout (the client's own is 5 minutes)
        fake_model_registry.lose("create_model_version", status=None, delay=20.0)
    backend = KubeflowModelRegistry(fake_model_registry.url, author="ci", timeout=1.0)
    started = time.monotonic()

    record = backend.register_version(_request("run1"))

    assert time.monotonic() - started < 10.0  # gave up waiting, read back instead

    (mv,) = fake_model_registry.model_versions.values()  # one version, not two
    assert mv["state"] == "LIVE"  # adopted, not archived
    assert record.model_version_id == mv["id"] and record.stage == "candidate"
    props = FakeModelRegistry.plain_properties(mv)
    assert props[REGISTRATION_ID_PROPERTY] and props["modelgate.stage"] == "candidate"
    (artifact,) = fake_model_registry.artifacts_of(mv["id"])
    assert artifact["uri"] == record.uri
    creates = [r for r in fake_model_registry.requests if r.operation == "create_model_version"]
    assert len(creates) == 1  # read back instead of created again
    assert not [r for r in fake_model_registry.requests if r.operation == "update_model_version"]


def test_kubeflow_lost_create_of_someone_elses_version_is_a_clash(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the read-back finds under the name is adopted only with this registration's id."""
    fake_model_registry.lose("create_model_version", status=503)
    original = fake_model_registry._create_mv

    def someone_else(query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        body["customProperties"][REGISTRATION_ID_PROPERTY]["string_value"] = "another-run"
        return original(query, body)

    monkeypatch.setattr(fake_model_registry, "_create_mv", someone_else)  # routes getattr it
    backend = KubeflowModelRegistry(fake_model_registry.url, author="ci")

    with pytest.raises(RegistryError, match="another registration"):
        backend.register_version(_request("run1"))

    (mv,) = fake_model_registry.model_versions.values()
    assert mv["state"] == "LIVE"  # not ours: neither adopted nor archived


def test_kubeflow_step_retry_completes_what_a_failed_attempt_left(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
    sleeps: list[float],
) -> None:
    """KFP retries the register step (set_retry): the same run finds its own leftover."""
    backend = KubeflowModelRegistry(fake_model_registry.url, author="ci")
    fake_model_registry.fail("upsert_model_version_artifact", status=400)
    with pytest.raises(RegistryError, match="archived model version"):
        backend.register_version(_request("run1"))  # the first attempt
    (mv,) = fake_model_registry.model_versions.values()
    assert mv["state"] == "ARCHIVED"

    record = backend.register_version(_request("run1"))  # the step's retry

    assert record.status == "registered" and record.stage == "candidate"
    assert mv["state"] == "LIVE" and record.model_version_id == mv["id"]
    assert [a["uri"] for a in fake_model_registry.artifacts_of(mv["id"])] == [record.uri]


# --- MLflow behind a flaky proxy ---------------------------------------------------------------
@dataclass
class FlakyProxy:
    """Forwards to ``upstream``; ``fail`` answers an error without forwarding, ``lose``
    forwards and then answers the error instead of the upstream's answer."""

    upstream: str
    log: list[tuple[str, str, int]] = field(default_factory=list)
    _rules: list[dict[str, Any]] = field(default_factory=list)
    _server: Any = None
    _thread: Any = None

    def fail(self, path: str, *, status: int = 503, times: int = 1) -> None:
        self._rules.append({"path": path, "status": status, "times": times, "forward": False})

    def lose(self, path: str, *, status: int = 503, times: int = 1) -> None:
        self._rules.append({"path": path, "status": status, "times": times, "forward": True})

    def handle(self, method: str, raw_path: str, headers: Any, raw_body: bytes) -> tuple[int, Any]:
        rule = next(
            (r for r in self._rules if r["times"] > 0 and raw_path.split("?")[0] == r["path"]),
            None,
        )
        if rule is not None:
            rule["times"] -= 1
        if rule is None or rule["forward"]:
            resp = requests.request(
                method,
                self.upstream + raw_path,
                data=raw_body or None,
                headers={"Content-Type": headers.get("Content-Type") or "application/json"},
                timeout=30,
            )
            answer: Any = (
                resp.json() if "json" in resp.headers.get("Content-Type", "") else resp.text
            )
            status = resp.status_code
        if rule is not None:
            status = rule["status"]
            answer = {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected"}
        self.log.append((method, raw_path.split("?")[0], status))
        return status, answer

    def start(self) -> FlakyProxy:
        self._server, self._thread = serve(self, name="FlakyProxy")
        return self

    def stop(self) -> None:
        stop_serving(self._server, self._thread)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def statuses(self, path: str) -> list[int]:
        return [status for _, p, status in self.log if p == path]


@pytest.fixture
def proxy(mlflow_server: str) -> Iterator[FlakyProxy]:
    flaky = FlakyProxy(mlflow_server).start()
    try:
        yield flaky
    finally:
        flaky.stop()


CREATE_VERSION = "/api/2.0/mlflow/model-versions/create"


def _fresh_repo() -> str:
    import uuid

    return f"org/M-{uuid.uuid4().hex[:8]}"


def test_mlflow_preflight_waits_out_a_server_answering_503_twice(
    proxy: FlakyProxy, sleeps: list[float]
) -> None:
    proxy.fail("/health", times=2)

    assert _preflight_registry(f"mlflow+{proxy.url}").endswith("answers")

    assert proxy.statuses("/health") == [503, 503, 200]


def test_mlflow_register_completes_when_a_create_answers_503_twice(
    proxy: FlakyProxy, sleeps: list[float]
) -> None:
    backend = registry_from_url(f"mlflow+{proxy.url}")
    assert isinstance(backend, MLflowRegistry)
    repo = _fresh_repo()
    proxy.fail(CREATE_VERSION, times=2)

    record = backend.register_version(_request("run1", repo))

    assert record.status == "registered" and record.stage == "candidate"
    versions = backend._client.search_model_versions(f"name = '{record.model_name}'")
    assert [v.version for v in versions] == [record.model_version_id]
    assert proxy.statuses(CREATE_VERSION) == [503, 503, 200]


def test_mlflow_lost_create_is_adopted_not_deleted(proxy: FlakyProxy, sleeps: list[float]) -> None:
    """MLflow created the version (it numbers versions itself: a blind retry makes another);
    the client saw a 503."""
    backend = registry_from_url(f"mlflow+{proxy.url}")
    assert isinstance(backend, MLflowRegistry)
    repo = _fresh_repo()
    backend.register_version(_request("run0", repo))  # the registered model exists already
    proxy.lose(CREATE_VERSION)

    record = backend.register_version(_request("run1", repo))

    client = backend._client
    versions = client.search_model_versions(f"name = '{record.model_name}'")
    mine = [v for v in versions if v.tags.get("modelgate.version_name") == record.version_name]
    assert len(mine) == 1 and len(versions) == 2  # one version for this registration
    (mv,) = mine
    assert record.model_version_id == mv.version and record.stage == "candidate"
    assert mv.tags[REGISTRATION_ID_PROPERTY] and mv.source == record.uri
    assert client.get_run(mv.run_id).info.lifecycle_stage == "active"  # its run was kept
    assert proxy.statuses(CREATE_VERSION).count(503) == 1
    assert len(proxy.statuses(CREATE_VERSION)) == 2  # run0's create, run1's lost one


def test_mlflow_dead_server_fails_within_seconds(sleeps: list[float]) -> None:
    backend = MLflowRegistry(f"mlflow+http://127.0.0.1:{free_port()}", author="t")
    with pytest.raises(RegistryError, match="unreachable.*MODEL_REGISTRY_URL"):
        backend.check()
    assert sum(sleeps) <= (REGISTRY_RETRY.deadline or 0)
