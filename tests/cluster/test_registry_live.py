"""Against a real Kubeflow Model Registry: set MODEL_REGISTRY_URL (and MODEL_REGISTRY_TOKEN)."""

from __future__ import annotations

import os
import uuid

import pytest

from modelgate.registry import RegisterRequest, record_evaluation, register_candidate

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not os.environ.get("MODEL_REGISTRY_URL"),
        reason="set MODEL_REGISTRY_URL to run against a real Kubeflow Model Registry",
    ),
]


def test_register_and_evaluate_round_trip() -> None:
    from model_registry import ModelRegistry

    suffix = uuid.uuid4().hex[:10]
    request = RegisterRequest(
        model_name="modelgate-live-test",
        version_name=f"live-{suffix}",
        uri=f"s3://modelgate-live-test/{suffix}",
        description="modelgate cluster test; safe to archive",
        properties={"source_repo": "modelgate/live-test", "quant_scheme": "W4A16", "n": 1},
    )
    record = register_candidate(registry_url=None, request=request)
    assert record.status == "registered"
    updated = record_evaluation(
        record=record,
        registry_url=None,
        metrics={"smoke.acc": 0.5},
        gate_passed=True,
        gate_report="live test",
    )
    assert updated.stage == "gate-passed"

    url = os.environ["MODEL_REGISTRY_URL"]
    client = ModelRegistry(
        url,
        author="modelgate-test",
        is_secure=url.startswith("https://"),
        user_token=os.environ.get("MODEL_REGISTRY_TOKEN") or None,
    )
    mv = client.get_model_version(request.model_name, request.version_name)
    assert mv is not None and mv.id == record.model_version_id
    props = mv.custom_properties or {}
    assert props["quant_scheme"] == "W4A16" and props["n"] == 1
    assert props["eval.smoke.acc"] == 0.5 and props["gate.passed"] is True
    assert props["modelgate.stage"] == "gate-passed"
    artifact = client.get_model_artifact(request.model_name, request.version_name)
    assert artifact is not None and artifact.uri == request.uri
