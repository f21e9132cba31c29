"""The release pipeline end to end on this machine: kfp.local with the real olah mirror,
llm-compressor, lm-eval, vLLM and the Model Registry client (against the REST double)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelgate.demo import DEMO_MAX_MODEL_LEN, DEMO_TASK, demo_thresholds
from modelgate.serving import pid_alive
from modelgate.testing.hub_mirror import publish_model
from tests.doubles.model_registry import FakeModelRegistry
from tests.e2e.helpers import run_cli, vllm_python

pytestmark = pytest.mark.e2e


def release_args(
    hub_mirror,
    task_dir: Path,
    root: Path,
    *,
    thresholds: str,
    scheme: str,
    registry_url: str,
    repo_id: str | None = None,
) -> list[str]:
    return [
        "run",
        "--local",
        "--model-id",
        repo_id or hub_mirror.repo_id,
        "--hf-endpoint",
        hub_mirror.endpoint,
        "--quant-scheme",
        scheme,
        "--eval-tasks",
        DEMO_TASK,
        "--eval-task-dir",
        str(task_dir),
        "--eval-batch-size",
        "16",
        "--thresholds",
        thresholds,
        "--registry-url",
        registry_url,
        "--deploy-target",
        "local",
        "--deploy-name",
        "tiny-llama",
        "--max-model-len",
        str(DEMO_MAX_MODEL_LEN),
        "--vllm-python",
        vllm_python(),
        "--pipeline-root",
        str(root),
    ]


def task_output(root: Path, task: str) -> dict:
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    path = run_dir / task / "executor_output.json"
    return json.loads(path.read_text()) if path.is_file() else {}


@pytest.fixture(scope="module")
def registry():
    fake = FakeModelRegistry().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def passing_run(hub_mirror, addition_task_dir, registry, tmp_path_factory):
    root = tmp_path_factory.mktemp("release-pass")
    proc = run_cli(
        *release_args(
            hub_mirror,
            addition_task_dir,
            root,
            thresholds=demo_thresholds(),
            scheme="FP8_DYNAMIC",
            registry_url=registry.url,
        )
    )
    return proc, root


UNTRAINED_REPO = "modelgate/tiny-llama-untrained"


@pytest.fixture(scope="module")
def failing_run(hub_mirror, untrained_model_dir, addition_task_dir, registry, tmp_path_factory):
    """The untrained model (near chance, 1/19) under the demo gate (acc >= 0.3)."""
    publish_model(untrained_model_dir, hub_mirror.repos_root, UNTRAINED_REPO)
    root = tmp_path_factory.mktemp("release-fail")
    proc = run_cli(
        *release_args(
            hub_mirror,
            addition_task_dir,
            root,
            thresholds=demo_thresholds(),
            scheme="none",
            registry_url=registry.url,
            repo_id=UNTRAINED_REPO,
        )
    )
    return proc, root


def test_release_passes_gate_and_serves_a_completion(passing_run):
    proc, root = passing_run
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for step in (
        "download",
        "quantize",
        "register candidate",
        "evaluate base",
        "evaluate candidate",
        "quality gate",
        "record evaluation",
        "deploy",
        "smoke test",
    ):
        assert f"│ {step} " in out, step
    assert "Gate demo: PASSED" in out
    assert f"{DEMO_TASK}/acc" in out and "FAIL" not in out
    completion = task_output(root, "smoke-test")["parameterValues"]["Output"]
    assert completion.strip()
    assert f"vLLM completion for '2+3=': {completion!r}" in out
    assert "release succeeded" in out
    # the local server is gone afterwards
    deployment = json.loads(task_output(root, "deploy-model")["parameterValues"]["deployment"])
    assert not pid_alive(int(deployment["details"]["pid"]))


def test_release_registers_lineage_and_gate_decision(passing_run, hub_mirror, registry):
    proc, root = passing_run
    assert proc.returncode == 0, proc.stdout
    record = json.loads(task_output(root, "register-candidate")["parameterValues"]["record"])
    assert record["status"] == "registered"
    version = registry.find_model_version(hub_mirror.repo_id, record["version_name"])
    props = registry.plain_properties(version)
    assert props["source_repo"] == hub_mirror.repo_id
    assert props["source_commit"] == hub_mirror.commit_sha
    assert props["quant_scheme"] == "FP8_DYNAMIC"
    assert props["gate.passed"] is True
    assert props["modelgate.stage"] == "gate-passed"
    assert props[f"eval.{DEMO_TASK}/acc"] > 0.3
    (artifact,) = registry.artifacts_of(version["id"])
    assert artifact["uri"].endswith("quantized")


def test_failing_gate_stops_before_deploy_and_exits_non_zero(failing_run, registry):
    proc, root = failing_run
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "Gate demo: FAILED" in out
    row = next(ln for ln in out.splitlines() if f"{DEMO_TASK}/acc " in ln and ">= 0.3000" in ln)
    assert "FAIL" in row, row
    assert "release failed at: stop promotion" in out
    assert f"gate demo failed: {DEMO_TASK}/acc min" in out
    for step in ("deploy", "smoke test"):
        line = next(ln for ln in out.splitlines() if f"│ {step} " in ln)
        assert "not run" in line, line
    assert not task_output(root, "deploy-model")
    record = json.loads(task_output(root, "register-candidate")["parameterValues"]["record"])
    version = registry.find_model_version(UNTRAINED_REPO, record["version_name"])
    props = registry.plain_properties(version)
    assert props["gate.passed"] is False and props["modelgate.stage"] == "gate-failed"
