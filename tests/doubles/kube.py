"""In-process doubles of the Kubernetes API for :class:`modelgate.deploy.kserve.KServeTarget`.

``FakeCustomObjectsApi`` (namespaced custom objects) behaves like the API server:

* ``get`` / ``replace`` / ``patch`` / ``delete`` of a missing object raise a real
  ``kubernetes.client.ApiException`` with status 404 (reason ``NotFound``, a ``Status`` body).
* ``create`` of an existing name raises 409 ``AlreadyExists``; ``dry_run="All"`` validates and
  returns the would-be object without storing it.
* Every stored write bumps ``metadata.resourceVersion`` (a global counter, as a string);
  ``metadata.generation`` starts at 1 and is bumped only when ``spec`` changes (a no-op write
  changes nothing). ``uid``/``creationTimestamp`` are set on create and kept afterwards.
* The ``status`` subresource is separate: ``create``/``replace``/``patch`` ignore ``status`` in
  the body; a scripted controller sets it through :meth:`FakeCustomObjectsApi.set_status`.
* ``replace`` needs ``metadata.resourceVersion`` (422 ``Invalid`` without) and answers 409
  ``Conflict`` when it is not the stored one. ``patch`` is a JSON merge patch (RFC 7386); a
  ``metadata.resourceVersion`` inside it is a precondition (409 when stale).

``FakeAppsV1Api`` serves ``read_namespaced_deployment`` from a store of Deployments kept as API
JSON and returns a real ``kubernetes.client.V1Deployment`` (deserialized by the client's own
``ApiClient``, as the real call does); a missing one is a 404 ``ApiException``.

Scripting: ``controller`` is called as ``controller(api, obj)`` before every ``get`` of an
existing InferenceService (one poll = one reconcile step). :class:`ScriptedController` plays a list
of status steps (any deployment mode; used for Knative). :class:`KServeController` simulates
KServe v0.20's Standard-mode reconciler together with the Kubernetes Deployment controller (see its
docstring). ``fail(verb, status)`` on either API makes the next call of ``verb`` raise an
``ApiException`` with that status (403 for RBAC tests); ``fail_with(verb, error, after=n)`` makes
a later call raise any exception (a urllib3 network error, ``KeyboardInterrupt``). ``calls`` records
``(verb, namespace, name)`` for assertions; ``objects`` / ``deployments`` are the stores.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import itertools
import json
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import ApiClient, V1Deployment
from kubernetes.client.exceptions import ApiException

from modelgate.deploy.kserve import DEPLOYMENT_MODE_ANNOTATION, ROLLOUT_ANNOTATION

Key = tuple[str, str, str, str, str]  # group, version, plural, namespace, name

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    422: "Invalid",
    500: "InternalError",
}


def api_exception(status: int, message: str, reason: str | None = None) -> ApiException:
    """An ``ApiException`` shaped like the python client raises it for an API ``Status``."""
    reason = reason or _REASONS.get(status, "Unknown")
    e = ApiException(status=status, reason=reason)
    e.body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": status,
        }
    )
    return e


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge recursively, ``None`` deletes, the rest replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeCustomObjectsApi:
    """The namespaced subset of ``CustomObjectsApi``, with API-server semantics (see module doc)."""

    def __init__(self, controller: Callable[[FakeCustomObjectsApi, dict], None] | None = None):
        self.objects: dict[Key, dict[str, Any]] = {}
        self.controller = controller
        self.calls: list[tuple[str, str, str]] = []
        self._failures: dict[str, list[ApiException]] = {}
        self._scheduled: dict[str, list[list[Any]]] = {}  # verb -> [[calls to let pass, error]]
        self._rv = itertools.count(1000)

    # -- scripting ------------------------------------------------------------------------------

    def fail(self, verb: str, status: int, message: str = "injected failure") -> None:
        """Make the next ``verb`` call (get/create/replace/patch/delete) raise ``status``."""
        if status == 403 and message == "injected failure":
            message = (
                f'inferenceservices.serving.kserve.io is forbidden: User "system:serviceaccount:'
                f'ns:default" cannot {verb} resource "inferenceservices" in API group '
                '"serving.kserve.io" in the namespace "ns"'
            )
        self._failures.setdefault(verb, []).append(api_exception(status, message))

    def fail_with(self, verb: str, error: BaseException, *, after: int = 0) -> None:
        """Make a ``verb`` call raise ``error`` (any exception, e.g. what urllib3 raises when the
        connection drops): the first one after ``after`` more calls that succeed."""
        self._scheduled.setdefault(verb, []).append([after, error])

    def set_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, status: dict
    ) -> dict[str, Any]:
        """What a controller's status update does: replace ``status``, bump resourceVersion only."""
        obj = self._existing((group, version, plural, namespace, name), plural, name)
        obj["status"] = copy.deepcopy(status)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        return copy.deepcopy(obj)

    def stored(self, namespace: str, name: str, plural: str = "inferenceservices") -> dict | None:
        """The stored object (any group/version) or None."""
        for (_, _, p, ns, n), obj in self.objects.items():
            if (p, ns, n) == (plural, namespace, name):
                return obj
        return None

    # -- helpers ------------------------------------------------------------------------------

    def _next_rv(self) -> str:
        return str(next(self._rv))

    def _record(self, verb: str, namespace: str, name: str) -> None:
        self.calls.append((verb, namespace, name))
        queue = self._failures.get(verb)
        if queue:
            raise queue.pop(0)
        scheduled = self._scheduled.get(verb) or []
        for entry in scheduled:
            entry[0] -= 1
        due = [entry for entry in scheduled if entry[0] < 0]
        if due:
            scheduled.remove(due[0])
            raise due[0][1]

    def _existing(self, key: Key, plural: str, name: str) -> dict[str, Any]:
        obj = self.objects.get(key)
        if obj is None:
            raise api_exception(404, f'{plural}.{key[0]} "{name}" not found')
        return obj

    def _store_update(self, key: Key, current: dict, new: dict) -> dict[str, Any]:
        new = copy.deepcopy(new)
        new["status"] = copy.deepcopy(current.get("status", {}))
        meta = new.setdefault("metadata", {})
        cmeta = current["metadata"]
        for immutable in ("uid", "creationTimestamp", "name", "namespace"):
            meta[immutable] = cmeta[immutable]
        meta["generation"] = cmeta["generation"]
        meta["resourceVersion"] = cmeta["resourceVersion"]
        if new == current:
            return copy.deepcopy(current)  # no-op: nothing bumps
        if new.get("spec") != current.get("spec"):
            meta["generation"] = cmeta["generation"] + 1
        meta["resourceVersion"] = self._next_rv()
        self.objects[key] = new
        return copy.deepcopy(new)

    # -- CustomObjectsApi ---------------------------------------------------------------------

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **_: Any
    ) -> dict[str, Any]:
        self._record("get", namespace, name)
        key = (group, version, plural, namespace, name)
        obj = self._existing(key, plural, name)
        if self.controller is not None:
            self.controller(self, copy.deepcopy(obj))
        return copy.deepcopy(self.objects[key])

    def create_namespaced_custom_object(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        body: dict[str, Any],
        dry_run: str | None = None,
        field_manager: str | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        name = (body.get("metadata") or {}).get("name", "")
        self._record("create", namespace, name)
        if body.get("apiVersion") != f"{group}/{version}":
            raise api_exception(400, f"apiVersion {body.get('apiVersion')!r} != {group}/{version}")
        if not name:
            raise api_exception(422, "metadata.name: Required value")
        if (body["metadata"].get("namespace") or namespace) != namespace:
            raise api_exception(400, "the namespace of the provided object does not match")
        key = (group, version, plural, namespace, name)
        if key in self.objects:
            raise api_exception(409, f'{plural}.{group} "{name}" already exists', "AlreadyExists")
        obj = copy.deepcopy(body)
        obj["status"] = {}
        meta = obj["metadata"]
        meta.update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp="2025-01-01T00:00:00Z",
            generation=1,
            resourceVersion=self._next_rv(),
        )
        if dry_run == "All":
            return obj
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def replace_namespaced_custom_object(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str,
        body: dict[str, Any],
        dry_run: str | None = None,
        field_manager: str | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        self._record("replace", namespace, name)
        key = (group, version, plural, namespace, name)
        current = self._existing(key, plural, name)
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if not rv:
            raise api_exception(
                422,
                f'{plural}.{group} "{name}" is invalid: metadata.resourceVersion: '
                "Invalid value: 0x0: must be specified for an update",
            )
        if rv != current["metadata"]["resourceVersion"]:
            raise api_exception(
                409,
                f'Operation cannot be fulfilled on {plural}.{group} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        return self._store_update(key, current, body)

    def patch_namespaced_custom_object(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str,
        body: dict[str, Any],
        **_: Any,
    ) -> dict[str, Any]:
        self._record("patch", namespace, name)
        key = (group, version, plural, namespace, name)
        current = self._existing(key, plural, name)
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise api_exception(409, f'the object "{name}" has been modified')
        patched = merge_patch(current, {k: v for k, v in body.items() if k != "status"})
        return self._store_update(key, current, patched)

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **_: Any
    ) -> dict[str, Any]:
        self._record("delete", namespace, name)
        key = (group, version, plural, namespace, name)
        self._existing(key, plural, name)
        del self.objects[key]
        return {"kind": "Status", "apiVersion": "v1", "status": "Success"}


class _Response:
    """What ``ApiClient.deserialize`` reads: the raw JSON of a response."""

    def __init__(self, data: Mapping[str, Any]):
        self.data = json.dumps(data)


class FakeAppsV1Api:
    """``AppsV1Api.read_namespaced_deployment`` over :attr:`deployments` (API JSON, camelCase).

    A controller writes Deployments with :meth:`put`; reads return a fresh ``V1Deployment`` model
    each time, like the real client, so callers never share state with the store.
    """

    def __init__(self) -> None:
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self._failures: dict[str, list[ApiException]] = {}
        self._client = ApiClient()
        self._rv = itertools.count(5000)

    def fail(self, verb: str, status: int, message: str = "injected failure") -> None:
        """Make the next ``verb`` call (``read``) raise ``status``."""
        if status == 403 and message == "injected failure":
            message = (
                'deployments.apps is forbidden: User "system:serviceaccount:ns:default" cannot '
                'get resource "deployments" in API group "apps" in the namespace "ns"'
            )
        self._failures.setdefault(verb, []).append(api_exception(status, message))

    def put(self, deployment: Mapping[str, Any]) -> None:
        """Store ``deployment`` (what a controller's create/update does); bumps resourceVersion."""
        dep = copy.deepcopy(dict(deployment))
        meta = dep["metadata"]
        meta["resourceVersion"] = str(next(self._rv))
        self.deployments[(meta["namespace"], meta["name"])] = dep

    def stored(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored Deployment JSON (not a copy) or None."""
        return self.deployments.get((namespace, name))

    def read_namespaced_deployment(self, name: str, namespace: str, **_: Any) -> V1Deployment:
        self.calls.append(("read", namespace, name))
        queue = self._failures.get("read")
        if queue:
            raise queue.pop(0)
        dep = self.deployments.get((namespace, name))
        if dep is None:
            raise api_exception(404, f'deployments.apps "{name}" not found')
        return self._client.deserialize(_Response(dep), "V1Deployment")


def condition(ctype: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    out = {"type": ctype, "status": status, "lastTransitionTime": "2025-01-01T00:00:00Z"}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def isvc_status(
    *,
    ready: bool,
    generation: int | str | None,
    name: str = "m",
    namespace: str = "ns",
    reason: str = "",
    message: str = "",
    url: bool = True,
    mode: str = "Knative",
) -> dict[str, Any]:
    """A KServe-shaped InferenceService status (no per-revision Knative details)."""
    flag = "True" if ready else "False"
    status: dict[str, Any] = {
        "conditions": [
            condition("IngressReady", flag),
            condition("PredictorReady", flag, reason, message),
            condition("Ready", flag, reason, message),
        ],
        "deploymentMode": mode,
        "modelStatus": {
            "transitionStatus": "UpToDate" if ready else "InProgress",
            "states": {"activeModelState": "Loaded" if ready else "Pending"},
        },
    }
    if generation is not None:
        status["observedGeneration"] = generation
    if ready and url:
        status["url"] = f"http://{name}-{namespace}.example.com"
        status["address"] = {"url": f"http://{name}-predictor.{namespace}.svc.cluster.local"}
    return status


class ScriptedController:
    """Plays status steps, one per ``get``; the last step repeats.

    A step is a dict (used as the status) or a callable ``step(obj) -> status``; a dict with
    ``observedGeneration: "current"`` gets the object's current ``metadata.generation``.
    """

    def __init__(self, steps: list[Any]):
        self.steps = list(steps)
        self.index = 0
        self.seen_generations: list[int] = []

    def __call__(self, api: FakeCustomObjectsApi, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.seen_generations.append(meta["generation"])
        step = self.steps[min(self.index, len(self.steps) - 1)]
        self.index += 1
        status = step(obj) if callable(step) else copy.deepcopy(step)
        if status is None:
            return
        if status.get("observedGeneration") == "current":
            status["observedGeneration"] = meta["generation"]
        group, version = obj["apiVersion"].split("/")
        api.set_status(group, version, meta["namespace"], "inferenceservices", meta["name"], status)


# ------------------------------------------------------------------------------------------------
# KServe Standard mode + the Kubernetes Deployment controller
# ------------------------------------------------------------------------------------------------

FAILURES = ("unavailable", "deadline", "crash")
_EPOCH = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
_MODES = ("Standard", "RawDeployment")
#: The vllm-runtime ServingRuntime's container args (manifests/base/servingruntime.yaml).
RUNTIME_ARGS = ("--model=/mnt/models", "--port=8080", "--served-model-name={{.Name}}")
RUNTIME_IMAGE = "vllm/vllm-openai:v0.32.0"
RUNTIME_ANNOTATIONS = {"prometheus.kserve.io/port": "8080", "prometheus.kserve.io/path": "/metrics"}


def _time(tick: int) -> str:
    return (_EPOCH + dt.timedelta(seconds=tick)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tick_of(timestamp: str) -> int:
    parsed = dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return int((parsed - _EPOCH).total_seconds())


@dataclass
class Pod:
    """One predictor pod: ``ready_in`` polls until it is available (None: never)."""

    name: str
    created: int
    ready_in: int | None
    crash: bool = False
    terminating: bool = False  # scaled down in this poll; gone at the next one

    @property
    def available(self) -> bool:
        return self.ready_in == 0


@dataclass
class ReplicaSet:
    """The pods of one pod template of a Deployment (``stamp``: its rollout annotation)."""

    name: str
    stamp: str | None
    pods: list[Pod] = field(default_factory=list)

    def active(self) -> list[Pod]:
        return [p for p in self.pods if not p.terminating]


@dataclass(frozen=True)
class RolloutSnapshot:
    """The predictor Deployment and the InferenceService after one poll (what a client saw).

    ``stamp``: the rollout annotation of the Deployment's pod template; ``serving``: the rollout
    annotations of the pods that take traffic (available and not terminating), one per pod.
    """

    tick: int
    stamp: str | None
    generation: int
    observed_generation: int
    desired: int
    replicas: int
    updated: int
    available: int
    progressing: str  # "<status> <reason>"
    available_condition: str
    isvc_ready: str
    isvc_observed_generation: int | None
    serving: tuple[str | None, ...]

    @property
    def old(self) -> int:
        """Replicas of earlier pod templates still running."""
        return self.replicas - self.updated

    @property
    def rolled_out(self) -> bool:
        """Rolled out as ``kubectl rollout status`` judges it, and nothing else serves."""
        return (
            self.observed_generation >= self.generation
            and self.updated == self.available == self.replicas == self.desired
            and set(self.serving) == {self.stamp}
        )


class KServeController:
    """KServe v0.20's Standard-mode reconciler plus the Kubernetes Deployment controller, scripted.

    Called on every ``get`` of an InferenceService (one poll = one step). Each step, in order:

    1. The Deployment controller (and kubelet) act on the predictor Deployment ``<isvc>-predictor``
       as they saw it after the previous step: pods scaled down last step are gone; each pod of a
       ReplicaSet gets one step closer to available (``ready_after`` steps; never for a failing
       template); when ``metadata.generation`` changed the new template is observed (a new
       ReplicaSet, ``Progressing=True NewReplicaSetCreated``; a rollback to an existing one keeps
       the ``Progressing`` condition it had, as ``getNewReplicaSet`` does). RollingUpdate with
       maxSurge 25% (rounded up) and maxUnavailable 25% (rounded down): the new ReplicaSet surges,
       unhealthy old pods are cleaned up, and an available old pod is scaled down only once a new
       one is available, so ``Available`` stays True during an update. The status counts
       terminating pods for one more step (the ReplicaSet status lags), ``Progressing`` follows
       ``syncRolloutStatus`` (``NewReplicaSetAvailable`` when complete, ``ReplicaSetUpdated`` on
       progress, ``ProgressDeadlineExceeded`` after ``deadline_after`` steps without progress for
       a ``"deadline"`` template, never straight after ``NewReplicaSetAvailable``; a timed-out
       condition stays until the rollout progresses or completes).
    2. KServe reconciles, ``reconcile_delay`` steps after the InferenceService's spec changed:
       it creates the Deployment, or replaces its pod template (bumping ``metadata.generation``)
       when the template built from the spec differs. The pod template's annotations are the
       runtime's, the InferenceService's and ``spec.predictor.annotations`` (``buildObjectMeta``).
    3. KServe writes the InferenceService status the way ``PropagateRawStatus`` and
       ``PropagateModelStatus`` do, from the Deployment it just wrote (so the reconcile that
       changes the template still reports the old status): ``PredictorReady`` from ``Available``
       (``Progressing=False`` with a message and ``Available=False`` override it),
       ``IngressReady`` once the predictor was ready, ``Ready`` from both, ``observedGeneration``
       copied from the Deployment's ``status.observedGeneration``, ``url``/``address`` once
       ingress is ready, ``modelStatus`` from the newest pod (``Loaded`` whenever Ready,
       ``BlockedByFailedLoad`` for a crash-looping newest pod, ``lastFailureInfo`` kept forever).

    Args:
        apps: The :class:`FakeAppsV1Api` holding the Deployments.
        ready_after: Steps a new pod needs to become available.
        replicas: ``spec.replicas`` of created Deployments.
        failures: Rollout annotation value -> ``"unavailable"`` (pods never become available),
            ``"deadline"`` (the same, then ``ProgressDeadlineExceeded``) or ``"crash"`` (pods
            crash-loop: ``BlockedByFailedLoad`` once nothing else keeps the service Ready).
        deadline_after: Steps without progress before a ``"deadline"`` rollout times out.
        reconcile_delay: Steps between a spec change and KServe reconciling it.
        status_lags: KServe (steps 2 and 3) runs before the Deployment controller (step 1), so
            the InferenceService status a client reads describes the Deployment one step late.

    ``history`` holds a :class:`RolloutSnapshot` per step; ``history[-1]`` is what the last
    client poll saw (nothing changes between an InferenceService ``get`` and the next one).
    """

    def __init__(
        self,
        apps: FakeAppsV1Api,
        *,
        ready_after: int = 2,
        replicas: int = 1,
        failures: Mapping[str, str] | None = None,
        deadline_after: int = 3,
        reconcile_delay: int = 0,
        status_lags: bool = False,
    ) -> None:
        self.apps = apps
        self.ready_after = ready_after
        self.replicas = replicas
        self.failures: dict[str, str] = dict(failures or {})
        for kind in self.failures.values():
            if kind not in FAILURES:
                raise ValueError(f"unknown failure {kind!r}; choose one of {FAILURES}")
        self.deadline_after = deadline_after
        self.reconcile_delay = reconcile_delay
        self.status_lags = status_lags
        self.tick = 0
        self.history: list[RolloutSnapshot] = []
        self.replica_sets: dict[tuple[str, str], dict[str, ReplicaSet]] = {}
        self._pending: dict[tuple[str, str], tuple[int, int]] = {}  # key -> (generation, since)
        self._ingress: set[tuple[str, str]] = set()
        self._pod_names = itertools.count(1)

    # -- scripting helpers ----------------------------------------------------------------------

    def replica_set(self, namespace: str, name: str, stamp: str | None) -> ReplicaSet | None:
        """The ReplicaSet of InferenceService ``name``'s Deployment for pod template ``stamp``."""
        for rs in self.replica_sets.get((namespace, f"{name}-predictor"), {}).values():
            if rs.stamp == stamp:
                return rs
        return None

    def run(self, api: FakeCustomObjectsApi, namespace: str, name: str, polls: int) -> None:
        """Poll (``get``) the InferenceService ``polls`` times, as a client would."""
        for _ in range(polls):
            api.get_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", namespace, "inferenceservices", name
            )

    def settle(
        self, api: FakeCustomObjectsApi, namespace: str, name: str, max_polls: int = 100
    ) -> RolloutSnapshot:
        """Poll until the current spec has rolled out and the InferenceService is Ready."""
        for _ in range(max_polls):
            self.run(api, namespace, name, 1)
            last = self.history[-1]
            if last.rolled_out and last.isvc_ready == "True":
                return last
        raise AssertionError(f"{namespace}/{name} did not settle: {self.history[-1]}")

    # -- one step -------------------------------------------------------------------------------

    def __call__(self, api: FakeCustomObjectsApi, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        mode = (meta.get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION, "Standard")
        if mode not in _MODES:
            raise AssertionError(f"KServeController simulates {_MODES}, not {mode!r}")
        self.tick += 1
        dep = self.apps.stored(namespace, f"{name}-predictor")
        key = (namespace, name)
        generation, since = self._pending.get(key, (0, 0))
        if generation != meta["generation"]:
            generation, since = meta["generation"], self.tick
            self._pending[key] = (generation, since)
        kserve_runs = self.tick - since >= self.reconcile_delay

        def kserve(dep: dict[str, Any] | None) -> dict[str, Any] | None:
            if not kserve_runs:
                return dep
            dep = self._reconcile_deployment(obj, dep)
            group, version = obj["apiVersion"].split("/")
            status = self._isvc_status(obj, dep)
            api.set_status(group, version, namespace, "inferenceservices", name, status)
            return dep

        if self.status_lags:
            dep = kserve(dep)
        if dep is not None:
            self._sync_deployment(dep)
        if not self.status_lags:
            kserve(dep)
        self.history.append(self._snapshot(api, namespace, name))

    # -- KServe ---------------------------------------------------------------------------------

    def _pod_template(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta, predictor = obj["metadata"], obj["spec"]["predictor"]
        model = predictor.get("model") or {}
        annotations = {
            **RUNTIME_ANNOTATIONS,
            **{
                k: v
                for k, v in (meta.get("annotations") or {}).items()
                if k != "kubectl.kubernetes.io/last-applied-configuration"
            },
            **(predictor.get("annotations") or {}),
        }
        args = [a.replace("{{.Name}}", meta["name"]) for a in RUNTIME_ARGS]
        container = {
            "name": "kserve-container",
            "image": RUNTIME_IMAGE,
            "args": args + list(model.get("args") or []),
            "resources": copy.deepcopy(model.get("resources") or {}),
        }
        spec: dict[str, Any] = {"containers": [container]}
        for key in ("tolerations", "nodeSelector", "serviceAccountName"):
            if key in predictor:
                spec[key] = copy.deepcopy(predictor[key])
        labels = {
            "app": f"isvc.{meta['name']}-predictor",
            "component": "predictor",
            "serving.kserve.io/inferenceservice": meta["name"],
        }
        return {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}

    def _reconcile_deployment(
        self, obj: Mapping[str, Any], dep: dict[str, Any] | None
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        template = self._pod_template(obj)
        if dep is None:
            dep = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": f"{meta['name']}-predictor",
                    "namespace": meta["namespace"],
                    "uid": str(uuid.uuid4()),
                    "generation": 1,
                    "labels": dict(template["metadata"]["labels"]),
                    "annotations": dict(template["metadata"]["annotations"]),
                    "ownerReferences": [
                        {
                            "apiVersion": obj["apiVersion"],
                            "kind": "InferenceService",
                            "name": meta["name"],
                            "uid": meta.get("uid", ""),
                            "controller": True,
                        }
                    ],
                },
                "spec": {
                    "replicas": self.replicas,
                    "selector": {"matchLabels": {"app": template["metadata"]["labels"]["app"]}},
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                    },
                    "progressDeadlineSeconds": 600,
                    "template": template,
                },
                "status": {},
            }
            self.apps.put(dep)
        elif dep["spec"]["template"] != template:
            dep["spec"]["template"] = template
            dep["metadata"]["annotations"] = dict(template["metadata"]["annotations"])
            dep["metadata"]["generation"] += 1
            self.apps.put(dep)
        stored = self.apps.stored(meta["namespace"], f"{meta['name']}-predictor")
        assert stored is not None
        return stored

    def _isvc_status(self, obj: Mapping[str, Any], dep: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        previous = obj.get("status") or {}
        dstatus = dep.get("status") or {}
        dconds = {c["type"]: c for c in dstatus.get("conditions") or []}
        available, progressing = dconds.get("Available"), dconds.get("Progressing")

        predictor = ("False", "", "")  # PropagateRawStatus
        if available and available["status"] == "True":
            predictor = ("True", available.get("reason", ""), available.get("message", ""))
        if progressing:
            if progressing["status"] == "False":
                if progressing.get("message"):
                    predictor = ("False", progressing["reason"], progressing["message"])
            elif progressing.get("reason") == "NewReplicaSetAvailable":
                predictor = ("True", progressing["reason"], progressing.get("message", ""))
            elif not available or available["status"] != "True":
                predictor = ("Unknown", progressing["reason"], progressing.get("message", ""))
        if available and available["status"] == "False":
            predictor = ("False", available.get("reason", ""), available.get("message", ""))

        key = (namespace, name)
        if predictor[0] == "True":
            self._ingress.add(key)
        ingress = (
            ("True", "", "")
            if key in self._ingress
            else ("False", "PredictorNotReady", "Predictor ingress not created")
        )
        if ingress[0] == "True" and predictor[0] == "True":
            ready = ("True", "", "")
        elif "False" in (ingress[0], predictor[0]):
            ready = ingress if ingress[0] == "False" else predictor
        else:
            ready = ("Unknown", predictor[1], predictor[2])

        before = {c["type"]: c for c in previous.get("conditions") or []}

        def cond(ctype: str, value: tuple[str, str, str]) -> dict[str, str]:
            out = condition(ctype, *value)
            old = before.get(ctype)
            same = old is not None and old["status"] == value[0]
            out["lastTransitionTime"] = old["lastTransitionTime"] if same else _time(self.tick)
            return out

        status: dict[str, Any] = {
            "conditions": [
                cond("IngressReady", ingress),
                cond("PredictorReady", predictor),
                cond("Ready", ready),
            ],
            "deploymentMode": (meta.get("annotations") or {}).get(
                DEPLOYMENT_MODE_ANNOTATION, "Standard"
            ),
            "components": {"predictor": {}},
            "modelStatus": self._model_status(previous, dep, ready[0] == "True"),
        }
        if dstatus.get("observedGeneration"):
            status["observedGeneration"] = dstatus["observedGeneration"]
        if key in self._ingress:
            status["url"] = f"http://{name}-{namespace}.example.com"
            status["address"] = {"url": f"http://{name}-predictor.{namespace}.svc.cluster.local"}
            status["components"]["predictor"]["url"] = status["address"]["url"]
        return status

    def _model_status(
        self, previous: Mapping[str, Any], dep: Mapping[str, Any], ready: bool
    ) -> dict[str, Any]:
        meta = dep["metadata"]
        pods = [
            p
            for rs in self.replica_sets.get((meta["namespace"], meta["name"]), {}).values()
            for p in rs.pods
        ]
        pods.sort(key=lambda p: p.created, reverse=True)  # sortPodsByCreatedTimestampDesc
        model = copy.deepcopy(dict(previous.get("modelStatus") or {}))
        model["copies"] = {"totalCopies": sum(p.available for p in pods)}
        states = model.setdefault("states", {})

        def update(state: str, failure: dict[str, Any] | None = None) -> None:
            states["targetModelState"] = state
            model["transitionStatus"] = {
                "Pending": "InProgress",
                "Loaded": "UpToDate",
                "FailedToLoad": "BlockedByFailedLoad",
            }[state]
            if state == "Loaded":
                states["activeModelState"] = "Loaded"
            states.setdefault("activeModelState", "")
            if failure:
                model["lastFailureInfo"] = failure

        if not pods:
            update("Pending")
        elif ready:
            update("Loaded")
        elif pods[0].crash:
            update(
                "FailedToLoad",
                {
                    "reason": "ModelLoadFailed",
                    "message": "vLLM exited: CUDA out of memory",
                    "exitCode": 1,
                },
            )
        else:
            update("Pending")
        return model

    # -- the Deployment controller --------------------------------------------------------------

    def _sync_deployment(self, dep: dict[str, Any]) -> None:
        meta, spec = dep["metadata"], dep["spec"]
        previous = dep.get("status") or {}
        now = _time(self.tick)
        rss = self.replica_sets.setdefault((meta["namespace"], meta["name"]), {})
        for rs in rss.values():  # since the last step: kubelet and the ReplicaSet controller
            rs.pods = rs.active()
            for pod in rs.pods:
                if pod.ready_in:
                    pod.ready_in -= 1

        conditions = {c["type"]: dict(c) for c in previous.get("conditions") or []}

        def set_condition(ctype: str, status: str, reason: str, message: str) -> None:
            old = conditions.get(ctype)
            if old and old["status"] == status and old.get("reason") == reason:
                return  # SetDeploymentCondition: same status and reason change nothing
            transition = old["lastTransitionTime"] if old and old["status"] == status else now
            conditions[ctype] = {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastUpdateTime": now,
                "lastTransitionTime": transition,
            }

        template = spec["template"]
        key = json.dumps(template, sort_keys=True)
        new = rss.get(key)
        if new is None:
            stamp = (template["metadata"].get("annotations") or {}).get(ROLLOUT_ANNOTATION)
            digest = hashlib.sha256(key.encode()).hexdigest()[:10]
            new = rss[key] = ReplicaSet(f"{meta['name']}-{digest}", stamp)
            set_condition("Progressing", "True", "NewReplicaSetCreated", "")
            conditions["Progressing"]["message"] = f'Created new replica set "{new.name}"'
        elif "Progressing" not in conditions:
            set_condition("Progressing", "True", "FoundNewReplicaSet", "")
            conditions["Progressing"]["message"] = f'Found new replica set "{new.name}"'
        old = [rs for rs in rss.values() if rs is not new]
        failure = self.failures.get(new.stamp)  # looked up now: tests may script it late

        desired = spec.get("replicas", 1)
        surge, unavailable = math.ceil(desired * 0.25), math.floor(desired * 0.25)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        min_available = desired - unavailable

        total = sum(len(rs.active()) for rs in rss.values())  # reconcileNewReplicaSet
        if total < desired + surge and len(new.active()) < desired:
            for _ in range(min(desired + surge - total, desired - len(new.active()))):
                new.pods.append(
                    Pod(
                        name=f"{new.name}-{next(self._pod_names)}",
                        created=self.tick,
                        ready_in=None if failure else self.ready_after,
                        crash=failure == "crash",
                    )
                )
        everything = sum(len(rs.active()) for rs in rss.values())  # reconcileOldReplicaSets
        new_unavailable = sum(not p.available for p in new.active())
        budget = everything - min_available - new_unavailable
        for rs in old:  # cleanupUnhealthyReplicas
            for pod in rs.active():
                if budget > 0 and not pod.available:
                    pod.terminating = True
                    budget -= 1
        available_now = sum(p.available for rs in rss.values() for p in rs.active())
        budget = available_now - min_available  # scaleDownOldReplicaSetsForRollingUpdate
        for rs in old:
            for pod in rs.active():
                if budget > 0:
                    pod.terminating = True
                    budget -= 1

        pods = [p for rs in rss.values() for p in rs.pods]  # calculateStatus (lagging RS status)
        replicas = len(pods)
        updated = len(new.pods)
        available = sum(p.available for p in pods)
        if available >= min_available:
            set_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        else:
            set_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        old_before = previous.get("replicas", 0) - previous.get("updatedReplicas", 0)
        progressed = (
            updated > previous.get("updatedReplicas", 0)
            or replicas - updated < old_before
            or available > previous.get("availableReplicas", 0)
        )
        current = conditions.get("Progressing")
        complete = updated == replicas == available == desired
        if complete:  # syncRolloutStatus
            set_condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{new.name}" has successfully progressed.',
            )
        elif progressed:
            transition = (
                current["lastTransitionTime"] if current and current["status"] == "True" else now
            )
            conditions["Progressing"] = {
                "type": "Progressing",
                "status": "True",
                "reason": "ReplicaSetUpdated",
                "message": f'ReplicaSet "{new.name}" is progressing.',
                "lastUpdateTime": now,
                "lastTransitionTime": transition,
            }
        elif (  # DeploymentTimedOut; never right after a completed rollout
            current is not None
            and current.get("reason") != "NewReplicaSetAvailable"
            and (
                current.get("reason") == "ProgressDeadlineExceeded"
                or (
                    failure == "deadline"
                    and self.tick - _tick_of(current["lastUpdateTime"]) >= self.deadline_after
                )
            )
        ):
            set_condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{new.name}" has timed out progressing.',
            )

        status: dict[str, Any] = {"observedGeneration": meta["generation"]}
        counts = {
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": available,
            "availableReplicas": available,
            "unavailableReplicas": max(replicas - available, 0),
        }
        status.update({k: v for k, v in counts.items() if v})  # omitempty
        status["conditions"] = [
            conditions[t] for t in ("Available", "Progressing") if t in conditions
        ]
        dep["status"] = status
        self.apps.put(dep)

    def _snapshot(self, api: FakeCustomObjectsApi, namespace: str, name: str) -> RolloutSnapshot:
        dep = self.apps.stored(namespace, f"{name}-predictor") or {
            "metadata": {"generation": 0},
            "spec": {"replicas": self.replicas, "template": {"metadata": {}}},
            "status": {},
        }
        dstatus = dep.get("status") or {}
        dconds = {c["type"]: c for c in dstatus.get("conditions") or []}
        isvc = (api.stored(namespace, name) or {}).get("status") or {}
        iconds = {c["type"]: c for c in isvc.get("conditions") or []}
        serving = tuple(
            rs.stamp
            for rs in self.replica_sets.get((namespace, f"{name}-predictor"), {}).values()
            for p in rs.pods
            if p.available and not p.terminating
        )
        template_annotations = dep["spec"]["template"]["metadata"].get("annotations") or {}

        def describe(c: Mapping[str, Any] | None) -> str:
            return f"{c['status']} {c.get('reason', '')}".strip() if c else "-"

        return RolloutSnapshot(
            tick=self.tick,
            stamp=template_annotations.get(ROLLOUT_ANNOTATION),
            generation=dep["metadata"]["generation"],
            observed_generation=dstatus.get("observedGeneration", 0),
            desired=dep["spec"].get("replicas", 1),
            replicas=dstatus.get("replicas", 0),
            updated=dstatus.get("updatedReplicas", 0),
            available=dstatus.get("availableReplicas", 0),
            progressing=describe(dconds.get("Progressing")),
            available_condition=describe(dconds.get("Available")),
            isvc_ready=(iconds.get("Ready") or {}).get("status", "-"),
            isvc_observed_generation=isvc.get("observedGeneration"),
            serving=serving,
        )


def kserve_cluster(
    **controller_options: Any,
) -> tuple[FakeCustomObjectsApi, FakeAppsV1Api, KServeController]:
    """An API server double with a :class:`KServeController`: ``(api, apps, controller)``."""
    apps = FakeAppsV1Api()
    controller = KServeController(apps, **controller_options)
    return FakeCustomObjectsApi(controller), apps, controller
