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
  ``metadata.resourceVersion`` inside it is a precondition (409 when stale). ``delete`` with a
  ``V1DeleteOptions`` body honours ``preconditions.resourceVersion`` (409 when stale).
* Writes run the schema check, then the validating webhooks (``admission``):
  :func:`kserve_cluster` installs :func:`kserve_admission` (KServe v0.20.0's canary rules,
  refusing with 403 as controller-runtime does) and checks every stored object and every
  status a controller writes against the strict v0.20.0 CRD schema (``violations``).

``FakeAppsV1Api`` serves ``read_namespaced_deployment`` from a store of Deployments kept as API
JSON and returns a real ``kubernetes.client.V1Deployment`` (deserialized by the client's own
``ApiClient``, as the real call does); a missing one is a 404 ``ApiException``.
``FakeCoreV1Api`` serves ``list_namespaced_event`` (a real ``CoreV1EventList``) from the events
the simulated kubelet records.

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

from modelgate.deploy import crd
from modelgate.deploy.kserve import DEPLOYMENT_MODE_ANNOTATION, ROLLOUT_ANNOTATION
from modelgate.errors import ConfigError

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


#: ``admission(old, new)``: a validating webhook; raises the ``ApiException`` the API returns.
Admission = Callable[[dict[str, Any] | None, dict[str, Any]], None]


class SchemaViolation(AssertionError):
    """An object written to the double does not match the strict KServe v0.20.0 CRD schema."""


