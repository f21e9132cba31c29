"""Pipelines, experiments and runs: upload a package, start a run of it, follow the run.

* :func:`upload` puts a compiled package up as a pipeline, or as a new version of the pipeline
  of that name.
* :func:`ensure_experiment` gets or creates the experiment runs go to.
* :func:`submit` uploads the package and runs exactly that version, after checking the
  arguments locally (:func:`~modelgate.kfp.package.check_arguments`).
* :func:`wait` follows a run task by task until it ends, riding out transient server errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelgate.errors import (
    ConfigError,
    KFPConflictError,
    KFPConnectionError,
    KFPServerError,
    RunTimeoutError,
    SubmitError,
)
from modelgate.kfp.connection import _call
from modelgate.kfp.package import check_arguments, default_version_name, read_package
from modelgate.retry import backoff, wait_until

if TYPE_CHECKING:
    import kfp

logger = logging.getLogger(__name__)

#: Run and task states after which nothing changes any more.
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"})


# --- results ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SubmittedRun:
    """A run created by :func:`submit`.

    Attributes:
        run_id: The run (what :func:`wait` takes).
        pipeline_id: The pipeline uploaded to.
        version_id: The pipeline version uploaded and run.
        experiment_id: The experiment the run is in.
        url: The run's page in the Kubeflow Pipelines UI.
    """

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
    """A task that ended ``FAILED``.

    Attributes:
        name: The task's display name.
        message: Its error message; empty when the server gave none.
    """

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


# --- pipelines ----------------------------------------------------------------------------------
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
    :func:`~modelgate.kfp.package.default_version_name` (``<pipeline>-<UTC time>-<content
    hash>``).

    Args:
        client: From :func:`~modelgate.kfp.connection.connect`.
        package_path: The compiled pipeline YAML, e.g. ``pipelines/release.yaml``.
        pipeline_name: The pipeline's display name in Kubeflow.
        version_name: Name of the new version.

    Returns:
        ``(pipeline_id, version_id)`` of the uploaded version.

    Raises:
        ConfigError: The package is missing or not a pipeline, or a name is empty.
        SubmitError: The server refused the upload (e.g. a version of that name exists).
    """
    package, _ = read_package(package_path)
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


def ensure_experiment(client: kfp.Client, name: str, *, namespace: str | None = None) -> str:
    """Return the id of experiment ``name``, creating it when it does not exist.

    Args:
        client: From :func:`~modelgate.kfp.connection.connect`.
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
    """The run's page in the Kubeflow Pipelines UI.

    Args:
        client: From :func:`~modelgate.kfp.connection.connect`.
        run_id: The run.

    Returns:
        ``<prefix>/#/runs/details/<run_id>``, the prefix being ``$KF_PIPELINES_UI_ENDPOINT`` or
        the client's host.
    """
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
        client: From :func:`~modelgate.kfp.connection.connect`.
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
    experiment_id = ensure_experiment(client, experiment, namespace=namespace)
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
        client: From :func:`~modelgate.kfp.connection.connect`.
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
