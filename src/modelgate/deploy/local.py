"""Local serving: the real vLLM OpenAI server as a process on this machine.

Before vLLM starts, the model at ``spec.storage_uri`` is fetched into a fresh folder with
KServe's own storage-initializer code (:func:`modelgate.storage.fetch_like_kserve`), exactly as
the storage-initializer container of an InferenceService does, so a local release proves that
KServe can fetch what it deploys.

The server runs from a separate Python environment (vLLM pins its own torch and
compressed-tensors, like its own container image in the cluster). Its interpreter is
``python=`` or ``$MODELGATE_VLLM_PYTHON``. The model arguments come from
:func:`modelgate.deploy.spec.vllm_args`, the same ones the KServe ServingRuntime passes.

The server gets a minimal environment (:func:`server_env`): the variables of
:data:`SERVER_ENV_NAMES` and :data:`SERVER_ENV_PREFIXES` only, never the model store's
``AWS_*`` keys, ``HF_TOKEN``, ``MODEL_REGISTRY_TOKEN`` or KFP tokens (the model is fetched
before it starts), plus ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import requests

from modelgate.constants import VLLM_PYTHON_ENV
from modelgate.deploy.spec import DeploySpec, vllm_args
from modelgate.deploy.target import Deployment
from modelgate.errors import ConfigError, DeployError, DeployTimeoutError
from modelgate.processes import (
    free_port,
    record_server,
    record_stopped,
    signals_raise,
    stop_process_group,
)
from modelgate.retry import wait_until
from modelgate.storage import fetch_like_kserve

logger = logging.getLogger(__name__)

# Flags the vLLM CPU backend needs on a machine without a GPU.
CPU_ARGS = ("--enforce-eager", "--distributed-executor-backend", "uni")
CPU_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}

#: Variables the vLLM server inherits by name: the shell basics, locale and temp folders,
#: cache folders (torch.compile/Triton/Hugging Face caches) and the dynamic loader's path.
SERVER_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TMP",
        "TEMP",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_RUNTIME_DIR",
        "HF_HOME",
        "HF_HUB_CACHE",
        "PYTHONUNBUFFERED",
        "PYTHONIOENCODING",
    }
)
#: Prefixes of the variables the vLLM server inherits: vLLM's own settings, OpenMP/MKL threads
#: (the CPU backend), CUDA/NVIDIA/NCCL device selection, torch and Triton tuning.
SERVER_ENV_PREFIXES = (
    "LC_",
    "VLLM_",
    "OMP_",
    "KMP_",
    "MKL_",
    "CUDA_",
    "NVIDIA_",
    "NCCL_",
    "TORCH_",
    "TORCHINDUCTOR_",
    "TRITON_",
)
#: Set for the server whatever the environment says: the model is a local folder.
SERVER_ENV_FIXED = {"HF_HUB_OFFLINE": "1"}


def server_env(
    environ: Mapping[str, str] | None = None,
    *,
    device: str = "cpu",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of the vLLM server process, built from an allow-list.

    Args:
        environ: The environment to pick from; defaults to ``os.environ``.
        device: ``cpu`` adds :data:`CPU_ENV`.
        extra: Variables set explicitly for the server (``LocalVLLMTarget(env=...)``), last.

    Returns:
        The allowed variables of ``environ``, then :data:`SERVER_ENV_FIXED`, the CPU settings
        and ``extra``.
    """
    source = os.environ if environ is None else environ
    env = {
        k: v
        for k, v in source.items()
        if k in SERVER_ENV_NAMES or k.startswith(SERVER_ENV_PREFIXES)
    }
    return {**env, **SERVER_ENV_FIXED, **(CPU_ENV if device == "cpu" else {}), **(extra or {})}


VLLM_VENV = ".venv-vllm"
STOP_TIMEOUT = 20.0  # seconds a server gets to exit after SIGTERM before its group gets SIGKILL


def vllm_python_candidates() -> list[Path]:
    """Where ``make venvs`` puts the vLLM interpreter, found from the installation itself.

    Beside the environment modelgate runs in (``<dir>/.venv`` -> ``<dir>/.venv-vllm``), and in
    the checkout the package was installed from (editable installs), never from the current
    directory: ``modelgate`` works the same wherever it is started.
    """
    here = Path(__file__).resolve()
    roots = [Path(sys.prefix).parent, here.parents[3]]
    seen: list[Path] = []
    for root in roots:
        candidate = root / VLLM_VENV / "bin" / "python"
        if candidate not in seen:
            seen.append(candidate)
    return seen


def resolve_vllm_python(python: str | None = None) -> str:
    """The interpreter that has vLLM installed.

    Order: ``python``, ``$MODELGATE_VLLM_PYTHON``, then :func:`vllm_python_candidates`.

    Raises:
        ConfigError: The given interpreter does not exist, or none was given or found.
    """
    given = python or os.environ.get(VLLM_PYTHON_ENV)
    if given:
        if not Path(given).is_file():
            source = "--vllm-python" if python else VLLM_PYTHON_ENV
            raise ConfigError(
                f"vLLM interpreter {given!r} ({source}) does not exist; point it at the python "
                "of an environment with vLLM"
            )
        return given
    for candidate in vllm_python_candidates():
        if candidate.is_file():
            return str(candidate)
    tried = ", ".join(str(c) for c in vllm_python_candidates())
    raise ConfigError(
        f"no vLLM interpreter found (looked at {tried}): run `make venvs` in the modelgate "
        f"checkout, or set {VLLM_PYTHON_ENV} (or --vllm-python) to the python of an environment "
        "with vLLM"
    )


