"""modelgate.deploy.llmisvc: LLMInferenceService building, strict CRD validation and the target.

The target runs against ``tests.doubles.llmisvc``: the API server double plus
:class:`~tests.doubles.llmisvc.LLMISVCController`, which plays KServe v0.20's LLMInferenceService
reconciler over the Deployment controller of ``tests.doubles.kube`` (``MainWorkloadReady`` and
``Ready`` stay True while old pods serve an update, as ``propagateDeploymentStatus`` copies the
Deployment's ``Available``).
"""

from __future__ import annotations

import copy
import json
import os
import signal
from dataclasses import asdict

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from typer.testing import CliRunner

from modelgate.cli import app
from modelgate.deploy import Deployment, DeploySpec, DeployTarget, crd, llmisvc, make_target
from modelgate.deploy.kube import ROLLOUT_ANNOTATION
from modelgate.deploy.spec import vllm_args
from modelgate.errors import ConfigError, DeployError, DeployTimeoutError
from modelgate.images import VLLM_CPU_IMAGE
from modelgate.placement import Placement, Toleration
from tests.doubles.kube import FakeAppsV1Api, FakeCustomObjectsApi
from tests.doubles.llmisvc import LLMISVCController, llmisvc_cluster, template_command

pytestmark = pytest.mark.unit

NS = "ns"
G, V, P = "serving.kserve.io", "v1alpha2", "llminferenceservices"
runner = CliRunner()


def stamp(spec: DeploySpec) -> str:
    return llmisvc.build_llm_inference_service(spec)["spec"]["annotations"][ROLLOUT_ANNOTATION]


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------

SPECS = {
    "cpu": DeploySpec(
        name="tiny-cpu",
        namespace=NS,
        storage_uri="s3://bucket/tiny",
        placement=Placement(accelerator_count=0),
    ),
    "one-gpu": DeploySpec(name="one", namespace=NS, storage_uri="hf://org/model"),
    "four-gpus": DeploySpec(
        name="four",
        namespace=NS,
        storage_uri="pvc://models/llama-70b",
        placement=Placement(accelerator_count=4),
        max_model_len=8192,
    ),
    "tolerations": DeploySpec(
        name="tol",
        namespace=NS,
        storage_uri="oci://registry.example.com/models/m:1",
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
        storage_uri="oci+native://registry.example.com/models/m:1",
        placement=Placement(node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}),
        service_account="modelgate-model-reader",
        dtype="bfloat16",
        extra_args=["--gpu-memory-utilization=0.85", "--enforce-eager"],
        labels={"team": "llm"},
        annotations={"note": "x"},
        run_id="run-1",
    ),
    "amd": DeploySpec(
        name="amd",
        namespace=NS,
        storage_uri="s3://bucket/m",
        placement=Placement(accelerator_type="amd.com/gpu", accelerator_count=8),
    ),
}


@pytest.mark.parametrize("key", sorted(SPECS))
def test_built_object_validates_strictly(key):
    obj = llmisvc.build_llm_inference_service(SPECS[key])
    crd.validate_llm_inference_service(obj)
    assert obj["apiVersion"] == "serving.kserve.io/v1alpha2"
    assert obj["kind"] == "LLMInferenceService"
    assert obj["spec"]["model"] == {"uri": SPECS[key].storage_uri, "name": SPECS[key].name}
    assert obj["spec"]["replicas"] == 1
    assert [c["name"] for c in obj["spec"]["template"]["containers"]] == ["main"]


def test_strict_validation_catches_what_the_api_server_would_prune():
    obj = llmisvc.build_llm_inference_service(SPECS["one-gpu"])
    typo = copy.deepcopy(obj)
    typo["spec"]["model"]["url"] = typo["spec"]["model"].pop("uri")
    with pytest.raises(ConfigError, match=r"spec\.model.*'url' was unexpected"):
        crd.validate_llm_inference_service(typo)
    zero = copy.deepcopy(obj)
    zero["spec"]["parallelism"] = {"tensor": 0}  # the CRD's minimum is 1
    with pytest.raises(ConfigError, match=r"spec\.parallelism\.tensor"):
        crd.validate_llm_inference_service(zero)
    with pytest.raises(ConfigError, match="expected apiVersion serving.kserve.io/v1alpha2"):
        crd.validate_llm_inference_service({**obj, "apiVersion": "serving.kserve.io/v1alpha1"})


