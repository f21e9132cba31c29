"""What the command groups share: the console, ``-o/--output``, and the pipeline parameters as
options (grouped in panels, defaults shown, choices completed)."""

from __future__ import annotations

import enum
import functools
import inspect
import json
import os
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.console import Console

from modelgate import constants
from modelgate.errors import ConfigError
from modelgate.params import (
    ALL_PARAM_NAMES,
    CHOICES,
    GROUPS,
    PARAM_GROUPS,
    PARAM_HELP,
    PIPELINE_PARAMS,
    param_default,
)

#: Human output (tables, progress) goes to stdout unless a machine format was asked for.
console = Console(highlight=False)
#: Messages that must not mix with machine-readable output.
err_console = Console(stderr=True, highlight=False)


class OutputFormat(enum.StrEnum):
    """How a command prints its result (kfp's ``--output``)."""

    table = "table"
    json = "json"
    yaml = "yaml"


Output = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", help="Output format: table for people, json/yaml for scripts."),
]


def emit(data: Any, fmt: OutputFormat, *, table: Callable[[], None]) -> None:
    """Print ``data`` as JSON/YAML on stdout, or call ``table`` for people."""
    if fmt is OutputFormat.json:
        typer.echo(json.dumps(data, indent=2, default=str))
    elif fmt is OutputFormat.yaml:
        typer.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), nl=False)
    else:
        table()


def human(fmt: OutputFormat) -> Console:
    """The console for progress lines: stdout for tables, stderr when stdout is data."""
    return console if fmt is OutputFormat.table else err_console


# --------------------------------------------------------------------------------------------
# Pipeline parameters as options
# --------------------------------------------------------------------------------------------

#: Parameters whose flag is not the parameter name with dashes (first flag is the main one).
FLAGS: dict[str, tuple[str, ...]] = {
    # -n/--namespace is the KFP namespace, as kfp and kubectl users read it
    "namespace": ("--serving-namespace",),
    # one name for the gate config on every command; --thresholds kept
    "thresholds": ("--config", "--thresholds"),
}
#: Extra flags of a parameter in one scope (``render --name``, as KServe users name it).
SCOPE_FLAGS: dict[str, dict[str, tuple[str, ...]]] = {"render": {"deploy_name": ("--name",)}}
#: Environment variables that supply a parameter when neither file nor flag does.
PARAM_ENV = {
    "registry_url": constants.REGISTRY_URL_ENV,
    "hf_endpoint": constants.HF_ENDPOINT_ENV,
    "vllm_python": constants.VLLM_PYTHON_ENV,
    "model_store": constants.MODEL_STORE_ENV,
}
#: A local run deploys and evaluates on this machine unless told otherwise.
LOCAL_DEFAULTS: dict[str, Any] = {
    "deploy_target": "local",
    "eval_backend": "hf",
    "eval_device": "cpu",
}
STRUCTURED = {"tolerations": list, "node_selector": dict}

#: Which parameter groups each kind of command shows (others are accepted but hidden).
SCOPES: dict[str, tuple[str, ...]] = {
    "local": ("model", "quantize", "evaluate", "gate", "registry", "serving"),
    "cluster": GROUPS,
    "render": ("serving", "cluster"),
}
#: Parameters hidden in a scope although their group is shown.
HIDDEN: dict[str, frozenset[str]] = {
    "cluster": frozenset({"vllm_python"}),
    "render": frozenset({"vllm_python", "smoke_prompt", "hf_token_secret", "model_store_secret"}),
    "local": frozenset(),
}


#: Python names of the generated options (a command's own options may share a parameter's name,
#: e.g. submit's -n/--namespace and the pipeline's ``namespace``).
PREFIX = "param__"


def flags_of(name: str) -> tuple[str, ...]:
    """The command-line flags of parameter ``name``."""
    return FLAGS.get(name, ("--" + name.replace("_", "-"),))


def _params_model(name: str) -> Any:
    """The first params model that declares parameter ``name``."""
    return next(m for m in PIPELINE_PARAMS.values() if name in m.model_fields)


def _option_type(name: str) -> type:
    annotation = _params_model(name).model_fields[name].annotation
    return annotation if annotation in (int, bool) else str


def option_default(name: str, scope: str) -> tuple[Any, bool | str]:
    """(default value, ``show_default``) of parameter ``name``'s option in ``scope``.

    Parameters that an environment variable supplies show the variable instead: the variable
    is read below a params file, so it cannot be the option's own default.
    """
    default = param_default(name, _params_model(name))
    if scope == "local" and name in LOCAL_DEFAULTS:
        default = LOCAL_DEFAULTS[name]
    if name in PARAM_ENV:
        return None, f"${PARAM_ENV[name]}" + (f" or {default}" if default else "")
    if isinstance(default, list | dict):
        return json.dumps(default), True
    return default, True


def _completer(choices: Iterable[str]) -> Callable[..., list[str]]:
    def complete(incomplete: str) -> list[str]:
        return [c for c in choices if c and c.lower().startswith(incomplete.lower())]

    return complete


