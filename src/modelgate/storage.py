"""The model store: where models live between steps, and where KServe fetches them from.

A release writes each model once to durable storage the cluster can read, and passes its URI
between steps; the KFP artifact store only carries small things (manifests, metrics, reports).

Stores:

* ``s3://bucket/prefix`` - any S3-protocol service (AWS, MinIO, Ceph, moto). Endpoint and keys come
  from the usual ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (and
  ``AWS_DEFAULT_REGION``); in the cluster they are mounted from a Secret, the same Secret the
  InferenceService's service account carries for KServe's storage initializer.
* ``file:///path`` - a local folder, for runs on one machine.

Layout under the store root (one folder per key, written completely or not at all)::

    <model-slug>/<commit-sha>/base-<fingerprint>/      the downloaded snapshot
    <model-slug>/<commit-sha>/<scheme>-<fingerprint>/  a quantized candidate
    inputs/<kind>-<digest>/                            task folders, calibration data
    .staging/<host>-<pid>-<id>/                        file:// only: folders being written
    .corrupt/<key>.<time>.<id>/                        file:// only: folders set aside

Every folder ends with :data:`MARKER` (written last), which lists its files, their sizes and
sha256 (on S3 also each object's ETag): a folder without it is incomplete and is never served.
No folder name is a string prefix of a sibling's, because KServe's S3 downloader lists objects
by raw string prefix and would also fetch a sibling ``base-old/`` for ``base``
(``kserve_storage.Storage._download_s3``).

Concurrent writers (first writer wins)
--------------------------------------

Several runs may publish the same key at once (two releases of one commit, a retried step).
A complete folder is never deleted or overwritten: the first writer to publish wins, later
writers discard their copy and use the winner's, and readers see a complete folder or none.

* ``file://``: a writer fills ``<root>/.staging/<host>-<pid>-<id>/`` (same file system), writes
  the marker into it and moves the whole folder into place with one ``os.rename``. Renaming a
  folder onto a path that does not exist is atomic on POSIX and fails (``ENOTEMPTY``/``EEXIST``)
  onto a complete folder, so exactly one rename lands; the losers delete only their staging.
* ``s3://``: S3 has no rename, so each writer uploads under its own folder
  ``<key>/<id>/`` (``<id>``: 32 random hex digits, with a copy of the marker), then creates the
  key's marker ``<key>/modelgate-store.json`` with a conditional put (``If-None-Match: *``).
  S3 lets exactly one such put create the object; its marker names the winner's ``<id>``
  (``"folder"``) and is never written again. A writer whose put fails (412
  ``PreconditionFailed``, or 409 ``ConditionalRequestConflict`` retried until it is decided)
  re-reads the marker and, unless it names its own folder, deletes its own ``<id>/`` only.
  Why not upload to ``<key>/`` itself and rely on keys being content-addressed: the keys of
  inputs are (a digest of their bytes), and Hub files at a commit sha are immutable, but a
  quantized folder is not byte-for-byte reproducible (kernels, timestamps in records) and every
  folder holds a manifest written at run time, so two writers' files under one prefix could mix.
  With a folder per writer no object is ever written by two writers, so nothing can mix.
  :meth:`S3Store.uri` follows the marker to ``s3://bucket/<key>/<id>``: that is the URI handed to
  KServe, whose downloader then sees exactly the winner's files. Folders written before this
  layout (files directly under ``<key>/``, a marker without ``"folder"``) are still read.

Readers (:meth:`~ModelStore.is_complete`, :func:`fetch`, :func:`read_file`) read only what a marker
describes, after checking that each of its paths is relative and stays inside the folder.

Verified content
----------------

Whatever reads a stored folder's bytes checks each file against the sha256 its marker records
(:func:`verify`: :func:`fetch`, :func:`fetch_files`, :func:`fetch_like_kserve`,
:func:`read_file`); markers written before per-file digests are checked by size, with a log line
saying so. A step that reuses a folder instead of writing it (:func:`reusable`) checks it first:
``file://`` every file's sha256, ``s3://`` each object's size and ETag without downloading it.
Digests are cached per machine (:func:`file_sha256`), so a warm check costs a ``stat`` per file.

A complete folder whose content fails that check is *set aside* so that its key can be written
again, and first writer wins still holds (a complete folder is never overwritten in place, and
readers see a complete folder or none):

* ``file://``: one ``os.rename`` moves it to ``<root>/.corrupt/<key>.<time>.<id>/``; if another
  process had set it aside and published a new copy in between, the rename moved that copy
  (its marker is not the one checked) and it is renamed back. Set-aside folders are removed
  like stale staging after :data:`STALE_STAGING_S`.
* ``s3://``: the key's marker is deleted with ``If-Match: <the ETag of the marker checked>``, so
  a marker another writer published meanwhile stays (412). The key is then free for the next
  writer's conditional put as usual; the old writer folder, no longer named, is stale staging.
  On a server that ignores ``If-Match`` on deletes, two processes setting aside the same folder
  at once may delete a marker just published; its writer folder then goes stale and the key is
  written again (a re-download), never mixed.
Staging left by killed runs is removed by the next writer: ``file://`` staging folders whose
process is gone (same host) or older than :data:`STALE_STAGING_S`, and on S3 the ``<key>/<id>/``
folders the marker does not name whose newest object is older than that (listings are bounded by
:data:`CLEAN_LIMIT`). A writer alive for longer than :data:`STALE_STAGING_S` may lose its staging.
Every failure of the store is a :class:`~modelgate.errors.StorageError` naming the key.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from modelgate.errors import ConfigError, StorageError
from modelgate.placement import WORK_DIR, WORK_DIR_ENV
from modelgate.retry import backoff

logger = logging.getLogger(__name__)

MARKER = "modelgate-store.json"
#: storageUri schemes KServe's storage initializer (or the kubelet, for pvc://) can fetch.
KSERVE_SCHEMES = ("s3", "gs", "pvc", "oci", "hf")
STORE_SCHEMES = ("s3", "file")
ENDPOINT_ENV = "AWS_ENDPOINT_URL"
#: Staging folders (and unpublished S3 writer folders) older than this are removed by the next
#: writer even when their owner cannot be shown to be gone.
STALE_STAGING_S = 24 * 3600.0
#: Entries one cleanup looks at, at most (a bounded listing).
CLEAN_LIMIT = 1000
STAGING_DIR = ".staging"
#: ``file://`` only: complete folders whose content failed its check, set aside.
CORRUPT_DIR = ".corrupt"
#: Under :func:`work_dir`: local copies being uploaded to S3, or downloaded from it.
SCRATCH_DIR = "modelgate-staging"

_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_OWNER = re.compile(r"(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-[0-9a-f]{32}$")
_FOLDER = re.compile(r"^[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MISSING = ("404", "NoSuchKey", "NotFound")
#: Hex digits of the content digest in a staged input's key (``inputs/<kind>-<digest>``).
DIGEST_CHARS = 16


#: Free space a fallback work folder needs at least (models take GBs: less fails at once).
MIN_FALLBACK_FREE = 2 * 1024**3
#: Under the temp folder: the work folder when the configured one is not writable.
FALLBACK_WORK_DIR = "modelgate-work"
WORK_DIR_FIX = (
    "give pipeline pods an fsGroup (KFP cannot set one: OpenShift's restricted SCC does, "
    "elsewhere a mutating policy adding spec.securityContext.fsGroup), use a storage class "
    "whose volumes the images' user (uid 1001, gid 0) can write, "
    f"or set {WORK_DIR_ENV} to a writable folder with room for the model"
)
_warned: set[str] = set()


def work_dir() -> Path:
    """Scratch space for models: ``$MODELGATE_WORK_DIR``, else the pipeline's work volume at
    :data:`~modelgate.placement.WORK_DIR` when mounted, else the temp folder.

    With the work volume mounted, Hugging Face caches (``HF_HOME``) move onto it too, so a
    multi-GB dataset or tokenizer download does not fill the container's root disk.

    The folder is checked for writing. The work volume (a generic ephemeral volume) is
    root:root 0755 on block-storage classes while the images run as uid 1001, and KFP's
    executor config cannot set the pod's ``fsGroup`` that would fix it: then
    ``<temp>/modelgate-work`` on the pod's own disk is used instead, with a warning that names
    the cause and the fix, if it has :data:`MIN_FALLBACK_FREE` bytes free.

    Raises:
        StorageError: Neither the folder nor the fallback is writable with room (one line,
            with the fix).
    """
    configured = os.environ.get(WORK_DIR_ENV)
    volume = False
    if configured:
        path = Path(configured)
    elif Path(WORK_DIR).is_dir():
        path, volume = Path(WORK_DIR), True
    else:
        path = Path(tempfile.gettempdir())
    problem = _not_writable(path)
    if problem is not None:
        path = _fallback_work_dir(path, problem)
    if volume:
        os.environ["HF_HOME"] = str(path / "hf")
    return path


def _not_writable(path: Path) -> str | None:
    """Why this process cannot create files in ``path`` (None: it can); creates ``path``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"it cannot be created: {e.strerror or e}"
    if not os.access(path, os.W_OK | os.X_OK):
        st = path.stat()
        return (
            f"it is {st.st_uid}:{st.st_gid} mode {st.st_mode & 0o7777:04o} and this process runs "
            f"as uid {os.getuid()} gid {os.getgid()}"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".modelgate-write-check-")
    except OSError as e:
        return f"writing there fails: {e.strerror or e}"
    os.close(fd)
    os.unlink(probe)
    return None


