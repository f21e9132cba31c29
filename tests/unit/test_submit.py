"""Submit and schedule: the real ``kfp.Client`` against the in-process KFP v2beta1 REST double."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from modelgate.pipelines import PIPELINES_DIR

from modelgate.errors import ConfigError
from modelgate.kfp import client as submit_module
from modelgate.kfp.client import (
    KFPAuthError,
    KFPConflictError,
    KFPConnectionError,
    KFPNotFoundError,
    RunTimeoutError,
    StepState,
    SubmitError,
    check_arguments,
    connect,
    delete,
    ensure_experiment,
    list_schedules,
    pause,
    resume,
    schedule,
    submit,
    upload,
    validate_cron,
    wait,
)
from modelgate.processes import free_port
from tests.doubles.kfp_api import FakeKFP, RunStep, fake_kfp  # noqa: F401

pytestmark = pytest.mark.unit

PACKAGE = PIPELINES_DIR / "release.yaml"
PIPELINE = "modelgate-release"
TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
NODE_SELECTOR = {"nvidia.com/gpu.product": "NVIDIA-H200"}
ARGUMENTS: dict[str, Any] = {
    "model_id": "Qwen/Qwen2.5-0.5B-Instruct",
    "model_store": "s3://models/modelgate",
    "tolerations": TOLERATIONS,
    "node_selector": NODE_SELECTOR,
    "accelerator_count": "2",
}


@pytest.fixture(autouse=True)
def _isolated_kfp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No endpoint, token or kfp context from the machine running the tests."""
    from kfp.client.client import Client

    for name in (
        "KF_PIPELINES_ENDPOINT",
        "KF_PIPELINES_UI_ENDPOINT",
        "KF_PIPELINES_SA_TOKEN_PATH",
        "KUBERNETES_SERVICE_HOST",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    monkeypatch.setattr(submit_module, "DEFAULT_SA_TOKEN_PATH", str(tmp_path / "no-token"))


@pytest.fixture
def client(fake_kfp: FakeKFP) -> Any:  # noqa: F811
    return connect(fake_kfp.url)


def _submit(client: Any, arguments: dict[str, Any] | None = None) -> submit_module.SubmittedRun:
    return submit(
        client,
        package_path=PACKAGE,
        pipeline_name=PIPELINE,
        experiment="modelgate-test",
        run_name="release qwen",
        arguments=ARGUMENTS if arguments is None else arguments,
    )


def _schedule(client: Any, *, cron: str = "0 3 * * 1", **overrides: Any) -> str:
    fields: dict[str, Any] = {
        "cron": cron,
        "package_path": PACKAGE,
        "pipeline_name": PIPELINE,
        "experiment": "modelgate-nightly",
        "job_name": "weekly release",
        "arguments": ARGUMENTS,
    }
    fields.update(overrides)
    return schedule(client, **fields)


# --- cron ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "kfp_form"),
    [
        ("0 3 * * 1", "0 0 3 * * 1"),
        ("0 0 3 * * 1", "0 0 3 * * 1"),
        ("*/15  *  * * *", "0 */15 * * * *"),
        ("30 2 ? * MON-FRI", "0 30 2 ? * MON-FRI"),
        ("0 0 1-15/2 jan,JUL *", "0 0 0 1-15/2 jan,JUL *"),
        ("@daily", "0 0 0 * * *"),
    ],
)
def test_cron_becomes_kfps_six_field_form_with_seconds_first(given: str, kfp_form: str) -> None:
    assert validate_cron(given) == kfp_form


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("61 * * * *", "minute field '61': 61 is out of range 0-59"),
        ("* * *", "3 field(s)"),
        ("0 3 * * 8", "day-of-week field '8': 8 is out of range 0-6"),
        ("every monday", "2 field(s)"),
        ("0 25 * * *", "hour field '25'"),
        ("0 3 0 * *", "day-of-month field '0'"),
        ("0 3 * 13 *", "month field '13'"),
        ("*/0 * * * *", "step '0'"),
        ("0 3 5-1 * *", "runs backwards"),
        ("? 3 * * *", "'?' is only allowed in day-of-month and day-of-week"),
    ],
)
def test_bad_cron_is_rejected_naming_the_field_before_any_request(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
    bad: str,
    named: str,
) -> None:
    before = len(fake_kfp.requests)

    with pytest.raises(ConfigError) as info:
        _schedule(client, cron=bad)

    message = str(info.value)
    assert named in message
    assert "'0 3 * * 1'" in message  # an example of the right form
    assert len(fake_kfp.requests) == before  # nothing reached the server


