"""Where modelgate keeps its local data: runs, the local model store and the embedded registry.

One folder per user, whatever directory a command starts in, so a second local release finds
the first one's registry (and its production version): ``$MODELGATE_HOME``, else the
platform's user data folder (``$XDG_DATA_HOME/modelgate`` or ``~/.local/share/modelgate`` on
Linux, ``~/Library/Application Support/modelgate`` on macOS, ``%LOCALAPPDATA%\\modelgate`` on
Windows).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: Environment variable naming the local data folder.
HOME_ENV = "MODELGATE_HOME"
APP_NAME = "modelgate"


def user_data_dir() -> Path:
    """The platform's per-user data folder for modelgate (not created)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / APP_NAME
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_NAME
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / APP_NAME


def data_home() -> Path:
    """``$MODELGATE_HOME`` if set, else :func:`user_data_dir`; absolute, not created."""
    env = os.environ.get(HOME_ENV)
    return (Path(env).expanduser() if env else user_data_dir()).absolute()


def local_pipeline_root() -> Path:
    """The default pipeline root of local runs: step outputs, ``model-store/`` and ``registry/``."""
    return data_home()


def local_model_store(pipeline_root: Path | None = None) -> Path:
    """The model store of local runs that name none: ``model-store/`` under ``pipeline_root``
    (default :func:`local_pipeline_root`)."""
    return (pipeline_root or local_pipeline_root()) / "model-store"


def local_serving_dir() -> Path:
    """Where the local deploy target keeps its records of the vLLM servers it runs, one JSON file
    per served name (``<name>.json``: the production server), beside the candidates'
    records and locks (not created).

    Under :func:`data_home`, not the pipeline root: a port and a process belong to the machine,
    so every local run of this user finds the server an earlier ``--keep-serving`` run left.
    """
    return data_home() / "serving"


def demo_cache() -> Path:
    """Where the demo keeps its tiny model, task and mirror."""
    return data_home() / "demo-cache"
