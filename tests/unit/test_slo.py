"""The serving (SLO) gate: config, GuideLLM's report, the checks, the endpoint and tokenizer
checks, and the GuideLLM child process (a stand-in command; the real GuideLLM runs in
tests/e2e/test_slo_cli.py).

``data/guidellm_report.json`` is a real GuideLLM 0.8.1 report, trimmed to what the gate reads
(``metadata``, and per benchmark ``config.strategy``, the timings and six metrics). It came from
``guidellm mock-server --model tiny --ttft-ms 50 --itl-ms 5`` and
``run_serving_gate(..., {"load": {"rate": 2, "duration_s": 3, "prompt_tokens": 32,
"output_tokens": 16}}, processor=<tiny model>)``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modelgate import slo
from modelgate.errors import ConfigError, EndpointUnreachableError, ServingGateError, StorageError
from modelgate.gates import GateConfig, load_gate_config
from modelgate.processes import free_port, pid_alive
from modelgate.slo import (
    DEFAULT_SERVING_LOAD,
    DEFAULT_SERVING_THRESHOLDS,
    ServedModel,
    ServingGateConfig,
    ServingLoad,
    ServingMeasurement,
    ServingThreshold,
    check_endpoint,
    check_serving,
    fetch_tokenizer,
    load_serving_config,
    measurements_from_report,
    parse_guidellm_report,
    render_html,
    resolve_processor,
    run_guidellm,
    run_serving_gate,
)
from modelgate.storage import FileStore, S3Store

pytestmark = pytest.mark.unit

REPORT = Path(__file__).parent / "data" / "guidellm_report.json"

BRIEF_YAML = """
name: release
thresholds:
  - {task: arc_easy, metric: acc, min: 0.5}
serving:
  load: {profile: constant, rate: 2, duration_s: 30, prompt_tokens: 128, output_tokens: 64}
  thresholds:
    - {metric: ttft_ms, stat: p95, max: 2000}
    - {metric: itl_ms, stat: p95, max: 200}
    - {metric: e2e_ms, stat: p99, max: 20000}
    - {metric: error_rate, max: 0.01}
    - {metric: output_tokens_per_s, min: 5}
