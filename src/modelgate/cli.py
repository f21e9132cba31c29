"""The ``modelgate`` command line.

``run --local``, ``preflight``, ``submit`` and ``schedule`` take the release pipeline's
parameters as options generated from the pipelines' params models in :mod:`modelgate.params`
and a ``--params`` file; options given on the command line override the file, which overrides
the defaults. Exit codes: 0 success, 1 a failed release (a step or the gate), 2 bad input found
before anything ran.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import sys
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from modelgate.errors import ConfigError, ModelgateError
from modelgate.logs import configure_logging
from modelgate.params import (
    ALL_PARAM_NAMES,
    PARAM_HELP,
    PIPELINE_PARAMS,
    ReleaseParams,
    param_default,
)

app = typer.Typer(
    help="Take an LLM from the Hugging Face Hub to a gated vLLM deployment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
schedule_app = typer.Typer(
    help="Recurring release runs on Kubeflow Pipelines: create (--cron), list, pause, resume, "
    "delete.",
    pretty_exceptions_enable=False,
)
app.add_typer(schedule_app, name="schedule")
console = Console()

# key output shown in the summary, per step display name: the output parameter
KEY_OUTPUTS: dict[str, str] = {
    "preflight": "Output",
    "download": "commit_sha",
    "quantize": "model_uri",
    "register candidate": "status",
    "evaluate base": "Output",
    "evaluate candidate": "Output",
    "production version": "Output",
    "quality gate": "summary",
    "record evaluation": "Output",
    "deploy": "endpoint",
    "smoke test": "Output",
    "promote": "Output",
    "stop promotion": "Output",
}
STATUS_STYLE = {
    "success": "green",
    "failure": "red",
    "skipped": "yellow",
    "not run": "dim",
    "running": "yellow",
}
#: Environment variables that supply a parameter's value when neither file nor flag does.
PARAM_ENV = {
    "registry_url": "MODEL_REGISTRY_URL",
    "hf_endpoint": "HF_ENDPOINT",
    "vllm_python": "MODELGATE_VLLM_PYTHON",
    "model_store": "MODELGATE_MODEL_STORE",
}
#: A local run deploys and evaluates on this machine unless told otherwise.
LOCAL_DEFAULTS = {"deploy_target": "local", "eval_backend": "hf", "eval_device": "cpu"}
STRUCTURED = {"tolerations": list, "node_selector": dict}


# --------------------------------------------------------------------------------------------
# Release parameters as options
# --------------------------------------------------------------------------------------------


def _params_model(name: str) -> Any:
    """The first params model that declares parameter ``name``."""
    return next(m for m in PIPELINE_PARAMS.values() if name in m.model_fields)


def _option_type(name: str) -> type:
    annotation = _params_model(name).model_fields[name].annotation
    return annotation if annotation in (int, bool) else str


def release_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add one option per pipeline parameter to a command; it receives ``overrides``.

    ``overrides`` holds only the options given on the command line (none has a default here),
    so they can override a params file. Each pipeline validates the ones it takes.
    """
    hints = typing.get_type_hints(func, include_extras=True)
    own = [
        p.replace(annotation=hints[p.name])
        for p in inspect.signature(func).parameters.values()
        if p.name != "overrides"
    ]
    generated = []
    for name in ALL_PARAM_NAMES:
        kind = _option_type(name)
        flag = "--" + name.replace("_", "-")
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        default = param_default(name, _params_model(name))
        shown = json.dumps(default) if not isinstance(default, str) else repr(default)
        option = typer.Option(
            *decls,
            help=f"{PARAM_HELP[name]} [default: {shown if len(shown) < 40 else '...'}]",
            show_default=False,
            rich_help_panel="Pipeline parameters",
        )
        generated.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[Optional[kind], option],  # noqa: UP045 - typer reads it
            )
        )

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        overrides = {n: kwargs.pop(n) for n in ALL_PARAM_NAMES if kwargs.get(n) is not None}
        for name in ALL_PARAM_NAMES:
            kwargs.pop(name, None)
        return func(overrides=overrides, **kwargs)

    parameters = own + generated
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper


def _read_text_option(value: str) -> str:
    """Options that take inline text or ``@path`` / an existing file path."""
    path = Path(value[1:] if value.startswith("@") else value)
    if len(value) < 4096 and "\n" not in value and path.suffix in {".json", ".yaml", ".yml"}:
        if not path.is_file():
            raise ConfigError(f"file {path} does not exist")
        return path.read_text()
    return value


def resolve_release(
    overrides: dict[str, Any], *, params_file: Path | None, local: bool, pipeline: str = "release"
) -> Any:
    """Defaults < environment < local-run defaults < ``--params`` file < options, validated
    against the parameters of ``pipeline``.

    Raises:
        ConfigError: A bad key or value, naming it.
    """
    from modelgate.params import resolve_params
    from modelgate.placement import parse_structured

    model = PIPELINE_PARAMS[pipeline]
    base: dict[str, Any] = {
        k: os.environ[v]
        for k, v in PARAM_ENV.items()
        if os.environ.get(v) and k in model.model_fields
    }
    if local:
        base.update(LOCAL_DEFAULTS)
    flags = dict(overrides)
    for name, expected in STRUCTURED.items():
        if name in flags:
            flags[name] = parse_structured(flags[name], option=name, expected=expected)
    if "thresholds" in flags:
        flags["thresholds"] = _read_text_option(flags["thresholds"])
    params = resolve_params(file=params_file, base=base, overrides=flags, model=model)
    text = _read_text_option(params.thresholds)
    return params if text == params.thresholds else params.model_copy(update={"thresholds": text})


ParamsFile = Annotated[
    Optional[Path],  # noqa: UP045 - typer reads it
    typer.Option("--params", help="YAML/JSON file of release parameters (pipeline names)."),
]


Pipeline = Annotated[
    str,
    typer.Option("--pipeline", help="Which pipeline: release, or redeploy (a registered version)."),
]


def _package(pipeline: str) -> Path:
    """The compiled YAML of ``pipeline``.

    Raises:
        ConfigError: Not a pipeline modelgate ships.
    """
    from pipelines import PIPELINE_MODULES, PIPELINES_DIR

    if pipeline not in PIPELINE_MODULES:
        raise ConfigError(f"unknown pipeline {pipeline!r}; choose one of {list(PIPELINE_MODULES)}")
    return PIPELINES_DIR / f"{pipeline}.yaml"


def _print_checks(results: list[Any], *, seconds: float) -> None:
    for r in results:
        mark = "[green]ok[/]" if r.ok else "[red]FAIL[/]"
        console.print(f"  {mark} {r.name}: {r.detail}", soft_wrap=True, highlight=False)
    console.print(f"preflight: {len(results)} checks in {seconds:.1f}s")


def run_preflight(params: Any, *, local: bool, quiet: bool = False) -> None:
    """Run the preflight checks of a run with ``params``; print them unless ``quiet``.

    Raises:
        PreflightError: Any check failed (every failure is in the message).
    """
    from modelgate.preflight import PreflightError, checks_for, preflight

    started = time.monotonic()
    try:
        results = preflight(checks_for(params, local=local))
    except PreflightError as e:
        _print_checks(e.results, seconds=time.monotonic() - started)
        raise
    if not quiet:
        _print_checks(results, seconds=time.monotonic() - started)


# --------------------------------------------------------------------------------------------
# Local runs
# --------------------------------------------------------------------------------------------


def _key_value(step: Any) -> Any:
    """The raw value of the step's key output parameter ("" when it has none)."""
    return step.outputs.get(KEY_OUTPUTS.get(step.display_name, "Output"), "")


def _key_output(step: Any) -> str:
    value = _key_value(step)
    if step.display_name == "quantize" and value:
        value = f"{step.outputs.get('scheme', '')} {value}"
    if step.display_name == "download" and value:
        meta = step.artifacts.get("manifest") or {}
        size = f", {meta['size_bytes'] / 1e6:.1f} MB" if "size_bytes" in meta else ""
        value = f"commit {str(value)[:12]}{size}"
    if step.display_name == "preflight" and value:
        value = f"{len(str(value).splitlines())} checks passed"
    if step.display_name == "production version" and step.status == "success" and not value:
        value = "none yet"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 70 else text[:67] + "..."


