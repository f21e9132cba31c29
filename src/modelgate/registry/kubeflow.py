"""The Kubeflow Model Registry backend (``model-registry`` client, REST ``/api/model_registry/v1``).

What gets written:

* RegisteredModel ``model_name`` (created on first use, owner = author). It is never archived
  by modelgate; one left ARCHIVED by an older modelgate is set back to LIVE on the next
  registration (an archived parent hides its versions in the registry UI).
* ModelVersion ``version_name`` whose customProperties hold the lineage (``source_repo``,
  ``source_commit``, ``quant_scheme``, ``pipeline_run_id``, ... exactly as given, typed
  str/int/float/bool), ``modelgate.registration_id`` and ``modelgate.stage = "candidate"``.
* ModelArtifact (named like the model, as the client does) with ``uri``, the model format, the
  storage fields and, when ``pipeline_run_id`` is known, the KFP source fields
  (``modelSourceKind="kfp"``, ``modelSourceClass="pipelinerun"``).
* :meth:`~KubeflowModelRegistry.attach_evaluation` adds to the version, replacing earlier
  ``eval.*`` properties: per metric ``eval.<task>/<metric>`` (double),
  ``eval.<task>/<metric>.stderr`` (double), ``eval.<task>/<metric>.direction``
  (``"higher"``/``"lower"``), per task ``eval.<task>.n`` (int, samples scored);
  ``eval.samples_uri`` (the per-sample results file in the model store, when the evaluation
  kept one: :meth:`~KubeflowModelRegistry.production` returns it, so a later release's gate
  pairs with production without evaluating it again);
  ``eval.config`` (the lm-eval configuration as JSON), ``modelgate.gate`` (``"passed"`` or
  ``"failed"``), ``modelgate.gate_report`` and ``modelgate.card`` (Markdown); texts are cut to
  :data:`~modelgate.registry.base.GATE_REPORT_MAX_CHARS`. The version's ``description``
  becomes the card's first line.
* :meth:`~KubeflowModelRegistry.record_serving` adds the serving gate's measurements under the
  Kubeflow Hub model catalog's performance-metric names and types
  (:func:`~modelgate.registry.base.serving_properties`: ``ttft_p95``, ``itl_p95``,
  ``tps_mean``, ``requests_per_second``, ... as doubles, ``hardware_count`` int,
  ``hardware_type`` string, ``serving.*`` as given), replacing earlier ones, with
  ``modelgate.serving_gate`` (``"passed"``/``"failed"``), ``modelgate.serving_summary`` and
  ``modelgate.serving_report`` (cut like the gate report).

Stages (``modelgate.stage`` on the version): ``candidate`` when registered; ``rejected`` when
its gate or its serving gate failed (it stays registered and LIVE with its decision and card,
and is never promoted); ``production`` after :meth:`~KubeflowModelRegistry.promote`;
``archived`` (and the version state ARCHIVED) when a newer version took its place in
production. Promoting an ``archived`` version again (a rollback) sets it back to LIVE.

Reading: :meth:`~KubeflowModelRegistry.production` returns the LIVE ``production`` version with
its results rebuilt from the ``eval.*`` properties; :meth:`~KubeflowModelRegistry.find_version`
a version by name, or the newest LIVE one neither ``rejected`` nor ``archived``. Records carry
the artifact ``uri`` and the ``lineage`` (the version's properties but ``modelgate.*``,
``eval.*`` and the serving gate's measurements).

Credentials: the bearer token is only ever the one configured for the registry:
``token=``, else ``$MODEL_REGISTRY_TOKEN`` (e.g. a Secret mounted as that variable), else the
file named by ``token_file=`` or ``$MODEL_REGISTRY_TOKEN_FILE`` (e.g. a projected
service-account token whose audience is the registry, mounted with a ``serviceAccountToken``
volume projection). Without one, no ``Authorization`` header is sent: the ``model-registry``
client's own fallback (``$KF_PIPELINES_SA_TOKEN_PATH``, then the pod's service-account token at
``/var/run/secrets/kubernetes.io/serviceaccount/token``) is switched off, because that token is
valid for the Kubernetes API and would be handed to whatever host the URL names. To use the
pod's token anyway, name it: ``MODEL_REGISTRY_TOKEN_FILE=/var/run/secrets/kubernetes.io/
serviceaccount/token``. A token goes only over ``https://``, or plain ``http://`` to this
machine (loopback); a token with any other ``http://`` URL raises
:class:`~modelgate.errors.ConfigError` unless ``allow_insecure_token`` (or
``$MODELGATE_ALLOW_INSECURE_TOKEN=1``). TLS certificates of an ``https://`` registry are always
verified (``custom_ca`` for a private CA) unless ``insecure=True`` or
``$MODEL_REGISTRY_INSECURE=1``. The client needs a token for ``https://``.

Model format: ``model_format_name`` defaults to ``"vLLM"``, the name KServe/ODH vLLM
ServingRuntimes list in ``supportedModelFormats`` and the one :mod:`modelgate.deploy` uses, so a
registry-driven deploy picks the vLLM runtime. The weights' on-disk format (safetensors with a
compressed-tensors quantization config) is lineage, recorded by the caller as a property such
as ``quant_scheme``.

Re-registration: registering a version name that already exists is idempotent when the
existing version is LIVE and its model artifact has the same URI (the step can be retried), or
when it is a ``candidate`` of the same ``pipeline_run_id`` that an earlier attempt of the step
archived or left without its artifact (it is completed and set LIVE again); anything else
raises :class:`~modelgate.errors.RegistryError` saying to choose a new version name or model
name. The v1 API has no DELETE for models and versions, so a registration that
fails half-way marks the version it created ARCHIVED before raising (never the registered
model).

Retries: every request has a :data:`~modelgate.registry.base.REQUEST_TIMEOUT` (``timeout=``),
and the probe, the reads and the updates are retried on transient failures within
:data:`~modelgate.registry.base.REGISTRY_RETRY`. The registered model, the version and its
artifact are created one at a time (as ``ModelRegistry.register_model`` does); a create whose
answer is lost (a timeout or a 5xx after the server may have stored it) is retried by reading
first: a version carrying this registration's ``modelgate.registration_id`` (an artifact with
the same URI) is adopted, anything else under that name is a clash.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import uuid
import warnings
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import requests

from modelgate.constants import REGISTRY_INSECURE_ENV, REGISTRY_TOKEN_FILE_ENV
from modelgate.credentials import ALLOW_INSECURE_TOKEN_ENV, env_flag, redact_url, token_for
from modelgate.errors import ConfigError, RegistryAPIVersionError, RegistryError
from modelgate.registry.base import (
    GATE_FAILED,
    GATE_PASSED,
    GATE_PROPERTY,
    GATE_REPORT_MAX_CHARS,
    MODELCAR_ARTIFACT,
    REGISTRATION_ID_PROPERTY,
    REGISTRY_RETRY,
    REQUEST_TIMEOUT,
    RETIRED_STAGES,
    SERVING_GATE_PROPERTY,
    STAGE_ARCHIVED,
    STAGE_CANDIDATE,
    STAGE_PRODUCTION,
    STAGE_PROPERTY,
    STAGE_REJECTED,
    TOKEN_ENV,
    URL_ENV,
    BackendBase,
    ProductionVersion,
    RegisterRequest,
    RegistryRecord,
    ServingWrite,
    TransientAnswer,
    describe_error,
    is_serving_property,
    probe_retry_if,
    transient_status,
    truncate,
)

if TYPE_CHECKING:
    from model_registry import ModelRegistry
    from model_registry.types import ModelVersion

    from modelgate.evaluate import EvalResult

logger = logging.getLogger(__name__)

T = TypeVar("T")

API_PATH = "/api/model_registry/v1"
OLD_API_VERSIONS = ("v1alpha3",)
FIRST_V1_RELEASE = "0.3.15"
"""First kubeflow/hub (model-registry) release whose Python client speaks ``/v1``."""
LAST_V1ALPHA3_CLIENT = "0.3.14"

EVAL_PREFIX = "eval."
"""Prefix of the evaluation results' custom properties (see ``EvalResult.to_properties``)."""
EVAL_CONFIG_PROPERTY = "eval.config"
GATE_REPORT_PROPERTY = "modelgate.gate_report"
CARD_PROPERTY = "modelgate.card"
DESCRIPTION_MAX_CHARS = 200
"""The version description (the card's first line) is cut to this many characters."""

