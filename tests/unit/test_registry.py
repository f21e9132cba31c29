"""Register step: the real ``model_registry`` client against the in-process REST double."""

from __future__ import annotations

import json
import socket

import pytest

from modelgate.errors import ConfigError, RegistryAPIVersionError, RegistryError
from modelgate.registry import (
    GATE_REPORT_MAX_CHARS,
    SKIPPED_MESSAGE,
    KubeflowModelRegistry,
    RegisterRequest,
    RegistryBackend,
    RegistryRecord,
    record_evaluation,
    register_candidate,
    registry_from_url,
)
from tests.doubles.model_registry import FakeModelRegistry, fake_model_registry  # noqa: F401

pytestmark = pytest.mark.unit

LINEAGE = {
    "source_repo": "Qwen/Qwen2.5-0.5B-Instruct",
    "source_commit": "7ae557604adf67be50417f59c2c2f167def9a775",
    "quant_scheme": "W4A16",
    "pipeline_run_id": "run-123",
    "num_calibration_samples": 512,
    "smoothing_strength": 0.8,
    "allow_pickle": False,
}


def _request(**overrides: object) -> RegisterRequest:
    fields: dict[str, object] = {
        "model_name": "qwen2.5-0.5b-w4a16",
        "version_name": "run-123",
        "uri": "s3://models/qwen2.5-0.5b/w4a16",
        "description": "W4A16 candidate",
        "properties": LINEAGE,
    }
    fields.update(overrides)
    return RegisterRequest(**fields)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_registry_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODEL_REGISTRY_URL", "MODEL_REGISTRY_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)


