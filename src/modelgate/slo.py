"""The serving (SLO) gate: GuideLLM puts load on a live OpenAI-compatible endpoint and the
measured latencies, error rate and throughput are checked against bounds.

Config: the ``serving`` section of a gate config, or a file holding only that section::

    serving:
      name: serving                      # shown in the table (default "serving")
      load: {profile: constant, rate: 2, duration_s: 30, prompt_tokens: 128, output_tokens: 64}
      thresholds:
        - {metric: ttft_ms, stat: p95, max: 2000}
        - {metric: itl_ms, stat: p95, max: 200}
        - {metric: e2e_ms, stat: p99, max: 20000}
        - {metric: error_rate, max: 0.01}
        - {metric: output_tokens_per_s, min: 5}

Metrics (GuideLLM's names in brackets, over its *successful* requests):

* ``ttft_ms`` time to first token [``time_to_first_token_ms``], ``itl_ms`` inter-token
  latency [``inter_token_latency_ms``], ``e2e_ms`` request latency [``request_latency``, in
  seconds there]: distributions, so a threshold names its ``stat`` (``p50``, ``p90``, ``p95``,
  ``p99`` or ``mean``); there is no default.
* ``output_tokens_per_s`` [``output_tokens_per_second``] and ``requests_per_s``
  [``requests_per_second``]: rates over the measured window; their only stat is ``mean`` (the
  default; GuideLLM's percentiles of these are of per-interval rates, not a service level).
* ``error_rate``: errored / (successful + errored) requests. Requests cut off at the end of the
  window (GuideLLM's ``incomplete``) count neither way. It takes no stat.

A threshold gives ``min``, ``max`` or both; a value on the bound passes. Fail closed: a value
that cannot be measured (no successful request, so no latency) fails its row.

Load (``load``): ``profile`` maps onto GuideLLM's profiles, and ``rate`` means what the profile
means by it: ``constant`` and ``poisson`` requests per second; ``concurrent`` the number of
streams; ``sweep`` how many benchmarks GuideLLM runs from synchronous up to throughput
(``sweep_size``, default 10); ``synchronous`` takes none. Each benchmark runs ``duration_s``
seconds. Prompts are GuideLLM's ``synthetic_text`` data (``prompt_tokens`` in,
``output_tokens`` out, ``ignore_eos``), so nothing is downloaded, but they are sized with the
model's tokenizer: a local folder (``processor``; :func:`fetch_tokenizer` gets one from the
model store). With several benchmarks (``sweep``) every one must pass, and a row names its
benchmark.

Run: :func:`run_serving_gate` checks the endpoint first (``GET /v1/models`` within seconds,
the model among the served ones, prompt + output within its ``max_model_len``), then runs
GuideLLM's ``run`` (through :mod:`modelgate.guidellm_main`) in its own process group (stopped
on Ctrl-C, SIGTERM or timeout) with the Hub offline, parses GuideLLM's JSON report into
:class:`ServingMeasurement` and checks it (:func:`check_serving`). GuideLLM's own HTML report
is self-contained (inline CSS/JS, no CDN: ``guidellm/benchmark/outputs/html.py``) and is
embedded, escaped, in ``serving.html``.
"""

from __future__ import annotations

import html
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import requests
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelgate.errors import ConfigError, EndpointUnreachableError, ServingGateError, StorageError
from modelgate.processes import group_members, signals_raise, stop_process_group
from modelgate.validation import parse_config_text, validated

logger = logging.getLogger(__name__)

ServingMetric = Literal[
    "ttft_ms", "itl_ms", "e2e_ms", "error_rate", "output_tokens_per_s", "requests_per_s"
]
Stat = Literal["p50", "p90", "p95", "p99", "mean"]
Profile = Literal["constant", "poisson", "concurrent", "sweep", "synchronous"]
Api = Literal["chat", "completions"]

#: Distributions: a threshold on one names its stat.
LATENCY_METRICS: tuple[str, ...] = ("ttft_ms", "itl_ms", "e2e_ms")
#: Rates over the measured window: ``mean`` only.
RATE_METRICS: tuple[str, ...] = ("output_tokens_per_s", "requests_per_s")
STATS: tuple[str, ...] = get_args(Stat)

#: ``GET /v1/models``: connect and read timeouts (one try: a dead endpoint fails in seconds).
REACH_TIMEOUT = (2.0, 3.0)
#: Seconds GuideLLM gets beyond its benchmarks' durations (imports, worker start, report).
STARTUP_ALLOWANCE_S = 300.0
#: A GuideLLM JSON report larger than this is refused (it grows with every request).
MAX_REPORT_BYTES = 256 * 1024**2
#: GuideLLM's own HTML report larger than this is linked by name, not embedded.
MAX_EMBEDDED_HTML_BYTES = 16 * 1024**2
#: Worker processes GuideLLM starts at most (its default, 10, costs seconds of start-up each).
MAX_WORKERS = 4
#: Seconds GuideLLM waits between its workers reporting ready and the first request (its
#: default, 1.0, pads for workers that are by then already waiting on a barrier;
#: ``guidellm/scheduler/worker_group.py`` passes that barrier before the delay starts).
START_DELAY_S = 0.25
#: Requests GuideLLM's data loader builds ahead, at least (see :func:`data_prefetch`).
MIN_PREFETCH = 64
#: Last bytes of GuideLLM's log shown when it fails.
LOG_TAIL_BYTES = 4000

