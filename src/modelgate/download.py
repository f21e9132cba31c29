"""Download step: fetch a model snapshot from the Hugging Face Hub (or a mirror) at an exact commit.

The requested ``revision`` (branch, tag or sha) is resolved to the commit sha first, and the
snapshot is downloaded at that sha, so a moving branch cannot change the files between the
metadata call and the download. A manifest with every file's size and sha256 is written beside
the weights and returned.

Verified bytes: every downloaded file is checked against the Hub's own metadata at the pinned
commit (``HfApi.get_paths_info``): the sha256 of an LFS file, the git blob id
(``sha1(b"blob <size>\0" + content)``) of the others. A mismatch fails the download with a
:class:`~modelgate.errors.DownloadError` naming the file, the expected and the actual hash; a
file the server gives no hash for is checked by its size, with a warning saying so.

Resumable downloads: each file is fetched with ``Range`` requests into
``<target>/.cache/modelgate/<path>.incomplete``, which a failed attempt keeps, so a retry into
the same folder transfers only the missing bytes (huggingface_hub 1.33 cannot do that across
attempts: ``file_download._download_to_tmp_and_move`` writes a process-unique temporary file and
deletes it on failure, see huggingface_hub PR #4228; its ``http_get`` resumes within one attempt
only). :func:`download_to_store` downloads into ``work_dir()/modelgate-downloads/<key>``, one
folder per commit and file selection, so a retried step of the same commit resumes there.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from modelgate.constants import HF_DEFAULT_ENDPOINT, HF_ENDPOINT_ENV, HF_TOKEN_ENV
from modelgate.credentials import (
    ALLOW_INSECURE_TOKEN_ENV,
    insecure_allowed,
    is_secure_transport,
    redact_url,
    token_for,
)
from modelgate.errors import ConfigError, DownloadError, StorageError, UnsafeWeightsError
from modelgate.naming import base_key, recipe_fingerprint
from modelgate.signing import SignatureInfo, sign_if_configured, stored_signature_info
from modelgate.storage import (
    clean_staging,
    open_store,
    read_file,
    remember_sha256,
    reusable,
    scheme_of,
    work_dir,
)

logger = logging.getLogger(__name__)

MANIFEST_NAME = "modelgate-manifest.json"
SAFE_WEIGHT_PATTERNS = ("*.safetensors",)
PICKLE_WEIGHT_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
#: Any one of these at the top of the repository is a tokenizer lm-eval and vLLM can load.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
    "tokenizer.tiktoken",
)
#: Files whose ``auto_map`` asks transformers to import code shipped in the repository.
CODE_CONFIG_FILES = ("config.json", "tokenizer_config.json")
#: The safetensors format's own cap on its JSON header (``safetensors`` ``MAX_HEADER_SIZE``).
SAFETENSORS_MAX_HEADER = 100_000_000
#: Under :func:`~modelgate.storage.work_dir`: downloads of :func:`download_to_store` in progress,
#: one folder per commit and file selection (kept when an attempt fails, for the retry).
DOWNLOADS_DIR = "modelgate-downloads"
#: Under a download's target folder: partial files (``<path>.incomplete``) and the lock.
PARTIAL_DIR = ".cache/modelgate"
#: Files downloaded at once.
DOWNLOAD_WORKERS = 8
#: Paths per ``get_paths_info`` request.
PATHS_INFO_BATCH = 100


def hub_token(
    endpoint: str, token: str | None = None, *, allow_insecure: bool | None = None
) -> str | bool | None:
    """The ``token=`` argument of huggingface_hub calls to ``endpoint``.

    ``token`` (default ``$HF_TOKEN``) travels only to ``https://`` endpoints and loopback
    ``http://`` mirrors unless ``allow_insecure`` (or ``$MODELGATE_ALLOW_INSECURE_TOKEN=1``);
    otherwise it is dropped with a warning (see :func:`modelgate.credentials.token_for`).

    Returns:
        The token; None (no token: huggingface_hub may use its own login, https/loopback only);
        or False (send none, not even huggingface_hub's stored login).
    """
    token = token or os.environ.get(HF_TOKEN_ENV) or None
    if is_secure_transport(endpoint) or insecure_allowed(allow_insecure):
        return token
    return token_for(endpoint, token, allow_insecure=False, what=HF_TOKEN_ENV) or False


@dataclass
class FileEntry:
    """One downloaded file."""

    path: str
    size: int
    sha256: str


@dataclass
class DownloadManifest:
    """What was downloaded, from where, at which commit."""

    repo_id: str
    revision: str
    commit_sha: str
    endpoint: str
    files: list[FileEntry] = field(default_factory=list)
    downloaded_at: float = 0.0
    seconds: float = 0.0

    @property
    def total_bytes(self) -> int:
        """Sum of all file sizes."""
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DownloadManifest:
        """Inverse of :meth:`to_dict`."""
        files = [FileEntry(**f) for f in data.get("files", [])]
        return cls(**{**data, "files": files})


def _matches(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(Path(name).name, p) for p in patterns)


def check_weight_formats(filenames: list[str], *, allow_pickle: bool = False) -> list[str]:
    """Decide which pickle files to skip, refusing pickle-only repositories.

    Args:
        filenames: Every file in the repository at the resolved commit.
        allow_pickle: Accept ``*.bin``/``*.pt`` weights when no safetensors exist.

    Returns:
        Extra ignore patterns (the pickle formats when safetensors are present).

    Raises:
        UnsafeWeightsError: Only pickle weights exist and ``allow_pickle`` is False.
        ConfigError: The repository has no weights at all.
    """
    safe = [f for f in filenames if _matches(f, SAFE_WEIGHT_PATTERNS)]
    pickled = [f for f in filenames if _matches(f, PICKLE_WEIGHT_PATTERNS)]
    if safe:
        return [] if allow_pickle else list(PICKLE_WEIGHT_PATTERNS)
    if pickled:
        if allow_pickle:
            logger.warning("loading pickle weights %s: only do this for trusted repos", pickled)
            return []
        raise UnsafeWeightsError(
            f"the repository only has pickle weights ({', '.join(pickled[:5])}); pickle files "
            "can run arbitrary code when loaded. Use a repository with *.safetensors weights, "
            "or pass allow_pickle=True (CLI: --allow-pickle) if you trust the source."
        )
    raise ConfigError(
        f"no model weights (*.safetensors or pickle) found among {len(filenames)} files; "
        "check repo_id/revision and allow_patterns"
    )


def check_tokenizer(filenames: list[str], *, repo: str) -> None:
    """Refuse a repository without tokenizer files (lm-eval and vLLM both need one).

    Raises:
        ConfigError: None of :data:`TOKENIZER_FILES` is among ``filenames``.
    """
    top = {f for f in filenames if "/" not in f}
    if not top & set(TOKENIZER_FILES):
        raise ConfigError(
            f"{repo} has no tokenizer: none of {', '.join(TOKENIZER_FILES)} at its top level "
            "(or allow_patterns filtered them out). lm-eval and vLLM need the tokenizer: use a "
            "repository that ships it"
        )


def remote_code_entries(configs: dict[str, dict]) -> list[str]:
    """``file: auto_map key -> class`` for every custom-code entry in the given configs."""
    found = []
    for name, config in configs.items():
        auto_map = config.get("auto_map") if isinstance(config, dict) else None
        if isinstance(auto_map, dict):
            found += [f"{name}: {key} -> {value}" for key, value in sorted(auto_map.items())]
    return found


def check_remote_code(configs: dict[str, dict], *, repo: str, allow_remote_code: bool) -> None:
    """Refuse a repository whose configs ask for custom code, unless explicitly allowed.

    modelgate never runs repository code (``trust_remote_code`` stays off everywhere); allowing
    it only says the model also loads with transformers' and vLLM's built-in classes.

    Raises:
        UnsafeWeightsError: ``auto_map`` entries and ``allow_remote_code`` is False.
    """
    entries = remote_code_entries(configs)
    if entries and not allow_remote_code:
        raise UnsafeWeightsError(
            f"{repo} declares custom code ({'; '.join(entries[:3])}); modelgate never runs "
            "repository code. If the model also loads with transformers' built-in classes, pass "
            "allow_remote_code=True (CLI: --allow-remote-code); otherwise pick another repository"
        )
    if entries:
        logger.warning("%s declares custom code %s; it will not be run", repo, entries)


def check_safetensors(path: Path) -> None:
    """Check that a safetensors file holds all the bytes its header describes.

    The JSON header is read only when its declared length is at most
    :data:`SAFETENSORS_MAX_HEADER` (100 MB, the format's own cap).

    Raises:
        DownloadError: The file is shorter (or longer) than its header says: truncated; or its
            header claims more than 100 MB.
    """
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if header_len > SAFETENSORS_MAX_HEADER:
                raise DownloadError(
                    f"{path} is not a valid safetensors file: its header claims {header_len} "
                    f"bytes, more than the format's cap of {SAFETENSORS_MAX_HEADER} bytes "
                    "(100 MB); the repository is broken or hostile, pick another one"
                )
            if header_len <= 0 or 8 + header_len > size:
                raise ValueError(f"header of {header_len} bytes in a {size}-byte file")
            header = json.loads(fh.read(header_len))
        end = max(
            (t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0
        )
    except (ValueError, KeyError, TypeError) as e:
        raise DownloadError(
            f"{path.name} is not a readable safetensors file ({e}): truncated?"
        ) from e
    if 8 + header_len + end != size:
        raise DownloadError(
            f"{path.name} is truncated: its header describes {8 + header_len + end} bytes, the "
            f"file has {size}; the download was cut short (retry it) or the repository is broken"
        )


def sha256_file(path: Path, *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(path: Path, *, git: bool, chunk_size: int = 1 << 20) -> tuple[str, str | None]:
    """Hex sha256 of a file and, with ``git``, its git blob id
    (``sha1(b"blob <size>\0" + content)``), in one read."""
    sha256 = hashlib.sha256()
    blob = None
    if git:
        blob = hashlib.sha1(usedforsecurity=False)
        blob.update(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            sha256.update(chunk)
            if blob is not None:
                blob.update(chunk)
    return sha256.hexdigest(), blob.hexdigest() if blob is not None else None


@dataclass(frozen=True)
class ExpectedFile:
    """What the Hub says one file at the pinned commit is (None: it did not say)."""

    path: str
    size: int | None = None
    sha256: str | None = None  # LFS files
    blob_id: str | None = None  # git blob id, for files stored in git itself


def hub_file_metadata(snapshot: Snapshot, *, token: str | bool | None) -> dict[str, ExpectedFile]:
    """Size and hash of each file of ``snapshot`` from the Hub's metadata at its commit.

    One ``paths-info`` request per :data:`PATHS_INFO_BATCH` files (``HfApi.get_paths_info``);
    an LFS file's ``lfs.sha256`` is its content hash, another file's ``oid`` is its git blob id.

    Raises:
        DownloadError: The metadata could not be read.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=snapshot.endpoint, token=token)
    found: dict[str, ExpectedFile] = {}
    files = sorted(snapshot.files)
    for start in range(0, len(files), PATHS_INFO_BATCH):
        try:
            infos = api.get_paths_info(
                snapshot.repo_id,
                files[start : start + PATHS_INFO_BATCH],
                revision=snapshot.commit_sha,
            )
        except (HfHubHTTPError, OSError) as e:
            raise DownloadError(
                f"could not read the file hashes of {snapshot.repo_id}@{snapshot.commit_sha} "
                f"from {redact_url(snapshot.endpoint)}: {_first_line(e)}"
            ) from e
        for info in infos:
            if not isinstance(info, RepoFile):
                continue
            lfs = info.lfs
            found[info.path] = ExpectedFile(
                path=info.path,
                size=_int(lfs.size if lfs else info.size),
                sha256=_hex(lfs.sha256 if lfs else None, 64),
                blob_id=None if lfs else _hex(info.blob_id, 40),
            )
    return found


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def _hex(value: object, length: int) -> str | None:
    if isinstance(value, str) and len(value) == length:
        with contextlib.suppress(ValueError):
            int(value, 16)
            return value.lower()
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def check_file(path: Path, expected: ExpectedFile, *, where: str) -> str:
    """Check a downloaded file against the Hub's metadata and return its sha256.

    A file without a hash in the metadata is checked by its size, with a warning.

    Raises:
        DownloadError: The size or hash differs (names the file, expected and actual).
    """
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        raise DownloadError(
            f"{expected.path} from {where}: size expected {expected.size}, actual {size}; "
            "retry the download (the file is fetched again)"
        )
    sha256, blob = file_hashes(path, git=expected.sha256 is None and expected.blob_id is not None)
    for kind, want, got in (
        ("sha256", expected.sha256, sha256),
        ("git blob id", expected.blob_id, blob),
    ):
        if want is not None and got != want:
            raise DownloadError(
                f"{expected.path} from {where} does not match the Hub's metadata: {kind} "
                f"expected {want}, actual {got}; the mirror or the connection altered it, "
                "retry or use another endpoint"
            )
    if expected.sha256 is None and expected.blob_id is None:
        logger.warning(
            "%s gives no hash for %s: checked its size only (%s)",
            where,
            expected.path,
            "no size either" if expected.size is None else f"{expected.size} bytes",
        )
    return sha256


def _fetch_file(
    snapshot: Snapshot, name: str, target: Path, *, size: int | None, headers: dict[str, str]
) -> int:
    """Download ``name`` into ``target`` unless it is there, resuming its partial file.

    Returns:
        The bytes this call transferred.

    Raises:
        DownloadError: The transfer failed (names the file and the redacted endpoint; the
            partial file is kept for the retry).
    """
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get

    final = target / name
    if final.is_file():
        return 0  # fetched by an earlier attempt; checked with the others
    partial = target / PARTIAL_DIR / f"{name}.incomplete"
    where = redact_url(snapshot.endpoint)
    try:
        partial.parent.mkdir(parents=True, exist_ok=True)
        have = partial.stat().st_size if partial.is_file() else 0
        if size is not None and have > size:
            partial.unlink()
            have = 0
        if have:
            logger.info("resuming %s at byte %d of %s", name, have, size)
        url = hf_hub_url(
            snapshot.repo_id, name, revision=snapshot.commit_sha, endpoint=snapshot.endpoint
        )
        with partial.open("ab") as fh:
            # http_get asks for ``Range: bytes=<have>-`` and rewinds if the server ignores it
            # (huggingface_hub file_download.http_get); it retries dropped reads in-process
            http_get(
                url,
                fh,
                resume_size=have,
                headers=headers,
                expected_size=size,
                displayed_filename=name,
            )
            done = fh.tell()
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, final)
    except Exception as e:  # httpx, HfHubHTTPError, OSError: all name the file and endpoint
        kept = partial.stat().st_size if partial.is_file() else 0
        if size is not None and kept > size:
            partial.unlink(missing_ok=True)
            kept = 0
        message = _first_line(e).replace(snapshot.endpoint, where)
        raise DownloadError(
            f"download of {name} from {where} failed ({message}); retry the step: it resumes "
            f"from the {kept} bytes kept"
        ) from e
    return done - have