def _fallback_work_dir(path: Path, problem: str) -> Path:
    """``<temp>/modelgate-work`` instead of the unwritable ``path``, with a warning.

    Raises:
        StorageError: The fallback is not writable either, or has too little room.
    """
    fallback = Path(tempfile.gettempdir()) / FALLBACK_WORK_DIR
    trouble = _not_writable(fallback) if fallback != path else "it is the same folder"
    if trouble is None:
        free = shutil.disk_usage(fallback).free
        if free >= MIN_FALLBACK_FREE:
            if str(path) not in _warned:
                _warned.add(str(path))
                logger.warning(
                    "work folder %s is not writable (%s): using %s on the pod's own disk "
                    "instead, which may be too small for the model; fix: %s",
                    path,
                    problem,
                    fallback,
                    WORK_DIR_FIX,
                )
            return fallback
        trouble = f"it has only {free / 1024**3:.1f} GiB free"
    raise StorageError(
        f"work folder {path} is not writable ({problem}) and the fallback {fallback} is no "
        f"better ({trouble}); fix: {WORK_DIR_FIX}"
    )


def scheme_of(uri: str) -> str:
    """The URI scheme (``""`` for a bare path)."""
    return urlsplit(uri).scheme if "://" in uri else ""


def _file_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"{uri!r}: file URIs name a local folder, e.g. file:///data/models")
    return Path(unquote(parts.path))


