"""KServeTarget's canary rollout on KServe v0.20.0 Standard mode (``spec.canary``, kserve#5672).

Runs against ``tests.doubles.kube``: :class:`~tests.doubles.kube.KServeController` follows
kserve/kserve v0.20.0 ``pkg/controller/v1beta1/inferenceservice/components/predictor.go``
(``reconcileCanaryDeployments`` 913-1040, ``canaryReplicaCount`` 886-895,
``buildCanaryPredictor`` 897-911, the stable replica split in ``reconcileRawDeployment``
795-803), the API server double runs KServe's canary webhook rules
(``inference_service_validation.go`` ``validateCanarySpecs`` 183-265,
``validatePredictorNameChange`` 703-713) and checks every stored object and status against the
strict v0.20.0 CRD schema (``api.violations`` stays empty).
"""

from __future__ import annotations

import copy
import json
import math
import re

import pytest
from kubernetes.client.exceptions import ApiException

from modelgate.deploy import Deployment, DeploySpec, crd, kserve
from modelgate.errors import ConfigError, DeployError, DeployTimeoutError
from modelgate.placement import Placement, Toleration
from tests.doubles.kube import (
    FakeAppsV1Api,
    FakeCustomObjectsApi,
    KServeController,
    ScriptedController,
    isvc_status,
    kserve_admission,
    kserve_cluster,
    mergo_override,
)

pytestmark = pytest.mark.unit

NS = "ns"
G, V, P = "serving.kserve.io", "v1beta1", "inferenceservices"
PROD = DeploySpec(name="m", namespace=NS, storage_uri="model-registry://m/1", run_id="run-1")
CAND = PROD.model_copy(update={"storage_uri": "model-registry://m/2", "run_id": "run-2"})
OTHER = PROD.model_copy(update={"storage_uri": "model-registry://m/3", "run_id": "run-3"})


def stamp(spec: DeploySpec) -> str:
    return kserve.build_inference_service(spec)["spec"]["predictor"]["annotations"][
        kserve.ROLLOUT_ANNOTATION
    ]


def canary_of(spec: DeploySpec) -> str:
    return kserve.canary_name(stamp(spec))


def canary_deployment(spec: DeploySpec) -> str:
    return f"{spec.name}-{canary_of(spec)}-predictor"


def _target(api, apps, controller=None, **kw) -> kserve.KServeTarget:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("poll_interval", 0)
    core = controller.core if controller is not None else None
    return kserve.KServeTarget(api, apps=apps, core=core, **kw)


def _verbs(api: FakeCustomObjectsApi) -> list[str]:
    return [c[0] for c in api.calls if c[0] != "get"]


def _production(api, apps, controller, *, min_replicas: int | None = None, spec=PROD) -> dict:
    """Production: ``spec``'s first release, rolled out (an operator may have set minReplicas)."""
    deployment = _target(api, apps, controller).deploy(spec)
    assert deployment.details["role"] == "first"
    if min_replicas is not None:
        current = copy.deepcopy(api.stored(NS, spec.name))
        current["spec"]["predictor"]["minReplicas"] = min_replicas
        api.replace_namespaced_custom_object(G, V, NS, P, spec.name, current)
        controller.settle(api, NS, spec.name)
    api.calls.clear()
    return copy.deepcopy(api.stored(NS, spec.name))


def _validate_stored(api: FakeCustomObjectsApi) -> None:
    assert api.violations == []
    for obj in api.objects.values():
        crd.validate_object(obj)  # spec, metadata and the status KServe wrote


# ---------------------------------------------------------------------------------------------
# Building the canary entry; KServe's overlay
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [0, 25, 100])
def test_canary_entry_validates_strictly_inside_the_isvc(percent):
    spec = CAND.model_copy(update={"canary_traffic_percent": percent})
    entry = kserve.build_canary(spec)
    body = kserve.build_inference_service(PROD)
    body["spec"]["canary"] = [entry]
    crd.validate_object(body)
    kserve_admission(None, body)  # KServe's webhook accepts it beside production
    predictor = entry["predictor"]
    assert entry["trafficPercent"] == percent
    assert predictor["name"] == canary_of(CAND) and len(predictor["name"]) == 7
    assert predictor["model"]["name"] == "kserve-container"
    assert predictor["annotations"] == {
        kserve.ROLLOUT_ANNOTATION: stamp(CAND),
        kserve.RUN_ANNOTATION: "run-2",
    }
    assert predictor.get("minReplicas") == (1 if percent == 0 else None)  # dark launch: 1 pod


def test_v020_crd_requires_model_name_in_canary_entries():
    """The Makefile's ``del(...spec.properties.*.properties.*.required)`` (v0.20.0 208-209)
    does not reach ``spec.canary[].predictor.model``: without ``name`` the API server refuses."""
    body = kserve.build_inference_service(PROD)
    entry = kserve.build_canary(CAND)
    del entry["predictor"]["model"]["name"]
    body["spec"]["canary"] = [entry]
    with pytest.raises(ConfigError, match=r"spec.canary.0.predictor.model: 'name' is a required"):
        crd.validate_object(body)


