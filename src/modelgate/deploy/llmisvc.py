"""KServe LLMInferenceService deploy target: ``serving.kserve.io/v1alpha2`` (KServe >= 0.17, llm-d).

What the controller does with the object is read from KServe v0.20.0 (``pkg/apis/serving/
v1alpha2/`` and ``pkg/controller/v1alpha2/llmisvc/``); the file and function are named where it
matters.

The object
    No ServingRuntime: the controller merges the object over the well-known
    LLMInferenceServiceConfig ``kserve-config-llm-template`` (``combineBaseRefsConfig`` and
    ``mergeSpecs`` in ``config_merge.go``, a strategic merge, so containers merge by name). That
    template's container ``main`` runs ``vllm serve /mnt/models --served-model-name
    <spec.model.name> ... --port 8000``, adds ``--tensor-parallel-size`` from
    ``spec.parallelism.tensor`` and appends the container's ``args``
    (``config/llmisvcconfig/config-llm-template.yaml``). So :func:`build_llm_inference_service`
    sets ``model.name``, ``parallelism.tensor`` and, in ``template.containers[main].args``, only
    the rest of :func:`~modelgate.deploy.spec.vllm_args` (:func:`llmisvc_args`). The model is
    fetched from ``spec.model.uri``: ``hf://``, ``s3://``, ``pvc://``, ``oci://`` or
    ``oci+native://``, anything else fails the reconcile (``attachModelArtifacts`` in
    ``workload_storage.go``), so ``model-registry://`` is refused here with the fix.

Readiness
    ``Ready`` rolls up ``WorkloadsReady`` and ``RouterReady`` (``llmInferenceServiceCondSet`` in
    ``llm_inference_service_lifecycle.go``); ``WorkloadsReady`` rolls up ``MainWorkloadReady``,
    which the controller copies from the main Deployment ``<name>-kserve``'s ``Available``
    condition (``propagateDeploymentStatus`` in ``workload_single_node.go``). ``Available`` stays
    True while old pods serve during a rolling update, and ``status.observedGeneration`` is set
    by every reconcile, successful or not (knative.dev/pkg ``reconciler.PostProcessReconcile``),
    so neither says the *new* spec serves. As for the InferenceService
    (:mod:`modelgate.deploy.kserve`), the spec carries a rollout stamp, here in
    ``spec.annotations``, which the controller copies onto the Deployment's pod template
    (``expectedSingleNodeMainDeployment``), and :func:`workload_rollout` waits until that
    Deployment has rolled the stamp out the way ``kubectl rollout status`` judges it.

Endpoint
    Without ``spec.router`` the controller publishes one address, the workload Service
    ``http(s)://<name>-kserve-workload-svc.<ns>.svc.cluster.local`` (``updateRoutingStatus`` in
    ``router.go``; https when ``enableLLMInferenceServiceTLS`` is set, and always before v0.20),
    without a port, while that Service listens on 8000 (``reconcileWorkloadService`` in
    ``workload.go``); the endpoint is that address with the port.

No canary
    An LLMInferenceService has one workload: :meth:`LLMInferenceServiceTarget.deploy` is an
    in-place rollout, and :meth:`~LLMInferenceServiceTarget.promote` only records it as
    production. The state :meth:`~LLMInferenceServiceTarget.rollback_run` reads lives on the
    object: :data:`RUN_ANNOTATION`, :data:`PRODUCTION_ANNOTATION` and
    :data:`PREVIOUS_ANNOTATION`.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from modelgate.constants import RUNTIME_NAME
from modelgate.deploy.crd import GROUP, LLM_API_VERSION, LLM_KIND, LLM_VERSION
from modelgate.deploy.kserve import (
    MANAGED_BY,
    MODEL_MOUNT_PATH,
    ROLLOUT_ANNOTATION,
    ApiException,
    KServeTarget,
    RolloutState,
    _api_error,
    _conditions_summary,
    _Conflict,
    _flag,
    _resources,
    _stall,
    _Superseded,
    rollout_hash,
)
from modelgate.deploy.spec import DEPLOYMENT_BACKED_MODES, DeploySpec, vllm_args
from modelgate.deploy.target import Deployment
from modelgate.errors import ConfigError, DeployError, DeployTimeoutError
from modelgate.images import VLLM_CPU_IMAGE
from modelgate.processes import signals_raise
from modelgate.retry import backoff, wait_until
from modelgate.storage import scheme_of

logger = logging.getLogger(__name__)

PLURAL = "llminferenceservices"
#: The first KServe release with ``serving.kserve.io/v1alpha2`` LLMInferenceService.
FIRST_RELEASE = (0, 17)
#: ``spec.model.uri`` schemes the v0.20.0 controller fetches (``attachModelArtifacts``).
SCHEMES = ("hf", "s3", "pvc", "oci", "oci+native")
MAIN_CONTAINER = "main"  # the well-known template's vLLM container
WORKLOAD_PORT = 8000  # vLLM's port in the template, and the workload Service's port
WORKLOAD_SUFFIX = "-kserve"  # mainDeploymentName: kmeta.ChildName(name, "-kserve")
WORKLOAD_SERVICE_SUFFIX = "-kserve-workload-svc"  # workloadServiceName
#: Flags the well-known template passes vLLM itself (``--model`` positionally).
TEMPLATE_FLAGS = frozenset({"--model", "--port", "--served-model-name", "--tensor-parallel-size"})
#: The template runs its container with ``runAsNonRoot: true``; vLLM's CPU image has no USER
#: (vllm-project/vllm ``docker/Dockerfile.cpu``), so the kubelet would refuse it as root. The
#: UID (and GID) the ServingRuntime's vLLM container runs as (``manifests/base``); the template
#: gives HOME, /tmp and the model cache emptyDirs, so nothing needs the image's root folders.
CPU_RUN_AS_USER = 2000

#: The pipeline run whose deploy wrote the current spec.
RUN_ANNOTATION = "modelgate.io/run"
#: The rollout stamp of the spec promoted last: the object is production while it carries it.
PRODUCTION_ANNOTATION = "modelgate.io/production"
#: What the current, not yet promoted, spec replaced: JSON ``{"spec", "annotations"}``.
PREVIOUS_ANNOTATION = "modelgate.io/previous"
STATE_ANNOTATIONS = (RUN_ANNOTATION, PRODUCTION_ANNOTATION, PREVIOUS_ANNOTATION)

# Condition reasons that will not heal by waiting: a missing or broken LLMInferenceServiceConfig
# (reconcileBaseRefs, config_merge.go), a stopped service, a missing scaling CRD (workload.go),
# a gateway precondition that "won't resolve by retrying" (reconcileRouter, router.go). The
# Deployment's ProgressDeadlineExceeded, which MainWorkloadReady copies, is judged on the
# Deployment itself (workload_rollout), where a stale one of the previous rollout is told apart.
_FATAL_REASONS = frozenset(
    {
        "ConfigNotFound",
        "CombineBaseError",
        "Stopped",
        "ScalingCRDNotFound",
        "GatewayPreconditionNotMet",
    }
)


# --------------------------------------------------------------------------------------------
# Building the LLMInferenceService
# --------------------------------------------------------------------------------------------


def kserve_release_supported(kserve_version: str) -> bool:
    """Whether KServe ``kserve_version`` serves LLMInferenceService ``v1alpha2``."""
    parts = tuple(int(p) for p in re.findall(r"\d+", kserve_version)[:2])
    return parts >= FIRST_RELEASE


def check_supported(spec: DeploySpec) -> None:
    scheme = scheme_of(spec.storage_uri)
    if scheme == "model-registry":
        raise ConfigError(
            f"an LLMInferenceService cannot fetch {spec.storage_uri}: its controller resolves no "
            "model-registry:// URIs (only " + ", ".join(s + "://" for s in SCHEMES) + "); "
            "resolve it first: deploy the registered version's artifact URI (turn "
            "prefer_registry_uri off, or pass storage_uri=<that s3:// URI>)"
        )
    if scheme not in SCHEMES:
        raise ConfigError(
            f"an LLMInferenceService cannot fetch {spec.storage_uri!r}: use one of "
            + ", ".join(s + "://" for s in SCHEMES)
        )
    if spec.runtime != RUNTIME_NAME:
        raise ConfigError(
            f"serving_runtime {spec.runtime!r} applies to the kserve target only: an "
            "LLMInferenceService runs vLLM from KServe's LLMInferenceServiceConfig templates; "
            f"leave serving_runtime at {RUNTIME_NAME!r}"
        )
    if spec.deployment_mode not in DEPLOYMENT_BACKED_MODES:
        raise ConfigError(
            f"deployment_mode {spec.deployment_mode!r} does not apply to an LLMInferenceService "
            "(it always runs a Deployment); use Standard"
        )
    if spec.canary_traffic_percent:
        raise ConfigError(
            f"canary_traffic_percent={spec.canary_traffic_percent}: an LLMInferenceService has no "
            "canary, the candidate replaces production in place and gets all traffic; set it to "
            "0, or use deploy_target kserve for a canary"
        )


def llmisvc_args(spec: DeploySpec) -> list[str]:
    """The vLLM arguments the LLMInferenceService adds to its template's (see module docstring).

    Raises:
        ConfigError: ``spec.extra_args`` sets a flag the template already fixes.
    """
    clashes = [a for a in spec.extra_args if _flag(a) in TEMPLATE_FLAGS]
    if clashes:
        raise ConfigError(
            f"extra_args {clashes} override flags the LLMInferenceService template sets itself "
            f"({', '.join(sorted(TEMPLATE_FLAGS))}); remove them (the model name is the service "
            "name, the model is mounted at /mnt/models, the port is 8000, the tensor parallel "
            "size is the GPU count)"
        )
    full = vllm_args(spec, model_path=MODEL_MOUNT_PATH, port=WORKLOAD_PORT)
    return [a for a in full if _flag(a) not in TEMPLATE_FLAGS]


def spec_stamp(llm_spec: Mapping[str, Any]) -> str:
    """The rollout stamp of an LLMInferenceService ``spec``: a hash of it without the stamp.

    Its pod annotations sit in ``spec.annotations`` where an InferenceService's sit in
    ``spec.predictor.annotations``, so :func:`~modelgate.deploy.kserve.rollout_hash` of the spec
    in that place hashes it without its own stamp.
    """
    return rollout_hash({"predictor": dict(llm_spec)})


def stamp_of(obj: Mapping[str, Any] | None) -> str | None:
    """The :data:`ROLLOUT_ANNOTATION` of an LLMInferenceService's spec (None without one)."""
    spec = (obj or {}).get("spec") or {}
    return (spec.get("annotations") or {}).get(ROLLOUT_ANNOTATION)