def _s3_parts(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if not parts.netloc:
        raise ConfigError(f"{uri!r} names no bucket; expected s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


@dataclass(frozen=True)
class StoredFile:
    """One file of a stored folder: its path, size and (markers written since per-file digests
    exist) sha256; on S3 also the ETag the server gave the uploaded object."""

    path: str
    size: int
    sha256: str | None = None
    etag: str | None = None

    def entry(self) -> dict[str, Any]:
        """The marker's JSON entry (fields that are None are left out)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _listing(folder: Path, *, key: str = "", hashes: bool = False) -> list[StoredFile]:
    """The files of ``folder`` (without its marker) as a marker lists them; with ``hashes``,
    each with its sha256 (through the digest cache, see :func:`file_sha256`)."""
    files = [
        StoredFile(p.relative_to(folder).as_posix(), p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARKER
    ]
    for f in files:
        reason = unsafe_path(f.path)
        if reason:  # readers refuse such a marker entry, so never write one
            raise StorageError(f"cannot store {key or folder!r}: file name {f.path!r} {reason}")
    if hashes:
        with _digest_db() as db:
            files = [StoredFile(f.path, f.size, _sha256_with(db, folder / f.path)) for f in files]
    return files


def _marker_text(files: list[StoredFile], source: str, *, folder: str | None = None) -> str:
    doc: dict[str, Any] = {
        "files": [f.entry() for f in files],
        "bytes": sum(f.size for f in files),
        "source": source,
        "written_at": time.time(),
    }
    if folder:
        doc["folder"] = folder  # S3: the writer folder this key's marker publishes
    return json.dumps(doc, indent=1)


def unsafe_path(path: object) -> str | None:
    """Why ``path`` may not name a file inside a stored folder, or None when it may.

    Allowed: a non-empty, relative, ``/``-separated path without ``.``/``..``/empty parts,
    backslashes, NUL or a drive letter, so joining it to a folder stays inside the folder.
    """
    if not isinstance(path, str) or not path:
        return "not a non-empty string"
    if "\\" in path or "\0" in path:
        return "has a backslash or NUL"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "is absolute"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "has an empty, '.' or '..' part"
    return None


def _check_key(key: str) -> str:
    key = key.strip("/")
    reason = unsafe_path(key)
    if reason:
        raise StorageError(f"store key {key!r} {reason}; keys are relative '/'-separated paths")
    return key


@dataclass(frozen=True)
class _Marker:
    """A parsed, validated marker."""

    files: list[StoredFile]
    folder: str | None  # S3 keys: the writer folder holding the files
    doc: dict[str, Any]

    def local_text(self) -> str:
        """The marker of a copy whose files sit directly in its folder."""
        return json.dumps({k: v for k, v in self.doc.items() if k != "folder"}, indent=1)


def _parse_marker(text: str | bytes, *, where: str) -> _Marker:
    try:
        doc = json.loads(text)
        files = [
            StoredFile(f["path"], int(f["size"]), f.get("sha256"), f.get("etag"))
            for f in doc["files"]
        ]
        folder = doc.get("folder")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise StorageError(f"{where}: {MARKER} is not a modelgate store marker: {e}") from e
    for f in files:
        reason = unsafe_path(f.path)
        if reason or f.size < 0:
            raise StorageError(
                f"{where}: {MARKER} lists the unsafe file {f.path!r} "
                f"({reason or 'negative size'}); refusing to read the folder"
            )
        if f.sha256 is not None and not (isinstance(f.sha256, str) and _SHA256.match(f.sha256)):
            raise StorageError(f"{where}: {MARKER} lists {f.path!r} with a malformed sha256")
        if f.etag is not None and not isinstance(f.etag, str):
            raise StorageError(f"{where}: {MARKER} lists {f.path!r} with a malformed etag")
    if folder is not None and not (isinstance(folder, str) and _FOLDER.match(folder)):
        raise StorageError(f"{where}: {MARKER} names the unsafe folder {folder!r}")
    return _Marker(files=files, folder=folder, doc=doc)


def read_marker(text: str, *, uri: str = "") -> list[StoredFile]:
    """The file list of a marker, every path checked with :func:`unsafe_path`.

    Raises:
        StorageError: The marker is not one modelgate wrote, or lists a path outside its folder.
    """
    return _parse_marker(text, where=uri or MARKER).files


class ContentMismatchError(StorageError):
    """A stored file is missing, or its size or sha256 is not what the folder's marker says."""


#: The fix a :class:`ContentMismatchError` names.
MISMATCH_FIX = (
    "the stored folder was changed after it was written; delete it from the store and re-run "
    "the step that wrote it (a re-run download replaces a base folder by itself)"
)


def verify(folder: Path, expected: list[StoredFile], *, uri: str) -> None:
    """Check that ``folder`` holds every expected file with its size and, where the marker
    records one, its sha256 (old markers without digests: sizes only).

    Digests come from :func:`file_sha256`, so a folder checked before on this machine and not
    touched since is not read again.

    Raises:
        ContentMismatchError: Files are missing or truncated (names the first few), or a file's
            content does not match its sha256 (one line: file, expected, actual, the fix).
        StorageError: A file cannot be read.
    """
    problems = []
    for f in expected:
        path = folder / f.path
        try:
            size = path.stat().st_size if path.is_file() else None
        except FileNotFoundError:  # removed since is_file
            size = None
        except OSError as e:
            raise StorageError(f"cannot check {f.path} of {uri}: {e}") from e
        if size is None:
            problems.append(f"{f.path} missing")
        elif size != f.size:
            problems.append(f"{f.path} has {size} bytes, expected {f.size}")
    if problems:
        more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise ContentMismatchError(f"fetch of {uri} is incomplete: {'; '.join(problems[:5])}{more}")
    unhashed = [f.path for f in expected if f.sha256 is None]
    if unhashed:
        logger.info(
            "%s: its %s records no sha256 for %d file(s) (written before per-file digests); "
            "checked their sizes only",
            uri,
            MARKER,
            len(unhashed),
        )
    with _digest_db() as db:
        for f in expected:
            if f.sha256 is None:
                continue
            try:
                actual = _sha256_with(db, folder / f.path)
            except FileNotFoundError as e:  # gone since its size was checked
                raise ContentMismatchError(f"fetch of {uri} is incomplete: {f.path} missing") from e
            except OSError as e:
                raise StorageError(f"cannot read {f.path} of {uri}: {e}") from e
            if actual != f.sha256:
                raise ContentMismatchError(
                    f"{uri}: {f.path} does not match its {MARKER}: sha256 expected {f.sha256}, "
                    f"actual {actual}; {MISMATCH_FIX}"
                )


#: Under :func:`work_dir`: the verified-digest cache (see :func:`file_sha256`).
DIGEST_CACHE = "modelgate-digests.sqlite"
#: Rows the digest cache keeps before forgetting those whose file is gone.
DIGEST_CACHE_ROWS = 100_000
_CHUNK = 1 << 20


def _stat_key(path: Path) -> tuple[str, int, int, int, int]:
    """(real path, size, mtime_ns, ctime_ns, inode) of the file ``path`` (links followed)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return real, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


@contextlib.contextmanager
def _digest_db() -> Iterator[sqlite3.Connection | None]:
    """The digest cache, or None when it cannot be opened (then every file is read)."""
    try:
        db = sqlite3.connect(work_dir() / DIGEST_CACHE, timeout=30)
    except (sqlite3.Error, StorageError, OSError) as e:
        logger.debug("digest cache unavailable (%s): hashing every file", e)
        yield None
        return
    try:
        db.execute(
            "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, size INTEGER, "
            "mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER, sha256 TEXT)"
        )
        yield db
        if db.total_changes:
            (rows,) = db.execute("SELECT count(*) FROM digests").fetchone()
            if rows > DIGEST_CACHE_ROWS:  # forget files that are gone
                paths = [p for (p,) in db.execute("SELECT path FROM digests")]
                gone = [(p,) for p in paths if not os.path.exists(p)]
                db.executemany("DELETE FROM digests WHERE path=?", gone)
        db.commit()
    except sqlite3.Error as e:  # a cache: a broken one costs time, not correctness
        logger.debug("digest cache error (%s): hashing every file", e)
    finally:
        db.close()


def _cached(db: sqlite3.Connection | None, key: tuple[str, int, int, int, int]) -> str | None:
    if db is None:
        return None
    try:
        row = db.execute(
            "SELECT sha256 FROM digests WHERE path=? AND size=? AND mtime_ns=? AND ctime_ns=? "
            "AND inode=?",
            key,
        ).fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def _remember(db: sqlite3.Connection | None, key: tuple[str, int, int, int, int], sha: str) -> None:
    if db is None:
        return
    try:
        db.execute("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?)", (*key, sha))
    except sqlite3.Error as e:
        logger.debug("cannot record a digest (%s)", e)


def sha256_stream(path: Path) -> str:
    """Hex sha256 of the file ``path``, read in chunks (no cache)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """Hex sha256 of the file ``path`` through the verified-digest cache.

    The cache (an SQLite file :data:`DIGEST_CACHE` under :func:`work_dir`) maps
    ``(real path, size, mtime_ns, ctime_ns, inode)`` to the sha256 of the bytes read when the
    entry was made, so re-checking a stored folder that was not touched since costs one
    ``stat`` per file instead of reading every byte (a warm re-release of a multi-GB model).
    Any write to a file changes its ctime, and ctime cannot be set from user space (unlike
    mtime, which ``touch -d`` or ``os.utime`` restore), so a same-size edit with a restored
    mtime still misses the cache and is read. Replacing the file changes its inode and ctime.
    The cache is trusted as much as the work folder holding it (the same user can write both
    the store and it); a cache that cannot be opened means every file is read.

    Raises:
        OSError: The file cannot be read.
    """
    with _digest_db() as db:
        return _sha256_with(db, path)


def _sha256_with(db: sqlite3.Connection | None, path: Path) -> str:
    key = _stat_key(path)
    found = _cached(db, key)
    if found:
        return found
    sha = sha256_stream(Path(key[0]))
    if _stat_key(path) == key:  # not changed while it was read
        _remember(db, key, sha)
    return sha


def _carry_digests(old: Path, new: Path, files: list[StoredFile]) -> None:
    """After ``old`` was renamed to ``new``: its files' cached digests, for their new paths.

    Renaming a folder changes neither inode, size, mtime nor ctime of the files in it, so an
    entry of ``old/<f>`` with exactly the stat of ``new/<f>`` is the same, unchanged file.
    """
    old_real = os.path.realpath(old)
    with _digest_db() as db:
        for f in files:
            try:
                key = _stat_key(new / f.path)
            except OSError:
                continue
            sha = _cached(db, (os.path.join(old_real, f.path), *key[1:]))
            if sha:
                _remember(db, key, sha)


def remember_sha256(digests: Iterable[tuple[Path, str]]) -> None:
    """Record each ``(path, sha256)`` as the digest of the file as it is now, for
    :func:`file_sha256` (files that are gone are skipped).

    Only for bytes this process has just hashed itself (e.g. a file it downloaded, hashed and
    then linked or moved: that keeps the bytes, but changes the path or the ctime).
    """
    with _digest_db() as db:
        for path, sha256 in digests:
            try:
                key = _stat_key(path)
            except OSError:
                continue
            _remember(db, key, sha256)


def _pid_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists here (no side effects: never reaps a child)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _owned_name() -> str:
    """``<host>-<pid>-<id>``: a staging name that tells a later run whether its owner is gone."""
    return f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex}"


def _stale(path: Path, *, now: float) -> bool:
    owner = _OWNER.search(path.name)
    if owner and owner["host"] == _HOST and not _pid_exists(int(owner["pid"])):
        return True
    try:
        return now - path.lstat().st_mtime > STALE_STAGING_S
    except FileNotFoundError:
        return False


def clean_staging(parent: Path) -> int:
    """Remove the stale staging folders in ``parent`` (see the module docstring).

    Looks at :data:`CLEAN_LIMIT` entries at most; problems are logged, never raised (a leftover
    costs disk, not correctness).

    Returns:
        How many folders were removed.
    """
    removed = 0
    now = time.time()
    try:
        with os.scandir(parent) as entries:
            for entry in itertools.islice(entries, CLEAN_LIMIT):
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False) and _stale(path, now=now):
                    shutil.rmtree(path, ignore_errors=True)
                    removed += 1
    except FileNotFoundError:
        return 0
    except OSError as e:
        logger.warning("cannot clean staging leftovers in %s: %s", parent, e)
    if removed:
        logger.info("removed %d staging leftover(s) of killed runs in %s", removed, parent)
    return removed