"""


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return json.loads(REPORT.read_text())


@pytest.fixture(scope="module")
def measured() -> ServingMeasurement:
    (m,) = parse_guidellm_report(REPORT)
    return m


def _bounds(*thresholds: dict[str, Any]) -> dict[str, Any]:
    return {"thresholds": list(thresholds)}


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def test_defaults_are_the_documented_ones():
    assert [t.model_dump(exclude_none=True) for t in DEFAULT_SERVING_THRESHOLDS] == [
        {"metric": "ttft_ms", "stat": "p95", "max": 2000},
        {"metric": "itl_ms", "stat": "p95", "max": 200},
        {"metric": "e2e_ms", "stat": "p99", "max": 20000},
        {"metric": "error_rate", "max": 0.01},
        {"metric": "output_tokens_per_s", "min": 5},
    ]
    assert DEFAULT_SERVING_LOAD.model_dump() == {
        "profile": "constant",
        "rate": 2,
        "duration_s": 30,
        "prompt_tokens": 128,
        "output_tokens": 64,
        "max_concurrency": 256,
        "api": "chat",
    }
    cfg = ServingGateConfig()
    assert tuple(cfg.thresholds) == DEFAULT_SERVING_THRESHOLDS
    assert cfg.load == DEFAULT_SERVING_LOAD


def test_full_gate_config_carries_the_serving_section():
    cfg = load_gate_config(BRIEF_YAML)
    assert cfg.serving is not None
    assert tuple(cfg.serving.thresholds) == DEFAULT_SERVING_THRESHOLDS
    assert cfg.serving.load == DEFAULT_SERVING_LOAD
    assert [t.task for t in cfg.thresholds] == ["arc_easy"]
    # a quality gate alone is unchanged: no serving gate, thresholds still required
    assert load_gate_config([{"task": "x", "metric": "acc", "min": 0.1}]).serving is None
    with pytest.raises(ConfigError, match="thresholds: Field required"):
        load_gate_config({"serving": {}})


def test_load_serving_config_reads_a_full_config_or_the_section(tmp_path):
    full = tmp_path / "gate.yaml"
    full.write_text(BRIEF_YAML)
    assert load_serving_config(str(full)) == load_gate_config(BRIEF_YAML).serving
    assert load_serving_config(full).load == DEFAULT_SERVING_LOAD  # a Path too
    section = tmp_path / "serving.yaml"
    section.write_text("load: {profile: concurrent, rate: 4, duration_s: 5}\n")
    cfg = load_serving_config(str(section))
    assert (cfg.load.profile, cfg.load.rate, cfg.load.duration_s) == ("concurrent", 4, 5)
    assert tuple(cfg.thresholds) == DEFAULT_SERVING_THRESHOLDS  # bounds default
    assert load_serving_config(None) == ServingGateConfig()
    bare = load_serving_config([{"metric": "error_rate", "max": 0}])
    assert [t.metric for t in bare.thresholds] == ["error_rate"]


def test_a_quality_gate_alone_is_not_a_serving_config():
    with pytest.raises(ConfigError, match="no serving section"):
        load_serving_config({"thresholds": [{"task": "arc_easy", "metric": "acc", "min": 0.5}]})
    with pytest.raises(ConfigError, match="does not exist"):
        load_serving_config("missing.yaml")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"thresholds": [{"metric": "ttft_ms", "stat": "p95", "maxx": 1}]}, "did you mean 'max'"),
        ({"load": {"rate": 2, "durration_s": 5}}, "did you mean 'duration_s'"),
        ({"threshold": []}, "did you mean 'thresholds'"),
    ],
)
def test_unknown_keys_get_did_you_mean(section, message):
    with pytest.raises(ConfigError, match=message):
        load_serving_config(section)
    with pytest.raises(ConfigError, match=message):  # and inside a full gate config
        load_gate_config(
            {"thresholds": [{"task": "t", "metric": "m", "min": 0}], "serving": section}
        )


@pytest.mark.parametrize(
    ("threshold", "message"),
    [
        ({"metric": "ttft_ms", "max": 100}, "ttft_ms is a distribution: say which stat"),
        ({"metric": "e2e_ms", "min": 1}, "e2e_ms is a distribution"),
        ({"metric": "itl_ms", "stat": "p95"}, "sets no bound: give min, max or both"),
        ({"metric": "error_rate", "stat": "p95", "max": 0.1}, "leave out stat"),
        ({"metric": "output_tokens_per_s", "stat": "p99", "min": 1}, "its only stat is mean"),
        ({"metric": "requests_per_s", "min": 3, "max": 2}, "min 3.0 > max 2.0"),
        ({"metric": "ttft", "stat": "p95", "max": 1}, "metric: Input should be"),
        ({"metric": "ttft_ms", "stat": "p42", "max": 1}, "stat: Input should be"),
    ],
)
def test_bad_thresholds_are_refused(threshold, message):
    with pytest.raises(ConfigError, match=message):
        load_serving_config(_bounds(threshold))


def test_rates_default_to_mean_and_error_rate_has_no_stat():
    rate = ServingThreshold(metric="output_tokens_per_s", min=1)
    assert rate.measured_stat == "mean"
    assert ServingThreshold(metric="requests_per_s", stat="mean", min=1).measured_stat == "mean"
    assert ServingThreshold(metric="error_rate", max=0).measured_stat is None


@pytest.mark.parametrize(
    ("load", "message"),
    [
        ({"profile": "constant"}, "needs rate: requests per second"),
        ({"profile": "poisson", "rate": 0}, "greater than 0"),
        ({"profile": "concurrent", "rate": 2.5}, "number of streams"),
        ({"profile": "sweep", "rate": 1}, "2 or more"),
        ({"profile": "synchronous", "rate": 2}, "leave out rate"),
        ({"profile": "burst", "rate": 2}, "profile: Input should be"),
        ({"rate": 2, "duration_s": 0}, "duration_s: Input should be greater than 0"),
    ],
)
def test_bad_loads_are_refused(load, message):
    with pytest.raises(ConfigError, match=message):
        load_serving_config({"load": load})


def test_profiles_map_onto_guidellms(tmp_path):
    def profile(**load: Any) -> dict[str, Any]:
        cmd = slo.guidellm_command(
            "http://h:1/v1",
            "m,1",
            ServingLoad(**load),
            processor=tmp_path,
            json_path=tmp_path / "r.json",
            html_path=tmp_path / "r.html",
        )
        return json.loads(cmd[cmd.index("--profile") + 1])

    assert profile(profile="constant", rate=2) == {"kind": "constant", "rate": 2}
    assert profile(profile="poisson", rate=0.5) == {"kind": "poisson", "rate": 0.5}
    assert profile(profile="concurrent", rate=4) == {"kind": "concurrent", "streams": 4}
    assert profile(profile="sweep") == {"kind": "sweep", "sweep_size": 10}
    assert profile(profile="sweep", rate=3) == {"kind": "sweep", "sweep_size": 3}
    assert profile(profile="synchronous") == {"kind": "synchronous"}
    assert ServingLoad(profile="sweep", rate=3, duration_s=5).benchmarks == 3


def test_guidellm_command_and_environment(tmp_path, monkeypatch):
    load = ServingLoad(rate=2, duration_s=7, prompt_tokens=32, output_tokens=16, api="completions")
    cmd = slo.guidellm_command(
        "http://h:1/v1/",
        "org/m,1",
        load,
        processor=tmp_path,
        json_path=tmp_path / "r.json",
        html_path=tmp_path / "r.html",
    )
    assert cmd[:4] == [sys.executable, "-m", "modelgate.guidellm_main", "run"]

    def opt(name: str) -> list[dict[str, Any]]:
        return [json.loads(cmd[i + 1]) for i, a in enumerate(cmd) if a == name]

    assert opt("--backend") == [
        {
            "kind": "openai_http",
            "target": "http://h:1",
            "model": "org/m,1",  # JSON keeps the comma
            "request_format": "/v1/completions",
        }
    ]
    assert opt("--data") == [{"kind": "synthetic_text", "prompt_tokens": 32, "output_tokens": 16}]
    assert opt("--tokenizer") == [{"kind": "huggingface_auto", "model": str(tmp_path)}]
    assert opt("--constraint") == [{"kind": "max_duration", "seconds": 7}]
    assert opt("--data-loader") == [{"kind": "pytorch", "num_workers": 1, "prefetch_factor": 256}]
    small = ServingLoad(rate=1, duration_s=3, max_concurrency=4)
    assert slo.data_prefetch(small) == slo.MIN_PREFETCH
    assert [o["kind"] for o in opt("--output")] == ["json", "html"]
    monkeypatch.delenv("GUIDELLM__MAX_WORKER_PROCESSES", raising=False)
    env = slo.guidellm_env(load)
    assert env["HF_HUB_OFFLINE"] == "1" and env["GUIDELLM__MAX_CONCURRENCY"] == "256"
    assert 1 <= int(env["GUIDELLM__MAX_WORKER_PROCESSES"]) <= slo.MAX_WORKERS
    assert env["GUIDELLM__MP_CONTEXT_TYPE"] == "forkserver"
    assert float(env["GUIDELLM__SCHEDULER_START_DELAY_NON_DISTRIBUTED"]) == slo.START_DELAY_S
    monkeypatch.setenv("GUIDELLM__MAX_WORKER_PROCESSES", "7")
    monkeypatch.setenv("GUIDELLM__MP_CONTEXT_TYPE", "spawn")
    env = slo.guidellm_env(load)
    assert env["GUIDELLM__MAX_WORKER_PROCESSES"] == "7"  # the caller's settings win
    assert env["GUIDELLM__MP_CONTEXT_TYPE"] == "spawn"


def _python(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``script`` run by a fresh interpreter (imports decided per process); asserts it exits 0."""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_guidellm_main_exit_codes():
    from modelgate.guidellm_main import _exit_code

    assert _exit_code(None) == 0 and _exit_code(0) == 0 and _exit_code(2) == 2
    assert _exit_code("stopped: bad option") == 1  # SystemExit("message") exits 1


