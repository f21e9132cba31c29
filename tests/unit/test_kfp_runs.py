"""Upload, experiments, submit and wait: the real ``kfp.Client`` against the in-process KFP
v2beta1 REST double."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests

from modelgate.errors import (
    ConfigError,
    KFPConflictError,
    KFPNotFoundError,
    RunTimeoutError,
    SubmitError,
)
from modelgate.kfp import StepState, ensure_experiment, upload, wait
from modelgate.kfp import runs as runs_module
from tests.doubles.kfp_api import FakeKFP, RunStep, fake_kfp  # noqa: F401 - fixture
from tests.unit.kfp_support import (  # noqa: F401 - fixtures
    ARGUMENTS,
    NODE_SELECTOR,
    PACKAGE,
    PIPELINE,
    TOLERATIONS,
    connected_client,
    isolated_kfp,
    submit_release,
)

pytestmark = pytest.mark.unit


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
    first = ensure_experiment(client, "modelgate", namespace=None)
    again = ensure_experiment(client, "modelgate", namespace=None)

    assert first == again
    assert len(fake_kfp.calls("create_experiment")) == 1
    assert fake_kfp.experiments[first]["display_name"] == "modelgate"


# --- submit -------------------------------------------------------------------------------------
def test_submit_runs_the_uploaded_version_with_typed_arguments(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
) -> None:
    run = submit_release(client)

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
        submit_release(client, {**ARGUMENTS, "accelerator_count": 2})

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
    monkeypatch.setattr(runs_module, "check_arguments", lambda *args, **kwargs: None)

    with pytest.raises(SubmitError) as info:
        submit_release(client, {**ARGUMENTS, "accelerator_count": 2})

    message = str(info.value)
    assert "rejected the request (400)" in message
    assert "input parameter accelerator_count requires type string" in message
    assert not fake_kfp.runs


def test_the_server_rejects_a_missing_required_parameter(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runs_module, "check_arguments", lambda *args, **kwargs: None)
    arguments = {k: v for k, v in ARGUMENTS.items() if k != "model_store"}

    with pytest.raises(SubmitError, match="parameter model_store is not optional"):
        submit_release(client, arguments)


# --- wait ---------------------------------------------------------------------------------------
def test_wait_streams_task_changes_and_returns_failed_tasks_with_messages(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
) -> None:
    run = submit_release(client)
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
    run = submit_release(client)
    fake_kfp.fail("get_run", status=503, message="upstream connect error")
    fake_kfp.script(run.run_id, [RunStep(tasks=[("download", "SUCCEEDED")], final="SUCCEEDED")])

    outcome = wait(client, run.run_id, timeout=10, poll=0.01)

    assert outcome.succeeded and outcome.failed_tasks == ()
    assert len(fake_kfp.calls("get_run")) == 2


def test_wait_times_out_naming_the_run_which_keeps_running(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
) -> None:
    run = submit_release(client)
    fake_kfp.advance(run.run_id, [("download", "RUNNING")])

    with pytest.raises(RunTimeoutError) as info:
        wait(client, run.run_id, timeout=0.2, poll=0.05)

    assert run.run_id in str(info.value) and "still RUNNING" in str(info.value)


def test_wait_for_an_unknown_run_is_a_clear_error(client: Any) -> None:
    with pytest.raises(KFPNotFoundError, match="there is no run 'no-such-run'"):
        wait(client, "no-such-run", timeout=5, poll=0.01)


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
