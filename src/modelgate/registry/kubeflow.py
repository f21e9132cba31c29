"""The register step: record a quantized model version, its lineage and its evaluation.

The pipeline talks to a :class:`RegistryBackend`; :class:`KubeflowModelRegistry` implements it
with the official ``model-registry`` Python client (REST ``/api/model_registry/v1``). A second
backend (MLflow) can slot in behind the same protocol.

What gets written (Kubeflow backend):

* RegisteredModel ``model_name`` (created on first use, owner = author).
* ModelVersion ``version_name`` whose customProperties hold the lineage (``source_repo``,
  ``source_commit``, ``quant_scheme``, ``pipeline_run_id``, ... exactly as given, typed
  str/int/float/bool), ``modelgate.registration_id`` and ``modelgate.stage = "candidate"``.
* ModelArtifact (named like the model, as the client does) with ``uri``, the model format, the
  storage fields and, when ``pipeline_run_id`` is known, the KFP source fields
  (``modelSourceKind="kfp"``, ``modelSourceClass="pipelinerun"``).
* After evaluation: ``eval.<task>.<metric>`` doubles, ``gate.passed`` bool, ``gate.report``
  string (truncated to :data:`GATE_REPORT_MAX_CHARS`) and ``modelgate.stage`` =
  ``"gate-passed"``/``"gate-failed"``.

Model format: ``model_format_name`` defaults to ``"vLLM"``, the name KServe/ODH vLLM
ServingRuntimes list in ``supportedModelFormats`` and the one :mod:`modelgate.deploy` uses, so a
registry-driven deploy picks the vLLM runtime. The weights' on-disk format (safetensors with a
compressed-tensors quantization config) is lineage, recorded by the caller as a property such
as ``quant_scheme``.

Re-registration: registering a version name that already exists is idempotent when the
existing version is LIVE and its model artifact has the same URI (the step can be retried);
anything else raises :class:`~modelgate.errors.RegistryError`. The v1 API has no DELETE for
models and versions, so a registration that fails half-way marks what it created ARCHIVED
before raising.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import uuid
import warnings
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

import requests
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

from modelgate.errors import ConfigError, RegistryAPIVersionError, RegistryError
from modelgate.naming import registered_model_name
from modelgate.naming import version_name as naming_version_name
from modelgate.retry import backoff

if TYPE_CHECKING:
    from model_registry import ModelRegistry

logger = logging.getLogger(__name__)

T = TypeVar("T")

PropertyValue = StrictBool | StrictInt | StrictFloat | StrictStr
"""A custom property value: the types the Model Registry stores natively."""

URL_ENV = "MODEL_REGISTRY_URL"
TOKEN_ENV = "MODEL_REGISTRY_TOKEN"
AUTHOR_ENV = "MODEL_REGISTRY_AUTHOR"
DEFAULT_AUTHOR = "modelgate"

SKIPPED_MESSAGE = f"skipped: no registry configured (set {URL_ENV})"
"""Message of the record returned when no registry is configured."""

API_PATH = "/api/model_registry/v1"
OLD_API_VERSIONS = ("v1alpha3",)
FIRST_V1_RELEASE = "0.3.15"
"""First kubeflow/hub (model-registry) release whose Python client speaks ``/v1``."""
LAST_V1ALPHA3_CLIENT = "0.3.14"

STAGE_PROPERTY = "modelgate.stage"
REGISTRATION_ID_PROPERTY = "modelgate.registration_id"
STAGE_CANDIDATE = "candidate"
STAGE_GATE_PASSED = "gate-passed"
STAGE_GATE_FAILED = "gate-failed"
GATE_REPORT_MAX_CHARS = 8000
"""``gate.report`` is cut to this many characters (the backing DB column is TEXT-sized)."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _validate_properties(props: Mapping[str, Any], *, what: str) -> None:
    for key, value in props.items():
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"{what}: property names must be non-empty strings, got {key!r}")
        if isinstance(value, bool) or isinstance(value, str):
            continue
        if isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise ConfigError(f"{what}: property {key!r}={value} does not fit int64")
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ConfigError(f"{what}: property {key!r} must be finite, got {value}")
            continue
        raise ConfigError(
            f"{what}: property {key!r} has type {type(value).__name__}; "
            "expected str, int, float or bool"
        )


