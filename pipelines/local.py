"""Run the release pipeline on this machine with ``kfp.local.SubprocessRunner``.

Every component runs as a subprocess of the current Python (``use_venv=False``), so the
environment must have modelgate and its step libraries installed. Step status and timing come
from kfp.local's task log records; step outputs from each task's ``executor_output.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from modelgate.pipelines import PIPELINES_DIR

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"^Executing task '?([\w.-]+)'?")
_END = re.compile(r"^Task '?([\w.-]+)'? finished with status (\w+)")


@dataclass
class StepResult:
    """One task of a local run."""

    task: str
    display_name: str
    status: str = "not run"
    seconds: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str = ""  # the failed step's one-line reason (modelgate.logs excepthook)


@dataclass
class RunResult:
    """A local run: per-step results in pipeline order, and the overall status."""

    run_dir: Path | None
    steps: list[StepResult]
    succeeded: bool
    seconds: float
    log_file: Path | None = None

    def step(self, display_name: str) -> StepResult | None:
        """The step with this display name, if the pipeline has it."""
        return next((s for s in self.steps if s.display_name == display_name), None)


def display_names(pipeline_yaml: Path) -> dict[str, str]:
    """Map each task key of the compiled pipeline (all DAG levels) to its display name."""
    spec = next(yaml.safe_load_all(pipeline_yaml.read_text()))
    names: dict[str, str] = {}
    dags = [spec["root"]["dag"]] + [
        c["dag"] for c in spec.get("components", {}).values() if "dag" in c
    ]
    for dag in dags:
        for key, task in dag.get("tasks", {}).items():
            if "componentRef" in task and not key.startswith("condition-"):
                names[key] = task.get("taskInfo", {}).get("name", key)
    return names


class _TaskObserver(logging.Filter):
    """Watches kfp.local's task records on the root logger (its handlers are swapped per task)."""

    def __init__(self, on_event: Callable[[str, str, str | None], None]) -> None:
        super().__init__()
        self.on_event = on_event

    def filter(self, record: logging.LogRecord) -> bool:
        message = _ANSI.sub("", record.getMessage())
        if m := _START.match(message):
            self.on_event("start", m.group(1), None)
        elif m := _END.match(message):
            self.on_event("end", m.group(1), m.group(2))
        return True


@contextlib.contextmanager
def _output_to(log_file: Path | None) -> Iterator[None]:
    """Send fd 1 and 2 (kfp.local's and the components' chatter) to ``log_file``."""
    if log_file is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log_file.open("ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _read_outputs(task_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    path = task_dir / "executor_output.json"
    if not path.is_file():
        return {}, {}
    data = json.loads(path.read_text())
    artifacts = {
        name: dict((spec.get("artifacts") or [{}])[0].get("metadata") or {})
        for name, spec in (data.get("artifacts") or {}).items()
    }
    return dict(data.get("parameterValues") or {}), artifacts


def _newest_run_dir(pipeline_root: Path, before: set[Path]) -> Path | None:
    """The folder kfp.local made for this run: the newest one that was not there before."""
    new_dirs = [p for p in pipeline_root.iterdir() if p.is_dir() and p not in before]
    return max(new_dirs, key=lambda p: p.stat().st_mtime) if new_dirs else None


def run_pipeline_locally(
    pipeline_func: Any,
    *,
    arguments: dict[str, Any],
    pipeline_yaml: Path,
    pipeline_root: Path,
    log_file: Path | None = None,
    on_step: Callable[[StepResult], None] | None = None,
) -> RunResult:
    """Run ``pipeline_func`` with kfp.local and collect per-step results.

    Args:
        pipeline_func: The ``@dsl.pipeline`` function.
        arguments: Pipeline parameters.
        pipeline_yaml: Its compiled YAML (for step display names and order).
        pipeline_root: Where kfp.local writes task outputs.
        log_file: Where kfp.local's and the components' output goes (None: the console).
        on_step: Called when a step finishes.

    Returns:
        The run result; ``succeeded`` is False if any task failed.
    """
    from kfp import local

    from modelgate.logs import ERROR_FILE_ENV

    pipeline_root.mkdir(parents=True, exist_ok=True)
    # every step's excepthook appends its reason here; tasks run one at a time
    error_file = pipeline_root / f".errors-{os.getpid()}-{time.time_ns()}"
    error_file.write_text("")
    names = display_names(pipeline_yaml)
    steps = {key: StepResult(task=key, display_name=name) for key, name in names.items()}
    started: dict[str, float] = {}
    run_dir: Path | None = None

    def on_event(kind: str, task: str, status: str | None) -> None:
        nonlocal run_dir
        step = steps.setdefault(task, StepResult(task=task, display_name=task))
        if kind == "start":
            started[task] = time.monotonic()
            step.status = "running"
            return
        step.status = (status or "").lower()
        step.seconds = round(time.monotonic() - started.get(task, time.monotonic()), 1)
        reasons = [ln for ln in error_file.read_text().splitlines() if ln.strip()]
        error_file.write_text("")
        if step.status == "failure":
            step.error = reasons[-1] if reasons else "no reason reported; see the step log"
        run_dir = run_dir or _newest_run_dir(pipeline_root, before)
        if run_dir is not None:
            step.outputs, step.artifacts = _read_outputs(run_dir / task)
        if on_step:
            on_step(step)

    observer = _TaskObserver(on_event)
    root_logger = logging.getLogger()
    before = {p for p in pipeline_root.iterdir() if p.is_dir()}
    t0 = time.monotonic()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        raise_on_error=False,
    )
    root_logger.addFilter(observer)
    previous_error_file = os.environ.get(ERROR_FILE_ENV)
    os.environ[ERROR_FILE_ENV] = str(error_file)
    try:
        with _output_to(log_file):
            pipeline_func(**arguments)
    finally:
        root_logger.removeFilter(observer)
        if previous_error_file is None:
            os.environ.pop(ERROR_FILE_ENV, None)
        else:
            os.environ[ERROR_FILE_ENV] = previous_error_file
        error_file.unlink(missing_ok=True)
    run_dir = run_dir or _newest_run_dir(pipeline_root, before)
    if run_dir is not None:
        # outputs of a task whose end record was not seen (seconds is set with the end record)
        for key, step in steps.items():
            if step.seconds is None:
                step.outputs, step.artifacts = _read_outputs(run_dir / key)
    # steps in the order they ran; those that did not run after them, in pipeline order
    position = {key: i for i, key in enumerate(names)}
    ordered = sorted(
        steps.values(),
        key=lambda s: (
            (0, started[s.task], 0) if s.task in started else (1, 0, position.get(s.task, 1 << 30))
        ),
    )
    succeeded = all(s.status in {"success", "not run"} for s in ordered)
    return RunResult(
        run_dir=run_dir,
        steps=ordered,
        succeeded=succeeded,
        seconds=round(time.monotonic() - t0, 1),
        log_file=log_file,
    )


def release_yaml() -> Path:
    """Path of the compiled release pipeline."""
    return PIPELINES_DIR / "release.yaml"
