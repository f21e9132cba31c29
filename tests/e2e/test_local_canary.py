"""Real vLLM (CPU) on the tiny model: candidates beside a production server, one rolled back
(production keeps answering), one promoted (production replaced)."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from modelgate.deploy import DeploySpec
from modelgate.deploy.local import LocalVLLMTarget, production_record, stop_server
from modelgate.deploy.smoke import smoke_test
from modelgate.processes import pid_alive
from modelgate.storage import FileStore
from tests.e2e.helpers import vllm_python

pytestmark = pytest.mark.e2e


def test_candidates_beside_production_roll_back_and_take_over(
    tiny_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("MODELGATE_HOME", str(tmp_path / "home"))  # records of this test only
    store = FileStore(tmp_path / "store")
    with store.writer("tiny") as folder:
        shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    target = LocalVLLMTarget(python=vllm_python(), log_dir=str(tmp_path / "vllm"))
    spec = DeploySpec(name="tiny", storage_uri=store.uri("tiny"), max_model_len=128)
    started = []
    try:
        first = target.deploy(spec.model_copy(update={"run_id": "run-1"}))
        started.append(first)
        assert first.details["role"] == "first"
        target.promote(first)

        # two later releases at once (one vLLM start of wall time), each gated beside production
        with ThreadPoolExecutor(max_workers=2) as pool:
            runs = [spec.model_copy(update={"run_id": r}) for r in ("run-2", "run-3")]
            rejected, accepted = pool.map(target.deploy, runs)
        started += [rejected, accepted]
        assert len({first.endpoint, rejected.endpoint, accepted.endpoint}) == 3
        for candidate in (rejected, accepted):
            assert candidate.details["role"] == "candidate"
            assert candidate.details["production_pid"] == first.details["pid"]
            assert smoke_test(candidate.endpoint, model="tiny")["completion"].strip()

        # run-2's gate fails: its rollback step stops its candidate, production keeps answering
        assert "nothing to undo" not in target.rollback_run("tiny", None, "run-2")
        assert not pid_alive(rejected.details["pid"])
        assert smoke_test(first.endpoint, model="tiny")["completion"].strip()

        # run-3's gate passes: its candidate takes over, the old production server stops
        done = target.promote(accepted)
        assert f"stopped the previous production server (pid {first.details['pid']})" in done
        assert not pid_alive(first.details["pid"])
        production = production_record("tiny")
        assert production is not None and production["pid"] == accepted.details["pid"]
        assert smoke_test(accepted.endpoint, model="tiny")["completion"].strip()
        assert target.rollback_run("tiny", None, "run-3").startswith("nothing to undo")
        assert pid_alive(accepted.details["pid"])
    finally:
        for deployment in started:
            stop_server(deployment.details, name="tiny")
