"""``modelgate sign`` and ``modelgate verify``: model signatures by hand, and the run options
that set the keys of a local release."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated, Optional

import typer

from modelgate.cli._common import console
from modelgate.errors import ConfigError
from modelgate.logs import configure_logging

SigningKey = Annotated[
    Optional[Path],  # noqa: UP045 - typer reads it
    typer.Option(
        help="PEM elliptic-curve private key that signs each stored model (base and candidate); "
        "default $MODELGATE_SIGNING_KEY, else models are stored unsigned.",
        show_default=False,
    ),
]
VerifyKey = Annotated[
    Optional[Path],  # noqa: UP045 - typer reads it
    typer.Option(
        help="PEM public key stored models must verify against before evaluation and deploy; "
        "default $MODELGATE_VERIFY_KEY, else signature verification is off.",
        show_default=False,
    ),
]


def use_keys(signing_key: Path | None, verify_key: Path | None) -> None:
    """Put ``--signing-key`` / ``--verify-key`` where every step of a local run reads them
    (the environment the kfp.local subprocesses inherit)."""
    from modelgate.signing import SIGNING_KEY_ENV, VERIFY_KEY_ENV

    for env, path in ((SIGNING_KEY_ENV, signing_key), (VERIFY_KEY_ENV, verify_key)):
        if path is not None:
            os.environ[env] = str(path.expanduser().absolute())


def sign(
    folder: Annotated[Path, typer.Argument(help="Model folder to sign in place.")],
    key: Annotated[Path, typer.Option(help="PEM elliptic-curve private key.")],
    certificate: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(help="Signing certificate of the key (certificate signing)."),
    ] = None,
    certificate_chain: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(help="Intermediate certificates to include (PEM)."),
    ] = None,
) -> None:
    """Sign a local model folder with OpenSSF model signing: writes model.sig into it.

    Stored folders are immutable; `modelgate run --signing-key` signs them as they are stored.
    """
    from modelgate.signing import SIGNATURE_NAME, Signer, sign_folder

    configure_logging("WARNING")
    if not folder.is_dir():
        raise ConfigError(f"{str(folder)!r} is not a folder; pass the model folder to sign")
    signer = (
        Signer(kind="key", private_key=key)
        if certificate is None
        else Signer(
            kind="certificate",
            private_key=key,
            certificate=certificate,
            chain=(certificate_chain,) if certificate_chain else (),
        )
    )
    info = sign_folder(folder, signer=signer)
    console.print(f"signed {folder / SIGNATURE_NAME} ({info.kind} {info.identity})", soft_wrap=True)


def verify(
    model: Annotated[str, typer.Argument(help="Model folder, or stored URI (s3://, file://).")],
    key: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(help="PEM public key the signature must verify against."),
    ] = None,
    certificate_chain: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads it
        typer.Option(help="CA certificates (PEM) of certificate signing, instead of --key."),
    ] = None,
) -> None:
    """Verify a model folder or stored model against its model.sig; exits 2 naming what did
    not verify."""
    from modelgate.signing import Verifier, verify_folder
    from modelgate.storage import fetch, scheme_of

    configure_logging("WARNING")
    if (key is None) == (certificate_chain is None):
        raise ConfigError("pass one of --key (a public key) or --certificate-chain")
    verifier = (
        Verifier(kind="key", public_key=key)
        if key is not None
        else Verifier(kind="certificate", chain=(certificate_chain,) if certificate_chain else ())
    )
    found = []
    if scheme_of(model) in ("s3", "file"):
        folder = fetch(
            model,
            before_check=lambda folder: found.append(
                verify_folder(folder, verifier=verifier, uri=model)
            ),
        )
        if scheme_of(model) == "s3":
            shutil.rmtree(folder, ignore_errors=True)  # the downloaded copy
    elif Path(model).is_dir():
        found.append(verify_folder(Path(model), verifier=verifier))
    else:
        raise ConfigError(f"{model!r} is neither a folder nor a stored model URI")
    info = found[0]
    console.print(f"[green]verified[/] {model} ({info.kind} {info.identity})", soft_wrap=True)
