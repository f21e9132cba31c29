"""Gate config validation and decisions."""

import json

import pytest

from modelgate.errors import ConfigError
from modelgate.evaluate import EvalResult, MetricValue
from modelgate.gates import GateRow, check_gate, gate_summary, load_gate_config, ratio, run_gate

pytestmark = pytest.mark.unit


def result(
    *, n: int | None = None, stderr: float | None = 0.01, **metrics: float | tuple
) -> EvalResult:
    """Results of task ``arc``; a metric is a value, or (value, higher_is_better[, stderr])."""
    parsed = {}
    for name, v in metrics.items():
        value, hib, se = (*v, stderr)[:3] if isinstance(v, tuple) else (v, True, stderr)
        parsed[name] = MetricValue(value=value, stderr=se, higher_is_better=hib)
    return EvalResult(
        model="m", backend="hf", tasks={"arc": parsed}, n_samples={"arc": n} if n else {}
    )


def one(threshold: dict, candidate: EvalResult, **kw) -> GateRow:
    (row,) = check_gate(candidate, config={"thresholds": [threshold]}, **kw).rows
    return row


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
    assert "| arc/acc | min | 0.6000 ± 0.0100 |  | >= 0.7000 | >= 0.7000 | FAIL |" in table
    assert "| arc/acc_norm | recovery | 0.8333 ± " in table
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


# --- statistics: tolerance in standard errors, sample counts --------------------------------


@pytest.mark.parametrize(
    "k, passed, effective", [(0, False, 0.70), (1, False, 0.68), (2, True, 0.66)]
)
def test_min_with_tolerance_in_standard_errors(k, passed, effective):
    row = one(
        {"task": "arc", "metric": "acc", "min": 0.70, "tolerance_stderr": k},
        result(acc=0.665, stderr=0.02),
    )
    assert row.passed is passed and row.effective == pytest.approx(effective)


def test_max_with_tolerance():
    t = {"task": "arc", "metric": "ppl", "max": 10.0, "tolerance_stderr": 1}
    assert one(t, result(ppl=(10.4, False, 0.5))).passed  # 10.4 - 0.5 <= 10
    assert not one(t, result(ppl=(10.6, False, 0.5))).passed
    assert one({**t, "tolerance_stderr": 0}, result(ppl=(10.0, False, 0.5))).passed


def test_recovery_uses_the_delta_method_stderr_of_the_ratio():
    cand, base = result(acc=0.57, stderr=0.02), result(acc=0.60, stderr=0.02)
    r, se = ratio(cand.get("arc", "acc"), base.get("arc", "acc"), higher_is_better=True)
    assert r == pytest.approx(0.95)
    assert se == pytest.approx(r * ((0.02 / 0.57) ** 2 + (0.02 / 0.60) ** 2) ** 0.5)
    t = {"task": "arc", "metric": "acc", "min_recovery": 0.97}
    assert not one(t, cand, base=base).passed  # a point estimate says no
    lenient = one({**t, "tolerance_stderr": 1}, cand, base=base)
    assert lenient.passed and lenient.effective == pytest.approx(0.97 - se)


def test_lower_is_better_recovery_inverts_the_ratio():
    t = {"task": "arc", "metric": "ppl", "min_recovery": 0.95}
    row = one(t, result(ppl=(10.4, False)), base=result(ppl=(10.0, False)))
    assert row.value == pytest.approx(10 / 10.4) and row.passed
    assert not one(t, result(ppl=(11.0, False)), base=result(ppl=(10.0, False))).passed


def test_min_samples_fails_with_too_few_or_unknown_n():
    t = {"task": "arc", "metric": "acc", "min_samples": 200}
    assert one(t, result(acc=0.9, n=1000)).passed
    few = one(t, result(acc=0.9, n=150))
    assert not few.passed and "only 150 samples" in few.note
    unknown = one(t, result(acc=0.9))
    assert not unknown.passed and "unknown" in unknown.note