def test_run_id_is_part_of_the_stamp():
    assert stamp(PROD) != stamp(PROD.model_copy(update={"run_id": "run-9"}))
    unstamped = PROD.model_copy(update={"run_id": None})
    predictor = kserve.build_inference_service(unstamped)["spec"]["predictor"]
    assert set(predictor["annotations"]) == {kserve.ROLLOUT_ANNOTATION}
    assert kserve.rollout_hash(kserve.build_inference_service(PROD)["spec"]) == stamp(PROD)


def test_kserve_merge_is_mergo_with_override():
    base = {"a": 1, "args": ["--x"], "m": {"k": "v", "n": 2}, "keep": "b", "t": [1]}
    over = {"a": 0, "args": [], "m": {"k": "w"}, "new": [2], "t": [3, 4]}
    merged = kserve.kserve_merge(base, over)
    # empty values keep the base's; lists are replaced; maps merge key by key
    assert merged == {
        "a": 1,
        "args": ["--x"],
        "m": {"k": "w", "n": 2},
        "keep": "b",
        "t": [3, 4],
        "new": [2],
    }
    assert base["m"] == {"k": "v", "n": 2}  # no mutation
    assert mergo_override(base, over) == merged  # the double overlays the same way


@pytest.mark.parametrize(
    "stable_min, percent, own, expected",
    [
        (None, 0, None, 0),
        (None, 25, None, 1),
        (4, 25, None, 1),
        (4, 30, None, 2),
        (3, 50, None, 2),
        (4, 0, 1, 1),
        (4, 100, None, 4),
    ],
)
def test_canary_replica_count_is_kserves(stable_min, percent, own, expected):
    spec = {"predictor": {} if stable_min is None else {"minReplicas": stable_min}}
    entry = {"predictor": {} if own is None else {"minReplicas": own}, "trafficPercent": percent}
    assert kserve.canary_replica_count(spec, entry) == expected
    assert expected == (own if own is not None else math.ceil((stable_min or 1) * percent / 100))


@pytest.mark.parametrize(
    "production, expected",
    [
        (PROD.model_copy(update={"max_model_len": 4096}), ["model.args"]),
        (
            PROD.model_copy(
                update={
                    "placement": Placement(tolerations=[Toleration(key="gpu", operator="Exists")])
                }
            ),
            ["tolerations"],
        ),
        (PROD.model_copy(update={"service_account": "sa"}), ["serviceAccountName"]),
        (PROD, []),
    ],
)
def test_inherited_fields_names_what_the_canary_would_take_from_production(production, expected):
    stable = kserve.build_inference_service(production)["spec"]["predictor"]
    candidate = kserve.build_canary(CAND)["predictor"]
    assert kserve.inherited_fields(stable, candidate) == expected


def test_a_cpu_candidate_beside_gpu_production_would_keep_the_gpu():
    stable = kserve.build_inference_service(PROD)["spec"]["predictor"]
    cpu = CAND.model_copy(update={"placement": Placement(accelerator_count=0)})
    assert kserve.inherited_fields(stable, kserve.build_canary(cpu)["predictor"]) == [
        "model.resources"
    ]


def test_promoted_predictor_keeps_production_name_and_scaling():
    production = kserve.build_inference_service(PROD)["spec"]["predictor"]
    production |= {"name": "blue", "minReplicas": 4, "maxReplicas": 8}
    production["annotations"]["sidecar.istio.io/inject"] = "false"
    candidate = kserve.build_canary(CAND)["predictor"]
    promoted = kserve.promoted_predictor(production, candidate)
    assert promoted["name"] == "blue"
    assert (promoted["minReplicas"], promoted["maxReplicas"]) == (4, 8)
    assert promoted["model"] == {**candidate["model"]}
    assert promoted["annotations"] == {
        "sidecar.istio.io/inject": "false",
        kserve.ROLLOUT_ANNOTATION: stamp(CAND),
        kserve.RUN_ANNOTATION: "run-2",
    }
    unstamped = kserve.build_canary(CAND.model_copy(update={"run_id": None}))["predictor"]
    # production's run stamp is not inherited by a candidate without one
    assert (
        kserve.RUN_ANNOTATION not in kserve.promoted_predictor(production, unstamped)["annotations"]
    )


# ---------------------------------------------------------------------------------------------
# deploy: dark launch, traffic percent, replica split
# ---------------------------------------------------------------------------------------------


