"""An in-process double of the Kubeflow Model Registry REST server.

It serves the subset of ``/api/model_registry/v1`` (OpenAPI ``api/openapi/model-registry.yaml``,
the v1 flavour that the ``model-registry`` 0.3.15+ client is generated from) that the Python
client uses for registering and updating models:

* ``GET  /registered_models`` (list; the client's connect probe), ``POST /registered_models``
* ``GET|PATCH /registered_models/{registered_model_id}``, ``GET .../{id}/versions``
* ``GET  /registered_model?name=|externalId=`` (find)
* ``GET|POST /model_versions``, ``GET|PATCH /model_versions/{model_version_id}``
* ``GET|POST /model_versions/{model_version_id}/artifacts`` (``POST`` = upsert an ``Artifact``)
* ``GET  /model_version?name=&parentResourceId=|externalId=`` (find)
* ``GET|POST /model_artifacts``, ``GET|PATCH /model_artifacts/{model_artifact_id}``
* ``GET  /model_artifact?name=&parentResourceId=|externalId=`` (find)

Contract details it follows: camelCase field names; ``customProperties`` values are
``{"metadataType": "Metadata<Kind>Value", "<kind>_value": ...}`` with ``int_value`` a decimal
*string*, ``double_value`` a number, ``bool_value`` a boolean; ids and
``createTimeSinceEpoch``/``lastUpdateTimeSinceEpoch`` are strings; lists carry ``items``,
``size``, ``pageSize`` and ``nextPageToken``; errors are the spec's ``Error``
(``{"code", "message"}``). A PATCH that carries ``customProperties`` replaces them all (the
server deletes those left out: kubeflow/hub ``internal/platform/db/repository/
generic_repository.go``, ``handleProperties``); one without keeps them
(``internal/core/model_version.go``, ``UpsertModelVersion``). Bodies are validated strictly:
an unknown field, a wrong type, a read-only field on a create/update, or a malformed custom
property answers 400, like the Go server whose generated controllers decode with
``DisallowUnknownFields``. Name clashes answer 409 (the spec lists 409 for the create
operations). Unknown routes answer Go's plain-text ``404 page not found``.

Switches for failure tests: ``api_version="v1alpha3"`` serves only the old prefix (an old
server), ``fail(operation, status)`` makes the next call of an operation fail, ``lose(operation,
status=503 | delay=s)`` makes it succeed but lose its answer (a 503 instead, or an answer later
than the client waits: what a proxy in front of the registry can do), ``token`` makes
every request require ``Authorization: Bearer <token>``. ``registered_models``,
``model_versions``, ``artifacts`` and ``requests`` (with each answer) expose the stored state
for assertions.

Contract check: the ``model-registry`` wheel ships ``mr_openapi``, the client that OpenAPI
Generator makes from kubeflow/hub ``api/openapi/model-registry.yaml`` (``clients/python/
Makefile``: ``openapi-generator-cli generate -i ../../api/openapi/model-registry.yaml -g python
--package-name mr_openapi``). :func:`generated_operations` reads every operation's method,
resource path and response types from its ``mr_openapi/api/*.py`` and :func:`response_problems`
validates an answer with the generated pydantic models, so the unit tests can prove that each
route in :attr:`FakeModelRegistry.ROUTES` exists in the spec and that every body the double
sends parses in the real client and uses only declared fields.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.doubles.http import serve, stop_serving

JSON = dict[str, Any]

_ID_RE = re.compile(r"^[1-9][0-9]{0,8}$")
_PRINTABLE_RE = re.compile(r"^[\x20-\x7E]+$")
_INT_RE = re.compile(r"^-?[0-9]+$")

# --- schema fragments (field name -> accepted JSON kind) ------------------------------------
_STR, _LIST_STR, _PROPS, _INT, _NUM = "string", "string[]", "customProperties", "int", "number"

_BASE_CREATE = {"customProperties": _PROPS, "description": _STR, "externalId": _STR}
_RM_UPDATE = {
    **_BASE_CREATE,
    "readme": _STR,
    "maturity": _STR,
    "language": _LIST_STR,
    "tasks": _LIST_STR,
    "provider": _STR,
    "logo": _STR,
    "license": _STR,
    "licenseLink": _STR,
    "libraryName": _STR,
    "owner": _STR,
    "state": _STR,
}
_RM_CREATE = {**_RM_UPDATE, "name": _STR}
_MV_UPDATE = {**_BASE_CREATE, "state": _STR, "author": _STR}
_MV_CREATE = {**_MV_UPDATE, "name": _STR, "registeredModelId": _STR}
_MA_UPDATE = {
    **_BASE_CREATE,
    "artifactType": _STR,
    "modelFormatName": _STR,
    "storageKey": _STR,
    "storagePath": _STR,
    "modelFormatVersion": _STR,
    "serviceAccountName": _STR,
    "modelSourceKind": _STR,
    "modelSourceClass": _STR,
    "modelSourceGroup": _STR,
    "modelSourceId": _STR,
    "modelSourceName": _STR,
    "uri": _STR,
    "state": _STR,
}
_MA_CREATE = {**_MA_UPDATE, "name": _STR}
_DOC_UPDATE = {**_BASE_CREATE, "artifactType": _STR, "uri": _STR, "state": _STR}
_DOC_CREATE = {**_DOC_UPDATE, "name": _STR}
_READ_ONLY = {"id": _STR, "createTimeSinceEpoch": _STR, "lastUpdateTimeSinceEpoch": _STR}
# The upsert endpoint takes a full ``Artifact`` (oneOf by artifactType), read-only fields included.
_ARTIFACT_FULL = {
    "model-artifact": {**_MA_CREATE, **_READ_ONLY},
    "doc-artifact": {**_DOC_CREATE, **_READ_ONLY},
}
_MODEL_STATES = {"LIVE", "ARCHIVED"}
_ARTIFACT_STATES = {
    "UNKNOWN",
    "PENDING",
    "LIVE",
    "MARKED_FOR_DELETION",
    "DELETED",
    "ABANDONED",
    "REFERENCE",
}
_METADATA_KINDS = {
    "MetadataIntValue": "int_value",
    "MetadataDoubleValue": "double_value",
    "MetadataStringValue": "string_value",
    "MetadataStructValue": "struct_value",
    "MetadataProtoValue": "proto_value",
    "MetadataBoolValue": "bool_value",
}
_ORDER_BY = {"CREATE_TIME", "LAST_UPDATE_TIME", "ID"}
_SORT_ORDER = {"ASC", "DESC"}
_LIST_PARAMS = {"filterQuery", "pageSize", "orderBy", "sortOrder", "nextPageToken"}


class ApiError(Exception):
    """An error answer: HTTP status plus the spec's ``Error`` body."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> JSON:
        # The Go server answers e.g. {"code": "Bad Request", "message": "...: bad request"}.
        return {"code": self.status.phrase, "message": self.message}