#: Files of a model folder that a tokenizer (and its chat template) needs; nothing else is
#: fetched by :func:`fetch_tokenizer`.
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "tokenizer.model",
        "spiece.model",
        "sentencepiece.bpe.model",
        "config.json",
        "generation_config.json",
        "chat_template.jinja",
        "chat_template.json",
    }
)
TOKENIZER_SUFFIXES = (".tiktoken",)
#: transformers' extra named chat templates live in this folder.
TOKENIZER_DIRS = ("additional_chat_templates/",)
#: A folder holding one of these is a tokenizer folder.
TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer_config.json")


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


class ServingThreshold(BaseModel):
    """A bound on one measured serving metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: ServingMetric = Field(description="what is measured (docs/gates.md, Serving gate)")
    stat: Stat | None = Field(
        default=None,
        description="p50|p90|p95|p99|mean: required for ttft_ms, itl_ms, e2e_ms; mean for rates",
    )
    min: float | None = Field(default=None, description="lower bound (throughput)")
    max: float | None = Field(default=None, description="upper bound (latency, error rate)")

    @model_validator(mode="after")
    def _consistent(self) -> ServingThreshold:
        if self.min is None and self.max is None:
            raise ValueError(f"threshold on {self.metric} sets no bound: give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"threshold on {self.metric} has min {self.min} > max {self.max}")
        if self.metric in LATENCY_METRICS and self.stat is None:
            raise ValueError(
                f"{self.metric} is a distribution: say which stat to bound "
                f"(stat: one of {', '.join(STATS)})"
            )
        if self.metric == "error_rate" and self.stat is not None:
            raise ValueError(
                "error_rate is one ratio (errored / finished requests): leave out stat"
            )
        if self.metric in RATE_METRICS and self.stat not in (None, "mean"):
            raise ValueError(
                f"{self.metric} is a rate over the whole run: its only stat is mean "
                f"(got {self.stat})"
            )
        return self

    @property
    def measured_stat(self) -> str | None:
        """The stat compared: the one given, ``mean`` for rates, None for ``error_rate``."""
        if self.metric in RATE_METRICS:
            return "mean"
        return self.stat


class ServingLoad(BaseModel):
    """The load GuideLLM puts on the endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: Profile = Field(default="constant", description="GuideLLM profile")
    rate: float | None = Field(
        default=None,
        gt=0,
        description="req/s (constant, poisson), streams (concurrent), benchmarks (sweep)",
    )
    duration_s: float = Field(default=30.0, gt=0, le=24 * 3600, description="per benchmark")
    prompt_tokens: int = Field(default=128, ge=1, description="synthetic prompt length")
    output_tokens: int = Field(default=64, ge=1, description="tokens generated per request")
    max_concurrency: int = Field(
        default=256, ge=1, description="in-flight requests at most (GuideLLM max_concurrency)"
    )
    api: Api = Field(default="chat", description="chat: /v1/chat/completions; completions")

    @model_validator(mode="after")
    def _rate_fits_profile(self) -> ServingLoad:
        rate = self.rate
        if self.profile in ("constant", "poisson") and rate is None:
            raise ValueError(f"profile {self.profile} needs rate: requests per second")
        if self.profile == "concurrent" and (rate is None or rate != int(rate)):
            raise ValueError("profile concurrent needs rate: the number of streams (an integer)")
        if self.profile == "sweep" and rate is not None and (rate != int(rate) or rate < 2):
            raise ValueError("profile sweep takes rate: the number of benchmarks (2 or more)")
        if self.profile == "synchronous" and rate is not None:
            raise ValueError("profile synchronous sends one request at a time: leave out rate")
        return self

    @property
    def benchmarks(self) -> int:
        """How many benchmarks GuideLLM runs (each ``duration_s`` long)."""
        return int(self.rate or 10) if self.profile == "sweep" else 1

    def describe(self) -> str:
        """One line: profile, rate and request shape."""
        shape = f"{self.prompt_tokens} prompt + {self.output_tokens} output tokens"
        rate = {
            "constant": f" {self.rate:g} req/s",
            "poisson": f" {self.rate:g} req/s",
            "concurrent": f" {int(self.rate or 0)} streams",
            "sweep": f" of {self.benchmarks} benchmarks",
            "synchronous": "",
        }[self.profile]
        return f"{self.profile}{rate} for {self.duration_s:g} s each, {shape}"


#: The default bounds; manifests/monitoring/prometheusrule.yaml alerts on the same values.
DEFAULT_SERVING_THRESHOLDS: tuple[ServingThreshold, ...] = (
    ServingThreshold(metric="ttft_ms", stat="p95", max=2000),
    ServingThreshold(metric="itl_ms", stat="p95", max=200),
    ServingThreshold(metric="e2e_ms", stat="p99", max=20000),
    ServingThreshold(metric="error_rate", max=0.01),
    ServingThreshold(metric="output_tokens_per_s", min=5),
)
#: The default load: 2 requests per second for 30 s, 128 prompt and 64 output tokens each.
DEFAULT_SERVING_LOAD = ServingLoad(
    profile="constant", rate=2, duration_s=30, prompt_tokens=128, output_tokens=64
)


class ServingGateConfig(BaseModel):
    """The serving gate: a load and the bounds the endpoint must hold under it."""

    model_config = ConfigDict(extra="forbid")

    name: str = "serving"
    load: ServingLoad = Field(default_factory=lambda: DEFAULT_SERVING_LOAD)
    thresholds: list[ServingThreshold] = Field(
        default_factory=lambda: list(DEFAULT_SERVING_THRESHOLDS), min_length=1
    )


