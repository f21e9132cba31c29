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
    from modelgate.kserve import KServeTarget

    return KServeTarget(timeout=60, poll_interval=2)


@pytest.fixture
def spec():
    from modelgate.deploy import DeploySpec

    return DeploySpec(
        name=f"modelgate-dryrun-{uuid.uuid4().hex[:8]}",
        namespace=os.environ.get("MODELGATE_TEST_NAMESPACE", "default"),
        storage_uri="model-registry://modelgate-dryrun/v1",
        accelerator_count=0,
        max_model_len=2048,
    )


def test_server_side_dry_run_create(target, spec):
    from modelgate import kserve

    body = kserve.build_inference_service(spec)
    kserve.validate_inference_service(body)  # the offline check agrees first
    obj = target.server_dry_run(spec)
    assert obj["kind"] == "InferenceService"
    model = obj["spec"]["predictor"]["model"]
    assert model["storageUri"] == spec.storage_uri
    assert model["runtime"] == spec.runtime
    assert model["args"] == body["spec"]["predictor"]["model"]["args"]
    assert target._get(spec.name, spec.namespace) is None  # dry run: nothing stored