def test_guidellm_main_runs_guidellms_cli_without_sklearn():
    """GuideLLM's own CLI answers (a usage error is its exit 2, its message on stderr), with
    scikit-learn kept out and the worker modules preloaded in a forkserver."""
    script = (
        "import sys, multiprocessing.forkserver as fs\n"
        "from modelgate import guidellm_main as g\n"
        "code = g.main(['run', '--no-such-option'])\n"
        "print(code, 'sklearn' in sys.modules and sys.modules['sklearn'] is None,"
        " fs._forkserver._preload_modules == g.WORKER_MODULES, 'guidellm.cli' in sys.modules)\n"
    )
    proc = _python(script)
    assert proc.stdout.split() == ["2", "True", "True", "True"]
    assert "No such option" in proc.stderr


def test_guidellm_main_imports_transformers_as_a_tokenizer_library(tiny_model_dir: Path):
    """transformers sees no torch (so resolving AutoTokenizer skips GenerationMixin and its
    torch._dynamo / accelerate imports), still loads the model's tokenizer and encodes, logs no
    advisory about the missing torch, and torch stays importable for GuideLLM's data loader."""
    script = (
        "import sys\n"
        "from modelgate import guidellm_main as g\n"
        "g.import_transformers_tokenizers_only()\n"
        "from transformers import AutoTokenizer\n"
        "from transformers.utils import import_utils\n"
        f"tok = AutoTokenizer.from_pretrained({str(tiny_model_dir)!r})\n"
        "ids = tok('hello world')['input_ids']\n"
        "print(import_utils.is_torch_available(), 'transformers.generation.utils' in sys.modules,"
        " 'torch' in sys.modules, len(ids) > 0)\n"
        "import torch\n"
        "print(torch.tensor([1]).sum().item())\n"
    )
    proc = _python(script)
    assert proc.stdout.split() == ["False", "False", "False", "True", "1"]
    assert "PyTorch was not found" not in proc.stderr