def load_serving_config(
    source: ServingGateConfig | str | os.PathLike[str] | dict[str, Any] | list[Any] | None,
) -> ServingGateConfig:
    """The serving gate config from a full gate config or from a bare serving section.

    ``source`` is a config object, a dict, JSON/YAML text, or a ``.json``/``.yaml``/``.yml``
    file. A mapping with a ``serving`` key is a full gate config: only its ``serving`` section
    is read here (the quality thresholds beside it are validated where they are used). Any
    other mapping is the section itself; a bare list is its ``thresholds``; None (or an empty
    document) is the default gate.

    Raises:
        ConfigError: The text does not parse, the section does not validate (unknown keys get
            the closest known name), or the file is a quality-gate config without ``serving``.
    """
    if isinstance(source, ServingGateConfig):
        return source
    data: Any = source
    if isinstance(source, os.PathLike):
        data = parse_config_text(os.fspath(source), what="serving gate config")
    elif isinstance(source, str):
        data = parse_config_text(source, what="serving gate config")
    if data is None:
        return ServingGateConfig()
    if isinstance(data, list):
        data = {"thresholds": data}
    if not isinstance(data, dict):
        raise ConfigError(
            "serving gate config must be a mapping like {load: {...}, thresholds: [{metric: "
            f"ttft_ms, stat: p95, max: 2000}}]}}, got {type(data).__name__}"
        )
    if "serving" in data:
        section = data["serving"]
        if not isinstance(section, dict):
            raise ConfigError(
                "the gate config's serving section must be a mapping like {load: {...}, "
                f"thresholds: [...]}}, got {type(section).__name__} (docs/gates.md)"
            )
        return validated(ServingGateConfig, section, what="serving section of the gate config")
    quality = data.get("thresholds")
    if "endpoint" in data or (
        isinstance(quality, list) and any(isinstance(t, dict) and "task" in t for t in quality)
    ):
        raise ConfigError(
            "this gate config has no serving section: add serving: {load: {...}, thresholds: "
            "[{metric: ttft_ms, stat: p95, max: 2000}, ...]} (docs/gates.md, Serving gate)"
        )
    return validated(ServingGateConfig, data, what="serving gate config")


# --------------------------------------------------------------------------------------------
# Measurements: GuideLLM's JSON report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyStats:
    """A latency distribution over the successful requests (milliseconds)."""

    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    count: int

    def get(self, stat: str) -> float:
        """The value of ``stat`` (p50|p90|p95|p99|mean)."""
        return float(getattr(self, stat))


