"""``modelgate slo``: the serving (SLO) gate against any running OpenAI-compatible server."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markdown import Markdown
from rich.markup import escape

from modelgate.cli._common import Output, OutputFormat, console, emit, human
from modelgate.logs import configure_logging


def slo(
    endpoint: Annotated[
        str,
        typer.Option(help="Base URL of the OpenAI-compatible server, e.g. http://127.0.0.1:8000."),
    ],
    model: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(help="Served model name (/v1/models); default: the only one served."),
    ] = None,
    config: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(
            "--config",
            help="Gate config with a serving section, or the section alone: a .yaml/.json "
            "file or the text (docs/gates.md). Default: the default load and bounds.",
        ),
    ] = None,
    tokenizer: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(
            help="Local folder with the model's tokenizer (the prompts are sized with it); "
            "default: --model as a folder, or the folder a local vLLM serves.",
        ),
    ] = None,
    html: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(help="Also write the gate page (table + GuideLLM's report) here."),
    ] = None,
    json_out: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option("--json", help="Also write the result with its measurements (JSON) here."),
    ] = None,
    out_dir: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(
            help="Keep GuideLLM's report, page and log in this folder (default: a temporary "
            "folder, removed)."
        ),
    ] = None,
    timeout: Annotated[
        Optional[float],  # noqa: UP045 - typer reads it
        typer.Option(help="Seconds GuideLLM may take (default: the load's duration + 300)."),
    ] = None,
    output: Output = OutputFormat.table,
) -> None:
    """Benchmark a live endpoint with GuideLLM and check the serving gate's bounds.

    Exits 0 when every bound holds, 1 when one is missed (the line names metric, value and
    bound), 2 on a bad config, a missing tokenizer or an endpoint that does not answer.
    """
    from modelgate.slo import (
        check_endpoint,
        load_serving_config,
        resolve_processor,
        run_serving_gate,
    )

    configure_logging("WARNING")
    out = human(output)
    cfg = load_serving_config(config)
    served = check_endpoint(endpoint, model, load=cfg.load)
    processor = resolve_processor(tokenizer, model=served.id, served=served)
    work = out_dir or Path(tempfile.mkdtemp(prefix="modelgate-slo-"))
    out.print(
        escape(f"serving gate: GuideLLM against {endpoint} ({served.id}), {cfg.load.describe()}"),
        soft_wrap=True,
        highlight=False,
    )
    try:
        result = run_serving_gate(
            endpoint, served.id, cfg, processor=processor, out_dir=work, timeout=timeout
        )
        if html is not None:
            shutil.copyfile(work / "serving.html", html)
        if json_out is not None:
            shutil.copyfile(work / "serving.json", json_out)
    finally:
        if out_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    def table() -> None:
        console.print(Markdown(result.table()))

    emit(result.to_dict(), output, table=table)
    for path in (html, json_out):
        if path is not None:
            out.print(escape(f"wrote {path}"))
    color = "green" if result.passed else "red"
    out.print(f"[{color}]{escape(result.summary)}", soft_wrap=True, highlight=False)
    raise typer.Exit(0 if result.passed else 1)
