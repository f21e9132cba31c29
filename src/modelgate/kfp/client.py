"""The Kubeflow Pipelines side of ``modelgate submit`` and ``modelgate schedule``.

Everything here talks to a KFP v2 API server (2.x, the ``/apis/v2beta1`` REST API) through
``kfp.Client``:

* :func:`connect` probes ``<host>/apis/v2beta1/healthz`` first, with a short timeout, so a wrong
  URL, a missing port-forward or a missing token fails in seconds with the fix, before
  ``kfp.Client`` (whose own health check retries for ~25 s) is built.
* :func:`upload` puts a compiled package up as a pipeline, or as a new version of the pipeline
  of that name; :func:`submit` runs that exact version; :func:`wait` follows the run task by
  task.
* :func:`schedule` makes a recurring run of the uploaded version; :func:`list_schedules`,
  :func:`pause`, :func:`resume` and :func:`delete` manage them.

Input that can be checked here is checked before any request: cron expressions
(:func:`validate_cron`) and run arguments against the package's parameters
(:func:`check_arguments`) raise :class:`~modelgate.errors.ConfigError`.

Cron: KFP's ScheduledWorkflow controller parses ``trigger.cron_schedule.cron`` with
``robfig/cron`` v1 ``cron.Parse``, whose fields are *seconds first*: ``sec min hour dom month
[dow]``, evaluated in UTC. A standard 5-field crontab line given to it unchanged is silently
read as ``sec min hour dom month`` (``0 3 * * 1`` = minute 3 of every hour in January), so
:func:`validate_cron` always returns the explicit 6-field form.

Auth: ``kfp.Client`` only reads ``KF_PIPELINES_SA_TOKEN_PATH`` when it is given *no* host and runs
in a pod; with a host it sends no credentials unless told. :func:`connect` therefore uses, in
order: the ``token`` argument, the file named by ``KF_PIPELINES_SA_TOKEN_PATH``, the projected
token at ``/var/run/secrets/kubeflow/pipelines/token`` when present, else no token.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import requests
import yaml

from modelgate.constants import KFP_ENDPOINT_ENV
from modelgate.errors import ConfigError, ModelgateError
from modelgate.retry import backoff, wait_until

if TYPE_CHECKING:
    import kfp

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The variable ``kfp.Client`` reads for its host (``kfp.client.client.KF_PIPELINES_ENDPOINT_ENV``).
ENDPOINT_ENV = KFP_ENDPOINT_ENV
#: The variable naming a token file (``kfp.client.KF_PIPELINES_SA_TOKEN_ENV``).
SA_TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
#: Where a pod's projected pipelines token lives (``kfp.client.KF_PIPELINES_SA_TOKEN_PATH``).
DEFAULT_SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
#: The API server's address inside the cluster (``kfp.Client._IN_CLUSTER_DNS_NAME``).
IN_CLUSTER_HOST = "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
HEALTHZ_PATH = "/apis/v2beta1/healthz"
PORT_FORWARD_HINT = (
    "from a workstation run `kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80` and "
    f"use http://localhost:8080, or set {ENDPOINT_ENV}"
)
TOKEN_HINT = (
    "pass a bearer token (--token, or token=...) or set "
    f"{SA_TOKEN_PATH_ENV} to a file holding one (in a pod: a projected service-account token "
    "with audience pipelines.kubeflow.org)"
)
#: Run and task states after which nothing changes any more.
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"})
#: KFP accepts 1-10 concurrent runs of one recurring run.
MAX_CONCURRENCY_RANGE = (1, 10)
#: Read timeout of every kfp.Client request once connected (seconds).
REQUEST_READ_TIMEOUT = 60.0
_PACKAGE_SUFFIXES = (".yaml", ".yml", ".json")
#: libyaml's loader when present: a compiled pipeline parses ~10x faster.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PAGE_SIZE = 100


class SubmitError(ModelgateError):
    """Kubeflow Pipelines rejected a request, or answered in a way modelgate cannot use."""


class KFPConnectionError(SubmitError):
    """The Kubeflow Pipelines API server could not be reached."""


class KFPAuthError(SubmitError):
    """The API server wants credentials (401) or refused them (403)."""


class KFPNotFoundError(SubmitError):
    """The named pipeline, run or recurring run does not exist."""


class KFPConflictError(SubmitError):
    """A pipeline, version or experiment of that name already exists (409)."""


class KFPServerError(SubmitError):
    """The API server failed (5xx); polling retries these."""


class RunTimeoutError(SubmitError, TimeoutError):
    """The run did not finish within the wait's timeout; it keeps running on the cluster."""


# --- results ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SubmittedRun:
    """A run created by :func:`submit`."""

    run_id: str
    pipeline_id: str
    version_id: str
    experiment_id: str
    url: str


@dataclass(frozen=True)
class StepState:
    """One task's state change, reported by :func:`wait` through ``on_change``.

    Attributes:
        name: The task's display name (``download``, ``quantize``...).
        state: Its new state (``RUNNING``, ``SUCCEEDED``, ``FAILED``...).
        previous: Its state at the previous poll, ``None`` the first time it is seen.
        task_id: The server's id of the task.
        error: The task's error message, if the server gave one.
    """

    name: str
    state: str
    previous: str | None
    task_id: str
    error: str | None = None