def build_llm_inference_service(spec: DeploySpec) -> dict[str, Any]:
    """A ``serving.kserve.io/v1alpha2`` LLMInferenceService serving ``spec`` with vLLM.

    Args:
        spec: The deployment; ``placement`` gives the GPUs (``parallelism.tensor`` when more
            than one), tolerations, node selector and the ``serve`` step's requests.

    Returns:
        The object as a plain dict; ``spec.annotations`` carries :data:`ROLLOUT_ANNOTATION`,
        ``metadata.annotations`` :data:`RUN_ANNOTATION` when ``spec.run_id`` is set.

    Raises:
        ConfigError: A URI the controller cannot fetch (``model-registry://`` names the fix),
            a ServingRuntime, Knative mode or a canary (none applies), or ``extra_args`` that
            clash with the template's flags.
    """
    check_supported(spec)
    container: dict[str, Any] = {"name": MAIN_CONTAINER}
    args = llmisvc_args(spec)
    if args:
        container["args"] = args
    container["resources"] = _resources(spec)
    if spec.placement.accelerator_count == 0:
        # the template's image is llm-d's CUDA build; CPU mode names vLLM's CPU build, the
        # release modelgate pins (as kserve.runtime_image does for the ServingRuntime)
        container["image"] = VLLM_CPU_IMAGE
        container["securityContext"] = {
            "runAsUser": CPU_RUN_AS_USER,
            "runAsGroup": CPU_RUN_AS_USER,
        }
    template: dict[str, Any] = {"containers": [container]}
    if spec.placement.tolerations:
        template["tolerations"] = spec.placement.toleration_dicts()
    if spec.placement.node_selector:
        template["nodeSelector"] = dict(spec.placement.node_selector)
    if spec.service_account:  # the controller reads its secrets for s3:// and hf:// downloads
        template["serviceAccountName"] = spec.service_account
    body: dict[str, Any] = {
        "model": {"uri": spec.storage_uri, "name": spec.name},
        "replicas": 1,
    }
    if spec.placement.accelerator_count > 1:
        body["parallelism"] = {"tensor": spec.placement.tensor_parallel_size}
    body["template"] = template
    body["annotations"] = {ROLLOUT_ANNOTATION: spec_stamp(body)}
    annotations = dict(spec.annotations)
    if spec.run_id:
        annotations[RUN_ANNOTATION] = spec.run_id
    return {
        "apiVersion": LLM_API_VERSION,
        "kind": LLM_KIND,
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": {
                **spec.labels,
                "app.kubernetes.io/name": spec.name,
                "app.kubernetes.io/component": "inference",
                "app.kubernetes.io/part-of": "modelgate",
                "app.kubernetes.io/managed-by": MANAGED_BY,
            },
            "annotations": annotations,
        },
        "spec": body,
    }


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------


