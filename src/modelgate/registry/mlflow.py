"""The MLflow Model Registry backend: the embedded registry of local runs, and a second backend.

URLs: ``mlflow+sqlite:////abs/path/mlflow.db`` (a SQLite store on this machine, absolute
path; MLflow's artifacts go beside it) or ``mlflow+http(s)://host:port`` (an ``mlflow server``).

What gets written for a version:

* registered model ``model_name`` (slash-free), created on first use;
* an MLflow run in experiment ``modelgate/<model_name>`` holding the lineage as params and tags
  (source repo, revision, commit, quant scheme and recipe, pipeline run id and namespace,
  ``modelgate.source_kind=kfp``), later the metrics and the results, gate report and model card
  as artifacts;
* a model version linked to that run, ``source`` = the stored model's URI, tags: the lineage,
  ``modelgate.version_name`` (modelgate's version name; MLflow numbers versions itself),
  ``modelgate.stage``, later ``modelgate.gate`` and every metric as ``eval.<task>/<metric>``
  (with ``.stderr``, ``.direction``, ``eval.<task>.n``), ``eval.config`` and, when the
  evaluation kept per-sample results, ``eval.samples_uri`` (the samples file in the model
  store, what a later release's gate pairs with) and ``modelgate.samples_artifact`` (the copy
  logged on the run as ``samples.jsonl``); its description is the model card;
* after the serving gate (:meth:`~MLflowRegistry.record_serving`), its measurements as tags
  under the Kubeflow Hub model catalog's names (``ttft_p95``, ``itl_p95``, ``tps_mean``,
  ``hardware_type``, ``hardware_count``, ..., ``serving.*``; see
  :func:`~modelgate.registry.base.serving_properties`), ``modelgate.serving_gate``,
  ``modelgate.serving_summary`` and ``modelgate.serving_report``, and on the run the full report
  (``serving.md``) and the measurements (``serving.json``).

Stages: the alias ``production`` points at the production version; the tag ``modelgate.stage``
says ``candidate``, ``rejected`` (its gate or its serving gate failed), ``production`` or
``archived``.

Idempotency: a version is found by its ``modelgate.version_name`` tag, so re-running the same
pipeline run registers nothing twice; the same name with another URI is a clash, reported with
how to resolve it. A registration that fails half-way deletes what it created (MLflow can).

Retries (an ``mlflow server``): MLflow's own HTTP retries are switched off
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``): they repeat every method, POSTs included, so a
``create_model_version`` whose answer was lost would make a second version. Instead the probe,
the reads and the writes that are safe to repeat (tags, aliases, params, updates) are retried
on transient failures within :data:`~modelgate.registry.base.REGISTRY_RETRY`, each request
limited to ``timeout`` seconds, and a create whose answer was lost is retried by reading first:
what carries this registration's ``modelgate.registration_id`` is adopted.

Credentials: a server URL may carry ``user:password@`` (``mlflow+https://user:pw@host``; MLflow
also reads ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``, which keep it out of the
URL altogether). What this backend shows, logs, returns and records (:meth:`describe`, the
record's ``registry``, messages) has the password replaced by ``***``
(:func:`modelgate.credentials.redact_url`); later steps need the real URL from
``registry_url`` or ``$MODEL_REGISTRY_URL``.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

import requests

from modelgate.credentials import redact_url, scrub
from modelgate.errors import ConfigError, RegistryError
from modelgate.registry.base import (
    GATE_FAILED,
    GATE_PASSED,
    GATE_PROPERTY,
    MODELCAR_PROPERTY,
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
    URL_ENV,
    VERSION_PROPERTY,
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
)

if TYPE_CHECKING:
    from modelgate.evaluate import EvalResult

logger = logging.getLogger(__name__)
T = TypeVar("T")

SCHEME_PREFIX = "mlflow+"
PRODUCTION_ALIAS = "production"
STORE_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql")
MAX_TAG = 100_000  # mlflow.utils.validation.MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH
MAX_DESCRIPTION = 5000
SAMPLES_ARTIFACT_TAG = "modelgate.samples_artifact"
"""Version tag: the URI of the samples file kept on the version's run."""


