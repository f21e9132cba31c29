"""Fault battery for the model store: several writers publish the same keys at the same time.

Every round, each of ``WRITERS`` writers publishes the same fresh key (a barrier lines them up),
with content of its own (different bytes and sizes, so a mix of two writers' files shows). The
store must keep the first writer's folder: every publish returns (stored, or the winner's copy
adopted) or raises :class:`StorageError`, never a raw ``OSError``/botocore error, and at the end
each key holds exactly one complete copy whose files are the winner's and match its marker, with
no staging left. A reader fetches keys meanwhile and must see a complete folder or none.

The repair battery starts each round from a complete folder whose weights were changed after it
was written: every writer checks it (:func:`~modelgate.storage.reusable`), and those that find it
corrupt set it aside and publish again. At the end each key holds one good copy that verifies,
and the corrupt copy was set aside exactly once.

``pytest -s`` shows one summary line per backend (writers x rounds, outcomes, elapsed).
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from modelgate.errors import StorageError
from modelgate.storage import CORRUPT_DIR, MARKER, FileStore, S3Store, fetch, reusable, s3_client

pytestmark = pytest.mark.unit

WRITERS = 3
LOCAL_ROUNDS = 300
S3_ROUNDS = 30
SHA = "0123456789abcdef0123456789abcdef01234567"


def _key(round_: int) -> str:
    return f"org--m/{SHA}/base-{round_:012d}"


def _content(writer: int, round_: int) -> dict[str, bytes]:
    """Files of one writer's copy: every file names its writer; sizes differ by writer."""
    tag = f"writer-{writer} round-{round_}\n".encode()
    return {
        "config.json": json.dumps({"writer": writer, "round": round_}).encode(),
        "sub/weights.bin": tag * (50 + 7 * writer),
        "tokenizer.json": tag,
    }


def _publish(store: Any, writer: int, round_: int, counts: Counter[str]) -> None:
    try:
        with store.writer(_key(round_), source=f"writer-{writer}") as folder:
            for name, data in _content(writer, round_).items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
        counts["returned"] += 1
    except StorageError:
        counts["storage_error"] += 1
    except Exception as e:  # the battery's point: nothing else may escape the store
        counts[f"raw {type(e).__name__}: {e}"] += 1


def _local_writer(
    root: str, writer: int, rounds: int, barrier: Any, progress: Any, results: Any
) -> None:
    store = FileStore(root)
    counts: Counter[str] = Counter()
    for round_ in range(rounds):
        barrier.wait(timeout=120)
        progress.value = round_
        _publish(store, writer, round_, counts)
    results.put((writer, dict(counts)))


class _Progress:
    value = 0


class _Reader(threading.Thread):
    """Fetches the keys written so far until stopped: a complete folder of one writer, or none."""

    def __init__(self, uri_of: Any, progress: Any, tmp: Path, *, pause: float) -> None:
        super().__init__(daemon=True)
        self.uri_of, self.progress, self.tmp = uri_of, progress, tmp
        self.pause = pause
        self.stop = threading.Event()
        self.counts: Counter[str] = Counter()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            round_ = self.progress.value  # the key being raced for now
            n += 1
            time.sleep(self.pause)
            try:
                folder = fetch(self.uri_of(_key(round_)), dest=self.tmp / f"read-{n}")
            except StorageError:
                self.counts["absent"] += 1
                continue
            except Exception as e:
                self.counts[f"raw {type(e).__name__}: {e}"] += 1
                continue
            writer = json.loads((folder / "config.json").read_text())["writer"]
            got = {n: (folder / n).read_bytes() for n in _content(writer, round_)}
            ok = got == _content(writer, round_)
            self.counts["complete" if ok else "mixed"] += 1


def _check_one_copy(files: dict[str, bytes], *, key: str) -> None:
    """``files``: relative path -> bytes of everything stored for ``key`` (marker included)."""
    marker = json.loads(files[MARKER])
    winner = int(marker["source"].removeprefix("writer-"))
    round_ = int(key.rsplit("-", 1)[1])
    expected = _content(winner, round_)
    assert {f["path"]: f["size"] for f in marker["files"]} == {
        n: len(d) for n, d in expected.items()
    }
    assert {n: d for n, d in files.items() if n != MARKER} == expected, key


def _summary(backend: str, rounds: int, counts: Counter[str], reads: Counter[str], t: float) -> str:
    return (
        f"{backend}: {WRITERS} writers x {rounds} publishes of the same key per round = "
        f"{WRITERS * rounds} publishes: {counts['returned']} returned ({rounds} stored first, "
        f"{counts['returned'] - rounds} adopted the winner's copy), "
        f"{counts['storage_error']} clean StorageError, "
        f"{sum(v for k, v in counts.items() if k.startswith('raw'))} raw errors; concurrent "
        f"reads: {reads['complete']} complete, {reads['absent']} not yet stored, "
        f"{reads['mixed']} mixed; {t:.1f}s"
    )