# --- connect ------------------------------------------------------------------------------------
def test_unreachable_host_fails_fast_naming_the_host_and_the_fix() -> None:
    host = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()

    with pytest.raises(KFPConnectionError) as info:
        connect(host, timeout=5.0)

    assert time.monotonic() - started < 5.0
    message = str(info.value)
    assert host in message and "connection refused" in message
    assert "kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80" in message
    assert "KF_PIPELINES_ENDPOINT" in message


def test_a_host_that_never_answers_fails_within_the_timeout() -> None:
    with socket.socket() as listener:  # accepts connections (the backlog), never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        host = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()

        with pytest.raises(KFPConnectionError, match="no answer within 0.5s"):
            connect(host, timeout=0.5)

        assert time.monotonic() - started < 3.0


def test_no_endpoint_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="KF_PIPELINES_ENDPOINT"):
        connect()


def test_endpoint_comes_from_kfps_own_variable(
    fake_kfp: FakeKFP,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", fake_kfp.url)

    client = connect()

    assert client.get_pipeline_id(PIPELINE) is None
    assert fake_kfp.calls("get_healthz")


def test_a_url_that_is_not_the_pipelines_api_is_named(fake_kfp: FakeKFP) -> None:  # noqa: F811
    with pytest.raises(SubmitError, match="not a Kubeflow Pipelines 2.x API endpoint"):
        connect(fake_kfp.url + "/pipeline")


def test_missing_token_against_a_token_enforcing_server_names_the_fix() -> None:
    fake = FakeKFP(token="s3cret").start()
    try:
        with pytest.raises(KFPAuthError) as info:
            connect(fake.url)
        message = str(info.value)
        assert "token is missing" in message
        assert "--token" in message and "KF_PIPELINES_SA_TOKEN_PATH" in message

        with pytest.raises(KFPAuthError, match="token was refused"):
            connect(fake.url, token="wrong")

        client = connect(fake.url, token="s3cret")
        upload(client, package_path=PACKAGE, pipeline_name=PIPELINE)
        assert fake.calls("upload_pipeline")[0].authorization == "Bearer s3cret"
    finally:
        fake.stop()


def test_token_file_named_by_kf_pipelines_sa_token_path_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))
    fake = FakeKFP(token="from-the-file").start()
    try:
        client = connect(fake.url)
        pipeline_id, _ = upload(client, package_path=PACKAGE, pipeline_name=PIPELINE)
        assert pipeline_id in fake.pipelines
    finally:
        fake.stop()


def test_a_missing_token_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", "/nonexistent/token")
    with pytest.raises(ConfigError, match="KF_PIPELINES_SA_TOKEN_PATH=/nonexistent/token"):
        connect("http://127.0.0.1:1")


# --- upload -------------------------------------------------------------------------------------
def test_upload_then_upload_again_adds_a_version_to_the_same_pipeline(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
) -> None:
    pipeline_id, first = upload(client, package_path=PACKAGE, pipeline_name=PIPELINE)
    same_pipeline, second = upload(client, package_path=PACKAGE, pipeline_name=PIPELINE)

    assert same_pipeline == pipeline_id
    assert second != first
    assert len(fake_kfp.pipelines) == 1
    # looked up by display name first: the second upload only adds a version
    assert len(fake_kfp.calls("upload_pipeline")) == 1
    assert len(fake_kfp.calls("upload_pipeline_version")) == 1
    assert [v["pipeline_version_id"] for v in fake_kfp.versions_of(pipeline_id)] == [first, second]
    digest = hashlib.sha256(PACKAGE.read_bytes()).hexdigest()[:8]
    name = fake_kfp.versions[second]["display_name"]
    assert re.fullmatch(rf"{PIPELINE}-\d{{8}}-\d{{6}}-\d{{3}}-{digest}", name), name
    # the uploaded spec is the package's, so runs of that version get its parameters
    spec = fake_kfp.versions[second]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "modelgate-release"