def test_guidellm_main_leaves_a_process_that_already_has_torch():
    script = (
        "import os, sys, torch\n"
        "from modelgate import guidellm_main as g\n"
        "g.import_transformers_tokenizers_only()\n"
        "from transformers.utils import import_utils\n"
        "print(import_utils.is_torch_available(), sys.modules['torch'] is torch,"
        " 'TRANSFORMERS_NO_ADVISORY_WARNINGS' in os.environ)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_NO_ADVISORY_WARNINGS"}
    proc = _python(script, env=env)
    assert proc.stdout.split() == ["True", "True", "False"]


# --------------------------------------------------------------------------------------------
# GuideLLM's report
# --------------------------------------------------------------------------------------------


def test_report_is_parsed(measured, raw):
    metrics = raw["benchmarks"][0]["metrics"]
    ttft = metrics["time_to_first_token_ms"]["successful"]
    itl = metrics["inter_token_latency_ms"]["successful"]
    e2e = metrics["request_latency"]["successful"]
    assert measured.load == "constant@2.00"
    assert measured.duration_s == pytest.approx(3.0)
    assert (measured.successful, measured.errored, measured.incomplete) == (6, 0, 1)
    assert measured.error_rate == 0
    assert measured.ttft_ms is not None and measured.itl_ms is not None
    assert measured.e2e_ms is not None
    for stat in ("p50", "p90", "p95", "p99"):
        assert measured.ttft_ms.get(stat) == pytest.approx(ttft["percentiles"][stat])
        assert measured.itl_ms.get(stat) == pytest.approx(itl["percentiles"][stat])
        assert measured.e2e_ms.get(stat) == pytest.approx(e2e["percentiles"][stat] * 1000)
    assert measured.ttft_ms.mean == pytest.approx(ttft["mean"])
    assert measured.ttft_ms.count == 6
    # the mock server waits 50 ms before the first token and 5 ms between tokens
    assert 50 <= measured.ttft_ms.p50 < 1000 and 5 <= measured.itl_ms.p50 < 100
    assert measured.requests_per_s == pytest.approx(2.0)
    assert measured.output_tokens_per_s == pytest.approx(32.0)  # 2 req/s x 16 tokens
    assert measured.value("e2e_ms", "p99") == pytest.approx(e2e["percentiles"]["p99"] * 1000)
    assert measured.value("error_rate") == 0
    assert measured.value("ttft_ms") is None  # a latency without a stat


