"""``modelgate submit`` and ``modelgate schedule`` the way a user runs them, against a double of
the KFP v2beta1 REST API (``tests/doubles/kfp_api.py``): preflight against the Hub mirror, local
inputs uploaded to the S3 model store (moto), the pipeline uploaded, a run started and followed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelgate.cli import app
from modelgate.demo import DEMO_TASK, demo_thresholds
from modelgate.kfp import connection as kfp_connection
from tests.doubles.kfp_api import FakeKFP, fake_kfp  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e
runner = CliRunner()
BUCKET = "submitted-models"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path, s3_env):
    from kfp.client.client import Client

    for name in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_SA_TOKEN_PATH", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    monkeypatch.setattr(kfp_connection, "DEFAULT_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    s3_env.make_bucket(BUCKET)


@pytest.fixture()
def params_file(hub_mirror, addition_task_dir, tmp_path) -> Path:
    path = tmp_path / "release.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model_id": hub_mirror.repo_id,
                "hf_endpoint": hub_mirror.endpoint,
                "model_store": f"s3://{BUCKET}/modelgate",
                "eval_tasks": DEMO_TASK,
                "eval_task_dir": str(addition_task_dir),
                "thresholds": yaml.safe_load(demo_thresholds()),
                "accelerator_count": 2,
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
                "node_selector": {"pool": "h100"},
            }
        )
    )
    return path


def _play(fake: FakeKFP, tasks, final: str) -> threading.Thread:
    """Once the run exists, move its tasks and finish it (the way KFP's backend would)."""

    def play() -> None:
        deadline = time.monotonic() + 30
        while not fake.runs and time.monotonic() < deadline:
            time.sleep(0.05)
        (run_id,) = fake.runs
        for change in tasks:
            fake.advance(run_id, [change])
            time.sleep(0.05)
        fake.advance(run_id, final=final)

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    return thread


def test_submit_uploads_starts_and_follows_a_run(fake_kfp, params_file):  # noqa: F811
    player = _play(
        fake_kfp,
        [("preflight", "SUCCEEDED"), ("download", "RUNNING"), ("download", "SUCCEEDED")],
        "SUCCEEDED",
    )
    result = runner.invoke(
        app,
        [
            "submit",
            "--params",
            str(params_file),
            "--host",
            fake_kfp.url,
            "--wait",
            "--eval-limit",
            "50",
            "--experiment",
            "nightly",
        ],
    )
    player.join(timeout=30)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "preflight: 11 checks" in out and "run succeeded" in out
    assert "ok hardware: FP8_DYNAMIC on LlamaForCausalLM" in out and "ok memory: " in out
    assert "SUCCEEDED download" in out
    (run,) = fake_kfp.runs.values()
    args = run["runtime_config"]["parameters"]
    assert args["accelerator_count"] == "2" and args["eval_limit"] == 50  # flag over file
    assert args["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert args["node_selector"] == {"pool": "h100"}
    # the task folder went to the model store, not as a path of this machine
    assert args["eval_task_dir"].startswith(f"s3://{BUCKET}/modelgate/inputs/tasks-")
    assert fake_kfp.pipeline_named("modelgate-release") is not None
    # a second submit is a new version of the same pipeline
    again = runner.invoke(app, ["submit", "--params", str(params_file), "--host", fake_kfp.url])
    assert again.exit_code == 0, again.output
    pipeline = fake_kfp.pipeline_named("modelgate-release")
    assert len(fake_kfp.versions_of(pipeline["pipeline_id"])) == 2


def test_a_failed_run_prints_each_failed_step_and_exits_1(fake_kfp, params_file):  # noqa: F811
    player = _play(
        fake_kfp,
        [("preflight", "SUCCEEDED"), ("download", "FAILED", "DownloadError: repository gone")],
        "FAILED",
    )
    result = runner.invoke(
        app, ["submit", "--params", str(params_file), "--host", fake_kfp.url, "--wait"]
    )
    player.join(timeout=30)
    assert result.exit_code == 1, result.output
    assert "download failed: DownloadError: repository gone" in " ".join(result.output.split())


def test_schedule_create_list_pause_resume_delete(fake_kfp, params_file):  # noqa: F811
    created = runner.invoke(
        app,
        [
            "schedule",
            "--cron",
            "0 3 * * 1",
            "--params",
            str(params_file),
            "--host",
            fake_kfp.url,
            "--name",
            "weekly-release",
        ],
    )
    assert created.exit_code == 0, created.output
    (recurring,) = fake_kfp.recurring_runs.values()
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    rid = recurring["recurring_run_id"]
    listed = runner.invoke(app, ["schedule", "list", "--host", fake_kfp.url])
    assert listed.exit_code == 0 and "weekly-release" in listed.output
    for action, status in (("pause", "DISABLED"), ("resume", "ENABLED")):
        done = runner.invoke(app, ["schedule", action, rid, "--host", fake_kfp.url])
        assert done.exit_code == 0, done.output
        assert fake_kfp.recurring_runs[rid]["status"] == status
    deleted = runner.invoke(app, ["schedule", "delete", rid, "--host", fake_kfp.url], input="y\n")
    assert deleted.exit_code == 0, deleted.output  # delete asks first
    assert rid not in fake_kfp.recurring_runs
    missing = runner.invoke(app, ["schedule", "pause", rid, "--host", fake_kfp.url])
    assert missing.exit_code != 0 and rid in str(missing.exception)
