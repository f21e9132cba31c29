"""``modelgate submit`` and ``modelgate schedule``: runs on Kubeflow Pipelines.

Flags follow the kfp and kubectl CLIs: ``-n/--namespace`` is the KFP (profile) namespace of
the run, ``--host``/``--endpoint`` the API endpoint, ``-o/--output`` the format.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from modelgate import constants
from modelgate.cli._common import (
    Output,
    OutputFormat,
    ParamsFile,
    Pipeline,
    PipelineName,
    console,
    emit,
    err_console,
    human,
    package_path,
    release_options,
    resolve_release,
    run_preflight,
)
from modelgate.logs import configure_logging

schedule_app = typer.Typer(
    help="Recurring runs on Kubeflow Pipelines: create (--cron), list, get, pause, resume, delete.",
    pretty_exceptions_enable=False,
)

Host = Annotated[
    Optional[str],  # noqa: UP045 - typer reads it
    typer.Option(
        "--host",
        "--endpoint",
        envvar=constants.KFP_ENDPOINT_ENV,
        help="KFP API endpoint, e.g. http://localhost:8080 (a port-forward of ml-pipeline-ui).",
        rich_help_panel="Kubeflow",
    ),
]
Token = Annotated[
    Optional[str],  # noqa: UP045 - typer reads it
    typer.Option(
        envvar=constants.KFP_TOKEN_ENV,
        help="Bearer token (default: the kfp client's usual sources). Prefer the env var: a "
        "flag shows in `ps` and shell history.",
        show_envvar=True,
        rich_help_panel="Kubeflow",
    ),
]
Namespace = Annotated[
    Optional[str],  # noqa: UP045 - typer reads it
    typer.Option(
        "--namespace",
        "-n",
        "--kfp-namespace",
        help="Kubeflow profile namespace of the run (multi-user Kubeflow).",
        rich_help_panel="Kubeflow",
    ),
]
Experiment = Annotated[
    str, typer.Option(help="KFP experiment (created when missing).", rich_help_panel="Kubeflow")
]
KfpPipelineName = Annotated[
    Optional[str],  # noqa: UP045 - typer reads it
    typer.Option(
        help="Pipeline name in KFP (default: modelgate-<pipeline>).", rich_help_panel="Kubeflow"
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the id.")]


def _run_name(params: Any) -> str:
    subject = getattr(params, "model_id", "") or params.registered_model_name
    return str(subject).split("/")[-1]


def _prepare(
    overrides: dict[str, Any],
    *,
    params_file: Path | None,
    pipeline: str,
    out: Any,
) -> tuple[Path, Any]:
    """(package, parameters) of a run of ``pipeline`` on Kubeflow, checked by preflight."""
    package = package_path(pipeline)
    release = resolve_release(overrides, params_file=params_file, local=False, pipeline=pipeline)
    run_preflight(release, local=False, out=out)
    return package, release


def _connect_and_stage(
    release: Any, *, host: str | None, token: str | None, namespace: str | None, out: Any
) -> tuple[Any, Any]:
    """The host reached, then local inputs uploaded to the store (in that order)."""
    from modelgate import kfp as mkfp
    from modelgate.storage import stage_local_inputs

    client = mkfp.connect(host, token=token, namespace=namespace)
    staged = stage_local_inputs(release)
    for name, uri in staged.items():
        out.print(f"uploaded {getattr(release, name)} to {uri}", soft_wrap=True)
    return client, release.model_copy(update=staged)


@release_options("cluster")
def submit(
    overrides: dict[str, Any],
    params: ParamsFile = None,
    host: Host = None,
    token: Token = None,
    namespace: Namespace = None,
    experiment: Experiment = "modelgate",
    pipeline: Pipeline = PipelineName.release,
    pipeline_name: KfpPipelineName = None,
    run_name: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(help="Run name (default: <pipeline>-<model>-<time>)."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the run, printing step states.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to follow the run with --wait.")] = (
        6 * 3600.0
    ),
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the run KFP would get (arguments with their types) and stop: no "
            "preflight, no connection, no upload.",
        ),
    ] = False,
    output: Output = OutputFormat.table,
    quiet: Quiet = False,
) -> None:
    """Submit the release (or redeploy) pipeline to Kubeflow Pipelines and start a run.

    The package is uploaded as a new version when the pipeline exists; the run goes to an
    experiment. Exits 2 when preflight finds bad input or the host is unreachable; with
    --wait, 1 when the run fails (each failed step with its error).
    """
    from modelgate import kfp as mkfp

    configure_logging("WARNING")
    out = err_console if (quiet or output is not OutputFormat.table) else console
    name_of_pipeline = pipeline_name or f"modelgate-{pipeline.value}"
    if dry_run:
        package = package_path(pipeline.value)
        release = resolve_release(
            overrides, params_file=params, local=False, pipeline=pipeline.value
        )
        name = run_name or f"{pipeline.value}-{_run_name(release)}-<time>"
        plan = {
            "pipeline": pipeline.value,
            "pipeline_name": name_of_pipeline,
            "package": str(package),
            "experiment": experiment,
            "namespace": namespace,
            "run_name": name,
            "arguments": mkfp.describe_arguments(package, release.arguments()),
        }
        fmt = output if output is not OutputFormat.table else OutputFormat.yaml
        emit(plan, fmt, table=lambda: None)
        return
    package, release = _prepare(overrides, params_file=params, pipeline=pipeline.value, out=out)
    client, release = _connect_and_stage(
        release, host=host, token=token, namespace=namespace, out=out
    )
    name = run_name or f"{pipeline.value}-{_run_name(release)}-{time.strftime('%Y%m%d-%H%M%S')}"
    submitted = mkfp.submit(
        client,
        package_path=package,
        pipeline_name=name_of_pipeline,
        experiment=experiment,
        run_name=name,
        arguments=release.arguments(),
        namespace=namespace,
    )
    if quiet:
        typer.echo(submitted.run_id)
    else:
        emit(
            dataclasses.asdict(submitted),
            output,
            table=lambda: console.print(
                f"run {submitted.run_id} started: {submitted.url}", soft_wrap=True
            ),
        )
    if not wait:
        return

    def on_change(step: Any) -> None:
        out.print(f"  {step.state:>10} {step.name}")

    outcome = mkfp.wait(client, submitted.run_id, timeout=timeout, on_change=on_change)
    if not outcome.succeeded:
        out.print(f"[red]run {submitted.run_id} ended {outcome.state}")
        for task in outcome.failed_tasks:
            out.print(f"[red]{task.name} failed:[/] {task.message}", soft_wrap=True)
        if outcome.error:
            out.print(f"[red]run error:[/] {outcome.error}", soft_wrap=True)
        raise typer.Exit(1)
    out.print("[green]run succeeded")


@schedule_app.callback(invoke_without_command=True)
@release_options("cluster")
def schedule(
    ctx: typer.Context,
    overrides: dict[str, Any],
    cron: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(help="When to run, in UTC: cron '0 3 * * 1' (5 fields) or KFP's 6 fields."),
    ] = None,
    params: ParamsFile = None,
    host: Host = None,
    token: Token = None,
    namespace: Namespace = None,
    experiment: Experiment = "modelgate",
    pipeline: Pipeline = PipelineName.release,
    pipeline_name: KfpPipelineName = None,
    name: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(help="Recurring run name (default: <pipeline>-<model>-schedule)."),
    ] = None,
    max_concurrency: Annotated[
        int, typer.Option(min=1, max=10, help="Runs of this schedule allowed at once (1-10).")
    ] = 1,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    no_catchup: Annotated[
        bool,
        typer.Option(
            "--no-catchup/--catchup",
            help="Skip runs missed while paused (--catchup starts them on resume).",
        ),
    ] = True,
    output: Output = OutputFormat.table,
    quiet: Quiet = False,
) -> None:
    """Create a recurring run of the release or redeploy pipeline (a KFP recurring run).

    See also the subcommands list, get, pause, resume and delete.
    """
    if ctx.invoked_subcommand:
        return
    from modelgate import kfp as mkfp
    from modelgate.errors import ConfigError

    configure_logging("WARNING")
    if not cron:
        raise ConfigError("give --cron, e.g. --cron '0 3 * * 1' (Mondays 03:00 UTC)")
    kfp_cron = mkfp.validate_cron(cron)  # before any other work
    out = err_console if (quiet or output is not OutputFormat.table) else console
    package, release = _prepare(overrides, params_file=params, pipeline=pipeline.value, out=out)
    client, release = _connect_and_stage(
        release, host=host, token=token, namespace=namespace, out=out
    )
    job = name or f"{pipeline.value}-{_run_name(release)}-schedule"
    recurring_id = mkfp.schedule(
        client,
        cron=cron,
        package_path=package,
        pipeline_name=pipeline_name or f"modelgate-{pipeline.value}",
        experiment=experiment,
        job_name=job,
        arguments=release.arguments(),
        namespace=namespace,
        max_concurrency=max_concurrency,
        enabled=not paused,
        no_catchup=no_catchup,
    )
    if quiet:
        typer.echo(recurring_id)
        return
    data = {"id": recurring_id, "name": job, "cron": kfp_cron, "paused": paused}
    emit(
        data,
        output,
        table=lambda: console.print(
            f"recurring run {recurring_id} ({job}) scheduled: {kfp_cron}"
            + (" (paused)" if paused else ""),
            soft_wrap=True,
        ),
    )


def _schedules_table(infos: list[Any]) -> None:
    table = Table(title="recurring runs")
    for column in ("id", "name", "cron", "status", "max concurrency"):
        table.add_column(column, overflow="fold", no_wrap=False)
    for info in infos:
        table.add_row(info.id, info.name, info.cron, info.status, str(info.max_concurrency))
    console.print(table)


@schedule_app.command("list")
def schedule_list(
    host: Host = None,
    token: Token = None,
    namespace: Namespace = None,
    experiment: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(help="Only this experiment."),
    ] = None,
    output: Output = OutputFormat.table,
) -> None:
    """List recurring runs, newest first."""
    from modelgate import kfp as mkfp

    client = mkfp.connect(host, token=token, namespace=namespace)
    infos = mkfp.list_schedules(client, namespace=namespace, experiment=experiment)
    emit([dataclasses.asdict(i) for i in infos], output, table=lambda: _schedules_table(infos))


RecurringRunId = Annotated[str, typer.Argument(help="Recurring run id (see `schedule list`).")]


@schedule_app.command("get")
def schedule_get(
    recurring_run_id: RecurringRunId,
    host: Host = None,
    token: Token = None,
    namespace: Namespace = None,
    output: Output = OutputFormat.table,
) -> None:
    """Show one recurring run."""
    from modelgate import kfp as mkfp

    client = mkfp.connect(host, token=token, namespace=namespace)
    info = mkfp.get_schedule(client, recurring_run_id)
    emit(dataclasses.asdict(info), output, table=lambda: _schedules_table([info]))


def _action(action: str, done: str) -> Any:
    def command(
        recurring_run_id: RecurringRunId,
        host: Host = None,
        token: Token = None,
        namespace: Namespace = None,
    ) -> None:
        from modelgate import kfp as mkfp

        client = mkfp.connect(host, token=token, namespace=namespace)
        getattr(mkfp, action)(client, recurring_run_id)
        human(OutputFormat.table).print(f"{done} recurring run {recurring_run_id}")

    command.__doc__ = f"{action.capitalize()} a recurring run."
    return command


schedule_app.command("pause")(_action("pause", "paused"))
schedule_app.command("resume")(_action("resume", "resumed"))


@schedule_app.command("delete")
def schedule_delete(
    recurring_run_id: RecurringRunId,
    host: Host = None,
    token: Token = None,
    namespace: Namespace = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a recurring run (its past runs stay); asks first unless --yes."""
    from modelgate import kfp as mkfp

    if not yes and not typer.confirm(f"delete recurring run {recurring_run_id}?", default=False):
        err_console.print("not deleted")
        raise typer.Exit(1)
    client = mkfp.connect(host, token=token, namespace=namespace)
    mkfp.delete(client, recurring_run_id)
    console.print(f"deleted recurring run {recurring_run_id}")
