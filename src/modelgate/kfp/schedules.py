"""Recurring runs: run an uploaded pipeline version on a cron schedule, and manage them.

:func:`schedule` uploads the package as a new version and creates a recurring run pinned to it
(the cron expression checked and turned into KFP's 6-field form by
:func:`~modelgate.kfp.cron.validate_cron`); :func:`list_schedules`, :func:`get_schedule`,
:func:`pause`, :func:`resume` and :func:`delete` manage them by recurring run id.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelgate.errors import ConfigError, KFPNotFoundError
from modelgate.kfp.connection import _call
from modelgate.kfp.cron import validate_cron
from modelgate.kfp.package import check_arguments
from modelgate.kfp.runs import ensure_experiment, upload

if TYPE_CHECKING:
    import kfp

logger = logging.getLogger(__name__)

#: KFP accepts 1-10 concurrent runs of one recurring run.
MAX_CONCURRENCY_RANGE = (1, 10)
_PAGE_SIZE = 100


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
        client: From :func:`~modelgate.kfp.connection.connect`.
        cron: 5-field crontab line or KFP's 6-field form (see
            :func:`~modelgate.kfp.cron.validate_cron`), in UTC.
        package_path: The compiled pipeline YAML.
        pipeline_name: The pipeline's display name.
        experiment: Experiment its runs go to (created when missing).
        job_name: The recurring run's display name.
        arguments: Pipeline parameters with their JSON types (see
            :func:`~modelgate.kfp.runs.submit`).
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
    experiment_id = ensure_experiment(client, experiment, namespace=namespace)
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
        client: From :func:`~modelgate.kfp.connection.connect`.
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

    def page_at(page_token: str) -> Any:
        return client.list_recurring_runs(
            page_token=page_token,
            page_size=_PAGE_SIZE,
            sort_by="created_at desc",
            experiment_id=experiment_id,
            namespace=namespace,
        )

    infos: list[ScheduleInfo] = []
    token = ""
    while True:
        page = _call("list recurring runs", functools.partial(page_at, token))
        infos.extend(_schedule_info(rr) for rr in page.recurring_runs or [])
        token = page.next_page_token or ""
        if not token:
            return infos


def get_schedule(client: kfp.Client, recurring_run_id: str) -> ScheduleInfo:
    """One recurring run.

    Args:
        client: From :func:`~modelgate.kfp.connection.connect`.
        recurring_run_id: From :func:`schedule` or :func:`list_schedules`.

    Returns:
        The recurring run.

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
        client: From :func:`~modelgate.kfp.connection.connect`.
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
        client: From :func:`~modelgate.kfp.connection.connect`.
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
        client: From :func:`~modelgate.kfp.connection.connect`.
        recurring_run_id: From :func:`schedule` or :func:`list_schedules`.

    Raises:
        ConfigError: The id is empty.
        KFPNotFoundError: There is no such recurring run.
        SubmitError: The server refused.
    """
    _set_schedule(client, recurring_run_id, "delete")