def test_a_pipeline_created_between_look_up_and_upload_gets_a_new_version(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipeline_id, first = upload(client, package_path=PACKAGE, pipeline_name=PIPELINE)
    look_ups: list[str] = []
    real_look_up = client.get_pipeline_id

    def stale_once(name: str) -> str | None:  # another upload won the race
        look_ups.append(name)
        return None if len(look_ups) == 1 else real_look_up(name)

    monkeypatch.setattr(client, "get_pipeline_id", stale_once)

    same_pipeline, second = upload(client, package_path=PACKAGE, pipeline_name=PIPELINE)

    assert (same_pipeline, len(look_ups)) == (pipeline_id, 2)
    assert [v["pipeline_version_id"] for v in fake_kfp.versions_of(pipeline_id)] == [first, second]


def test_an_explicit_version_name_is_kept_and_a_clash_is_a_conflict(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
) -> None:
    upload(client, package_path=PACKAGE, pipeline_name=PIPELINE)
    pipeline_id, version_id = upload(
        client, package_path=PACKAGE, pipeline_name=PIPELINE, version_name="v1.2.0"
    )

    assert fake_kfp.versions[version_id]["name"] == "v1.2.0"
    with pytest.raises(KFPConflictError, match="already exists"):
        upload(client, package_path=PACKAGE, pipeline_name=PIPELINE, version_name="v1.2.0")
    assert len(fake_kfp.versions_of(pipeline_id)) == 2


def test_a_missing_package_is_a_config_error_before_any_request(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
    tmp_path: Path,
) -> None:
    before = len(fake_kfp.requests)
    with pytest.raises(ConfigError, match="modelgate compile"):
        upload(client, package_path=tmp_path / "release.yaml", pipeline_name=PIPELINE)
    assert len(fake_kfp.requests) == before


def test_ensure_experiment_gets_or_creates(fake_kfp: FakeKFP, client: Any) -> None:  # noqa: F811
    first = ensure_experiment(client, "modelgate", None)
    again = ensure_experiment(client, "modelgate", None)

    assert first == again
    assert len(fake_kfp.calls("create_experiment")) == 1
    assert fake_kfp.experiments[first]["display_name"] == "modelgate"


# --- submit -------------------------------------------------------------------------------------
def test_submit_runs_the_uploaded_version_with_typed_arguments(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
) -> None:
    run = _submit(client)

    body = fake_kfp.calls("create_run")[0].body
    parameters = body["runtime_config"]["parameters"]
    assert parameters["tolerations"] == TOLERATIONS  # a JSON list, not its text
    assert parameters["node_selector"] == NODE_SELECTOR  # a JSON object
    assert parameters["accelerator_count"] == "2"  # a STRING parameter stays a string
    assert body["pipeline_version_reference"] == {
        "pipeline_id": run.pipeline_id,
        "pipeline_version_id": run.version_id,
    }
    assert body["display_name"] == "release qwen"
    assert body["experiment_id"] == run.experiment_id
    stored = fake_kfp.runs[run.run_id]
    assert stored["state"] == "PENDING"
    assert stored["pipeline_version_reference"]["pipeline_version_id"] == run.version_id
    assert run.url == f"{fake_kfp.url}/#/runs/details/{run.run_id}"


def test_an_int_for_a_string_parameter_is_rejected_before_anything_is_uploaded(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
) -> None:
    before = len(fake_kfp.requests)

    with pytest.raises(ConfigError) as info:
        _submit(client, {**ARGUMENTS, "accelerator_count": 2})

    message = str(info.value)
    assert "'accelerator_count' is a STRING parameter" in message
    assert 'pass "2"' in message
    assert len(fake_kfp.requests) == before


def test_the_server_rejects_an_int_for_a_string_parameter_like_kfp(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # without the local check the API server's validatePipelineJobInputs answers 400
    monkeypatch.setattr(submit_module, "check_arguments", lambda *args, **kwargs: None)

    with pytest.raises(SubmitError) as info:
        _submit(client, {**ARGUMENTS, "accelerator_count": 2})

    message = str(info.value)
    assert "rejected the request (400)" in message
    assert "input parameter accelerator_count requires type string" in message
    assert not fake_kfp.runs


def test_the_server_rejects_a_missing_required_parameter(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(submit_module, "check_arguments", lambda *args, **kwargs: None)
    arguments = {k: v for k, v in ARGUMENTS.items() if k != "model_store"}

    with pytest.raises(SubmitError, match="parameter model_store is not optional"):
        _submit(client, arguments)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"model_id": "x"}, "'model_store' is required"),
        ({**ARGUMENTS, "tolerations": json.dumps(TOLERATIONS)}, "'tolerations' is a LIST"),
        ({**ARGUMENTS, "node_selector": [["a", "b"]]}, "'node_selector' is a STRUCT"),
        ({**ARGUMENTS, "eval_limit": "10"}, "'eval_limit' is a NUMBER_INTEGER"),
        ({**ARGUMENTS, "eval_offline": 1}, "'eval_offline' is a BOOLEAN"),
        ({**ARGUMENTS, "modle_id": "x"}, "did you mean 'model_id'?"),
    ],
)
def test_check_arguments_names_each_wrong_argument(arguments: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        check_arguments(PACKAGE, arguments)


# --- wait ---------------------------------------------------------------------------------------
def test_wait_streams_task_changes_and_returns_failed_tasks_with_messages(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
) -> None:
    run = _submit(client)
    fake_kfp.script(
        run.run_id,
        [
            RunStep(tasks=[("download", "RUNNING")]),
            RunStep(tasks=[("download", "SUCCEEDED"), ("quantize", "RUNNING")]),
            RunStep(),  # nothing changed: nothing reported
            RunStep(
                tasks=[("quantize", "FAILED", "CUDA out of memory")],
                final="FAILED",
                error="task quantize failed",
            ),
        ],
    )
    changes: list[StepState] = []

    outcome = wait(client, run.run_id, timeout=10, poll=0.01, on_change=changes.append)

    assert [(c.name, c.previous, c.state) for c in changes] == [
        ("download", None, "RUNNING"),
        ("download", "RUNNING", "SUCCEEDED"),
        ("quantize", None, "RUNNING"),
        ("quantize", "RUNNING", "FAILED"),
    ]
    assert changes[-1].error == "CUDA out of memory"
    assert outcome.state == "FAILED" and not outcome.succeeded
    assert [(t.name, t.message) for t in outcome.failed_tasks] == [
        ("quantize", "CUDA out of memory")
    ]
    assert outcome.error == "task quantize failed"
    assert len(fake_kfp.calls("get_run")) == 4


def test_wait_returns_success_and_rides_out_a_transient_server_error(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
) -> None:
    run = _submit(client)
    fake_kfp.fail("get_run", status=503, message="upstream connect error")
    fake_kfp.script(run.run_id, [RunStep(tasks=[("download", "SUCCEEDED")], final="SUCCEEDED")])

    outcome = wait(client, run.run_id, timeout=10, poll=0.01)

    assert outcome.succeeded and outcome.failed_tasks == ()
    assert len(fake_kfp.calls("get_run")) == 2


def test_wait_times_out_naming_the_run_which_keeps_running(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
) -> None:
    run = _submit(client)
    fake_kfp.advance(run.run_id, [("download", "RUNNING")])

    with pytest.raises(RunTimeoutError) as info:
        wait(client, run.run_id, timeout=0.2, poll=0.05)

    assert run.run_id in str(info.value) and "still RUNNING" in str(info.value)


def test_wait_for_an_unknown_run_is_a_clear_error(client: Any) -> None:
    with pytest.raises(KFPNotFoundError, match="there is no run 'no-such-run'"):
        wait(client, "no-such-run", timeout=5, poll=0.01)


# --- schedules ----------------------------------------------------------------------------------
def test_schedule_creates_an_enabled_recurring_run_of_the_uploaded_version_in_kfp_cron(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
) -> None:
    recurring_id = _schedule(client, cron="0 3 * * 1")

    body = fake_kfp.calls("create_recurring_run")[0].body
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}
    assert body["mode"] == "ENABLE"
    assert body["no_catchup"] is True
    assert body["max_concurrency"] == 1
    assert body["runtime_config"]["parameters"]["tolerations"] == TOLERATIONS
    pipeline = fake_kfp.pipeline_named(PIPELINE)
    assert pipeline is not None
    newest = fake_kfp.versions_of(pipeline["pipeline_id"])[-1]
    assert body["pipeline_version_reference"] == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_version_id": newest["pipeline_version_id"],
    }
    stored = fake_kfp.recurring_runs[recurring_id]
    assert stored["status"] == "ENABLED"
    assert stored["max_concurrency"] == "1"  # int64 travels as a string


