"""Kubeflow backend: the real ``model_registry`` client against the in-process REST double."""

from __future__ import annotations

import json
import logging
import re
import socket

import pytest
import requests

from modelgate.errors import ConfigError, RegistryAPIVersionError, RegistryError
from modelgate.evaluate import EvalResult, MetricValue
from modelgate.registry.base import (
    GATE_REPORT_MAX_CHARS,
    REGISTRY_RETRY,
    RegisterRequest,
    RegistryBackend,
    RegistryRecord,
)
from modelgate.registry.kubeflow import KubeflowModelRegistry
from tests.doubles.model_registry import (
    _DOC_CREATE,
    _DOC_UPDATE,
    _MA_CREATE,
    _MA_UPDATE,
    _MV_CREATE,
    _MV_UPDATE,
    _RM_CREATE,
    _RM_UPDATE,
    FakeModelRegistry,
    fake_model_registry,  # noqa: F401
    generated_operations,
    response_problems,
)

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("no_registry_env")]

MODEL = "qwen--qwen2.5-0.5b-instruct"
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
        "model_name": MODEL,
        "version_name": "v1",
        "uri": "s3://models/qwen2.5-0.5b/w4a16/v1",
        "description": "W4A16 candidate",
        "properties": LINEAGE,
    }
    fields.update(overrides)
    return RegisterRequest(**fields)  # type: ignore[arg-type]


def _results(accuracy: float = 0.41) -> EvalResult:
    return EvalResult(
        model="s3://models/qwen2.5-0.5b/w4a16/v1",
        backend="vllm",
        tasks={
            "gsm8k": {"exact_match,strict-match": MetricValue(accuracy, 0.0135, True)},
            "wikitext": {"word_perplexity": MetricValue(17.25, 0.5, False)},
        },
        n_samples={"gsm8k": 1319, "wikitext": 62},
        config={"num_fewshot": 5, "limit": None, "model_args": "pretrained=/models/x"},
    )


def _card(version: str = "v1") -> str:
    return f"# {MODEL} — {version}\n\n| | |\n|---|---|\n| quantization | W4A16 |\n"


def _backend(fake: FakeModelRegistry, **kw: object) -> KubeflowModelRegistry:
    return KubeflowModelRegistry(fake.url, author="ci", **kw)  # type: ignore[arg-type]


def _evaluated(
    backend: KubeflowModelRegistry, version: str, *, passed: bool = True, accuracy: float = 0.41
) -> RegistryRecord:
    record = backend.register_version(
        _request(version_name=version, uri=f"s3://models/qwen2.5-0.5b/w4a16/{version}")
    )
    return backend.attach_evaluation(
        record,
        results=_results(accuracy),
        gate_passed=passed,
        gate_report=f"gate {'passed' if passed else 'failed'}",
        card=_card(version),
    )


def _props(fake: FakeModelRegistry, version: str) -> dict[str, object]:
    mv = fake.find_model_version(MODEL, version)
    assert mv is not None
    return FakeModelRegistry.plain_properties(mv)


def _state(fake: FakeModelRegistry, version: str) -> str:
    mv = fake.find_model_version(MODEL, version)
    assert mv is not None
    return str(mv["state"])


