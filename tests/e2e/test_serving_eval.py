"""Real vLLM (CPU) serving the tiny model: smoke test and lm-eval through local-completions."""

from __future__ import annotations

import shutil

import pytest

from modelgate.deploy import DeploySpec
from modelgate.deploy.local import LocalVLLMTarget
from modelgate.deploy.smoke import smoke_test
from modelgate.evaluate import evaluate_model
from modelgate.processes import pid_alive
from modelgate.storage import FileStore
from modelgate.testing.tasks import ADDITION_TASK_NAME
from tests.e2e.helpers import vllm_python

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    store = FileStore(tmp_path_factory.mktemp("store"))
    with store.writer("tiny") as folder:
        shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    target = LocalVLLMTarget(python=vllm_python(), log_dir=str(tmp_path_factory.mktemp("vllm")))
    deployment = target.deploy(
        DeploySpec(name="tiny", storage_uri=store.uri("tiny"), max_model_len=128)
    )
    yield deployment
    target.teardown(deployment)
    assert not pid_alive(deployment.details["pid"])


def test_smoke_test_against_vllm(served):
    texts = smoke_test(served.endpoint, model=served.model)
    assert texts["completion"].strip() and texts["chat"].strip()


def test_local_completions_matches_hf_backend(served, tiny_model_dir, addition_task_dir):
    common = {"tasks": [ADDITION_TASK_NAME], "task_dir": str(addition_task_dir), "limit": 50}
    remote = evaluate_model(
        served.model,
        backend="local-completions",
        base_url=served.endpoint,
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
