"""Recurring runs: schedule, list, pause, resume, delete against the KFP v2beta1 REST double."""

from __future__ import annotations

from typing import Any

import pytest

from modelgate.errors import ConfigError, KFPNotFoundError
from modelgate.kfp import delete, list_schedules, pause, resume
from tests.doubles.kfp_api import FakeKFP, fake_kfp  # noqa: F401 - fixture
from tests.unit.kfp_support import (  # noqa: F401 - fixtures
    PIPELINE,
    TOLERATIONS,
    connected_client,
    isolated_kfp,
    schedule_release,
)

pytestmark = pytest.mark.unit


# --- schedules ----------------------------------------------------------------------------------
def test_schedule_creates_an_enabled_recurring_run_of_the_uploaded_version_in_kfp_cron(
    fake_kfp: FakeKFP,  # noqa: F811
    client: Any,
) -> None:
    recurring_id = schedule_release(client, cron="0 3 * * 1")

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
        schedule_release(client, max_concurrency=11)
    assert len(fake_kfp.requests) == before


def test_list_pause_resume_and_delete_schedules(fake_kfp: FakeKFP, client: Any) -> None:  # noqa: F811
    weekly = schedule_release(client, cron="0 3 * * 1")
    paused = schedule_release(
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
