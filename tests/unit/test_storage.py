"""The model store against a real S3-protocol server (moto on loopback) and a local folder,
and KServe's own downloader (kserve-storage) fetching what the store wrote."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from modelgate.errors import ConfigError, StorageError
from modelgate.naming import base_key, quantized_key
from modelgate.storage import (
    MARKER,
    FileStore,
    S3Store,
    fetch,
    fetch_file,
    fetch_like_kserve,
    open_store,
    read_file,
    s3_client,
    stage_input,
)

pytestmark = pytest.mark.unit

FILES = {"config.json": '{"a": 1}', "sub/weights.bin": "x" * 1000, "tokenizer.json": "{}"}


def _fill(folder: Path, files: dict[str, str] = FILES) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def _tree(folder: Path) -> dict[str, str]:
    """Relative path -> text of every file, following links (kserve-storage links local files)."""
    out = {}
    for root, _, names in os.walk(folder, followlinks=True):
        for name in names:
            path = Path(root, name)
            if name != MARKER:
                out[path.relative_to(folder).as_posix()] = path.read_text()
    return dict(sorted(out.items()))


@pytest.fixture()
def s3_store(s3_env) -> S3Store:
    bucket = s3_env.make_bucket(f"models-{uuid.uuid4().hex[:12]}")
    return open_store(f"s3://{bucket}/modelgate")


@pytest.fixture()
def file_store(tmp_path) -> FileStore:
    return open_store((tmp_path / "store").as_uri())


@pytest.fixture(params=["file", "s3"])
def store(request):
    return request.getfixturevalue(f"{request.param}_store")


def test_open_store_takes_s3_and_file_uris_only(tmp_path):
    assert isinstance(open_store("s3://bucket/prefix"), S3Store)
    assert isinstance(open_store(tmp_path.as_uri()), FileStore)
    for bad in ("/data/models", "minio://b/p", "gs://b/p", "s3:///nobucket"):
        with pytest.raises(ConfigError, match="s3://bucket"):
            open_store(bad)


def test_a_folder_is_stored_completely_and_fetched_back(store, tmp_path):
    key = "org--m/0123abc/base-0123456789ab"
    assert not store.is_complete(key)
    with store.writer(key, source="test") as folder:
        _fill(folder)
    assert store.is_complete(key)
    uri = store.uri(key)
    fetched = fetch(uri, dest=tmp_path / "fetched")
    assert _tree(fetched) == FILES
    assert json.loads(read_file(uri, MARKER))["bytes"] == sum(len(t) for t in FILES.values())


def test_a_failed_write_leaves_nothing(store):
    key = "org--m/0123abc/fp8_dynamic-0123456789ab"
    with pytest.raises(RuntimeError, match="quantization blew up"):
        with store.writer(key) as folder:
            _fill(folder)
            raise RuntimeError("quantization blew up")
    assert not store.is_complete(key)
    with pytest.raises(StorageError, match="not a complete stored folder"):
        fetch(store.uri(key))


def test_a_rewrite_leaves_no_stale_files(store, tmp_path):
    key = "org--m/0123abc/w4a16-0123456789ab"
    with store.writer(key) as folder:
        _fill(folder, {"old.bin": "old", "config.json": "{}"})
    with store.writer(key) as folder:
        _fill(folder, {"config.json": "{}"})
    assert _tree(fetch(store.uri(key), dest=tmp_path / "f")) == {"config.json": "{}"}


def test_s3_fetch_reads_only_its_own_folder(s3_store, tmp_path):
    """KServe's downloader lists by raw prefix; the store's own fetch follows the marker."""
    with s3_store.writer("m/abc1234/base") as folder:
        _fill(folder, {"config.json": "{}"})
    with s3_store.writer("m/abc1234/base-extra") as folder:
        _fill(folder, {"other.json": "{}"})
    assert _tree(fetch(s3_store.uri("m/abc1234/base"), dest=tmp_path / "f")) == {
        "config.json": "{}"
    }


def test_store_keys_of_one_model_are_never_string_prefixes_of_each_other():
    sha = "0123456789abcdef0123456789abcdef01234567"
    keys = [base_key("org/M", sha, fingerprint="0123456789ab")] + [
        quantized_key("org/M", sha, scheme=s, fingerprint=f)
        for s in ("none", "FP8_DYNAMIC", "W8A8", "W4A16")
        for f in ("0123456789ab", "0123456789ac")
    ]
    for a in keys:
        for b in keys:
            assert a == b or not b.startswith(a), (a, b)


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_kserve_storage_fetches_what_the_store_wrote(kind, request, tmp_path):
    store = request.getfixturevalue(f"{kind}_store")
    key = "org--m/0123abc/fp8_dynamic-0123456789ab"
    with store.writer(key) as folder:
        _fill(folder)
    fetched = fetch_like_kserve(store.uri(key), tmp_path / "mnt-models")
    assert _tree(fetched) == FILES


def test_files_kserve_storage_would_miss_fail_the_fetch(s3_store, tmp_path):
    """kserve-storage skips zero-byte objects: the marker check names what is missing."""
    key = "org--m/0123abc/base-0123456789ab"
    with s3_store.writer(key) as folder:
        _fill(folder, {"config.json": "{}", "added_tokens.json": ""})
    with pytest.raises(StorageError, match="added_tokens.json missing"):
        fetch_like_kserve(s3_store.uri(key), tmp_path / "mnt-models")


def test_stage_input_is_content_addressed(store, tmp_path):
    data = tmp_path / "calibration.jsonl"
    data.write_text('{"text": "1+1=2."}\n')
    first = stage_input(store, data, kind="calibration")
    assert stage_input(store, data, kind="calibration") == first
    assert fetch_file(first).read_text() == data.read_text()
    data.write_text('{"text": "2+2=4."}\n')
    assert stage_input(store, data, kind="calibration") != first
    tasks = tmp_path / "tasks"
    _fill(tasks, {"t.yaml": "task: t", "t.jsonl": "{}"})
    folder = fetch(stage_input(store, tasks, kind="tasks"))
    assert _tree(folder) == {"t.yaml": "task: t", "t.jsonl": "{}"}
    with pytest.raises(ConfigError, match="does not exist"):
        stage_input(store, tmp_path / "missing", kind="tasks")


def test_missing_bucket_names_the_bucket(s3_env):
    store = open_store("s3://no-such-bucket-here/p")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        store.check_writable()


def test_unreachable_endpoint_names_the_variable(monkeypatch, s3_env):
    from modelgate.processes import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    store = S3Store("s3://b/p", client=s3_client())
    with pytest.raises(StorageError, match="cannot reach S3 .* AWS_ENDPOINT_URL"):
        store.check_writable()


def test_missing_credentials_say_which_variables(monkeypatch, s3_env, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageError, match="no S3 credentials; set AWS_ACCESS_KEY_ID"):
        open_store("s3://b/p").check_writable()