class RegisterRequest(BaseModel):
    """What to register: one model version, its artifact and its lineage.

    Attributes:
        model_name: RegisteredModel name, e.g. ``"qwen2.5-0.5b-instruct-w4a16"``.
        version_name: Version name, unique within the model, e.g. a pipeline run id or semver.
        uri: Where the artifact lives, e.g. ``"s3://models/qwen/w4a16"`` or ``"oci://..."``.
        model_format_name: Model format for serving runtime selection (default ``"vLLM"``).
        model_format_version: Version of that format (default ``"1"``).
        description: Version description.
        author: Version author; defaults to the backend's author.
        properties: Lineage custom properties (``source_repo``, ``source_commit``,
            ``quant_scheme``, ``pipeline_run_id``, ...); ``pipeline_run_name`` and
            ``namespace`` also fill the artifact's KFP source fields.
        storage_key: Name of the storage secret (data connection) KServe should use.
        storage_path: Path inside that storage.
        service_account_name: Service account holding the storage secret.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str = Field(min_length=1)
    version_name: str = Field(min_length=1)
    uri: str = Field(min_length=1)
    model_format_name: str = Field(default="vLLM", min_length=1)
    model_format_version: str = Field(default="1", min_length=1)
    description: str | None = None
    author: str | None = None
    properties: dict[str, PropertyValue] = Field(default_factory=dict)
    storage_key: str | None = None
    storage_path: str | None = None
    service_account_name: str | None = None

    @field_validator("properties")
    @classmethod
    def _check_properties(cls, value: dict[str, PropertyValue]) -> dict[str, PropertyValue]:
        _validate_properties(value, what="RegisterRequest.properties")
        reserved = {STAGE_PROPERTY, REGISTRATION_ID_PROPERTY} & set(value)
        if reserved:
            raise ConfigError(f"RegisterRequest.properties: {sorted(reserved)} are reserved")
        return value


class RegistryRecord(BaseModel):
    """Outcome of the register step; travels between pipeline steps as JSON.

    Attributes:
        status: ``"registered"`` or ``"skipped"`` (no registry configured).
        message: Human-readable outcome.
        registered_model_id: RegisteredModel id, when registered.
        model_version_id: ModelVersion id, when registered.
        model_artifact_id: ModelArtifact id, when registered.
        registry: Registry URL the record lives in.
        model_name: Registered model name.
        version_name: Version name.
        stage: Last ``modelgate.stage`` written (``candidate``, ``gate-passed``, ...).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["registered", "skipped"]
    message: str
    registered_model_id: str | None = None
    model_version_id: str | None = None
    model_artifact_id: str | None = None
    registry: str | None = None
    model_name: str | None = None
    version_name: str | None = None
    stage: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str) -> RegistryRecord:
        """Rebuild a record from :meth:`to_dict` output or its JSON text.

        Raises:
            ConfigError: The data is not a valid record.
        """
        try:
            if isinstance(data, str):
                return cls.model_validate_json(data)
            return cls.model_validate(dict(data))
        except ValueError as e:
            raise ConfigError(f"not a RegistryRecord: {e}") from e

    def to_json(self) -> str:
        """Compact JSON text of :meth:`to_dict`."""
        return self.model_dump_json()


@runtime_checkable
class RegistryBackend(Protocol):
    """A model registry the pipeline can register versions in."""

    def register_version(self, request: RegisterRequest) -> RegistryRecord:
        """Register ``request`` and return where it landed."""
        ...

    def attach_evaluation(
        self,
        record: RegistryRecord,
        *,
        metrics: dict[str, float],
        gate_passed: bool,
        gate_report: str,
        properties: dict[str, str | int | float | bool] | None = None,
    ) -> None:
        """Write evaluation metrics and the gate decision onto a registered version."""
        ...

    def describe(self) -> str:
        """Where this backend points, for logs (e.g. its URL)."""
        ...


