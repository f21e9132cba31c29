"""Paired gates: hand-built per-document results where the paired and unpaired rules disagree.

Expected numbers are computed here from the documents with the statistics module, never by
calling the code under test.
"""

import math
import statistics

import pytest

from modelgate.errors import ConfigError
from modelgate.evaluate import EvalResult, MetricValue
from modelgate.gates import GateRow, check_gate, load_gate_config, render_html, run_gate
from modelgate.samples import Sample, SampleSet, write_samples

pytestmark = pytest.mark.unit


def docs(values: list[float], **meta) -> SampleSet:
    return SampleSet([Sample("arc", i, f"h{i}", {"acc": v}) for i, v in enumerate(values)], meta)


def aggregate(values: list[float], *, higher: bool = True, metric: str = "acc") -> EvalResult:
    """What lm-eval reports for these documents: the mean and its standard error
    (lm_eval/api/metrics.py mean_stderr: sample stdev / sqrt(n))."""
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values))
    return EvalResult(
        model="m",
        backend="hf",
        tasks={"arc": {metric: MetricValue(mean, se, higher)}},
        n_samples={"arc": len(values)},
    )


def gate(threshold: dict, cand: list[float], base: list[float], **kw) -> GateRow:
    """The ratio row of a gate on these documents (samples: ``docs(...)`` of them by default)."""
    cfg = {"thresholds": [{"task": "arc", "metric": "acc", **threshold}]}
    report = check_gate(
        aggregate(cand),
        config=cfg,
        base=aggregate(base),
        candidate_samples=kw.pop("cand_samples", docs(cand)),
        base_samples=kw.pop("base_samples", docs(base)),
        **kw,
    )
    (row,) = [r for r in report.rows if r.check == "recovery"]
    return row


def systematic_loss() -> tuple[list[float], list[float]]:
    """400 documents, base right on 200; the candidate loses 12 of those and gains none."""
    base = [1.0] * 200 + [0.0] * 200
    cand = [0.0] * 12 + [1.0] * 188 + [0.0] * 200
    return cand, base


def test_a_systematic_loss_passes_unpaired_within_one_se_but_fails_paired():
    cand, base = systematic_loss()
    threshold = {"min_recovery": 0.97, "tolerance_stderr": 1}
    # unpaired, by hand: r = 0.47/0.5 = 0.94, se(r) by the delta method
    se_c = statistics.stdev(cand) / math.sqrt(400)
    se_b = statistics.stdev(base) / math.sqrt(400)
    se_r = math.sqrt((se_c / 0.5) ** 2 + (0.47 * se_b / 0.5**2) ** 2)
    assert 0.94 + se_r >= 0.97  # so the unpaired rule passes...
    unpaired = gate({**threshold, "pairing": "off"}, cand, base)
    assert unpaired.passed and unpaired.paired is None
    assert unpaired.value == pytest.approx(0.94) and unpaired.stderr == pytest.approx(se_r)
    # ...while per document z = c - 0.97 b has mean -0.015 and a small paired se
    z = [c - 0.97 * b for c, b in zip(cand, base, strict=True)]
    mean_z, se_z = statistics.fmean(z), statistics.stdev(z) / math.sqrt(400)
    assert mean_z == pytest.approx(0.47 - 0.97 * 0.5) and mean_z + se_z < 0
    paired = gate(threshold, cand, base)
    assert not paired.passed and paired.paired is not None
    assert paired.paired.pairs == 400 and paired.paired.unpaired == 0
    assert paired.paired.mean_diff == pytest.approx(mean_z)
    assert paired.paired.se == pytest.approx(se_z)
    assert paired.paired.bound_used == pytest.approx(mean_z + se_z)
    assert (paired.paired.losses, paired.paired.gains) == (12, 0)
    assert paired.paired.lost_docs == list(range(12)) and paired.paired.binary
    # in ratio units: value 0.94 against 0.97 - se_z/mean(b)
    assert paired.value == pytest.approx(0.94)
    assert paired.effective == pytest.approx(0.97 - se_z / 0.5)
    # exact McNemar on 12 losses, 0 gains: 2 / 2**12
    assert paired.paired.mcnemar_p == pytest.approx(2 / 2**12)


