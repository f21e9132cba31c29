"""An in-process double of ``kubernetes.client.CustomObjectsApi`` for namespaced custom objects.

It behaves like the API server for the calls :class:`modelgate.kserve.KServeTarget` makes:

* ``get`` / ``replace`` / ``patch`` / ``delete`` of a missing object raise a real
  ``kubernetes.client.ApiException`` with status 404 (reason ``NotFound``, a ``Status`` body).
* ``create`` of an existing name raises 409 ``AlreadyExists``; ``dry_run="All"`` validates and
  returns the would-be object without storing it.
* Every stored write bumps ``metadata.resourceVersion`` (a global counter, as a string);
  ``metadata.generation`` starts at 1 and is bumped only when ``spec`` changes (a no-op write
  changes nothing). ``uid``/``creationTimestamp`` are set on create and kept afterwards.
* The ``status`` subresource is separate: ``create``/``replace``/``patch`` ignore ``status`` in
  the body; a scripted controller sets it through :meth:`set_status`.
* ``replace`` needs ``metadata.resourceVersion`` (422 ``Invalid`` without) and answers 409
  ``Conflict`` when it is not the stored one. ``patch`` is a JSON merge patch (RFC 7386); a
  ``metadata.resourceVersion`` inside it is a precondition (409 when stale).

Scripting: ``controller`` is called as ``controller(api, obj)`` before every ``get`` of an
existing object (one poll = one reconcile step) and typically calls ``api.set_status``.
:class:`ScriptedController` plays a list of status steps. ``fail(verb, status)`` makes the next
call of ``verb`` raise an ``ApiException`` with that status (403 for RBAC tests). ``calls``
records ``(verb, namespace, name)`` for assertions; ``objects`` is the store.
"""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

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
    generation: int | None,
    name: str = "m",
    namespace: str = "ns",
    reason: str = "",
    message: str = "",
    url: bool = True,
) -> dict[str, Any]:
    """A KServe-shaped InferenceService status (RawDeployment: no Knative fields)."""
    flag = "True" if ready else "False"
    status: dict[str, Any] = {
        "conditions": [
            condition("IngressReady", flag),
            condition("PredictorReady", flag, reason, message),
            condition("Ready", flag, reason, message),
        ],
        "deploymentMode": "RawDeployment",
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
