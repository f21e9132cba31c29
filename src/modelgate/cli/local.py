"""``modelgate run``, ``preflight`` and ``demo``: releases on this machine with kfp.local."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markdown import Markdown
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
    human,
    package_path,
    release_options,
    resolve_release,
    run_preflight,
)
from modelgate.cli.signing import SigningKey, VerifyKey, use_keys
from modelgate.logs import configure_logging
from modelgate.paths import HOME_ENV, demo_cache, local_model_store, local_pipeline_root
from modelgate.processes import Interruption, servers_file, signals_raise

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
    "serving gate": "summary",
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

PipelineRoot = Annotated[
    Optional[Path],  # noqa: UP045 - typer reads it
    typer.Option(
        help=f"Where step outputs, the local model store and the embedded registry go "
        f"(default ${HOME_ENV}, else your user data folder).",
        show_default=False,
    ),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Stream step logs.")]
KEEP_SERVING_HELP = (
    "Leave the promoted local vLLM server running as production after the run; a later local "
    "release gates its candidate beside it and replaces it only if the candidate passes."
)


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
    if step.display_name.startswith("evaluate ") and value:
        meta = step.artifacts.get("results") or {}
        if meta.get("reused"):  # the store's cached evaluation of the same folder and settings
            value = f"reused {value}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 70 else text[:67] + "..."


def display_status(step: Any) -> str:
    """A step's status for people: a task that ran but did nothing (no registry) reads ``skipped``.

    ``not run`` is a task the pipeline's condition left out (deploy after a failed gate,
    stop promotion after a passed one).
    """
    if step.status == "success" and str(_key_value(step)).startswith("skipped"):
        return "skipped"
    return str(step.status)


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


def print_serving(result: Any) -> None:
    """The serving gate's table (load, metric, measured, bound, verdict), under the gate's.

    Read from the step's ``measurements`` artifact, which it writes also when it fails.
    """
    step = result.step("serving gate")
    if step is None or result.run_dir is None:
        return
    path = Path(result.run_dir) / step.task / "measurements"
    try:
        outcome = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return
    if outcome.get("serving") or outcome.get("endpoint"):
        console.print(Markdown(str(outcome.get("table", ""))))


def print_registry(result: Any, registry_url: str) -> None:
    """Where the candidate was registered, its stage, and how to browse the registry."""
    from modelgate.credentials import redact_url
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
        f"registry: {record.model_name}:{record.version_name} is {stage} in "
        f"{redact_url(registry_url)}",
        soft_wrap=True,
    )
    if is_mlflow_url(registry_url):
        console.print(f"browse it: {browse_hint(registry_url)}", soft_wrap=True)


def _kept_server(servers: Path, *, keep: bool) -> dict[str, Any] | None:
    """The production server this run started, which ``--keep-serving`` leaves running: a
    deployment-like dict (``name``, ``endpoint``, ``details``: its serving record, ``record``:
    that record's path), or None.

    Read from the state, not from the steps' outputs: a server the run started (recorded in
    ``servers``) that the serving records name as production, i.e. one the run promoted.
    """
    if not keep:
        return None
    from modelgate.deploy.local import production_path, production_record
    from modelgate.processes import recorded_servers

    for server in reversed(recorded_servers(servers)):  # newest first
        name = server.get("name")
        record = production_record(name) if name else None
        if record is not None and int(record["pid"]) == int(server["pid"]):
            return {
                "name": name,
                "endpoint": record["endpoint"],
                "details": record,
                "record": str(production_path(name)),
            }
    return None


def _teardown(servers: Path, *, kept: dict[str, Any] | None, interruption: Interruption) -> None:
    """Stop what the run started and still runs: its step processes (after an interrupt) and
    every vLLM server it recorded in ``servers`` or that carries its mark, except ``kept``.

    A stopped server's serving records go with it (a production record pointing at it too).
    Servers of earlier runs (an earlier ``--keep-serving``) are not the run's: they stay, unless
    the run's promote replaced them.

    A Ctrl-C reached the steps too, so they get some seconds to run their own clean-up (remove
    staging folders, stop a server that was starting) before they are interrupted; after a
    SIGTERM, which reached only this process, they are interrupted at once.
    """
    from modelgate.deploy.local import production_record, stop_server
    from modelgate.processes import (
        SERVERS_FILE_ENV,
        marked_processes,
        recorded_servers,
        stop_process_group,
        stop_processes,
    )

    session = os.getsid(0)
    if interruption.signum is not None:
        steps = [
            p.pid for p in marked_processes(SERVERS_FILE_ENV, str(servers)) if p.sid == session
        ]
        grace = 10.0 if interruption.signum == signal.SIGINT else 0.0
        stop_processes(steps, grace=grace, timeout=15.0)
    kept_group = int(kept["details"].get("pgid") or kept["details"]["pid"]) if kept else None
    for server in recorded_servers(servers):
        if int(server["pgid"]) == kept_group:
            continue
        production = production_record(server["name"]) if server.get("name") else None
        stop_server(server)
        if production is not None and int(production["pid"]) == int(server["pid"]):
            console.print(
                f"stopped local vLLM (pid {server['pid']}, production of {server['name']}; "
                "--keep-serving leaves it serving)"
            )
        else:
            console.print(f"stopped local vLLM (pid {server['pid']})")
    # a server whose step died before recording it still carries the run's mark
    strays = {p.pgid for p in marked_processes(SERVERS_FILE_ENV, str(servers)) if p.sid != session}
    for pgid in sorted(strays - {kept_group}):
        stop_process_group(pgid)
        console.print(f"stopped process group {pgid} the run started")
    servers.unlink(missing_ok=True)
    if kept:
        pid = kept["details"]["pid"]
        served = f" {kept['name']}" if kept.get("name") else ""
        console.print(f"vLLM keeps serving{served} at {kept['endpoint']} (pid {pid})")
        if kept.get("record"):
            console.print(f"  record: {kept['record']}", soft_wrap=True)
        console.print(
            f"  stop it: kill -- -{kept_group} (its process group); a later local release of "
            "the same name gates its candidate beside it",
            soft_wrap=True,
        )


def with_local_store(params: Any, pipeline_root: Path) -> Any:
    """``params`` with the local defaults of a run under ``pipeline_root``: the model store and
    the embedded registry there unless others are named."""
    from modelgate.registry import local_registry_url

    defaults: dict[str, Any] = {}
    if "model_store" in type(params).model_fields and not params.model_store:
        defaults["model_store"] = local_model_store(pipeline_root).as_uri()
    if not params.registry_url:  # the embedded registry of local runs
        defaults["registry_url"] = local_registry_url(pipeline_root)
    return params.model_copy(update=defaults)


def run_local(
    params: Any,
    *,
    pipeline_root: Path,
    keep_serving: bool = False,
    verbose: bool = False,
) -> int:
    """Run the release (or, with :class:`~modelgate.params.RedeployParams`, the redeploy)
    pipeline with kfp.local after preflight; returns the exit code.

    Whatever way the run ends (success, failure, Ctrl-C, SIGTERM) the servers and step processes
    it started are stopped; with ``keep_serving`` a finished run leaves the server it promoted
    serving as production (a later local release gates its candidate beside it). An
    interrupted run returns 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM).

    Raises:
        ConfigError: Preflight failed (nothing ran).
    """
    from modelgate.params import RedeployParams
    from modelgate.storage import open_store, stage_local_inputs

    pipeline = "redeploy" if isinstance(params, RedeployParams) else "release"
    pipeline_root = pipeline_root.absolute()
    params = with_local_store(params, pipeline_root)
    run_preflight(params, local=True)
    pipeline_root.mkdir(parents=True, exist_ok=True)
    console.print(f"local data: {pipeline_root}", soft_wrap=True)
    staged: dict[str, Any] = {}
    if pipeline == "release":
        # local files travel to the steps through the store, as they do to a cluster's pods
        staged.update(stage_local_inputs(params))
        console.print(f"model store: {open_store(params.model_store).root}", soft_wrap=True)
    if params.deploy_target == "local":
        from modelgate.deploy.local import resolve_vllm_python

        staged["vllm_python"] = resolve_vllm_python(params.vllm_python or None)
    params = params.model_copy(update=staged)

    from modelgate.pipelines.local import run_pipeline_locally

    module = importlib.import_module(f"modelgate.pipelines.{pipeline}")
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
    # every server a step starts is recorded here, and every process of the run carries its name
    servers = pipeline_root / f".servers-{os.getpid()}-{time.time_ns()}.jsonl"
    kept: dict[str, Any] | None = None
    with signals_raise() as interruption, servers_file(servers):
        try:
            result = run_pipeline_locally(
                getattr(module, pipeline),
                arguments=params.arguments(),
                pipeline_yaml=module.PACKAGE_PATH,
                pipeline_root=pipeline_root,
                log_file=log_file,
                on_step=on_step,
            )
            kept = _kept_server(servers, keep=keep_serving)
            print_summary(result)
            gate = result.step("quality gate")
            if gate and gate.outputs.get("table"):
                console.print(Markdown(gate.outputs["table"]))
            print_serving(result)
            smoke = result.step("smoke test")
            if smoke and smoke.status == "success":
                console.print(
                    f"vLLM completion for {params.smoke_prompt!r}: {smoke.outputs.get('Output')!r}"
                )
        except KeyboardInterrupt:
            if interruption.signum is None:  # not a signal of ours: nothing to report
                raise
        finally:
            if interruption.signum is not None:
                kept = None  # an interrupted run leaves nothing serving
            try:
                _teardown(servers, kept=kept, interruption=interruption)
            except KeyboardInterrupt:
                if interruption.signum is None:
                    raise
                # interrupted while stopping a finished run: once more (later signals are ignored)
                _teardown(servers, kept=None, interruption=interruption)
    if interruption.signum is not None:
        console.print(f"[red]interrupted ({interruption.name}); stopped what the run started")
        return 128 + interruption.signum
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


@release_options("local")
def run(
    overrides: dict[str, Any],
    params: ParamsFile = None,
    pipeline: Pipeline = PipelineName.release,
    pipeline_root: PipelineRoot = None,
    keep_serving: Annotated[bool, typer.Option(help=KEEP_SERVING_HELP)] = False,
    verbose: Verbose = False,
    local: Annotated[
        bool, typer.Option("--local", hidden=True, help="Accepted; runs are local anyway.")
    ] = True,
    signing_key: SigningKey = None,
    verify_key: VerifyKey = None,
) -> None:
    """Run a release here with kfp.local: preflight, download, quantize, register, evaluate,
    gate, deploy (a local vLLM unless --deploy-target kserve), smoke test, promote.

    With --signing-key every stored model is signed (model.sig beside it); with --verify-key
    a model that does not verify is neither evaluated nor deployed (docs/model-data.md).

    To run on Kubeflow use `modelgate submit`. Exits 1 when a step fails, including a failed
    gate (the reason is printed under the summary), 2 when preflight finds bad input (nothing
    runs).
    """
    configure_logging("WARNING" if not verbose else None)
    package_path(pipeline.value)  # a pipeline modelgate ships
    use_keys(signing_key, verify_key)  # preflight checks them; the steps inherit them
    release = resolve_release(overrides, params_file=params, local=True, pipeline=pipeline.value)
    code = run_local(
        release,
        pipeline_root=pipeline_root or local_pipeline_root(),
        keep_serving=keep_serving,
        verbose=verbose,
    )
    raise typer.Exit(code)


@release_options("cluster")
def preflight(
    overrides: dict[str, Any],
    local: Annotated[
        bool, typer.Option("--local", help="Check for a run on this machine (`modelgate run`).")
    ] = False,
    params: ParamsFile = None,
    pipeline: Pipeline = PipelineName.release,
    output: Output = OutputFormat.table,
) -> None:
    """Check a run before starting it: the same checks `run` and `submit` start with.

    Exits 0 when every check passes, 2 otherwise (each failure with its fix).
    """
    from modelgate.preflight import PreflightError

    configure_logging("WARNING")
    package_path(pipeline.value)  # a pipeline modelgate ships
    release = resolve_release(overrides, params_file=params, local=local, pipeline=pipeline.value)
    if local:
        release = with_local_store(release, local_pipeline_root())
    elif "model_store" in type(release).model_fields and not release.model_store:
        release = release.model_copy(update={"model_store": local_model_store().as_uri()})
    out = human(output)
    try:
        results = run_preflight(
            release, local=local, quiet=output is not OutputFormat.table, out=out
        )
    except PreflightError as e:
        if output is not OutputFormat.table:
            emit(_checks_data(e.results, passed=False), output, table=lambda: None)
        raise
    emit(
        _checks_data(results, passed=True),
        output,
        table=lambda: out.print("[green]preflight passed"),
    )


def _checks_data(results: list[Any], *, passed: bool) -> dict[str, Any]:
    return {
        "passed": passed,
        "checks": [{"name": r.name, "ok": r.ok, "detail": r.detail} for r in results],
    }


def demo(
    cache_dir: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(help="Tiny model, task and mirror cache (default: in the local data folder)."),
    ] = None,
    quant_scheme: Annotated[
        str, typer.Option(help="Quantization scheme (see `modelgate run --help`); none skips it.")
    ] = "FP8_DYNAMIC",
    train_seconds: Annotated[float, typer.Option(help="CPU training budget of the model.")] = 60.0,
    min_acc: Annotated[float, typer.Option(help="Gate: minimum accuracy (try 0.99 to fail).")] = (
        0.3
    ),
    vllm_python: Annotated[
        str,
        typer.Option(
            envvar=constants.VLLM_PYTHON_ENV,
            help="Python with vLLM installed (default: the .venv-vllm `make venvs` built).",
        ),
    ] = "",
    pipeline_root: PipelineRoot = None,
    keep_serving: Annotated[bool, typer.Option(help=KEEP_SERVING_HELP)] = False,
    verbose: Verbose = False,
) -> None:
    """Offline demo: train a tiny model, serve it from a local Hub mirror, release it locally."""
    from modelgate.demo import demo_release

    configure_logging("WARNING" if not verbose else None)
    # one handler for the whole demo: a signal unwinds the run, then the mirror, uninterrupted
    with signals_raise(), contextlib.ExitStack() as stack:
        with console.status("building the tiny model and starting the local Hub mirror"):
            env, release = demo_release(
                stack,
                cache_dir=(cache_dir or demo_cache()).absolute(),
                train_seconds=train_seconds,
                quant_scheme=quant_scheme,
                min_acc=min_acc,
                vllm_python=vllm_python,
            )
        stack.callback(console.print, "stopped the local Hub mirror")
        console.print(f"mirror {env.endpoint} serves {env.repo_id}@main = {env.commit_sha[:12]}")
        code = run_local(
            release,
            pipeline_root=pipeline_root or local_pipeline_root(),
            keep_serving=keep_serving,
            verbose=verbose,
        )
    raise typer.Exit(code)


__all__ = ["demo", "display_status", "preflight", "print_summary", "run", "run_local"]
