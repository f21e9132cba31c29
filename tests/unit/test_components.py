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


def test_failed_smoke_test_rolls_back_the_local_server():
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
        with pytest.raises(SmokeTestError, match="stopped the local vLLM server"):
            smoke_test.python_func(deployment=json.dumps(deployment.__dict__))
        server.wait(timeout=30)
        assert not pid_alive(server.pid)
    finally:
        if server.poll() is None:
            server.kill()
