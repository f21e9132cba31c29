"""Local serving: run the real vLLM OpenAI server as a process, and the smoke test.

The server runs from a separate Python environment (vLLM pins its own torch and
compressed-tensors, like its own container image in the cluster). Its interpreter is
``python=`` or ``$MODELGATE_VLLM_PYTHON``. The model arguments come from
:func:`modelgate.deploy.vllm_args`, the same ones the KServe ServingRuntime passes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from modelgate.deploy import Deployment, DeploySpec, vllm_args
from modelgate.errors import ConfigError, DeployError, DeployTimeoutError, SmokeTestError
from modelgate.retry import backoff, wait_until

logger = logging.getLogger(__name__)

VLLM_PYTHON_ENV = "MODELGATE_VLLM_PYTHON"
# Flags the vLLM CPU backend needs on a machine without a GPU.
CPU_ARGS = ("--enforce-eager", "--distributed-executor-backend", "uni")
CPU_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def resolve_vllm_python(python: str | None = None) -> str:
    """The interpreter that has vLLM installed.

    Raises:
        ConfigError: Neither ``python`` nor ``$MODELGATE_VLLM_PYTHON`` names an existing file.
    """
    candidate = python or os.environ.get(VLLM_PYTHON_ENV)
    if not candidate:
        raise ConfigError(
            f"no vLLM interpreter configured: set {VLLM_PYTHON_ENV} to the python of an "
            "environment with vLLM (`make venvs` builds .venv-vllm), or pass --vllm-python"
        )
    if not Path(candidate).is_file():
        raise ConfigError(f"vLLM interpreter {candidate!r} does not exist ({VLLM_PYTHON_ENV})")
    return candidate


def pid_alive(pid: int) -> bool:
    """True if a process with ``pid`` exists (and is not a zombie we own)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(pid: int, *, timeout: float = 20.0) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``timeout``. Idempotent."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        try:
            wait_until(
                lambda: not pid_alive(pid),
                timeout=timeout,
                interval=0.2,
                what=f"process {pid} to exit",
            )
            return
        except TimeoutError:
            logger.warning("process group %d ignored %s", pid, sig.name)


