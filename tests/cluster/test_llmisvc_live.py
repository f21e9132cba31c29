"""Live check against a cluster with KServe >= 0.17 and llm-d: server-side dry-run create of a
modelgate LLMInferenceService.

Nothing is stored (``dryRun=All``): the API server runs defaulting, the v1alpha2 schema and
KServe's LLMInferenceService admission webhook. Namespace: ``$MODELGATE_TEST_NAMESPACE``
(default ``default``). A cluster without the LLMInferenceService CRD skips with that reason.
"""

from __future__ import annotations

import os
import uuid

import pytest

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="set KUBECONFIG to a cluster with KServe >= 0.17 (LLMInferenceService) to run",
    ),
]


@pytest.fixture(scope="module")
def target():
    from modelgate.deploy.llmisvc import LLMInferenceServiceTarget

    return LLMInferenceServiceTarget(timeout=60, poll_interval=2)


@pytest.fixture(params=[0, 2], ids=["cpu", "two-gpus"])
def spec(request):
    from modelgate.deploy import DeploySpec
    from modelgate.placement import Placement

    return DeploySpec(
        name=f"modelgate-dryrun-{uuid.uuid4().hex[:8]}",
        namespace=os.environ.get("MODELGATE_TEST_NAMESPACE", "default"),
        storage_uri="s3://modelgate-dryrun/models/m",
        placement=Placement(accelerator_count=request.param),
        max_model_len=2048,
        run_id="dry-run",
    )


def test_server_side_dry_run_create(target, spec):
    from modelgate.deploy.crd import validate_llm_inference_service
    from modelgate.deploy.llmisvc import RUN_ANNOTATION, build_llm_inference_service
    from modelgate.errors import DeployError

    body = build_llm_inference_service(spec)
    validate_llm_inference_service(body)  # the offline check agrees first
    try:
        obj = target.server_dry_run(spec)
    except DeployError as e:
        if "HTTP 404" in str(e):
            pytest.skip(f"the cluster serves no LLMInferenceService v1alpha2 (KServe < 0.17?): {e}")
        raise
    assert obj["kind"] == "LLMInferenceService"
    assert obj["spec"]["model"] == body["spec"]["model"]
    assert obj["spec"].get("parallelism") == body["spec"].get("parallelism")
    main = next(c for c in obj["spec"]["template"]["containers"] if c["name"] == "main")
    assert main.get("args") == body["spec"]["template"]["containers"][0].get("args")
    # the rollout stamp and the run survive admission
    assert obj["spec"]["annotations"] == body["spec"]["annotations"]
    assert obj["metadata"]["annotations"][RUN_ANNOTATION] == "dry-run"
    assert target._get(spec.name, spec.namespace) is None  # dry run: nothing stored