def _scratch(kind: str) -> Path:
    """A new private folder under ``work_dir()/modelgate-staging`` (stale ones are removed)."""
    parent = work_dir() / SCRATCH_DIR
    clean_staging(parent)
    path = parent / f"{kind}-{_owned_name()}"
    try:
        path.mkdir(parents=True)
    except OSError as e:
        raise StorageError(f"cannot make a scratch folder in {parent}: {e}") from e
    return path


class ModelStore(Protocol):
    """Durable storage for model folders (see module docstring)."""

    root: str

    def uri(self, key: str) -> str:
        """The URI of ``key`` under the root."""
        ...

    def is_complete(self, key: str) -> bool:
        """True if ``key`` was written completely (its marker exists)."""
        ...

    def writer(self, key: str, *, source: str = "") -> contextlib.AbstractContextManager[Path]:
        """A local folder to fill; stored under ``key`` when the block exits without error."""
        ...

    def check_writable(self) -> None:
        """Write and delete a probe object, or raise :class:`StorageError` naming the fix."""
        ...

    def reuse(self, key: str) -> bool:
        """True if ``key`` is complete and its content checks; a complete folder that fails
        the check is set aside (see the module docstring) and False returned."""
        ...


def reusable(store: ModelStore, key: str) -> bool:
    """Whether a step may reuse the stored folder ``key`` instead of writing it again.

    A complete folder whose files no longer match its marker is set aside, so the caller writes
    the key again (first writer wins as ever). See :meth:`FileStore.reuse`, :meth:`S3Store.reuse`.

    Raises:
        StorageError: The store cannot be read, or the folder cannot be set aside.
    """
    return store.reuse(key)


class FileStore:
    """A :class:`ModelStore` in a local folder; folders are renamed into place, first one wins."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.path = Path(root).absolute()
        self.root = self.path.as_uri()

    def _folder(self, key: str) -> Path:
        return self.path / _check_key(key)

    def uri(self, key: str) -> str:
        """``file://`` URI of ``key``.

        Raises:
            StorageError: ``key`` is not a relative path.
        """
        return self._folder(key).as_uri()

    def is_complete(self, key: str) -> bool:
        """True if ``key`` has its marker.

        Raises:
            StorageError: ``key`` is not a relative path.
        """
        return (self._folder(key) / MARKER).is_file()

    @contextlib.contextmanager
    def writer(self, key: str, *, source: str = "") -> Iterator[Path]:
        """Stage in ``<root>/.staging/`` and rename the whole folder into place on success.

        If another writer stored ``key`` first, this copy is discarded and the winner's kept.
        A block that raises leaves nothing behind.

        Raises:
            StorageError: The staging folder cannot be made, or the folder cannot be stored.
        """
        final = self._folder(key)
        staging = self.path / STAGING_DIR / _owned_name()
        clean_staging(staging.parent)
        clean_staging(self.path / CORRUPT_DIR)
        try:
            staging.mkdir(parents=True)
        except OSError as e:
            raise StorageError(f"cannot stage {key!r} in {self.root}: {e}") from e
        try:
            yield staging
            self._publish(key, staging, final, source=source)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _publish(self, key: str, staging: Path, final: Path, *, source: str) -> None:
        if self.is_complete(key):
            logger.info("%s is already stored; keeping the first writer's copy", final)
            return
        try:
            files = _listing(staging, key=key, hashes=True)
            (staging / MARKER).write_text(_marker_text(files, source))
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, final)  # atomic; fails onto an existing, non-empty folder
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY) and self.is_complete(key):
                logger.info("%s was stored by another writer first; keeping its copy", final)
                return
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise StorageError(
                    f"cannot store {key!r}: {final} exists without {MARKER} (not written by "
                    "modelgate's store); move it away and retry"
                ) from e
            raise StorageError(f"cannot store {key!r} in {self.root}: {e}") from e
        _carry_digests(staging, final, files)
        logger.info("stored %s", final)

    def reuse(self, key: str) -> bool:
        """True if ``key`` is complete and every file matches its marker (sizes and sha256,
        through the digest cache); a complete folder that does not is set aside.

        Raises:
            StorageError: The folder cannot be read or set aside.
        """
        final = self._folder(key)
        try:
            seen = (final / MARKER).read_text()
        except FileNotFoundError:
            return False
        except OSError as e:
            raise StorageError(f"cannot read {MARKER} of {final}: {e}") from e
        try:
            verify(final, _parse_marker(seen, where=self.uri(key)).files, uri=self.uri(key))
        except ContentMismatchError as e:
            logger.warning("%s; setting it aside and writing it again", e)
            self._set_aside(key, seen)
            return False
        return True

    def _set_aside(self, key: str, seen: str) -> None:
        """Move the folder of ``key`` whose marker read ``seen`` to ``<root>/.corrupt/``.

        One rename, so readers see the complete folder or none. If another process had already
        set it aside and published a new copy in between, the folder moved is that copy (its
        marker differs): it is renamed back unless a third copy landed meanwhile.
        """
        final = self._folder(key)
        aside = (
            self.path / CORRUPT_DIR / f"{key.replace('/', '--')}.{int(time.time())}."
            f"{uuid.uuid4().hex[:8]}"
        )
        try:
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.rename(final, aside)
        except FileNotFoundError:
            return  # another process set it aside first
        except OSError as e:
            raise StorageError(f"cannot set aside the corrupt {final}: {e}; {MISMATCH_FIX}") from e
        try:
            moved = (aside / MARKER).read_text()
        except OSError:
            moved = None
        if moved is not None and moved != seen:
            with contextlib.suppress(OSError):
                os.rename(aside, final)  # a good copy published meanwhile: put it back
                return
        os.utime(aside)  # age from now: removed with stale staging after STALE_STAGING_S
        logger.warning("moved the corrupt %s to %s", final, aside)

    def check_writable(self) -> None:
        """Write a probe file in the root, or check its nearest existing parent (creates none)."""
        existing = self.path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise StorageError(f"model store {self.root}: {existing} is not a folder")
        if existing != self.path:
            if not os.access(existing, os.W_OK | os.X_OK):
                raise StorageError(
                    f"model store {self.root} cannot be created: {existing} is read-only"
                )
            return
        try:
            probe = self.path / f".probe-{uuid.uuid4().hex}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise StorageError(f"model store {self.root} is not writable: {e}") from e


def s3_client() -> Any:
    """A boto3 S3 client from the usual AWS environment (endpoint: ``$AWS_ENDPOINT_URL``).

    Path-style addressing unless ``S3_USER_VIRTUAL_BUCKET=true`` (the variable KServe's storage
    initializer reads), since MinIO and most in-cluster S3 services need it.
    """
    import boto3
    from botocore.config import Config

    virtual = os.environ.get("S3_USER_VIRTUAL_BUCKET", "").lower() == "true"
    config = Config(
        s3={"addressing_style": "virtual" if virtual else "path"},
        retries={"max_attempts": 5, "mode": "standard"},
    )
    # a new session each time: the default one caches credentials from its first use
    return boto3.session.Session().client(
        "s3", endpoint_url=os.environ.get(ENDPOINT_ENV) or None, config=config
    )


def _s3_error(e: Exception, *, action: str, bucket: str) -> StorageError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    endpoint = os.environ.get(ENDPOINT_ENV) or "the AWS default endpoint"
    if isinstance(e, NoCredentialsError):
        return StorageError(
            f"{action}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(in the cluster: the keys of the secret named by model_store_secret)"
        )
    if isinstance(e, EndpointConnectionError):
        return StorageError(f"{action}: cannot reach S3 at {endpoint}; check {ENDPOINT_ENV}")
    if isinstance(e, ClientError):
        code = e.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            return StorageError(f"{action}: bucket {bucket!r} does not exist at {endpoint}")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(
                f"{action}: S3 refused access to bucket {bucket!r} ({code}); check the keys "
                "and that they may read and write the bucket"
            )
        return StorageError(f"{action}: S3 error {code}: {e}")
    return StorageError(f"{action}: {type(e).__name__}: {e}")


@contextlib.contextmanager
def _s3_errors(*, action: str, bucket: str) -> Iterator[None]:
    """Re-raise botocore, boto3 transfer and local file errors as :class:`StorageError` naming
    ``action`` (a transfer error is described by the S3 error behind it)."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as e:
        raise _s3_error(e, action=action, bucket=bucket) from e
    except Boto3Error as e:  # S3UploadFailedError, RetriesExceededError of upload/download_file
        behind = e.__cause__ or e.__context__
        if isinstance(behind, (BotoCoreError, ClientError)):
            raise _s3_error(behind, action=action, bucket=bucket) from e
        raise StorageError(f"{action}: {type(e).__name__}: {e}") from e
    except OSError as e:
        raise StorageError(f"{action}: {e}") from e