def is_mlflow_url(url: str) -> bool:
    """True for ``mlflow+<store>://`` registry URLs."""
    return url.strip().startswith(SCHEME_PREFIX)


def tracking_uri(url: str) -> str:
    """The MLflow tracking/registry URI of a ``mlflow+...`` URL.

    Raises:
        ConfigError: Not an ``mlflow+`` URL of a store MLflow's registry supports.
    """
    if not is_mlflow_url(url):
        raise ConfigError(f"{redact_url(url)!r} is not an MLflow registry URL (mlflow+sqlite:///…)")
    uri = url.strip()[len(SCHEME_PREFIX) :]
    scheme = urlsplit(uri).scheme
    if scheme not in STORE_SCHEMES:
        raise ConfigError(
            f"{URL_ENV}={redact_url(url)!r}: MLflow registry stores are "
            f"{', '.join(STORE_SCHEMES)}; e.g. "
            "mlflow+sqlite:////abs/path/mlflow.db or mlflow+http://127.0.0.1:5000"
        )
    if scheme == "sqlite" and not uri.startswith("sqlite:////"):
        raise ConfigError(
            f"{url!r}: a SQLite store needs an absolute path, mlflow+sqlite:////abs/path/mlflow.db"
        )
    return uri


def browse_hint(url: str) -> str:
    """How a person looks at the registry behind ``url`` (its password redacted)."""
    uri = tracking_uri(url)
    if uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {uri}"
    return f"open {redact_url(uri)} in a browser"


