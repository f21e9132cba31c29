"""The release pipeline end to end on this machine: kfp.local with the real olah mirror,
llm-compressor, lm-eval, vLLM and the Model Registry client (against the REST double).

The passing release writes its models to an S3-protocol server (moto, on loopback) and the
local deploy target fetches the served model from there with KServe's own downloader
(kserve-storage), as an InferenceService's storage initializer would; the failing release uses
the default local model store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelgate.demo import DEMO_TASK, demo_thresholds
from modelgate.processes import pid_alive
from modelgate.testing.hub_mirror import publish_model
from tests.doubles.model_registry import FakeModelRegistry
from tests.e2e.helpers import local_run_args, local_serving_args, run_cli

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
    model_store: str | None = None,
    deploy_name: str = "tiny-llama",
) -> list[str]:
    """The release runs of this tier: the demo gate's run, registered in ``registry_url``."""
    store = ["--model-store", model_store] if model_store else []
    return local_run_args(
        hub_mirror,
        task_dir,
        root,
        "--eval-batch-size",
        "16",
        "--registry-url",
        registry_url,
        *store,
        thresholds=thresholds,
        scheme=scheme,
        repo_id=repo_id,
        deploy_name=deploy_name,
    )


def task_output(root: Path, task: str) -> dict:
    (run_dir,) = [p for p in root.iterdir() if p.is_dir() and p.name != "model-store"]
    path = run_dir / task / "executor_output.json"
    return json.loads(path.read_text()) if path.is_file() else {}


@pytest.fixture(scope="module")
def registry():
    fake = FakeModelRegistry().start()
    yield fake
    fake.stop()


STORE_BUCKET = "release-models"


@pytest.fixture(scope="module")
def passing_run(hub_mirror, addition_task_dir, registry, s3_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("release-pass")
    s3_server.make_bucket(STORE_BUCKET)
    proc = run_cli(
        *release_args(
            hub_mirror,
            addition_task_dir,
            root,
            thresholds=demo_thresholds(),
            scheme="FP8_DYNAMIC",
            registry_url=registry.url,
            model_store=f"s3://{STORE_BUCKET}/modelgate",
        ),
        env=s3_server.env,
    )
    return proc, root


UNTRAINED_REPO = "modelgate/tiny-llama-untrained"
REGISTERED_NAME = "modelgate--tiny-llama"  # what the passing run derives from its Hub id


@pytest.fixture(scope="module")
def failing_run(
    passing_run, hub_mirror, untrained_model_dir, addition_task_dir, registry, tmp_path_factory
):
    """The untrained model (near chance, 1/19), released under the same registered model name
    as the passing run's (now in production), under the demo gate (acc >= 0.3, and >= 0.95 of
    production)."""
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
        ),
        "--registered-model-name",
        REGISTERED_NAME,
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
    # the local server and the folder KServe's downloader filled are gone afterwards
    deployment = json.loads(task_output(root, "deploy-model")["parameterValues"]["deployment"])
    assert not pid_alive(int(deployment["details"]["pid"]))
    assert not Path(deployment["details"]["model_dir"]).exists()


def test_release_writes_each_model_once_to_s3_and_serves_it_from_there(passing_run, s3_server):
    import boto3

    proc, root = passing_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"model store: s3://{STORE_BUCKET}/modelgate" in proc.stdout
    download = task_output(root, "download-model")["parameterValues"]
    quantize = task_output(root, "quantize-model")["parameterValues"]
    assert download["model_uri"].startswith(f"s3://{STORE_BUCKET}/modelgate/modelgate--tiny-llama/")
    assert quantize["model_uri"].startswith(f"s3://{STORE_BUCKET}/modelgate/")
    assert "/fp8_dynamic-" in quantize["model_uri"]
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, **_keys(s3_server))
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=STORE_BUCKET)["Contents"]]
    folders = {k.rsplit("/", 1)[0] for k in keys if k.endswith("modelgate-store.json")}
    base, candidate = (
        u.split(f"{STORE_BUCKET}/", 1)[1] for u in (download["model_uri"], quantize["model_uri"])
    )
    assert {base, candidate} <= folders
    assert any(k.startswith(base + "/") and k.endswith(".safetensors") for k in keys)
    # the task folder travelled through the store, not as a path of this machine
    assert any("/inputs/tasks-" in f for f in folders)
    # the artifact store holds only small things
    for path in root.rglob("*"):
        if path.is_file():
            assert not path.name.endswith(".safetensors"), path
    deployment = json.loads(task_output(root, "deploy-model")["parameterValues"]["deployment"])
    assert deployment["details"]["storage_uri"] == quantize["model_uri"]


