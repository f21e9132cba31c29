"""Signing keys and a clean signing environment, for the tiers that sign models."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelgate import signing

#: Every variable that configures signing or verification.
SIGNING_ENV = (
    signing.SIGNING_KEY_ENV,
    signing.SIGNING_CERT_ENV,
    signing.SIGNING_CHAIN_ENV,
    signing.SIGSTORE_ENV,
    signing.VERIFY_KEY_ENV,
    signing.VERIFY_CHAIN_ENV,
    signing.VERIFY_IDENTITY_ENV,
    signing.VERIFY_ISSUER_ENV,
)


def clear_signing_env(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """No signing variable set and no Secret mounted, whatever the machine has."""
    for name in SIGNING_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(signing, "SIGNING_MOUNT", str(folder / "no-signing-mount"))
    monkeypatch.setattr(signing, "VERIFY_MOUNT", str(folder / "no-verify-mount"))


def write_key_pair(folder: Path, name: str = "key") -> tuple[Path, Path]:
    """A fresh P-256 key pair as PEM files: (private, public)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public