class MLflowRegistry(BackendBase):
    """:class:`~modelgate.registry.base.RegistryBackend` on MLflow's Model Registry.

    Args:
        url: ``mlflow+sqlite:///…`` or ``mlflow+http(s)://…`` (see module docstring).
        author: Recorded as ``modelgate.author`` on what this backend creates.
        connect_attempts: Tries of the probe at a server that cannot be reached at all; None:
            as many as :data:`~modelgate.registry.base.REGISTRY_RETRY` allows. A transient
            answer (503) is retried within that policy in any case.
        timeout: Seconds per HTTP request to an MLflow server.

    Raises:
        ConfigError: A malformed URL.
    """

    def __init__(
        self,
        url: str,
        *,
        author: str,
        connect_attempts: int | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self._url = url.strip()
        self._uri = tracking_uri(self._url)
        self._shown = redact_url(self._url)
        """The URL as messages, logs and records show it: without its password."""
        self._author = author
        self._attempts = connect_attempts or REGISTRY_RETRY.attempts
        self._timeout = timeout
        self._artifacts: str | None = None
        self._db: Path | None = None
        if self._uri.startswith("sqlite:///"):
            self._db = Path(unquote(self._uri[len("sqlite:///") :]))
            self._artifacts = (self._db.parent / "artifacts").as_uri()
        # MLflow's own retries repeat POSTs (urllib3 Retry with allowed_methods=None in
        # mlflow/utils/request_utils.py) and would hide a dead server for minutes; ours know
        # which calls are safe to repeat and are bounded (see the module docstring)
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout)))
        self._client_obj: Any = None
        self._retrying = False
        self._checked = False

    # --- RegistryBackend -----------------------------------------------------------------
    def describe(self) -> str:
        """The registry URL, its password redacted."""
        return self._shown

    def check(self) -> None:
        """A server answers ``/health``; a SQLite store opens.

        Raises:
            RegistryError: Unreachable or unusable, naming ``MODEL_REGISTRY_URL``.
        """
        if self._uri.startswith(("http://", "https://")):
            health = self._uri.rstrip("/") + "/health"
            shown = redact_url(health)

            def probe() -> None:
                resp = requests.get(health, timeout=self._timeout)
                if transient_status(resp.status_code):
                    raise TransientAnswer(f"{shown} answered {resp.status_code}")
                if resp.status_code != 200:
                    raise RegistryError(f"{shown} answered {resp.status_code}: no MLflow server")

            unreachable = (requests.ConnectionError, requests.Timeout)
            try:
                REGISTRY_RETRY.call(
                    probe,
                    retry_if=probe_retry_if(self._attempts, unreachable),
                    what=f"probe {shown}",
                )
            except (TransientAnswer, requests.RequestException) as e:
                raise RegistryError(
                    f"MLflow registry at {redact_url(self._uri)} is unreachable "
                    f"({self._describe(e)}); check "
                    f"{URL_ENV} and that `mlflow server` is up"
                ) from e
        if self._db is not None and not self._db.exists():
            # a new embedded registry: created on first write; checking creates nothing
            existing = self._db.parent
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
            if not os.access(existing, os.W_OK | os.X_OK):
                raise RegistryError(f"{self._db} cannot be created: {existing} is read-only")
            return
        self._call(
            "open the registry", lambda: self._client.search_registered_models(max_results=1)
        )
        self._checked = True

    def register_version(self, request: RegisterRequest) -> RegistryRecord:
        """Register ``request`` as a ``candidate`` version (see module docstring).

        Raises:
            RegistryError: Unreachable, a name clash, or the registration failed (what it had
                created is deleted).
        """
        if not self._checked:
            self.check()
        client = self._client
        name, version = request.model_name, request.version_name
        existing = self._find(name, version)
        if existing is not None:
            if existing.source != request.uri:
                raise RegistryError(
                    f"{name} already has a version named {version!r} (MLflow version "
                    f"{existing.version}) with {existing.source!r}, not {request.uri!r}: give "
                    "another registered_model_name, or run the pipeline again (a new run id "
                    "makes a new version name)"
                )
            logger.info(
                "%s:%s is already registered as version %s", name, version, existing.version
            )
            return self._record(existing, message="already registered with the same uri")
        created_model = False
        if self._registered_model(name) is None:
            self._create_or_adopt(
                f"create model {name}",
                create=lambda: client.create_registered_model(
                    name, tags={"modelgate.author": self._author}, description=request.description
                ),
                find=lambda: self._registered_model(name),
                ours=lambda found: True,  # a model of that name is the one to register under
            )
            created_model = True
        run_id = None
        mv = None
        registration_id = uuid.uuid4().hex
        try:
            tags = {k: str(v) for k, v in request.properties.items()}
            tags |= {
                VERSION_PROPERTY: version,
                STAGE_PROPERTY: STAGE_CANDIDATE,
                REGISTRATION_ID_PROPERTY: registration_id,
                "modelgate.source_kind": "kfp"
                if request.properties.get("pipeline_run_id")
                else "local",
                "modelgate.author": request.author or self._author,
            }
            experiment_id = self._experiment(name)
            run = self._create_or_adopt(
                f"create the run of {name}:{version}",
                create=lambda: client.create_run(experiment_id, tags=tags, run_name=version),
                find=lambda: self._run_of(experiment_id, registration_id),
                ours=lambda found: True,  # found by this registration's id
            )
            run_id = run.info.run_id
            for key, value in request.properties.items():
                self._call(
                    f"log param {key}", partial(client.log_param, run_id, key, str(value)[:6000])
                )
            mv = self._create_or_adopt(
                f"create {name}:{version}",
                create=lambda: client.create_model_version(
                    name,
                    source=request.uri,
                    run_id=run_id,
                    tags=tags,
                    description=request.description,
                ),
                find=lambda: self._find(name, version),
                ours=lambda found: (
                    (found.tags or {}).get(REGISTRATION_ID_PROPERTY) == registration_id
                ),
            )
            self._call(f"end the run of {name}:{version}", lambda: client.set_terminated(run_id))
        except Exception as e:  # noqa: BLE001 - every failure must clean up and re-raise
            undone = self._undo(name, run_id, created_model, version=mv)
            raise RegistryError(
                f"registering {name}:{version} in {self._shown} failed: {self._describe(e)}; "
                f"{undone}"
            ) from e
        logger.info(
            "registered %s:%s as MLflow version %s (%s)", name, version, mv.version, request.uri
        )
        return self._record(mv, message="registered")

    def attach_evaluation(
        self,
        record: RegistryRecord,
        *,
        results: EvalResult,
        gate_passed: bool,
        gate_report: str,
        card: str,
    ) -> RegistryRecord:
        """Store results, gate decision, report and card on the version (and its run).

        Raises:
            ConfigError: ``record`` is not a registered record.
            RegistryError: The version is gone or the update failed.
        """
        mv = self._version_of(record)
        client = self._client
        stage = STAGE_CANDIDATE if gate_passed else STAGE_REJECTED
        tags: dict[str, str] = {
            k: repr(v) if isinstance(v, float) else str(v)
            for k, v in results.to_properties().items()
        }
        tags |= {
            "eval.config": json.dumps(results.config, default=str)[:MAX_TAG],
            GATE_PROPERTY: GATE_PASSED if gate_passed else GATE_FAILED,
            "modelgate.gate_report": gate_report[:MAX_TAG],
            STAGE_PROPERTY: stage,
        }
        for key, value in tags.items():
            self._call(
                f"tag {record.model_name}:{record.version_name}",
                partial(client.set_model_version_tag, mv.name, mv.version, key, value),
            )
        self._call(
            f"describe {record.model_name}:{record.version_name}",
            lambda: client.update_model_version(
                mv.name, mv.version, description=card[:MAX_DESCRIPTION]
            ),
        )
        if mv.run_id:
            run_id = mv.run_id
            for metric, score in results.flat().items():
                self._call("log metric", partial(client.log_metric, run_id, metric, score))
            self._call(
                "log results", lambda: client.log_dict(run_id, results.to_dict(), "results.json")
            )
            self._call("log gate", lambda: client.log_text(run_id, gate_report, "gate.md"))
            self._call("log card", lambda: client.log_text(run_id, card, "model_card.md"))
            if results.samples_uri:
                self._log_samples(mv, results.samples_uri)
        logger.info(
            "recorded evaluation on %s:%s: gate %s",
            record.model_name,
            record.version_name,
            tags[GATE_PROPERTY],
        )
        return record.model_copy(
            update={"stage": stage, "message": f"evaluation recorded: {stage}"}
        )

    def _log_samples(self, mv: Any, uri: str) -> None:
        """Keep the samples file ``uri`` on the version's run (``samples.jsonl``, read and
        checked on the way) and tag the version with that copy's URI
        (``modelgate.samples_artifact``); ``eval.samples_uri`` names the store's copy, which
        gates read.

        Raises:
            EvaluationError: The samples file is malformed.
            StorageError: It cannot be read.
            RegistryError: The upload or the tag failed.
        """
        import tempfile

        from modelgate.samples import SAMPLES_NAME, read_samples, write_samples

        sset = read_samples(uri)
        client, run_id = self._client, mv.run_id
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / SAMPLES_NAME
            write_samples(sset, local)
            self._call("log samples", lambda: client.log_artifact(run_id, str(local)))
        artifact = self._call("read the run", lambda: client.get_run(run_id)).info.artifact_uri
        self._call(
            "tag samples",
            partial(
                client.set_model_version_tag,
                mv.name,
                mv.version,
                SAMPLES_ARTIFACT_TAG,
                f"{str(artifact).rstrip('/')}/{SAMPLES_NAME}",
            ),
        )

    # record_serving: BackendBase's, with these steps.

    serving_text_limit = MAX_TAG

    def _read_serving_stage(self, record: RegistryRecord) -> tuple[Any, str | None]:
        """The version and its stage: ``production`` by its tag or the ``production`` alias."""
        mv = self._version_of(record)
        current = (mv.tags or {}).get(STAGE_PROPERTY)
        alias = self._by_alias(mv.name)
        if alias is not None and str(alias.version) == str(mv.version):
            current = STAGE_PRODUCTION
        return mv, current

    def _write_serving(self, version: Any, serving: ServingWrite) -> None:
        """Tags (earlier measurement tags removed, the stage last), and on the version's run the
        full report (``serving.md``) and the measurements (``serving.json``)."""
        mv, client, what = version, self._client, serving.what
        stale = [k for k in (mv.tags or {}) if is_serving_property(k) and k not in serving.updates]
        for key in stale:  # a tag that is not there is no error (MLflow's stores)
            self._call(
                f"untag {what}", partial(client.delete_model_version_tag, mv.name, mv.version, key)
            )
        tags = {k: repr(v) if isinstance(v, float) else str(v) for k, v in serving.updates.items()}
        if serving.stage is not None:
            tags[STAGE_PROPERTY] = serving.stage
        for key, value in tags.items():  # the stage last
            self._call(
                f"tag {what}",
                partial(client.set_model_version_tag, mv.name, mv.version, key, value),
            )
        if mv.run_id:
            run_id = mv.run_id
            measured = {k: v for k, v in serving.updates.items() if is_serving_property(k)}
            self._call(
                "log serving report", lambda: client.log_text(run_id, serving.report, "serving.md")
            )
            self._call(
                "log serving measurements",
                lambda: client.log_dict(
                    run_id,
                    {
                        "passed": serving.passed,
                        "summary": serving.summary.strip(),
                        "properties": measured,
                    },
                    "serving.json",
                ),
            )

    def record_modelcar(self, record: RegistryRecord, *, uri: str) -> None:
        """The version's modelcar URI as its tag ``modelgate.modelcar`` (an MLflow version has
        one source; it keeps the stored model's URI).

        Raises:
            ConfigError: The record is not registered.
            RegistryError: The version is gone, or the tag could not be written.
        """
        mv = self._version_of(record)
        tag = partial(self._client.set_model_version_tag, mv.name, mv.version)
        self._call(f"tag {mv.name}:{mv.version}", lambda: tag(MODELCAR_PROPERTY, uri))
        logger.info("recorded modelcar %s on %s:%s", uri, mv.name, mv.version)

    def promote(self, record: RegistryRecord) -> str:
        """Point the ``production`` alias at the version; archive the one it pointed at.

        Raises:
            RegistryError: The version is gone, its gate did not pass, it is rejected (its
                serving gate failed), or the update failed.
        """
        mv = self._version_of(record)
        tags = mv.tags or {}
        if tags.get(GATE_PROPERTY) != GATE_PASSED:
            raise RegistryError(
                f"{record.model_name}:{record.version_name} has no passed gate "
                f"({GATE_PROPERTY}={tags.get(GATE_PROPERTY)!r}); it cannot be production"
            )
        failed = tags.get(SERVING_GATE_PROPERTY) == GATE_FAILED
        if failed or tags.get(STAGE_PROPERTY) == STAGE_REJECTED:
            raise RegistryError(
                f"{record.model_name}:{record.version_name} is rejected"
                f"{' (its serving gate failed)' if failed else ''}; a rejected version never "
                "becomes production: register and evaluate a new version"
            )
        client = self._client
        previous = self._by_alias(mv.name)
        done = f"{record.model_name}:{record.version_name} is production"
        if previous is not None and previous.version != mv.version:
            self._call(
                "archive previous",
                lambda: client.set_model_version_tag(
                    mv.name, previous.version, STAGE_PROPERTY, STAGE_ARCHIVED
                ),
            )
            old = (previous.tags or {}).get(VERSION_PROPERTY, previous.version)
            done += f"; archived {record.model_name}:{old}"
        self._call(
            "set alias",
            lambda: client.set_registered_model_alias(mv.name, PRODUCTION_ALIAS, mv.version),
        )
        self._call(
            "tag production",
            lambda: client.set_model_version_tag(
                mv.name, mv.version, STAGE_PROPERTY, STAGE_PRODUCTION
            ),
        )
        logger.info(done)
        return done

    def production(self, model_name: str) -> ProductionVersion | None:
        """The version the ``production`` alias points at, with its stored results."""
        from modelgate.evaluate import EvalResult

        if not self._checked:
            self.check()
        mv = self._by_alias(model_name)
        if mv is None:
            return None
        tags = dict(mv.tags or {})
        results = EvalResult.from_properties(
            tags, model=f"{model_name}:{tags.get(VERSION_PROPERTY, mv.version)}"
        )
        if results is not None:  # the lm-eval settings, to check a pairing against
            try:
                config = json.loads(tags.get("eval.config", ""))
            except ValueError:
                config = None  # absent or cut
            if isinstance(config, dict):
                results.config = config
        return ProductionVersion(record=self._record(mv, message="production"), results=results)

    def find_version(self, model_name: str, version_name: str | None = None) -> RegistryRecord:
        """A version by modelgate's name, or the newest one neither rejected nor archived.

        Raises:
            RegistryError: No such version.
        """
        if not self._checked:
            self.check()
        if version_name:
            mv = self._find(model_name, version_name)
            if mv is None:
                raise RegistryError(
                    f"{model_name} has no version {version_name!r} in {self._shown}"
                )
            return self._record(mv, message="found", lineage=True)
        client = self._client
        versions = self._call(
            f"list versions of {model_name}",
            lambda: client.search_model_versions(f"name = '{model_name}'"),
        )
        live = [v for v in versions if (v.tags or {}).get(STAGE_PROPERTY) not in RETIRED_STAGES]
        if not live:
            raise RegistryError(
                f"{model_name} has no version in {self._shown} that is neither rejected nor "
                "archived; release one first, or name the version"
            )
        newest = max(live, key=lambda v: (v.creation_timestamp or 0, int(v.version)))
        return self._record(newest, message="newest live version", lineage=True)

    # --- internals -----------------------------------------------------------------------
    @property
    def _client(self) -> Any:
        if self._client_obj is None:
            from mlflow.tracking import MlflowClient

            if self._db is not None:
                self._db.parent.mkdir(parents=True, exist_ok=True)
            self._client_obj = MlflowClient(tracking_uri=self._uri, registry_uri=self._uri)
        return self._client_obj

    def _describe(self, e: BaseException) -> str:
        """:func:`describe_error` without the URL's secrets (MLflow's messages quote the URL)."""
        return scrub(describe_error(e), self._url)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn``, which must be safe to repeat (a read, a tag, an alias, an update), retried
        on :meth:`_transient` failures within :data:`REGISTRY_RETRY`.

        Raises:
            RegistryError: It failed (for good, or transiently until the policy gave up).
        """
        if self._retrying:  # part of a call that is being retried as a whole: it retries
            return fn()
        self._retrying = True
        try:
            return REGISTRY_RETRY.call(fn, retry_if=self._transient, what=what)
        except (RegistryError, ConfigError):
            raise
        except Exception as e:  # noqa: BLE001 - MLflow and requests raise many types
            raise RegistryError(f"{what} in {self._shown} failed: {self._describe(e)}") from e
        finally:
            self._retrying = False

    def _transient(self, e: BaseException) -> bool:
        """A failure of an ``mlflow server`` call worth another try: no connection, no answer
        in time, or a 5xx/408/429 answer (a SQLite store has none of these)."""
        from mlflow.exceptions import MlflowException

        if not self._uri.startswith(("http://", "https://")):
            return False
        lost = (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError)
        cause: BaseException | None = e
        while cause is not None:  # mlflow re-raises requests' errors as MlflowException
            if isinstance(cause, lost):
                return True
            cause = cause.__cause__ or cause.__context__
        return isinstance(e, MlflowException) and transient_status(e.get_http_status_code())

    def _registered_model(self, name: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        def read() -> Any | None:
            try:
                return self._client.get_registered_model(name)
            except MlflowException as e:
                if getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise

        return self._call(f"read model {name}", read)

    def _run_of(self, experiment_id: str, registration_id: str) -> Any | None:
        """The run a registration created (found by its ``modelgate.registration_id`` tag)."""
        found = self._client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{REGISTRATION_ID_PROPERTY}` = '{registration_id}'",
            max_results=1,
        )
        return found[0] if found else None

    def _experiment(self, model_name: str) -> str:
        name = f"modelgate/{model_name}"
        client = self._client
        found = self._call("find experiment", lambda: client.get_experiment_by_name(name))
        if found is not None:
            return found.experiment_id
        made = self._create_or_adopt(
            "create experiment",
            create=lambda: client.create_experiment(
                name, artifact_location=self._artifacts and f"{self._artifacts}/{model_name}"
            ),
            find=lambda: client.get_experiment_by_name(name),
            ours=lambda found: True,  # modelgate's experiment of this model
        )
        return made if isinstance(made, str) else made.experiment_id

    def _find(self, name: str, version: str) -> Any | None:
        client = self._client
        found = self._call(
            f"look up {name}:{version}",
            lambda: client.search_model_versions(
                f"name = '{name}' and tags.`{VERSION_PROPERTY}` = '{version}'"
            ),
        )
        return found[0] if found else None

    def _by_alias(self, name: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        def read() -> Any | None:
            try:
                return self._client.get_model_version_by_alias(name, PRODUCTION_ALIAS)
            except MlflowException as e:
                if getattr(e, "error_code", "") in (
                    "RESOURCE_DOES_NOT_EXIST",
                    "INVALID_PARAMETER_VALUE",
                ):
                    return None
                raise

        return self._call(f"reading the production alias of {name}", read)

    def _version_of(self, record: RegistryRecord) -> Any:
        if record.status != "registered" or not record.model_name or not record.version_name:
            raise ConfigError(f"needs a registered record, got status={record.status!r}")
        mv = self._find(record.model_name, record.version_name)
        if mv is None:
            raise RegistryError(
                f"{record.model_name}:{record.version_name} is not in {self._shown} any more"
            )
        return mv

    def _record(self, mv: Any, *, message: str, lineage: bool = False) -> RegistryRecord:
        tags = dict(mv.tags or {})
        lineage_tags = {
            k: v
            for k, v in tags.items()
            if lineage and not k.startswith(("modelgate.", "eval.")) and not is_serving_property(k)
        }
        return RegistryRecord(
            lineage=lineage_tags,
            status="registered",
            message=message,
            registered_model_id=mv.name,
            model_version_id=str(mv.version),
            model_artifact_id=mv.run_id,
            registry=self._shown,
            model_name=mv.name,
            version_name=tags.get(VERSION_PROPERTY, str(mv.version)),
            stage=tags.get(STAGE_PROPERTY),
            uri=mv.source,
        )

    def _undo(
        self, name: str, run_id: str | None, created_model: bool, *, version: Any = None
    ) -> str:
        client = self._client
        done = []
        try:
            if version is not None and not created_model:
                client.delete_model_version(name, version.version)
                done.append(f"deleted its version {version.version}")
            if run_id:
                client.delete_run(run_id)
                done.append("deleted its MLflow run")
            if created_model:
                client.delete_registered_model(name)
                done.append(f"deleted the new registered model {name}")
        except Exception as e:  # noqa: BLE001 - report; the original error is what matters
            return f"cleanup failed too ({describe_error(e)}): check {name} by hand"
        return ", ".join(done) or "nothing had been created"
