"""The model store against a real S3-protocol server (moto on loopback) and a local folder,
and KServe's own downloader (kserve-storage) fetching what the store wrote."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from modelgate.errors import ConfigError, StorageError
from modelgate.naming import base_key, quantized_key
from modelgate.storage import (
    DIGEST_CACHE,
    MARKER,
    FileStore,
    S3Store,
    fetch,
    fetch_file,
    fetch_files,
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


def test_a_second_write_keeps_the_first_copy(store, tmp_path):
    """First writer wins: a complete folder is never deleted or overwritten."""
    key = "org--m/0123abc/w4a16-0123456789ab"
    with store.writer(key, source="first") as folder:
        _fill(folder, {"old.bin": "old", "config.json": "{}"})
    first_uri = store.uri(key)
    with store.writer(key, source="second") as folder:
        _fill(folder, {"config.json": '{"b": 2}'})
    assert store.uri(key) == first_uri
    assert _tree(fetch(first_uri, dest=tmp_path / "f")) == {"old.bin": "old", "config.json": "{}"}
    assert json.loads(read_file(first_uri, MARKER))["source"] == "first"


def test_s3_fetch_reads_only_its_own_folder(s3_store, tmp_path):
    """KServe's downloader lists by raw prefix; the store's own fetch follows the marker."""
    with s3_store.writer("m/abc1234/base") as folder:
        _fill(folder, {"config.json": "{}"})
    with s3_store.writer("m/abc1234/base-extra") as folder:
        _fill(folder, {"other.json": "{}"})
    assert _tree(fetch(s3_store.uri("m/abc1234/base"), dest=tmp_path / "f")) == {
        "config.json": "{}"
    }


BINARY = bytes(range(256)) * 4 + b"\xff\xfe\x00\x80"  # not UTF-8: read_file could not


def _binary_source(folder: Path) -> None:
    _fill(folder)
    (folder / "tokenizer.model").write_bytes(BINARY)


@pytest.mark.parametrize("where", ["s3", "file", "local"])
def test_fetch_files_copies_only_the_chosen_files_byte_for_byte(where, request, tmp_path):
    key = "org--m/0123abc/base-0123456789ab"
    if where == "local":
        _binary_source(tmp_path / "model")
        uri = str(tmp_path / "model")
    else:
        store = request.getfixturevalue(f"{where}_store")
        with store.writer(key) as folder:
            _binary_source(folder)
        uri = store.uri(key)
    fetched = fetch_files(
        uri, lambda path: "/" not in path and path != "config.json", tmp_path / "a"
    )
    assert sorted(f.path for f in fetched) == ["tokenizer.json", "tokenizer.model"]
    assert sorted(p.name for p in (tmp_path / "a").rglob("*")) == sorted(f.path for f in fetched)
    assert (tmp_path / "a" / "tokenizer.model").read_bytes() == BINARY
    named = fetch_files(uri, ["sub/weights.bin", "tokenizer.model"], tmp_path / "b")
    assert [f.size for f in named] == [1000, len(BINARY)]
    assert (tmp_path / "b" / "sub" / "weights.bin").read_text() == "x" * 1000
    with pytest.raises(StorageError, match="has no file 'nope.bin'"):
        fetch_files(uri, ["config.json", "nope.bin"], tmp_path / "c")
    assert not (tmp_path / "c" / "config.json").exists()
    assert fetch_files(uri, lambda path: False, tmp_path / "d") == []


def test_fetch_files_checks_the_store_like_fetch(s3_store, file_store, tmp_path):
    for store in (s3_store, file_store):
        with pytest.raises(StorageError, match="not a complete stored folder"):
            fetch_files(store.uri("m/abc1234/none"), lambda path: True, tmp_path / "x")
    with pytest.raises(ConfigError, match="expected an s3:// or file:// URI or a local folder"):
        fetch_files("gs://b/p", ["config.json"], tmp_path / "x")
    with pytest.raises(ConfigError, match="does not exist or is not a folder"):
        fetch_files(str(tmp_path / "nowhere"), ["config.json"], tmp_path / "x")
    key = "m/abc1234/base"
    with s3_store.writer(key) as folder:
        _fill(folder)
    uri = s3_store.uri(key)
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    s3_store.client.put_object(Bucket=bucket, Key=f"{prefix}/tokenizer.json", Body=b"{} ")
    with pytest.raises(StorageError, match="tokenizer.json has 3 bytes, expected 2"):
        fetch_files(uri, ["config.json", "tokenizer.json"], tmp_path / "new")
    assert not (tmp_path / "new").exists(), "a failed fetch leaves nothing behind"
    (tmp_path / "kept").mkdir()
    s3_store.client.delete_object(Bucket=bucket, Key=f"{prefix}/tokenizer.json")
    with pytest.raises(StorageError, match=f"downloading {uri}"):
        fetch_files(uri, ["config.json", "tokenizer.json"], tmp_path / "kept")
    assert list((tmp_path / "kept").iterdir()) == []


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


# --- first writer wins, marker paths, task-folder digests, staging leftovers, failed fetches ---


def _write_marker(folder: Path, paths: dict[str, int]) -> None:
    files = [{"path": p, "size": n} for p, n in paths.items()]
    (folder / MARKER).write_text(json.dumps({"files": files, "bytes": 0, "source": "tampered"}))


@pytest.mark.parametrize(
    "bad", ["../outside.txt", "sub/../../outside.txt", "ABSOLUTE", "..\\outside.txt", "a//b.txt"]
)
def test_marker_paths_outside_the_folder_are_refused(file_store, tmp_path, bad):
    """Each bad path names a file that exists with the listed size: only validation stops it."""
    key = "org--m/0123abc/base-0123456789ab"
    with file_store.writer(key) as folder:
        _fill(folder, {"config.json": "{}"})
    folder = Path(file_store.path / key)
    outside = folder.parent / "outside.txt"  # what "../outside.txt" reaches
    outside.write_text("secret")
    (folder / "sub").mkdir()
    if bad == "ABSOLUTE":
        bad = str(outside)
    elif bad == "..\\outside.txt":
        (folder / bad).write_text("secret")  # on POSIX a file name, elsewhere a way out
    elif bad == "a//b.txt":
        (folder / "a").mkdir()
        (folder / "a" / "b.txt").write_text("secret")
    _write_marker(folder, {bad: len("secret")})
    with pytest.raises(StorageError, match="unsafe file"):
        fetch(file_store.uri(key))
    with pytest.raises(StorageError, match="unsafe file"):
        read_file(file_store.uri(key), "config.json")


def test_s3_marker_paths_outside_the_folder_are_refused(s3_store, tmp_path):
    """An S3 marker naming ``../x`` must not make fetch write outside its destination."""
    client, bucket = s3_store.client, s3_store.bucket
    key = s3_store._key("org--m/0123abc/base-0123456789ab")
    client.put_object(Bucket=bucket, Key=f"{key}/../escaped.txt", Body=b"pwn")
    marker = {"files": [{"path": "../escaped.txt", "size": 3}], "bytes": 3, "source": "x"}
    client.put_object(Bucket=bucket, Key=f"{key}/{MARKER}", Body=json.dumps(marker).encode())
    dest = tmp_path / "in" / "fetched"
    with pytest.raises(StorageError, match="unsafe file"):
        fetch(f"s3://{bucket}/{key}", dest=dest)
    assert not (tmp_path / "in" / "escaped.txt").exists()
    assert not dest.exists()


def test_unsafe_store_keys_are_refused(store):
    for bad in ("../up", "a/../../b", "a/./b"):
        with pytest.raises(StorageError, match="store key"):
            store.uri(bad)


UTILS = "def process(doc):\n    return doc\n" + "#" * 40 + "\n"


def _stage_tasks(store, tmp_path: Path) -> str:
    import yaml

    src = tmp_path / "tasks"
    src.mkdir()
    (src / "data.jsonl").write_text('{"q": 1}\n')
    (src / "utils.py").write_text(UTILS)
    task = {"task": "t", "dataset_kwargs": {"data_files": {"test": "/elsewhere/data.jsonl"}}}
    (src / "t.yaml").write_text(yaml.safe_dump(task))
    return stage_input(store, src, kind="tasks")


def test_a_tampered_task_folder_is_refused(store, tmp_path):
    """lm-eval runs ``!function`` code from task folders: a stored one must match its digest."""
    from modelgate.evaluate import prepare_task_dir

    uri = _stage_tasks(store, tmp_path)
    first = prepare_task_dir(uri)  # rewrites data_files in a private copy, not in the store
    assert (first / "utils.py").is_file() and "data.jsonl" in (first / "t.yaml").read_text()
    assert prepare_task_dir(uri) != first  # still matches its digest: the store is untouched
    evil = "import os\nos.system('id')\n#".ljust(len(UTILS), "#")  # same size: only the digest
    if isinstance(store, FileStore):
        (fetch(uri) / "utils.py").write_text(evil)
    else:
        bucket, prefix = uri.removeprefix("s3://").split("/", 1)
        store.client.put_object(Bucket=bucket, Key=f"{prefix}/utils.py", Body=evil.encode())
    digest = uri.split("inputs/tasks-")[1][:16]
    # the marker's per-file sha256 catches it first, naming the file, before the key's digest
    with pytest.raises(StorageError, match=f"tasks-{digest}.*utils.py does not match its"):
        prepare_task_dir(uri)


def test_a_task_uri_without_a_digest_is_refused(file_store):
    from modelgate.evaluate import prepare_task_dir

    with file_store.writer("my-tasks") as folder:
        _fill(folder, {"t.yaml": "task: t"})
    with pytest.raises(StorageError, match="not a staged tasks folder"):
        prepare_task_dir(file_store.uri("my-tasks"))


def test_staging_of_killed_local_writers_is_removed(file_store, tmp_path):
    import subprocess
    import sys

    killed = (
        "import os, signal, sys\n"
        "from modelgate.storage import FileStore\n"
        "with FileStore(sys.argv[1]).writer('org--m/0123abc/base-killed00000') as f:\n"
        "    (f / 'weights.bin').write_text('x' * 100)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", killed, str(file_store.path)], check=False)
    assert proc.returncode == -9
    staging = file_store.path / ".staging"
    [dead] = list(staging.iterdir())  # a staging folder of a process that is gone
    old = staging / "ffffffff-1-0123456789abcdef0123456789abcdef"  # another host's, 2 days old
    (old / "sub").mkdir(parents=True)
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    live = staging / f"{dead.name.split('-')[0]}-{os.getpid()}-{uuid.uuid4().hex}"
    live.mkdir()  # this process's: alive and fresh
    with file_store.writer("org--m/0123abc/base-0123456789ab") as folder:
        _fill(folder, {"config.json": "{}"})
    assert sorted(p.name for p in staging.iterdir()) == [live.name]
    assert not file_store.is_complete("org--m/0123abc/base-killed00000")


def test_stale_s3_writer_folders_are_removed_and_the_winner_kept(s3_store, monkeypatch, tmp_path):
    import modelgate.storage as storage

    key = "org--m/0123abc/base-0123456789ab"
    with s3_store.writer(key, source="first") as folder:
        _fill(folder, {"config.json": "{}"})
    winner = s3_store.uri(key)
    orphan = f"{s3_store._key(key)}/{uuid.uuid4().hex}"  # a writer killed before its marker
    s3_store.client.put_object(Bucket=s3_store.bucket, Key=f"{orphan}/config.json", Body=b"{}")
    monkeypatch.setattr(storage, "STALE_STAGING_S", -1.0, raising=False)
    with s3_store.writer(key, source="second") as folder:
        _fill(folder, {"config.json": '{"b": 2}'})
    listed = s3_store.client.list_objects_v2(Bucket=s3_store.bucket, Prefix=orphan + "/")
    assert listed.get("KeyCount", 0) == 0
    assert s3_store.uri(key) == winner
    assert json.loads(read_file(winner, MARKER))["source"] == "first"
    assert _tree(fetch(winner, dest=tmp_path / "f")) == {"config.json": "{}"}


@pytest.mark.parametrize("into", ["work_dir", "dest"])
def test_a_failed_fetch_leaves_nothing(s3_store, tmp_path, monkeypatch, into):
    monkeypatch.setenv("MODELGATE_WORK_DIR", str(tmp_path / "work"))
    key = "org--m/0123abc/base-0123456789ab"
    with s3_store.writer(key) as folder:
        _fill(folder)
    uri = s3_store.uri(key)
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    s3_store.client.delete_object(Bucket=bucket, Key=f"{prefix}/tokenizer.json")  # listed last
    dest = tmp_path / "dest" if into == "dest" else None
    with pytest.raises(StorageError):
        fetch(uri, dest=dest)
    assert not (tmp_path / "dest").exists()
    left = [p for p in (tmp_path / "work").rglob("*") if p.is_file() and p.name != DIGEST_CACHE]
    assert left == []  # the digest cache is no leftover of the fetch


def test_store_failures_are_storage_errors_naming_the_key(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    store = FileStore(tmp_path / "file" / "store")
    key = "org--m/0123abc/base-0123456789ab"
    with pytest.raises(StorageError, match="cannot stage 'org--m/0123abc/base-0123456789ab'") as e:
        with store.writer(key):
            pass
    assert isinstance(e.value.__cause__, OSError)
    store = FileStore(tmp_path / "store")
    (store.path / key).mkdir(parents=True)
    (store.path / key / "stray.bin").write_text("x")  # not written by the store: no marker
    with pytest.raises(StorageError, match=f"cannot store '{key}'.*without {MARKER}") as e:
        with store.writer(key) as folder:
            _fill(folder)
    assert isinstance(e.value.__cause__, OSError)
    assert (store.path / key / "stray.bin").is_file()


def test_a_failed_upload_is_a_storage_error_and_leaves_nothing(s3_store, monkeypatch):
    """boto3's transfer wraps S3 errors in S3UploadFailedError: it still becomes StorageError."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError

    key = "org--m/0123abc/base-0123456789ab"
    upload_file, calls = s3_store.client.upload_file, []

    def failing_upload_file(filename, bucket, object_key, **kwargs):
        calls.append(object_key)
        if len(calls) == 2:  # the first file is already in the writer's folder
            try:  # what boto3.s3.transfer does with the error of a part
                raise ClientError({"Error": {"Code": "InternalError"}}, "PutObject")
            except ClientError as e:
                raise S3UploadFailedError(f"Failed to upload {filename}: {e}")  # noqa: B904
        return upload_file(filename, bucket, object_key, **kwargs)

    monkeypatch.setattr(s3_store.client, "upload_file", failing_upload_file)
    with pytest.raises(StorageError, match=f"uploading to {s3_store.root}/{key}: S3 error Intern"):
        with s3_store.writer(key) as folder:
            _fill(folder)
    assert not s3_store.is_complete(key)
    listed = s3_store.client.list_objects_v2(Bucket=s3_store.bucket, Prefix=s3_store.prefix)
    assert listed.get("KeyCount", 0) == 0, "the writer deleted its own partial folder"


