"""The Kubeflow Pipelines side of ``modelgate submit`` and ``modelgate schedule``.

Everything here talks to a KFP v2 API server (2.x, the ``/apis/v2beta1`` REST API) through
``kfp.Client``, one module per concern:

* :mod:`~modelgate.kfp.connection` — :func:`connect`: host, token, health probe, error mapping.
* :mod:`~modelgate.kfp.package` — compiled packages: :func:`check_arguments`,
  :func:`describe_arguments`, :func:`default_version_name`.
* :mod:`~modelgate.kfp.cron` — :func:`validate_cron`.
* :mod:`~modelgate.kfp.runs` — :func:`upload`, :func:`ensure_experiment`, :func:`submit`,
  :func:`wait`, :func:`run_url`.
* :mod:`~modelgate.kfp.schedules` — :func:`schedule`, :func:`list_schedules`,
  :func:`get_schedule`, :func:`pause`, :func:`resume`, :func:`delete`.

Use it as::

    from modelgate import kfp as mkfp

    client = mkfp.connect("http://localhost:8080")
    run = mkfp.submit(client, package_path=..., pipeline_name=..., experiment=...,
                      run_name=..., arguments=...)
    outcome = mkfp.wait(client, run.run_id, timeout=3600)

Input that can be checked here is checked before any request: cron expressions and run
arguments raise :class:`~modelgate.errors.ConfigError`. What the server refuses raises
:class:`~modelgate.errors.SubmitError` or a subclass (re-exported here).

Inside this package ``import kfp`` is the kfp SDK (absolute imports); it is imported when first
needed, so importing :mod:`modelgate.kfp` stays cheap.
"""

from __future__ import annotations

from modelgate.errors import (
    KFPAuthError,
    KFPConflictError,
    KFPConnectionError,
    KFPNotFoundError,
    KFPServerError,
    RunTimeoutError,
    SubmitError,
)
from modelgate.kfp.connection import connect
from modelgate.kfp.cron import validate_cron
from modelgate.kfp.package import check_arguments, default_version_name, describe_arguments
from modelgate.kfp.runs import (
    FailedTask,
    RunOutcome,
    StepState,
    SubmittedRun,
    ensure_experiment,
    run_url,
    submit,
    upload,
    wait,
)
from modelgate.kfp.schedules import (
    ScheduleInfo,
    delete,
    get_schedule,
    list_schedules,
    pause,
    resume,
    schedule,
)

__all__ = [
    # connection
    "connect",
    # packages and arguments
    "check_arguments",
    "describe_arguments",
    "default_version_name",
    # cron
    "validate_cron",
    # pipelines and runs
    "upload",
    "ensure_experiment",
    "submit",
    "wait",
    "run_url",
    "SubmittedRun",
    "StepState",
    "FailedTask",
    "RunOutcome",
    # recurring runs
    "schedule",
    "list_schedules",
    "get_schedule",
    "pause",
    "resume",
    "delete",
    "ScheduleInfo",
    # errors
    "SubmitError",
    "KFPConnectionError",
    "KFPAuthError",
    "KFPNotFoundError",
    "KFPConflictError",
    "KFPServerError",
    "RunTimeoutError",
]
