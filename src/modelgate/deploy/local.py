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

Production and candidates (the cluster's canary flow, on one machine)
    The target keeps a record per served name in :func:`~modelgate.paths.local_serving_dir`:
    ``<name>.json`` is the *production* server (written by :meth:`LocalVLLMTarget.promote`),
    ``<name>.candidate-<pid>.json`` a server :meth:`~LocalVLLMTarget.deploy` started that is
    not production (yet). Each holds ``name``, ``endpoint``, ``model``, ``pid``, ``pgid``,
    ``start_time`` (``/proc`` clock ticks: tells a reused pid from the server), ``model_dir``,
    ``storage_uri``, ``run_id``, ``log``, ``started`` (and ``promoted`` for production). Files
    are replaced atomically, and every read-modify-write holds ``<name>.lock`` (``flock``), so
    two runs at once never lose or mix a record. The pipeline's steps are separate processes;
    these files are how the promote and rollback steps find what the deploy step started.

    A deploy that finds a production server still running and answering ``/health`` starts the
    candidate beside it on its own port (``details["role"] == "candidate"``); otherwise the
    candidate is the only server (``"first"``). Promoting makes the candidate production and
    stops the previous production server; rolling back stops the candidate only. A record
    whose process is gone, or whose pid now belongs to another process, is dropped (logged).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import requests

from modelgate.constants import VLLM_PYTHON_ENV
from modelgate.deploy.spec import DeploySpec, vllm_args
from modelgate.deploy.target import Deployment
from modelgate.errors import ConfigError, DeployError, DeployTimeoutError
from modelgate.paths import local_serving_dir
from modelgate.processes import (
    SERVERS_FILE_ENV,
    free_port,
    pid_alive,
    record_server,
    record_stopped,
    recorded_servers,
    same_process,
    signals_raise,
    start_time,
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


# --------------------------------------------------------------------------------------------
# The serving records: which local server is production, which are candidates
# --------------------------------------------------------------------------------------------

Record = dict[str, Any]


def production_path(name: str) -> Path:
    """The record of ``name``'s production server (it may not exist)."""
    return local_serving_dir() / f"{name}.json"


def _candidate_path(name: str, pid: int) -> Path:
    return local_serving_dir() / f"{name}.candidate-{pid}.json"


@contextlib.contextmanager
def serving_lock(name: str) -> Iterator[None]:
    """Hold the lock on ``name``'s records for the block: an exclusive ``flock`` of
    ``<name>.lock``, so one process at a time reads and rewrites them. Not re-entrant."""
    folder = local_serving_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_record(path: Path, record: Record) -> None:
    """Replace ``path`` with ``record`` as JSON in one rename: a reader sees the old file or the
    new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_record(path: Path) -> Record | None:
    """The record in ``path``, or None when there is none (or it is not a record)."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        logger.warning("%s is not a serving record; ignored", path)
        return None
    return record if isinstance(record, dict) and "pid" in record else None


def _runs(record: Mapping[str, Any]) -> bool:
    """The recorded server still runs: its pid is alive and still the same process."""
    pid = int(record["pid"])
    return pid_alive(pid) and same_process(pid, record.get("start_time"))


def production_record(name: str) -> Record | None:
    """The record of ``name``'s production server, if that server still runs.

    A stale record (its process is gone, or its pid now belongs to another process) is removed
    with the model folder it fetched, and logged.
    """
    path = production_path(name)
    if not path.is_file():
        return None
    with serving_lock(name):
        record = read_record(path)
        if record is None or _runs(record):
            return record
        path.unlink(missing_ok=True)
    logger.warning(
        "dropped the stale production record of %s: pid %s (%s) no longer runs",
        name,
        record["pid"],
        record.get("endpoint"),
    )
    _remove_model_dir(record)
    return None


def candidate_records(name: str) -> list[Record]:
    """The records of ``name``'s servers that are not production (running or not)."""
    found = (read_record(p) for p in sorted(local_serving_dir().glob(f"{name}.candidate-*.json")))
    return [r for r in found if r is not None]


def _forget(name: str, pid: int) -> None:
    """Remove the records of ``name`` that point at server ``pid``."""
    if not local_serving_dir().is_dir():
        return
    with serving_lock(name):
        _candidate_path(name, pid).unlink(missing_ok=True)
        production = read_record(production_path(name))
        if production is not None and int(production["pid"]) == pid:
            production_path(name).unlink(missing_ok=True)
            logger.info("removed the production record of %s (pid %d stopped)", name, pid)


def _remove_model_dir(record: Mapping[str, Any]) -> None:
    if record.get("model_dir"):
        shutil.rmtree(record["model_dir"], ignore_errors=True)


def _healthy(endpoint: str, *, timeout: float = 2.0) -> bool:
    try:
        return requests.get(f"{endpoint}/health", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class LocalVLLMTarget:
    """Serve the model with a vLLM OpenAI server process on this machine.

    Production and candidates are separate processes on separate ports; which is which lives
    in the serving records (see the module's docstring), so every step of a run, each its own
    process, and every later run sees the same state.

    Args:
        python: Interpreter with vLLM; defaults to ``$MODELGATE_VLLM_PYTHON``. Anything that
            takes vLLM's OpenAI server arguments and answers ``/health`` will do (tests use a
            stand-in).
        host: Interface to bind (loopback by default).
        port: Port; a free one when None, or when production already listens on it.
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

        When ``spec.name`` has a production server that runs and answers ``/health``, the new
        server is a candidate beside it, on its own port: ``details["role"]`` is
        ``"candidate"`` and ``details["production_pid"]``/``["production_endpoint"]`` name
        production, which keeps serving. Otherwise the role is ``"first"``. Either way
        :attr:`Deployment.endpoint` reaches the new server, and it is not production until
        :meth:`promote`.

        Raises:
            ConfigError: The fetched folder is no model (no config.json).
            StorageError: KServe's downloader could not fetch the URI completely.
            DeployError: The server exited during start-up (the log tail is in the message).
            DeployTimeoutError: Not healthy within ``startup_timeout``.
        """
        production = production_record(spec.name)
        if production is not None and not _healthy(production["endpoint"]):
            logger.warning(
                "the production server of %s (pid %s at %s) does not answer /health: the new "
                "server starts as the first; promoting it stops that one",
                spec.name,
                production["pid"],
                production["endpoint"],
            )
            production = None
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
            return self._start(
                spec,
                model_dir=model_dir,
                model_root=model_root,
                log_dir=log_dir,
                production=production,
            )

    @staticmethod
    @contextlib.contextmanager
    def _removing_on_error(model_root: Path) -> Iterator[None]:
        try:
            yield
        except BaseException:
            shutil.rmtree(model_root, ignore_errors=True)
            raise

    def _port(self, production: Record | None) -> int:
        taken = production["endpoint"].rsplit(":", 1)[-1] if production else None
        if self.port and str(self.port) != taken:
            return self.port
        return free_port(self.host)

    def _start(
        self,
        spec: DeploySpec,
        *,
        model_dir: str,
        model_root: Path,
        log_dir: Path,
        production: Record | None,
    ) -> Deployment:
        port = self._port(production)
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
        record: Record = {
            "name": spec.name,
            "endpoint": endpoint,
            "model": spec.name,
            "pid": proc.pid,
            "pgid": proc.pid,
            "start_time": start_time(proc.pid),
            "model_dir": str(model_root),
            "storage_uri": spec.storage_uri,
            "run_id": spec.run_id,
            "log": str(log_path),
            "started": _now(),
        }
        try:  # before the wait: whoever ends the run finds the server even if this step is killed
            record_server(
                proc.pid,
                pgid=proc.pid,
                name=spec.name,
                run_id=spec.run_id,
                endpoint=endpoint,
                log=str(log_path),
                model_dir=str(model_root),
            )
            with serving_lock(spec.name):
                write_record(_candidate_path(spec.name, proc.pid), record)
        except BaseException:
            self._stop_failed(spec.name, proc.pid)
            raise

        def healthy() -> bool:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise DeployError(
                    f"vLLM exited with code {proc.returncode} during start-up:\n{tail}"
                )
            return _healthy(endpoint)

        try:
            wait_until(
                healthy,
                timeout=self.startup_timeout,
                interval=1.0,
                what=f"vLLM /health at {endpoint}",
                on_timeout=DeployTimeoutError,
            )
        except BaseException:
            self._stop_failed(spec.name, proc.pid)
            raise
        ready = round(time.monotonic() - started, 3)
        role = "candidate" if production else "first"
        logger.info("vLLM ready at %s after %.1fs (pid %d, %s)", endpoint, ready, proc.pid, role)
        details: dict[str, Any] = {
            "role": role,
            "run_id": spec.run_id,
            "pid": proc.pid,
            "pgid": proc.pid,
            "start_time": record["start_time"],
            "started": record["started"],
            "log": str(log_path),
            "command": cmd,
            "storage_uri": spec.storage_uri,
            "model_dir": str(model_root),
        }
        if production:
            details["production_pid"] = production["pid"]
            details["production_endpoint"] = production["endpoint"]
        return Deployment(
            target="local",
            name=spec.name,
            endpoint=endpoint,
            model=spec.name,
            ready_seconds=ready,
            details=details,
        )

    @staticmethod
    def _stop_failed(name: str, pid: int) -> None:
        """Stop a server that never became healthy and forget it (its folder goes with the
        deploy's own clean-up)."""
        stop_process_group(pid, timeout=STOP_TIMEOUT)
        record_stopped(pid)
        _forget(name, pid)

    def promote(self, deployment: Deployment) -> str:
        """Make the candidate ``deployment`` production for its name, then stop the previous
        production server (its whole process group) and remove its fetched model.

        Idempotent: promoting production again changes nothing.

        Returns:
            One line for the console.

        Raises:
            DeployError: The candidate no longer runs (production is left as it is).
        """
        name, details = deployment.name, deployment.details
        pid = int(details["pid"])
        with serving_lock(name):
            if not _runs(details):
                raise DeployError(
                    f"the candidate server of {name} (pid {pid}) no longer runs, so it cannot be "
                    "promoted; production is left as it is"
                )
            previous = read_record(production_path(name))
            if previous is not None and int(previous["pid"]) == pid:
                return f"local vLLM pid {pid} at {deployment.endpoint} is already production"
            record = read_record(_candidate_path(name, pid)) or {
                "name": name,
                "endpoint": deployment.endpoint,
                "model": deployment.model,
                "pid": pid,
                "pgid": int(details.get("pgid") or pid),
                "start_time": details.get("start_time"),
                "model_dir": details.get("model_dir"),
                "storage_uri": details.get("storage_uri"),
                "run_id": details.get("run_id"),
                "log": details.get("log"),
                "started": details.get("started"),
            }
            write_record(production_path(name), {**record, "promoted": _now()})
            _candidate_path(name, pid).unlink(missing_ok=True)
        done = f"local vLLM pid {pid} at {deployment.endpoint} is production for {name}"
        if previous is None:
            return done
        if _runs(previous):
            stop_server(previous, name=name)
            return f"{done}; stopped the previous production server (pid {previous['pid']})"
        _remove_model_dir(previous)
        return f"{done}; the previous production server (pid {previous['pid']}) had stopped"

    def teardown(self, deployment: Deployment) -> None:
        """Stop the server process group, remove its fetched model and forget its records
        (idempotent)."""
        stop_server(deployment.details, name=deployment.name)

    def rollback(self, deployment: Deployment) -> str:
        """Stop the candidate ``deployment``; production, if any, keeps serving."""
        self.teardown(deployment)
        pid = deployment.details.get("pid")
        production = production_record(deployment.name)
        if production is None:
            return f"stopped the local vLLM server (pid {pid})"
        return (
            f"stopped the candidate vLLM server (pid {pid}); production (pid "
            f"{production['pid']}) keeps serving at {production['endpoint']}"
        )

    def rollback_run(self, name: str, namespace: str | None, run_id: str) -> str:
        """Stop every server run ``run_id`` started for ``name`` that is not production.

        Found in the candidate records and in ``$MODELGATE_SERVERS_FILE`` (the record of the
        run's servers, when set). ``namespace`` means nothing on one machine. Idempotent.

        Returns:
            One line saying what was stopped, or that there was nothing to undo.
        """
        del namespace
        production = production_record(name)
        keep = int(production["pid"]) if production else None
        found: dict[int, Record] = {}
        for record in candidate_records(name):
            if record.get("run_id") == run_id:
                found[int(record["pid"])] = record
        servers = os.environ.get(SERVERS_FILE_ENV)
        for entry in recorded_servers(servers) if servers else []:
            if entry.get("name") == name and entry.get("run_id") == run_id:
                found.setdefault(int(entry["pid"]), entry)
        stopped = []
        for pid, record in sorted(found.items()):
            if pid == keep:
                continue
            if _runs(record):
                stopped.append(pid)
            stop_server(record, name=name)
        if not stopped:
            return f"nothing to undo: run {run_id} left no local server of {name} running"
        what = f"stopped the vLLM server(s) of {name} run {run_id} started: pid " + ", ".join(
            map(str, stopped)
        )
        if production is None:
            return what
        return f"{what}; production (pid {keep}) keeps serving at {production['endpoint']}"


def stop_server(details: Mapping[str, Any], *, name: str | None = None) -> None:
    """Stop a local vLLM server's whole process group, remove its fetched model and forget its
    serving records (idempotent).

    A server whose pid now belongs to another process (the recorded ``start_time`` differs) is
    not signalled.

    Args:
        details: A local :class:`Deployment`'s ``details``, a serving record, or an entry of
            the run's record of started servers (:func:`modelgate.processes.recorded_servers`):
            ``pid``, ``pgid``, ``start_time``, ``model_dir``.
        name: The name it serves under (else ``details["name"]``): its records are removed.
    """
    pid = details.get("pid")
    if pid:
        if same_process(int(pid), details.get("start_time")):
            stop_process_group(int(details.get("pgid") or pid), timeout=STOP_TIMEOUT)
            logger.info("stopped vLLM pid %s", pid)
        record_stopped(int(pid))
    _remove_model_dir(details)
    name = name or details.get("name")
    if name and pid:
        _forget(name, int(pid))