@dataclass(frozen=True)
class FailedTask:
    """A task that ended ``FAILED`` and why (empty when the server gave no message)."""

    name: str
    message: str


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended.

    Attributes:
        run_id: The run.
        state: Its final state: ``SUCCEEDED``, ``FAILED``, ``CANCELED`` or ``SKIPPED``.
        failed_tasks: The tasks that failed, with their error messages.
        error: The run's own error message, if any.
        seconds: How long :func:`wait` waited.
    """

    run_id: str
    state: str
    failed_tasks: tuple[FailedTask, ...]
    error: str | None
    seconds: float

    @property
    def succeeded(self) -> bool:
        """True when the run ended ``SUCCEEDED``."""
        return self.state == "SUCCEEDED"


@dataclass(frozen=True)
class ScheduleInfo:
    """One recurring run, as :func:`list_schedules` reports it.

    Attributes:
        id: The recurring run id (what :func:`pause`, :func:`resume`, :func:`delete` take).
        name: Its display name.
        cron: The cron expression KFP stores (6 fields, seconds first), or ``every <n>s`` for a
            periodic schedule.
        status: ``enabled`` or ``disabled``.
        pipeline_id: The pipeline it runs.
        pipeline_version_id: The pipeline version it runs.
        experiment_id: The experiment its runs go to.
        max_concurrency: How many of its runs may run at once.
    """

    id: str
    name: str
    cron: str
    status: str
    pipeline_id: str
    pipeline_version_id: str
    experiment_id: str
    max_concurrency: int


# --- cron ---------------------------------------------------------------------------------------
_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
#: (name, low, high, names, allows ?) of the 6 robfig/cron fields, seconds first.
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int] | None, bool], ...] = (
    ("second", 0, 59, None, False),
    ("minute", 0, 59, None, False),
    ("hour", 0, 23, None, False),
    ("day-of-month", 1, 31, None, True),
    ("month", 1, 12, _MONTHS, False),
    ("day-of-week", 0, 6, _DAYS, True),
)
_CRON_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_CRON_EXAMPLE = (
    "e.g. '0 3 * * 1' (minute hour day-of-month month day-of-week: Mondays 03:00 UTC) "
    "or KFP's 6-field form with seconds first, '0 0 3 * * 1'"
)


def _cron_value(token: str, low: int, high: int, names: dict[str, int] | None) -> int:
    if names is not None and token.lower() in names:
        return names[token.lower()]
    if not token.isdigit():
        raise ValueError(f"{token!r} is not a number{' or a name' if names else ''}")
    value = int(token)
    if not low <= value <= high:
        raise ValueError(f"{value} is out of range {low}-{high}")
    return value


def _check_cron_field(text: str, spec: tuple[str, int, int, dict[str, int] | None, bool]) -> None:
    _, low, high, names, allows_question = spec
    if not text:
        raise ValueError("is empty")
    for part in text.split(","):
        base, slash, step = part.partition("/")
        if slash:
            if not step.isdigit() or int(step) < 1:
                raise ValueError(f"step {step!r} in {part!r} must be a whole number >= 1")
        if base == "*" or (base == "?" and allows_question):
            continue
        if base == "?":
            raise ValueError("'?' is only allowed in day-of-month and day-of-week")
        start_text, dash, end_text = base.partition("-")
        start = _cron_value(start_text, low, high, names)
        if dash:
            end = _cron_value(end_text, low, high, names)
            if start > end:
                raise ValueError(f"range {base!r} runs backwards")


def validate_cron(expression: str) -> str:
    """Check a cron expression and return the 6-field form KFP's scheduler parses.

    Accepts a standard 5-field crontab line (``minute hour day-of-month month day-of-week``) or
    KFP's 6-field form with seconds first, and the descriptors ``@hourly``, ``@daily``,
    ``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``. Each field may be ``*``, a number, a
    name (``JAN``-``DEC``, ``SUN``-``SAT``), a range ``a-b``, a step ``*/n``, ``a-b/n`` or
    ``a/n``, or a comma-separated list of those; ``?`` means "any" in day-of-month and
    day-of-week. Schedules run in UTC.

    Args:
        expression: The cron expression.

    Returns:
        The expression as 6 space-separated fields, seconds first (``'0 3 * * 1'`` becomes
        ``'0 0 3 * * 1'``).

    Raises:
        ConfigError: The expression is malformed; the message names the field and shows an
            example.
    """
    text = " ".join(str(expression).split())
    if text.startswith("@"):
        if text in _CRON_DESCRIPTORS:
            return _CRON_DESCRIPTORS[text]
        raise ConfigError(
            f"invalid cron expression {expression!r}: unknown descriptor; use one of "
            f"{', '.join(_CRON_DESCRIPTORS)} or fields, {_CRON_EXAMPLE}"
        )
    fields = text.split(" ") if text else []
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        raise ConfigError(
            f"invalid cron expression {expression!r}: it has {len(fields)} field(s); expected 5 "
            f"(minute hour day-of-month month day-of-week) or 6 (second first), {_CRON_EXAMPLE}"
        )
    for value, spec in zip(fields, _CRON_FIELDS, strict=True):
        try:
            _check_cron_field(value, spec)
        except ValueError as e:
            field, low, high, names, _ = spec
            allowed = f"{low}-{high}" + (
                f" or {list(names)[0].upper()}-{list(names)[-1].upper()}" if names else ""
            )
            if names is _DAYS:
                allowed += ", 0 = Sunday"
            raise ConfigError(
                f"invalid cron expression {expression!r}: {field} field {value!r}: {e} "
                f"({field} takes {allowed}); {_CRON_EXAMPLE}"
            ) from None
    return " ".join(fields)


# --- arguments ----------------------------------------------------------------------------------
_PARAMETER_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "STRING": ("a string", lambda v: isinstance(v, str)),
    "NUMBER_INTEGER": (
        "a whole number",
        lambda v: (
            (isinstance(v, int) and not isinstance(v, bool))
            or (isinstance(v, float) and v.is_integer())
        ),
    ),
    "NUMBER_DOUBLE": (
        "a number",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    ),
    "BOOLEAN": ("true or false", lambda v: isinstance(v, bool)),
    "LIST": ("a list", lambda v: isinstance(v, list | tuple)),
    "STRUCT": ("a mapping", lambda v: isinstance(v, dict)),
}


def _read_package(package_path: Path) -> tuple[bytes, dict[str, Any]]:
    """The package's bytes and its pipeline spec document."""
    path = Path(package_path)
    if path.suffix not in _PACKAGE_SUFFIXES:
        raise ConfigError(
            f"pipeline package {path} must be a compiled pipeline "
            f"({', '.join(_PACKAGE_SUFFIXES)}); compile it with `modelgate compile`"
        )
    if not path.is_file():
        raise ConfigError(
            f"pipeline package {path} does not exist; compile it with `modelgate compile`"
        )
    data = path.read_bytes()
    try:
        docs = [d for d in yaml.load_all(data, Loader=_YAML_LOADER) if d is not None]
    except yaml.YAMLError as e:
        raise ConfigError(f"pipeline package {path} is not valid YAML/JSON: {e}") from e
    spec = next((d for d in docs if isinstance(d, dict) and "root" in d), None)
    if spec is None:
        raise ConfigError(
            f"pipeline package {path} holds no pipeline spec (no 'root'); "
            "compile it with `modelgate compile`"
        )
    return data, spec


