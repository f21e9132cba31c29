"""An in-process double of the Kubeflow Pipelines API server's v2beta1 REST API.

It serves the subset of ``/apis/v2beta1`` that ``kfp.Client`` 2.17 (through ``kfp_server_api``)
calls for uploading, running and scheduling pipelines:

* ``GET  /apis/v2beta1/healthz``
* ``POST /apis/v2beta1/pipelines/upload`` (multipart ``uploadfile``; query ``name``,
  ``display_name``, ``description``, ``namespace``, ``tags``)
* ``POST /apis/v2beta1/pipelines/upload_version`` (multipart; query ``name``, ``display_name``,
  ``pipelineid``, ``description``, ``tags``)
* ``GET  /apis/v2beta1/pipelines`` (``filter``, ``page_size``, ``page_token``, ``sort_by``,
  ``namespace``), ``GET /apis/v2beta1/pipelines/{pipeline_id}``,
  ``GET /apis/v2beta1/pipelines/names/{name}``
* ``GET  /apis/v2beta1/pipelines/{pipeline_id}/versions``,
  ``GET|DELETE /apis/v2beta1/pipelines/{pipeline_id}/versions/{pipeline_version_id}``,
  ``DELETE /apis/v2beta1/pipelines/{pipeline_id}`` (``cascade``; without it only when empty)
* ``GET|POST /apis/v2beta1/experiments``, ``GET /apis/v2beta1/experiments/{experiment_id}``
* ``POST /apis/v2beta1/runs``, ``GET /apis/v2beta1/runs/{run_id}``
* ``GET|POST /apis/v2beta1/recurringruns``, ``GET|DELETE /apis/v2beta1/recurringruns/{id}``,
  ``POST /apis/v2beta1/recurringruns/{id}:enable`` and ``:disable``

Contract details it follows (from ``kfp_server_api/models`` and the Go API server): JSON uses
proto field names (snake_case; ``ListRecurringRunsResponse`` really is ``recurringRuns``, the
proto field's own name); empty fields are left out, so an empty list answers ``{}``; int64
fields (``max_concurrency``, ``interval_second``) are strings; enums are names (``ENABLE``,
``ENABLED``, ``SUCCEEDED``). Errors of the gateway routes are ``google.rpc.Status``
(``{"code", "message", "details"}``), those of the upload routes ``{"error_message",
"error_details"}``. ``filter`` is the JSON ``Filter`` proto; ``kfp.Client`` sends the
operation as its *number* (``"operation": 1`` for EQUALS) and the value as ``stringValue``.

Bodies are validated like the server's protojson decoding (``DiscardUnknown: false``): an
unknown field or a value of the wrong JSON type answers 400. Runs and recurring runs are
checked like ``V2Spec.validatePipelineJobInputs``: every root parameter without a default must
be given, none may be extra, and each value's JSON type must match its ``parameterType``
(STRING: string, NUMBER_INTEGER/NUMBER_DOUBLE: number, BOOLEAN: bool, LIST: list, STRUCT:
object). Recurring runs need ``max_concurrency`` 1-10 and a cron ``robfig/cron`` v1 parses
(5 or 6 fields, seconds first). Name clashes answer 409.

Scripting a run: :meth:`FakeKFP.advance` moves tasks (and the run) to new states now;
:meth:`FakeKFP.script` queues :class:`RunStep` s played one per ``GET`` of the run.
``token`` makes every request require ``Authorization: Bearer <token>`` (401 otherwise);
``fail(operation, status)`` makes the next call of an operation fail. ``requests`` records
every request.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import HTTP
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

from tests.doubles.http import serve, stop_serving

JSON = dict[str, Any]
PREFIX = "/apis/v2beta1"

# google.rpc codes the gateway maps to HTTP statuses
_GRPC_CODE = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13, 503: 14}
_FILTER_OPERATIONS = {
    1: "EQUALS",
    2: "NOT_EQUALS",
    3: "GREATER_THAN",
    5: "GREATER_THAN_EQUALS",
    6: "LESS_THAN",
    7: "LESS_THAN_EQUALS",
    8: "IN",
    9: "IS_SUBSTRING",
}
_RUNTIME_STATES = (
    "RUNTIME_STATE_UNSPECIFIED",
    "PENDING",
    "RUNNING",
    "SUCCEEDED",
    "SKIPPED",
    "FAILED",
    "CANCELING",
    "CANCELED",
    "PAUSED",
)
_TERMINAL = {"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"}
_INT64_RE = re.compile(r"^-?[0-9]+$")
_TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_SPEC_SUFFIXES = (".yaml", ".yml", ".json")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ApiError(Exception):
    """An error answer: HTTP status and message (``upload`` selects the upload server's shape)."""

    def __init__(self, status: int, message: str, *, upload: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.upload = upload

    def body(self) -> JSON:
        """The error body in the server's wire form."""
        if self.upload:
            return {"error_message": self.message, "error_details": self.message}
        return {"code": _GRPC_CODE.get(self.status, 2), "message": self.message, "details": []}


def _bad(message: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, message)


def _not_found(message: str) -> ApiError:
    return ApiError(HTTPStatus.NOT_FOUND, message)


# --- body schemas: field name -> validator(value, where) -------------------------------------
Validator = Callable[[Any, str], None]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def _string(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise _bad(f"proto: {where}: invalid value for string field: {_kind(value)}")


def _boolean(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        raise _bad(f"proto: {where}: invalid value for bool field: {_kind(value)}")


def _int64(value: Any, where: str) -> None:
    ok = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and _INT64_RE.match(value)
    )
    if not ok:
        raise _bad(f"proto: {where}: invalid value for int64 field: {value!r}")


def _timestamp(value: Any, where: str) -> None:
    if not isinstance(value, str) or not _TIMESTAMP_RE.match(value):
        raise _bad(f"proto: {where}: invalid google.protobuf.Timestamp value {value!r}")


def _struct(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise _bad(f"proto: {where}: invalid value for google.protobuf.Struct: {_kind(value)}")


def _any(value: Any, where: str) -> None:
    return


def _enum(*names: str) -> Validator:
    def check(value: Any, where: str) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
            return
        if value not in names:
            raise _bad(f"proto: {where}: invalid value for enum field: {value!r}")

    return check


def _list_of(item: Validator) -> Validator:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise _bad(f"proto: {where}: invalid value for repeated field: {_kind(value)}")
        for i, element in enumerate(value):
            item(element, f"{where}[{i}]")

    return check


def _message(name: str, schema: dict[str, Validator]) -> Validator:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise _bad(f"proto: {where}: expected a {name} object, got {_kind(value)}")
        for key, element in value.items():
            validator = schema.get(key)
            if validator is None:
                raise _bad(f'proto: {where}: unknown field "{key}" in {name}')
            if element is not None:
                validator(element, f"{where}.{key}")

    return check


_STATUS = _message("google.rpc.Status", {"code": _int64, "message": _string, "details": _any})
_REFERENCE = _message(
    "PipelineVersionReference", {"pipeline_id": _string, "pipeline_version_id": _string}
)
_RUNTIME_CONFIG = _message("RuntimeConfig", {"parameters": _struct, "pipeline_root": _string})
_RUNTIME_STATE = _enum(*_RUNTIME_STATES)
_STORAGE_STATE = _enum("STORAGE_STATE_UNSPECIFIED", "AVAILABLE", "ARCHIVED")
_EXPERIMENT = _message(
    "Experiment",
    {
        "experiment_id": _string,
        "display_name": _string,
        "description": _string,
        "created_at": _timestamp,
        "namespace": _string,
        "storage_state": _STORAGE_STATE,
        "last_run_created_at": _timestamp,
    },
)
_RUN = _message(
    "Run",
    {
        "experiment_id": _string,
        "run_id": _string,
        "display_name": _string,
        "storage_state": _STORAGE_STATE,
        "description": _string,
        "pipeline_version_id": _string,
        "pipeline_spec": _struct,
        "pipeline_version_reference": _REFERENCE,
        "runtime_config": _RUNTIME_CONFIG,
        "service_account": _string,
        "created_at": _timestamp,
        "scheduled_at": _timestamp,
        "finished_at": _timestamp,
        "state": _RUNTIME_STATE,
        "error": _STATUS,
        "run_details": _struct,
        "recurring_run_id": _string,
        "state_history": _list_of(_struct),
        "plugins_input": _struct,
        "plugins_output": _struct,
    },
)
_SCHEDULE_TIMES = {"start_time": _timestamp, "end_time": _timestamp}
_TRIGGER = _message(
    "Trigger",
    {
        "cron_schedule": _message("CronSchedule", {**_SCHEDULE_TIMES, "cron": _string}),
        "periodic_schedule": _message(
            "PeriodicSchedule", {**_SCHEDULE_TIMES, "interval_second": _int64}
        ),
    },
)
_RECURRING_RUN = _message(
    "RecurringRun",
    {
        "recurring_run_id": _string,
        "display_name": _string,
        "description": _string,
        "pipeline_version_id": _string,
        "pipeline_spec": _struct,
        "pipeline_version_reference": _REFERENCE,
        "runtime_config": _RUNTIME_CONFIG,
        "service_account": _string,
        "max_concurrency": _int64,
        "trigger": _TRIGGER,
        "mode": _enum("MODE_UNSPECIFIED", "ENABLE", "DISABLE"),
        "created_at": _timestamp,
        "updated_at": _timestamp,
        "status": _enum("STATUS_UNSPECIFIED", "ENABLED", "DISABLED"),
        "error": _STATUS,
        "no_catchup": _boolean,
        "namespace": _string,
        "experiment_id": _string,
        "plugins_input": _struct,
    },
)

# --- robfig/cron v1 (cron.Parse): 5 or 6 fields, seconds first -------------------------------
_CRON_BOUNDS = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_CRON_NAMES = (
    {},
    {},
    {},
    {},
    {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)},
    {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())},
)
_CRON_DESCRIPTORS = {
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
}


def robfig_cron_error(spec: str) -> str | None:
    """Why ``robfig/cron`` v1 ``cron.Parse`` would reject ``spec``, or None when it accepts it."""
    if spec.startswith("@"):
        if spec in _CRON_DESCRIPTORS or spec.startswith("@every "):
            return None
        return f"Unrecognized descriptor: {spec}"
    fields = spec.split()
    if len(fields) not in (5, 6):
        return f"Expected 5 or 6 fields, found {len(fields)}: {spec}"
    for text, (low, high), names in zip(fields, _CRON_BOUNDS, _CRON_NAMES, strict=False):
        for expr in filter(None, text.split(",")):
            base, _, step = expr.partition("/")
            if step and (not step.isdigit() or int(step) < 1):
                return f"Failed to parse int from {step}"
            if base in ("*", "?"):
                continue
            bounds = base.split("-")
            if len(bounds) > 2:
                return f"Too many hyphens: {expr}"
            values = []
            for token in bounds:
                if token.lower() in names:
                    values.append(names[token.lower()])
                elif token.isdigit():
                    values.append(int(token))
                else:
                    return f"Failed to parse int from {token}"
            if values[0] < low:
                return f"Beginning of range ({values[0]}) below minimum ({low}): {expr}"
            if values[-1] > high:
                return f"End of range ({values[-1]}) above maximum ({high}): {expr}"
            if values[0] > values[-1]:
                return f"Beginning of range ({values[0]}) beyond end of range ({values[-1]})"
    return None


# --- pipeline specs ----------------------------------------------------------------------------
def _parse_spec(filename: str, data: bytes) -> JSON:
    """The pipeline spec document of an uploaded package, checked like ``NewV2SpecTemplate``."""
    if not filename.endswith(_SPEC_SUFFIXES):
        raise ApiError(400, "Failed to read a pipeline spec file", upload=True)
    try:
        docs = [d for d in yaml.load_all(data, Loader=_YAML_LOADER) if d is not None]
    except yaml.YAMLError as e:
        raise ApiError(
            400, f"Invalid pipeline spec: unable to decode yaml document: {e}", upload=True
        ) from e
    specs = [d for d in docs if isinstance(d, dict) and "pipelineInfo" in d and "root" in d]
    if len(specs) != 1:
        raise ApiError(
            400,
            "Invalid pipeline spec: "
            + ("no pipeline spec is provided" if not specs else "multiple pipeline specs provided"),
            upload=True,
        )
    spec = specs[0]
    if spec.get("schemaVersion") != "2.1.0":
        raise ApiError(
            400,
            "Invalid pipeline spec: KFP only supports schema version 2.1.0, but the pipeline spec "
            f"has version {spec.get('schemaVersion')}",
            upload=True,
        )
    if not (spec.get("pipelineInfo") or {}).get("name"):
        raise ApiError(
            400, "Invalid pipeline spec: invalid v2 pipeline spec: name is empty", upload=True
        )
    return spec


def validate_job_inputs(spec: JSON, parameters: JSON | None) -> None:
    """``V2Spec.validatePipelineJobInputs``: required, extra and wrongly typed parameters."""
    declared: JSON = ((spec.get("root") or {}).get("inputDefinitions") or {}).get(
        "parameters"
    ) or {}
    given = parameters or {}
    prefix = "invalid pipeline job inputs: "
    for name in sorted(declared):
        definition = declared[name]
        if name not in given:
            if not definition.get("isOptional") and "defaultValue" not in definition:
                raise _bad(
                    f"{prefix}parameter {name} is not optional, yet has neither default value "
                    "nor user provided value"
                )
            continue
        value, kind = given[name], definition.get("parameterType", "")
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        checks = {
            "NUMBER_DOUBLE": (is_number, "double or integer", "number"),
            "NUMBER_INTEGER": (is_number, "double or integer", "number"),
            "STRING": (isinstance(value, str), "string", "string"),
            "BOOLEAN": (isinstance(value, bool), "bool", "bool"),
            "LIST": (isinstance(value, list), "list", "list"),
            "STRUCT": (isinstance(value, dict), "struct", "struct"),
        }
        if kind not in checks:
            raise _bad(f"{prefix}input parameter {name} requires type unknown")
        ok, wanted, value_kind = checks[kind]
        if not ok:
            raise _bad(
                f"{prefix}input parameter {name} requires type {wanted}, but the input "
                f"parameter is not of {value_kind} value type"
            )
    extra = sorted(set(given) - set(declared))
    if extra:
        raise _bad(
            f"{prefix}parameter(s) provided are not required by pipeline: {', '.join(extra)}"
        )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_id() -> str:
    return str(uuid.uuid4())


# --- scripting --------------------------------------------------------------------------------
#: A task change: ``(display_name, state)`` or ``(display_name, state, error message)``.
TaskChange = tuple[str, str] | tuple[str, str, str]


@dataclass(frozen=True)
class RunStep:
    """One scripted step of a run: task changes, then optionally the run's final state."""

    tasks: Sequence[TaskChange] = ()
    final: str | None = None
    error: str | None = None


@dataclass
class _Failure:
    status: int
    message: str
    times: int


@dataclass
class RecordedRequest:
    """One request the double received.

    ``body`` is the decoded JSON, or for multipart uploads ``{"uploadfile": <file name>}``.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    operation: str
    authorization: str | None


@dataclass
class FakeKFP:
    """KFP v2beta1 REST double; start with :meth:`start` or the ``fake_kfp`` fixture.

    Attributes:
        token: When set, every request must carry ``Authorization: Bearer <token>``.
        multi_user: What healthz reports; multi-user servers want a namespace on experiments
            and recurring-run listings, single-user ones refuse one there.
        pipelines: Stored pipelines by id, in wire form.
        versions: Stored pipeline versions by id, in wire form (with ``pipeline_spec``).
        experiments: Stored experiments by id.
        runs: Stored runs by id (``run_details.task_details`` as scripted).
        recurring_runs: Stored recurring runs by id.
        requests: Every request received, in order.
    """

    token: str | None = None
    multi_user: bool = False
    #: What the UI proxy's healthz answers as ``apiServerTagName`` (None: not at all, as the
    #: API server's own v2beta1 healthz)
    tag_name: str | None = None
    pipelines: dict[str, JSON] = field(default_factory=dict)
    versions: dict[str, JSON] = field(default_factory=dict)
    experiments: dict[str, JSON] = field(default_factory=dict)
    runs: dict[str, JSON] = field(default_factory=dict)
    recurring_runs: dict[str, JSON] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    _order: dict[str, int] = field(default_factory=dict)
    _scripts: dict[str, list[RunStep]] = field(default_factory=dict)
    _failures: dict[str, _Failure] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (what ``kfp.Client(host=...)`` takes)."""
        if self._server is None:
            raise RuntimeError("FakeKFP is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeKFP:
        """Serve on 127.0.0.1 on a free port in a daemon thread."""
        self._server, self._thread = serve(self, name="FakeKFP", poll_interval=0.05)
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        stop_serving(self._server, self._thread)

    # --- failure injection and scripting ------------------------------------------------------
    def fail(
        self,
        operation: str,
        *,
        status: int = 503,
        message: str = "injected failure",
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``operation`` (e.g. ``get_run``) answer ``status``."""
        with self._lock:
            self._failures[operation] = _Failure(status, message, times)

    def advance(
        self,
        run_id: str,
        tasks: Iterable[TaskChange] = (),
        *,
        final: str | None = None,
        error: str | None = None,
    ) -> None:
        """Move tasks of a run to new states now, and the run to ``final`` if given.

        Args:
            run_id: The run.
            tasks: ``(display_name, state)`` or ``(display_name, state, error message)``; a
                new display name adds a task.
            final: The run's new state (``SUCCEEDED``, ``FAILED``...); without it a pending
                run becomes ``RUNNING`` once a task moves.
            error: The run's error message (``run.error.message``).
        """
        with self._lock:
            run = self.runs[run_id]
            details = run.setdefault("run_details", {})
            task_list: list[JSON] = details.setdefault("task_details", [])
            now = _now()
            for change in tasks:
                name, state = change[0], change[1]
                if state not in _RUNTIME_STATES:
                    raise ValueError(f"unknown task state {state!r}")
                task = next((t for t in task_list if t["display_name"] == name), None)
                if task is None:
                    task = {
                        "run_id": run_id,
                        "task_id": _new_id(),
                        "display_name": name,
                        "create_time": now,
                        "start_time": now,
                        "state_history": [],
                    }
                    task_list.append(task)
                task["state"] = state
                task["state_history"].append({"update_time": now, "state": state})
                if state in _TERMINAL:
                    task["end_time"] = now
                if len(change) > 2:
                    task["error"] = {"code": 2, "message": change[2]}  # type: ignore[misc]
            if final is not None:
                if final not in _RUNTIME_STATES:
                    raise ValueError(f"unknown run state {final!r}")
                self._set_run_state(run, final, now)
            elif run["state"] == "PENDING" and task_list:
                self._set_run_state(run, "RUNNING", now)
            if error is not None:
                run["error"] = {"code": 2, "message": error}

    def script(self, run_id: str, steps: Iterable[RunStep]) -> None:
        """Queue steps played one per ``GET`` of the run, before the answer is built."""
        with self._lock:
            if run_id not in self.runs:
                raise KeyError(run_id)
            self._scripts.setdefault(run_id, []).extend(steps)

    @staticmethod
    def _set_run_state(run: JSON, state: str, now: str) -> None:
        run["state"] = state
        run.setdefault("state_history", []).append({"update_time": now, "state": state})
        if state in _TERMINAL:
            run["finished_at"] = now

    # --- helpers for assertions --------------------------------------------------------------
    def pipeline_named(self, name: str) -> JSON | None:
        """The stored pipeline whose display name is ``name``."""
        return next((p for p in self.pipelines.values() if p["display_name"] == name), None)

    def versions_of(self, pipeline_id: str) -> list[JSON]:
        """Versions of a pipeline, oldest first."""
        items = [v for v in self.versions.values() if v["pipeline_id"] == pipeline_id]
        return sorted(items, key=lambda v: self._order[v["pipeline_version_id"]])

    def calls(self, operation: str) -> list[RecordedRequest]:
        """The recorded requests of one operation (``create_run``, ``upload_pipeline``...)."""
        return [r for r in self.requests if r.operation == operation]

    # --- request dispatch --------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: Any, raw_body: bytes) -> tuple[int, Any]:
        """Answer one request: ``(status, JSON body)``; a ``str`` body is sent as plain text."""
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query, keep_blank_values=True)
        path = parts.path
        if not path.startswith(PREFIX + "/"):
            return 404, "404 page not found\n"
        route = self._route(method, path[len(PREFIX) :])
        content_type = headers.get("Content-Type") or ""
        body: Any = None
        upload: tuple[str, bytes] | None = None
        recorded: Any = None
        if content_type.startswith("multipart/form-data"):
            upload = _multipart_file(content_type, raw_body)
            recorded = {"uploadfile": upload[0] if upload else None}
        elif raw_body:
            try:
                body = recorded = json.loads(raw_body)
            except ValueError:
                body = recorded = raw_body.decode(errors="replace")
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    method,
                    path,
                    query,
                    recorded,
                    route[0] if route else "",
                    headers.get("Authorization"),
                )
            )
        if route is None:
            err = _not_found("Not Found")
            return err.status, err.body()
        operation, handler, args = route
        is_upload = operation.startswith("upload_")
        if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
            err = ApiError(
                HTTPStatus.UNAUTHORIZED,
                "Unauthenticated: request has no valid bearer token",
                upload=is_upload,
            )
            return err.status, err.body()
        with self._lock:
            failure = self._failures.get(operation)
            if failure is not None:
                failure.times -= 1
                if failure.times <= 0:
                    del self._failures[operation]
                err = ApiError(failure.status, failure.message, upload=is_upload)
                return err.status, err.body()
            try:
                if is_upload:
                    if upload is None:
                        raise ApiError(400, "Failed to read pipeline from file", upload=True)
                    return handler(query, upload, *args)
                if isinstance(body, str):
                    raise _bad("proto: syntax error: request body is not JSON")
                if body is not None and not content_type.startswith("application/json"):
                    raise _bad(f"unsupported Content-Type {content_type!r}")
                return handler(query, body, *args)
            except ApiError as err:
                return err.status, err.body()

    def _route(
        self, method: str, path: str
    ) -> tuple[str, Callable[..., tuple[int, Any]], tuple[str, ...]] | None:
        i = r"([^/:]+)"
        table: list[tuple[str, str, str, Callable[..., tuple[int, Any]]]] = [
            ("GET", "/healthz", "get_healthz", self._healthz),
            ("POST", "/pipelines/upload", "upload_pipeline", self._upload_pipeline),
            ("POST", "/pipelines/upload_version", "upload_pipeline_version", self._upload_version),
            ("GET", "/pipelines", "list_pipelines", self._list_pipelines),
            ("GET", f"/pipelines/names/{i}", "get_pipeline_by_name", self._get_pipeline_by_name),
            ("GET", f"/pipelines/{i}", "get_pipeline", self._get_pipeline),
            ("GET", f"/pipelines/{i}/versions", "list_pipeline_versions", self._list_versions),
            ("GET", f"/pipelines/{i}/versions/{i}", "get_pipeline_version", self._get_version),
            ("DELETE", f"/pipelines/{i}", "delete_pipeline", self._delete_pipeline),
            (
                "DELETE",
                f"/pipelines/{i}/versions/{i}",
                "delete_pipeline_version",
                self._delete_version,
            ),
            ("GET", "/experiments", "list_experiments", self._list_experiments),
            ("POST", "/experiments", "create_experiment", self._create_experiment),
            ("GET", f"/experiments/{i}", "get_experiment", self._get_experiment),
            ("POST", "/runs", "create_run", self._create_run),
            ("GET", f"/runs/{i}", "get_run", self._get_run),
            ("GET", "/recurringruns", "list_recurring_runs", self._list_recurring),
            ("POST", "/recurringruns", "create_recurring_run", self._create_recurring),
            ("POST", f"/recurringruns/{i}:enable", "enable_recurring_run", self._enable),
            ("POST", f"/recurringruns/{i}:disable", "disable_recurring_run", self._disable),
            ("GET", f"/recurringruns/{i}", "get_recurring_run", self._get_recurring),
            ("DELETE", f"/recurringruns/{i}", "delete_recurring_run", self._delete_recurring),
        ]
        for verb, pattern, operation, handler in table:
            match = re.fullmatch(pattern, path)
            if match and verb == method:
                return operation, handler, tuple(unquote(g) for g in match.groups())
        return None

    # --- shared pieces -----------------------------------------------------------------------
    @staticmethod
    def _query(query: dict[str, list[str]], allowed: set[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, values in query.items():
            if key not in allowed:
                raise _bad(f"unknown query parameter {key!r}")
            if len(values) != 1:
                raise _bad(f"query parameter {key!r} given {len(values)} times")
            out[key] = values[0]
        return out

    def _store(self, table: dict[str, JSON], key: str, item: JSON) -> JSON:
        table[key] = item
        self._order[key] = len(self._order)
        return item

    def _page(
        self, q: dict[str, str], items: list[JSON], sortable: dict[str, str], id_key: str
    ) -> tuple[list[JSON], JSON]:
        """Sort by ``sort_by``, then cut the page; returns the page and its list fields."""
        sort_by = q.get("sort_by", "").strip()
        if sort_by:
            key, _, direction = sort_by.partition(" ")
            if key not in sortable or direction not in ("", "asc", "desc"):
                raise _bad(f"Invalid sorting field: {sort_by!r}")
            wire = sortable[key]
            items = sorted(items, key=lambda x: (str(x.get(wire, "")), self._order[x[id_key]]))
            if direction == "desc":
                items.reverse()
        else:
            items = sorted(items, key=lambda x: self._order[x[id_key]])
        try:
            size = int(q.get("page_size") or 20)
            start = int(q.get("page_token") or 0)
        except ValueError as e:
            raise _bad(f"Invalid page size or token: {e}") from e
        if size < 1 or start < 0:
            raise _bad("page_size must be positive")
        page = items[start : start + size]
        fields: JSON = {}
        if items:
            fields["total_size"] = len(items)
        if start + size < len(items):
            fields["next_page_token"] = str(start + size)
        return page, fields

    @staticmethod
    def _filter(raw: str | None, items: list[JSON], keys: dict[str, str]) -> list[JSON]:
        """Apply a JSON ``Filter`` (``{"predicates": [...]}``) over ``keys`` (api key -> wire)."""
        if not raw:
            return items
        try:
            spec = json.loads(raw)
        except ValueError as e:
            raise _bad(f"Invalid filter: not JSON: {e}") from e
        if not isinstance(spec, dict) or set(spec) - {"predicates"}:
            raise _bad(f"Invalid filter {raw!r}: only 'predicates' is supported")
        for predicate in spec.get("predicates") or []:
            if not isinstance(predicate, dict):
                raise _bad(f"Invalid filter predicate {predicate!r}")
            operation = predicate.get("operation")
            operation = _FILTER_OPERATIONS.get(operation, operation)  # number or name
            if operation not in _FILTER_OPERATIONS.values():
                raise _bad(f"Invalid filter operation {predicate.get('operation')!r}")
            key = predicate.get("key")
            if key not in keys:
                raise _bad(f"Invalid filter key {key!r}; supported: {sorted(keys)}")
            values = {k: v for k, v in predicate.items() if k not in ("operation", "key")}
            known = {"string_value", "stringValue", "string_values", "stringValues"}
            if len(values) != 1 or not set(values) <= known:
                raise _bad(f"Invalid filter predicate value {values!r} for key {key!r}")
            ((kind, value),) = values.items()
            wire = keys[key]
            if kind in ("string_values", "stringValues"):
                options = (value or {}).get("values") or []
                if operation != "IN":
                    raise _bad("string_values needs the IN operation")
                items = [x for x in items if x.get(wire, "") in options]
                continue
            if not isinstance(value, str):
                raise _bad(f"Invalid filter value {value!r}")
            tests: dict[str, Callable[[str], bool]] = {
                "EQUALS": lambda v, value=value: v == value,
                "NOT_EQUALS": lambda v, value=value: v != value,
                "IS_SUBSTRING": lambda v, value=value: value in v,
                "GREATER_THAN": lambda v, value=value: v > value,
                "GREATER_THAN_EQUALS": lambda v, value=value: v >= value,
                "LESS_THAN": lambda v, value=value: v < value,
                "LESS_THAN_EQUALS": lambda v, value=value: v <= value,
            }
            if operation not in tests:
                raise _bad(f"operation {operation} needs string_values")
            items = [x for x in items if tests[operation](str(x.get(wire, "")))]
        return items

    def _pipeline(self, pipeline_id: str) -> JSON:
        pipeline = self.pipelines.get(pipeline_id)
        if pipeline is None:
            raise _not_found(f"Pipeline {pipeline_id} not found")
        return pipeline

    def _experiment(self, experiment_id: str) -> JSON:
        experiment = self.experiments.get(experiment_id)
        if experiment is None:
            raise _not_found(f"Experiment {experiment_id} not found")
        return experiment

    def _recurring(self, recurring_run_id: str) -> JSON:
        recurring = self.recurring_runs.get(recurring_run_id)
        if recurring is None:
            raise _not_found(f"RecurringRun {recurring_run_id} not found")
        return recurring

    def _resolve_source(self, body: JSON, what: str) -> tuple[JSON, JSON | None]:
        """The pipeline spec a run/recurring run uses, and its version reference."""
        reference = body.get("pipeline_version_reference")
        if body.get("pipeline_spec") is not None:
            if reference:
                raise _bad(f"{what}: pipeline_spec and pipeline_version_reference are exclusive")
            return body["pipeline_spec"], None
        if not reference or not reference.get("pipeline_id"):
            raise _bad(
                f"{what}: a pipeline spec or a pipeline version reference with a pipeline id "
                "is required"
            )
        self._pipeline(reference["pipeline_id"])
        version_id = reference.get("pipeline_version_id")
        if version_id:
            version = self.versions.get(version_id)
            if version is None or version["pipeline_id"] != reference["pipeline_id"]:
                raise _not_found(
                    f"{what}: pipeline version {version_id} of pipeline "
                    f"{reference['pipeline_id']} not found"
                )
        else:
            version = self.versions_of(reference["pipeline_id"])[-1]
        return version["pipeline_spec"], {
            "pipeline_id": version["pipeline_id"],
            "pipeline_version_id": version["pipeline_version_id"],
        }

    def _experiment_for(self, experiment_id: str | None, what: str) -> JSON:
        if experiment_id:
            experiment = self.experiments.get(experiment_id)
            if experiment is None:
                raise _not_found(f"{what}: experiment {experiment_id} not found")
            return experiment
        default = next(
            (e for e in self.experiments.values() if e["display_name"] == "Default"), None
        )
        if default is None:
            default = self._new_experiment({"display_name": "Default"})
        return default

    # --- healthz -----------------------------------------------------------------------------
    def _healthz(self, query: dict[str, list[str]], _body: Any) -> tuple[int, Any]:
        self._query(query, set())
        # backend/api/v2beta1/healthz.proto declares multi_user only; the UI's proxy
        # (frontend/server/handlers/healthz.ts) adds apiServerTagName
        body: dict[str, Any] = {"multi_user": self.multi_user, "pipeline_store": "database"}
        if self.tag_name is not None:
            body["apiServerTagName"] = self.tag_name
        return 200, body

    # --- pipelines ---------------------------------------------------------------------------
    def _version(
        self, pipeline_id: str, name: str, display: str, q: dict[str, str], spec: JSON
    ) -> JSON:
        version_id = _new_id()
        version: JSON = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": version_id,
            "display_name": display,
            "name": name,
            "created_at": _now(),
            "pipeline_spec": spec,
        }
        if q.get("description"):
            version["description"] = q["description"]
        if q.get("code_source_url"):
            version["code_source_url"] = q["code_source_url"]
        return self._store(self.versions, version_id, version)

    def _upload_pipeline(
        self, query: dict[str, list[str]], upload: tuple[str, bytes]
    ) -> tuple[int, Any]:
        try:
            q = self._query(
                query,
                {"name", "display_name", "description", "namespace", "tags", "code_source_url"},
            )
        except ApiError as e:
            raise ApiError(400, e.message, upload=True) from e
        filename, data = upload
        spec = _parse_spec(filename, data)
        name = q.get("name") or q.get("display_name") or filename
        display = q.get("display_name") or name
        namespace = q.get("namespace", "")
        if self.multi_user is False and namespace:
            namespace = ""  # single-user servers store shared pipelines
        clash = any(
            p["name"] == name and p.get("namespace", "") == namespace
            for p in self.pipelines.values()
        )
        if clash:
            raise ApiError(409, "Failed to create a pipeline and a pipeline version", upload=True)
        pipeline_id = _new_id()
        pipeline: JSON = {
            "pipeline_id": pipeline_id,
            "display_name": display,
            "name": name,
            "created_at": _now(),
        }
        if q.get("description"):
            pipeline["description"] = q["description"]
        if namespace:
            pipeline["namespace"] = namespace
        self._store(self.pipelines, pipeline_id, pipeline)
        self._version(pipeline_id, name, display, q, spec)
        return 200, pipeline

    def _upload_version(
        self, query: dict[str, list[str]], upload: tuple[str, bytes]
    ) -> tuple[int, Any]:
        try:
            q = self._query(
                query,
                {"name", "display_name", "pipelineid", "description", "tags", "code_source_url"},
            )
        except ApiError as e:
            raise ApiError(400, e.message, upload=True) from e
        filename, data = upload
        spec = _parse_spec(filename, data)
        pipeline_id = q.get("pipelineid", "")
        if not pipeline_id:
            raise ApiError(400, "Failed to create a pipeline version", upload=True)
        if pipeline_id not in self.pipelines:
            raise ApiError(400, "Failed to create a pipeline version", upload=True)
        name = q.get("name") or q.get("display_name") or filename
        display = q.get("display_name") or name
        if any(v["name"] == name for v in self.versions_of(pipeline_id)):
            raise ApiError(409, "Failed to create a pipeline version", upload=True)
        return 200, self._version(pipeline_id, name, display, q, spec)

    def _list_pipelines(self, query: dict[str, list[str]], _body: Any) -> tuple[int, Any]:
        q = self._query(query, {"namespace", "page_token", "page_size", "sort_by", "filter"})
        namespace = q.get("namespace", "")
        items = [p for p in self.pipelines.values() if p.get("namespace", "") in ("", namespace)]
        keys = {"display_name": "display_name", "name": "name", "pipeline_id": "pipeline_id"}
        items = self._filter(q.get("filter"), items, {**keys, "created_at": "created_at"})
        page, fields = self._page(q, items, {**keys, "created_at": "created_at"}, "pipeline_id")
        return 200, ({"pipelines": page} if page else {}) | fields

    def _get_pipeline(self, query: dict[str, list[str]], _body: Any, pid: str) -> tuple[int, Any]:
        self._query(query, set())
        return 200, self._pipeline(pid)

    def _get_pipeline_by_name(
        self, query: dict[str, list[str]], _body: Any, name: str
    ) -> tuple[int, Any]:
        q = self._query(query, {"namespace"})
        for pipeline in self.pipelines.values():
            if pipeline["name"] == name and pipeline.get("namespace", "") == q.get("namespace", ""):
                return 200, pipeline
        raise _not_found(f"Pipeline {name} not found")

    def _list_versions(self, query: dict[str, list[str]], _body: Any, pid: str) -> tuple[int, Any]:
        q = self._query(query, {"page_token", "page_size", "sort_by", "filter"})
        self._pipeline(pid)
        keys = {"display_name": "display_name", "name": "name", "created_at": "created_at"}
        items = self._filter(q.get("filter"), self.versions_of(pid), keys)
        page, fields = self._page(q, items, keys, "pipeline_version_id")
        return 200, ({"pipeline_versions": page} if page else {}) | fields

    def _get_version(
        self, query: dict[str, list[str]], _body: Any, pid: str, vid: str
    ) -> tuple[int, Any]:
        self._query(query, set())
        version = self.versions.get(vid)
        if version is None or version["pipeline_id"] != pid:
            raise _not_found(f"PipelineVersion {vid} not found")
        return 200, version

    def _delete_version(
        self, query: dict[str, list[str]], body: Any, pid: str, vid: str
    ) -> tuple[int, Any]:
        self._get_version(query, body, pid, vid)
        del self.versions[vid]
        return 200, {}

    def _delete_pipeline(
        self, query: dict[str, list[str]], _body: Any, pid: str
    ) -> tuple[int, Any]:
        q = self._query(query, {"cascade"})
        self._pipeline(pid)
        versions = self.versions_of(pid)
        if versions and q.get("cascade") != "true":
            raise _bad(
                f"Failed to delete pipeline {pid}: it has {len(versions)} version(s); delete "
                "them first or pass cascade=true"
            )
        for version in versions:
            del self.versions[version["pipeline_version_id"]]
        del self.pipelines[pid]
        return 200, {}

    # --- experiments -------------------------------------------------------------------------
    def _new_experiment(self, body: JSON) -> JSON:
        experiment_id = _new_id()
        experiment: JSON = {
            "experiment_id": experiment_id,
            "display_name": body["display_name"],
            "created_at": _now(),
            "storage_state": "AVAILABLE",
        }
        if body.get("description"):
            experiment["description"] = body["description"]
        if body.get("namespace"):
            experiment["namespace"] = body["namespace"]
        return self._store(self.experiments, experiment_id, experiment)

    def _list_experiments(self, query: dict[str, list[str]], _body: Any) -> tuple[int, Any]:
        q = self._query(query, {"page_token", "page_size", "sort_by", "filter", "namespace"})
        namespace = q.get("namespace", "")
        if self.multi_user and not namespace:
            raise _bad(
                "Invalid input error: ListExperiments must specify a namespace in multi-user mode"
            )
        items = [e for e in self.experiments.values() if e.get("namespace", "") == namespace]
        keys = {"display_name": "display_name", "created_at": "created_at"}
        items = self._filter(q.get("filter"), items, keys)
        page, fields = self._page(q, items, keys, "experiment_id")
        return 200, ({"experiments": page} if page else {}) | fields

    def _create_experiment(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        self._query(query, set())
        _EXPERIMENT(body, "experiment")
        if not body.get("display_name"):
            raise _bad("Failed to create a new experiment: Experiment name is empty")
        namespace = body.get("namespace") or ""
        if self.multi_user and not namespace:
            raise _bad(
                "Failed to create a new experiment: namespace is required in multi-user mode"
            )
        if not self.multi_user:
            body = {**body, "namespace": ""}
        for experiment in self.experiments.values():
            if (experiment["display_name"], experiment.get("namespace", "")) == (
                body["display_name"],
                namespace if self.multi_user else "",
            ):
                raise ApiError(
                    409,
                    f"Failed to create a new experiment: experiment {body['display_name']!r} "
                    "already exists",
                )
        return 200, self._new_experiment(body)

    def _get_experiment(self, query: dict[str, list[str]], _body: Any, eid: str) -> tuple[int, Any]:
        self._query(query, set())
        return 200, self._experiment(eid)

    # --- runs --------------------------------------------------------------------------------
    def _create_run(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        self._query(query, {"experiment_id"})
        _RUN(body, "run")
        what = "Failed to create a run"
        if not body.get("display_name"):
            raise _bad(f"{what}: the run name is empty. Please specify a valid name")
        spec, reference = self._resolve_source(body, what)
        config = body.get("runtime_config") or {}
        try:
            validate_job_inputs(spec, config.get("parameters"))
        except ApiError as e:
            raise _bad(f"{what}: {e.message}") from e
        experiment = self._experiment_for(body.get("experiment_id"), what)
        run_id = _new_id()
        now = _now()
        run: JSON = {
            "experiment_id": experiment["experiment_id"],
            "run_id": run_id,
            "display_name": body["display_name"],
            "storage_state": "AVAILABLE",
            "runtime_config": config,
            "service_account": body.get("service_account") or "pipeline-runner",
            "created_at": now,
            "scheduled_at": now,
            "state": "PENDING",
            "state_history": [{"update_time": now, "state": "PENDING"}],
        }
        if reference is not None:
            run["pipeline_version_reference"] = reference
        else:
            run["pipeline_spec"] = spec
        if body.get("description"):
            run["description"] = body["description"]
        experiment["last_run_created_at"] = now
        return 200, self._store(self.runs, run_id, run)

    def _get_run(self, query: dict[str, list[str]], _body: Any, run_id: str) -> tuple[int, Any]:
        self._query(query, {"experiment_id"})
        if run_id not in self.runs:
            raise _not_found(f"Run {run_id} not found")
        steps = self._scripts.get(run_id)
        if steps:
            step = steps.pop(0)
            self.advance(run_id, step.tasks, final=step.final, error=step.error)
        return 200, self.runs[run_id]

    # --- recurring runs ----------------------------------------------------------------------
    def _create_recurring(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        self._query(query, set())
        _RECURRING_RUN(body, "recurring_run")
        what = "Validate create job request failed"
        if not body.get("display_name"):
            raise _bad(f"{what}: the recurring run name is empty. Please specify a valid name")
        spec, reference = self._resolve_source(body, what)
        concurrency = int(body.get("max_concurrency") or 0)
        if not 1 <= concurrency <= 10:
            raise _bad(
                f"{what}: The max concurrency of the recurring run is out of range. "
                f"Support 1-10. Received {concurrency}."
            )
        trigger = body.get("trigger") or {}
        if len(trigger) != 1:
            raise _bad(f"{what}: exactly one of cron_schedule and periodic_schedule is required")
        cron = (trigger.get("cron_schedule") or {}).get("cron")
        if "cron_schedule" in trigger:
            problem = robfig_cron_error(cron or "")
            if problem:
                raise _bad(
                    f"{what}: Schedule cron is not a supported format"
                    f"(https://godoc.org/github.com/robfig/cron). Error: {problem}"
                )
        if "periodic_schedule" in trigger:
            interval = int(trigger["periodic_schedule"].get("interval_second") or 0)
            if interval < 1:
                raise _bad(f"{what}: Found invalid period schedule interval {interval}.")
        config = body.get("runtime_config") or {}
        try:
            validate_job_inputs(spec, config.get("parameters"))
        except ApiError as e:
            raise _bad(f"{what}: {e.message}") from e
        experiment = self._experiment_for(body.get("experiment_id"), what)
        enabled = body.get("mode") in ("ENABLE", 1)
        recurring_id = _new_id()
        now = _now()
        recurring: JSON = {
            "recurring_run_id": recurring_id,
            "display_name": body["display_name"],
            "runtime_config": config,
            "service_account": body.get("service_account") or "pipeline-runner",
            "max_concurrency": str(concurrency),
            "trigger": trigger,
            "mode": "ENABLE" if enabled else "DISABLE",
            "created_at": now,
            "updated_at": now,
            "status": "ENABLED" if enabled else "DISABLED",
            "no_catchup": bool(body.get("no_catchup", False)),
            "experiment_id": experiment["experiment_id"],
        }
        if reference is not None:
            recurring["pipeline_version_reference"] = reference
        else:
            recurring["pipeline_spec"] = spec
        for key in ("description", "namespace"):
            if body.get(key):
                recurring[key] = body[key]
        if not recurring["no_catchup"]:
            del recurring["no_catchup"]  # false is left out on the wire
        return 200, self._store(self.recurring_runs, recurring_id, recurring)

    def _list_recurring(self, query: dict[str, list[str]], _body: Any) -> tuple[int, Any]:
        q = self._query(
            query, {"page_token", "page_size", "sort_by", "namespace", "filter", "experiment_id"}
        )
        namespace = q.get("namespace", "")
        if self.multi_user and not namespace:
            raise _bad(
                "Invalid ListRecurringRuns request. No namespace provided in multi-user mode."
            )
        if not self.multi_user and namespace:
            raise _bad(
                "Invalid ListRecurringRuns request. Namespace should not be provided in "
                "single-user mode."
            )
        items = list(self.recurring_runs.values())
        if q.get("experiment_id"):
            items = [r for r in items if r["experiment_id"] == q["experiment_id"]]
        if namespace:
            items = [r for r in items if r.get("namespace", "") == namespace]
        keys = {"display_name": "display_name", "created_at": "created_at"}
        items = self._filter(q.get("filter"), items, keys)
        page, fields = self._page(q, items, keys, "recurring_run_id")
        # the proto field is literally ``recurringRuns``
        return 200, ({"recurringRuns": page} if page else {}) | fields

    def _get_recurring(self, query: dict[str, list[str]], _body: Any, rid: str) -> tuple[int, Any]:
        self._query(query, set())
        return 200, self._recurring(rid)

    def _switch(self, rid: str, enabled: bool) -> tuple[int, Any]:
        recurring = self._recurring(rid)
        recurring["mode"] = "ENABLE" if enabled else "DISABLE"
        recurring["status"] = "ENABLED" if enabled else "DISABLED"
        recurring["updated_at"] = _now()
        return 200, {}

    def _enable(self, query: dict[str, list[str]], body: Any, rid: str) -> tuple[int, Any]:
        self._query(query, set())
        if body not in (None, {}):
            raise _bad("EnableRecurringRun takes no body")
        return self._switch(rid, True)

    def _disable(self, query: dict[str, list[str]], body: Any, rid: str) -> tuple[int, Any]:
        self._query(query, set())
        if body not in (None, {}):
            raise _bad("DisableRecurringRun takes no body")
        return self._switch(rid, False)

    def _delete_recurring(
        self, query: dict[str, list[str]], _body: Any, rid: str
    ) -> tuple[int, Any]:
        self._query(query, {"propagation_policy"})
        self._recurring(rid)
        del self.recurring_runs[rid]
        return 200, {}


def _multipart_file(content_type: str, raw: bytes) -> tuple[str, bytes] | None:
    """The ``uploadfile`` part of a multipart/form-data body: ``(file name, bytes)``."""
    message = message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\nMIME-Version: 1.0\r\n\r\n" + raw,
        policy=HTTP,
    )
    if not message.is_multipart():
        return None
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "uploadfile":
            payload = part.get_payload(decode=True)
            return part.get_filename() or "", payload if isinstance(payload, bytes) else b""
    return None


@pytest.fixture
def fake_kfp() -> Iterator[FakeKFP]:
    """A started single-user :class:`FakeKFP` without token enforcement."""
    fake = FakeKFP().start()
    try:
        yield fake
    finally:
        fake.stop()