def display_status(step: Any) -> str:
    """A step's status for people: a task that ran but did nothing (no registry) reads ``skipped``.

    ``not run`` is a task the pipeline's condition left out (deploy after a failed gate,
    stop promotion after a passed one).
    """
    if step.status == "success" and str(_key_value(step)).startswith("skipped"):
        return "skipped"
    return step.status


def print_summary(result: Any) -> None:
    """The per-step table: status, time, key output."""
    table = Table(title=f"modelgate release - local run ({result.seconds:.0f}s)")
    table.add_column("step")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("key output", overflow="fold")
    for step in result.steps:
        status = display_status(step)
        style = STATUS_STYLE.get(status, "")
        seconds = "" if step.seconds is None else f"{step.seconds:.1f}s"
        table.add_row(step.display_name, f"[{style}]{status}[/]", seconds, _key_output(step))
    console.print(table)


def print_failures(result: Any) -> None:
    """Under the summary: each failed step with its reason, one line each."""
    gate = result.step("quality gate")
    for step in result.steps:
        if step.status != "failure":
            continue
        reason = step.error
        if step.display_name == "stop promotion" and gate is not None:
            reason = gate.outputs.get("summary") or reason
        console.print(f"[red]{step.display_name} failed:[/] {reason}", soft_wrap=True)


def run_local(
    params: Any,
    *,
    pipeline_root: Path,
    keep_serving: bool = False,
    verbose: bool = False,
) -> int:
    """Run the release (or, with :class:`~modelgate.params.RedeployParams`, the redeploy)
    pipeline with kfp.local after preflight; returns the exit code.

    Raises:
        ConfigError: Preflight failed (nothing ran).
    """
    import importlib

    from modelgate.params import RedeployParams
    from modelgate.registry import local_registry_url
    from modelgate.storage import open_store, stage_input

    pipeline = "redeploy" if isinstance(params, RedeployParams) else "release"
    pipeline_root = pipeline_root.absolute()
    defaults: dict[str, Any] = {}
    if pipeline == "release" and not params.model_store:
        defaults["model_store"] = (pipeline_root / "model-store").as_uri()
    if not params.registry_url:  # the embedded registry of local runs
        defaults["registry_url"] = local_registry_url(pipeline_root)
    params = params.model_copy(update=defaults)
    run_preflight(params, local=True)
    pipeline_root.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Any] = {}
    if pipeline == "release":
        # local files travel to the steps through the store, as they do to a cluster's pods
        store = open_store(params.model_store)
        if params.eval_task_dir and "://" not in params.eval_task_dir:
            staged["eval_task_dir"] = stage_input(store, params.eval_task_dir, kind="tasks")
        if params.calibration_data and Path(params.calibration_data).is_file():
            staged["calibration_data"] = stage_input(
                store, params.calibration_data, kind="calibration"
            )
        console.print(f"model store: {store.root}", soft_wrap=True)
    if params.deploy_target == "local":
        from modelgate.deploy.local import resolve_vllm_python

        staged["vllm_python"] = resolve_vllm_python(params.vllm_python or None)
    params = params.model_copy(update=staged)

    from pipelines.local import run_pipeline_locally

    module = importlib.import_module(f"pipelines.{pipeline}")
    subject = (
        f"{params.model_id}@{params.revision}"
        if pipeline == "release"
        else f"{params.registered_model_name}:{params.model_version or 'newest'}"
    )
    log_file = None if verbose else pipeline_root / "run.log"
    # a handle on the terminal that survives the run sending fd 1/2 to the log file
    progress = Console(file=os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1))

    def on_step(step: Any) -> None:
        status = display_status(step)
        style = STATUS_STYLE.get(status, "")
        progress.print(f"  [{style}]{status:>8}[/] {step.display_name} ({step.seconds:.1f}s)")

    console.print(
        f"running {pipeline} of {subject} locally; logs: {log_file or 'console'}",
        soft_wrap=True,
    )
    result = run_pipeline_locally(
        getattr(module, pipeline),
        arguments=params.arguments(),
        pipeline_yaml=module.PACKAGE_PATH,
        pipeline_root=pipeline_root,
        log_file=log_file,
        on_step=on_step,
    )
    deploy = result.step("deploy")
    try:
        print_summary(result)
        gate = result.step("quality gate")
        if gate and gate.outputs.get("table"):
            console.print(Markdown(gate.outputs["table"]))
        smoke = result.step("smoke test")
        if smoke and smoke.status == "success":
            console.print(
                f"vLLM completion for {params.smoke_prompt!r}: {smoke.outputs.get('Output')!r}"
            )
    finally:
        if deploy and deploy.outputs.get("deployment") and params.deploy_target == "local":
            _stop_local(deploy.outputs["deployment"], keep=keep_serving)
    print_registry(result, params.registry_url)
    if not result.succeeded:
        failed = [s.display_name for s in result.steps if s.status == "failure"]
        console.print(f"[red]release failed at: {', '.join(failed)}")
        print_failures(result)
        if log_file:
            console.print(f"step logs: {log_file}")
        return 1
    console.print("[green]release succeeded")
    return 0


