"""Reaching the Kubeflow Pipelines API server: host, token, health probe, ``kfp.Client``.

:func:`connect` probes ``<host>/apis/v2beta1/healthz`` first, with a short timeout, so a wrong
URL, a missing port-forward or a missing token fails in seconds with the fix, before
``kfp.Client`` (whose own health check retries for ~25 s) is built. It then bounds every later
request of the client in time (``kfp.Client`` sets no timeout).

Host: the ``host`` argument, else ``$KF_PIPELINES_ENDPOINT``, else the in-cluster service when
running in a pod.

Auth: ``kfp.Client`` only reads ``KF_PIPELINES_SA_TOKEN_PATH`` when it is given *no* host and runs
in a pod; with a host it sends no credentials unless told. :func:`connect` therefore uses, in
order: the ``token`` argument, the file named by ``KF_PIPELINES_SA_TOKEN_PATH``, the projected
token at ``/var/run/secrets/kubeflow/pipelines/token`` when present, else no token.

The other modules of :mod:`modelgate.kfp` make each ``kfp.Client`` call through :func:`_call`,
which maps the server's HTTP status to an error of :mod:`modelgate.errors` whose message names
the fix (:data:`PORT_FORWARD_HINT`, :data:`TOKEN_HINT`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import requests

from modelgate.constants import KFP_ENDPOINT_ENV
from modelgate.errors import (
    ConfigError,
    KFPAuthError,
    KFPConflictError,
    KFPConnectionError,
    KFPNotFoundError,
    KFPServerError,
    SubmitError,
)

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
#: Read timeout of every kfp.Client request once connected (seconds).
REQUEST_READ_TIMEOUT = 60.0


# --- errors from answers ------------------------------------------------------------------------
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
                return str(data[key])
    return " ".join(str(body).split())[:300]


def _api_error(status: int, body: Any, what: str, not_found: str | None) -> SubmitError:
    """The error for an HTTP ``status`` answered to ``what``, with the server's message."""
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
    """Run one kfp.Client call quietly, mapping its exceptions to :class:`SubmitError`.

    Args:
        what: The operation, for messages (``"create run 'x'"``).
        fn: The call.
        not_found: The whole message of a 404, when the default would not name the fix.

    Returns:
        What ``fn`` returned.

    Raises:
        SubmitError: Or a subclass, by the answer's HTTP status.
        KFPConnectionError: The connection broke.
    """
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


# --- host and token -----------------------------------------------------------------------------
def _resolve_host(host: str | None) -> str:
    """The endpoint URL: ``host``, ``$KF_PIPELINES_ENDPOINT`` or the in-cluster service."""
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
    """The token file to use: ``$KF_PIPELINES_SA_TOKEN_PATH``, or a pod's projected token."""
    configured = os.environ.get(SA_TOKEN_PATH_ENV)
    if configured:
        if not Path(configured).is_file():
            raise ConfigError(
                f"{SA_TOKEN_PATH_ENV}={configured} is not a file; point it at a token file "
                "or unset it"
            )
        return configured
    return DEFAULT_SA_TOKEN_PATH if Path(DEFAULT_SA_TOKEN_PATH).is_file() else None


# --- the health probe ---------------------------------------------------------------------------
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


# --- connect ------------------------------------------------------------------------------------
#: The oldest KFP backend modelgate's compiled pipelines run on: every ``secretAsEnv`` of the
#: pipelines is ``optional: true`` (the hf-token Secret may be absent), a field the backend's
#: driver honours from 2.15.0 on; older backends drop it and the pods hang in
#: ``CreateContainerConfigError`` when the Secret is missing.
MIN_BACKEND_VERSION = "2.15.0"


def server_version(health: dict[str, Any]) -> str | None:
    """The backend release a healthz answer names, if any.

    The API server's v2beta1 ``GetHealthzResponse`` declares only ``multi_user``
    (kubeflow/pipelines ``backend/api/v2beta1/healthz.proto``); the endpoint behind the UI's
    proxy answers its build info with ``apiServerTagName`` (``frontend/server/handlers/
    healthz.ts``), and older API servers answered ``tag_name``. None when neither is there.
    """
    for key in ("apiServerTagName", "tag_name"):
        value = health.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def check_server_version(version: str | None) -> None:
    """Refuse a KFP backend older than :data:`MIN_BACKEND_VERSION`.

    An unknown or unparseable version (a development build) is logged and accepted.

    Raises:
        ConfigError: The backend is older; the message says why it matters and the fix.
    """
    from packaging.version import InvalidVersion, Version

    if version is None:
        logger.info(
            "Kubeflow Pipelines did not say its version; modelgate needs >= %s", MIN_BACKEND_VERSION
        )
        return
    try:
        found = Version(version.removeprefix("v"))
    except InvalidVersion:
        logger.warning(
            "cannot read Kubeflow Pipelines version %r; modelgate needs >= %s",
            version,
            MIN_BACKEND_VERSION,
        )
        return
    if found < Version(MIN_BACKEND_VERSION):
        raise ConfigError(
            f"Kubeflow Pipelines {version} is too old: modelgate's pipelines need a backend >= "
            f"{MIN_BACKEND_VERSION} (older drivers ignore `optional: true` on Secret-backed "
            "environment variables, and pods hang in CreateContainerConfigError when the "
            "hf-token Secret is absent); upgrade Kubeflow Pipelines"
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
    check_server_version(server_version(health))
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
