"""The Kubernetes plumbing both KServe targets share.

:class:`~modelgate.deploy.kserve.KServeTarget` (an InferenceService) and
:class:`~modelgate.deploy.llmisvc.LLMInferenceServiceTarget` (an LLMInferenceService) each
write one custom object and follow the Deployment KServe makes of it. What they do alike lives
here:

* the clients (:func:`default_apis`: in-cluster config, else the kubeconfig);
* :func:`api_error`: an ``ApiException`` as a :class:`~modelgate.errors.DeployError` that names
  the fix (the RBAC binding on 403, an admission webhook's refusal as such);
* :class:`KubeTarget`: reading, creating and replacing the object as a compare-and-swap (the
  ``resourceVersion`` read, retried on 409), deleting it with a ``resourceVersion``
  precondition, conditional writes on the rollout stamp (:data:`ROLLOUT_ANNOTATION`), putting
  back what a failed deploy replaced, and :func:`guarded` (undo on any failure or interrupt);
* :func:`deployment_rollout`: whether a Deployment has rolled out a stamped pod template, the
  way ``kubectl rollout status`` judges it, with the failures that will not heal by waiting.

Used by those two targets only; nothing here knows either kind's spec.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from modelgate.deploy.crd import GROUP
from modelgate.deploy.target import Deployment, DeployTargetName
from modelgate.errors import ConfigError, DeployError, DeployTimeoutError
from modelgate.processes import signals_raise
from modelgate.retry import backoff, wait_until

if TYPE_CHECKING:
    from modelgate.deploy.spec import DeploySpec

try:  # the kubernetes client is the optional "kserve" extra; building/validating needs none of it
    from kubernetes.client.exceptions import ApiException
except ImportError:  # pragma: no cover - exercised only without the extra installed

    class ApiException(Exception):  # type: ignore[no-redef]
        """Stand-in so ``except ApiException`` works when kubernetes is not installed."""

        status: int | None = None
        reason: str | None = None
        body: str | None = None


logger = logging.getLogger(__name__)

MANAGED_BY = "modelgate"
#: The hash of the spec a pod template serves (KServe copies it onto the Deployment's template).
ROLLOUT_ANNOTATION = "modelgate.io/rollout"
#: The pipeline run whose candidate an object (or a predictor of it) is.
RUN_ANNOTATION = "modelgate.io/run"

RBAC_HINT = (
    "bind the Role modelgate-deployer (manifests/base/rbac.yaml) to the service account the "
    "pipeline runs as: kubectl apply -k manifests/overlays/kubeflow-profile -n <namespace> "
    "(default-editor) or manifests/overlays/standalone (pipeline-runner)"
)

#: The Deployment controller's ``Progressing=False`` reason after ``progressDeadlineSeconds``
#: without progress (kubernetes ``pkg/controller/deployment/util/deployment_util.go``
#: ``TimedOutReason``).
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

W = TypeVar("W")
R = TypeVar("R")


# --------------------------------------------------------------------------------------------
# Clients and errors
# --------------------------------------------------------------------------------------------


def default_apis() -> tuple[Any, Any]:
    """A ``CustomObjectsApi`` and an ``AppsV1Api``: in-cluster config, else the kubeconfig.

    Raises:
        ConfigError: The kubernetes client is not installed, or no credentials are found.
    """
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


def default_core() -> Any:
    """A ``CoreV1Api`` on the configuration :func:`default_apis` loaded."""
    from kubernetes import client

    return client.CoreV1Api()


def api_error(e: ApiException, action: str) -> DeployError:
    """``e`` as a :class:`DeployError` about ``action``, naming the fix where there is one."""
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


class Conflict(Exception):
    """A 409 on replace: somebody else changed the object since our GET; re-read and retry."""


class Superseded(Exception):
    """The object no longer carries the rollout a conditional write expects: leave it alone."""


def condition(obj: Mapping[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    """The ``status.conditions`` entry of type ``ctype`` (a copy), or None."""
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


def is_ready(obj: Mapping[str, Any]) -> bool:
    """Whether the object reports ``Ready=True``."""
    return (condition(obj, "Ready") or {}).get("status") == "True"


def conditions_summary(obj: Mapping[str, Any] | None) -> str:
    """The object's conditions (and KServe's ``modelStatus`` failure) in one line."""
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


def object_labels(spec: DeploySpec) -> dict[str, str]:
    """The object's labels: ``spec.labels`` and the recommended ``app.kubernetes.io`` ones."""
    return {
        **spec.labels,
        "app.kubernetes.io/name": spec.name,
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/part-of": "modelgate",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def container_resources(spec: DeploySpec) -> dict[str, Any]:
    """The model container's ``resources``: the ``serve`` step's requests and limits, GPUs."""
    serve = spec.placement.resources("serve")
    requests = {"cpu": serve.cpu, "memory": serve.memory}
    limits = {"cpu": serve.cpu_limit or serve.cpu, "memory": serve.memory_limit or serve.memory}
    gpus = spec.placement.accelerator_count
    if gpus > 0:  # extended resources need request == limit
        requests[spec.placement.accelerator_type] = limits[spec.placement.accelerator_type] = str(
            gpus
        )
    return {"requests": requests, "limits": limits}


# --------------------------------------------------------------------------------------------
# Deployment rollouts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutState:
    """Progress of a Deployment towards one spec.

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


def identity(c: Any) -> str:
    """What tells one report of a Deployment condition from a later one.

    The Deployment controller keeps a ``ProgressDeadlineExceeded`` condition unchanged (same
    transition time) until a rollout progresses again, so the identity tells a condition that was
    already there before a rollout started from one this rollout caused.
    """
    if c.type == "Progressing":
        return f"{c.reason}|{c.message}|{c.last_transition_time}"
    return f"{c.type}|{c.reason}|{c.message}|{c.last_transition_time}"


@dataclass(frozen=True)
class Stale:
    """What a Deployment reported before a write that gives it another pod template.

    ``conditions``: identities (:func:`identity`) of its failure conditions then
    (``Progressing=False``, ``ReplicaFailure=True``); ``replica_set``: the ReplicaSet its
    ``Progressing`` condition named then. Neither is about the new template until the
    Deployment controller reports anew.
    """

    conditions: frozenset[str] = frozenset()
    replica_set: str | None = None


def _failed(c: Any) -> bool:
    return (c.type == "Progressing" and c.status == "False") or (
        c.type == "ReplicaFailure" and c.status == "True"
    )


def new_replica_set(dep: Any) -> str | None:
    """The ReplicaSet the Deployment's ``Progressing`` condition names (its newest), or None."""
    status = getattr(dep, "status", None)
    for c in (status.conditions if status else None) or []:
        if c.type == "Progressing":
            found = _REPLICA_SET_IN_MESSAGE.search(c.message or "")
            return found.group(1) if found else None
    return None


def template_stamp(dep: Any) -> str | None:
    """The :data:`ROLLOUT_ANNOTATION` of the Deployment's pod template."""
    template = (dep.spec.template.metadata if dep.spec.template else None) or None
    return ((template.annotations if template else None) or {}).get(ROLLOUT_ANNOTATION)


def read_deployment(apps: Any, name: str, namespace: str) -> Any | None:
    """Deployment ``name`` through an ``AppsV1Api``, or None when there is none.

    Raises:
        DeployError: The API refused the read.
    """
    try:
        return apps.read_namespaced_deployment(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise api_error(e, f"reading Deployment {namespace}/{name}") from e


def stale_before(apps: Any, name: str, namespace: str, rollout: str | None) -> Stale:
    """What Deployment ``name`` reports before ``rollout`` is applied, unless its pod template
    already is ``rollout`` (then it is about this spec)."""
    dep = read_deployment(apps, name, namespace)
    if dep is None or template_stamp(dep) == rollout:
        return Stale()
    status = getattr(dep, "status", None)
    failed = frozenset(
        identity(c) for c in (status.conditions if status else None) or [] if _failed(c)
    )
    return Stale(failed, new_replica_set(dep))


class PodEvents:
    """The kubelet's events of a Deployment's newest pods, through a ``CoreV1Api``.

    Reading them is optional: when the API refuses the list once, a warning says that crash
    loops and image-pull errors surface only at the timeout, and it is not asked again.
    """

    def __init__(self, core: Any) -> None:
        self.core = core
        self.refused = False

    def failure(self, dep: Any, namespace: str, stale: Stale) -> str | None:
        """A failure of the Deployment's newest pods that waiting will not heal, from their events.

        Crash loops (``Back-off restarting failed container``: vLLM or the storage initializer
        keeps exiting) and image pulls that failed (``ErrImagePull``, ``ImagePullBackOff``,
        ``InvalidImageName``, ``ErrImageNeverPull``) of pods of the ReplicaSet the Deployment's
        ``Progressing`` condition names, unless that condition predates the write
        (``stale.replica_set``). Probe failures (``Unhealthy``: vLLM still loading) and
        scheduling waits (``FailedScheduling``) are not failures.
        """
        if self.refused:
            return None
        replica_set = new_replica_set(dep)
        if replica_set is None or replica_set == stale.replica_set:
            return None
        try:
            events = self.core.list_namespaced_event(
                namespace, field_selector="involvedObject.kind=Pod"
            )
        except ApiException as e:
            self.refused = True
            logger.warning(
                "cannot read events in namespace %s (%s); crash loops and image-pull errors "
                "will surface only at the timeout",
                namespace,
                api_error(e, "listing events"),
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
    apps: Any,
    name: str,
    namespace: str,
    rollout: str | None,
    *,
    stale: Stale | None = None,
    deadline_grace: float | None = None,
    replica_failure: bool = True,
    events: PodEvents | None = None,
) -> RolloutState:
    """How far Deployment ``name`` is in serving the pod template stamped ``rollout``.

    Mirrors ``kubectl rollout status`` (kubernetes/kubectl
    ``pkg/polymorphichelpers/rollout_status.go``, ``DeploymentStatusViewer.Status``), after
    checking that the pod template carries ``rollout`` (:data:`ROLLOUT_ANNOTATION`): nothing in
    the status counts before the Deployment controller has observed the template. Then updated
    == available == desired replicas with no old ones left.

    Failures: ``Progressing=False`` and (with ``replica_failure``) ``ReplicaFailure=True``,
    unless the condition was already there before the write (``stale``; after a rollback to an
    existing ReplicaSet the controller keeps the previous rollout's condition until the rollout
    progresses), and the new pods' crash loops and image-pull errors (``events``). With
    ``deadline_grace`` (the caller's timeout, in seconds) a ``Progressing=False`` with reason
    :data:`PROGRESS_DEADLINE` is noted, not failed: the caller's timeout decides.

    Raises:
        DeployError: The API refused the read.
    """
    stale = stale or Stale()
    dep = read_deployment(apps, name, namespace)
    if dep is None:
        return RolloutState(False, False, f"Deployment {name} not created yet")
    if template_stamp(dep) != rollout:
        return RolloutState(False, False, f"Deployment {name} still has the previous pod template")
    status = dep.status
    generation = dep.metadata.generation or 0
    observed = (status.observed_generation if status else None) or 0
    if observed < generation:
        return RolloutState(
            True, False, f"Deployment {name} spec update not observed yet", generation=generation
        )
    note = ""
    for c in (status.conditions if status else None) or []:
        if not _failed(c) or (c.type == "ReplicaFailure" and not replica_failure):
            continue
        if identity(c) in stale.conditions:
            note = f" (still reports the previous rollout's {c.reason})"
        elif (
            deadline_grace is not None and c.type == "Progressing" and c.reason == PROGRESS_DEADLINE
        ):
            note = (
                f" (past its progressDeadlineSeconds, {c.message}; pods that are still "
                f"starting get up to {deadline_grace:.0f}s)"
            )
        else:
            return RolloutState(
                True,
                False,
                f"Deployment {name}",
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
            f"Deployment {name} rolled out ({available} ready)",
            observed=True,
            generation=generation,
        )
    return RolloutState(
        True,
        False,
        f"Deployment {name}: {detail}{note}",
        failure=events.failure(dep, namespace, stale) if events is not None else None,
        observed=True,
        generation=generation,
    )


# --------------------------------------------------------------------------------------------
# Undo on failure
# --------------------------------------------------------------------------------------------


def report_undo(error: BaseException, undone: str, what: str) -> str:
    """Log ``undone`` and attach it to an ``error`` that is no :class:`DeployError` (whose message
    the caller extends)."""
    if not isinstance(error, DeployError):
        logger.error("%s stopped by %s; %s", what, type(error).__name__, undone)
        error.add_note(undone)
    return undone


def undo_after(error: BaseException, undo: Callable[[bool], str], *, failed: str, what: str) -> str:
    """Run ``undo(wait)`` after ``error`` and report it (:func:`report_undo`); returns what it did.

    ``wait`` is False after an interrupt (no ``Exception``): a KFP cancel kills the pod some
    seconds after its SIGTERM. A failure of ``undo`` is reported (``failed: <its error>``), not
    raised, so ``error`` stays the one the caller sees.
    """
    try:
        undone = undo(isinstance(error, Exception))
    except Exception as undo_error:
        undone = f"{failed}: {undo_error}"
    return report_undo(error, undone, what)


def guarded(
    write: Callable[[], W],
    wait: Callable[[W], R],
    undo: Callable[[BaseException], str],
    *,
    context: str = "",
) -> R:
    """``wait(write())``, undoing what was written when anything stops it.

    Runs under :func:`~modelgate.processes.signals_raise` (SIGTERM unwinds like Ctrl-C). A
    :class:`DeployError` from ``write`` (refused: nothing was stored) propagates as it is; any
    other error of ``write`` (the write may have gone through) and any error of ``wait`` call
    ``undo(error)`` first. A :class:`DeployError` of ``wait`` is raised again, of its own type,
    as ``<context><error>; <what undo returned>``.
    """
    with signals_raise():
        try:
            stored = write()
        except DeployError:
            raise  # refused: nothing of this run was stored
        except BaseException as e:  # the write may have gone through
            undo(e)
            raise
        try:
            return wait(stored)
        except DeployError as e:
            raise type(e)(f"{context}{e}; {undo(e)}") from e
        except BaseException as e:
            undo(e)
            raise


# --------------------------------------------------------------------------------------------
# The targets' common part
# --------------------------------------------------------------------------------------------


@dataclass
class Seen:
    """What a wait saw last: the object and a line on its rollout (for the timeout message)."""

    obj: dict[str, Any]
    detail: str = "no rollout observed"


@dataclass(frozen=True)
class Wanted:
    """The spec :meth:`KubeTarget.wait_ready` waits for (its arguments)."""

    name: str
    namespace: str
    generation: int | None
    rollout: str | None
    mode: str
    stale: Stale | None


class KubeTarget:
    """One custom object kind of ``serving.kserve.io`` and the Deployment that serves it.

    Subclasses set :attr:`name`, :attr:`kind`, :attr:`version`, :attr:`plural`,
    :attr:`stamp_of` (where the kind carries :data:`ROLLOUT_ANNOTATION`) and how a rollout is
    judged (:attr:`outwait_progress_deadline`, :attr:`replica_failure_fails`), and implement
    :meth:`build`, :meth:`workload`, :meth:`_endpoint` and :meth:`_serves` (what
    :meth:`wait_ready` waits for).

    Args:
        api: A ``kubernetes.client.CustomObjectsApi`` (or a test double with the same methods).
        apps: A ``kubernetes.client.AppsV1Api`` to follow the Deployment's rollout. When both
            are omitted, in-cluster config is loaded, falling back to the kubeconfig.
        timeout: Seconds to wait until a new spec serves.
        poll_interval: Seconds between status reads.
        endpoint: ``"address"`` or ``"url"``: which published address comes first.
        field_manager: Field manager name recorded by the API server.

    Raises:
        ConfigError: Only one of ``api`` and ``apps`` is given, or no credentials are found.
    """

    name: DeployTargetName
    group: ClassVar[str] = GROUP
    kind: ClassVar[str]
    version: ClassVar[str]
    plural: ClassVar[str]
    #: A fresh ``ProgressDeadlineExceeded`` is waited out until :attr:`timeout` (not failed).
    outwait_progress_deadline: ClassVar[bool] = False
    #: ``ReplicaFailure=True`` fails a rollout.
    replica_failure_fails: ClassVar[bool] = True

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
                f"{type(self).__name__} needs both api (CustomObjectsApi) and apps (AppsV1Api)"
            )
        if api is None:
            api, apps = self._default_apis()
        # both set: given together, or both from _default_apis()
        self.api: Any = api
        self.apps: Any = apps
        self.core: Any = None
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.endpoint = endpoint
        self.field_manager = field_manager
        self._events: PodEvents | None = None

    @staticmethod
    def _default_apis() -> tuple[Any, Any]:
        return default_apis()

    @staticmethod
    def stamp_of(obj: Mapping[str, Any] | None) -> str | None:
        """The :data:`ROLLOUT_ANNOTATION` of the object's spec (None without one)."""
        raise NotImplementedError

    def build(self, spec: DeploySpec) -> dict[str, Any]:
        """The object serving ``spec``."""
        raise NotImplementedError

    def workload(self, name: str, obj: Mapping[str, Any] | None, mode: str) -> str | None:
        """The Deployment that serves ``obj`` (named ``name``; None: none to follow)."""
        raise NotImplementedError

    def _endpoint(self, obj: Mapping[str, Any]) -> str:
        """The URL the object publishes, as :attr:`endpoint` orders its addresses."""
        raise NotImplementedError

    def _serves(self, obj: dict[str, Any], want: Wanted, seen: Seen) -> bool:
        """Whether ``obj`` serves the spec :meth:`wait_ready` waits for; raises what is fatal."""
        raise NotImplementedError

    def _what(self, name: str, namespace: str) -> str:
        return f"{self.kind} {namespace}/{name}"

    # -- the object ---------------------------------------------------------------------------

    def _get(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self.api.get_namespaced_custom_object(
                self.group, self.version, namespace, self.plural, name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise api_error(e, f"reading {self._what(name, namespace)}") from e

    def _replacement(self, existing: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
        """What replaces ``existing`` when ``body`` is applied: its spec, with the existing
        metadata and the body's labels and annotations merged over it."""
        meta = body["metadata"]
        updated = copy.deepcopy(dict(existing))
        updated.pop("status", None)
        updated["spec"] = copy.deepcopy(body["spec"])
        umeta = updated.setdefault("metadata", {})
        umeta["labels"] = {**(umeta.get("labels") or {}), **meta.get("labels", {})}
        umeta["annotations"] = {**(umeta.get("annotations") or {}), **meta.get("annotations", {})}
        return updated

    def _write(self, action: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``call()``, a create or replace: a 409 as :class:`Conflict` (re-read and retry), any
        other refusal as :func:`api_error` about ``action``."""
        try:
            return call()
        except ApiException as e:
            if e.status == 409:
                raise Conflict(str(e)) from e
            raise api_error(e, action) from e

    def _replace(
        self, name: str, namespace: str, updated: dict[str, Any], *, action: str
    ) -> dict[str, Any]:
        """Replace the object with ``updated``; its ``resourceVersion`` makes it a
        compare-and-swap (409 when the object changed since it was read)."""
        return self._write(
            action,
            lambda: self.api.replace_namespaced_custom_object(
                self.group,
                self.version,
                namespace,
                self.plural,
                name,
                updated,
                field_manager=self.field_manager,
            ),
        )

    @staticmethod
    def _retried(once: Callable[[], R], *, what: str, gave_up: str) -> R:
        """``once()``, again on :class:`Conflict` (a few times, backing off).

        Raises:
            DeployError: ``<gave_up>: <the last conflict>`` when conflicts persisted.
        """
        try:
            return backoff(
                once, retry_on=(Conflict,), attempts=5, base_delay=0.2, max_delay=2.0, what=what
            )
        except Conflict as e:
            raise DeployError(f"{gave_up}: {e}") from e

    def _apply_once(self, body: dict[str, Any], only_if: str | None = None) -> dict[str, Any]:
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        what = self._what(name, namespace)
        existing = self._get(name, namespace)
        if only_if is not None and (existing is None or self.stamp_of(existing) != only_if):
            raise Superseded(
                f"{what} no longer exists"
                if existing is None
                else f"{what} now carries rollout {self.stamp_of(existing)}, not {only_if}: "
                "another deploy changed it"
            )
        if existing is None:
            logger.info("creating %s", what)
            return self._write(
                f"creating {what}",
                lambda: self.api.create_namespaced_custom_object(
                    self.group,
                    self.version,
                    namespace,
                    self.plural,
                    body,
                    field_manager=self.field_manager,
                ),
            )
        # Replace (not merge-patch) so fields dropped from the spec (a nodeSelector, a
        # toleration) really go away; resourceVersion makes it a compare-and-swap.
        updated = self._replacement(existing, body)
        logger.info(
            "updating %s (resourceVersion %s)",
            what,
            (updated.get("metadata") or {}).get("resourceVersion"),
        )
        return self._replace(name, namespace, updated, action=f"updating {what}")

    def apply(self, body: dict[str, Any], *, only_if: str | None = None) -> dict[str, Any]:
        """Create ``body`` or replace the existing object's spec; returns the stored object.

        A 409 (created or changed concurrently) re-reads and retries a few times.

        Args:
            body: The object.
            only_if: Replace only an existing object whose spec carries this rollout stamp
                (:attr:`stamp_of`); checked on the object the compare-and-swap replaces.

        Raises:
            DeployError: The API refused (403 names the RBAC fix) or conflicts persisted.
            Superseded: ``only_if`` is set and the object is gone or carries another stamp.
        """
        name = body["metadata"]["name"]
        return self._retried(
            lambda: self._apply_once(body, only_if),
            what=f"apply {self.kind} {name}",
            gave_up=f"{self.kind} {name} kept changing while being updated (409 Conflict)",
        )

    def _write_spec(
        self,
        name: str,
        namespace: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        *,
        what: str,
    ) -> dict[str, Any] | None:
        """Read the object, replace its spec with ``change(obj)``, retry on 409.

        ``change`` gets the object as read (None when it does not exist) and returns the new
        spec, None for nothing to write, or raises :class:`Superseded` to leave it alone; it is
        called again on every re-read. The replace carries the ``resourceVersion`` read, so a
        concurrent change is never overwritten (409, re-read, ``change`` judges again); metadata
        is written back as read.

        Returns:
            The stored object (as read when nothing was written; None when there is none).

        Raises:
            DeployError: The API refused, or conflicts persisted.
            Superseded: From ``change``.
        """

        def once() -> dict[str, Any] | None:
            current = self._get(name, namespace)
            spec = change(copy.deepcopy(current) if current is not None else None)
            if spec is None or current is None:
                return current
            updated = copy.deepcopy(current)
            updated.pop("status", None)
            updated["spec"] = spec
            return self._replace(name, namespace, updated, action=what)

        return self._retried(
            once, what=what, gave_up=f"{what}: it kept changing meanwhile (409 Conflict)"
        )

    def _delete(self, name: str, namespace: str, *, resource_version: str | None = None) -> None:
        """Delete the object (404 is fine); with ``resource_version``, only that one.

        Raises:
            Superseded: It changed since ``resource_version`` was read (a ``preconditions``
                delete answered 409); not deleted.
            DeployError: The API refused.
        """
        what = self._what(name, namespace)
        kwargs: dict[str, Any] = {}
        if resource_version:  # delete exactly what was read, not what someone wrote since
            kwargs["body"] = {"preconditions": {"resourceVersion": resource_version}}
        try:
            self.api.delete_namespaced_custom_object(
                self.group, self.version, namespace, self.plural, name, **kwargs
            )
            logger.info("deleted %s", what)
        except ApiException as e:
            if e.status == 404:
                return
            if e.status == 409:
                raise Superseded(f"{what} changed since it was read") from e
            raise api_error(e, f"deleting {what}") from e

    def server_dry_run(self, spec: DeploySpec) -> dict[str, Any]:
        """Server-side dry-run create (``dryRun=All``): webhooks and schema run, nothing is stored.

        Raises:
            DeployError: The API server rejected the object.
        """
        body = self.build(spec)
        try:
            return self.api.create_namespaced_custom_object(
                self.group, self.version, spec.namespace, self.plural, body, dry_run="All"
            )
        except ApiException as e:
            raise api_error(e, f"dry-run create of {self._what(spec.name, spec.namespace)}") from e

    # -- the Deployment -----------------------------------------------------------------------

    def _rollout(
        self, dep_name: str, namespace: str, rollout: str | None, stale: Stale | None = None
    ) -> RolloutState:
        """:func:`deployment_rollout` of Deployment ``dep_name``, as this kind judges it."""
        return deployment_rollout(
            self.apps,
            dep_name,
            namespace,
            rollout,
            stale=stale,
            deadline_grace=self.timeout if self.outwait_progress_deadline else None,
            replica_failure=self.replica_failure_fails,
            events=self._events,
        )

    def _stale(
        self,
        name: str,
        namespace: str,
        obj: Mapping[str, Any] | None,
        rollout: str | None,
        mode: str = "Standard",
    ) -> Stale:
        """:func:`stale_before` of the Deployment that serves ``obj`` (:meth:`workload`)."""
        dep_name = self.workload(name, obj, mode)
        if dep_name is None:
            return Stale()
        return stale_before(self.apps, dep_name, namespace, rollout)

    def wait_ready(
        self,
        name: str,
        namespace: str,
        *,
        generation: int | None,
        rollout: str | None,
        mode: str = "Standard",
        stale_stall: Stale | None = None,
    ) -> tuple[dict[str, Any], float]:
        """Poll until the spec stamped ``rollout`` serves; returns (object, seconds waited).

        Serving as the kind judges it (:meth:`_serves`: ``generation`` is the object's generation
        applied, ``mode`` its deployment mode, ``stale_stall`` what its Deployment reported
        before the spec was applied, :func:`stale_before`).

        Raises:
            DeployError: A failure for this spec, or the object vanished or was changed.
            DeployTimeoutError: Not serving within ``timeout``; the message has the last state.
        """
        want = Wanted(name, namespace, generation, rollout, mode, stale_stall)
        what = self._what(name, namespace)
        return self._wait(
            name,
            namespace,
            lambda obj, seen: self._serves(obj, want, seen),
            rollout=rollout,
            label=f"{what} (generation {generation})",
            what=f"{what} to serve its new spec",
        )

    def _wait(
        self,
        name: str,
        namespace: str,
        judge: Callable[[dict[str, Any], Seen], bool],
        *,
        rollout: str | None,
        label: str,
        what: str,
    ) -> tuple[dict[str, Any], float]:
        """Poll the object until ``judge(obj, seen)`` says it serves; (object, seconds waited).

        Fails when the object is deleted or (with ``rollout``) carries another rollout stamp;
        ``judge`` updates ``seen.detail`` and raises what it finds fatal. The timeout message is
        ``<label>: <timed out...>; rollout: <seen.detail>; last conditions: ...``.

        Raises:
            DeployError: The object vanished or changed, or from ``judge``.
            DeployTimeoutError: Not serving within ``timeout``.
        """
        seen = Seen({})
        whole = self._what(name, namespace)

        def check() -> bool:
            obj = self._get(name, namespace)
            if obj is None:
                raise DeployError(f"{whole} was deleted while waiting")
            seen.obj = obj
            if rollout is not None and self.stamp_of(obj) != rollout:
                raise DeployError(
                    f"{whole} was changed by another deploy while waiting (its rollout is now "
                    f"{self.stamp_of(obj)}, this one's {rollout})"
                )
            return judge(obj, seen)

        def on_timeout(message: str) -> BaseException:
            return DeployTimeoutError(
                f"{label}: {message}; rollout: {seen.detail}; last conditions: "
                f"{conditions_summary(seen.obj)}"
            )

        waited = wait_until(
            check,
            timeout=self.timeout,
            interval=self.poll_interval,
            what=what,
            on_timeout=on_timeout,
        )
        return seen.obj, waited

    # -- writing a spec and undoing it --------------------------------------------------------

    def _apply_and_wait(
        self,
        spec: DeploySpec,
        body: dict[str, Any],
        previous: Mapping[str, Any] | None,
        *,
        stale: Stale,
    ) -> tuple[dict[str, Any], int | None]:
        """Apply ``body`` and wait until it serves: (object, generation applied).

        Whatever stops it once ``body`` may be written puts back ``previous`` (:meth:`_undo`)
        before the error propagates (:func:`guarded`).
        """
        rollout = self.stamp_of(body)

        def wait(stored: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
            generation = (stored.get("metadata") or {}).get("generation")
            obj, _ = self.wait_ready(
                spec.name,
                spec.namespace,
                generation=generation,
                rollout=rollout,
                mode=spec.deployment_mode,
                stale_stall=stale,
            )
            return obj, generation

        return guarded(
            lambda: self.apply(body), wait, lambda e: self._undo(spec, previous, rollout, e)
        )

    def _served(
        self,
        spec: DeploySpec,
        obj: Mapping[str, Any],
        start: float,
        details: dict[str, Any],
        *,
        endpoint: str | None = None,
    ) -> Deployment:
        """The :class:`Deployment` of ``spec``, served by ``obj`` since ``start`` (monotonic);
        ``endpoint`` defaults to :meth:`_endpoint`."""
        return Deployment(
            target=self.name,
            name=spec.name,
            endpoint=endpoint or self._endpoint(obj),
            model=spec.name,
            ready_seconds=round(time.monotonic() - start, 3),
            details=details,
        )

    def _undo(
        self,
        spec: DeploySpec,
        previous: Mapping[str, Any] | None,
        rollout: str | None,
        error: BaseException,
    ) -> str:
        """Put back what a deploy of ``spec`` replaced after ``error`` (:meth:`_restore`);
        returns what was done (see :func:`undo_after`)."""
        return undo_after(
            error,
            lambda wait: self._restore(
                spec.name,
                spec.namespace,
                previous,
                applied=rollout,
                wait=wait,
                mode=spec.deployment_mode,
            ),
            failed="undoing the change failed too",
            what=f"deploying {self._what(spec.name, spec.namespace)}",
        )

    def _restore(
        self,
        name: str,
        namespace: str,
        previous: Mapping[str, Any] | None,
        *,
        applied: str | None = None,
        wait: bool = True,
        mode: str = "Standard",
    ) -> str:
        """Put back ``previous`` (None: delete the object) and wait until it serves again.

        Args:
            name: The object.
            namespace: Its namespace.
            previous: ``{"spec"}`` (and ``"annotations"`` to write over the object's) of what the
                spec being undone replaced; None: the object was new, delete it.
            applied: The rollout stamp of the spec being undone: an object that carries another
                one was changed by someone else since, and is left as it is.
            wait: Wait until the restored spec serves again.
            mode: Its deployment mode.

        Returns what was done; a restored spec that does not serve again is reported, not
        raised, so the error that caused the rollback stays the one the caller sees.
        """
        what = self._what(name, namespace)
        current = self._get(name, namespace)
        if current is None:  # someone deleted it: don't resurrect it
            return f"{what} no longer exists; nothing restored"
        if applied is not None and self.stamp_of(current) != applied:
            if previous is not None and self.stamp_of(current) == self.stamp_of(previous):
                return f"{what} still has its previous spec; nothing to restore"  # never stored
            logger.warning(
                "not restoring %s: it carries rollout %s, not %s",
                what,
                self.stamp_of(current),
                applied,
            )
            return (
                f"not restored: {what} now carries rollout {self.stamp_of(current)}, not "
                f"{applied}, so another deploy changed it since; left as it is"
            )
        if previous is None:
            try:
                self._delete(
                    name,
                    namespace,
                    resource_version=(current.get("metadata") or {}).get("resourceVersion"),
                )
            except Superseded as e:
                return f"not deleted: {e}; left as it is"
            return f"deleted the new {what}"
        rollout = self.stamp_of(previous)
        stale = self._stale(name, namespace, current, rollout, mode)
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if "annotations" in previous:
            meta["annotations"] = dict(previous["annotations"] or {})
        try:
            stored = self.apply(
                {"metadata": meta, "spec": copy.deepcopy(dict(previous["spec"]))}, only_if=applied
            )
        except Superseded as e:
            return f"not restored: {e}; left as it is"
        if not wait:
            return f"restored the previous spec of {what} (not waiting for it to serve)"
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
            return f"restored the previous spec of {what}, but it does not serve again: {e}"
        return f"restored the previous spec of {what}; it serves again (after {waited:.0f}s)"
