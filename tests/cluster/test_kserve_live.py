"""Live checks against a cluster with KServe: server-side dry-run creates of a modelgate ISVC,
alone and with a canary entry beside production (KServe v0.20.0 ``spec.canary``).

Nothing is stored (``dryRun=All``): the API server runs defaulting, schema and KServe's
admission webhooks. Namespace: ``$MODELGATE_TEST_NAMESPACE`` (default ``default``). With
``MODELGATE_TEST_STORAGE_URI`` (a model the namespace's ``vllm-runtime`` serves on CPU) the
canary lifecycle runs for real: first release, dark canary, rollback, canary, promotion
(``MODELGATE_TEST_TIMEOUT`` seconds per rollout, default 1800); the service is deleted after.
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


def _canary_specs(spec):
    """A first release of ``spec`` and a candidate of another run (another storage URI)."""
    production = spec.model_copy(update={"run_id": "modelgate-live-1"})
    candidate = production.model_copy(
        update={"run_id": "modelgate-live-2", "storage_uri": f"{spec.storage_uri}-2"}
    )
    return production, candidate


def test_server_side_dry_run_accepts_a_canary(target, spec):
    """KServe's CRD and webhook take modelgate's canary entry beside production (v0.20.0
    ``spec.canary``; the CRD requires ``model.name`` there, ``validateCanarySpecs`` the rest)."""
    from modelgate.deploy.crd import GROUP, VERSION, validate_inference_service
    from modelgate.deploy.kserve import PLURAL, build_canary, build_inference_service

    production, candidate = _canary_specs(spec)
    body = build_inference_service(production)
    entry = build_canary(candidate)
    body["spec"]["canary"] = [entry]
    validate_inference_service(body)
    obj = target.api.create_namespaced_custom_object(
        GROUP, VERSION, spec.namespace, PLURAL, body, dry_run="All"
    )
    if not obj["spec"].get("canary"):
        pytest.skip("this cluster's KServe prunes spec.canary: it predates v0.20.0")
    (stored,) = obj["spec"]["canary"]
    assert stored["predictor"]["name"] == entry["predictor"]["name"]
    assert stored["predictor"]["annotations"] == entry["predictor"]["annotations"]
    assert stored["trafficPercent"] == 0 and stored["predictor"]["minReplicas"] == 1


@pytest.mark.skipif(
    not os.environ.get("MODELGATE_TEST_STORAGE_URI"),
    reason="set MODELGATE_TEST_STORAGE_URI to a model the cluster's vllm-runtime can serve on CPU "
    "to run the canary lifecycle",
)
def test_canary_lifecycle(spec):
    """First release, a dark canary beside it, its rollback, a second canary, its promotion."""
    from modelgate.deploy.kserve import KServeTarget, predictor_service_name

    uri = os.environ["MODELGATE_TEST_STORAGE_URI"]
    target = KServeTarget(
        timeout=float(os.environ.get("MODELGATE_TEST_TIMEOUT", "1800")), poll_interval=5
    )
    production, candidate = _canary_specs(spec.model_copy(update={"storage_uri": uri}))
    candidate = candidate.model_copy(update={"storage_uri": uri, "dtype": "float32"})
    try:
        first = target.deploy(production)
        assert first.details["role"] == "first"
        canary = target.deploy(candidate)
        assert canary.details["role"] == "canary", canary.details["in_place_because"]
        name = predictor_service_name(spec.name, canary.details["canary"])
        assert canary.endpoint == f"http://{name}.{spec.namespace}.svc.cluster.local"
        assert "removed the canary" in target.rollback(canary)
        assert target._get_deployment(name, spec.namespace) is None
        again = target.deploy(candidate)
        assert target.promote(again).startswith("promoted rollout")
        obj = target._get(spec.name, spec.namespace)
        assert "canary" not in obj["spec"]
        assert "--dtype=float32" in obj["spec"]["predictor"]["model"]["args"]
    finally:
        target._delete(spec.name, spec.namespace)
