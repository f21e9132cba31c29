"""The offline demo: a tiny model behind a local Hub mirror, released with the real pipeline.

Used by ``modelgate demo`` (``make demo``) and the end-to-end tests, so both run the same path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEMO_REPO_ID = "modelgate/tiny-llama"
DEMO_TASK = "modelgate_addition"
#: The trained tiny model scores well above this; chance is 1/19.
DEMO_MIN_ACC = 0.3
DEMO_MIN_RECOVERY = 0.9
DEMO_MAX_MODEL_LEN = 128


DEMO_MIN_VS_PRODUCTION = 0.95
#: The demo's serving gate: a few seconds of load on the tiny model served by vLLM on CPU, with
#: bounds any machine meets (a real endpoint's are in docs/gates.md); it shows the table.
DEMO_SERVING: dict[str, Any] = {
    "load": {
        "profile": "constant",
        "rate": 2,
        "duration_s": 4,
        "prompt_tokens": 16,
        "output_tokens": 8,
    },
    "thresholds": [
        {"metric": "ttft_ms", "stat": "p95", "max": 30_000},
        {"metric": "itl_ms", "stat": "p95", "max": 5_000},
        {"metric": "error_rate", "max": 0.05},
    ],
}


def demo_thresholds(
    *,
    min_acc: float = DEMO_MIN_ACC,
    min_recovery: float = DEMO_MIN_RECOVERY,
    min_vs_production: float | None = DEMO_MIN_VS_PRODUCTION,
    serving: bool = True,
) -> str:
    """The gate config of the demo as JSON: a floor, recovery vs the base model and, from the
    second release on, the candidate vs the version in production; and a serving gate."""
    threshold: dict[str, float | str] = {
        "task": DEMO_TASK,
        "metric": "acc",
        "min": min_acc,
        "min_recovery": min_recovery,
    }
    if min_vs_production is not None:
        threshold["min_vs_production"] = min_vs_production
    config: dict[str, Any] = {"name": "demo", "thresholds": [threshold]}
    if serving:
        config["serving"] = DEMO_SERVING
    return json.dumps(config)


@dataclass
class DemoEnvironment:
    """What a demo run needs: the mirror endpoint, the repo on it, and the task folder."""

    endpoint: str
    repo_id: str
    commit_sha: str
    task_dir: Path
    model_dir: Path


@contextlib.contextmanager
def demo_environment(
    cache_dir: str | os.PathLike[str], *, train_seconds: float = 60.0
) -> Iterator[DemoEnvironment]:
    """Build (or reuse) the tiny model, write the task, and serve the model from an olah mirror.

    The mirror is stopped when the context exits.

    Args:
        cache_dir: Where the model, task and mirror repositories live between runs.
        train_seconds: CPU training budget of a fresh tiny model.
    """
    from modelgate.testing.hub_mirror import LocalHubMirror
    from modelgate.testing.tasks import write_addition_task
    from modelgate.testing.tiny_model import build_tiny_model

    cache = Path(cache_dir)
    info = build_tiny_model(cache / "tiny-llama", train_seconds=train_seconds)
    logger.info(
        "tiny model %s (%s; greedy accuracy %.2f)",
        info.path,
        "cached" if info.cached else "trained",
        info.greedy_accuracy,
    )
    task_dir = cache / "tasks"
    write_addition_task(task_dir)
    with LocalHubMirror(cache / "hub-repos") as mirror:
        published = mirror.publish(info.path, repo_id=DEMO_REPO_ID)
        yield DemoEnvironment(
            endpoint=published.endpoint,
            repo_id=published.repo_id,
            commit_sha=published.commit_sha,
            task_dir=task_dir,
            model_dir=info.path,
        )


def write_calibration(path: Path) -> Path:
    """Calibration samples in the tiny model's domain (for W8A8/W4A16)."""
    lines = [json.dumps({"text": f"{a}+{b}={a + b}."}) for a in range(10) for b in range(10)]
    path.write_text("\n".join(lines) + "\n")
    return path


def demo_release(
    stack: contextlib.ExitStack,
    *,
    cache_dir: Path,
    train_seconds: float = 60.0,
    quant_scheme: str = "FP8_DYNAMIC",
    min_acc: float = DEMO_MIN_ACC,
    vllm_python: str = "",
) -> tuple[DemoEnvironment, Any]:
    """Enter the demo environment on ``stack`` and return it with the release parameters of
    the demo run (the local mirror, the addition task, the demo gate, a local vLLM)."""
    from modelgate.constants import REGISTRY_URL_ENV, SMOKE_PROMPT
    from modelgate.params import ReleaseParams
    from modelgate.quantize import NEEDS_CALIBRATION

    env = stack.enter_context(demo_environment(cache_dir, train_seconds=train_seconds))
    calibration = ""
    if quant_scheme in NEEDS_CALIBRATION:
        calibration = str(write_calibration(env.task_dir / "calibration.jsonl"))
    release = ReleaseParams(
        model_id=env.repo_id,
        revision="main",
        quant_scheme=quant_scheme,
        calibration_data=calibration,
        eval_tasks=DEMO_TASK,
        eval_task_dir=str(env.task_dir),
        eval_backend="hf",
        eval_device="cpu",
        eval_batch_size=16,
        eval_offline=True,
        thresholds=demo_thresholds(min_acc=min_acc),
        registry_url=os.environ.get(REGISTRY_URL_ENV, ""),
        deploy_target="local",
        deploy_name="tiny-llama",
        max_model_len=DEMO_MAX_MODEL_LEN,
        hf_endpoint=env.endpoint,
        vllm_python=vllm_python,
        smoke_prompt=SMOKE_PROMPT,
    )
    return env, release
