"""Signatures through the library steps: the download step signs what it stores (from the
loopback Hub mirror into a ``file://`` store); the evaluate and deploy sides verify it, and a
copy with one weight byte changed (same size) is refused by the signature check before the
store's own sha256 check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from modelgate import signing
from modelgate.download import download_to_store
from modelgate.errors import SignatureError
from modelgate.evaluate import evaluate_model
from modelgate.signing import SIGNATURE_NAME, check_stored, key_fingerprint, verified
from modelgate.storage import MARKER, ContentMismatchError, fetch
from tests.signing_keys import clear_signing_env, write_key_pair

pytestmark = pytest.mark.e2e


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    clear_signing_env(monkeypatch, tmp_path)
    return write_key_pair(tmp_path, "signing-key")


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_stored_model_is_signed_and_a_tampered_copy_fails_the_signature_first(
    hub_mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, str(private))
    stored = download_to_store(
        hub_mirror.repo_id, store=(tmp_path / "store").as_uri(), endpoint=hub_mirror.endpoint
    )
    folder = fetch(stored.uri)
    fingerprint = key_fingerprint(serialization.load_pem_public_key(public.read_bytes()))
    assert stored.signature.signed and stored.signature.identity == fingerprint
    listed = {f["path"] for f in json.loads((folder / MARKER).read_text())["files"]}
    assert SIGNATURE_NAME in listed and "model.safetensors" in listed

    # the evaluate and deploy sides accept the untouched folder
    monkeypatch.setenv(signing.VERIFY_KEY_ENV, str(public))
    with verified(stored.uri) as local:
        assert (local / "model.safetensors").is_file()
    info = check_stored(stored.uri)
    assert info is not None and info.identity == fingerprint

    # a copy of the stored folder with one weight byte changed, same size
    copy = tmp_path / "tampered" / folder.name
    shutil.copytree(folder, copy)
    weights = copy / "model.safetensors"
    size = weights.stat().st_size
    _flip_byte(weights)
    assert weights.stat().st_size == size
    uri = copy.as_uri()

    with pytest.raises(SignatureError) as deploy_side:
        check_stored(uri)  # what the deploy step runs before anything is deployed
    message = str(deploy_side.value)
    assert message == (
        f"signature of {uri} did not verify: model.safetensors changed since signing"
    )
    with pytest.raises(SignatureError, match=r"model\.safetensors changed since signing"):
        evaluate_model(uri, backend="hf", tasks=["arc_easy"], device="cpu")  # before lm-eval

    # without a verify key the store's own content check is what refuses it
    monkeypatch.delenv(signing.VERIFY_KEY_ENV)
    assert check_stored(uri) is None
    with pytest.raises(ContentMismatchError, match="model.safetensors"):
        fetch(uri)


def test_unsigned_store_fails_verification(
    hub_mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: tuple[Path, Path]
) -> None:
    stored = download_to_store(
        hub_mirror.repo_id, store=(tmp_path / "store").as_uri(), endpoint=hub_mirror.endpoint
    )
    assert not stored.signature.signed
    monkeypatch.setenv(signing.VERIFY_KEY_ENV, str(keys[1]))
    with pytest.raises(SignatureError, match=r"is not signed \(no model\.sig\)"):
        check_stored(stored.uri)
