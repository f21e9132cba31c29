"""modelgate.deploy.kserve: InferenceService building, strict CRD validation, and KServeTarget.

KServeTarget runs against ``tests.doubles.kube``: the API server double plus
:class:`~tests.doubles.kube.KServeController`, which plays KServe's Standard-mode reconciler and
the Deployment controller (InferenceService ``Ready`` stays True while old pods serve an update),
or :class:`~tests.doubles.kube.ScriptedController` for Knative-mode status scripts.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal

import jsonschema
import pytest
import urllib3
from kubernetes.client import V1Deployment
from kubernetes.client.exceptions import ApiException

from modelgate.deploy import Deployment, DeploySpec, DeployTarget, crd, kserve, vllm_args
from modelgate.errors import ConfigError, DeployError, DeployTimeoutError
from modelgate.placement import Placement, StepResources, Toleration
from tests.doubles.kube import (
    FakeAppsV1Api,
    FakeCustomObjectsApi,
    KServeController,
    ScriptedController,
    condition,
    isvc_status,
    kserve_cluster,
)

pytestmark = pytest.mark.unit

NS = "ns"
G, V, P = "serving.kserve.io", "v1beta1", "inferenceservices"


@pytest.fixture(scope="session")
def isvc_validator() -> jsonschema.Draft4Validator:
    """The v0.20.0 InferenceService v1beta1 schema, strict, loaded once per session."""
    schema = crd.strict_schema(crd.load_crd_schema(crd.ISVC_CRD_FILE, "v1beta1"))
    return jsonschema.Draft4Validator(schema)


def _errors(validator: jsonschema.Draft4Validator, obj: dict) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


def stamp(spec: DeploySpec) -> str:
    """The rollout stamp KServeTarget puts on ``spec``'s predictor."""
    return kserve.build_inference_service(spec)["spec"]["predictor"]["annotations"][
        kserve.ROLLOUT_ANNOTATION
    ]


SPECS = {
    "gpu": DeploySpec(name="tiny-llama-fp8", namespace=NS, storage_uri="model-registry://tiny/v1"),
    "cpu-only": DeploySpec(
        name="tiny-cpu",
        namespace=NS,
        storage_uri="pvc://modelgate-models/tiny",
        placement=Placement(accelerator_count=0),
    ),
    "tolerations": DeploySpec(
        name="tol",
        namespace=NS,
        storage_uri="hf://org/model",
        placement=Placement(
            accelerator_count=2,
            tolerations=[
                Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),
                Toleration(
                    key="pool",
                    operator="Equal",
                    value="llm",
                    effect="NoExecute",
                    tolerationSeconds=300,
                ),
            ],
        ),
    ),
    "node-selector": DeploySpec(
        name="pinned",
        namespace=NS,
        storage_uri="s3://bucket/model",
        placement=Placement(node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}),
        service_account="modelgate-pipeline",
        max_model_len=4096,
        dtype="bfloat16",
        extra_args=["--gpu-memory-utilization=0.85", "--enforce-eager"],
        labels={"team": "llm"},
        annotations={"note": "x"},
    ),
    "amd": DeploySpec(
        name="amd",
        namespace=NS,
        storage_uri="oci://reg/model:1",
        placement=Placement(accelerator_type="amd.com/gpu"),
    ),
    "eight-gpus-big-serve": DeploySpec(
        name="big",
        namespace=NS,
        storage_uri="s3://bucket/70b",
        placement=Placement(
            accelerator_count=8,
            steps={
                "serve": StepResources(
                    cpu="32", memory="256Gi", cpu_limit="64", memory_limit="512Gi"
                )
            },
        ),
    ),
    "raw-deployment": DeploySpec(
        name="raw", namespace=NS, storage_uri="s3://b/raw", deployment_mode="RawDeployment"
    ),
    "knative": DeploySpec(
        name="kn", namespace=NS, storage_uri="s3://b/kn", deployment_mode="Knative"
    ),
}


# ---------------------------------------------------------------------------------------------
# build_inference_service + schema
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(SPECS))
def test_built_isvc_matches_strict_crd_schema(key, isvc_validator):
    isvc = kserve.build_inference_service(SPECS[key])
    assert kserve.ROLLOUT_ANNOTATION in isvc["spec"]["predictor"]["annotations"]
    assert _errors(isvc_validator, isvc) == []
    crd.validate_inference_service(isvc)  # the library path (with ObjectMeta checks) agrees


def test_strict_schema_knows_predictor_annotations(isvc_validator):
    """The rollout stamp lives in a field the v0.20.0 CRD declares (not pruned by the server)."""
    isvc = kserve.build_inference_service(SPECS["gpu"])
    isvc["spec"]["predictor"]["annotations"] = {"a": 1}
    assert any("spec.predictor.annotations.a" in e for e in _errors(isvc_validator, isvc))


def test_isvc_shape_for_gpu_spec():
    spec = SPECS["node-selector"]
    isvc = kserve.build_inference_service(spec)
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    meta = isvc["metadata"]
    assert (meta["name"], meta["namespace"]) == ("pinned", NS)
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "modelgate"
    assert meta["labels"]["team"] == "llm"
    assert meta["annotations"] == {"note": "x", "serving.kserve.io/deploymentMode": "Standard"}
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "vLLM"}
    assert model["runtime"] == "vllm-runtime"
    assert model["storageUri"] == "s3://bucket/model"
    assert model["args"] == [
        "--max-model-len=4096",
        "--dtype=bfloat16",
        "--gpu-memory-utilization=0.85",
        "--enforce-eager",
    ]
    assert model["resources"] == {  # the default serve step: requests 4/24Gi, limits 8/32Gi
        "requests": {"cpu": "4", "memory": "24Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
    }
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert predictor["serviceAccountName"] == "modelgate-pipeline"
    assert "tolerations" not in predictor
    assert predictor["annotations"] == {kserve.ROLLOUT_ANNOTATION: stamp(spec)}


def test_no_gpu_omits_accelerator_and_optional_fields():
    predictor = kserve.build_inference_service(SPECS["cpu-only"])["spec"]["predictor"]
    resources = predictor["model"]["resources"]
    assert resources["limits"] == {"cpu": "8", "memory": "32Gi"}
    assert resources["requests"] == {"cpu": "4", "memory": "24Gi"}
    assert set(predictor) == {"model", "annotations"}  # no tolerations/nodeSelector/SA
    assert predictor["model"]["args"] == []


def test_tolerations_are_camel_case_without_nulls():
    predictor = kserve.build_inference_service(SPECS["tolerations"])["spec"]["predictor"]
    assert predictor["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {
            "key": "pool",
            "operator": "Equal",
            "value": "llm",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
    ]


def test_two_gpus_request_both_and_split_the_model_over_them():
    spec = SPECS["tolerations"]
    model = kserve.build_inference_service(spec)["spec"]["predictor"]["model"]
    assert model["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert model["args"] == ["--tensor-parallel-size=2"]
    assert "--tensor-parallel-size=2" in vllm_args(spec)


def test_one_gpu_has_no_tensor_parallelism():
    args = kserve.build_inference_service(SPECS["gpu"])["spec"]["predictor"]["model"]["args"]
    assert not any(a.startswith("--tensor-parallel-size") for a in args)


def test_serve_resources_come_from_the_placement_serve_step():
    model = kserve.build_inference_service(SPECS["eight-gpus-big-serve"])["spec"]["predictor"][
        "model"
    ]
    assert model["resources"] == {
        "requests": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8"},
        "limits": {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "8"},
    }
    assert model["args"] == ["--tensor-parallel-size=8"]


def test_serve_limits_default_to_requests():
    spec = DeploySpec(
        name="m",
        storage_uri="s3://b/m",
        placement=Placement(
            accelerator_count=0,
            steps={"serve": {"cpu": "2", "memory": "8Gi", "cpu_limit": None, "memory_limit": None}},
        ),
    )
    resources = kserve.build_inference_service(spec)["spec"]["predictor"]["model"]["resources"]
    assert resources == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"cpu": "2", "memory": "8Gi"},
    }


