"""The ``modelgate`` command line: one module per command group, each thin over the library.

* :mod:`~modelgate.cli.local` — ``run`` (a release here, with kfp.local), ``preflight``, ``demo``
* :mod:`~modelgate.cli.kfp` — ``submit`` and ``schedule`` on Kubeflow Pipelines
* :mod:`~modelgate.cli.gate` — ``gate`` on saved results
* :mod:`~modelgate.cli.slo` — ``slo``, the serving gate against a live endpoint
* :mod:`~modelgate.cli.package` — ``package``, a stored model as a KServe modelcar
* :mod:`~modelgate.cli.signing` — ``sign`` and ``verify``, model signatures by hand
* :mod:`~modelgate.cli.build` — ``compile`` and ``render``

Commands that start a run take the pipelines' parameters as options (generated from
:mod:`modelgate.params`, in panels by group) and a ``--params`` file; options override the
file, which overrides the defaults. Exit codes: 0 success, 1 a failed release (a step or the
gate), 2 bad input found before anything ran.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape

from modelgate import __version__
from modelgate.cli import build, gate, kfp, local, package, signing, slo
from modelgate.cli._common import err_console
from modelgate.errors import ModelgateError

app = typer.Typer(
    help="Take an LLM from the Hugging Face Hub to a gated vLLM deployment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"modelgate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Take an LLM from the Hugging Face Hub to a gated vLLM deployment."""


app.command("run")(local.run)
app.command("preflight")(local.preflight)
app.command("submit")(kfp.submit)
app.add_typer(kfp.schedule_app, name="schedule")
app.command("gate")(gate.gate)
app.command("slo")(slo.slo)
app.command("package")(package.package)
app.command("sign")(signing.sign)
app.command("verify")(signing.verify)
app.command("render")(build.render)
app.command("compile")(build.compile_)
app.command("demo")(local.demo)


def main() -> None:
    """Entry point that turns library errors into one clear line and exit code 2."""
    try:
        app()
    except (ModelgateError, ValidationError) as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        sys.exit(2)


__all__ = ["app", "main"]
