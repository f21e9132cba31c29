"""Against a real Kubeflow Pipelines 2.x: set KFP_HOST (and KFP_TOKEN, KFP_NAMESPACE if needed).

``KFP_HOST`` is the API endpoint, e.g. ``http://localhost:8080`` after
``kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80``; ``KFP_TOKEN`` a bearer token
(or set ``KF_PIPELINES_SA_TOKEN_PATH``); ``KFP_NAMESPACE`` the profile namespace of a multi-user
install. The test uploads ``pipelines/release.yaml`` under a unique name, creates a *disabled*
recurring run of it (nothing is scheduled, no GPU work starts) and deletes both again.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from modelgate.pipelines import PIPELINES_DIR

from modelgate.kfp import (
    KFPNotFoundError,
    connect,
    delete,
    list_schedules,
    pause,
    schedule,
    upload,
)

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not os.environ.get("KFP_HOST"),
        reason="set KFP_HOST (and KFP_TOKEN or KF_PIPELINES_SA_TOKEN_PATH, KFP_NAMESPACE for "
        "multi-user installs) to run against a real Kubeflow Pipelines",
    ),
]

PACKAGE = PIPELINES_DIR / "release.yaml"
EXPERIMENT = "modelgate-live-test"
# required parameters only; the recurring run is created disabled and deleted, so never runs
ARGUMENTS = {"model_id": "modelgate/live-test", "model_store": "s3://modelgate-live-test/none"}


def _namespace() -> str | None:
    return os.environ.get("KFP_NAMESPACE") or None


@pytest.fixture
def client() -> Any:
    return connect(
        os.environ["KFP_HOST"], token=os.environ.get("KFP_TOKEN") or None, namespace=_namespace()
    )


@pytest.fixture
def pipeline_name(client: Any) -> Iterator[str]:
    """A unique pipeline name; the pipeline and its versions are deleted afterwards."""
    name = f"modelgate-live-{uuid.uuid4().hex[:10]}"
    yield name
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        return
    listing = client.list_pipeline_versions(pipeline_id, page_size=100)
    for version in listing.pipeline_versions or []:
        client.delete_pipeline_version(pipeline_id, version.pipeline_version_id)
    client.delete_pipeline(pipeline_id)


def test_connect_reaches_a_healthy_server(client: Any) -> None:
    health = client.get_kfp_healthz()
    assert health.multi_user in (True, False)
    if health.multi_user:
        assert _namespace(), "a multi-user install needs KFP_NAMESPACE"


def test_upload_and_a_disabled_schedule_round_trip(client: Any, pipeline_name: str) -> None:
    pipeline_id, first = upload(client, package_path=PACKAGE, pipeline_name=pipeline_name)
    same, second = upload(client, package_path=PACKAGE, pipeline_name=pipeline_name)
    assert same == pipeline_id and second != first

    recurring_id = schedule(
        client,
        cron="0 3 * * 1",
        package_path=PACKAGE,
        pipeline_name=pipeline_name,
        experiment=EXPERIMENT,
        job_name=pipeline_name,
        arguments=ARGUMENTS,
        namespace=_namespace(),
        enabled=False,
    )
    try:
        listed = {
            s.id: s for s in list_schedules(client, namespace=_namespace(), experiment=EXPERIMENT)
        }
        info = listed[recurring_id]
        assert (info.name, info.cron, info.status) == (pipeline_name, "0 0 3 * * 1", "disabled")
        assert info.pipeline_id == pipeline_id and info.max_concurrency == 1
        pause(client, recurring_id)  # pausing a paused schedule is fine
    finally:
        delete(client, recurring_id)

    with pytest.raises(KFPNotFoundError, match=recurring_id):
        pause(client, recurring_id)