class LocalVLLMTarget:
    """Serve the model with a vLLM OpenAI server process on this machine.

    Args:
        python: Interpreter with vLLM; defaults to ``$MODELGATE_VLLM_PYTHON``.
        host: Interface to bind (loopback by default).
        port: Port; a free one when None.
        startup_timeout: Seconds to wait for ``/health``.
        device: ``cpu`` adds the flags and environment the vLLM CPU backend needs.
        log_dir: Where the server log goes; a temp file when None.
        env: Extra environment for the server.
    """

    name = "local"

    def __init__(
        self,
        *,
        python: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 300.0,
        device: str = "cpu",
        log_dir: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self._python = python
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.device = device
        self.log_dir = Path(log_dir) if log_dir else None
        self.env = dict(env or {})

    @property
    def python(self) -> str:
        """The vLLM interpreter, checked when first needed (tearing down needs none)."""
        return resolve_vllm_python(self._python)

    def command(self, spec: DeploySpec, *, model_dir: str, port: int) -> list[str]:
        """The full server command line."""
        args = vllm_args(spec, model_path=model_dir, port=port)
        cmd = [
            self.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            *args,
            f"--host={self.host}",
        ]
        if self.device == "cpu":
            cmd += [a for a in CPU_ARGS if a not in args]
        return cmd

    def deploy(self, spec: DeploySpec, *, model_dir: str | None = None) -> Deployment:
        """Start vLLM on ``model_dir`` and wait until ``/health`` answers 200.

        Raises:
            ConfigError: No model directory.
            DeployError: The server exited during start-up (the log tail is in the message).
            DeployTimeoutError: Not healthy within ``startup_timeout``.
        """
        if not model_dir or not Path(model_dir, "config.json").is_file():
            raise ConfigError(
                f"local deploy needs a model directory with config.json, got {model_dir!r}"
            )
        port = self.port or free_port(self.host)
        log_dir = self.log_dir or Path(model_dir).parent
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"vllm-{spec.name}-{port}.log"
        env = {**os.environ, **(CPU_ENV if self.device == "cpu" else {}), **self.env}
        cmd = self.command(spec, model_dir=model_dir, port=port)
        logger.info("starting vLLM: %s (log %s)", " ".join(cmd), log_path)
        started = time.monotonic()
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        endpoint = f"http://{self.host}:{port}"

        def healthy() -> bool:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise DeployError(
                    f"vLLM exited with code {proc.returncode} during start-up:\n{tail}"
                )
            try:
                return requests.get(f"{endpoint}/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_until(
                healthy,
                timeout=self.startup_timeout,
                interval=1.0,
                what=f"vLLM /health at {endpoint}",
                on_timeout=DeployTimeoutError,
            )
        except BaseException:
            stop_process_group(proc.pid)
            raise
        ready = round(time.monotonic() - started, 3)
        logger.info("vLLM ready at %s after %.1fs (pid %d)", endpoint, ready, proc.pid)
        return Deployment(
            target="local",
            name=spec.name,
            endpoint=endpoint,
            model=spec.name,
            ready_seconds=ready,
            details={"pid": proc.pid, "log": str(log_path), "command": cmd},
        )

    def teardown(self, deployment: Deployment) -> None:
        """Stop the server process group (idempotent)."""
        pid = deployment.details.get("pid")
        if pid:
            stop_process_group(int(pid))
            logger.info("stopped vLLM pid %s", pid)

    def rollback(self, deployment: Deployment) -> str:
        """A local server replaces nothing: rolling back stops it."""
        self.teardown(deployment)
        return f"stopped the local vLLM server (pid {deployment.details.get('pid')})"


def _post(url: str, payload: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    def call() -> dict[str, Any]:
        resp = requests.post(url, json=payload, timeout=timeout)
        if resp.status_code >= 500:
            resp.raise_for_status()
        if resp.status_code != 200:
            raise SmokeTestError(f"POST {url} answered {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    try:
        return backoff(
            call,
            retry_on=(requests.ConnectionError, requests.Timeout, requests.HTTPError),
            attempts=3,
            what=f"POST {url}",
        )
    except requests.RequestException as e:
        raise SmokeTestError(f"POST {url} failed: {e}") from e


def smoke_test(
    endpoint: str,
    *,
    model: str,
    prompt: str = "2+3=",
    chat_message: str = "What is 2+3?",
    max_tokens: int = 8,
    timeout: float = 60.0,
) -> dict[str, str]:
    """One ``/v1/completions`` and one ``/v1/chat/completions`` call; both must return text.

    Args:
        endpoint: Server base URL (without ``/v1``).
        model: Served model name.
        prompt: Completion prompt.
        chat_message: User message for the chat call.
        max_tokens: Tokens to generate in each call.
        timeout: Seconds per request.

    Returns:
        ``{"completion": ..., "chat": ...}`` - the generated texts.

    Raises:
        SmokeTestError: A call failed or returned no text.
    """
    base = endpoint.rstrip("/")
    comp = _post(
        f"{base}/v1/completions",
        {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0},
        timeout=timeout,
    )
    chat = _post(
        f"{base}/v1/chat/completions",
        {
            "model": model,
            "messages": [{"role": "user", "content": chat_message}],
            "max_tokens": max_tokens,
            "temperature": 0,
        },
        timeout=timeout,
    )
    try:
        completion = comp["choices"][0]["text"]
        chat_text = chat["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise SmokeTestError(f"malformed OpenAI response: {comp!r} / {chat!r}") from e
    if not completion or not completion.strip():
        raise SmokeTestError(f"/v1/completions returned no text for {prompt!r}: {comp!r}")
    if not chat_text or not chat_text.strip():
        raise SmokeTestError(f"/v1/chat/completions returned no text: {chat!r}")
    logger.info("smoke test ok: completion=%r chat=%r", completion, chat_text)
    return {"completion": completion, "chat": chat_text}