def _root_parameters(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}) or {})


def check_arguments(package_path: Path, arguments: Mapping[str, Any]) -> None:
    """Check run arguments against the package's pipeline parameters, as KFP's server would.

    The API server rejects a run whose ``runtime_config.parameters`` miss a required parameter,
    name one the pipeline does not have, or give a value of the wrong JSON type (a STRING
    parameter needs a JSON string, LIST a list, STRUCT an object). This finds the same
    mistakes before anything is uploaded.

    Args:
        package_path: The compiled pipeline (YAML or JSON).
        arguments: Parameter name to value, with the JSON types the pipeline declares.

    Raises:
        ConfigError: The package cannot be read, or an argument is unknown, missing or of the
            wrong type; the message names it and the fix.
    """
    _, spec = _read_package(package_path)
    declared = _root_parameters(spec)
    problems: list[str] = []
    for name, value in arguments.items():
        definition = declared.get(name)
        if definition is None:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{name!r} is not a parameter of the pipeline{hint}")
            continue
        kind = definition.get("parameterType", "")
        expected = _PARAMETER_TYPES.get(kind)
        if expected is None:
            problems.append(f"{name!r} has parameter type {kind!r}, which a run cannot set")
        elif not expected[1](value):
            fix = f"; pass {json.dumps(str(value))}" if kind == "STRING" else ""
            problems.append(
                f"{name!r} is a {kind} parameter and takes {expected[0]}, "
                f"got {type(value).__name__} {value!r}{fix}"
            )
        else:
            try:
                json.dumps(value)
            except (TypeError, ValueError) as e:
                problems.append(f"{name!r} is not JSON-serialisable: {e}")
    for name, definition in declared.items():
        if name not in arguments and not definition.get("isOptional"):
            if "defaultValue" not in definition:
                problems.append(f"{name!r} is required and has no default; give it a value")
    if problems:
        raise ConfigError("invalid run arguments: " + "; ".join(problems))


