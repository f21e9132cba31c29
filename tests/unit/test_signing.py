"""Model signatures with model-signing: sign a tiny folder with freshly made keys, verify it,
and refuse what changed, what is unsigned and what another key signed."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from modelgate import signing
from modelgate.errors import ConfigError, SignatureError
from modelgate.signing import (
    SIGNATURE_NAME,
    Signer,
    Verifier,
    check_config,
    key_fingerprint,
    read_signature_info,
    sign_folder,
    signer_from_env,
    verifier_from_env,
    verify_folder,
    verify_if_configured,
)
from modelgate.storage import MARKER
from tests.signing_keys import clear_signing_env, write_key_pair

pytestmark = pytest.mark.unit

FILES = {
    "config.json": '{"model_type": "llama"}',
    "model.safetensors": "w" * 4096,
    "sub/tokenizer.json": "{}",
    ".gitattributes": "*.safetensors filter=lfs\n",
}


@pytest.fixture(autouse=True)
def _no_signing_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clear_signing_env(monkeypatch, tmp_path)


def _model(folder: Path) -> Path:
    for name, text in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return write_key_pair(tmp_path)


@pytest.fixture
def signed(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    folder = _model(tmp_path / "model")
    info = sign_folder(folder, signer=Signer(kind="key", private_key=keys[0]))
    assert info.signed and info.signature_file == SIGNATURE_NAME
    return folder


def _flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_sign_then_verify_with_the_public_key(signed: Path, keys: tuple[Path, Path]) -> None:
    info = verify_folder(signed, verifier=Verifier(kind="key", public_key=keys[1]))
    public = serialization.load_pem_public_key(keys[1].read_bytes())
    assert info.identity == key_fingerprint(public)
    assert info.kind == "key"
    assert read_signature_info(signed).identity == info.identity


def test_a_flipped_byte_fails_naming_the_file(signed: Path, keys: tuple[Path, Path]) -> None:
    weights = signed / "model.safetensors"
    size = weights.stat().st_size
    _flip_byte(weights)
    assert weights.stat().st_size == size
    with pytest.raises(SignatureError) as e:
        verify_folder(signed, verifier=Verifier(kind="key", public_key=keys[1]), uri="file:///m")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("signature of file:///m did not verify")
    assert "model.safetensors changed since signing" in message
    assert "config.json" not in message


def test_git_files_are_covered_too(signed: Path, keys: tuple[Path, Path]) -> None:
    (signed / ".gitattributes").write_text("*.bin filter=lfs\n")
    with pytest.raises(SignatureError, match=r"\.gitattributes changed"):
        verify_folder(signed, verifier=Verifier(kind="key", public_key=keys[1]))


def test_added_and_removed_files_fail(signed: Path, keys: tuple[Path, Path]) -> None:
    verifier = Verifier(kind="key", public_key=keys[1])
    (signed / "extra.py").write_text("import os")
    with pytest.raises(SignatureError, match=r"extra\.py added since signing"):
        verify_folder(signed, verifier=verifier)
    (signed / "extra.py").unlink()
    (signed / "sub" / "tokenizer.json").unlink()
    with pytest.raises(SignatureError, match=r"sub/tokenizer\.json missing since signing"):
        verify_folder(signed, verifier=verifier)


def test_the_marker_and_the_signature_are_not_signed(signed: Path, keys: tuple[Path, Path]) -> None:
    # the store writes its marker after signing: it must not break the signature
    (signed / MARKER).write_text(json.dumps({"files": [], "bytes": 0}))
    verify_folder(signed, verifier=Verifier(kind="key", public_key=keys[1]))
    payload = json.loads(
        __import__("base64").b64decode(
            json.loads((signed / SIGNATURE_NAME).read_text())["dsseEnvelope"]["payload"]
        )
    )
    names = {r["name"] for r in payload["predicate"]["resources"]}
    assert names == set(FILES)


def test_unsigned_folder_fails(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    folder = _model(tmp_path / "plain")
    with pytest.raises(SignatureError, match=r"is not signed \(no model\.sig\)"):
        verify_folder(folder, verifier=Verifier(kind="key", public_key=keys[1]))
    assert not read_signature_info(folder).signed


def test_wrong_key_fails_naming_both_keys(signed: Path, tmp_path: Path) -> None:
    _, other = write_key_pair(tmp_path, "other")
    with pytest.raises(SignatureError) as e:
        verify_folder(signed, verifier=Verifier(kind="key", public_key=other))
    other_fp = key_fingerprint(serialization.load_pem_public_key(other.read_bytes()))
    assert f"expected key {other_fp}" in str(e.value)
    assert "signed with key sha256:" in str(e.value)


def test_a_forged_signature_fails(signed: Path, keys: tuple[Path, Path]) -> None:
    sig = signed / SIGNATURE_NAME
    bundle = json.loads(sig.read_text())
    raw = __import__("base64").b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"])
    forged = bytearray(raw)
    forged[-1] ^= 0x01
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = (
        __import__("base64").b64encode(bytes(forged)).decode()
    )
    sig.write_text(json.dumps(bundle))
    with pytest.raises(SignatureError, match="did not verify"):
        verify_folder(signed, verifier=Verifier(kind="key", public_key=keys[1]))


def test_a_garbage_signature_file_fails(signed: Path, keys: tuple[Path, Path]) -> None:
    (signed / SIGNATURE_NAME).write_text("not json")
    with pytest.raises(SignatureError, match="is not a signature bundle"):
        verify_folder(signed, verifier=Verifier(kind="key", public_key=keys[1]))


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, *, issuer: tuple[str, object] | None, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def test_certificate_signing_verifies_against_the_ca(tmp_path: Path) -> None:
    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = _certificate("modelgate test CA", ca_key, issuer=None, ca=True)
    leaf = _certificate("release-bot", leaf_key, issuer=("modelgate test CA", ca_key), ca=False)
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    (tmp_path / "leaf.pem").write_bytes(_pem(leaf))
    (tmp_path / "leaf-key.pem").write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    folder = _model(tmp_path / "model")
    signer = Signer(
        kind="certificate",
        private_key=tmp_path / "leaf-key.pem",
        certificate=tmp_path / "leaf.pem",
        chain=(tmp_path / "ca.pem",),
    )
    info = sign_folder(folder, signer=signer)
    assert info.identity.startswith("CN=release-bot (sha256:")
    checked = verify_folder(
        folder, verifier=Verifier(kind="certificate", chain=(tmp_path / "ca.pem",))
    )
    assert checked.identity == "CN=release-bot" and checked.kind == "certificate"
    # another CA does not vouch for the signer
    other = _certificate("other CA", ec.generate_private_key(ec.SECP256R1()), issuer=None, ca=True)
    (tmp_path / "other-ca.pem").write_bytes(_pem(other))
    with pytest.raises(SignatureError, match="did not verify"):
        verify_folder(
            folder, verifier=Verifier(kind="certificate", chain=(tmp_path / "other-ca.pem",))
        )
    # a public key does not verify a certificate signature (and says what signed it)
    _, stray_public = write_key_pair(tmp_path, "verify-only")
    with pytest.raises(SignatureError, match="signed with certificate CN=release-bot, expected"):
        verify_folder(folder, verifier=Verifier(kind="key", public_key=stray_public))
    # a certificate of another key is refused before signing
    wrong = Signer(
        kind="certificate",
        private_key=write_key_pair(tmp_path, "stray")[0],
        certificate=tmp_path / "leaf.pem",
    )
    with pytest.raises(ConfigError, match="does not belong to signing key"):
        sign_folder(folder, signer=wrong)


def test_config_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, keys: tuple[Path, Path]
) -> None:
    assert signer_from_env() is None and verifier_from_env() is None
    assert check_config() == "signing off; signature verification off"
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, str(keys[0]))
    monkeypatch.setenv(signing.VERIFY_KEY_ENV, str(keys[1]))
    assert signer_from_env() == Signer(kind="key", private_key=keys[0])
    assert verifier_from_env() == Verifier(kind="key", public_key=keys[1])
    line = check_config()
    fingerprint = key_fingerprint(serialization.load_pem_public_key(keys[1].read_bytes()))
    assert line == f"signing with key {fingerprint}; verify public key {fingerprint}"
    monkeypatch.setenv(signing.SIGSTORE_ENV, "1")
    with pytest.raises(ConfigError, match="unset one of them"):
        signer_from_env()


def test_config_from_mounted_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    mount, verify = tmp_path / "signing-secret", tmp_path / "verify-secret"
    mount.mkdir()
    verify.mkdir()
    (mount / "private-key").write_bytes(keys[0].read_bytes())
    (verify / "public-key").write_bytes(keys[1].read_bytes())
    monkeypatch.setattr(signing, "SIGNING_MOUNT", str(mount))
    monkeypatch.setattr(signing, "VERIFY_MOUNT", str(verify))
    assert signer_from_env() == Signer(kind="key", private_key=mount / "private-key")
    assert verifier_from_env() == Verifier(kind="key", public_key=verify / "public-key")
    (verify / "public-key").unlink()
    (verify / "identity").write_text("releases@example.com\n")
    with pytest.raises(ConfigError, match="needs both"):
        verifier_from_env()
    (verify / "oidc-issuer").write_text("https://accounts.example.com")
    assert verifier_from_env() == Verifier(
        kind="sigstore", identity="releases@example.com", oidc_issuer="https://accounts.example.com"
    )


@pytest.mark.parametrize(
    ("env", "content", "message"),
    [
        (signing.SIGNING_KEY_ENV, None, "does not exist"),
        (signing.SIGNING_KEY_ENV, b"garbage", "is not an unencrypted PEM private key"),
        (signing.VERIFY_KEY_ENV, None, "does not exist"),
        (signing.VERIFY_KEY_ENV, b"-----BEGIN PRIVATE KEY-----\nAAAA\n", "pass its public half"),
        (signing.VERIFY_CHAIN_ENV, b"nope", "holds no PEM certificate"),
    ],
)
def test_bad_key_files_are_refused(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: str,
    content: bytes | None,
    message: str,
) -> None:
    path = tmp_path / "configured.pem"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setenv(env, str(path))
    with pytest.raises(ConfigError, match=message):
        check_config()


def test_rsa_keys_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "rsa.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, str(path))
    with pytest.raises(ConfigError, match="not an elliptic-curve"):
        check_config()


def test_verification_off_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _model(tmp_path / "model")
    with caplog.at_level(logging.INFO, logger="modelgate.signing"):
        assert verify_if_configured(folder, uri="file:///m") is None
        assert signing.sign_if_configured(folder).signed is False
    assert "signature verification is off" in caplog.text
    assert "model signing is off" in caplog.text
    assert not (folder / SIGNATURE_NAME).exists()


def test_signature_properties_for_the_registry(signed: Path) -> None:
    props = read_signature_info(signed).to_properties()
    assert props["signature.signed"] == "yes"
    assert props["signature.file"] == SIGNATURE_NAME
    assert props["signature.identity"].startswith("sha256:")
    assert signing.SignatureInfo(signed=False).to_properties() == {"signature.signed": "no"}


def test_preflight_refuses_a_key_that_does_not_exist(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from modelgate.params import ReleaseParams
    from modelgate.preflight import PreflightError, preflight, release_checks

    missing = tmp_path / "missing.pem"
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, str(missing))
    params = ReleaseParams(model_id="org/m", model_store=(tmp_path / "store").as_uri())
    with pytest.raises(PreflightError) as e:
        preflight({"signatures": release_checks(params, local=True)["signatures"]})
    assert f"signatures: signing key {str(missing)!r} does not exist" in str(e.value)


def test_run_with_an_unparsable_verify_key_stops_before_any_step(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    from typer.testing import CliRunner

    from modelgate.cli import app
    from modelgate.preflight import PreflightError

    for name in (signing.SIGNING_KEY_ENV, signing.VERIFY_KEY_ENV):
        monkeypatch.setenv(name, "")  # restored afterwards: the command sets both
    bad = tmp_path / "verify.pem"
    bad.write_text("not a key")
    root = tmp_path / "root"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--model-id",
            "",  # no Hub look-ups: preflight reports this too, beside the key
            "--signing-key",
            str(keys[0]),
            "--verify-key",
            str(bad),
            "--pipeline-root",
            str(root),
        ],
    )
    assert isinstance(result.exception, PreflightError), result.output
    assert f"verify key {str(bad)!r} is not a PEM public key" in str(result.exception)
    assert not (root / "model-store").exists()  # no model work started


def test_the_registry_records_the_stored_signature(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    from modelgate.registry import candidate_request
    from modelgate.storage import FileStore

    store = FileStore(tmp_path / "store")
    with store.writer("org--m/base") as staging:
        _model(staging)
        sign_folder(staging, signer=Signer(kind="key", private_key=keys[0]))
    with store.writer("org--m/plain") as staging:
        _model(staging)
    uri = store.uri("org--m/base")
    fingerprint = key_fingerprint(serialization.load_pem_public_key(keys[1].read_bytes()))
    props = signing.registry_signature(uri)
    assert props == {
        "signature.signed": "yes",
        "signature.file": SIGNATURE_NAME,
        "signature.identity": fingerprint,
        "signature.kind": "key",
    }
    assert signing.registry_signature(store.uri("org--m/plain")) == {"signature.signed": "no"}
    missing = (tmp_path / "nowhere").as_uri()
    assert signing.registry_signature(missing) == {"signature.signed": "unknown"}
    request = candidate_request(
        model_uri=uri,
        repo_id="org/m",
        revision="main",
        commit_sha="a" * 40,
        scheme="none",
        signature=props,
    )
    assert request.properties["signature.identity"] == fingerprint
    assert request.properties["source_repo"] == "org/m"