def _run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run one client coroutine on a private event loop (avoids the client's nest_asyncio)."""
    return asyncio.run(coro)


class _TransientProbeError(Exception):
    """A probe answer worth retrying (5xx)."""


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f"\n...[truncated {len(text) - limit} chars]"
    return text[: limit - len(marker)] + marker


class KubeflowModelRegistry:
    """:class:`RegistryBackend` for the Kubeflow Model Registry via ``model_registry``.

    Args:
        url: Registry base URL, ``http(s)://host[:port]`` (no path), e.g.
            ``http://model-registry-service.kubeflow.svc.cluster.local:8080``.
        author: Default author/owner written on what this backend creates.
        token: Bearer token; defaults to ``$MODEL_REGISTRY_TOKEN``, then whatever the client
            finds (``$KF_PIPELINES_SA_TOKEN_PATH`` or the pod's service-account token).
        is_secure: Verify TLS; defaults to ``True`` for ``https://`` URLs. ``False`` with an
            ``https://`` URL skips certificate verification.
        custom_ca: Path to a PEM CA bundle for TLS verification.
        connect_attempts: Tries for the reachability probe (transient errors only).
        timeout: Seconds for each probe request.

    Raises:
        ConfigError: The URL is malformed.
    """

    def __init__(
        self,
        url: str,
        *,
        author: str,
        token: str | None = None,
        is_secure: bool | None = None,
        custom_ca: str | None = None,
        connect_attempts: int = 3,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{URL_ENV}={url!r} is not a registry URL; expected http(s)://host[:port], "
                "e.g. http://model-registry-service.kubeflow.svc.cluster.local:8080"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(
                f"{URL_ENV}={url!r} must not contain a path; give only http(s)://host[:port] "
                f"(the client appends {API_PATH})"
            )
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as e:
            raise ConfigError(f"{URL_ENV}={url!r} has an invalid port") from e
        if is_secure is None:
            is_secure = parts.scheme == "https"
        if is_secure and parts.scheme != "https":
            raise ConfigError(f"is_secure=True needs an https:// URL, got {url!r}")
        if not author:
            raise ConfigError("author must be a non-empty string")
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        self._scheme = parts.scheme
        self._host = host
        self._port = port
        self._url = f"{parts.scheme}://{host}:{port}"
        self._author = author
        self._token = token or os.environ.get(TOKEN_ENV) or None
        self._is_secure = is_secure
        self._custom_ca = custom_ca
        self._connect_attempts = connect_attempts
        self._timeout = timeout
        self._client: ModelRegistry | None = None

    # --- RegistryBackend -----------------------------------------------------------------
    def describe(self) -> str:
        """The registry URL."""
        return self._url

    def register_version(self, request: RegisterRequest) -> RegistryRecord:
        """Register a model version with its artifact and lineage properties.

        Args:
            request: What to register.

        Returns:
            A ``"registered"`` record with the ids.

        Raises:
            RegistryAPIVersionError: The server does not speak the client's API version.
            RegistryError: The registry is unreachable, the version name is taken by a different
                artifact or an archived version, or the registration failed (whatever it had
                created is archived first).
        """
        client = self._connect()
        name, version = request.model_name, request.version_name
        rm_before = self._call(f"look up model {name!r}", lambda: client.get_registered_model(name))
        if rm_before is not None:
            existing = self._call(
                f"look up {name}:{version}", lambda: client.get_model_version(name, version)
            )
            if existing is not None:
                return self._existing_version(client, request, existing)

        registration_id = uuid.uuid4().hex
        metadata: dict[str, str | int | float | bool] = {
            **request.properties,
            REGISTRATION_ID_PROPERTY: registration_id,
            STAGE_PROPERTY: STAGE_CANDIDATE,
        }
        source: dict[str, str | None] = {}
        run_id = request.properties.get("pipeline_run_id")
        if run_id is not None and str(run_id):
            run_name = request.properties.get("pipeline_run_name")
            namespace = request.properties.get("namespace")
            source = {
                "model_source_kind": "kfp",
                "model_source_class": "pipelinerun",
                "model_source_id": str(run_id),
                "model_source_name": str(run_name) if run_name is not None else None,
                "model_source_group": str(namespace) if namespace is not None else None,
            }
        logger.info("registering %s:%s (%s) in %s", name, version, request.uri, self._url)
        try:
            client.register_model(
                name,
                request.uri,
                model_format_name=request.model_format_name,
                model_format_version=request.model_format_version,
                version=version,
                storage_key=request.storage_key,
                storage_path=request.storage_path,
                service_account_name=request.service_account_name,
                author=request.author or self._author,
                owner=self._author,
                version_description=request.description,
                metadata=metadata,
                **source,
            )
        except Exception as e:  # noqa: BLE001 - every failure must archive and re-raise
            cleanup = self._archive_partial(
                client, name, version, registration_id, model_was_new=rm_before is None
            )
            raise RegistryError(
                f"registering {name}:{version} in {self._url} failed: {_describe(e)}; {cleanup}"
            ) from e
        return self._record_for(client, name, version, message="registered", stage=STAGE_CANDIDATE)

    def attach_evaluation(
        self,
        record: RegistryRecord,
        *,
        metrics: dict[str, float],
        gate_passed: bool,
        gate_report: str,
        properties: dict[str, str | int | float | bool] | None = None,
    ) -> None:
        """Write evaluation results and the gate decision onto the model version.

        Args:
            record: A ``"registered"`` record from :meth:`register_version`.
            metrics: ``{"<task>.<metric>": value}``; stored as ``eval.<task>.<metric>`` doubles.
            gate_passed: The gate decision, stored as ``gate.passed``.
            gate_report: Human-readable gate report, stored as ``gate.report`` (truncated).
            properties: Extra custom properties to set.

        Raises:
            ConfigError: The record is not registered, or a metric/property is not a finite
                number / supported type.
            RegistryError: The version is gone, or the update failed.
        """
        if record.status != "registered" or not record.model_version_id:
            raise ConfigError(
                f"attach_evaluation needs a registered record, got status={record.status!r}"
            )
        if not record.model_name or not record.version_name:
            raise ConfigError("attach_evaluation needs model_name and version_name on the record")
        updates: dict[str, str | int | float | bool] = {}
        for key, value in metrics.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"metric names must be non-empty strings, got {key!r}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"metric {key!r} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"metric {key!r} must be finite, got {value}")
            updates[f"eval.{key}"] = float(value)
        updates["gate.passed"] = bool(gate_passed)
        updates["gate.report"] = _truncate(gate_report, GATE_REPORT_MAX_CHARS)
        updates[STAGE_PROPERTY] = STAGE_GATE_PASSED if gate_passed else STAGE_GATE_FAILED
        if properties:
            _validate_properties(properties, what="attach_evaluation.properties")
            updates.update(properties)

        client = self._connect()
        name, version = record.model_name, record.version_name
        mv = self._call(
            f"look up {name}:{version}", lambda: client.get_model_version(name, version)
        )
        if mv is None or mv.id != record.model_version_id:
            raise RegistryError(
                f"model version {name}:{version} (id {record.model_version_id}) is not in "
                f"{self._url} any more (found {mv.id if mv else 'nothing'})"
            )
        mv.custom_properties = {**(mv.custom_properties or {}), **updates}
        self._call(f"update {name}:{version}", lambda: client.update(mv))
        logger.info(
            "recorded evaluation on %s:%s: %d metrics, gate %s",
            name,
            version,
            len(metrics),
            "passed" if gate_passed else "failed",
        )

    # --- internals -----------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (RegistryError, ConfigError):
            raise
        except Exception as e:  # noqa: BLE001 - client raises many unrelated types
            raise RegistryError(f"{what} in {self._url} failed: {_describe(e)}") from e

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _verify(self) -> bool | str:
        if not self._is_secure:
            return False
        return self._custom_ca or True

    def _probe(self, api_version: str) -> int:
        url = f"{self._url}/api/model_registry/{api_version}/registered_models"

        def once() -> int:
            resp = requests.get(
                url,
                params={"pageSize": "1"},
                headers=self._headers(),
                timeout=self._timeout,
                verify=self._verify(),
            )
            if resp.status_code >= 500:
                raise _TransientProbeError(f"{url} answered {resp.status_code}: {resp.text[:200]}")
            return resp.status_code

        try:
            return backoff(
                once,
                retry_on=(_TransientProbeError, requests.ConnectionError, requests.Timeout),
                attempts=self._connect_attempts,
                what=f"probe {url}",
            )
        except (_TransientProbeError, requests.RequestException) as e:
            raise RegistryError(
                f"Model Registry at {self._url} is unreachable ({_describe(e)}); check "
                f"{URL_ENV} (expected http(s)://host:port of the registry REST service) and "
                "that the service is up"
            ) from e

    def check_api_version(self) -> None:
        """Probe the server and make sure it serves ``/api/model_registry/v1``.

        Raises:
            RegistryAPIVersionError: The server only serves an older API version.
            RegistryError: Unreachable, unauthorized, or no registry API at that URL.
        """
        status = self._probe("v1")
        if status == 200:
            return
        if status in (401, 403):
            raise RegistryError(
                f"Model Registry at {self._url} refused access ({status}); set "
                f"{TOKEN_ENV} to a token allowed to use the registry"
            )
        if status == 404:
            for old in OLD_API_VERSIONS:
                if self._probe(old) in (200, 401, 403):
                    raise RegistryAPIVersionError(
                        f"Model Registry at {self._url} speaks REST API {old} "
                        f"(/api/model_registry/{old}) but the installed model-registry client "
                        f"speaks v1 ({API_PATH}). Fix: upgrade the Model Registry server to "
                        f"{FIRST_V1_RELEASE} or later (it serves v1), or pin the client to a "
                        f"release that speaks {old}, e.g. model-registry=={LAST_V1ALPHA3_CLIENT}."
                    )
            raise RegistryError(
                f"no Model Registry REST API at {self._url} (404 for {API_PATH}); check that "
                f"{URL_ENV} points at the registry REST service, not the UI or a route path"
            )
        raise RegistryError(
            f"Model Registry at {self._url} answered {status} to {API_PATH}/registered_models"
        )

    def _connect(self) -> ModelRegistry:
        if self._client is not None:
            return self._client
        self.check_api_version()
        try:
            from model_registry import ModelRegistry
        except ImportError as e:  # pragma: no cover - depends on the image
            raise ConfigError(
                "the Kubeflow registry backend needs the 'model-registry' package; "
                "install modelgate[registry]"
            ) from e
        with warnings.catch_warnings():
            # The client warns when it finds no token, which is normal for plain-HTTP registries.
            warnings.filterwarnings("ignore", message="User access token is missing")
            self._client = self._call(
                "connect",
                lambda: ModelRegistry(
                    f"{self._scheme}://{self._host}",
                    self._port,
                    author=self._author,
                    is_secure=self._is_secure,
                    user_token=self._token,
                    custom_ca=self._custom_ca,
                    async_runner=_run_coroutine,
                ),
            )
        return self._client

    def _existing_version(
        self, client: ModelRegistry, request: RegisterRequest, existing: Any
    ) -> RegistryRecord:
        name, version = request.model_name, request.version_name
        state = getattr(existing.state, "value", existing.state)
        if state != "LIVE":
            raise RegistryError(
                f"model {name!r} already has a version {version!r} in state {state} (left by an "
                "earlier failed or retired registration); version names cannot be reused: "
                "choose a new version_name"
            )
        artifact = self._call(
            f"look up artifact of {name}:{version}",
            lambda: client.get_model_artifact(name, version),
        )
        if artifact is None or artifact.uri != request.uri:
            found = artifact.uri if artifact is not None else "no model artifact"
            raise RegistryError(
                f"model {name!r} already has a version {version!r} with {found!r}, not "
                f"{request.uri!r}; choose a new version_name"
            )
        logger.info("%s:%s is already registered with %s; reusing it", name, version, request.uri)
        stage = (existing.custom_properties or {}).get(STAGE_PROPERTY)
        return self._record_for(
            client,
            name,
            version,
            message="already registered with the same uri (idempotent)",
            stage=str(stage) if stage is not None else None,
        )

    def _record_for(
        self, client: ModelRegistry, name: str, version: str, *, message: str, stage: str | None
    ) -> RegistryRecord:
        rm = self._call(f"look up model {name!r}", lambda: client.get_registered_model(name))
        mv = self._call(
            f"look up {name}:{version}", lambda: client.get_model_version(name, version)
        )
        ma = self._call(
            f"look up artifact of {name}:{version}",
            lambda: client.get_model_artifact(name, version),
        )
        if rm is None or mv is None or ma is None:
            raise RegistryError(f"{name}:{version} is incomplete in {self._url} after registering")
        return RegistryRecord(
            status="registered",
            message=message,
            registered_model_id=rm.id,
            model_version_id=mv.id,
            model_artifact_id=ma.id,
            registry=self._url,
            model_name=name,
            version_name=version,
            stage=stage,
        )

    def _archive_partial(
        self,
        client: ModelRegistry,
        name: str,
        version: str,
        registration_id: str,
        *,
        model_was_new: bool,
    ) -> str:
        """Archive what a failed registration created; return a sentence saying what happened."""
        from model_registry.types import ModelVersionState, RegisteredModelState

        done: list[str] = []
        try:
            mv = (
                client.get_model_version(name, version)
                if client.get_registered_model(name)
                else None
            )
            ours = (
                mv is not None
                and (mv.custom_properties or {}).get(REGISTRATION_ID_PROPERTY) == registration_id
            )
            if mv is not None and ours:
                mv.state = ModelVersionState.ARCHIVED
                client.update(mv)
                done.append(f"archived model version id {mv.id}")
            if model_was_new:
                rm = client.get_registered_model(name)
                others = [
                    v
                    for v in client.get_model_versions(name)
                    if getattr(v.state, "value", v.state) != "ARCHIVED"
                ]
                if rm is not None and not others:
                    rm.state = RegisteredModelState.ARCHIVED
                    client.update(rm)
                    done.append(f"archived registered model id {rm.id}")
        except Exception as e:  # noqa: BLE001 - report, the original error is what matters
            logger.error("cleanup after failed registration of %s:%s failed: %s", name, version, e)
            return f"cleanup failed too ({_describe(e)}): archive {name}:{version} by hand" + (
                f" (already {', '.join(done)})" if done else ""
            )
        if not done:
            return "nothing had been created"
        logger.warning("failed registration of %s:%s: %s", name, version, ", ".join(done))
        return ", ".join(done)


def _describe(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:500]}" if text else type(e).__name__