def describe_arguments(package_path: Path, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The run arguments as KFP will receive them, each with the type the package declares.

    Checked first with :func:`check_arguments`.

    Returns:
        ``{name: {"type": parameterType, "value": value}}`` in the package's order.

    Raises:
        ConfigError: As :func:`check_arguments`.
    """
    check_arguments(package_path, arguments)
    _, spec = _read_package(package_path)
    declared = _root_parameters(spec)
    return {
        name: {"type": declared[name].get("parameterType", ""), "value": arguments[name]}
        for name in declared
        if name in arguments
    }


# --- talking to kfp -----------------------------------------------------------------------------
def _server_message(body: Any) -> str:
    """The message of an error body: grpc-gateway's ``message`` or the upload server's."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not body:
        return ""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return " ".join(str(body).split())[:300]
    if isinstance(data, dict):
        for key in ("message", "error_message", "error"):
            if isinstance(data.get(key), str) and data[key]:
                return data[key]
    return " ".join(str(body).split())[:300]


def _api_error(status: int, body: Any, what: str, not_found: str | None) -> SubmitError:
    message = _server_message(body)
    said = f": {message}" if message else ""
    if status == 401:
        return KFPAuthError(
            f"{what}: Kubeflow Pipelines wants credentials (401){said}; {TOKEN_HINT}"
        )
    if status == 403:
        return KFPAuthError(
            f"{what}: Kubeflow Pipelines refused the credentials (403){said}; check the token "
            f"(--token / {SA_TOKEN_PATH_ENV}) and that its identity may use this namespace"
        )
    if status == 404:
        return KFPNotFoundError(not_found or f"{what}: not found (404){said}")
    if status == 409:
        return KFPConflictError(f"{what}: it already exists (409){said}")
    if status == 400:
        return SubmitError(f"{what}: Kubeflow Pipelines rejected the request (400){said}")
    if status == 0:
        return KFPConnectionError(f"{what}: no answer from Kubeflow Pipelines{said}")
    if status >= 500:
        return KFPServerError(f"{what}: Kubeflow Pipelines failed ({status}){said}")
    return SubmitError(f"{what}: Kubeflow Pipelines answered {status}{said}")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow kfp.Client's ``print`` of UI links (logged at debug) and its FutureWarning."""
    captured = io.StringIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            with contextlib.redirect_stdout(captured):
                yield
    finally:
        text = captured.getvalue().strip()
        if text:
            logger.debug("kfp: %s", text)


def _call(what: str, fn: Callable[[], T], *, not_found: str | None = None) -> T:
    """Run one kfp.Client call quietly, mapping its exceptions to :class:`SubmitError`."""
    import urllib3
    from kfp_server_api.exceptions import ApiException

    try:
        with _quiet():
            return fn()
    except ApiException as e:
        raise _api_error(int(e.status or 0), e.body or e.reason, what, not_found) from e
    except urllib3.exceptions.HTTPError as e:
        raise KFPConnectionError(
            f"{what}: lost the connection to Kubeflow Pipelines ({e}); is the port-forward "
            "still running?"
        ) from e


def _resolve_host(host: str | None) -> str:
    value = (host or os.environ.get(ENDPOINT_ENV) or "").strip()
    if not value:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            return IN_CLUSTER_HOST
        raise ConfigError(f"no Kubeflow Pipelines endpoint given: pass --host; {PORT_FORWARD_HINT}")
    if "://" not in value:
        # what kfp.Client does with a bare host name
        logger.warning("host %s has no scheme; using https://%s", value, value)
        value = "https://" + value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"Kubeflow Pipelines endpoint {value!r} is not an http(s) URL; "
            f"e.g. http://localhost:8080 ({PORT_FORWARD_HINT})"
        )
    return value.rstrip("/")


def _token_file() -> str | None:
    configured = os.environ.get(SA_TOKEN_PATH_ENV)
    if configured:
        if not Path(configured).is_file():
            raise ConfigError(
                f"{SA_TOKEN_PATH_ENV}={configured} is not a file; point it at a token file "
                "or unset it"
            )
        return configured
    return DEFAULT_SA_TOKEN_PATH if Path(DEFAULT_SA_TOKEN_PATH).is_file() else None


def _unreachable_reason(error: requests.RequestException, timeout: float) -> str:
    if isinstance(error, requests.Timeout):
        return f"no answer within {timeout:g}s"
    text = str(error)
    for needle, reason in (
        ("refused", "connection refused"),
        ("Name or service not known", "host name does not resolve"),
        ("nodename nor servname", "host name does not resolve"),
        ("getaddrinfo", "host name does not resolve"),
        ("Temporary failure in name resolution", "host name does not resolve"),
        ("No route to host", "no route to host"),
    ):
        if needle in text:
            return reason
    return type(error).__name__


