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
  (with ``.stderr``, ``.direction``, ``eval.<task>.n``); its description is the model card.

Stages: the alias ``production`` points at the production version; the tag ``modelgate.stage``
says ``candidate``, ``rejected``, ``production`` or ``archived``.

Idempotency: a version is found by its ``modelgate.version_name`` tag, so re-running the same
pipeline run registers nothing twice; the same name with another URI is a clash, reported with
how to resolve it. A registration that fails half-way deletes what it created (MLflow can).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

import requests

from modelgate.errors import ConfigError, RegistryError
from modelgate.registry.base import (
    GATE_FAILED,
    GATE_PASSED,
    GATE_PROPERTY,
    REGISTRATION_ID_PROPERTY,
    RETIRED_STAGES,
    STAGE_ARCHIVED,
    STAGE_CANDIDATE,
    STAGE_PRODUCTION,
    STAGE_PROPERTY,
    STAGE_REJECTED,
    URL_ENV,
    VERSION_PROPERTY,
    ProductionVersion,
    RegisterRequest,
    RegistryRecord,
    describe_error,
)
from modelgate.retry import backoff

if TYPE_CHECKING:
    from modelgate.evaluate import EvalResult

logger = logging.getLogger(__name__)
T = TypeVar("T")

SCHEME_PREFIX = "mlflow+"
PRODUCTION_ALIAS = "production"
STORE_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql")
MAX_TAG = 100_000  # mlflow.utils.validation.MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH
MAX_DESCRIPTION = 5000


def is_mlflow_url(url: str) -> bool:
    """True for ``mlflow+<store>://`` registry URLs."""
    return url.strip().startswith(SCHEME_PREFIX)


def tracking_uri(url: str) -> str:
    """The MLflow tracking/registry URI of a ``mlflow+...`` URL.

    Raises:
        ConfigError: Not an ``mlflow+`` URL of a store MLflow's registry supports.
    """
    if not is_mlflow_url(url):
        raise ConfigError(f"{url!r} is not an MLflow registry URL (mlflow+sqlite:///…)")
    uri = url.strip()[len(SCHEME_PREFIX) :]
    scheme = urlsplit(uri).scheme
    if scheme not in STORE_SCHEMES:
        raise ConfigError(
            f"{URL_ENV}={url!r}: MLflow registry stores are {', '.join(STORE_SCHEMES)}; e.g. "
            "mlflow+sqlite:////abs/path/mlflow.db or mlflow+http://127.0.0.1:5000"
        )
    if scheme == "sqlite" and not uri.startswith("sqlite:////"):
        raise ConfigError(
            f"{url!r}: a SQLite store needs an absolute path, mlflow+sqlite:////abs/path/mlflow.db"
        )
    return uri


def browse_hint(url: str) -> str:
    """How a person looks at the registry behind ``url``."""
    uri = tracking_uri(url)
    if uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {uri}"
    return f"open {uri} in a browser"


