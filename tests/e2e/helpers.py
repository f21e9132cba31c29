"""Helpers for the end-to-end tier."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelgate.demo import DEMO_MAX_MODEL_LEN, DEMO_TASK

REPO_ROOT = Path(__file__).resolve().parents[2]


def vllm_python() -> str:
    """The serving runtime's interpreter, or skip with how to get one."""
    python = os.environ.get("MODELGATE_VLLM_PYTHON", str(REPO_ROOT / ".venv-vllm/bin/python"))
    if not Path(python).is_file():
        pytest.skip(f"no vLLM runtime at {python}: run `make venvs` or set MODELGATE_VLLM_PYTHON")
    return python


def run_cli(
    *args: str, timeout: float = 1200, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``modelgate`` in a subprocess (the way users do) and capture its output.

    ``env`` adds to this process's environment.
    """
    env = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]),
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "modelgate.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def local_run_args(
    hub_mirror,
    task_dir: Path,
    root: Path,
    *options: str,
    thresholds: str,
    scheme: str = "none",
    repo_id: str | None = None,
    deploy_name: str = "tiny-llama",
) -> list[str]:
    """``modelgate run`` of the demo task against the Hub mirror, deployed on a local vLLM, with
    its artifacts under ``root``; ``options`` are appended."""
    return [
        "run",
        "--model-id",
        repo_id or hub_mirror.repo_id,
        "--hf-endpoint",
        hub_mirror.endpoint,
        "--quant-scheme",
        scheme,
        "--eval-tasks",
        DEMO_TASK,
        "--eval-task-dir",
        str(task_dir),
        "--thresholds",
        thresholds,
        "--deploy-target",
        "local",
        *local_serving_args(root, deploy_name),
        *options,
    ]


def local_serving_args(root: Path, deploy_name: str = "tiny-llama") -> list[str]:
    """How a run of this tier serves on a local vLLM, with its artifacts under ``root``."""
    return [
        "--deploy-name",
        deploy_name,
        "--max-model-len",
        str(DEMO_MAX_MODEL_LEN),
        "--vllm-python",
        vllm_python(),
        "--pipeline-root",
        str(root),
    ]