@dataclass(frozen=True)
class ServingMeasurement:
    """What one GuideLLM benchmark measured.

    ``load`` is GuideLLM's strategy (``constant@2.00``, ``concurrent@4``, ``synchronous``);
    ``duration_s`` its measured window. Latencies are None without a successful request.
    """

    load: str
    duration_s: float
    successful: int
    errored: int
    incomplete: int
    requests_per_s: float
    output_tokens_per_s: float
    ttft_ms: LatencyStats | None = None
    itl_ms: LatencyStats | None = None
    e2e_ms: LatencyStats | None = None

    @property
    def error_rate(self) -> float | None:
        """errored / (successful + errored); None when no request finished."""
        finished = self.successful + self.errored
        return self.errored / finished if finished else None

    def value(self, metric: str, stat: str | None = None) -> float | None:
        """The measured ``metric`` (``stat`` of a latency); None where nothing was measured."""
        if metric in LATENCY_METRICS:
            stats: LatencyStats | None = getattr(self, metric)
            return None if stats is None or stat is None else stats.get(stat)
        if metric == "error_rate":
            return self.error_rate
        if metric in RATE_METRICS:
            return float(getattr(self, metric))
        raise ValueError(f"unknown serving metric {metric!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with ``error_rate``."""
        return {**asdict(self), "error_rate": self.error_rate}


def _latency(summary: dict[str, Any], *, scale: float = 1.0) -> LatencyStats | None:
    """GuideLLM's ``StatusDistributionSummary`` of the successful requests, or None if empty."""
    ok = summary["successful"]
    count = int(ok["count"])
    if count == 0:
        return None
    pct = ok["percentiles"]
    return LatencyStats(
        p50=float(pct["p50"]) * scale,
        p90=float(pct["p90"]) * scale,
        p95=float(pct["p95"]) * scale,
        p99=float(pct["p99"]) * scale,
        mean=float(ok["mean"]) * scale,
        count=count,
    )


def _strategy_label(strategy: dict[str, Any]) -> str:
    kind = str(strategy.get("type_") or "unknown")
    if strategy.get("streams") is not None:
        return f"{kind}@{int(strategy['streams'])}"
    if strategy.get("rate") is not None and kind not in ("throughput", "synchronous"):
        return f"{kind}@{float(strategy['rate']):.2f}"
    return kind


def measurements_from_report(
    report: dict[str, Any], *, source: str = "report"
) -> list[ServingMeasurement]:
    """One :class:`ServingMeasurement` per benchmark of a GuideLLM report (its JSON, parsed).

    Reads, per benchmark, ``config.strategy``, ``duration`` and from ``metrics``:
    ``request_totals``, ``time_to_first_token_ms``, ``inter_token_latency_ms``,
    ``request_latency`` (seconds), ``requests_per_second`` and ``output_tokens_per_second``
    (GuideLLM 0.8: ``guidellm/benchmark/schemas/metrics.py``, ``GenerativeMetrics``).

    Raises:
        ServingGateError: The document is not a GuideLLM benchmarks report or holds none.
    """
    try:
        benchmarks = report["benchmarks"]
        out = []
        for b in benchmarks:
            m = b["metrics"]
            totals = m["request_totals"]
            out.append(
                ServingMeasurement(
                    load=_strategy_label(b["config"]["strategy"]),
                    duration_s=float(b["duration"]),
                    successful=int(totals["successful"]),
                    errored=int(totals["errored"]),
                    incomplete=int(totals["incomplete"]),
                    requests_per_s=float(m["requests_per_second"]["successful"]["mean"]),
                    output_tokens_per_s=float(m["output_tokens_per_second"]["successful"]["mean"]),
                    ttft_ms=_latency(m["time_to_first_token_ms"]),
                    itl_ms=_latency(m["inter_token_latency_ms"]),
                    e2e_ms=_latency(m["request_latency"], scale=1000.0),
                )
            )
    except (KeyError, TypeError, ValueError) as e:
        raise ServingGateError(
            f"{source} is not a GuideLLM benchmarks report this version reads (GuideLLM 0.8): "
            f"{type(e).__name__}: {e}"
        ) from e
    if not out:
        raise ServingGateError(f"{source} holds no benchmark: GuideLLM measured nothing")
    return out


def parse_guidellm_report(
    path: str | os.PathLike[str], *, max_bytes: int = MAX_REPORT_BYTES
) -> list[ServingMeasurement]:
    """The benchmarks of GuideLLM's JSON report file ``path`` (at most ``max_bytes``).

    Raises:
        ServingGateError: The file is missing, too large, not JSON, or not a report.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise ServingGateError(f"GuideLLM wrote no report at {p}: {e}") from e
    if size > max_bytes:
        raise ServingGateError(
            f"GuideLLM's report {p} has {size / 1024**2:.0f} MiB, more than the "
            f"{max_bytes / 1024**2:.0f} MiB read: shorten load.duration_s or lower the rate"
        )
    try:
        with p.open("rb") as fh:
            doc = json.loads(fh.read(max_bytes + 1))
    except (OSError, ValueError) as e:
        raise ServingGateError(f"GuideLLM's report {p} is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ServingGateError(f"GuideLLM's report {p} is not a JSON object")
    return measurements_from_report(doc, source=str(p))


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------


def _num(value: float) -> str:
    """A measured value: one decimal from 10 up, else four significant digits."""
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.4g}"


@dataclass(frozen=True)
class ServingRow:
    """One bound checked against one benchmark."""

    metric: str
    stat: str | None
    measured: float | None
    check: Literal["min", "max"]
    bound: float
    passed: bool
    load: str
    note: str = ""

    @property
    def verdict(self) -> str:
        """PASS or FAIL."""
        return "PASS" if self.passed else "FAIL"

    @property
    def label(self) -> str:
        """``ttft_ms p95``, or the metric alone when it takes no stat."""
        return f"{self.metric} {self.stat}" if self.stat else self.metric

    def describe(self) -> str:
        """``ttft_ms p95 2345.6 > max 2000`` (the comparison that decided the row)."""
        if self.measured is None:
            return f"{self.label} not measured ({self.note}) vs {self.check} {self.bound:g}"
        if self.check == "max":
            op = "<=" if self.passed else ">"
        else:
            op = ">=" if self.passed else "<"
        return f"{self.label} {_num(self.measured)} {op} {self.check} {self.bound:g}"


@dataclass
class ServingGateResult:
    """The serving gate's decision, every row that led to it, and what was measured."""

    name: str
    passed: bool
    rows: list[ServingRow] = field(default_factory=list)
    measurements: list[ServingMeasurement] = field(default_factory=list)
    load: dict[str, Any] = field(default_factory=dict)
    endpoint: str = ""
    model: str = ""
    wall_s: float | None = None  # the whole run_serving_gate call
    guidellm_s: float | None = None  # of which the GuideLLM process

    @property
    def failures(self) -> list[ServingRow]:
        """Rows that failed."""
        return [r for r in self.rows if not r.passed]

    @property
    def summary(self) -> str:
        """One line: ``serving gate failed: ttft_ms p95 2345.6 > max 2000`` (each failing
        row; the benchmark too when there are several), or what passed."""
        several = len(self.measurements) > 1

        def line(r: ServingRow) -> str:
            return r.describe() + (f" at {r.load}" if several else "")

        if self.passed:
            shown = [line(r) for r in self.rows]
            return f"serving gate passed ({len(self.rows)} checks): " + "; ".join(shown)
        return "serving gate failed: " + "; ".join(line(r) for r in self.failures)

    def table(self) -> str:
        """The Markdown table, headed by the decision (the style of ``modelgate gate``)."""
        verdict = "PASSED" if self.passed else f"FAILED ({len(self.failures)} failing)"
        lines = [f"### Serving gate `{self.name}`: {verdict}", ""]
        if self.load:
            lines += [f"Load: {ServingLoad(**self.load).describe()}", ""]
        lines += ["| load | metric | measured | bound | verdict |", "|---|---|---|---|---|"]
        for r in self.rows:
            measured = "missing" if r.measured is None else _num(r.measured)
            op = "<=" if r.check == "max" else ">="
            note = f" ({r.note})" if r.note else ""
            lines.append(
                f"| {r.load} | {r.label} | {measured} | {op} {r.bound:g} | {r.verdict}{note} |"
            )
        lines += [
            "",
            "| load | successful | errored | incomplete | window s |",
            "|---|---|---|---|---|",
        ]
        for m in self.measurements:
            lines.append(
                f"| {m.load} | {m.successful} | {m.errored} | {m.incomplete} | {m.duration_s:.1f} |"
            )
        return "\n".join(lines) + "\n"

    def registry_properties(self) -> dict[str, float]:
        """``latency_ttft_p95_ms``, ``latency_itl_p95_ms`` and ``throughput_output_tps`` of the
        benchmark with the highest output throughput (the registry stores them under the
        Kubeflow Hub catalog's names, :data:`modelgate.registry.base.SERVING_ALIASES`);
        values that were not measured are left out. The caller adds ``hardware_type`` and
        ``hardware_count``."""
        if not self.measurements:
            return {}
        best = max(self.measurements, key=lambda m: m.output_tokens_per_s)
        values = {
            "latency_ttft_p95_ms": best.value("ttft_ms", "p95"),
            "latency_itl_p95_ms": best.value("itl_ms", "p95"),
            "throughput_output_tps": best.output_tokens_per_s,
        }
        return {k: round(v, 3) for k, v in values.items() if v is not None and math.isfinite(v)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: decision, summary, rows, measurements and load."""
        return {
            "name": self.name,
            "passed": self.passed,
            "summary": self.summary,
            "endpoint": self.endpoint,
            "model": self.model,
            "load": self.load,
            "wall_s": self.wall_s,
            "guidellm_s": self.guidellm_s,
            "rows": [{**asdict(r), "verdict": r.verdict} for r in self.rows],
            "measurements": [m.to_dict() for m in self.measurements],
            "registry_properties": self.registry_properties(),
        }


def check_serving(
    measurement: ServingMeasurement | Sequence[ServingMeasurement],
    config: ServingGateConfig | str | dict[str, Any],
) -> ServingGateResult:
    """Check every bound of ``config`` against every benchmark in ``measurement``.

    Every row is evaluated; the gate passes only if all pass. A value on its bound passes; a
    value that was not measured fails (fail closed).

    Args:
        measurement: One benchmark, or all of a run's (a sweep has several).
        config: The serving gate config (object, dict, JSON/YAML text or file; see
            :func:`load_serving_config`).

    Returns:
        The result; ``passed`` is True only if every row passed.

    Raises:
        ConfigError: The config is invalid.
    """
    cfg = load_serving_config(config)
    measured = [measurement] if isinstance(measurement, ServingMeasurement) else list(measurement)
    rows: list[ServingRow] = []
    for m in measured:
        for t in cfg.thresholds:
            stat = t.measured_stat
            value = m.value(t.metric, stat)
            note = ""
            if value is None:
                note = (
                    "no request finished" if t.metric == "error_rate" else "no successful request"
                )
            bounds: tuple[tuple[Literal["min", "max"], float | None], ...] = (
                ("min", t.min),
                ("max", t.max),
            )
            for check, bound in bounds:
                if bound is None:
                    continue
                ok = value is not None and (value >= bound if check == "min" else value <= bound)
                rows.append(ServingRow(t.metric, stat, value, check, bound, ok, m.load, note))
    result = ServingGateResult(
        name=cfg.name,
        passed=bool(rows) and all(r.passed for r in rows),
        rows=rows,
        measurements=measured,
        load=cfg.load.model_dump(),
    )
    log = logger.info if result.passed else logger.error
    log("%s\n%s", result.summary, result.table())
    return result


# --------------------------------------------------------------------------------------------
# The endpoint
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedModel:
    """One entry of ``GET /v1/models`` (vLLM adds ``root``, the folder it serves, and
    ``max_model_len``)."""

    id: str
    root: str | None = None
    max_model_len: int | None = None


def api_base(endpoint: str) -> str:
    """The server's base URL (``http://host:port``): trailing ``/`` and ``/v1`` removed.

    Raises:
        ConfigError: Not an http(s) URL.
    """
    base = endpoint.strip().rstrip("/").removesuffix("/v1").rstrip("/")
    if not base.startswith(("http://", "https://")) or "://" == base[-3:]:
        raise ConfigError(
            f"serving endpoint {endpoint!r} is not an http(s) URL: give the server's base URL, "
            "e.g. http://127.0.0.1:8000 (the /v1 suffix may be left out)"
        )
    return base


def served_models(endpoint: str) -> list[ServedModel]:
    """What ``GET {endpoint}/v1/models`` lists, within a few seconds.

    Raises:
        ConfigError: ``endpoint`` is not an http(s) URL.
        EndpointUnreachableError: No answer within seconds, an error status, or not an
            OpenAI-compatible model list; the message names the URL and the fix.
    """
    url = f"{api_base(endpoint)}/v1/models"
    fix = (
        "start the server or pass the base URL of a running OpenAI-compatible server "
        "(vLLM: `vllm serve`; KServe: the InferenceService's status.url)"
    )

    try:
        resp = requests.get(url, timeout=REACH_TIMEOUT)
    except requests.Timeout as e:
        raise EndpointUnreachableError(
            f"serving endpoint {url} did not answer within {sum(REACH_TIMEOUT):.0f}s: {fix}"
        ) from e
    except requests.RequestException as e:
        reason = "connection refused or host unreachable"
        if not isinstance(e, requests.ConnectionError):
            reason = f"{type(e).__name__}: {e}"
        raise EndpointUnreachableError(
            f"serving endpoint {url} did not answer ({reason}): {fix}"
        ) from e
    if resp.status_code in (401, 403):
        raise EndpointUnreachableError(
            f"serving endpoint {url} answered {resp.status_code}: it wants credentials, which "
            "the serving gate does not send; benchmark it from inside the cluster without auth"
        )
    if resp.status_code != 200:
        raise EndpointUnreachableError(
            f"serving endpoint {url} answered {resp.status_code}: {resp.text[:200]!r}; {fix}"
        )
    try:
        entries = resp.json()["data"]
        models = [
            ServedModel(
                id=str(e["id"]),
                root=str(e["root"]) if e.get("root") else None,
                max_model_len=int(e["max_model_len"]) if e.get("max_model_len") else None,
            )
            for e in entries
        ]
    except (ValueError, KeyError, TypeError) as e:
        raise EndpointUnreachableError(
            f"{url} did not answer with an OpenAI model list ({type(e).__name__}: {e}): is it "
            "the URL of an OpenAI-compatible server?"
        ) from e
    return models


def check_endpoint(
    endpoint: str, model: str | None, *, load: ServingLoad | None = None
) -> ServedModel:
    """The served model the gate will benchmark, after checking it is there.

    ``model`` None picks the only served model. With ``load``, a model whose ``max_model_len``
    is known must fit ``prompt_tokens + output_tokens``.

    Raises:
        EndpointUnreachableError: See :func:`served_models`.
        ConfigError: The model is not served (the served names are listed), or the requests
            would not fit its context.
    """
    models = served_models(endpoint)
    names = [m.id for m in models]
    if model is None:
        if len(models) != 1:
            raise ConfigError(
                f"{api_base(endpoint)} serves {names or 'no model'}: name the one to benchmark "
                "(--model)"
            )
        found = models[0]
    else:
        match = [m for m in models if m.id == model]
        if not match:
            raise ConfigError(
                f"model {model!r} is not served by {api_base(endpoint)}; it serves {names}: "
                "pass one of those names"
            )
        found = match[0]
    if load is not None and found.max_model_len:
        need = load.prompt_tokens + load.output_tokens
        if need > found.max_model_len:
            raise ConfigError(
                f"load asks for {load.prompt_tokens} prompt + {load.output_tokens} output = "
                f"{need} tokens but {found.id} serves at most {found.max_model_len} "
                "(max_model_len): lower load.prompt_tokens/output_tokens"
            )
    return found


# --------------------------------------------------------------------------------------------
# The tokenizer GuideLLM sizes prompts with
# --------------------------------------------------------------------------------------------


def is_tokenizer_file(path: str) -> bool:
    """True for a file of a model folder that its tokenizer or chat template needs."""
    if path.startswith(TOKENIZER_DIRS):
        return "/" not in path.split("/", 1)[1]
    return "/" not in path and (path in TOKENIZER_FILES or path.endswith(TOKENIZER_SUFFIXES))


def has_tokenizer(folder: str | os.PathLike[str]) -> bool:
    """True if ``folder`` holds a Hugging Face tokenizer (``tokenizer.json`` or its config)."""
    return any(Path(folder, name).is_file() for name in TOKENIZER_MARKERS)


def fetch_tokenizer(model_uri: str, dest: Path) -> Path:
    """Only the tokenizer and config files of a stored model, in ``dest`` (created).

    ``model_uri`` is a store URI (``s3://…``, ``file://…``; read through
    :func:`modelgate.storage.fetch_files`, only files its marker lists) or a local model folder.
    Fetched: ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``,
    ``added_tokens.json``, vocab/merges and sentencepiece/tiktoken files, ``config.json``,
    ``generation_config.json`` and chat templates (:data:`TOKENIZER_FILES`): kilobytes to a few
    MB, never the weights.

    Returns:
        ``dest``, ready to be the ``processor`` of :func:`run_serving_gate`.

    Raises:
        ConfigError: An unsupported URI, or a local path that is not a folder.
        StorageError: The stored folder is incomplete or unreadable, or holds no tokenizer.
    """
    from modelgate import storage

    if storage.scheme_of(model_uri) not in ("", *storage.STORE_SCHEMES):
        raise ConfigError(
            f"cannot fetch a tokenizer from {model_uri!r}: expected an s3:// or file:// store "
            "URI or a local folder"
        )
    if storage.scheme_of(model_uri) == "" and not Path(model_uri).is_dir():
        raise ConfigError(f"model folder {model_uri!r} does not exist or is not a folder")
    fetched = storage.fetch_files(model_uri, is_tokenizer_file, dest)
    if not any(f.path in TOKENIZER_MARKERS for f in fetched):
        for f in fetched:
            (dest / f.path).unlink(missing_ok=True)
        raise StorageError(
            f"{model_uri} holds no tokenizer ({' or '.join(TOKENIZER_MARKERS)}): the serving "
            "gate sizes its prompts with the model's tokenizer"
        )
    logger.info("fetched the tokenizer of %s (%d files)", model_uri, len(fetched))
    return dest


def resolve_processor(
    processor: str | os.PathLike[str] | None, *, model: str, served: ServedModel | None = None
) -> Path:
    """The local tokenizer folder GuideLLM gets.

    Without ``processor``: ``model`` itself when it is a local model folder, else the folder a
    local vLLM serves (``root`` in ``/v1/models``) when it exists here.

    Raises:
        ConfigError: No tokenizer folder is given or found (the message says how to give one),
            or the one given holds no tokenizer.
    """
    if processor is not None:
        folder = Path(processor)
        if not folder.is_dir() or not has_tokenizer(folder):
            raise ConfigError(
                f"tokenizer folder {os.fspath(processor)!r} holds no "
                f"{' or '.join(TOKENIZER_MARKERS)}: give the model's folder, or one with its "
                "tokenizer files (modelgate.slo.fetch_tokenizer fetches them from the store)"
            )
        return folder.resolve()
    for candidate in (model, served.root if served else None):
        if candidate and Path(candidate).is_dir() and has_tokenizer(candidate):
            return Path(candidate).resolve()
    raise ConfigError(
        f"the serving gate sizes its synthetic prompts with the model's tokenizer, and none was "
        f"found for {model!r}: pass --tokenizer DIR, a local folder with the model's "
        "tokenizer.json/tokenizer_config.json (the model folder will do); nothing is fetched "
        "from the Hub"
    )


# --------------------------------------------------------------------------------------------
# Running GuideLLM
# --------------------------------------------------------------------------------------------


def _profile_args(load: ServingLoad) -> dict[str, Any]:
    """GuideLLM's profile arguments (``guidellm/schemas/benchmark/profiles/*.py``)."""
    if load.profile in ("constant", "poisson"):
        return {"kind": load.profile, "rate": load.rate}
    if load.profile == "concurrent":
        return {"kind": "concurrent", "streams": int(load.rate or 1)}
    if load.profile == "sweep":
        return {"kind": "sweep", "sweep_size": load.benchmarks}
    return {"kind": "synchronous"}


def data_prefetch(load: ServingLoad) -> int:
    """How many synthetic requests GuideLLM's data loader keeps built ahead of the scheduler.

    Its default (``prefetch_factor`` 4096 on one loader worker,
    ``guidellm/schemas/data/loaders/torch.py``) builds thousands of prompts with the tokenizer while
    the benchmark starts, CPU that the start-up and the load itself then lack on a small node;
    the scheduler never holds more than ``max_concurrency`` requests in flight, so a buffer of
    that size (at least :data:`MIN_PREFETCH`) keeps it fed.
    """
    return max(MIN_PREFETCH, min(load.max_concurrency, 4096))


def guidellm_command(
    endpoint: str,
    model: str,
    load: ServingLoad,
    *,
    processor: str | os.PathLike[str],
    json_path: Path,
    html_path: Path,
) -> list[str]:
    """GuideLLM's ``run …`` for ``load``, under :mod:`modelgate.guidellm_main` (GuideLLM's CLI,
    started faster); each option as JSON, which GuideLLM's CLI reads like its
    ``kind=…,key=value`` form, so commas in a path or a name stay intact."""

    def arg(value: dict[str, Any]) -> str:
        return json.dumps(value, separators=(",", ":"))

    route = "/v1/chat/completions" if load.api == "chat" else "/v1/completions"
    return [
        sys.executable, "-m", "modelgate.guidellm_main", "run",
        "--backend", arg({"kind": "openai_http", "target": api_base(endpoint), "model": model,
                          "request_format": route}),
        "--profile", arg(_profile_args(load)),
        "--constraint", arg({"kind": "max_duration", "seconds": load.duration_s}),
        "--data", arg({"kind": "synthetic_text", "prompt_tokens": load.prompt_tokens,
                       "output_tokens": load.output_tokens}),
        "--tokenizer", arg({"kind": "huggingface_auto", "model": os.fspath(processor)}),
        "--data-loader", arg({"kind": "pytorch", "num_workers": 1,
                              "prefetch_factor": data_prefetch(load)}),
        # per-request prompts and outputs are not kept: the report stays small
        "--metrics", arg({"kind": "generative", "sample_size": 0}),
        "--output", arg({"kind": "json", "path": str(json_path)}),
        "--output", arg({"kind": "html", "path": str(html_path)}),
        "--disable-console-interactive",
    ]  # fmt: skip


def guidellm_env(load: ServingLoad) -> dict[str, str]:
    """The child's environment: the Hub offline (the tokenizer is a local folder), no colour,
    in-flight requests capped at ``load.max_concurrency`` (GuideLLM pre-builds half that many
    requests, so its default 10240 costs seconds), and, unless the caller's environment says
    otherwise, at most :data:`MAX_WORKERS` worker processes forked from a preloaded forkserver
    (:mod:`modelgate.guidellm_main`) and the first request :data:`START_DELAY_S` after they
    are ready."""
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "NO_COLOR": "1",
            "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1",
            "GUIDELLM__MAX_CONCURRENCY": str(load.max_concurrency),
        }
    )
    env.setdefault("GUIDELLM__MAX_WORKER_PROCESSES", str(min(MAX_WORKERS, os.cpu_count() or 1)))
    env.setdefault("GUIDELLM__MP_CONTEXT_TYPE", "forkserver")
    env.setdefault("GUIDELLM__SCHEDULER_START_DELAY_NON_DISTRIBUTED", str(START_DELAY_S))
    return env


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def run_guidellm(
    cmd: list[str], *, env: dict[str, str], cwd: Path, log_path: Path, timeout: float
) -> float:
    """Run GuideLLM in its own process group, its output in ``log_path``; seconds it took.

    Ctrl-C or SIGTERM (as a KFP cancel sends) stops the whole group, then propagates as
    ``KeyboardInterrupt``; so does the timeout, as :class:`ServingGateError`.

    Raises:
        ServingGateError: It failed (the log's tail is in the message) or timed out.
    """
    started = time.monotonic()
    with signals_raise(), log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            stop_process_group(proc.pid, timeout=10)
            raise ServingGateError(
                f"GuideLLM did not finish within {timeout:.0f}s (stopped); its log {log_path} "
                f"ends:\n{_log_tail(log_path)}"
            ) from e
        except BaseException:
            stop_process_group(proc.pid, timeout=10)
            raise
        finally:
            if group_members(proc.pid):  # workers outliving their parent
                stop_process_group(proc.pid, timeout=10)
    if code != 0:
        raise ServingGateError(
            f"GuideLLM exited with code {code}; its log {log_path} ends:\n{_log_tail(log_path)}"
        )
    return time.monotonic() - started


