"""Real vLLM (CPU) serving the tiny model: smoke test and lm-eval through local-completions."""

from __future__ import annotations

import pytest

from modelgate.deploy.smoke import smoke_test
from modelgate.evaluate import evaluate_model
from modelgate.testing.tasks import ADDITION_TASK_NAME

pytestmark = pytest.mark.e2e


def test_smoke_test_against_vllm(served_tiny_model):
    texts = smoke_test(served_tiny_model.endpoint, model=served_tiny_model.model)
    assert texts["completion"].strip() and texts["chat"].strip()


def test_local_completions_matches_hf_backend(served_tiny_model, tiny_model_dir, addition_task_dir):
    common = {"tasks": [ADDITION_TASK_NAME], "task_dir": str(addition_task_dir), "limit": 50}
    remote = evaluate_model(
        served_tiny_model.model,
        backend="local-completions",
        base_url=served_tiny_model.endpoint,
        tokenizer=str(tiny_model_dir),
        batch_size=1,
        **common,
    )
    local = evaluate_model(
        str(tiny_model_dir), backend="hf", device="cpu", batch_size=16, dtype="float32", **common
    )
    acc_remote = remote.get(ADDITION_TASK_NAME, "acc").value
    acc_local = local.get(ADDITION_TASK_NAME, "acc").value
    assert acc_remote > 0.3, "vLLM-served model should beat chance (1/19) clearly"
    assert abs(acc_remote - acc_local) <= 0.1