class LocalVLLMTarget:
    """Serve the model with a vLLM OpenAI server process on this machine.

    Args:
        python: Interpreter with vLLM; defaults to ``$MODELGATE_VLLM_PYTHON``.
        host: Interface to bind (loopback by default).
        port: Port; a free one when None.
        startup_timeout: Seconds to wait for ``/health``.
        device: ``cpu`` adds the flags and environment the vLLM CPU backend needs.
        log_dir: Where the server log goes; a temp file when None.
        env: Extra environment for the server, on top of the allow-listed one
            (:func:`server_env`).
    """

    name: Literal["local"] = "local"

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

    def deploy(self, spec: DeploySpec) -> Deployment:
        """Fetch ``spec.storage_uri`` like KServe does, start vLLM on it, wait for ``/health``.

        Raises:
            ConfigError: The fetched folder is no model (no config.json).
            StorageError: KServe's downloader could not fetch the URI completely.
            DeployError: The server exited during start-up (the log tail is in the message).
            DeployTimeoutError: Not healthy within ``startup_timeout``.
        """
        log_dir = self.log_dir or Path(tempfile.gettempdir())
        log_dir.mkdir(parents=True, exist_ok=True)
        # a fresh folder, as the storage-initializer's emptyDir at /mnt/models
        model_root = Path(tempfile.mkdtemp(prefix=f"{spec.name}-models-", dir=log_dir))
        # SIGTERM unwinds like Ctrl-C, so the server and the folder go with an interrupted step
        with signals_raise(), self._removing_on_error(model_root):
            model_dir = str(fetch_like_kserve(spec.storage_uri, model_root))
            if not Path(model_dir, "config.json").is_file():
                raise ConfigError(
                    f"{spec.storage_uri} holds no config.json: it is not a model folder"
                )
            return self._start(spec, model_dir=model_dir, model_root=model_root, log_dir=log_dir)

    @staticmethod
    @contextlib.contextmanager
    def _removing_on_error(model_root: Path) -> Iterator[None]:
        try:
            yield
        except BaseException:
            shutil.rmtree(model_root, ignore_errors=True)
            raise

    def _start(
        self, spec: DeploySpec, *, model_dir: str, model_root: Path, log_dir: Path
    ) -> Deployment:
        port = self.port or free_port(self.host)
        log_path = log_dir / f"vllm-{spec.name}-{port}.log"
        env = server_env(device=self.device, extra=self.env)
        cmd = self.command(spec, model_dir=model_dir, port=port)
        logger.info("starting vLLM: %s (log %s)", " ".join(cmd), log_path)
        started = time.monotonic()
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        endpoint = f"http://{self.host}:{port}"
        try:  # before the wait: whoever ends the run finds the server even if this step is killed
            record_server(
                proc.pid,
                pgid=proc.pid,
                endpoint=endpoint,
                log=str(log_path),
                model_dir=str(model_root),
            )
        except BaseException:
            stop_process_group(proc.pid, timeout=STOP_TIMEOUT)
            raise

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
            stop_process_group(proc.pid, timeout=STOP_TIMEOUT)
            record_stopped(proc.pid)
            raise
        ready = round(time.monotonic() - started, 3)
        logger.info("vLLM ready at %s after %.1fs (pid %d)", endpoint, ready, proc.pid)
        return Deployment(
            target="local",
            name=spec.name,
            endpoint=endpoint,
            model=spec.name,
            ready_seconds=ready,
            details={
                "pid": proc.pid,
                "pgid": proc.pid,
                "log": str(log_path),
                "command": cmd,
                "storage_uri": spec.storage_uri,
                "model_dir": str(model_root),
            },
        )

    def teardown(self, deployment: Deployment) -> None:
        """Stop the server process group and remove its fetched model (idempotent)."""
        stop_server(deployment.details)

    def rollback(self, deployment: Deployment) -> str:
        """A local server replaces nothing: rolling back stops it."""
        self.teardown(deployment)
        return f"stopped the local vLLM server (pid {deployment.details.get('pid')})"


def stop_server(details: Mapping[str, Any]) -> None:
    """Stop a local vLLM server's whole process group and remove its fetched model (idempotent).

    Args:
        details: A local :class:`Deployment`'s ``details``, or an entry of the run's record of
            started servers (:func:`modelgate.processes.recorded_servers`): ``pid``, ``pgid``,
            ``model_dir``.
    """
    pid = details.get("pid")
    if pid:
        stop_process_group(int(details.get("pgid") or pid), timeout=STOP_TIMEOUT)
        record_stopped(int(pid))
        logger.info("stopped vLLM pid %s", pid)
    if details.get("model_dir"):
        shutil.rmtree(details["model_dir"], ignore_errors=True)