def _probe(url: str, *, token: str | None, timeout: float) -> dict[str, Any]:
    """GET the healthz endpoint once; return its JSON or raise with the fix."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    probe_url = url + HEALTHZ_PATH
    try:
        response = requests.get(probe_url, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.exceptions.SSLError as e:
        raise KFPConnectionError(
            f"TLS to Kubeflow Pipelines at {url} failed ({e}); if it serves plain HTTP "
            f"(a port-forward does), use http://; {PORT_FORWARD_HINT}"
        ) from e
    except requests.RequestException as e:
        raise KFPConnectionError(
            f"cannot reach Kubeflow Pipelines at {url} "
            f"({_unreachable_reason(e, timeout)}): check the URL and port; {PORT_FORWARD_HINT}"
        ) from e
    if response.is_redirect or response.status_code in (401, 403):
        where = response.headers.get("Location", "")
        answer = f"redirect to {where}" if response.is_redirect else str(response.status_code)
        state = "was refused" if token else "is missing"
        raise KFPAuthError(
            f"Kubeflow Pipelines at {url} wants authentication ({answer}); the token {state}: "
            f"{TOKEN_HINT}"
        )
    if response.status_code == 404:
        raise SubmitError(
            f"{url} answered 404 for {HEALTHZ_PATH}: it is not a Kubeflow Pipelines 2.x API "
            f"endpoint; check the URL (behind the Kubeflow dashboard add /pipeline); "
            f"{PORT_FORWARD_HINT}"
        )
    if response.status_code != 200:
        raise SubmitError(
            f"Kubeflow Pipelines at {url} is not healthy: {HEALTHZ_PATH} answered "
            f"{response.status_code}: {_server_message(response.content)}"
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise SubmitError(f"{url}{HEALTHZ_PATH} did not answer JSON (a login page?); {TOKEN_HINT}")
    return body


def _bound_request_time(client: Any, timeout: float) -> None:
    """Give every later kfp.Client request a connect and read timeout (it has none)."""
    import urllib3

    api_client = getattr(getattr(client, "_healthz_api", None), "api_client", None)
    pool = getattr(getattr(api_client, "rest_client", None), "pool_manager", None)
    if pool is not None:
        pool.connection_pool_kw["timeout"] = urllib3.Timeout(
            connect=timeout, read=max(timeout, REQUEST_READ_TIMEOUT)
        )


def connect(
    host: str | None = None,
    *,
    token: str | None = None,
    namespace: str | None = None,
    timeout: float = 5.0,
) -> kfp.Client:
    """Check that Kubeflow Pipelines answers, then build a ``kfp.Client`` for it.

    Args:
        host: The API endpoint, e.g. ``http://localhost:8080`` (the UI port-forward) or
            ``https://kubeflow.example.com/pipeline``; default ``$KF_PIPELINES_ENDPOINT``, or
            the in-cluster service when running in a pod.
        token: Bearer token; default the file named by ``$KF_PIPELINES_SA_TOKEN_PATH`` or a
            pod's projected pipelines token, else none.
        namespace: The user (profile) namespace in multi-user Kubeflow; ``None`` for
            single-user installs.
        timeout: Seconds the health probe waits for a connection and for the answer.

    Returns:
        A connected ``kfp.Client``.

    Raises:
        ConfigError: No endpoint is known, it is not an http(s) URL, or the token file is
            missing.
        KFPConnectionError: Nothing answers at the endpoint (the message names the host and the
            port-forward command).
        KFPAuthError: The endpoint wants a token, or refused the one given.
        SubmitError: The endpoint is not a KFP 2.x API server, or is unhealthy.
    """
    url = _resolve_host(host)
    credentials = None
    if token is None:
        path = _token_file()
        if path is not None:
            from kfp.client import ServiceAccountTokenVolumeCredentials

            token = Path(path).read_text().strip()
            credentials = ServiceAccountTokenVolumeCredentials(path)
            logger.debug("using the token in %s", path)
    health = _probe(url, token=token, timeout=timeout)
    if health.get("multi_user") and not namespace:
        logger.warning(
            "Kubeflow Pipelines at %s is multi-user: pass namespace (your profile namespace) "
            "for experiments, runs and schedules",
            url,
        )
    import kfp

    kwargs: dict[str, Any] = {"host": url}
    if credentials is not None:
        kwargs["credentials"] = credentials
    elif token:
        kwargs["existing_token"] = token
    if namespace:
        kwargs["namespace"] = namespace
    client = _call(f"connect to {url}", lambda: kfp.Client(**kwargs))
    _bound_request_time(client, timeout)
    logger.info("connected to Kubeflow Pipelines at %s", url)
    return client


# --- pipelines ----------------------------------------------------------------------------------
def default_version_name(pipeline_name: str, package: bytes, *, now: datetime | None = None) -> str:
    """``<pipeline>-<UTC yyyymmdd-hhmmss-mmm>-<8 hex of the package's sha256>``."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    digest = hashlib.sha256(package).hexdigest()[:8]
    return f"{pipeline_name}-{stamp:%Y%m%d-%H%M%S}-{stamp.microsecond // 1000:03d}-{digest}"


def _pipeline_id(client: kfp.Client, pipeline_name: str) -> str | None:
    try:
        return _call(
            f"look up pipeline {pipeline_name!r}", lambda: client.get_pipeline_id(pipeline_name)
        )
    except ValueError as e:  # kfp: several pipelines share the display name
        raise SubmitError(
            f"several pipelines are called {pipeline_name!r} ({e}); delete the extras in the "
            "Kubeflow UI or choose another --pipeline-name"
        ) from e