def print_registry(result: Any, registry_url: str) -> None:
    """Where the candidate was registered, its stage, and how to browse the registry."""
    from modelgate.registry import RegistryRecord
    from modelgate.registry.mlflow import browse_hint, is_mlflow_url

    register = result.step("register candidate")
    if register is None or not register.outputs.get("record"):
        return
    record = RegistryRecord.from_dict(register.outputs["record"])
    if record.status != "registered":
        return
    promote = result.step("promote")
    stage = "production" if promote and promote.status == "success" else record.stage
    recorded = result.step("record evaluation")
    if recorded and recorded.status == "success" and stage != "production":
        stage = recorded.outputs.get("Output") or stage
    console.print(
        f"registry: {record.model_name}:{record.version_name} is {stage} in {registry_url}",
        soft_wrap=True,
        highlight=False,
    )
    if is_mlflow_url(registry_url):
        console.print(f"browse it: {browse_hint(registry_url)}", soft_wrap=True, highlight=False)


def _stop_local(deployment_json: str, *, keep: bool) -> None:
    from modelgate.deploy.local import LocalVLLMTarget
    from modelgate.deploy.target import Deployment

    deployment = Deployment(**json.loads(deployment_json))
    pid = deployment.details.get("pid")
    if keep:
        console.print(f"vLLM keeps serving at {deployment.endpoint} (pid {pid})")
        return
    LocalVLLMTarget().teardown(deployment)
    console.print(f"stopped local vLLM (pid {pid})")


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


@app.command()
@release_options
def run(
    overrides: dict[str, Any],
    local: Annotated[bool, typer.Option("--local", help="Run here with kfp.local.")] = False,
    params: ParamsFile = None,
    pipeline: Pipeline = "release",
    pipeline_root: Annotated[Path, typer.Option(help="Where step outputs go.")] = Path(
        "local_outputs"
    ),
    keep_serving: Annotated[
        bool, typer.Option(help="Leave the local vLLM server running after the run.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Stream step logs.")] = False,
) -> None:
    """Run the release pipeline here: preflight, download, quantize, register, evaluate, gate,
    deploy, smoke test.

    Exits 1 when a step fails, including a failed gate (the reason is printed under the
    summary), 2 when preflight finds bad input (nothing runs).
    """
    configure_logging("WARNING" if not verbose else None)
    if not local:
        raise ConfigError(
            "`modelgate run` runs here with --local; to run on Kubeflow use `modelgate submit` "
            "(or upload pipelines/release.yaml in the Kubeflow UI)"
        )
    _package(pipeline)  # a pipeline modelgate ships
    release = resolve_release(overrides, params_file=params, local=True, pipeline=pipeline)
    code = run_local(
        release, pipeline_root=pipeline_root, keep_serving=keep_serving, verbose=verbose
    )
    raise typer.Exit(code)