def test_errors_and_empty_latencies(raw):
    doc = copy.deepcopy(raw)
    metrics = doc["benchmarks"][0]["metrics"]
    metrics["request_totals"].update(successful=0, errored=3, incomplete=0)
    for key in ("time_to_first_token_ms", "inter_token_latency_ms", "request_latency"):
        metrics[key]["successful"]["count"] = 0
    (m,) = measurements_from_report(doc)
    assert m.error_rate == 1.0 and m.ttft_ms is None and m.e2e_ms is None
    result = check_serving(m, ServingGateConfig())
    assert not result.passed
    ttft = next(r for r in result.rows if r.metric == "ttft_ms")
    assert ttft.measured is None and ttft.note == "no successful request" and not ttft.passed
    assert "ttft_ms p95 not measured (no successful request) vs max 2000" in result.summary
    assert "error_rate 1 > max 0.01" in result.summary


def test_bad_reports_are_refused(tmp_path, raw):
    with pytest.raises(ServingGateError, match="wrote no report"):
        parse_guidellm_report(tmp_path / "none.json")
    (tmp_path / "text.json").write_text("not json")
    with pytest.raises(ServingGateError, match="is not JSON"):
        parse_guidellm_report(tmp_path / "text.json")
    (tmp_path / "other.json").write_text('{"results": []}')
    with pytest.raises(ServingGateError, match="not a GuideLLM benchmarks report"):
        parse_guidellm_report(tmp_path / "other.json")
    (tmp_path / "empty.json").write_text('{"benchmarks": []}')
    with pytest.raises(ServingGateError, match="holds no benchmark"):
        parse_guidellm_report(tmp_path / "empty.json")
    with pytest.raises(ServingGateError, match="more than the 0 MiB read"):
        parse_guidellm_report(REPORT, max_bytes=1000)


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------


def test_default_bounds_pass_on_the_mock_server(measured):
    result = check_serving(measured, ServingGateConfig())
    assert result.passed and not result.failures
    assert [(r.metric, r.stat, r.check) for r in result.rows] == [
        ("ttft_ms", "p95", "max"),
        ("itl_ms", "p95", "max"),
        ("e2e_ms", "p99", "max"),
        ("error_rate", None, "max"),
        ("output_tokens_per_s", "mean", "min"),
    ]
    assert result.summary.startswith("serving gate passed (5 checks): ttft_ms p95 ")
    table = result.table()
    assert "### Serving gate `serving`: PASSED" in table
    assert "| constant@2.00 | ttft_ms p95 | 71.5 | <= 2000 | PASS |" in table
    assert "| constant@2.00 | 6 | 0 | 1 | 3.0 |" in table