def _code(e: Exception) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


def _s3_marker(client: Any, bucket: str, prefix: str) -> _Marker | None:
    """The parsed marker of the folder at ``prefix``, None if it has none (botocore errors pass)."""
    from botocore.exceptions import ClientError

    try:
        body = client.get_object(Bucket=bucket, Key=f"{prefix}/{MARKER}")["Body"].read()
    except ClientError as e:
        if _code(e) in _MISSING:
            return None
        raise
    return _parse_marker(body, where=f"s3://{bucket}/{prefix}")


class _ClaimConflict(StorageError):
    """S3 answered 409 ConditionalRequestConflict: another conditional put was in flight."""


class S3Store:
    """A :class:`ModelStore` under ``s3://bucket/prefix``; the first writer's marker wins."""

    def __init__(self, root: str, *, client: Any | None = None) -> None:
        self.bucket, self.prefix = _s3_parts(root)
        self.root = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self._client = client

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use."""
        if self._client is None:
            self._client = s3_client()
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_check_key(key)}".strip("/")

    def _key_uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _marker(self, key: str) -> _Marker | None:
        with _s3_errors(action=f"reading {self._key_uri(key)}", bucket=self.bucket):
            return _s3_marker(self.client, self.bucket, self._key(key))

    def uri(self, key: str) -> str:
        """``s3://`` URI of ``key``'s files: the published writer folder once complete.

        Raises:
            StorageError: The marker cannot be read.
        """
        marker = self._marker(key)
        base = self._key_uri(key)
        return f"{base}/{marker.folder}" if marker and marker.folder else base

    def is_complete(self, key: str) -> bool:
        """True if ``key`` has a valid marker.

        Raises:
            StorageError: The marker cannot be read or is not a valid one.
        """
        return self._marker(key) is not None

    def _delete_prefix(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix + "/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    def _discard(self, prefix: str) -> None:
        """Delete this writer's own folder; a failure leaves it to :meth:`clean_staging`."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._delete_prefix(prefix)
        except (BotoCoreError, ClientError) as e:
            logger.warning(
                "could not delete s3://%s/%s/ (%s); a later run will", self.bucket, prefix, e
            )

    def clean_staging(self, key: str) -> int:
        """Delete ``key``'s writer folders that its marker does not name and whose newest object
        is older than :data:`STALE_STAGING_S` (killed or failed writers).

        Returns:
            How many folders were deleted.

        Raises:
            StorageError: S3 cannot be listed.
        """
        full = self._key(key)
        removed = 0
        with _s3_errors(action=f"cleaning staging of {self._key_uri(key)}", bucket=self.bucket):
            marker = _s3_marker(self.client, self.bucket, full)
            page = self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=f"{full}/", Delimiter="/", MaxKeys=CLEAN_LIMIT
            )
            now = time.time()
            for common in page.get("CommonPrefixes", []):
                folder = common["Prefix"][len(full) + 1 :].rstrip("/")
                if not _FOLDER.match(folder) or (marker and marker.folder == folder):
                    continue
                objects = self.client.list_objects_v2(
                    Bucket=self.bucket, Prefix=common["Prefix"], MaxKeys=CLEAN_LIMIT
                ).get("Contents", [])
                newest = max((o["LastModified"].timestamp() for o in objects), default=now)
                if now - newest <= STALE_STAGING_S:
                    continue
                current = _s3_marker(self.client, self.bucket, full)  # it may have just landed
                if current and current.folder == folder:
                    continue
                self._delete_prefix(f"{full}/{folder}")
                removed += 1
        if removed:
            logger.info("removed %d stale writer folder(s) under %s", removed, self._key_uri(key))
        return removed

    @contextlib.contextmanager
    def writer(self, key: str, *, source: str = "") -> Iterator[Path]:
        """Stage in the work dir; on success upload to a folder of this writer's own, then
        publish it with the key's marker unless another writer published first.

        Raises:
            StorageError: S3 refused a request, or the local staging failed.
        """
        self.clean_staging(key)
        staging = _scratch("store")
        try:
            yield staging
            self._publish(key, staging, source=source)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _publish(self, key: str, staging: Path, *, source: str) -> None:
        full, where = self._key(key), self._key_uri(key)
        if self.is_complete(key):
            logger.info("%s is already stored; keeping the first writer's copy", where)
            return
        started = time.monotonic()
        folder = uuid.uuid4().hex
        own = f"{full}/{folder}"
        with _s3_errors(action=f"uploading to {where}", bucket=self.bucket):
            files = _listing(staging, key=key, hashes=True)
            try:
                for f in files:
                    self.client.upload_file(str(staging / f.path), self.bucket, f"{own}/{f.path}")
                files = self._with_etags(own, files)
                self.client.put_object(  # the copy KServe downloads with the files
                    Bucket=self.bucket, Key=f"{own}/{MARKER}", Body=_marker_text(files, source)
                )
            except BaseException:
                self._discard(own)
                raise
            # no discard if this fails: the marker may name the folder (else it goes stale)
            won = self._claim(key, folder, _marker_text(files, source, folder=folder))
        if not won:
            self._discard(own)
            logger.info("%s was stored by another writer first; keeping its copy", where)
            return
        logger.info(
            "uploaded %d files (%d bytes) to %s/%s in %.1fs",
            len(files),
            sum(f.size for f in files),
            where,
            folder,
            time.monotonic() - started,
        )

    def _objects(self, prefix: str, *, limit: int) -> dict[str, dict[str, Any]]:
        """``{path under prefix: listed object}`` of at most ``limit`` objects."""
        found: dict[str, dict[str, Any]] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=prefix + "/", PaginationConfig={"MaxItems": limit}
        )
        for page in pages:
            for o in page.get("Contents", []):
                found[o["Key"][len(prefix) + 1 :]] = o
        return found

    def _with_etags(self, prefix: str, files: list[StoredFile]) -> list[StoredFile]:
        """``files`` with the ETags S3 gave their objects under ``prefix``."""
        listed = self._objects(prefix, limit=len(files) + 10)
        return [
            StoredFile(f.path, f.size, f.sha256, _etag(listed.get(f.path, {}).get("ETag")))
            for f in files
        ]

    def reuse(self, key: str) -> bool:
        """True if ``key`` is complete and its objects are those its marker lists.

        Without downloading the files, the check compares each object's size and the ETag S3
        computed from its bytes at upload, recorded in the marker when it was published (any
        overwrite with other bytes changes it); old markers without ETags: sizes only. The
        sha256 of each file is checked where its bytes are read: :func:`fetch`,
        :func:`fetch_files`, :func:`fetch_like_kserve`. A folder that fails is set aside: the
        key's marker is deleted on condition that it is still the one read (``If-Match``), so a
        new writer can publish the key; the old writer folder, no longer named, goes with the
        stale ones (see :meth:`clean_staging`).

        Raises:
            StorageError: S3 cannot be read, or the marker cannot be deleted.
        """
        from botocore.exceptions import ClientError

        full, where = self._key(key), self._key_uri(key)
        with _s3_errors(action=f"checking {where}", bucket=self.bucket):
            try:
                got = self.client.get_object(Bucket=self.bucket, Key=f"{full}/{MARKER}")
            except ClientError as e:
                if _code(e) in _MISSING:
                    return False
                raise
            marker = _parse_marker(got["Body"].read(), where=where)
            data = f"{full}/{marker.folder}" if marker.folder else full
            listed = self._objects(data, limit=len(marker.files) + CLEAN_LIMIT)
        problem = _listing_problem(marker.files, listed)
        if problem is None:
            if any(f.etag is None for f in marker.files):
                logger.info("%s: its %s records no ETags; checked sizes only", where, MARKER)
            return True
        logger.warning(
            "%s: %s does not match its %s (%s); setting it aside and writing it again",
            where,
            problem[0],
            MARKER,
            problem[1],
        )
        with _s3_errors(action=f"setting aside {where}", bucket=self.bucket):
            try:
                self.client.delete_object(
                    Bucket=self.bucket, Key=f"{full}/{MARKER}", IfMatch=got["ETag"]
                )
            except ClientError as e:
                if _code(e) not in (*_MISSING, "PreconditionFailed", "412"):
                    raise  # else: another process set it aside (and maybe republished) first
        return False

    def _claim(self, key: str, folder: str, text: str) -> bool:
        """Create ``key``'s marker naming ``folder`` unless it exists; True if ours is there."""
        from botocore.exceptions import ClientError

        full = self._key(key)

        def put() -> None:
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=f"{full}/{MARKER}", Body=text, IfNoneMatch="*"
                )
            except ClientError as e:
                if _code(e) in ("PreconditionFailed", "412"):
                    return  # another writer's marker is there
                if _code(e) in ("ConditionalRequestConflict", "409"):
                    raise _ClaimConflict(
                        f"publishing {self._key_uri(key)}: another writer was publishing it at "
                        "the same moment; retry"
                    ) from e
                raise

        backoff(put, retry_on=(_ClaimConflict,), attempts=5, base_delay=0.2, what="publishing")
        # the marker decides, not the put's answer: a put retried after a lost reply answers 412
        # though it landed, and a server without atomic conditional puts may accept two
        marker = _s3_marker(self.client, self.bucket, full)
        return marker is not None and marker.folder == folder

    def check_writable(self) -> None:
        """Put and delete a probe object under the prefix."""
        from botocore.exceptions import BotoCoreError, ClientError

        probe = self._key(f".probe-{uuid.uuid4().hex}")
        try:
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
            self.client.delete_object(Bucket=self.bucket, Key=probe)
        except (BotoCoreError, ClientError) as e:
            raise _s3_error(e, action=f"writing to {self.root}", bucket=self.bucket) from e


