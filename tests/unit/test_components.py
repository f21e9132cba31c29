"""Component bodies called directly (``python_func``): the wiring between KFP and the library."""

import json
import subprocess
import sys

import pytest
from modelgate.components import smoke_test

from modelgate.deploy import Deployment
from modelgate.errors import SmokeTestError
from modelgate.processes import free_port, pid_alive

pytestmark = pytest.mark.unit


def test_failed_smoke_test_fails_the_step_and_leaves_the_undo_to_the_rollback_step():
    """The smoke test only tests: the run's exit handler (``rollback_release``) undoes the
    deploy, so a cancelled or failed run is cleaned up by one step, not by side effects."""
    server = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )
    try:
        endpoint = f"http://127.0.0.1:{free_port()}"  # nothing answers there
        deployment = Deployment(
            target="local",
            name="tiny",
            endpoint=endpoint,
            model="tiny",
            ready_seconds=0.0,
            details={"pid": server.pid},
        )
        with pytest.raises(SmokeTestError, match=endpoint):
            smoke_test.python_func(deployment=json.dumps(deployment.__dict__))
        assert pid_alive(server.pid)
    finally:
        if server.poll() is None:
            server.kill()


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED"])
def test_the_rollback_step_stops_what_its_run_started_and_nothing_else(
    state, tmp_path, monkeypatch
):
    """The exit handler's component, with KFP's final status, against the local target: the
    failed run's candidate stops, another run's server keeps running."""
    from kfp.dsl import PipelineTaskFinalStatus
    from modelgate.components import rollback_release

    from modelgate.processes import SERVERS_FILE_ENV, record_server

    monkeypatch.setenv(SERVERS_FILE_ENV, str(tmp_path / "servers.jsonl"))
    sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
    ours = subprocess.Popen(sleep, start_new_session=True)
    theirs = subprocess.Popen(sleep, start_new_session=True)
    try:
        record_server(ours.pid, name="tiny", run_id="run-1", endpoint="http://127.0.0.1:1")
        record_server(theirs.pid, name="tiny", run_id="run-2", endpoint="http://127.0.0.1:2")
        status = PipelineTaskFinalStatus(
            state=state,
            pipeline_job_resource_name="run-1",
            pipeline_task_name="exit-handler-1",
            error_code=None,
            error_message="serving gate failed: ttft_ms p95 9 > max 1",
        )
        said = rollback_release.python_func(
            status=status, name="tiny", target="local", run_id="run-1"
        )
        ours.wait(timeout=30)
        assert not pid_alive(ours.pid)
        assert pid_alive(theirs.pid)
        assert str(ours.pid) in said
        again = rollback_release.python_func(
            status=status, name="tiny", target="local", run_id="run-1"
        )
        assert "nothing to undo" in again  # idempotent: the step is retried
    finally:
        for proc in (ours, theirs):
            if proc.poll() is None:
                proc.kill()