def test_register_writes_version_artifact_and_typed_lineage(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    record = register_candidate(registry_url=fake_model_registry.url, request=_request())

    assert record.status == "registered"
    assert record.stage == "candidate"
    assert record.registry == fake_model_registry.url
    rm = fake_model_registry.find_registered_model("qwen2.5-0.5b-w4a16")
    mv = fake_model_registry.find_model_version("qwen2.5-0.5b-w4a16", "run-123")
    assert rm is not None and mv is not None
    assert (record.registered_model_id, record.model_version_id) == (rm["id"], mv["id"])
    assert mv["state"] == "LIVE" and mv["description"] == "W4A16 candidate"

    wire = mv["customProperties"]
    assert wire["num_calibration_samples"] == {
        "metadataType": "MetadataIntValue",
        "int_value": "512",
    }
    assert wire["smoothing_strength"] == {
        "metadataType": "MetadataDoubleValue",
        "double_value": 0.8,
    }
    assert wire["allow_pickle"] == {"metadataType": "MetadataBoolValue", "bool_value": False}
    assert wire["source_repo"]["metadataType"] == "MetadataStringValue"
    props = FakeModelRegistry.plain_properties(mv)
    assert {k: props[k] for k in LINEAGE} == LINEAGE
    assert props["modelgate.stage"] == "candidate"

    (artifact,) = fake_model_registry.artifacts_of(mv["id"])
    assert artifact["id"] == record.model_artifact_id
    assert artifact["uri"] == "s3://models/qwen2.5-0.5b/w4a16"
    assert artifact["artifactType"] == "model-artifact"
    assert (artifact["modelFormatName"], artifact["modelFormatVersion"]) == ("vLLM", "1")
    assert (artifact["modelSourceKind"], artifact["modelSourceId"]) == ("kfp", "run-123")


def test_attach_evaluation_writes_metrics_and_gate_decision(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    record = register_candidate(registry_url=fake_model_registry.url, request=_request())
    report = "x" * (GATE_REPORT_MAX_CHARS + 500)

    updated = record_evaluation(
        record=record,
        registry_url=fake_model_registry.url,
        metrics={"gsm8k.exact_match": 0.41, "hellaswag.acc_norm": 1},
        gate_passed=False,
        gate_report=report,
    )

    assert updated.stage == "gate-failed"
    assert updated.model_version_id == record.model_version_id
    mv = fake_model_registry.model_versions[record.model_version_id or ""]
    wire = mv["customProperties"]
    assert wire["eval.gsm8k.exact_match"] == {
        "metadataType": "MetadataDoubleValue",
        "double_value": 0.41,
    }
    assert wire["eval.hellaswag.acc_norm"]["metadataType"] == "MetadataDoubleValue"
    assert wire["gate.passed"] == {"metadataType": "MetadataBoolValue", "bool_value": False}
    props = FakeModelRegistry.plain_properties(mv)
    assert props["modelgate.stage"] == "gate-failed"
    assert len(props["gate.report"]) == GATE_REPORT_MAX_CHARS
    assert "truncated 500 chars" in props["gate.report"]
    assert props["source_commit"] == LINEAGE["source_commit"]  # lineage survives the update


def test_attach_evaluation_extra_properties_and_pass(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = KubeflowModelRegistry(fake_model_registry.url, author="ci")
    assert isinstance(backend, RegistryBackend)
    record = backend.register_version(_request())
    backend.attach_evaluation(
        record,
        metrics={"arc_easy.acc": 0.7},
        gate_passed=True,
        gate_report="all thresholds met",
        properties={"eval.limit": 100},
    )
    props = FakeModelRegistry.plain_properties(
        fake_model_registry.model_versions[record.model_version_id or ""]
    )
    assert props["gate.passed"] is True
    assert props["modelgate.stage"] == "gate-passed"
    assert props["eval.limit"] == 100


def test_attach_evaluation_rejects_nan(fake_model_registry: FakeModelRegistry) -> None:  # noqa: F811
    backend = KubeflowModelRegistry(fake_model_registry.url, author="ci")
    record = backend.register_version(_request())
    with pytest.raises(ConfigError, match="finite"):
        backend.attach_evaluation(
            record, metrics={"a.b": float("nan")}, gate_passed=True, gate_report=""
        )


def test_skipped_without_url() -> None:
    record = register_candidate(registry_url=None, request=_request())
    assert record.status == "skipped"
    assert record.message == "skipped: no registry configured (set MODEL_REGISTRY_URL)"
    assert record.message == SKIPPED_MESSAGE
    assert record.model_version_id is None
    assert registry_from_url(None) is None

    again = record_evaluation(
        record=record, registry_url=None, metrics={"a.b": 1.0}, gate_passed=True, gate_report=""
    )
    assert again == record


def test_url_from_env(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODEL_REGISTRY_URL", fake_model_registry.url)
    backend = registry_from_url(None)
    assert backend is not None and backend.describe() == fake_model_registry.url
    assert register_candidate(registry_url=None, request=_request()).status == "registered"


def test_api_version_mismatch_is_explained() -> None:
    old = FakeModelRegistry(api_version="v1alpha3").start()
    try:
        with pytest.raises(RegistryAPIVersionError) as info:
            register_candidate(registry_url=old.url, request=_request())
    finally:
        old.stop()
    message = str(info.value)
    assert "v1alpha3" in message and "v1" in message
    assert "upgrade" in message and "0.3.15" in message and "model-registry==" in message
    assert not old.registered_models


def test_no_registry_api_at_url() -> None:
    other = FakeModelRegistry(api_version="v9").start()
    try:
        with pytest.raises(RegistryError, match="MODEL_REGISTRY_URL") as info:
            register_candidate(registry_url=other.url, request=_request())
    finally:
        other.stop()
    assert not isinstance(info.value, RegistryAPIVersionError)


def test_unreachable_names_the_env_var() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = KubeflowModelRegistry(
        f"http://127.0.0.1:{port}", author="ci", connect_attempts=1, timeout=2
    )
    with pytest.raises(RegistryError, match="MODEL_REGISTRY_URL") as info:
        backend.register_version(_request())
    assert info.value.__cause__ is not None


def test_token_is_sent(fake_model_registry: FakeModelRegistry) -> None:  # noqa: F811
    fake_model_registry.token = "s3cret"
    with pytest.raises(RegistryError, match="MODEL_REGISTRY_TOKEN"):
        KubeflowModelRegistry(fake_model_registry.url, author="ci").register_version(_request())
    record = KubeflowModelRegistry(
        fake_model_registry.url, author="ci", token="s3cret"
    ).register_version(_request())
    assert record.status == "registered"


def test_artifact_failure_archives_what_was_created(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    fake_model_registry.fail("upsert_model_version_artifact", status=500, message="disk full")

    with pytest.raises(RegistryError, match="archived") as info:
        register_candidate(registry_url=fake_model_registry.url, request=_request())

    assert info.value.__cause__ is not None
    assert "disk full" in str(info.value)
    rm = fake_model_registry.find_registered_model("qwen2.5-0.5b-w4a16")
    mv = fake_model_registry.find_model_version("qwen2.5-0.5b-w4a16", "run-123")
    assert rm is not None and mv is not None
    assert mv["state"] == "ARCHIVED"
    assert rm["state"] == "ARCHIVED"
    assert fake_model_registry.artifacts == {}

    # The archived name cannot be reused silently.
    with pytest.raises(RegistryError, match="ARCHIVED"):
        register_candidate(registry_url=fake_model_registry.url, request=_request())


def test_artifact_failure_keeps_existing_model_live(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    register_candidate(registry_url=fake_model_registry.url, request=_request())
    fake_model_registry.fail("upsert_model_version_artifact")
    with pytest.raises(RegistryError):
        register_candidate(
            registry_url=fake_model_registry.url, request=_request(version_name="run-124")
        )
    assert fake_model_registry.find_registered_model("qwen2.5-0.5b-w4a16")["state"] == "LIVE"  # type: ignore[index]
    assert fake_model_registry.find_model_version("qwen2.5-0.5b-w4a16", "run-124")["state"] == (  # type: ignore[index]
        "ARCHIVED"
    )
    assert fake_model_registry.find_model_version("qwen2.5-0.5b-w4a16", "run-123")["state"] == (  # type: ignore[index]
        "LIVE"
    )


def test_reregister_same_uri_is_idempotent_other_uri_is_an_error(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    first = register_candidate(registry_url=fake_model_registry.url, request=_request())
    again = register_candidate(registry_url=fake_model_registry.url, request=_request())
    assert again.model_version_id == first.model_version_id
    assert "idempotent" in again.message
    assert len(fake_model_registry.model_versions) == 1

    with pytest.raises(RegistryError, match="choose a new version_name"):
        register_candidate(
            registry_url=fake_model_registry.url, request=_request(uri="s3://models/other")
        )


def test_record_round_trip() -> None:
    record = RegistryRecord(
        status="registered",
        message="registered",
        registered_model_id="1",
        model_version_id="2",
        model_artifact_id="3",
        registry="http://mr:8080",
        model_name="m",
        version_name="v",
        stage="candidate",
    )
    assert RegistryRecord.from_dict(record.to_dict()) == record
    assert RegistryRecord.from_dict(json.dumps(record.to_dict())) == record
    assert RegistryRecord.from_dict(record.to_json()) == record
    with pytest.raises(ConfigError):
        RegistryRecord.from_dict({"status": "maybe", "message": ""})


def test_request_validation() -> None:
    with pytest.raises(ValueError):
        _request(properties={"bad": None})
    with pytest.raises(ValueError):
        _request(properties={"modelgate.stage": "x"})
    with pytest.raises(ValueError):
        _request(model_name="")
    with pytest.raises(ConfigError):
        KubeflowModelRegistry("model-registry:8080", author="ci")
    with pytest.raises(ConfigError):
        KubeflowModelRegistry("http://mr:8080/api/model_registry/v1", author="ci")


def test_double_rejects_unknown_fields(fake_model_registry: FakeModelRegistry) -> None:  # noqa: F811
    import requests

    url = f"{fake_model_registry.url}/api/model_registry/v1/registered_models"
    resp = requests.post(url, json={"name": "m", "ownr": "typo"}, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["code"] == "Bad Request" and "ownr" in resp.json()["message"]
    resp = requests.post(
        url,
        json={
            "name": "m",
            "customProperties": {"k": {"metadataType": "MetadataIntValue", "int_value": 3}},
        },
        timeout=5,
    )
    assert resp.status_code == 400
    assert requests.post(url, json={"name": "m"}, timeout=5).status_code == 201
    assert requests.post(url, json={"name": "m"}, timeout=5).status_code == 409
    missing = requests.get(f"{url}/999", timeout=5)
    assert missing.status_code == 404 and missing.json()["code"] == "Not Found"
    listing = requests.get(url, params={"pageSize": "1"}, timeout=5).json()
    assert set(listing) == {"items", "size", "pageSize", "nextPageToken"}