# --- registration --------------------------------------------------------------------------
def test_register_writes_version_artifact_and_typed_lineage(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = _backend(fake_model_registry)
    assert isinstance(backend, RegistryBackend)
    record = backend.register_version(_request())

    assert record.status == "registered"
    assert record.stage == "candidate"
    assert record.registry == fake_model_registry.url
    assert record.uri == "s3://models/qwen2.5-0.5b/w4a16/v1"
    rm = fake_model_registry.find_registered_model(MODEL)
    mv = fake_model_registry.find_model_version(MODEL, "v1")
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
    assert artifact["uri"] == record.uri
    assert artifact["artifactType"] == "model-artifact"
    assert (artifact["modelFormatName"], artifact["modelFormatVersion"]) == ("vLLM", "1")
    assert (artifact["modelSourceKind"], artifact["modelSourceId"]) == ("kfp", "run-123")


def test_reregister_same_uri_is_idempotent(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = _backend(fake_model_registry)
    first = backend.register_version(_request())
    again = backend.register_version(_request())

    assert again.model_version_id == first.model_version_id
    assert again.model_artifact_id == first.model_artifact_id
    assert again.uri == first.uri and again.stage == "candidate"
    assert "idempotent" in again.message
    assert len(fake_model_registry.model_versions) == 1
    assert len(fake_model_registry.artifacts) == 1


def test_name_clash_says_how_to_resolve_it(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = _backend(fake_model_registry)
    backend.register_version(_request())

    with pytest.raises(RegistryError) as info:
        backend.register_version(_request(uri="s3://models/other"))

    message = str(info.value)
    assert "s3://models/other" in message and "s3://models/qwen2.5-0.5b/w4a16/v1" in message
    assert "choose a new version_name" in message and "registered_model_name" in message
    assert len(fake_model_registry.model_versions) == 1


# --- evaluation, stages, promotion ---------------------------------------------------------
def test_attach_evaluation_writes_typed_results_gate_and_card(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = _backend(fake_model_registry)
    record = backend.register_version(_request())
    report = "x" * (GATE_REPORT_MAX_CHARS + 500)

    updated = backend.attach_evaluation(
        record, results=_results(), gate_passed=True, gate_report=report, card=_card()
    )

    assert updated.stage == "candidate"
    assert updated.model_copy(update={"stage": None}) == record.model_copy(update={"stage": None})
    mv = fake_model_registry.model_versions[record.model_version_id or ""]
    wire = mv["customProperties"]
    key = "eval.gsm8k/exact_match,strict-match"
    assert wire[key] == {"metadataType": "MetadataDoubleValue", "double_value": 0.41}
    assert wire[f"{key}.stderr"] == {"metadataType": "MetadataDoubleValue", "double_value": 0.0135}
    assert wire[f"{key}.direction"] == {
        "metadataType": "MetadataStringValue",
        "string_value": "higher",
    }
    assert wire["eval.gsm8k.n"] == {"metadataType": "MetadataIntValue", "int_value": "1319"}
    assert wire["eval.wikitext/word_perplexity.direction"]["string_value"] == "lower"

    props = FakeModelRegistry.plain_properties(mv)
    assert json.loads(str(props["eval.config"])) == _results().config
    assert props["modelgate.gate"] == "passed"
    assert props["modelgate.stage"] == "candidate"
    assert len(str(props["modelgate.gate_report"])) == GATE_REPORT_MAX_CHARS
    assert "truncated 500 chars" in str(props["modelgate.gate_report"])
    assert props["modelgate.card"] == _card()
    assert mv["description"] == f"{MODEL} — v1"
    assert props["source_commit"] == LINEAGE["source_commit"]  # lineage survives the update


def test_results_round_trip_through_promote_and_production(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = _backend(fake_model_registry)
    record = _evaluated(backend, "v1")

    assert backend.promote(record) == f"{MODEL}:v1 is production"
    found = backend.production(MODEL)

    assert found is not None
    assert found.record.stage == "production" and found.record.status == "registered"
    assert found.record.uri == "s3://models/qwen2.5-0.5b/w4a16/v1"
    assert (
        found.record.registered_model_id,
        found.record.model_version_id,
        found.record.model_artifact_id,
        found.record.model_name,
        found.record.version_name,
        found.record.registry,
    ) == (
        record.registered_model_id,
        record.model_version_id,
        record.model_artifact_id,
        MODEL,
        "v1",
        fake_model_registry.url,
    )
    expected = _results()
    assert found.results is not None
    assert found.results.tasks == expected.tasks  # value, stderr and direction
    assert found.results.n_samples == expected.n_samples
    assert found.results.config == expected.config


def test_failed_gate_is_rejected_and_never_production(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = _backend(fake_model_registry)
    record = _evaluated(backend, "v1", passed=False)

    assert record.stage == "rejected"
    props = _props(fake_model_registry, "v1")
    assert props["modelgate.stage"] == "rejected" and props["modelgate.gate"] == "failed"
    assert props["modelgate.card"] == _card("v1")
    assert _state(fake_model_registry, "v1") == "LIVE"  # kept, with its decision and card

    with pytest.raises(RegistryError, match="rejected"):
        backend.promote(record)
    assert _props(fake_model_registry, "v1")["modelgate.stage"] == "rejected"
    assert backend.production(MODEL) is None


def test_reevaluation_replaces_results_and_decision(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = _backend(fake_model_registry)
    record = _evaluated(backend, "v1", passed=False)
    only_gsm8k = EvalResult(
        model="m", backend="vllm", tasks={"gsm8k": {"acc": MetricValue(0.5, 0.01, True)}}
    )

    again = backend.attach_evaluation(
        record, results=only_gsm8k, gate_passed=True, gate_report="ok", card=_card()
    )

    assert again.stage == "candidate"
    props = _props(fake_model_registry, "v1")
    assert props["modelgate.gate"] == "passed"
    assert not [k for k in props if k.startswith("eval.wikitext")]
    assert "eval.gsm8k/exact_match,strict-match" not in props
    assert props["eval.gsm8k/acc"] == 0.5


def test_promote_archives_the_previous_production(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = _backend(fake_model_registry)
    v1 = _evaluated(backend, "v1", accuracy=0.40)
    backend.promote(v1)
    v2 = _evaluated(backend, "v2", accuracy=0.45)
    _evaluated(backend, "v3")  # a candidate: promotion must not touch it

    message = backend.promote(v2)

    assert message == f"{MODEL}:v2 is production; archived {MODEL}:v1"
    assert _props(fake_model_registry, "v1")["modelgate.stage"] == "archived"
    assert _state(fake_model_registry, "v1") == "ARCHIVED"
    assert _props(fake_model_registry, "v2")["modelgate.stage"] == "production"
    assert _state(fake_model_registry, "v2") == "LIVE"
    assert _props(fake_model_registry, "v3")["modelgate.stage"] == "candidate"
    assert _state(fake_model_registry, "v3") == "LIVE"
    found = backend.production(MODEL)
    assert found is not None and found.record.version_name == "v2"
    assert found.record.uri == "s3://models/qwen2.5-0.5b/w4a16/v2"
    assert found.results is not None
    assert found.results.tasks["gsm8k"]["exact_match,strict-match"].value == 0.45


def test_promote_is_idempotent(fake_model_registry: FakeModelRegistry) -> None:  # noqa: F811
    backend = _backend(fake_model_registry)
    v1 = _evaluated(backend, "v1")
    v2 = _evaluated(backend, "v2")
    backend.promote(v1)
    backend.promote(v2)
    writes = sum(r.method in ("PATCH", "POST") for r in fake_model_registry.requests)

    message = backend.promote(v2)

    assert message.startswith(f"{MODEL}:v2 is production") and "nothing changed" in message
    assert sum(r.method in ("PATCH", "POST") for r in fake_model_registry.requests) == writes
    assert _state(fake_model_registry, "v1") == "ARCHIVED"


def test_promote_an_archived_version_rolls_back(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = _backend(fake_model_registry)
    v1 = _evaluated(backend, "v1")
    v2 = _evaluated(backend, "v2")
    backend.promote(v1)
    backend.promote(v2)

    assert backend.promote(v1) == f"{MODEL}:v1 is production; archived {MODEL}:v2"

    assert _state(fake_model_registry, "v1") == "LIVE"
    assert _state(fake_model_registry, "v2") == "ARCHIVED"
    found = backend.production(MODEL)
    assert found is not None and found.record.version_name == "v1"


def test_no_production_yet_is_none(fake_model_registry: FakeModelRegistry) -> None:  # noqa: F811
    backend = _backend(fake_model_registry)
    assert backend.production("no-such-model") is None
    _evaluated(backend, "v1")
    assert backend.production(MODEL) is None


def test_attach_evaluation_rejects_non_finite_and_writes_nothing(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = _backend(fake_model_registry)
    record = backend.register_version(_request())
    patches = sum(r.method == "PATCH" for r in fake_model_registry.requests)
    bad = EvalResult(model="m", backend="hf", tasks={"a": {"b": MetricValue(float("nan"))}})

    with pytest.raises(ConfigError, match="finite"):
        backend.attach_evaluation(record, results=bad, gate_passed=True, gate_report="", card="")

    assert sum(r.method == "PATCH" for r in fake_model_registry.requests) == patches
    assert _props(fake_model_registry, "v1")["modelgate.stage"] == "candidate"


def test_attach_and_promote_need_a_registered_record(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = _backend(fake_model_registry)
    skipped = RegistryRecord(status="skipped", message="skipped")
    with pytest.raises(ConfigError, match="registered record"):
        backend.attach_evaluation(
            skipped, results=_results(), gate_passed=True, gate_report="", card=""
        )
    with pytest.raises(ConfigError, match="registered record"):
        backend.promote(skipped)
    gone = RegistryRecord(
        status="registered",
        message="",
        model_version_id="99",
        model_name=MODEL,
        version_name="v9",
    )
    backend.register_version(_request())
    with pytest.raises(RegistryError, match="not in"):
        backend.promote(gone)


# --- failures ------------------------------------------------------------------------------
def test_failed_first_registration_leaves_the_model_live_and_usable(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
    sleeps: list[float],
) -> None:
    """A failed first registration must not leave an archived parent hiding later versions."""
    backend = _backend(fake_model_registry)
    attempts = REGISTRY_RETRY.attempts  # a 500 that persists through every retry
    fake_model_registry.fail(
        "upsert_model_version_artifact", status=500, message="disk full", times=attempts
    )

    with pytest.raises(RegistryError, match="archived model version") as info:
        backend.register_version(_request())

    assert info.value.__cause__ is not None
    assert "disk full" in str(info.value) and "stays LIVE" in str(info.value)
    rm = fake_model_registry.find_registered_model(MODEL)
    assert rm is not None and rm["state"] == "LIVE"
    assert _state(fake_model_registry, "v1") == "ARCHIVED"
    assert fake_model_registry.artifacts == {}
    other_run = {**LINEAGE, "pipeline_run_id": "run-456"}  # the same run resumes instead
    with pytest.raises(RegistryError, match="choose a new version_name"):
        backend.register_version(_request(properties=other_run))  # not reused silently

    second = backend.register_version(_request(version_name="v2", uri="s3://models/v2"))

    assert second.status == "registered" and second.uri == "s3://models/v2"
    assert fake_model_registry.find_registered_model(MODEL)["state"] == "LIVE"  # type: ignore[index]
    listed = requests.get(
        f"{fake_model_registry.url}/api/model_registry/v1/registered_models", timeout=5
    ).json()["items"]
    assert [(m["name"], m["state"]) for m in listed] == [(MODEL, "LIVE")]
    backend.attach_evaluation(
        second, results=_results(), gate_passed=True, gate_report="", card=_card("v2")
    )
    backend.promote(second)
    found = backend.production(MODEL)
    assert found is not None and found.record.version_name == "v2"


def test_archived_parent_left_by_an_older_modelgate_is_restored(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = _backend(fake_model_registry)
    backend.register_version(_request())
    rm = fake_model_registry.find_registered_model(MODEL)
    assert rm is not None
    rm["state"] = "ARCHIVED"  # what the old cleanup did

    with caplog.at_level(logging.WARNING, logger="modelgate.registry.kubeflow"):
        record = backend.register_version(_request(version_name="v2", uri="s3://models/v2"))

    assert record.status == "registered"
    assert rm["state"] == "LIVE"
    assert any("back to LIVE" in r.getMessage() for r in caplog.records)
    patches = [r for r in fake_model_registry.requests if r.operation == "update_registered_model"]
    assert len(patches) == 1 and patches[0].body["state"] == "LIVE"


def test_artifact_failure_keeps_existing_versions(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = _backend(fake_model_registry)
    backend.register_version(_request())
    fake_model_registry.fail("upsert_model_version_artifact", status=400)  # not transient

    with pytest.raises(RegistryError):
        backend.register_version(_request(version_name="v2"))

    assert fake_model_registry.find_registered_model(MODEL)["state"] == "LIVE"  # type: ignore[index]
    assert _state(fake_model_registry, "v2") == "ARCHIVED"
    assert _state(fake_model_registry, "v1") == "LIVE"


def test_unreachable_registry_is_retried_then_names_the_env_var(sleeps: list[float]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = KubeflowModelRegistry(
        f"http://127.0.0.1:{port}", author="ci", connect_attempts=3, timeout=2
    )

    with pytest.raises(RegistryError, match="MODEL_REGISTRY_URL") as info:
        backend.register_version(_request())

    assert len(sleeps) == 2  # three attempts
    assert "after 3 attempt(s)" in str(info.value)
    assert isinstance(info.value.__cause__, requests.ConnectionError)


def test_transient_server_errors_are_retried(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
    sleeps: list[float],
) -> None:
    fake_model_registry.fail("get_registered_models", status=503, times=2)
    _backend(fake_model_registry, connect_attempts=3).check()
    probes = [r for r in fake_model_registry.requests if r.operation == "get_registered_models"]
    assert [r.status for r in probes] == [503, 503, 200]
    assert len(sleeps) == 2

    fake_model_registry.fail("get_registered_models", status=503, times=5)
    with pytest.raises(RegistryError, match="MODEL_REGISTRY_URL"):
        _backend(fake_model_registry, connect_attempts=3).check()


def test_old_api_server_is_explained() -> None:
    old = FakeModelRegistry(api_version="v1alpha3").start()
    try:
        backend = KubeflowModelRegistry(old.url, author="ci")
        with pytest.raises(RegistryAPIVersionError) as info:
            backend.check()
        with pytest.raises(RegistryAPIVersionError):
            backend.check_api_version()
        with pytest.raises(RegistryAPIVersionError):
            backend.register_version(_request())
    finally:
        old.stop()
    message = str(info.value)
    assert "v1alpha3" in message and "/api/model_registry/v1" in message
    assert "upgrade" in message and "0.3.15" in message and "model-registry==0.3.14" in message
    assert not old.registered_models


def test_no_registry_api_at_url() -> None:
    other = FakeModelRegistry(api_version="v9").start()
    try:
        with pytest.raises(RegistryError, match="MODEL_REGISTRY_URL") as info:
            KubeflowModelRegistry(other.url, author="ci").check()
    finally:
        other.stop()
    assert not isinstance(info.value, RegistryAPIVersionError)


def test_token_is_sent(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_model_registry.token = "s3cret"
    with pytest.raises(RegistryError, match="MODEL_REGISTRY_TOKEN"):
        _backend(fake_model_registry).register_version(_request())

    record = _backend(fake_model_registry, token="s3cret").register_version(_request())
    assert record.status == "registered"
    monkeypatch.setenv("MODEL_REGISTRY_TOKEN", "s3cret")
    env_backend = _backend(fake_model_registry)
    env_backend.attach_evaluation(
        record, results=_results(), gate_passed=True, gate_report="", card=_card()
    )
    env_backend.promote(record)
    assert env_backend.production(MODEL) is not None


def test_url_validation() -> None:
    with pytest.raises(ConfigError, match="MODEL_REGISTRY_URL"):
        KubeflowModelRegistry("model-registry:8080", author="ci")
    with pytest.raises(ConfigError, match="must not contain a path"):
        KubeflowModelRegistry("http://mr:8080/api/model_registry/v1", author="ci")
    with pytest.raises(ConfigError):
        KubeflowModelRegistry("http://mr:8080", author="")
    backend = KubeflowModelRegistry("https://mr.example", author="ci", connect_attempts=1)
    assert backend.describe() == "https://mr.example:443"


def test_registry_from_url_builds_the_kubeflow_backend(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modelgate.registry import registry_from_url

    monkeypatch.setenv("MODEL_REGISTRY_URL", fake_model_registry.url)
    backend = registry_from_url(None, connect_attempts=1, timeout=5)
    assert isinstance(backend, KubeflowModelRegistry)
    assert backend.describe() == fake_model_registry.url
    backend.check()


# --- the double and its contract -----------------------------------------------------------
def test_double_rejects_unknown_fields(fake_model_registry: FakeModelRegistry) -> None:  # noqa: F811
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


def _template(path: str) -> str:
    return re.sub(r"\{[^/}]+\}", "{}", path)


def test_double_routes_exist_in_the_generated_client() -> None:
    """Every route the double serves is an operation of the client generated from the spec."""
    operations = generated_operations()
    assert len(operations) > 30  # the parse found the API module
    prefix = "/api/model_registry/v1"
    for method, path, operation, _ in FakeModelRegistry.ROUTES:
        assert operation in operations, f"{operation} is not in the generated client"
        generated = operations[operation]
        assert (generated.method, _template(generated.path)) == (
            method,
            _template(prefix + path),
        ), operation


def test_double_request_schemas_match_the_generated_models() -> None:
    """What the double accepts on create/update is exactly what the spec's models declare."""
    import mr_openapi.models as models

    pairs = {
        "RegisteredModelCreate": _RM_CREATE,
        "RegisteredModelUpdate": _RM_UPDATE,
        "ModelVersionCreate": _MV_CREATE,
        "ModelVersionUpdate": _MV_UPDATE,
        "ModelArtifactCreate": _MA_CREATE,
        "ModelArtifactUpdate": _MA_UPDATE,
        "DocArtifactCreate": _DOC_CREATE,
        "DocArtifactUpdate": _DOC_UPDATE,
    }
    for name, accepted in pairs.items():
        model = getattr(models, name)
        declared = {f.alias or n for n, f in model.model_fields.items()}
        assert set(accepted) == declared, name


def test_double_answers_validate_with_the_generated_models(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
    sleeps: list[float],
) -> None:
    """Every answer in a full workflow, and on every route, parses in the generated client
    and uses only the fields its model declares (by alias)."""
    fake = fake_model_registry
    backend = _backend(fake)
    v1 = _evaluated(backend, "v1")
    backend.register_version(_request(uri=v1.uri))  # idempotent
    backend.promote(v1)
    fake.fail("upsert_model_version_artifact", times=REGISTRY_RETRY.attempts)
    with pytest.raises(RegistryError):
        backend.register_version(_request(version_name="v2"))
    fake.find_registered_model(MODEL)["state"] = "ARCHIVED"  # type: ignore[index]
    v3 = _evaluated(backend, "v3")
    backend.promote(v3)
    _evaluated(backend, "v4", passed=False)
    backend.production(MODEL)
    with pytest.raises(RegistryError):
        backend.register_version(_request(version_name="v3", uri="s3://elsewhere"))

    api = f"{fake.url}/api/model_registry/v1"
    rm_id, mv_id = v3.registered_model_id, v3.model_version_id
    for path in (
        "/registered_models",
        f"/registered_models/{rm_id}",
        f"/registered_models/{rm_id}/versions",
        "/model_versions",
        f"/model_versions/{mv_id}",
        f"/model_versions/{mv_id}/artifacts",
        "/model_artifacts",
        f"/model_artifacts/{v3.model_artifact_id}",
        "/model_versions/999",
    ):
        requests.get(api + path, timeout=5)
    created = requests.post(
        f"{api}/model_artifacts", json={"name": "loose", "uri": "s3://x"}, timeout=5
    ).json()
    requests.patch(f"{api}/model_artifacts/{created['id']}", json={"description": "d"}, timeout=5)
    requests.post(f"{api}/registered_models/{rm_id}/versions", json={"name": "v5"}, timeout=5)
    requests.post(f"{api}/registered_models", json={"name": MODEL}, timeout=5)  # 409
    assert backend.production("no-such-model") is None  # find answers 404

    operations = generated_operations()
    served = [r for r in fake.requests if r.operation not in ("", "method_not_allowed")]
    problems = [p for r in served for p in response_problems(operations, r)]
    assert problems == []
    exercised = {r.operation for r in served}
    assert exercised == {operation for _, _, operation, _ in FakeModelRegistry.ROUTES}
    statuses = {r.status for r in served}
    assert {200, 201, 404, 409, 500} <= statuses


def test_find_version_by_name_and_newest_live(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = _backend(fake_model_registry)
    with pytest.raises(RegistryError, match="no registered model"):
        backend.find_version(MODEL)
    v1 = _evaluated(backend, "v1")
    backend.promote(v1)
    _evaluated(backend, "v2")
    _evaluated(backend, "v3", passed=False)  # rejected
    fake_model_registry.fail("upsert_model_version_artifact", status=400)
    with pytest.raises(RegistryError):
        backend.register_version(_request(version_name="v4"))  # ARCHIVED leftover

    newest = backend.find_version(MODEL)

    assert (newest.version_name, newest.stage) == ("v2", "candidate")
    assert newest.uri == "s3://models/qwen2.5-0.5b/w4a16/v2"
    assert newest.lineage == LINEAGE
    named = backend.find_version(MODEL, "v3")
    assert (named.version_name, named.stage) == ("v3", "rejected")
    with pytest.raises(RegistryError, match="no version 'v9'"):
        backend.find_version(MODEL, "v9")
    with pytest.raises(RegistryError, match="no model artifact"):
        backend.find_version(MODEL, "v4")

    backend.promote(backend.find_version(MODEL, "v2"))  # v1 is archived now
    assert backend.find_version(MODEL).version_name == "v2"
    assert _state(fake_model_registry, "v1") == "ARCHIVED"