_LIVE, _ARCHIVED = "LIVE", "ARCHIVED"


def _transient(e: BaseException) -> bool:
    """A client failure worth another try: no answer in time, a lost connection, a 5xx/408/429.

    mr_openapi raises ``ApiException`` (``ServiceException`` for 5xx) with the HTTP status;
    aiohttp raises ``ClientConnectionError`` subclasses; :meth:`KubeflowModelRegistry._run`
    raises ``TimeoutError``.
    """
    import aiohttp
    from mr_openapi.exceptions import ApiException  # type: ignore[import-untyped]

    if isinstance(e, ApiException):
        return transient_status(e.status)
    lost = (TimeoutError, aiohttp.ClientConnectionError, requests.ConnectionError, requests.Timeout)
    return isinstance(e, lost)


def _state(resource: Any) -> str:
    """The ``state`` of a client object as its wire string (``"LIVE"``, ``"ARCHIVED"``)."""
    return str(getattr(resource.state, "value", resource.state))


def _stage(resource: Any) -> str | None:
    stage = (resource.custom_properties or {}).get(STAGE_PROPERTY)
    return str(stage) if stage is not None else None


def _lineage(resource: Any) -> dict[str, str | int | float | bool]:
    """The lineage a version was registered with: its properties but modelgate's, eval's and
    the serving gate's."""
    return {
        k: v
        for k, v in (resource.custom_properties or {}).items()
        if not k.startswith(("modelgate.", EVAL_PREFIX))
        and not is_serving_property(k)
        and isinstance(v, str | int | float)
    }