def test_local_store_first_writer_wins_under_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELGATE_WORK_DIR", str(tmp_path / "work"))
    root = tmp_path / "store"
    ctx = multiprocessing.get_context("spawn")
    barrier, progress, results = ctx.Barrier(WRITERS), ctx.Value("i", 0), ctx.Queue()
    procs = [
        ctx.Process(
            target=_local_writer, args=(str(root), w, LOCAL_ROUNDS, barrier, progress, results)
        )
        for w in range(WRITERS)
    ]
    reader = _Reader(FileStore(root).uri, progress, tmp_path / "reads", pause=0.001)
    started = time.monotonic()
    for p in procs:
        p.start()
    reader.start()
    counts: Counter[str] = Counter()
    for _ in procs:
        counts.update(results.get(timeout=300)[1])
    elapsed = time.monotonic() - started
    reader.stop.set()
    reader.join(30)
    for p in procs:
        p.join(30)
    print("\n" + _summary("file://", LOCAL_ROUNDS, counts, reader.counts, elapsed))
    assert not [k for k in counts if k.startswith("raw")], counts
    assert not [k for k in reader.counts if k.startswith("raw") or k == "mixed"], reader.counts
    for round_ in range(LOCAL_ROUNDS):
        folder = root / _key(round_)
        files = [p for p in folder.rglob("*") if p.is_file()]
        _check_one_copy(
            {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}, key=_key(round_)
        )
    assert not list((root / ".staging").iterdir())


