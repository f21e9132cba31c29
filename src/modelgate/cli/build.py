"""``modelgate compile`` and ``modelgate render``: what modelgate hands to KFP and KServe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from modelgate.cli._common import ParamsFile, console, release_options, resolve_release


def compile_(
    check: Annotated[
        bool,
        typer.Option("--check", help="Fail if the packaged YAML differs from a fresh compile."),
    ] = False,
    output: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(
            "--output",
            "-o",
            file_okay=False,
            help="Write the YAML into this folder (default: beside the pipeline modules).",
        ),
    ] = None,
    image_registry: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(help="Point the steps at images pushed to this registry, e.g. quay.io/me."),
    ] = None,
    image_tag: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(help="Tag of those images (default: the modelgate version)."),
    ] = None,
) -> None:
    """Compile every pipeline to YAML, or check the packaged YAML for drift."""
    from modelgate.pipelines.compile import compile_all, drift

    if check:
        problems = drift()
        for name, diff in problems.items():
            console.print(f"[red]{name}.yaml is out of date:[/]\n{diff}")
        if problems:
            console.print("run `modelgate compile` (or `make pipelines`) and commit the YAML")
            raise typer.Exit(1)
        console.print("compiled pipelines are up to date")
        return
    for path in compile_all(output, image_registry=image_registry, image_tag=image_tag):
        console.print(f"wrote {path}", soft_wrap=True)


@release_options("render")
def render(
    overrides: dict[str, Any],
    params: ParamsFile = None,
    kserve_version: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(
            help="KServe release of the cluster: names the mode Standard (>= 0.16) or "
            "RawDeployment, overriding --deployment-mode; llmisvc needs >= 0.17."
        ),
    ] = None,
    target: Annotated[
        Optional[str],  # noqa: UP045 - typer reads it
        typer.Option(
            "--target",
            metavar="[kserve|llmisvc]",
            help="What to print: kserve (InferenceService) or llmisvc (LLMInferenceService, "
            "KServe >= 0.17 with llm-d). Default: --deploy-target when that is one of them, "
            "else kserve.",
        ),
    ] = None,
) -> None:
    """Print the InferenceService (or LLMInferenceService) a release would deploy, validated
    against the KServe CRD.

    Takes the same options and params file as `run` and `submit`; --storage-uri names the model.
    """
    import yaml

    from modelgate.deploy.crd import validate_inference_service, validate_llm_inference_service
    from modelgate.deploy.plan import RENDER_TARGETS, render_spec

    release = resolve_release(overrides, params_file=params, local=False)
    if target is None:
        target = release.deploy_target if release.deploy_target in RENDER_TARGETS else "kserve"
    spec = render_spec(release, kserve_version=kserve_version, target=target)
    if target == "llmisvc":
        from modelgate.deploy.llmisvc import build_llm_inference_service

        obj = build_llm_inference_service(spec)
        validate_llm_inference_service(obj)
    else:
        from modelgate.deploy.kserve import build_inference_service

        obj = build_inference_service(spec)
        validate_inference_service(obj)
    typer.echo(yaml.safe_dump(obj, sort_keys=False), nl=False)
