"""Child processes: free ports, liveness, stopping process groups (servers, mirrors), turning
termination signals into exceptions, and the record of the servers a local run started.

Record of started servers
    A step that starts a server in its own session (the local deploy target's vLLM) appends a
    JSON line to ``$MODELGATE_SERVERS_FILE`` (:func:`record_server`: pid, process group, start
    time, the name it serves and the pipeline run that started it) before it waits for the
    server, and another when it stops it (:func:`record_stopped`). ``modelgate run`` sets that
    variable to a file under the pipeline root, so it finds every server still running when the
    run ends or is interrupted, even when the step that started it was killed
    (:func:`recorded_servers`). The variable also marks every process the run starts (they
    inherit it), so an interrupted run finds its step processes after their parents died
    (:func:`marked_processes`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelgate.retry import wait_until

logger = logging.getLogger(__name__)

SERVERS_FILE_ENV = "MODELGATE_SERVERS_FILE"
_PROC = Path("/proc")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------
# The process table (Linux /proc; elsewhere only what kill(2) tells)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """One process as ``/proc/<pid>/stat`` shows it."""

    pid: int
    state: str  # R, S, D, Z (zombie), ...
    ppid: int
    pgid: int
    sid: int
    start_time: int  # clock ticks after boot: tells a reused pid from the original process

    @property
    def gone(self) -> bool:
        """Exited: a zombie (or dead) entry nobody reaped yet."""
        return self.state in ("Z", "X")


def proc_stat(pid: int) -> ProcStat | None:
    """``pid``'s entry in ``/proc``, or None (no such process, or no ``/proc``)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and ")"
    return ProcStat(
        pid=pid,
        state=fields[0],
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        sid=int(fields[3]),
        start_time=int(fields[19]),
    )


def _process_table() -> list[ProcStat] | None:
    """Every process in ``/proc``, or None where there is no ``/proc``."""
    if not (_PROC / "self" / "stat").is_file():
        return None
    table = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))) is not None:
            table.append(stat)
    return table


def start_time(pid: int) -> int | None:
    """When ``pid`` started (``/proc`` clock ticks), None where unknown."""
    stat = proc_stat(pid)
    return stat.start_time if stat else None


def same_process(pid: int, started: int | None) -> bool:
    """Whether ``pid`` is still the process that started at ``started`` (:func:`start_time`).

    False only when ``pid`` now belongs to a process that started at another time: the pid was
    reused. True when either time is unknown (no ``/proc``, no such process, nothing recorded).
    """
    now = start_time(pid)
    return started is None or now is None or now == started


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is a child of this process that has exited."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def pid_alive(pid: int) -> bool:
    """True if a process with ``pid`` exists and has not exited (zombies count as exited)."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = proc_stat(pid)
    return stat is None or not stat.gone


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``; ``[pgid]`` for a group that
    exists where there is no ``/proc`` to list it."""
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass  # it exists
    table = _process_table()
    if table is None:
        return [pgid]
    return sorted(p.pid for p in table if p.pgid == pgid and not p.gone)


def stop_process_group(pgid: int, *, timeout: float = 20.0, kill_timeout: float = 5.0) -> None:
    """Stop every process of process group ``pgid`` (a server started with its own session).

    SIGTERM goes to the whole group; then every member, not only the leader, is waited for.
    Whatever is left after ``timeout`` seconds gets SIGKILL (and ``kill_timeout`` more seconds).
    Exited members that nobody reaps (zombies) count as gone. Idempotent.
    """
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, kill_timeout)):
        if not group_members(pgid):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            logger.warning("process group %d is not this user's; left alone", pgid)
            return
        try:
            wait_until(
                lambda: not group_members(pgid),
                timeout=wait,
                interval=0.1,
                what=f"process group {pgid} to exit",
            )
            return
        except TimeoutError:
            logger.warning(
                "process group %d: %s still running %.0fs after %s",
                pgid,
                group_members(pgid),
                wait,
                sig.name,
            )


def _environ_has(pid: int, marker: bytes) -> bool:
    try:
        return marker in (_PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:  # gone, or another user's
        return False


def marked_processes(name: str, value: str) -> list[ProcStat]:
    """Live processes other than this one whose environment has ``name=value`` (Linux only;
    ``[]`` elsewhere). Children inherit the environment, so this finds every process a run
    started, also those whose parent died."""
    marker = f"{name}={value}".encode()
    me = os.getpid()
    return [
        p
        for p in _process_table() or []
        if p.pid != me and not p.gone and _environ_has(p.pid, marker)
    ]


def stop_processes(
    pids: Iterable[int], *, grace: float = 0.0, sig: int = signal.SIGINT, timeout: float
) -> None:
    """Stop ``pids``: give them ``grace`` seconds to end by themselves, then send ``sig`` and
    wait until all are gone; SIGKILL the rest after ``timeout`` seconds. SIGINT lets Python
    processes run their ``finally`` blocks."""
    targets = {pid: start_time(pid) for pid in pids}

    def alive() -> list[int]:
        # a pid that now belongs to another process (a different start time) is gone
        return [
            pid
            for pid, started in targets.items()
            if pid_alive(pid) and (started is None or start_time(pid) in (None, started))
        ]

    if grace > 0:
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not alive(), timeout=grace, interval=0.1, what="processes to end")
    for signum, wait in ((sig, timeout), (signal.SIGKILL, 5.0)):
        left = alive()
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not alive(), timeout=wait, interval=0.1, what="processes to exit")
            return
        logger.warning(
            "%s still running %.0fs after %s", alive(), wait, signal.Signals(signum).name
        )


