"""The model store: where models live between steps, and where KServe fetches them from.

A release writes each model once to durable storage the cluster can read, and passes its URI
between steps; the KFP artifact store only carries small things (manifests, metrics, reports).

Stores:

* ``s3://bucket/prefix`` - any S3-protocol service (AWS, MinIO, Ceph, moto). Endpoint and keys come
  from the usual ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (and
  ``AWS_DEFAULT_REGION``); in the cluster they are mounted from a Secret, the same Secret the
  InferenceService's service account carries for KServe's storage initializer.
* ``file:///path`` - a local folder, for runs on one machine.

Layout under the store root (one folder per model, written completely or not at all)::

    <model-slug>/<commit-sha>/base/                    the downloaded snapshot
    <model-slug>/<commit-sha>/<scheme>-<fingerprint>/  a quantized candidate
    inputs/<kind>-<digest>/                            task folders, calibration data

Every folder ends with :data:`MARKER` (written last), which lists its files and sizes: a folder
without it is incomplete and is never served. No folder name is a string prefix of a sibling's,
because KServe's S3 downloader lists objects by raw string prefix and would also fetch a sibling
``base-old/`` for ``base`` (``kserve_storage.Storage._download_s3``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from modelgate.errors import ConfigError, StorageError
from modelgate.placement import WORK_DIR, WORK_DIR_ENV

logger = logging.getLogger(__name__)

MARKER = "modelgate-store.json"
#: storageUri schemes KServe's storage initializer (or the kubelet, for pvc://) can fetch.
KSERVE_SCHEMES = ("s3", "gs", "pvc", "oci", "hf")
STORE_SCHEMES = ("s3", "file")
ENDPOINT_ENV = "AWS_ENDPOINT_URL"


def work_dir() -> Path:
    """Scratch space for models: ``$MODELGATE_WORK_DIR``, else the pipeline's work volume at
    :data:`~modelgate.placement.WORK_DIR` when mounted, else the temp folder.

    With the work volume mounted, Hugging Face caches (``HF_HOME``) move onto it too, so a
    multi-GB dataset or tokenizer download does not fill the container's root disk.
    """
    configured = os.environ.get(WORK_DIR_ENV)
    if configured:
        path = Path(configured)
    elif Path(WORK_DIR).is_dir():
        path = Path(WORK_DIR)
        os.environ["HF_HOME"] = str(path / "hf")
    else:
        path = Path(tempfile.gettempdir())
    path.mkdir(parents=True, exist_ok=True)
    return path


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
    """One file of a stored folder."""

    path: str
    size: int


def _listing(folder: Path) -> list[StoredFile]:
    return [
        StoredFile(p.relative_to(folder).as_posix(), p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARKER
    ]


def _marker_text(files: list[StoredFile], source: str) -> str:
    return json.dumps(
        {
            "files": [f.__dict__ for f in files],
            "bytes": sum(f.size for f in files),
            "source": source,
            "written_at": time.time(),
        },
        indent=1,
    )


def read_marker(text: str) -> list[StoredFile]:
    """The file list of a marker.

    Raises:
        StorageError: The marker is not one modelgate wrote.
    """
    try:
        return [StoredFile(str(f["path"]), int(f["size"])) for f in json.loads(text)["files"]]
    except (ValueError, KeyError, TypeError) as e:
        raise StorageError(f"{MARKER} is not a modelgate store marker: {e}") from e


def verify(folder: Path, expected: list[StoredFile], *, uri: str) -> None:
    """Check that ``folder`` holds every expected file with its size.

    Raises:
        StorageError: Files are missing or truncated (names the first few).
    """
    problems = []
    for f in expected:
        path = folder / f.path
        if not path.is_file():
            problems.append(f"{f.path} missing")
        elif path.stat().st_size != f.size:
            problems.append(f"{f.path} has {path.stat().st_size} bytes, expected {f.size}")
    if problems:
        more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise StorageError(f"fetch of {uri} is incomplete: {'; '.join(problems[:5])}{more}")


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


class FileStore:
    """A :class:`ModelStore` in a local folder; folders are moved into place atomically."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.path = Path(root).absolute()
        self.root = self.path.as_uri()

    def uri(self, key: str) -> str:
        """``file://`` URI of ``key``."""
        return (self.path / key).as_uri()

    def is_complete(self, key: str) -> bool:
        """True if ``key`` has its marker."""
        return (self.path / key / MARKER).is_file()

    @contextlib.contextmanager
    def writer(self, key: str, *, source: str = "") -> Iterator[Path]:
        """Stage in ``<root>/.staging/`` and rename into place on success."""
        staging = self.path / ".staging" / f"{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            yield staging
            (staging / MARKER).write_text(_marker_text(_listing(staging), source))
            final = self.path / key
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
            logger.info("stored %s", final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

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


class S3Store:
    """A :class:`ModelStore` under ``s3://bucket/prefix``."""

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
        return f"{self.prefix}/{key.strip('/')}".strip("/")

    def uri(self, key: str) -> str:
        """``s3://`` URI of ``key``."""
        return f"s3://{self.bucket}/{self._key(key)}"

    def is_complete(self, key: str) -> bool:
        """True if ``key``'s marker object exists."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=f"{self._key(key)}/{MARKER}")
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _s3_error(e, action=f"reading {self.uri(key)}", bucket=self.bucket) from e
        except BotoCoreError as e:
            raise _s3_error(e, action=f"reading {self.uri(key)}", bucket=self.bucket) from e

    def _delete_prefix(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix + "/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    @contextlib.contextmanager
    def writer(self, key: str, *, source: str = "") -> Iterator[Path]:
        """Stage in the work dir; upload every file, then the marker, on success."""
        from botocore.exceptions import BotoCoreError, ClientError

        staging = Path(tempfile.mkdtemp(prefix="store-", dir=work_dir()))
        try:
            yield staging
            files = _listing(staging)
            full = self._key(key)
            started = time.monotonic()
            try:
                self._delete_prefix(full)  # a rewrite leaves no stale files behind
                for f in files:
                    self.client.upload_file(str(staging / f.path), self.bucket, f"{full}/{f.path}")
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=f"{full}/{MARKER}",
                    Body=_marker_text(files, source).encode(),
                )
            except (BotoCoreError, ClientError) as e:
                raise _s3_error(
                    e, action=f"uploading to {self.uri(key)}", bucket=self.bucket
                ) from e
            logger.info(
                "uploaded %d files (%d bytes) to %s in %.1fs",
                len(files),
                sum(f.size for f in files),
                self.uri(key),
                time.monotonic() - started,
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def check_writable(self) -> None:
        """Put and delete a probe object under the prefix."""
        from botocore.exceptions import BotoCoreError, ClientError

        probe = self._key(f".probe-{uuid.uuid4().hex}")
        try:
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
            self.client.delete_object(Bucket=self.bucket, Key=probe)
        except (BotoCoreError, ClientError) as e:
            raise _s3_error(e, action=f"writing to {self.root}", bucket=self.bucket) from e


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


def fetch(uri: str, *, dest: Path | None = None) -> Path:
    """A local folder holding the stored folder ``uri``, checked against its marker.

    ``file://`` folders are used in place; ``s3://`` folders are downloaded into ``dest``
    (default: a new folder in :func:`work_dir`).

    Raises:
        ConfigError: An unsupported URI.
        StorageError: The folder is incomplete (no marker) or could not be downloaded.
    """
    scheme = scheme_of(uri)
    if scheme == "file":
        folder = _file_path(uri)
        marker = folder / MARKER
        if not marker.is_file():
            raise StorageError(f"{uri} is not a complete stored folder (no {MARKER})")
        verify(folder, read_marker(marker.read_text()), uri=uri)
        return folder
    if scheme != "s3":
        raise ConfigError(f"cannot fetch {uri!r}: expected an s3:// or file:// URI")
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = _s3_parts(uri)
    client = s3_client()
    target = dest or Path(tempfile.mkdtemp(prefix="fetch-", dir=work_dir()))
    started = time.monotonic()
    try:
        body = client.get_object(Bucket=bucket, Key=f"{prefix}/{MARKER}")["Body"].read()
        files = read_marker(body.decode())
        for f in files:
            path = target / f.path
            path.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, f"{prefix}/{f.path}", str(path))
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise StorageError(f"{uri} is not a complete stored folder (no {MARKER})") from e
        raise _s3_error(e, action=f"downloading {uri}", bucket=bucket) from e
    except BotoCoreError as e:
        raise _s3_error(e, action=f"downloading {uri}", bucket=bucket) from e
    (target / MARKER).write_bytes(body)
    verify(target, files, uri=uri)
    logger.info("fetched %s (%d files) in %.1fs", uri, len(files), time.monotonic() - started)
    return target


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
    """The text of one small file of the stored folder ``uri`` (e.g. its manifest).

    Raises:
        StorageError: The file cannot be read.
    """
    scheme = scheme_of(uri)
    if scheme == "file":
        try:
            return (_file_path(uri) / name).read_text()
        except OSError as e:
            raise StorageError(f"cannot read {name} of {uri}: {e}") from e
    if scheme != "s3":
        raise ConfigError(f"cannot read {uri!r}: expected an s3:// or file:// URI")
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = _s3_parts(uri)
    try:
        body = s3_client().get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"].read()
    except (BotoCoreError, ClientError) as e:
        raise _s3_error(e, action=f"reading {name} of {uri}", bucket=bucket) from e
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
    marker = dest / MARKER
    if not marker.is_file():
        raise StorageError(f"{uri} has no {MARKER}: it is not a complete model folder")
    verify(dest, read_marker(marker.read_text()), uri=uri)
    logger.info("kserve-storage fetched %s in %.1fs", uri, time.monotonic() - started)
    return dest


def digest_path(path: Path) -> str:
    """sha256 over the relative names and contents of a file or a folder's files."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
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
    key = f"inputs/{kind}-{digest_path(local)[:16]}"
    if not store.is_complete(key):
        with store.writer(key, source=str(local)) as staging:
            if local.is_file():
                shutil.copy2(local, staging / local.name)
            else:
                shutil.copytree(local, staging, dirs_exist_ok=True)
    return store.uri(key)


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