def _etag(value: object) -> str | None:
    return value.strip('"') if isinstance(value, str) else None


def _listing_problem(
    files: list[StoredFile], listed: dict[str, dict[str, Any]]
) -> tuple[str, str] | None:
    """(file, what is wrong) for the first listed file whose object is missing or differs."""
    for f in files:
        obj = listed.get(f.path)
        if obj is None:
            return f.path, "missing"
        if int(obj.get("Size", -1)) != f.size:
            return f.path, f"size expected {f.size}, actual {obj.get('Size')}"
        actual = _etag(obj.get("ETag"))
        if f.etag is not None and actual != f.etag:
            return f.path, f"ETag expected {f.etag}, actual {actual}"
    return None


def open_store(uri: str) -> ModelStore:
    """The store at ``uri`` (``s3://bucket/prefix`` or ``file:///path``).

    Raises:
        ConfigError: Another scheme, or a bare path.
    """
    scheme = scheme_of(uri)
    if scheme == "s3":
        return S3Store(uri)
    if scheme == "file":
        return FileStore(_file_path(uri))
    raise ConfigError(
        f"model store {uri!r} is not supported: use s3://bucket/prefix (endpoint and keys from "
        f"{ENDPOINT_ENV}, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or, on one machine, "
        "file:///path"
    )


def _file_marker(folder: Path, *, uri: str) -> _Marker:
    try:
        text = (folder / MARKER).read_text()
    except (FileNotFoundError, NotADirectoryError) as e:
        raise StorageError(f"{uri} is not a complete stored folder (no {MARKER})") from e
    except OSError as e:
        raise StorageError(f"cannot read {MARKER} of {uri}: {e}") from e
    return _parse_marker(text, where=uri)


def _s3_folder_marker(client: Any, uri: str) -> tuple[str, str, _Marker]:
    """Bucket, prefix of the files, and marker of the stored folder ``uri`` (an s3:// URI)."""
    bucket, prefix = _s3_parts(uri)
    with _s3_errors(action=f"reading {uri}", bucket=bucket):
        marker = _s3_marker(client, bucket, prefix)
    if marker is None:
        raise StorageError(f"{uri} is not a complete stored folder (no {MARKER})")
    return bucket, f"{prefix}/{marker.folder}" if marker.folder else prefix, marker