# --------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------


@dataclass
class Interruption:
    """What :func:`signals_raise` caught: the first signal's number, None while none came."""

    signum: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


_active: Interruption | None = None  # the outermost signals_raise block's record


@contextlib.contextmanager
def signals_raise(
    signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[Interruption]:
    """Within the block, the first of ``signals`` raises ``KeyboardInterrupt`` in the main thread.

    So a SIGTERM (a KFP cancel, ``kill``, a service manager) unwinds like Ctrl-C: ``finally``
    blocks and rollbacks run instead of the process dying where it stands. Later signals are
    logged and ignored until the block ends, so the clean-up the first one started is not cut
    short. The exception is a plain ``KeyboardInterrupt`` (``subprocess.Popen`` treats only
    that type as an interrupt and does not wait for its child); the yielded
    :class:`Interruption` says which signal came. Nested blocks share the outermost one's
    handler and :class:`Interruption`. Outside the main thread this does nothing.
    """
    global _active
    if threading.current_thread() is not threading.main_thread():
        yield Interruption()
        return
    if _active is not None:  # nested: the outermost block's handler and record stay
        yield _active
        return
    caught = _active = Interruption()

    def handler(signum: int, frame: Any) -> None:
        if caught.signum is not None:
            name = signal.Signals(signum).name
            logger.warning("%s received while stopping; finishing the clean-up first", name)
            return
        caught.signum = signum
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield caught
    finally:
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)
        _active = None


# --------------------------------------------------------------------------------------------
# The record of started servers
# --------------------------------------------------------------------------------------------


def _append(path: str, entry: dict[str, Any]) -> None:
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)  # one write of one line: appends of several processes never mix
        os.fsync(fd)
    finally:
        os.close(fd)


def record_server(
    pid: int,
    *,
    pgid: int | None = None,
    name: str | None = None,
    run_id: str | None = None,
    **details: Any,
) -> None:
    """Note in ``$MODELGATE_SERVERS_FILE`` (when set) that server ``pid`` started.

    Args:
        pid: The server process.
        pgid: Its process group (``pid`` when it leads its own session).
        name: The name it serves under, if any.
        run_id: The pipeline run that started it, if known: that run's rollback step stops the
            servers it started and did not promote
            (:meth:`~modelgate.deploy.local.LocalVLLMTarget.rollback_run`).
        details: JSON-compatible facts the one stopping it needs (its log, its model folder).
    """
    path = os.environ.get(SERVERS_FILE_ENV)
    if not path:
        return
    entry = {
        "event": "started",
        "pid": pid,
        "pgid": pid if pgid is None else pgid,
        "start_time": start_time(pid),
        "time": time.time(),
        "name": name,
        "run_id": run_id,
        **details,
    }
    _append(path, entry)


def record_stopped(pid: int) -> None:
    """Note in ``$MODELGATE_SERVERS_FILE`` (when set) that server ``pid`` was stopped."""
    path = os.environ.get(SERVERS_FILE_ENV)
    if path:
        _append(path, {"event": "stopped", "pid": pid, "time": time.time()})


def recorded_servers(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The servers recorded in ``path`` as started and not (yet) as stopped, oldest first.

    A server whose pid now belongs to another process (a different start time) is left out.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    running: dict[int, dict[str, Any]] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if entry.get("event") == "started":
            running[int(entry["pid"])] = entry
        elif entry.get("event") == "stopped":
            running.pop(int(entry["pid"]), None)
    return [e for e in running.values() if _same_process(e)]


def _same_process(entry: dict[str, Any]) -> bool:
    return same_process(int(entry["pid"]), entry.get("start_time"))


@contextlib.contextmanager
def servers_file(path: Path) -> Iterator[Path]:
    """Point ``$MODELGATE_SERVERS_FILE`` at ``path`` for the block (restored afterwards)."""
    previous = os.environ.get(SERVERS_FILE_ENV)
    os.environ[SERVERS_FILE_ENV] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(SERVERS_FILE_ENV, None)
        else:
            os.environ[SERVERS_FILE_ENV] = previous
