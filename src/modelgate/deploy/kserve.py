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
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from modelgate.constants import RUNTIME_NAME
from modelgate.deploy.crd import API_VERSION, KIND, VERSION
from modelgate.deploy.kube import (
    MANAGED_BY,
    ROLLOUT_ANNOTATION,
    RUN_ANNOTATION,
    KubeTarget,
    PodEvents,
    Seen,
    Stale,
    Superseded,
    Wanted,
    condition,
    container_resources,
    default_core,
    guarded,
    is_ready,
    object_labels,
    read_deployment,
    report_undo,
    stale_before,
    undo_after,
)
from modelgate.deploy.kube import RBAC_HINT as RBAC_HINT  # re-exported (preflight names it)
from modelgate.deploy.spec import DEPLOYMENT_BACKED_MODES, DeploySpec, vllm_args
from modelgate.deploy.target import Deployment
from modelgate.errors import ConfigError, DeployError, DeployTimeoutError
from modelgate.images import VLLM_CPU_IMAGE
from modelgate.retry import wait_until

logger = logging.getLogger(__name__)

PLURAL = "inferenceservices"
MODEL_MOUNT_PATH = "/mnt/models"  # where KServe's storage initializer puts storageUri
RUNTIME_PORT = 8080  # the port KServe routes to (container port of kserve-container)
NAME_PLACEHOLDER = "{{.Name}}"  # Go template KServe renders with the InferenceService metadata
#: The ServingRuntime's model container (``constants.InferenceServiceContainerName``).
CONTAINER_NAME = "kserve-container"

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
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
# Deployment itself is read instead (modelgate.deploy.kube.deployment_rollout).
_DEPLOYMENT_REASONS = frozenset({"ProgressDeadlineExceeded"})


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