def render_html(result: ServingGateResult, *, guidellm_html: str | None = None) -> str:
    """A self-contained page: the decision, the table and GuideLLM's own report embedded in a
    sandboxed ``iframe`` (``srcdoc``, escaped). Every value is HTML-escaped."""
    color = "#1a7f37" if result.passed else "#cf222e"
    verdict = "PASSED" if result.passed else "FAILED"
    head = ["load", "metric", "measured", "bound", "verdict", "note"]
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(c))}</td>"
            for c in (
                r.load,
                r.label,
                "missing" if r.measured is None else _num(r.measured),
                f"{'<=' if r.check == 'max' else '>='} {r.bound:g}",
                r.verdict,
                r.note,
            )
        )
        + "</tr>"
        for r in result.rows
    )
    counts = "".join(
        f"<li>{html.escape(m.load)}: {m.successful} successful, {m.errored} errored, "
        f"{m.incomplete} incomplete in {m.duration_s:.1f} s</li>"
        for m in result.measurements
    )
    load = html.escape(ServingLoad(**result.load).describe()) if result.load else ""
    target = html.escape(f"{result.model} at {result.endpoint}") if result.endpoint else ""
    embedded = (
        "<h3>GuideLLM report</h3><iframe sandbox='allow-scripts' style='width:100%;"
        f'height:1600px;border:1px solid #ccc\' srcdoc="{html.escape(guidellm_html)}"></iframe>'
        if guidellm_html
        else ""
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Serving gate {html.escape(result.name)}</title><style>"
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}</style></head><body>"
        f"<h2>Serving gate <code>{html.escape(result.name)}</code>: "
        f"<span style='color:{color}'>{verdict}</span></h2>"
        f"<p>{html.escape(result.summary)}</p><p>{target}</p><p>Load: {load}</p>"
        "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + f"</tr>{rows}</table>"
        f"<ul>{counts}</ul>{embedded}</body></html>"
    )