@app.command("preflight")
@release_options
def preflight_command(
    overrides: dict[str, Any],
    local: Annotated[bool, typer.Option("--local", help="Check for a run on this machine.")] = (
        False
    ),
    params: ParamsFile = None,
    pipeline: Pipeline = "release",
) -> None:
    """Check a run before starting it: the same checks `run` and `submit` start with.

    Exits 0 when every check passes, 2 otherwise (each failure with its fix).
    """
    configure_logging("WARNING")
    _package(pipeline)  # a pipeline modelgate ships
    release = resolve_release(overrides, params_file=params, local=local, pipeline=pipeline)
    if local and not getattr(release, "model_store", "x"):
        release = release.model_copy(
            update={"model_store": (Path("local_outputs") / "model-store").absolute().as_uri()}
        )
    run_preflight(release, local=local)
    console.print("[green]preflight passed")


# --------------------------------------------------------------------------------------------
# Kubeflow: submit and schedule
# --------------------------------------------------------------------------------------------

Host = Annotated[
    Optional[str],  # noqa: UP045 - typer reads it
    typer.Option(help="KFP API endpoint (default $KF_PIPELINES_ENDPOINT)."),
]
Token = Annotated[
    Optional[str],  # noqa: UP045 - typer reads it
    typer.Option(help="Bearer token (default: the kfp client's usual sources)."),
]
KfpNamespace = Annotated[
    Optional[str],  # noqa: UP045 - typer reads it
    typer.Option("--kfp-namespace", help="Kubeflow profile namespace of the run."),
]
Experiment = Annotated[str, typer.Option(help="KFP experiment.")]
PipelineName = Annotated[
    Optional[str],  # noqa: UP045 - typer reads it
    typer.Option(help="Pipeline name in KFP (default: modelgate-<pipeline>)."),
]


def _cluster_run(
    overrides: dict[str, Any],
    *,
    params_file: Path | None,
    pipeline: str,
    host: str | None,
    token: str | None,
    namespace: str | None,
) -> tuple[Path, Any, Any]:
    """(package, parameters, kfp client) of a run of ``pipeline`` on Kubeflow: parameters
    checked by preflight, then the host reached, then local inputs uploaded to the store.

    Raises:
        ConfigError: Bad input, found before any call.
        SubmitError: The host cannot be reached.
        StorageError: A local input could not be uploaded.
    """
    from pipelines import submit as kfp_submit

    package = _package(pipeline)
    release = resolve_release(overrides, params_file=params_file, local=False, pipeline=pipeline)
    run_preflight(release, local=False)
    client = kfp_submit.connect(host, token=token, namespace=namespace)
    return package, _stage_inputs(release), client


def _run_name(params: Any) -> str:
    subject = getattr(params, "model_id", "") or params.registered_model_name
    return subject.split("/")[-1]


def _stage_inputs(release: Any) -> Any:
    """Local task folders and calibration files uploaded to the model store, as URIs.

    Raises:
        StorageError: The upload failed (e.g. no S3 keys on this machine).
    """
    from modelgate.storage import open_store, stage_input

    staged: dict[str, Any] = {}
    for name, kind in (("eval_task_dir", "tasks"), ("calibration_data", "calibration")):
        value = getattr(release, name, "")
        if value and "://" not in value and Path(value).exists():
            store = getattr(release, "model_store", "")
            if not store:
                raise ConfigError(
                    f"{name} {value!r} is a local path: upload it to your S3 store and pass its "
                    "s3:// URI (a redeploy has no model_store to upload it to)"
                )
            staged[name] = stage_input(open_store(store), value, kind=kind)
            console.print(f"uploaded {value} to {staged[name]}", soft_wrap=True)
    return release.model_copy(update=staged)