def registry_from_url(url: str | None = None, **kw: Any) -> RegistryBackend | None:
    """Build the registry backend for ``url`` (else ``$MODEL_REGISTRY_URL``).

    Args:
        url: Registry URL; ``None``/empty falls back to ``$MODEL_REGISTRY_URL``.
        **kw: Passed to :class:`KubeflowModelRegistry`; ``author`` defaults to
            ``$MODEL_REGISTRY_AUTHOR`` or ``"modelgate"``.

    Returns:
        The backend, or ``None`` when no URL is configured.

    Raises:
        ConfigError: The URL is malformed.
    """
    resolved = (url or "").strip() or os.environ.get(URL_ENV, "").strip()
    if not resolved:
        return None
    kw.setdefault("author", os.environ.get(AUTHOR_ENV) or DEFAULT_AUTHOR)
    return KubeflowModelRegistry(resolved, **kw)


def candidate_request(
    *,
    model_uri: str,
    repo_id: str,
    revision: str,
    commit_sha: str,
    scheme: str,
    model_name: str | None = None,
    version_name: str | None = None,
    pipeline_run_id: str | None = None,
    pipeline_run_name: str | None = None,
    namespace: str | None = None,
    author: str | None = None,
) -> RegisterRequest:
    """What the register step writes for a quantized candidate (naming and lineage policy).

    The registered model name is slash-free (:func:`modelgate.naming.registered_model_name`);
    the Hub id, revision and commit go into properties. The version name is
    ``<scheme>-<commit[:12]>-<run>`` unless given.

    Raises:
        ConfigError: A name the registry URI cannot carry.
    """
    properties: dict[str, str | int | float | bool] = {
        "source_repo": repo_id,
        "source_revision": revision,
        "source_commit": commit_sha,
        "quant_scheme": scheme,
    }
    for key, value in (
        ("pipeline_run_id", pipeline_run_id),
        ("pipeline_run_name", pipeline_run_name),
        ("namespace", namespace),
    ):
        if value:
            properties[key] = value
    return RegisterRequest(
        model_name=registered_model_name(repo_id, model_name),
        version_name=version_name
        or naming_version_name(scheme=scheme, commit_sha=commit_sha, run_id=pipeline_run_id),
        uri=model_uri,
        description=f"{repo_id}@{commit_sha} quantized with {scheme}",
        author=author,
        properties=properties,
    )


