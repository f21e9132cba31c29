"""The ``modelgate`` command line."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from modelgate.errors import ModelgateError
from modelgate.logs import configure_logging

app = typer.Typer(
    help="Take an LLM from the Hugging Face Hub to a gated vLLM deployment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()

# key output shown in the summary, per step display name: the output parameter
KEY_OUTPUTS: dict[str, str] = {
    "download": "commit_sha",
    "quantize": "model_uri",
    "register candidate": "status",
    "evaluate base": "Output",
    "evaluate candidate": "Output",
    "quality gate": "summary",
    "record evaluation": "Output",
    "deploy": "endpoint",
    "smoke test": "Output",
    "stop promotion": "Output",
}
STATUS_STYLE = {
    "success": "green",
    "failure": "red",
    "skipped": "yellow",
    "not run": "dim",
    "running": "yellow",
}


def _read_text_option(value: str) -> str:
    """Options that take inline text or ``@path`` / an existing file path."""
    path = Path(value[1:] if value.startswith("@") else value)
    if len(value) < 4096 and "\n" not in value and path.suffix in {".json", ".yaml", ".yml"}:
        if not path.is_file():
            raise typer.BadParameter(f"file {path} does not exist")
        return path.read_text()
    return value


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


@app.command()
def run(
    local: Annotated[bool, typer.Option("--local", help="Run here with kfp.local.")] = False,
    model_id: Annotated[str, typer.Option(help="Hub repository id.")] = "",
    revision: Annotated[str, typer.Option(help="Branch, tag or commit.")] = "main",
    quant_scheme: Annotated[str, typer.Option(help="none|FP8_DYNAMIC|W8A8|W4A16")] = "FP8_DYNAMIC",
    calibration_data: Annotated[
        str, typer.Option(help="JSONL file, stored URI or dataset id (W8A8/W4A16).")
    ] = "",
    model_store: Annotated[
        str,
        typer.Option(
            envvar="MODELGATE_MODEL_STORE",
            help="Where models are written: s3://bucket/prefix (AWS_ENDPOINT_URL, "
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or file:///path; default: "
            "<pipeline-root>/model-store.",
        ),
    ] = "",
    eval_tasks: Annotated[str, typer.Option(help="Comma-separated lm-eval tasks.")] = "arc_easy",
    eval_task_dir: Annotated[str, typer.Option(help="Folder of local task YAMLs.")] = "",
    eval_backend: Annotated[str, typer.Option(help="hf or vllm.")] = "hf",
    eval_limit: Annotated[int, typer.Option(help="Examples per task; 0 = all.")] = 0,
    eval_batch_size: Annotated[int, typer.Option(help="lm-eval batch size.")] = 8,
    eval_offline: Annotated[
        bool, typer.Option(help="Never contact the Hub for datasets (local or cached only).")
    ] = False,
    thresholds: Annotated[
        str, typer.Option(help="Gate config: JSON/YAML text or a .json/.yaml file.")
    ] = '{"thresholds": [{"task": "arc_easy", "metric": "acc", "min": 0.5, "min_recovery": 0.95}]}',
    registry_url: Annotated[
        str, typer.Option(envvar="MODEL_REGISTRY_URL", help="Kubeflow Model Registry URL.")
    ] = "",
    deploy_target: Annotated[str, typer.Option(help="local or kserve.")] = "local",
    deploy_name: Annotated[str, typer.Option(help="Served model / InferenceService name.")] = (
        "modelgate-candidate"
    ),
    max_model_len: Annotated[int, typer.Option(help="vLLM --max-model-len; 0 = default.")] = 0,
    hf_endpoint: Annotated[str, typer.Option(envvar="HF_ENDPOINT", help="Hub mirror URL.")] = "",
    vllm_python: Annotated[
        str, typer.Option(envvar="MODELGATE_VLLM_PYTHON", help="Python with vLLM installed.")
    ] = ".venv-vllm/bin/python",
    smoke_prompt: Annotated[str, typer.Option(help="Smoke-test prompt.")] = "2+3=",
    pipeline_root: Annotated[Path, typer.Option(help="Where step outputs go.")] = Path(
        "local_outputs"
    ),
    keep_serving: Annotated[
        bool, typer.Option(help="Leave the local vLLM server running after the run.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Stream step logs.")] = False,
) -> None:
    """Run the release pipeline: download, quantize, register, evaluate, gate, deploy, smoke test.

    Exits 1 when any step fails, including a failed gate (the table names the failing metric).
    """
    configure_logging("WARNING" if not verbose else None)
    if not local:
        raise typer.BadParameter(
            "only --local runs are supported by `run`; on a cluster, upload "
            "pipelines/release.yaml in the Kubeflow UI or submit it with the kfp client",
            param_hint="--local",
        )
    if not model_id:
        raise typer.BadParameter("give the Hub repository id to release", param_hint="--model-id")
    from modelgate.gates import load_gate_config
    from modelgate.storage import open_store, stage_input
    from pipelines.local import run_pipeline_locally
    from pipelines.release import PACKAGE_PATH, release

    thresholds_text = _read_text_option(thresholds)
    load_gate_config(thresholds_text)  # fail before any step runs
    if deploy_target == "local":
        vllm_python = str(Path(vllm_python).absolute())
        os.environ["MODELGATE_VLLM_PYTHON"] = vllm_python
    if not registry_url:
        console.print("[yellow]registry: skipped: no registry configured (set MODEL_REGISTRY_URL)")
    pipeline_root = pipeline_root.absolute()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    model_store = model_store or (pipeline_root / "model-store").as_uri()
    store = open_store(model_store)
    store.check_writable()
    # local files travel to the steps through the store, as they would to a cluster's pods
    if eval_task_dir and "://" not in eval_task_dir:
        eval_task_dir = stage_input(store, eval_task_dir, kind="tasks")
    if calibration_data and Path(calibration_data).exists():
        calibration_data = stage_input(store, calibration_data, kind="calibration")
    arguments = {
        "model_id": model_id,
        "model_store": model_store,
        "revision": revision,
        "quant_scheme": quant_scheme,
        "calibration_data": calibration_data,
        "eval_tasks": eval_tasks,
        "eval_task_dir": eval_task_dir,
        "eval_backend": eval_backend,
        "eval_limit": eval_limit,
        "eval_batch_size": eval_batch_size,
        "eval_device": "cpu" if eval_backend == "hf" else "",
        "eval_offline": eval_offline,
        "thresholds": thresholds_text,
        "registry_url": registry_url,
        "deploy_target": deploy_target,
        "deploy_name": deploy_name,
        "max_model_len": max_model_len,
        "hf_endpoint": hf_endpoint,
        "vllm_python": vllm_python if deploy_target == "local" else "",
        "smoke_prompt": smoke_prompt,
    }
    console.print(f"model store: {store.root}", soft_wrap=True)
    log_file = None if verbose else pipeline_root / "run.log"

    # a handle on the terminal that survives the run sending fd 1/2 to the log file
    progress = Console(file=os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1))

    def on_step(step: Any) -> None:
        status = display_status(step)
        style = STATUS_STYLE.get(status, "")
        progress.print(f"  [{style}]{status:>8}[/] {step.display_name} ({step.seconds:.1f}s)")

    console.print(
        f"running release of {model_id}@{revision} locally; logs: {log_file or 'console'}",
        soft_wrap=True,
    )
    result = run_pipeline_locally(
        release,
        arguments=arguments,
        pipeline_yaml=PACKAGE_PATH,
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
            console.print(f"vLLM completion for {smoke_prompt!r}: {smoke.outputs.get('Output')!r}")
    finally:
        if deploy and deploy.outputs.get("deployment") and deploy_target == "local":
            _stop_local(deploy.outputs["deployment"], keep=keep_serving)
    if not result.succeeded:
        failed = [s.display_name for s in result.steps if s.status == "failure"]
        reason = gate.outputs.get("summary", "") if gate and "stop promotion" in failed else ""
        console.print(f"[red]release failed at: {', '.join(failed)}. {reason}")
        if log_file:
            console.print(f"step logs: {log_file}")
        raise typer.Exit(1)
    console.print("[green]release succeeded")


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
        str, typer.Option(envvar="MODELGATE_VLLM_PYTHON", help="Python with vLLM installed.")
    ] = ".venv-vllm/bin/python",
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
        run(
            local=True,
            model_id=env.repo_id,
            revision="main",
            quant_scheme=quant_scheme,
            calibration_data=calibration,
            eval_tasks=DEMO_TASK,
            eval_task_dir=str(env.task_dir),
            eval_backend="hf",
            eval_limit=0,
            eval_batch_size=16,
            eval_offline=True,
            model_store="",
            thresholds=demo_thresholds(min_acc=min_acc),
            registry_url=os.environ.get("MODEL_REGISTRY_URL", ""),
            deploy_target="local",
            deploy_name="tiny-llama",
            max_model_len=DEMO_MAX_MODEL_LEN,
            hf_endpoint=env.endpoint,
            vllm_python=vllm_python,
            smoke_prompt="2+3=",
            pipeline_root=pipeline_root,
            keep_serving=keep_serving,
            verbose=verbose,
        )


def _write_calibration(path: Path) -> None:
    lines = [json.dumps({"text": f"{a}+{b}={a + b}."}) for a in range(10) for b in range(10)]
    path.write_text("\n".join(lines) + "\n")


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
        Console(stderr=True).print(f"[red]error:[/] {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()
