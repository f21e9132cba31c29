"""The post-deploy steps' library calls: the serving gate step, promote, and the rollback step
the pipelines' exit handler runs (modelgate.postdeploy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelgate import postdeploy
from modelgate.deploy.target import Deployment
from modelgate.errors import ConfigError, GateFailedError
from modelgate.evaluate import EvalResult, MetricValue
from modelgate.registry import RegistryRecord
from modelgate.slo import check_serving, parse_guidellm_report

pytestmark = pytest.mark.unit

REPORT = Path(__file__).parent / "data" / "guidellm_report.json"
DEPLOYMENT = Deployment(
    target="local",
    name="tiny",
    endpoint="http://127.0.0.1:1",
    model="tiny",
    ready_seconds=1.0,
    details={"role": "candidate", "run_id": "run-1"},
)
RECORD = RegistryRecord(
    status="registered",
    message="registered",
    model_name="tiny",
    version_name="v2",
    stage="candidate",
    uri="s3://b/k",
)
QUALITY = [{"task": "arc_easy", "metric": "acc", "min": 0.1}]


def _config(ttft_max: float) -> dict:
    return {
        "thresholds": QUALITY,
        "serving": {
            "load": {"profile": "constant", "rate": 2, "duration_s": 3},
            "thresholds": [
                {"metric": "ttft_ms", "stat": "p95", "max": ttft_max},
                {"metric": "error_rate", "max": 0.01},
            ],
        },
    }


@pytest.fixture()
def measured(monkeypatch, tmp_path):
    """GuideLLM replaced by a real report of its mock server; the tokenizer fetch by a folder;
    the registry call recorded."""
    measurements = parse_guidellm_report(REPORT)
    calls: dict[str, list] = {"gate": [], "record": [], "tokenizer": []}

    def run_serving_gate(endpoint, model, config, *, processor, out_dir):
        calls["gate"].append((endpoint, model, processor))
        return check_serving(measurements, config)

    def fetch_tokenizer(model_uri, dest):
        calls["tokenizer"].append(model_uri)
        return dest

    monkeypatch.setattr(postdeploy, "run_serving_gate", run_serving_gate)
    monkeypatch.setattr(postdeploy, "fetch_tokenizer", fetch_tokenizer)
    monkeypatch.setattr(postdeploy, "record_serving", lambda **kw: calls["record"].append(kw))
    ttft = measurements[0].value("ttft_ms", "p95")
    assert ttft is not None and ttft > 0
    return calls, ttft


def test_without_a_serving_section_the_gate_is_off_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(postdeploy, "fetch_tokenizer", pytest.fail)  # nothing is fetched
    outcome = postdeploy.serving_gate_step(
        deployment=DEPLOYMENT,
        gate_config={"thresholds": QUALITY},
        model_uri="s3://b/k",
        out_dir=tmp_path,
    )
    assert outcome.passed and outcome.summary.startswith("serving gate off")
    assert json.loads((tmp_path / "serving.json").read_text())["serving"] is None
    assert (tmp_path / "serving.html").is_file()


def test_a_met_slo_records_what_was_measured_on_the_version(measured, tmp_path):
    calls, ttft = measured
    outcome = postdeploy.serving_gate_step(
        deployment=DEPLOYMENT,
        gate_config=_config(ttft_max=ttft * 2),
        model_uri="s3://b/k",
        out_dir=tmp_path,
        record=RECORD,
        registry_url="http://registry",
        hardware_type="H100",
        hardware_count=2,
    )
    assert outcome.passed
    assert calls["gate"] == [(DEPLOYMENT.endpoint, "tiny", calls["gate"][0][2])]
    assert calls["tokenizer"] == ["s3://b/k"]
    (recorded,) = calls["record"]
    assert recorded["passed"] is True and recorded["record"] is RECORD
    props = recorded["properties"]
    assert props["latency_ttft_p95_ms"] == pytest.approx(ttft, rel=1e-3)
    assert props["hardware_type"] == "H100" and props["hardware_count"] == 2
    saved = json.loads((tmp_path / "serving.json").read_text())
    assert saved["passed"] and "ttft_ms p95" in saved["table"]


def test_a_missed_slo_rejects_the_version_and_names_metric_value_and_bound(measured, tmp_path):
    calls, ttft = measured
    with pytest.raises(GateFailedError) as info:
        postdeploy.serving_gate_step(
            deployment=DEPLOYMENT,
            gate_config=_config(ttft_max=0.001),
            model_uri="s3://b/k",
            out_dir=tmp_path,
            record=RECORD,
        )
    first = str(info.value).splitlines()[0]
    assert "serving gate failed: ttft_ms p95" in first and "> max 0.001" in first
    assert "production unchanged" in first
    (recorded,) = calls["record"]
    assert recorded["passed"] is False
    assert "ttft_ms" in recorded["report"] and recorded["summary"].startswith("serving gate failed")
    # the report is written also when the gate fails (the step copies it into its outputs)
    assert not json.loads((tmp_path / "serving.json").read_text())["passed"]


def test_a_redeploy_of_the_production_version_does_not_touch_its_stage(measured, tmp_path):
    calls, ttft = measured
    production = RECORD.model_copy(update={"stage": "production"})
    postdeploy.serving_gate_step(
        deployment=DEPLOYMENT,
        gate_config=_config(ttft_max=ttft * 2),
        model_uri="s3://b/k",
        out_dir=tmp_path,
        record=production,
    )
    assert calls["record"] == []


def test_endpoint_tasks_need_endpoint_bounds(tmp_path, monkeypatch):
    monkeypatch.setattr(postdeploy, "fetch_tokenizer", lambda uri, dest: dest)
    with pytest.raises(ConfigError, match="no 'endpoint' section"):
        postdeploy.serving_gate_step(
            deployment=DEPLOYMENT,
            gate_config={"thresholds": QUALITY},
            model_uri="s3://b/k",
            out_dir=tmp_path,
            endpoint_eval_tasks="arc_easy",
        )


def test_endpoint_evaluation_is_held_to_the_offline_score(tmp_path, monkeypatch):
    """min_recovery on the endpoint compares with the offline evaluation of the same model:
    a serving misconfiguration that loses accuracy fails the gate."""
    offline = EvalResult(model="m", backend="vllm", tasks={"arc_easy": {"acc": MetricValue(0.8)}})
    offline_path = tmp_path / "offline.json"
    offline.save(offline_path)
    seen: dict = {}

    def evaluate_model(model, **kw):
        seen.update(kw, model=model)
        return EvalResult(
            model=model, backend=kw["backend"], tasks={"arc_easy": {"acc": MetricValue(0.6)}}
        )

    monkeypatch.setattr(postdeploy, "fetch_tokenizer", lambda uri, dest: dest)
    monkeypatch.setattr("modelgate.evaluate.evaluate_model", evaluate_model)
    config = {
        "thresholds": QUALITY,
        "endpoint": {"thresholds": [{"task": "arc_easy", "metric": "acc", "min_recovery": 0.95}]},
    }
    with pytest.raises(GateFailedError, match="endpoint evaluation gate endpoint failed"):
        postdeploy.serving_gate_step(
            deployment=DEPLOYMENT,
            gate_config=config,
            model_uri="s3://b/k",
            out_dir=tmp_path / "out",
            endpoint_eval_tasks="arc_easy",
            offline_results=str(offline_path),
        )
    assert seen["backend"] == "local-completions" and seen["base_url"] == DEPLOYMENT.endpoint
    assert seen["model"] == "tiny" and seen["tasks"] == ["arc_easy"]


def test_endpoint_bounds_cannot_compare_with_production():
    from modelgate.gates import load_gate_config

    bad = {
        "thresholds": QUALITY,
        "endpoint": {"thresholds": [{"task": "a", "metric": "acc", "min_vs_production": 0.9}]},
    }
    with pytest.raises(ConfigError, match="min_vs_production is not available"):
        load_gate_config(bad)


@pytest.mark.parametrize(
    "accel, count, selector, expected",
    [
        ("nvidia.com/gpu", "0", {}, ("cpu", 0)),
        ("nvidia.com/gpu", "2", {}, ("nvidia.com/gpu", 2)),
        ("nvidia.com/gpu", "1", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, None),
    ],
)
def test_hardware_is_the_gpu_model_the_node_selector_pins(accel, count, selector, expected):
    got = postdeploy.hardware_of(accel, count, selector)
    assert got == (expected or ("NVIDIA-H100-80GB-HBM3", 1))
    # the local target serves with vLLM's CPU build whatever the GPU settings say
    assert postdeploy.hardware_of(accel, count, selector, target="local") == ("cpu", 0)


class _Target:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def promote(self, deployment):
        self.calls.append(("promote", deployment.name))
        return "candidate is production"

    def rollback_run(self, name, namespace, run_id):
        self.calls.append(("rollback_run", name, namespace, run_id))
        return f"removed the candidate of run {run_id}"


def test_the_rollback_step_does_nothing_after_a_success(monkeypatch):
    target = _Target()
    monkeypatch.setattr(postdeploy, "make_target", lambda name: target)
    said = postdeploy.rollback_step(
        target="kserve", name="", model_id="org/model", namespace="ns", run_id="r1",
        state="SUCCEEDED",
    )  # fmt: skip
    assert "nothing to roll back" in said and target.calls == []


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED"])
def test_the_rollback_step_undoes_the_runs_candidate_by_its_derived_name(monkeypatch, state):
    target = _Target()
    monkeypatch.setattr(postdeploy, "make_target", lambda name: target)
    said = postdeploy.rollback_step(
        target="kserve",
        name="",
        model_id="org/Model",
        registered_model_name="",
        namespace="team-a",
        run_id="r1",
        state=state,
        error="serving gate failed: ttft_ms p95 9 > max 1\nthe table",
    )
    assert target.calls == [("rollback_run", "org-model", "team-a", "r1")]
    assert said == "removed the candidate of run r1"


def test_promote_moves_the_target_before_the_registry(monkeypatch):
    order: list[str] = []
    target = _Target()
    monkeypatch.setattr(postdeploy, "make_target", lambda name: target)

    def registry_promote(**kw):
        order.append(f"registry after {len(target.calls)} target call(s)")
        return "tiny:v2 is production"

    monkeypatch.setattr(postdeploy, "promote_candidate", registry_promote)
    said = postdeploy.promote_release(DEPLOYMENT, record=RECORD, registry_url=None)
    assert order == ["registry after 1 target call(s)"]  # the target first
    assert said == "candidate is production; tiny:v2 is production"
    target.calls.clear()
    postdeploy.promote_release(None, record=RECORD, registry_url=None)
    assert target.calls == []
