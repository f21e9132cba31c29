"""Live check against a cluster with KServe: server-side dry-run create of a modelgate ISVC.

Nothing is stored (``dryRun=All``): the API server runs defaulting, schema and KServe's
admission webhooks. Namespace: ``$MODELGATE_TEST_NAMESPACE`` (default ``default``).
"""

from __future__ import annotations

import os
import uuid

import pytest

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"), reason="set KUBECONFIG to a cluster with KServe to run"
    ),
]


@pytest.fixture(scope="module")
def target():
    from modelgate.deploy.kserve import KServeTarget

    return KServeTarget(timeout=60, poll_interval=2)


@pytest.fixture
def spec():
    from modelgate.deploy import DeploySpec
    from modelgate.placement import Placement

    return DeploySpec(
        name=f"modelgate-dryrun-{uuid.uuid4().hex[:8]}",
        namespace=os.environ.get("MODELGATE_TEST_NAMESPACE", "default"),
        storage_uri="s3://modelgate-dryrun/models/m",
        placement=Placement(accelerator_count=0),
        max_model_len=2048,
    )


def test_server_side_dry_run_create(target, spec):
    from modelgate.deploy.crd import validate_inference_service
    from modelgate.deploy.kserve import build_inference_service

    body = build_inference_service(spec)
    validate_inference_service(body)  # the offline check agrees first
    obj = target.server_dry_run(spec)
    assert obj["kind"] == "InferenceService"
    model = obj["spec"]["predictor"]["model"]
    assert model["storageUri"] == spec.storage_uri
    assert model["runtime"] == spec.runtime
    assert model["args"] == body["spec"]["predictor"]["model"]["args"]
    # the rollout stamp survives admission: KServe copies it onto the predictor's pods
    assert obj["spec"]["predictor"]["annotations"] == body["spec"]["predictor"]["annotations"]
    assert target._get(spec.name, spec.namespace) is None  # dry run: nothing stored