def test_other_accelerator_resource():
    limits = kserve.build_inference_service(SPECS["amd"])["spec"]["predictor"]["model"]["resources"]
    assert limits["limits"]["amd.com/gpu"] == "1" and "nvidia.com/gpu" not in limits["limits"]


@pytest.mark.parametrize("key", sorted(SPECS))
def test_deployment_mode_annotation(key):
    spec = SPECS[key]
    meta = kserve.build_inference_service(spec)["metadata"]
    assert meta["annotations"]["serving.kserve.io/deploymentMode"] == spec.deployment_mode


def test_rollout_stamp_is_a_hash_of_the_spec():
    base = SPECS["gpu"]
    isvc = kserve.build_inference_service(base)
    assert kserve.rollout_hash(isvc["spec"]) == stamp(base)  # recomputable from the object
    assert stamp(base) == stamp(base.model_copy())  # stable
    assert stamp(base.model_copy(update={"labels": {"a": "b"}})) == stamp(base)  # metadata only
    changed = [
        base.model_copy(update={"storage_uri": "model-registry://tiny/v2"}),
        base.model_copy(update={"max_model_len": 2048}),
        base.model_copy(update={"placement": Placement(accelerator_count=2)}),
        base.model_copy(update={"placement": Placement(node_selector={"pool": "a"})}),
    ]
    assert len({stamp(s) for s in changed} | {stamp(base)}) == len(changed) + 1


def test_misspelled_field_fails_strict_validation(isvc_validator):
    isvc = kserve.build_inference_service(SPECS["gpu"])
    model = isvc["spec"]["predictor"]["model"]
    model["storageURI"] = model.pop("storageUri")
    errors = _errors(isvc_validator, isvc)
    assert any("storageURI" in e and e.startswith("spec.predictor.model") for e in errors), errors
    with pytest.raises(ConfigError, match=r"spec\.predictor\.model: .*'storageURI' was unexpected"):
        crd.validate_inference_service(isvc)


def test_unstrict_schema_would_let_the_typo_through():
    """Why strict_schema exists: the CRD as published accepts (and the server prunes) typos."""
    isvc = kserve.build_inference_service(SPECS["gpu"])
    isvc["spec"]["predictor"]["model"]["storageURI"] = "s3://x"
    loose = jsonschema.Draft4Validator(crd.load_crd_schema(crd.ISVC_CRD_FILE, "v1beta1"))
    assert list(loose.iter_errors(isvc)) == []


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda o: o["spec"]["predictor"].update(
                tolerations=[{"key": "a", "efect": "NoSchedule"}]
            ),
            "efect",
        ),
        (lambda o: o["spec"]["predictor"]["model"].update(args="--dtype=half"), "args"),
        (
            lambda o: o["spec"]["predictor"]["model"]["resources"]["limits"].update(cpu="four"),
            "limits.cpu",
        ),
        (lambda o: o["spec"].update(predicter={}), "predicter"),
        (lambda o: o["metadata"].update(label={"a": "b"}), "label"),
        (lambda o: o["metadata"].update(name="Bad_Name"), "metadata.name"),
        (lambda o: o["metadata"]["labels"].update(n=1), "metadata.labels.n"),
        (
            lambda o: o["spec"]["predictor"]["annotations"].update(n=1),
            "spec.predictor.annotations.n",
        ),
    ],
)
def test_strict_validation_catches(mutate, expected):
    isvc = kserve.build_inference_service(SPECS["gpu"])
    mutate(isvc)
    with pytest.raises(ConfigError) as info:
        crd.validate_inference_service(isvc)
    assert expected in str(info.value)


def test_validate_rejects_other_kinds():
    isvc = kserve.build_inference_service(SPECS["gpu"])
    isvc["apiVersion"] = "serving.kserve.io/v1alpha1"
    with pytest.raises(ConfigError, match="expected apiVersion serving.kserve.io/v1beta1"):
        crd.validate_inference_service(isvc)


def test_strict_schema_rules():
    schema = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "properties": {
                    "port": {"x-kubernetes-int-or-string": True},
                    "limits": {"type": "object", "additionalProperties": {"type": "string"}},
                    "open": {
                        "type": "object",
                        "properties": {"a": {"type": "string"}},
                        "additionalProperties": True,
                    },
                    "items": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"x": {"type": "string"}}},
                    },
                },
            },
            "status": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {
                    "inner": {"type": "object", "properties": {"b": {"type": "string"}}}
                },
            },
        },
    }
    original = copy.deepcopy(schema)
    strict = crd.strict_schema(schema)
    assert schema == original  # input untouched
    props = strict["properties"]
    assert strict["additionalProperties"] is False
    assert "additionalProperties" not in props["metadata"]  # untyped in CRDs: left open
    spec = props["spec"]["properties"]
    assert spec["port"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert spec["limits"]["additionalProperties"] == {"type": "string"}
    assert spec["open"]["additionalProperties"] is True
    assert spec["items"]["items"]["additionalProperties"] is False
    assert "additionalProperties" not in props["status"]
    assert props["status"]["properties"]["inner"]["additionalProperties"] is False

    v = jsonschema.Draft4Validator(strict)
    assert not list(
        v.iter_errors({"metadata": {"anything": 1}, "spec": {"port": 8080}, "status": {"extra": 1}})
    )
    assert not list(v.iter_errors({"spec": {"port": "http", "open": {"zzz": 1}}}))
    assert list(v.iter_errors({"spec": {"port": 1.5}}))
    assert list(v.iter_errors({"spec": {"items": [{"y": "1"}]}}))


def test_load_crd_schema_unknown_version():
    with pytest.raises(ConfigError, match="no version 'v1'"):
        crd.load_crd_schema(crd.ISVC_CRD_FILE, "v1")


def test_load_crd_schema_is_cached():
    a = crd.load_crd_schema(crd.ISVC_CRD_FILE, "v1beta1")
    b = crd.load_crd_schema("InferenceService", "v1beta1")  # by kind: the same packaged schema
    assert a is b


def test_crd_validation_errors_lists_every_problem():
    isvc = kserve.build_inference_service(SPECS["gpu"])
    isvc["spec"]["predictor"]["model"]["storageURI"] = "x"
    isvc["spec"]["predicter"] = {}
    errors = crd.crd_validation_errors(isvc, crd.ISVC_CRD_FILE, "v1beta1")
    assert len(errors) == 2 and all(": " in e for e in errors)


# ---------------------------------------------------------------------------------------------
# Argument split between the ServingRuntime and the InferenceService
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(SPECS))
def test_runtime_args_plus_isvc_args_equal_vllm_args(key):
    spec = SPECS[key]
    isvc = kserve.build_inference_service(spec)
    rendered = kserve.render_runtime_args(isvc["metadata"]["name"])
    merged = rendered + isvc["spec"]["predictor"]["model"]["args"]  # KServe appends ISVC args
    assert merged == vllm_args(spec, model_path="/mnt/models", port=8080)


def test_runtime_args_are_templated():
    assert kserve.runtime_args() == [
        "--model=/mnt/models",
        "--port=8080",
        "--served-model-name={{.Name}}",
    ]


