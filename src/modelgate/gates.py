"""Quality gates: thresholds as validated config, checked against evaluation results.

A gate config (JSON or YAML) lists per task/metric checks::

    thresholds:
      - task: arc_easy
        metric: acc
        min: 0.55            # absolute floor on the candidate
        min_recovery: 0.97   # candidate / base, for the same task and metric

Every check is evaluated and every failure collected; the gate passes only if all pass. A metric
named in a threshold but missing from the results fails the gate (fail closed), and so does a
recovery check without base results. For metrics where lower is better (e.g. perplexity) ``max``
is the bound and recovery is ``base / candidate``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelgate.errors import ConfigError
from modelgate.evaluate import EvalResult

logger = logging.getLogger(__name__)


class Threshold(BaseModel):
    """One check on one task metric."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1)
    metric: str = Field(min_length=1, description="lm-eval metric, e.g. 'acc' or 'acc,none'")
    min: float | None = Field(default=None, description="absolute lower bound on the candidate")
    max: float | None = Field(default=None, description="absolute upper bound on the candidate")
    min_recovery: float | None = Field(
        default=None, gt=0, description="candidate/base lower bound (e.g. 0.97 = 97% recovered)"
    )

    @model_validator(mode="after")
    def _has_a_bound(self) -> Threshold:
        if self.min is None and self.max is None and self.min_recovery is None:
            raise ValueError(
                f"threshold for {self.task}/{self.metric} sets no bound: "
                "give at least one of min, max, min_recovery"
            )
        return self


class GateConfig(BaseModel):
    """A gate: a list of thresholds that must all hold."""

    model_config = ConfigDict(extra="forbid")

    name: str = "quality"
    thresholds: list[Threshold] = Field(min_length=1)


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
        text = source
        candidate = Path(source) if len(source) < 4096 and "\n" not in source else None
        if candidate is not None and candidate.suffix in {".json", ".yaml", ".yml"}:
            if not candidate.is_file():
                raise ConfigError(f"gate config file {source!r} does not exist")
            text = candidate.read_text()
        try:
            data = yaml.safe_load(text)  # YAML is a superset of JSON
        except yaml.YAMLError as e:
            raise ConfigError(f"gate config is neither JSON nor YAML: {e}") from e
    if isinstance(data, list):
        data = {"thresholds": data}
    if not isinstance(data, dict):
        raise ConfigError(
            'gate config must be a mapping like {"thresholds": [{"task": "arc_easy", '
            f'"metric": "acc", "min": 0.5}}]}}, got {type(data).__name__}'
        )
    try:
        return GateConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in e.errors()
        )
        raise ConfigError(f"invalid gate config: {problems}") from e


@dataclass
class GateRow:
    """One line of the gate table."""

    task: str
    metric: str
    check: str  # "min", "max" or "recovery"
    value: float | None
    threshold: float
    passed: bool
    note: str = ""


@dataclass
class GateReport:
    """The gate's decision with every row that led to it."""

    name: str
    passed: bool
    rows: list[GateRow] = field(default_factory=list)

    @property
    def failures(self) -> list[GateRow]:
        """Rows that failed."""
        return [r for r in self.rows if not r.passed]

    def to_markdown(self) -> str:
        """The Markdown table metric | value | threshold | verdict, headed by the decision."""
        verdict = "PASSED" if self.passed else f"FAILED ({len(self.failures)} failing)"
        lines = [
            f"### Gate `{self.name}`: {verdict}",
            "",
            "| metric | value | threshold | verdict |",
            "|---|---|---|---|",
        ]
        for r in self.rows:
            label = f"{r.task}/{r.metric}" + (" recovery" if r.check == "recovery" else "")
            op = {"min": ">=", "max": "<=", "recovery": ">="}[r.check]
            value = "missing" if r.value is None else f"{r.value:.4f}"
            mark = "PASS" if r.passed else "FAIL"
            note = f" ({r.note})" if r.note else ""
            lines.append(f"| {label} | {value} | {op} {r.threshold:.4f} | {mark}{note} |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def _recovery(candidate: float, base: float, *, higher_is_better: bool) -> float | None:
    num, den = (candidate, base) if higher_is_better else (base, candidate)
    if den == 0:
        return 1.0 if num == 0 else None
    return num / den


def check_gate(
    candidate: EvalResult,
    *,
    config: GateConfig | str | dict[str, Any],
    base: EvalResult | None = None,
) -> GateReport:
    """Check every threshold and collect all failures.

    Args:
        candidate: Results of the model to promote (e.g. the quantized one).
        config: The gate config (object, dict, JSON/YAML text or file path).
        base: Results of the reference model from the same run, for ``min_recovery``.

    Returns:
        The report; ``passed`` is True only if every row passed.

    Raises:
        ConfigError: The config is invalid.
    """
    cfg = load_gate_config(config)
    rows: list[GateRow] = []
    for t in cfg.thresholds:
        got = candidate.get(t.task, t.metric)
        missing_note = f"metric not in results (have: {sorted(candidate.tasks.get(t.task, {}))})"
        for check, bound in (("min", t.min), ("max", t.max)):
            if bound is None:
                continue
            if got is None:
                rows.append(GateRow(t.task, t.metric, check, None, bound, False, missing_note))
                continue
            ok = got.value >= bound if check == "min" else got.value <= bound
            rows.append(GateRow(t.task, t.metric, check, got.value, bound, ok))
        if t.min_recovery is not None:
            ref = base.get(t.task, t.metric) if base else None
            if got is None or ref is None:
                note = missing_note if got is None else "no base result to compare with"
                rows.append(
                    GateRow(t.task, t.metric, "recovery", None, t.min_recovery, False, note)
                )
                continue
            rec = _recovery(got.value, ref.value, higher_is_better=got.higher_is_better)
            note = f"candidate {got.value:.4f} vs base {ref.value:.4f}"
            if rec is None:
                rows.append(
                    GateRow(
                        t.task,
                        t.metric,
                        "recovery",
                        None,
                        t.min_recovery,
                        False,
                        note + "; base is 0",
                    )
                )
                continue
            rows.append(
                GateRow(
                    t.task, t.metric, "recovery", rec, t.min_recovery, rec >= t.min_recovery, note
                )
            )
    report = GateReport(name=cfg.name, passed=all(r.passed for r in rows), rows=rows)
    log = logger.info if report.passed else logger.error
    log("gate %s %s\n%s", cfg.name, "passed" if report.passed else "FAILED", report.to_markdown())
    return report


def gate_summary(report: GateReport) -> str:
    """One line naming each failing check, for exit messages."""
    if report.passed:
        return f"gate {report.name} passed ({len(report.rows)} checks)"
    parts = [
        f"{r.task}/{r.metric} {r.check}: "
        + ("missing" if r.value is None else f"{r.value:.4f}")
        + f" vs {r.threshold:.4f}"
        for r in report.failures
    ]
    return f"gate {report.name} failed: " + "; ".join(parts)


def dumps_report(report: GateReport) -> str:
    """JSON text of the report."""
    return json.dumps(report.to_dict(), indent=2)