def _failing_put(client, *, code: str, status: int, times: int, land: bool):
    """Wrap ``client.put_object``: the first ``times`` conditional puts answer ``code``
    (after landing when ``land``: a reply lost and the put retried)."""
    from botocore.exceptions import ClientError

    put, left = client.put_object, [times]

    def put_object(**kwargs):
        if kwargs.get("IfNoneMatch") and left[0] > 0:
            left[0] -= 1
            if land:
                put(**kwargs)
            error = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
            raise ClientError(error, "PutObject")
        return put(**kwargs)

    return put_object, left


@pytest.mark.parametrize(
    ("code", "status", "land"),
    [("PreconditionFailed", 412, True), ("ConditionalRequestConflict", 409, False)],
)
def test_the_marker_decides_who_won(s3_store, monkeypatch, tmp_path, code, status, land):
    """A 412 for a put that landed (retried after a lost reply) still wins; a 409 is retried."""
    client = s3_store.client
    put_object, left = _failing_put(client, code=code, status=status, times=1, land=land)
    monkeypatch.setattr(client, "put_object", put_object)
    key = "org--m/0123abc/base-0123456789ab"
    with s3_store.writer(key) as folder:
        _fill(folder)
    assert left == [0], "the marker is created with a conditional put (If-None-Match: *)"
    assert _tree(fetch(s3_store.uri(key), dest=tmp_path / "f")) == FILES