def test_schedule_rejects_out_of_range_concurrency_before_any_request(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
) -> None:
    before = len(fake_kfp.requests)
    with pytest.raises(ConfigError, match="1-10"):
        _schedule(client, max_concurrency=11)
    assert len(fake_kfp.requests) == before


def test_list_pause_resume_and_delete_schedules(fake_kfp: FakeKFP, client: Any) -> None:  # noqa: F811
    weekly = _schedule(client, cron="0 3 * * 1")
    paused = _schedule(
        client, cron="0 30 2 * * *", job_name="daily", experiment="other", enabled=False
    )

    listed = {s.id: s for s in list_schedules(client)}
    assert set(listed) == {weekly, paused}
    assert (listed[weekly].name, listed[weekly].cron, listed[weekly].status) == (
        "weekly release",
        "0 0 3 * * 1",
        "enabled",
    )
    assert listed[paused].status == "disabled"
    assert (
        listed[weekly].pipeline_version_id
        == (fake_kfp.recurring_runs[weekly]["pipeline_version_reference"]["pipeline_version_id"])
    )
    assert [s.id for s in list_schedules(client, experiment="other")] == [paused]

    pause(client, weekly)
    assert fake_kfp.recurring_runs[weekly]["status"] == "DISABLED"
    resume(client, paused)
    statuses = {s.id: s.status for s in list_schedules(client)}
    assert statuses == {weekly: "disabled", paused: "enabled"}

    delete(client, weekly)
    assert [s.id for s in list_schedules(client)] == [paused]


