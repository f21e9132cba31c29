"""``modelgate slo``: the real GuideLLM against its mock server and against vLLM (CPU) serving the
tiny model, the way users run it (a fresh ``modelgate`` process)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelgate.processes import free_port
from modelgate.testing.servers import MOCK_ITL_MS, MOCK_TTFT_MS, guidellm_mock_server
from tests.e2e.helpers import run_cli

pytestmark = pytest.mark.e2e

LOAD = "load: {profile: constant, rate: 2, duration_s: 3, prompt_tokens: 32, output_tokens: 16}"


def _config(tmp_path: Path, thresholds: str, load: str = LOAD) -> str:
    path = tmp_path / "gate.yaml"
    path.write_text(f"serving:\n  {load}\n  thresholds:\n{thresholds}")
    return str(path)


LOOSE = """\
    - {metric: ttft_ms, stat: p95, max: 60000}
    - {metric: itl_ms, stat: p95, max: 10000}
    - {metric: e2e_ms, stat: p99, max: 120000}
    - {metric: error_rate, max: 0.5}
"""


@pytest.fixture(scope="module")
def mock_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``guidellm mock-server`` serving model ``tiny`` on a free loopback port."""
    with guidellm_mock_server(tmp_path_factory.mktemp("mock")) as url:
        yield url


def _measured(stdout: str, label: str) -> float:
    """The measured value of row ``label`` (e.g. ``ttft_ms p95``) in the printed table."""
    match = re.search(rf"{re.escape(label)}\s+([0-9.]+)\s+<=", stdout)
    assert match, f"no {label} row in:\n{stdout}"
    return float(match.group(1))


def test_loose_bounds_pass_and_print_the_measurements(mock_server, tiny_model_dir, tmp_path):
    saved = tmp_path / "serving.json"
    proc = run_cli(
        "slo", "--endpoint", mock_server, "--model", "tiny",
        "--config", _config(tmp_path, LOOSE), "--tokenizer", str(tiny_model_dir),
        "--json", str(saved), "--html", str(tmp_path / "serving.html"),
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ttft, itl = _measured(proc.stdout, "ttft_ms p95"), _measured(proc.stdout, "itl_ms p95")
    assert MOCK_TTFT_MS <= ttft < 10 * MOCK_TTFT_MS + 1000
    assert MOCK_ITL_MS <= itl < 100 * MOCK_ITL_MS
    assert "serving gate passed (4 checks)" in proc.stdout
    result = json.loads(saved.read_text())
    assert result["passed"] is True
    (m,) = result["measurements"]
    assert m["load"] == "constant@2.00" and m["successful"] >= 3 and m["errored"] == 0
    assert result["registry_properties"]["latency_ttft_p95_ms"] == pytest.approx(ttft, abs=0.1)
    page = (tmp_path / "serving.html").read_text()
    assert "PASSED" in page and "srcdoc=" in page  # GuideLLM's report, embedded


def test_an_impossible_ttft_bound_fails_naming_it(mock_server, tiny_model_dir, tmp_path):
    bounds = "    - {metric: ttft_ms, stat: p95, max: 1}\n    - {metric: error_rate, max: 0.5}\n"
    proc = run_cli(
        "slo", "--endpoint", mock_server, "--model", "tiny",
        "--config", _config(tmp_path, bounds), "--tokenizer", str(tiny_model_dir),
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    match = re.search(r"serving gate failed: ttft_ms p95 ([0-9.]+) > max 1$", proc.stdout, re.M)
    assert match, proc.stdout
    assert float(match.group(1)) >= MOCK_TTFT_MS
    assert "error_rate" not in proc.stdout.splitlines()[-1]  # only the failing bound is named


def test_a_dead_endpoint_exits_2_within_seconds(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = run_cli("slo", "--endpoint", url, "--model", "tiny", timeout=60)
    assert time.monotonic() - started < 5
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{url}/v1/models did not answer" in proc.stderr


def test_vllm_serving_the_tiny_model_passes_loose_bounds(served_tiny_model, tmp_path):
    load = "load: {profile: constant, rate: 1, duration_s: 3, prompt_tokens: 16, output_tokens: 8}"
    saved = tmp_path / "serving.json"
    # no --tokenizer: the folder vLLM serves (its /v1/models root) is on this machine
    proc = run_cli(
        "slo", "--endpoint", served_tiny_model.endpoint, "--model", served_tiny_model.model,
        "--config", _config(tmp_path, LOOSE, load), "--json", str(saved),
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _measured(proc.stdout, "ttft_ms p95") > 0
    assert _measured(proc.stdout, "itl_ms p95") > 0
    (m,) = json.loads(saved.read_text())["measurements"]
    assert m["successful"] >= 1 and m["errored"] == 0


def test_vllm_serving_the_tiny_model_fails_an_impossible_ttft_bound(served_tiny_model, tmp_path):
    load = "load: {profile: constant, rate: 1, duration_s: 2, prompt_tokens: 16, output_tokens: 8}"
    bounds = "    - {metric: ttft_ms, stat: p95, max: 0.001}\n"
    proc = run_cli(
        "slo", "--endpoint", served_tiny_model.endpoint, "--model", served_tiny_model.model,
        "--config", _config(tmp_path, bounds, load),
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    match = re.search(r"serving gate failed: ttft_ms p95 ([0-9.]+) > max 0.001$", proc.stdout, re.M)
    assert match, proc.stdout
    assert float(match.group(1)) > 0.001