def build_manifest(
    target_dir: Path, *, repo_id: str, revision: str, commit_sha: str, endpoint: str
) -> DownloadManifest:
    """Hash every file under ``target_dir`` (skipping caches and the manifest itself)."""
    entries = []
    for path in sorted(p for p in target_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(target_dir).as_posix()
        if rel == MANIFEST_NAME or rel.startswith(".cache/") or "/.cache/" in rel:
            continue
        entries.append(FileEntry(path=rel, size=path.stat().st_size, sha256=sha256_file(path)))
    return DownloadManifest(
        repo_id=repo_id,
        revision=revision,
        commit_sha=commit_sha,
        endpoint=endpoint,
        files=entries,
        downloaded_at=time.time(),
    )


@dataclass
class Snapshot:
    """A repository revision resolved to its commit, and the files a download will fetch."""

    repo_id: str
    revision: str
    commit_sha: str
    endpoint: str
    files: list[str]
    allow_patterns: list[str] | None = None
    ignore_patterns: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """Identifies the file selection, for store keys."""
        return recipe_fingerprint(allow=self.allow_patterns, ignore=sorted(self.ignore_patterns))


def resolve_snapshot(
    repo_id: str,
    *,
    revision: str = "main",
    allow_patterns: list[str] | None = None,
    ignore_patterns: list[str] | None = None,
    allow_pickle: bool = False,
    allow_remote_code: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
    allow_insecure_token: bool | None = None,
) -> Snapshot:
    """Resolve ``revision`` to a commit and decide which files to download.

    Only metadata is read: the file listing, and ``config.json``/``tokenizer_config.json`` to
    look for custom code. Everything knowable from them is checked here, before any weight is
    fetched: weight formats, a tokenizer, custom code.

    ``token`` (default ``$HF_TOKEN``) is sent only to an ``https://`` endpoint or a loopback
    ``http://`` mirror, unless ``allow_insecure_token`` (or ``$MODELGATE_ALLOW_INSECURE_TOKEN=1``):
    see :func:`hub_token`.

    Raises:
        ConfigError: Empty repo id, no weights or no tokenizer in the repository.
        UnsafeWeightsError: Pickle-only weights without ``allow_pickle``, or custom code
            without ``allow_remote_code``.
        DownloadError: The hub or mirror could not be reached, the repo or revision is unknown,
            or the repository is gated and no (valid) token was given.
    """
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if not repo_id.strip():
        raise ConfigError("repo_id is empty; pass a Hub id such as 'org/model'")
    endpoint = (endpoint or os.environ.get(HF_ENDPOINT_ENV) or HF_DEFAULT_ENDPOINT).rstrip("/")
    configured = token or os.environ.get(HF_TOKEN_ENV) or None
    sent = hub_token(endpoint, configured, allow_insecure=allow_insecure_token)
    where = redact_url(endpoint)
    api = HfApi(endpoint=endpoint, token=sent)
    try:
        info = api.model_info(repo_id, revision=revision)
    except GatedRepoError as e:
        if configured and not sent:
            how = (
                f"HF_TOKEN was not sent over plain http to {where}: use an https:// endpoint or "
                f"set {ALLOW_INSECURE_TOKEN_ENV}=1"
            )
        elif sent:
            how = "the token has no access: request it on the model page"
        else:
            how = "set HF_TOKEN"
        raise DownloadError(
            f"repository {repo_id!r} is gated: {how} (in the cluster: the secret named by "
            "hf_token_secret, key token)"
        ) from e
    except RepositoryNotFoundError as e:
        # some mirrors answer an unknown revision like an unknown repository
        raise DownloadError(
            f"repository {repo_id!r} (revision {revision!r}) not found at {where}; check both, "
            "and set HF_TOKEN if the repository is gated or private"
        ) from e
    except RevisionNotFoundError as e:
        raise DownloadError(f"revision {revision!r} not found in {repo_id!r}") from e
    except (HfHubHTTPError, OSError) as e:
        raise DownloadError(f"could not read {repo_id}@{revision} from {where}: {e}") from e
    if not info.sha:
        raise DownloadError(f"{where} returned no commit sha for {repo_id}@{revision}")
    filenames = [s.rfilename for s in (info.siblings or [])]
    if allow_patterns:
        filenames = [f for f in filenames if _matches(f, allow_patterns)]
    if ignore_patterns:
        filenames = [f for f in filenames if not _matches(f, ignore_patterns)]
    extra_ignore = check_weight_formats(filenames, allow_pickle=allow_pickle)
    check_tokenizer(filenames, repo=f"{repo_id}@{revision}")
    configs: dict[str, dict] = {}
    for name in CODE_CONFIG_FILES:
        if name in filenames:
            try:
                path = hf_hub_download(
                    repo_id, name, revision=info.sha, endpoint=endpoint, token=sent
                )
                configs[name] = json.loads(Path(path).read_text())
            except (HfHubHTTPError, OSError, ValueError) as e:
                raise DownloadError(f"could not read {name} of {repo_id}@{info.sha}: {e}") from e
    check_remote_code(configs, repo=f"{repo_id}@{revision}", allow_remote_code=allow_remote_code)
    return Snapshot(
        repo_id=repo_id,
        revision=revision,
        commit_sha=info.sha,
        endpoint=endpoint,
        files=[f for f in filenames if not _matches(f, extra_ignore)],
        allow_patterns=list(allow_patterns) if allow_patterns else None,
        ignore_patterns=list(ignore_patterns or []) + extra_ignore,
    )


def download_snapshot(
    snapshot: Snapshot,
    *,
    target_dir: str | os.PathLike[str],
    token: str | None = None,
    allow_insecure_token: bool | None = None,
) -> DownloadManifest:
    """Download a resolved snapshot at its commit into ``target_dir`` and write its manifest.

    ``token`` (default ``$HF_TOKEN``) travels as in :func:`hub_token`.

    Every file is checked against the Hub's metadata at the commit (see the module docstring);
    a file that fails is deleted, so a retry fetches it again. A failed attempt keeps what it
    fetched (whole files, and partial ones under ``.cache/modelgate``): a retry into the same
    ``target_dir`` transfers only the missing bytes.

    Raises:
        DownloadError: A file could not be fetched (names the file and the redacted endpoint),
            does not match the Hub's hash or size, or no file was downloaded.
    """
    from huggingface_hub.utils import build_hf_headers

    target = Path(target_dir)
    target.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    repo_id, commit_sha = snapshot.repo_id, snapshot.commit_sha
    where = redact_url(snapshot.endpoint)
    logger.info(
        "downloading %s@%s (commit %s) from %s", repo_id, snapshot.revision, commit_sha, where
    )
    sent = hub_token(snapshot.endpoint, token, allow_insecure=allow_insecure_token)
    expected = hub_file_metadata(snapshot, token=sent)
    for name in snapshot.files:
        if name not in expected:
            logger.warning("%s lists no metadata for %s: nothing to check it against", where, name)
    headers = build_hf_headers(token=sent)
    transferred = _fetch_all(snapshot, target, expected=expected, headers=headers)
    entries = []
    for name in sorted(snapshot.files):
        path = target / name
        try:
            sha256 = check_file(path, expected.get(name, ExpectedFile(name)), where=where)
        except DownloadError:
            path.unlink(missing_ok=True)  # the retry fetches it again
            raise
        entries.append(FileEntry(path=name, size=path.stat().st_size, sha256=sha256))
    shutil.rmtree(target / ".cache", ignore_errors=True)  # partial files, lock
    for weights in sorted(target.rglob("*.safetensors")):
        check_safetensors(weights)
    if not entries:
        raise DownloadError(f"no files were downloaded for {repo_id}@{commit_sha}")
    manifest = DownloadManifest(
        repo_id=repo_id,
        revision=snapshot.revision,
        commit_sha=commit_sha,
        endpoint=where,
        files=entries,
        downloaded_at=time.time(),
    )
    manifest.seconds = round(time.monotonic() - started, 3)
    logger.info("transferred %d bytes for %s@%s", transferred, repo_id, commit_sha)
    (target / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2))
    logger.info(
        "downloaded %d files (%d bytes) in %.1fs",
        len(manifest.files),
        manifest.total_bytes,
        manifest.seconds,
    )
    return manifest


