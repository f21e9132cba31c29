"""What every registry backend shares: requests, records, stages and the interface.

Stages of a version (``modelgate.stage``): ``candidate`` when registered; ``rejected`` when its
gate failed (it stays registered, with its decision and card, never production); ``production``
once deployed and past the post-deploy checks (MLflow: the alias ``production``); ``archived``
when a newer version replaced it in production. ``modelgate.gate`` holds the gate decision,
``passed`` or ``failed``; ``modelgate.serving_gate`` the serving gate's (the benchmark of the
deployed candidate, :func:`serving_properties` for what it measured), and a failed serving gate
makes the version ``rejected`` too.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

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

from modelgate.constants import REGISTRY_TOKEN_ENV, REGISTRY_URL_ENV
from modelgate.errors import ConfigError, RegistryError
from modelgate.retry import RetryPolicy

if TYPE_CHECKING:
    from modelgate.evaluate import EvalResult

logger = logging.getLogger(__name__)
T = TypeVar("T")

PropertyValue = StrictBool | StrictInt | StrictFloat | StrictStr
"""A custom property value: the types the registries store natively."""

URL_ENV = REGISTRY_URL_ENV
TOKEN_ENV = REGISTRY_TOKEN_ENV
AUTHOR_ENV = "MODEL_REGISTRY_AUTHOR"
DEFAULT_AUTHOR = "modelgate"

SKIPPED_MESSAGE = f"skipped: no registry configured (set {URL_ENV})"
"""Message of the record returned when no registry is configured."""

STAGE_PROPERTY = "modelgate.stage"
GATE_PROPERTY = "modelgate.gate"
REGISTRATION_ID_PROPERTY = "modelgate.registration_id"
VERSION_PROPERTY = "modelgate.version_name"
STAGE_CANDIDATE = "candidate"
STAGE_REJECTED = "rejected"
STAGE_PRODUCTION = "production"
STAGE_ARCHIVED = "archived"
#: Stages a redeploy never picks by itself.
RETIRED_STAGES = frozenset({"rejected", "archived"})
GATE_PASSED = "passed"
GATE_FAILED = "failed"
GATE_REPORT_MAX_CHARS = 8000
"""Gate reports and cards are cut to this many characters in a property (DB column size)."""

MODELCAR_ARTIFACT = "modelcar"
"""Name of the version's second model artifact in Kubeflow Model Registry: its KServe modelcar
(``oci://<repository>@sha256:…``, the package step); the first keeps the stored model's URI."""
MODELCAR_PROPERTY = "modelgate.modelcar"
"""The version's modelcar URI where a registry has one artifact per version (an MLflow tag)."""

SERVING_GATE_PROPERTY = "modelgate.serving_gate"
"""The serving gate's verdict on a version, ``passed`` or ``failed``."""
SERVING_REPORT_PROPERTY = "modelgate.serving_report"
SERVING_SUMMARY_PROPERTY = "modelgate.serving_summary"
"""The serving gate's one-line verdict; for a failed gate, why the version is ``rejected``."""
SERVING_PREFIX = "serving."
"""Prefix of measurements of the serving gate that the model catalog has no name for."""

# What the serving gate measured carries the names and value types of the Kubeflow Hub model
# catalog's performance metrics (kubeflow/hub, formerly kubeflow/model-registry: the
# ``metricsType: performance-metrics`` artifacts of docs/catalog-yaml-reference.md, "Performance
# Metrics": "Common performance metric keys: ttft_mean/p90/p95/p99, e2e_mean/p90/p95/p99,
# tps_mean/p90/p95/p99, itl_mean/p90/p95/p99, requests_per_second, mean_input_tokens,
# mean_output_tokens", each a MetadataDoubleValue, latencies in ms; hardware_type a
# MetadataStringValue and hardware_count a MetadataIntValue, as in
# catalog/internal/catalog/modelcatalog/testdata/dev-validated-models.yaml; the catalog's
# performance endpoints default to these names, api/openapi/src/catalog.yaml rpsProperty,
# latencyProperty, hardwareCountProperty, hardwareTypeProperty). So a version's measurements
# read like a catalog model's.
SERVING_TTFT_P95 = "ttft_p95"
"""95th percentile time to first token, ms (alias ``latency_ttft_p95_ms``)."""
SERVING_ITL_P95 = "itl_p95"
"""95th percentile inter-token latency, ms (alias ``latency_itl_p95_ms``)."""
SERVING_OUTPUT_TPS = "tps_mean"
"""Mean output tokens per second (alias ``throughput_output_tps``). The catalog
documents ``tps_*`` as "Tokens per second"; in its sample rows tps_mean comes close to
requests_per_second times mean_output_tokens, i.e. generated tokens: what GuideLLM reports as
output tokens per second."""
SERVING_REQUESTS_PER_SECOND = "requests_per_second"
SERVING_HARDWARE_TYPE = "hardware_type"
"""Accelerator model, e.g. ``"H100"`` (a string)."""
SERVING_HARDWARE_COUNT = "hardware_count"
"""Accelerators per replica (an int)."""
SERVING_ALIASES = {
    "latency_ttft_p95_ms": SERVING_TTFT_P95,
    "latency_itl_p95_ms": SERVING_ITL_P95,
    "throughput_output_tps": SERVING_OUTPUT_TPS,
}
"""Descriptive names also accepted by :func:`serving_properties`, stored under the catalog's."""
_SERVING_DOUBLES = frozenset(
    {SERVING_REQUESTS_PER_SECOND, "mean_input_tokens", "mean_output_tokens"}
    | {f"{m}_{s}" for m in ("ttft", "itl", "e2e", "tps") for s in ("mean", "p90", "p95", "p99")}
)
_SERVING_INTS = frozenset({SERVING_HARDWARE_COUNT})
_SERVING_STRINGS = frozenset({SERVING_HARDWARE_TYPE})
SERVING_NAMES = _SERVING_DOUBLES | _SERVING_INTS | _SERVING_STRINGS
"""The catalog's names :func:`serving_properties` accepts (besides ``serving.*``)."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

REQUEST_TIMEOUT = 10.0
"""Seconds for one request to a registry (the ``model-registry`` client's own is 5 minutes)."""
REGISTRY_RETRY = RetryPolicy(attempts=5, base_delay=0.5, max_delay=4.0, deadline=10.0)
"""How both backends retry the probe and every call that is safe to repeat (reads, updates
that write a whole state, creates that read back first): transient failures (no answer within
:data:`REQUEST_TIMEOUT`, a dropped connection, a 5xx, 408 or 429 answer) are tried again with
0.5, 1, 2, 4 s pauses, and none starts 10 s after the first try, so a registry that restarts
or whose proxy answers 503 for a moment does not stop a release and a dead one fails within
seconds."""


def transient_status(status: int | None) -> bool:
    """An HTTP status worth another try: 5xx, 408 (request timeout), 429 (too many requests)."""
    return status is not None and (status >= 500 or status in (408, 429))


class TransientAnswer(Exception):
    """A registry answered the probe with a :func:`transient_status`: it is up, but not ready."""


def probe_retry_if(
    connect_attempts: int, unreachable: tuple[type[BaseException], ...]
) -> Callable[[BaseException], bool]:
    """What a reachability probe retries (for :func:`modelgate.retry.backoff`'s ``retry_if``).

    A :class:`TransientAnswer` always (within :data:`REGISTRY_RETRY`): the server is there. An
    ``unreachable`` error (no connection, no answer in time) only until ``connect_attempts``
    tries failed that way, so a caller that wants a dead registry reported at once (preflight)
    still waits out a registry that answers 503 while it restarts.
    """
    failed = 0

    def retry_if(e: BaseException) -> bool:
        nonlocal failed
        if isinstance(e, TransientAnswer):
            return True
        if isinstance(e, unreachable):
            failed += 1
            return failed < connect_attempts
        return False

    return retry_if


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
        reserved |= {k for k in value if is_serving_property(k)}
        if reserved:
            raise ConfigError(
                f"RegisterRequest.properties: {sorted(reserved)} are reserved (the stage, the "
                "registration id and the serving gate's measurements)"
            )
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
        stage: Last ``modelgate.stage`` written (``candidate``, ``rejected``, ``production``,
            ``archived``).
        uri: The model artifact's URI (where KServe fetches the version).
        lineage: The lineage properties it was registered with (for its model card).
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
    uri: str | None = None
    lineage: dict[str, PropertyValue] = Field(default_factory=dict)

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


@dataclass
class ProductionVersion:
    """The version in production, with the results stored on it (None: none stored)."""

    record: RegistryRecord
    results: EvalResult | None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as JSON (the pipeline passes it from the lookup step to the gate)."""
        write_production(self, path)


def write_production(version: ProductionVersion | None, path: str | os.PathLike[str]) -> None:
    """Write ``version`` (or that there is none) as JSON."""
    data = {
        "version": version.record.version_name if version else None,
        "record": version.record.to_dict() if version else None,
        "results": version.results.to_dict() if version and version.results else None,
    }
    Path(path).write_text(json.dumps(data, indent=2))


def read_production(path: str | os.PathLike[str]) -> tuple[EvalResult | None, str | None]:
    """(results, version name) of a production file: what :func:`write_production` wrote, or a
    plain results file (modelgate's or lm-eval's), whose version is its file name.

    The results keep the ``samples_uri`` the registry stored with the version (``eval.
    samples_uri``), so a gate pairs with production's samples without evaluating it again.

    Raises:
        EvaluationError: The file is neither.
    """
    from modelgate.evaluate import EvalResult

    file = Path(path)
    try:
        data = json.loads(file.read_text()) if file.is_file() else None
    except ValueError:
        data = None
    if isinstance(data, dict) and set(data) == {"version", "record", "results"}:
        results = EvalResult.from_dict(data["results"]) if data["results"] else None
        return results, data["version"]
    return EvalResult.load(file), file.stem


@runtime_checkable
class RegistryBackend(Protocol):
    """A model registry: Kubeflow Model Registry (:mod:`.kubeflow`) or MLflow (:mod:`.mlflow`)."""

    def describe(self) -> str:
        """Where this backend points, for logs (e.g. its URL)."""
        ...

    def check(self) -> None:
        """Reachability and API version, for preflight; raises :class:`RegistryError`."""
        ...

    def register_version(self, request: RegisterRequest) -> RegistryRecord:
        """Register ``request`` as a ``candidate`` (idempotent for the same name and URI)."""
        ...

    def attach_evaluation(
        self,
        record: RegistryRecord,
        *,
        results: EvalResult,
        gate_passed: bool,
        gate_report: str,
        card: str,
    ) -> RegistryRecord:
        """Store the results (value, stderr, n per metric; the lm-eval config), the gate
        decision and report, and the model card; a failed gate makes it ``rejected``."""
        ...

    def record_serving(
        self,
        record: RegistryRecord,
        *,
        passed: bool,
        properties: Mapping[str, float | int | str],
        report: str,
        summary: str,
    ) -> RegistryRecord:
        """Store the serving gate's measurements (:func:`serving_properties`, replacing earlier
        ones), verdict, summary and report; a failed gate makes the version ``rejected``. A
        ``production`` version is refused (:func:`serving_stage`); repeating it is harmless."""
        ...

    def record_modelcar(self, record: RegistryRecord, *, uri: str) -> None:
        """Record the version's modelcar ``uri`` (``oci://…@sha256:…``) beside its stored model:
        Kubeflow a :data:`MODELCAR_ARTIFACT` model artifact, MLflow the tag
        :data:`MODELCAR_PROPERTY`. Repeating it is harmless; a new URI replaces the old."""
        ...

    def promote(self, record: RegistryRecord) -> str:
        """Make the version ``production`` and archive the previous one; says what it did."""
        ...

    def production(self, model_name: str) -> ProductionVersion | None:
        """The version of ``model_name`` in production, with its stored results."""
        ...

    def find_version(self, model_name: str, version_name: str | None = None) -> RegistryRecord:
        """A registered version (None: the newest one neither ``rejected`` nor ``archived``),
        its ``uri`` and ``lineage`` filled in; raises :class:`RegistryError` if there is none."""
        ...


def is_serving_property(key: str) -> bool:
    """Whether ``key`` holds a measurement of the serving gate (a catalog name or ``serving.*``)."""
    return key in SERVING_NAMES or key.startswith(SERVING_PREFIX)


def serving_properties(properties: Mapping[str, Any]) -> dict[str, PropertyValue]:
    """The serving gate's measurements as a version stores them: the Kubeflow Hub model
    catalog's names and types (see :data:`SERVING_TTFT_P95` and its neighbours).

    Accepted names: the catalog's (:data:`SERVING_NAMES`; ``ttft_*``, ``itl_*``, ``e2e_*``,
    ``tps_*``, ``requests_per_second``, ``mean_input_tokens`` and ``mean_output_tokens`` are
    numbers, stored as doubles; ``hardware_count`` an int, ``hardware_type`` a string), the
    descriptive :data:`SERVING_ALIASES` (stored under the catalog's name), and any
    ``serving.<name>`` (str, int, float or bool, stored as given).

    Raises:
        ConfigError: Another name (with the closest accepted ones), a value of the wrong type,
            a number that is not finite or does not fit int64, or a name given twice (once by
            its alias).
    """
    what = "serving gate properties"
    _validate_properties(properties, what=what)
    out: dict[str, PropertyValue] = {}
    for given, value in properties.items():
        key = SERVING_ALIASES.get(given, given)
        if key in out:
            raise ConfigError(f"{what}: {key!r} is given twice (as {given!r} too)")
        if key.startswith(SERVING_PREFIX) and len(key) > len(SERVING_PREFIX):
            out[key] = value
        elif key in _SERVING_DOUBLES:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{what}: {key!r} must be a number, got {value!r}")
            out[key] = float(value)
        elif key in _SERVING_INTS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{what}: {key!r} must be a count (int >= 0), got {value!r}")
            out[key] = value
        elif key in _SERVING_STRINGS:
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{what}: {key!r} must be a non-empty string, got {value!r}")
            out[key] = value
        else:
            known = sorted(SERVING_NAMES | set(SERVING_ALIASES))
            close = difflib.get_close_matches(given, known, n=3)
            hint = f"Did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(
                f"{what}: unknown name {given!r}. {hint}Use a Kubeflow model catalog name "
                f"({', '.join(sorted(SERVING_NAMES))}) or {SERVING_PREFIX}<name> for anything else"
            )
    return out


def serving_updates(
    *, passed: bool, properties: Mapping[str, Any], report: str, summary: str, limit: int
) -> dict[str, PropertyValue]:
    """Everything :meth:`RegistryBackend.record_serving` writes but the stage: the measurements
    (:func:`serving_properties`), the verdict, the summary and the report, texts cut to
    ``limit`` characters.

    Raises:
        ConfigError: Bad measurements (:func:`serving_properties`), or a failed gate without a
            summary (the reason of the rejection).
    """
    if not passed and not summary.strip():
        raise ConfigError(
            "a failed serving gate needs a summary: it is why the version is rejected"
        )
    return {
        **serving_properties(properties),
        SERVING_GATE_PROPERTY: GATE_PASSED if passed else GATE_FAILED,
        SERVING_SUMMARY_PROPERTY: truncate(summary.strip(), limit),
        SERVING_REPORT_PROPERTY: truncate(report, limit),
    }


def serving_stage(current: str | None, *, passed: bool, version: str, where: str) -> str | None:
    """The stage a version gets from its serving gate: ``rejected`` when it failed, else the one
    it has (a ``rejected`` or ``archived`` version stays so; passing promotes nothing).

    Raises:
        RegistryError: The version is ``production``: the serving gate benchmarks candidates,
            and a measurement of the version already serving must not reject it or replace
            what was recorded when it was promoted.
    """
    if current == STAGE_PRODUCTION:
        raise RegistryError(
            f"{version} is production in {where}: the serving gate does not record on (or "
            "reject) the production version; benchmark a candidate, or roll back by "
            "redeploying another version"
        )
    return current if passed else STAGE_REJECTED


@dataclass(frozen=True)
class ServingWrite:
    """What :meth:`BackendBase.record_serving` has a backend write on a version."""

    what: str
    """``model:version``, for messages."""
    updates: dict[str, PropertyValue]
    """:func:`serving_updates`: measurements, verdict, summary and report (texts cut)."""
    stage: str | None
    """The stage after it (:func:`serving_stage`); None: the version has none, leave it."""
    passed: bool
    report: str
    """The full report."""
    summary: str


class BackendBase(ABC):
    """What both registry backends run the same way: registrations made safe to repeat
    (:meth:`_create_or_adopt`) and :meth:`RegistryBackend.record_serving`. A backend says how it
    calls its server with retries (:meth:`_call`), how it reads a version's stage and writes
    the serving result (:meth:`_read_serving_stage`, :meth:`_write_serving`), and how long a
    stored text may be (:attr:`serving_text_limit`).
    """

    serving_text_limit: int
    """Texts (summary, report) are cut to this many characters where they are stored."""

    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def _call(self, what: str, fn: Callable[[], T]) -> T: ...

    def _create_or_adopt(
        self,
        what: str,
        *,
        create: Callable[[], T],
        find: Callable[[], T | None],
        ours: Callable[[T], bool],
    ) -> T:
        """:func:`create_or_adopt` through this backend's retries."""
        return create_or_adopt(
            what, create=create, find=find, ours=ours, call=self._call, where=self.describe()
        )

    def record_serving(
        self,
        record: RegistryRecord,
        *,
        passed: bool,
        properties: Mapping[str, float | int | str],
        report: str,
        summary: str,
    ) -> RegistryRecord:
        """Store the serving gate's measurements, verdict, summary and report on the version.

        Earlier measurements are replaced (:func:`is_serving_property`); the lineage, results
        and card stay. A failed gate makes the version ``rejected``; a passed one leaves its
        stage. Every write sets a whole value, so a retried step (or a retried request whose
        answer was lost) writes the same again.

        Args:
            record: A ``"registered"`` record of the deployed candidate.
            passed: The serving gate's verdict, stored as ``modelgate.serving_gate``.
            properties: What it measured (:func:`serving_properties`: catalog names, doubles,
                ``hardware_count`` int, ``hardware_type`` string).
            report: Markdown report, stored as ``modelgate.serving_report`` (truncated).
            summary: One line, stored as ``modelgate.serving_summary``: the reason of the
                rejection when it failed.

        Returns:
            The record with the version's stage after it.

        Raises:
            ConfigError: The record is not registered, a measurement has an unknown name or
                the wrong type, or a failed gate has no summary.
            RegistryError: The version is gone, is ``production`` (never touched), or an
                update failed.
        """
        what = self._serving_version_name(record)
        updates = serving_updates(
            passed=passed,
            properties=properties,
            report=report,
            summary=summary,
            limit=self.serving_text_limit,
        )
        version, current = self._read_serving_stage(record)
        stage = serving_stage(current, passed=passed, version=what, where=self.describe())
        self._write_serving(
            version,
            ServingWrite(
                what=what,
                updates=updates,
                stage=stage,
                passed=passed,
                report=report,
                summary=summary,
            ),
        )
        verdict = updates[SERVING_GATE_PROPERTY]
        logging.getLogger(type(self).__module__).info(
            "recorded serving gate on %s: %s (%s), stage %s",
            what,
            verdict,
            updates[SERVING_SUMMARY_PROPERTY],
            stage,
        )
        return record.model_copy(
            update={"stage": stage, "message": f"serving gate {verdict}: {summary.strip()}"}
        )

    def _serving_version_name(self, record: RegistryRecord) -> str:
        """``model:version`` of the record, for messages; a backend may check the record here,
        before the measurements are."""
        return f"{record.model_name}:{record.version_name}"

    @abstractmethod
    def _read_serving_stage(self, record: RegistryRecord) -> tuple[Any, str | None]:
        """The version as :meth:`_write_serving` takes it, and its stage now (``production``
        for the version serving in production, however the backend marks it).

        Raises:
            ConfigError: The record is not registered.
            RegistryError: The version is gone.
        """

    @abstractmethod
    def _write_serving(self, version: Any, serving: ServingWrite) -> None:
        """Write ``serving.updates`` and ``serving.stage`` (None: leave it) on the version,
        removing earlier measurements not among them."""


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f"\n...[truncated {len(text) - limit} chars]"
    return text[: limit - len(marker)] + marker


def describe_error(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:500]}" if text else type(e).__name__


def create_or_adopt(
    what: str,
    *,
    create: Callable[[], T],
    find: Callable[[], T | None],
    ours: Callable[[T], bool],
    call: Callable[[str, Callable[[], T]], T],
    where: str,
) -> T:
    """``create()``, made safe to repeat through a backend's retrying ``call``: after a failed
    try (the server may have stored it and lost only the answer) each further try reads first
    and adopts what ``find`` returns when ``ours`` says this registration made it.

    Args:
        what: What is created, for messages.
        create: The create request.
        find: Reads what a lost create would have stored (None: nothing).
        ours: Whether a found object carries this registration's id.
        call: The backend's retrying caller, ``call(what, fn)``.
        where: The registry, as it may be shown (credentials removed).

    Raises:
        RegistryError: The create failed, or ``find`` returned something not ``ours``.
    """
    tried = False

    def once() -> T:
        nonlocal tried
        if tried:
            found = find()
            if found is not None:
                if not ours(found):
                    raise RegistryError(
                        f"{what} in {where}: created meanwhile by another registration"
                    )
                logger.warning(
                    "%s: the answer was lost but the registry had done it; adopting %s",
                    what,
                    getattr(found, "id", "it"),
                )
                return found
        tried = True
        return create()

    return call(what, once)