@app.command()
@release_options
def submit(
    overrides: dict[str, Any],
    params: ParamsFile = None,
    host: Host = None,
    token: Token = None,
    kfp_namespace: KfpNamespace = None,
    experiment: Experiment = "modelgate",
    pipeline: Pipeline = "release",
    pipeline_name: PipelineName = None,
    run_name: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(help="Run name (default: release-<model>-<time>)."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the run, printing step states.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to follow the run with --wait.")] = (
        6 * 3600.0
    ),
) -> None:
    """Submit the release (or redeploy) pipeline to Kubeflow Pipelines (uploaded as a new
    version when the pipeline exists) and start a run in an experiment.

    Exits 2 when preflight finds bad input or the host is unreachable; with --wait, 1 when the
    run fails (each failed step with its error).
    """
    from pipelines import submit as kfp_submit

    configure_logging("WARNING")
    package, release, client = _cluster_run(
        overrides,
        params_file=params,
        pipeline=pipeline,
        host=host,
        token=token,
        namespace=kfp_namespace,
    )
    name = run_name or f"{pipeline}-{_run_name(release)}-{time.strftime('%Y%m%d-%H%M%S')}"
    submitted = kfp_submit.submit(
        client,
        package_path=package,
        pipeline_name=pipeline_name or f"modelgate-{pipeline}",
        experiment=experiment,
        run_name=name,
        arguments=release.arguments(),
        namespace=kfp_namespace,
    )
    console.print(f"run {submitted.run_id} started: {submitted.url}", soft_wrap=True)
    if not wait:
        return

    def on_change(step: Any) -> None:
        console.print(f"  {step.state:>10} {step.name}", highlight=False)

    outcome = kfp_submit.wait(client, submitted.run_id, timeout=timeout, on_change=on_change)
    if not outcome.succeeded:
        console.print(f"[red]run {submitted.run_id} ended {outcome.state}")
        for task in outcome.failed_tasks:
            console.print(f"[red]{task.name} failed:[/] {task.message}", soft_wrap=True)
        if outcome.error:
            console.print(f"[red]run error:[/] {outcome.error}", soft_wrap=True)
        raise typer.Exit(1)
    console.print("[green]release succeeded")


@schedule_app.callback(invoke_without_command=True)
@release_options
def schedule(
    ctx: typer.Context,
    overrides: dict[str, Any],
    cron: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(help="When to run: cron '0 3 * * 1' (5 fields) or KFP's 6 fields."),
    ] = None,
    params: ParamsFile = None,
    host: Host = None,
    token: Token = None,
    kfp_namespace: KfpNamespace = None,
    experiment: Experiment = "modelgate",
    pipeline: Pipeline = "release",
    pipeline_name: PipelineName = None,
    name: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(help="Recurring run name (default: release-<model>-schedule)."),
    ] = None,
) -> None:
    """Create a recurring run of the release or redeploy pipeline (KFP recurring runs); see
    also list/pause/resume/delete."""
    if ctx.invoked_subcommand:
        return
    from pipelines import submit as kfp_submit

    configure_logging("WARNING")
    if not cron:
        raise ConfigError("give --cron, e.g. --cron '0 3 * * 1' (Mondays 03:00)")
    kfp_cron = kfp_submit.validate_cron(cron)  # before any other work
    package, release, client = _cluster_run(
        overrides,
        params_file=params,
        pipeline=pipeline,
        host=host,
        token=token,
        namespace=kfp_namespace,
    )
    job = name or f"{pipeline}-{_run_name(release)}-schedule"
    recurring_id = kfp_submit.schedule(
        client,
        cron=cron,
        package_path=package,
        pipeline_name=pipeline_name or f"modelgate-{pipeline}",
        experiment=experiment,
        job_name=job,
        arguments=release.arguments(),
        namespace=kfp_namespace,
    )
    console.print(f"recurring run {recurring_id} ({job}) scheduled: {kfp_cron}", soft_wrap=True)


@schedule_app.command("list")
def schedule_list(
    host: Host = None,
    token: Token = None,
    kfp_namespace: KfpNamespace = None,
    experiment: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(help="Only this experiment."),
    ] = None,
) -> None:
    """List recurring runs."""
    from pipelines import submit as kfp_submit

    client = kfp_submit.connect(host, token=token, namespace=kfp_namespace)
    table = Table(title="recurring runs")
    for column in ("id", "name", "cron", "status"):
        table.add_column(column)
    for info in kfp_submit.list_schedules(client, namespace=kfp_namespace, experiment=experiment):
        table.add_row(info.id, info.name, info.cron, info.status)
    console.print(table)