def test_dark_launch_runs_the_candidate_beside_untouched_production():
    api, apps, controller = kserve_cluster(ready_after=3)
    before = _production(api, apps, controller)
    production_dep = copy.deepcopy(apps.stored(NS, "m-predictor"))
    start = len(controller.history)

    deployment = _target(api, apps, controller).deploy(CAND)

    assert isinstance(deployment, Deployment)
    d = deployment.details
    assert (d["role"], d["canary"], d["traffic_percent"]) == ("canary", canary_of(CAND), 0)
    assert d["run_id"] == "run-2" and d["rollout"] == stamp(CAND)
    assert (d["production_rollout"], d["production_run"]) == (stamp(PROD), "run-1")
    assert d["canary_replicas"] == 1 and d["previous_spec"] is None
    assert deployment.endpoint == f"http://{canary_deployment(CAND)}.ns.svc.cluster.local"
    assert d["address"] == deployment.endpoint and d["url"] is None
    stored = api.stored(NS, "m")
    assert stored["spec"]["predictor"] == before["spec"]["predictor"]  # production untouched
    assert stored["metadata"]["annotations"] == before["metadata"]["annotations"]
    (entry,) = stored["spec"]["canary"]
    assert entry == kserve.build_canary(CAND)
    assert entry["predictor"]["minReplicas"] == 1
    assert _verbs(api) == ["replace"]
    # production's Deployment never changed, its pods kept serving throughout
    assert apps.stored(NS, "m-predictor")["spec"] == production_dep["spec"]
    assert apps.stored(NS, "m-predictor")["metadata"]["generation"] == 1
    assert all(s.serving == (stamp(PROD),) for s in controller.history[start:])
    # the canary: its own Deployment with one pod of the candidate
    canary = apps.stored(NS, canary_deployment(CAND))
    assert canary["spec"]["replicas"] == 1
    assert controller.history[-1].canaries == {canary_deployment(CAND): (stamp(CAND),)}
    status = stored["status"]
    assert status["canaryStatuses"] == [
        {"name": canary_of(CAND), "ready": True, "trafficPercent": 0}
    ]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["CanaryPredictorReady"] == "True" and conditions["Ready"] == "True"
    _validate_stored(api)


@pytest.mark.parametrize(
    "percent, canary_replicas, stable_replicas",
    [(25, 1, 3), (30, 2, 2), (50, 2, 2), (0, 1, 3)],  # ceil(4 * p / 100), taken from production
)
def test_traffic_percent_splits_production_min_replicas(percent, canary_replicas, stable_replicas):
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller, min_replicas=4)
    assert controller.history[-1].available == 4
    spec = CAND.model_copy(update={"canary_traffic_percent": percent})

    deployment = _target(api, apps, controller).deploy(spec)

    assert deployment.details["canary_replicas"] == canary_replicas
    assert deployment.details["traffic_percent"] == percent
    assert apps.stored(NS, canary_deployment(spec))["spec"]["replicas"] == canary_replicas
    assert apps.stored(NS, "m-predictor")["spec"]["replicas"] == stable_replicas
    controller.run(api, NS, "m", 3)
    last = controller.history[-1]
    assert last.serving == (stamp(PROD),) * stable_replicas
    assert last.canaries[canary_deployment(spec)] == (stamp(spec),) * canary_replicas
    (entry,) = api.stored(NS, "m")["spec"]["canary"]
    assert entry["trafficPercent"] == percent
    assert ("minReplicas" in entry["predictor"]) == (percent == 0)
    _validate_stored(api)


def test_raw_deployment_mode_also_canaries():
    prod = PROD.model_copy(update={"deployment_mode": "RawDeployment"})
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller, spec=prod)
    deployment = _target(api, apps, controller).deploy(
        CAND.model_copy(update={"deployment_mode": "RawDeployment"})
    )
    assert deployment.details["role"] == "canary"


def test_redeploying_the_same_candidate_writes_nothing():
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    target = _target(api, apps, controller)
    target.deploy(CAND)
    api.calls.clear()
    again = target.deploy(CAND)  # a retried deploy step of the same run
    assert again.details["canary"] == canary_of(CAND)
    assert _verbs(api) == []


def test_another_runs_change_between_read_and_write_is_kept():
    # the canary write is a compare-and-swap: a 409 re-reads and adds to what is there now
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    replace = api.replace_namespaced_custom_object
    raced = []

    def replace_after_another_writer(group, version, namespace, plural, name, body, **kw):
        if not raced:
            raced.append(1)
            current = copy.deepcopy(api.stored(NS, "m"))
            current["spec"]["canary"] = [kserve.build_canary(OTHER)]
            replace(group, version, namespace, plural, name, current)
        return replace(group, version, namespace, plural, name, body, **kw)

    api.replace_namespaced_custom_object = replace_after_another_writer
    deployment = _target(api, apps, controller).deploy(CAND)

    names = [c["predictor"]["name"] for c in api.stored(NS, "m")["spec"]["canary"]]
    assert names == [canary_of(OTHER), canary_of(CAND)]
    assert _verbs(api).count("replace") == 3  # theirs, ours (409), ours again
    api.replace_namespaced_custom_object = replace
    done = _target(api, apps, controller).rollback(deployment)
    assert f"removed the canary {canary_of(CAND)}" in done
    names = [c["predictor"]["name"] for c in api.stored(NS, "m")["spec"]["canary"]]
    assert names == [canary_of(OTHER)]  # theirs stays
    _validate_stored(api)


# ---------------------------------------------------------------------------------------------
# When the candidate is not a canary
# ---------------------------------------------------------------------------------------------


