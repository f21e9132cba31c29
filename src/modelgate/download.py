"""Download step: fetch a model snapshot from the Hugging Face Hub (or a mirror) at an exact commit.

The requested ``revision`` (branch, tag or sha) is resolved to the commit sha first, and the
snapshot is downloaded at that sha, so a moving branch cannot change the files between the
metadata call and the download. A manifest with every file's size and sha256 is written beside
the weights and returned.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import shutil
import time
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
from modelgate.errors import ConfigError, DownloadError, UnsafeWeightsError
from modelgate.naming import base_key, recipe_fingerprint
from modelgate.storage import open_store, read_file

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

    Raises:
        DownloadError: The download failed or produced no files.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    target = Path(target_dir)
    target.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    repo_id, commit_sha = snapshot.repo_id, snapshot.commit_sha
    logger.info(
        "downloading %s@%s (commit %s) from %s",
        repo_id,
        snapshot.revision,
        commit_sha,
        redact_url(snapshot.endpoint),
    )
    try:
        snapshot_download(
            repo_id,
            revision=commit_sha,
            local_dir=str(target),
            allow_patterns=snapshot.allow_patterns,
            ignore_patterns=snapshot.ignore_patterns,
            endpoint=snapshot.endpoint,
            token=hub_token(snapshot.endpoint, token, allow_insecure=allow_insecure_token),
        )
    except (HfHubHTTPError, OSError) as e:
        raise DownloadError(f"download of {repo_id}@{commit_sha} failed: {e}") from e
    shutil.rmtree(target / ".cache", ignore_errors=True)  # huggingface_hub's local_dir metadata
    for weights in sorted(target.rglob("*.safetensors")):
        check_safetensors(weights)
    manifest = build_manifest(
        target,
        repo_id=repo_id,
        revision=snapshot.revision,
        commit_sha=commit_sha,
        endpoint=redact_url(snapshot.endpoint),
    )
    if not manifest.files:
        raise DownloadError(f"no files were downloaded for {repo_id}@{commit_sha}")
    manifest.seconds = round(time.monotonic() - started, 3)
    (target / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2))
    logger.info(
        "downloaded %d files (%d bytes) in %.1fs",
        len(manifest.files),
        manifest.total_bytes,
        manifest.seconds,
    )
    return manifest


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
    to a new sha). Only a completely written folder counts.

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

    Returns:
        Where the model is, its manifest, and whether it was already stored.

    Raises:
        ConfigError: Bad repo id or store URI, or no weights.
        UnsafeWeightsError: Pickle-only weights without ``allow_pickle``.
        DownloadError: The hub could not be read.
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
    if model_store.is_complete(key):
        uri = model_store.uri(key)
        manifest = DownloadManifest.from_dict(json.loads(read_file(uri, MANIFEST_NAME)))
        logger.info("%s@%s is already stored at %s", repo_id, snapshot.commit_sha, uri)
        return StoredModel(uri=uri, manifest=manifest, reused=True)
    with model_store.writer(
        key, source=f"{redact_url(snapshot.endpoint)}/{repo_id}@{snapshot.commit_sha}"
    ) as d:
        manifest = download_snapshot(
            snapshot, target_dir=d, token=token, allow_insecure_token=allow_insecure_token
        )
    return StoredModel(uri=model_store.uri(key), manifest=manifest, reused=False)