def run_serving_gate(
    endpoint: str,
    model: str,
    config: ServingGateConfig | str | dict[str, Any],
    *,
    processor: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    timeout: float | None = None,
) -> ServingGateResult:
    """Benchmark ``model`` at ``endpoint`` with GuideLLM and check the serving gate.

    Writes into ``out_dir``: ``serving.json`` (the result with its measurements),
    ``serving.html`` (the table and GuideLLM's report), and GuideLLM's own ``guidellm.json``,
    ``guidellm.html`` and ``guidellm.log``.

    Args:
        endpoint: The server's base URL (``http://host:port``; a ``/v1`` suffix is dropped).
        model: The served model name (as ``/v1/models`` lists it).
        config: The serving gate config (see :func:`load_serving_config`).
        processor: Local folder with the model's tokenizer (:func:`fetch_tokenizer`); None
            tries ``model`` as a folder, then the folder a local vLLM serves.
        out_dir: Folder for the files above (created).
        timeout: Seconds GuideLLM may take in all (default: the load's duration plus
            :data:`STARTUP_ALLOWANCE_S`).

    Returns:
        The result; ``passed`` says whether every bound held.

    Raises:
        ConfigError: Bad config, model not served, no tokenizer, or GuideLLM not installed.
        EndpointUnreachableError: The endpoint did not answer ``/v1/models`` within seconds.
        ServingGateError: GuideLLM failed, timed out, or wrote no usable report.
        KeyboardInterrupt: Ctrl-C or SIGTERM (GuideLLM was stopped first).
    """
    started = time.monotonic()
    cfg = load_serving_config(config)
    served = check_endpoint(endpoint, model, load=cfg.load)
    folder = resolve_processor(processor, model=model, served=served)
    if importlib.util.find_spec("guidellm") is None:
        raise ConfigError(
            f"GuideLLM is not installed in {sys.executable}'s environment: pip install "
            "guidellm==0.8.1 (requirements/main.txt pins it)"
        )
    out = Path(out_dir).resolve()  # GuideLLM runs in it
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "guidellm.json", out / "guidellm.html"
    for stale in (json_path, html_path):
        stale.unlink(missing_ok=True)
    load = cfg.load
    limit = (
        timeout if timeout is not None else load.benchmarks * load.duration_s + STARTUP_ALLOWANCE_S
    )
    logger.info(
        "serving gate: GuideLLM against %s (%s), %s", api_base(endpoint), model, load.describe()
    )
    cmd = guidellm_command(
        endpoint, model, load, processor=folder, json_path=json_path, html_path=html_path
    )
    seconds = run_guidellm(
        cmd, env=guidellm_env(load), cwd=out, log_path=out / "guidellm.log", timeout=limit
    )
    logger.info("GuideLLM finished in %.1fs", seconds)
    result = check_serving(parse_guidellm_report(json_path), cfg)
    result.endpoint, result.model = api_base(endpoint), model
    result.wall_s = round(time.monotonic() - started, 3)
    result.guidellm_s = round(seconds, 3)
    (out / "serving.json").write_text(json.dumps(result.to_dict(), indent=2))
    embedded = None
    if html_path.is_file() and html_path.stat().st_size <= MAX_EMBEDDED_HTML_BYTES:
        embedded = html_path.read_text(errors="replace")
    (out / "serving.html").write_text(render_html(result, guidellm_html=embedded))
    return result


__all__ = [
    "DEFAULT_SERVING_LOAD",
    "DEFAULT_SERVING_THRESHOLDS",
    "LatencyStats",
    "ServedModel",
    "ServingGateConfig",
    "ServingGateResult",
    "ServingLoad",
    "ServingMeasurement",
    "ServingRow",
    "ServingThreshold",
    "api_base",
    "check_endpoint",
    "check_serving",
    "fetch_tokenizer",
    "load_serving_config",
    "measurements_from_report",
    "parse_guidellm_report",
    "render_html",
    "resolve_processor",
    "run_serving_gate",
    "served_models",
]
