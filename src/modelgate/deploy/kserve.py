"""KServe deploy target: a vLLM ``InferenceService`` built from a :class:`DeploySpec`.

Argument split
    The namespace-scoped ServingRuntime ``vllm-runtime`` (``manifests/base``) starts
    ``python3 -m vllm.entrypoints.openai.api_server`` with :func:`runtime_args` (model path, port
    and ``--served-model-name={{.Name}}``, which KServe renders with the InferenceService name).
    KServe *appends* the predictor's ``args`` to the runtime container's args
    (``MergeRuntimeContainers``), so the InferenceService carries only :func:`isvc_args`: the rest
    of :func:`~modelgate.deploy.spec.vllm_args`. ``render_runtime_args(name) + isvc_args(spec) ==
    vllm_args(spec, model_path="/mnt/models", port=8080)`` holds for every spec; the unit tests
    check it against both this module and the kustomize-built runtime.

Roles (what :meth:`KServeTarget.deploy` does, in ``Deployment.details["role"]``)
    ``first``: no InferenceService of that name yet; it is created and is the only deployment.
    ``canary``: a Ready InferenceService in a Deployment-backed mode (``Standard``, or
    ``RawDeployment``, which KServe's defaulting webhook rewrites to ``Standard``:
    ``inference_service_defaults.go`` 166-171) serves production; the candidate is added as a
    named canary predictor (``spec.canary``, KServe v0.20.0, kserve/kserve#5672) and
    production's ``spec.predictor`` is not touched. :meth:`KServeTarget.promote` then makes the
    candidate ``spec.predictor``; :meth:`KServeTarget.rollback` removes the canary entry.
    ``replace``: the predictor is replaced in place and the previous spec restored on failure:
    in ``Knative`` mode (KServe's ``validateCanarySpecs`` accepts ``spec.canary`` only in
    ``Standard`` mode; Knative's own ``canaryTrafficPercent`` splits the revisions of one
    predictor instead, with the candidate addressable only through tag routing, which this
    target does not drive), when production is not Ready (nothing to protect, and a canary's
    pods are built from production's predictor), when KServe would not run the candidate as
    built (see *Canary*), when the names would not fit, on a KServe whose CRD prunes
    ``spec.canary`` (before v0.20.0) and with ``KServeTarget(canary=False)``. In-place writes
    leave ``spec.canary`` (other runs' canaries) as it is.

Canary (KServe v0.20.0 ``pkg/controller/v1beta1/inferenceservice/components/predictor.go``)
    ``reconcileCanaryDeployments`` (913-1040) gives every ``spec.canary[i]`` its own Deployment
    and Service ``PredictorServiceName(isvc, canary.predictor.name)`` =
    ``<isvc>-<canary>-predictor`` (``pkg/constants/constants.go`` 799-804), whose Service
    selects only that Deployment's pods (``app: isvc.<that name>``,
    ``reconcilers/service/service_reconciler.go`` 176-180). Its pods run
    ``buildCanaryPredictor`` (897-911): *production's predictor overlaid with the canary's*
    (``mergo.Merge(..., WithOverride)``: fields the canary leaves empty keep production's values;
    lists are replaced only by non-empty ones, maps merged key by key), with
    ``minReplicas = canaryReplicaCount`` (886-895): the canary's own ``minReplicas`` if set,
    else ``ceil(stable minReplicas (default 1) * trafficPercent / 100)``. When the stable
    predictor sets ``minReplicas``, the canaries' replicas are taken from it (at least 1 is left,
    ``reconcileRawDeployment`` 795-803). ``trafficPercent`` therefore only sizes the canary in
    v0.20.0: nothing routes requests between the two Services (HTTPRoute weights came after the
    release, kserve/kserve#5912), so a canary is reached through its own Service only. A dark
    launch (0 %) sets the canary's ``minReplicas: 1``; without it the replica count would be 0
    (with ``serving.kserve.io/autoscalerClass: none``) or the HPA's floor of 1
    (``hpa_reconciler.go`` ``createHPA`` 150-166), depending on the autoscaler class.
    Readiness: ``status.canaryStatuses[name].ready`` (the canary Deployment has an available
    replica, 959-981) and the ``CanaryPredictorReady`` condition (all canaries ready, 983-1000;
    not part of ``Ready``, ``inference_service_status.go`` 295-298), plus the canary
    Deployment's own rollout of this candidate's pod template (see *Readiness*). Removing a canary
    entry makes the next reconcile delete its Deployment and Service (orphan clean-up,
    1002-1039). Because the pods run the overlay, :meth:`KServeTarget.deploy` computes it
    (:func:`canary_predictor_as_run`) and falls back to ``replace`` when a field modelgate sets
    would be inherited from production (an argument list, a toleration, a GPU request the
    candidate dropped): the gates must measure exactly what is promoted. The webhook requires a
    canary ``predictor.name`` different from the stable one and a ``minReplicas`` no larger than
    the stable's (``inference_service_validation.go`` ``validateCanarySpecs`` 183-265); the
    v0.20.0 CRD requires ``spec.canary[].predictor.model.name`` (the Makefile's ``del(...
    .required)`` at 208-209 does not reach the list), which is set to the runtime's container
    name ``kserve-container`` so the container merge leaves the name alone
    (``utils.go`` ``MergeRuntimeContainers`` 253-263).

Promotion
    :meth:`KServeTarget.promote` writes the candidate (as it ran: production's predictor overlaid
    with it, :func:`promoted_predictor`) as ``spec.predictor`` under production's predictor
    *name* and scaling settings, and removes the canary entry in the same compare-and-swap write;
    KServe rolls production's Deployment over to the candidate's pod template and deletes the
    canary's Deployment. KServe documents a restart-free promotion instead (``spec.predictor.name
    = <canary>`` and the entry removed, ``inference_service.go`` 36-42: the canary Deployment
    becomes the stable one), but that moves ``status.address`` to ``<isvc>-<canary>-predictor``
    (``createAddress``, ``kube_ingress_reconciler.go`` 146-170), the orphan clean-up deletes
    production's Deployment in the same reconcile (capacity drops to the canary's replicas until
    it scales up), and ``validatePredictorNameChange`` (703-713) refuses it when the storage URI
    did not change; keeping the name keeps the address and capacity at the price of one more
    model start in a rolling update.

Readiness
    In ``Standard`` (``RawDeployment`` before KServe 0.16) mode the predictor is the Deployment
    ``<name>-predictor``. KServe derives ``PredictorReady`` from that Deployment's ``Available``
    condition only (``PropagateRawStatus`` in ``pkg/apis/serving/v1beta1/
    inference_service_status.go``), which stays True while old pods serve during a rollout, and
    it copies the Deployment's ``observedGeneration`` into the InferenceService status, so
    neither says whether the *new* spec serves. :class:`KServeTarget` therefore stamps every spec
    with a hash in ``spec.predictor.annotations`` (KServe copies predictor annotations onto the
    Deployment's pod template: ``Predictor.Reconcile`` in ``pkg/controller/v1beta1/
    inferenceservice/components/predictor.go``) and waits until the Deployment's template carries
    that hash and it has rolled out the way ``kubectl rollout status`` judges it (its own
    ``observedGeneration``, updated == available == desired replicas, no old replicas left).
    KServe creates the Deployment with ``progressDeadlineSeconds: 600``
    (``reconcilers/deployment/deployment_reconciler.go`` ``setDefaultDeploymentSpec`` 341-360)
    while vLLM's startup probe allows far longer plus the model download, so a
    ``Progressing=False ProgressDeadlineExceeded`` is *not* a failure: the wait goes on until
    :attr:`KServeTarget.timeout`. What fails at once is what will not heal: another
    ``Progressing=False`` reason (``ReplicaSetCreateError``), ``ReplicaFailure=True``, the new
    pods' crash loops and image-pull errors (their events, when an events API is given), KServe's
    ``BlockedByFailedLoad``/``InvalidSpec`` model status and failure conditions. Failures count
    only when they are about that spec: a ``Progressing=False`` condition already reported
    before the spec was applied is ignored (a rollback to an existing ReplicaSet keeps the
    previous rollout's condition for a while), and the InferenceService's conditions once KServe
    wrote them after the Deployment controller observed the new template.
    In ``Knative`` mode the InferenceService's own ``observedGeneration`` and ``Ready`` are used
    (there Knative's own progress deadline fails the revision for good, so it stays fatal).

Run stamps
    What a run creates carries its id (``DeploySpec.run_id``): :data:`RUN_ANNOTATION` in the
    predictor's annotations (stable or canary) and, on an InferenceService it created,
    :data:`CREATED_BY_ANNOTATION` in its metadata (only at creation: KServe copies the
    InferenceService's annotations onto the pod template too, so a later change would restart
    production's pods). :meth:`KServeTarget.rollback_run` reads them.

Endpoint
    :class:`KServeTarget` reports ``status.address.url`` (the cluster-local address,
    ``http://<name>-predictor.<ns>.svc.cluster.local``) because the pipeline step that smoke-tests
    the model runs inside the cluster, where that address always resolves; it falls back to
    ``status.url`` (the ingress URL) when the controller did not publish an address.
    ``KServeTarget(endpoint="url")`` prefers the external ``status.url`` instead. A canary is
    reached through its own Service, ``http://<name>-<canary>-predictor.<ns>.svc.cluster.local``,
    whatever ``endpoint`` says (v0.20.0 publishes no other address for it).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from modelgate.constants import RUNTIME_NAME
from modelgate.deploy.crd import API_VERSION, GROUP, KIND, VERSION
from modelgate.deploy.spec import DEPLOYMENT_BACKED_MODES, DeploySpec, vllm_args
from modelgate.deploy.target import Deployment
from modelgate.errors import ConfigError, DeployError, DeployTimeoutError
from modelgate.images import VLLM_CPU_IMAGE
from modelgate.processes import signals_raise
from modelgate.retry import backoff, wait_until

try:  # the kubernetes client is the optional "kserve" extra; building/validating needs none of it
    from kubernetes.client.exceptions import ApiException
except ImportError:  # pragma: no cover - exercised only without the extra installed

    class ApiException(Exception):  # type: ignore[no-redef]
        """Stand-in so ``except ApiException`` works when kubernetes is not installed."""

        status: int | None = None
        reason: str | None = None
        body: str | None = None


logger = logging.getLogger(__name__)

PLURAL = "inferenceservices"
MODEL_MOUNT_PATH = "/mnt/models"  # where KServe's storage initializer puts storageUri
RUNTIME_PORT = 8080  # the port KServe routes to (container port of kserve-container)
NAME_PLACEHOLDER = "{{.Name}}"  # Go template KServe renders with the InferenceService metadata
#: The ServingRuntime's model container (``constants.InferenceServiceContainerName``).
CONTAINER_NAME = "kserve-container"

MANAGED_BY = "modelgate"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
ROLLOUT_ANNOTATION = "modelgate.io/rollout"
#: The pipeline run whose candidate a predictor (stable or canary) is.
RUN_ANNOTATION = "modelgate.io/run"
#: The pipeline run that created an InferenceService (metadata; written at creation only).
CREATED_BY_ANNOTATION = "modelgate.io/created-by-run"
PREDICTOR_SUFFIX = "-predictor"  # constants.PredictorServiceName: "<isvc>-predictor"
#: Canary predictor names: this prefix and the first characters of the candidate's stamp.
CANARY_PREFIX = "c"
CANARY_STAMP_CHARS = 6
#: Kubernetes label values (KServe's ``app: isvc.<Deployment>``) and Service names: 63 at most.
_MAX_LABEL = 63
_APP_LABEL_PREFIX = "isvc."  # constants.GetRawServiceLabel

Role = Literal["first", "canary", "replace"]

RBAC_HINT = (
    "bind the Role modelgate-deployer (manifests/base/rbac.yaml) to the service account the "
    "pipeline runs as: kubectl apply -k manifests/overlays/kubeflow-profile -n <namespace> "
    "(default-editor) or manifests/overlays/standalone (pipeline-runner)"
)

# Conditions reasons that will not heal by waiting (Knative revision failures and progress
# deadline, KServe's own spec/runtime failures).
_FATAL_REASONS = frozenset(
    {
        "RevisionFailed",
        "RevisionMissing",
        "ProgressDeadlineExceeded",
        "InvalidPredictorSpec",
        "InvalidSpec",
        "NoSupportingRuntime",
        "RuntimeNotRecognized",
        "RuntimeDisabled",
        "ModelLoadFailed",
        "ContainerMissing",
        "ServerlessModeRejected",
    }
)
_FATAL_TRANSITIONS = frozenset({"BlockedByFailedLoad", "InvalidSpec"})
# Reasons KServe copies from the predictor Deployment's conditions; in Deployment-backed modes the
# Deployment itself is read instead (KServeTarget.predictor_rollout).
_DEPLOYMENT_REASONS = frozenset({"ProgressDeadlineExceeded"})
#: The Deployment controller's ``Progressing=False`` reason after ``progressDeadlineSeconds``
#: without progress (kubernetes ``pkg/controller/deployment/util/deployment_util.go``
#: ``TimedOutReason``): pods that are still starting, not a failure by itself.
PROGRESS_DEADLINE = "ProgressDeadlineExceeded"
# Pod events (kubelet ``pkg/kubelet/events/event.go`` reasons BackOff/Failed, messages of
# ``kuberuntime_manager.go`` and ``images/image_manager.go``) of failures that do not heal.
_CRASH_LOOP = "Back-off restarting failed container"
_IMAGE_PULL_ERRORS = (
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "Back-off pulling image",
)
# The new ReplicaSet as the Deployment controller names it in its Progressing condition
# ("Created new replica set "x"", "ReplicaSet "x" is progressing.", ... deployment_util.go).
_REPLICA_SET_IN_MESSAGE = re.compile(r'(?:replica set|ReplicaSet) "([^"]+)"')


# --------------------------------------------------------------------------------------------
# Building the InferenceService
# --------------------------------------------------------------------------------------------


def runtime_args() -> list[str]:
    """The vLLM arguments the ServingRuntime ``vllm-runtime`` itself passes (unrendered).

    ``{{.Name}}`` is replaced by KServe with the InferenceService name. The order matches
    :func:`modelgate.deploy.vllm_args` so runtime args + :func:`isvc_args` equal ``vllm_args``.
    """
    return [
        f"--model={MODEL_MOUNT_PATH}",
        f"--port={RUNTIME_PORT}",
        f"--served-model-name={NAME_PLACEHOLDER}",
    ]


def render_runtime_args(name: str, args: list[str] | None = None) -> list[str]:
    """``args`` (default :func:`runtime_args`) as KServe renders them for ISVC ``name``."""
    return [a.replace(NAME_PLACEHOLDER, name) for a in (runtime_args() if args is None else args)]


def _flag(arg: str) -> str:
    return arg.split("=", 1)[0]


def isvc_args(spec: DeploySpec) -> list[str]:
    """The vLLM arguments the InferenceService adds to the runtime's (see module docstring).

    Raises:
        ConfigError: ``spec.extra_args`` sets a flag the runtime already fixes
            (``--model``, ``--port``, ``--served-model-name``).
        DeployError: :func:`vllm_args` no longer starts with the runtime's arguments (the two
            drifted apart; fix :func:`runtime_args` and ``manifests/base/servingruntime.yaml``).
    """
    full = vllm_args(spec, model_path=MODEL_MOUNT_PATH, port=RUNTIME_PORT)
    fixed = render_runtime_args(spec.name)
    if full[: len(fixed)] != fixed:
        raise DeployError(
            f"vllm_args() starts with {full[: len(fixed)]} but the ServingRuntime passes {fixed}; "
            "update modelgate.kserve.runtime_args and manifests/base/servingruntime.yaml together"
        )
    rest = full[len(fixed) :]
    runtime_flags = {_flag(a) for a in fixed}
    clashes = [a for a in rest if _flag(a) in runtime_flags]
    if clashes:
        raise ConfigError(
            f"extra_args {clashes} override flags the KServe runtime sets itself "
            f"({', '.join(sorted(runtime_flags))}); remove them (the model name is the "
            "InferenceService name, the model is mounted at /mnt/models, the port is 8080)"
        )
    return rest


def _resources(spec: DeploySpec) -> dict[str, Any]:
    serve = spec.placement.resources("serve")
    requests = {"cpu": serve.cpu, "memory": serve.memory}
    limits = {"cpu": serve.cpu_limit or serve.cpu, "memory": serve.memory_limit or serve.memory}
    gpus = spec.placement.accelerator_count
    if gpus > 0:  # extended resources need request == limit
        requests[spec.placement.accelerator_type] = limits[spec.placement.accelerator_type] = str(
            gpus
        )
    return {"requests": requests, "limits": limits}


def runtime_image(spec: DeploySpec) -> str | None:
    """The predictor image modelgate names itself, or None to run the ServingRuntime's.

    KServe rewrites the tagged image of a ``serving.kserve.io/server-type: vllmserver`` runtime
    whose container asks for no NVIDIA GPU: ``vllm/vllm-openai:<tag>`` becomes
    ``vllm/vllm-openai-cpu:<tag>`` (v0.20.0 ``UpdateImageTag``,
    ``pkg/controller/v1beta1/inferenceservice/utils/utils.go``, applied by
    ``components/predictor.go`` to the merged runtime and predictor container); an image
    pinned by ``@sha256`` digest, or whose repository already ends in ``-cpu``, is left alone.
    So in CPU mode (``accelerator_count`` 0) modelgate's own runtime gets vLLM's CPU build named
    explicitly (:data:`~modelgate.images.VLLM_CPU_IMAGE`, the release of ``VLLM_IMAGE``): the pod
    runs what the InferenceService says, not what KServe derives. Other runtimes are left alone.
    """
    if spec.placement.accelerator_count > 0 or spec.runtime != RUNTIME_NAME:
        return None
    return VLLM_CPU_IMAGE


def rollout_hash(isvc_spec: Mapping[str, Any]) -> str:
    """A hash of an InferenceService ``spec`` without its own rollout stamp.

    ``rollout_hash(build_inference_service(spec)["spec"])`` is the stamp the spec carries.
    """
    body = copy.deepcopy(dict(isvc_spec))
    predictor = body.get("predictor") or {}
    annotations = predictor.get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(ROLLOUT_ANNOTATION, None)
        if not annotations:  # the stamp was computed before the annotations were added
            del predictor["annotations"]
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def build_inference_service(spec: DeploySpec) -> dict[str, Any]:
    """A ``serving.kserve.io/v1beta1`` InferenceService serving ``spec`` with the vLLM runtime.

    Args:
        spec: The deployment.

    Returns:
        The object as a plain dict (JSON-compatible), ready for the API or ``yaml.safe_dump``;
        ``spec.predictor.annotations`` carries :data:`ROLLOUT_ANNOTATION` (and
        :data:`RUN_ANNOTATION` when ``spec.run_id`` is set).

    Raises:
        ConfigError: ``spec.extra_args`` clashes with the runtime's own flags.
    """
    labels = {
        **spec.labels,
        "app.kubernetes.io/name": spec.name,
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/part-of": "modelgate",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    annotations = {**spec.annotations, DEPLOYMENT_MODE_ANNOTATION: spec.deployment_mode}
    model: dict[str, Any] = {
        "modelFormat": {"name": spec.model_format},
        "runtime": spec.runtime,
        "storageUri": spec.storage_uri,
        "args": isvc_args(spec),
        "resources": _resources(spec),
    }
    image = runtime_image(spec)
    if image:
        model["image"] = image
    predictor: dict[str, Any] = {"model": model}
    if spec.placement.tolerations:
        predictor["tolerations"] = spec.placement.toleration_dicts()
    if spec.placement.node_selector:
        predictor["nodeSelector"] = dict(spec.placement.node_selector)
    if spec.service_account:
        predictor["serviceAccountName"] = spec.service_account
    if spec.run_id:  # part of the hash: each run's candidate has a stamp of its own
        predictor["annotations"] = {RUN_ANNOTATION: spec.run_id}
    body = {"predictor": predictor}
    predictor["annotations"] = {
        **(predictor.get("annotations") or {}),
        ROLLOUT_ANNOTATION: rollout_hash(body),
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": body,
    }


# --------------------------------------------------------------------------------------------
# Canary predictors (KServe v0.20.0 spec.canary; see the module docstring)
# --------------------------------------------------------------------------------------------


def predictor_service_name(isvc: str, predictor: str | None = None) -> str:
    """The Deployment and Service of predictor ``predictor`` (None: the unnamed stable one).

    KServe v0.20.0 ``constants.PredictorServiceName`` (``pkg/constants/constants.go`` 799-804).
    """
    return f"{isvc}-{predictor}{PREDICTOR_SUFFIX}" if predictor else f"{isvc}{PREDICTOR_SUFFIX}"


def service_url(service: str, namespace: str) -> str:
    """The cluster-local URL of Service ``service`` (KServe's Services listen on port 80)."""
    return f"http://{service}.{namespace}.svc.cluster.local"


def canary_name(rollout: str) -> str:
    """The canary predictor name of the candidate stamped ``rollout`` (DNS-1035, 7 characters)."""
    return f"{CANARY_PREFIX}{rollout[:CANARY_STAMP_CHARS]}"


def _predictor_stamp(predictor: Mapping[str, Any] | None) -> str | None:
    return ((predictor or {}).get("annotations") or {}).get(ROLLOUT_ANNOTATION)


def _predictor_run(predictor: Mapping[str, Any] | None) -> str | None:
    return ((predictor or {}).get("annotations") or {}).get(RUN_ANNOTATION)


def canaries_of(obj: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The ``spec.canary`` entries of an InferenceService (empty without any)."""
    return list(((obj or {}).get("spec") or {}).get("canary") or [])


def canary_entry(obj: Mapping[str, Any] | None, name: str) -> dict[str, Any] | None:
    """The ``spec.canary`` entry whose predictor is called ``name``, or None."""
    for entry in canaries_of(obj):
        if (entry.get("predictor") or {}).get("name") == name:
            return entry
    return None


def build_canary(spec: DeploySpec) -> dict[str, Any]:
    """The ``spec.canary`` entry that serves ``spec`` beside production.

    The predictor is :func:`build_inference_service`'s (its rollout stamp included) with the
    name :func:`canary_name`, ``model.name`` set to the runtime's container (the v0.20.0 CRD
    requires it in canary entries) and, for a dark launch (``canary_traffic_percent`` 0),
    ``minReplicas: 1``, so it runs one pod that no production request reaches.
    """
    built = build_inference_service(spec)["spec"]["predictor"]
    predictor: dict[str, Any] = {"name": canary_name(_predictor_stamp(built) or ""), **built}
    predictor["model"] = {"name": CONTAINER_NAME, **built["model"]}
    if spec.canary_traffic_percent == 0:
        predictor["minReplicas"] = 1
    return {"predictor": predictor, "trafficPercent": spec.canary_traffic_percent}


def _empty(value: Any) -> bool:
    """mergo's ``isEmptyValue`` for JSON values: null, "", 0, false, [] and {}."""
    if isinstance(value, bool | int | float):
        return not value
    return value is None or value == "" or value == [] or value == {}


def kserve_merge(base: Any, override: Any) -> Any:
    """``mergo.Merge(&base, override, mergo.WithOverride)`` on JSON (a new value; no mutation).

    dario.cat/mergo v1.0.2 ``deepMerge``, as ``buildCanaryPredictor`` calls it on two
    ``PredictorSpec`` structs: objects merge field by field; a field the override leaves empty
    keeps the base's value; anything else (a non-empty list, a scalar) replaces it.
    """
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        out = copy.deepcopy(dict(base))
        for key, value in override.items():
            if key in out and _empty(value):
                continue
            out[key] = kserve_merge(out[key], value) if key in out else copy.deepcopy(value)
        return out
    return copy.deepcopy(override)


def canary_replica_count(isvc_spec: Mapping[str, Any], entry: Mapping[str, Any]) -> int:
    """The replicas KServe gives canary ``entry`` (``canaryReplicaCount``, predictor.go 886-895).

    The canary's own ``minReplicas`` if set, else ``ceil(stable minReplicas (default 1) *
    trafficPercent / 100)``.
    """
    own = (entry.get("predictor") or {}).get("minReplicas")
    if own is not None:
        return int(own)
    stable = ((isvc_spec.get("predictor") or {}).get("minReplicas")) or 1
    return math.ceil(float(stable) * float(entry.get("trafficPercent") or 0) / 100)


# Autoscaling fields: ``buildCanaryPredictor`` drops them from a canary (fixed replicas); a
# promoted candidate keeps production's.
_SCALING = (
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "scaleMetricType",
    "autoScaling",
    "deploymentStrategy",
)


def canary_predictor_as_run(
    stable: Mapping[str, Any], canary: Mapping[str, Any], replicas: int
) -> dict[str, Any]:
    """The predictor KServe runs a canary with (``buildCanaryPredictor``, predictor.go 897-911).

    Production's predictor overlaid with the canary's (:func:`kserve_merge`), without its
    autoscaling fields and with ``minReplicas = replicas``.
    """
    ran = kserve_merge(stable, canary)
    for key in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
        ran.pop(key, None)
    ran["minReplicas"] = replicas
    return ran


# What build_inference_service sets in a predictor: a canary must run with exactly these.
_BUILT_FIELDS = (
    ("model", "modelFormat", "name"),
    ("model", "runtime"),
    ("model", "storageUri"),
    ("model", "args"),
    ("model", "resources"),
    ("model", "image"),
    ("tolerations",),
    ("nodeSelector",),
    ("serviceAccountName",),
)


def _at(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def inherited_fields(stable: Mapping[str, Any], candidate: Mapping[str, Any]) -> list[str]:
    """Fields modelgate builds that a canary of ``candidate`` would run with other values.

    KServe overlays the canary on production's predictor, so a field the candidate leaves out or
    empty (no ``--max-model-len``, no toleration, no GPU) keeps production's value
    (:func:`canary_predictor_as_run`); a map such as ``resources.limits`` keeps production's
    other keys. Empty when the canary runs the candidate as built.
    """
    ran = kserve_merge(stable, candidate)
    return [".".join(path) for path in _BUILT_FIELDS if _at(ran, path) != _at(candidate, path)]


def promoted_predictor(production: Mapping[str, Any], candidate: Mapping[str, Any]) -> dict:
    """The ``spec.predictor`` that makes canary predictor ``candidate`` production.

    What the canary ran (production's predictor overlaid with the candidate's, so the gates
    measured exactly this), under production's ``name`` (its Deployment, Service and address
    stay) and with production's autoscaling settings; production's own :data:`RUN_ANNOTATION`
    and :data:`ROLLOUT_ANNOTATION` give way to the candidate's.
    """
    base = copy.deepcopy(dict(production))
    annotations = {
        k: v
        for k, v in (base.get("annotations") or {}).items()
        if k not in (ROLLOUT_ANNOTATION, RUN_ANNOTATION)
    }
    base["annotations"] = annotations
    overlay = {k: v for k, v in candidate.items() if k not in ("name", *_SCALING)}
    out = kserve_merge(base, overlay)
    if not out.get("annotations"):
        out.pop("annotations", None)
    for key in ("name", *_SCALING):
        out.pop(key, None)
        if key in production:
            out[key] = copy.deepcopy(production[key])
    return out


# --------------------------------------------------------------------------------------------
# Deploy target
# --------------------------------------------------------------------------------------------


def _api_error(e: ApiException, action: str) -> DeployError:
    status = getattr(e, "status", None)
    detail = getattr(e, "reason", None) or ""
    body = getattr(e, "body", None)
    if body:
        try:
            detail = json.loads(body).get("message") or detail
        except (ValueError, AttributeError):
            detail = str(body)[:500]
    if "admission webhook" in str(detail):
        # controller-runtime answers a validating webhook's refusal with 403 (admission.Denied):
        # a refused spec, not missing RBAC
        return DeployError(f"{action}: refused by KServe's admission webhook: {detail}")
    if status == 403:
        return DeployError(f"{action}: forbidden (HTTP 403: {detail}); {RBAC_HINT}")
    if status == 401:
        return DeployError(
            f"{action}: unauthorized (HTTP 401: {detail}); "
            "check the kubeconfig or service-account token"
        )
    return DeployError(f"{action}: HTTP {status}: {detail}")


class _Conflict(Exception):
    """A 409 on replace: somebody else changed the object since our GET; re-read and retry."""


class _Superseded(Exception):
    """The object no longer carries the rollout a conditional write expects: leave it alone."""


def stamp_of(obj: Mapping[str, Any] | None) -> str | None:
    """The :data:`ROLLOUT_ANNOTATION` of an InferenceService's predictor (None without one)."""
    return _predictor_stamp(((obj or {}).get("spec") or {}).get("predictor"))


def _conditions_summary(obj: Mapping[str, Any] | None) -> str:
    status = (obj or {}).get("status") or {}
    parts = []
    for c in status.get("conditions") or []:
        text = f"{c.get('type')}={c.get('status')}"
        if c.get("reason"):
            text += f" ({c['reason']})"
        if c.get("message"):
            text += f": {c['message']}"
        parts.append(text)
    failure = (status.get("modelStatus") or {}).get("lastFailureInfo") or {}
    if failure:
        parts.append(f"modelStatus {failure.get('reason')}: {failure.get('message')}")
    return (
        "; ".join(parts) if parts else "no status reported yet (is the KServe controller running?)"
    )


def _condition(obj: Mapping[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


@dataclass(frozen=True)
class RolloutState:
    """Progress of a predictor Deployment towards one spec.

    ``reconciled``: its pod template carries the spec; ``observed``: the Deployment controller
    has seen that template (``status.observedGeneration`` >= ``generation``, the Deployment's
    own); ``done``: rolled out; ``failure``: why it will not get there.
    """

    reconciled: bool
    done: bool
    detail: str
    failure: str | None = None
    observed: bool = False
    generation: int | None = None


def _stall(dep: Any) -> str | None:
    """An identity of the Deployment's ``Progressing=False`` condition, or None without one.

    The Deployment controller keeps a ``ProgressDeadlineExceeded`` condition unchanged (same
    transition time) until a rollout progresses again, so the identity tells a condition that was
    already there before a rollout started from one this rollout caused.
    """
    status = getattr(dep, "status", None)
    for c in (status.conditions if status else None) or []:
        if c.type == "Progressing" and c.status == "False":
            return f"{c.reason}|{c.message}|{c.last_transition_time}"
    return None


def _identity(c: Any) -> str:
    """What tells one report of a Deployment condition from a later one."""
    if c.type == "Progressing":  # the form _stall gives (callers may hold one)
        return f"{c.reason}|{c.message}|{c.last_transition_time}"
    return f"{c.type}|{c.reason}|{c.message}|{c.last_transition_time}"


@dataclass(frozen=True)
class Stale:
    """What a Deployment reported before a write that gives it another pod template.

    ``conditions``: identities (:func:`_identity`) of its failure conditions then
    (``Progressing=False``, ``ReplicaFailure=True``); ``replica_set``: the ReplicaSet its
    ``Progressing`` condition named then. Neither is about the new template until the
    Deployment controller reports anew.
    """

    conditions: frozenset[str] = frozenset()
    replica_set: str | None = None


def _new_replica_set(dep: Any) -> str | None:
    """The ReplicaSet the Deployment's ``Progressing`` condition names (its newest), or None."""
    status = getattr(dep, "status", None)
    for c in (status.conditions if status else None) or []:
        if c.type == "Progressing":
            found = _REPLICA_SET_IN_MESSAGE.search(c.message or "")
            return found.group(1) if found else None
    return None


def _role_of(details: Mapping[str, Any]) -> Role:
    role = details.get("role")
    if role == "first" or role == "canary" or role == "replace":
        return role
    return "first" if details.get("previous_spec") is None else "replace"


class KServeTarget:
    """Deploys a :class:`DeploySpec` as a KServe InferenceService and waits until it serves.

    Args:
        api: A ``kubernetes.client.CustomObjectsApi`` (or a test double with the same methods).
        apps: A ``kubernetes.client.AppsV1Api`` to follow the predictor Deployment's rollout.
            When both are omitted, in-cluster config is loaded, falling back to the kubeconfig.
        core: A ``kubernetes.client.CoreV1Api`` to read the new pods' events (crash loops and
            image-pull errors fail a rollout at once). Created with the other two when those are
            omitted; None with given ones: those failures surface at ``timeout`` instead.
        timeout: Seconds to wait until the new spec serves (and for promotions and rollbacks).
        poll_interval: Seconds between status reads.
        endpoint: ``"address"`` (default): ``status.address.url``, the cluster-local URL, falling
            back to ``status.url``; ``"url"``: ``status.url`` first.
        field_manager: Field manager name recorded by the API server.
        canary: Gate a candidate as a canary beside a Ready production (the default); False:
            replace production's predictor in place (see the module docstring, *Roles*).

    Raises:
        ConfigError: Only one of ``api`` and ``apps`` is given, or no credentials are found.
    """

    name: Literal["kserve"] = "kserve"

    def __init__(
        self,
        api: Any | None = None,
        *,
        apps: Any | None = None,
        core: Any | None = None,
        timeout: float = 1800.0,
        poll_interval: float = 5.0,
        endpoint: Literal["address", "url"] = "address",
        field_manager: str = MANAGED_BY,
        canary: bool = True,
    ) -> None:
        if (api is None) != (apps is None):
            raise ConfigError("KServeTarget needs both api (CustomObjectsApi) and apps (AppsV1Api)")
        if api is None:
            api, apps = self._default_apis()
            if core is None:
                core = self._default_core()
        # both set: given together, or both from _default_apis()
        self.api: Any = api
        self.apps: Any = apps
        self.core: Any = core
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.endpoint = endpoint
        self.field_manager = field_manager
        self.canary = canary
        self._events_refused = False

    @staticmethod
    def _default_apis() -> tuple[Any, Any]:
        try:
            from kubernetes import client, config
        except ImportError as e:
            raise ConfigError(
                "the KServe target needs the kubernetes client: pip install 'modelgate[kserve]'"
            ) from e
        try:
            config.load_incluster_config()
        except config.ConfigException:
            try:
                config.load_kube_config()
            except (config.ConfigException, OSError) as e:
                raise ConfigError(
                    "no Kubernetes credentials: not running in a pod and no usable kubeconfig "
                    f"(set KUBECONFIG): {e}"
                ) from e
        return client.CustomObjectsApi(), client.AppsV1Api()

    @staticmethod
    def _default_core() -> Any:
        """A ``CoreV1Api`` on the configuration :meth:`_default_apis` loaded."""
        from kubernetes import client

        return client.CoreV1Api()

    # -- API helpers --------------------------------------------------------------------------

    def _get(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise _api_error(e, f"reading InferenceService {namespace}/{name}") from e

    def _get_deployment(self, name: str, namespace: str) -> Any | None:
        try:
            return self.apps.read_namespaced_deployment(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise _api_error(e, f"reading Deployment {namespace}/{name}") from e

    def _apply_once(self, body: dict[str, Any], only_if: str | None = None) -> dict[str, Any]:
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        existing = self._get(name, namespace)
        if only_if is not None and (existing is None or stamp_of(existing) != only_if):
            raise _Superseded(
                f"InferenceService {namespace}/{name} no longer exists"
                if existing is None
                else f"InferenceService {namespace}/{name} now carries rollout "
                f"{stamp_of(existing)}, not {only_if}: another deploy changed it"
            )
        try:
            if existing is None:
                logger.info("creating InferenceService %s/%s", namespace, name)
                return self.api.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, body, field_manager=self.field_manager
                )
            # Replace (not merge-patch) so fields dropped from the spec (a nodeSelector, a
            # toleration) really go away; resourceVersion makes it a compare-and-swap. The
            # canary entries are other deploys' business: they stay as they are now.
            updated = copy.deepcopy(existing)
            updated.pop("status", None)
            updated["spec"] = copy.deepcopy(body["spec"])
            updated["spec"].pop("canary", None)
            if canaries_of(existing):
                updated["spec"]["canary"] = canaries_of(existing)
            umeta = updated.setdefault("metadata", {})
            umeta["labels"] = {**(umeta.get("labels") or {}), **meta.get("labels", {})}
            umeta["annotations"] = {
                **(umeta.get("annotations") or {}),
                **{  # who created an object is said once: another one created this
                    k: v
                    for k, v in meta.get("annotations", {}).items()
                    if k != CREATED_BY_ANNOTATION
                },
            }
            logger.info(
                "updating InferenceService %s/%s (resourceVersion %s)",
                namespace,
                name,
                umeta.get("resourceVersion"),
            )
            return self.api.replace_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, updated, field_manager=self.field_manager
            )
        except ApiException as e:
            if e.status == 409:
                raise _Conflict(str(e)) from e
            verb = "creating" if existing is None else "updating"
            raise _api_error(e, f"{verb} InferenceService {namespace}/{name}") from e

    def apply(self, body: dict[str, Any], *, only_if: str | None = None) -> dict[str, Any]:
        """Create ``body`` or replace the existing object's spec; returns the stored object.

        A 409 (created or changed concurrently) re-reads and retries a few times.

        Args:
            body: The InferenceService.
            only_if: Replace only an existing object whose spec carries this rollout stamp
                (:func:`stamp_of`); checked on the object the compare-and-swap replaces.

        Raises:
            DeployError: The API refused (403 names the RBAC fix) or conflicts persisted.
            _Superseded: ``only_if`` is set and the object is gone or carries another stamp.
        """
        try:
            return backoff(
                lambda: self._apply_once(body, only_if),
                retry_on=(_Conflict,),
                attempts=5,
                base_delay=0.2,
                max_delay=2.0,
                what=f"apply InferenceService {body['metadata']['name']}",
            )
        except _Conflict as e:
            raise DeployError(
                f"InferenceService {body['metadata']['name']} kept changing while being updated "
                f"(409 Conflict): {e}"
            ) from e

    def _write_spec(
        self,
        name: str,
        namespace: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        *,
        what: str,
    ) -> dict[str, Any] | None:
        """Read the InferenceService, replace its spec with ``change(obj)``, retry on 409.

        ``change`` gets the object as read (None when it does not exist) and returns the new
        spec, None for nothing to write, or raises :class:`_Superseded` to leave it alone; it is
        called again on every re-read. The replace carries the ``resourceVersion`` read, so a
        concurrent change is never overwritten (409, re-read, ``change`` judges again); metadata
        is written back as read.

        Returns:
            The stored object (as read when nothing was written; None when there is none).

        Raises:
            DeployError: The API refused, or conflicts persisted.
            _Superseded: From ``change``.
        """

        def once() -> dict[str, Any] | None:
            current = self._get(name, namespace)
            spec = change(copy.deepcopy(current) if current is not None else None)
            if spec is None or current is None:
                return current
            updated = copy.deepcopy(current)
            updated.pop("status", None)
            updated["spec"] = spec
            try:
                return self.api.replace_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    updated,
                    field_manager=self.field_manager,
                )
            except ApiException as e:
                if e.status == 409:
                    raise _Conflict(str(e)) from e
                raise _api_error(e, what) from e

        try:
            return backoff(
                once,
                retry_on=(_Conflict,),
                attempts=5,
                base_delay=0.2,
                max_delay=2.0,
                what=what,
            )
        except _Conflict as e:
            raise DeployError(f"{what}: it kept changing meanwhile (409 Conflict): {e}") from e

    def server_dry_run(self, spec: DeploySpec) -> dict[str, Any]:
        """Server-side dry-run create (``dryRun=All``): webhooks and schema run, nothing is stored.

        Raises:
            DeployError: The API server rejected the object.
        """
        body = build_inference_service(spec)
        try:
            return self.api.create_namespaced_custom_object(
                GROUP, VERSION, spec.namespace, PLURAL, body, dry_run="All"
            )
        except ApiException as e:
            raise _api_error(
                e, f"dry-run create of InferenceService {spec.namespace}/{spec.name}"
            ) from e

    # -- readiness ----------------------------------------------------------------------------

    @staticmethod
    def _failure(obj: Mapping[str, Any], ignore: frozenset[str] = frozenset()) -> str | None:
        status = obj.get("status") or {}
        model_status = status.get("modelStatus") or {}
        if model_status.get("transitionStatus") in _FATAL_TRANSITIONS:
            info = model_status.get("lastFailureInfo") or {}
            return (
                f"{model_status['transitionStatus']}: {info.get('reason', 'unknown reason')}: "
                f"{info.get('message', '')}".rstrip(": ")
            )
        for c in status.get("conditions") or []:
            ctype, cstatus, reason = c.get("type", ""), c.get("status"), c.get("reason", "")
            failed_type = ctype.endswith("Failed") and cstatus == "True"
            failed_reason = cstatus == "False" and reason in _FATAL_REASONS - ignore
            if failed_type or failed_reason:
                return f"{ctype}={cstatus} ({reason}): {c.get('message', '')}".rstrip(": ")
        return None

    @staticmethod
    def _ready(obj: Mapping[str, Any]) -> bool:
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready":
                return c.get("status") == "True"
        return False

    def _endpoint(self, obj: Mapping[str, Any]) -> str:
        status = obj.get("status") or {}
        address = (status.get("address") or {}).get("url")
        url = status.get("url")
        ordered = [address, url] if self.endpoint == "address" else [url, address]
        for candidate in ordered:
            if candidate:
                return str(candidate).rstrip("/")
        meta = obj.get("metadata") or {}
        raise DeployError(
            f"InferenceService {meta.get('namespace')}/{meta.get('name')} is Ready but reports "
            "neither status.address.url nor status.url"
        )

    def _pod_failure(self, dep: Any, namespace: str, stale: Stale) -> str | None:
        """A failure of the Deployment's newest pods that waiting will not heal, from their events.

        Crash loops (``Back-off restarting failed container``: vLLM or the storage initializer
        keeps exiting) and image pulls that failed (``ErrImagePull``, ``ImagePullBackOff``,
        ``InvalidImageName``, ``ErrImageNeverPull``) of pods of the ReplicaSet the Deployment's
        ``Progressing`` condition names, unless that condition predates the write
        (``stale.replica_set``). Probe failures (``Unhealthy``: vLLM still loading) and
        scheduling waits (``FailedScheduling``) are not failures. None without an events API.
        """
        if self.core is None or self._events_refused:
            return None
        replica_set = _new_replica_set(dep)
        if replica_set is None or replica_set == stale.replica_set:
            return None
        try:
            events = self.core.list_namespaced_event(
                namespace, field_selector="involvedObject.kind=Pod"
            )
        except ApiException as e:
            self._events_refused = True
            logger.warning(
                "cannot read events in namespace %s (%s); crash loops and image-pull errors "
                "will surface only at the timeout",
                namespace,
                _api_error(e, "listing events"),
            )
            return None
        # pod names: generateName "<replica set>-" (cut to 58 characters) + 5 random ones
        prefix = f"{replica_set}-"[:58]
        for event in events.items or []:
            pod = (event.involved_object.name if event.involved_object else None) or ""
            if not pod.startswith(prefix) or len(pod) != len(prefix) + 5:
                continue
            message = event.message or ""
            if event.reason == "BackOff" and message.startswith(_CRASH_LOOP):
                return f"pod {pod} is crash-looping (CrashLoopBackOff): {message}"
            if any(marker in message for marker in _IMAGE_PULL_ERRORS):
                return f"pod {pod} cannot pull its image ({event.reason}): {message}"
        return None

    def deployment_rollout(
        self, dep_name: str, namespace: str, rollout: str | None, *, stale: Stale | None = None
    ) -> RolloutState:
        """How far Deployment ``dep_name`` is in serving the pod template stamped ``rollout``.

        Mirrors ``kubectl rollout status`` (kubernetes/kubectl
        ``pkg/polymorphichelpers/rollout_status.go``, ``DeploymentStatusViewer.Status``), after
        checking that the pod template carries ``rollout`` (:data:`ROLLOUT_ANNOTATION`): nothing in
        the status counts before the Deployment controller has observed the template. A
        ``Progressing=False`` condition with reason ``ProgressDeadlineExceeded`` is noted, not
        failed (KServe's 600 s deadline is shorter than a model's start): the caller's timeout
        decides. Any other ``Progressing=False`` (``ReplicaSetCreateError``),
        ``ReplicaFailure=True`` and :meth:`_pod_failure` fail it, unless the condition was
        already there before the write (``stale``; after a rollback to an existing ReplicaSet
        the controller keeps the previous rollout's condition until the rollout progresses).

        Raises:
            DeployError: The API refused the read.
        """
        stale = stale or Stale()
        dep = self._get_deployment(dep_name, namespace)
        if dep is None:
            return RolloutState(False, False, f"Deployment {dep_name} not created yet")
        template = (dep.spec.template.metadata if dep.spec.template else None) or None
        stamp = ((template.annotations if template else None) or {}).get(ROLLOUT_ANNOTATION)
        if stamp != rollout:
            return RolloutState(
                False, False, f"Deployment {dep_name} still has the previous pod template"
            )
        status = dep.status
        generation = dep.metadata.generation or 0
        observed = (status.observed_generation if status else None) or 0
        if observed < generation:
            return RolloutState(
                True,
                False,
                f"Deployment {dep_name} spec update not observed yet",
                generation=generation,
            )
        note = ""
        for c in (status.conditions if status else None) or []:
            failed = (c.type == "Progressing" and c.status == "False") or (
                c.type == "ReplicaFailure" and c.status == "True"
            )
            if not failed:
                continue
            if _identity(c) in stale.conditions:
                note = f" (still reports the previous rollout's {c.reason})"
            elif c.type == "Progressing" and c.reason == PROGRESS_DEADLINE:
                note = (
                    f" (past its progressDeadlineSeconds, {c.message}; pods that are still "
                    f"starting get up to {self.timeout:.0f}s)"
                )
            else:
                return RolloutState(
                    True,
                    False,
                    f"Deployment {dep_name}",
                    failure=f"{c.reason}: {c.message}",
                    observed=True,
                    generation=generation,
                )
        desired = 1 if dep.spec.replicas is None else dep.spec.replicas
        updated = (status.updated_replicas if status else None) or 0
        total = (status.replicas if status else None) or 0
        available = (status.available_replicas if status else None) or 0
        if updated < desired:
            detail = f"{updated} of {desired} new replicas updated"
        elif total > updated:
            detail = f"{total - updated} old replicas still running"
        elif available < updated:
            detail = f"{available} of {updated} new replicas available"
        else:
            return RolloutState(
                True,
                True,
                f"Deployment {dep_name} rolled out ({available} ready)",
                observed=True,
                generation=generation,
            )
        pods = self._pod_failure(dep, namespace, stale)
        return RolloutState(
            True,
            False,
            f"Deployment {dep_name}: {detail}{note}",
            failure=pods,
            observed=True,
            generation=generation,
        )

    def predictor_rollout(
        self,
        name: str,
        namespace: str,
        rollout: str | None,
        *,
        stale_stall: Stale | str | None = None,
        predictor: str | None = None,
    ) -> RolloutState:
        """:meth:`deployment_rollout` of the stable predictor ``predictor`` of ISVC ``name``.

        ``stale_stall``: a :class:`Stale`, or a ``Progressing=False`` identity (:func:`_stall`)
        seen before the spec was applied.
        """
        return self.deployment_rollout(
            predictor_service_name(name, predictor),
            namespace,
            rollout,
            stale=_as_stale(stale_stall),
        )

    def _stale(self, dep_name: str, namespace: str, rollout: str | None) -> Stale:
        """What Deployment ``dep_name`` reports before ``rollout`` is applied, unless its pod
        template already is ``rollout`` (then it is about this spec)."""
        dep = self._get_deployment(dep_name, namespace)
        if dep is None:
            return Stale()
        template = (dep.spec.template.metadata if dep.spec.template else None) or None
        if ((template.annotations if template else None) or {}).get(ROLLOUT_ANNOTATION) == rollout:
            return Stale()
        status = getattr(dep, "status", None)
        failed = frozenset(
            _identity(c)
            for c in (status.conditions if status else None) or []
            if (c.type == "Progressing" and c.status == "False")
            or (c.type == "ReplicaFailure" and c.status == "True")
        )
        return Stale(failed, _new_replica_set(dep))

    def _stale_stall(
        self,
        name: str,
        namespace: str,
        rollout: str | None,
        mode: str,
        *,
        predictor: str | None = None,
    ) -> Stale:
        """:meth:`_stale` of the stable predictor ``predictor``'s Deployment (Deployment-backed
        modes only)."""
        if mode not in DEPLOYMENT_BACKED_MODES:
            return Stale()
        return self._stale(predictor_service_name(name, predictor), namespace, rollout)

    def wait_ready(
        self,
        name: str,
        namespace: str,
        *,
        generation: int | None,
        rollout: str | None,
        mode: str,
        stale_stall: Stale | str | None = None,
    ) -> tuple[dict, float]:
        """Poll until the spec stamped ``rollout`` serves; returns (object, seconds waited).

        Deployment-backed modes (``Standard``/``RawDeployment``): the InferenceService is Ready
        and its predictor Deployment has rolled out that spec (:meth:`deployment_rollout`;
        ``stale_stall`` is what the Deployment reported before the spec was applied).
        The InferenceService's failure conditions count only once its status was written after
        the Deployment controller observed that spec (KServe copies the Deployment's
        ``observedGeneration``; the reconcile that changes the pod template still writes the
        status of the old pods). Its ``ProgressDeadlineExceeded`` is left to the Deployment's own
        condition (which does not fail a rollout). ``Knative``: Ready for ``generation``, judged
        by ``status.observedGeneration``.

        Raises:
            DeployError: A failure condition for this spec, or the object vanished.
            DeployTimeoutError: Not serving within ``timeout``; the message has the last state.
        """
        last: dict[str, Any] = {}
        progress = "no rollout observed"
        stale = _as_stale(stale_stall)

        def check() -> bool:
            nonlocal last, progress
            obj = self._get(name, namespace)
            if obj is None:
                raise DeployError(f"InferenceService {namespace}/{name} was deleted while waiting")
            last = obj
            if rollout is not None and stamp_of(obj) != rollout:
                raise DeployError(
                    f"InferenceService {namespace}/{name} was changed by another deploy while "
                    f"waiting (its rollout is now {stamp_of(obj)}, this one's {rollout})"
                )
            if mode in DEPLOYMENT_BACKED_MODES:
                predictor = ((obj.get("spec") or {}).get("predictor") or {}).get("name")
                state = self.predictor_rollout(
                    name, namespace, rollout, stale_stall=stale, predictor=predictor
                )
                progress = state.detail
                if state.failure:
                    raise DeployError(
                        f"InferenceService {namespace}/{name} failed: {state.detail}: "
                        f"{state.failure}"
                    )
                if not state.observed:
                    return False  # the status still describes the previous spec
                isvc_observed = (obj.get("status") or {}).get("observedGeneration")
                if isvc_observed is None or isvc_observed >= (state.generation or 0):
                    failure = self._failure(obj, ignore=_DEPLOYMENT_REASONS)
                    if failure:
                        raise DeployError(f"InferenceService {namespace}/{name} failed: {failure}")
                return state.done and self._ready(obj)
            observed = (obj.get("status") or {}).get("observedGeneration")
            if generation is not None and (observed is None or observed < generation):
                progress = f"generation {generation} not observed yet (observed {observed})"
                return False
            failure = self._failure(obj)
            if failure:
                raise DeployError(f"InferenceService {namespace}/{name} failed: {failure}")
            return self._ready(obj)

        def on_timeout(message: str) -> BaseException:
            return DeployTimeoutError(
                f"InferenceService {namespace}/{name} (generation {generation}): {message}; "
                f"rollout: {progress}; last conditions: {_conditions_summary(last)}"
            )

        waited = wait_until(
            check,
            timeout=self.timeout,
            interval=self.poll_interval,
            what=f"InferenceService {namespace}/{name} to serve its new spec",
            on_timeout=on_timeout,
        )
        return last, waited

    def wait_canary(
        self,
        name: str,
        namespace: str,
        *,
        canary: str,
        rollout: str,
        stale: Stale | None = None,
    ) -> tuple[dict, float]:
        """Poll until canary ``canary`` (stamped ``rollout``) of ISVC ``name`` serves.

        Its Deployment ``<name>-<canary>-predictor`` has rolled out the stamped template
        (:meth:`deployment_rollout`), KServe reports it in ``status.canaryStatuses`` as ready
        and, when it is the only canary, ``CanaryPredictorReady`` is True (that condition covers
        all canaries). Production's conditions are not this canary's business.

        Raises:
            DeployError: The canary failed, was removed or changed by someone else, or the
                InferenceService vanished.
            DeployTimeoutError: Not serving within ``timeout``.
        """
        dep_name = predictor_service_name(name, canary)
        last: dict[str, Any] = {}
        progress = "no rollout observed"
        what = f"canary {canary} of InferenceService {namespace}/{name}"

        def check() -> bool:
            nonlocal last, progress
            obj = self._get(name, namespace)
            if obj is None:
                raise DeployError(f"InferenceService {namespace}/{name} was deleted while waiting")
            last = obj
            entry = canary_entry(obj, canary)
            if entry is None:
                raise DeployError(
                    f"{what} was removed while waiting (another run's rollback or promotion?)"
                )
            if _predictor_stamp(entry.get("predictor")) != rollout:
                raise DeployError(
                    f"{what} was changed by another deploy while waiting (its rollout is now "
                    f"{_predictor_stamp(entry.get('predictor'))}, this one's {rollout})"
                )
            state = self.deployment_rollout(dep_name, namespace, rollout, stale=stale)
            progress = state.detail
            if state.failure:
                raise DeployError(f"{what} failed: {state.detail}: {state.failure}")
            if not state.done:
                return False
            reported = next(
                (
                    s
                    for s in (obj.get("status") or {}).get("canaryStatuses") or []
                    if s.get("name") == canary
                ),
                None,
            )
            if not (reported or {}).get("ready"):
                progress = f"{state.detail}; KServe does not report it ready yet"
                return False
            if len(canaries_of(obj)) == 1:
                ready = _condition(obj, "CanaryPredictorReady") or {}
                if ready.get("status") != "True":
                    progress = f"{state.detail}; CanaryPredictorReady is not True yet"
                    return False
            return True

        def on_timeout(message: str) -> BaseException:
            return DeployTimeoutError(
                f"{what}: {message}; rollout: {progress}; last conditions: "
                f"{_conditions_summary(last)}"
            )

        waited = wait_until(
            check,
            timeout=self.timeout,
            interval=self.poll_interval,
            what=f"{what} to serve",
            on_timeout=on_timeout,
        )
        return last, waited

    def wait_canary_gone(self, name: str, namespace: str, canary: str) -> float:
        """Poll until canary ``canary``'s Deployment is gone and production serves alone.

        Production serving: its predictor Deployment has rolled out its stamped template and
        the InferenceService is Ready. Returns the seconds waited.

        Raises:
            DeployError: The API refused a read.
            DeployTimeoutError: Still there (or production not serving) after ``timeout``.
        """
        dep_name = predictor_service_name(name, canary)
        progress = "not looked yet"

        def check() -> bool:
            nonlocal progress
            obj = self._get(name, namespace)
            if obj is None:
                progress = f"InferenceService {namespace}/{name} is gone"
                return self._get_deployment(dep_name, namespace) is None
            if self._get_deployment(dep_name, namespace) is not None:
                progress = f"Deployment {dep_name} still exists"
                return False
            predictor = ((obj.get("spec") or {}).get("predictor") or {}).get("name")
            state = self.predictor_rollout(name, namespace, stamp_of(obj), predictor=predictor)
            progress = f"production: {state.detail}" + ("" if self._ready(obj) else "; not Ready")
            return state.done and self._ready(obj)

        def on_timeout(message: str) -> BaseException:
            return DeployTimeoutError(f"{message}; {progress}")

        return wait_until(
            check,
            timeout=self.timeout,
            interval=self.poll_interval,
            what=f"canary {canary} of InferenceService {namespace}/{name} to go",
            on_timeout=on_timeout,
        )

    # -- DeployTarget -------------------------------------------------------------------------

    def deploy(self, spec: DeploySpec) -> Deployment:
        """Serve ``spec`` as the candidate and wait until it serves; production keeps serving.

        With a Ready production in a Deployment-backed mode the candidate becomes a canary
        predictor beside it (role ``canary``; :attr:`Deployment.endpoint` is the canary's own
        Service); without an InferenceService it is created (``first``); otherwise the
        predictor is replaced in place (``replace``; see the module docstring, *Roles*).

        Whatever stops it once the candidate is written (a failed rollout, a timeout, an error
        reading the status, Ctrl-C, SIGTERM from a KFP cancel), what it wrote is undone before
        the error propagates: the canary entry removed, the previous spec restored, or the new
        object deleted, unless another deploy has changed it since: what this run applied is
        recognised by its rollout stamp, and a newer spec is never overwritten. After an
        interrupt the undo is not waited for.

        ``Deployment.details``: ``namespace``, ``role``, ``run_id``, ``rollout`` (the candidate's
        stamp), ``canary`` (its predictor name; None unless ``canary``), ``traffic_percent`` and
        ``canary_replicas`` (``canary`` only), ``production_rollout`` and ``production_run`` (what
        served before; None for ``first``), ``generation``, ``resourceVersion``,
        ``deployment_mode``, ``storage_uri``, ``url``, ``address``, ``previous_spec`` (the spec a
        ``replace`` replaced; None otherwise) and ``in_place_because`` (why not ``canary``).

        Raises:
            DeployError: The API refused, or the rollout failed.
            DeployTimeoutError: Not serving within ``timeout``.
            KeyboardInterrupt: Ctrl-C or SIGTERM (after the undo).
        """
        start = time.monotonic()
        before = self._get(spec.name, spec.namespace)
        role, because = self._role(spec, before)
        if role == "canary" and before is not None:
            deployment = self._deploy_canary(spec, before, start)
            if deployment is not None:
                return deployment
            because = (
                "this KServe's InferenceService CRD dropped spec.canary (KServe before v0.20.0)"
            )
            logger.warning(
                "InferenceService %s/%s: %s; replacing the predictor in place",
                spec.namespace,
                spec.name,
                because,
            )
            before = self._get(spec.name, spec.namespace)
        elif because:
            logger.info(
                "deploying InferenceService %s/%s in place: %s", spec.namespace, spec.name, because
            )
        return self._deploy_in_place(spec, before, start, because=because)

    def _role(self, spec: DeploySpec, before: Mapping[str, Any] | None) -> tuple[Role, str]:
        """How :meth:`deploy` serves ``spec`` next to ``before``, and why not as a canary."""
        if before is None:
            return "first", ""
        if spec.deployment_mode not in DEPLOYMENT_BACKED_MODES:
            return "replace", (
                f"{spec.deployment_mode} mode has no canary predictors (KServe accepts "
                "spec.canary in Standard mode only)"
            )
        if not self.canary:
            return "replace", "canary rollouts are turned off (KServeTarget(canary=False))"
        if not self._ready(before):
            return "replace", "production is not Ready, so there is nothing to keep serving"
        stable = (before.get("spec") or {}).get("predictor") or {}
        entry = build_canary(spec)
        candidate = entry["predictor"]
        dep_name = predictor_service_name(spec.name, candidate["name"])
        if len(_APP_LABEL_PREFIX + dep_name) > _MAX_LABEL:
            return "replace", (
                f"the canary's Deployment {dep_name} would be too long a name for KServe's "
                f"'app: {_APP_LABEL_PREFIX}<Deployment>' label ({_MAX_LABEL} characters)"
            )
        if candidate["name"] == stable.get("name"):  # a stamp prefix clash
            return "replace", f"production's predictor is named {candidate['name']} too"
        inherited = inherited_fields(stable, candidate)
        if inherited:
            return "replace", (
                f"KServe would run the canary with production's {', '.join(inherited)} (it "
                "overlays a canary on production's predictor, buildCanaryPredictor), so the "
                "gates would not measure this candidate"
            )
        return "canary", ""

    def _deploy_canary(
        self, spec: DeploySpec, before: Mapping[str, Any], start: float
    ) -> Deployment | None:
        """Add ``spec`` as a canary of ``before`` and wait until it serves.

        Returns None when the stored object has no ``spec.canary`` (a CRD without the field
        pruned it: nothing changed, the caller deploys in place).
        """
        name, namespace = spec.name, spec.namespace
        entry = build_canary(spec)
        canary = entry["predictor"]["name"]
        rollout = _predictor_stamp(entry["predictor"]) or ""
        production = (before.get("spec") or {}).get("predictor") or {}
        production_rollout = _predictor_stamp(production)
        what = f"canary {canary} of InferenceService {namespace}/{name}"
        stale = self._stale(predictor_service_name(name, canary), namespace, rollout)

        def add(obj: dict[str, Any] | None) -> dict[str, Any] | None:
            if obj is None:
                raise DeployError(f"InferenceService {namespace}/{name} was deleted meanwhile")
            if stamp_of(obj) != production_rollout:
                raise DeployError(
                    f"production of InferenceService {namespace}/{name} changed while the "
                    f"canary was being added (rollout {stamp_of(obj)}, was {production_rollout});"
                    " deploy again"
                )
            if canary_entry(obj, canary) == entry:
                return None  # a retried step: already there
            others = [
                c for c in canaries_of(obj) if (c.get("predictor") or {}).get("name") != canary
            ]
            return {**obj["spec"], "canary": [*others, entry]}

        logger.info(
            "adding %s (trafficPercent %d) beside production rollout %s",
            what,
            spec.canary_traffic_percent,
            production_rollout,
        )
        with signals_raise():  # SIGTERM unwinds into the undo below, like Ctrl-C
            try:
                stored = self._write_spec(name, namespace, add, what=f"adding {what}") or {}
            except DeployError:
                raise  # refused: nothing of this run was stored
            except BaseException as e:  # the write may have gone through
                self._undo_canary(name, namespace, canary, rollout, e)
                raise
            if canary_entry(stored, canary) is None:
                return None
            try:
                obj, _ = self.wait_canary(
                    name, namespace, canary=canary, rollout=rollout, stale=stale
                )
            except DeployError as e:
                raise type(e)(
                    f"{e}; {self._undo_canary(name, namespace, canary, rollout, e)}"
                ) from e
            except BaseException as e:
                self._undo_canary(name, namespace, canary, rollout, e)
                raise
        address = service_url(predictor_service_name(name, canary), namespace)
        return Deployment(
            target="kserve",
            name=name,
            endpoint=address,
            model=name,
            ready_seconds=round(time.monotonic() - start, 3),
            details={
                "namespace": namespace,
                "role": "canary",
                "run_id": spec.run_id,
                "rollout": rollout,
                "canary": canary,
                "traffic_percent": spec.canary_traffic_percent,
                "canary_replicas": canary_replica_count(obj.get("spec") or {}, entry),
                "production_rollout": production_rollout,
                "production_run": _predictor_run(production),
                "generation": (obj.get("metadata") or {}).get("generation"),
                "resourceVersion": (obj.get("metadata") or {}).get("resourceVersion"),
                "deployment_mode": spec.deployment_mode,
                "storage_uri": spec.storage_uri,
                "url": None,  # v0.20.0 publishes no external address for a canary
                "address": address,
                "previous_spec": None,
                "in_place_because": None,
            },
        )

    def _deploy_in_place(
        self,
        spec: DeploySpec,
        before: Mapping[str, Any] | None,
        start: float,
        *,
        because: str,
    ) -> Deployment:
        """Create the InferenceService, or replace its spec, and wait until the new spec serves."""
        previous_spec = copy.deepcopy(before["spec"]) if before else None
        body = build_inference_service(spec)
        if before is None and spec.run_id:
            body["metadata"]["annotations"][CREATED_BY_ANNOTATION] = spec.run_id
        rollout = body["spec"]["predictor"]["annotations"][ROLLOUT_ANNOTATION]
        production = ((before or {}).get("spec") or {}).get("predictor") or {}
        stale = self._stale_stall(
            spec.name,
            spec.namespace,
            rollout,
            spec.deployment_mode,
            predictor=production.get("name"),
        )
        with signals_raise():  # SIGTERM unwinds into the restore below, like Ctrl-C
            try:
                stored = self.apply(body)
            except DeployError:
                raise  # refused: nothing of this run was stored
            except BaseException as e:  # the write may have gone through
                self._undo(spec, previous_spec, rollout, e)
                raise
            generation = (stored.get("metadata") or {}).get("generation")
            try:
                obj, _ = self.wait_ready(
                    spec.name,
                    spec.namespace,
                    generation=generation,
                    rollout=rollout,
                    mode=spec.deployment_mode,
                    stale_stall=stale,
                )
            except DeployError as e:
                raise type(e)(f"{e}; {self._undo(spec, previous_spec, rollout, e)}") from e
            except BaseException as e:
                self._undo(spec, previous_spec, rollout, e)
                raise
        status = obj.get("status") or {}
        return Deployment(
            target="kserve",
            name=spec.name,
            endpoint=self._endpoint(obj),
            model=spec.name,
            ready_seconds=round(time.monotonic() - start, 3),
            details={
                "namespace": spec.namespace,
                "role": "first" if before is None else "replace",
                "run_id": spec.run_id,
                "rollout": rollout,
                "canary": None,
                "traffic_percent": None,
                "canary_replicas": None,
                "production_rollout": _predictor_stamp(production) if before else None,
                "production_run": _predictor_run(production) if before else None,
                "generation": generation,
                "resourceVersion": (obj.get("metadata") or {}).get("resourceVersion"),
                "deployment_mode": spec.deployment_mode,
                "storage_uri": spec.storage_uri,
                "url": status.get("url"),
                "address": (status.get("address") or {}).get("url"),
                "previous_spec": previous_spec,
                "in_place_because": because or None,
            },
        )

    def _undo(
        self,
        spec: DeploySpec,
        previous_spec: dict[str, Any] | None,
        rollout: str,
        error: BaseException,
    ) -> str:
        """Restore what :meth:`deploy` replaced after ``error``; returns what was done.

        A failure to restore is reported, not raised, so ``error`` stays the one the caller
        sees; an error that is no :class:`DeployError` gets the report as a note. After an
        interrupt (no ``Exception``) the restored spec is not waited for: a KFP cancel kills the
        pod some seconds after its SIGTERM.
        """
        interrupted = not isinstance(error, Exception)
        try:
            undone = self._restore(
                spec.name,
                spec.namespace,
                previous_spec,
                spec.deployment_mode,
                applied=rollout,
                wait=not interrupted,
            )
        except Exception as restore_error:
            undone = f"undoing the change failed too: {restore_error}"
        return _report_undo(
            error, undone, f"deploying InferenceService {spec.namespace}/{spec.name}"
        )

    def _undo_canary(
        self, name: str, namespace: str, canary: str, rollout: str, error: BaseException
    ) -> str:
        """Remove the canary :meth:`deploy` added after ``error`` (as :meth:`_undo` restores)."""
        interrupted = not isinstance(error, Exception)
        try:
            undone = self._remove_canary(name, namespace, canary, rollout, wait=not interrupted)
        except Exception as remove_error:
            undone = f"removing the canary failed too: {remove_error}"
        return _report_undo(error, undone, f"deploying canary {canary} of {namespace}/{name}")

    def _remove_canary(
        self, name: str, namespace: str, canary: str, rollout: str | None, *, wait: bool = True
    ) -> str:
        """Remove canary ``canary`` (if it still carries ``rollout``) and wait until it is gone.

        Production's predictor is not touched; other canaries stay. Returns what was done; a
        canary that does not go, or a production that does not serve alone afterwards, is
        reported, not raised.

        Raises:
            DeployError: The API refused.
        """
        what = f"canary {canary} of InferenceService {namespace}/{name}"

        def drop(obj: dict[str, Any] | None) -> dict[str, Any] | None:
            if obj is None:
                raise _Superseded(f"InferenceService {namespace}/{name} no longer exists")
            entry = canary_entry(obj, canary)
            if entry is None:
                raise _Superseded(f"InferenceService {namespace}/{name} has no {what} any more")
            stamp = _predictor_stamp(entry.get("predictor"))
            if rollout is not None and stamp != rollout:
                raise _Superseded(
                    f"{what} now carries rollout {stamp}, not {rollout}: another deploy changed it"
                )
            spec = dict(obj["spec"])
            rest = [c for c in canaries_of(obj) if c is not entry]
            if rest:
                spec["canary"] = rest
            else:
                spec.pop("canary", None)
            return spec

        try:
            self._write_spec(name, namespace, drop, what=f"removing {what}")
        except _Superseded as e:
            return f"{e}; nothing removed"
        if not wait:
            return f"removed the {what} (not waiting for its pods to go)"
        try:
            waited = self.wait_canary_gone(name, namespace, canary)
        except DeployError as e:
            return f"removed the {what}, but production does not serve alone yet: {e}"
        return f"removed the {what}; production serves alone (after {waited:.0f}s)"

    def _restore(
        self,
        name: str,
        namespace: str,
        previous_spec: dict[str, Any] | None,
        mode: str,
        *,
        applied: str | None = None,
        wait: bool = True,
    ) -> str:
        """Put back ``previous_spec`` (None: delete the object) and wait until it serves again.

        Args:
            name: The InferenceService.
            namespace: Its namespace.
            previous_spec: The spec to put back; None: the object was new, delete it.
            mode: Its deployment mode.
            applied: The rollout stamp of the spec being undone: an object that carries another
                one was changed by someone else since, and is left as it is.
            wait: Wait until the restored spec serves again.

        Returns what was done; a restored spec that does not serve again is reported, not
        raised, so the error that caused the rollback stays the one the caller sees.
        """
        current = self._get(name, namespace)
        if current is None:  # someone deleted it: don't resurrect it
            return f"InferenceService {namespace}/{name} no longer exists; nothing restored"
        if applied is not None and stamp_of(current) != applied:
            if previous_spec is not None and stamp_of(current) == stamp_of({"spec": previous_spec}):
                return (  # the change never got stored
                    f"InferenceService {namespace}/{name} still has its previous spec; nothing "
                    "to restore"
                )
            logger.warning(
                "not restoring InferenceService %s/%s: it carries rollout %s, not %s",
                namespace,
                name,
                stamp_of(current),
                applied,
            )
            return (
                f"not restored: InferenceService {namespace}/{name} now carries rollout "
                f"{stamp_of(current)}, not {applied}, so another deploy changed it since; "
                "left as it is"
            )
        if previous_spec is None:
            self._delete(
                name,
                namespace,
                resource_version=(current.get("metadata") or {}).get("resourceVersion"),
            )
            return f"deleted the new InferenceService {namespace}/{name}"
        rollout = _predictor_stamp(previous_spec.get("predictor"))
        current_predictor = ((current.get("spec") or {}).get("predictor") or {}).get("name")
        stale = self._stale_stall(name, namespace, rollout, mode, predictor=current_predictor)
        try:
            stored = self.apply(
                {"metadata": {"name": name, "namespace": namespace}, "spec": previous_spec},
                only_if=applied,
            )
        except _Superseded as e:
            return f"not restored: {e}; left as it is"
        if not wait:
            return (
                f"restored the previous spec of InferenceService {namespace}/{name} (not waiting "
                "for it to serve)"
            )
        try:
            _, waited = self.wait_ready(
                name,
                namespace,
                generation=(stored.get("metadata") or {}).get("generation"),
                rollout=rollout,
                mode=mode,
                stale_stall=stale,
            )
        except DeployError as e:
            return (
                f"restored the previous spec of InferenceService {namespace}/{name}, but it "
                f"does not serve again: {e}"
            )
        return (
            f"restored the previous spec of InferenceService {namespace}/{name}; it serves again "
            f"(after {waited:.0f}s)"
        )

    def promote(self, deployment: Deployment) -> str:
        """Make the gated candidate production and wait until only it serves.

        ``canary``: one compare-and-swap write makes the candidate (as the canary ran it,
        :func:`promoted_predictor`) ``spec.predictor`` under production's predictor name and
        autoscaling settings, and removes the canary entry; then it waits until production's
        Deployment has rolled the candidate out, no old pods are left and the canary's
        Deployment is gone. If that rollout fails or is stopped, production's previous
        predictor is put back (unless another deploy changed it since). A retried promote of a
        candidate already promoted only waits. ``first``/``replace``: nothing to do, the
        candidate already is the predictor (said, not checked).

        Returns:
            One line saying what changed.

        Raises:
            DeployError: The candidate is no longer beside production (rolled back, or another
                run changed production since it was gated), the API refused, or the rollout
                failed (production's previous predictor then serves again).
            DeployTimeoutError: Not rolled out within ``timeout``.
            KeyboardInterrupt: Ctrl-C or SIGTERM (after putting production's predictor back).
        """
        details = deployment.details
        namespace = details.get("namespace", "default")
        name = deployment.name
        role = _role_of(details)
        if role != "canary":
            return (
                f"nothing to promote: InferenceService {namespace}/{name} serves the candidate "
                f"as its predictor already (role {role})"
            )
        canary, rollout = details["canary"], details["rollout"]
        production_rollout = details.get("production_rollout")
        mode = details.get("deployment_mode", "Standard")
        what = f"canary {canary} (rollout {rollout}) of InferenceService {namespace}/{name}"
        previous: dict[str, Any] | None = None

        def swap(obj: dict[str, Any] | None) -> dict[str, Any] | None:
            nonlocal previous
            if obj is None:
                raise _Superseded(f"InferenceService {namespace}/{name} no longer exists")
            entry = canary_entry(obj, canary)
            if entry is None:
                if stamp_of(obj) == rollout:
                    return None  # promoted already (a retried step)
                raise _Superseded(
                    f"the {what} is gone (rolled back?) and production carries rollout "
                    f"{stamp_of(obj)}"
                )
            if _predictor_stamp(entry.get("predictor")) != rollout:
                raise _Superseded(
                    f"canary {canary} now carries rollout "
                    f"{_predictor_stamp(entry.get('predictor'))}: another deploy changed it"
                )
            if stamp_of(obj) != production_rollout:
                raise _Superseded(
                    f"production changed since the candidate was gated beside it (rollout "
                    f"{stamp_of(obj)}, was {production_rollout})"
                )
            spec = copy.deepcopy(obj["spec"])
            rest = [c for c in canaries_of(obj) if c != entry]
            if rest:
                spec["canary"] = rest
            else:
                spec.pop("canary", None)
            previous = copy.deepcopy(spec)  # what a failed promotion puts back
            spec["predictor"] = promoted_predictor(spec["predictor"], entry["predictor"])
            return spec

        # what production's Deployment reports before it gets the candidate's pod template
        current = self._get(name, namespace)
        stable = predictor_service_name(
            name, (((current or {}).get("spec") or {}).get("predictor") or {}).get("name")
        )
        stale = self._stale(stable, namespace, rollout)
        with signals_raise():
            try:
                stored = self._write_spec(name, namespace, swap, what=f"promoting the {what}")
            except _Superseded as e:
                raise DeployError(f"not promoted: {e}") from e
            except DeployError:
                raise
            except BaseException as e:  # the write may have gone through
                self._undo_promotion(name, namespace, previous, mode, rollout, e)
                raise
            stored = stored or {}
            try:
                _, waited = self.wait_ready(
                    name,
                    namespace,
                    generation=(stored.get("metadata") or {}).get("generation"),
                    rollout=rollout,
                    mode=mode,
                    stale_stall=stale,
                )
                waited += self.wait_canary_gone(name, namespace, canary)
            except DeployError as e:
                undone = self._undo_promotion(name, namespace, previous, mode, rollout, e)
                raise type(e)(f"promoting the {what}: {e}; {undone}") from e
            except BaseException as e:
                self._undo_promotion(name, namespace, previous, mode, rollout, e)
                raise
        done = (
            f"promoted rollout {rollout} (run {details.get('run_id')}) of InferenceService "
            f"{namespace}/{name}: Deployment {stable} serves it alone and the canary {canary} is "
            f"gone (after {waited:.0f}s)"
        )
        logger.info(done)
        return done

    def _undo_promotion(
        self,
        name: str,
        namespace: str,
        previous: dict[str, Any] | None,
        mode: str,
        rollout: str,
        error: BaseException,
    ) -> str:
        """Put production's predictor back after a promotion that failed or was stopped."""
        if previous is None:
            undone = "nothing was written; production unchanged"
        else:
            try:
                undone = self._restore(
                    name,
                    namespace,
                    previous,
                    mode,
                    applied=rollout,
                    wait=isinstance(error, Exception),
                )
            except Exception as restore_error:
                undone = f"putting production's predictor back failed too: {restore_error}"
        return _report_undo(error, undone, f"promoting into InferenceService {namespace}/{name}")

    def rollback(self, deployment: Deployment) -> str:
        """Undo ``deployment`` after a failed check, and wait until production serves alone.

        ``canary``: its canary entry is removed (production's predictor is not touched) and the
        wait lasts until the canary's Deployment is gone; ``first``: the InferenceService is
        deleted; ``replace``: the spec it replaced is restored and waited for. What carries
        another rollout stamp than ``deployment``'s was changed by another deploy since, and is
        left as it is.

        Returns:
            What was done, for logs.

        Raises:
            DeployError: The API refused.
        """
        details = deployment.details
        namespace = details.get("namespace", "default")
        if _role_of(details) == "canary":
            done = self._remove_canary(
                deployment.name, namespace, details["canary"], details.get("rollout")
            )
        else:
            done = self._restore(
                deployment.name,
                namespace,
                details.get("previous_spec"),
                details.get("deployment_mode", "Standard"),
                applied=details.get("rollout"),
            )
        logger.warning("rolled back: %s", done)
        return done

    def rollback_run(self, name: str, namespace: str | None, run_id: str) -> str:
        """Undo whatever run ``run_id`` deployed under ``name`` and did not promote.

        Read from the InferenceService (the run stamps, see the module docstring):

        * canaries whose predictor carries ``run_id``: removed (compare-and-swap on their
          stamp), waiting until production serves alone;
        * an InferenceService that ``run_id`` created and whose predictor still is that run's,
          with no canary of another run beside it: deleted (with a ``resourceVersion``
          precondition). A first release is production only once its run succeeded: promoting
          it changes nothing in KServe (any marker would restart its pods, KServe copying the
          InferenceService's annotations onto them), and the pipeline calls this after a
          failure only;
        * anything else (a predictor of ``run_id`` it did not create: a promoted canary or, in
          Knative mode, an in-place replacement whose previous spec only the deploy step's
          output has; predictors and canaries of other runs): left alone, and said.

        Idempotent.

        Returns:
            One line saying what was undone, or why nothing was.

        Raises:
            ConfigError: ``run_id`` is empty.
            DeployError: The API refused.
        """
        if not run_id:
            raise ConfigError("rollback_run needs the run id whose deployment to undo")
        namespace = namespace or "default"
        obj = self._get(name, namespace)
        if obj is None:
            return (
                f"nothing of run {run_id} to undo: there is no InferenceService {namespace}/{name}"
            )
        entries = canaries_of(obj)
        mine = [c for c in entries if _predictor_run(c.get("predictor")) == run_id]
        others = [(c.get("predictor") or {}).get("name") for c in entries if c not in mine]
        if mine:
            return "; ".join(
                self._remove_canary(
                    name,
                    namespace,
                    str((c.get("predictor") or {}).get("name")),
                    _predictor_stamp(c.get("predictor")),
                )
                for c in mine
            )
        predictor = (obj.get("spec") or {}).get("predictor") or {}
        production_run = _predictor_run(predictor)
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if production_run == run_id:
            if annotations.get(CREATED_BY_ANNOTATION) != run_id:
                return (
                    f"left InferenceService {namespace}/{name} alone: its predictor (rollout "
                    f"{stamp_of(obj)}) is run {run_id}'s candidate, promoted to production (or "
                    "replaced in place in Knative mode; the spec it replaced is in that run's "
                    "deploy output)"
                )
            if others:
                return (
                    f"left InferenceService {namespace}/{name} alone: run {run_id} created it, but "
                    f"canaries of other runs ({', '.join(map(str, others))}) are gated beside it"
                )
            mode = annotations.get(DEPLOYMENT_MODE_ANNOTATION, "Standard")
            done = self._restore(name, namespace, None, mode, applied=stamp_of(obj))
            return f"run {run_id} created InferenceService {namespace}/{name}: {done}"
        return (
            f"nothing of run {run_id} to undo in InferenceService {namespace}/{name}: production "
            f"is rollout {stamp_of(obj)} of run {production_run or 'unknown'}"
            + (f"; the canaries {', '.join(map(str, others))} are other runs'" if others else "")
        )

    def teardown(self, deployment: Deployment) -> None:
        """Remove the deployment (already gone is fine): a canary's entry, else the service."""
        namespace = deployment.details.get("namespace", "default")
        if _role_of(deployment.details) == "canary":
            self._remove_canary(
                deployment.name,
                namespace,
                deployment.details["canary"],
                deployment.details.get("rollout"),
                wait=False,
            )
            return
        self._delete(deployment.name, namespace)

    def _delete(self, name: str, namespace: str, *, resource_version: str | None = None) -> None:
        """Delete the InferenceService (404 is fine); with ``resource_version``, only that one
        (a ``preconditions`` delete: 409 when it changed since)."""
        kwargs: dict[str, Any] = {}
        if resource_version is not None:
            kwargs["body"] = {"preconditions": {"resourceVersion": resource_version}}
        try:
            self.api.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, **kwargs
            )
            logger.info("deleted InferenceService %s/%s", namespace, name)
        except ApiException as e:
            if e.status == 404:
                return
            if e.status == 409:
                raise DeployError(
                    f"deleting InferenceService {namespace}/{name}: it changed since it was read "
                    "(409 Conflict); not deleted"
                ) from e
            raise _api_error(e, f"deleting InferenceService {namespace}/{name}") from e


def _as_stale(value: Stale | str | None) -> Stale:
    if isinstance(value, Stale):
        return value
    return Stale(frozenset({value}) if value else frozenset())


def _report_undo(error: BaseException, undone: str, what: str) -> str:
    """Log ``undone`` and attach it to an ``error`` that is no :class:`DeployError` (whose message
    the caller extends)."""
    if not isinstance(error, DeployError):
        logger.error("%s stopped by %s; %s", what, type(error).__name__, undone)
        error.add_note(undone)
    return undone
