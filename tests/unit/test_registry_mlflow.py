"""The MLflow backend against real MLflow: a SQLite store, and an ``mlflow server`` on loopback."""

from __future__ import annotations

import time

import pytest

from modelgate.errors import ConfigError, RegistryError
from modelgate.evaluate import EvalResult, MetricValue
from modelgate.processes import free_port
from modelgate.registry import candidate_request, local_registry_url, registry_from_url
from modelgate.registry.mlflow import MLflowRegistry, browse_hint, tracking_uri

pytestmark = pytest.mark.unit
SHA = "0123456789abcdef0123456789abcdef01234567"


def name() -> str:
    from modelgate.naming import model_slug

    return model_slug(REPO)


def results(acc: float) -> EvalResult:
    return EvalResult(
        model="m",
        backend="hf",
        tasks={"arc": {"acc": MetricValue(acc, 0.02, True), "ppl": MetricValue(9.5, None, False)}},
        n_samples={"arc": 500},
        config={"limit": 500, "tasks": ["arc"]},
    )


REPO = "org/M"


def request(run: str, uri: str | None = None):
    return candidate_request(
        model_uri=uri or f"s3://models/org--m/{SHA}/fp8_dynamic-{run:0>12}",
        repo_id=REPO,
        revision="main",
        commit_sha=SHA,
        scheme="FP8_DYNAMIC",
        pipeline_run_id=run,
        namespace="team-a",
    )


@pytest.fixture(params=["sqlite", "server"])
def backend(request, monkeypatch) -> MLflowRegistry:
    """A fresh registry: a new SQLite store, or a new model name on the shared server."""
    import uuid

    monkeypatch.setattr(f"{__name__}.REPO", "org/M")
    if request.param == "server":
        monkeypatch.setattr(f"{__name__}.REPO", f"org/M-{uuid.uuid4().hex[:8]}")
    if request.param == "sqlite":
        url = local_registry_url(request.getfixturevalue("tmp_path"))
    else:
        url = "mlflow+" + request.getfixturevalue("mlflow_server")
    found = registry_from_url(url)
    assert isinstance(found, MLflowRegistry)
    return found


def test_urls(tmp_path):
    assert local_registry_url(tmp_path).startswith("mlflow+sqlite:////")
    assert tracking_uri("mlflow+http://h:5000") == "http://h:5000"
    assert browse_hint(local_registry_url(tmp_path)).startswith("mlflow ui --backend-store-uri ")
    for bad in ("mlflow+sqlite:///relative.db", "mlflow+ftp://h", "sqlite:////x.db"):
        with pytest.raises(ConfigError):
            tracking_uri(bad)


def test_register_attach_promote_and_read_production(backend):
    assert backend.production(name()) is None
    first = backend.register_version(request("run1"))
    assert first.stage == "candidate" and first.uri.startswith("s3://")
    first = backend.attach_evaluation(
        first, results=results(0.62), gate_passed=True, gate_report="| gate |", card="# card"
    )
    assert first.stage == "candidate"
    assert backend.promote(first) == f"{name()}:{first.version_name} is production"
    prod = backend.production(name())
    assert prod.record.version_name == first.version_name and prod.record.stage == "production"
    acc = prod.results.get("arc", "acc")
    assert (acc.value, acc.stderr, acc.higher_is_better) == (0.62, 0.02, True)
    assert prod.results.get("arc", "ppl").higher_is_better is False
    assert prod.results.samples("arc") == 500
    # a second version takes over; the first is archived
    second = backend.register_version(request("run2"))
    second = backend.attach_evaluation(
        second, results=results(0.64), gate_passed=True, gate_report="g", card="c"
    )
    done = backend.promote(second)
    assert done.endswith(f"archived {name()}:{first.version_name}")
    assert backend.production(name()).record.version_name == second.version_name
    client = backend._client
    (old,) = client.search_model_versions(
        f"name = '{name()}' and tags.`modelgate.version_name` = '{first.version_name}'"
    )
    assert old.tags["modelgate.stage"] == "archived"


def test_lineage_card_and_gate_are_stored(backend):
    record = backend.register_version(request("run1"))
    backend.attach_evaluation(
        record, results=results(0.5), gate_passed=False, gate_report="| failed |", card="# the card"
    )
    client = backend._client
    (mv,) = client.search_model_versions(f"name = '{name()}'")
    assert mv.source == record.uri and mv.description == "# the card"
    tags = mv.tags
    assert tags["source_repo"] == REPO and tags["source_commit"] == SHA
    assert tags["quant_scheme"] == "FP8_DYNAMIC" and tags["pipeline_run_id"] == "run1"
    assert tags["namespace"] == "team-a" and tags["modelgate.source_kind"] == "kfp"
    assert tags["modelgate.gate"] == "failed" and tags["modelgate.stage"] == "rejected"
    assert float(tags["eval.arc/acc"]) == 0.5 and float(tags["eval.arc/acc.stderr"]) == 0.02
    assert tags["eval.arc.n"] == "500" and '"limit": 500' in tags["eval.config"]
    run = client.get_run(mv.run_id)
    assert run.data.metrics["arc/acc"] == 0.5 and run.data.params["source_repo"] == REPO


def test_a_rejected_version_never_becomes_production(backend):
    record = backend.register_version(request("run1"))
    record = backend.attach_evaluation(
        record, results=results(0.1), gate_passed=False, gate_report="g", card="c"
    )
    assert record.stage == "rejected"
    with pytest.raises(RegistryError, match="no passed gate"):
        backend.promote(record)
    assert backend.production(name()) is None


def test_rerunning_the_same_run_registers_nothing_twice_and_a_clash_says_how_to_resolve(backend):
    first = backend.register_version(request("run1"))
    again = backend.register_version(request("run1"))
    assert again.model_version_id == first.model_version_id
    assert again.message.startswith("already registered")
    assert len(backend._client.search_model_versions(f"name = '{name()}'")) == 1
    with pytest.raises(RegistryError, match="another registered_model_name"):
        backend.register_version(request("run1", uri="s3://models/elsewhere"))


def test_a_dead_server_is_retried_then_named(monkeypatch):
    url = f"mlflow+http://127.0.0.1:{free_port()}"
    backend = MLflowRegistry(url, author="t", connect_attempts=3)
    started = time.monotonic()
    with pytest.raises(RegistryError, match="unreachable.*MODEL_REGISTRY_URL"):
        backend.register_version(request("run1"))
    assert time.monotonic() - started >= 1.0  # backed off between the 3 attempts
