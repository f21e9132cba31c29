"""The serving gate's record on a version, on both backends: the Kubeflow Model Registry (the real
``model-registry`` client against the REST double) and MLflow (a real SQLite store).

Measurements carry the Kubeflow Hub model catalog's performance-metric names and types
(``ttft_p95``, ``itl_p95``, ``tps_mean`` doubles, ``hardware_count`` int, ``hardware_type``
string: kubeflow/hub docs/catalog-yaml-reference.md, "Performance Metrics").
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from modelgate.errors import ConfigError, RegistryError
from modelgate.evaluate import EvalResult, MetricValue
from modelgate.registry import (
    RegistryRecord,
    candidate_request,
    local_registry_url,
    promote_candidate,
    record_serving,
    register_candidate,
)
from modelgate.registry.base import (
    GATE_REPORT_MAX_CHARS,
    RegisterRequest,
    serving_properties,
)
from modelgate.registry.kubeflow import KubeflowModelRegistry
from modelgate.registry.mlflow import MAX_TAG, MLflowRegistry
from tests.doubles.model_registry import (
    FakeModelRegistry,
    fake_model_registry,  # noqa: F401 - fixture
    generated_operations,
    response_problems,
)

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("no_registry_env")]
SHA = "0123456789abcdef0123456789abcdef01234567"
MODEL = "org--m"
MEASURED: dict[str, float | int | str] = {
    "ttft_p95": 120,  # an int from the caller: still a double, as in the catalog
    "itl_p95": 21.5,
    "tps_mean": 812.25,
    "requests_per_second": 4.0,
    "hardware_type": "H100",
    "hardware_count": 2,
    "serving.error_rate": 0.0,
    "serving.profile": "sweep",
}
SERVING_KEYS = {
    "ttft_p95",
    "itl_p95",
    "tps_mean",
    "requests_per_second",
    "hardware_type",
    "hardware_count",
    "serving.error_rate",
    "serving.profile",
}


class Stored:
    """One backend under test and what it stored on version ``v`` of :data:`MODEL`."""

    def __init__(self, kind: str, backend: Any, fake: FakeModelRegistry | None) -> None:
        self.kind = kind
        self.backend = backend
        self.fake = fake

    def _mlflow_version(self, version: str) -> Any:
        (mv,) = self.backend._client.search_model_versions(
            f"name = '{MODEL}' and tags.`modelgate.version_name` = '{version}'"
        )
        return mv

    def props(self, version: str) -> dict[str, Any]:
        """The version's properties (Kubeflow: typed values; MLflow: tag strings)."""
        if self.fake is not None:
            mv = self.fake.find_model_version(MODEL, version)
            assert mv is not None
            return FakeModelRegistry.plain_properties(mv)
        return dict(self._mlflow_version(version).tags)

    def number(self, version: str, key: str) -> float:
        return float(self.props(version)[key])

    def run_file(self, version: str, name: str) -> str:
        """A file of the MLflow run of the version."""
        mv = self._mlflow_version(version)
        path = self.backend._client.download_artifacts(mv.run_id, name)
        return Path(path).read_text()


