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
    (``expectedSingleNodeMainDeployment``), and
    :func:`~modelgate.deploy.kube.deployment_rollout` waits until that Deployment has rolled the
    stamp out the way ``kubectl rollout status`` judges it. Unlike the InferenceService's, a
    ``ProgressDeadlineExceeded`` of this rollout fails it, and ``ReplicaFailure`` is waited out.

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
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

from modelgate.constants import RUNTIME_NAME
from modelgate.deploy.crd import LLM_API_VERSION, LLM_KIND, LLM_VERSION
from modelgate.deploy.kserve import MODEL_MOUNT_PATH, flag, rollout_hash
from modelgate.deploy.kube import (
    ROLLOUT_ANNOTATION,
    RUN_ANNOTATION,
    KubeTarget,
    Seen,
    Superseded,
    Wanted,
    container_resources,
    is_ready,
    object_labels,
)
from modelgate.deploy.spec import DEPLOYMENT_BACKED_MODES, DeploySpec, vllm_args
from modelgate.deploy.target import Deployment
from modelgate.errors import ConfigError, DeployError
from modelgate.images import VLLM_CPU_IMAGE
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

# RUN_ANNOTATION (modelgate.deploy.kube), in metadata: the pipeline run whose deploy wrote the
# current spec.
#: The rollout stamp of the spec promoted last: the object is production while it carries it.
PRODUCTION_ANNOTATION = "modelgate.io/production"
#: What the current, not yet promoted, spec replaced: JSON ``{"spec", "annotations"}``.
PREVIOUS_ANNOTATION = "modelgate.io/previous"
STATE_ANNOTATIONS = (RUN_ANNOTATION, PRODUCTION_ANNOTATION, PREVIOUS_ANNOTATION)

# Condition reasons that will not heal by waiting: a missing or broken LLMInferenceServiceConfig
# (reconcileBaseRefs, config_merge.go), a stopped service, a missing scaling CRD (workload.go),
# a gateway precondition that "won't resolve by retrying" (reconcileRouter, router.go). The
# Deployment's ProgressDeadlineExceeded, which MainWorkloadReady copies, is judged on the
# Deployment itself (kube.deployment_rollout), where a stale one of the previous rollout is told
# apart.
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
    clashes = [a for a in spec.extra_args if flag(a) in TEMPLATE_FLAGS]
    if clashes:
        raise ConfigError(
            f"extra_args {clashes} override flags the LLMInferenceService template sets itself "
            f"({', '.join(sorted(TEMPLATE_FLAGS))}); remove them (the model name is the service "
            "name, the model is mounted at /mnt/models, the port is 8000, the tensor parallel "
            "size is the GPU count)"
        )
    full = vllm_args(spec, model_path=MODEL_MOUNT_PATH, port=WORKLOAD_PORT)
    return [a for a in full if flag(a) not in TEMPLATE_FLAGS]


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
    container["resources"] = container_resources(spec)
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
            "labels": object_labels(spec),
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


def _failure(obj: Mapping[str, Any]) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("status") == "False" and c.get("reason") in _FATAL_REASONS:
            return f"{c.get('type')}=False ({c['reason']}): {c.get('message', '')}".rstrip(": ")
    return None


# --------------------------------------------------------------------------------------------
# Deploy target
# --------------------------------------------------------------------------------------------


def _state(obj: Mapping[str, Any] | None) -> dict[str, str]:
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    return {k: annotations[k] for k in STATE_ANNOTATIONS if k in annotations}


class LLMInferenceServiceTarget(KubeTarget):
    """Deploys a :class:`DeploySpec` as a KServe LLMInferenceService, in place, and waits.

    The arguments are :class:`~modelgate.deploy.kube.KubeTarget`'s (``apps`` follows the main
    Deployment); ``endpoint``: ``"address"`` (default): the first of ``status.addresses`` (the
    cluster-local workload Service without ``spec.router``), then ``status.url``; ``"url"``: the
    reverse.
    """

    name: Literal["llmisvc"] = "llmisvc"
    kind: ClassVar[str] = LLM_KIND
    version: ClassVar[str] = LLM_VERSION
    plural: ClassVar[str] = PLURAL
    # a ProgressDeadlineExceeded of this rollout fails it; ReplicaFailure is waited out
    outwait_progress_deadline = False
    replica_failure_fails = False
    stamp_of = staticmethod(stamp_of)

    def build(self, spec: DeploySpec) -> dict[str, Any]:
        return build_llm_inference_service(spec)

    def workload(self, name: str, obj: Mapping[str, Any] | None, mode: str) -> str | None:
        """The main Deployment (:func:`workload_name`; None before the object exists)."""
        return workload_name(obj) if obj else None

    def _replacement(self, existing: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
        # Foreign labels and annotations stay; modelgate's state annotations
        # (STATE_ANNOTATIONS) are exactly the body's.
        meta = dict(existing.get("metadata") or {})
        meta["annotations"] = {
            k: v for k, v in (meta.get("annotations") or {}).items() if k not in STATE_ANNOTATIONS
        }
        return super()._replacement({**existing, "metadata": meta}, body)

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

    def _serves(self, obj: dict[str, Any], want: Wanted, seen: Seen) -> bool:
        """Whether the LLMInferenceService serves the spec :meth:`wait_ready` waits for.

        The controller reconciled ``want.generation`` (``status.observedGeneration``), the
        object is ``Ready``, and its main Deployment has rolled the stamp out
        (:func:`~modelgate.deploy.kube.deployment_rollout`; ``want.stale`` is what it reported
        before the spec was applied). ``want.mode`` is not read: an LLMInferenceService always
        runs a Deployment.

        Raises:
            DeployError: A condition of this generation that will not heal, or a failed rollout.
        """
        what = self._what(want.name, want.namespace)
        observed = (obj.get("status") or {}).get("observedGeneration")
        generation = want.generation
        if generation is not None and (observed is None or observed < generation):
            seen.detail = f"generation {generation} not reconciled yet (observed {observed})"
            return False
        failure = _failure(obj)
        if failure:
            raise DeployError(f"{what} failed: {failure}")
        dep_name = workload_name(obj)
        if dep_name is None:
            seen.detail = "main workload not reported yet"
            return False
        state = self._rollout(dep_name, want.namespace, want.rollout, want.stale)
        seen.detail = state.detail
        if state.failure:
            raise DeployError(f"{what} failed: {state.detail}: {state.failure}")
        return state.done and is_ready(obj)

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
        stale = self._stale(spec.name, spec.namespace, before, rollout)
        obj, generation = self._apply_and_wait(spec, body, previous, stale=stale)
        status = obj.get("status") or {}
        return self._served(
            spec,
            obj,
            start,
            {
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
        except Superseded as e:
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
]