def _main(obj: dict) -> dict:
    return obj["spec"]["template"]["containers"][0]


def test_cpu_mode_names_vllms_cpu_image_and_a_non_root_user():
    obj = llmisvc.build_llm_inference_service(SPECS["cpu"])
    main = _main(obj)
    assert main["image"] == VLLM_CPU_IMAGE
    assert main["securityContext"] == {"runAsUser": 2000, "runAsGroup": 2000}
    assert "nvidia.com/gpu" not in main["resources"]["limits"]
    assert "parallelism" not in obj["spec"]


def test_one_gpu_keeps_the_templates_image_and_splits_nothing():
    obj = llmisvc.build_llm_inference_service(SPECS["one-gpu"])
    main = _main(obj)
    assert "image" not in main and "securityContext" not in main
    assert main["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "parallelism" not in obj["spec"]


@pytest.mark.parametrize(
    "key, gpus, resource", [("four-gpus", 4, "nvidia.com/gpu"), ("amd", 8, "amd.com/gpu")]
)
def test_gpus_per_replica_are_the_tensor_parallel_size(key, gpus, resource):
    obj = llmisvc.build_llm_inference_service(SPECS[key])
    assert obj["spec"]["parallelism"] == {"tensor": gpus}
    main = _main(obj)
    assert main["resources"]["requests"][resource] == main["resources"]["limits"][resource]
    assert main["resources"]["limits"][resource] == str(gpus)
    # the template passes --tensor-parallel-size from spec.parallelism.tensor itself
    assert not any(a.startswith("--tensor-parallel-size") for a in main.get("args", []))


def test_placement_reaches_the_pod_template():
    tol = llmisvc.build_llm_inference_service(SPECS["tolerations"])["spec"]["template"]
    assert tol["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {
            "key": "pool",
            "operator": "Equal",
            "value": "llm",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
    ]
    assert "nodeSelector" not in tol
    pinned = llmisvc.build_llm_inference_service(SPECS["node-selector"])
    template = pinned["spec"]["template"]
    assert template["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert template["serviceAccountName"] == "modelgate-model-reader"
    assert "tolerations" not in template
    assert pinned["metadata"]["labels"]["team"] == "llm"
    assert pinned["metadata"]["annotations"] == {"note": "x", llmisvc.RUN_ANNOTATION: "run-1"}


@pytest.mark.parametrize("key", sorted(SPECS))
def test_template_flags_plus_args_equal_vllm_args(key):
    """What vLLM receives: the template's own flags (config-llm-template.yaml) + ``args``."""
    spec = SPECS[key]
    obj = llmisvc.build_llm_inference_service(spec)
    tensor = (obj["spec"].get("parallelism") or {}).get("tensor")
    from_template = ["--model=/mnt/models", "--port=8000", f"--served-model-name={spec.name}"]
    if tensor:
        from_template.append(f"--tensor-parallel-size={tensor}")
    received = from_template + _main(obj).get("args", [])
    assert sorted(received) == sorted(vllm_args(spec, port=8000))


def test_the_double_renders_the_same_invocation():
    obj = llmisvc.build_llm_inference_service(SPECS["four-gpus"])
    line = template_command(obj)[2]
    assert "--served-model-name four " in line and "--tensor-parallel-size 4" in line


@pytest.mark.parametrize(
    "arg", ["--model=/other", "--port=9000", "--served-model-name=x", "--tensor-parallel-size=2"]
)
def test_extra_args_may_not_override_template_flags(arg):
    spec = SPECS["one-gpu"].model_copy(update={"extra_args": [arg]})
    with pytest.raises(ConfigError, match="template sets itself"):
        llmisvc.build_llm_inference_service(spec)


def test_model_registry_uri_is_refused_with_the_fix():
    spec = SPECS["one-gpu"].model_copy(update={"storage_uri": "model-registry://tiny/v1"})
    with pytest.raises(ConfigError) as info:
        llmisvc.build_llm_inference_service(spec)
    message = str(info.value)
    assert "resolve it first" in message and "prefer_registry_uri" in message
    assert "hf://, s3://, pvc://, oci://" in message


@pytest.mark.parametrize(
    "update, expected",
    [
        ({"storage_uri": "gs://bucket/m"}, "cannot fetch 'gs://bucket/m'"),
        ({"runtime": "my-runtime"}, "applies to the kserve target only"),
        ({"deployment_mode": "Knative"}, "always runs a Deployment"),
        ({"canary_traffic_percent": 10}, "has no canary"),
    ],
)
def test_what_an_llminferenceservice_cannot_do_is_refused(update, expected):
    with pytest.raises(ConfigError, match=expected):
        llmisvc.build_llm_inference_service(SPECS["one-gpu"].model_copy(update=update))


def test_rollout_stamp_is_a_hash_of_the_spec_only():
    spec = SPECS["four-gpus"]
    obj = llmisvc.build_llm_inference_service(spec)
    body = copy.deepcopy(obj["spec"])
    assert body.pop("annotations") == {ROLLOUT_ANNOTATION: llmisvc.spec_stamp(body)}
    assert llmisvc.stamp_of(obj) == llmisvc.spec_stamp(obj["spec"])  # stamping is idempotent
    assert stamp(spec.model_copy(update={"run_id": "other-run"})) == stamp(spec)
    assert stamp(spec.model_copy(update={"max_model_len": 4096})) != stamp(spec)


def test_kserve_releases():
    assert llmisvc.kserve_release_supported("v0.17.0")
    assert llmisvc.kserve_release_supported("0.20")
    assert not llmisvc.kserve_release_supported("0.16.1")


# ---------------------------------------------------------------------------------------------
# The target against KServe's LLMInferenceService controller (LLMISVCController)
# ---------------------------------------------------------------------------------------------

SPEC = DeploySpec(name="m", namespace=NS, storage_uri="s3://models/m/1", run_id="run-a")
NEW = SPEC.model_copy(update={"storage_uri": "s3://models/m/2", "run_id": "run-b"})
ENDPOINT = "http://m-kserve-workload-svc.ns.svc.cluster.local:8000"


def _target(api, apps=None, **kw) -> llmisvc.LLMInferenceServiceTarget:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("poll_interval", 0)
    return llmisvc.LLMInferenceServiceTarget(
        api, apps=apps if apps is not None else FakeAppsV1Api(), **kw
    )


def _seed(api, apps, controller: LLMISVCController, spec: DeploySpec, *, promote=True) -> dict:
    """Deploy ``spec`` (and promote it), with someone else's annotation on it."""
    deployment = _target(api, apps).deploy(spec)
    if promote:
        _target(api, apps).promote(deployment)
    obj = api.stored(NS, spec.name, P)
    obj["metadata"]["annotations"]["other.io/keep"] = "yes"
    api.calls.clear()
    return copy.deepcopy(obj)


def _verbs(api: FakeCustomObjectsApi) -> list[str]:
    return [c[0] for c in api.calls if c[0] != "get"]


def _annotations(api) -> dict:
    return api.stored(NS, "m", P)["metadata"]["annotations"]


def test_target_satisfies_protocol_and_make_target_builds_it(monkeypatch):
    target: DeployTarget = _target(FakeCustomObjectsApi())
    assert target.name == "llmisvc"
    monkeypatch.setattr(
        llmisvc.LLMInferenceServiceTarget,
        "_default_apis",
        staticmethod(lambda: (FakeCustomObjectsApi(), FakeAppsV1Api())),
    )
    built = make_target("llmisvc", startup_timeout=12.0)
    assert isinstance(built, llmisvc.LLMInferenceServiceTarget) and built.timeout == 12.0


def test_target_needs_both_apis():
    with pytest.raises(ConfigError, match="both api"):
        llmisvc.LLMInferenceServiceTarget(FakeCustomObjectsApi())


def test_create_waits_for_ready_and_the_rollout_and_returns_the_address():
    api, apps, controller = llmisvc_cluster(ready_after=3)
    deployment = _target(api, apps).deploy(SPEC)

    assert deployment.target == "llmisvc" and deployment.name == deployment.model == "m"
    assert deployment.endpoint == ENDPOINT  # the workload Service listens on 8000
    assert deployment.details["rollout"] == stamp(SPEC)
    assert deployment.details["workload"] == "m-kserve"
    assert deployment.details["previous"] is None
    assert _verbs(api) == ["create"]
    last = controller.history[-1]
    assert last.rolled_out and last.stamp == stamp(SPEC) and last.isvc_ready == "True"
    assert all(not (s.rolled_out and s.isvc_ready == "True") for s in controller.history[:-1])
    assert _annotations(api) == {llmisvc.RUN_ANNOTATION: "run-a"}


@pytest.mark.parametrize(
    "ready_after, reconcile_delay, status_lags", [(3, 0, False), (1, 0, False), (3, 2, True)]
)
def test_update_does_not_return_while_old_pods_serve(ready_after, reconcile_delay, status_lags):
    api, apps, controller = llmisvc_cluster(
        ready_after=ready_after, reconcile_delay=reconcile_delay, status_lags=status_lags
    )
    seeded = _seed(api, apps, controller, SPEC)
    start = len(controller.history)

    deployment = _target(api, apps).deploy(NEW)

    during = controller.history[start:-1]
    # what makes Ready and observedGeneration alone wrong: both say "serving" for the new
    # generation while the old pods still take the traffic
    assert any(
        s.isvc_ready == "True" and s.isvc_observed_generation == 2 and stamp(SPEC) in s.serving
        for s in during
    ), during
    last = controller.history[-1]
    assert last.stamp == stamp(NEW) and last.old == 0 and set(last.serving) == {stamp(NEW)}
    previous = deployment.details["previous"]
    assert previous["spec"]["annotations"] == {ROLLOUT_ANNOTATION: stamp(SPEC)}
    annotations = _annotations(api)
    assert annotations["other.io/keep"] == "yes"  # foreign metadata stays
    assert annotations[llmisvc.PRODUCTION_ANNOTATION] == stamp(SPEC)  # carried until promoted
    assert annotations[llmisvc.RUN_ANNOTATION] == "run-b"
    assert json.loads(annotations[llmisvc.PREVIOUS_ANNOTATION]) == {
        "spec": seeded["spec"],
        "annotations": {
            llmisvc.RUN_ANNOTATION: "run-a",
            llmisvc.PRODUCTION_ANNOTATION: stamp(SPEC),
        },
    }


def test_tls_address_keeps_its_scheme():
    api, apps, _ = llmisvc_cluster(tls=True)
    deployment = _target(api, apps).deploy(SPEC)
    assert deployment.endpoint == ENDPOINT.replace("http://", "https://")


def test_endpoint_prefers_status_url_when_asked():
    obj = {
        "metadata": {"name": "m", "namespace": NS},
        "status": {
            "url": "https://gw.example.com/ns/m",
            "addresses": [{"url": "http://m-kserve-workload-svc.ns.svc.cluster.local"}],
        },
    }
    assert _target(FakeCustomObjectsApi())._endpoint(obj) == ENDPOINT
    assert _target(FakeCustomObjectsApi(), endpoint="url")._endpoint(obj) == obj["status"]["url"]
    with pytest.raises(DeployError, match="neither status.addresses nor status.url"):
        _target(FakeCustomObjectsApi())._endpoint({"metadata": obj["metadata"], "status": {}})


def test_new_pods_that_never_become_available_time_out_and_production_serves_again():
    api, apps, controller = llmisvc_cluster(failures={stamp(NEW): "unavailable"})
    seeded = _seed(api, apps, controller, SPEC)

    with pytest.raises(DeployTimeoutError) as info:
        _target(api, apps, timeout=0.2).deploy(NEW)

    message = str(info.value)
    assert "LLMInferenceService ns/m (generation 2)" in message
    assert "rollout: Deployment m-kserve: 1 old replicas still running" in message
    assert "restored the previous spec of LLMInferenceService ns/m; it serves again" in message
    stored = api.stored(NS, "m", P)
    assert stored["spec"] == seeded["spec"]
    assert llmisvc.PREVIOUS_ANNOTATION not in stored["metadata"]["annotations"]
    assert stored["metadata"]["annotations"][llmisvc.RUN_ANNOTATION] == "run-a"
    last = controller.history[-1]
    assert last.stamp == stamp(SPEC) and last.rolled_out and set(last.serving) == {stamp(SPEC)}


def test_timeout_of_a_new_service_deletes_it():
    api, apps, _ = llmisvc_cluster(failures={stamp(SPEC): "unavailable"})
    with pytest.raises(
        DeployTimeoutError, match="deleted the new LLMInferenceService ns/m"
    ) as info:
        _target(api, apps, timeout=0.1).deploy(SPEC)
    assert "MainWorkloadReady=False (MinimumReplicasUnavailable)" in str(info.value)
    assert api.stored(NS, "m", P) is None


def test_progress_deadline_fails_fast_and_restores():
    api, apps, controller = llmisvc_cluster(failures={stamp(NEW): "deadline"}, deadline_after=2)
    seeded = _seed(api, apps, controller, SPEC)
    with pytest.raises(DeployError) as info:
        _target(api, apps, timeout=30).deploy(NEW)
    assert not isinstance(info.value, DeployTimeoutError)
    assert "Deployment m-kserve: ProgressDeadlineExceeded" in str(info.value)
    assert "it serves again" in str(info.value)
    assert api.stored(NS, "m", P)["spec"] == seeded["spec"]


def _create(api, controller, spec: DeploySpec, polls: int) -> None:
    """``spec``'s object as another client created it, reconciled ``polls`` times."""
    api.create_namespaced_custom_object(G, V, NS, P, llmisvc.build_llm_inference_service(spec))
    controller.run(api, NS, spec.name, polls)
    api.calls.clear()


def test_stale_progress_deadline_of_the_previous_spec_does_not_fail_the_new_one():
    api, apps, controller = llmisvc_cluster(failures={stamp(SPEC): "deadline"}, deadline_after=1)
    _create(api, controller, SPEC, 5)
    assert controller.history[-1].progressing == "False ProgressDeadlineExceeded"

    deployment = _target(api, apps).deploy(NEW)

    assert deployment.details["rollout"] == stamp(NEW)
    assert any(  # the new template was visible while the old timeout was still reported
        s.stamp == stamp(NEW) and s.progressing == "False ProgressDeadlineExceeded"
        for s in controller.history
    )
    assert controller.history[-1].rolled_out


def test_a_new_progress_deadline_after_a_stale_one_is_still_fatal():
    api, apps, controller = llmisvc_cluster(
        failures={stamp(SPEC): "deadline", stamp(NEW): "deadline"}, deadline_after=1
    )
    _create(api, controller, SPEC, 5)
    with pytest.raises(DeployError) as info:
        _target(api, apps, timeout=0.3).deploy(NEW)
    assert not isinstance(info.value, DeployTimeoutError)
    new_rs = controller.replica_set(NS, "m", stamp(NEW)).name
    assert str(info.value).startswith(
        "LLMInferenceService ns/m failed: Deployment m-kserve: ProgressDeadlineExceeded: "
        f'ReplicaSet "{new_rs}" has timed out progressing.'
    )
    assert "does not serve again" in str(info.value)  # the previous spec was stuck already


def test_missing_config_fails_fast_and_deletes_the_new_service():
    api, apps, _ = llmisvc_cluster(config_missing=True)
    with pytest.raises(DeployError) as info:
        _target(api, apps, timeout=30).deploy(SPEC)
    assert not isinstance(info.value, DeployTimeoutError)
    message = str(info.value)
    assert "PresetsCombined=False (ConfigNotFound)" in message
    assert "kserve-config-llm-template" in message
    assert "deleted the new LLMInferenceService ns/m" in message
    assert api.stored(NS, "m", P) is None


def test_keyboard_interrupt_while_waiting_restores_without_waiting():
    api, apps, controller = llmisvc_cluster(ready_after=3)
    seeded = _seed(api, apps, controller, SPEC)
    api.fail_with("get", KeyboardInterrupt(), after=3)
    with pytest.raises(KeyboardInterrupt) as info:
        _target(api, apps).deploy(NEW)
    assert "restored the previous spec of LLMInferenceService ns/m (not waiting" in " ".join(
        info.value.__notes__
    )
    assert api.stored(NS, "m", P)["spec"] == seeded["spec"]


@pytest.fixture()
def sigterm_noted():
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    yield received
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_while_waiting_restores_the_previous_spec(sigterm_noted):
    api, apps, controller = llmisvc_cluster(ready_after=3)
    seeded = _seed(api, apps, controller, SPEC)
    reconcile, polls = api.controller, []

    def reconcile_then_cancel(api_, obj):  # a KFP cancel: SIGTERM to the step's process
        polls.append(1)
        if len(polls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        reconcile(api_, obj)

    api.controller = reconcile_then_cancel
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        _target(api, apps).deploy(NEW)
    assert not sigterm_noted
    assert api.stored(NS, "m", P)["spec"] == seeded["spec"]


def test_a_newer_spec_of_another_deploy_is_not_overwritten():
    api, apps, controller = llmisvc_cluster(ready_after=3)
    _seed(api, apps, controller, SPEC)
    other = SPEC.model_copy(update={"storage_uri": "s3://models/m/3"})
    reconcile, polls = api.controller, []

    def reconcile_with_another_writer(api_, obj):
        polls.append(1)
        if len(polls) == 3:
            api.controller = reconcile
            current = copy.deepcopy(api_.stored(NS, "m", P))
            current["spec"] = llmisvc.build_llm_inference_service(other)["spec"]
            api_.replace_namespaced_custom_object(G, V, NS, P, "m", current)
        reconcile(api_, obj)

    api.controller = reconcile_with_another_writer
    with pytest.raises(DeployError, match="changed by another deploy") as info:
        _target(api, apps).deploy(NEW)
    assert "left as it is" in str(info.value)
    assert llmisvc.stamp_of(api.stored(NS, "m", P)) == stamp(other)


# -- promote, rollback, rollback_run -----------------------------------------------------------


def test_promote_records_production_in_place_and_is_idempotent():
    api, apps, controller = llmisvc_cluster()
    _seed(api, apps, controller, SPEC)
    deployment = _target(api, apps).deploy(NEW)
    dep_generation = apps.stored(NS, "m-kserve")["metadata"]["generation"]
    # the pipeline hands the deployment to the promote step as JSON
    handed = Deployment(**json.loads(json.dumps(asdict(deployment))))

    message = _target(api, apps).promote(handed)

    assert "production" in message and "no canary" in message
    annotations = _annotations(api)
    assert annotations[llmisvc.PRODUCTION_ANNOTATION] == stamp(NEW)
    assert llmisvc.PREVIOUS_ANNOTATION not in annotations
    assert annotations["other.io/keep"] == "yes"
    controller.run(api, NS, "m", 3)
    assert apps.stored(NS, "m-kserve")["metadata"]["generation"] == dep_generation  # no new pods
    api.calls.clear()
    assert _target(api, apps).promote(handed) == message
    assert _verbs(api) == []  # already production: nothing written
    assert _target(api, apps).rollback_run("m", NS, "run-b").endswith("nothing to undo")


def test_promote_refuses_a_spec_another_deploy_wrote_since():
    api, apps, controller = llmisvc_cluster()
    deployment = _target(api, apps).deploy(SPEC)
    _target(api, apps).deploy(NEW)
    with pytest.raises(DeployError, match="another deploy changed it since; not promoted"):
        _target(api, apps).promote(deployment)
    api.delete_namespaced_custom_object(G, V, NS, P, "m")
    with pytest.raises(DeployError, match="no longer exists"):
        _target(api, apps).promote(deployment)


def test_rollback_puts_back_what_the_deploy_replaced_and_waits():
    api, apps, controller = llmisvc_cluster(ready_after=2)
    seeded = _seed(api, apps, controller, SPEC)
    deployment = _target(api, apps).deploy(NEW)
    message = _target(api, apps).rollback(deployment)
    assert message.startswith("restored the previous spec of LLMInferenceService ns/m; it serves")
    assert api.stored(NS, "m", P)["spec"] == seeded["spec"]
    assert set(controller.history[-1].serving) == {stamp(SPEC)}


def test_rollback_of_a_new_service_deletes_it():
    api, apps, _ = llmisvc_cluster()
    deployment = _target(api, apps).deploy(SPEC)
    assert _target(api, apps).rollback(deployment) == "deleted the new LLMInferenceService ns/m"
    assert api.stored(NS, "m", P) is None


def test_rollback_run_restores_production_after_an_unpromoted_update():
    api, apps, controller = llmisvc_cluster()
    seeded = _seed(api, apps, controller, SPEC)
    _target(api, apps).deploy(NEW)  # run-b's candidate; run-b then fails a gate

    message = _target(api, apps).rollback_run("m", NS, "run-b")

    assert "restored the previous spec of LLMInferenceService ns/m; it serves again" in message
    stored = api.stored(NS, "m", P)
    assert stored["spec"] == seeded["spec"]
    assert stored["metadata"]["annotations"] == seeded["metadata"]["annotations"]
    assert set(controller.history[-1].serving) == {stamp(SPEC)}
    api.calls.clear()
    again = _target(api, apps).rollback_run("m", NS, "run-b")  # idempotent
    assert "not of run run-b: left alone" in again and _verbs(api) == []


def test_rollback_run_deletes_its_unpromoted_new_service():
    api, apps, _ = llmisvc_cluster()
    _target(api, apps).deploy(SPEC)
    assert _target(api, apps).rollback_run("m", NS, "run-a") == (
        "deleted the new LLMInferenceService ns/m"
    )
    assert api.stored(NS, "m", P) is None
    assert "does not exist" in _target(api, apps).rollback_run("m", NS, "run-a")


def test_rollback_run_only_touches_its_own_runs_object():
    api, apps, controller = llmisvc_cluster()
    _seed(api, apps, controller, SPEC, promote=False)  # run-a's candidate, not promoted
    api.calls.clear()
    message = _target(api, apps).rollback_run("m", NS, "run-b")
    assert (
        message
        == "LLMInferenceService ns/m serves a spec of run run-a, not of run run-b: left alone"
    )
    assert _verbs(api) == []
    assert llmisvc.stamp_of(api.stored(NS, "m", P)) == stamp(SPEC)


def test_rollback_run_leaves_a_promoted_spec_alone():
    api, apps, controller = llmisvc_cluster()
    _seed(api, apps, controller, SPEC)  # run-a deployed and promoted
    message = _target(api, apps).rollback_run("m", NS, "run-a")
    assert (
        message
        == "LLMInferenceService ns/m: run run-a's spec is production (promoted): nothing to undo"
    )
    assert _verbs(api) == []


def test_rollback_run_refuses_an_unreadable_record():
    api, apps, controller = llmisvc_cluster()
    _seed(api, apps, controller, SPEC)
    _target(api, apps).deploy(NEW)
    api.stored(NS, "m", P)["metadata"]["annotations"][llmisvc.PREVIOUS_ANNOTATION] = "{broken"
    with pytest.raises(DeployError, match="unreadable"):
        _target(api, apps).rollback_run("m", NS, "run-b")
    assert llmisvc.stamp_of(api.stored(NS, "m", P)) == stamp(NEW)


def test_teardown_deletes_and_is_idempotent():
    api, apps, _ = llmisvc_cluster()
    target = _target(api, apps)
    deployment = target.deploy(SPEC)
    target.teardown(deployment)
    assert api.stored(NS, "m", P) is None
    target.teardown(deployment)
    assert _verbs(api).count("delete") == 2


@pytest.mark.parametrize("verb", ["get", "create"])
def test_forbidden_names_rbac_fix(verb):
    api, apps, _ = llmisvc_cluster()
    api.fail(verb, 403)
    with pytest.raises(DeployError) as info:
        _target(api, apps).deploy(SPEC)
    assert "HTTP 403" in str(info.value) and "modelgate-deployer" in str(info.value)
    assert isinstance(info.value.__cause__, ApiException)


def test_server_dry_run_stores_nothing():
    api = FakeCustomObjectsApi()
    obj = _target(api).server_dry_run(SPEC)
    assert obj["spec"]["model"]["uri"] == SPEC.storage_uri
    assert api.objects == {}


# -- the double ---------------------------------------------------------------------------------


def test_double_reports_conditions_the_way_the_controller_does():
    api, apps, controller = llmisvc_cluster(ready_after=3)
    api.create_namespaced_custom_object(G, V, NS, P, llmisvc.build_llm_inference_service(SPEC))
    controller.run(api, NS, "m", 1)
    status = api.stored(NS, "m", P)["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert set(conditions) == {
        "PresetsCombined",
        "MainWorkloadReady",
        "WorkloadsReady",
        "RouterReady",
        "Ready",
    }
    # the first reconcile creates the Deployment, which has no conditions yet
    assert conditions["MainWorkloadReady"]["reason"] == "Progressing"
    assert conditions["Ready"]["status"] == "False"
    assert conditions["MainWorkloadReady"]["severity"] == "Info"
    assert "severity" not in conditions["Ready"]
    assert status["observedGeneration"] == 1
    assert status["addresses"] == [{"url": "http://m-kserve-workload-svc.ns.svc.cluster.local"}]
    assert "url" not in status
    controller.run(api, NS, "m", 1)
    conditions = {c["type"]: c for c in api.stored(NS, "m", P)["status"]["conditions"]}
    assert conditions["MainWorkloadReady"]["reason"] == "MinimumReplicasUnavailable"
    assert conditions["Ready"]["reason"] == "MinimumReplicasUnavailable"  # the rollup copies it
    pod = apps.stored(NS, "m-kserve")["spec"]["template"]
    assert pod["metadata"]["annotations"][ROLLOUT_ANNOTATION] == stamp(SPEC)
    assert pod["spec"]["initContainers"][0]["args"] == [SPEC.storage_uri, "/mnt/models"]
    assert pod["spec"]["containers"][0]["image"] == "ghcr.io/llm-d/llm-d-cuda:v0.8.0"


def test_double_config_missing_leaves_ready_unknown():
    api, _, controller = llmisvc_cluster(config_missing=True)
    api.create_namespaced_custom_object(G, V, NS, P, llmisvc.build_llm_inference_service(SPEC))
    controller.run(api, NS, "m", 2)
    conditions = {c["type"]: c for c in api.stored(NS, "m", P)["status"]["conditions"]}
    assert conditions["PresetsCombined"]["reason"] == "ConfigNotFound"
    assert conditions["Ready"]["status"] == "Unknown"
    assert conditions["Ready"]["reason"] == "NewObservedGenFailure"


def test_double_refuses_a_scheme_the_controller_cannot_fetch():
    api, apps, controller = llmisvc_cluster()
    body = llmisvc.build_llm_inference_service(SPEC)
    body["spec"]["model"]["uri"] = "gs://bucket/m"
    api.create_namespaced_custom_object(G, V, NS, P, body)
    controller.run(api, NS, "m", 1)
    conditions = {c["type"]: c for c in api.stored(NS, "m", P)["status"]["conditions"]}
    assert conditions["MainWorkloadReady"]["reason"] == "ReconcileSingleNodeWorkloadError"
    assert conditions["Ready"]["status"] == "False"
    assert apps.stored(NS, "m-kserve") is None


# ---------------------------------------------------------------------------------------------
# modelgate render --target llmisvc
# ---------------------------------------------------------------------------------------------


def test_render_target_llmisvc_prints_a_validated_object():
    result = runner.invoke(
        app,
        [
            "render",
            "--target",
            "llmisvc",
            "--name",
            "tiny",
            "--storage-uri",
            "hf://org/tiny",
            "--accelerator-count",
            "4",
            "--node-selector",
            '{"pool": "gpu"}',
            "--tolerations",
            '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]',
        ],
    )
    assert result.exit_code == 0, result.output
    obj = yaml.safe_load(result.output)
    crd.validate_llm_inference_service(obj)
    assert obj["kind"] == "LLMInferenceService"
    assert obj["spec"]["parallelism"] == {"tensor": 4}
    template = obj["spec"]["template"]
    assert template["nodeSelector"] == {"pool": "gpu"}
    assert template["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert template["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"


def test_render_defaults_to_the_inference_service_and_follows_deploy_target():
    default = runner.invoke(app, ["render", "--name", "tiny", "--storage-uri", "s3://b/m"])
    assert default.exit_code == 0, default.output
    assert yaml.safe_load(default.output)["kind"] == "InferenceService"
    followed = runner.invoke(
        app,
        ["render", "--name", "tiny", "--storage-uri", "s3://b/m", "--deploy-target", "llmisvc"],
    )
    assert followed.exit_code == 0, followed.output
    assert yaml.safe_load(followed.output)["kind"] == "LLMInferenceService"


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--storage-uri", "model-registry://m/1"], "resolve it first"),
        (["--storage-uri", "s3://b/m", "--kserve-version", "0.16"], "has no LLMInferenceService"),
    ],
)
def test_render_target_llmisvc_refuses_with_the_fix(extra, expected):
    result = runner.invoke(app, ["render", "--target", "llmisvc", "--name", "tiny", *extra])
    assert result.exit_code != 0
    assert expected in str(result.exception)


def test_render_target_local_is_refused():
    result = runner.invoke(
        app, ["render", "--target", "local", "--name", "tiny", "--storage-uri", "s3://b/m"]
    )
    assert result.exit_code != 0
    assert "render prints a cluster object" in str(result.exception)
