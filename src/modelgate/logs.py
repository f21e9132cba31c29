"""Logging set-up for the CLI and components, and the one-line reason of a failed step.

Level from ``MODELGATE_LOG_LEVEL``. :func:`configure_logging` also installs an excepthook: a
step that dies of an exception still prints its traceback (to the pod log / the run log), then
one line ``modelgate: step failed: <Type>: <message>``, and appends that line to
``$MODELGATE_ERROR_FILE`` when set. ``modelgate run`` sets that file and prints each failed
step's line under the summary, so the console says why, not only where.
"""

from __future__ import annotations

import logging
import os
import sys
from types import TracebackType

LOG_LEVEL_ENV = "MODELGATE_LOG_LEVEL"
ERROR_FILE_ENV = "MODELGATE_ERROR_FILE"
ERROR_PREFIX = "modelgate: step failed: "


def error_line(exc: BaseException) -> str:
    """``<Type>: <message>`` of ``exc`` on one line (the first line of a multi-line message)."""
    message = " ".join(str(exc).split("\n", 1)[0].split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _report(
    kind: type[BaseException], exc: BaseException, tb: TracebackType | None, *, previous=None
) -> None:
    (previous or sys.__excepthook__)(kind, exc, tb)
    if isinstance(exc, KeyboardInterrupt):
        return
    line = error_line(exc)
    print(ERROR_PREFIX + line, file=sys.stderr, flush=True)
    path = os.environ.get(ERROR_FILE_ENV)
    if path:
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError:
            pass  # the traceback above is still in the log


def configure_logging(level: str | None = None) -> None:
    """Configure root logging once; ``level`` overrides ``$MODELGATE_LOG_LEVEL`` (default INFO).

    Also installs the excepthook described in the module docstring (once).
    """
    name = (level or os.environ.get(LOG_LEVEL_ENV) or "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, name, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if getattr(sys.excepthook, "__name__", "") != "_modelgate_excepthook":
        previous = sys.excepthook

        def _modelgate_excepthook(
            kind: type[BaseException], exc: BaseException, tb: TracebackType | None
        ) -> None:
            _report(kind, exc, tb, previous=previous)

        sys.excepthook = _modelgate_excepthook