def test_a_candidate_that_would_inherit_production_args_is_replaced_in_place():
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller, spec=PROD.model_copy(update={"max_model_len": 4096}))
    deployment = _target(api, apps, controller).deploy(CAND)
    assert deployment.details["role"] == "replace"
    assert "production's model.args" in deployment.details["in_place_because"]
    stored = api.stored(NS, "m")
    assert "canary" not in stored["spec"] and stored["spec"]["predictor"]["model"]["args"] == []
    assert controller.history[-1].serving == (stamp(CAND),)


def test_production_that_is_not_ready_is_replaced_in_place():
    api, apps, controller = kserve_cluster(failures={stamp(PROD): "unavailable"})
    api.create_namespaced_custom_object(G, V, NS, P, kserve.build_inference_service(PROD))
    controller.run(api, NS, "m", 3)
    deployment = _target(api, apps, controller).deploy(CAND)
    assert deployment.details["role"] == "replace"
    assert "not Ready" in deployment.details["in_place_because"]


def test_knative_mode_replaces_in_place():
    kn = PROD.model_copy(update={"deployment_mode": "Knative"})
    ready = isvc_status(ready=True, generation="current", name="m", namespace=NS)
    apps = FakeAppsV1Api()
    api = FakeCustomObjectsApi(ScriptedController([ready]))
    api.create_namespaced_custom_object(G, V, NS, P, kserve.build_inference_service(kn))
    deployment = _target(api, apps).deploy(CAND.model_copy(update={"deployment_mode": "Knative"}))
    assert deployment.details["role"] == "replace"
    assert "Standard mode only" in deployment.details["in_place_because"]
    assert "canary" not in api.stored(NS, "m")["spec"]


def test_a_kserve_without_spec_canary_falls_back_to_in_place():
    # before v0.20.0 the CRD has no spec.canary: the API server prunes it from what it stores
    api, apps, controller = kserve_cluster(strict=False)
    _production(api, apps, controller)
    replace = api.replace_namespaced_custom_object

    def pruning_replace(group, version, namespace, plural, name, body, **kw):
        body = copy.deepcopy(body)
        body["spec"].pop("canary", None)
        return replace(group, version, namespace, plural, name, body, **kw)

    api.replace_namespaced_custom_object = pruning_replace
    deployment = _target(api, apps, controller).deploy(CAND)
    assert deployment.details["role"] == "replace"
    assert "dropped spec.canary" in deployment.details["in_place_because"]
    assert api.stored(NS, "m")["spec"]["predictor"]["annotations"][
        kserve.ROLLOUT_ANNOTATION
    ] == stamp(CAND)


def test_canary_false_replaces_in_place():
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    deployment = _target(api, apps, controller, canary=False).deploy(CAND)
    assert deployment.details["role"] == "replace"
    assert deployment.details["previous_spec"]["predictor"]["annotations"][
        kserve.ROLLOUT_ANNOTATION
    ] == stamp(PROD)


# ---------------------------------------------------------------------------------------------
# Failures while the candidate starts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure, expected, timeout",
    [
        ("crash", "CrashLoopBackOff", 30),
        ("image", "cannot pull its image", 30),
        ("unavailable", "timed out", 0.3),
    ],
)
def test_a_failing_canary_is_removed_and_production_keeps_serving(failure, expected, timeout):
    api, apps, controller = kserve_cluster(failures={stamp(CAND): failure})
    before = _production(api, apps, controller)
    start = len(controller.history)

    with pytest.raises(DeployError, match=expected) as info:
        _target(api, apps, controller, timeout=timeout).deploy(CAND)

    message = str(info.value)
    assert message.startswith(f"canary {canary_of(CAND)} of InferenceService ns/m")
    assert isinstance(info.value, DeployTimeoutError) == (failure == "unavailable")
    assert f"removed the canary {canary_of(CAND)} of InferenceService ns/m; production" in message
    stored = api.stored(NS, "m")
    assert "canary" not in stored["spec"]
    assert stored["spec"]["predictor"] == before["spec"]["predictor"]
    assert apps.stored(NS, canary_deployment(CAND)) is None
    assert all(s.serving == (stamp(PROD),) for s in controller.history[start:])
    _validate_stored(api)


def test_slow_start_past_the_progress_deadline_is_not_rolled_back():
    # vLLM may need longer than KServe's progressDeadlineSeconds (600) to start: the canary's
    # Deployment reports ProgressDeadlineExceeded, then its pod becomes ready (900 s)
    api, apps, controller = kserve_cluster(
        failures={stamp(CAND): "slow"}, seconds_per_step=60, slow_start_seconds=900
    )
    _production(api, apps, controller)
    seen: list[str] = []
    reconcile = api.controller

    def reconcile_and_watch(api_, obj):
        reconcile(api_, obj)
        dep = apps.stored(NS, canary_deployment(CAND)) or {}
        for c in (dep.get("status") or {}).get("conditions") or []:
            if c["type"] == "Progressing":
                seen.append(f"{c['status']} {c['reason']}")

    api.controller = reconcile_and_watch
    deployment = _target(api, apps, controller).deploy(CAND)

    assert "False ProgressDeadlineExceeded" in seen
    assert seen[-1] == "True NewReplicaSetAvailable"
    assert deployment.details["role"] == "canary"
    assert canary_deployment(CAND) in controller.history[-1].canaries
    assert any(e["reason"] == "Unhealthy" for e in controller.core.events)  # probes, no failure
    assert api.stored(NS, "m")["spec"]["canary"][0]["predictor"]["name"] == canary_of(CAND)


