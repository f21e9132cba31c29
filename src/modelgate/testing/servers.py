"""Servers that tests and benchmarks start on loopback: any HTTP server with a health route
(:func:`http_server`), GuideLLM's mock OpenAI server (:func:`guidellm_mock_server`) and vLLM
serving a model folder through the local deploy target (:func:`vllm_serving`).

Each is a context manager that waits until the server answers and stops it (its whole process
group) on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from modelgate.processes import free_port, stop_process_group
from modelgate.retry import wait_until

if TYPE_CHECKING:
    from modelgate.deploy import Deployment

#: The model name GuideLLM's mock server answers to, by default.
MOCK_MODEL = "tiny"
#: GuideLLM's mock server waits this long (ms) before the first token and between tokens.
MOCK_TTFT_MS, MOCK_ITL_MS = 50, 5


@contextlib.contextmanager
def http_server(
    args: Sequence[str],
    *,
    url: str,
    log_path: Path,
    what: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    health: str = "/health",
) -> Iterator[subprocess.Popen[bytes]]:
    """Run the server ``args`` in its own process session, its output in ``log_path``, until
    ``GET {url}{health}`` answers 200; yields the process and stops its group on exit.

    Args:
        args: The command line; it must serve ``url``.
        url: Base URL, e.g. ``http://127.0.0.1:38123``.
        log_path: File for the server's stdout and stderr.
        what: The server's name in messages.
        env: Its environment (None: this process's).
        timeout: Seconds to wait for it to answer.
        health: The path that answers 200 once the server is up.

    Raises:
        RuntimeError: The server exited before it answered (with the end of its log).
        TimeoutError: It did not answer within ``timeout`` (:func:`~modelgate.retry.wait_until`).
    """
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            list(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            return requests.get(f"{url}{health}", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(up, timeout=timeout, interval=0.3, what=f"{what} {url}{health}")
        yield proc
    finally:
        stop_process_group(proc.pid)


@contextlib.contextmanager
def guidellm_mock_server(
    log_dir: Path,
    *,
    model: str = MOCK_MODEL,
    ttft_ms: int = MOCK_TTFT_MS,
    itl_ms: int = MOCK_ITL_MS,
    timeout: float = 120.0,
) -> Iterator[str]:
    """``guidellm mock-server`` serving ``model`` on a free loopback port (this interpreter's
    GuideLLM, offline), its output in ``log_dir/mock.log``; yields its URL.

    It answers the OpenAI API after ``ttft_ms`` to the first token and ``itl_ms`` between
    tokens.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        sys.executable, "-m", "guidellm", "mock-server", "--host", "127.0.0.1",
        "--port", str(port), "--model", model, "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms),
    ]  # fmt: skip
    with http_server(
        args,
        url=url,
        log_path=log_dir / "mock.log",
        what="guidellm mock-server",
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=timeout,
    ):
        yield url


@contextlib.contextmanager
def vllm_serving(
    model_dir: Path, *, python: str, work: Path, name: str = "tiny", max_model_len: int = 128
) -> Iterator[Deployment]:
    """vLLM (``python``'s, CPU or GPU) serving a copy of ``model_dir`` as ``name`` through the
    local deploy target: the folder goes into a ``file://`` store under ``work`` first, as a
    release stores it. Yields the deployment (``endpoint``, ``model``); torn down on exit."""
    from modelgate.deploy import DeploySpec
    from modelgate.deploy.local import LocalVLLMTarget
    from modelgate.storage import FileStore

    store = FileStore(work / "store")
    with store.writer(name) as folder:
        shutil.copytree(model_dir, folder, dirs_exist_ok=True)
    target = LocalVLLMTarget(python=python, log_dir=str(work / "vllm"))
    deployment = target.deploy(
        DeploySpec(name=name, storage_uri=store.uri(name), max_model_len=max_model_len)
    )
    try:
        yield deployment
    finally:
        target.teardown(deployment)