@pytest.fixture()
def atomic_conditional_puts(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto (in this process) checks ``If-None-Match`` and then writes without a lock between
    (``moto/s3/responses.py::S3Response.put_object``); AWS, MinIO and Ceph decide a conditional
    put atomically, which the store relies on. Serialize moto's PUT handler so the battery tests
    the store against the guarantee S3 gives, not against moto's race."""
    from moto.s3.responses import S3Response

    lock = threading.Lock()
    put_object = S3Response.put_object
    delete_object = S3Response.delete_object  # If-Match is checked the same way

    def atomic_put_object(self: S3Response) -> Any:
        with lock:
            return put_object(self)

    def atomic_delete_object(self: S3Response) -> Any:
        with lock:
            return delete_object(self)

    monkeypatch.setattr(S3Response, "put_object", atomic_put_object)
    monkeypatch.setattr(S3Response, "delete_object", atomic_delete_object)


@pytest.mark.usefixtures("atomic_conditional_puts")
def test_s3_store_first_writer_wins_under_threads(s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELGATE_WORK_DIR", str(tmp_path / "work"))
    bucket = s3_env.make_bucket(f"race-{uuid.uuid4().hex[:12]}")
    root = f"s3://{bucket}/models"
    stores = [S3Store(root, client=s3_client()) for _ in range(WRITERS)]
    barrier = threading.Barrier(WRITERS)
    progress = _Progress()
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def writer(w: int) -> None:
        mine: Counter[str] = Counter()
        for round_ in range(S3_ROUNDS):
            barrier.wait(timeout=120)
            progress.value = round_
            _publish(stores[w], w, round_, mine)
        with lock:
            counts.update(mine)

    reader = _Reader(S3Store(root, client=s3_client()).uri, progress, tmp_path / "reads", pause=0.2)
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    started = time.monotonic()
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    elapsed = time.monotonic() - started
    reader.stop.set()
    reader.join(30)
    print("\n" + _summary("s3:// (moto)", S3_ROUNDS, counts, reader.counts, elapsed))
    assert not [k for k in counts if k.startswith("raw")], counts
    assert not [k for k in reader.counts if k.startswith("raw") or k == "mixed"], reader.counts
    client = stores[0].client
    for round_ in range(S3_ROUNDS):
        prefix = f"models/{_key(round_)}/"
        objects = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                objects[o["Key"][len(prefix) :]] = body
        root_marker = objects.pop(MARKER)
        folder = json.loads(root_marker).get("folder")  # None: files directly under the key
        if folder:
            assert {k.split("/", 1)[0] for k in objects} == {folder}, "one writer folder per key"
            objects = {k.split("/", 1)[1]: v for k, v in objects.items()}
        _check_one_copy(objects | {MARKER: root_marker}, key=_key(round_))  # the key's marker
    assert not list((tmp_path / "work" / "modelgate-staging").iterdir())


CORRUPT = 99  # the writer number of the corrupt copies
REPAIR_ROUNDS_LOCAL = 40
REPAIR_ROUNDS_S3 = 8


def _store_corrupt(store: Any, round_: int) -> None:
    """A complete copy of ``round_``'s key whose weights then change (same size)."""
    with store.writer(_key(round_), source=f"writer-{CORRUPT}") as folder:
        for name, data in _content(CORRUPT, round_).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
    bad = bytearray(_content(CORRUPT, round_)["sub/weights.bin"])
    bad[0] ^= 0xFF
    if isinstance(store, FileStore):
        (store.path / _key(round_) / "sub/weights.bin").write_bytes(bytes(bad))
    else:
        bucket, prefix = store.uri(_key(round_)).removeprefix("s3://").split("/", 1)
        store.client.put_object(Bucket=bucket, Key=f"{prefix}/sub/weights.bin", Body=bytes(bad))


def _repair(store: Any, writer: int, round_: int, counts: Counter[str]) -> None:
    """What a re-run step does: reuse the key if it checks, else (set aside and) write it."""
    try:
        if reusable(store, _key(round_)):
            counts["reused"] += 1
            return
    except StorageError as e:
        counts[f"storage_error {e}"] += 1
        return
    except Exception as e:
        counts[f"raw {type(e).__name__}: {e}"] += 1
        return
    _publish(store, writer, round_, counts)


def _check_repaired(store: Any, round_: int, tmp: Path) -> None:
    """The key holds one writer's good copy (checked against its marker by fetch)."""
    folder = fetch(store.uri(_key(round_)), dest=tmp / f"check-{round_}")
    writer = json.loads((folder / "config.json").read_text())["writer"]
    assert writer != CORRUPT
    assert {n: (folder / n).read_bytes() for n in _content(writer, round_)} == _content(
        writer, round_
    )


def _local_repairer(root: str, writer: int, rounds: int, barrier: Any, results: Any) -> None:
    store = FileStore(root)
    counts: Counter[str] = Counter()
    for round_ in range(rounds):
        barrier.wait(timeout=120)
        _repair(store, writer, round_, counts)
    results.put((writer, dict(counts)))


def test_local_store_repairs_a_corrupt_folder_once_under_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELGATE_WORK_DIR", str(tmp_path / "work"))
    root = tmp_path / "store"
    store = FileStore(root)
    for round_ in range(REPAIR_ROUNDS_LOCAL):
        _store_corrupt(store, round_)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [
        ctx.Process(
            target=_local_repairer, args=(str(root), w, REPAIR_ROUNDS_LOCAL, barrier, results)
        )
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    counts: Counter[str] = Counter()
    for _ in procs:
        counts.update(results.get(timeout=300)[1])
    for p in procs:
        p.join(30)
    aside = [json.loads((f / "config.json").read_text()) for f in (root / CORRUPT_DIR).iterdir()]
    print(f"\nfile:// repair: {dict(counts)}; set aside: {len(aside)}")
    assert not [k for k in counts if k.startswith(("raw", "storage_error"))], counts
    assert counts["returned"] >= REPAIR_ROUNDS_LOCAL  # at least one write per round
    corrupt = Counter(a["round"] for a in aside if a["writer"] == CORRUPT)
    assert corrupt == Counter(range(REPAIR_ROUNDS_LOCAL))  # each corrupt copy once
    for round_ in range(REPAIR_ROUNDS_LOCAL):
        _check_repaired(store, round_, tmp_path)
    assert not list((root / ".staging").iterdir())


@pytest.mark.usefixtures("atomic_conditional_puts")
def test_s3_store_repairs_a_corrupt_folder_under_threads(s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELGATE_WORK_DIR", str(tmp_path / "work"))
    root = f"s3://{s3_env.make_bucket(f'repair-{uuid.uuid4().hex[:12]}')}/models"
    stores = [S3Store(root, client=s3_client()) for _ in range(WRITERS)]
    for round_ in range(REPAIR_ROUNDS_S3):
        _store_corrupt(stores[0], round_)
    barrier = threading.Barrier(WRITERS)
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def repairer(w: int) -> None:
        mine: Counter[str] = Counter()
        for round_ in range(REPAIR_ROUNDS_S3):
            barrier.wait(timeout=120)
            _repair(stores[w], w, round_, mine)
        with lock:
            counts.update(mine)

    threads = [threading.Thread(target=repairer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    print(f"\ns3:// repair: {dict(counts)}")
    assert not [k for k in counts if k.startswith(("raw", "storage_error"))], counts
    for round_ in range(REPAIR_ROUNDS_S3):
        _check_repaired(stores[0], round_, tmp_path)
