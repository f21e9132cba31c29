"""The download step against a real Hugging Face protocol server (olah mirror)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from modelgate.download import (
    MANIFEST_NAME,
    DownloadManifest,
    download_model,
    download_to_store,
    sha256_file,
)
from modelgate.errors import DownloadError, StorageError, UnsafeWeightsError
from modelgate.storage import fetch, fetch_like_kserve, open_store, s3_client
from modelgate.testing.hub_mirror import publish_model

pytestmark = pytest.mark.e2e


def test_download_pins_commit_and_writes_manifest(hub_mirror, tmp_path):
    manifest = download_model(
        hub_mirror.repo_id, target_dir=tmp_path / "m", revision="main", endpoint=hub_mirror.endpoint
    )
    assert manifest.commit_sha == hub_mirror.commit_sha
    assert manifest.revision == "main"
    names = {f.path for f in manifest.files}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    for entry in manifest.files:
        assert sha256_file(tmp_path / "m" / entry.path) == entry.sha256
    on_disk = DownloadManifest.from_dict(json.loads((tmp_path / "m" / MANIFEST_NAME).read_text()))
    assert on_disk == manifest


def test_download_by_commit_sha_and_patterns(hub_mirror, tmp_path):
    manifest = download_model(
        hub_mirror.repo_id,
        target_dir=tmp_path / "m",
        revision=hub_mirror.commit_sha,
        endpoint=hub_mirror.endpoint,
        allow_patterns=["*.json", "*.safetensors"],
    )
    assert manifest.commit_sha == hub_mirror.commit_sha
    assert all(f.path.endswith((".json", ".safetensors")) for f in manifest.files)


def test_endpoint_comes_from_hf_endpoint(hub_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub_mirror.endpoint)
    assert download_model(hub_mirror.repo_id, target_dir=tmp_path).endpoint == hub_mirror.endpoint


@pytest.fixture(scope="module")
def pickle_repo(hub_mirror, tiny_model_dir, tmp_path_factory):
    src = tmp_path_factory.mktemp("pickle-model")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tiny_model_dir) / name, src / name)
    (src / "pytorch_model.bin").write_bytes(b"not really a pickle")
    repo_id = "modelgate/pickle-only"
    publish_model(src, hub_mirror.repos_root, repo_id)
    return repo_id


def test_pickle_only_repo_is_refused_before_download(hub_mirror, pickle_repo, tmp_path):
    with pytest.raises(UnsafeWeightsError, match="allow_pickle"):
        download_model(pickle_repo, target_dir=tmp_path / "m", endpoint=hub_mirror.endpoint)
    assert not (tmp_path / "m").exists()


def test_pickle_only_repo_downloads_when_allowed(hub_mirror, pickle_repo, tmp_path):
    manifest = download_model(
        pickle_repo, target_dir=tmp_path / "m", allow_pickle=True, endpoint=hub_mirror.endpoint
    )
    assert "pytorch_model.bin" in {f.path for f in manifest.files}


def test_unknown_repo_and_revision_are_clear_errors(hub_mirror, tmp_path):
    with pytest.raises(DownloadError, match="not found"):
        download_model("modelgate/nope", target_dir=tmp_path, endpoint=hub_mirror.endpoint)
    with pytest.raises(DownloadError, match="not found"):
        download_model(
            hub_mirror.repo_id,
            target_dir=tmp_path,
            revision="no-such-branch",
            endpoint=hub_mirror.endpoint,
        )


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_download_to_store_writes_once_per_commit(kind, hub_mirror, tmp_path, request):
    if kind == "s3":
        s3 = request.getfixturevalue("s3_env")
        store = f"s3://{s3.make_bucket('downloads')}/models"
    else:
        store = (tmp_path / "store").as_uri()
    first = download_to_store(hub_mirror.repo_id, store=store, endpoint=hub_mirror.endpoint)
    assert not first.reused
    assert first.uri.startswith(store) and f"/{hub_mirror.commit_sha}/base-" in first.uri
    assert first.manifest.commit_sha == hub_mirror.commit_sha
    folder = fetch(first.uri, dest=tmp_path / "fetched")
    for entry in first.manifest.files:
        assert sha256_file(folder / entry.path) == entry.sha256
    assert not (folder / ".cache").exists()  # huggingface_hub's bookkeeping is not stored
    again = download_to_store(hub_mirror.repo_id, store=store, endpoint=hub_mirror.endpoint)
    assert again.reused and again.uri == first.uri and again.manifest == first.manifest
    # another file selection is another folder
    narrow = download_to_store(
        hub_mirror.repo_id,
        store=store,
        endpoint=hub_mirror.endpoint,
        allow_patterns=["*.json", "*.safetensors"],
    )
    assert not narrow.reused and narrow.uri != first.uri


def test_refused_download_stores_nothing(hub_mirror, pickle_repo, tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    with pytest.raises(UnsafeWeightsError):
        download_to_store(pickle_repo, store=store.root, endpoint=hub_mirror.endpoint)
    assert not (tmp_path / "store").exists() or not any(
        p for p in (tmp_path / "store").rglob("*") if p.is_file()
    )


def _flip_stored_byte(uri: str, name: str) -> None:
    """Change one byte of a stored file, keeping its size (what a bad disk or a hand does)."""
    if uri.startswith("file://"):
        path = Path(uri.removeprefix("file://")) / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    client = s3_client()
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    data = bytearray(client.get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"].read())
    data[len(data) // 2] ^= 0xFF
    client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=bytes(data))


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_a_tampered_stored_model_is_refused_and_downloaded_again(
    kind, hub_mirror, tmp_path, request
):
    if kind == "s3":
        s3 = request.getfixturevalue("s3_env")
        store = f"s3://{s3.make_bucket('tampered')}/models"
    else:
        store = (tmp_path / "store").as_uri()
    first = download_to_store(hub_mirror.repo_id, store=store, endpoint=hub_mirror.endpoint)
    _flip_stored_byte(first.uri, "model.safetensors")
    refused = "model.safetensors does not match its modelgate-store.json: sha256 expected"
    with pytest.raises(StorageError, match=refused):
        fetch(first.uri, dest=tmp_path / "fetched")
    with pytest.raises(StorageError, match=refused):
        fetch_like_kserve(first.uri, tmp_path / "kserve")
    # the warm re-release checks the stored folder, sets it aside and downloads it again
    again = download_to_store(hub_mirror.repo_id, store=store, endpoint=hub_mirror.endpoint)
    assert not again.reused
    folder = fetch(again.uri, dest=tmp_path / "again")
    for entry in again.manifest.files:
        assert sha256_file(folder / entry.path) == entry.sha256
    if kind == "file":
        assert again.uri == first.uri  # same key, rewritten; the corrupt copy kept aside
        assert len(list((tmp_path / "store" / ".corrupt").iterdir())) == 1
    else:
        assert again.uri != first.uri  # a new writer folder under the same key
    third = download_to_store(hub_mirror.repo_id, store=store, endpoint=hub_mirror.endpoint)
    assert third.reused and third.uri == again.uri
