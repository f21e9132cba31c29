"""Model signatures: sign what the store holds, verify it before evaluation and deploy.

Signatures are OpenSSF model signing (the ``model-signing`` package): a Sigstore bundle over a
manifest of every file's sha256, written as :data:`SIGNATURE_NAME` beside the model in its
stored folder. The signature covers every file of the folder except itself and the store's
marker (:data:`modelgate.storage.MARKER`, written after signing); ``.git*`` files are covered
too (``model-signing`` skips them by default). A file added, removed or changed after signing
fails verification, naming the file.

Who signs and who verifies is configured by environment, so a step reads the same settings
whether it runs in a pod or as a local subprocess:

* signing: :data:`SIGNING_KEY_ENV` (a PEM elliptic-curve private key; P-256/384/521), with
  :data:`SIGNING_CERT_ENV` (and :data:`SIGNING_CHAIN_ENV`) for certificate signing; or
  :data:`SIGSTORE_ENV` ``=1`` for Sigstore keyless signing with the pod's ambient OIDC identity
  (explicit only: it talks to the public Sigstore instance). In the cluster, the Secret named by
  the pipeline's ``signing_key_secret`` is mounted at :data:`SIGNING_MOUNT` (keys
  ``private-key``, optional ``certificate`` and ``certificate-chain``).
* verification: :data:`VERIFY_KEY_ENV` (the PEM public key), :data:`VERIFY_CHAIN_ENV` (the CA
  certificates of certificate signing), or :data:`VERIFY_IDENTITY_ENV` with
  :data:`VERIFY_ISSUER_ENV` (Sigstore keyless). In the cluster: the Secret named by
  ``verify_key_secret`` at :data:`VERIFY_MOUNT` (keys ``public-key``, ``certificate-chain``,
  or ``identity`` and ``oidc-issuer``).

Nothing configured: folders are stored unsigned and verification is off (logged as such).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelgate.errors import ConfigError, SignatureError, StorageError
from modelgate.storage import MARKER, fetch, scheme_of

logger = logging.getLogger(__name__)

#: The signature file in a stored folder (a Sigstore bundle, JSON).
SIGNATURE_NAME = "model.sig"
#: Files of a folder the signature does not cover.
UNSIGNED = (SIGNATURE_NAME, MARKER)
#: Largest signature file read (a bundle with a certificate chain is a few KB; the manifest of
#: a model with thousands of files stays well under this).
MAX_SIGNATURE_BYTES = 16 * 1024**2

SIGNING_KEY_ENV = "MODELGATE_SIGNING_KEY"
SIGNING_CERT_ENV = "MODELGATE_SIGNING_CERT"
SIGNING_CHAIN_ENV = "MODELGATE_SIGNING_CERT_CHAIN"
SIGSTORE_ENV = "MODELGATE_SIGSTORE"
VERIFY_KEY_ENV = "MODELGATE_VERIFY_KEY"
VERIFY_CHAIN_ENV = "MODELGATE_VERIFY_CERT_CHAIN"
VERIFY_IDENTITY_ENV = "MODELGATE_VERIFY_IDENTITY"
VERIFY_ISSUER_ENV = "MODELGATE_VERIFY_OIDC_ISSUER"

#: Default Secret names of the pipelines' ``signing_key_secret`` / ``verify_key_secret``
#: (mounted as optional: without the Secret, nothing is signed or verified).
SIGNING_KEY_SECRET = "modelgate-signing-key"
VERIFY_KEY_SECRET = "modelgate-verify-key"
#: Where the pipelines mount those Secrets.
SIGNING_MOUNT = "/var/run/secrets/modelgate/signing"
VERIFY_MOUNT = "/var/run/secrets/modelgate/verify"

Kind = Literal["key", "certificate", "sigstore"]
_SIGNING_FILES = {"private-key": SIGNING_KEY_ENV, "certificate": SIGNING_CERT_ENV}
# model-signing reports differences as the str() of a list of lines (verifying.py,
# Config._get_manifest_diff): quotes inside may come escaped
_MISMATCH = re.compile(r"Hash mismatch for \\*'(.*?)\\*': Expected")
_LISTED = re.compile(
    r"(Extra files found|Missing files) in model \\*'.*?\\*': (.*?)\\*[\"'](?:, |\])"
)


@dataclass(frozen=True)
class Signer:
    """How stored folders are signed."""

    kind: Kind
    private_key: Path | None = None
    certificate: Path | None = None
    chain: tuple[Path, ...] = ()

    def identity(self) -> str:
        """The key fingerprint (``sha256:<hex>`` of the PEM public key, the hint the bundle
        carries) or the certificate's subject; ``sigstore`` for keyless signing.

        Raises:
            ConfigError: The key or certificate cannot be read.
        """
        if self.kind == "sigstore":
            return "sigstore keyless (ambient OIDC identity)"
        assert self.private_key is not None
        key = _private_key(self.private_key)
        fingerprint = key_fingerprint(key.public_key())
        if self.certificate is None:
            return fingerprint
        return f"{_certificate(self.certificate).subject.rfc4514_string()} ({fingerprint})"


@dataclass(frozen=True)
class Verifier:
    """What a stored folder's signature must verify against."""

    kind: Kind
    public_key: Path | None = None
    chain: tuple[Path, ...] = ()
    identity: str = ""
    oidc_issuer: str = ""

    def describe(self) -> str:
        """A line for logs: the key fingerprint, CA file(s) or Sigstore identity.

        Raises:
            ConfigError: The key or certificates cannot be read.
        """
        if self.kind == "key":
            assert self.public_key is not None
            return f"public key {key_fingerprint(_public_key(self.public_key))}"
        if self.kind == "certificate":
            for path in self.chain:
                _certificates(path)
            return f"certificate chain {', '.join(p.name for p in self.chain)}"
        return f"Sigstore identity {self.identity} from {self.oidc_issuer}"


