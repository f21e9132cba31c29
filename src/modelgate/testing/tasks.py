"""A local lm-eval task the tiny model can pass: single-digit addition as multiple choice.

:func:`write_addition_task` writes ``modelgate_addition.yaml`` and ``modelgate_addition.jsonl``
into a directory; pass that directory to ``lm_eval.tasks.TaskManager(include_path=...)``. Each
document is scored as 19-way multiple choice: context ``"3+4="``, continuations ``"0."`` ..
``"18."`` with an empty ``target_delimiter`` (exactly the training format of
:func:`modelgate.testing.tiny_model.build_tiny_model`, whose tokenizer prepends BOS). Chance
level is 1/19 (about 0.053) for ``acc``. The trailing ``"."`` keeps ``"1."`` from being a prefix of
``"13."``: lm-eval sums continuation log-likelihoods without EOS, so bare ``"1"`` would always
outscore ``"13"``.

The data is read with the ``json`` dataset builder from an absolute local path, so evaluation works
with ``HF_HUB_OFFLINE=1`` and ``HF_DATASETS_OFFLINE=1``.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import yaml

from modelgate.errors import ConfigError, EvaluationError

logger = logging.getLogger(__name__)

ADDITION_TASK_NAME = "modelgate_addition"
#: Candidate answers; the index of a choice equals the sum it stands for.
ADDITION_CHOICES = [f"{s}." for s in range(19)]
CHANCE_ACCURACY = 1 / len(ADDITION_CHOICES)


def write_addition_task(task_dir: Path, *, n: int = 100, seed: int = 0) -> str:
    """Write the ``modelgate_addition`` lm-eval task (YAML + JSONL data) into ``task_dir``.

    Args:
        task_dir: Directory for the task files; created if missing. Use it as lm-eval's
            ``include_path``.
        n: Number of documents; 100 (the default) is every pair ``a, b`` in ``0..9`` in order,
            fewer draws a seeded sample of pairs.
        seed: Seed of the sample when ``n < 100``.

    Returns:
        The task name, ``"modelgate_addition"``.

    Raises:
        ConfigError: If ``n`` is not in ``1..100``.
    """
    pairs = [(a, b) for a in range(10) for b in range(10)]
    if not 1 <= n <= len(pairs):
        raise ConfigError(f"n must be between 1 and {len(pairs)}, got {n}")
    if n < len(pairs):
        pairs = sorted(random.Random(seed).sample(pairs, n))

    task_dir = Path(task_dir).resolve()
    task_dir.mkdir(parents=True, exist_ok=True)
    data_path = task_dir / f"{ADDITION_TASK_NAME}.jsonl"
    lines = [
        json.dumps({"a": a, "b": b, "answer": ADDITION_CHOICES[a + b], "label": a + b})
        for a, b in pairs
    ]
    data_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    task: dict[str, Any] = {
        "task": ADDITION_TASK_NAME,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_path)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{a}}+{{b}}=",
        "doc_to_choice": ADDITION_CHOICES,
        "doc_to_target": "label",
        "target_delimiter": "",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }
    (task_dir / f"{ADDITION_TASK_NAME}.yaml").write_text(
        yaml.safe_dump(task, sort_keys=False), encoding="utf-8"
    )
    logger.info("wrote lm-eval task %s with %d documents to %s", ADDITION_TASK_NAME, n, task_dir)
    return ADDITION_TASK_NAME


def evaluate_addition(
    model_dir: Path,
    task_dir: Path,
    *,
    batch_size: int = 32,
    dtype: str = "float32",
) -> dict[str, float]:
    """Score a local model on ``modelgate_addition`` with lm-eval's ``hf`` backend, in process.

    Set ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``/``HF_HOME`` before lm-eval and datasets are
    first imported if the run must stay offline (tests run this in a subprocess for that reason).

    Args:
        model_dir: Directory of a transformers model.
        task_dir: Directory written by :func:`write_addition_task`.
        batch_size: lm-eval batch size.
        dtype: Torch dtype name to load the model in.

    Returns:
        ``{"acc": ..., "acc_norm": ...}``.

    Raises:
        EvaluationError: If lm-eval fails or reports no accuracy.
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    try:
        results = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={Path(model_dir)},dtype={dtype}",
            tasks=[ADDITION_TASK_NAME],
            task_manager=TaskManager(include_path=str(Path(task_dir))),
            limit=None,
            batch_size=batch_size,
            device="cpu",
        )
    except Exception as e:  # lm-eval raises a wide range of types
        raise EvaluationError(f"lm-eval failed on {model_dir}: {e}") from e
    try:
        task_results = results["results"][ADDITION_TASK_NAME]
        return {
            "acc": float(task_results["acc,none"]),
            "acc_norm": float(task_results["acc_norm,none"]),
        }
    except (KeyError, TypeError) as e:
        raise EvaluationError(f"lm-eval returned no accuracy for {ADDITION_TASK_NAME}") from e