def test_a_lost_conditional_put_keeps_the_winner(s3_store, monkeypatch, tmp_path):
    """A writer that checked before the winner's marker landed loses the conditional put: it
    deletes its own folder only, and the winner's folder and marker stay as they were."""
    key = "org--m/0123abc/base-0123456789ab"
    late = S3Store(s3_store.root, client=s3_client())
    monkeypatch.setattr(late, "is_complete", lambda key: False)  # it looked too early
    with s3_store.writer(key, source="first") as folder:
        _fill(folder, {"config.json": '{"first": 1}', "extra.bin": "e"})
    uri = s3_store.uri(key)
    with late.writer(key, source="late") as folder:
        _fill(folder, {"config.json": '{"late": 1}'})
    assert late.uri(key) == uri
    assert json.loads(read_file(uri, MARKER))["source"] == "first"
    assert _tree(fetch(uri, dest=tmp_path / "f")) == {
        "config.json": '{"first": 1}',
        "extra.bin": "e",
    }
    prefix = s3_store._key(key) + "/"
    listed = s3_store.client.list_objects_v2(Bucket=s3_store.bucket, Prefix=prefix)["Contents"]
    assert {o["Key"][len(prefix) :].split("/")[0] for o in listed} == {
        MARKER,
        uri.rsplit("/", 1)[1],
    }, "the loser deleted its own folder only"


def test_a_file_name_readers_would_refuse_is_not_stored(store):
    key = "org--m/0123abc/base-0123456789ab"
    with pytest.raises(StorageError, match=f"cannot store '{key}': file name 'a\\\\\\\\b.txt'"):
        with store.writer(key) as folder:
            (folder / "a\\b.txt").write_text("x")
    assert not store.is_complete(key)