def symmetric_flips() -> tuple[list[float], list[float]]:
    """2000 documents, base right on 1400; the candidate answers the same except 10 flips each
    way, so it has the same accuracy."""
    base = [1.0] * 1400 + [0.0] * 600
    cand = [0.0] * 10 + [1.0] * 1390 + [1.0] * 10 + [0.0] * 590
    return cand, base


def test_symmetric_flips_pass_a_paired_confidence_bound_the_unpaired_one_fails():
    cand, base = symmetric_flips()
    threshold = {"min_recovery": 0.99, "confidence": 0.95}
    n = 2000
    z = [c - 0.99 * b for c, b in zip(cand, base, strict=True)]
    mean_z, se_z = statistics.fmean(z), statistics.stdev(z) / math.sqrt(n)
    t95 = 1.6456  # Student's t, one-sided 95%, 1999 degrees of freedom (table value)
    assert mean_z - t95 * se_z > 0
    paired = gate(threshold, cand, base)
    assert paired.passed and paired.paired is not None
    assert paired.paired.bound_used == pytest.approx(mean_z - t95 * se_z, abs=1e-5)
    assert (paired.paired.losses, paired.paired.gains) == (10, 10)
    assert paired.paired.mcnemar_p == 1.0
    assert "paired t, one-sided 0.95" in paired.paired.test and "df=1999" in paired.paired.test
    # unpaired, by hand: ratio 1, its delta-method se, the normal 95% quantile
    se = statistics.stdev(base) / math.sqrt(n)
    se_r = math.sqrt((se / 0.7) ** 2 + (0.7 * se / 0.7**2) ** 2)
    assert 1 - statistics.NormalDist().inv_cdf(0.95) * se_r < 0.99
    unpaired = gate({**threshold, "pairing": False}, cand, base)  # YAML's bare `off`
    assert not unpaired.passed and "normal one-sided 0.95" in unpaired.note


def test_lower_is_better_uses_the_mirror_form():
    # per-document error rates, lower is better; the ratio is base/candidate
    base = [0.2, 0.4, 0.1, 0.3] * 25
    cand = [v * 1.02 for v in base]
    cfg = {
        "thresholds": [{"task": "arc", "metric": "err", "direction": "lower", "min_recovery": 0.99}]
    }

    def err(values: list[float]) -> SampleSet:
        return SampleSet([Sample("arc", i, f"h{i}", {"err": v}) for i, v in enumerate(values)])

    (row,) = check_gate(
        aggregate(cand, higher=False, metric="err"),
        config=cfg,
        base=aggregate(base, higher=False, metric="err"),
        candidate_samples=err(cand),
        base_samples=err(base),
    ).rows
    z = [b - 0.99 * c for c, b in zip(cand, base, strict=True)]  # b - r*c
    assert row.paired is not None and row.paired.mean_diff == pytest.approx(statistics.fmean(z))
    assert row.value == pytest.approx(1 / 1.02) and not row.passed  # 0.980 < 0.99
    assert row.paired.losses == 100 and row.paired.gains == 0 and not row.paired.binary
    assert row.paired.mcnemar_p is None


def test_fewer_pairs_than_min_samples_fail_naming_n():
    cand, base = systematic_loss()
    row = gate({"min_recovery": 0.5, "min_samples": 50}, cand[:30], base)
    assert not row.passed and row.n == 30 and "only 30 pairs, fewer than min_samples 50" in row.note


def test_one_sided_documents_are_not_paired_but_counted():
    cand, base = systematic_loss()
    row = gate({"min_recovery": 0.9}, cand[:391], base)
    assert row.paired is not None and row.paired.pairs == 391 and row.paired.unpaired == 9
    assert "9 docs on one side only" in row.note
    row = gate({"min_recovery": 0.9}, cand, base[:380])
    assert row.paired is not None and row.paired.pairs == 380 and row.paired.unpaired == 20


@pytest.mark.parametrize(
    ("cand_samples", "reason"),
    [
        (None, "candidate has no per-sample results"),
        (docs(systematic_loss()[0], limit=100), "limit differs"),
        (docs([1.0] * 400), "candidate's per-document mean 1 is not its reported 0.47"),
    ],
)
def test_pairing_falls_back_to_unpaired_with_the_reason(cand_samples, reason):
    cand, base = systematic_loss()
    row = gate(
        {"min_recovery": 0.97, "tolerance_stderr": 1},
        cand,
        base,
        cand_samples=cand_samples,
        base_samples=docs(base, limit=400) if "limit" in reason else docs(base),
    )
    assert row.paired is None and row.passed  # the unpaired rule, as before
    assert f"unpaired: {reason}" in row.note