def _eval_properties(results: EvalResult) -> dict[str, str | int | float | bool]:
    """``results.to_properties()`` with registry types: doubles, int sample counts, strings.

    Raises:
        ConfigError: A value is not a number (or a direction string), or is not finite.
    """
    out: dict[str, str | int | float | bool] = {}
    for key, value in results.to_properties(prefix=EVAL_PREFIX).items():
        if isinstance(value, str):
            out[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"evaluation result {key!r} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"evaluation result {key!r} must be finite, got {value}")
        is_count = "/" not in key and key.endswith(".n")
        out[key] = int(value) if is_count else float(value)
    return out


def _card_summary(card: str) -> str | None:
    """The card's first non-empty line without Markdown heading marks, kept short."""
    for line in card.splitlines():
        text = " ".join(line.strip().lstrip("#").split())
        if text:
            if len(text) > DESCRIPTION_MAX_CHARS:
                text = text[: DESCRIPTION_MAX_CHARS - 3].rstrip() + "..."
            return text
    return None


def _read_token_file(path: str, *, source: str) -> str:
    """The token in ``path`` (stripped).

    Raises:
        ConfigError: The file cannot be read or is empty.
    """
    try:
        token = Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(
            f"cannot read the registry token file {path!r} ({source}): {e.strerror or e}; mount "
            "the token there or unset it"
        ) from e
    if not token:
        raise ConfigError(f"the registry token file {path!r} ({source}) is empty")
    return token


def _client_class() -> type[ModelRegistry]:
    """``ModelRegistry`` that never looks for a token by itself.

    model-registry 0.3.18 (``_client.py``): when ``user_token`` is falsy (None or ``""``) the
    constructor calls ``self._get_user_token(user_token_envvar)``, which reads the file named by
    ``$KF_PIPELINES_SA_TOKEN_PATH`` or the pod's service-account token, and sends it as a bearer
    token. Overriding that static method is the only way to have no token.

    Raises:
        ConfigError: The installed client has no such method (an unknown client version).
    """
    from model_registry import ModelRegistry

    if not callable(getattr(ModelRegistry, "_get_user_token", None)):
        raise ConfigError(
            "the installed model-registry client has no ModelRegistry._get_user_token; modelgate "
            "cannot stop it from reading the pod's service-account token: install "
            "model-registry==0.3.18 (modelgate[registry])"
        )

    class _ConfiguredTokenOnly(ModelRegistry):
        @staticmethod
        def _get_user_token(user_token_envvar: str | None = None) -> str | None:
            return None

    return _ConfiguredTokenOnly


class KubeflowModelRegistry(BackendBase):
    """:class:`~modelgate.registry.base.RegistryBackend` for the Kubeflow Model Registry.

    Args:
        url: Registry base URL, ``http(s)://host[:port]`` (no path), e.g.
            ``http://model-registry-service.kubeflow.svc.cluster.local:8080``.
        author: Default author/owner written on what this backend creates.
        token: Bearer token; defaults to ``$MODEL_REGISTRY_TOKEN``, then the file of
            ``token_file``. Never the pod's service-account token unless named there.
        token_file: File holding the token (read once); defaults to
            ``$MODEL_REGISTRY_TOKEN_FILE``, e.g. a projected service-account token whose
            audience is the registry.
        is_secure: Use TLS; defaults to ``True`` for ``https://`` URLs. ``False`` with an
            ``https://`` URL skips certificate verification and needs ``insecure=True``.
        insecure: Skip TLS certificate verification of an ``https://`` registry; defaults to
            ``$MODEL_REGISTRY_INSECURE``. Prefer ``custom_ca``.
        custom_ca: Path to a PEM CA bundle for TLS verification.
        allow_insecure_token: Send the token over plain ``http://`` to a host other than this
            machine; defaults to ``$MODELGATE_ALLOW_INSECURE_TOKEN``.
        connect_attempts: Tries of the reachability probe at a registry that cannot be
            reached at all (no connection, no answer in time); None: as many as
            :data:`~modelgate.registry.base.REGISTRY_RETRY` allows. An answer with a transient
            status (503 while it restarts) is retried within that policy in any case.
        timeout: Seconds for each request (the client's own timeout is 5 minutes).

    Raises:
        ConfigError: The URL is malformed; a token would go over plain ``http://`` to another
            host; TLS verification is turned off without ``insecure``; the token file cannot be
            read.
    """

    def __init__(
        self,
        url: str,
        *,
        author: str,
        token: str | None = None,
        token_file: str | None = None,
        is_secure: bool | None = None,
        insecure: bool | None = None,
        custom_ca: str | None = None,
        allow_insecure_token: bool | None = None,
        connect_attempts: int | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        parts = urlsplit(url.strip())
        shown = redact_url(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{URL_ENV}={shown!r} is not a registry URL; expected http(s)://host[:port], "
                "e.g. http://model-registry-service.kubeflow.svc.cluster.local:8080"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(
                f"{URL_ENV}={shown!r} must not contain a path; give only http(s)://host[:port] "
                f"(the client appends {API_PATH})"
            )
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as e:
            raise ConfigError(f"{URL_ENV}={shown!r} has an invalid port") from e
        if insecure is None:
            insecure = env_flag(REGISTRY_INSECURE_ENV)
        if is_secure is None:
            is_secure = parts.scheme == "https" and not insecure
        if is_secure and parts.scheme != "https":
            raise ConfigError(f"is_secure=True needs an https:// URL, got {shown!r}")
        if not is_secure and parts.scheme == "https":
            if not insecure:
                raise ConfigError(
                    f"is_secure=False would skip TLS certificate verification of {shown}; give "
                    f"custom_ca (a PEM CA bundle) instead, or, knowingly, insecure=True "
                    f"({REGISTRY_INSECURE_ENV}=1)"
                )
            logger.warning("TLS certificates of %s are not verified (insecure)", shown)
        if not author:
            raise ConfigError("author must be a non-empty string")
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        self._scheme = parts.scheme
        self._host = host
        self._port = port
        self._url = f"{parts.scheme}://{host}:{port}"
        self._author = author
        token = token or os.environ.get(TOKEN_ENV) or None
        if token is None:
            if token_file:
                token = _read_token_file(token_file, source="token_file")
            elif os.environ.get(REGISTRY_TOKEN_FILE_ENV):
                token = _read_token_file(
                    os.environ[REGISTRY_TOKEN_FILE_ENV], source=REGISTRY_TOKEN_FILE_ENV
                )
        self._token = token_for(
            self._url,
            token,
            allow_insecure=allow_insecure_token,
            what=f"the registry token ({TOKEN_ENV} / {REGISTRY_TOKEN_FILE_ENV})",
            refuse=True,
            fix=(
                f"unset {TOKEN_ENV}/{REGISTRY_TOKEN_FILE_ENV} if the registry needs none, or "
                f"set {ALLOW_INSECURE_TOKEN_ENV}=1 if the network is protected otherwise "
                "(e.g. a service mesh with mTLS)"
            ),
        )
        self._is_secure = is_secure
        self._custom_ca = custom_ca
        self._connect_attempts = connect_attempts or REGISTRY_RETRY.attempts
        self._timeout = timeout
        self._client: ModelRegistry | None = None

    # --- RegistryBackend -----------------------------------------------------------------
    def describe(self) -> str:
        """The registry URL."""
        return self._url

    def check(self) -> None:
        """Probe the server and make sure it serves ``/api/model_registry/v1``.

        Transient answers (5xx) are retried within
        :data:`~modelgate.registry.base.REGISTRY_RETRY`; a registry that does not answer at
        all is tried ``connect_attempts`` times.

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

    def check_api_version(self) -> None:
        """Alias of :meth:`check` (its former name).

        Raises:
            RegistryAPIVersionError: The server only serves an older API version.
            RegistryError: Unreachable, unauthorized, or no registry API at that URL.
        """
        self.check()

    def register_version(self, request: RegisterRequest) -> RegistryRecord:
        """Register a model version with its artifact and lineage properties as ``candidate``.

        A registered model left ARCHIVED (by an older modelgate's cleanup) is set back to LIVE
        first.

        Args:
            request: What to register.

        Returns:
            A ``"registered"`` record with the ids, the stage and the artifact URI.

        Raises:
            RegistryAPIVersionError: The server does not speak the client's API version.
            RegistryError: The registry is unreachable, the version name is taken by a different
                artifact or an archived version, or the registration failed (the version it had
                created is archived first).
        """
        client = self._connect()
        name, version = request.model_name, request.version_name
        rm_before = self._call(f"look up model {name!r}", lambda: client.get_registered_model(name))
        if rm_before is not None:
            if _state(rm_before) != _LIVE:
                self._restore_model(client, rm_before)
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
        logger.info("registering %s:%s (%s) in %s", name, version, request.uri, self._url)
        try:
            self._create(client, request, rm_before, metadata=metadata)
        except Exception as e:  # noqa: BLE001 - every failure must archive and re-raise
            cleanup = self._archive_partial(client, name, version, registration_id)
            raise RegistryError(
                f"registering {name}:{version} in {self._url} failed: {describe_error(e)}; "
                f"{cleanup}"
            ) from e
        return self._record_for(client, name, version, message="registered", stage=STAGE_CANDIDATE)

    def attach_evaluation(
        self,
        record: RegistryRecord,
        *,
        results: EvalResult,
        gate_passed: bool,
        gate_report: str,
        card: str,
    ) -> RegistryRecord:
        """Store the evaluation results, the gate decision and report, and the model card.

        Earlier ``eval.*`` properties of the version are replaced; the lineage stays. A failed
        gate makes the version ``rejected``; a passed gate leaves its stage as it is (a
        ``rejected`` version that now passes becomes ``candidate`` again).

        Args:
            record: A ``"registered"`` record from :meth:`register_version`.
            results: The evaluation; stored with :meth:`EvalResult.to_properties` (values and
                stderrs as doubles, sample counts as ints, directions as strings) plus
                ``eval.config`` (its ``config`` as JSON).
            gate_passed: The gate decision, stored as ``modelgate.gate`` = ``passed``/``failed``.
            gate_report: Markdown gate report, stored as ``modelgate.gate_report`` (truncated).
            card: Markdown model card, stored as ``modelgate.card`` (truncated); its first line
                becomes the version's description.

        Returns:
            The record with the version's new stage.

        Raises:
            ConfigError: The record is not registered, or a result is not a finite number.
            RegistryError: The version is gone, or the update failed.
        """
        name, version = self._names_of(record, "attach_evaluation")
        updates = _eval_properties(results)
        config_json = json.dumps(results.config, sort_keys=True, default=str)
        updates[EVAL_CONFIG_PROPERTY] = truncate(config_json, GATE_REPORT_MAX_CHARS)
        updates[GATE_PROPERTY] = GATE_PASSED if gate_passed else GATE_FAILED
        updates[GATE_REPORT_PROPERTY] = truncate(gate_report, GATE_REPORT_MAX_CHARS)
        updates[CARD_PROPERTY] = truncate(card, GATE_REPORT_MAX_CHARS)

        client = self._connect()
        mv = self._version_of(client, record)
        current = _stage(mv)
        if not gate_passed:
            stage = STAGE_REJECTED
            if current == STAGE_PRODUCTION:
                logger.warning("%s:%s is production and failed its gate now", name, version)
        elif current is None or current == STAGE_REJECTED:
            stage = STAGE_CANDIDATE
        else:
            stage = current
        kept = {
            k: v for k, v in (mv.custom_properties or {}).items() if not k.startswith(EVAL_PREFIX)
        }
        mv.custom_properties = {**kept, **updates, STAGE_PROPERTY: stage}
        summary = _card_summary(card)
        if summary:
            mv.description = summary
        self._call(f"update {name}:{version}", lambda: client.update(mv))
        logger.info(
            "recorded evaluation on %s:%s: %d metrics, gate %s, stage %s",
            name,
            version,
            sum(len(m) for m in results.tasks.values()),
            updates[GATE_PROPERTY],
            stage,
        )
        return record.model_copy(update={"stage": stage})

    # record_serving: BackendBase's, with these steps.

    serving_text_limit = GATE_REPORT_MAX_CHARS

    def _serving_version_name(self, record: RegistryRecord) -> str:
        name, version = self._names_of(record, "record_serving")
        return f"{name}:{version}"

    def _read_serving_stage(self, record: RegistryRecord) -> tuple[Any, str | None]:
        client = self._connect()
        mv = self._version_of(client, record)
        return (client, mv), _stage(mv)

    def _write_serving(self, version: Any, serving: ServingWrite) -> None:
        """One update that writes the whole state: the lineage, results and card stay."""
        client, mv = version
        # A PATCH carrying customProperties replaces them all: the server deletes those left out
        # (kubeflow/hub internal/platform/db/repository/generic_repository.go,
        # handleProperties), so earlier measurements not measured now go.
        kept = {k: v for k, v in (mv.custom_properties or {}).items() if not is_serving_property(k)}
        mv.custom_properties = {**kept, **serving.updates}
        if serving.stage is not None:
            mv.custom_properties[STAGE_PROPERTY] = serving.stage
        self._call(f"update {serving.what}", lambda: client.update(mv))

    def record_modelcar(self, record: RegistryRecord, *, uri: str) -> None:
        """The version's modelcar as its second model artifact, named ``modelcar`` (the first,
        named after the model, keeps the stored model's URI and what serves it by
        ``model-registry://``); an earlier modelcar artifact is pointed at ``uri``.

        Raises:
            ConfigError: The record is not registered.
            RegistryError: The version is gone, or the artifact could not be written.
        """
        from model_registry.types import ModelArtifact

        name, version = self._names_of(record, "record_modelcar")
        client = self._connect()
        mv_id = str(self._version_of(client, record).id)

        def find() -> ModelArtifact | None:
            return client.async_runner(
                client._api.get_model_artifact_by_params(MODELCAR_ARTIFACT, mv_id)
            )

        what = f"the modelcar artifact of {name}:{version}"
        existing = self._call(f"look up {what}", find)
        if existing is not None and existing.uri == uri:
            return
        if existing is not None:
            existing.uri = uri
            self._call(
                f"update {what}",
                lambda: client.async_runner(
                    client._api.upsert_model_version_artifact(existing, mv_id)
                ),
            )
        else:
            artifact = ModelArtifact(
                name=MODELCAR_ARTIFACT,
                uri=uri,
                model_format_name="vLLM",
                model_format_version="1",
                description="KServe modelcar (OCI image, files under /models)",
            )
            self._create_or_adopt(
                f"create {what}",
                create=lambda: client.async_runner(
                    client._api.upsert_model_version_artifact(artifact, mv_id)
                ),
                find=find,
                ours=lambda found: found.uri == uri,
            )
        logger.info("recorded modelcar %s on %s:%s", uri, name, version)

    def promote(self, record: RegistryRecord) -> str:
        """Make the version ``production`` and archive the model's previous production version.

        The other versions whose stage is ``production`` get ``modelgate.stage = archived`` and
        the state ARCHIVED. Promoting the current production version again changes nothing;
        promoting an ``archived`` version (a rollback) sets it back to LIVE.

        Args:
            record: A ``"registered"`` record of the version to promote.

        Returns:
            What it did, e.g. ``"org--m:v2 is production; archived org--m:v1"``.

        Raises:
            ConfigError: The record is not registered.
            RegistryError: The version is gone, rejected (its gate or serving gate failed),
                archived by a failed registration, or an update failed.
        """
        from model_registry.types import ModelVersionState

        name, version = self._names_of(record, "promote")
        client = self._connect()
        mv = self._version_of(client, record)
        stage, state = _stage(mv), _state(mv)
        props = mv.custom_properties or {}
        gate, serving = props.get(GATE_PROPERTY), props.get(SERVING_GATE_PROPERTY)
        if stage == STAGE_REJECTED or GATE_FAILED in (gate, serving):
            which = "serving gate" if serving == GATE_FAILED else "quality gate"
            raise RegistryError(
                f"{name}:{version} is rejected (its {which} failed); a rejected version "
                "never becomes production: register and evaluate a new version"
            )
        if state != _LIVE and stage != STAGE_ARCHIVED:
            raise RegistryError(
                f"{name}:{version} is {state} with stage {stage!r} (left by a failed "
                "registration); it cannot be promoted: register a new version"
            )
        others = [
            v
            for v in self._versions(client, name)
            if v.id != mv.id and _stage(v) == STAGE_PRODUCTION
        ]
        changed = False
        if stage != STAGE_PRODUCTION or state != _LIVE:
            if state != _LIVE:
                logger.warning("rolling back: %s:%s is LIVE again", name, version)
            mv.custom_properties = {**props, STAGE_PROPERTY: STAGE_PRODUCTION}
            mv.state = ModelVersionState.LIVE
            self._call(f"promote {name}:{version}", lambda: client.update(mv))
            changed = True
        archived: list[str] = []
        for other in others:
            other.custom_properties = {
                **(other.custom_properties or {}),
                STAGE_PROPERTY: STAGE_ARCHIVED,
            }
            other.state = ModelVersionState.ARCHIVED
            self._call(f"archive {name}:{other.name}", partial(client.update, other))
            archived.append(f"{name}:{other.name}")
        message = f"{name}:{version} is production"
        if archived:
            message += f"; archived {', '.join(archived)}"
        elif not changed:
            message += " (it already was; nothing changed)"
        logger.info("%s", message)
        return message

    def production(self, model_name: str) -> ProductionVersion | None:
        """The LIVE version of ``model_name`` whose stage is ``production``, with its results.

        Args:
            model_name: Registered model name.

        Returns:
            The version's record (ids, names, stage, artifact URI) and its stored results
            (None when none are stored), or None when the model or such a version does not
            exist. Should several versions claim production (an interrupted promotion), the
            most recently updated one wins.

        Raises:
            RegistryError: The registry is unreachable, or the version has no model artifact.
        """
        from modelgate.evaluate import EvalResult

        client = self._connect()
        rm = self._call(
            f"look up model {model_name!r}", lambda: client.get_registered_model(model_name)
        )
        if rm is None:
            return None
        live = [
            v
            for v in self._versions(client, model_name)
            if _state(v) == _LIVE and _stage(v) == STAGE_PRODUCTION
        ]
        if not live:
            return None
        if len(live) > 1:
            logger.warning(
                "%s has %d production versions (%s); using the most recently updated",
                model_name,
                len(live),
                ", ".join(v.name for v in live),
            )
        mv = max(live, key=lambda v: (int(v.last_update_time_since_epoch or 0), int(v.id or 0)))
        version = mv.name
        ma = self._call(
            f"look up artifact of {model_name}:{version}",
            lambda: client.get_model_artifact(model_name, version),
        )
        if ma is None:
            raise RegistryError(
                f"{model_name}:{version} is production in {self._url} but has no model artifact"
            )
        props = dict(mv.custom_properties or {})
        results = EvalResult.from_properties(
            props, model=f"{model_name}:{version}", prefix=EVAL_PREFIX
        )
        if results is not None:
            try:
                config = json.loads(str(props.get(EVAL_CONFIG_PROPERTY, "")))
            except ValueError:
                config = None  # absent or truncated
            if isinstance(config, dict):
                results.config = config
        record = RegistryRecord(
            status="registered",
            message=f"{model_name}:{version} is production",
            registered_model_id=rm.id,
            model_version_id=mv.id,
            model_artifact_id=ma.id,
            registry=self._url,
            model_name=model_name,
            version_name=version,
            stage=STAGE_PRODUCTION,
            uri=ma.uri,
            lineage=_lineage(mv),
        )
        return ProductionVersion(record=record, results=results)

    def find_version(self, model_name: str, version_name: str | None = None) -> RegistryRecord:
        """A registered version by name, or the newest LIVE one neither rejected nor archived.

        Args:
            model_name: Registered model name.
            version_name: Version name; None picks the most recently created LIVE version
                whose stage is not ``rejected`` or ``archived``.

        Returns:
            Its record with the artifact ``uri`` and the ``lineage`` it was registered with.

        Raises:
            RegistryError: The model or such a version does not exist, the version has no
                model artifact (left by a failed registration), or the registry is unreachable.
        """
        client = self._connect()
        rm = self._call(
            f"look up model {model_name!r}", lambda: client.get_registered_model(model_name)
        )
        if rm is None:
            raise RegistryError(f"no registered model {model_name!r} in {self._url}")
        if version_name:
            name = version_name
            mv = self._call(
                f"look up {model_name}:{name}",
                lambda: client.get_model_version(model_name, name),
            )
            if mv is None:
                raise RegistryError(f"{model_name} has no version {name!r} in {self._url}")
            message = "found"
        else:
            live = [
                v
                for v in self._versions(client, model_name)
                if _state(v) == _LIVE and _stage(v) not in RETIRED_STAGES
            ]
            if not live:
                raise RegistryError(
                    f"{model_name} has no LIVE version in {self._url} that is neither rejected "
                    "nor archived; release one first, or name the version"
                )
            mv = max(live, key=lambda v: (int(v.create_time_since_epoch or 0), int(v.id or 0)))
            message = "newest live version"
        return self._record_for(client, model_name, mv.name, message=message, stage=_stage(mv))

    # --- internals -----------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn``, which must be safe to repeat (a read, an update that writes a whole state),
        retried on :func:`_transient` failures within :data:`REGISTRY_RETRY`.

        Raises:
            RegistryError: It failed (for good, or transiently until the policy gave up).
        """
        try:
            return REGISTRY_RETRY.call(fn, retry_if=_transient, what=f"{what} in {self._url}")
        except (RegistryError, ConfigError):
            raise
        except Exception as e:  # noqa: BLE001 - client raises many unrelated types
            raise RegistryError(f"{what} in {self._url} failed: {describe_error(e)}") from e

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _verify(self) -> bool | str:
        if not self._is_secure:
            return False
        return self._custom_ca or True

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one client coroutine on a private event loop (avoids the client's nest_asyncio),
        for at most ``timeout`` seconds: mr_openapi's own default is 5 minutes (``rest.py``).

        Raises:
            TimeoutError: No answer in time (the coroutine is cancelled).
        """
        return asyncio.run(asyncio.wait_for(coro, self._timeout))

    def _create(
        self,
        client: ModelRegistry,
        request: RegisterRequest,
        rm: Any,
        *,
        metadata: dict[str, str | int | float | bool],
    ) -> None:
        """Create the registered model (unless ``rm``), the version and its artifact.

        The same three requests as model-registry 0.3.18's ``ModelRegistry.register_model``
        (``_client.py``: ``_register_model``, ``_register_new_version``,
        ``_register_model_artifact``), made one at a time through the client's
        ``ModelRegistryAPIClient`` so that each is retried, and adopted after a lost answer, on
        its own (:meth:`~modelgate.registry.base.BackendBase._create_or_adopt`).

        Raises:
            RegistryError: A create failed, or a clash with what someone else created.
        """
        from model_registry.types import ModelVersion, RegisteredModel

        api, run = client._api, client.async_runner
        name, version = request.model_name, request.version_name
        registration_id = metadata[REGISTRATION_ID_PROPERTY]
        if rm is None:
            rm = self._create_or_adopt(
                f"create model {name!r}",
                create=lambda: run(
                    api.upsert_registered_model(RegisteredModel(name=name, owner=self._author))
                ),
                find=lambda: client.get_registered_model(name),
                ours=lambda found: True,  # a model of that name is the one to register under
            )
        parent = str(rm.id)
        mv = self._create_or_adopt(
            f"create {name}:{version}",
            create=lambda: run(
                api.upsert_model_version(
                    ModelVersion(
                        name=version,
                        author=request.author or self._author,
                        description=request.description,
                        custom_properties=metadata,
                    ),
                    parent,
                )
            ),
            find=lambda: client.get_model_version(name, version),
            ours=lambda found: (
                (found.custom_properties or {}).get(REGISTRATION_ID_PROPERTY) == registration_id
            ),
        )
        self._create_artifact(client, request, str(mv.id))

    def _create_artifact(self, client: ModelRegistry, request: RegisterRequest, mv_id: str) -> None:
        """The version's model artifact, with the KFP source fields when the run is known.

        Raises:
            RegistryError: The create failed, or another artifact is there.
        """
        from model_registry.types import ModelArtifact

        name, version = request.model_name, request.version_name
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
        artifact = ModelArtifact(
            name=name,
            uri=request.uri,
            model_format_name=request.model_format_name,
            model_format_version=request.model_format_version,
            storage_key=request.storage_key,
            storage_path=request.storage_path,
            service_account_name=request.service_account_name,
            **source,
        )
        self._create_or_adopt(
            f"create the model artifact of {name}:{version}",
            create=lambda: client.async_runner(
                client._api.upsert_model_version_artifact(artifact, mv_id)
            ),
            find=lambda: client.get_model_artifact(name, version),
            ours=lambda found: found.uri == request.uri,
        )

    def _probe(self, api_version: str) -> int:
        url = f"{self._url}/api/model_registry/{api_version}/registered_models"
        tries = 0

        def once() -> int:
            nonlocal tries
            tries += 1
            resp = requests.get(
                url,
                params={"pageSize": "1"},
                headers=self._headers(),
                timeout=self._timeout,
                verify=self._verify(),
            )
            if transient_status(resp.status_code):
                raise TransientAnswer(f"{url} answered {resp.status_code}: {resp.text[:200]}")
            return resp.status_code

        unreachable = (requests.ConnectionError, requests.Timeout)
        try:
            return REGISTRY_RETRY.call(
                once,
                retry_if=probe_retry_if(self._connect_attempts, unreachable),
                what=f"probe {url}",
            )
        except (TransientAnswer, requests.RequestException) as e:
            raise RegistryError(
                f"Model Registry at {self._url} is unreachable after {tries} "
                f"attempt(s) ({describe_error(e)}); check {URL_ENV} (expected http(s)://host:port "
                "of the registry REST service) and that the service is up"
            ) from e

    def _connect(self) -> ModelRegistry:
        if self._client is not None:
            return self._client
        if self._is_secure and not self._token:
            raise ConfigError(
                f"the model-registry client needs a bearer token for {self._url} (https): set "
                f"{TOKEN_ENV} (e.g. from a Secret), or {REGISTRY_TOKEN_FILE_ENV} to a token file "
                "such as a projected service-account token with the registry's audience"
            )
        self.check()
        try:
            client_class = _client_class()
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
                lambda: client_class(
                    f"{self._scheme}://{self._host}",
                    self._port,
                    author=self._author,
                    is_secure=self._is_secure,
                    user_token=self._token,
                    custom_ca=self._custom_ca,
                    async_runner=self._run,
                ),
            )
        return self._client

    @staticmethod
    def _names_of(record: RegistryRecord, what: str) -> tuple[str, str]:
        if record.status != "registered" or not record.model_version_id:
            raise ConfigError(f"{what} needs a registered record, got status={record.status!r}")
        if not record.model_name or not record.version_name:
            raise ConfigError(f"{what} needs model_name and version_name on the record")
        return record.model_name, record.version_name

    def _version_of(self, client: ModelRegistry, record: RegistryRecord) -> ModelVersion:
        name, version = record.model_name or "", record.version_name or ""
        mv = self._call(
            f"look up {name}:{version}", lambda: client.get_model_version(name, version)
        )
        if mv is None or mv.id != record.model_version_id:
            raise RegistryError(
                f"model version {name}:{version} (id {record.model_version_id}) is not in "
                f"{self._url} any more (found {mv.id if mv else 'nothing'})"
            )
        return mv

    def _versions(self, client: ModelRegistry, name: str) -> list[ModelVersion]:
        return self._call(
            f"list the versions of {name!r}", lambda: list(client.get_model_versions(name))
        )

    def _restore_model(self, client: ModelRegistry, rm: Any) -> None:
        """Set a registered model left ARCHIVED (by an older modelgate) back to LIVE."""
        from model_registry.types import RegisteredModelState

        logger.warning(
            "registered model %r (id %s) is %s, which hides its versions; an earlier failed "
            "registration left it so: setting it back to LIVE",
            rm.name,
            rm.id,
            _state(rm),
        )
        rm.state = RegisteredModelState.LIVE
        self._call(f"set model {rm.name!r} back to LIVE", lambda: client.update(rm))

    def _existing_version(
        self, client: ModelRegistry, request: RegisterRequest, existing: Any
    ) -> RegistryRecord:
        name, version = request.model_name, request.version_name
        fix = (
            f"choose a new version_name, or register under another registered_model_name "
            f"than {name!r}"
        )
        state = _state(existing)
        run_id = request.properties.get("pipeline_run_id")
        same_run = (
            run_id is not None
            and str(run_id) != ""
            and (existing.custom_properties or {}).get("pipeline_run_id") == run_id
            and _stage(existing) == STAGE_CANDIDATE
        )
        if same_run:  # an earlier attempt of this very step (a retry): finish what it began
            resumed = self._resume(client, request, existing)
            if resumed is not None:
                return resumed
        if state != _LIVE:
            raise RegistryError(
                f"model {name!r} already has a version {version!r} in state {state} (left by an "
                "earlier failed or retired registration); version names cannot be reused (the "
                f"registry API cannot delete versions): {fix}"
            )
        artifact = self._call(
            f"look up artifact of {name}:{version}",
            lambda: client.get_model_artifact(name, version),
        )
        if artifact is None or artifact.uri != request.uri:
            found = artifact.uri if artifact is not None else "no model artifact"
            raise RegistryError(
                f"model {name!r} already has a version {version!r} with {found!r}, not "
                f"{request.uri!r}: {fix}"
            )
        logger.info("%s:%s is already registered with %s; reusing it", name, version, request.uri)
        return self._record_for(
            client,
            name,
            version,
            message="already registered with the same uri (idempotent)",
            stage=_stage(existing),
        )

    def _resume(
        self, client: ModelRegistry, request: RegisterRequest, existing: Any
    ) -> RegistryRecord | None:
        """Complete a version an earlier attempt of the same pipeline run left behind.

        The attempt may have been killed after creating the version, or failed and archived
        it; the step's retry (``set_retry``) then finds it here. It is set LIVE again and gets
        its artifact. None when it is complete, or when its artifact points elsewhere.

        Raises:
            RegistryError: An update or create failed.
        """
        from model_registry.types import ModelVersionState

        name, version = request.model_name, request.version_name
        artifact = self._call(
            f"look up artifact of {name}:{version}",
            lambda: client.get_model_artifact(name, version),
        )
        complete = artifact is not None and _state(existing) == _LIVE
        if complete or (artifact is not None and artifact.uri != request.uri):
            return None  # nothing left to finish (idempotent), or a clash
        logger.warning(
            "%s:%s was left %s by an earlier attempt of run %s; completing it",
            name,
            version,
            "without its artifact" if artifact is None else _state(existing),
            request.properties.get("pipeline_run_id"),
        )
        if _state(existing) != _LIVE:
            existing.state = ModelVersionState.LIVE
            self._call(f"set {name}:{version} back to LIVE", lambda: client.update(existing))
        if artifact is None:
            self._create_artifact(client, request, str(existing.id))
        return self._record_for(
            client,
            name,
            version,
            message="completed what an earlier attempt of this run registered",
            stage=STAGE_CANDIDATE,
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
            raise RegistryError(
                f"{name}:{version} is incomplete in {self._url} (no model artifact: left by a "
                "failed registration?)"
            )
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
            uri=ma.uri,
            lineage=_lineage(mv),
        )

    def _archive_partial(
        self, client: ModelRegistry, name: str, version: str, registration_id: str
    ) -> str:
        """Archive the version a failed registration created; say what happened.

        Only the version is archived, never the registered model: an archived parent would
        hide every later version of the model.
        """
        from model_registry.types import ModelVersionState

        try:
            rm = client.get_registered_model(name)
            mv = client.get_model_version(name, version) if rm is not None else None
            ours = (
                mv is not None
                and (mv.custom_properties or {}).get(REGISTRATION_ID_PROPERTY) == registration_id
            )
            if mv is None or not ours:
                return "nothing had been created" + (
                    f" (registered model {name!r} stays LIVE)" if rm is not None else ""
                )
            mv.state = ModelVersionState.ARCHIVED
            client.update(mv)
        except Exception as e:  # noqa: BLE001 - report, the original error is what matters
            logger.error("cleanup after failed registration of %s:%s failed: %s", name, version, e)
            return f"cleanup failed too ({describe_error(e)}): archive {name}:{version} by hand"
        done = (
            f"archived model version id {mv.id} ({name}:{version}); registered model "
            f"{name!r} stays LIVE"
        )
        logger.warning("failed registration of %s:%s: %s", name, version, done)
        return done