def release_options(scope: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add one option per pipeline parameter to a command; it receives ``overrides``.

    ``overrides`` holds only the options given on the command line (none has a default here),
    so they can override a params file. Each pipeline validates the ones it takes. Options sit
    in panels by group (model, quantize, evaluate, gate, registry, serving, cluster); groups
    that do not apply to ``scope`` are hidden but still accepted.
    """
    shown_groups = SCOPES[scope]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(func, include_extras=True)
        own = [
            p.replace(annotation=hints[p.name])
            for p in inspect.signature(func).parameters.values()
            if p.name != "overrides"
        ]
        # a command that takes the click context itself gets it; else the wrapper asks for one
        own_ctx = next((p.name for p in own if p.annotation is typer.Context), None)
        generated = []
        for name in sorted(ALL_PARAM_NAMES, key=lambda n: GROUPS.index(PARAM_GROUPS[n])):
            kind = _option_type(name)
            flags = flags_of(name) + SCOPE_FLAGS.get(scope, {}).get(name, ())
            decls = [f"{flags[0]}/--no-{flags[0][2:]}"] if kind is bool else list(flags)
            group = PARAM_GROUPS[name]
            extra: dict[str, Any] = {}
            if name in CHOICES:
                choices = [c for c in CHOICES[name][1] if c]
                extra["metavar"] = "[" + "|".join(choices) + "]"
                extra["autocompletion"] = _completer(choices)
            default, show = option_default(name, scope)
            option = typer.Option(
                *decls,
                help=PARAM_HELP[name],
                show_default=show,
                rich_help_panel=f"{group.capitalize()} options",
                hidden=group not in shown_groups or name in HIDDEN[scope],
                **extra,
            )
            generated.append(
                inspect.Parameter(
                    PREFIX + name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=default,
                    annotation=Annotated[Optional[kind], option],  # noqa: UP045 - typer reads it
                )
            )

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            # only what was typed overrides the params file; defaults are shown, not applied
            ctx = kwargs[own_ctx] if own_ctx else kwargs.pop(PREFIX + "ctx")
            typed = {
                n
                for n in ALL_PARAM_NAMES
                # by name: typer may bring its own copy of click and so of this enum
                if getattr(ctx.get_parameter_source(PREFIX + n), "name", "") == "COMMANDLINE"
            }
            given = {n: kwargs.pop(PREFIX + n, None) for n in ALL_PARAM_NAMES}
            overrides = {n: given[n] for n in typed}
            return func(overrides=overrides, **kwargs)

        context = inspect.Parameter(
            PREFIX + "ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context
        )
        parameters = own + generated + ([] if own_ctx else [context])
        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate


def read_text_option(value: str) -> str:
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
        flags["thresholds"] = read_text_option(flags["thresholds"])
    params = resolve_params(file=params_file, base=base, overrides=flags, model=model)
    text = read_text_option(params.thresholds)
    return params if text == params.thresholds else params.model_copy(update={"thresholds": text})


ParamsFile = Annotated[
    Optional[Path],  # noqa: UP045 - typer reads it
    typer.Option(
        "--params", help="YAML/JSON file of pipeline parameters (keys: docs/parameters.md)."
    ),
]


class PipelineName(enum.StrEnum):
    """The pipelines modelgate ships."""

    release = "release"
    redeploy = "redeploy"


Pipeline = Annotated[
    PipelineName,
    typer.Option("--pipeline", help="release (from the Hub), or redeploy (a registered version)."),
]


def package_path(pipeline: str) -> Path:
    """The compiled YAML of ``pipeline`` (package data).

    Raises:
        ConfigError: Not a pipeline modelgate ships.
    """
    from modelgate.pipelines import PIPELINE_MODULES, package_file

    if pipeline not in PIPELINE_MODULES:
        raise ConfigError(f"unknown pipeline {pipeline!r}; choose one of {list(PIPELINE_MODULES)}")
    return package_file(pipeline)


def print_checks(results: list[Any], *, seconds: float, out: Console | None = None) -> None:
    """Preflight results, one line each."""
    out = out or console
    for r in results:
        mark = "[green]ok[/]" if r.ok else "[red]FAIL[/]"
        out.print(f"  {mark} {r.name}: {r.detail}", soft_wrap=True, highlight=False)
    out.print(f"preflight: {len(results)} checks in {seconds:.1f}s")


def run_preflight(
    params: Any, *, local: bool, quiet: bool = False, out: Console | None = None
) -> list[Any]:
    """Run the preflight checks of a run with ``params``; print them unless ``quiet``.

    Raises:
        PreflightError: Any check failed (every failure is in the message).
    """
    import time

    from modelgate.preflight import PreflightError, checks_for, preflight

    started = time.monotonic()
    try:
        results = preflight(checks_for(params, local=local))
    except PreflightError as e:
        print_checks(e.results, seconds=time.monotonic() - started, out=out)
        raise
    if not quiet:
        print_checks(results, seconds=time.monotonic() - started, out=out)
    return results
