"""``modelgate gate``: a gate run offline on saved results, to tune thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markdown import Markdown

from modelgate.cli._common import Output, OutputFormat, console, emit, human
from modelgate.errors import ConfigError
from modelgate.logs import configure_logging
from modelgate.params import DEFAULT_THRESHOLDS


def gate(
    candidate: Annotated[
        Path, typer.Option(help="Candidate results: lm-eval's results JSON or modelgate's.")
    ],
    config: Annotated[
        str,
        typer.Option(
            "--config",
            "--thresholds",
            help="Gate config: a .yaml/.json file or the text (docs/gates.md).",
        ),
    ] = DEFAULT_THRESHOLDS,
    base: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(help="Base model results from the same run (for min_recovery)."),
    ] = None,
    production: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(help="Production version's results (for min_vs_production)."),
    ] = None,
    candidate_samples: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(
            help="Candidate per-sample results: lm-eval's --log_samples file or folder, or "
            "modelgate's samples.jsonl. Default: the samples_*.jsonl beside --candidate."
        ),
    ] = None,
    base_samples: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(help="Base per-sample results (default: beside --base)."),
    ] = None,
    production_samples: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(help="Production per-sample results (default: beside --production)."),
    ] = None,
    html: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(help="Also write the gate page (table + bar chart) here."),
    ] = None,
    output: Output = OutputFormat.table,
) -> None:
    """Run a gate offline on saved results and print its table: how to tune thresholds.

    With per-sample results on both sides (lm-eval run with --log_samples), ratio checks are
    paired per document (docs/gates.md). Exits 0 when it passes, 1 when it fails, 2 on a bad
    config or input.
    """
    from modelgate.gates import run_gate

    configure_logging("WARNING")
    for path in (candidate, base, production):
        if path is not None and not path.exists():
            raise ConfigError(f"results file {path} does not exist")
    for path in (candidate_samples, base_samples, production_samples):
        if path is not None and not path.exists():
            raise ConfigError(f"samples file or folder {path} does not exist")
    outcome = run_gate(
        candidate=candidate,
        config=config,
        base=base,
        production=production,
        candidate_samples=candidate_samples,
        base_samples=base_samples,
        production_samples=production_samples,
    )
    out = human(output)

    def table() -> None:
        console.print(Markdown(outcome.report.to_markdown()))

    emit(
        {**outcome.report.to_dict(), "summary": outcome.summary},
        output,
        table=table,
    )
    if html is not None:
        html.write_text(outcome.html)
        out.print(f"wrote {html}")
    out.print(f"[{'green' if outcome.report.passed else 'red'}]{outcome.summary}", soft_wrap=True)
    raise typer.Exit(0 if outcome.report.passed else 1)