def register_candidate(*, registry_url: str | None, request: RegisterRequest) -> RegistryRecord:
    """Pipeline entry point: register ``request`` as a candidate, or skip without a registry.

    Args:
        registry_url: Registry URL; ``None`` falls back to ``$MODEL_REGISTRY_URL``.
        request: What to register.

    Returns:
        A ``"registered"`` record, or a ``"skipped"`` one with message
        :data:`SKIPPED_MESSAGE` when no registry is configured.

    Raises:
        ConfigError: The URL is malformed.
        RegistryAPIVersionError: Client and server API versions differ.
        RegistryError: Registration failed.
    """
    backend = registry_from_url(registry_url)
    if backend is None:
        logger.warning(SKIPPED_MESSAGE)
        return RegistryRecord(
            status="skipped",
            message=SKIPPED_MESSAGE,
            model_name=request.model_name,
            version_name=request.version_name,
        )
    return backend.register_version(request)


def record_evaluation(
    *,
    record: RegistryRecord,
    registry_url: str | None,
    metrics: dict[str, float],
    gate_passed: bool,
    gate_report: str,
) -> RegistryRecord:
    """Pipeline entry point: attach evaluation results to a registered candidate.

    Args:
        record: The register step's record.
        registry_url: Registry URL; falls back to ``$MODEL_REGISTRY_URL``, then the record's.
        metrics: ``{"<task>.<metric>": value}``.
        gate_passed: The gate decision.
        gate_report: Human-readable gate report.

    Returns:
        The record with the new stage, or the unchanged record when it was skipped.

    Raises:
        ConfigError: Bad metrics, or a registered record without any registry URL.
        RegistryAPIVersionError: Client and server API versions differ.
        RegistryError: The update failed.
    """
    if record.status == "skipped":
        logger.warning("evaluation not recorded: %s", record.message)
        return record
    url = (registry_url or "").strip() or os.environ.get(URL_ENV, "").strip() or record.registry
    backend = registry_from_url(url)
    if backend is None:
        raise ConfigError(
            f"record of {record.model_name}:{record.version_name} says registered but names no "
            f"registry; set {URL_ENV}"
        )
    backend.attach_evaluation(
        record, metrics=metrics, gate_passed=gate_passed, gate_report=gate_report
    )
    stage = STAGE_GATE_PASSED if gate_passed else STAGE_GATE_FAILED
    return record.model_copy(update={"stage": stage, "message": f"evaluation recorded: {stage}"})