def upload(
    client: kfp.Client,
    *,
    package_path: Path,
    pipeline_name: str,
    version_name: str | None = None,
) -> tuple[str, str]:
    """Upload a compiled pipeline: a new pipeline, or a new version of the one of that name.

    A new pipeline's first version is created by the server and takes the pipeline's name; later
    uploads add a version called ``version_name``, by default
    :func:`default_version_name` (``<pipeline>-<UTC time>-<content hash>``).

    Args:
        client: From :func:`connect`.
        package_path: The compiled pipeline YAML, e.g. ``pipelines/release.yaml``.
        pipeline_name: The pipeline's display name in Kubeflow.
        version_name: Name of the new version.

    Returns:
        ``(pipeline_id, version_id)`` of the uploaded version.

    Raises:
        ConfigError: The package is missing or not a pipeline, or a name is empty.
        SubmitError: The server refused the upload (e.g. a version of that name exists).
    """
    package, _ = _read_package(package_path)
    if not pipeline_name or not pipeline_name.strip():
        raise ConfigError("pipeline name is empty; give --pipeline-name, e.g. modelgate-release")
    if version_name is not None and not version_name.strip():
        raise ConfigError("version name is empty; leave it out for a generated one")
    path = str(package_path)
    pipeline_id = _pipeline_id(client, pipeline_name)
    if pipeline_id is None:
        try:
            pipeline = _call(
                f"upload pipeline {pipeline_name!r}",
                lambda: client.upload_pipeline(path, pipeline_name=pipeline_name),
            )
        except KFPConflictError as e:
            # another upload created it since the look-up: add a version to that one
            pipeline_id = _pipeline_id(client, pipeline_name)
            if pipeline_id is None:
                raise
            logger.info("pipeline %s appeared meanwhile (%s); adding a version", pipeline_name, e)
        else:
            listing = _call(
                f"list versions of pipeline {pipeline.pipeline_id}",
                lambda: client.list_pipeline_versions(
                    pipeline.pipeline_id, page_size=1, sort_by="created_at desc"
                ),
            )
            versions = listing.pipeline_versions or []
            if not versions:
                raise SubmitError(
                    f"pipeline {pipeline_name!r} ({pipeline.pipeline_id}) was uploaded but has no "
                    "version; upload again"
                )
            logger.info(
                "uploaded pipeline %s (%s), version %s",
                pipeline_name,
                pipeline.pipeline_id,
                versions[0].pipeline_version_id,
            )
            return pipeline.pipeline_id, versions[0].pipeline_version_id
    name = version_name or default_version_name(pipeline_name, package)
    version = _call(
        f"upload version {name!r} of pipeline {pipeline_name!r}",
        lambda: client.upload_pipeline_version(
            path, pipeline_version_name=name, pipeline_id=pipeline_id
        ),
    )
    logger.info(
        "uploaded version %s (%s) of pipeline %s (%s)",
        name,
        version.pipeline_version_id,
        pipeline_name,
        pipeline_id,
    )
    return pipeline_id, version.pipeline_version_id


def ensure_experiment(client: kfp.Client, name: str, namespace: str | None) -> str:
    """Return the id of experiment ``name``, creating it when it does not exist.

    Args:
        client: From :func:`connect`.
        name: The experiment's display name.
        namespace: The profile namespace in multi-user Kubeflow, else ``None``.

    Returns:
        The experiment id.

    Raises:
        ConfigError: ``name`` is empty.
        SubmitError: The server refused, or several experiments share the name.
    """
    if not name or not name.strip():
        raise ConfigError("experiment name is empty; give --experiment, e.g. modelgate")
    try:
        experiment = _call(
            f"get or create experiment {name!r}",
            lambda: client.create_experiment(name=name, namespace=namespace),
        )
    except ValueError as e:  # kfp: several experiments share the name
        raise SubmitError(f"experiment {name!r}: {e}; rename the duplicates") from e
    return str(experiment.experiment_id)


def run_url(client: kfp.Client, run_id: str) -> str:
    """The run's page in the Kubeflow Pipelines UI (``$KF_PIPELINES_UI_ENDPOINT`` or the host)."""
    prefix_of = getattr(client, "_get_url_prefix", None)
    prefix = prefix_of() if callable(prefix_of) else ""
    return f"{prefix}/#/runs/details/{run_id}"


def submit(
    client: kfp.Client,
    *,
    package_path: Path,
    pipeline_name: str,
    experiment: str,
    run_name: str,
    arguments: Mapping[str, Any],
    namespace: str | None = None,
) -> SubmittedRun:
    """Upload the package as a new pipeline version and start one run of exactly that version.

    Args:
        client: From :func:`connect`.
        package_path: The compiled pipeline YAML.
        pipeline_name: The pipeline's display name.
        experiment: Experiment to run in (created when missing).
        run_name: The run's display name.
        arguments: Pipeline parameters with their JSON types: strings for STRING parameters,
            lists for LIST, mappings for STRUCT, numbers and booleans as such.
        namespace: Profile namespace in multi-user Kubeflow.

    Returns:
        The run's ids and UI URL.

    Raises:
        ConfigError: Bad arguments or names, found before any request.
        SubmitError: Kubeflow Pipelines refused the upload, experiment or run.
    """
    if not run_name or not run_name.strip():
        raise ConfigError("run name is empty; give --run-name")
    check_arguments(package_path, arguments)
    pipeline_id, version_id = upload(client, package_path=package_path, pipeline_name=pipeline_name)
    experiment_id = ensure_experiment(client, experiment, namespace)
    run = _call(
        f"create run {run_name!r}",
        lambda: client.run_pipeline(
            experiment_id=experiment_id,
            job_name=run_name,
            pipeline_id=pipeline_id,
            version_id=version_id,
            params=dict(arguments),
        ),
    )
    url = run_url(client, run.run_id)
    logger.info("started run %s (%s): %s", run_name, run.run_id, url)
    return SubmittedRun(
        run_id=run.run_id,
        pipeline_id=pipeline_id,
        version_id=version_id,
        experiment_id=experiment_id,
        url=url,
    )


# --- runs ---------------------------------------------------------------------------------------
def _error_message(status: Any) -> str | None:
    message = getattr(status, "message", None) if status is not None else None
    return str(message) if message else None


def _tasks(run: Any) -> list[Any]:
    details = getattr(run, "run_details", None)
    return list(getattr(details, "task_details", None) or [])