def fetch(
    uri: str,
    *,
    dest: Path | None = None,
    before_check: Callable[[Path], None] | None = None,
) -> Path:
    """A local folder holding the stored folder ``uri``, checked against its marker.

    ``file://`` folders are used in place; ``s3://`` folders are downloaded into ``dest``
    (default: a new folder under :func:`work_dir`). Only the files the marker lists are read;
    every file is checked against the size and sha256 its marker records (see :func:`verify`).
    A failed download or check leaves nothing behind (``dest`` is removed if this call made it,
    else the files it wrote are; a ``file://`` folder is left as it is).

    Args:
        uri: The stored folder, ``s3://…`` or ``file://…``.
        dest: Where an ``s3://`` folder is downloaded to.
        before_check: Called with the local folder after the download and before the content
            check (e.g. a signature check that should fail first); what it raises propagates.

    Raises:
        ConfigError: An unsupported URI.
        StorageError: The folder is incomplete (no marker), its marker lists an unsafe path,
            it could not be downloaded, or a file does not match its recorded sha256
            (:class:`ContentMismatchError`).
    """
    scheme = scheme_of(uri)
    if scheme == "file":
        folder = _file_path(uri)
        files = _file_marker(folder, uri=uri).files
        if before_check is not None:
            before_check(folder)
        verify(folder, files, uri=uri)
        return folder
    if scheme != "s3":
        raise ConfigError(f"cannot fetch {uri!r}: expected an s3:// or file:// URI")
    client = s3_client()
    bucket, data, marker = _s3_folder_marker(client, uri)
    started = time.monotonic()
    made = dest is None or not dest.exists()
    target = dest or _scratch("fetch")
    with _filling(target, made=made) as written:
        _download(client, bucket, data, marker.files, target, uri=uri, written=written)
        with _s3_errors(action=f"downloading {uri}", bucket=bucket):
            written.append(target / MARKER)
            (target / MARKER).write_text(marker.local_text())
        if before_check is not None:
            before_check(target)
        verify(target, marker.files, uri=uri)
    logger.info(
        "fetched %s (%d files) in %.1fs", uri, len(marker.files), time.monotonic() - started
    )
    return target


@contextlib.contextmanager
def _filling(target: Path, *, made: bool) -> Iterator[list[Path]]:
    """Files written into ``target`` in a block (the caller appends each before writing it);
    if the block fails, nothing is left behind: ``target`` is removed when ``made`` (this fetch
    made it), else the files written are."""
    written: list[Path] = []
    try:
        yield written
    except BaseException:
        if made:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for path in written:
                path.unlink(missing_ok=True)
        raise


def _download(
    client: Any,
    bucket: str,
    data: str,
    files: list[StoredFile],
    target: Path,
    *,
    uri: str,
    written: list[Path],
) -> None:
    """Download ``files`` of the stored folder ``uri``, whose objects are under
    ``s3://bucket/data``, into ``target``; each path goes into ``written`` first."""
    with _s3_errors(action=f"downloading {uri}", bucket=bucket):
        for f in files:
            path = target / f.path
            path.parent.mkdir(parents=True, exist_ok=True)
            written.append(path)
            client.download_file(bucket, f"{data}/{f.path}", str(path))


def fetch_files(
    uri: str, names: Callable[[str], bool] | Iterable[str], dest: Path
) -> list[StoredFile]:
    """Some files of a stored folder, copied byte for byte into ``dest`` (created): those whose
    ``/``-separated path in the folder ``names`` accepts (a predicate), or those it names.

    For when :func:`fetch` would read too much (a model's tokenizer, not its weights) and
    :func:`read_file` too little (it returns text). ``uri`` is a stored folder, ``s3://…`` or
    ``file://…``, of which only files its marker lists are read (a folder without a marker is
    incomplete); or a local folder (a bare path, e.g. a model snapshot), whose files are taken
    as they are. Each copy is checked against the listed size, as :func:`fetch` checks. A failed
    fetch leaves nothing behind (``dest`` is removed if this call made it, else the files it
    wrote are).

    Returns:
        The files copied (none when nothing matched), in the order of the folder's listing.

    Raises:
        ConfigError: Another scheme, or a local path that is not a folder.
        StorageError: The stored folder is incomplete (no marker) or its marker lists an unsafe
            path, a file named in ``names`` is not in the folder, or a file could not be read,
            downloaded or written.
    """
    scheme = scheme_of(uri)
    if scheme not in ("", *STORE_SCHEMES):
        raise ConfigError(
            f"cannot fetch files of {uri!r}: expected an s3:// or file:// URI or a local folder"
        )
    client: Any = None
    bucket = data = ""
    folder = Path()
    if scheme == "s3":
        client = s3_client()
        bucket, data, marker = _s3_folder_marker(client, uri)
        listed = marker.files
    elif scheme == "file":
        folder = _file_path(uri)
        listed = _file_marker(folder, uri=uri).files
    else:
        folder = Path(uri)
        if not folder.is_dir():
            raise ConfigError(f"{uri!r} does not exist or is not a folder")
        listed = _local_files(folder, uri=uri)
    if callable(names):
        wanted = [f for f in listed if names(f.path)]
    else:
        chosen = {names} if isinstance(names, str) else set(names)
        missing = sorted(chosen - {f.path for f in listed})
        if missing:
            raise StorageError(f"{uri} has no file {missing[0]!r} (it does not list it)")
        wanted = [f for f in listed if f.path in chosen]
    made = not dest.exists()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot make {dest} for files of {uri}: {e}") from e
    with _filling(dest, made=made) as written:
        if scheme == "s3":
            _download(client, bucket, data, wanted, dest, uri=uri, written=written)
        else:
            try:
                for f in wanted:
                    (dest / f.path).parent.mkdir(parents=True, exist_ok=True)
                    written.append(dest / f.path)
                    shutil.copyfile(folder / f.path, dest / f.path)
            except OSError as e:
                raise StorageError(f"cannot copy files of {uri}: {e}") from e
        verify(dest, wanted, uri=uri)
    return wanted


def _local_files(folder: Path, *, uri: str) -> list[StoredFile]:
    """The files of a plain local folder (no marker), as a marker would list them."""
    try:
        return [
            StoredFile(p.relative_to(folder).as_posix(), p.stat().st_size)
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        ]
    except OSError as e:
        raise StorageError(f"cannot list {uri}: {e}") from e


@contextlib.contextmanager
def fetched(uri: str) -> Iterator[Path]:
    """:func:`fetch` for the duration of a block: a downloaded copy is removed afterwards (a
    ``file://`` folder is used in place and kept), so local runs do not fill the temp folder."""
    folder = fetch(uri)
    try:
        yield folder
    finally:
        if scheme_of(uri) != "file":
            shutil.rmtree(folder, ignore_errors=True)


def read_file(uri: str, name: str) -> str:
    """The text of one small file of the stored folder ``uri`` (e.g. its manifest, or
    :data:`MARKER`); only a file its marker lists is read, and checked against its sha256.

    Raises:
        StorageError: The folder is incomplete, does not list ``name``, or cannot be read;
            :class:`ContentMismatchError` when the file does not match its sha256.
    """
    scheme = scheme_of(uri)
    if scheme not in ("s3", "file"):
        raise ConfigError(f"cannot read {uri!r}: expected an s3:// or file:// URI")
    if scheme == "file":
        folder = _file_path(uri)
        marker = _file_marker(folder, uri=uri)
    else:
        client = s3_client()
        bucket, data, marker = _s3_folder_marker(client, uri)
    if name == MARKER:
        return marker.local_text()
    listed = {f.path: f for f in marker.files}
    if name not in listed:
        raise StorageError(f"{uri} has no file {name!r} (its {MARKER} does not list it)")
    if scheme == "file":
        try:
            body = (folder / name).read_bytes()
        except OSError as e:
            raise StorageError(f"cannot read {name} of {uri}: {e}") from e
    else:
        with _s3_errors(action=f"reading {name} of {uri}", bucket=bucket):
            body = client.get_object(Bucket=bucket, Key=f"{data}/{name}")["Body"].read()
    expected = listed[name].sha256
    actual = hashlib.sha256(body).hexdigest()
    if expected is not None and actual != expected:
        raise ContentMismatchError(
            f"{uri}: {name} does not match its {MARKER}: sha256 expected {expected}, actual "
            f"{actual}; {MISMATCH_FIX}"
        )
    return body.decode()


