"""``modelgate package``: a stored model (or a model folder) as a KServe modelcar in a registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from modelgate.cli._common import Output, OutputFormat, console, emit, err_console, human
from modelgate.logs import configure_logging


def package(
    model: Annotated[
        str,
        typer.Option(
            help="Stored model URI (s3://…, file://…: only the files its marker lists) or a "
            "local model folder."
        ),
    ],
    repository: Annotated[
        str,
        typer.Option(
            help="Registry repository to push to, registry[:port]/path, e.g. quay.io/org/models "
            "(plain HTTP only for localhost/127.0.0.1)."
        ),
    ],
    tag: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(help="Tag to push (default: from the model's folder name)."),
    ] = None,
    authfile: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(
            help="Docker config JSON with the registry's credentials (default: skopeo's, "
            "$REGISTRY_AUTH_FILE or ${XDG_RUNTIME_DIR}/containers/auth.json)."
        ),
    ] = None,
    base_image: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(
            help="Base image with a shell: a reference or a local OCI layout oci:<folder>[:tag] "
            "(default: the pinned busybox of modelgate.images.MODELCAR_BASE_IMAGE)."
        ),
    ] = None,
    output: Output = OutputFormat.table,
) -> None:
    """Build a KServe modelcar of a model (files under /models, one layer each) and push it.

    Prints the oci://<repository>@sha256:… URI to use as storageUri. Exits 0 when pushed, 1 when
    skopeo, the base image or the registry failed, 2 on bad input found before anything ran.
    """
    from modelgate.modelcar import ModelcarError, build_modelcar

    configure_logging("WARNING")
    out = human(output)
    out.print(escape(f"packaging {model} for {repository}"), soft_wrap=True, highlight=False)
    try:
        car = build_modelcar(
            model, repository=repository, tag=tag, authfile=authfile, base_image=base_image
        )
    except ModelcarError as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(1) from e

    def table() -> None:
        console.print(
            escape(f"{len(car.files)} files, {car.bytes / 1e6:.1f} MB in {car.seconds:.1f}s"),
            highlight=False,
        )
        typer.echo(car.uri)

    emit(car.to_dict(), output, table=table)
