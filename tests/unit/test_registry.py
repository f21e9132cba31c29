"""What every registry backend must do, run against both: the Kubeflow Model Registry (its REST
contract double) and MLflow (a real SQLite store)."""

from __future__ import annotations

import os

import pytest

from modelgate.errors import ConfigError, RegistryError
from modelgate.evaluate import EvalResult, MetricValue
from modelgate.registry import (
    SKIPPED_MESSAGE,
    RegistryBackend,
    RegistryRecord,
    candidate_request,
    local_registry_url,
    model_card,
    promote_candidate,
    record_evaluation,
    register_candidate,
    registry_from_url,
    resolve_version,
)
from modelgate.registry.base import read_production, write_production
from modelgate.registry.kubeflow import KubeflowModelRegistry
from modelgate.registry.mlflow import MLflowRegistry
from tests.doubles.model_registry import fake_model_registry  # noqa: F401 - fixture

pytestmark = pytest.mark.unit
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def _no_registry_env(monkeypatch):
    monkeypatch.delenv("MODEL_REGISTRY_URL", raising=False)


@pytest.fixture(params=["kubeflow", "mlflow"])
def registry_url(request, tmp_path) -> str:
    if request.param == "kubeflow":
        return request.getfixturevalue("fake_model_registry").url
    return local_registry_url(tmp_path)


def release(run: str, **kw):
    return candidate_request(
        model_uri=f"s3://models/org--m/{SHA}/fp8_dynamic-{run:0>12}",
        repo_id="org/M",
        revision="main",
        commit_sha=SHA,
        scheme="FP8_DYNAMIC",
        pipeline_run_id=run,
        **kw,
    )


def results(acc: float) -> EvalResult:
    return EvalResult(
        model="m",
        backend="hf",
        tasks={"arc": {"acc": MetricValue(acc, 0.015, True), "f1": MetricValue(0.3, None, None)}},
        n_samples={"arc": 1000},
        config={"limit": 1000},
    )


def test_urls_pick_the_backend(tmp_path):
    assert isinstance(registry_from_url("http://mr:8080"), KubeflowModelRegistry)
    assert isinstance(registry_from_url(local_registry_url(tmp_path)), MLflowRegistry)
    assert registry_from_url("") is None
    for backend in (
        registry_from_url("http://mr:8080"),
        registry_from_url(local_registry_url(tmp_path)),
    ):
        assert isinstance(backend, RegistryBackend)


def test_a_release_cycle_on_either_backend(registry_url):
    first = register_candidate(registry_url=registry_url, request=release("run1"))
    assert first.status == "registered" and first.stage == "candidate"
    assert first.model_name == "org--m" and first.lineage["source_repo"] == "org/M"
    first = record_evaluation(
        record=first,
        registry_url=registry_url,
        results=results(0.61),
        gate_passed=True,
        gate_report="| gate | PASSED |",
    )
    assert first.stage == "candidate"
    assert "is production" in promote_candidate(record=first, registry_url=registry_url)
    backend = registry_from_url(registry_url)
    prod = backend.production("org--m")
    assert prod.record.version_name == first.version_name and prod.record.uri == first.uri
    acc, f1 = prod.results.get("arc", "acc"), prod.results.get("arc", "f1")
    assert (acc.value, acc.stderr, acc.higher_is_better) == (0.61, 0.015, True)
    assert (f1.value, f1.stderr, f1.higher_is_better) == (0.3, None, None)
    assert prod.results.samples("arc") == 1000
    # the challenger fails its gate: rejected, and production does not move
    second = register_candidate(registry_url=registry_url, request=release("run2"))
    second = record_evaluation(
        record=second,
        registry_url=registry_url,
        results=results(0.4),
        gate_passed=False,
        gate_report="| gate | FAILED |",
    )
    assert second.stage == "rejected"
    with pytest.raises(RegistryError):
        promote_candidate(record=second, registry_url=registry_url)
    assert backend.production("org--m").record.version_name == first.version_name
    # a redeploy picks the newest version that is neither rejected nor archived
    assert resolve_version(registry_url=registry_url, model_name="org--m").version_name == (
        first.version_name
    )
    third = register_candidate(registry_url=registry_url, request=release("run3"))
    third = record_evaluation(
        record=third,
        registry_url=registry_url,
        results=results(0.65),
        gate_passed=True,
        gate_report="g",
    )
    done = promote_candidate(record=third, registry_url=registry_url)
    assert done.endswith(f"archived org--m:{first.version_name}")
    assert backend.production("org--m").record.version_name == third.version_name


