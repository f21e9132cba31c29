"""Child processes: free ports, liveness, and stopping a process group (servers, mirrors)."""

from __future__ import annotations

import logging
import os
import signal
import socket

from modelgate.retry import wait_until

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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