def test_slow_start_of_a_first_release_is_not_deleted():
    api, apps, controller = kserve_cluster(
        failures={stamp(PROD): "slow"}, seconds_per_step=60, slow_start_seconds=900
    )
    start = len(controller.history)
    deployment = _target(api, apps, controller).deploy(PROD)
    assert deployment.details["role"] == "first"
    assert any(
        s.progressing == "False ProgressDeadlineExceeded" for s in controller.history[start:]
    )
    assert controller.history[-1].rolled_out


def test_first_release_failure_deletes_it():
    api, apps, controller = kserve_cluster(failures={stamp(PROD): "crash"})
    with pytest.raises(DeployError, match="deleted the new InferenceService ns/m"):
        _target(api, apps, controller, timeout=30).deploy(PROD)
    assert api.stored(NS, "m") is None


def test_interrupt_while_waiting_removes_the_canary_without_waiting():
    api, apps, controller = kserve_cluster(ready_after=4)
    _production(api, apps, controller)
    api.fail_with("get", KeyboardInterrupt(), after=3)
    with pytest.raises(KeyboardInterrupt) as info:
        _target(api, apps, controller).deploy(CAND)
    assert f"removed the canary {canary_of(CAND)} of InferenceService ns/m (not waiting" in (
        " ".join(info.value.__notes__)
    )
    assert "canary" not in api.stored(NS, "m")["spec"]


def test_a_refused_canary_changes_nothing():
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    api.fail("replace", 403)
    with pytest.raises(DeployError, match=r"adding canary .* of InferenceService ns/m: forbidden"):
        _target(api, apps, controller).deploy(CAND)
    assert "canary" not in api.stored(NS, "m")["spec"]


# ---------------------------------------------------------------------------------------------
# promote / rollback / teardown
# ---------------------------------------------------------------------------------------------


def test_promote_makes_the_candidate_production_and_the_canary_goes():
    api, apps, controller = kserve_cluster(ready_after=3)
    _production(api, apps, controller, min_replicas=2)
    target = _target(api, apps, controller)
    deployment = target.deploy(CAND.model_copy(update={"canary_traffic_percent": 50}))
    start = len(controller.history)

    done = target.promote(deployment)

    assert done.startswith(f"promoted rollout {stamp(CAND)} (run run-2) of InferenceService ns/m")
    stored = api.stored(NS, "m")
    assert "canary" not in stored["spec"]
    predictor = stored["spec"]["predictor"]
    assert "name" not in predictor  # production's Deployment, Service and address stay
    assert predictor["minReplicas"] == 2  # production's scaling settings stay
    assert predictor["model"]["storageUri"] == CAND.storage_uri
    assert predictor["annotations"][kserve.RUN_ANNOTATION] == "run-2"
    assert kserve.stamp_of(stored) == stamp(CAND)
    assert apps.stored(NS, canary_deployment(CAND)) is None
    last = controller.history[-1]
    assert last.rolled_out and last.serving == (stamp(CAND),) * 2 and last.canaries == {}
    assert all(s.serving for s in controller.history[start:])  # something served throughout
    assert stored["status"]["address"]["url"] == "http://m-predictor.ns.svc.cluster.local"
    assert "canaryStatuses" not in stored["status"]
    assert "CanaryPredictorReady" not in {c["type"] for c in stored["status"]["conditions"]}
    _validate_stored(api)

    api.calls.clear()
    again = target.promote(deployment)  # a retried promote step
    assert again.startswith("promoted rollout") and _verbs(api) == []


def test_promote_of_a_first_release_has_nothing_to_do():
    api, apps, controller = kserve_cluster()
    target = _target(api, apps, controller)
    deployment = target.deploy(PROD)
    api.calls.clear()
    assert target.promote(deployment).startswith("nothing to promote")
    assert _verbs(api) == []


def test_promote_refuses_when_production_changed_since_the_gate():
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    target = _target(api, apps, controller)
    deployment = target.deploy(CAND)
    current = copy.deepcopy(api.stored(NS, "m"))  # another run replaced production meanwhile
    current["spec"]["predictor"] = kserve.build_inference_service(OTHER)["spec"]["predictor"]
    api.replace_namespaced_custom_object(G, V, NS, P, "m", current)
    before = copy.deepcopy(api.stored(NS, "m")["spec"])

    with pytest.raises(DeployError, match="not promoted: production changed since the candidate"):
        target.promote(deployment)
    assert api.stored(NS, "m")["spec"] == before


