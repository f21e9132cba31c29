"""The serving gate in a local release, end to end: real vLLM (CPU) serving the tiny model,
GuideLLM load on the live candidate, the registry version carrying what was measured.

A first release passes a loose serving gate and is kept serving (``--keep-serving``); a second
release of the same model meets an impossible time-to-first-token bound. It must fail naming
the metric, the measured value and the bound; its version must be ``rejected`` with the serving
report; and the first release must still be production and still answer.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
import requests

from modelgate.demo import demo_thresholds
from modelgate.processes import pid_alive
from tests.doubles.model_registry import FakeModelRegistry
from tests.e2e.helpers import run_cli
from tests.e2e.test_release_local import release_args, task_output

pytestmark = pytest.mark.e2e

NAME = "tiny-serving"
LOAD = {"profile": "constant", "rate": 2, "duration_s": 4, "prompt_tokens": 16, "output_tokens": 8}


def gate(ttft_max_ms: float) -> str:
    """The demo's quality gate plus a serving section with the given TTFT bound."""
    config = json.loads(demo_thresholds(min_vs_production=None))
    config["serving"] = {
        "load": LOAD,
        "thresholds": [
            {"metric": "ttft_ms", "stat": "p95", "max": ttft_max_ms},
            {"metric": "error_rate", "max": 0.05},
        ],
    }
    return json.dumps(config)


@pytest.fixture(scope="module")
def registry():
    fake = FakeModelRegistry().start()
    yield fake
    fake.stop()


def _release(hub_mirror, task_dir, root: Path, registry, *, ttft_max_ms: float, keep: bool):
    args = release_args(
        hub_mirror,
        task_dir,
        root,
        thresholds=gate(ttft_max_ms),
        scheme="FP8_DYNAMIC",
        registry_url=registry.url,
        deploy_name=NAME,
    )
    return run_cli(*args, *(["--keep-serving"] if keep else []))


@pytest.fixture(scope="module")
def kept(hub_mirror, addition_task_dir, registry, tmp_path_factory):
    """The first release: a loose serving gate, then left serving."""
    root = tmp_path_factory.mktemp("serving-pass")
    proc = _release(hub_mirror, addition_task_dir, root, registry, ttft_max_ms=120_000, keep=True)
    found = re.search(r"keeps serving \S+ at (http://\S+) \(pid (\d+)\)", proc.stdout)
    yield proc, root, found
    if found and pid_alive(int(found.group(2))):
        os.killpg(int(found.group(2)), signal.SIGTERM)


@pytest.fixture(scope="module")
def rejected(kept, hub_mirror, addition_task_dir, registry, tmp_path_factory):
    """The second release of the same model: an impossible TTFT bound (1 microsecond)."""
    root = tmp_path_factory.mktemp("serving-fail")
    proc = _release(hub_mirror, addition_task_dir, root, registry, ttft_max_ms=0.001, keep=False)
    return proc, root


def _version(registry, root: Path) -> tuple[dict, dict]:
    record = json.loads(task_output(root, "register-candidate")["parameterValues"]["record"])
    version = registry.find_model_version(record["model_name"], record["version_name"])
    return record, registry.plain_properties(version)


def _completes(endpoint: str) -> str:
    answer = requests.post(
        f"{endpoint}/v1/completions",
        json={"model": NAME, "prompt": "2+3=", "max_tokens": 4, "temperature": 0},
        timeout=60,
    )
    answer.raise_for_status()
    return answer.json()["choices"][0]["text"]


def test_a_release_that_meets_its_slos_is_promoted_with_what_was_measured(kept, registry):
    proc, root, found = kept
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    line = next(ln for ln in out.splitlines() if "│ serving gate " in ln)
    assert "success" in line, line
    # the serving table is printed under the gate table
    assert "ttft_ms" in out and "p95" in out and "error_rate" in out
    _, props = _version(registry, root)
    assert props["modelgate.stage"] == "production"
    assert props["modelgate.serving_gate"] == "passed"
    # the Kubeflow Hub catalog's performance names (see modelgate.registry.base)
    assert 0 < props["ttft_p95"] < 120_000
    assert props["tps_mean"] > 0
    assert props["hardware_type"] == "cpu"
    assert found, "the kept server's URL and pid are printed"
    assert _completes(found.group(1)).strip()


def test_a_release_that_misses_its_slo_is_rejected_and_production_keeps_serving(
    kept, rejected, registry
):
    _, kept_root, found = kept
    proc, root = rejected
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "release failed at: serving gate" in out
    # the console names the metric, the measured value and the bound
    failure = re.search(r"serving gate failed:.*ttft_ms p95 ([0-9.]+) ?(ms)? > max 0\.001", out)
    assert failure, out[-3000:]
    assert float(failure.group(1)) > 0.001
    _, props = _version(registry, root)
    assert props["modelgate.stage"] == "rejected"
    assert props["modelgate.serving_gate"] == "failed"
    assert "ttft_ms" in props["modelgate.serving_report"]
    # the rollback step ran and found the candidate; production did not move
    rollback = next(ln for ln in proc.stdout.splitlines() if "│ rollback " in ln)
    assert "success" in rollback, rollback
    _, champion = _version(registry, kept_root)
    assert champion["modelgate.stage"] == "production"
    assert found and pid_alive(int(found.group(2)))
    assert _completes(found.group(1)).strip()
    candidate = json.loads(task_output(root, "deploy-model")["parameterValues"]["deployment"])
    assert candidate["details"]["role"] == "candidate"
    assert not pid_alive(int(candidate["details"]["pid"]))