def _fetch_all(
    snapshot: Snapshot,
    target: Path,
    *,
    expected: dict[str, ExpectedFile],
    headers: dict[str, str],
) -> int:
    """Fetch every file of ``snapshot`` into ``target``, :data:`DOWNLOAD_WORKERS` at once.

    Returns:
        The bytes transferred.

    Raises:
        DownloadError: The first file that failed (the others finish or are not started).
    """
    names = sorted(snapshot.files, key=lambda n: -(expected.get(n, ExpectedFile(n)).size or 0))
    with ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS) as pool:
        futures = [
            pool.submit(
                _fetch_file,
                snapshot,
                name,
                target,
                size=expected.get(name, ExpectedFile(name)).size,
                headers=headers,
            )
            for name in names
        ]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            future.cancel()  # not started yet: left for the retry
    total = 0
    for future in futures:
        if not future.cancelled():
            total += future.result()  # raises the first failure
    failed = [f for f in futures if f.cancelled()]
    if failed:
        raise DownloadError(f"download of {snapshot.repo_id}@{snapshot.commit_sha} stopped")
    return total


def download_model(
    repo_id: str,
    *,
    target_dir: str | os.PathLike[str],
    revision: str = "main",
    allow_patterns: list[str] | None = None,
    ignore_patterns: list[str] | None = None,
    allow_pickle: bool = False,
    allow_remote_code: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
    allow_insecure_token: bool | None = None,
) -> DownloadManifest:
    """Download a model repository at an exact commit and write its manifest.

    Args:
        repo_id: Hub repository id, e.g. ``"meta-llama/Llama-3.2-1B-Instruct"``.
        target_dir: Directory the files land in (created if missing).
        revision: Branch, tag or commit sha; resolved to the commit sha before downloading.
        allow_patterns: Only download files matching these globs.
        ignore_patterns: Skip files matching these globs.
        allow_pickle: Accept pickle-only weights (see :func:`check_weight_formats`).
        allow_remote_code: Accept configs that declare custom code (see
            :func:`check_remote_code`).
        endpoint: Hub or mirror URL; defaults to ``$HF_ENDPOINT`` then the public hub.
        token: Access token; defaults to ``$HF_TOKEN``. Sent only to ``https://`` or loopback
            endpoints (see :func:`hub_token`).
        allow_insecure_token: Send the token over plain ``http://`` to other hosts too; None
            reads ``$MODELGATE_ALLOW_INSECURE_TOKEN``.

    Returns:
        The manifest, also written to ``<target_dir>/modelgate-manifest.json``.

    Raises:
        ConfigError: Empty repo id, or no weights in the repository.
        UnsafeWeightsError: Pickle-only weights without ``allow_pickle``.
        DownloadError: The hub or mirror could not be reached, or the repo/revision is unknown.
    """
    snapshot = resolve_snapshot(
        repo_id,
        revision=revision,
        allow_patterns=allow_patterns,
        ignore_patterns=ignore_patterns,
        allow_pickle=allow_pickle,
        allow_remote_code=allow_remote_code,
        endpoint=endpoint,
        token=token,
        allow_insecure_token=allow_insecure_token,
    )
    return download_snapshot(
        snapshot, target_dir=target_dir, token=token, allow_insecure_token=allow_insecure_token
    )


