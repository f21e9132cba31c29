"""Serve local model directories through ``olah``, a Hugging Face Hub mirror, for offline tests.

Findings (olah 0.5.4, huggingface_hub 1.33; checked by ``tests/e2e/test_mirror_and_task.py``):

* Configuration: olah serves local repositories from ``mirrors-path`` (a list, settable only in its
  TOML config, not on the command line; we run ``python -m olah.server --config <toml>``). A repo
  ``<org>/<name>`` of type ``models`` is a plain (non-bare) git repository at
  ``<mirrors-path>/models/<org>/<name>``; revisions (branch, tag, full SHA) are resolved by
  GitPython. Files are ordinary git blobs (no LFS needed; LFS pointers would need their objects in
  ``.git/lfs/objects``). ``repos-path`` is only olah's cache of upstream content. With
  ``[accessibility] offline = true`` olah never contacts huggingface.co and skips its upstream
  visibility probe; we also point ``hf-netloc`` at a closed loopback port. olah's index page
  ``GET /`` fails with HTTP 500 (Jinja2/Starlette incompatibility) and is not used.
* WORKS -- ``GET /api/models/<org>/<name>/revision/<rev>``: repo info built from the git commit;
  ``sha`` is the full commit SHA ``<rev>`` resolves to, ``siblings`` lists every file
  (``rfilename`` only, no sizes even with ``files_metadata=True``), plus ``lastModified`` and
  ``cardData`` (README front matter). ``HfApi.model_info(repo_id, revision="main").sha`` and
  ``snapshot_download(repo_id, revision="main", endpoint=...)`` use it; snapshot_download then lists
  ``/api/models/<id>/tree/<sha>?recursive=true`` (a 307 to ``.../tree/<sha>/``, followed) and
  downloads every file via ``/<id>/resolve/<sha>/<file>``. With ``cache_dir`` the snapshot folder
  is named by the commit SHA.
* WORKS -- ``HEAD /<org>/<name>/resolve/<rev>/<file>``: 200 with ``X-Repo-Commit`` (full SHA of
  ``<rev>``), ``ETag`` (git blob SHA-1) and ``Content-Length``, no redirect; ``GET`` streams the
  file (chunked, without ``X-Repo-Commit``).
  ``huggingface_hub.get_hf_file_metadata(hf_hub_url(...)).commit_hash`` reads it;
  ``hf_hub_download`` works.
* WORKS -- ``tree/<rev>`` (``list_repo_files``, ``list_repo_tree``), ``POST paths-info/<rev>``
  (``get_paths_info``), ``refs`` (``list_repo_refs``: ``branches[].target_commit``),
  ``file_exists``, ``revision_exists``. ``GET /api/models/<id>/commits/<rev>`` answers JSON, but
  ``HfApi.list_repo_commits`` fails on it (authors lack ``user``).
* DOES NOT WORK -- ``GET /api/models/<org>/<name>`` without revision (``model_info(repo_id)``,
  ``repo_exists``): offline olah looks for the newest commit in its upstream cache only and answers
  401 ``X-Error-Code: RepoNotFound`` (``RepositoryNotFoundError``). Always pass a revision.
* Errors: an unknown repo, an unknown revision and a missing file all answer 401 with
  ``X-Error-Code: RepoNotFound``, so huggingface_hub raises ``RepositoryNotFoundError`` for each
  (never ``RevisionNotFoundError`` or ``EntryNotFoundError``).
* Read-only: uploads (``create_repo``, ``upload_folder``) are not supported; publish with
  :func:`publish_model`, which writes the git repository directly.
* Hashes (``POST paths-info/<sha>``, what :func:`modelgate.download.hub_file_metadata` reads):
  every file has ``oid`` (its git blob id) and ``size``; a git-LFS pointer also has
  ``lfs.oid`` (sha256) and ``lfs.size``. ``model_info(files_metadata=True)`` gives neither.
* No ``Range``: ``GET resolve`` ignores the header and streams the whole file (200, no
  ``Content-Length``). :class:`CountingProxy` in front of the mirror answers ``Range`` requests
  (206), counts the body bytes it sends per file and can cut a transfer, to test resumed
  downloads.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

from modelgate.errors import ConfigError, DownloadError, ModelgateError
from modelgate.processes import free_port, stop_process_group
from modelgate.retry import wait_until

logger = logging.getLogger(__name__)

DEFAULT_REPO_ID = "modelgate/tiny-llama"
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Fixed identity and date: publishing identical content into a fresh repository gives the same
#: commit SHA every time.
_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "modelgate-tests",
    "GIT_AUTHOR_EMAIL": "modelgate-tests@localhost",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+0000",
    "GIT_COMMITTER_NAME": "modelgate-tests",
    "GIT_COMMITTER_EMAIL": "modelgate-tests@localhost",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+0000",
}


@dataclass(frozen=True)
class PublishedModel:
    """A model repository served by a running :class:`LocalHubMirror`.

    Attributes:
        endpoint: Mirror base URL, for ``HF_ENDPOINT`` or ``endpoint=`` arguments.
        repo_id: Repository id, ``"<org>/<name>"``.
        commit_sha: Full git commit SHA that ``revision`` resolves to.
        repos_root: The mirror's repository root; :func:`publish_model` more repos into it while
            the mirror runs.
        revision: Branch the model was published on.
    """

    endpoint: str
    repo_id: str
    commit_sha: str
    repos_root: Path
    revision: str = "main"


def repo_path(repos_root: Path, repo_id: str, *, repo_type: str = "models") -> Path:
    """Return where olah expects the git repository of ``repo_id`` under ``repos_root``.

    Args:
        repos_root: The directory olah gets as ``mirrors-path``.
        repo_id: ``"<org>/<name>"``.
        repo_type: ``"models"``, ``"datasets"`` or ``"spaces"``.

    Returns:
        ``repos_root/<repo_type>/<org>/<name>``.

    Raises:
        ConfigError: If ``repo_id`` is not of the form ``org/name``.
    """
    if not _REPO_ID_RE.match(repo_id) or ".." in repo_id:
        raise ConfigError(f"repo_id must look like 'org/name', got {repo_id!r}")
    org, name = repo_id.split("/")
    return Path(repos_root) / repo_type / org / name


def publish_model(model_dir: Path, repos_root: Path, repo_id: str = DEFAULT_REPO_ID) -> str:
    """Commit the files of ``model_dir`` to branch ``main`` of a local git repo olah can serve.

    The repository's tree is replaced by the contents of ``model_dir`` (hidden entries such as
    ``.git`` or ``.cache`` are skipped). The commit uses a fixed author and date, so publishing
    identical content into a fresh repository always gives the same SHA, and re-publishing
    unchanged content into an existing one returns the current SHA without a new commit.

    Args:
        model_dir: Directory of the model files.
        repos_root: Root directory olah serves local repos from (its ``mirrors-path``).
        repo_id: Repository id, ``"<org>/<name>"``.

    Returns:
        The full commit SHA of ``main`` after publishing.

    Raises:
        ConfigError: If ``model_dir`` holds no files or ``repo_id`` is malformed.
        ModelgateError: If a git command fails.
    """
    model_dir = Path(model_dir)
    files = _visible_files(model_dir) if model_dir.is_dir() else []
    if not files:
        raise ConfigError(f"model_dir {model_dir} must be a directory with model files")
    repo = repo_path(repos_root, repo_id)
    repo.mkdir(parents=True, exist_ok=True)
    if not (repo / ".git").exists():
        _git(repo, "init", "-q", "-b", "main")
    else:
        _git(repo, "checkout", "-q", "-B", "main")

    wanted = {path.relative_to(model_dir) for path in files}
    for existing in _visible_files(repo):
        if existing.relative_to(repo) not in wanted:
            existing.unlink()
    for rel in sorted(wanted):
        target = repo / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_dir / rel, target)

    _git(repo, "add", "-A")
    has_head = _git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode == 0
    unchanged = _git(repo, "diff", "--cached", "--quiet", check=False).returncode == 0
    if not has_head or not unchanged:
        _git(repo, "commit", "-q", "--no-verify", "-m", f"Publish {repo_id}")
    sha = _git(repo, "rev-parse", "HEAD").stdout.strip()
    logger.info("published %s (%d files) at %s", repo_id, len(wanted), sha)
    return sha


def _visible_files(root: Path) -> list[Path]:
    """Regular files under ``root``, skipping anything below a hidden (dot) entry."""
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and not path.is_symlink():
            found.append(path)
    return found


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **_GIT_IDENTITY,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
    }
    cmd = ["git", "-c", "commit.gpgsign=false", "-c", "core.autocrlf=false", *args]
    try:
        result = subprocess.run(
            cmd, cwd=repo, env=env, capture_output=True, text=True, check=False, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ModelgateError(f"git {' '.join(args)} failed in {repo}: {e}") from e
    if check and result.returncode != 0:
        raise ModelgateError(
            f"git {' '.join(args)} failed in {repo} (exit {result.returncode}): "
            f"{result.stderr.strip()}"
        )
    return result


class LocalHubMirror:
    """Run ``olah`` on a loopback port, serving the git repos under ``repos_root``, offline.

    Use as a context manager; the server (started in its own process session) is terminated on
    exit, killed if it does not stop within ``stop_timeout`` seconds, and its scratch directory
    (config, cache, logs) is removed::

        with LocalHubMirror(repos_root) as mirror:
            sha = publish_model(model_dir, repos_root, "modelgate/tiny-llama")
            snapshot_download("modelgate/tiny-llama", revision="main", endpoint=mirror.endpoint)

    Repositories may be published before or while the mirror runs.

    Args:
        repos_root: Directory holding ``models/<org>/<name>`` git repos; created if missing.
        host: Loopback address to bind.
        port: Port to bind; a free one is picked when None.
        startup_timeout: Seconds to wait for the server to answer.
        stop_timeout: Seconds to wait after SIGTERM (and after SIGKILL).
    """

    def __init__(
        self,
        repos_root: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.repos_root = Path(repos_root).resolve()
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def endpoint(self) -> str:
        """Base URL of the running mirror, e.g. ``http://127.0.0.1:38123``.

        Raises:
            ModelgateError: If the mirror is not running.
        """
        if self._proc is None or self.port is None:
            raise ModelgateError("LocalHubMirror is not running; use it as a context manager")
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> LocalHubMirror:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start olah and wait until it answers HTTP.

        Raises:
            DownloadError: If olah exits early or does not answer within ``startup_timeout``.
        """
        if self._proc is not None:
            return
        self.repos_root.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port(self.host)
        self._workdir = Path(tempfile.mkdtemp(prefix="modelgate-olah-"))
        config_path = self._workdir / "olah.toml"
        config_path.write_text(self._config_toml(), encoding="utf-8")
        log_path = self._workdir / "olah.out"
        cmd = [
            sys.executable,
            "-m",
            "olah.server",
            "--config",
            str(config_path),
            "--log-path",
            str(self._workdir / "logs"),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        logger.info("starting olah on %s:%d serving %s", self.host, self.port, self.repos_root)
        with log_path.open("wb") as log_file:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self._workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._finalizer = weakref.finalize(
            self, stop_process_group, self._proc.pid, timeout=self.stop_timeout
        )
        try:
            waited = wait_until(
                self._answers,
                timeout=self.startup_timeout,
                interval=0.25,
                what=f"olah on {self.host}:{self.port}",
                on_timeout=lambda message: DownloadError(f"{message}\n{self._log_tail()}"),
            )
        except BaseException:
            self.stop()
            raise
        logger.info("olah answers at %s after %.1fs", self.endpoint, waited)

    def stop(self) -> None:
        """Stop olah (SIGTERM, then SIGKILL) and remove its scratch directory. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process_group(proc.pid, timeout=self.stop_timeout)
            proc.poll()
            logger.info("olah stopped (exit %s)", proc.returncode)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def publish(self, model_dir: Path, *, repo_id: str = DEFAULT_REPO_ID) -> PublishedModel:
        """Publish ``model_dir`` into this mirror and check the mirror resolves it.

        Args:
            model_dir: Directory of the model files.
            repo_id: Repository id, ``"<org>/<name>"``.

        Returns:
            The published model, with the commit SHA of ``main``.

        Raises:
            DownloadError: If the mirror resolves ``main`` to another commit.
        """
        sha = publish_model(model_dir, self.repos_root, repo_id)
        served = self.revision_sha(repo_id, "main")
        if served != sha:
            raise DownloadError(f"mirror resolves {repo_id}@main to {served}, expected {sha}")
        return PublishedModel(
            endpoint=self.endpoint, repo_id=repo_id, commit_sha=sha, repos_root=self.repos_root
        )

    def revision_sha(self, repo_id: str, revision: str = "main") -> str:
        """Resolve ``revision`` of ``repo_id`` through the mirror's revision info route.

        Args:
            repo_id: Repository id, ``"<org>/<name>"``.
            revision: Branch, tag or commit SHA.

        Returns:
            The full commit SHA (``sha`` of ``GET /api/models/<repo_id>/revision/<revision>``).

        Raises:
            DownloadError: If the mirror does not know the repository or revision.
        """
        url = f"{self.endpoint}/api/models/{repo_id}/revision/{revision}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
                info = json.loads(response.read())
        except (urllib.error.URLError, ValueError) as e:
            raise DownloadError(f"mirror cannot resolve {repo_id}@{revision}: {e}") from e
        sha = info.get("sha") if isinstance(info, dict) else None
        if not sha:
            raise DownloadError(f"mirror returned no sha for {repo_id}@{revision}: {info!r}")
        return str(sha)

    def _answers(self) -> bool:
        if self._proc is None or self._proc.poll() is not None:
            code = None if self._proc is None else self._proc.returncode
            raise DownloadError(f"olah exited early (exit {code})\n{self._log_tail()}")
        # Any HTTP answer means uvicorn is serving. Not "/": olah 0.5.4's index page fails with a
        # 500 under current Jinja2/Starlette; a revision lookup of an unknown repo is a cheap 404.
        url = f"{self.endpoint}/api/models/modelgate-probe/none/revision/main"
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            return False

    def _log_tail(self, lines: int = 30) -> str:
        if self._workdir is None:
            return ""
        try:
            text = (self._workdir / "olah.out").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "olah output:\n" + "\n".join(text.splitlines()[-lines:])

    def _config_toml(self) -> str:
        netloc = f"{self.host}:{self.port}"
        assert self._workdir is not None
        basic = {
            "host": self.host,
            "port": self.port,
            "repos-path": str(self._workdir / "cache"),
            "mirrors-path": [str(self.repos_root)],
            "mirror-scheme": "http",
            "mirror-netloc": netloc,
            "mirror-lfs-netloc": netloc,
            # Offline mode never calls upstream; a closed local port makes sure of it.
            "hf-scheme": "http",
            "hf-netloc": "127.0.0.1:9",
            "hf-lfs-netloc": "127.0.0.1:9",
        }
        lines = ["[basic]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in basic.items()]
        lines += ["", "[accessibility]", "offline = true", ""]
        return "\n".join(lines)


def write_random_model(
    model_dir: Path, *, template_dir: Path, weight_bytes: int, seed: int = 0
) -> Path:
    """A model folder with the config and tokenizer files of ``template_dir`` and one
    ``model.safetensors`` of random ``uint8`` data, ``weight_bytes`` of payload.

    For download tests and benchmarks that need big files, not a model that loads.

    Returns:
        ``model_dir``.

    Raises:
        ConfigError: ``weight_bytes`` is not positive.
    """
    import numpy as np
    from safetensors.numpy import save_file

    if weight_bytes <= 0:
        raise ConfigError(f"weight_bytes must be positive, got {weight_bytes}")
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(Path(template_dir) / name, model_dir / name)
    data = np.random.default_rng(seed).integers(0, 256, size=weight_bytes, dtype=np.uint8)
    save_file({"weight": data}, str(model_dir / "model.safetensors"))
    return model_dir


#: Headers a proxy does not pass on (hop-by-hop, or rewritten by it).
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}


class CountingProxy:
    """An HTTP proxy on loopback in front of a mirror: answers ``Range`` requests for files,
    counts the body bytes it sends per file, and can cut one file's transfer.

    ``GET /<org>/<name>/resolve/<rev>/<file>`` is fetched whole from the upstream (olah ignores
    ``Range``); a ``Range: bytes=<start>-`` request is answered 206 with the bytes from
    ``start`` on. :attr:`sent` counts the body bytes written per file path. With ``cut_file``
    and ``cut_after``, once ``cut_after`` bytes of that file have been sent in total, the
    proxy calls ``on_cut`` (e.g. the mirror's ``stop``) and closes the connection (a clean
    FIN, so the client gets every byte sent) without finishing the body; later requests for
    that file are cut at once until :attr:`cut_file` is cleared, and while the upstream is down
    every request is answered 502. Other requests are passed through.

    Args:
        upstream: Base URL of the mirror, ``http://host:port``.
        cut_file: File path (in the repository) whose transfer is cut.
        cut_after: Body bytes of ``cut_file`` sent before the cut.
        on_cut: Called once, at the cut.
        flip_file: File path whose middle byte the proxy inverts (a mirror that alters data).
        host: Loopback address to bind.
    """

    def __init__(
        self,
        upstream: str,
        *,
        cut_file: str | None = None,
        cut_after: int | None = None,
        on_cut: Callable[[], None] | None = None,
        flip_file: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.cut_file = cut_file
        self.cut_after = cut_after
        self.on_cut = on_cut
        self.flip_file = flip_file
        self.sent: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """Base URL of the proxy."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> CountingProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _count(self, name: str, size: int) -> int:
        """Record ``size`` more bytes of ``name``; how many of them to send before a cut."""
        with self._lock:
            allowed = size
            if name == self.cut_file and self.cut_after is not None:
                allowed = max(0, min(size, self.cut_after - self.sent[name]))
            self.sent[name] += allowed
            return allowed

    def _cut(self) -> None:
        with self._lock:
            on_cut, self.on_cut = self.on_cut, None
        if on_cut is not None:
            on_cut()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                logger.debug("proxy: " + format, *args)

            def do_HEAD(self) -> None:
                self._forward(body=False)

            def do_POST(self) -> None:
                self._forward(body=True)

            def do_GET(self) -> None:
                match = re.match(r"^/[^/]+/[^/]+/resolve/[^/]+/(.+)$", urlsplit(self.path).path)
                if match:
                    self._file(unquote(match[1]))
                else:
                    self._forward(body=False)

            def _upstream(self, method: str, body: bytes | None) -> http.client.HTTPResponse:
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in (*_HOP, "range")
                }
                conn.request(method, self.path, body=body, headers=headers)
                return conn.getresponse()

            def _forward(self, *, body: bool) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if body and length else None
                try:
                    response = self._upstream(self.command, data)
                    payload = response.read()
                except OSError:
                    self._bad_gateway()
                    return
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in _HOP:
                        self.send_header(k, v)
                upstream_length = response.getheader("Content-Length")
                if self.command != "HEAD" or upstream_length is None:
                    upstream_length = str(len(payload))
                self.send_header("Content-Length", upstream_length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _bad_gateway(self) -> None:
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _file(self, name: str) -> None:
                found = re.match(r"^bytes=(\d+)-$", self.headers.get("Range", "").strip())
                start = int(found[1]) if found else 0
                try:
                    response = self._upstream("GET", None)
                    payload = response.read()  # olah streams without Content-Length
                except OSError:
                    self._bad_gateway()
                    return
                if name == proxy.flip_file and payload:
                    middle = len(payload) // 2
                    payload = (
                        payload[:middle] + bytes([payload[middle] ^ 0xFF]) + payload[middle + 1 :]
                    )
                if response.status != 200 or start > len(payload):
                    self.send_response(response.status if response.status != 200 else 416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                part = payload[start:]
                self.send_response(206 if found else 200)
                if found:
                    self.send_header(
                        "Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}"
                    )
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                allowed = proxy._count(name, len(part))
                self.wfile.write(part[:allowed])
                if allowed < len(part):
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_WR)  # FIN after every byte sent
                    self.close_connection = True
                    proxy._cut()

        return Handler
