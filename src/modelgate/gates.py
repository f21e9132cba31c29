"""Quality gates: thresholds as validated config, checked against evaluation results.

A gate config (JSON or YAML) lists per task/metric checks::

    name: release
    thresholds:
      - task: arc_easy
        metric: acc
        min: 0.55                # absolute floor on the candidate
        min_recovery: 0.97       # candidate / base model from the same run
        min_vs_production: 0.99  # candidate / the version in production
        min_samples: 500         # fewer evaluated samples fail the check
        tolerance_stderr: 1      # k: pass within k standard errors of the bound
      - task: wikitext
        metric: word_perplexity
        direction: lower         # lm-eval's own direction, or this when it gives none
        max: 20

Every check is evaluated and every failure collected; the gate passes only if all pass.

An optional ``serving:`` section holds the serving (SLO) gate run on the live endpoint after
deploy: a GuideLLM load and bounds on TTFT, ITL, latency, error rate and throughput
(:class:`modelgate.slo.ServingGateConfig`). An optional ``endpoint:`` section holds the
thresholds of lm-eval run against the live endpoint (``endpoint_eval_tasks``), where
``min_recovery`` compares with the offline evaluation of the same model.

Statistics. Each metric carries its standard error and the number of samples lm-eval scored.
With ``tolerance_stderr: k`` (default 0: point estimates) an absolute ``min`` passes when
``value + k*se >= min``, a ``max`` when ``value - k*se <= max``. A ratio (recovery, vs
production) ``r = num/den`` has the delta-method standard error
``se(r)^2 = (se_num/den)^2 + (num*se_den/den^2)^2`` (equal to ``r*sqrt((se_c/c)^2+(se_b/b)^2)``
and defined at ``num = 0``) and passes when ``r + k*se(r) >= bound``. The table shows each
bound and the *effective* bound after the tolerance.

Direction. Recovery and production ratios are ``candidate/reference`` for higher-is-better
metrics and ``reference/candidate`` for lower-is-better ones. The direction comes from lm-eval's
``higher_is_better``; when that is missing or not one boolean (a group mixing metrics), a ratio
check is refused with a config error naming the metric unless the threshold says ``direction``.

Fail closed: a metric named in a threshold but missing from the results fails, and so does a
recovery check without base results. A production check without a production version passes,
and the table says why.
"""

from __future__ import annotations

import html
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelgate.errors import ConfigError
from modelgate.evaluate import EvalResult, MetricValue
from modelgate.slo import ServingGateConfig
from modelgate.validation import parse_config_text, validated

logger = logging.getLogger(__name__)

Direction = Literal["higher", "lower"]
Check = Literal["min", "max", "recovery", "vs production", "samples"]