def _schedule_action(action: str) -> Callable[..., None]:
    def command(
        recurring_run_id: Annotated[str, typer.Argument(help="Recurring run id.")],
        host: Host = None,
        token: Token = None,
        kfp_namespace: KfpNamespace = None,
    ) -> None:
        from pipelines import submit as kfp_submit

        client = kfp_submit.connect(host, token=token, namespace=kfp_namespace)
        getattr(kfp_submit, action)(client, recurring_run_id)
        console.print(f"{DONE[action]} recurring run {recurring_run_id}")

    command.__doc__ = f"{action.capitalize()} a recurring run."
    return command


DONE = {"pause": "paused", "resume": "resumed", "delete": "deleted"}
for _action in DONE:
    schedule_app.command(_action)(_schedule_action(_action))


@app.command()
def demo(
    cache_dir: Annotated[Path, typer.Option(help="Tiny model, task and mirror cache.")] = Path(
        ".cache/demo"
    ),
    quant_scheme: Annotated[str, typer.Option(help="none|FP8_DYNAMIC|W8A8|W4A16")] = "FP8_DYNAMIC",
    train_seconds: Annotated[float, typer.Option(help="CPU training budget of the model.")] = 60.0,
    min_acc: Annotated[float, typer.Option(help="Gate: minimum accuracy (try 0.99 to fail).")] = (
        0.3
    ),
    vllm_python: Annotated[
        str,
        typer.Option(
            envvar="MODELGATE_VLLM_PYTHON",
            help="Python with vLLM installed (default: the .venv-vllm `make venvs` built).",
        ),
    ] = "",
    pipeline_root: Annotated[Path, typer.Option(help="Where step outputs go.")] = Path(
        "local_outputs"
    ),
    keep_serving: Annotated[bool, typer.Option(help="Leave vLLM running afterwards.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Stream step logs.")] = False,
) -> None:
    """Offline demo: train a tiny model, serve it from a local Hub mirror, release it locally."""
    from modelgate.demo import DEMO_MAX_MODEL_LEN, DEMO_TASK, demo_environment, demo_thresholds

    configure_logging("WARNING" if not verbose else None)
    calibration = ""
    with contextlib.ExitStack() as stack:
        with console.status("building the tiny model and starting the local Hub mirror"):
            env = stack.enter_context(
                demo_environment(cache_dir.absolute(), train_seconds=train_seconds)
            )
        stack.callback(console.print, "stopped the local Hub mirror")
        console.print(f"mirror {env.endpoint} serves {env.repo_id}@main = {env.commit_sha[:12]}")
        if quant_scheme in {"W8A8", "W4A16"}:
            calibration = str(env.task_dir / "calibration.jsonl")
            _write_calibration(Path(calibration))
        release = ReleaseParams(
            model_id=env.repo_id,
            revision="main",
            quant_scheme=quant_scheme,
            calibration_data=calibration,
            eval_tasks=DEMO_TASK,
            eval_task_dir=str(env.task_dir),
            eval_backend="hf",
            eval_device="cpu",
            eval_batch_size=16,
            eval_offline=True,
            thresholds=demo_thresholds(min_acc=min_acc),
            registry_url=os.environ.get("MODEL_REGISTRY_URL", ""),
            deploy_target="local",
            deploy_name="tiny-llama",
            max_model_len=DEMO_MAX_MODEL_LEN,
            hf_endpoint=env.endpoint,
            vllm_python=vllm_python,
            smoke_prompt="2+3=",
        )
        code = run_local(
            release, pipeline_root=pipeline_root, keep_serving=keep_serving, verbose=verbose
        )
    raise typer.Exit(code)


def _write_calibration(path: Path) -> None:
    lines = [json.dumps({"text": f"{a}+{b}={a + b}."}) for a in range(10) for b in range(10)]
    path.write_text("\n".join(lines) + "\n")