def test_promote_failing_after_the_deploy_says_what_serves_and_how_to_fix_it(
    registry_url, monkeypatch
):
    """The endpoint already serves the version; the registry still says candidate."""
    import shlex
    import subprocess
    import sys

    record = register_candidate(registry_url=registry_url, request=release("run1"))
    record = record_evaluation(
        record=record,
        registry_url=registry_url,
        results=results(0.6),
        gate_passed=True,
        gate_report="g",
    )
    endpoint = "http://org--m-predictor.team-a.svc.cluster.local"

    def down(self, record):
        raise RegistryError("registry answered 503 after every retry")

    with monkeypatch.context() as patched:
        for backend_class in (KubeflowModelRegistry, MLflowRegistry):
            patched.setattr(backend_class, "promote", down)
        with pytest.raises(RegistryError) as info:
            promote_candidate(record=record, registry_url=registry_url, endpoint=endpoint)
        with pytest.raises(RegistryError, match="answered 503"):  # no endpoint: as it was
            promote_candidate(record=record, registry_url=registry_url)

    message = str(info.value)
    assert message.startswith(f"{endpoint} serves org--m:{record.version_name}, but the registry ")
    assert "still says 'candidate' for it" in message and "answered 503" in message
    command = message.split("promote it by hand: ", 1)[1]
    assert command.startswith("MODEL_REGISTRY_URL=")
    argv = shlex.split(command)
    env_assignment, program = argv[0], argv[1:]
    assert program[:2] == ["python", "-c"]
    env = {**os.environ, "MODEL_REGISTRY_URL": env_assignment.split("=", 1)[1]}
    done = subprocess.run(
        [sys.executable, *program[1:]], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"org--m:{record.version_name} is production" in done.stdout
    prod = registry_from_url(registry_url).production("org--m")
    assert prod is not None and prod.record.version_name == record.version_name


def test_rerunning_a_run_is_idempotent_and_a_clash_is_explained(registry_url):
    first = register_candidate(registry_url=registry_url, request=release("run1"))
    again = register_candidate(registry_url=registry_url, request=release("run1"))
    assert again.model_version_id == first.model_version_id
    clash = release("run1").model_copy(update={"uri": "s3://models/other"})
    with pytest.raises(RegistryError, match="registered_model_name"):
        register_candidate(registry_url=registry_url, request=clash)


def test_no_production_yet(registry_url):
    backend = registry_from_url(registry_url)
    assert backend.production("org--m") is None
    register_candidate(registry_url=registry_url, request=release("run1"))
    assert backend.production("org--m") is None


def test_production_file_round_trip(registry_url, tmp_path):
    record = register_candidate(registry_url=registry_url, request=release("run1"))
    record = record_evaluation(
        record=record,
        registry_url=registry_url,
        results=results(0.6),
        gate_passed=True,
        gate_report="g",
    )
    promote_candidate(record=record, registry_url=registry_url)
    path = tmp_path / "production.json"
    write_production(registry_from_url(registry_url).production("org--m"), path)
    found, version = read_production(path)
    assert version == record.version_name and found.get("arc", "acc").value == 0.6
    write_production(None, path)
    assert read_production(path) == (None, None)


def test_without_a_registry_every_step_says_skipped():
    record = register_candidate(registry_url=None, request=release("run1"))
    assert record.status == "skipped" and record.message == SKIPPED_MESSAGE
    same = record_evaluation(
        record=record, registry_url=None, results=results(0.5), gate_passed=True, gate_report=""
    )
    assert same == record
    assert promote_candidate(record=record, registry_url=None) == SKIPPED_MESSAGE
    with pytest.raises(ConfigError, match="set registry_url"):
        resolve_version(registry_url=None, model_name="org--m")


def test_model_card_names_source_license_quantization_and_both_tables(tmp_path):
    from modelgate.storage import FileStore

    store = FileStore(tmp_path / "store")
    with store.writer("m") as folder:
        (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# M\n")
    request = release("run1").model_copy(update={"uri": store.uri("m")})
    record = register_candidate(registry_url=None, request=request)
    card = model_card(record, results=results(0.61), gate_report="### Gate `g`: PASSED\n")
    assert card.startswith(f"# org--m — {record.version_name}")
    assert f"org/M @ `{SHA[:12]}`" in card and "| license | apache-2.0 |" in card
    assert "FP8_DYNAMIC" in card and "| arc | acc | 0.6100 | 0.0150 | 1000 |" in card
    assert "### Gate `g`: PASSED" in card


def test_record_round_trip():
    record = RegistryRecord(
        status="registered", message="ok", model_name="m", version_name="v", lineage={"a": 1}
    )
    assert RegistryRecord.from_dict(record.to_json()) == record
    with pytest.raises(ConfigError):
        RegistryRecord.from_dict({"status": "maybe", "message": ""})


def test_production_keeps_its_samples_so_a_later_release_pairs_without_reevaluating(
    registry_url, tmp_path
):
    """The samples file of an evaluation goes with the version (Kubeflow: the
    ``eval.samples_uri`` property; MLflow: that tag, and a copy logged on the run), and the
    production lookup hands it, with the lm-eval settings, to the next release's gate."""
    from modelgate.samples import Sample, SampleSet, read_samples, write_samples
    from modelgate.storage import FileStore

    store = FileStore(tmp_path / "store")
    with store.writer("evals/eval-0123") as folder:
        write_samples(
            SampleSet(
                samples=[Sample("arc", i, f"h{i}", {"acc": float(i % 2)}) for i in range(4)],
                meta={"limit": 4, "seed": 1234, "task_hashes": {"arc": "t"}},
            ),
            folder / "samples.jsonl",
        )
    samples_uri = f"{store.uri('evals/eval-0123')}/samples.jsonl"
    evaluated = results(0.6)
    evaluated.samples_uri = samples_uri
    evaluated.config = {"limit": 4, "seed": 1234, "task_hashes": {"arc": "t"}}
    record = register_candidate(registry_url=registry_url, request=release("run1"))
    record = record_evaluation(
        record=record,
        registry_url=registry_url,
        results=evaluated,
        gate_passed=True,
        gate_report="g",
    )
    promote_candidate(record=record, registry_url=registry_url)
    prod = registry_from_url(registry_url).production("org--m")
    assert prod.results.samples_uri == samples_uri
    assert prod.results.config["task_hashes"] == {"arc": "t"}
    path = tmp_path / "production.json"
    write_production(prod, path)
    found, _ = read_production(path)
    assert found.samples_uri == samples_uri
    assert [s.metrics["acc"] for s in read_samples(found.samples_uri).samples] == [0, 1, 0, 1]
    if registry_url.startswith("mlflow+"):  # a copy on the version's run, tagged with its URI
        backend = registry_from_url(registry_url)
        mv = backend._find("org--m", record.version_name)
        copy = mv.tags["modelgate.samples_artifact"]
        assert copy.endswith("/samples.jsonl")
        local = backend._client.download_artifacts(mv.run_id, "samples.jsonl", str(tmp_path))
        assert len(read_samples(local).samples) == 4
    # a version evaluated without samples has none, and says so
    plain = register_candidate(registry_url=registry_url, request=release("run2"))
    plain = record_evaluation(
        record=plain,
        registry_url=registry_url,
        results=results(0.7),
        gate_passed=True,
        gate_report="g",
    )
    promote_candidate(record=plain, registry_url=registry_url)
    assert registry_from_url(registry_url).production("org--m").results.samples_uri is None
