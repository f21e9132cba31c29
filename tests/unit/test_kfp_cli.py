"""``modelgate submit`` and ``modelgate schedule`` flags, through typer's CliRunner on
``modelgate.cli.app`` against the KFP v2beta1 REST double (``tests/doubles/kfp_api.py``).

Preflight (the Hub and the model store) is replaced by a recorder: these tests are about what
reaches Kubeflow Pipelines. The end-to-end tier runs the same commands with real preflight.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from typer.testing import CliRunner

import modelgate.cli.kfp as cli_kfp
from modelgate.cli import app
from modelgate.errors import KFPAuthError
from modelgate.processes import free_port
from tests.doubles.kfp_api import FakeKFP, fake_kfp  # noqa: F401 - fixture
from tests.unit.kfp_support import isolated_kfp  # noqa: F401 - fixture

pytestmark = pytest.mark.unit
runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]

MODEL = ["--model-id", "Qwen/Qwen2.5-0.5B-Instruct", "--model-store", "s3://models/modelgate"]
TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
NODE_SELECTOR = {"nvidia.com/gpu.product": "NVIDIA-H200"}
PLACEMENT = [
    "--accelerator-count",
    "2",
    "--tolerations",
    json.dumps(TOLERATIONS),
    "--node-selector",
    json.dumps(NODE_SELECTOR),
    "--eval-limit",
    "50",
]
TOKEN = "s3cret-token"


@pytest.fixture(autouse=True)
def preflights(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record preflight instead of running it (it would ask the Hub and the model store)."""
    seen: list[Any] = []

    def record(release: Any, **_: Any) -> list[Any]:
        seen.append(release)
        return []

    monkeypatch.setattr(cli_kfp, "run_preflight", record)
    return seen


@pytest.fixture
def team_kfp() -> Any:
    """A multi-user double that wants ``Bearer TOKEN`` on every request."""
    fake = FakeKFP(token=TOKEN, multi_user=True).start()
    try:
        yield fake
    finally:
        fake.stop()


def _invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), env=env, input=input)


def _parameters(fake: FakeKFP) -> dict[str, Any]:
    (run,) = fake.runs.values()
    return dict(run["runtime_config"]["parameters"])


def _experiment_of_the_run(fake: FakeKFP) -> dict[str, Any]:
    (run,) = fake.runs.values()
    return fake.experiments[run["experiment_id"]]