def flag(arg: str) -> str:
    """The flag of a command-line argument (``--port=8080`` -> ``--port``)."""
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
    runtime_flags = {flag(a) for a in fixed}
    clashes = [a for a in rest if flag(a) in runtime_flags]
    if clashes:
        raise ConfigError(
            f"extra_args {clashes} override flags the KServe runtime sets itself "
            f"({', '.join(sorted(runtime_flags))}); remove them (the model name is the "
            "InferenceService name, the model is mounted at /mnt/models, the port is 8080)"
        )
    return rest


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
    labels = object_labels(spec)
    annotations = {**spec.annotations, DEPLOYMENT_MODE_ANNOTATION: spec.deployment_mode}
    model: dict[str, Any] = {
        "modelFormat": {"name": spec.model_format},
        "runtime": spec.runtime,
        "storageUri": spec.storage_uri,
        "args": isvc_args(spec),
        "resources": container_resources(spec),
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


def stamp_of(obj: Mapping[str, Any] | None) -> str | None:
    """The :data:`ROLLOUT_ANNOTATION` of an InferenceService's predictor (None without one)."""
    return _predictor_stamp(((obj or {}).get("spec") or {}).get("predictor"))


def _role_of(details: Mapping[str, Any]) -> Role:
    role = details.get("role")
    if role == "first" or role == "canary" or role == "replace":
        return role
    return "first" if details.get("previous_spec") is None else "replace"


def _previous(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What :meth:`KServeTarget._restore` puts back for a previous ``spec`` (None: delete)."""
    return None if spec is None else {"spec": spec}


class KServeTarget(KubeTarget):
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
    kind: ClassVar[str] = KIND
    version: ClassVar[str] = VERSION
    plural: ClassVar[str] = PLURAL
    # KServe creates the Deployment with progressDeadlineSeconds: 600, shorter than a model's
    # start (see the module docstring, *Readiness*); ReplicaFailure does not heal.
    outwait_progress_deadline = True
    replica_failure_fails = True
    stamp_of = staticmethod(stamp_of)

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
        defaults = api is None and apps is None
        super().__init__(
            api,
            apps=apps,
            timeout=timeout,
            poll_interval=poll_interval,
            endpoint=endpoint,
            field_manager=field_manager,
        )
        if defaults and core is None:
            core = default_core()  # on the configuration _default_apis loaded
        self.core = core
        self._events = PodEvents(core) if core is not None else None
        self.canary = canary

    def build(self, spec: DeploySpec) -> dict[str, Any]:
        return build_inference_service(spec)

    def workload(self, name: str, obj: Mapping[str, Any] | None, mode: str) -> str | None:
        """The stable predictor's Deployment (Deployment-backed modes only)."""
        if mode not in DEPLOYMENT_BACKED_MODES:
            return None
        predictor = (((obj or {}).get("spec") or {}).get("predictor") or {}).get("name")
        return predictor_service_name(name, predictor)

    def _replacement(self, existing: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
        # The canary entries are other deploys' business: they stay as they are now. Who
        # created an object is said once: another one created this.
        meta = body["metadata"]
        annotations = {
            k: v for k, v in meta.get("annotations", {}).items() if k != CREATED_BY_ANNOTATION
        }
        updated = super()._replacement(
            existing, {**body, "metadata": {**meta, "annotations": annotations}}
        )
        updated["spec"].pop("canary", None)
        if canaries_of(existing):
            updated["spec"]["canary"] = canaries_of(existing)
        return updated

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

    def _serves(self, obj: dict[str, Any], want: Wanted, seen: Seen) -> bool:
        """Whether the InferenceService serves the spec :meth:`wait_ready` waits for.

        Deployment-backed modes (``Standard``/``RawDeployment``): it is Ready and its predictor
        Deployment has rolled out that spec (:func:`~modelgate.deploy.kube.deployment_rollout`;
        ``want.stale`` is what the Deployment reported before the spec was applied). The
        InferenceService's failure conditions count only once its status was written after the
        Deployment controller observed that spec (KServe copies the Deployment's
        ``observedGeneration``; the reconcile that changes the pod template still writes the
        status of the old pods). Its ``ProgressDeadlineExceeded`` is left to the Deployment's own
        condition (which does not fail a rollout). ``Knative``: Ready for ``want.generation``,
        judged by ``status.observedGeneration``.

        Raises:
            DeployError: A failure condition for this spec.
        """
        what = self._what(want.name, want.namespace)
        if want.mode in DEPLOYMENT_BACKED_MODES:
            predictor = ((obj.get("spec") or {}).get("predictor") or {}).get("name")
            state = self._rollout(
                predictor_service_name(want.name, predictor),
                want.namespace,
                want.rollout,
                want.stale,
            )
            seen.detail = state.detail
            if state.failure:
                raise DeployError(f"{what} failed: {state.detail}: {state.failure}")
            if not state.observed:
                return False  # the status still describes the previous spec
            isvc_observed = (obj.get("status") or {}).get("observedGeneration")
            if isvc_observed is None or isvc_observed >= (state.generation or 0):
                failure = self._failure(obj, ignore=_DEPLOYMENT_REASONS)
                if failure:
                    raise DeployError(f"{what} failed: {failure}")
            return state.done and is_ready(obj)
        observed = (obj.get("status") or {}).get("observedGeneration")
        generation = want.generation
        if generation is not None and (observed is None or observed < generation):
            seen.detail = f"generation {generation} not observed yet (observed {observed})"
            return False
        failure = self._failure(obj)
        if failure:
            raise DeployError(f"{what} failed: {failure}")
        return is_ready(obj)

    def wait_canary(
        self,
        name: str,
        namespace: str,
        *,
        canary: str,
        rollout: str,
        stale: Stale | None = None,
    ) -> tuple[dict[str, Any], float]:
        """Poll until canary ``canary`` (stamped ``rollout``) of ISVC ``name`` serves.

        Its Deployment ``<name>-<canary>-predictor`` has rolled out the stamped template
        (:func:`~modelgate.deploy.kube.deployment_rollout`), KServe reports it in
        ``status.canaryStatuses`` as ready and, when it is the only canary,
        ``CanaryPredictorReady`` is True (that condition covers all canaries). Production's
        conditions are not this canary's business.

        Raises:
            DeployError: The canary failed, was removed or changed by someone else, or the
                InferenceService vanished.
            DeployTimeoutError: Not serving within ``timeout``.
        """
        dep_name = predictor_service_name(name, canary)
        what = f"canary {canary} of InferenceService {namespace}/{name}"

        def judge(obj: dict[str, Any], seen: Seen) -> bool:
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
            state = self._rollout(dep_name, namespace, rollout, stale)
            seen.detail = state.detail
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
                seen.detail = f"{state.detail}; KServe does not report it ready yet"
                return False
            if len(canaries_of(obj)) == 1:
                ready = condition(obj, "CanaryPredictorReady") or {}
                if ready.get("status") != "True":
                    seen.detail = f"{state.detail}; CanaryPredictorReady is not True yet"
                    return False
            return True

        return self._wait(name, namespace, judge, rollout=None, label=what, what=f"{what} to serve")

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
                return read_deployment(self.apps, dep_name, namespace) is None
            if read_deployment(self.apps, dep_name, namespace) is not None:
                progress = f"Deployment {dep_name} still exists"
                return False
            predictor = ((obj.get("spec") or {}).get("predictor") or {}).get("name")
            state = self._rollout(predictor_service_name(name, predictor), namespace, stamp_of(obj))
            progress = f"production: {state.detail}" + ("" if is_ready(obj) else "; not Ready")
            return state.done and is_ready(obj)

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
        if not is_ready(before):
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
        stale = stale_before(self.apps, predictor_service_name(name, canary), namespace, rollout)

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

        def wait(stored: dict[str, Any] | None) -> dict[str, Any] | None:
            if canary_entry(stored, canary) is None:
                return None
            return self.wait_canary(name, namespace, canary=canary, rollout=rollout, stale=stale)[0]

        obj = guarded(
            lambda: self._write_spec(name, namespace, add, what=f"adding {what}"),
            wait,
            lambda e: self._undo_canary(name, namespace, canary, rollout, e),
        )
        if obj is None:
            return None
        address = service_url(predictor_service_name(name, canary), namespace)
        return self._served(
            spec,
            obj,
            start,
            {
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
            endpoint=address,
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
        rollout = stamp_of(body)
        production = ((before or {}).get("spec") or {}).get("predictor") or {}
        stale = self._stale(spec.name, spec.namespace, before, rollout, spec.deployment_mode)
        obj, generation = self._apply_and_wait(spec, body, _previous(previous_spec), stale=stale)
        status = obj.get("status") or {}
        return self._served(
            spec,
            obj,
            start,
            {
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

    def _undo_canary(
        self, name: str, namespace: str, canary: str, rollout: str, error: BaseException
    ) -> str:
        """Remove the canary :meth:`deploy` added after ``error`` (as :meth:`_undo` restores)."""
        return undo_after(
            error,
            lambda wait: self._remove_canary(name, namespace, canary, rollout, wait=wait),
            failed="removing the canary failed too",
            what=f"deploying canary {canary} of {namespace}/{name}",
        )

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
                raise Superseded(f"InferenceService {namespace}/{name} no longer exists")
            entry = canary_entry(obj, canary)
            if entry is None:
                raise Superseded(f"InferenceService {namespace}/{name} has no {what} any more")
            stamp = _predictor_stamp(entry.get("predictor"))
            if rollout is not None and stamp != rollout:
                raise Superseded(
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
        except Superseded as e:
            return f"{e}; nothing removed"
        if not wait:
            return f"removed the {what} (not waiting for its pods to go)"
        try:
            waited = self.wait_canary_gone(name, namespace, canary)
        except DeployError as e:
            return f"removed the {what}, but production does not serve alone yet: {e}"
        return f"removed the {what}; production serves alone (after {waited:.0f}s)"

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
                raise Superseded(f"InferenceService {namespace}/{name} no longer exists")
            entry = canary_entry(obj, canary)
            if entry is None:
                if stamp_of(obj) == rollout:
                    return None  # promoted already (a retried step)
                raise Superseded(
                    f"the {what} is gone (rolled back?) and production carries rollout "
                    f"{stamp_of(obj)}"
                )
            if _predictor_stamp(entry.get("predictor")) != rollout:
                raise Superseded(
                    f"canary {canary} now carries rollout "
                    f"{_predictor_stamp(entry.get('predictor'))}: another deploy changed it"
                )
            if stamp_of(obj) != production_rollout:
                raise Superseded(
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
        stale = stale_before(self.apps, stable, namespace, rollout)

        def write() -> dict[str, Any] | None:
            try:
                return self._write_spec(name, namespace, swap, what=f"promoting the {what}")
            except Superseded as e:
                raise DeployError(f"not promoted: {e}") from e

        def wait(stored: dict[str, Any] | None) -> float:
            _, waited = self.wait_ready(
                name,
                namespace,
                generation=((stored or {}).get("metadata") or {}).get("generation"),
                rollout=rollout,
                mode=mode,
                stale_stall=stale,
            )
            return waited + self.wait_canary_gone(name, namespace, canary)

        waited = guarded(
            write,
            wait,
            lambda e: self._undo_promotion(name, namespace, previous, mode, rollout, e),
            context=f"promoting the {what}: ",
        )
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
        what = f"promoting into InferenceService {namespace}/{name}"
        if previous is None:
            return report_undo(error, "nothing was written; production unchanged", what)
        return undo_after(
            error,
            lambda wait: self._restore(
                name, namespace, _previous(previous), applied=rollout, wait=wait, mode=mode
            ),
            failed="putting production's predictor back failed too",
            what=what,
        )

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
                _previous(details.get("previous_spec")),
                applied=details.get("rollout"),
                mode=details.get("deployment_mode", "Standard"),
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
            done = self._restore(name, namespace, None, applied=stamp_of(obj), mode=mode)
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
        """Delete the InferenceService (404 is fine); with ``resource_version``, only that one.

        Raises:
            DeployError: The API refused, or it changed since ``resource_version`` was read
                (409 Conflict; not deleted).
        """
        try:
            super()._delete(name, namespace, resource_version=resource_version)
        except Superseded as e:
            raise DeployError(
                f"deleting InferenceService {namespace}/{name}: it changed since it was read "
                "(409 Conflict); not deleted"
            ) from e