class MLflowRegistry:
    """:class:`~modelgate.registry.base.RegistryBackend` on MLflow's Model Registry.

    Args:
        url: ``mlflow+sqlite:///…`` or ``mlflow+http(s)://…`` (see module docstring).
        author: Recorded as ``modelgate.author`` on what this backend creates.
        connect_attempts: Tries for a server that does not answer (transient errors only).
        timeout: Seconds per HTTP request to an MLflow server.

    Raises:
        ConfigError: A malformed URL.
    """

    def __init__(
        self, url: str, *, author: str, connect_attempts: int = 3, timeout: float = 10.0
    ) -> None:
        self._url = url.strip()
        self._uri = tracking_uri(self._url)
        self._author = author
        self._attempts = connect_attempts
        self._timeout = timeout
        self._artifacts: str | None = None
        self._db: Path | None = None
        if self._uri.startswith("sqlite:///"):
            self._db = Path(unquote(self._uri[len("sqlite:///") :]))
            self._artifacts = (self._db.parent / "artifacts").as_uri()
        # the client's own retries would hide a dead server for minutes; ours are bounded
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout)))
        self._client_obj: Any = None
        self._checked = False

    # --- RegistryBackend -----------------------------------------------------------------
    def describe(self) -> str:
        """The registry URL."""
        return self._url

    def check(self) -> None:
        """A server answers ``/health``; a SQLite store opens.

        Raises:
            RegistryError: Unreachable or unusable, naming ``MODEL_REGISTRY_URL``.
        """
        if self._uri.startswith(("http://", "https://")):
            health = self._uri.rstrip("/") + "/health"

            def probe() -> None:
                resp = requests.get(health, timeout=self._timeout)
                if resp.status_code >= 500:
                    raise requests.ConnectionError(f"{health} answered {resp.status_code}")
                if resp.status_code != 200:
                    raise RegistryError(f"{health} answered {resp.status_code}: no MLflow server")

            try:
                backoff(
                    probe,
                    retry_on=(requests.ConnectionError, requests.Timeout),
                    attempts=self._attempts,
                    what=f"probe {health}",
                )
            except requests.RequestException as e:
                raise RegistryError(
                    f"MLflow registry at {self._uri} is unreachable ({describe_error(e)}); check "
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
        from mlflow.exceptions import MlflowException

        created_model = False
        try:
            client.get_registered_model(name)
        except MlflowException as e:
            if getattr(e, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise RegistryError(f"reading model {name} in {self._url} failed: {e}") from e
            self._call(
                f"create model {name}",
                lambda: client.create_registered_model(
                    name, tags={"modelgate.author": self._author}, description=request.description
                ),
            )
            created_model = True
        run_id = None
        try:
            tags = {k: str(v) for k, v in request.properties.items()}
            tags |= {
                VERSION_PROPERTY: version,
                STAGE_PROPERTY: STAGE_CANDIDATE,
                REGISTRATION_ID_PROPERTY: f"{name}:{version}",
                "modelgate.source_kind": "kfp"
                if request.properties.get("pipeline_run_id")
                else "local",
                "modelgate.author": request.author or self._author,
            }
            run = client.create_run(self._experiment(name), tags=tags, run_name=version)
            run_id = run.info.run_id
            for key, value in request.properties.items():
                client.log_param(run_id, key, str(value)[:6000])
            mv = client.create_model_version(
                name,
                source=request.uri,
                run_id=run_id,
                tags=tags,
                description=request.description,
            )
            client.set_terminated(run_id)
        except Exception as e:  # noqa: BLE001 - every failure must clean up and re-raise
            undone = self._undo(name, run_id, created_model)
            raise RegistryError(
                f"registering {name}:{version} in {self._url} failed: {describe_error(e)}; {undone}"
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
                lambda k=key, v=value: client.set_model_version_tag(mv.name, mv.version, k, v),
            )
        self._call(
            f"describe {record.model_name}:{record.version_name}",
            lambda: client.update_model_version(
                mv.name, mv.version, description=card[:MAX_DESCRIPTION]
            ),
        )
        if mv.run_id:
            run_id = mv.run_id
            for key, value in results.flat().items():
                self._call("log metric", lambda k=key, v=value: client.log_metric(run_id, k, v))
            self._call(
                "log results", lambda: client.log_dict(run_id, results.to_dict(), "results.json")
            )
            self._call("log gate", lambda: client.log_text(run_id, gate_report, "gate.md"))
            self._call("log card", lambda: client.log_text(run_id, card, "model_card.md"))
        logger.info(
            "recorded evaluation on %s:%s: gate %s",
            record.model_name,
            record.version_name,
            tags[GATE_PROPERTY],
        )
        return record.model_copy(
            update={"stage": stage, "message": f"evaluation recorded: {stage}"}
        )

    def promote(self, record: RegistryRecord) -> str:
        """Point the ``production`` alias at the version; archive the one it pointed at.

        Raises:
            RegistryError: The version is gone, its gate did not pass, or the update failed.
        """
        mv = self._version_of(record)
        if (mv.tags or {}).get(GATE_PROPERTY) != GATE_PASSED:
            raise RegistryError(
                f"{record.model_name}:{record.version_name} has no passed gate "
                f"({GATE_PROPERTY}={(mv.tags or {}).get(GATE_PROPERTY)!r}); it cannot be production"
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
                raise RegistryError(f"{model_name} has no version {version_name!r} in {self._url}")
            return self._record(mv, message="found", lineage=True)
        client = self._client
        versions = self._call(
            f"list versions of {model_name}",
            lambda: client.search_model_versions(f"name = '{model_name}'"),
        )
        live = [v for v in versions if (v.tags or {}).get(STAGE_PROPERTY) not in RETIRED_STAGES]
        if not live:
            raise RegistryError(
                f"{model_name} has no version in {self._url} that is neither rejected nor "
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

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (RegistryError, ConfigError):
            raise
        except Exception as e:  # noqa: BLE001 - MLflow and requests raise many types
            raise RegistryError(f"{what} in {self._url} failed: {describe_error(e)}") from e

    def _experiment(self, model_name: str) -> str:
        name = f"modelgate/{model_name}"
        client = self._client
        found = self._call("find experiment", lambda: client.get_experiment_by_name(name))
        if found is not None:
            return found.experiment_id
        return self._call(
            "create experiment",
            lambda: client.create_experiment(
                name, artifact_location=self._artifacts and f"{self._artifacts}/{model_name}"
            ),
        )

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

        try:
            return self._client.get_model_version_by_alias(name, PRODUCTION_ALIAS)
        except MlflowException as e:
            if getattr(e, "error_code", "") in (
                "RESOURCE_DOES_NOT_EXIST",
                "INVALID_PARAMETER_VALUE",
            ):
                return None
            raise RegistryError(f"reading the production alias of {name} failed: {e}") from e

    def _version_of(self, record: RegistryRecord) -> Any:
        if record.status != "registered" or not record.model_name or not record.version_name:
            raise ConfigError(f"needs a registered record, got status={record.status!r}")
        mv = self._find(record.model_name, record.version_name)
        if mv is None:
            raise RegistryError(
                f"{record.model_name}:{record.version_name} is not in {self._url} any more"
            )
        return mv

    def _record(self, mv: Any, *, message: str, lineage: bool = False) -> RegistryRecord:
        tags = dict(mv.tags or {})
        lineage_tags = {
            k: v for k, v in tags.items() if lineage and not k.startswith(("modelgate.", "eval."))
        }
        return RegistryRecord(
            lineage=lineage_tags,
            status="registered",
            message=message,
            registered_model_id=mv.name,
            model_version_id=str(mv.version),
            model_artifact_id=mv.run_id,
            registry=self._url,
            model_name=mv.name,
            version_name=tags.get(VERSION_PROPERTY, str(mv.version)),
            stage=tags.get(STAGE_PROPERTY),
            uri=mv.source,
        )

    def _undo(self, name: str, run_id: str | None, created_model: bool) -> str:
        client = self._client
        done = []
        try:
            if run_id:
                client.delete_run(run_id)
                done.append("deleted its MLflow run")
            if created_model:
                client.delete_registered_model(name)
                done.append(f"deleted the new registered model {name}")
        except Exception as e:  # noqa: BLE001 - report; the original error is what matters
            return f"cleanup failed too ({describe_error(e)}): check {name} by hand"
        return ", ".join(done) or "nothing had been created"