def wait(
    client: kfp.Client,
    run_id: str,
    *,
    timeout: float,
    poll: float = 5.0,
    on_change: Callable[[StepState], None] | None = None,
) -> RunOutcome:
    """Poll a run until it ends, reporting each task's state changes on the way.

    Transient failures while polling (5xx answers, dropped connections) are retried.

    Args:
        client: From :func:`connect`.
        run_id: The run, e.g. :attr:`SubmittedRun.run_id`.
        timeout: Seconds to wait at most.
        poll: Seconds between polls.
        on_change: Called with a :class:`StepState` whenever a task appears or changes state.

    Returns:
        The final state and the failed tasks with their error messages.

    Raises:
        KFPNotFoundError: There is no run ``run_id``.
        RunTimeoutError: The run did not end within ``timeout`` (it keeps running).
        SubmitError: Polling failed for good.
    """
    if not run_id:
        raise ConfigError("run id is empty")
    seen: dict[str, str] = {}
    latest: list[Any] = []

    def fetch() -> Any:
        return _call(
            f"get run {run_id}",
            lambda: client.get_run(run_id),
            not_found=f"there is no run {run_id!r}; check the id in the Kubeflow UI",
        )

    def finished() -> bool:
        run = backoff(
            fetch,
            retry_on=(KFPConnectionError, KFPServerError),
            attempts=4,
            base_delay=max(poll, 0.05),
            max_delay=max(poll, 8.0),
            what=f"get run {run_id}",
        )
        latest[:] = [run]
        for task in _tasks(run):
            name = str(task.display_name or task.task_id or "?")
            key = str(task.task_id or name)
            state = str(task.state or "RUNTIME_STATE_UNSPECIFIED")
            previous = seen.get(key)
            if previous != state:
                seen[key] = state
                logger.info("run %s: %s %s", run_id, name, state)
                if on_change is not None:
                    on_change(StepState(name, state, previous, key, _error_message(task.error)))
        return str(run.state or "").upper() in TERMINAL_STATES

    def timed_out(message: str) -> BaseException:
        state = str(latest[0].state) if latest else "unknown"
        return RunTimeoutError(
            f"{message}: run {run_id} is still {state}; it keeps running on the cluster "
            f"({run_url(client, run_id)})"
        )

    seconds = wait_until(
        finished, timeout=timeout, interval=poll, what=f"run {run_id}", on_timeout=timed_out
    )
    run = latest[0]
    failed = tuple(
        FailedTask(str(t.display_name or t.task_id), _error_message(t.error) or "")
        for t in _tasks(run)
        if str(t.state or "").upper() == "FAILED"
    )
    outcome = RunOutcome(
        run_id=run_id,
        state=str(run.state).upper(),
        failed_tasks=failed,
        error=_error_message(run.error),
        seconds=seconds,
    )
    logger.info("run %s ended %s after %.0fs", run_id, outcome.state, seconds)
    return outcome


# --- schedules ----------------------------------------------------------------------------------
def schedule(
    client: kfp.Client,
    *,
    cron: str,
    package_path: Path,
    pipeline_name: str,
    experiment: str,
    job_name: str,
    arguments: Mapping[str, Any],
    namespace: str | None = None,
    max_concurrency: int = 1,
    enabled: bool = True,
    no_catchup: bool = True,
) -> str:
    """Upload the package as a new version and run it on a cron schedule.

    The recurring run is pinned to the uploaded version and, unless ``no_catchup`` is False,
    does not catch up on runs missed while it was paused.

    Args:
        client: From :func:`connect`.
        cron: 5-field crontab line or KFP's 6-field form (see :func:`validate_cron`), in UTC.
        package_path: The compiled pipeline YAML.
        pipeline_name: The pipeline's display name.
        experiment: Experiment its runs go to (created when missing).
        job_name: The recurring run's display name.
        arguments: Pipeline parameters with their JSON types (see :func:`submit`).
        namespace: Profile namespace in multi-user Kubeflow.
        max_concurrency: Runs of this schedule allowed at once, 1-10.
        enabled: False creates it paused.
        no_catchup: True skips the runs missed while paused; False starts them on resume.

    Returns:
        The recurring run id.

    Raises:
        ConfigError: Bad cron, concurrency, names or arguments, found before any request.
        SubmitError: Kubeflow Pipelines refused the upload, experiment or recurring run.
    """
    cron6 = validate_cron(cron)
    low, high = MAX_CONCURRENCY_RANGE
    if not isinstance(max_concurrency, int) or not low <= max_concurrency <= high:
        raise ConfigError(
            f"max concurrency {max_concurrency!r} is out of range; KFP allows {low}-{high}"
        )
    if not job_name or not job_name.strip():
        raise ConfigError("schedule name is empty; give --name")
    check_arguments(package_path, arguments)
    pipeline_id, version_id = upload(client, package_path=package_path, pipeline_name=pipeline_name)
    experiment_id = ensure_experiment(client, experiment, namespace)
    recurring = _call(
        f"create recurring run {job_name!r}",
        lambda: client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job_name,
            cron_expression=cron6,
            max_concurrency=max_concurrency,
            no_catchup=no_catchup,
            params=dict(arguments),
            pipeline_id=pipeline_id,
            version_id=version_id,
            enabled=enabled,
        ),
    )
    logger.info(
        "created recurring run %s (%s), cron %r, %s",
        job_name,
        recurring.recurring_run_id,
        cron6,
        "enabled" if enabled else "disabled",
    )
    return str(recurring.recurring_run_id)