def test_missing_stderr_with_tolerance_is_a_point_estimate_and_says_so():
    row = one(
        {"task": "arc", "metric": "acc", "min": 0.5, "tolerance_stderr": 2},
        result(acc=0.49, stderr=None),
    )
    assert not row.passed and "point estimate" in row.note


# --- direction ------------------------------------------------------------------------------


def test_unknown_direction_is_refused_naming_the_metric():
    t = {"task": "arc", "metric": "score", "min_recovery": 0.9}
    with pytest.raises(ConfigError, match="arc/score.*direction: higher\\|lower"):
        check_gate(result(score=(0.5, None)), config={"thresholds": [t]}, base=result(score=0.5))


def test_unknown_direction_is_accepted_with_direction():
    lower = {"task": "arc", "metric": "score", "min_recovery": 0.9, "direction": "lower"}
    row = one(lower, result(score=(2.0, None)), base=result(score=(1.0, None)))
    assert row.value == pytest.approx(0.5) and not row.passed
    higher = {**lower, "direction": "higher"}
    assert one(higher, result(score=(2.0, None)), base=result(score=(1.0, None))).passed


def test_direction_comes_from_lm_eval_and_mixed_groups_give_none():
    from modelgate.evaluate import parse_lm_eval_results

    raw = {
        "results": {"arc": {"acc,none": 0.5, "acc_stderr,none": 0.01}, "grp": {"x,none": 1.0}},
        "higher_is_better": {"arc": {"acc": True}, "grp": {"x": None}},
        "n-samples": {"arc": {"original": 1172, "effective": 200}},
    }
    parsed = parse_lm_eval_results(raw, model="m", backend="hf")
    assert parsed.get("arc", "acc").higher_is_better is True
    assert parsed.get("grp", "x").higher_is_better is None
    assert parsed.samples("arc") == 200 and parsed.samples("grp") is None


# --- champion / challenger ------------------------------------------------------------------


def test_vs_production_passes_fails_and_names_the_version():
    t = {"task": "arc", "metric": "acc", "min_vs_production": 0.98}
    good = check_gate(
        result(acc=0.60),
        config={"thresholds": [t]},
        production=result(acc=0.60),
        production_version="v1",
    )
    assert good.passed and "Production version compared with: `v1`" in good.to_markdown()
    bad = check_gate(
        result(acc=0.50),
        config={"thresholds": [t]},
        production=result(acc=0.60),
        production_version="v1",
    )
    assert not bad.passed
    assert "arc/acc vs production (v1): 0.8333 vs 0.9800" in gate_summary(bad)


def test_no_production_yet_passes_and_says_why():
    t = {"task": "arc", "metric": "acc", "min_vs_production": 0.98}
    report = check_gate(result(acc=0.1), config={"thresholds": [t]})
    assert report.passed and "no production version yet" in report.to_markdown()


def test_production_without_the_metric_fails_closed():
    t = {"task": "arc", "metric": "acc", "min_vs_production": 0.9}
    row = one(t, result(acc=0.9), production=result(f1=0.9), production_version="v1")
    assert not row.passed and "production v1 has no result" in row.note


# --- report outputs -------------------------------------------------------------------------


def test_html_page_has_a_bar_per_model_and_the_table(tmp_path):
    cfg = {
        "thresholds": [
            {
                "task": "arc",
                "metric": "acc",
                "min": 0.5,
                "min_recovery": 0.9,
                "min_vs_production": 0.9,
            }
        ]
    }
    cand, base, prod = (tmp_path / f"{n}.json" for n in ("cand", "base", "v7"))
    result(acc=0.6, n=100).save(cand)
    result(acc=0.62, n=100).save(base)
    result(acc=0.61, n=100).save(prod)
    outcome = run_gate(candidate=cand, config=cfg, base=base, production=prod)
    assert outcome.report.passed and outcome.report.production_version == "v7"
    page = outcome.html
    assert page.count("<rect") >= 3 + 3  # three bars and the legend
    assert "candidate: 0.6000" in page and "base: 0.6200" in page and "production: 0.6100" in page
    assert "<td>arc/acc</td><td>recovery</td>" in page.replace("\n", "")