def test_no_samples_anywhere_keeps_todays_rows():
    cand, base = systematic_loss()
    row = gate({"min_recovery": 0.97}, cand, base, cand_samples=None, base_samples=None)
    assert row.paired is None and "unpaired" not in row.note


def test_pairing_config_values():
    t = load_gate_config("thresholds: [{task: a, metric: acc, min_recovery: 0.9, pairing: off}]")
    assert t.thresholds[0].pairing == "off"
    with pytest.raises(ConfigError, match="pairing"):
        load_gate_config({"thresholds": [{"task": "a", "metric": "acc", "min": 0.1, "pairing": 1}]})
    with pytest.raises(ConfigError, match="confidence applies to the ratio checks"):
        load_gate_config(
            {"thresholds": [{"task": "a", "metric": "acc", "min": 0.1, "confidence": 0.9}]}
        )
    with pytest.raises(ConfigError, match="confidence"):
        load_gate_config(
            {"thresholds": [{"task": "a", "metric": "acc", "min_recovery": 0.9, "confidence": 1.5}]}
        )


def test_production_is_paired_too_and_the_table_and_page_show_it(tmp_path):
    cand, base = systematic_loss()
    cfg = {
        "name": "paired",
        "thresholds": [
            {"task": "arc", "metric": "acc", "min_vs_production": 0.97, "tolerance_stderr": 1}
        ],
    }
    files = {}
    for name, values in (("cand", cand), ("v3", base)):
        result = aggregate(values)
        write_samples(docs(values), tmp_path / f"{name}.samples.jsonl")
        result.samples_uri = f"{name}.samples.jsonl"  # relative to the results file
        files[name] = tmp_path / f"{name}.json"
        result.save(files[name])
    outcome = run_gate(candidate=files["cand"], config=cfg, production=files["v3"])
    (row,) = outcome.report.rows
    assert row.check == "vs production" and row.paired is not None and not row.passed
    table = outcome.report.to_markdown()
    assert "| arc/acc | vs production | 400 | 12 | 0 |" in table and "McNemar" in table
    assert "Per document" in outcome.html and "lost on 12" in outcome.html
    assert "doc_id 0, 1, 2" in outcome.html
    # without pairing, the same files pass the unpaired rule
    off = {**cfg, "thresholds": [{**cfg["thresholds"][0], "pairing": "off"}]}
    assert run_gate(candidate=files["cand"], config=off, production=files["v3"]).report.passed


def test_the_per_document_view_is_bounded_and_escaped():
    base = [1.0] * 300
    cand = [0.0] * 120 + [1.0] * 180
    row_report = check_gate(
        aggregate(cand),
        config={
            "name": "<b>x</b>",
            "thresholds": [{"task": "arc", "metric": "acc", "min_recovery": 0.5}],
        },
        base=aggregate(base),
        candidate_samples=docs(cand),
        base_samples=docs(base),
    )
    page = render_html(row_report, candidate=aggregate(cand), base=aggregate(base))
    assert "and 70 more" in page and "doc_id 0, 1," in page and ", 49 …" in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_unreadable_samples_found_on_their_own_leave_the_check_unpaired(tmp_path, caplog):
    cand, base = systematic_loss()
    files = {}
    for name, values in (("cand", cand), ("base", base)):
        result = aggregate(values)
        result.samples_uri = f"{name}.missing.jsonl"
        files[name] = tmp_path / f"{name}.json"
        result.save(files[name])
    cfg = {"thresholds": [{"task": "arc", "metric": "acc", "min_recovery": 0.9}]}
    outcome = run_gate(candidate=files["cand"], config=cfg, base=files["base"])
    (row,) = outcome.report.rows
    assert (
        row.paired is None and "unpaired: candidate's per-sample results are unreadable" in row.note
    )
    assert "cand.missing.jsonl does not exist" in row.note
    assert "not used, checks stay unpaired" in caplog.text
    # named explicitly, a missing samples file is an error, not a silent fallback
    with pytest.raises(ConfigError, match="does not exist"):
        run_gate(
            candidate=files["cand"],
            config=cfg,
            base=files["base"],
            base_samples=tmp_path / "nope.jsonl",
        )