def test_promote_after_a_rollback_refuses():
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    target = _target(api, apps, controller)
    deployment = target.deploy(CAND)
    target.rollback(deployment)
    with pytest.raises(DeployError, match=r"not promoted: the canary .* is gone \(rolled back\?\)"):
        target.promote(deployment)
    assert kserve.stamp_of(api.stored(NS, "m")) == stamp(PROD)


def test_a_promotion_that_does_not_roll_out_puts_production_back():
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    target = _target(api, apps, controller, timeout=30)
    deployment = target.deploy(CAND)
    controller.failures[stamp(CAND)] = "crash"  # e.g. the node pool of production's pods

    with pytest.raises(DeployError) as info:
        target.promote(deployment)

    message = str(info.value)
    assert message.startswith(f"promoting the canary {canary_of(CAND)}")
    assert "CrashLoopBackOff" in message
    assert "restored the previous spec of InferenceService ns/m; it serves again" in message
    stored = api.stored(NS, "m")
    assert kserve.stamp_of(stored) == stamp(PROD) and "canary" not in stored["spec"]
    assert controller.history[-1].serving == (stamp(PROD),)


def test_rollback_removes_the_canary_and_only_production_serves():
    api, apps, controller = kserve_cluster()
    before = _production(api, apps, controller, min_replicas=4)
    target = _target(api, apps, controller)
    deployment = target.deploy(CAND.model_copy(update={"canary_traffic_percent": 25}))
    assert apps.stored(NS, "m-predictor")["spec"]["replicas"] == 3

    done = target.rollback(deployment)  # e.g. the serving gate failed

    assert done.startswith(f"removed the canary {canary_of(CAND)} of InferenceService ns/m")
    assert "production serves alone" in done
    stored = api.stored(NS, "m")
    assert "canary" not in stored["spec"]
    assert stored["spec"]["predictor"] == before["spec"]["predictor"]
    assert apps.stored(NS, canary_deployment(CAND)) is None
    last = controller.history[-1]
    assert last.canaries == {} and last.serving == (stamp(PROD),) * 4  # its replicas back
    assert _target(api, apps, controller).rollback(deployment).endswith("nothing removed")
    _validate_stored(api)


def test_rollback_leaves_a_canary_another_deploy_changed_alone():
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    target = _target(api, apps, controller)
    deployment = target.deploy(CAND)
    current = copy.deepcopy(api.stored(NS, "m"))
    current["spec"]["canary"][0]["predictor"]["annotations"][kserve.ROLLOUT_ANNOTATION] = "other"
    api.replace_namespaced_custom_object(G, V, NS, P, "m", current)
    done = target.rollback(deployment)
    assert "now carries rollout other" in done and done.endswith("nothing removed")
    assert len(api.stored(NS, "m")["spec"]["canary"]) == 1


def test_teardown_of_a_canary_removes_only_it():
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    target = _target(api, apps, controller)
    target.teardown(target.deploy(CAND))
    stored = api.stored(NS, "m")
    assert stored is not None and "canary" not in stored["spec"]


# ---------------------------------------------------------------------------------------------
# rollback_run: the exit handler knows only the run
# ---------------------------------------------------------------------------------------------


def test_rollback_run_after_a_cancel_removes_that_runs_canary():
    api, apps, controller = kserve_cluster()
    before = _production(api, apps, controller)
    _target(api, apps, controller).deploy(CAND)  # then the run is cancelled in its smoke test

    done = _target(api, apps, controller).rollback_run("m", NS, "run-2")

    assert done.startswith(f"removed the canary {canary_of(CAND)} of InferenceService ns/m")
    stored = api.stored(NS, "m")
    assert "canary" not in stored["spec"] and stored["spec"] == before["spec"]
    assert controller.history[-1].canaries == {}
    assert (
        _target(api, apps, controller)
        .rollback_run("m", NS, "run-2")
        .startswith("nothing of run run-2 to undo")
    )  # idempotent


def test_rollback_run_of_a_pod_killed_mid_deploy_finds_its_canary():
    # the deploy step's pod was killed after the write, before it could undo anything
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    current = copy.deepcopy(api.stored(NS, "m"))
    current["spec"]["canary"] = [kserve.build_canary(CAND)]
    api.replace_namespaced_custom_object(G, V, NS, P, "m", current)
    done = _target(api, apps, controller).rollback_run("m", NS, "run-2")
    assert "removed the canary" in done and "canary" not in api.stored(NS, "m")["spec"]


def test_rollback_run_leaves_another_runs_canary_alone():
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    _target(api, apps, controller).deploy(CAND)
    before = copy.deepcopy(api.stored(NS, "m")["spec"])
    api.calls.clear()

    done = _target(api, apps, controller).rollback_run("m", NS, "run-3")

    assert done == (
        f"nothing of run run-3 to undo in InferenceService ns/m: production is rollout "
        f"{stamp(PROD)} of run run-1; the canaries {canary_of(CAND)} are other runs'"
    )
    assert api.stored(NS, "m")["spec"] == before and _verbs(api) == []