def test_a_missed_bound_fails_naming_metric_value_and_bound(measured):
    cfg = _bounds(
        {"metric": "ttft_ms", "stat": "p95", "max": 50},
        {"metric": "output_tokens_per_s", "min": 100},
        {"metric": "error_rate", "max": 0},
    )
    result = check_serving(measured, cfg)
    assert not result.passed
    assert [r.metric for r in result.failures] == ["ttft_ms", "output_tokens_per_s"]
    assert result.summary == (
        "serving gate failed: ttft_ms p95 71.5 > max 50; output_tokens_per_s mean 32.0 < min 100"
    )
    assert "FAILED (2 failing)" in result.table()


def test_a_value_on_its_bound_passes(measured):
    assert measured.ttft_ms is not None
    p95 = measured.ttft_ms.p95
    exact = _bounds(
        {"metric": "ttft_ms", "stat": "p95", "min": p95, "max": p95},
        {"metric": "requests_per_s", "min": measured.requests_per_s},
    )
    result = check_serving(measured, exact)
    assert result.passed and len(result.rows) == 3
    above = _bounds({"metric": "ttft_ms", "stat": "p95", "max": p95 - 1e-9})
    assert not check_serving(measured, above).passed


def test_every_benchmark_of_a_sweep_is_checked(raw):
    doc = copy.deepcopy(raw)
    slow = copy.deepcopy(doc["benchmarks"][0])
    slow["config"]["strategy"] = {"type_": "throughput", "max_concurrency": 512}
    slow["metrics"]["time_to_first_token_ms"]["successful"]["percentiles"]["p95"] = 4000.0
    slow["metrics"]["output_tokens_per_second"]["successful"]["mean"] = 500.0
    doc["benchmarks"].append(slow)
    sync = copy.deepcopy(doc["benchmarks"][0])
    sync["config"]["strategy"] = {"type_": "concurrent", "streams": 4}
    doc["benchmarks"].append(sync)
    measurements = measurements_from_report(doc)
    assert [m.load for m in measurements] == ["constant@2.00", "throughput", "concurrent@4"]
    result = check_serving(measurements, ServingGateConfig())
    assert len(result.rows) == 15
    assert result.summary == "serving gate failed: ttft_ms p95 4000.0 > max 2000 at throughput"
    # the registry gets the benchmark with the highest output throughput
    assert result.registry_properties()["throughput_output_tps"] == 500.0
    assert result.registry_properties()["latency_ttft_p95_ms"] == 4000.0


def test_registry_properties(measured):
    props = check_serving(measured, ServingGateConfig()).registry_properties()
    assert measured.ttft_ms is not None and measured.itl_ms is not None
    assert props == {
        "latency_ttft_p95_ms": round(measured.ttft_ms.p95, 3),
        "latency_itl_p95_ms": round(measured.itl_ms.p95, 3),
        "throughput_output_tps": 32.0,
    }


def test_to_dict_and_html_escape_everything(measured):
    cfg = ServingGateConfig(name="<script>alert(1)</script>")
    result = check_serving(measured, cfg)
    result.endpoint, result.model = "http://h:1", "m&<b>"
    data = json.loads(json.dumps(result.to_dict()))
    assert data["passed"] is True and data["summary"] == result.summary
    assert data["measurements"][0]["ttft_ms"]["p95"] == pytest.approx(measured.ttft_ms.p95)
    assert data["rows"][0]["verdict"] == "PASS"
    assert data["registry_properties"] == result.registry_properties()
    page = render_html(result, guidellm_html="<html><script>x()</script>\"'</html>")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "m&amp;&lt;b&gt;" in page
    # GuideLLM's page is embedded escaped, in a sandboxed frame
    assert 'srcdoc="&lt;html&gt;&lt;script&gt;x()&lt;/script&gt;&quot;&#x27;&lt;/html&gt;"' in page
    assert "sandbox='allow-scripts'" in page
    assert page.count("<script") == 0


# --------------------------------------------------------------------------------------------
# The endpoint
# --------------------------------------------------------------------------------------------