@pytest.mark.parametrize(
    "arg", ["--port=9000", "--model=/other", "--served-model-name=x", "--port"]
)
def test_extra_args_may_not_override_runtime_flags(arg):
    spec = DeploySpec(name="m", storage_uri="s3://b/m", extra_args=[arg, "9000"])
    with pytest.raises(ConfigError, match="override flags the KServe runtime sets"):
        kserve.build_inference_service(spec)


# ---------------------------------------------------------------------------------------------
# KServeTarget against KServe's Standard mode (KServeController)
# ---------------------------------------------------------------------------------------------

SPEC = DeploySpec(name="m", namespace=NS, storage_uri="model-registry://m/1")
NEW = SPEC.model_copy(update={"storage_uri": "model-registry://m/2"})


def _target(api, apps=None, **kw) -> kserve.KServeTarget:
    """A target that replaces production's predictor in place (role ``replace``).

    This module tests that path (Knative mode, a production that is not Ready, a KServe before
    v0.20.0 and ``canary=False`` take it); the canary path is tests/unit/test_kserve_canary.py.
    """
    kw.setdefault("timeout", 5.0)
    kw.setdefault("poll_interval", 0)
    kw.setdefault("canary", False)
    return kserve.KServeTarget(api, apps=apps if apps is not None else FakeAppsV1Api(), **kw)


def _seed(
    api: FakeCustomObjectsApi, controller: KServeController, spec: DeploySpec, *, settle=True
) -> dict:
    """Create ``spec``'s InferenceService (with someone else's metadata) and let it roll out."""
    body = kserve.build_inference_service(spec)
    body["metadata"]["annotations"]["other.io/keep"] = "yes"
    body["metadata"]["finalizers"] = ["inferenceservice.finalizers"]
    api.create_namespaced_custom_object(G, V, NS, P, body)
    if settle:
        controller.settle(api, NS, spec.name)
    api.calls.clear()
    return copy.deepcopy(api.stored(NS, spec.name))


def _verbs(api: FakeCustomObjectsApi) -> list[str]:
    return [c[0] for c in api.calls if c[0] != "get"]


def test_target_satisfies_protocol():
    target: DeployTarget = _target(FakeCustomObjectsApi())
    assert target.name == "kserve"
    assert callable(target.deploy) and callable(target.teardown) and callable(target.rollback)
    assert callable(target.promote) and callable(target.rollback_run)


def test_target_needs_both_apis():
    with pytest.raises(ConfigError, match="both api"):
        kserve.KServeTarget(FakeCustomObjectsApi())
    with pytest.raises(ConfigError, match="both api"):
        kserve.KServeTarget(apps=FakeAppsV1Api())


def test_create_waits_for_the_rollout():
    api, apps, controller = kserve_cluster(ready_after=3)
    deployment = _target(api, apps).deploy(SPEC)

    assert isinstance(deployment, Deployment)
    assert deployment.target == "kserve"
    assert deployment.name == deployment.model == "m"
    assert deployment.endpoint == "http://m-predictor.ns.svc.cluster.local"
    assert deployment.details["namespace"] == NS
    assert deployment.details["generation"] == 1
    assert deployment.details["rollout"] == stamp(SPEC)
    assert deployment.details["deployment_mode"] == "Standard"
    assert deployment.details["url"] == "http://m-ns.example.com"
    assert deployment.details["previous_spec"] is None
    assert _verbs(api) == ["create"]
    last = controller.history[-1]
    assert last.rolled_out and last.stamp == stamp(SPEC) and last.isvc_ready == "True"
    assert all(not s.rolled_out for s in controller.history[:-1])  # returned at the first chance
    assert api.stored(NS, "m")["spec"] == kserve.build_inference_service(SPEC)["spec"]


@pytest.mark.parametrize("replicas, reconcile_delay", [(1, 0), (3, 0), (1, 2)])
def test_update_does_not_return_while_old_pods_serve(replicas, reconcile_delay):
    api, apps, controller = kserve_cluster(
        ready_after=3, replicas=replicas, reconcile_delay=reconcile_delay
    )
    _seed(api, controller, SPEC)
    start = len(controller.history)

    deployment = _target(api, apps).deploy(NEW)

    during = controller.history[start:-1]
    # What made the old readiness check wrong: the InferenceService stays Ready, and its
    # observedGeneration is current, while the old pods still take the traffic.
    assert any(s.isvc_ready == "True" and s.old > 0 and stamp(SPEC) in s.serving for s in during), (
        during
    )
    assert any(s.isvc_observed_generation == 2 and stamp(SPEC) in s.serving for s in during), during
    last = controller.history[-1]
    assert last.stamp == stamp(NEW)
    assert last.updated == last.available == last.replicas == replicas
    assert last.old == 0 and set(last.serving) == {stamp(NEW)}
    assert deployment.details["generation"] == 2
    assert deployment.details["previous_spec"]["predictor"]["annotations"] == {
        kserve.ROLLOUT_ANNOTATION: stamp(SPEC)
    }


