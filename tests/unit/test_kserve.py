"""modelgate.kserve: InferenceService building, strict CRD validation, and KServeTarget."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
from kubernetes.client.exceptions import ApiException

from modelgate import kserve
from modelgate.deploy import Deployment, DeploySpec, DeployTarget, vllm_args
from modelgate.errors import ConfigError, DeployError, DeployTimeoutError
from tests.doubles.kube import FakeCustomObjectsApi, ScriptedController, condition, isvc_status

pytestmark = pytest.mark.unit

NS = "ns"


@pytest.fixture(scope="session")
def isvc_validator() -> jsonschema.Draft4Validator:
    """The v0.20.0 InferenceService v1beta1 schema, strict, loaded once per session."""
    schema = kserve.strict_schema(kserve.load_crd_schema(kserve.ISVC_CRD_FILE, "v1beta1"))
    return jsonschema.Draft4Validator(schema)


def _errors(validator: jsonschema.Draft4Validator, obj: dict) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


SPECS = {
    "gpu": DeploySpec(name="tiny-llama-fp8", namespace=NS, storage_uri="model-registry://tiny/v1"),
    "cpu-only": DeploySpec(
        name="tiny-cpu",
        namespace=NS,
        storage_uri="pvc://modelgate-models/tiny",
        accelerator_count=0,
    ),
    "tolerations": DeploySpec(
        name="tol",
        namespace=NS,
        storage_uri="hf://org/model",
        accelerator_count=2,
        tolerations=[
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {
                "key": "pool",
                "operator": "Equal",
                "value": "llm",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
    ),
    "node-selector": DeploySpec(
        name="pinned",
        namespace=NS,
        storage_uri="s3://bucket/model",
        node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
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
        accelerator_resource="amd.com/gpu",
    ),
}


# ---------------------------------------------------------------------------------------------
# build_inference_service + schema
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(SPECS))
def test_built_isvc_matches_strict_crd_schema(key, isvc_validator):
    isvc = kserve.build_inference_service(SPECS[key])
    assert _errors(isvc_validator, isvc) == []
    kserve.validate_inference_service(isvc)  # the library path agrees


def test_isvc_shape_for_gpu_spec():
    spec = SPECS["node-selector"]
    isvc = kserve.build_inference_service(spec)
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    meta = isvc["metadata"]
    assert (meta["name"], meta["namespace"]) == ("pinned", NS)
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "modelgate"
    assert meta["labels"]["team"] == "llm"
    assert meta["annotations"] == {"note": "x", "serving.kserve.io/deploymentMode": "RawDeployment"}
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
    assert model["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
    }
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert predictor["serviceAccountName"] == "modelgate-pipeline"
    assert "tolerations" not in predictor


def test_no_gpu_omits_accelerator_and_optional_fields():
    predictor = kserve.build_inference_service(SPECS["cpu-only"])["spec"]["predictor"]
    resources = predictor["model"]["resources"]
    assert resources["limits"] == {"cpu": "4", "memory": "16Gi"}
    assert resources["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert set(predictor) == {"model"}  # no tolerations/nodeSelector/serviceAccountName
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
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_other_accelerator_resource():
    limits = kserve.build_inference_service(SPECS["amd"])["spec"]["predictor"]["model"]["resources"]
    assert limits["limits"]["amd.com/gpu"] == "1" and "nvidia.com/gpu" not in limits["limits"]


def test_misspelled_field_fails_strict_validation(isvc_validator):
    isvc = kserve.build_inference_service(SPECS["gpu"])
    model = isvc["spec"]["predictor"]["model"]
    model["storageURI"] = model.pop("storageUri")
    errors = _errors(isvc_validator, isvc)
    assert any("storageURI" in e and e.startswith("spec.predictor.model") for e in errors), errors
    with pytest.raises(ConfigError, match=r"spec\.predictor\.model: .*'storageURI' was unexpected"):
        kserve.validate_inference_service(isvc)


def test_unstrict_schema_would_let_the_typo_through():
    """Why strict_schema exists: the CRD as published accepts (and the server prunes) typos."""
    isvc = kserve.build_inference_service(SPECS["gpu"])
    isvc["spec"]["predictor"]["model"]["storageURI"] = "s3://x"
    loose = jsonschema.Draft4Validator(kserve.load_crd_schema(kserve.ISVC_CRD_FILE, "v1beta1"))
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
    ],
)
def test_strict_validation_catches(mutate, expected):
    isvc = kserve.build_inference_service(SPECS["gpu"])
    mutate(isvc)
    with pytest.raises(ConfigError) as info:
        kserve.validate_inference_service(isvc)
    assert expected in str(info.value)


def test_validate_rejects_other_kinds():
    isvc = kserve.build_inference_service(SPECS["gpu"])
    isvc["apiVersion"] = "serving.kserve.io/v1alpha1"
    with pytest.raises(ConfigError, match="expected apiVersion serving.kserve.io/v1beta1"):
        kserve.validate_inference_service(isvc)


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
    strict = kserve.strict_schema(schema)
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


def test_schemas_dir_env_override(monkeypatch, tmp_path):
    real = kserve.schemas_dir()
    monkeypatch.setenv(kserve.SCHEMAS_DIR_ENV, str(real))
    assert kserve.schemas_dir() == real
    monkeypatch.setenv(kserve.SCHEMAS_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="MODELGATE_SCHEMAS_DIR"):
        kserve.validate_inference_service(kserve.build_inference_service(SPECS["gpu"]))
    monkeypatch.setenv(kserve.SCHEMAS_DIR_ENV, str(tmp_path))
    with pytest.raises(ConfigError, match="not found"):
        kserve.load_crd_schema(kserve.ISVC_CRD_FILE, "v1beta1")


def test_load_crd_schema_unknown_version():
    with pytest.raises(ConfigError, match="no version 'v1'"):
        kserve.load_crd_schema(kserve.ISVC_CRD_FILE, "v1")


def test_load_crd_schema_is_cached():
    a = kserve.load_crd_schema(kserve.ISVC_CRD_FILE, "v1beta1")
    b = kserve.load_crd_schema("serving.kserve.io_inferenceservices.yaml", "v1beta1")
    assert a is b


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
# KServeTarget against the API double
# ---------------------------------------------------------------------------------------------


def _target(api: FakeCustomObjectsApi, **kw) -> kserve.KServeTarget:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("poll_interval", 0.001)
    return kserve.KServeTarget(api, **kw)


def _ready(name="m", **kw):
    return isvc_status(ready=True, generation="current", name=name, namespace=NS, **kw)


def _pending(
    reason="MinimumReplicasUnavailable",
    message="Deployment does not have minimum availability.",
    generation="current",
):
    return isvc_status(
        ready=False, generation=generation, namespace=NS, reason=reason, message=message
    )


SPEC = DeploySpec(name="m", namespace=NS, storage_uri="model-registry://m/1")


def test_target_satisfies_protocol():
    target: DeployTarget = _target(FakeCustomObjectsApi())
    assert target.name == "kserve"
    assert callable(target.deploy) and callable(target.teardown)


def test_deploy_creates_and_waits_for_ready():
    controller = ScriptedController([None, _pending(), _pending(), _ready()])
    api = FakeCustomObjectsApi(controller)
    deployment = _target(api).deploy(SPEC, model_dir="/ignored")

    assert isinstance(deployment, Deployment)
    assert deployment.target == "kserve"
    assert deployment.name == deployment.model == "m"
    assert deployment.endpoint == "http://m-predictor.ns.svc.cluster.local"
    assert deployment.details["namespace"] == NS
    assert deployment.details["generation"] == 1
    assert deployment.details["url"] == "http://m-ns.example.com"
    assert [c[0] for c in api.calls].count("create") == 1
    assert controller.index == 4  # waited through the pending steps
    stored = api.stored(NS, "m")
    assert stored["spec"] == kserve.build_inference_service(SPEC)["spec"]


def test_endpoint_can_prefer_status_url():
    api = FakeCustomObjectsApi(ScriptedController([_ready()]))
    assert _target(api, endpoint="url").deploy(SPEC).endpoint == "http://m-ns.example.com"


def test_endpoint_falls_back_to_status_url():
    status = _ready()
    status.pop("address")
    api = FakeCustomObjectsApi(ScriptedController([status]))
    assert _target(api).deploy(SPEC).endpoint == "http://m-ns.example.com"


def test_ready_without_any_url_is_an_error():
    api = FakeCustomObjectsApi(ScriptedController([_ready(url=False)]))
    with pytest.raises(DeployError, match="neither status.address.url nor status.url"):
        _target(api).deploy(SPEC)


def _seed(api: FakeCustomObjectsApi, spec: DeploySpec, status: dict | None = None) -> dict:
    body = kserve.build_inference_service(spec)
    body["metadata"]["annotations"]["other.io/keep"] = "yes"  # someone else's annotation
    body["metadata"]["finalizers"] = ["inferenceservice.finalizers"]
    obj = api.create_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", NS, "inferenceservices", body
    )
    if status is not None:
        api.set_status("serving.kserve.io", "v1beta1", NS, "inferenceservices", spec.name, status)
    return obj


def test_deploy_updates_existing_and_ignores_status_of_old_generation():
    old = SPEC.model_copy(update={"node_selector": {"pool": "a"}, "max_model_len": 1024})
    api = FakeCustomObjectsApi()
    _seed(api, old, isvc_status(ready=True, generation=1, name="m", namespace=NS))
    api.calls.clear()
    # The controller first still reports Ready for generation 1, then catches up.
    stale_ready = isvc_status(ready=True, generation=1, name="m", namespace=NS)
    controller = ScriptedController([None, stale_ready, _pending(), _ready()])
    api.controller = controller

    deployment = _target(api).deploy(SPEC)

    stored = api.stored(NS, "m")
    assert stored["metadata"]["generation"] == 2
    assert deployment.details["generation"] == 2
    assert "nodeSelector" not in stored["spec"]["predictor"]  # dropped fields really go away
    assert stored["spec"]["predictor"]["model"]["args"] == []
    assert stored["metadata"]["annotations"]["other.io/keep"] == "yes"
    assert stored["metadata"]["finalizers"] == ["inferenceservice.finalizers"]
    assert [c[0] for c in api.calls if c[0] != "get"] == ["replace"]
    assert controller.index == 4  # the stale Ready for generation 1 was not accepted


def test_redeploying_same_spec_does_not_bump_generation():
    api = FakeCustomObjectsApi()
    _seed(api, SPEC, isvc_status(ready=True, generation=1, name="m", namespace=NS))
    rv = api.stored(NS, "m")["metadata"]["resourceVersion"]
    deployment = _target(api).deploy(SPEC)
    assert deployment.details["generation"] == 1
    assert api.stored(NS, "m")["metadata"]["resourceVersion"] == rv


def test_conflict_on_replace_is_retried():
    api = FakeCustomObjectsApi()
    _seed(api, SPEC.model_copy(update={"dtype": "half"}))
    api.controller = ScriptedController([None, _ready()])
    api.fail("replace", 409)
    deployment = _target(api).deploy(SPEC)
    assert [c[0] for c in api.calls].count("replace") == 2
    assert deployment.details["generation"] == 2


def test_create_race_409_then_replace():
    api = FakeCustomObjectsApi(ScriptedController([None, _ready()]))
    api.fail("create", 409)  # someone created it between our GET and POST
    original_get = api.get_namespaced_custom_object
    state = {"n": 0}

    def get(*a, **kw):  # GETs: deploy's look at the old spec, apply's, then the retry's
        state["n"] += 1
        if state["n"] == 3:
            _seed(api, SPEC.model_copy(update={"dtype": "half"}))
        return original_get(*a, **kw)

    api.get_namespaced_custom_object = get
    deployment = _target(api).deploy(SPEC)
    verbs = [c[0] for c in api.calls if c[0] in ("create", "replace")]
    assert verbs == ["create", "create", "replace"]  # ours(409), the seed, our retry's replace
    assert deployment.details["generation"] == 2


def test_timeout_names_last_conditions():
    api = FakeCustomObjectsApi(ScriptedController([_pending()]))
    with pytest.raises(DeployTimeoutError) as info:
        _target(api, timeout=0.05, poll_interval=0.005).deploy(SPEC)
    message = str(info.value)
    assert "ns/m" in message and "generation 1" in message
    assert "PredictorReady=False (MinimumReplicasUnavailable)" in message
    assert "Deployment does not have minimum availability" in message
    assert isinstance(info.value, TimeoutError)


def test_timeout_without_any_status_says_so():
    api = FakeCustomObjectsApi()
    with pytest.raises(DeployTimeoutError, match="no status reported yet"):
        _target(api, timeout=0.02, poll_interval=0.005).deploy(SPEC)


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
def test_failure_conditions_fail_fast(status, expected):
    controller = ScriptedController([_pending(), status])
    api = FakeCustomObjectsApi(controller)
    with pytest.raises(DeployError, match=expected) as info:
        _target(api, timeout=60, poll_interval=0.001).deploy(SPEC)
    assert not isinstance(info.value, DeployTimeoutError)
    assert controller.index == 2


def test_failure_of_previous_generation_is_not_fatal():
    api = FakeCustomObjectsApi()
    failed = {
        "observedGeneration": 1,
        "conditions": [condition("Ready", "False", "RevisionFailed", "old spec broke")],
    }
    _seed(api, SPEC.model_copy(update={"dtype": "half"}), failed)
    api.controller = ScriptedController([None, failed, _ready()])
    assert _target(api).deploy(SPEC).details["generation"] == 2


def test_missing_observed_generation_is_tolerated():
    status = isvc_status(ready=True, generation=None, name="m", namespace=NS)
    api = FakeCustomObjectsApi(ScriptedController([status]))
    assert _target(api).deploy(SPEC).endpoint.endswith("svc.cluster.local")


def test_deleted_while_waiting():
    api = FakeCustomObjectsApi()
    target = _target(api)
    stored = target.apply(kserve.build_inference_service(SPEC))
    api.objects.clear()  # gone before the first poll
    with pytest.raises(DeployError, match="was deleted while waiting"):
        target.wait_ready("m", NS, stored["metadata"]["generation"])


@pytest.mark.parametrize("verb", ["get", "create"])
def test_forbidden_names_rbac_fix(verb):
    api = FakeCustomObjectsApi(ScriptedController([_ready()]))
    api.fail(verb, 403)
    with pytest.raises(DeployError) as info:
        _target(api).deploy(SPEC)
    message = str(info.value)
    assert "forbidden" in message and "HTTP 403" in message
    assert "manifests/base/rbac.yaml" in message and "modelgate-pipeline" in message
    assert f'cannot {verb} resource "inferenceservices"' in message
    assert isinstance(info.value.__cause__, ApiException)


def test_forbidden_on_update():
    api = FakeCustomObjectsApi()
    _seed(api, SPEC.model_copy(update={"dtype": "half"}))
    api.fail("replace", 403)
    with pytest.raises(DeployError, match="updating InferenceService ns/m: forbidden"):
        _target(api).deploy(SPEC)


def test_server_error_keeps_cause():
    api = FakeCustomObjectsApi()
    api.fail("create", 500, "etcdserver: request timed out")
    with pytest.raises(DeployError, match="HTTP 500: etcdserver: request timed out") as info:
        _target(api).deploy(SPEC)
    assert isinstance(info.value.__cause__, ApiException)
    assert info.value.__cause__.status == 500


def test_teardown_deletes_and_is_idempotent():
    api = FakeCustomObjectsApi(ScriptedController([_ready()]))
    target = _target(api)
    deployment = target.deploy(SPEC)
    target.teardown(deployment)
    assert api.stored(NS, "m") is None
    target.teardown(deployment)  # 404 is fine
    assert [c[0] for c in api.calls].count("delete") == 2


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


def test_default_api_falls_back_to_kubeconfig(monkeypatch):
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


def test_default_api_without_credentials(monkeypatch):
    from kubernetes import config

    def fail(*_a, **_kw):
        raise config.ConfigException("nothing")

    monkeypatch.setattr(config, "load_incluster_config", fail)
    monkeypatch.setattr(config, "load_kube_config", fail)
    with pytest.raises(ConfigError, match="KUBECONFIG"):
        kserve.KServeTarget()


# ---------------------------------------------------------------------------------------------
# The double itself behaves like the API server
# ---------------------------------------------------------------------------------------------

G, V, P = "serving.kserve.io", "v1beta1", "inferenceservices"


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

    api.delete_namespaced_custom_object(G, V, NS, P, "m")
    with pytest.raises(ApiException) as e:
        api.delete_namespaced_custom_object(G, V, NS, P, "m")
    assert e.value.status == 404


def test_failed_new_deployment_is_deleted():
    api = FakeCustomObjectsApi(ScriptedController([_pending()]))
    with pytest.raises(DeployTimeoutError, match="deleted the new InferenceService ns/m"):
        _target(api, timeout=0.05, poll_interval=0.005).deploy(SPEC)
    assert api.stored(NS, "m") is None


def test_failed_update_restores_previous_spec():
    old = SPEC.model_copy(update={"max_model_len": 1024})
    api = FakeCustomObjectsApi()
    _seed(api, old, isvc_status(ready=True, generation=1, name="m", namespace=NS))
    old_spec = copy.deepcopy(api.stored(NS, "m")["spec"])
    failed = {
        "observedGeneration": "current",
        "conditions": [condition("Ready", "False", "RevisionFailed", "bad weights")],
    }
    api.controller = ScriptedController([None, failed])
    with pytest.raises(DeployError, match="restored the previous spec"):
        _target(api, timeout=60, poll_interval=0.001).deploy(SPEC)
    assert api.stored(NS, "m")["spec"] == old_spec


def test_rollback_after_a_failed_smoke_test():
    api = FakeCustomObjectsApi(ScriptedController([None, _ready()]))
    target = _target(api)
    deployment = target.deploy(SPEC)
    assert deployment.details["previous_spec"] is None
    assert "deleted" in target.rollback(deployment)
    assert api.stored(NS, "m") is None
