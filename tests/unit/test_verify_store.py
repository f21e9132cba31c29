"""Verified bytes in the model store: per-file sha256 in markers, checked on every fetch and
reuse, the verified-digest cache, and corrupt folders set aside (file:// on a local folder,
s3:// on moto)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from modelgate import storage
from modelgate.deploy import DeploySpec
from modelgate.deploy.local import LocalVLLMTarget
from modelgate.download import ExpectedFile, check_file, file_hashes
from modelgate.errors import DownloadError, StorageError
from modelgate.storage import (
    CORRUPT_DIR,
    MARKER,
    ContentMismatchError,
    FileStore,
    S3Store,
    fetch,
    fetch_files,
    fetch_like_kserve,
    open_store,
    read_file,
    reusable,
    verify,
)

pytestmark = pytest.mark.unit

KEY = "org--m/0123abc/base-0123456789ab"
FILES = {"config.json": '{"a": 1}', "sub/model.safetensors": "w" * 4096, "tokenizer.json": "{}"}
WEIGHTS = "sub/model.safetensors"


@pytest.fixture(autouse=True)
def _work_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELGATE_WORK_DIR", str(tmp_path / "work"))


@pytest.fixture()
def file_store(tmp_path) -> FileStore:
    return open_store((tmp_path / "store").as_uri())


@pytest.fixture()
def s3_store(s3_env) -> S3Store:
    return open_store(f"s3://{s3_env.make_bucket(f'verify-{uuid.uuid4().hex[:12]}')}/models")


@pytest.fixture(params=["file", "s3"])
def store(request):
    return request.getfixturevalue(f"{request.param}_store")


def _write(store, key: str = KEY, files: dict[str, str] = FILES) -> str:
    with store.writer(key, source="test") as folder:
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
    return store.uri(key)


def _tamper(store, uri: str, name: str = WEIGHTS) -> tuple[str, str]:
    """Flip one byte of ``name`` (same size) in the stored folder; (old, new) sha256."""
    if isinstance(store, FileStore):
        path = Path(uri.removeprefix("file://")) / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        bucket, prefix = uri.removeprefix("s3://").split("/", 1)
        body = store.client.get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"].read()
        data = bytearray(body)
        data[len(data) // 2] ^= 0x01
        store.client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=bytes(data))
    old = hashlib.sha256(FILES[name].encode()).hexdigest()
    return old, hashlib.sha256(bytes(data)).hexdigest()


def test_markers_record_each_files_sha256(store):
    uri = _write(store)
    doc = json.loads(read_file(uri, MARKER))
    recorded = {f["path"]: f["sha256"] for f in doc["files"]}
    assert recorded == {n: hashlib.sha256(t.encode()).hexdigest() for n, t in FILES.items()}
    if isinstance(store, S3Store):  # the key's own marker also holds the objects' ETags
        marker = store._marker(KEY)
        assert marker is not None and all(f.etag for f in marker.files)


@pytest.mark.parametrize("how", ["fetch", "fetch_files", "fetch_like_kserve"])
def test_a_file_changed_after_it_was_stored_is_refused(store, how, tmp_path):
    uri = _write(store)
    fetch(uri, dest=tmp_path / "before")  # fine before
    old, new = _tamper(store, uri)
    with pytest.raises(ContentMismatchError) as refused:
        if how == "fetch":
            fetch(uri, dest=tmp_path / "f")
        elif how == "fetch_files":
            fetch_files(uri, [WEIGHTS], tmp_path / "ff")
        else:
            fetch_like_kserve(uri, tmp_path / "k")
    message = str(refused.value)
    assert f"{WEIGHTS} does not match its {MARKER}: sha256 expected {old}, actual {new}" in message
    assert "re-run" in message and "\n" not in message
    assert not (tmp_path / "f").exists() and not (tmp_path / "ff").exists()


def test_a_tampered_model_is_not_deployed(file_store, tmp_path):
    uri = _write(file_store)
    _tamper(file_store, uri)
    target = LocalVLLMTarget(python=sys.executable, log_dir=str(tmp_path / "logs"))
    with pytest.raises(ContentMismatchError, match=f"{WEIGHTS} does not match"):
        target.deploy(DeploySpec(name="tiny", storage_uri=uri))
    assert not list((tmp_path / "logs").glob("tiny-models-*"))  # nothing half-done


def test_old_markers_without_digests_are_still_read(file_store, caplog):
    uri = _write(file_store)
    folder = Path(uri.removeprefix("file://"))
    doc = json.loads((folder / MARKER).read_text())
    doc["files"] = [{"path": f["path"], "size": f["size"]} for f in doc["files"]]
    (folder / MARKER).write_text(json.dumps(doc))
    with caplog.at_level(logging.INFO, logger="modelgate.storage"):
        assert fetch(uri) == folder
    assert "checked their sizes only" in caplog.text
    assert reusable(file_store, KEY)


def test_malformed_digests_in_a_marker_are_refused(file_store):
    uri = _write(file_store)
    folder = Path(uri.removeprefix("file://"))
    doc = json.loads((folder / MARKER).read_text())
    doc["files"][0]["sha256"] = "not-a-digest"
    (folder / MARKER).write_text(json.dumps(doc))
    with pytest.raises(StorageError, match="malformed sha256"):
        fetch(uri)


def test_the_digest_cache_reads_a_file_once_and_sees_same_size_edits(file_store, monkeypatch):
    uri = _write(file_store)
    folder = Path(uri.removeprefix("file://"))
    reads: list[Path] = []
    real = storage.sha256_stream
    monkeypatch.setattr(storage, "sha256_stream", lambda p: reads.append(p) or real(p))
    fetch(uri)
    fetch(uri)
    assert reads == []  # publishing recorded the digests: a warm check reads nothing
    path = folder / WEIGHTS
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, mtime put back
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    with pytest.raises(ContentMismatchError, match=WEIGHTS):
        fetch(uri)  # the ctime changed: read again
    assert [p.name for p in reads] == ["model.safetensors"]


def test_a_corrupt_local_folder_is_set_aside_and_written_again(file_store, tmp_path):
    uri = _write(file_store)
    _tamper(file_store, uri)
    assert not reusable(file_store, KEY)
    assert not file_store.is_complete(KEY)
    aside = list((tmp_path / "store" / CORRUPT_DIR).iterdir())
    assert len(aside) == 1 and (aside[0] / MARKER).is_file()  # kept for inspection
    assert _write(file_store) == uri  # the key is written again, first writer wins as ever
    assert reusable(file_store, KEY)
    assert fetch(uri) == Path(uri.removeprefix("file://"))


def test_setting_aside_never_moves_a_newer_good_copy(file_store, tmp_path):
    uri = _write(file_store)
    folder = Path(uri.removeprefix("file://"))
    stale = (folder / MARKER).read_text()
    # another process set KEY aside and published a new copy after this one read `stale`
    marker = json.loads((folder / MARKER).read_text())
    marker["written_at"] += 1
    (folder / MARKER).write_text(json.dumps(marker))
    file_store._set_aside(KEY, stale)
    assert file_store.is_complete(KEY)  # the newer copy was put back
    assert not any((tmp_path / "store" / CORRUPT_DIR).iterdir())


def test_a_corrupt_s3_folder_is_set_aside_and_written_again(s3_store, caplog):
    uri = _write(s3_store)
    assert reusable(s3_store, KEY)
    _tamper(s3_store, uri)
    with caplog.at_level(logging.WARNING, logger="modelgate.storage"):
        assert not reusable(s3_store, KEY)
    assert f"{WEIGHTS} does not match its {MARKER} (ETag expected" in caplog.text
    assert not s3_store.is_complete(KEY)  # the marker went; the old writer folder goes stale
    again = _write(s3_store)
    assert again != uri and reusable(s3_store, KEY)
    assert (fetch(again) / WEIGHTS).read_text() == FILES[WEIGHTS]


def test_the_s3_marker_is_only_deleted_while_it_is_the_one_read(s3_store, monkeypatch):
    uri = _write(s3_store)
    _tamper(s3_store, uri)
    real = s3_store.client.delete_object

    def republished_meanwhile(**kwargs):
        # another process set it aside and published a new copy between our read and delete
        bucket, prefix = s3_store.bucket, s3_store._key(KEY)
        s3_store.client.put_object(
            Bucket=bucket, Key=f"{prefix}/{MARKER}", Body=read_file(uri, MARKER) + " "
        )
        return real(**kwargs)

    monkeypatch.setattr(s3_store.client, "delete_object", republished_meanwhile)
    assert not reusable(s3_store, KEY)
    assert s3_store.is_complete(KEY)  # If-Match failed: the newer marker stays


def test_before_check_runs_on_the_local_folder_before_the_content_check(store, tmp_path):
    uri = _write(store)
    _tamper(store, uri)
    seen: list[Path] = []

    class SignatureRefused(Exception):
        pass

    def check(folder: Path) -> None:
        seen.append(folder)
        assert (folder / MARKER).is_file() and (folder / WEIGHTS).is_file()
        raise SignatureRefused

    with pytest.raises(SignatureRefused):
        fetch(uri, dest=tmp_path / "d", before_check=check)
    assert len(seen) == 1
    assert not (tmp_path / "d").exists()  # a failed fetch leaves nothing


def test_verify_names_missing_and_truncated_files(tmp_path):
    (tmp_path / "a").write_text("ab")
    files = [storage.StoredFile("a", 3), storage.StoredFile("b", 1)]
    with pytest.raises(ContentMismatchError, match="a has 2 bytes, expected 3; b missing"):
        verify(tmp_path, files, uri="x")


def test_git_blob_ids_are_computed_as_git_does(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(3000) + b"\0tail")
    sha256, blob = file_hashes(path, git=True)
    git = subprocess.run(
        ["git", "hash-object", str(path)], capture_output=True, text=True, check=True
    )
    assert blob == git.stdout.strip()
    assert sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_without_a_hash_is_checked_by_size_and_said_so(tmp_path, caplog):
    path = tmp_path / "f.json"
    path.write_text("{}")
    with caplog.at_level(logging.WARNING, logger="modelgate.download"):
        check_file(path, ExpectedFile("f.json", size=2), where="http://mirror")
    assert "gives no hash for f.json: checked its size only" in caplog.text
    with pytest.raises(DownloadError, match="f.json from http://mirror: size expected 3, actual 2"):
        check_file(path, ExpectedFile("f.json", size=3), where="http://mirror")
    with pytest.raises(DownloadError, match="sha256 expected 0+, actual [0-9a-f]{64}"):
        check_file(path, ExpectedFile("f.json", size=2, sha256="0" * 64), where="http://mirror")


def test_a_transport_error_names_the_file_and_the_redacted_endpoint(tmp_path, monkeypatch):
    import huggingface_hub.file_download

    from modelgate.download import PARTIAL_DIR, Snapshot, _fetch_file
    from modelgate.processes import free_port

    monkeypatch.setattr(huggingface_hub.file_download.time, "sleep", lambda s: None)
    endpoint = f"http://user:s3cret@127.0.0.1:{free_port()}"  # nothing listens there
    snapshot = Snapshot(
        repo_id="org/m", revision="main", commit_sha="a" * 40, endpoint=endpoint, files=["w.bin"]
    )
    partial = tmp_path / PARTIAL_DIR / "w.bin.incomplete"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * 10)  # what an earlier attempt kept
    with pytest.raises(DownloadError) as failed:
        _fetch_file(snapshot, "w.bin", tmp_path, size=100, headers={})
    message = str(failed.value)
    assert message.startswith("download of w.bin from http://user:") and "127.0.0.1" in message
    assert "s3cret" not in message and "\n" not in message
    assert "resumes from the 10 bytes kept" in message
    assert partial.read_bytes() == b"x" * 10  # kept for the retry