class _Models(BaseHTTPRequestHandler):
    status = 200
    body: Any = {"object": "list", "data": [{"id": "tiny", "root": "", "max_model_len": 128}]}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        payload = self.body if isinstance(self.body, str) else json.dumps(self.body)
        self.send_response(self.status if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def models_server() -> Iterator[tuple[str, type[_Models]]]:
    """An HTTP server answering ``GET /v1/models`` as the test sets ``handler.body``."""
    handler = type("Handler", (_Models,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_dead_endpoint_fails_fast_naming_url_and_fix():
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(EndpointUnreachableError) as info:
        run_serving_gate(url, "tiny", ServingGateConfig(), processor=None, out_dir="unused")
    assert time.monotonic() - started < 5
    assert f"{url}/v1/models did not answer" in str(info.value)
    assert "start the server" in str(info.value)


def test_endpoint_checks(models_server):
    url, handler = models_server
    assert check_endpoint(url + "/v1/", "tiny") == ServedModel("tiny", None, 128)
    assert check_endpoint(url, None).id == "tiny"  # the only one served
    with pytest.raises(ConfigError, match=r"model 'big' is not served by .*; it serves \['tiny'\]"):
        check_endpoint(url, "big")
    with pytest.raises(ConfigError, match="= 130 tokens but tiny serves at most 128"):
        check_endpoint(url, "tiny", load=ServingLoad(rate=1, prompt_tokens=100, output_tokens=30))
    handler.body = {"data": [{"id": "a"}, {"id": "b"}]}
    with pytest.raises(ConfigError, match=r"serves \['a', 'b'\]: name the one"):
        check_endpoint(url, None)
    handler.body = "<html>login</html>"
    with pytest.raises(EndpointUnreachableError, match="did not answer with an OpenAI model list"):
        check_endpoint(url, "a")
    handler.status = 401
    with pytest.raises(EndpointUnreachableError, match="answered 401: it wants credentials"):
        check_endpoint(url, "a")
    handler.status = 503
    with pytest.raises(EndpointUnreachableError, match="answered 503"):
        check_endpoint(url, "a")
    with pytest.raises(ConfigError, match="not an http"):
        check_endpoint("127.0.0.1:8000", "a")


# --------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------

TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "config.json", "chat_template.jinja")


def _model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    for name in (*TOKENIZER, "model.safetensors", "README.md", "sub/tokenizer.json"):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(f"{name}\n")
    (path / "additional_chat_templates").mkdir()
    (path / "additional_chat_templates" / "tool.jinja").write_text("{{ x }}")
    return path


def _fetched(dest: Path) -> set[str]:
    return {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}


EXPECTED = {*TOKENIZER, "additional_chat_templates/tool.jinja"}


def test_fetch_tokenizer_from_a_local_folder_and_file_store(tmp_path):
    src = _model_folder(tmp_path / "model")
    assert fetch_tokenizer(str(src), tmp_path / "a") == tmp_path / "a"
    assert _fetched(tmp_path / "a") == EXPECTED
    store = FileStore(tmp_path / "store")
    with store.writer("m") as folder:
        shutil.copytree(src, folder, dirs_exist_ok=True)
    fetch_tokenizer(store.uri("m"), tmp_path / "b")
    assert _fetched(tmp_path / "b") == EXPECTED
    assert (tmp_path / "b" / "tokenizer.json").read_text() == "tokenizer.json\n"


def test_fetch_tokenizer_from_s3_reads_only_tokenizer_files(tmp_path, s3_env):
    bucket = s3_env.make_bucket("slo-tokenizer")
    store = S3Store(f"s3://{bucket}/models")
    with store.writer("m") as folder:
        shutil.copytree(_model_folder(tmp_path / "model"), folder, dirs_exist_ok=True)
    dest = fetch_tokenizer(store.uri("m"), tmp_path / "tok")
    assert _fetched(dest) == EXPECTED


def test_fetch_tokenizer_refuses_folders_without_one(tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.safetensors").write_text("x")
    with pytest.raises(StorageError, match="holds no tokenizer"):
        fetch_tokenizer(str(tmp_path / "weights"), tmp_path / "out")
    with pytest.raises(ConfigError, match="does not exist"):
        fetch_tokenizer(str(tmp_path / "nowhere"), tmp_path / "out")
    with pytest.raises(ConfigError, match="expected an s3:// or file://"):
        fetch_tokenizer("hf://org/model", tmp_path / "out")


def test_resolve_processor(tmp_path):
    model = _model_folder(tmp_path / "model")
    assert resolve_processor(model, model="x") == model.resolve()
    assert resolve_processor(None, model=str(model)) == model.resolve()
    served = ServedModel("tiny", root=str(model))
    assert resolve_processor(None, model="tiny", served=served) == model.resolve()
    with pytest.raises(ConfigError, match="pass --tokenizer DIR"):
        resolve_processor(None, model="tiny", served=ServedModel("tiny", root="/nonexistent"))
    with pytest.raises(ConfigError, match="holds no tokenizer.json or tokenizer_config.json"):
        resolve_processor(tmp_path, model="tiny")


# --------------------------------------------------------------------------------------------
# The GuideLLM child
# --------------------------------------------------------------------------------------------


def test_a_timeout_stops_the_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    child = (
        "import os, subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{p.pid}}')\n"
        "print('working', flush=True)\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    with pytest.raises(ServingGateError, match=r"did not finish within 3s(.|\n)*working"):
        run_guidellm(
            [sys.executable, "-c", child],
            env=dict(os.environ),
            cwd=tmp_path,
            log_path=tmp_path / "log",
            timeout=3,
        )
    assert time.monotonic() - started < 20
    parent, grandchild = map(int, pids.read_text().split())
    assert not pid_alive(parent) and not pid_alive(grandchild)


def test_a_failed_run_shows_its_log(tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('no tokenizer here'); sys.exit(3)"]
    with pytest.raises(ServingGateError, match=r"exited with code 3(.|\n)*no tokenizer here"):
        run_guidellm(cmd, env=dict(os.environ), cwd=tmp_path, log_path=tmp_path / "l", timeout=60)


def test_run_serving_gate_writes_its_files(tmp_path, models_server, monkeypatch):
    """The whole call with GuideLLM replaced by a command that writes the fixture report."""
    url, _ = models_server
    model = _model_folder(tmp_path / "model")
    seen: dict[str, Any] = {}

    def fake_command(endpoint, name, load, *, processor, json_path, html_path):
        seen.update(endpoint=endpoint, name=name, load=load, processor=processor)
        script = (
            "import shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2]); "
            "open(sys.argv[3], 'w').write('<html><b>guidellm</b></html>')"
        )
        return [sys.executable, "-c", script, str(REPORT), str(json_path), str(html_path)]

    monkeypatch.setattr(slo, "guidellm_command", fake_command)
    cfg = {"load": {"rate": 2, "duration_s": 3, "prompt_tokens": 32, "output_tokens": 16}}
    result = run_serving_gate(url, "tiny", cfg, processor=model, out_dir=tmp_path / "out")
    assert result.passed and result.model == "tiny" and result.endpoint == url
    assert seen["processor"] == model.resolve() and seen["load"].duration_s == 3
    saved = json.loads((tmp_path / "out" / "serving.json").read_text())
    assert saved["summary"] == result.summary and saved["measurements"][0]["successful"] == 6
    page = (tmp_path / "out" / "serving.html").read_text()
    assert "PASSED" in page and "&lt;b&gt;guidellm&lt;/b&gt;" in page


def test_gate_config_type_is_importable_from_gates():
    # the pipeline reads GateConfig.serving; it is the slo module's model
    assert GateConfig.model_fields["serving"].annotation == ServingGateConfig | None