@pytest.fixture(scope="module")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store with its tables made (MLflow takes seconds to make them)."""
    root = tmp_path_factory.mktemp("mlflow-template")
    backend = MLflowRegistry(local_registry_url(root), author="ci")
    backend._client.search_registered_models(max_results=1)  # makes the tables
    return root / "registry" / "mlflow.db"


@pytest.fixture
def mlflow_url(empty_mlflow_db: Path, tmp_path: Path) -> str:
    """A fresh SQLite MLflow registry under ``tmp_path`` (a copy of the empty store)."""
    (tmp_path / "registry").mkdir()
    shutil.copyfile(empty_mlflow_db, tmp_path / "registry" / "mlflow.db")
    return local_registry_url(tmp_path)


@pytest.fixture(params=["kubeflow", "mlflow"])
def stored(request: pytest.FixtureRequest) -> Stored:
    if request.param == "kubeflow":
        fake: FakeModelRegistry = request.getfixturevalue("fake_model_registry")
        return Stored("kubeflow", KubeflowModelRegistry(fake.url, author="ci"), fake)
    url = request.getfixturevalue("mlflow_url")
    return Stored("mlflow", MLflowRegistry(url, author="ci"), None)


def _results(acc: float = 0.6) -> EvalResult:
    return EvalResult(
        model="m",
        backend="vllm",
        tasks={"arc": {"acc": MetricValue(acc, 0.02, True)}},
        n_samples={"arc": 500},
        config={"limit": 500},
    )


def _candidate(backend: Any, run: str = "run1") -> RegistryRecord:
    """A registered version whose quality gate passed (what the serving gate benchmarks)."""
    request = candidate_request(
        model_uri=f"s3://models/{MODEL}/{SHA}/w4a16-{run}",
        repo_id="org/M",
        revision="main",
        commit_sha=SHA,
        scheme="W4A16",
        pipeline_run_id=run,
    )
    record = backend.register_version(request)
    record = backend.attach_evaluation(
        record, results=_results(), gate_passed=True, gate_report="| gate | passed |", card="# c"
    )
    assert record.stage == "candidate" and record.model_name == MODEL
    return record


def _serve(backend: Any, record: RegistryRecord, **kw: Any) -> RegistryRecord:
    args: dict[str, Any] = {
        "passed": True,
        "properties": MEASURED,
        "report": "| metric | value | limit |\n|---|---|---|\n| ttft_p95 | 120 | 500 |",
        "summary": "TTFT p95 120 ms <= 500 ms; 812 tok/s >= 500 tok/s",
    }
    args.update(kw)
    result: RegistryRecord = backend.record_serving(record, **args)
    return result


# --- passed --------------------------------------------------------------------------------------
def test_a_passed_gate_stores_every_measurement_and_leaves_the_stage(stored: Stored) -> None:
    record = _candidate(stored.backend)
    before = stored.props(record.version_name or "")

    after = _serve(stored.backend, record)

    assert after.stage == "candidate" and after.message.startswith("serving gate passed: TTFT")
    props = stored.props(record.version_name or "")
    assert props["modelgate.stage"] == "candidate"
    assert props["modelgate.serving_gate"] == "passed"
    assert props["modelgate.serving_summary"].startswith("TTFT p95 120 ms")
    assert "| ttft_p95 | 120 | 500 |" in props["modelgate.serving_report"]
    assert SERVING_KEYS <= set(props)
    assert stored.number(record.version_name or "", "ttft_p95") == 120.0
    assert stored.number(record.version_name or "", "tps_mean") == 812.25
    assert str(props["hardware_type"]) == "H100" and int(props["hardware_count"]) == 2
    # the lineage, the results and the gate are untouched
    assert {k: v for k, v in props.items() if k in before and not k.startswith("modelgate.s")} == {
        k: v for k, v in before.items() if not k.startswith("modelgate.s")
    }
    # measurements are not lineage: the version read back carries only what it was registered with
    found = stored.backend.find_version(MODEL, record.version_name)
    assert not SERVING_KEYS & set(found.lineage)
    assert found.lineage["source_repo"] == "org/M"
    # a passed serving gate does not stand in the way of promotion
    assert stored.backend.promote(after).startswith(f"{MODEL}:{record.version_name} is production")


def test_kubeflow_stores_the_catalog_metadata_types(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = KubeflowModelRegistry(fake_model_registry.url, author="ci")
    record = _candidate(backend)
    fake_model_registry.requests.clear()

    _serve(backend, record)

    mv = fake_model_registry.find_model_version(MODEL, record.version_name or "")
    assert mv is not None
    wire = mv["customProperties"]
    kinds = {k: wire[k]["metadataType"] for k in SERVING_KEYS}
    assert kinds == {
        "ttft_p95": "MetadataDoubleValue",
        "itl_p95": "MetadataDoubleValue",
        "tps_mean": "MetadataDoubleValue",
        "requests_per_second": "MetadataDoubleValue",
        "hardware_type": "MetadataStringValue",
        "hardware_count": "MetadataIntValue",
        "serving.error_rate": "MetadataDoubleValue",
        "serving.profile": "MetadataStringValue",
    }
    assert wire["ttft_p95"]["double_value"] == 120.0
    assert wire["hardware_count"]["int_value"] == "2"
    assert wire["modelgate.serving_gate"] == {
        "metadataType": "MetadataStringValue",
        "string_value": "passed",
    }
    # one PATCH of the version, and every answer is what the generated client accepts
    patches = [r for r in fake_model_registry.requests if r.method == "PATCH"]
    assert [r.operation for r in patches] == ["update_model_version"]
    operations = generated_operations()
    problems = [p for r in fake_model_registry.requests for p in response_problems(operations, r)]
    assert problems == []


# --- failed --------------------------------------------------------------------------------------
def test_a_failed_gate_rejects_the_version_with_its_summary_and_report(stored: Stored) -> None:
    record = _candidate(stored.backend)
    summary = "TTFT p95 812 ms > 500 ms"
    report = "# serving gate\n" + "| ttft_p95 | 812 | 500 | FAIL |\n" * 20

    after = _serve(stored.backend, record, passed=False, summary=summary, report=report)

    assert after.stage == "rejected"
    assert after.message == f"serving gate failed: {summary}"
    props = stored.props(record.version_name or "")
    assert props["modelgate.stage"] == "rejected"
    assert props["modelgate.serving_gate"] == "failed"
    assert props["modelgate.serving_summary"] == summary
    assert props["modelgate.serving_report"] == report
    assert stored.number(record.version_name or "", "ttft_p95") == 120.0
    assert props["modelgate.gate"] == "passed"  # the quality gate's decision stays
    with pytest.raises(RegistryError, match="serving gate"):
        stored.backend.promote(after)
    with pytest.raises(RegistryError, match="neither rejected nor archived"):
        stored.backend.find_version(MODEL)  # a redeploy never picks it by itself
    if stored.kind == "mlflow":
        assert stored.run_file(record.version_name or "", "serving.md") == report


def test_only_a_passing_serving_gate_undoes_a_failed_one(stored: Stored) -> None:
    """A redeploy by name re-evaluates the version (its quality gate passes again and makes it a
    candidate); it is promoted only once its serving gate passed too."""
    record = _candidate(stored.backend)
    _serve(stored.backend, record, passed=False, summary="TTFT p95 812 ms > 500 ms")
    again = stored.backend.attach_evaluation(
        record, results=_results(), gate_passed=True, gate_report="g", card="# c"
    )
    assert again.stage == "candidate"

    with pytest.raises(RegistryError, match="serving gate failed"):
        stored.backend.promote(again)

    passed = _serve(stored.backend, again, passed=True, summary="TTFT p95 300 ms <= 500 ms")
    assert passed.stage == "candidate"
    assert "is production" in stored.backend.promote(passed)


def test_a_rejection_needs_a_summary(stored: Stored) -> None:
    record = _candidate(stored.backend)
    with pytest.raises(ConfigError, match="needs a summary"):
        _serve(stored.backend, record, passed=False, summary="  ")
    assert stored.props(record.version_name or "")["modelgate.stage"] == "candidate"


def test_kubeflow_cuts_the_report_to_the_property_limit(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
) -> None:
    backend = KubeflowModelRegistry(fake_model_registry.url, author="ci")
    record = _candidate(backend)
    report = "x" * (GATE_REPORT_MAX_CHARS + 500)

    _serve(backend, record, passed=False, summary="too slow", report=report)

    mv = fake_model_registry.find_model_version(MODEL, record.version_name or "")
    assert mv is not None
    stored_report = FakeModelRegistry.plain_properties(mv)["modelgate.serving_report"]
    assert len(stored_report) == GATE_REPORT_MAX_CHARS
    assert stored_report.endswith("...[truncated 500 chars]")


def test_mlflow_keeps_the_full_report_on_the_run_and_a_cut_one_in_the_tag(mlflow_url: str) -> None:
    backend = MLflowRegistry(mlflow_url, author="ci")
    stored = Stored("mlflow", backend, None)
    record = _candidate(backend)
    report = "y" * (MAX_TAG + 10)

    _serve(backend, record, passed=False, summary="too slow", report=report)

    tag = stored.props(record.version_name or "")["modelgate.serving_report"]
    assert len(tag) == MAX_TAG and "[truncated" in tag
    assert stored.run_file(record.version_name or "", "serving.md") == report
    measured = json.loads(stored.run_file(record.version_name or "", "serving.json"))
    assert measured["passed"] is False and measured["summary"] == "too slow"
    assert measured["properties"]["ttft_p95"] == 120.0
    assert measured["properties"]["hardware_count"] == 2


# --- production ----------------------------------------------------------------------------------
@pytest.mark.parametrize("passed", [False, True])
def test_a_production_version_is_never_touched(stored: Stored, passed: bool) -> None:
    record = _candidate(stored.backend)
    stored.backend.promote(record)
    before = stored.props(record.version_name or "")

    with pytest.raises(RegistryError, match=rf"{MODEL}:{record.version_name} is production"):
        _serve(stored.backend, record, passed=passed, summary="TTFT p95 812 ms > 500 ms")

    assert stored.props(record.version_name or "") == before
    assert stored.backend.production(MODEL).record.version_name == record.version_name


def test_mlflow_a_version_the_production_alias_points_at_is_production(mlflow_url: str) -> None:
    """Promote sets the alias before the tag: a version with only the alias is production."""
    backend = MLflowRegistry(mlflow_url, author="ci")
    record = _candidate(backend)
    backend._client.set_registered_model_alias(MODEL, "production", record.model_version_id)

    with pytest.raises(RegistryError, match="is production"):
        _serve(backend, record, passed=False, summary="slow")

    tags = Stored("mlflow", backend, None).props(record.version_name or "")
    assert tags["modelgate.stage"] == "candidate" and "modelgate.serving_gate" not in tags


# --- retries -------------------------------------------------------------------------------------
@pytest.mark.parametrize("passed", [True, False])
def test_repeating_the_step_writes_the_same_state(stored: Stored, passed: bool) -> None:
    record = _candidate(stored.backend)
    first = _serve(stored.backend, record, passed=passed)
    state = stored.props(record.version_name or "")

    again = _serve(stored.backend, record, passed=passed)

    assert again == first
    assert stored.props(record.version_name or "") == state
    assert state["modelgate.stage"] == ("candidate" if passed else "rejected")


def test_a_new_measurement_replaces_the_earlier_one(stored: Stored) -> None:
    record = _candidate(stored.backend)
    _serve(stored.backend, record, passed=False, summary="slow")
    fewer = {"ttft_p95": 90.5, "hardware_type": "L4", "hardware_count": 1}

    _serve(stored.backend, record, passed=False, summary="still slow", properties=fewer)

    props = stored.props(record.version_name or "")
    assert {k for k in props if k in SERVING_KEYS} == set(fewer)
    assert stored.number(record.version_name or "", "ttft_p95") == 90.5
    assert props["modelgate.serving_summary"] == "still slow"
    assert props["source_repo"] == "org/M"  # the lineage stays


def test_kubeflow_update_whose_answer_was_lost_is_written_once(
    fake_model_registry: FakeModelRegistry,  # noqa: F811
    sleeps: list[float],
) -> None:
    backend = KubeflowModelRegistry(fake_model_registry.url, author="ci")
    record = _candidate(backend)
    fake_model_registry.lose("update_model_version", status=503)
    fake_model_registry.requests.clear()

    after = _serve(backend, record, passed=False, summary="slow")

    assert after.stage == "rejected" and sleeps  # retried after the lost answer
    updates = [r.status for r in fake_model_registry.requests if r.method == "PATCH"]
    assert updates == [503, 200]
    mv = fake_model_registry.find_model_version(MODEL, record.version_name or "")
    assert mv is not None
    props = FakeModelRegistry.plain_properties(mv)
    assert props["modelgate.stage"] == "rejected" and props["ttft_p95"] == 120.0


# --- names ---------------------------------------------------------------------------------------
def test_the_descriptive_names_are_stored_under_the_catalog_names() -> None:
    stored = serving_properties(
        {
            "latency_ttft_p95_ms": 120,
            "latency_itl_p95_ms": 20,
            "throughput_output_tps": 800,
            "hardware_type": "H100",
            "hardware_count": 1,
        }
    )
    assert stored == {
        "ttft_p95": 120.0,
        "itl_p95": 20.0,
        "tps_mean": 800.0,
        "hardware_type": "H100",
        "hardware_count": 1,
    }
    assert all(type(stored[k]) is float for k in ("ttft_p95", "itl_p95", "tps_mean"))


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ({"ttft_p95_ms": 1.0}, r"unknown name 'ttft_p95_ms'\. Did you mean ttft_p95"),
        ({"modelgate.stage": "production"}, "unknown name 'modelgate.stage'"),
        ({"eval.arc/acc": 0.9}, "unknown name 'eval.arc/acc'"),
        ({"serving.": 1.0}, r"unknown name 'serving\.'"),
        ({"ttft_p95": "fast"}, "'ttft_p95' must be a number"),
        ({"ttft_p95": True}, "'ttft_p95' must be a number"),
        ({"ttft_p95": float("nan")}, "must be finite"),
        ({"hardware_count": "2"}, r"'hardware_count' must be a count"),
        ({"hardware_count": 2.0}, r"'hardware_count' must be a count"),
        ({"hardware_count": -1}, r"'hardware_count' must be a count"),
        ({"hardware_type": 100}, "'hardware_type' must be a non-empty string"),
        ({"serving.x": [1]}, "expected str, int, float or bool"),
        ({"ttft_p95": 1.0, "latency_ttft_p95_ms": 2.0}, "given twice"),
        ({"": 1.0}, "non-empty strings"),
    ],
)
def test_bad_measurements_are_refused(properties: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        serving_properties({"itl_p95": 20.0, **properties})


def test_a_bad_measurement_is_refused_before_anything_is_written(stored: Stored) -> None:
    record = _candidate(stored.backend)
    before = stored.props(record.version_name or "")
    bad = {**MEASURED, "ttft_p95_ms": 900.0}  # after good ones

    with pytest.raises(ConfigError, match="Did you mean ttft_p95"):
        _serve(stored.backend, record, passed=False, summary="slow", properties=bad)

    assert stored.props(record.version_name or "") == before


@pytest.mark.parametrize("key", ["ttft_p95", "hardware_type", "serving.anything"])
def test_lineage_cannot_take_a_measurement_name(key: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        RegisterRequest(model_name="m", version_name="v", uri="s3://b/m", properties={key: 1})


# --- the pipeline's entry point ------------------------------------------------------------------
def test_the_entry_point_records_on_the_record_s_registry(stored: Stored) -> None:
    url = stored.fake.url if stored.fake is not None else stored.backend.describe()
    record = _candidate(stored.backend)

    after = record_serving(
        record=record,
        registry_url=url,
        passed=False,
        properties={"latency_ttft_p95_ms": 640, "hardware_type": "L4", "hardware_count": 1},
        report="| ttft_p95 | 640 | 500 |",
        summary="TTFT p95 640 ms > 500 ms",
    )

    assert after.stage == "rejected"
    props = stored.props(record.version_name or "")
    assert props["modelgate.stage"] == "rejected"
    assert stored.number(record.version_name or "", "ttft_p95") == 640.0
    with pytest.raises(RegistryError, match="serving gate"):
        promote_candidate(record=after, registry_url=url)


def test_the_entry_point_skips_without_a_registry_but_still_checks_names(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = candidate_request(
        model_uri="s3://b/m", repo_id="org/M", revision="main", commit_sha=SHA, scheme="W4A16"
    )
    record = register_candidate(registry_url=None, request=request)
    assert record.status == "skipped"
    args: dict[str, Any] = {"registry_url": None, "passed": False, "report": "r", "summary": "s"}

    with caplog.at_level(logging.WARNING, logger="modelgate.registry"):
        assert record_serving(record=record, properties=MEASURED, **args) is record
    assert "serving gate not recorded: skipped" in caplog.text
    with pytest.raises(ConfigError, match="Did you mean ttft_p95"):
        record_serving(record=record, properties={"ttft_p95_ms": 1.0}, **args)