def fetch_file(uri: str) -> Path:
    """The one file of a staged file input (see :func:`stage_input`).

    Raises:
        StorageError: The input cannot be fetched, or its folder holds more than one file.
    """
    folder = fetch(uri)
    files = _listing(folder)
    if len(files) != 1:
        raise StorageError(f"{uri} holds {len(files)} files; expected one staged file")
    return folder / files[0].path


def fetch_like_kserve(uri: str, dest: Path) -> Path:
    """Download ``uri`` with KServe's own storage-initializer code (``kserve-storage``).

    This is what the storage-initializer container of an InferenceService runs before vLLM
    starts. The result is then checked against the store's marker, so files KServe's downloader
    would miss (it skips zero-byte objects, for one) fail here, not in the cluster.

    Raises:
        StorageError: The download failed or is incomplete.
    """
    from kserve_storage import Storage

    dest.mkdir(parents=True, exist_ok=True)
    source = str(_file_path(uri)) if scheme_of(uri) == "file" else uri
    started = time.monotonic()
    try:
        Storage.download(source, out_dir=str(dest))
    except Exception as e:  # kserve-storage raises many types; keep the cause
        raise StorageError(f"KServe's storage initializer could not fetch {uri}: {e}") from e
    marker = _file_marker(dest, uri=uri)
    if marker.folder:
        raise StorageError(
            f"{uri} is a store key whose files are in {uri.rstrip('/')}/{marker.folder}; serve "
            "the URI the store resolves (ModelStore.uri)"
        )
    verify(dest, marker.files, uri=uri)
    logger.info("kserve-storage fetched %s in %.1fs", uri, time.monotonic() - started)
    return dest


def digest_path(path: Path, *, files: list[Path] | None = None) -> str:
    """sha256 over the relative names and contents of a file or a folder's files (``files``:
    only these files of the folder)."""
    digest = hashlib.sha256()
    if files is None:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for f in sorted(files):
        digest.update((f.name if path.is_file() else f.relative_to(path).as_posix()).encode())
        digest.update(b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def stage_input(store: ModelStore, path: str | os.PathLike[str], *, kind: str) -> str:
    """Copy a local file or folder into the store (once per content) and return its URI.

    Task folders and calibration data travel to the pipeline's pods this way, never as paths
    of the submitting machine. A file is stored as ``<uri>/<file name>``'s folder; the returned
    URI names the folder.

    Raises:
        ConfigError: ``path`` does not exist.
        StorageError: The upload failed.
    """
    local = Path(path).expanduser().absolute()
    if not local.exists():
        raise ConfigError(f"{kind} {str(path)!r} does not exist")
    try:
        key = f"inputs/{kind}-{digest_path(local)[:DIGEST_CHARS]}"
    except OSError as e:
        raise StorageError(f"cannot read {kind} {str(path)!r}: {e}") from e
    if not store.is_complete(key):
        with store.writer(key, source=str(local)) as staging:
            try:
                if local.is_file():
                    shutil.copy2(local, staging / local.name)
                else:
                    shutil.copytree(local, staging, dirs_exist_ok=True)
            except (OSError, shutil.Error) as e:
                raise StorageError(f"cannot stage {str(path)!r} as {key!r}: {e}") from e
    return store.uri(key)


def _input_digest(uri: str, *, kind: str) -> str:
    """The content digest in a staged input's URI: ``.../<kind>-<digest>`` (on S3 possibly
    followed by the published writer folder)."""
    parts = urlsplit(uri).path.rstrip("/").split("/")
    if len(parts) > 1 and _FOLDER.match(parts[-1]) and scheme_of(uri) == "s3":
        parts.pop()
    found = re.fullmatch(rf"{re.escape(kind)}-([0-9a-f]{{{DIGEST_CHARS}}})", parts[-1])
    if not found:
        raise StorageError(
            f"{uri} is not a staged {kind} folder (.../inputs/{kind}-<digest>): its content "
            f"cannot be checked; pass the local folder and let modelgate stage it"
        )
    return found[1]


def fetch_input(uri: str, *, kind: str) -> Path:
    """A private copy of the staged input ``uri`` (see :func:`stage_input`), checked against
    the content digest in its key before anything reads it.

    Task folders hold code that lm-eval runs (``!function``), so a stored folder changed after it
    was written must not be used. Only the files its marker lists are copied; the copy is the
    caller's to change (a ``file://`` folder is copied, never used in place).

    Raises:
        ConfigError: An unsupported URI.
        StorageError: The input cannot be fetched, its URI names no ``<kind>-<digest>`` key, or
            its content does not match that digest.
    """
    expected = _input_digest(uri, kind=kind)
    if scheme_of(uri) == "file":
        source = fetch(uri)
        files = _file_marker(source, uri=uri).files
        target = _scratch("fetch")
        try:
            for f in files:
                (target / f.path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / f.path, target / f.path)
            (target / MARKER).write_text(_marker_text(files, uri))
        except OSError as e:
            shutil.rmtree(target, ignore_errors=True)
            raise StorageError(f"cannot copy {uri}: {e}") from e
    else:
        target = fetch(uri)
        files = _file_marker(target, uri=uri).files
    try:
        actual = digest_path(target, files=[target / f.path for f in files])[:DIGEST_CHARS]
    except OSError as e:
        shutil.rmtree(target, ignore_errors=True)
        raise StorageError(f"cannot read the fetched copy of {uri}: {e}") from e
    if actual != expected:
        shutil.rmtree(target, ignore_errors=True)
        raise StorageError(
            f"{uri}: content does not match the digest in its key ({kind}-{expected}, content "
            f"{kind}-{actual}): the stored folder was changed after it was written; refusing to "
            "use it. Stage the folder again from its source"
        )
    return target


#: Run parameters that may name a file or folder of the submitting machine, and what it is.
#: A task folder is always a path or a stored URI; calibration data may also be a dataset id.
LOCAL_INPUTS: dict[str, str] = {"eval_task_dir": "tasks", "calibration_data": "calibration"}


def is_local_input(name: str, value: str) -> bool:
    """Whether parameter ``name``'s ``value`` names something on this machine to upload.

    The one rule for every way a run starts (``run``, ``submit``, ``schedule``): a value with
    a URI scheme is already stored; a task folder without one is a local path; calibration data
    without one is a local path when it exists, else a dataset id.
    """
    if not value or "://" in value or name not in LOCAL_INPUTS:
        return False
    return name == "eval_task_dir" or Path(value).expanduser().exists()


def stage_local_inputs(params: Any) -> dict[str, str]:
    """Upload the local inputs of a run to its model store once per content.

    Returns:
        ``{parameter: stored URI}`` for each parameter that named something local.

    Raises:
        ConfigError: A local input does not exist, or the run has no model store to hold it
            (a redeploy: upload it yourself and pass the URI).
        StorageError: The upload failed (e.g. no S3 keys on this machine).
    """
    staged: dict[str, str] = {}
    for name, kind in LOCAL_INPUTS.items():
        value = getattr(params, name, "")
        if not is_local_input(name, value):
            continue
        store = getattr(params, "model_store", "")
        if not store:
            raise ConfigError(
                f"{name} {value!r} is a local path: upload it to your S3 store and pass its "
                "s3:// URI (a redeploy has no model_store to upload it to)"
            )
        staged[name] = stage_input(open_store(store), value, kind=kind)
        logger.info("uploaded %s to %s", value, staged[name])
    return staged