@dataclass
class StoredModel:
    """A model folder in the model store."""

    uri: str
    manifest: DownloadManifest
    reused: bool
    #: The stored folder's signature (:mod:`modelgate.signing`); unsigned when signing is off.
    signature: SignatureInfo = field(default_factory=lambda: SignatureInfo(signed=False))


@contextlib.contextmanager
def _download_folder(folder: Path) -> Iterator[Path]:
    """``folder`` for one download at a time: a second process downloading the same commit
    and selection meanwhile gets a private folder next to it (it resumes nothing)."""
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / PARTIAL_DIR / "lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            private = folder.with_name(f"{folder.name}-{os.getpid()}-{time.time_ns()}")
            logger.info("%s is in use by another download; downloading into %s", folder, private)
            try:
                private.mkdir(parents=True)
                yield private
            finally:
                shutil.rmtree(private, ignore_errors=True)
            return
        yield folder


def _link_into(staging: Path, dest: Path, manifest: DownloadManifest) -> None:
    """Put the checked files of ``staging`` and the manifest into the store writer's ``dest``:
    hard links where both are on one file system (no copy), else copies; each file's verified
    sha256 is recorded for the store's marker (see :func:`modelgate.storage.remember_sha256`).

    Raises:
        StorageError: A file cannot be linked or copied.
    """
    for entry in manifest.files:
        source, target = staging / entry.path, dest / entry.path
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        except OSError as e:
            raise StorageError(f"cannot put {entry.path} into the store's staging: {e}") from e
    remember_sha256((dest / f.path, f.sha256) for f in manifest.files)
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2))