@app.command()
def gate(
    candidate: Annotated[
        Path, typer.Option(help="Candidate results: lm-eval's results JSON or modelgate's.")
    ],
    config: Annotated[str, typer.Option(help="Gate config: a .yaml/.json file or the text.")],
    base: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(help="Base model results from the same run (for min_recovery)."),
    ] = None,
    production: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(help="Production version's results (for min_vs_production)."),
    ] = None,
    html: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(help="Also write the gate page (table + bar chart) here."),
    ] = None,
) -> None:
    """Run a gate offline on saved results and print its table: how to tune thresholds.

    Exits 0 when it passes, 1 when it fails, 2 on a bad config or input.
    """
    from modelgate.gates import run_gate

    configure_logging("WARNING")
    for path in (candidate, base, production):
        if path is not None and not path.exists():
            raise ConfigError(f"results file {path} does not exist")
    outcome = run_gate(candidate=candidate, config=config, base=base, production=production)
    console.print(Markdown(outcome.report.to_markdown()))
    if html is not None:
        html.write_text(outcome.html)
        console.print(f"wrote {html}")
    console.print(
        f"[{'green' if outcome.report.passed else 'red'}]{outcome.summary}", soft_wrap=True
    )
    raise typer.Exit(0 if outcome.report.passed else 1)


@app.command("compile")
def compile_(
    check: Annotated[
        bool, typer.Option("--check", help="Fail if the committed YAML is out of date.")
    ] = False,
) -> None:
    """Compile every pipeline to YAML beside its source, or check for drift."""
    from pipelines.compile import compile_all, drift

    if check:
        problems = drift()
        for name, diff in problems.items():
            console.print(f"[red]{name}.yaml is out of date:[/]\n{diff}")
        if problems:
            console.print("run `modelgate compile` (or `make pipelines`) and commit the YAML")
            raise typer.Exit(1)
        console.print("compiled pipelines are up to date")
        return
    for path in compile_all():
        console.print(f"wrote {path}")


@app.command()
def render(
    name: Annotated[str, typer.Option(help="InferenceService / served model name.")],
    storage_uri: Annotated[
        str, typer.Option(help="s3://, pvc://, oci://, hf:// or model-registry:// URI")
    ],
    namespace: Annotated[str, typer.Option(help="Namespace.")] = "default",
    runtime: Annotated[str, typer.Option(help="ServingRuntime name.")] = "vllm-runtime",
    service_account: Annotated[
        str, typer.Option(help="Predictor service account holding the storage secret.")
    ] = "modelgate-model-reader",
    kserve_version: Annotated[
        str,
        typer.Option(help="KServe release: names the mode Standard (>= 0.16) or RawDeployment."),
    ] = "0.20",
    accelerator_type: Annotated[str, typer.Option(help="GPU resource name.")] = "nvidia.com/gpu",
    accelerator_count: Annotated[int, typer.Option(help="GPUs per replica.")] = 1,
    tolerations: Annotated[str, typer.Option(help="Tolerations, a JSON/YAML list.")] = "[]",
    node_selector: Annotated[str, typer.Option(help="Node labels, a JSON/YAML mapping.")] = "{}",
    max_model_len: Annotated[int, typer.Option(help="vLLM --max-model-len; 0 = default.")] = 0,
) -> None:
    """Print the InferenceService modelgate would deploy, validated against the KServe CRD."""
    import yaml

    from modelgate.deploy.crd import validate_inference_service
    from modelgate.deploy.kserve import build_inference_service
    from modelgate.deploy.plan import storage_uri_for
    from modelgate.deploy.spec import DeploySpec, deployment_mode_for
    from modelgate.placement import placement_from_options, validated

    spec = validated(
        DeploySpec,
        {
            "name": name,
            "namespace": namespace,
            "storage_uri": storage_uri_for(
                model_uri=storage_uri, target="kserve", explicit=storage_uri
            ),
            "runtime": runtime,
            "service_account": service_account or None,
            "deployment_mode": deployment_mode_for(kserve_version),
            "max_model_len": max_model_len or None,
            "placement": placement_from_options(
                accelerator_type=accelerator_type,
                accelerator_count=accelerator_count,
                tolerations=tolerations,
                node_selector=node_selector,
            ),
        },
        what="deployment",
    )
    isvc = build_inference_service(spec)
    validate_inference_service(isvc)
    typer.echo(yaml.safe_dump(isvc, sort_keys=False), nl=False)


def main() -> None:
    """Entry point that turns library errors into one clear line and exit code 2."""
    try:
        app()
    except (ModelgateError, ValidationError) as e:
        Console(stderr=True).print(f"[red]error:[/] {e}", soft_wrap=True, highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