# --- submit --dry-run ---------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Refuse and record every socket connection this process tries."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise ConnectionRefusedError(f"no network in this test ({address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.fixture
def staged(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record uploads of local inputs to the model store instead of making them."""
    import modelgate.storage

    calls: list[Any] = []
    monkeypatch.setattr(modelgate.storage, "stage_local_inputs", lambda p: calls.append(p) or {})
    return calls


def _dry_run(output: str, task_dir: Path) -> Any:
    return _invoke(
        "submit",
        "--dry-run",
        "-o",
        output,
        "--host",
        f"http://127.0.0.1:{free_port()}",
        "-n",
        "team-a",
        "--serving-namespace",
        "serving-ns",
        "--eval-task-dir",
        str(task_dir),
        *MODEL,
        *PLACEMENT,
    )


def test_dry_run_prints_each_argument_with_its_kfp_type_and_contacts_nothing(
    tmp_path: Path, no_network: list[Any], staged: list[Any], preflights: list[Any]
) -> None:
    result = _dry_run("json", tmp_path)

    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    arguments = plan["arguments"]
    assert arguments["accelerator_count"] == {"type": "STRING", "value": "2"}
    assert arguments["tolerations"] == {"type": "LIST", "value": TOLERATIONS}
    assert arguments["node_selector"] == {"type": "STRUCT", "value": NODE_SELECTOR}
    assert arguments["eval_limit"] == {"type": "NUMBER_INTEGER", "value": 50}
    assert arguments["model_id"] == {"type": "STRING", "value": "Qwen/Qwen2.5-0.5B-Instruct"}
    # -n is the KFP namespace of the run; --serving-namespace the pipeline's parameter
    assert plan["namespace"] == "team-a"
    assert arguments["namespace"] == {"type": "STRING", "value": "serving-ns"}
    assert plan["pipeline_name"] == "modelgate-release"
    # no request, no preflight, and the local task folder was not uploaded to the store
    assert no_network == [] and preflights == [] and staged == []
    assert arguments["eval_task_dir"] == {"type": "STRING", "value": str(tmp_path)}
    # the guard would have seen a request
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{free_port()}/apis/v2beta1/healthz", timeout=1)
    assert len(no_network) == 1


def test_dry_run_as_yaml_is_the_same_plan(
    tmp_path: Path, no_network: list[Any], staged: list[Any]
) -> None:
    as_json = _dry_run("json", tmp_path)
    as_yaml = _dry_run("yaml", tmp_path)

    assert as_yaml.exit_code == 0, as_yaml.output
    plan = yaml.safe_load(as_yaml.stdout)
    assert plan == json.loads(as_json.stdout)
    assert plan["arguments"]["tolerations"]["type"] == "LIST"
    assert no_network == []


def test_dry_run_json_is_all_a_real_process_prints_on_stdout(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KF_PIPELINES") and k != "KUBERNETES_SERVICE_HOST"
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]), NO_COLOR="1", COLUMNS="200"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "modelgate.cli", "submit", "--dry-run", "-o", "json"]
        + ["--host", f"http://127.0.0.1:{free_port()}", *MODEL, *PLACEMENT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["arguments"]["eval_limit"] == {"type": "NUMBER_INTEGER", "value": 50}
    assert plan["namespace"] is None


# --- submit: namespace, endpoint, token, output --------------------------------------------------
def test_namespace_is_kfps_and_serving_namespace_is_the_pipeline_parameter(
    team_kfp: FakeKFP, preflights: list[Any]
) -> None:
    result = _invoke(
        "submit",
        "--endpoint",
        team_kfp.url,
        "-n",
        "team-a",
        "--serving-namespace",
        "serving-ns",
        *MODEL,
        env={"KF_PIPELINES_TOKEN": TOKEN},
    )

    assert result.exit_code == 0, result.output
    assert len(preflights) == 1
    # the run went to an experiment of the profile namespace
    assert _experiment_of_the_run(team_kfp)["namespace"] == "team-a"
    (created,) = team_kfp.calls("create_experiment")
    assert created.body["namespace"] == "team-a"
    assert _parameters(team_kfp)["namespace"] == "serving-ns"


def test_kfp_namespace_is_still_an_alias_and_leaves_the_serving_namespace_alone(
    team_kfp: FakeKFP,
) -> None:
    result = _invoke(
        "submit",
        "--host",
        team_kfp.url,
        "--kfp-namespace",
        "team-b",
        *MODEL,
        env={"KF_PIPELINES_TOKEN": TOKEN},
    )

    assert result.exit_code == 0, result.output
    assert _experiment_of_the_run(team_kfp)["namespace"] == "team-b"
    assert _parameters(team_kfp)["namespace"] == ""  # the default: the run's own namespace


def test_the_token_comes_from_kf_pipelines_token(team_kfp: FakeKFP) -> None:
    args = ("submit", "--endpoint", team_kfp.url, "-n", "team-a", *MODEL)

    refused = _invoke(*args)
    assert refused.exit_code != 0
    assert isinstance(refused.exception, KFPAuthError)
    assert "token is missing" in str(refused.exception)
    assert not team_kfp.runs

    result = _invoke(*args, env={"KF_PIPELINES_TOKEN": TOKEN})

    assert result.exit_code == 0, result.output
    assert len(team_kfp.runs) == 1
    after_refusal = team_kfp.requests[1:]  # the first was the refused health probe
    assert after_refusal and {r.authorization for r in after_refusal} == {f"Bearer {TOKEN}"}


def test_quiet_prints_only_the_run_id(fake_kfp: FakeKFP) -> None:  # noqa: F811
    result = _invoke("submit", "--host", fake_kfp.url, "--quiet", *MODEL)

    assert result.exit_code == 0, result.output
    (run_id,) = fake_kfp.runs
    assert result.stdout.splitlines() == [run_id]


def test_output_json_has_the_run_id(fake_kfp: FakeKFP) -> None:  # noqa: F811
    result = _invoke("submit", "--host", fake_kfp.url, "-o", "json", *MODEL)

    assert result.exit_code == 0, result.output
    submitted = json.loads(result.stdout)
    (run_id,) = fake_kfp.runs
    assert submitted["run_id"] == run_id
    assert submitted["url"] == f"{fake_kfp.url}/#/runs/details/{run_id}"
    assert submitted["experiment_id"] == fake_kfp.runs[run_id]["experiment_id"]


# --- schedule -----------------------------------------------------------------------------------
def _schedule(fake: FakeKFP, *flags: str) -> Any:
    return _invoke(
        "schedule", "--cron", "0 3 * * 1", "--host", fake.url, "--name", "weekly", *flags, *MODEL
    )


def test_schedule_paused_with_concurrency_and_no_catchup(
    fake_kfp: FakeKFP,  # noqa: F811
    preflights: list[Any],
) -> None:
    result = _schedule(fake_kfp, "--paused", "--max-concurrency", "3", "--no-catchup", "-o", "json")

    assert result.exit_code == 0, result.output
    assert len(preflights) == 1
    (sent,) = fake_kfp.calls("create_recurring_run")
    assert sent.body["mode"] == "DISABLE"
    assert sent.body["max_concurrency"] == 3
    assert sent.body["no_catchup"] is True
    (stored,) = fake_kfp.recurring_runs.values()
    assert stored["status"] == "DISABLED"
    assert stored["max_concurrency"] == "3"  # int64 travels as a string
    assert stored["no_catchup"] is True
    printed = json.loads(result.stdout)
    assert printed == {
        "id": stored["recurring_run_id"],
        "name": "weekly",
        "cron": "0 0 3 * * 1",
        "paused": True,
    }


def test_schedule_catchup_starts_missed_runs_on_resume(fake_kfp: FakeKFP) -> None:  # noqa: F811
    result = _schedule(fake_kfp, "--catchup")

    assert result.exit_code == 0, result.output
    (sent,) = fake_kfp.calls("create_recurring_run")
    assert sent.body["no_catchup"] is False
    assert sent.body["mode"] == "ENABLE" and sent.body["max_concurrency"] == 1
    (stored,) = fake_kfp.recurring_runs.values()
    assert stored["status"] == "ENABLED"
    assert "no_catchup" not in stored  # false is left out on the wire


def test_schedule_get_list_and_delete_that_asks_first(fake_kfp: FakeKFP) -> None:  # noqa: F811
    created = _schedule(fake_kfp, "--quiet")
    assert created.exit_code == 0, created.output
    (rid,) = fake_kfp.recurring_runs
    assert created.stdout.splitlines() == [rid]
    host = ("--host", fake_kfp.url)

    got = _invoke("schedule", "get", rid, *host, "-o", "json")
    assert got.exit_code == 0, got.output
    info = json.loads(got.stdout)
    assert (info["id"], info["name"], info["cron"]) == (rid, "weekly", "0 0 3 * * 1")
    assert (info["status"], info["max_concurrency"]) == ("enabled", 1)

    listed = _invoke("schedule", "list", *host, "-o", "json")
    assert listed.exit_code == 0, listed.output
    assert [s["id"] for s in json.loads(listed.stdout)] == [rid]

    declined = _invoke("schedule", "delete", rid, *host, input="n\n")
    assert declined.exit_code == 1
    assert "not deleted" in declined.output
    assert rid in fake_kfp.recurring_runs
    assert not fake_kfp.calls("delete_recurring_run")

    deleted = _invoke("schedule", "delete", rid, "--yes", *host)
    assert deleted.exit_code == 0, deleted.output
    assert rid not in fake_kfp.recurring_runs
    assert json.loads(_invoke("schedule", "list", *host, "-o", "json").stdout) == []