@pytest.mark.parametrize("action", [pause, resume, delete])
def test_an_unknown_recurring_run_id_is_a_clear_error(client: Any, action: Any) -> None:
    with pytest.raises(KFPNotFoundError) as info:
        action(client, "rr-does-not-exist")
    message = str(info.value)
    assert "'rr-does-not-exist'" in message and "modelgate schedule list" in message


def test_listing_the_schedules_of_an_unknown_experiment_is_a_clear_error(client: Any) -> None:
    with pytest.raises(KFPNotFoundError, match="experiment 'nope'"):
        list_schedules(client, experiment="nope")


# --- the double itself --------------------------------------------------------------------------
def test_the_double_rejects_unknown_fields_and_decodes_kfps_numeric_filter(
    fake_kfp: FakeKFP,  # noqa: F811
) -> None:
    answer = requests.post(
        f"{fake_kfp.url}/apis/v2beta1/runs",
        json={"display_name": "x", "bogus": 1},
        timeout=5,
    )
    assert answer.status_code == 400
    assert 'unknown field "bogus"' in answer.json()["message"]

    answer = requests.get(f"{fake_kfp.url}/apis/v2beta1/pipelines", timeout=5)
    assert answer.status_code == 200 and answer.json() == {}  # empty fields are left out

    bad_filter = json.dumps({"predicates": [{"operation": 1, "key": "owner", "stringValue": "x"}]})
    answer = requests.get(
        f"{fake_kfp.url}/apis/v2beta1/pipelines", params={"filter": bad_filter}, timeout=5
    )
    assert answer.status_code == 400 and "Invalid filter key" in answer.json()["message"]