def test_update_keeps_foreign_metadata_and_drops_removed_fields():
    api, apps, controller = kserve_cluster()
    old = SPEC.model_copy(
        update={"placement": Placement(node_selector={"pool": "a"}), "max_model_len": 1024}
    )
    _seed(api, controller, old)

    deployment = _target(api, apps).deploy(SPEC)

    stored = api.stored(NS, "m")
    assert stored["metadata"]["generation"] == deployment.details["generation"] == 2
    assert "nodeSelector" not in stored["spec"]["predictor"]  # dropped fields really go away
    assert stored["spec"]["predictor"]["model"]["args"] == []
    assert stored["metadata"]["annotations"]["other.io/keep"] == "yes"
    assert stored["metadata"]["finalizers"] == ["inferenceservice.finalizers"]
    assert _verbs(api) == ["replace"]
    pod_spec = apps.stored(NS, "m-predictor")["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod_spec  # KServe rolled the change out too
    assert controller.history[-1].rolled_out


def test_redeploying_the_same_spec_returns_at_once():
    api, apps, controller = kserve_cluster()
    _seed(api, controller, SPEC)
    dep_generation = apps.stored(NS, "m-predictor")["metadata"]["generation"]
    start = len(controller.history)

    deployment = _target(api, apps).deploy(SPEC)

    assert deployment.details["generation"] == 1
    assert _verbs(api) == ["replace"]  # a no-op write: the generation stays
    assert api.stored(NS, "m")["metadata"]["generation"] == 1
    assert apps.stored(NS, "m-predictor")["metadata"]["generation"] == dep_generation
    assert len(controller.history) - start == 3  # deploy's and apply's reads, then one poll
    assert len(controller.replica_sets[(NS, "m-predictor")]) == 1  # no new rollout


def test_rollout_of_new_pods_that_never_become_available_times_out_and_restores():
    api, apps, controller = kserve_cluster(failures={stamp(NEW): "unavailable"})
    old_spec = _seed(api, controller, SPEC)["spec"]

    with pytest.raises(DeployTimeoutError) as info:
        _target(api, apps, timeout=0.2).deploy(NEW)

    message = str(info.value)
    assert "ns/m (generation 2)" in message
    assert "rollout: Deployment m-predictor: 1 old replicas still running" in message
    assert "restored the previous spec of InferenceService ns/m; it serves again" in message
    assert api.stored(NS, "m")["spec"] == old_spec
    last = controller.history[-1]  # what the target saw when deploy raised
    assert last.stamp == stamp(SPEC) and last.rolled_out
    assert set(last.serving) == {stamp(SPEC)}


def test_timeout_of_a_new_service_deletes_it():
    api, apps, _ = kserve_cluster(failures={stamp(SPEC): "unavailable"})
    with pytest.raises(DeployTimeoutError, match="deleted the new InferenceService ns/m") as info:
        _target(api, apps, timeout=0.1).deploy(SPEC)
    assert "0 of 1 new replicas available" in str(info.value)
    assert "PredictorReady=False (MinimumReplicasUnavailable)" in str(info.value)
    assert api.stored(NS, "m") is None


def test_timeout_without_any_controller_says_so():
    api = FakeCustomObjectsApi()
    with pytest.raises(DeployTimeoutError) as info:
        _target(api, timeout=0.02).deploy(SPEC)
    assert "Deployment m-predictor not created yet" in str(info.value)
    assert "no status reported yet" in str(info.value)


def test_progress_deadline_alone_is_not_fatal_the_rollout_gets_its_own_timeout():
    # KServe gives the predictor Deployment progressDeadlineSeconds: 600 (v0.20.0
    # deployment_reconciler.go setDefaultDeploymentSpec 341-360), less than vLLM may need to
    # start; pods that are merely slow must not be rolled back at the Deployment's deadline.
    api, apps, controller = kserve_cluster(failures={stamp(NEW): "deadline"}, deadline_after=2)
    old_spec = _seed(api, controller, SPEC)["spec"]

    with pytest.raises(DeployTimeoutError) as info:
        _target(api, apps, core=controller.core, timeout=0.5).deploy(NEW)

    message = str(info.value)
    new_rs = controller.replica_set(NS, "m", stamp(NEW))
    assert any(  # the deadline was reported while the rollout went on
        s.stamp == stamp(NEW) and s.progressing == "False ProgressDeadlineExceeded"
        for s in controller.history
    )
    assert f'past its progressDeadlineSeconds, ReplicaSet "{new_rs.name}" has timed out' in message
    # Rolling back to the old ReplicaSet, the Deployment controller keeps reporting the timed-out
    # condition for a while; that must not count against the restored spec either.
    assert "restored the previous spec of InferenceService ns/m; it serves again" in message
    assert api.stored(NS, "m")["spec"] == old_spec
    assert controller.history[-1].rolled_out and controller.history[-1].stamp == stamp(SPEC)


@pytest.mark.parametrize(
    "failure, expected",
    [
        ("crash", r"is crash-looping \(CrashLoopBackOff\): Back-off restarting failed container"),
        ("image", r"cannot pull its image \(Failed\): Error: ErrImagePull"),
    ],
)
def test_pods_that_will_not_start_fail_fast_while_old_pods_serve(failure, expected):
    # Production stays Ready during the rollout, so KServe reports no model failure: the new
    # pods' events tell a crash loop or an image that cannot be pulled from a slow start.
    api, apps, controller = kserve_cluster(failures={stamp(NEW): failure})
    old_spec = _seed(api, controller, SPEC)["spec"]
    start = len(controller.history)

    with pytest.raises(DeployError, match=expected) as info:
        _target(api, apps, core=controller.core, timeout=30).deploy(NEW)

    assert not isinstance(info.value, DeployTimeoutError)
    assert all(s.isvc_ready == "True" for s in controller.history[start:])
    new_rs = controller.replica_set(NS, "m", stamp(NEW))
    assert re.search(rf"pod {new_rs.name}-\d{{5}} ", str(info.value))
    assert "it serves again" in str(info.value)
    assert api.stored(NS, "m")["spec"] == old_spec


def test_without_an_events_api_such_pods_time_out():
    api, apps, controller = kserve_cluster(failures={stamp(NEW): "crash"})
    _seed(api, controller, SPEC)
    with pytest.raises(DeployTimeoutError, match="1 old replicas still running"):
        _target(api, apps, timeout=0.3).deploy(NEW)


def test_unreadable_events_are_not_fatal():
    api, apps, controller = kserve_cluster(ready_after=3)
    _seed(api, controller, SPEC)
    controller.core.fail("list", 403, 'events is forbidden: User "x" cannot list "events"')
    deployment = _target(api, apps, core=controller.core).deploy(NEW)
    assert deployment.details["rollout"] == stamp(NEW)
    assert controller.history[-1].rolled_out


def test_quota_refusal_fails_fast():
    api, apps, controller = kserve_cluster(failures={stamp(NEW): "quota"})
    _seed(api, controller, SPEC)
    with pytest.raises(DeployError, match="FailedCreate: pods .* exceeded quota") as info:
        _target(api, apps, timeout=30).deploy(NEW)
    assert not isinstance(info.value, DeployTimeoutError)
    assert "it serves again" in str(info.value)


def test_stale_progress_deadline_of_the_previous_spec_does_not_fail_the_new_one():
    api, apps, controller = kserve_cluster(failures={stamp(SPEC): "deadline"}, deadline_after=1)
    _seed(api, controller, SPEC, settle=False)
    controller.run(api, NS, "m", 5)
    assert controller.history[-1].progressing == "False ProgressDeadlineExceeded"

    deployment = _target(api, apps).deploy(NEW)

    assert deployment.details["rollout"] == stamp(NEW)
    assert any(  # the new template was visible while the old timeout was still reported
        s.stamp == stamp(NEW) and s.progressing == "False ProgressDeadlineExceeded"
        for s in controller.history
    )
    assert controller.history[-1].rolled_out


def test_a_new_failure_after_a_stale_progress_deadline_is_still_fatal():
    api, apps, controller = kserve_cluster(
        failures={stamp(SPEC): "deadline", stamp(NEW): "quota"}, deadline_after=1
    )
    _seed(api, controller, SPEC, settle=False)
    controller.run(api, NS, "m", 5)
    assert controller.history[-1].progressing == "False ProgressDeadlineExceeded"

    with pytest.raises(DeployError, match="FailedCreate") as info:
        _target(api, apps, core=controller.core, timeout=0.5).deploy(NEW)
    new_rs = controller.replica_set(NS, "m", stamp(NEW)).name
    message = str(info.value)
    assert message.startswith("InferenceService ns/m failed: Deployment m-predictor: ")
    assert f'pods "{new_rs}-' in message
    assert not isinstance(info.value, DeployTimeoutError)
    assert "does not serve again" in message  # the previous spec was stuck already


def test_events_of_the_previous_rollout_do_not_fail_the_restore():
    # The failed spec's pods crash-looped; after the restore the Deployment still names their
    # ReplicaSet until it progresses, and their events stay: the restored spec serves again.
    api, apps, controller = kserve_cluster(failures={stamp(NEW): "crash"}, ready_after=3)
    _seed(api, controller, SPEC)
    with pytest.raises(DeployError) as info:
        _target(api, apps, core=controller.core, timeout=30).deploy(NEW)
    assert "restored the previous spec of InferenceService ns/m; it serves again" in str(info.value)
    assert any(e["reason"] == "BackOff" for e in controller.core.events)


@pytest.mark.parametrize("status_lags", [False, True])
def test_stale_model_failure_of_the_previous_spec_does_not_fail_the_new_one(status_lags):
    # The previous spec crash-loops; KServe needs two polls to pick up the change, and the
    # reconcile that changes the pod template still reports the old pod's failure (which the
    # client may read after the Deployment controller has already taken up the new template).
    api, apps, controller = kserve_cluster(
        failures={stamp(SPEC): "crash"}, reconcile_delay=2, status_lags=status_lags
    )
    _seed(api, controller, SPEC, settle=False)
    controller.run(api, NS, "m", 4)
    before = api.stored(NS, "m")["status"]["modelStatus"]
    assert before["transitionStatus"] == "BlockedByFailedLoad"
    start = len(controller.history)

    deployment = _target(api, apps).deploy(NEW)

    seen = controller.history[start + 2 :]
    assert seen[0].stamp == stamp(SPEC)  # KServe had not reconciled the new spec yet
    assert any(s.stamp == stamp(NEW) and s.isvc_observed_generation == 1 for s in seen)
    assert deployment.details["rollout"] == stamp(NEW)
    assert controller.history[-1].rolled_out and controller.history[-1].stamp == stamp(NEW)


def test_model_load_failure_of_a_new_service_fails_fast():
    api, apps, _ = kserve_cluster(failures={stamp(SPEC): "crash"})
    with pytest.raises(DeployError) as info:
        _target(api, apps, timeout=30).deploy(SPEC)
    message = str(info.value)
    assert "BlockedByFailedLoad: ModelLoadFailed: vLLM exited: CUDA out of memory" in message
    assert "deleted the new InferenceService ns/m" in message
    assert not isinstance(info.value, DeployTimeoutError)
    assert api.stored(NS, "m") is None


def test_rollback_after_a_failed_smoke_test_waits_until_the_old_spec_serves():
    api, apps, controller = kserve_cluster(ready_after=3)
    target = _target(api, apps)
    target.deploy(SPEC)
    deployment = target.deploy(NEW)
    assert set(controller.history[-1].serving) == {stamp(NEW)}

    done = target.rollback(deployment)  # e.g. the smoke test failed

    assert "restored the previous spec of InferenceService ns/m; it serves again" in done
    assert api.stored(NS, "m")["spec"] == kserve.build_inference_service(SPEC)["spec"]
    last = controller.history[-1]
    assert last.stamp == stamp(SPEC) and last.rolled_out and set(last.serving) == {stamp(SPEC)}


def test_rollback_whose_old_spec_no_longer_serves_is_reported_not_raised():
    api, apps, controller = kserve_cluster()
    target = _target(api, apps)
    target.deploy(SPEC)
    deployment = target.deploy(NEW)
    controller.failures[stamp(SPEC)] = "unavailable"  # e.g. its node pool is gone
    target.timeout = 0.1

    done = target.rollback(deployment)

    assert "does not serve again" in done and "timed out" in done
    assert api.stored(NS, "m")["spec"] == kserve.build_inference_service(SPEC)["spec"]


def test_rollback_of_a_new_service_deletes_it():
    api, apps, _ = kserve_cluster()
    target = _target(api, apps)
    deployment = target.deploy(SPEC)
    assert deployment.details["previous_spec"] is None
    assert "deleted" in target.rollback(deployment)
    assert api.stored(NS, "m") is None


def test_failed_restore_does_not_hide_the_original_error():
    api, apps, controller = kserve_cluster(failures={stamp(NEW): "crash"})
    _seed(api, controller, SPEC)
    replace = api.replace_namespaced_custom_object
    replaces = []

    def replace_then_forbid(*a, **kw):
        replaces.append(1)
        if len(replaces) == 2:  # the restore's replace
            api.fail("replace", 403)
        return replace(*a, **kw)

    api.replace_namespaced_custom_object = replace_then_forbid
    with pytest.raises(DeployError) as info:
        _target(api, apps, core=controller.core, timeout=30).deploy(NEW)
    message = str(info.value)
    assert message.startswith("InferenceService ns/m failed: Deployment m-predictor")
    assert "CrashLoopBackOff" in message
    assert "undoing the change failed too: updating InferenceService ns/m: forbidden" in message


def test_deleted_while_waiting_is_not_resurrected():
    api, apps, controller = kserve_cluster()
    _seed(api, controller, SPEC)
    get = api.get_namespaced_custom_object
    gets = []

    def get_then_vanish(*a, **kw):
        gets.append(1)
        if len(gets) == 4:  # deploy's, apply's, one poll; then someone deletes it
            api.objects.clear()
        return get(*a, **kw)

    api.get_namespaced_custom_object = get_then_vanish
    with pytest.raises(DeployError) as info:
        _target(api, apps).deploy(NEW)
    message = str(info.value)
    assert "was deleted while waiting" in message
    assert "InferenceService ns/m no longer exists; nothing restored" in message
    assert api.stored(NS, "m") is None
    assert "create" not in _verbs(api)


# What stops a rollout other than a DeployError: the restore still runs, and never overwrites a
# spec another deploy wrote since. Each of these failed before deploy restored on any exception.

OTHER = SPEC.model_copy(update={"storage_uri": "model-registry://m/3"})


def _rolling_out(controller: KServeController, start: int) -> bool:
    """The new spec had reached the predictor Deployment when the rollout was stopped."""
    return any(s.stamp == stamp(NEW) for s in controller.history[start:])


@pytest.fixture()
def sigterm_noted():
    """A SIGTERM handler that only notes the signal, so a SIGTERM nobody handles does not kill
    pytest (KServeTarget installs its own during a rollout and puts this one back)."""
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    yield received
    signal.signal(signal.SIGTERM, previous)


def test_network_error_while_waiting_restores_the_previous_spec():
    api, apps, controller = kserve_cluster(ready_after=3)
    old_spec = _seed(api, controller, SPEC)["spec"]
    start = len(controller.history)
    dropped = urllib3.exceptions.ProtocolError(
        "Connection aborted.", ConnectionResetError(104, "Connection reset by peer")
    )
    api.fail_with("get", dropped, after=3)  # deploy's and apply's reads, one poll; then the 2nd

    with pytest.raises(urllib3.exceptions.ProtocolError) as info:
        _target(api, apps).deploy(NEW)

    assert _rolling_out(controller, start)
    assert api.stored(NS, "m")["spec"] == old_spec
    assert "restored the previous spec of InferenceService ns/m; it serves again" in (
        " ".join(info.value.__notes__)
    )
    last = controller.history[-1]
    assert last.stamp == stamp(SPEC) and last.rolled_out


def test_network_error_on_the_write_restores_what_it_stored():
    # the replace went through, then the connection dropped before the answer came
    api, apps, controller = kserve_cluster()
    old_spec = _seed(api, controller, SPEC)["spec"]
    replace = api.replace_namespaced_custom_object

    def replace_then_drop(*a, **kw):
        replace(*a, **kw)
        raise urllib3.exceptions.ProtocolError("Connection aborted.")

    api.replace_namespaced_custom_object = replace_then_drop
    with pytest.raises(urllib3.exceptions.ProtocolError):
        _target(api, apps).deploy(NEW)
    api.replace_namespaced_custom_object = replace
    assert api.stored(NS, "m")["spec"] == old_spec


def test_keyboard_interrupt_while_waiting_restores_without_waiting():
    api, apps, controller = kserve_cluster(ready_after=3)
    old_spec = _seed(api, controller, SPEC)["spec"]
    start = len(controller.history)
    api.fail_with("get", KeyboardInterrupt(), after=3)
    sigint_handler = signal.getsignal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt) as info:
        _target(api, apps).deploy(NEW)

    assert _rolling_out(controller, start)
    assert api.stored(NS, "m")["spec"] == old_spec
    notes = " ".join(info.value.__notes__)
    assert "restored the previous spec of InferenceService ns/m (not waiting" in notes
    assert signal.getsignal(signal.SIGINT) is sigint_handler  # the rollout's handler is gone