class Threshold(BaseModel):
    """The checks on one task metric."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1)
    metric: str = Field(min_length=1, description="lm-eval metric, e.g. 'acc' or 'acc,none'")
    min: float | None = Field(default=None, description="absolute lower bound on the candidate")
    max: float | None = Field(default=None, description="absolute upper bound on the candidate")
    min_recovery: float | None = Field(
        default=None, gt=0, description="candidate vs base lower bound (0.97 = 97% recovered)"
    )
    min_vs_production: float | None = Field(
        default=None, gt=0, description="candidate vs production lower bound"
    )
    min_samples: int | None = Field(default=None, ge=1, description="fewest samples scored")
    tolerance_stderr: float = Field(default=0.0, ge=0, description="k standard errors of slack")
    direction: Direction | None = Field(
        default=None, description="higher|lower, when lm-eval does not say"
    )

    @model_validator(mode="after")
    def _has_a_bound(self) -> Threshold:
        bounds = (self.min, self.max, self.min_recovery, self.min_vs_production, self.min_samples)
        if all(b is None for b in bounds):
            raise ValueError(
                f"threshold for {self.task}/{self.metric} sets no bound: give at least one of "
                "min, max, min_recovery, min_vs_production, min_samples"
            )
        return self


class EndpointGate(BaseModel):
    """Bounds on lm-eval run against the live endpoint (``endpoint_eval_tasks``).

    ``min_recovery`` here compares the endpoint's score with the offline evaluation of the same
    stored model: a drop means the serving setup (chat template, max length, tokenizer) loses
    what the weights have. ``min_vs_production`` is not available (production's endpoint score
    is not stored).
    """

    model_config = ConfigDict(extra="forbid")

    thresholds: list[Threshold] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_production(self) -> EndpointGate:
        for t in self.thresholds:
            if t.min_vs_production is not None:
                raise ValueError(
                    f"endpoint threshold {t.task}/{t.metric}: min_vs_production is not available "
                    "on the endpoint evaluation; use min, max or min_recovery (vs offline)"
                )
        return self


class GateConfig(BaseModel):
    """A gate: a list of thresholds that must all hold."""

    model_config = ConfigDict(extra="forbid")

    name: str = "quality"
    thresholds: list[Threshold] = Field(min_length=1)
    serving: ServingGateConfig | None = Field(
        default=None,
        description="the serving (SLO) gate on the live endpoint (modelgate.slo); None: off",
    )
    endpoint: EndpointGate | None = Field(
        default=None,
        description="bounds on lm-eval against the live endpoint (endpoint_eval_tasks)",
    )

    @property
    def uses_production(self) -> bool:
        """True if any threshold compares with the production version."""
        return any(t.min_vs_production is not None for t in self.thresholds)


def load_gate_config(source: str | dict[str, Any] | GateConfig) -> GateConfig:
    """Parse a gate config from a dict, a JSON/YAML string, or a path to a JSON/YAML file.

    A bare list is taken as the ``thresholds`` list.

    Raises:
        ConfigError: The text does not parse, or does not validate (the message lists each field).
    """
    if isinstance(source, GateConfig):
        return source
    data: Any = source
    if isinstance(source, str):
        data = parse_config_text(source, what="gate config")
    if isinstance(data, list):
        data = {"thresholds": data}
    if not isinstance(data, dict):
        raise ConfigError(
            'gate config must be a mapping like {"thresholds": [{"task": "arc_easy", '
            f'"metric": "acc", "min": 0.5}}]}}, got {type(data).__name__}'
        )
    return validated(GateConfig, data, what="gate config")


@dataclass
class GateRow:
    """One line of the gate table.

    ``value`` is the candidate's metric (or the ratio for recovery/production checks), ``bound``
    the configured bound and ``effective`` the bound after the stderr tolerance, which ``value``
    was compared with.
    """

    task: str
    metric: str
    check: Check
    value: float | None
    bound: float
    passed: bool
    stderr: float | None = None
    n: int | None = None
    effective: float | None = None
    note: str = ""


@dataclass
class GateReport:
    """The gate's decision with every row that led to it."""

    name: str
    passed: bool
    rows: list[GateRow] = field(default_factory=list)
    production_version: str | None = None

    @property
    def failures(self) -> list[GateRow]:
        """Rows that failed."""
        return [r for r in self.rows if not r.passed]

    def to_markdown(self) -> str:
        """The Markdown table, headed by the decision and what production was compared with."""
        verdict = "PASSED" if self.passed else f"FAILED ({len(self.failures)} failing)"
        lines = [f"### Gate `{self.name}`: {verdict}", ""]
        if self.production_version:
            lines += [f"Production version compared with: `{self.production_version}`", ""]
        lines += [
            "| metric | check | value | n | bound | effective bound | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            op = "<=" if r.check == "max" else ">="
            if r.value is None:
                value = "missing"
            elif r.check == "samples":
                value = f"{int(r.value)}"
            else:
                value = f"{r.value:.4f}" + (f" ± {r.stderr:.4f}" if r.stderr else "")
            n = "" if r.n is None else str(r.n)
            bound = f"{int(r.bound)}" if r.check == "samples" else f"{r.bound:.4f}"
            effective = "" if r.effective is None else f"{op} {r.effective:.4f}"
            mark = "PASS" if r.passed else "FAIL"
            note = f" ({r.note})" if r.note else ""
            lines.append(
                f"| {r.task}/{r.metric} | {r.check} | {value} | {n} | {op} {bound} | "
                f"{effective} | {mark}{note} |"
            )
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def _direction(t: Threshold, got: MetricValue) -> bool:
    """True for higher-is-better; refuses a ratio check on a metric of unknown direction."""
    if t.direction is not None:
        return t.direction == "higher"
    if got.higher_is_better is None:
        raise ConfigError(
            f"lm-eval gives no single direction for {t.task}/{t.metric}: say whether higher or "
            "lower is better with direction: higher|lower in its threshold"
        )
    return got.higher_is_better


def ratio(
    candidate: MetricValue, reference: MetricValue, *, higher_is_better: bool
) -> tuple[float, float] | None:
    """(ratio, its delta-method stderr); None when only the denominator is 0 (0/0 counts as 1).

    ``candidate/reference`` for higher-is-better metrics, ``reference/candidate`` otherwise.
    """
    num, den = (candidate, reference) if higher_is_better else (reference, candidate)
    if den.value == 0:
        return (1.0, 0.0) if num.value == 0 else None
    r = num.value / den.value
    se_num, se_den = num.stderr or 0.0, den.stderr or 0.0
    se = math.sqrt((se_num / den.value) ** 2 + (num.value * se_den / den.value**2) ** 2)
    return r, se


def _ratio_row(
    t: Threshold,
    check: Check,
    got: MetricValue | None,
    ref: MetricValue | None,
    bound: float,
    *,
    n: int | None,
    missing_ref: str,
    label: str,
) -> GateRow:
    if got is None:
        return GateRow(t.task, t.metric, check, None, bound, False, n=n, note="metric missing")
    if ref is None:
        return GateRow(t.task, t.metric, check, None, bound, False, n=n, note=missing_ref)
    result = ratio(got, ref, higher_is_better=_direction(t, got))
    note = f"candidate {got.value:.4f} vs {label} {ref.value:.4f}"
    if result is None:
        return GateRow(t.task, t.metric, check, None, bound, False, n=n, note=f"{note}; 0 base")
    r, se = result
    effective = bound - t.tolerance_stderr * se
    return GateRow(
        t.task, t.metric, check, r, bound, r >= effective, se or None, n, effective, note
    )


def check_gate(
    candidate: EvalResult,
    *,
    config: GateConfig | str | dict[str, Any],
    base: EvalResult | None = None,
    production: EvalResult | None = None,
    production_version: str | None = None,
) -> GateReport:
    """Check every threshold and collect all failures.

    Args:
        candidate: Results of the model to promote (e.g. the quantized one).
        config: The gate config (object, dict, JSON/YAML text or file path).
        base: Results of the reference model from the same run, for ``min_recovery``.
        production: Results stored on the version in production, for ``min_vs_production``.
        production_version: That version's name, for the table and the failure message.

    Returns:
        The report; ``passed`` is True only if every row passed.

    Raises:
        ConfigError: The config is invalid, or a ratio check needs a direction lm-eval does
            not give.
    """
    cfg = load_gate_config(config)
    rows: list[GateRow] = []
    for t in cfg.thresholds:
        got = candidate.get(t.task, t.metric)
        n = candidate.samples(t.task)
        have = sorted(candidate.tasks.get(t.task, {}))
        missing = f"metric not in results (have: {have})"
        if t.min_samples is not None:
            if n is None:
                rows.append(
                    GateRow(
                        t.task,
                        t.metric,
                        "samples",
                        None,
                        t.min_samples,
                        False,
                        note="number of samples unknown",
                    )
                )
            else:
                rows.append(
                    GateRow(
                        t.task,
                        t.metric,
                        "samples",
                        n,
                        t.min_samples,
                        n >= t.min_samples,
                        n=n,
                        note="" if n >= t.min_samples else f"only {n} samples scored",
                    )
                )
        bounds: tuple[tuple[Check, float | None], ...] = (("min", t.min), ("max", t.max))
        for check, bound in bounds:
            if bound is None:
                continue
            if got is None:
                rows.append(GateRow(t.task, t.metric, check, None, bound, False, n=n, note=missing))
                continue
            slack = t.tolerance_stderr * (got.stderr or 0.0)
            effective = bound - slack if check == "min" else bound + slack
            ok = got.value >= effective if check == "min" else got.value <= effective
            note = "no stderr: point estimate" if t.tolerance_stderr and got.stderr is None else ""
            rows.append(
                GateRow(
                    t.task, t.metric, check, got.value, bound, ok, got.stderr, n, effective, note
                )
            )
        if t.min_recovery is not None:
            rows.append(
                _ratio_row(
                    t,
                    "recovery",
                    got,
                    base.get(t.task, t.metric) if base else None,
                    t.min_recovery,
                    n=n,
                    missing_ref="no base result to compare with",
                    label="base",
                )
            )
        if t.min_vs_production is not None:
            if production is None:
                rows.append(
                    GateRow(
                        t.task,
                        t.metric,
                        "vs production",
                        None,
                        t.min_vs_production,
                        True,
                        n=n,
                        note="no production version yet",
                    )
                )
                continue
            row = _ratio_row(
                t,
                "vs production",
                got,
                production.get(t.task, t.metric),
                t.min_vs_production,
                n=n,
                missing_ref=f"production {production_version or ''} has no result".strip(),
                label=f"production {production_version or ''}".strip(),
            )
            rows.append(row)
    report = GateReport(
        name=cfg.name,
        passed=all(r.passed for r in rows),
        rows=rows,
        production_version=production_version if production is not None else None,
    )
    log = logger.info if report.passed else logger.error
    log("gate %s %s\n%s", cfg.name, "passed" if report.passed else "FAILED", report.to_markdown())
    return report


def gate_summary(report: GateReport) -> str:
    """One line naming each failing check, for exit messages."""
    if report.passed:
        return f"gate {report.name} passed ({len(report.rows)} checks)"
    parts = []
    for r in report.failures:
        value = "missing" if r.value is None else f"{r.value:.4f}"
        against = r.effective if r.effective is not None else r.bound
        where = ""
        if r.check == "vs production" and report.production_version:
            where = f" ({report.production_version})"
        parts.append(f"{r.task}/{r.metric} {r.check}{where}: {value} vs {against:.4f}")
    return f"gate {report.name} failed: " + "; ".join(parts)


def dumps_report(report: GateReport) -> str:
    """JSON text of the report."""
    return json.dumps(report.to_dict(), indent=2)


_COLORS = {"base": "#8da0cb", "candidate": "#66c2a5", "production": "#fc8d62"}


def render_html(
    report: GateReport,
    *,
    candidate: EvalResult,
    base: EvalResult | None = None,
    production: EvalResult | None = None,
) -> str:
    """A self-contained HTML page: the gate's decision, a bar chart of base vs candidate vs
    production (with ±stderr whiskers) per gated metric, and the gate table."""
    series = {"base": base, "candidate": candidate, "production": production}
    metrics = list(dict.fromkeys((r.task, r.metric) for r in report.rows))
    width, bar, gap, top, height = 140, 28, 10, 30, 200
    chart_w = max(len(metrics), 1) * width + 60
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{chart_w}" height="{height + 90}" '
        'font-family="sans-serif" font-size="11">'
    ]
    values = [
        v
        for task, metric in metrics
        for result in series.values()
        if result and (m := result.get(task, metric))
        for v in (m.value + (m.stderr or 0),)
    ]
    scale = max(values, default=1.0) or 1.0
    for i, (task, metric) in enumerate(metrics):
        x0 = 40 + i * width
        for j, (label, result) in enumerate(series.items()):
            m = result.get(task, metric) if result else None
            if m is None:
                continue
            h = height * m.value / scale
            x = x0 + j * (bar + gap)
            y = top + height - h
            parts.append(
                f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{h:.1f}" '
                f'fill="{_COLORS[label]}"><title>{label}: {m.value:.4f}</title></rect>'
            )
            if m.stderr:
                lo = top + height - height * (m.value - m.stderr) / scale
                hi = top + height - height * (m.value + m.stderr) / scale
                cx = x + bar / 2
                parts.append(
                    f'<line x1="{cx}" x2="{cx}" y1="{lo:.1f}" y2="{hi:.1f}" stroke="#333"/>'
                )
            parts.append(
                f'<text x="{x + bar / 2}" y="{y - 4:.1f}" text-anchor="middle">{m.value:.3f}</text>'
            )
        parts.append(
            f'<text x="{x0 + width / 2 - 20}" y="{top + height + 16}" text-anchor="middle">'
            f"{html.escape(f'{task}/{metric}')}</text>"
        )
    for j, label in enumerate(series):
        parts.append(
            f'<rect x="{40 + j * 110}" y="{top + height + 40}" width="12" height="12" '
            f'fill="{_COLORS[label]}"/><text x="{56 + j * 110}" y="{top + height + 50}">'
            f"{label}{'' if series[label] else ' (none)'}</text>"
        )
    parts.append("</svg>")
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip().strip("|").split("|"))
        + "</tr>"
        for line in report.to_markdown().splitlines()
        if line.startswith("| ") and not line.startswith("|---")
    )
    verdict = "PASSED" if report.passed else "FAILED"
    color = "#1a7f37" if report.passed else "#cf222e"
    production_line = (
        f"<p>Compared with production version <code>{html.escape(report.production_version)}"
        "</code>.</p>"
        if report.production_version
        else ""
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Gate {html.escape(report.name)}</title><style>"
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td{border:1px solid #ccc;padding:4px 8px}tr:first-child td{font-weight:bold}</style>"
        f"</head><body><h2>Gate <code>{html.escape(report.name)}</code>: "
        f"<span style='color:{color}'>{verdict}</span></h2>{production_line}"
        f"{''.join(parts)}<table>{rows}</table></body></html>"
    )


@dataclass
class GateOutcome:
    """A gate run on results files: the report, its one-line summary and its HTML page."""

    report: GateReport
    summary: str
    html: str


def run_gate(
    *,
    candidate: str | Path,
    config: GateConfig | str | dict[str, Any],
    base: str | Path | None = None,
    production: str | Path | None = None,
) -> GateOutcome:
    """Gate results files: modelgate's results artifacts or lm-eval's own results JSON.

    ``production`` may also be the production lookup of the pipeline (version name and
    results, or that there is none).

    Raises:
        ConfigError: The config is invalid, or a ratio check needs a direction.
        EvaluationError: A file is not a results file.
    """
    from modelgate.registry.base import read_production

    cfg = load_gate_config(config)
    cand = EvalResult.load(candidate)
    base_result = EvalResult.load(base) if base else None
    prod, version = read_production(production) if production else (None, None)
    report = check_gate(
        cand, config=cfg, base=base_result, production=prod, production_version=version
    )
    page = render_html(report, candidate=cand, base=base_result, production=prod)
    return GateOutcome(report=report, summary=gate_summary(report), html=page)
