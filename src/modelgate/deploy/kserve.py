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
    Failures count only when they are about that spec: the Deployment's ``Progressing=False``
    unless it was already reported before the spec was applied (a rollback to an existing
    ReplicaSet keeps the previous rollout's ``ProgressDeadlineExceeded`` for a while), and the
    InferenceService's conditions once KServe wrote them after the Deployment controller
    observed the new template.
    In ``Knative`` mode the InferenceService's own ``observedGeneration`` and ``Ready`` are used.

Endpoint
    :class:`KServeTarget` reports ``status.address.url`` (the cluster-local address,
    ``http://<name>-predictor.<ns>.svc.cluster.local``) because the pipeline step that smoke-tests
    the model runs inside the cluster, where that address always resolves; it falls back to
    ``status.url`` (the ingress URL) when the controller did not publish an address.
    ``KServeTarget(endpoint="url")`` prefers the external ``status.url`` instead.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Mapping
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

MANAGED_BY = "modelgate"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
ROLLOUT_ANNOTATION = "modelgate.io/rollout"
PREDICTOR_SUFFIX = "-predictor"  # constants.PredictorServiceName: "<isvc>-predictor"

RBAC_HINT = (
    "bind the Role modelgate-deployer (manifests/base/rbac.yaml) to the service account the "
    "pipeline runs as: kubectl apply -k manifests/overlays/kubeflow-profile -n <namespace> "
    "(default-editor) or manifests/overlays/standalone (pipeline-runner)"
)

# Conditions reasons that will not heal by waiting (Knative revision failures, Deployment
# progress deadline, KServe's own spec/runtime failures).
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
        ``spec.predictor.annotations`` carries :data:`ROLLOUT_ANNOTATION`.

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
    body = {"predictor": predictor}
    predictor["annotations"] = {ROLLOUT_ANNOTATION: rollout_hash(body)}
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
    predictor = ((obj or {}).get("spec") or {}).get("predictor") or {}
    return (predictor.get("annotations") or {}).get(ROLLOUT_ANNOTATION)


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


@dataclass(frozen=True)
class RolloutState:
    """Progress of a predictor Deployment towards one spec.

    ``reconciled``: its pod template carries the spec; ``observed``: the Deployment controller
    has seen that template (``status.observedGeneration`` >= ``generation``, the Deployment's
    ``metadata.generation``); ``done``: rolled out; ``failure``: the Deployment reports it cannot
    progress (e.g. ``ProgressDeadlineExceeded``).
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


class KServeTarget:
    """Deploys a :class:`DeploySpec` as a KServe InferenceService and waits until it serves.

    Args:
        api: A ``kubernetes.client.CustomObjectsApi`` (or a test double with the same methods).
        apps: A ``kubernetes.client.AppsV1Api`` to follow the predictor Deployment's rollout.
            When both are omitted, in-cluster config is loaded, falling back to the kubeconfig.
        timeout: Seconds to wait until the new spec serves.
        poll_interval: Seconds between status reads.
        endpoint: ``"address"`` (default): ``status.address.url``, the cluster-local URL, falling
            back to ``status.url``; ``"url"``: ``status.url`` first.
        field_manager: Field manager name recorded by the API server.

    Raises:
        ConfigError: Only one of ``api`` and ``apps`` is given, or no credentials are found.
    """

    name: Literal["kserve"] = "kserve"

    def __init__(
        self,
        api: Any | None = None,
        *,
        apps: Any | None = None,
        timeout: float = 1800.0,
        poll_interval: float = 5.0,
        endpoint: Literal["address", "url"] = "address",
        field_manager: str = MANAGED_BY,
    ) -> None:
        if (api is None) != (apps is None):
            raise ConfigError("KServeTarget needs both api (CustomObjectsApi) and apps (AppsV1Api)")
        if api is None:
            api, apps = self._default_apis()
        # both set: given together, or both from _default_apis()
        self.api: Any = api
        self.apps: Any = apps
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.endpoint = endpoint
        self.field_manager = field_manager

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
            # toleration) really go away; resourceVersion makes it a compare-and-swap.
            updated = copy.deepcopy(existing)
            updated.pop("status", None)
            updated["spec"] = copy.deepcopy(body["spec"])
            umeta = updated.setdefault("metadata", {})
            umeta["labels"] = {**(umeta.get("labels") or {}), **meta.get("labels", {})}
            umeta["annotations"] = {
                **(umeta.get("annotations") or {}),
                **meta.get("annotations", {}),
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

    def predictor_rollout(
        self, name: str, namespace: str, rollout: str | None, *, stale_stall: str | None = None
    ) -> RolloutState:
        """How far the predictor Deployment of ISVC ``name`` is in serving the spec ``rollout``.

        Mirrors ``kubectl rollout status`` (kubernetes/kubectl
        ``pkg/polymorphichelpers/rollout_status.go``, ``DeploymentStatusViewer.Status``), after
        checking that the pod template carries ``rollout`` (:data:`ROLLOUT_ANNOTATION`): nothing in
        the status counts before the Deployment controller has observed the template, and a
        ``Progressing=False`` condition is fatal unless it is ``stale_stall`` (see :func:`_stall`;
        after a rollback to an existing ReplicaSet the controller keeps the previous rollout's
        ``ProgressDeadlineExceeded`` until the rollout completes).

        Raises:
            DeployError: The API refused the read.
        """
        dep_name = f"{name}{PREDICTOR_SUFFIX}"
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
        stall = _stall(dep)
        if stall is not None:
            reason, message = next(
                (c.reason, c.message)
                for c in status.conditions
                if c.type == "Progressing" and c.status == "False"
            )
            if stall != stale_stall:
                return RolloutState(
                    True,
                    False,
                    f"Deployment {dep_name}",
                    failure=f"{reason}: {message}",
                    observed=True,
                    generation=generation,
                )
            note = f" (still reports the previous rollout's {reason})"
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
        return RolloutState(
            True,
            False,
            f"Deployment {dep_name}: {detail}{note}",
            observed=True,
            generation=generation,
        )

    def _stale_stall(self, name: str, namespace: str, rollout: str | None, mode: str) -> str | None:
        """The ``Progressing=False`` condition the predictor Deployment reports before ``rollout``
        is applied, unless its pod template already is ``rollout`` (then it is about this spec).
        """
        if mode not in DEPLOYMENT_BACKED_MODES:
            return None
        dep = self._get_deployment(f"{name}{PREDICTOR_SUFFIX}", namespace)
        if dep is None:
            return None
        template = (dep.spec.template.metadata if dep.spec.template else None) or None
        if ((template.annotations if template else None) or {}).get(ROLLOUT_ANNOTATION) == rollout:
            return None
        return _stall(dep)

    def wait_ready(
        self,
        name: str,
        namespace: str,
        *,
        generation: int | None,
        rollout: str | None,
        mode: str,
        stale_stall: str | None = None,
    ) -> tuple[dict, float]:
        """Poll until the spec stamped ``rollout`` serves; returns (object, seconds waited).

        Deployment-backed modes (``Standard``/``RawDeployment``): the InferenceService is Ready
        and its predictor Deployment has rolled out that spec (:meth:`predictor_rollout`;
        ``stale_stall`` is a ``Progressing=False`` condition seen before the spec was applied).
        The InferenceService's failure conditions count only once its status was written after
        the Deployment controller observed that spec (KServe copies the Deployment's
        ``observedGeneration``; the reconcile that changes the pod template still writes the
        status of the old pods). Its ``ProgressDeadlineExceeded`` is left to the Deployment's own
        condition. ``Knative``: Ready for ``generation``, judged by ``status.observedGeneration``.

        Raises:
            DeployError: A failure condition for this spec, or the object vanished.
            DeployTimeoutError: Not serving within ``timeout``; the message has the last state.
        """
        last: dict[str, Any] = {}
        progress = "no rollout observed"

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
                state = self.predictor_rollout(name, namespace, rollout, stale_stall=stale_stall)
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

    # -- DeployTarget -------------------------------------------------------------------------

    def deploy(self, spec: DeploySpec) -> Deployment:
        """Create or update the InferenceService for ``spec`` and wait until the new spec serves.

        Whatever stops it once the new spec is written (a failed rollout, a timeout, an error
        reading the status, Ctrl-C, SIGTERM from a KFP cancel) the previous spec is restored (or
        the new object deleted) before the error propagates, unless another deploy has changed
        the object since: what this run applied is recognised by its rollout stamp, and a newer
        spec is never overwritten. After an interrupt the restore is not waited for.

        Raises:
            DeployError: The API refused, or the rollout failed.
            DeployTimeoutError: Not serving within ``timeout``.
            KeyboardInterrupt: Ctrl-C or SIGTERM (after the restore).
        """
        start = time.monotonic()
        before = self._get(spec.name, spec.namespace)
        previous_spec = copy.deepcopy(before["spec"]) if before else None
        body = build_inference_service(spec)
        rollout = body["spec"]["predictor"]["annotations"][ROLLOUT_ANNOTATION]
        stale = self._stale_stall(spec.name, spec.namespace, rollout, spec.deployment_mode)
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
                "generation": generation,
                "rollout": rollout,
                "deployment_mode": spec.deployment_mode,
                "storage_uri": spec.storage_uri,
                "resourceVersion": (obj.get("metadata") or {}).get("resourceVersion"),
                "url": status.get("url"),
                "address": (status.get("address") or {}).get("url"),
                "previous_spec": previous_spec,
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
        if not isinstance(error, DeployError):
            logger.error(
                "deploying InferenceService %s/%s stopped by %s; %s",
                spec.namespace,
                spec.name,
                type(error).__name__,
                undone,
            )
            error.add_note(undone)
        return undone

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
            self._delete(name, namespace)
            return f"deleted the new InferenceService {namespace}/{name}"
        rollout = ((previous_spec.get("predictor") or {}).get("annotations") or {}).get(
            ROLLOUT_ANNOTATION
        )
        stale = self._stale_stall(name, namespace, rollout, mode)
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

    def rollback(self, deployment: Deployment) -> str:
        """Undo ``deployment``: restore the spec it replaced and wait for it, or delete it.

        An InferenceService whose spec no longer carries ``deployment``'s rollout stamp was
        changed by another deploy since, and is left as it is.

        Returns:
            What was done, for logs.

        Raises:
            DeployError: The API refused.
        """
        done = self._restore(
            deployment.name,
            deployment.details.get("namespace", "default"),
            deployment.details.get("previous_spec"),
            deployment.details.get("deployment_mode", "Standard"),
            applied=deployment.details.get("rollout"),
        )
        logger.warning("rolled back: %s", done)
        return done

    def teardown(self, deployment: Deployment) -> None:
        """Delete the InferenceService (already gone is fine)."""
        self._delete(deployment.name, deployment.details.get("namespace", "default"))

    def _delete(self, name: str, namespace: str) -> None:
        try:
            self.api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            logger.info("deleted InferenceService %s/%s", namespace, name)
        except ApiException as e:
            if e.status == 404:
                return
            raise _api_error(e, f"deleting InferenceService {namespace}/{name}") from e