class FakeCustomObjectsApi:
    """The namespaced subset of ``CustomObjectsApi``, with API-server semantics (see module doc).

    Args:
        controller: Called as ``controller(api, obj)`` before every ``get`` (one reconcile).
        admission: Validating webhooks, run on every create/replace/patch of an object that
            would be stored (``old`` None on create); the first to raise refuses the write.
        strict: Check every stored object and every status a controller writes against the
            packaged CRD schema made strict (:func:`modelgate.deploy.crd.validate_object`);
            a violation is recorded in ``violations`` and raised as :class:`SchemaViolation`.
    """

    def __init__(
        self,
        controller: Callable[[FakeCustomObjectsApi, dict], None] | None = None,
        *,
        admission: list[Admission] | None = None,
        strict: bool = False,
    ):
        self.objects: dict[Key, dict[str, Any]] = {}
        self.controller = controller
        self.admission = list(admission or [])
        self.strict = strict
        self.violations: list[str] = []
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
        self._check_schema({**obj, "status": status})
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

    def _check_schema(self, obj: Mapping[str, Any]) -> None:
        if not self.strict:
            return
        try:
            crd.validate_object(obj)
        except ConfigError as e:
            self.violations.append(str(e))
            raise SchemaViolation(str(e)) from e

    def _admit(self, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        # the API server validates against the schema, then calls validating webhooks
        self._check_schema(new)
        for webhook in self.admission:
            webhook(copy.deepcopy(old), copy.deepcopy(new))

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
        self._admit(current, new)
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
        self._admit(None, obj)
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
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str,
        body: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        """Delete; ``body.preconditions.resourceVersion`` (``V1DeleteOptions``) must match."""
        self._record("delete", namespace, name)
        key = (group, version, plural, namespace, name)
        current = self._existing(key, plural, name)
        wanted = ((body or {}).get("preconditions") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise api_exception(
                409,
                f'Operation cannot be fulfilled on {plural}.{group} "{name}": the '
                f"ResourceVersion in the precondition ({wanted}) does not match the "
                f"ResourceVersion in record ({current['metadata']['resourceVersion']}). The "
                "object might have been modified",
            )
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


class FakeCoreV1Api:
    """``CoreV1Api.list_namespaced_event`` over :attr:`events` (``CoreV1Event`` JSON).

    A controller appends events with :meth:`record`; ``field_selector`` understands
    ``involvedObject.kind=<Kind>`` (comma-separated terms, each must hold). Reads return a real
    ``CoreV1EventList`` model, as the client does.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str, str]] = []
        self._failures: dict[str, list[ApiException]] = {}
        self._client = ApiClient()
        self._names = itertools.count(1)

    def fail(self, verb: str, status: int, message: str = "injected failure") -> None:
        """Make the next ``verb`` call (``list``) raise ``status``."""
        self._failures.setdefault(verb, []).append(api_exception(status, message))

    def record(
        self,
        namespace: str,
        pod: str,
        reason: str,
        message: str,
        *,
        at: str,
        kind: str = "Warning",
    ) -> None:
        """What the kubelet reports about ``pod``: a repeat of the same event counts up."""
        for event in self.events:
            involved = event["involvedObject"]
            if (involved["namespace"], involved["name"], event["reason"], event["message"]) == (
                namespace,
                pod,
                reason,
                message,
            ):
                event["count"] += 1
                event["lastTimestamp"] = at
                return
        self.events.append(
            {
                "metadata": {"name": f"{pod}.{next(self._names):016x}", "namespace": namespace},
                "involvedObject": {"kind": "Pod", "name": pod, "namespace": namespace},
                "reason": reason,
                "message": message,
                "type": kind,
                "count": 1,
                "firstTimestamp": at,
                "lastTimestamp": at,
                "source": {"component": "kubelet"},
            }
        )

    def list_namespaced_event(
        self, namespace: str, field_selector: str | None = None, **_: Any
    ) -> Any:
        self.calls.append(("list", namespace, field_selector or ""))
        queue = self._failures.get("list")
        if queue:
            raise queue.pop(0)
        terms = [t.split("=", 1) for t in (field_selector or "").split(",") if t]
        items = []
        for event in self.events:
            if event["metadata"]["namespace"] != namespace:
                continue
            fields = {f"involvedObject.{k}": v for k, v in event["involvedObject"].items()}
            if all(fields.get(k) == v for k, v in terms):
                items.append(event)
        body = {"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": items}
        return self._client.deserialize(_Response(body), "CoreV1EventList")


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

#: ``unavailable``: pods never become available (a Pending pod, a failing readiness probe);
#: ``deadline``: the same, and ``ProgressDeadlineExceeded`` after ``deadline_after`` steps
#: instead of ``progressDeadlineSeconds``; ``crash``: pods crash-loop; ``image``: their image
#: cannot be pulled; ``quota``: the ReplicaSet cannot create pods; ``slow``: pods become
#: available after ``slow_start_seconds``, past the progress deadline.
FAILURES = ("unavailable", "deadline", "crash", "image", "quota", "slow")
_EPOCH = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
_MODES = ("Standard", "RawDeployment")
#: The vllm-runtime ServingRuntime's container args (manifests/base/servingruntime.yaml).
RUNTIME_ARGS = ("--model=/mnt/models", "--port=8080", "--served-model-name={{.Name}}")
RUNTIME_IMAGE = "vllm/vllm-openai:v0.32.0"
RUNTIME_ANNOTATIONS = {"prometheus.kserve.io/port": "8080", "prometheus.kserve.io/path": "/metrics"}
#: ``setDefaultDeploymentSpec`` (KServe v0.20.0 ``pkg/controller/v1beta1/inferenceservice/
#: reconcilers/deployment/deployment_reconciler.go`` 341-360).
PROGRESS_DEADLINE_SECONDS = 600
ISVC_LABEL = "serving.kserve.io/inferenceservice"  # constants.InferenceServicePodLabelKey
COMPONENT_LABEL = "component"  # constants.KServiceComponentLabel
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
WEBHOOK = "inferenceservice.kserve-webhook-server.validator"


def _time(seconds: int) -> str:
    return (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tick_of(timestamp: str) -> int:
    """Seconds since the double's epoch of a timestamp written by :func:`_time`."""
    parsed = dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return int((parsed - _EPOCH).total_seconds())


def predictor_deployment(isvc: str, predictor: str | None = None) -> str:
    """``constants.PredictorServiceName`` (``pkg/constants/constants.go`` 799-804 at v0.20.0)."""
    return f"{isvc}-{predictor}-predictor" if predictor else f"{isvc}-predictor"


@dataclass
class Pod:
    """One predictor pod: ``ready_in`` polls until it is available (None: never)."""

    name: str
    created: int
    ready_in: int | None
    crash: bool = False
    terminating: bool = False  # scaled down in this poll; gone at the next one
    failure: str | None = None  # the template's scripted failure kind

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

    ``stamp``: the rollout annotation of the stable Deployment's pod template; ``serving``: the
    rollout annotations of its pods that take traffic (available and not terminating), one per
    pod; ``deployment``: its name; ``canaries``: the same ``serving`` for every other predictor
    Deployment of the InferenceService (its canaries), by Deployment name.
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
    deployment: str = ""
    canaries: Mapping[str, tuple[str | None, ...]] = field(default_factory=dict)

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


def _deny(message: str) -> ApiException:
    """A validating webhook's refusal as controller-runtime answers it (``admission.Denied``:
    403 Forbidden)."""
    return api_exception(
        403, f'admission webhook "{WEBHOOK}" denied the request: {message}', "Forbidden"
    )


def kserve_admission(old: dict[str, Any] | None, new: dict[str, Any]) -> None:
    """KServe v0.20.0's InferenceService validating webhook, the canary rules.

    ``pkg/apis/serving/v1beta1/inference_service_validation.go``: ``validateCanarySpecs``
    (183-265) and, on update, ``validatePredictorNameChange`` (703-713). The deployment mode is
    read after the defaulting webhook, which rewrites ``RawDeployment`` to ``Standard``
    (``inference_service_defaults.go`` 166-171).

    Raises:
        ApiException: 403, ``admission webhook ... denied the request: <KServe's message>``.
    """
    if new.get("kind") != "InferenceService":
        return
    spec = new.get("spec") or {}
    stable = spec.get("predictor") or {}
    if old is not None:
        before = (old.get("spec") or {}).get("predictor") or {}
        if before.get("name", "") != stable.get("name", ""):
            uri = ((before.get("model") or {}).get("storageUri"), (stable.get("model") or {}))
            if uri[0] == uri[1].get("storageUri"):
                raise _deny("predictor.name change requires a model change (e.g. storageUri)")
    canaries = spec.get("canary") or []
    if not canaries:
        return
    mode = ((new.get("metadata") or {}).get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION)
    if mode not in _MODES:
        raise _deny("canary is only supported in Standard deployment mode")
    if not stable.get("model"):
        raise _deny(
            "canary requires a stable predictor with a model (multi-model serving is not "
            "supported with canary)"
        )
    names: set[str] = set()
    total = 0
    for i, entry in enumerate(canaries):
        predictor = entry.get("predictor") or {}
        name = predictor.get("name", "")
        if not name:
            raise _deny(f"canary[{i}] predictor.name is required")
        if name in names:
            raise _deny(f'canary predictor.name "{name}" is duplicated')
        names.add(name)
        if name == stable.get("name", ""):
            raise _deny(f'canary predictor.name "{name}" conflicts with stable predictor name')
        percent = entry.get("trafficPercent", 0)
        if not 0 <= percent <= 100:
            raise _deny(f'canary "{name}" trafficPercent must be between 0 and 100, got {percent}')
        total += percent
        if predictor.get("workerSpec"):
            raise _deny(f'canary "{name}" must not set workerSpec')
        for key in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
            if predictor.get(key):
                raise _deny(f'canary "{name}" must not set {key} (canary uses fixed replicas)')
        if predictor.get("minReplicas") is not None:
            stable_min = stable.get("minReplicas", 1)
            if predictor["minReplicas"] > stable_min:
                raise _deny(
                    f'canary "{name}" minReplicas ({predictor["minReplicas"]}) must not exceed '
                    f"stable predictor minReplicas ({stable_min})"
                )
    if total > 100:
        raise _deny(f"sum of canary trafficPercent values ({total}) must be <= 100")


def _empty(value: Any) -> bool:
    if isinstance(value, bool | int | float):
        return not value
    return value is None or value == "" or value == [] or value == {}


def mergo_override(base: Any, override: Any) -> Any:
    """``mergo.Merge(&base, override, mergo.WithOverride)`` on JSON (dario.cat/mergo v1.0.2):
    objects merge key by key, an empty override value keeps the base's, the rest replaces."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        out = copy.deepcopy(dict(base))
        for key, value in override.items():
            if key in out and _empty(value):
                continue
            out[key] = mergo_override(out[key], value) if key in out else copy.deepcopy(value)
        return out
    return copy.deepcopy(override)


class KServeController:
    """KServe v0.20's Standard-mode reconciler plus the Kubernetes Deployment controller, scripted.

    Called on every ``get`` of an InferenceService (one poll = one step, ``seconds_per_step`` of
    the double's clock). Each step, in order:

    1. The Deployment controller (and kubelet) act on every predictor Deployment of the
       InferenceService as they saw it after the previous step: pods scaled down last step are
       gone; each pod of a ReplicaSet gets one step closer to available (``ready_after`` steps;
       ``slow_start_seconds`` for a ``"slow"`` template; never for a failing one); when
       ``metadata.generation`` changed the new template is observed (a new ReplicaSet,
       ``Progressing=True NewReplicaSetCreated``; a rollback to an existing one keeps the
       ``Progressing`` condition it had, as ``getNewReplicaSet`` does). RollingUpdate with
       maxSurge 25% (rounded up) and maxUnavailable 25% (rounded down): the new ReplicaSet surges,
       unhealthy old pods are cleaned up, and an available old pod is scaled down only once a new
       one is available, so ``Available`` stays True during an update; a smaller ``replicas``
       scales the ReplicaSet down. The status counts terminating pods for one more step (the
       ReplicaSet status lags), ``Progressing`` follows ``syncRolloutStatus``
       (``NewReplicaSetAvailable`` when complete, ``ReplicaSetUpdated`` on progress,
       ``ProgressDeadlineExceeded`` once ``progressDeadlineSeconds`` (600) passed without progress
       (``DeploymentTimedOut``), or after ``deadline_after`` steps for a ``"deadline"`` template;
       never straight after ``NewReplicaSetAvailable``; a timed-out condition stays until the
       rollout progresses or completes). A ``"quota"`` template's ReplicaSet creates no pods
       (``ReplicaFailure=True FailedCreate``). The kubelet's events go to ``core``:
       ``BackOff``/``Back-off restarting failed container`` for ``"crash"`` pods, the
       ``ErrImagePull``/``ImagePullBackOff`` series for ``"image"`` ones and ``Unhealthy``
       (startup probe) for ``"slow"`` ones until they are ready.
    2. KServe reconciles, ``reconcile_delay`` steps after the InferenceService's spec changed
       (``pkg/controller/v1beta1/inferenceservice/components/predictor.go`` at v0.20.0): the
       stable Deployment ``PredictorServiceName(isvc, spec.predictor.name)`` from
       ``spec.predictor`` (``replicas``: its ``minReplicas`` less the canaries' replicas, at least
       1, ``reconcileRawDeployment`` 795-803; without ``minReplicas`` the HPA's current count,
       ``replicas``); for each ``spec.canary[i]`` (``reconcileCanaryDeployments`` 913-1000) a
       Deployment ``PredictorServiceName(isvc, canary name)`` whose pods run production's
       predictor overlaid with the canary's (``buildCanaryPredictor`` 897-911, mergo
       ``WithOverride``) with ``canaryReplicaCount`` replicas (886-895; the HPA's floor of 1
       unless ``serving.kserve.io/autoscalerClass: none``, ``createHPA``); predictor Deployments
       of the InferenceService no entry names any more are deleted with their pods (orphan
       clean-up, 1002-1039). A Deployment is created, or its pod template (bumping
       ``metadata.generation``) or ``replicas`` replaced when they differ. The pod template's
       annotations are the runtime's, the InferenceService's and the predictor's
       (``buildObjectMeta``), its labels ``app: isvc.<Deployment>`` and the InferenceService's.
    3. KServe writes the InferenceService status the way ``PropagateRawStatus`` and
       ``PropagateModelStatus`` do, from the stable Deployment it just wrote (so the reconcile
       that changes the template still reports the old status): ``PredictorReady`` from
       ``Available`` (``Progressing=False`` with a message and ``Available=False`` override it),
       ``IngressReady`` once the predictor was ready, ``Ready`` from both (not the canaries),
       ``observedGeneration`` copied from the Deployment's ``status.observedGeneration``,
       ``url``/``address`` (the stable Service) once ingress is ready, ``modelStatus`` from the
       newest stable pod (``Loaded`` whenever Ready, ``BlockedByFailedLoad`` for a crash-looping
       newest pod, ``lastFailureInfo`` kept forever); ``canaryStatuses`` (``ready``: the canary
       Deployment has an available replica) and ``CanaryPredictorReady`` (True when all are,
       ``AllCanariesReady``/``CanariesNotReady``; cleared without canaries), 959-1000.

    Args:
        apps: The :class:`FakeAppsV1Api` holding the Deployments.
        core: The :class:`FakeCoreV1Api` the kubelet's events go to (a new one if None).
        ready_after: Steps a new pod needs to become available.
        replicas: The stable Deployment's ``replicas`` when ``spec.predictor.minReplicas`` is
            unset (what the HPA keeps).
        failures: Rollout annotation value -> one of :data:`FAILURES`.
        deadline_after: Steps without progress before a ``"deadline"`` rollout times out.
        reconcile_delay: Steps between a spec change and KServe reconciling it.
        status_lags: KServe (steps 2 and 3) runs before the Deployment controller (step 1), so
            the InferenceService status a client reads describes the Deployment one step late.
        seconds_per_step: Clock seconds one step takes (conditions' timestamps, the progress
            deadline, ``slow_start_seconds``).
        slow_start_seconds: When a ``"slow"`` template's pods become available.

    ``history`` holds a :class:`RolloutSnapshot` per step; ``history[-1]`` is what the last
    client poll saw (nothing changes between an InferenceService ``get`` and the next one).
    """

    def __init__(
        self,
        apps: FakeAppsV1Api,
        *,
        core: FakeCoreV1Api | None = None,
        ready_after: int = 2,
        replicas: int = 1,
        failures: Mapping[str, str] | None = None,
        deadline_after: int = 3,
        reconcile_delay: int = 0,
        status_lags: bool = False,
        seconds_per_step: int = 1,
        slow_start_seconds: int = 900,
    ) -> None:
        self.apps = apps
        self.core = core if core is not None else FakeCoreV1Api()
        self.ready_after = ready_after
        self.replicas = replicas
        self.failures: dict[str, str] = dict(failures or {})
        for kind in self.failures.values():
            if kind not in FAILURES:
                raise ValueError(f"unknown failure {kind!r}; choose one of {FAILURES}")
        self.deadline_after = deadline_after
        self.reconcile_delay = reconcile_delay
        self.status_lags = status_lags
        self.seconds_per_step = seconds_per_step
        self.slow_start_seconds = slow_start_seconds
        self.tick = 0
        self.history: list[RolloutSnapshot] = []
        self.replica_sets: dict[tuple[str, str], dict[str, ReplicaSet]] = {}
        self._pending: dict[tuple[str, str], tuple[int, int]] = {}  # key -> (generation, since)
        self._ingress: set[tuple[str, str]] = set()
        self._pod_names = itertools.count(1)

    @property
    def now(self) -> int:
        """The double's clock: seconds since its epoch."""
        return self.tick * self.seconds_per_step

    # -- scripting helpers ----------------------------------------------------------------------

    def replica_set(
        self, namespace: str, name: str, stamp: str | None, *, deployment: str | None = None
    ) -> ReplicaSet | None:
        """The ReplicaSet for pod template ``stamp`` of InferenceService ``name``'s Deployment
        ``deployment`` (default: ``<name>-predictor``)."""
        dep = deployment or predictor_deployment(name)
        for rs in self.replica_sets.get((namespace, dep), {}).values():
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

    def deployments_of(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The stored predictor Deployments of InferenceService ``name`` (stable and canaries),
        found by label as KServe's orphan clean-up lists them."""
        return [
            dep
            for (ns, _), dep in sorted(self.apps.deployments.items())
            if ns == namespace
            and (dep["metadata"].get("labels") or {}).get(ISVC_LABEL) == name
            and (dep["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == "predictor"
        ]

    # -- one step -------------------------------------------------------------------------------

    def _step(self, namespace: str, name: str, generation: int) -> bool:
        """One poll of ``namespace/name``: the clock ticks; whether the reconciler acts on
        ``generation`` yet (``reconcile_delay`` polls after it was first seen)."""
        self.tick += 1
        key = (namespace, name)
        pending, since = self._pending.get(key, (0, 0))
        if pending != generation:
            since = self.tick
            self._pending[key] = (generation, since)
        return self.tick - since >= self.reconcile_delay

    def __call__(self, api: FakeCustomObjectsApi, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        mode = (meta.get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION, "Standard")
        if mode not in _MODES:
            raise AssertionError(f"KServeController simulates {_MODES}, not {mode!r}")
        kserve_runs = self._step(namespace, name, meta["generation"])
        stable_name = predictor_deployment(name, obj["spec"]["predictor"].get("name"))

        def kserve() -> None:
            if not kserve_runs:
                return
            dep = self._reconcile_predictors(obj)
            group, version = obj["apiVersion"].split("/")
            status = self._isvc_status(obj, dep)
            api.set_status(group, version, namespace, "inferenceservices", name, status)

        if self.status_lags:
            kserve()
        for dep in self.deployments_of(namespace, name):
            self._sync_deployment(dep)
        if not self.status_lags:
            kserve()
        self.history.append(self._snapshot(api, namespace, name, stable_name))

    # -- KServe ---------------------------------------------------------------------------------

    def _pod_template(
        self,
        obj: Mapping[str, Any],
        predictor: Mapping[str, Any] | None = None,
        deployment: str | None = None,
    ) -> dict[str, Any]:
        """The pod template KServe builds for ``predictor`` (default: the stable one)."""
        meta = obj["metadata"]
        predictor = obj["spec"]["predictor"] if predictor is None else predictor
        deployment = deployment or predictor_deployment(meta["name"], predictor.get("name"))
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
            "image": model.get("image") or RUNTIME_IMAGE,
            "args": args + list(model.get("args") or []),
            "resources": copy.deepcopy(model.get("resources") or {}),
        }
        spec: dict[str, Any] = {"containers": [container]}
        for key in ("tolerations", "nodeSelector", "serviceAccountName"):
            if key in predictor:
                spec[key] = copy.deepcopy(predictor[key])
        labels = {
            **(meta.get("labels") or {}),
            **(predictor.get("labels") or {}),
            "app": f"isvc.{deployment}",
            COMPONENT_LABEL: "predictor",
            ISVC_LABEL: meta["name"],
        }
        return {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}

    def _canary_count(self, spec: Mapping[str, Any], entry: Mapping[str, Any]) -> int:
        """``canaryReplicaCount`` (predictor.go 886-895)."""
        own = (entry.get("predictor") or {}).get("minReplicas")
        if own is not None:
            return int(own)
        stable = (spec.get("predictor") or {}).get("minReplicas")
        stable = 1 if stable is None else stable
        return math.ceil(float(stable) * float(entry.get("trafficPercent", 0)) / 100)

    def _reconcile_predictors(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """KServe's predictor reconcile (stable, canaries, orphans): the stable Deployment."""
        meta, spec = obj["metadata"], obj["spec"]
        namespace, name = meta["namespace"], meta["name"]
        stable = spec["predictor"]
        canaries = spec.get("canary") or []
        hpa = (meta.get("annotations") or {}).get(AUTOSCALER_CLASS, "hpa") != "none"
        counts = [self._canary_count(spec, c) for c in canaries]
        replicas = self.replicas
        if stable.get("minReplicas") is not None:
            replicas = stable["minReplicas"]
            if canaries:
                replicas = max(replicas - sum(counts), 1)
        stable_name = predictor_deployment(name, stable.get("name"))
        expected = {stable_name}
        dep = self._reconcile_deployment(obj, self.apps.stored(namespace, stable_name))
        self._scale(dep, replicas)
        for entry, count in zip(canaries, counts, strict=True):
            predictor = mergo_override(stable, entry["predictor"])
            for key in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
                predictor.pop(key, None)
            predictor["minReplicas"] = count
            dep_name = predictor_deployment(name, entry["predictor"]["name"])
            expected.add(dep_name)
            canary = self._write_deployment(
                obj,
                self.apps.stored(namespace, dep_name),
                self._pod_template(obj, predictor, dep_name),
                dep_name,
                max(count, 1) if hpa else count,
            )
            self._scale(canary, max(count, 1) if hpa else count)
        for orphan in self.deployments_of(namespace, name):
            if orphan["metadata"]["name"] not in expected:
                del self.apps.deployments[(namespace, orphan["metadata"]["name"])]
                self.replica_sets.pop((namespace, orphan["metadata"]["name"]), None)
        return dep

    def _scale(self, dep: dict[str, Any], replicas: int) -> None:
        if dep["spec"].get("replicas") != replicas:
            dep["spec"]["replicas"] = replicas
            dep["metadata"]["generation"] += 1
            self.apps.put(dep)

    def _reconcile_deployment(
        self, obj: Mapping[str, Any], dep: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The stable predictor Deployment, created or with the pod template KServe builds."""
        stable = obj["spec"]["predictor"]
        name = predictor_deployment(obj["metadata"]["name"], stable.get("name"))
        return self._write_deployment(obj, dep, self._pod_template(obj), name, self.replicas)

    def _write_deployment(
        self,
        obj: Mapping[str, Any],
        dep: dict[str, Any] | None,
        template: dict[str, Any],
        name: str,
        replicas: int,
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        if dep is None:
            labels = {
                k: template["metadata"]["labels"][k] for k in ("app", COMPONENT_LABEL, ISVC_LABEL)
            }
            dep = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": name,
                    "namespace": meta["namespace"],
                    "uid": str(uuid.uuid4()),
                    "generation": 1,
                    "labels": labels,
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
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": template["metadata"]["labels"]["app"]}},
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                    },
                    "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
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
        stored = self.apps.stored(meta["namespace"], name)
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
            out["lastTransitionTime"] = (
                old["lastTransitionTime"] if old and same else _time(self.now)
            )
            return out

        conditions = [
            cond("IngressReady", ingress),
            cond("PredictorReady", predictor),
            cond("Ready", ready),
        ]
        canaries = obj["spec"].get("canary") or []
        canary_statuses = []
        for entry in canaries:
            canary = entry["predictor"]["name"]
            cdep = self.apps.stored(namespace, predictor_deployment(name, canary)) or {}
            canary_statuses.append(
                {
                    "name": canary,
                    "ready": ((cdep.get("status") or {}).get("availableReplicas") or 0) > 0,
                    "trafficPercent": entry.get("trafficPercent", 0),
                }
            )
        if canaries:
            all_ready = all(s["ready"] for s in canary_statuses)
            conditions.append(
                cond(
                    "CanaryPredictorReady",
                    ("True", "AllCanariesReady", "")
                    if all_ready
                    else ("False", "CanariesNotReady", ""),
                )
            )
        status: dict[str, Any] = {
            "conditions": conditions,
            "deploymentMode": (meta.get("annotations") or {}).get(
                DEPLOYMENT_MODE_ANNOTATION, "Standard"
            ),
            "components": {"predictor": {}},
            "modelStatus": self._model_status(previous, dep, ready[0] == "True"),
        }
        if canary_statuses:
            status["canaryStatuses"] = canary_statuses
        if dstatus.get("observedGeneration"):
            status["observedGeneration"] = dstatus["observedGeneration"]
        if key in self._ingress:
            stable = dep["metadata"]["name"]
            status["url"] = f"http://{name}-{namespace}.example.com"
            status["address"] = {"url": f"http://{stable}.{namespace}.svc.cluster.local"}
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
        # ModelCopies (inference_service_status.go 180-187): failedCopies always, totalCopies
        # omitempty
        copies = sum(p.available for p in pods)
        model["copies"] = {"failedCopies": 0, **({"totalCopies": copies} if copies else {})}
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

    # -- the Deployment controller and the kubelet ----------------------------------------------

    def _new_pod(self, rs: ReplicaSet, failure: str | None) -> Pod:
        if failure == "slow":
            ready_in: int | None = math.ceil(self.slow_start_seconds / self.seconds_per_step)
        elif failure:
            ready_in = None
        else:
            ready_in = self.ready_after
        # generateName "<replica set>-" and 5 characters, as the ReplicaSet controller names pods
        return Pod(
            name=f"{rs.name}-{next(self._pod_names):05d}",
            created=self.tick,
            ready_in=ready_in,
            crash=failure == "crash",
            failure=failure,
        )

    def _kubelet_events(self, namespace: str, pod: Pod) -> None:
        """What the kubelet reports about a pod that is not available yet."""
        at = _time(self.now)
        if pod.available or pod.created == self.tick:
            return
        if pod.failure == "crash":
            self.core.record(
                namespace,
                pod.name,
                "BackOff",
                f"Back-off restarting failed container kserve-container in pod "
                f"{pod.name}_{namespace}(0c0ffee)",
                at=at,
            )
        elif pod.failure == "image":
            image = f'"{RUNTIME_IMAGE}-typo"'
            self.core.record(
                namespace,
                pod.name,
                "Failed",
                f"Failed to pull image {image}: rpc error: code = NotFound desc = not found",
                at=at,
            )
            self.core.record(namespace, pod.name, "Failed", "Error: ErrImagePull", at=at)
            self.core.record(
                namespace, pod.name, "BackOff", f"Back-off pulling image {image}", at=at
            )
            self.core.record(namespace, pod.name, "Failed", "Error: ImagePullBackOff", at=at)
        elif pod.failure == "slow" or pod.failure in ("unavailable", "deadline"):
            self.core.record(
                namespace,
                pod.name,
                "Unhealthy",
                'Startup probe failed: Get "http://10.0.0.7:8080/health": dial tcp '
                "10.0.0.7:8080: connect: connection refused",
                at=at,
            )

    def _sync_deployment(self, dep: dict[str, Any]) -> None:
        meta, spec = dep["metadata"], dep["spec"]
        previous = dep.get("status") or {}
        now = _time(self.now)
        rss = self.replica_sets.setdefault((meta["namespace"], meta["name"]), {})
        for rs in rss.values():  # since the last step: kubelet and the ReplicaSet controller
            rs.pods = rs.active()
            for pod in rs.pods:
                if pod.ready_in:
                    pod.ready_in -= 1
                self._kubelet_events(meta["namespace"], pod)

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
        failure = self.failures.get(new.stamp or "")  # looked up now: tests may script it late

        desired = spec.get("replicas", 1)
        surge, unavailable = math.ceil(desired * 0.25), math.floor(desired * 0.25)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        min_available = desired - unavailable

        total = sum(len(rs.active()) for rs in rss.values())  # reconcileNewReplicaSet
        if failure == "quota":
            if len(new.active()) < desired:
                set_condition(
                    "ReplicaFailure",
                    "True",
                    "FailedCreate",
                    f'pods "{new.name}-00000" is forbidden: exceeded quota: gpu, requested: '
                    "nvidia.com/gpu=1, used: nvidia.com/gpu=4, limited: nvidia.com/gpu=4",
                )
        elif total < desired + surge and len(new.active()) < desired:
            for _ in range(min(desired + surge - total, desired - len(new.active()))):
                new.pods.append(self._new_pod(new, failure))
        if failure != "quota":
            conditions.pop("ReplicaFailure", None)
        excess = len(new.active()) - desired  # a scale-down of the current template
        for pod in sorted(new.active(), key=lambda p: (p.available, p.created)):
            if excess <= 0:
                break
            pod.terminating = True
            excess -= 1
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
        deadline = spec.get("progressDeadlineSeconds", PROGRESS_DEADLINE_SECONDS)
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
                or self.now - _tick_of(current["lastUpdateTime"]) > deadline
                or (
                    failure == "deadline"
                    and self.now - _tick_of(current["lastUpdateTime"])
                    >= self.deadline_after * self.seconds_per_step
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
            conditions[t] for t in ("Available", "Progressing", "ReplicaFailure") if t in conditions
        ]
        dep["status"] = status
        self.apps.put(dep)

    def serving(self, namespace: str, deployment: str) -> tuple[str | None, ...]:
        """The rollout stamps of Deployment ``deployment``'s pods that take traffic now."""
        return tuple(
            rs.stamp
            for rs in self.replica_sets.get((namespace, deployment), {}).values()
            for p in rs.pods
            if p.available and not p.terminating
        )

    def _snapshot(
        self,
        api: FakeCustomObjectsApi,
        namespace: str,
        name: str,
        stable: str | None = None,
    ) -> RolloutSnapshot:
        stable = stable or predictor_deployment(name)
        return self.deployment_snapshot(
            namespace,
            stable,
            (api.stored(namespace, name) or {}).get("status") or {},
            deployment=stable,
            canaries={
                d["metadata"]["name"]: self.serving(namespace, d["metadata"]["name"])
                for d in self.deployments_of(namespace, name)
                if d["metadata"]["name"] != stable
            },
        )

    def deployment_snapshot(
        self, namespace: str, dep_name: str, status: Mapping[str, Any], **extra: Any
    ) -> RolloutSnapshot:
        """Deployment ``dep_name`` and the ``status`` of the object it serves, now (``extra``:
        more :class:`RolloutSnapshot` fields)."""
        dep = self.apps.stored(namespace, dep_name) or {
            "metadata": {"generation": 0},
            "spec": {"replicas": self.replicas, "template": {"metadata": {}}},
            "status": {},
        }
        dstatus = dep.get("status") or {}
        dconds = {c["type"]: c for c in dstatus.get("conditions") or []}
        conds = {c["type"]: c for c in status.get("conditions") or []}
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
            isvc_ready=(conds.get("Ready") or {}).get("status", "-"),
            isvc_observed_generation=status.get("observedGeneration"),
            serving=self.serving(namespace, dep_name),
            **extra,
        )


def kserve_cluster(
    *, strict: bool = True, **controller_options: Any
) -> tuple[FakeCustomObjectsApi, FakeAppsV1Api, KServeController]:
    """An API server double with KServe's webhook and a :class:`KServeController`:
    ``(api, apps, controller)``; the kubelet's events are ``controller.core``.

    ``strict``: every stored object and status is checked against the strict v0.20.0 CRD
    schema (see :class:`FakeCustomObjectsApi`).
    """
    apps = FakeAppsV1Api()
    controller = KServeController(apps, **controller_options)
    api = FakeCustomObjectsApi(controller, admission=[kserve_admission], strict=strict)
    return api, apps, controller