def workload_name(obj: Mapping[str, Any]) -> str | None:
    """The main Deployment of an LLMInferenceService (None while it cannot be known yet).

    ``status.workloads.primary`` (v0.20) names it; else ``<name>-kserve``, which is what
    ``kmeta.ChildName`` gives while it fits in 63 characters.
    """
    primary = (((obj.get("status") or {}).get("workloads") or {}).get("primary")) or {}
    if primary.get("kind") == "Deployment" and primary.get("name"):
        return str(primary["name"])
    name = f"{(obj.get('metadata') or {}).get('name')}{WORKLOAD_SUFFIX}"
    return name if len(name) <= 63 else None


def _condition(obj: Mapping[str, Any], ctype: str) -> Mapping[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return {}


def _failure(obj: Mapping[str, Any]) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("status") == "False" and c.get("reason") in _FATAL_REASONS:
            return f"{c.get('type')}=False ({c['reason']}): {c.get('message', '')}".rstrip(": ")
    return None


def workload_rollout(
    apps: Any, deployment: str, namespace: str, rollout: str | None, *, stale_stall: str | None
) -> RolloutState:
    """How far Deployment ``deployment`` is in serving the pod template stamped ``rollout``.

    The judgement of :meth:`modelgate.deploy.kserve.KServeTarget.predictor_rollout` (kubectl
    ``rollout status``), for a Deployment of any name: its template carries ``rollout``, its
    controller observed it, no ``Progressing=False`` other than ``stale_stall``, and updated ==
    available == desired replicas with no old ones left.

    Raises:
        DeployError: The API refused the read.
    """
    try:
        dep = apps.read_namespaced_deployment(deployment, namespace)
    except ApiException as e:
        if e.status == 404:
            return RolloutState(False, False, f"Deployment {deployment} not created yet")
        raise _api_error(e, f"reading Deployment {namespace}/{deployment}") from e
    template = dep.spec.template.metadata if dep.spec.template else None
    if ((template.annotations if template else None) or {}).get(ROLLOUT_ANNOTATION) != rollout:
        return RolloutState(False, False, f"Deployment {deployment} has the previous pod template")
    status, generation = dep.status, dep.metadata.generation or 0
    if ((status.observed_generation if status else None) or 0) < generation:
        detail = f"Deployment {deployment} spec update not observed yet"
        return RolloutState(True, False, detail, generation=generation)
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
                f"Deployment {deployment}",
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
        detail = f"Deployment {deployment} rolled out ({available} ready)"
        return RolloutState(True, True, detail, observed=True, generation=generation)
    detail = f"Deployment {deployment}: {detail}{note}"
    return RolloutState(True, False, detail, observed=True, generation=generation)


# --------------------------------------------------------------------------------------------
# Deploy target
# --------------------------------------------------------------------------------------------


def _state(obj: Mapping[str, Any] | None) -> dict[str, str]:
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    return {k: annotations[k] for k in STATE_ANNOTATIONS if k in annotations}


class LLMInferenceServiceTarget:
    """Deploys a :class:`DeploySpec` as a KServe LLMInferenceService, in place, and waits.

    Args:
        api: A ``kubernetes.client.CustomObjectsApi`` (or a test double with the same methods).
        apps: A ``kubernetes.client.AppsV1Api`` to follow the main Deployment's rollout. When
            both are omitted, in-cluster config is loaded, falling back to the kubeconfig.
        timeout: Seconds to wait until the new spec serves.
        poll_interval: Seconds between status reads.
        endpoint: ``"address"`` (default): the first of ``status.addresses`` (the cluster-local
            workload Service without ``spec.router``), then ``status.url``; ``"url"``: the
            reverse.
        field_manager: Field manager name recorded by the API server.

    Raises:
        ConfigError: Only one of ``api`` and ``apps`` is given, or no credentials are found.
    """

    name: Literal["llmisvc"] = "llmisvc"

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
            raise ConfigError(
                "LLMInferenceServiceTarget needs both api (CustomObjectsApi) and apps (AppsV1Api)"
            )
        if api is None:
            api, apps = KServeTarget._default_apis()
        self.api: Any = api
        self.apps: Any = apps
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.endpoint = endpoint
        self.field_manager = field_manager

    # -- API helpers --------------------------------------------------------------------------

    def _get(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self.api.get_namespaced_custom_object(
                GROUP, LLM_VERSION, namespace, PLURAL, name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise _api_error(e, f"reading LLMInferenceService {namespace}/{name}") from e

    def _apply_once(self, body: dict[str, Any], only_if: str | None) -> dict[str, Any]:
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        existing = self._get(name, namespace)
        if only_if is not None and (existing is None or stamp_of(existing) != only_if):
            raise _Superseded(
                f"LLMInferenceService {namespace}/{name} no longer exists"
                if existing is None
                else f"LLMInferenceService {namespace}/{name} now carries rollout "
                f"{stamp_of(existing)}, not {only_if}: another deploy changed it"
            )
        try:
            if existing is None:
                logger.info("creating LLMInferenceService %s/%s", namespace, name)
                return self.api.create_namespaced_custom_object(
                    GROUP, LLM_VERSION, namespace, PLURAL, body, field_manager=self.field_manager
                )
            # Replace, so fields dropped from the spec go away; resourceVersion makes it a
            # compare-and-swap. Foreign labels and annotations stay; modelgate's state
            # annotations are exactly the body's.
            updated = copy.deepcopy(existing)
            updated.pop("status", None)
            updated["spec"] = copy.deepcopy(body["spec"])
            umeta = updated.setdefault("metadata", {})
            annotations = {
                k: v
                for k, v in (umeta.get("annotations") or {}).items()
                if k not in STATE_ANNOTATIONS
            }
            umeta["annotations"] = {**annotations, **meta.get("annotations", {})}
            umeta["labels"] = {**(umeta.get("labels") or {}), **meta.get("labels", {})}
            logger.info(
                "updating LLMInferenceService %s/%s (resourceVersion %s)",
                namespace,
                name,
                umeta.get("resourceVersion"),
            )
            return self.api.replace_namespaced_custom_object(
                GROUP,
                LLM_VERSION,
                namespace,
                PLURAL,
                name,
                updated,
                field_manager=self.field_manager,
            )
        except ApiException as e:
            if e.status == 409:
                raise _Conflict(str(e)) from e
            verb = "creating" if existing is None else "updating"
            raise _api_error(e, f"{verb} LLMInferenceService {namespace}/{name}") from e

    def apply(self, body: dict[str, Any], *, only_if: str | None = None) -> dict[str, Any]:
        """Create ``body`` or replace the existing object's spec; returns the stored object.

        A 409 (created or changed concurrently) re-reads and retries a few times.

        Args:
            body: The LLMInferenceService; its :data:`STATE_ANNOTATIONS` replace the stored ones.
            only_if: Replace only an existing object whose spec carries this rollout stamp.

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
                what=f"apply LLMInferenceService {body['metadata']['name']}",
            )
        except _Conflict as e:
            raise DeployError(
                f"LLMInferenceService {body['metadata']['name']} kept changing while being "
                f"updated (409 Conflict): {e}"
            ) from e

    def _delete(self, name: str, namespace: str, *, resource_version: str | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if resource_version:  # delete exactly what was read, not what someone wrote since
            kwargs["body"] = {"preconditions": {"resourceVersion": resource_version}}
        try:
            self.api.delete_namespaced_custom_object(
                GROUP, LLM_VERSION, namespace, PLURAL, name, **kwargs
            )
            logger.info("deleted LLMInferenceService %s/%s", namespace, name)
        except ApiException as e:
            if e.status == 404:
                return
            if e.status == 409:
                raise _Superseded(
                    f"LLMInferenceService {namespace}/{name} changed since it was read"
                ) from e
            raise _api_error(e, f"deleting LLMInferenceService {namespace}/{name}") from e

    def server_dry_run(self, spec: DeploySpec) -> dict[str, Any]:
        """Server-side dry-run create (``dryRun=All``): webhooks and schema run, nothing is stored.

        Raises:
            DeployError: The API server rejected the object.
        """
        body = build_llm_inference_service(spec)
        try:
            return self.api.create_namespaced_custom_object(
                GROUP, LLM_VERSION, spec.namespace, PLURAL, body, dry_run="All"
            )
        except ApiException as e:
            raise _api_error(
                e, f"dry-run create of LLMInferenceService {spec.namespace}/{spec.name}"
            ) from e

    # -- readiness ----------------------------------------------------------------------------

    def _stale_stall(self, obj: Mapping[str, Any] | None, rollout: str | None) -> str | None:
        """The main Deployment's ``Progressing=False`` from before ``rollout`` was applied."""
        dep_name = workload_name(obj) if obj else None
        if dep_name is None:
            return None
        namespace = obj["metadata"]["namespace"] if obj else ""
        try:
            dep = self.apps.read_namespaced_deployment(dep_name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise _api_error(e, f"reading Deployment {namespace}/{dep_name}") from e
        template = dep.spec.template.metadata if dep.spec.template else None
        if ((template.annotations if template else None) or {}).get(ROLLOUT_ANNOTATION) == rollout:
            return None
        return _stall(dep)

    def _endpoint(self, obj: Mapping[str, Any]) -> str:
        status = obj.get("status") or {}
        addresses = [a.get("url") for a in status.get("addresses") or []]
        addresses.append((status.get("address") or {}).get("url"))
        url = status.get("url")
        ordered = [*addresses, url] if self.endpoint == "address" else [url, *addresses]
        meta = obj.get("metadata") or {}
        service = ((status.get("workloads") or {}).get("service") or {}).get("name") or (
            f"{meta.get('name')}{WORKLOAD_SERVICE_SUFFIX}"
        )
        for candidate in ordered:
            if candidate:
                parts = urlsplit(str(candidate).rstrip("/"))
                host = parts.hostname or ""
                if parts.port is None and host.split(".")[0] == service:
                    parts = parts._replace(netloc=f"{host}:{WORKLOAD_PORT}")
                return urlunsplit(parts)
        raise DeployError(
            f"LLMInferenceService {meta.get('namespace')}/{meta.get('name')} is Ready but "
            "reports neither status.addresses nor status.url"
        )

    def wait_ready(
        self,
        name: str,
        namespace: str,
        *,
        generation: int | None,
        rollout: str | None,
        stale_stall: str | None = None,
    ) -> tuple[dict[str, Any], float]:
        """Poll until the spec stamped ``rollout`` serves; returns (object, seconds waited).

        Served: the controller reconciled ``generation`` (``status.observedGeneration``), the
        object is ``Ready``, and its main Deployment has rolled the stamp out
        (:func:`workload_rollout`; ``stale_stall`` is a ``Progressing=False`` seen before the
        spec was applied). Fails fast on a condition of this generation that will not heal.

        Raises:
            DeployError: A failure for this spec, or the object vanished or was changed.
            DeployTimeoutError: Not serving within ``timeout``; the message has the last state.
        """
        last: dict[str, Any] = {}
        progress = "no rollout observed"

        def check() -> bool:
            nonlocal last, progress
            obj = self._get(name, namespace)
            if obj is None:
                raise DeployError(
                    f"LLMInferenceService {namespace}/{name} was deleted while waiting"
                )
            last = obj
            if rollout is not None and stamp_of(obj) != rollout:
                raise DeployError(
                    f"LLMInferenceService {namespace}/{name} was changed by another deploy while "
                    f"waiting (its rollout is now {stamp_of(obj)}, this one's {rollout})"
                )
            observed = (obj.get("status") or {}).get("observedGeneration")
            if generation is not None and (observed is None or observed < generation):
                progress = f"generation {generation} not reconciled yet (observed {observed})"
                return False
            failure = _failure(obj)
            if failure:
                raise DeployError(f"LLMInferenceService {namespace}/{name} failed: {failure}")
            dep_name = workload_name(obj)
            if dep_name is None:
                progress = "main workload not reported yet"
                return False
            state = workload_rollout(
                self.apps, dep_name, namespace, rollout, stale_stall=stale_stall
            )
            progress = state.detail
            if state.failure:
                raise DeployError(
                    f"LLMInferenceService {namespace}/{name} failed: {state.detail}: "
                    f"{state.failure}"
                )
            return state.done and _condition(obj, "Ready").get("status") == "True"

        def on_timeout(message: str) -> BaseException:
            return DeployTimeoutError(
                f"LLMInferenceService {namespace}/{name} (generation {generation}): {message}; "
                f"rollout: {progress}; last conditions: {_conditions_summary(last)}"
            )

        waited = wait_until(
            check,
            timeout=self.timeout,
            interval=self.poll_interval,
            what=f"LLMInferenceService {namespace}/{name} to serve its new spec",
            on_timeout=on_timeout,
        )
        return last, waited

    # -- DeployTarget -------------------------------------------------------------------------

    def deploy(self, spec: DeploySpec) -> Deployment:
        """Create or replace the LLMInferenceService for ``spec`` and wait until it serves.

        In place: there is no canary, so the candidate takes all of production's traffic once it
        serves. What it replaced is recorded on the object (:data:`PREVIOUS_ANNOTATION`) until
        :meth:`promote`, so :meth:`rollback_run` can put it back. Whatever stops the rollout once
        the new spec is written (a failure, a timeout, Ctrl-C, SIGTERM from a KFP cancel) puts
        back what it replaced (or deletes the new object) before the error propagates, unless
        another deploy changed the object since; after an interrupt that is not waited for.

        Raises:
            ConfigError: ``spec`` asks for what an LLMInferenceService cannot do.
            DeployError: The API refused, or the rollout failed.
            DeployTimeoutError: Not serving within ``timeout``.
            KeyboardInterrupt: Ctrl-C or SIGTERM (after the restore).
        """
        start = time.monotonic()
        body = build_llm_inference_service(spec)
        rollout = stamp_of(body)
        before = self._get(spec.name, spec.namespace)
        previous = (
            {"spec": copy.deepcopy(before["spec"]), "annotations": _state(before)}
            if before
            else None
        )
        state = {k: v for k, v in _state(before).items() if k == PRODUCTION_ANNOTATION}
        if spec.run_id:
            state[RUN_ANNOTATION] = spec.run_id
        if previous is not None:
            state[PREVIOUS_ANNOTATION] = json.dumps(previous, sort_keys=True)
        body["metadata"]["annotations"].update(state)
        stale = self._stale_stall(before, rollout)
        with signals_raise():  # SIGTERM unwinds into the restore below, like Ctrl-C
            try:
                stored = self.apply(body)
            except DeployError:
                raise  # refused: nothing of this run was stored
            except BaseException as e:  # the write may have gone through
                self._undo(spec, previous, rollout, e)
                raise
            generation = (stored.get("metadata") or {}).get("generation")
            try:
                obj, _ = self.wait_ready(
                    spec.name,
                    spec.namespace,
                    generation=generation,
                    rollout=rollout,
                    stale_stall=stale,
                )
            except DeployError as e:
                raise type(e)(f"{e}; {self._undo(spec, previous, rollout, e)}") from e
            except BaseException as e:
                self._undo(spec, previous, rollout, e)
                raise
        status = obj.get("status") or {}
        return Deployment(
            target="llmisvc",
            name=spec.name,
            endpoint=self._endpoint(obj),
            model=spec.name,
            ready_seconds=round(time.monotonic() - start, 3),
            details={
                "namespace": spec.namespace,
                "generation": generation,
                "rollout": rollout,
                "run_id": spec.run_id,
                "storage_uri": spec.storage_uri,
                "workload": workload_name(obj),
                "resourceVersion": (obj.get("metadata") or {}).get("resourceVersion"),
                "url": status.get("url"),
                "addresses": [a.get("url") for a in status.get("addresses") or []],
                "previous": previous,
            },
        )

    def _undo(
        self,
        spec: DeploySpec,
        previous: dict[str, Any] | None,
        rollout: str | None,
        error: BaseException,
    ) -> str:
        """Put back what :meth:`deploy` replaced after ``error``; returns what was done.

        A failure to restore is reported, not raised; an error that is no
        :class:`DeployError` gets the report as a note. After an interrupt the restored spec is
        not waited for: a KFP cancel kills the pod some seconds after its SIGTERM.
        """
        interrupted = not isinstance(error, Exception)
        try:
            undone = self._restore(
                spec.name, spec.namespace, previous, applied=rollout, wait=not interrupted
            )
        except Exception as restore_error:
            undone = f"undoing the change failed too: {restore_error}"
        if not isinstance(error, DeployError):
            logger.error(
                "deploying LLMInferenceService %s/%s stopped by %s; %s",
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
        previous: Mapping[str, Any] | None,
        *,
        applied: str | None,
        wait: bool = True,
    ) -> str:
        """Put back ``previous`` (None: delete the object), and wait until it serves again.

        Args:
            name: The LLMInferenceService.
            namespace: Its namespace.
            previous: ``{"spec", "annotations"}`` of what the spec being undone replaced; None:
                the object was new, delete it.
            applied: The rollout stamp of the spec being undone: an object that carries another
                one was changed by someone else since, and is left as it is.
            wait: Wait until the restored spec serves again.

        Returns what was done; a restored spec that does not serve again is reported, not
        raised, so the error that caused the rollback stays the one the caller sees.
        """
        what = f"LLMInferenceService {namespace}/{name}"
        current = self._get(name, namespace)
        if current is None:  # someone deleted it: don't resurrect it
            return f"{what} no longer exists; nothing restored"
        if applied is not None and stamp_of(current) != applied:
            if previous is not None and stamp_of(current) == stamp_of(previous):
                return f"{what} still has its previous spec; nothing to restore"
            logger.warning(
                "not restoring %s: it carries rollout %s, not %s", what, stamp_of(current), applied
            )
            return (
                f"not restored: {what} now carries rollout {stamp_of(current)}, not {applied}, "
                "so another deploy changed it since; left as it is"
            )
        if previous is None:
            try:
                self._delete(
                    name,
                    namespace,
                    resource_version=(current.get("metadata") or {}).get("resourceVersion"),
                )
            except _Superseded as e:
                return f"not deleted: {e}; left as it is"
            return f"deleted the new {what}"
        rollout = stamp_of(previous)
        stale = self._stale_stall(current, rollout)
        try:
            stored = self.apply(
                {
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "annotations": dict(previous.get("annotations") or {}),
                    },
                    "spec": copy.deepcopy(dict(previous["spec"])),
                },
                only_if=applied,
            )
        except _Superseded as e:
            return f"not restored: {e}; left as it is"
        if not wait:
            return f"restored the previous spec of {what} (not waiting for it to serve)"
        try:
            _, waited = self.wait_ready(
                name,
                namespace,
                generation=(stored.get("metadata") or {}).get("generation"),
                rollout=rollout,
                stale_stall=stale,
            )
        except DeployError as e:
            return f"restored the previous spec of {what}, but it does not serve again: {e}"
        return f"restored the previous spec of {what}; it serves again (after {waited:.0f}s)"

    def promote(self, deployment: Deployment) -> str:
        """Record the candidate as production; it already serves all traffic.

        An LLMInferenceService has no canary: :meth:`deploy` rolled the candidate out in place,
        so promoting changes no pod. It stamps :data:`PRODUCTION_ANNOTATION` and drops
        :data:`PREVIOUS_ANNOTATION`, so :meth:`rollback_run` leaves it alone. Idempotent.

        Raises:
            DeployError: The object is gone or carries another deploy's spec (nothing promoted),
                or the API refused.
        """
        name = deployment.name
        namespace = deployment.details.get("namespace", "default")
        rollout = deployment.details.get("rollout")
        what = f"LLMInferenceService {namespace}/{name}"
        current = self._get(name, namespace)
        if current is None:
            raise DeployError(f"{what} no longer exists; nothing to promote")
        if stamp_of(current) != rollout:
            raise DeployError(
                f"{what} now carries rollout {stamp_of(current)}, not {rollout}: another deploy "
                "changed it since; not promoted"
            )
        done = (
            f"{what}: rollout {rollout} is production (promoted in place: an "
            "LLMInferenceService has no canary, the candidate has served all traffic since deploy)"
        )
        state = _state(current)
        if state.get(PRODUCTION_ANNOTATION) == rollout and PREVIOUS_ANNOTATION not in state:
            return done
        state[PRODUCTION_ANNOTATION] = str(rollout)
        state.pop(PREVIOUS_ANNOTATION, None)
        try:
            self.apply(
                {
                    "metadata": {"name": name, "namespace": namespace, "annotations": state},
                    "spec": current["spec"],
                },
                only_if=rollout,
            )
        except _Superseded as e:
            raise DeployError(f"{e}; not promoted") from e
        logger.info("%s", done)
        return done

    def rollback(self, deployment: Deployment) -> str:
        """Undo ``deployment``: put back what it replaced and wait for it, or delete it.

        An object whose spec no longer carries ``deployment``'s rollout stamp was changed by
        another deploy since, and is left as it is.

        Raises:
            DeployError: The API refused.
        """
        done = self._restore(
            deployment.name,
            deployment.details.get("namespace", "default"),
            deployment.details.get("previous"),
            applied=deployment.details.get("rollout"),
        )
        logger.warning("rolled back: %s", done)
        return done

    def rollback_run(self, name: str, namespace: str | None, run_id: str) -> str:
        """Undo what run ``run_id`` deployed under ``name`` and did not promote (state-based).

        Reads the object: when its spec was written by ``run_id`` (:data:`RUN_ANNOTATION`) and
        is not production (:data:`PRODUCTION_ANNOTATION`), what it replaced
        (:data:`PREVIOUS_ANNOTATION`) is put back and waited for, or the object deleted when it
        replaced nothing. Anything else is left alone. Idempotent.

        Raises:
            DeployError: The API refused, or the recorded previous spec is unreadable.
        """
        namespace = namespace or "default"
        what = f"LLMInferenceService {namespace}/{name}"
        current = self._get(name, namespace)
        if current is None:
            return f"{what} does not exist: nothing of run {run_id} to undo"
        state = _state(current)
        owner = state.get(RUN_ANNOTATION)
        if owner != run_id:
            return (
                f"{what} serves a spec of {f'run {owner}' if owner else 'another deploy'}, "
                f"not of run {run_id}: left alone"
            )
        rollout = stamp_of(current)
        if state.get(PRODUCTION_ANNOTATION) == rollout:
            return f"{what}: run {run_id}'s spec is production (promoted): nothing to undo"
        previous = None
        if PREVIOUS_ANNOTATION in state:
            try:
                previous = json.loads(state[PREVIOUS_ANNOTATION])
                previous["spec"]  # noqa: B018 - the shape check
            except (ValueError, TypeError, KeyError) as e:
                raise DeployError(
                    f"{what}: the spec run {run_id} replaced ({PREVIOUS_ANNOTATION}) is "
                    f"unreadable ({e}); restore it by hand"
                ) from e
        done = self._restore(name, namespace, previous, applied=rollout)
        logger.warning("rolled back run %s: %s", run_id, done)
        return done

    def teardown(self, deployment: Deployment) -> None:
        """Delete the LLMInferenceService (already gone is fine)."""
        self._delete(deployment.name, deployment.details.get("namespace", "default"))


__all__ = [
    "PLURAL",
    "PREVIOUS_ANNOTATION",
    "PRODUCTION_ANNOTATION",
    "RUN_ANNOTATION",
    "SCHEMES",
    "LLMInferenceServiceTarget",
    "build_llm_inference_service",
    "kserve_release_supported",
    "llmisvc_args",
    "stamp_of",
    "workload_name",
    "workload_rollout",
]