def _bad(message: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, f"{message}: bad request")


def _not_found(message: str) -> ApiError:
    return ApiError(HTTPStatus.NOT_FOUND, f"{message}: not found")


def _conflict(message: str) -> ApiError:
    return ApiError(HTTPStatus.CONFLICT, f"{message}: conflict")


def _validate_custom_properties(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise _bad(f"{where}: customProperties must be an object")
    for key, meta in value.items():
        if not isinstance(key, str) or not key:
            raise _bad(f"{where}: customProperties keys must be non-empty strings")
        if not isinstance(meta, dict):
            raise _bad(f"{where}: customProperties[{key!r}] must be a MetadataValue object")
        kind = meta.get("metadataType")
        if kind not in _METADATA_KINDS:
            raise _bad(f"{where}: customProperties[{key!r}] has unknown metadataType {kind!r}")
        value_field = _METADATA_KINDS[kind]
        extra = set(meta) - {"metadataType", value_field}
        if kind == "MetadataProtoValue":
            extra -= {"type"}
        if extra:
            raise _bad(f"{where}: customProperties[{key!r}] has unknown fields {sorted(extra)}")
        if value_field not in meta:
            raise _bad(f"{where}: customProperties[{key!r}] lacks {value_field}")
        v = meta[value_field]
        ok = {
            "int_value": isinstance(v, str) and bool(_INT_RE.match(v)),
            "double_value": isinstance(v, int | float) and not isinstance(v, bool),
            "string_value": isinstance(v, str),
            "bool_value": isinstance(v, bool),
            "struct_value": isinstance(v, str),
            "proto_value": isinstance(v, str),
        }[value_field]
        if not ok:
            raise _bad(f"{where}: customProperties[{key!r}].{value_field} has wrong type {v!r}")


def _validate_body(body: Any, schema: dict[str, str], where: str) -> JSON:
    if not isinstance(body, dict):
        raise _bad(f"{where}: request body must be a JSON object")
    unknown = sorted(set(body) - set(schema))
    if unknown:
        raise _bad(f'{where}: json: unknown field "{unknown[0]}"')
    for name, value in body.items():
        kind = schema[name]
        if value is None:
            raise _bad(f"{where}: {name} must not be null")
        if kind == _STR and not isinstance(value, str):
            raise _bad(f"{where}: {name} must be a string")
        if kind == _LIST_STR and not (
            isinstance(value, list) and all(isinstance(x, str) for x in value)
        ):
            raise _bad(f"{where}: {name} must be an array of strings")
        if kind == _PROPS:
            _validate_custom_properties(value, where)
    if "name" in body and not body["name"]:
        raise _bad(f"{where}: name must not be empty")
    return body


def _now_ms() -> str:
    return str(int(time.time() * 1000))


@dataclass
class _Failure:
    status: int
    message: str
    times: int


@dataclass
class _Loss:
    status: int | None
    delay: float
    times: int


@dataclass
class RecordedRequest:
    """One request the double received."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    operation: str
    status: int = 0
    response: Any = None
    """The answer's status and body (a JSON copy taken when it was sent; text for 404s)."""


@dataclass
class FakeModelRegistry:
    """Model Registry REST double; start with :meth:`start` or the ``fake_model_registry`` fixture.

    Attributes:
        api_version: ``"v1"`` (default) or ``"v1alpha3"`` to play an old server.
        token: When set, every request must carry ``Authorization: Bearer <token>``.
        registered_models: Stored registered models by id, in wire (JSON) form.
        model_versions: Stored model versions by id, in wire form.
        artifacts: Stored artifacts by id, in wire form.
        artifact_parent: Model version id of each artifact id.
        requests: Every request received, in order.
    """

    api_version: str = "v1"
    token: str | None = None
    registered_models: dict[str, JSON] = field(default_factory=dict)
    model_versions: dict[str, JSON] = field(default_factory=dict)
    artifacts: dict[str, JSON] = field(default_factory=dict)
    artifact_parent: dict[str, str] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    _failures: dict[str, _Failure] = field(default_factory=dict)
    _losses: dict[str, _Loss] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _next_context_id: int = 1
    _next_artifact_id: int = 1
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        if self._server is None:
            raise RuntimeError("FakeModelRegistry is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def prefix(self) -> str:
        """The API path prefix this double serves."""
        return f"/api/model_registry/{self.api_version}"

    def start(self) -> FakeModelRegistry:
        """Serve on 127.0.0.1 on a free port in a daemon thread."""
        self._server, self._thread = serve(self, name="FakeModelRegistry")
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        stop_serving(self._server, self._thread)

    # --- failure injection -------------------------------------------------------------------
    def fail(
        self,
        operation: str,
        *,
        status: int = 500,
        message: str = "injected failure",
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``operation`` answer ``status`` with an Error body.

        Operation names are the spec's operationIds in snake_case, e.g.
        ``upsert_model_version_artifact``, ``create_model_version``, ``update_model_version``.
        """
        with self._lock:
            self._failures[operation] = _Failure(status, message, times)

    def lose(
        self, operation: str, *, status: int | None = 503, delay: float = 0.0, times: int = 1
    ) -> None:
        """Make the next ``times`` calls of ``operation`` take effect but lose their answer.

        The registry stores what was asked; the client gets ``status`` (an Error body) instead
        of the answer, or, with ``status=None``, the real answer only after ``delay`` seconds
        (longer than the client's timeout: the client sees a timeout).
        """
        with self._lock:
            self._losses[operation] = _Loss(status, delay, times)

    # --- helpers for assertions --------------------------------------------------------------
    def find_registered_model(self, name: str) -> JSON | None:
        """The stored registered model called ``name``, if any."""
        return next((m for m in self.registered_models.values() if m["name"] == name), None)

    def find_model_version(self, model_name: str, version: str) -> JSON | None:
        """The stored version ``version`` of model ``model_name``, if any."""
        rm = self.find_registered_model(model_name)
        if rm is None:
            return None
        return next(
            (
                v
                for v in self.model_versions.values()
                if v["registeredModelId"] == rm["id"] and v["name"] == version
            ),
            None,
        )

    def artifacts_of(self, model_version_id: str) -> list[JSON]:
        """Stored artifacts attached to a model version."""
        return [
            self.artifacts[a] for a, mv in self.artifact_parent.items() if mv == model_version_id
        ]

    @staticmethod
    def plain_properties(resource: JSON) -> dict[str, Any]:
        """``customProperties`` decoded to Python values (int_value strings become ints)."""
        out: dict[str, Any] = {}
        for key, meta in resource.get("customProperties", {}).items():
            value = meta[_METADATA_KINDS[meta["metadataType"]]]
            out[key] = int(value) if meta["metadataType"] == "MetadataIntValue" else value
        return out

    # --- request dispatch --------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: Any, raw_body: bytes) -> tuple[int, Any]:
        """Answer one request: ``(status, JSON body)``; a ``str`` body is sent as plain text."""
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query, keep_blank_values=True)
        path = parts.path
        route = (
            self._route(method, path[len(self.prefix) :])
            if path.startswith(self.prefix + "/")
            else None
        )
        body: Any = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                body = raw_body.decode(errors="replace")
        recorded = RecordedRequest(method, path, query, body, route[0] if route else "")
        with self._lock:
            self.requests.append(recorded)
        status, answer = self._answer(method, route, headers, query, body)
        recorded.status = int(status)
        recorded.response = answer if isinstance(answer, str) else json.loads(json.dumps(answer))
        return status, answer

    def _answer(
        self,
        method: str,
        route: tuple[str, Callable[..., tuple[int, Any]], tuple[str, ...]] | None,
        headers: Any,
        query: dict[str, list[str]],
        body: Any,
    ) -> tuple[int, Any]:
        if route is None:
            return 404, "404 page not found\n"
        operation, handler, args = route
        if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
            err = ApiError(HTTPStatus.UNAUTHORIZED, "missing or invalid bearer token")
            return err.status, err.body()
        if method in ("POST", "PATCH"):
            if not (headers.get("Content-Type") or "").startswith("application/json"):
                err = _bad("Content-Type must be application/json")
                return err.status, err.body()
            if isinstance(body, str) or body is None:
                err = _bad("request body must be JSON")
                return err.status, err.body()
        with self._lock:
            failure = self._failures.get(operation)
            if failure is not None:
                failure.times -= 1
                if failure.times <= 0:
                    del self._failures[operation]
                err = ApiError(HTTPStatus(failure.status), failure.message)
                return err.status, err.body()
            try:
                answer = handler(query, body, *args)
            except ApiError as err:
                return err.status, err.body()
            loss = self._losses.get(operation)
            if loss is not None:
                loss.times -= 1
                if loss.times <= 0:
                    del self._losses[operation]
        if loss is None:
            return answer
        if loss.delay:
            time.sleep(loss.delay)  # outside the lock: the client's read-back is answered
        if loss.status is None:
            return answer
        lost = ApiError(HTTPStatus(loss.status), "upstream answer lost (injected)")
        return lost.status, lost.body()

    ROUTES: ClassVar[tuple[tuple[str, str, str, str], ...]] = (
        # (method, path template under the prefix, operationId in snake_case, handler)
        ("GET", "/registered_models", "get_registered_models", "_list_rm"),
        ("POST", "/registered_models", "create_registered_model", "_create_rm"),
        ("GET", "/registered_models/{registered_model_id}", "get_registered_model", "_get_rm"),
        (
            "PATCH",
            "/registered_models/{registered_model_id}",
            "update_registered_model",
            "_patch_rm",
        ),
        (
            "GET",
            "/registered_models/{registered_model_id}/versions",
            "get_registered_model_versions",
            "_list_rm_versions",
        ),
        (
            "POST",
            "/registered_models/{registered_model_id}/versions",
            "create_registered_model_version",
            "_create_rm_version",
        ),
        ("GET", "/registered_model", "find_registered_model", "_find_rm"),
        ("GET", "/model_versions", "get_model_versions", "_list_mv"),
        ("POST", "/model_versions", "create_model_version", "_create_mv"),
        ("GET", "/model_versions/{model_version_id}", "get_model_version", "_get_mv"),
        ("PATCH", "/model_versions/{model_version_id}", "update_model_version", "_patch_mv"),
        (
            "GET",
            "/model_versions/{model_version_id}/artifacts",
            "get_model_version_artifacts",
            "_list_mv_artifacts",
        ),
        (
            "POST",
            "/model_versions/{model_version_id}/artifacts",
            "upsert_model_version_artifact",
            "_upsert_mv_artifact",
        ),
        ("GET", "/model_version", "find_model_version", "_find_mv"),
        ("GET", "/model_artifacts", "get_model_artifacts", "_list_ma"),
        ("POST", "/model_artifacts", "create_model_artifact", "_create_ma"),
        ("GET", "/model_artifacts/{model_artifact_id}", "get_model_artifact", "_get_ma"),
        (
            "PATCH",
            "/model_artifacts/{model_artifact_id}",
            "update_model_artifact",
            "_patch_ma",
        ),
        ("GET", "/model_artifact", "find_model_artifact", "_find_ma"),
    )
    """Every route the double serves; the contract test checks them against the spec."""

    def _route(
        self, method: str, path: str
    ) -> tuple[str, Callable[..., tuple[int, Any]], tuple[str, ...]] | None:
        path_matched = False
        for verb, template, operation, handler in self.ROUTES:
            m = re.fullmatch(re.sub(r"\{[^/}]+\}", "([^/]+)", template), path)
            if m is None:
                continue
            path_matched = True
            if verb == method:
                return operation, getattr(self, handler), m.groups()
        if path_matched:
            return (
                "method_not_allowed",
                lambda *_: (405, {"code": "Method Not Allowed", "message": "method not allowed"}),
                (),
            )
        return None

    # --- id / query helpers ------------------------------------------------------------------
    def _new_context_id(self) -> str:
        # Registered models and model versions are MLMD contexts and share one id sequence.
        value = str(self._next_context_id)
        self._next_context_id += 1
        return value

    def _new_artifact_id(self) -> str:
        value = str(self._next_artifact_id)
        self._next_artifact_id += 1
        return value

    @staticmethod
    def _check_id(value: str, what: str) -> str:
        if not _ID_RE.match(value):
            raise _bad(f"invalid {what} {value!r}: must match ^[1-9][0-9]{{0,8}}$")
        return value

    @staticmethod
    def _query(query: dict[str, list[str]], allowed: set[str]) -> dict[str, str]:
        unknown = sorted(set(query) - allowed)
        if unknown:
            raise _bad(f"unknown query parameter {unknown[0]!r}")
        out: dict[str, str] = {}
        for key, values in query.items():
            if len(values) != 1:
                raise _bad(f"query parameter {key!r} given {len(values)} times")
            out[key] = values[0]
        for key in ("name", "externalId"):
            if key in out and not _PRINTABLE_RE.match(out[key]):
                raise _bad(f"query parameter {key!r} must be printable ASCII")
        if "parentResourceId" in out and not _ID_RE.match(out["parentResourceId"]):
            raise _bad("parentResourceId must match ^[1-9][0-9]{0,8}$")
        return out

    def _page(self, query: dict[str, list[str]], items: list[JSON], extra: set[str]) -> JSON:
        q = self._query(query, _LIST_PARAMS | extra)
        page_size = q.get("pageSize", "100")
        if not _ID_RE.match(page_size):
            raise _bad(f"invalid pageSize {page_size!r}")
        order_by = q.get("orderBy", "ID")
        sort_order = q.get("sortOrder", "ASC")
        if order_by not in _ORDER_BY:
            raise _bad(f"invalid orderBy {order_by!r}")
        if sort_order not in _SORT_ORDER:
            raise _bad(f"invalid sortOrder {sort_order!r}")
        if "filterQuery" in q:
            raise _bad("filterQuery is not supported by the test double")
        key = {
            "ID": lambda r: int(r["id"]),
            "CREATE_TIME": lambda r: (int(r["createTimeSinceEpoch"]), int(r["id"])),
            "LAST_UPDATE_TIME": lambda r: (int(r["lastUpdateTimeSinceEpoch"]), int(r["id"])),
        }[order_by]
        ordered = sorted(items, key=key, reverse=sort_order == "DESC")
        start = 0
        if q.get("nextPageToken"):
            token = q["nextPageToken"]
            if not token.startswith("offset-") or not token[7:].isdigit():
                raise _bad(f"invalid nextPageToken {token!r}")
            start = int(token[7:])
        size = int(page_size)
        chunk = ordered[start : start + size]
        more = start + size < len(ordered)
        return {
            "items": chunk,
            "size": len(chunk),
            "pageSize": size,
            "nextPageToken": f"offset-{start + size}" if more else "",
        }

    @staticmethod
    def _check_state(body: JSON, allowed: set[str], where: str) -> None:
        if "state" in body and body["state"] not in allowed:
            raise _bad(f"{where}: invalid state {body['state']!r}")

    def _external_id_free(self, external_id: str | None, own_id: str | None = None) -> None:
        if external_id is None:
            return
        for store in (self.registered_models, self.model_versions, self.artifacts):
            for rid, res in store.items():
                if res.get("externalId") == external_id and rid != own_id:
                    raise _conflict(f"externalId {external_id!r} is already in use")

    # --- registered models -------------------------------------------------------------------
    def _rm(self, rm_id: str) -> JSON:
        self._check_id(rm_id, "registered_model_id")
        if rm_id not in self.registered_models:
            raise _not_found(f"no registered model found for id {rm_id}")
        return self.registered_models[rm_id]

    def _list_rm(self, query: dict[str, list[str]], _body: Any) -> tuple[int, Any]:
        return 200, self._page(query, list(self.registered_models.values()), set())

    def _create_rm(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        self._query(query, set())
        body = _validate_body(body, _RM_CREATE, "RegisteredModelCreate")
        if "name" not in body:
            raise _bad("RegisteredModelCreate: name is required")
        self._check_state(body, _MODEL_STATES, "RegisteredModelCreate")
        if self.find_registered_model(body["name"]) is not None:
            raise _conflict(f"registered model with name {body['name']!r} already exists")
        self._external_id_free(body.get("externalId"))
        now = _now_ms()
        rm = {
            "customProperties": {},
            "state": "LIVE",
            **body,
            "id": self._new_context_id(),
            "createTimeSinceEpoch": now,
            "lastUpdateTimeSinceEpoch": now,
        }
        self.registered_models[rm["id"]] = rm
        return 201, rm

    def _get_rm(self, query: dict[str, list[str]], _body: Any, rm_id: str) -> tuple[int, Any]:
        self._query(query, set())
        return 200, self._rm(rm_id)

    def _patch_rm(self, query: dict[str, list[str]], body: Any, rm_id: str) -> tuple[int, Any]:
        self._query(query, set())
        rm = self._rm(rm_id)
        body = _validate_body(body, _RM_UPDATE, "RegisteredModelUpdate")
        self._check_state(body, _MODEL_STATES, "RegisteredModelUpdate")
        self._external_id_free(body.get("externalId"), rm_id)
        rm.update(body)  # customProperties, when given, replace the stored map
        rm["lastUpdateTimeSinceEpoch"] = _now_ms()
        return 200, rm

    def _find_rm(self, query: dict[str, list[str]], _body: Any) -> tuple[int, Any]:
        q = self._query(query, {"name", "externalId"})
        if "name" not in q and "externalId" not in q:
            raise _bad("invalid parameters call, supply either name or externalId")
        for rm in self.registered_models.values():
            if ("name" not in q or rm["name"] == q["name"]) and (
                "externalId" not in q or rm.get("externalId") == q["externalId"]
            ):
                return 200, rm
        raise _not_found(f"no registered models found for {q}")

    def _list_rm_versions(
        self, query: dict[str, list[str]], _body: Any, rm_id: str
    ) -> tuple[int, Any]:
        self._rm(rm_id)
        items = [v for v in self.model_versions.values() if v["registeredModelId"] == rm_id]
        return 200, self._page(query, items, {"name", "externalId"})

    def _create_rm_version(
        self, query: dict[str, list[str]], body: Any, rm_id: str
    ) -> tuple[int, Any]:
        if isinstance(body, dict):
            body = {**body, "registeredModelId": rm_id}
        return self._create_mv(query, body)

    # --- model versions ----------------------------------------------------------------------
    def _mv(self, mv_id: str) -> JSON:
        self._check_id(mv_id, "model_version_id")
        if mv_id not in self.model_versions:
            raise _not_found(f"no model version found for id {mv_id}")
        return self.model_versions[mv_id]

    def _list_mv(self, query: dict[str, list[str]], _body: Any) -> tuple[int, Any]:
        return 200, self._page(query, list(self.model_versions.values()), set())

    def _create_mv(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        self._query(query, set())
        body = _validate_body(body, _MV_CREATE, "ModelVersionCreate")
        for required in ("name", "registeredModelId"):
            if required not in body:
                raise _bad(f"ModelVersionCreate: {required} is required")
        self._check_state(body, _MODEL_STATES, "ModelVersionCreate")
        parent = body["registeredModelId"]
        self._check_id(parent, "registeredModelId")
        if parent not in self.registered_models:
            raise _not_found(f"no registered model found for id {parent}")
        for v in self.model_versions.values():
            if v["registeredModelId"] == parent and v["name"] == body["name"]:
                raise _conflict(
                    f"model version with name {body['name']!r} already exists "
                    f"for registered model {parent}"
                )
        self._external_id_free(body.get("externalId"))
        now = _now_ms()
        mv = {
            "customProperties": {},
            "state": "LIVE",
            **body,
            "id": self._new_context_id(),
            "createTimeSinceEpoch": now,
            "lastUpdateTimeSinceEpoch": now,
        }
        self.model_versions[mv["id"]] = mv
        return 201, mv

    def _get_mv(self, query: dict[str, list[str]], _body: Any, mv_id: str) -> tuple[int, Any]:
        self._query(query, set())
        return 200, self._mv(mv_id)

    def _patch_mv(self, query: dict[str, list[str]], body: Any, mv_id: str) -> tuple[int, Any]:
        self._query(query, set())
        mv = self._mv(mv_id)
        body = _validate_body(body, _MV_UPDATE, "ModelVersionUpdate")
        self._check_state(body, _MODEL_STATES, "ModelVersionUpdate")
        self._external_id_free(body.get("externalId"), mv_id)
        mv.update(body)
        mv["lastUpdateTimeSinceEpoch"] = _now_ms()
        return 200, mv

    def _find_mv(self, query: dict[str, list[str]], _body: Any) -> tuple[int, Any]:
        q = self._query(query, {"name", "externalId", "parentResourceId"})
        if "externalId" not in q and not ("name" in q and "parentResourceId" in q):
            raise _bad(
                "invalid parameters call, supply either (name and parentResourceId), or externalId"
            )
        for v in self.model_versions.values():
            if "externalId" in q and v.get("externalId") != q["externalId"]:
                continue
            if "name" in q and v["name"] != q["name"]:
                continue
            if "parentResourceId" in q and v["registeredModelId"] != q["parentResourceId"]:
                continue
            return 200, v
        raise _not_found(f"no model versions found for {q}")

    # --- artifacts ---------------------------------------------------------------------------
    def _ma(self, ma_id: str) -> JSON:
        self._check_id(ma_id, "model_artifact_id")
        art = self.artifacts.get(ma_id)
        if art is None or art.get("artifactType") != "model-artifact":
            raise _not_found(f"no model artifact found for id {ma_id}")
        return art

    def _store_artifact(self, body: JSON, parent: str | None, where: str) -> JSON:
        self._check_state(body, _ARTIFACT_STATES, where)
        if parent is not None and "name" in body:
            for aid, mv_id in self.artifact_parent.items():
                if mv_id == parent and self.artifacts[aid].get("name") == body["name"]:
                    raise _conflict(
                        f"artifact with name {body['name']!r} already exists "
                        f"for model version {parent}"
                    )
        self._external_id_free(body.get("externalId"))
        now = _now_ms()
        art = {
            "customProperties": {},
            "state": "UNKNOWN",
            **body,
            "id": self._new_artifact_id(),
            "createTimeSinceEpoch": now,
            "lastUpdateTimeSinceEpoch": now,
        }
        self.artifacts[art["id"]] = art
        if parent is not None:
            self.artifact_parent[art["id"]] = parent
        return art

    def _list_ma(self, query: dict[str, list[str]], _body: Any) -> tuple[int, Any]:
        items = [a for a in self.artifacts.values() if a["artifactType"] == "model-artifact"]
        return 200, self._page(query, items, set())

    def _create_ma(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        self._query(query, set())
        body = _validate_body(body, _MA_CREATE, "ModelArtifactCreate")
        if body.get("artifactType", "model-artifact") != "model-artifact":
            raise _bad("ModelArtifactCreate: artifactType must be 'model-artifact'")
        body.setdefault("artifactType", "model-artifact")
        return 201, self._store_artifact(body, None, "ModelArtifactCreate")

    def _get_ma(self, query: dict[str, list[str]], _body: Any, ma_id: str) -> tuple[int, Any]:
        self._query(query, set())
        return 200, self._ma(ma_id)

    def _patch_ma(self, query: dict[str, list[str]], body: Any, ma_id: str) -> tuple[int, Any]:
        self._query(query, set())
        art = self._ma(ma_id)
        body = _validate_body(body, _MA_UPDATE, "ModelArtifactUpdate")
        if body.get("artifactType", "model-artifact") != "model-artifact":
            raise _bad("ModelArtifactUpdate: artifactType must be 'model-artifact'")
        self._check_state(body, _ARTIFACT_STATES, "ModelArtifactUpdate")
        self._external_id_free(body.get("externalId"), ma_id)
        art.update(body)
        art["lastUpdateTimeSinceEpoch"] = _now_ms()
        return 200, art

    def _find_ma(self, query: dict[str, list[str]], _body: Any) -> tuple[int, Any]:
        q = self._query(query, {"name", "externalId", "parentResourceId"})
        if "externalId" not in q and not ("name" in q and "parentResourceId" in q):
            raise _bad(
                "invalid parameters call, supply either (name and parentResourceId), or externalId"
            )
        for aid, art in self.artifacts.items():
            if art.get("artifactType") != "model-artifact":
                continue
            if "externalId" in q and art.get("externalId") != q["externalId"]:
                continue
            if "name" in q and art.get("name") != q["name"]:
                continue
            if "parentResourceId" in q and self.artifact_parent.get(aid) != q["parentResourceId"]:
                continue
            return 200, art
        raise _not_found(f"no model artifacts found for {q}")

    def _list_mv_artifacts(
        self, query: dict[str, list[str]], _body: Any, mv_id: str
    ) -> tuple[int, Any]:
        self._mv(mv_id)
        q = {k: v for k, v in query.items() if k not in ("name", "externalId", "artifactType")}
        self._query(query, _LIST_PARAMS | {"name", "externalId", "artifactType"})
        items = self.artifacts_of(mv_id)
        if "artifactType" in query:
            items = [a for a in items if a["artifactType"] == query["artifactType"][0]]
        return 200, self._page(q, items, set())

    def _upsert_mv_artifact(
        self, query: dict[str, list[str]], body: Any, mv_id: str
    ) -> tuple[int, Any]:
        self._query(query, set())
        self._mv(mv_id)
        if not isinstance(body, dict):
            raise _bad("Artifact: request body must be a JSON object")
        artifact_type = body.get("artifactType")
        if artifact_type not in _ARTIFACT_FULL:
            raise _bad(f"Artifact: unsupported artifactType {artifact_type!r}")
        body = _validate_body(body, _ARTIFACT_FULL[artifact_type], "Artifact")
        existing_id = body.get("id")
        if existing_id is not None:
            # Associate (and update) an existing artifact.
            self._check_id(existing_id, "id")
            art = self.artifacts.get(existing_id)
            if art is None:
                raise _not_found(f"no artifact found for id {existing_id}")
            patch = {k: v for k, v in body.items() if k not in _READ_ONLY}
            art.update(patch)
            art["lastUpdateTimeSinceEpoch"] = _now_ms()
            self.artifact_parent[existing_id] = mv_id
            return 200, art
        body = {k: v for k, v in body.items() if k not in _READ_ONLY}
        return 201, self._store_artifact(body, mv_id, "Artifact")


# --- contract against the generated client ------------------------------------------------
@dataclass(frozen=True)
class GeneratedOperation:
    """One operation of the generated ``mr_openapi`` client.

    Attributes:
        name: operationId in snake_case, e.g. ``get_registered_model_versions``.
        method: HTTP method.
        path: Resource path template, e.g. ``/api/model_registry/v1/model_versions/{id}``.
        responses: Status code (``"200"``) to response model name (``"ModelVersion"``).
    """

    name: str
    method: str
    path: str
    responses: dict[str, str | None]


def generated_operations() -> dict[str, GeneratedOperation]:
    """Every operation of the generated client's API modules, read with :mod:`ast`.

    Each operation ``op`` has ``async def op(...)`` holding ``_response_types_map = {...}`` and
    ``def _op_serialize(...)`` calling ``param_serialize(method=..., resource_path=...)``.
    """
    import ast
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("mr_openapi")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("mr_openapi (shipped by the model-registry package) is not installed")
    api_dir = Path(next(iter(spec.submodule_search_locations))) / "api"
    routes: dict[str, tuple[str, str]] = {}
    responses: dict[str, dict[str, str | None]] = {}
    for module in sorted(api_dir.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            name = node.name
            if name.startswith("_") and name.endswith("_serialize"):
                for call in ast.walk(node):
                    if not (
                        isinstance(call, ast.Call)
                        and isinstance(call.func, ast.Attribute)
                        and call.func.attr == "param_serialize"
                    ):
                        continue
                    kw = {
                        k.arg: k.value.value
                        for k in call.keywords
                        if isinstance(k.value, ast.Constant)
                    }
                    routes[name[1 : -len("_serialize")]] = (kw["method"], kw["resource_path"])
            elif not name.startswith("_"):
                for assign in ast.walk(node):
                    if isinstance(assign, ast.AnnAssign) and assign.value is not None:
                        targets, value = [assign.target], assign.value
                    elif isinstance(assign, ast.Assign):
                        targets, value = assign.targets, assign.value
                    else:
                        continue
                    if any(getattr(t, "id", "") == "_response_types_map" for t in targets):
                        responses[name] = ast.literal_eval(value)
    return {
        name: GeneratedOperation(name, method, path, responses.get(name, {}))
        for name, (method, path) in routes.items()
    }


def _model_classes(annotation: Any) -> list[tuple[str, type]]:
    """The generated models inside a field annotation: ``[("list"|"dict"|"one", cls)]``."""
    import types
    from typing import Union, get_args, get_origin

    from pydantic import BaseModel

    union = get_origin(annotation) in (Union, types.UnionType)
    found: list[tuple[str, type]] = []
    for arg in get_args(annotation) if union else (annotation,):
        origin = get_origin(arg)
        if origin is list:
            inner, kind = get_args(arg)[0], "list"
        elif origin is dict:
            inner, kind = get_args(arg)[1], "dict"
        else:
            inner, kind = arg, "one"
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            found.append((kind, inner))
    return found


def undeclared_fields(model: type, data: Any, where: str = "$") -> list[str]:
    """Fields of ``data`` (JSON) that the generated ``model`` does not declare, recursively.

    ``oneOf`` wrappers (``Artifact``, ``MetadataValue``) are resolved to the concrete model
    their discriminator picks.
    """
    if not isinstance(data, dict):
        return [f"{where}: expected an object, got {type(data).__name__}"]
    fields: dict[str, Any] = model.model_fields  # type: ignore[attr-defined]
    if "actual_instance" in fields:
        instance = model.from_dict(data).actual_instance  # type: ignore[attr-defined]
        return undeclared_fields(type(instance), data, where)
    declared = {f.alias or name: f for name, f in fields.items()}
    problems = [
        f"{where}.{key}: not declared by {model.__name__}" for key in data if key not in declared
    ]
    for key, info in declared.items():
        value = data.get(key)
        if value is None:
            continue
        for kind, sub in _model_classes(info.annotation):
            if kind == "list" and isinstance(value, list):
                for i, item in enumerate(value):
                    problems += undeclared_fields(sub, item, f"{where}.{key}[{i}]")
            elif kind == "dict" and isinstance(value, dict):
                for k, item in value.items():
                    problems += undeclared_fields(sub, item, f"{where}.{key}[{k!r}]")
            elif kind == "one":
                problems += undeclared_fields(sub, value, f"{where}.{key}")
    return problems


def response_problems(
    operations: dict[str, GeneratedOperation], recorded: RecordedRequest
) -> list[str]:
    """What is wrong with one recorded answer according to the generated client.

    The answer must parse with the response model the spec names for its status (``Error``
    for statuses the spec does not list) and use only fields that model declares.
    """
    import mr_openapi.models

    where = f"{recorded.method} {recorded.path} -> {recorded.status}"
    op = operations.get(recorded.operation)
    if op is None:
        return [f"{where}: operation {recorded.operation!r} is not in the generated client"]
    type_name = op.responses.get(str(recorded.status))
    if type_name is None:
        if recorded.status < 400:
            return [f"{where}: the spec lists no {recorded.status} answer for {op.name}"]
        type_name = "Error"
    model = getattr(mr_openapi.models, type_name)
    try:
        parsed = model.from_dict(recorded.response)
    except (ValueError, TypeError, KeyError) as e:
        return [f"{where}: not a valid {type_name}: {e}"]
    if parsed is None:
        return [f"{where}: empty {type_name}"]
    return [f"{where}: {p}" for p in undeclared_fields(model, recorded.response)]


@pytest.fixture
def fake_model_registry() -> Iterator[FakeModelRegistry]:
    """A started :class:`FakeModelRegistry` speaking ``/api/model_registry/v1``."""
    fake = FakeModelRegistry().start()
    try:
        yield fake
    finally:
        fake.stop()