@dataclass(frozen=True)
class SignatureInfo:
    """What the registry records about a stored folder's signature."""

    signed: bool
    signature_file: str = ""
    identity: str = ""
    kind: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def to_properties(self, prefix: str = "signature.") -> dict[str, str]:
        """Flat registry properties (``signature.signed`` = ``yes``/``no``, file, identity)."""
        props = {f"{prefix}signed": "yes" if self.signed else "no"}
        if self.signed:
            props |= {
                f"{prefix}file": self.signature_file,
                f"{prefix}identity": self.identity,
                f"{prefix}kind": self.kind,
            }
        return props


def key_fingerprint(public_key: Any) -> str:
    """``sha256:<hex>`` of the PEM SubjectPublicKeyInfo: the public-key hint that
    ``model-signing`` puts in the bundle (``model_signing/_signing/sign_ec_key.py``,
    ``Signer._get_verification_material``)."""
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return f"sha256:{hashlib.sha256(pem).hexdigest()}"


def _read_pem(path: Path, *, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ConfigError(f"{what} {str(path)!r} does not exist; pass the PEM file") from e
    except OSError as e:
        raise ConfigError(f"{what} {str(path)!r} cannot be read: {e.strerror or e}") from e
    if len(data) > 1024**2:
        raise ConfigError(f"{what} {str(path)!r} is {len(data)} bytes: not a PEM key")
    return data


def _check_curve(key: Any, *, path: Path, what: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    # model-signing signs with ECDSA only (model_signing/_signing/sign_ec_key.py)
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in (
        "secp256r1",
        "secp384r1",
        "secp521r1",
    ):
        raise ConfigError(
            f"{what} {str(path)!r} is not an elliptic-curve P-256/P-384/P-521 key; make one "
            "with: openssl ecparam -name prime256v1 -genkey -noout -out signing-key.pem"
        )


def _private_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization

    data = _read_pem(path, what="signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"signing key {str(path)!r} is not an unencrypted PEM private key ({e})"
        ) from e
    _check_curve(key.public_key(), path=path, what="signing key")
    return key


def _public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization

    data = _read_pem(path, what="verify key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        hint = " (that is a private key: pass its public half)" if b"PRIVATE" in data else ""
        raise ConfigError(
            f"verify key {str(path)!r} is not a PEM public key{hint}; extract it with: "
            "openssl ec -in signing-key.pem -pubout -out verify-key.pem"
        ) from e
    _check_curve(key, path=path, what="verify key")
    return key


def _certificates(path: Path) -> list[Any]:
    from cryptography import x509

    data = _read_pem(path, what="certificate file")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ConfigError(f"certificate file {str(path)!r} holds no PEM certificate") from e
    return certificates


def _certificate(path: Path) -> Any:
    return _certificates(path)[0]


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def _mounted(mount: str, name: str) -> Path | None:
    path = Path(mount) / name
    return path if path.is_file() else None


def signer_from_env() -> Signer | None:
    """The configured signer (see the module docstring), or None when signing is off.

    Raises:
        ConfigError: A certificate without a key, or keyless signing mixed with a key.
    """
    key = _env_path(SIGNING_KEY_ENV) or _mounted(SIGNING_MOUNT, "private-key")
    cert = _env_path(SIGNING_CERT_ENV) or _mounted(SIGNING_MOUNT, "certificate")
    chain = _env_path(SIGNING_CHAIN_ENV) or _mounted(SIGNING_MOUNT, "certificate-chain")
    sigstore = os.environ.get(SIGSTORE_ENV, "").strip().lower() in ("1", "true", "yes")
    if sigstore:
        if key or cert:
            raise ConfigError(
                f"{SIGSTORE_ENV} asks for Sigstore keyless signing and a signing key is "
                f"configured too; unset one of them ({SIGSTORE_ENV}, {SIGNING_KEY_ENV})"
            )
        return Signer(kind="sigstore")
    if key is None:
        if cert is not None:
            raise ConfigError(
                f"a signing certificate is configured without its private key; set "
                f"{SIGNING_KEY_ENV} (--signing-key)"
            )
        return None
    if cert is None:
        return Signer(kind="key", private_key=key)
    return Signer(
        kind="certificate", private_key=key, certificate=cert, chain=(chain,) if chain else ()
    )


def verifier_from_env() -> Verifier | None:
    """The configured verifier (see the module docstring), or None when verification is off.

    Raises:
        ConfigError: A Sigstore identity without its OIDC issuer (or the reverse).
    """
    key = _env_path(VERIFY_KEY_ENV) or _mounted(VERIFY_MOUNT, "public-key")
    if key is not None:
        return Verifier(kind="key", public_key=key)
    chain = _env_path(VERIFY_CHAIN_ENV) or _mounted(VERIFY_MOUNT, "certificate-chain")
    if chain is not None:
        return Verifier(kind="certificate", chain=(chain,))
    identity = os.environ.get(VERIFY_IDENTITY_ENV, "").strip() or _mounted_text("identity")
    issuer = os.environ.get(VERIFY_ISSUER_ENV, "").strip() or _mounted_text("oidc-issuer")
    if identity and issuer:
        return Verifier(kind="sigstore", identity=identity, oidc_issuer=issuer)
    if identity or issuer:
        raise ConfigError(
            f"Sigstore verification needs both {VERIFY_IDENTITY_ENV} and {VERIFY_ISSUER_ENV}"
        )
    return None


def _mounted_text(name: str) -> str:
    path = _mounted(VERIFY_MOUNT, name)
    return path.read_text()[:1024].strip() if path else ""


def check_config() -> str:
    """Load the configured signer and verifier, as preflight does before any model work.

    Returns:
        One line: what signs and what verifies (or that each is off).

    Raises:
        ConfigError: A configured key or certificate file is missing or does not parse.
    """
    signer, verifier = signer_from_env(), verifier_from_env()
    parts = []
    if signer is None:
        parts.append("signing off")
    else:
        if signer.kind == "certificate":
            _check_certificate_pair(signer)
        parts.append(f"signing with {signer.kind} {signer.identity()}")
    parts.append(
        "signature verification off" if verifier is None else f"verify {verifier.describe()}"
    )
    return "; ".join(parts)


def _check_certificate_pair(signer: Signer) -> None:
    assert signer.private_key is not None and signer.certificate is not None
    key = _private_key(signer.private_key)
    if _certificate(signer.certificate).public_key() != key.public_key():
        raise ConfigError(
            f"signing certificate {str(signer.certificate)!r} does not belong to signing key "
            f"{str(signer.private_key)!r}; pass the certificate issued for that key"
        )
    for path in signer.chain:
        _certificates(path)


def _hashing() -> Any:
    from model_signing import hashing

    # ignore_git_paths=False: every file is covered but the signature and the store marker
    # (model_signing/hashing.py, Config.hash: .git* paths are skipped by default)
    return hashing.Config().set_ignored_paths(paths=list(UNSIGNED), ignore_git_paths=False)


def sign_folder(folder: Path, *, signer: Signer) -> SignatureInfo:
    """Sign every file of ``folder`` into ``folder/model.sig`` (replacing one already there).

    Raises:
        ConfigError: The key or certificate cannot be read.
        SignatureError: ``model-signing`` failed (e.g. a symbolic link in the folder, or
            Sigstore could not be reached).
    """
    from model_signing import signing

    config = signing.Config().set_hashing_config(_hashing())
    if signer.kind == "key":
        assert signer.private_key is not None
        _private_key(signer.private_key)  # a clear error before model-signing's own
        config.use_elliptic_key_signer(private_key=signer.private_key)
    elif signer.kind == "certificate":
        assert signer.private_key is not None and signer.certificate is not None
        _check_certificate_pair(signer)
        config.use_certificate_signer(
            private_key=signer.private_key,
            signing_certificate=signer.certificate,
            certificate_chain=signer.chain,
        )
    else:
        config.use_sigstore_signer(use_ambient_credentials=True)
    identity = signer.identity()
    signature = folder / SIGNATURE_NAME
    signature.unlink(missing_ok=True)  # never sign an old signature
    try:
        config.sign(folder, signature)
    except Exception as e:  # model-signing raises ValueError, OSError, sigstore errors
        signature.unlink(missing_ok=True)
        raise SignatureError(f"could not sign {folder}: {type(e).__name__}: {e}") from e
    logger.info("signed %s with %s %s", folder, signer.kind, identity)
    return SignatureInfo(
        signed=True, signature_file=SIGNATURE_NAME, identity=identity, kind=signer.kind
    )


def sign_if_configured(folder: Path) -> SignatureInfo:
    """Sign ``folder`` with the configured signer; log that signing is off when there is none.

    Raises:
        ConfigError: The configured key or certificate cannot be read.
        SignatureError: Signing failed.
    """
    signer = signer_from_env()
    if signer is None:
        logger.info("model signing is off (no %s): %s is stored unsigned", SIGNING_KEY_ENV, folder)
        return SignatureInfo(signed=False)
    return sign_folder(folder, signer=signer)


def read_signature_info(folder: Path) -> SignatureInfo:
    """What ``folder``'s signature file says about its signer, without verifying it (for the
    registry record of a folder stored earlier).

    Raises:
        SignatureError: The signature file is not a Sigstore bundle.
    """
    path = folder / SIGNATURE_NAME
    if not path.is_file():
        return SignatureInfo(signed=False)
    return _bundle_info(_read_bundle(path, where=str(folder)))


def stored_signature_info(uri: str) -> SignatureInfo:
    """What the signature file of the stored folder ``uri`` says about its signer, without
    verifying it (for the registry record); unsigned when its marker does not list one.

    Raises:
        StorageError: The folder is incomplete or cannot be read.
        SignatureError: The signature file is too large or not a Sigstore bundle.
    """
    from modelgate.storage import read_file, read_marker

    listed = {f.path: f.size for f in read_marker(read_file(uri, MARKER), uri=uri)}
    if SIGNATURE_NAME not in listed:
        return SignatureInfo(signed=False)
    if listed[SIGNATURE_NAME] > MAX_SIGNATURE_BYTES:
        raise SignatureError(
            f"{uri}: {SIGNATURE_NAME} is {listed[SIGNATURE_NAME]} bytes (limit "
            f"{MAX_SIGNATURE_BYTES}); it is not a model signature"
        )
    try:
        doc = json.loads(read_file(uri, SIGNATURE_NAME))
    except ValueError as e:
        raise SignatureError(f"{uri}: {SIGNATURE_NAME} is not a signature bundle: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("verificationMaterial"), dict):
        raise SignatureError(f"{uri}: {SIGNATURE_NAME} is not a Sigstore bundle")
    return _bundle_info(doc)


def registry_signature(uri: str) -> dict[str, str]:
    """:func:`stored_signature_info` as registry properties; ``signature.signed`` is
    ``unknown`` (with a warning) when the folder cannot be read, since registering must not
    depend on it: evaluation and deploy verify the folder themselves.
    """
    try:
        return stored_signature_info(uri).to_properties()
    except (StorageError, SignatureError, ConfigError) as e:
        logger.warning("cannot tell whether %s is signed: %s", uri, e)
        return {"signature.signed": "unknown"}


def _read_bundle(path: Path, *, where: str) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_SIGNATURE_BYTES:
            raise SignatureError(
                f"{where}: {SIGNATURE_NAME} is {size} bytes (limit {MAX_SIGNATURE_BYTES}); "
                "it is not a model signature"
            )
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise SignatureError(f"{where}: {SIGNATURE_NAME} is not a signature bundle: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("verificationMaterial"), dict):
        raise SignatureError(f"{where}: {SIGNATURE_NAME} is not a Sigstore bundle")
    return doc


def _bundle_info(doc: dict[str, Any]) -> SignatureInfo:
    material = doc["verificationMaterial"]
    hint = (material.get("publicKey") or {}).get("hint")
    if isinstance(hint, str) and re.fullmatch(r"[0-9a-f]{64}", hint):
        return SignatureInfo(True, SIGNATURE_NAME, f"sha256:{hint}", "key")
    chain = (material.get("x509CertificateChain") or {}).get("certificates") or []
    if chain and isinstance(chain[0], dict):
        return SignatureInfo(
            True, SIGNATURE_NAME, _der_subject(chain[0].get("rawBytes")), "certificate"
        )
    if material.get("certificate"):
        raw = (material.get("certificate") or {}).get("rawBytes")
        return SignatureInfo(True, SIGNATURE_NAME, _der_subject(raw), "sigstore")
    return SignatureInfo(True, SIGNATURE_NAME, "unknown signer", "")


def _der_subject(raw: Any) -> str:
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(raw))
    except (ValueError, TypeError):
        return "unreadable certificate"
    return cert.subject.rfc4514_string() or cert.issuer.rfc4514_string()


def _why(error: Exception) -> str:
    """``model-signing``'s failure as one short line naming the files that differ."""
    text = str(error)
    changed = _MISMATCH.findall(text)
    parts = [f"{', '.join(changed[:5])} changed since signing"] if changed else []
    for what, names in _LISTED.findall(text):
        kind = "added" if what.startswith("Extra") else "missing"
        parts.append(f"{names.strip().rstrip(',')} {kind} since signing")
    if parts:
        return "; ".join(parts)
    if text.startswith("Key mismatch"):
        return "signed with another key"
    if type(error).__name__ == "InvalidSignature":
        return "the signature does not match its content (invalid signature)"
    first = text.splitlines()[0] if text else type(error).__name__
    return first if len(first) <= 300 else first[:297] + "..."


def verify_folder(folder: Path, *, verifier: Verifier, uri: str = "") -> SignatureInfo:
    """Check ``folder`` against its signature file with ``verifier``.

    Raises:
        ConfigError: The verify key or certificates cannot be read.
        SignatureError: The folder is unsigned, its signature is not one ``verifier`` accepts
            (another key or identity), or a file was added, removed or changed since signing
            (one line naming what did not verify).
    """
    from model_signing import verifying

    where = uri or str(folder)
    path = folder / SIGNATURE_NAME
    if not path.is_file():
        raise SignatureError(
            f"{where} is not signed (no {SIGNATURE_NAME}) and signature verification is on; "
            "delete it from the store and re-run with a signing key, or unset the verify key"
        )
    info = _bundle_info(_read_bundle(path, where=where))
    config = verifying.Config().set_hashing_config(_hashing())
    if verifier.kind == "key":
        assert verifier.public_key is not None
        expected = key_fingerprint(_public_key(verifier.public_key))
        if info.identity != expected:
            raise SignatureError(
                f"signature of {where} did not verify: signed with {info.kind or 'an unknown'} "
                f"{info.identity}, expected key {expected}"
            )
        config.use_elliptic_key_verifier(public_key=verifier.public_key)
    elif verifier.kind == "certificate":
        for chain in verifier.chain:
            _certificates(chain)
        config.use_certificate_verifier(certificate_chain=verifier.chain)
    else:
        config.use_sigstore_verifier(identity=verifier.identity, oidc_issuer=verifier.oidc_issuer)
    try:
        config.verify(folder, path)
    except Exception as e:  # ValueError, InvalidSignature, OpenSSL and sigstore errors
        raise SignatureError(f"signature of {where} did not verify: {_why(e)}") from e
    logger.info("signature of %s verified (%s %s)", where, info.kind, info.identity)
    return info


def verify_if_configured(folder: Path, *, uri: str = "") -> SignatureInfo | None:
    """:func:`verify_folder` with the configured verifier; None (logged) when none is.

    Raises:
        ConfigError: The configured key cannot be read.
        SignatureError: The folder did not verify.
    """
    verifier = verifier_from_env()
    if verifier is None:
        logger.info(
            "signature verification is off (no %s): %s is used unverified",
            VERIFY_KEY_ENV,
            uri or folder,
        )
        return None
    return verify_folder(folder, verifier=verifier, uri=uri)


def fetch_verified(uri: str, *, dest: Path | None = None) -> Path:
    """:func:`modelgate.storage.fetch`, with the signature checked before the store's own
    content check, so a changed file is reported as a signature failure first.

    Raises:
        ConfigError: An unsupported URI or an unreadable verify key.
        SignatureError: The folder did not verify (see :func:`verify_folder`).
        StorageError: The folder is incomplete or could not be fetched.
    """
    return fetch(uri, dest=dest, before_check=lambda folder: _check(folder, uri))


def _check(folder: Path, uri: str) -> None:
    verify_if_configured(folder, uri=uri)


@contextlib.contextmanager
def verified(uri: str) -> Iterator[Path]:
    """:func:`fetch_verified` for the duration of a block (like
    :func:`modelgate.storage.fetched`: a downloaded copy is removed afterwards)."""
    folder = fetch_verified(uri)
    try:
        yield folder
    finally:
        if scheme_of(uri) != "file":
            shutil.rmtree(folder, ignore_errors=True)


def check_stored(uri: str) -> SignatureInfo | None:
    """Verify the stored folder ``uri`` with the configured verifier (before a deploy); a
    downloaded copy is removed afterwards. None (logged) when verification is off.

    Raises:
        ConfigError: An unsupported URI or an unreadable verify key.
        SignatureError: The folder did not verify.
        StorageError: The folder is incomplete or could not be fetched.
    """
    verifier = verifier_from_env()
    if verifier is None:
        logger.info("signature verification is off (no %s): deploying %s", VERIFY_KEY_ENV, uri)
        return None
    if scheme_of(uri) not in ("s3", "file"):
        raise ConfigError(f"cannot verify the signature of {uri!r}: expected a stored model URI")
    found: list[SignatureInfo] = []

    def check(folder: Path) -> None:
        found.append(verify_folder(folder, verifier=verifier, uri=uri))

    folder = fetch(uri, before_check=check)
    if scheme_of(uri) != "file":
        shutil.rmtree(folder, ignore_errors=True)
    return found[0]