def _schedule_info(rr: Any) -> ScheduleInfo:
    trigger = getattr(rr, "trigger", None)
    cron_schedule = getattr(trigger, "cron_schedule", None)
    periodic = getattr(trigger, "periodic_schedule", None)
    if cron_schedule is not None and cron_schedule.cron:
        cron = str(cron_schedule.cron)
    elif periodic is not None and periodic.interval_second:
        cron = f"every {periodic.interval_second}s"
    else:
        cron = ""
    status = str(rr.status or "").upper()
    if status not in ("ENABLED", "DISABLED"):
        status = "ENABLED" if str(rr.mode or "").upper() == "ENABLE" else "DISABLED"
    reference = getattr(rr, "pipeline_version_reference", None)
    return ScheduleInfo(
        id=str(rr.recurring_run_id),
        name=str(rr.display_name or ""),
        cron=cron,
        status=status.lower(),
        pipeline_id=str(getattr(reference, "pipeline_id", None) or ""),
        pipeline_version_id=str(
            getattr(reference, "pipeline_version_id", None) or rr.pipeline_version_id or ""
        ),
        experiment_id=str(rr.experiment_id or ""),
        max_concurrency=int(rr.max_concurrency or 0),
    )


def list_schedules(
    client: kfp.Client, *, namespace: str | None = None, experiment: str | None = None
) -> list[ScheduleInfo]:
    """List recurring runs, all pages.

    Args:
        client: From :func:`connect`.
        namespace: Profile namespace in multi-user Kubeflow (required there).
        experiment: Only those of the experiment of this name.

    Returns:
        The recurring runs, newest first.

    Raises:
        KFPNotFoundError: There is no experiment ``experiment``.
        SubmitError: The server refused.
    """
    experiment_id = None
    if experiment:
        try:
            found = _call(
                f"find experiment {experiment!r}",
                lambda: client.get_experiment(experiment_name=experiment, namespace=namespace),
            )
        except ValueError as e:
            raise KFPNotFoundError(
                f"experiment {experiment!r}: {e}; list them in the Kubeflow UI"
            ) from e
        experiment_id = found.experiment_id
    infos: list[ScheduleInfo] = []
    token = ""
    while True:
        page = _call(
            "list recurring runs",
            lambda t=token: client.list_recurring_runs(
                page_token=t,
                page_size=_PAGE_SIZE,
                sort_by="created_at desc",
                experiment_id=experiment_id,
                namespace=namespace,
            ),
        )
        infos.extend(_schedule_info(rr) for rr in page.recurring_runs or [])
        token = page.next_page_token or ""
        if not token:
            return infos


def get_schedule(client: kfp.Client, recurring_run_id: str) -> ScheduleInfo:
    """One recurring run.

    Raises:
        ConfigError: The id is empty.
        KFPNotFoundError: There is no such recurring run.
        SubmitError: The server refused.
    """
    if not recurring_run_id or not recurring_run_id.strip():
        raise ConfigError("recurring run id is empty; find it with `modelgate schedule list`")
    rr = _call(
        f"get recurring run {recurring_run_id}",
        lambda: client.get_recurring_run(recurring_run_id=recurring_run_id),
        not_found=(
            f"there is no recurring run {recurring_run_id!r}; "
            "find the id with `modelgate schedule list`"
        ),
    )
    return _schedule_info(rr)


def _set_schedule(client: kfp.Client, recurring_run_id: str, action: str) -> None:
    if not recurring_run_id or not recurring_run_id.strip():
        raise ConfigError("recurring run id is empty; find it with `modelgate schedule list`")
    method = {
        "pause": client.disable_recurring_run,
        "resume": client.enable_recurring_run,
        "delete": client.delete_recurring_run,
    }[action]
    _call(
        f"{action} recurring run {recurring_run_id}",
        lambda: method(recurring_run_id=recurring_run_id),
        not_found=(
            f"there is no recurring run {recurring_run_id!r}; "
            "find the id with `modelgate schedule list`"
        ),
    )
    logger.info("%s recurring run %s: done", action, recurring_run_id)


def pause(client: kfp.Client, recurring_run_id: str) -> None:
    """Disable a recurring run: it starts no runs until resumed.

    Args:
        client: From :func:`connect`.
        recurring_run_id: From :func:`schedule` or :func:`list_schedules`.

    Raises:
        ConfigError: The id is empty.
        KFPNotFoundError: There is no such recurring run.
        SubmitError: The server refused.
    """
    _set_schedule(client, recurring_run_id, "pause")


def resume(client: kfp.Client, recurring_run_id: str) -> None:
    """Enable a paused recurring run (missed runs are not caught up).

    Args:
        client: From :func:`connect`.
        recurring_run_id: From :func:`schedule` or :func:`list_schedules`.

    Raises:
        ConfigError: The id is empty.
        KFPNotFoundError: There is no such recurring run.
        SubmitError: The server refused.
    """
    _set_schedule(client, recurring_run_id, "resume")


def delete(client: kfp.Client, recurring_run_id: str) -> None:
    """Delete a recurring run (its past runs stay).

    Args:
        client: From :func:`connect`.
        recurring_run_id: From :func:`schedule` or :func:`list_schedules`.

    Raises:
        ConfigError: The id is empty.
        KFPNotFoundError: There is no such recurring run.
        SubmitError: The server refused.
    """
    _set_schedule(client, recurring_run_id, "delete")