def test_rollback_run_leaves_a_promoted_service_alone():
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    target = _target(api, apps, controller)
    target.promote(target.deploy(CAND))
    before = copy.deepcopy(api.stored(NS, "m")["spec"])
    api.calls.clear()

    done = target.rollback_run("m", NS, "run-2")  # e.g. the registry half of promote failed

    assert done.startswith("left InferenceService ns/m alone: its predictor")
    assert "promoted to production" in done
    assert api.stored(NS, "m")["spec"] == before and _verbs(api) == []
    assert target.rollback_run("m", NS, "run-1").startswith("nothing of run run-1 to undo")


def test_rollback_run_deletes_a_first_release_that_run_created():
    api, apps, controller = kserve_cluster()
    _target(api, apps, controller).deploy(PROD)
    meta = api.stored(NS, "m")["metadata"]
    assert meta["annotations"][kserve.CREATED_BY_ANNOTATION] == "run-1"

    assert _target(api, apps, controller).rollback_run("m", NS, "run-9").startswith("nothing")
    assert api.stored(NS, "m") is not None
    done = _target(api, apps, controller).rollback_run("m", NS, "run-1")

    assert done == "run run-1 created InferenceService ns/m: deleted the new InferenceService ns/m"
    assert api.stored(NS, "m") is None
    assert (
        _target(api, apps, controller)
        .rollback_run("m", NS, "run-1")
        .startswith("nothing of run run-1 to undo: there is no InferenceService ns/m")
    )


def test_rollback_run_keeps_a_first_release_another_run_builds_on():
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    _target(api, apps, controller).deploy(CAND)
    done = _target(api, apps, controller).rollback_run("m", NS, "run-1")
    assert "canaries of other runs" in done and api.stored(NS, "m") is not None


def test_rollback_run_delete_does_not_race_a_concurrent_change():
    api, apps, controller = kserve_cluster()
    target = _target(api, apps, controller)
    target.deploy(PROD)
    delete = api.delete_namespaced_custom_object

    def delete_after_another_writer(*a, **kw):  # another run adds its canary meanwhile
        current = copy.deepcopy(api.stored(NS, "m"))
        current["spec"]["canary"] = [kserve.build_canary(OTHER)]
        api.replace_namespaced_custom_object(G, V, NS, P, "m", current)
        return delete(*a, **kw)

    api.delete_namespaced_custom_object = delete_after_another_writer
    with pytest.raises(DeployError, match="changed since it was read"):
        target.rollback_run("m", NS, "run-1")
    assert api.stored(NS, "m") is not None


def test_rollback_run_needs_a_run_id():
    with pytest.raises(ConfigError, match="run id"):
        _target(FakeCustomObjectsApi(), FakeAppsV1Api()).rollback_run("m", NS, "")


# ---------------------------------------------------------------------------------------------
# The double follows KServe v0.20.0
# ---------------------------------------------------------------------------------------------


def _isvc_with(canaries: list[dict], **predictor) -> dict:
    body = kserve.build_inference_service(PROD)
    body["spec"]["predictor"].update(predictor)
    body["spec"]["canary"] = canaries
    return body


def _entry(name: str, percent: int = 0, **predictor) -> dict:
    entry = kserve.build_canary(CAND.model_copy(update={"canary_traffic_percent": percent}))
    entry["predictor"] |= {"name": name, **predictor}
    return entry


@pytest.mark.parametrize(
    "body, message",
    [
        (_isvc_with([_entry("a"), _entry("a")]), 'canary predictor.name "a" is duplicated'),
        (_isvc_with([_entry("a")], name="a"), "conflicts with stable predictor name"),
        (_isvc_with([_entry("a", 60), _entry("b", 50)]), r"sum of canary trafficPercent values"),
        (_isvc_with([_entry("a", minReplicas=2)]), r"minReplicas \(2\) must not exceed"),
        (_isvc_with([_entry("a", maxReplicas=3)]), "must not set maxReplicas"),
        (_isvc_with([_entry("", 10)]), r"canary\[0\] predictor.name is required"),
    ],
)
def test_double_webhook_refuses_what_kserve_refuses(body, message):
    with pytest.raises(ApiException) as e:
        kserve_admission(None, body)
    assert e.value.status == 403
    text = json.loads(e.value.body)["message"]
    assert text.startswith("admission webhook") and re.search(message, text)