def _forget_staging(staging: Path, uri: str, manifest: DownloadManifest) -> None:
    """Remove the download folder once stored. Removing a hard link changes the ctime of the
    stored file it shares, so a ``file://`` store's files that are still those links (same
    inode) get their digests recorded again; other writers' files are left to be hashed."""
    stored = _file_folder(uri) if scheme_of(uri) == "file" else None
    inodes = {}
    if stored is not None:
        for entry in manifest.files:
            with contextlib.suppress(OSError):
                inodes[entry.path] = (staging / entry.path).stat().st_ino
    shutil.rmtree(staging, ignore_errors=True)
    if stored is None:
        return
    ours = []
    for entry in manifest.files:
        with contextlib.suppress(OSError):
            if (stored / entry.path).stat().st_ino == inodes.get(entry.path):
                ours.append((stored / entry.path, entry.sha256))
    remember_sha256(ours)


def _file_folder(uri: str) -> Path:
    """The local folder of a ``file://`` URI."""
    from urllib.parse import unquote, urlsplit

    return Path(unquote(urlsplit(uri).path))


def download_to_store(
    repo_id: str,
    *,
    store: str,
    revision: str = "main",
    allow_patterns: list[str] | None = None,
    ignore_patterns: list[str] | None = None,
    allow_pickle: bool = False,
    allow_remote_code: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
    allow_insecure_token: bool | None = None,
) -> StoredModel:
    """Download a repository at an exact commit into the model store, once.

    The folder's key holds the commit sha and a fingerprint of the file selection, so a
    re-run of the same commit reuses what is stored (a moving branch never does: it resolves
    to a new sha). Only a completely written folder counts, and only after its content checks
    against its marker (:func:`modelgate.storage.reusable`); a corrupt one is set aside and
    downloaded again. The download goes through ``work_dir()/modelgate-downloads/<key>``, kept
    when it fails, so a retry of the same commit fetches only what is missing; every file is
    checked against the Hub's hashes before it is stored (see the module docstring).

    Args:
        repo_id: Hub repository id.
        store: Model store URI (``s3://bucket/prefix`` or ``file:///path``).
        revision: Branch, tag or commit sha.
        allow_patterns: Only download files matching these globs.
        ignore_patterns: Skip files matching these globs.
        allow_pickle: Accept pickle-only weights.
        allow_remote_code: Accept configs that declare custom code (never run).
        endpoint: Hub or mirror URL.
        token: Access token; defaults to ``$HF_TOKEN``. Sent only to ``https://`` or loopback
            endpoints (see :func:`hub_token`).
        allow_insecure_token: Send the token over plain ``http://`` to other hosts too; None
            reads ``$MODELGATE_ALLOW_INSECURE_TOKEN``.

    The folder is signed before it is published when a signing key is configured
    (:func:`modelgate.signing.sign_if_configured`).

    Returns:
        Where the model is, its manifest, whether it was already stored, and its signature.

    Raises:
        ConfigError: Bad repo id or store URI, no weights, or an unreadable signing key.
        UnsafeWeightsError: Pickle-only weights without ``allow_pickle``.
        DownloadError: The hub could not be read, a file could not be fetched (names the file
            and the endpoint), or a file does not match the Hub's hash.
        SignatureError: Signing failed (nothing is stored).
        StorageError: The store could not be read or written.
    """
    model_store = open_store(store)
    snapshot = resolve_snapshot(
        repo_id,
        revision=revision,
        allow_patterns=allow_patterns,
        ignore_patterns=ignore_patterns,
        allow_pickle=allow_pickle,
        allow_remote_code=allow_remote_code,
        endpoint=endpoint,
        token=token,
        allow_insecure_token=allow_insecure_token,
    )
    key = base_key(repo_id, snapshot.commit_sha, fingerprint=snapshot.fingerprint)
    if reusable(model_store, key):  # content checked; a corrupt folder is set aside
        uri = model_store.uri(key)
        manifest = DownloadManifest.from_dict(json.loads(read_file(uri, MANIFEST_NAME)))
        logger.info("%s@%s is already stored at %s", repo_id, snapshot.commit_sha, uri)
        return StoredModel(
            uri=uri, manifest=manifest, reused=True, signature=stored_signature_info(uri)
        )
    parent = work_dir() / DOWNLOADS_DIR
    clean_staging(parent)
    with _download_folder(parent / key.replace("/", "--")) as staging:
        manifest = download_snapshot(
            snapshot, target_dir=staging, token=token, allow_insecure_token=allow_insecure_token
        )
        with model_store.writer(
            key, source=f"{redact_url(snapshot.endpoint)}/{repo_id}@{snapshot.commit_sha}"
        ) as d:
            _link_into(staging, d, manifest)
            sign_if_configured(d)  # before the folder is published; the signature lives in it
        uri = model_store.uri(key)  # another writer's copy if it published first
        _forget_staging(staging, uri, manifest)
    return StoredModel(
        uri=uri, manifest=manifest, reused=False, signature=stored_signature_info(uri)
    )
