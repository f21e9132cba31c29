"""Quality gates: thresholds as validated config, checked against evaluation results.

A gate config (JSON or YAML) lists per task/metric checks::

    name: release
    thresholds:
      - task: arc_easy
        metric: acc
        min: 0.55                # absolute floor on the candidate
        min_recovery: 0.97       # candidate / base model from the same run
        min_vs_production: 0.99  # candidate / the version in production
        min_samples: 500         # fewer evaluated samples (or pairs) fail the check
        tolerance_stderr: 1      # k: pass within k standard errors of the bound
        confidence: 0.95         # or: ratio checks must hold at this one-sided confidence
        pairing: auto            # pair ratio checks per document when samples exist; off
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

Paired checks. Two models scored on the same documents are compared per document, which
removes the documents' own difficulty from the noise. When per-sample results (lm-eval's
``log_samples``, :mod:`modelgate.samples`) are there for the candidate and the reference, a
ratio check is paired (``pairing: auto``, the default; ``pairing: off`` keeps the unpaired rule):
documents are matched by ``(task, doc_id)`` with equal ``doc_hash``, and for bound ``r`` each
pair gives

* higher is better, ``c/b >= r``: ``z_i = c_i - r*b_i``;
* lower is better, ``b/c >= r`` (the ratio is inverted): ``z_i = b_i - r*c_i``

(``c`` candidate, ``b`` reference). As long as the reference mean is positive,
``mean(num)/mean(den) >= r`` holds exactly when ``mean(z) >= 0``, so the point estimate is the
ratio check itself; ``se = sd(z)/sqrt(n)`` over the ``n`` pairs. ``tolerance_stderr: k`` fails
only when ``mean(z) + k*se < 0``; ``confidence: p`` (non-inferiority) passes only when the
one-sided lower bound ``mean(z) - t_{p,n-1}*se >= 0`` (paired t). In ratio units the table's
effective bound is ``r - k*se/mean(den)`` or ``r + t*se/mean(den)``. For 0/1 metrics the
table also gives the discordant pairs (reference right and candidate wrong, and the reverse)
and the exact two-sided McNemar p on them, for information (the verdict is the rule above).
Documents on one side only are not paired; fewer pairs than ``min_samples`` fail. Pairing falls
back to the unpaired rule, with a note saying why, when a side has no per-sample results, when
lm-eval's task hashes, the ``limit``, ``num_fewshot``, ``seed`` or task config hash differ,
when a ``doc_id`` has two ``doc_hash``, when the metric is not the mean of its per-document
values (e.g. perplexity), or with fewer than 2 pairs. Unpaired, ``confidence: p`` passes when
``ratio - z_p*se(ratio) >= r`` (normal quantile).

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
from statistics import NormalDist
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelgate.errors import ConfigError, ModelgateError
from modelgate.evaluate import EvalResult, MetricValue
from modelgate.samples import (
    UNREADABLE,
    NoPairs,
    Pairs,
    SampleSet,
    load_samples,
    mcnemar_exact_p,
    mean_of,
    pair,
    read_samples,
    samples_beside,
    t_quantile,
)
from modelgate.slo import ServingGateConfig
from modelgate.validation import parse_config_text, validated

logger = logging.getLogger(__name__)

Direction = Literal["higher", "lower"]
Check = Literal["min", "max", "recovery", "vs production", "samples"]
Pairing = Literal["auto", "off"]


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
    confidence: float | None = Field(
        default=None,
        gt=0.5,
        lt=1,
        description="ratio checks pass only when their one-sided lower confidence bound holds",
    )
    pairing: Pairing = Field(
        default="auto",
        description="auto: pair ratio checks per document when both sides have samples; off",
    )

    @field_validator("pairing", mode="before")
    @classmethod
    def _bare_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare off as false

    @model_validator(mode="after")
    def _has_a_bound(self) -> Threshold:
        bounds = (self.min, self.max, self.min_recovery, self.min_vs_production, self.min_samples)
        if all(b is None for b in bounds):
            raise ValueError(
                f"threshold for {self.task}/{self.metric} sets no bound: give at least one of "
                "min, max, min_recovery, min_vs_production, min_samples"
            )
        ratios = (self.min_recovery, self.min_vs_production)
        if self.confidence is not None and all(b is None for b in ratios):
            raise ValueError(
                f"threshold for {self.task}/{self.metric}: confidence applies to the ratio "
                "checks; add min_recovery or min_vs_production, or drop confidence"
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
    paired: PairedStats | None = None


@dataclass
class PairedStats:
    """How a ratio check was decided on paired documents (see the module docstring).

    ``mean_diff`` is the mean of ``z`` over the pairs, ``se`` its standard error
    ``sd(z)/sqrt(pairs)`` and ``bound_used`` what was compared with 0: ``mean_diff - t*se``
    under ``confidence``, else ``mean_diff + k*se``. ``losses``/``gains`` count the documents
    where the candidate scored below/above the reference (for 0/1 metrics: the discordant pairs,
    reference right and candidate wrong, and the reverse); ``lost_docs``/``gained_docs`` list
    the first :data:`MAX_LISTED_DOCS` of their ``doc_id``.
    """

    pairs: int
    unpaired: int
    mean_diff: float
    se: float
    test: str
    bound_used: float
    losses: int
    gains: int
    binary: bool
    mcnemar_p: float | None = None
    lost_docs: list[int] = field(default_factory=list)
    gained_docs: list[int] = field(default_factory=list)


#: What the paired table's columns mean (under the table in Markdown and HTML).
PAIRED_LEGEND = (
    "Paired checks: per document, z = candidate - bound * reference (higher is better) or "
    "reference - bound * candidate (lower is better); a check passes when its bound used "
    "(mean z - t * se with a confidence, else mean z + k * se) is >= 0. Lost: documents where "
    "the candidate scored worse than the reference (0/1 metrics: reference right, candidate "
    "wrong); gained: the reverse. McNemar's exact test on those is given for information."
)
#: Most ``doc_id`` listed per direction in a paired row (the counts are always complete).
MAX_LISTED_DOCS = 50
#: Relative tolerance when checking that a metric is the mean of its per-document values.
MEAN_TOLERANCE = 1e-6


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
        paired = [(r, r.paired) for r in self.rows if r.paired is not None]
        if paired:
            lines += [
                "",
                PAIRED_LEGEND,
                "",
                "| metric | check | pairs | lost | gained | mean z | paired se | test | "
                "bound used | McNemar exact p | verdict |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for r, ps in paired:
                p = "" if ps.mcnemar_p is None else f"{ps.mcnemar_p:.4g}"
                lines.append(
                    f"| {r.task}/{r.metric} | {r.check} | {ps.pairs} | {ps.losses} | "
                    f"{ps.gains} | {ps.mean_diff:.4f} | {ps.se:.4f} | {ps.test} | "
                    f"{ps.bound_used:.4f} | {p} | {'PASS' if r.passed else 'FAIL'} |"
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


def _pairing(
    t: Threshold,
    got: MetricValue | None,
    ref: MetricValue | None,
    candidate: SampleSet | None,
    reference: SampleSet | None,
    *,
    label: str,
) -> Pairs | NoPairs | None:
    """The pairs a ratio check is decided on; None when it is unpaired as before (pairing off,
    or neither side has samples), :class:`NoPairs` with the reason when it falls back."""
    if t.pairing == "off" or (candidate is None and reference is None):
        return None
    if candidate is None or reference is None:
        side = "candidate" if candidate is None else label
        return NoPairs(f"{side} has no per-sample results")
    pairs = pair(candidate, reference, task=t.task, metric=t.metric, label=label)
    if isinstance(pairs, NoPairs):
        return pairs
    for side, sset, value in (("candidate", candidate, got), (label, reference, ref)):
        mean = mean_of(sset, task=t.task, metric=t.metric)
        if value is not None and mean is not None:
            if abs(mean - value.value) > MEAN_TOLERANCE * max(1.0, abs(value.value)):
                return NoPairs(
                    f"{side}'s per-document mean {mean:.6g} is not its reported "
                    f"{value.value:.6g} ({t.metric} is not a mean over documents)"
                )
    if min(pairs.candidate + pairs.reference, default=0.0) < 0:
        return NoPairs(f"{t.metric} has negative per-document values (ratio undefined)")
    return pairs


def _paired_row(
    t: Threshold, check: Check, bound: float, pairs: Pairs, *, higher: bool, note: str
) -> GateRow:
    """Decide a ratio check on pairs (the module docstring derives ``z``)."""
    n = pairs.n
    num, den = (pairs.candidate, pairs.reference) if higher else (pairs.reference, pairs.candidate)
    z = [x - bound * y for x, y in zip(num, den, strict=True)]
    mean_z = math.fsum(z) / n
    se = math.sqrt(math.fsum((v - mean_z) ** 2 for v in z) / (n - 1)) / math.sqrt(n)
    if t.confidence is not None:
        q = t_quantile(t.confidence, n - 1)
        used, shift = mean_z - q * se, q * se
        test = f"paired t, one-sided {t.confidence:g} (t={q:.3f}, df={n - 1})"
    else:
        k = t.tolerance_stderr
        used, shift = mean_z + k * se, -k * se
        test = f"paired, mean + {k:g} se" if k else "paired, point estimate"
    num_mean, den_mean = math.fsum(num) / n, math.fsum(den) / n
    if den_mean > 0:
        value: float | None = num_mean / den_mean
        stderr: float | None = se / den_mean
        effective: float | None = bound + shift / den_mean
    else:  # a reference scoring 0 everywhere: z = num >= 0 always holds, as 0/0 = 1 does
        value, stderr, effective = (1.0 if num_mean == 0 else None), None, None
    worse = [
        (c < r) if higher else (c > r)
        for c, r in zip(pairs.candidate, pairs.reference, strict=True)
    ]
    better = [
        (c > r) if higher else (c < r)
        for c, r in zip(pairs.candidate, pairs.reference, strict=True)
    ]
    lost = [d for d, w in zip(pairs.doc_ids, worse, strict=True) if w]
    gained = [d for d, b in zip(pairs.doc_ids, better, strict=True) if b]
    binary = pairs.binary
    stats = PairedStats(
        pairs=n,
        unpaired=pairs.only_candidate + pairs.only_reference,
        mean_diff=mean_z,
        se=se,
        test=test,
        bound_used=used,
        losses=len(lost),
        gains=len(gained),
        binary=binary,
        mcnemar_p=mcnemar_exact_p(len(lost), len(gained)) if binary else None,
        lost_docs=lost[:MAX_LISTED_DOCS],
        gained_docs=gained[:MAX_LISTED_DOCS],
    )
    note = f"{note}; {test} on {n} pairs"
    if stats.unpaired:
        note += f" ({stats.unpaired} docs on one side only, not paired)"
    if stats.mcnemar_p is not None:
        note += f"; McNemar exact p={stats.mcnemar_p:.3g}"
    return GateRow(
        t.task, t.metric, check, value, bound, used >= 0, stderr, n, effective, note, stats
    )


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
    pairs: Pairs | NoPairs | None = None,
) -> GateRow:
    if got is None:
        return GateRow(t.task, t.metric, check, None, bound, False, n=n, note="metric missing")
    if ref is None:
        return GateRow(t.task, t.metric, check, None, bound, False, n=n, note=missing_ref)
    higher = _direction(t, got)
    note = f"candidate {got.value:.4f} vs {label} {ref.value:.4f}"
    if isinstance(pairs, Pairs):
        if t.min_samples is not None and pairs.n < t.min_samples:
            why = f"only {pairs.n} pairs, fewer than min_samples {t.min_samples}"
            return GateRow(t.task, t.metric, check, None, bound, False, n=pairs.n, note=why)
        if pairs.n >= 2:
            return _paired_row(t, check, bound, pairs, higher=higher, note=note)
        pairs = NoPairs(f"only {pairs.n} pair")
    if isinstance(pairs, NoPairs):
        note = f"{note}; unpaired: {pairs.reason}"
    result = ratio(got, ref, higher_is_better=higher)
    if result is None:
        return GateRow(t.task, t.metric, check, None, bound, False, n=n, note=f"{note}; 0 base")
    r, se = result
    if t.confidence is not None:
        q = NormalDist().inv_cdf(t.confidence)
        effective = bound + q * se
        note += f"; normal one-sided {t.confidence:g}" + ("" if se else " (no stderr)")
    else:
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
    candidate_samples: SampleSet | None = None,
    base_samples: SampleSet | None = None,
    production_samples: SampleSet | None = None,
) -> GateReport:
    """Check every threshold and collect all failures.

    Args:
        candidate: Results of the model to promote (e.g. the quantized one).
        config: The gate config (object, dict, JSON/YAML text or file path).
        base: Results of the reference model from the same run, for ``min_recovery``.
        production: Results stored on the version in production, for ``min_vs_production``.
        production_version: That version's name, for the table and the failure message.
        candidate_samples: The candidate's per-sample results (:mod:`modelgate.samples`).
        base_samples: The base model's, to pair ``min_recovery`` per document.
        production_samples: Production's, to pair ``min_vs_production`` per document.

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
            ref = base.get(t.task, t.metric) if base else None
            rows.append(
                _ratio_row(
                    t,
                    "recovery",
                    got,
                    ref,
                    t.min_recovery,
                    n=n,
                    missing_ref="no base result to compare with",
                    label="base",
                    pairs=_pairing(t, got, ref, candidate_samples, base_samples, label="base"),
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
            ref = production.get(t.task, t.metric)
            label = f"production {production_version or ''}".strip()
            row = _ratio_row(
                t,
                "vs production",
                got,
                ref,
                t.min_vs_production,
                n=n,
                missing_ref=f"production {production_version or ''} has no result".strip(),
                label=label,
                pairs=_pairing(t, got, ref, candidate_samples, production_samples, label=label),
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
#: Generous width of one character of the chart's 11 px sans-serif text, for laying it out.
_CHAR_W = 7.0


def _markdown_tables(markdown: str) -> list[list[list[str]]]:
    """The tables of :meth:`GateReport.to_markdown` as rows of cells (header row first)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in markdown.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            if not line.startswith("|---"):
                current.append([c.strip() for c in line.strip().strip("|").split("|")])
        else:
            current = None
    return tables


def _chart(report: GateReport, series: dict[str, EvalResult | None]) -> str:
    """The inline SVG bar chart; every label is laid out inside its width."""
    metrics = list(dict.fromkeys((r.task, r.metric) for r in report.rows))
    bar, gap, top, height = 28, 10, 30, 200
    bars_w = len(series) * (bar + gap)
    labels = [f"{task}/{metric}" for task, metric in metrics]
    slots = [max(bars_w + 30, len(label) * _CHAR_W + 20) for label in labels]
    legend = [f"{label}{'' if series[label] else ' (none)'}" for label in series]
    legend_w = [16 + len(text) * _CHAR_W + 24 for text in legend]
    chart_w = max(40 + sum(slots) + 20, 40 + sum(legend_w) + 20)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{chart_w:.0f}" height="{height + 90}" '
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
    x0 = 40.0
    for (task, metric), label, slot in zip(metrics, labels, slots, strict=True):
        left = x0 + (slot - bars_w) / 2
        for j, (name, result) in enumerate(series.items()):
            m = result.get(task, metric) if result else None
            if m is None:
                continue
            h = max(0.0, min(height, height * m.value / scale))
            x = left + j * (bar + gap)
            y = top + height - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar}" height="{h:.1f}" '
                f'fill="{_COLORS[name]}"><title>{name}: {m.value:.4f}</title></rect>'
            )
            if m.stderr:
                lo = top + height - height * max(0.0, m.value - m.stderr) / scale
                hi = top + height - height * max(0.0, m.value + m.stderr) / scale
                cx = x + bar / 2
                parts.append(
                    f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{lo:.1f}" y2="{hi:.1f}" stroke="#333"/>'
                )
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle">'
                f"{m.value:.3f}</text>"
            )
        parts.append(
            f'<text x="{x0 + slot / 2:.1f}" y="{top + height + 16}" text-anchor="middle">'
            f"{html.escape(label)}</text>"
        )
        x0 += slot
    x = 40.0
    for name, text, w in zip(series, legend, legend_w, strict=True):
        parts.append(
            f'<rect x="{x:.1f}" y="{top + height + 40}" width="12" height="12" '
            f'fill="{_COLORS[name]}"/><text x="{x + 16:.1f}" y="{top + height + 50}">'
            f"{html.escape(text)}</text>"
        )
        x += w
    parts.append("</svg>")
    return "".join(parts)


def _doc_list(ids: list[int], total: int) -> str:
    shown = ", ".join(html.escape(str(d)) for d in ids)
    more = f" … and {total - len(ids)} more" if total > len(ids) else ""
    return f"{shown}{more}" if shown else "none"


def _per_document(report: GateReport) -> str:
    """Where the candidate lost and gained against each paired reference."""
    items = []
    for r in report.rows:
        ps = r.paired
        if ps is None:
            continue
        against = "base" if r.check == "recovery" else "production"
        kind = "reference right, candidate wrong" if ps.binary else "candidate scored worse"
        items.append(
            f"<h4>{html.escape(f'{r.task}/{r.metric}')} vs {against}: {ps.pairs} documents "
            f"paired</h4><ul><li>lost on {ps.losses} ({kind}): doc_id "
            f"{_doc_list(ps.lost_docs, ps.losses)}</li><li>gained on {ps.gains}: doc_id "
            f"{_doc_list(ps.gained_docs, ps.gains)}</li></ul>"
        )
    if not items:
        return ""
    return f"<p>{html.escape(PAIRED_LEGEND)}</p><h3>Per document</h3>" + "".join(items)


def render_html(
    report: GateReport,
    *,
    candidate: EvalResult,
    base: EvalResult | None = None,
    production: EvalResult | None = None,
) -> str:
    """A self-contained HTML page: the gate's decision, a bar chart of base vs candidate vs
    production (with ±stderr whiskers) per gated metric, the gate table, and for paired checks
    the table of paired statistics and where the candidate lost and gained per document."""
    series = {"base": base, "candidate": candidate, "production": production}
    tables = "".join(
        "<table>"
        + "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table
        )
        + "</table>"
        for table in _markdown_tables(report.to_markdown())
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
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:1em 0}"
        "td{border:1px solid #ccc;padding:4px 8px}tr:first-child td{font-weight:bold}</style>"
        f"</head><body><h2>Gate <code>{html.escape(report.name)}</code>: "
        f"<span style='color:{color}'>{verdict}</span></h2>{production_line}"
        f"{_chart(report, series)}{tables}{_per_document(report)}</body></html>"
    )


@dataclass
class GateOutcome:
    """A gate run on results files: the report, its one-line summary and its HTML page."""

    report: GateReport
    summary: str
    html: str


def _side_samples(
    explicit: str | Path | None, result: EvalResult | None, results_path: str | Path | None
) -> SampleSet | None:
    """A side's per-sample results: the explicit path, else its results' ``samples_uri``, else
    lm-eval's samples files written beside its results file."""
    if explicit is not None:
        return load_samples(explicit)
    if result is None:
        return None
    try:
        if result.samples_uri:
            uri = result.samples_uri
            if "://" not in uri and not Path(uri).is_absolute() and results_path is not None:
                folder = Path(results_path)
                uri = str((folder if folder.is_dir() else folder.parent) / uri)
            return read_samples(uri)
        return samples_beside(results_path) if results_path is not None else None
    except ModelgateError as e:  # found on its own: gate unpaired rather than not at all
        logger.warning(
            "per-sample results of %s not used, checks stay unpaired: %s", result.model, e
        )
        return SampleSet(samples=[], meta={UNREADABLE: str(e)})


def run_gate(
    *,
    candidate: str | Path,
    config: GateConfig | str | dict[str, Any],
    base: str | Path | None = None,
    production: str | Path | None = None,
    candidate_samples: str | Path | None = None,
    base_samples: str | Path | None = None,
    production_samples: str | Path | None = None,
) -> GateOutcome:
    """Gate results files: modelgate's results artifacts or lm-eval's own results JSON.

    ``production`` may also be the production lookup of the pipeline (version name and
    results, or that there is none).

    Per-sample results pair the ratio checks per document (see the module docstring). Each
    side's are read from the ``*_samples`` path given (a compact samples file or folder, a
    stored ``s3://``/``file://`` folder, or lm-eval's ``samples_<task>_<date>.jsonl`` file or
    folder), else from its results' ``samples_uri`` (relative to the results file), else from
    lm-eval's samples files written beside its lm-eval results file by the same run.

    Raises:
        ConfigError: The config is invalid, a ratio check needs a direction, or a samples path
            does not exist.
        EvaluationError: A file is not a results file, or a samples file is malformed.
        StorageError: A stored samples folder cannot be read.
    """
    from modelgate.registry.base import read_production

    cfg = load_gate_config(config)
    cand = EvalResult.load(candidate)
    base_result = EvalResult.load(base) if base else None
    prod, version = read_production(production) if production else (None, None)
    wants_pairs = any(
        t.pairing != "off" and (t.min_recovery or t.min_vs_production) for t in cfg.thresholds
    )
    sides: dict[str, SampleSet | None] = {"candidate": None, "base": None, "production": None}
    if wants_pairs:
        sides = {
            "candidate": _side_samples(candidate_samples, cand, candidate),
            "base": _side_samples(base_samples, base_result, base),
            "production": _side_samples(production_samples, prod, production),
        }
    report = check_gate(
        cand,
        config=cfg,
        base=base_result,
        production=prod,
        production_version=version,
        candidate_samples=sides["candidate"],
        base_samples=sides["base"],
        production_samples=sides["production"],
    )
    page = render_html(report, candidate=cand, base=base_result, production=prod)
    return GateOutcome(report=report, summary=gate_summary(report), html=page)