def _keys(server) -> dict[str, str]:
    return {
        "aws_access_key_id": server.env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": server.env["AWS_SECRET_ACCESS_KEY"],
        "region_name": server.env["AWS_DEFAULT_REGION"],
    }


def test_release_registers_lineage_and_gate_decision(passing_run, hub_mirror, registry):
    proc, root = passing_run
    assert proc.returncode == 0, proc.stdout
    record = json.loads(task_output(root, "register-candidate")["parameterValues"]["record"])
    assert record["status"] == "registered"
    assert record["model_name"] == "modelgate--tiny-llama"  # slash-free; the Hub id is lineage
    version = registry.find_model_version(record["model_name"], record["version_name"])
    props = registry.plain_properties(version)
    assert props["source_repo"] == hub_mirror.repo_id
    assert props["source_commit"] == hub_mirror.commit_sha
    assert props["quant_scheme"] == "FP8_DYNAMIC"
    assert props["modelgate.gate"] == "passed"
    assert props["modelgate.stage"] == "production"  # promoted after the smoke test
    assert props[f"eval.{DEMO_TASK}/acc"] > 0.3
    assert props[f"eval.{DEMO_TASK}.n"] == 100
    assert f"# {REGISTERED_NAME}" in props["modelgate.card"]
    assert f"registry: {REGISTERED_NAME}:{record['version_name']} is production" in " ".join(
        proc.stdout.split()
    )
    (artifact,) = registry.artifacts_of(version["id"])
    # the registered artifact is the stored candidate KServe can fetch
    assert artifact["uri"] == task_output(root, "quantize-model")["parameterValues"]["model_uri"]


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
    version = registry.find_model_version(record["model_name"], record["version_name"])
    props = registry.plain_properties(version)
    assert props["modelgate.gate"] == "failed" and props["modelgate.stage"] == "rejected"


def test_a_worse_release_fails_against_production_which_stays(passing_run, failing_run, registry):
    _, pass_root = passing_run
    proc, root = failing_run
    champion = json.loads(task_output(pass_root, "register-candidate")["parameterValues"]["record"])
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 1
    assert f"{DEMO_TASK}/acc vs production ({champion['version_name']})" in out
    assert f"Production version compared with: {champion['version_name']}" in out.replace("`", "")
    kept = registry.find_model_version(REGISTERED_NAME, champion["version_name"])
    assert registry.plain_properties(kept)["modelgate.stage"] == "production"
    challenger = json.loads(task_output(root, "register-candidate")["parameterValues"]["record"])
    assert challenger["model_name"] == REGISTERED_NAME


@pytest.fixture(scope="module")
def redeploy_run(
    passing_run, failing_run, addition_task_dir, registry, s3_server, tmp_path_factory
):
    """The redeploy pipeline on the registry's newest version that is not rejected: the
    passing run's (the failing run's was rejected). Its model is in S3."""
    root = tmp_path_factory.mktemp("redeploy")
    gate = {
        "name": "redeploy",
        "thresholds": [{"task": DEMO_TASK, "metric": "acc", "min": 0.3, "min_vs_production": 0.95}],
    }
    proc = run_cli(
        "run",
        "--local",
        "--pipeline",
        "redeploy",
        "--registered-model-name",
        REGISTERED_NAME,
        "--registry-url",
        registry.url,
        "--eval-tasks",
        DEMO_TASK,
        "--eval-task-dir",
        str(addition_task_dir),
        "--eval-batch-size",
        "16",
        "--thresholds",
        json.dumps(gate),
        *local_serving_args(root),
        env=s3_server.env,
    )
    return proc, root


def test_redeploy_reevaluates_gates_against_production_and_serves(
    passing_run, redeploy_run, registry
):
    _, pass_root = passing_run
    proc, root = redeploy_run
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    champion = json.loads(task_output(pass_root, "register-candidate")["parameterValues"]["record"])
    resolved = json.loads(task_output(root, "resolve-version")["parameterValues"]["record"])
    assert resolved["version_name"] == champion["version_name"]  # the rejected one is skipped
    flat = " ".join(out.split())
    for step in ("preflight", "resolve version", "evaluate candidate", "quality gate", "deploy"):
        assert f"│ {step} " in out, step
    assert "vs production" in flat and "Gate redeploy: PASSED" in flat
    assert "vLLM completion for '2+3=':" in flat and "release succeeded" in flat
    kept = registry.find_model_version(REGISTERED_NAME, champion["version_name"])
    assert registry.plain_properties(kept)["modelgate.stage"] == "production"
