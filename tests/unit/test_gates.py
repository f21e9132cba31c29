"""Gate config validation and decisions."""

import json

import pytest

from modelgate.errors import ConfigError
from modelgate.evaluate import EvalResult, MetricValue
from modelgate.gates import check_gate, gate_summary, load_gate_config

pytestmark = pytest.mark.unit


def result(**metrics: float | tuple[float, bool]) -> EvalResult:
    parsed = {}
    for name, v in metrics.items():
        value, hib = v if isinstance(v, tuple) else (v, True)
        parsed[name] = MetricValue(value=value, stderr=0.01, higher_is_better=hib)
    return EvalResult(model="m", backend="hf", tasks={"arc": parsed})


def test_passes_when_every_threshold_holds():
    cfg = {"thresholds": [{"task": "arc", "metric": "acc", "min": 0.5, "min_recovery": 0.9}]}
    report = check_gate(result(acc=0.6), config=cfg, base=result(acc=0.62))
    assert report.passed
    assert [r.check for r in report.rows] == ["min", "recovery"]
    assert "PASSED" in report.to_markdown()


def test_collects_every_failure_and_names_the_metric():
    cfg = {
        "thresholds": [
            {"task": "arc", "metric": "acc", "min": 0.7},
            {"task": "arc", "metric": "acc_norm", "min": 0.1, "min_recovery": 0.99},
        ]
    }
    report = check_gate(
        result(acc=0.6, acc_norm=0.5), config=cfg, base=result(acc=0.6, acc_norm=0.6)
    )
    assert not report.passed
    assert len(report.failures) == 2
    table = report.to_markdown()
    assert "| arc/acc | 0.6000 | >= 0.7000 | FAIL |" in table
    assert "arc/acc_norm recovery | 0.8333" in table
    assert "arc/acc min: 0.6000 vs 0.7000" in gate_summary(report)


def test_missing_metric_fails_closed():
    cfg = {"thresholds": [{"task": "arc", "metric": "f1", "min": 0.0}]}
    report = check_gate(result(acc=0.9), config=cfg)
    assert not report.passed
    assert report.rows[0].value is None
    assert "missing" in report.to_markdown()


def test_missing_task_and_missing_base_fail_closed():
    cfg = {
        "thresholds": [
            {"task": "other", "metric": "acc", "min": 0.0},
            {"task": "arc", "metric": "acc", "min_recovery": 0.5},
        ]
    }
    report = check_gate(result(acc=0.9), config=cfg, base=None)
    assert [r.passed for r in report.rows] == [False, False]
    assert "no base result" in report.rows[1].note


def test_lower_is_better_uses_max_and_inverse_recovery():
    cfg = {"thresholds": [{"task": "arc", "metric": "ppl", "max": 20, "min_recovery": 0.9}]}
    report = check_gate(result(ppl=(11.0, False)), config=cfg, base=result(ppl=(10.0, False)))
    assert report.passed
    assert report.rows[1].value == pytest.approx(10 / 11)
    worse = check_gate(result(ppl=(25.0, False)), config=cfg, base=result(ppl=(10.0, False)))
    assert [r.passed for r in worse.rows] == [False, False]


def test_filter_suffix_matches_plain_metric_name():
    cfg = {"thresholds": [{"task": "arc", "metric": "acc,none", "min": 0.5}]}
    assert check_gate(result(acc=0.6), config=cfg).passed


def test_zero_base_recovery():
    cfg = {"thresholds": [{"task": "arc", "metric": "acc", "min_recovery": 0.9}]}
    assert check_gate(result(acc=0.0), config=cfg, base=result(acc=0.0)).passed
    assert not check_gate(result(acc=0.1), config=cfg, base=result(acc=0.0)).passed


@pytest.mark.parametrize(
    "source",
    [
        '{"thresholds": [{"task": "arc", "metric": "acc", "min": 0.5}]}',
        "thresholds:\n  - task: arc\n    metric: acc\n    min: 0.5\n",
        '[{"task": "arc", "metric": "acc", "min": 0.5}]',
    ],
)
def test_loads_json_yaml_and_bare_list(source):
    cfg = load_gate_config(source)
    assert cfg.thresholds[0].min == 0.5


def test_loads_from_file(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_text(
        json.dumps({"name": "release", "thresholds": [{"task": "a", "metric": "acc", "min": 0.1}]})
    )
    assert load_gate_config(str(path)).name == "release"
    with pytest.raises(ConfigError, match="does not exist"):
        load_gate_config(str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('{"thresholds": [{"task": "arc", "metric": "acc"}]}', "sets no bound"),
        ('{"thresholds": [{"task": "arc", "metric": "acc", "minimum": 0.5}]}', "minimum"),
        ('{"thresholds": []}', "thresholds"),
        ('{"thresholds": [{"task": "arc", "metric": "acc", "min_recovery": -1}]}', "min_recovery"),
        ("42", "must be a mapping"),
        ("{unclosed", "neither JSON nor YAML"),
    ],
)
def test_invalid_configs_say_what_is_wrong(source, message):
    with pytest.raises(ConfigError, match=message):
        load_gate_config(source)
