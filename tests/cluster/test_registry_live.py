"""Against a real Kubeflow Model Registry: set MODEL_REGISTRY_URL (and MODEL_REGISTRY_TOKEN).

Each run registers two versions of ``modelgate-live-test`` with unique names, evaluates,
promotes them in turn and reads production back; the older one ends up ARCHIVED.
"""

from __future__ import annotations

import os
import uuid

import pytest

from modelgate.errors import RegistryError
from modelgate.evaluate import EvalResult, MetricValue
from modelgate.registry.base import RegisterRequest, RegistryRecord
from modelgate.registry.kubeflow import KubeflowModelRegistry

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not os.environ.get("MODEL_REGISTRY_URL"),
        reason="set MODEL_REGISTRY_URL to run against a real Kubeflow Model Registry",
    ),
]

MODEL = "modelgate-live-test"


def _results(value: float) -> EvalResult:
    return EvalResult(
        model="live",
        backend="vllm",
        tasks={"smoke": {"acc": MetricValue(value, 0.01, True)}},
        n_samples={"smoke": 50},
        config={"limit": 50},
    )


def _register(backend: KubeflowModelRegistry, suffix: str) -> RegistryRecord:
    return backend.register_version(
        RegisterRequest(
            model_name=MODEL,
            version_name=f"live-{suffix}",
            uri=f"s3://modelgate-live-test/{suffix}",
            description="modelgate cluster test; safe to archive",
            properties={"source_repo": "modelgate/live-test", "quant_scheme": "W4A16", "n": 1},
        )
    )


def test_register_evaluate_promote_round_trip() -> None:
    from model_registry import ModelRegistry

    url = os.environ["MODEL_REGISTRY_URL"]
    backend = KubeflowModelRegistry(url, author="modelgate-test")
    backend.check()
    run = uuid.uuid4().hex[:8]

    first = _register(backend, f"{run}-a")
    assert first.status == "registered" and first.stage == "candidate"
    assert _register(backend, f"{run}-a").model_version_id == first.model_version_id
    first = backend.attach_evaluation(
        first, results=_results(0.5), gate_passed=True, gate_report="live", card="# live a"
    )
    assert first.stage == "candidate"
    assert backend.promote(first).startswith(f"{MODEL}:live-{run}-a is production")

    second = _register(backend, f"{run}-b")
    second = backend.attach_evaluation(
        second, results=_results(0.6), gate_passed=True, gate_report="live", card="# live b"
    )
    message = backend.promote(second)
    assert f"archived {MODEL}:live-{run}-a" in message

    found = backend.production(MODEL)
    assert found is not None
    assert found.record.version_name == f"live-{run}-b"
    assert found.record.uri == f"s3://modelgate-live-test/{run}-b"
    assert found.results is not None
    assert found.results.tasks["smoke"]["acc"] == MetricValue(0.6, 0.01, True)
    assert found.results.n_samples == {"smoke": 50}

    client = ModelRegistry(
        url,
        author="modelgate-test",
        is_secure=url.startswith("https://"),
        user_token=os.environ.get("MODEL_REGISTRY_TOKEN") or None,
    )
    old = client.get_model_version(MODEL, f"live-{run}-a")
    assert old is not None and getattr(old.state, "value", old.state) == "ARCHIVED"
    props = old.custom_properties or {}
    assert props["modelgate.stage"] == "archived" and props["quant_scheme"] == "W4A16"
    rm = client.get_registered_model(MODEL)
    assert rm is not None and getattr(rm.state, "value", rm.state) == "LIVE"


def test_failed_gate_is_rejected_live() -> None:
    backend = KubeflowModelRegistry(os.environ["MODEL_REGISTRY_URL"], author="modelgate-test")
    record = _register(backend, f"{uuid.uuid4().hex[:8]}-rejected")
    record = backend.attach_evaluation(
        record, results=_results(0.1), gate_passed=False, gate_report="live", card="# live r"
    )
    assert record.stage == "rejected"
    with pytest.raises(RegistryError, match="rejected"):
        backend.promote(record)