def test_double_webhook_canary_modes_and_name_changes():
    body = _isvc_with([_entry("a")])
    kserve_admission(None, body)
    body["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "RawDeployment"
    kserve_admission(None, body)  # the defaulting webhook rewrites it to Standard first
    body["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Knative"
    with pytest.raises(ApiException, match="Forbidden"):
        kserve_admission(None, body)
    old = kserve.build_inference_service(PROD)
    renamed = copy.deepcopy(old)
    renamed["spec"]["predictor"]["name"] = "blue"
    with pytest.raises(ApiException) as e:
        kserve_admission(old, renamed)  # validatePredictorNameChange
    assert "predictor.name change requires a model change" in e.value.body


def test_double_canary_pods_run_production_overlaid_and_orphans_go():
    api, apps, controller = kserve_cluster()
    _production(
        api,
        apps,
        controller,
        spec=PROD.model_copy(
            update={"placement": Placement(tolerations=[Toleration(key="gpu", operator="Exists")])}
        ),
    )
    current = copy.deepcopy(api.stored(NS, "m"))
    current["spec"]["canary"] = [kserve.build_canary(CAND)]  # no tolerations of its own
    api.replace_namespaced_custom_object(G, V, NS, P, "m", current)
    controller.run(api, NS, "m", 4)
    pod = apps.stored(NS, canary_deployment(CAND))["spec"]["template"]
    assert pod["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]  # inherited
    assert pod["metadata"]["labels"]["app"] == f"isvc.{canary_deployment(CAND)}"
    assert pod["metadata"]["annotations"][kserve.ROLLOUT_ANNOTATION] == stamp(CAND)

    current = copy.deepcopy(api.stored(NS, "m"))
    del current["spec"]["canary"]
    api.replace_namespaced_custom_object(G, V, NS, P, "m", current)
    controller.run(api, NS, "m", 1)
    assert apps.stored(NS, canary_deployment(CAND)) is None  # orphan clean-up
    assert controller.history[-1].canaries == {}


@pytest.mark.parametrize("autoscaler, replicas", [(None, 1), ("none", 0)])
def test_double_zero_percent_without_min_replicas(autoscaler, replicas):
    """``canaryReplicaCount`` is 0; the HPA (default class) keeps at least 1 pod
    (``createHPA``, hpa_reconciler.go 150-166), the ``none`` class sets replicas as counted."""
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    current = copy.deepcopy(api.stored(NS, "m"))
    if autoscaler:
        current["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] = autoscaler
    entry = kserve.build_canary(CAND)
    del entry["predictor"]["minReplicas"]
    current["spec"]["canary"] = [entry]
    api.replace_namespaced_custom_object(G, V, NS, P, "m", current)
    controller.run(api, NS, "m", 4)
    assert apps.stored(NS, canary_deployment(CAND))["spec"]["replicas"] == replicas


def test_double_strict_schema_catches_a_bad_write():
    api, apps, controller = kserve_cluster()
    body = kserve.build_inference_service(PROD)
    body["spec"]["canary"] = [{"predictor": {"name": "x"}, "trafficPercent": "10"}]
    with pytest.raises(AssertionError, match="trafficPercent"):
        api.create_namespaced_custom_object(G, V, NS, P, body)
    assert api.violations and api.stored(NS, "m") is None


def test_double_controller_rejects_unknown_failures():
    with pytest.raises(ValueError, match="unknown failure"):
        KServeController(FakeAppsV1Api(), failures={"x": "late"})


def test_deploy_waits_until_kserve_reports_the_canary_ready():
    # KServe writes canaryStatuses from the Deployment as it saw it (status_lags: one step
    # late), so the Deployment rolled out is not enough. With another run's canary (ready)
    # beside it, CanaryPredictorReady covers both and canaryStatuses alone tells.
    api, apps, controller = kserve_cluster(status_lags=True)
    _production(api, apps, controller)
    _target(api, apps, controller).deploy(OTHER)
    _target(api, apps, controller).deploy(CAND)
    status = api.stored(NS, "m")["status"]  # what the last poll read
    assert [s["ready"] for s in status["canaryStatuses"]] == [True, True]


def test_a_stopped_service_does_not_report_its_canary_ready():
    # reconcileCanaryDeployments sets CanaryPredictorReady=False (Stopped) for a force-stopped
    # InferenceService whatever its canary Deployments say (predictor.go 983-996)
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    reconcile = api.controller

    def reconcile_stopped(api_, obj):
        reconcile(api_, obj)
        status = copy.deepcopy(api_.stored(NS, "m")["status"])
        for c in status["conditions"]:
            if c["type"] == "CanaryPredictorReady":
                c.update(status="False", reason="Stopped")
        api_.set_status(G, V, NS, P, "m", status)

    api.controller = reconcile_stopped
    with pytest.raises(DeployTimeoutError, match="CanaryPredictorReady is not True yet"):
        _target(api, apps, controller, timeout=0.3).deploy(CAND)


def test_an_in_place_replace_keeps_another_runs_canary_and_restores_around_it():
    api, apps, controller = kserve_cluster()
    _production(api, apps, controller)
    _target(api, apps, controller).deploy(OTHER)  # run-3 gates its canary
    replaced = _target(api, apps, controller, canary=False).deploy(CAND)
    names = [c["predictor"]["name"] for c in api.stored(NS, "m")["spec"]["canary"]]
    assert replaced.details["role"] == "replace" and names == [canary_of(OTHER)]

    _target(api, apps, controller).rollback_run("m", NS, "run-3")  # their rollback first
    _target(api, apps, controller).rollback(replaced)  # then ours restores production

    stored = api.stored(NS, "m")
    assert kserve.stamp_of(stored) == stamp(PROD)
    assert "canary" not in stored["spec"]  # their removed canary is not resurrected