def test_keyboard_interrupt_before_the_write_was_stored_changes_nothing():
    api, apps, controller = kserve_cluster()
    old = _seed(api, controller, SPEC)
    api.fail_with("replace", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt) as info:
        _target(api, apps).deploy(NEW)
    assert info.value.__notes__ == [
        "InferenceService ns/m still has its previous spec; nothing to restore"
    ]
    stored = api.stored(NS, "m")
    assert stored["spec"] == old["spec"] and stored["metadata"]["generation"] == 1
    assert "replace" not in _verbs(api)[1:]  # the failed one only


def test_keyboard_interrupt_while_creating_deletes_the_new_service():
    api, apps, _ = kserve_cluster(ready_after=3)
    api.fail_with("get", KeyboardInterrupt(), after=3)
    with pytest.raises(KeyboardInterrupt):
        _target(api, apps).deploy(SPEC)
    assert api.stored(NS, "m") is None


def test_sigterm_while_waiting_restores_the_previous_spec(sigterm_noted):
    api, apps, controller = kserve_cluster(ready_after=3)
    old_spec = _seed(api, controller, SPEC)["spec"]
    start = len(controller.history)
    reconcile = api.controller
    polls = []

    def reconcile_then_cancel(api_, obj):  # a KFP cancel: SIGTERM to the step's process
        polls.append(1)
        if len(polls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        reconcile(api_, obj)

    api.controller = reconcile_then_cancel
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        _target(api, apps).deploy(NEW)

    assert not sigterm_noted  # the rollout's handler had it, not the one before
    assert _rolling_out(controller, start)
    assert api.stored(NS, "m")["spec"] == old_spec
    os.kill(os.getpid(), signal.SIGTERM)  # after the rollout: the previous handler again
    assert sigterm_noted == [signal.SIGTERM]


def test_a_newer_spec_of_another_deploy_is_not_overwritten():
    api, apps, controller = kserve_cluster(ready_after=3)
    _seed(api, controller, SPEC)
    reconcile = api.controller
    polls = []
    other_body = kserve.build_inference_service(OTHER)

    def reconcile_with_another_writer(api_, obj):
        polls.append(1)
        if len(polls) == 3:  # mid-rollout, another run deploys OTHER
            api.controller = reconcile
            current = api_.stored(NS, "m")
            api_.replace_namespaced_custom_object(
                G, V, NS, P, "m", {**copy.deepcopy(current), "spec": other_body["spec"]}
            )
            obj = copy.deepcopy(api_.stored(NS, "m"))
        reconcile(api_, obj)

    api.controller = reconcile_with_another_writer
    with pytest.raises(DeployError) as info:
        _target(api, apps, timeout=0.5).deploy(NEW)

    message = str(info.value)
    assert "was changed by another deploy while waiting" in message
    assert f"not restored: InferenceService ns/m now carries rollout {stamp(OTHER)}" in message
    assert api.stored(NS, "m")["spec"] == other_body["spec"]
    assert not isinstance(info.value, DeployTimeoutError)  # noticed at once, not at the timeout


def test_rollback_leaves_a_newer_spec_of_another_deploy_alone():
    api, apps, controller = kserve_cluster()
    target = _target(api, apps)
    target.deploy(SPEC)
    deployment = target.deploy(NEW)
    target.deploy(OTHER)  # another run, after this one's smoke test started

    done = target.rollback(deployment)  # e.g. this run's smoke test failed

    assert done.startswith(
        f"not restored: InferenceService ns/m now carries rollout {stamp(OTHER)}"
    )
    assert api.stored(NS, "m")["spec"] == kserve.build_inference_service(OTHER)["spec"]


def test_restore_checks_the_stamp_on_the_object_it_replaces():
    # another deploy writes between the restore's check and its replace: the compare-and-swap
    # replace answers 409, and the re-read shows the other stamp
    api, apps, controller = kserve_cluster()
    target = _target(api, apps)
    target.deploy(SPEC)
    deployment = target.deploy(NEW)
    replace = api.replace_namespaced_custom_object
    raced = []

    def replace_after_another_writer(group, version, namespace, plural, name, body, **kw):
        if not raced:
            raced.append(1)
            current = copy.deepcopy(api.stored(NS, "m"))
            current["spec"] = kserve.build_inference_service(OTHER)["spec"]
            replace(group, version, namespace, plural, name, current)
        return replace(group, version, namespace, plural, name, body, **kw)

    api.replace_namespaced_custom_object = replace_after_another_writer
    done = target.rollback(deployment)

    assert done.startswith("not restored: InferenceService ns/m now carries rollout")
    assert api.stored(NS, "m")["spec"] == kserve.build_inference_service(OTHER)["spec"]


def test_wait_ready_when_deleted_before_the_first_poll():
    api = FakeCustomObjectsApi()
    target = _target(api)
    stored = target.apply(kserve.build_inference_service(SPEC))
    api.objects.clear()  # gone before the first poll
    with pytest.raises(DeployError, match="was deleted while waiting"):
        target.wait_ready(
            "m", NS, generation=stored["metadata"]["generation"], rollout=None, mode="Standard"
        )


def test_gpu_placement_reaches_the_predictor_pods():
    spec = SPEC.model_copy(
        update={
            "placement": Placement(
                accelerator_count=2,
                tolerations=[Toleration(key="nvidia.com/gpu", operator="Exists")],
                node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                steps={"serve": {"cpu": "12", "memory": "96Gi"}},
            )
        }
    )
    api, apps, _ = kserve_cluster()
    _target(api, apps).deploy(spec)
    pod = apps.stored(NS, "m-predictor")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == vllm_args(spec)  # runtime args + InferenceService args
    assert "--tensor-parallel-size=2" in container["args"]
    assert container["resources"]["requests"] == {
        "cpu": "12",
        "memory": "96Gi",
        "nvidia.com/gpu": "2",
    }
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def test_raw_deployment_mode_also_waits_for_the_rollout():
    old = SPEC.model_copy(update={"deployment_mode": "RawDeployment"})
    new = NEW.model_copy(update={"deployment_mode": "RawDeployment"})
    api, apps, controller = kserve_cluster(ready_after=3)
    _seed(api, controller, old)
    deployment = _target(api, apps).deploy(new)
    assert deployment.details["deployment_mode"] == "RawDeployment"
    assert controller.history[-1].rolled_out
    assert set(controller.history[-1].serving) == {stamp(new)}
    assert api.stored(NS, "m")["status"]["deploymentMode"] == "RawDeployment"


@pytest.mark.parametrize("verb", ["get", "create"])
def test_forbidden_names_rbac_fix(verb):
    api, apps, _ = kserve_cluster()
    api.fail(verb, 403)
    with pytest.raises(DeployError) as info:
        _target(api, apps).deploy(SPEC)
    message = str(info.value)
    assert "forbidden" in message and "HTTP 403" in message
    assert "manifests/base/rbac.yaml" in message and "modelgate-deployer" in message
    assert f'cannot {verb} resource "inferenceservices"' in message
    assert isinstance(info.value.__cause__, ApiException)


def test_forbidden_deployment_read_names_rbac_fix_before_changing_anything():
    api, apps, _ = kserve_cluster()
    apps.fail("read", 403)
    with pytest.raises(DeployError) as info:
        _target(api, apps).deploy(SPEC)
    message = str(info.value)
    assert "reading Deployment ns/m-predictor: forbidden" in message
    assert 'cannot get resource "deployments"' in message and "modelgate-deployer" in message
    assert api.stored(NS, "m") is None


def test_forbidden_on_update():
    api, apps, controller = kserve_cluster()
    _seed(api, controller, SPEC)
    api.fail("replace", 403)
    with pytest.raises(DeployError, match="updating InferenceService ns/m: forbidden"):
        _target(api, apps).deploy(NEW)


def test_server_error_keeps_cause():
    api, apps, _ = kserve_cluster()
    api.fail("create", 500, "etcdserver: request timed out")
    with pytest.raises(DeployError, match="HTTP 500: etcdserver: request timed out") as info:
        _target(api, apps).deploy(SPEC)
    assert isinstance(info.value.__cause__, ApiException)
    assert info.value.__cause__.status == 500


def test_conflict_on_replace_is_retried():
    api, apps, controller = kserve_cluster()
    _seed(api, controller, SPEC)
    api.fail("replace", 409)
    deployment = _target(api, apps).deploy(NEW)
    assert _verbs(api) == ["replace", "replace"]
    assert deployment.details["generation"] == 2
    assert controller.history[-1].rolled_out


def test_create_race_409_then_replace():
    api, apps, controller = kserve_cluster()
    api.fail("create", 409)  # someone created it between our GET and POST
    original_get = api.get_namespaced_custom_object
    gets = []

    def get(*a, **kw):  # GETs: deploy's look at the old spec, apply's, then the retry's
        gets.append(1)
        if len(gets) == 3:
            _seed(api, controller, SPEC.model_copy(update={"dtype": "half"}), settle=False)
        return original_get(*a, **kw)

    api.get_namespaced_custom_object = get
    deployment = _target(api, apps).deploy(SPEC)
    assert _verbs(api) == ["replace"]  # after ours (409) and the seed, cleared by _seed
    assert deployment.details["generation"] == 2
    assert controller.history[-1].rolled_out


def test_teardown_deletes_and_is_idempotent():
    api, apps, _ = kserve_cluster()
    target = _target(api, apps)
    deployment = target.deploy(SPEC)
    target.teardown(deployment)
    assert api.stored(NS, "m") is None
    target.teardown(deployment)  # 404 is fine
    assert _verbs(api).count("delete") == 2


def test_teardown_forbidden():
    api = FakeCustomObjectsApi()
    api.fail("delete", 403)
    deployment = Deployment("kserve", "m", "http://x", "m", 0.0, {"namespace": NS})
    with pytest.raises(DeployError, match="rbac"):
        _target(api).teardown(deployment)


def test_server_dry_run_stores_nothing():
    api = FakeCustomObjectsApi()
    obj = _target(api).server_dry_run(SPEC)
    assert obj["spec"]["predictor"]["model"]["storageUri"] == SPEC.storage_uri
    assert api.objects == {}


def test_server_dry_run_rejection_names_the_object():
    api = FakeCustomObjectsApi()
    api.fail("create", 422, "spec.predictor.model.storageUri: Invalid value")
    with pytest.raises(DeployError, match=r"dry-run create of InferenceService ns/m: HTTP 422"):
        _target(api).server_dry_run(SPEC)


def test_webhook_refusal_is_not_reported_as_missing_rbac():
    # controller-runtime answers a validating webhook's refusal with 403 (admission.Denied)
    api = FakeCustomObjectsApi()
    api.fail("create", 403, 'admission webhook "x.kserve" denied the request: canary[0] bad')
    with pytest.raises(DeployError) as info:
        _target(api).server_dry_run(SPEC)
    message = str(info.value)
    assert "refused by KServe's admission webhook" in message and "canary[0] bad" in message
    assert "rbac" not in message.lower()


def test_default_apis_fall_back_to_kubeconfig(monkeypatch):
    from kubernetes import client, config

    calls = []

    def incluster():
        calls.append("incluster")
        raise config.ConfigException("not in a pod")

    monkeypatch.setattr(config, "load_incluster_config", incluster)
    monkeypatch.setattr(config, "load_kube_config", lambda: calls.append("kubeconfig"))
    target = kserve.KServeTarget()
    assert calls == ["incluster", "kubeconfig"]
    assert isinstance(target.api, client.CustomObjectsApi)
    assert isinstance(target.apps, client.AppsV1Api)
    assert isinstance(target.core, client.CoreV1Api)  # the new pods' events


def test_default_apis_without_credentials(monkeypatch):
    from kubernetes import config

    def fail(*_a, **_kw):
        raise config.ConfigException("nothing")

    monkeypatch.setattr(config, "load_incluster_config", fail)
    monkeypatch.setattr(config, "load_kube_config", fail)
    with pytest.raises(ConfigError, match="KUBECONFIG"):
        kserve.KServeTarget()


# ---------------------------------------------------------------------------------------------
# Knative mode: the InferenceService's own observedGeneration (ScriptedController)
# ---------------------------------------------------------------------------------------------

KN = SPEC.model_copy(update={"deployment_mode": "Knative"})


def _ready(name="m", **kw):
    return isvc_status(ready=True, generation="current", name=name, namespace=NS, **kw)


def _pending(message="Configuration is waiting for a Revision"):
    return isvc_status(ready=False, generation="current", namespace=NS, message=message)


def _knative(steps, **kw):
    apps = FakeAppsV1Api()
    apps.fail("read", 500, "Knative mode must not read the predictor Deployment")
    api = FakeCustomObjectsApi(ScriptedController(steps))
    return api, apps, _target(api, apps, **kw)


def _seed_knative(api: FakeCustomObjectsApi, spec: DeploySpec, status: dict) -> None:
    api.create_namespaced_custom_object(G, V, NS, P, kserve.build_inference_service(spec))
    api.set_status(G, V, NS, P, spec.name, status)
    api.calls.clear()


def test_knative_create_waits_for_ready_of_the_new_generation():
    api, apps, target = _knative([None, _pending(), _pending(), _ready()])
    deployment = target.deploy(KN)
    assert api.controller.index == 4  # waited through the pending steps
    assert deployment.details["deployment_mode"] == "Knative"
    assert deployment.endpoint == "http://m-predictor.ns.svc.cluster.local"
    assert apps.calls == []  # no Deployment involved


def test_knative_update_ignores_ready_of_the_old_generation():
    old = KN.model_copy(update={"max_model_len": 1024})
    api, apps, target = _knative([None])
    _seed_knative(api, old, isvc_status(ready=True, generation=1, name="m", namespace=NS))
    stale_ready = isvc_status(ready=True, generation=1, name="m", namespace=NS)
    api.controller = controller = ScriptedController([None, stale_ready, _pending(), _ready()])

    deployment = target.deploy(KN)

    assert deployment.details["generation"] == 2
    assert controller.index == 4  # the stale Ready for generation 1 was not accepted
    assert _verbs(api) == ["replace"]


def test_knative_failure_of_the_previous_generation_is_not_fatal():
    failed = {
        "observedGeneration": 1,
        "conditions": [condition("Ready", "False", "RevisionFailed", "old spec broke")],
    }
    api, apps, target = _knative([None])
    _seed_knative(api, KN.model_copy(update={"dtype": "half"}), failed)
    api.controller = ScriptedController([None, failed, _ready()])
    assert target.deploy(KN).details["generation"] == 2


def test_knative_ready_without_observed_generation_is_not_trusted():
    """It may describe the previous spec; KServe copies Knative's observedGeneration."""
    status = isvc_status(ready=True, generation=None, name="m", namespace=NS)
    _, _, target = _knative([status], timeout=0.02)
    with pytest.raises(
        DeployTimeoutError, match=r"generation 1 not observed yet \(observed None\)"
    ):
        target.deploy(KN)


def test_knative_timeout_names_last_conditions():
    _, _, target = _knative([_pending("Configuration is waiting")])
    with pytest.raises(DeployTimeoutError) as info:
        target.timeout = 0.05
        target.deploy(KN)
    message = str(info.value)
    assert "ns/m (generation 1)" in message
    assert "Ready=False" in message and "Configuration is waiting" in message
    assert "deleted the new InferenceService" in message
    assert isinstance(info.value, TimeoutError)


@pytest.mark.parametrize(
    "status, expected",
    [
        (
            {
                "observedGeneration": "current",
                "conditions": [
                    condition(
                        "PredictorReady",
                        "False",
                        "RevisionFailed",
                        'Revision "m-predictor-00001" failed with message: '
                        "Container failed with: OOMKilled",
                    ),
                    condition("Ready", "False", "RevisionFailed"),
                ],
            },
            "RevisionFailed.*OOMKilled",
        ),
        (
            {
                "observedGeneration": "current",
                "conditions": [condition("Ready", "False")],
                "modelStatus": {
                    "transitionStatus": "BlockedByFailedLoad",
                    "lastFailureInfo": {
                        "reason": "ModelLoadFailed",
                        "message": "vLLM exited: CUDA out of memory",
                    },
                },
            },
            "BlockedByFailedLoad: ModelLoadFailed: vLLM exited: CUDA out of memory",
        ),
        (
            {
                "observedGeneration": "current",
                "conditions": [condition("Ready", "False")],
                "modelStatus": {
                    "transitionStatus": "InvalidSpec",
                    "lastFailureInfo": {
                        "reason": "NoSupportingRuntime",
                        "message": "no runtime supports vLLM",
                    },
                },
            },
            "InvalidSpec: NoSupportingRuntime",
        ),
        (
            {
                "observedGeneration": "current",
                "conditions": [
                    condition(
                        "PredictorReady",
                        "False",
                        "ProgressDeadlineExceeded",
                        "ReplicaSet has timed out progressing.",
                    )
                ],
            },
            "ProgressDeadlineExceeded",
        ),
        (
            {
                "observedGeneration": "current",
                "conditions": [condition("Failed", "True", "X", "y")],
            },
            r"Failed=True \(X\): y",
        ),
    ],
)
def test_knative_failure_conditions_fail_fast(status, expected):
    api, _, target = _knative([_pending(), status], timeout=60)
    with pytest.raises(DeployError, match=expected) as info:
        target.deploy(KN)
    assert not isinstance(info.value, DeployTimeoutError)
    assert api.controller.index == 3  # two polls, then the restore's read before deleting


def test_endpoint_can_prefer_status_url():
    _, _, target = _knative([_ready()], endpoint="url")
    assert target.deploy(KN).endpoint == "http://m-ns.example.com"


def test_endpoint_falls_back_to_status_url():
    status = _ready()
    status.pop("address")
    _, _, target = _knative([status])
    assert target.deploy(KN).endpoint == "http://m-ns.example.com"


def test_ready_without_any_url_is_an_error():
    _, _, target = _knative([_ready(url=False)])
    with pytest.raises(DeployError, match="neither status.address.url nor status.url"):
        target.deploy(KN)


# ---------------------------------------------------------------------------------------------
# The doubles themselves behave like the API server and KServe
# ---------------------------------------------------------------------------------------------


def test_double_api_server_semantics():
    api = FakeCustomObjectsApi()
    with pytest.raises(ApiException) as e:
        api.get_namespaced_custom_object(G, V, NS, P, "m")
    assert e.value.status == 404 and json.loads(e.value.body)["reason"] == "NotFound"

    body = kserve.build_inference_service(SPEC)
    body["status"] = {"conditions": [condition("Ready", "True")]}
    created = api.create_namespaced_custom_object(G, V, NS, P, body)
    assert created["metadata"]["generation"] == 1 and created["status"] == {}
    with pytest.raises(ApiException) as e:
        api.create_namespaced_custom_object(G, V, NS, P, body)
    assert e.value.status == 409

    rv1 = created["metadata"]["resourceVersion"]
    api.set_status(G, V, NS, P, "m", {"observedGeneration": 1})
    after_status = api.get_namespaced_custom_object(G, V, NS, P, "m")
    assert after_status["metadata"]["generation"] == 1
    assert after_status["metadata"]["resourceVersion"] != rv1

    labelled = api.patch_namespaced_custom_object(
        G, V, NS, P, "m", {"metadata": {"labels": {"x": "y"}}}
    )
    assert labelled["metadata"]["generation"] == 1  # metadata-only change
    spec_patch = api.patch_namespaced_custom_object(
        G, V, NS, P, "m", {"spec": {"predictor": {"nodeSelector": {"a": "b"}}}}
    )
    assert spec_patch["metadata"]["generation"] == 2
    assert spec_patch["spec"]["predictor"]["model"]["runtime"] == "vllm-runtime"  # merged

    stale = copy.deepcopy(created)
    with pytest.raises(ApiException) as e:
        api.replace_namespaced_custom_object(G, V, NS, P, "m", stale)
    assert e.value.status == 409
    no_rv = copy.deepcopy(spec_patch)
    del no_rv["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as e:
        api.replace_namespaced_custom_object(G, V, NS, P, "m", no_rv)
    assert e.value.status == 422

    bad = kserve.build_inference_service(SPEC)
    del bad["apiVersion"]  # what a restore without apiVersion/kind would send
    with pytest.raises(ApiException) as e:
        api.create_namespaced_custom_object(G, V, NS, P, {**bad, "metadata": {"name": "x"}})
    assert e.value.status == 400

    api.delete_namespaced_custom_object(G, V, NS, P, "m")
    with pytest.raises(ApiException) as e:
        api.delete_namespaced_custom_object(G, V, NS, P, "m")
    assert e.value.status == 404


def test_double_apps_api_returns_real_models():
    api, apps, controller = kserve_cluster()
    with pytest.raises(ApiException) as e:
        apps.read_namespaced_deployment("m-predictor", NS)
    assert e.value.status == 404 and "not found" in json.loads(e.value.body)["message"]

    _seed(api, controller, SPEC)
    dep = apps.read_namespaced_deployment("m-predictor", NS)
    assert isinstance(dep, V1Deployment)
    assert dep.spec.template.metadata.annotations[kserve.ROLLOUT_ANNOTATION] == stamp(SPEC)
    assert dep.status.observed_generation == dep.metadata.generation == 1
    assert dep.status.updated_replicas == dep.status.available_replicas == 1
    assert {c.type: c.status for c in dep.status.conditions} == {
        "Available": "True",
        "Progressing": "True",
    }
    dep.spec.replicas = 7  # a copy: the store is untouched
    assert apps.stored(NS, "m-predictor")["spec"]["replicas"] == 1

    apps.fail("read", 403)
    with pytest.raises(ApiException) as e:
        apps.read_namespaced_deployment("m-predictor", NS)
    assert e.value.status == 403
    assert apps.calls[-1] == ("read", NS, "m-predictor")


def test_double_kserve_keeps_available_true_while_old_pods_serve():
    api, _, controller = kserve_cluster(ready_after=3)
    _seed(api, controller, SPEC)
    body = copy.deepcopy(api.stored(NS, "m"))
    body["spec"] = kserve.build_inference_service(NEW)["spec"]
    api.replace_namespaced_custom_object(G, V, NS, P, "m", body)
    start = len(controller.history)
    final = controller.settle(api, NS, "m")

    rollout = controller.history[start:]
    assert rollout[0].stamp == stamp(NEW) and rollout[0].observed_generation == 1  # not seen yet
    assert all(s.available_condition == "True MinimumReplicasAvailable" for s in rollout)
    assert all(s.isvc_ready == "True" for s in rollout)  # KServe's Standard-mode readiness
    assert all(  # KServe copies the Deployment's observedGeneration, not the ISVC's
        s.isvc_observed_generation == s.observed_generation for s in rollout
    )
    assert all(s.serving for s in rollout)  # never without a serving pod
    assert final.stamp == stamp(NEW) and final.serving == (stamp(NEW),)
    status = api.stored(NS, "m")["status"]
    assert status["modelStatus"]["transitionStatus"] == "UpToDate"
    assert status["url"] == "http://m-ns.example.com"


def test_double_kserve_rejects_unknown_failures_and_knative():
    with pytest.raises(ValueError, match="unknown failure"):
        KServeController(FakeAppsV1Api(), failures={"x": "oops"})
    api, _, _ = kserve_cluster()
    api.create_namespaced_custom_object(G, V, NS, P, kserve.build_inference_service(KN))
    with pytest.raises(AssertionError, match="not 'Knative'"):
        api.get_namespaced_custom_object(G, V, NS, P, "m")
