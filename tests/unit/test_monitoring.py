"""manifests/monitoring: the PrometheusRule's SLO alerts, checked against the installed vLLM.

Metric and label names come from the vLLM in ``.venv-vllm``, read as source text and parsed with
:mod:`ast` (vLLM is not imported: it lives in another environment). The series names Prometheus
stores (``_total``, ``_bucket``, ...) come from that environment's ``prometheus_client``, the
library vLLM exports its metrics with, run in a subprocess. Tests that need ``.venv-vllm`` skip
with the reason when it is not built; the rest (build, schema, PromQL, thresholds) always run.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import jsonschema
import pytest

from modelgate.deploy.crd import strict_schema
from modelgate.slo import DEFAULT_SERVING_THRESHOLDS
from tests.unit.manifest_support import kustomize

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "monitoring"
VLLM_VENV = REPO / ".venv-vllm"

#: The serving gate's default upper bounds by (metric, stat): ms for latencies, a ratio for
#: errors. The lower bound on throughput (output_tokens_per_s) is a property of the gate's load
#: test, not of production traffic, and gets no alert.
GATE_DEFAULTS = {(t.metric, t.stat): t.max for t in DEFAULT_SERVING_THRESHOLDS if t.max is not None}

#: What each alert's ``slo`` label stands for: the gate default it enforces and the histogram or
#: counter series its expression reads.
SLOS = {
    "ttft_p95": (("ttft_ms", "p95"), "vllm:time_to_first_token_seconds_bucket"),
    "itl_p95": (("itl_ms", "p95"), "vllm:inter_token_latency_seconds_bucket"),
    "e2e_p99": (("e2e_ms", "p99"), "vllm:e2e_request_latency_seconds_bucket"),
    "error_rate": (("error_rate", None), "vllm:request_success_total"),
}
#: Burn-rate factors of the Google SRE Workbook's multi-window alerts ("Alerting on SLOs", 30-day
#: budget): 14.4 over 1 h / 5 m pages, 6 over 6 h / 30 m opens a ticket.
BURN_RATES = {14.4: ("1h", "5m"), 6.0: ("6h", "30m")}

#: Labels the Prometheus Operator puts on every series it scrapes through a PodMonitor
#: (prometheus-operator pkg/prometheus/promcfg.go: namespace, pod and container from the pod's
#: metadata, job, endpoint from the port) plus Prometheus' own instance.
TARGET_LABELS = frozenset({"namespace", "pod", "container", "endpoint", "job", "instance"})

# The PrometheusRule schema of the Prometheus Operator's CRD (operator 0.82.2,
# example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml), descriptions left
# out; strict_schema() adds additionalProperties: false as for the KServe CRDs.
_DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "apiVersion": {"type": "string", "enum": ["monitoring.coreos.com/v1"]},
        "kind": {"type": "string", "enum": ["PrometheusRule"]},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "interval": {"type": "string", "pattern": _DURATION},
                            "labels": _STRING_MAP,
                            "limit": {"type": "integer"},
                            "name": {"type": "string", "minLength": 1},
                            "partial_response_strategy": {"type": "string"},
                            "query_offset": {"type": "string", "pattern": _DURATION},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "annotations": _STRING_MAP,
                                        "expr": {"x-kubernetes-int-or-string": True},
                                        "for": {"type": "string", "pattern": _DURATION},
                                        "keep_firing_for": {
                                            "type": "string",
                                            "minLength": 1,
                                            "pattern": _DURATION,
                                        },
                                        "labels": _STRING_MAP,
                                        "record": {"type": "string"},
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}


@pytest.fixture(scope="module")
def rule() -> dict:
    rules = [d for d in kustomize(MONITORING) if d["kind"] == "PrometheusRule"]
    assert len(rules) == 1, [d["kind"] for d in rules]
    return rules[0]


def alerts_of(rule: dict) -> list[dict]:
    return [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]


# --------------------------------------------------------------------------------------------
# A small PromQL reader: enough to list the metrics, label names, ranges and thresholds of an
# expression, and to reject unbalanced brackets, unknown functions and stray characters.
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<range>\[[0-9]+(?:ms|[smhdwy])\])
  | (?P<number>[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>==|!=|=~|!~|>=|<=|[-+*/%^<>=(){},])
    """,
    re.VERBOSE,
)
#: Aggregation operators (Prometheus docs, querying/operators: "Aggregation operators").
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
#: Functions these rules may call (Prometheus docs, querying/functions).
FUNCTIONS = frozenset(
    {"histogram_quantile", "rate", "increase", "irate", "absent", "absent_over_time", "abs"}
    | {"clamp_min", "clamp_max", "scalar", "vector", "max_over_time", "min_over_time"}
)
#: Functions whose argument is a range vector.
RANGE_FUNCTIONS = frozenset(
    {"rate", "increase", "irate", "absent_over_time", "max_over_time", "min_over_time"}
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset"})
MATCH_OPS = frozenset({"=", "!=", "=~", "!~"})
COMPARISONS = frozenset({">", "<", ">=", "<=", "==", "!="})


@dataclass
class PromQL:
    """What an expression reads: ``(series, {label: (op, value)})`` selectors and the rest."""

    selectors: list[tuple[str, dict[str, tuple[str, str]], str | None]] = field(
        default_factory=list
    )
    grouping: list[set[str]] = field(default_factory=list)  # each by (...) / on (...) list
    functions: list[str] = field(default_factory=list)
    quantiles: list[float] = field(default_factory=list)  # histogram_quantile's first argument
    thresholds: list[tuple[float, ...]] = field(default_factory=list)  # > N or > (F * N)


def parse_promql(expr: str) -> PromQL:
    """Read ``expr``; raise AssertionError on anything this reader does not understand."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        assert match, f"unexpected {expr[pos : pos + 20]!r} at {pos} in {expr!r}"
        pos = match.end()
        if match.lastgroup != "space":
            tokens.append((match.lastgroup, match.group()))
    out = PromQL()
    stack: list[str] = []  # "(" + what opened it: "(fn:rate", "(labels", "(paren"
    i = 0

    def peek(k: int = 1) -> tuple[str, str]:
        return tokens[i + k] if i + k < len(tokens) else ("end", "")

    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "ident" and text in GROUPING:
            assert peek()[1] == "(", f"{text} without a label list in {expr!r}"
            labels: set[str] = set()
            i += 2
            while tokens[i][1] != ")":
                if tokens[i][1] != ",":
                    assert tokens[i][0] == "ident", f"bad label {tokens[i][1]!r} in {expr!r}"
                    labels.add(tokens[i][1])
                i += 1
            out.grouping.append(labels)
        elif kind == "ident" and text in AGGREGATIONS:
            assert peek()[1] in ("(", "by", "without"), f"{text} without arguments in {expr!r}"
        elif kind == "ident" and text in KEYWORDS:
            pass
        elif kind == "ident" and peek()[1] == "(":
            assert text in FUNCTIONS, f"unknown function {text}() in {expr!r}"
            out.functions.append(text)
            if text == "histogram_quantile":
                assert peek(2)[0] == "number", f"histogram_quantile without a quantile: {expr!r}"
                out.quantiles.append(float(peek(2)[1]))
            stack.append(f"(fn:{text}")
            i += 1
        elif kind == "ident":  # a series selector
            matchers: dict[str, tuple[str, str]] = {}
            if peek()[1] == "{":
                i += 2
                while tokens[i][1] != "}":
                    name, op, value = tokens[i], tokens[i + 1], tokens[i + 2]
                    assert name[0] == "ident", f"bad matcher {name[1]!r} in {expr!r}"
                    assert op[1] in MATCH_OPS, f"bad match operator {op[1]!r} in {expr!r}"
                    assert value[0] == "string", f"unquoted value {value[1]!r} in {expr!r}"
                    matchers[name[1]] = (op[1], json.loads(value[1]))
                    i += 3
                    if tokens[i][1] == ",":
                        i += 1
            window = None
            if peek()[0] == "range":
                i += 1
                window = tokens[i][1][1:-1]
            enclosing = stack[-1].removeprefix("(fn:") if stack else ""
            if enclosing in RANGE_FUNCTIONS:
                assert window, f"{enclosing}({text}) without a range in {expr!r}"
            else:
                assert not window, f"range vector {text}[{window}] outside a range function"
            out.selectors.append((text, matchers, window))
        elif text == "(":
            stack.append("(paren")
        elif text == ")":
            assert stack, f"unbalanced ')' in {expr!r}"
            stack.pop()
        elif text in ("{", "}", "[", "]") or kind == "range":
            raise AssertionError(f"stray {text!r} in {expr!r}")
        elif text in COMPARISONS:
            out.thresholds.append(_threshold(tokens[i + 1 :], expr))
        i += 1
    assert not stack, f"unbalanced '(' in {expr!r}"
    return out


def _threshold(rest: list[tuple[str, str]], expr: str) -> tuple[float, ...]:
    """The constant a comparison compares with: ``N`` -> (N,), ``(F * N)`` -> (F, N)."""
    if rest and rest[0][0] == "number":
        return (float(rest[0][1]),)
    texts = [t for _, t in rest[:5]]
    assert len(texts) == 5 and texts[0] == "(" and texts[2] == "*" and texts[4] == ")", (
        f"comparison with something other than N or (F * N) in {expr!r}"
    )
    return float(texts[1]), float(texts[3])


@pytest.mark.parametrize(
    ("expr", "error"),
    [
        ("sum(rate(x_total[5m])", "unbalanced '('"),
        ("sum(rate(x_total[5m])))", "unbalanced ')'"),
        ("histogram_quantil(0.95, x_bucket)", "unknown function"),
        ("rate(x_total)", "without a range"),
        ("x_total[5m] > 1", "outside a range function"),
        ("x_total{reason=error}", "unquoted value"),
        ('x_total{reason~"e"}', "unexpected"),
        ("sum by le (x)", "without a label list"),
        ("x > y", "other than N or (F * N)"),
        ("x > 1 # note", "unexpected"),
    ],
)
def test_promql_reader_rejects_malformed_expressions(expr, error):
    with pytest.raises(AssertionError, match=re.escape(error)):
        parse_promql(expr)


def test_promql_reader_reads_what_the_rules_use():
    read = parse_promql(
        'histogram_quantile(0.9, sum by (le, model_name) (rate(a_bucket{x="1"}[5m]))) > 2\n'
        "and on (model_name) sum(rate(b_total[1h])) > (14.4 * 0.01)"
    )
    assert read.selectors == [("a_bucket", {"x": ("=", "1")}, "5m"), ("b_total", {}, "1h")]
    assert read.grouping == [{"le", "model_name"}, {"model_name"}]
    assert read.quantiles == [0.9]
    assert read.thresholds == [(2.0,), (14.4, 0.01)]
    assert read.functions == ["histogram_quantile", "rate", "rate"]


# --------------------------------------------------------------------------------------------
# The build, the schema, the shape of each alert
# --------------------------------------------------------------------------------------------


def test_monitoring_builds_a_podmonitor_and_the_rule(rule):
    kinds = sorted(d["kind"] for d in kustomize(MONITORING))
    assert kinds == ["PodMonitor", "PrometheusRule"]
    assert rule["metadata"]["labels"]["app.kubernetes.io/part-of"] == "modelgate"
    assert "namespace" not in rule["metadata"], "applied with -n <namespace>"


def _schema_errors(doc: dict) -> list[str]:
    validator = jsonschema.Draft4Validator(strict_schema(PROMETHEUS_RULE_SCHEMA))
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def test_rule_matches_the_prometheus_operator_crd(rule):
    assert _schema_errors(rule) == []
    names = [g["name"] for g in rule["spec"]["groups"]]
    assert len(names) == len(set(names)), "group names are the list's map key"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: alerts_of(r)[0].update({"for": "10 minutes"}), "does not match"),
        (lambda r: alerts_of(r)[0].update(fro="10m"), "'fro' was unexpected"),
        (lambda r: alerts_of(r)[0].pop("expr"), "'expr' is a required property"),
        (lambda r: alerts_of(r)[0]["labels"].update(severity=3), "is not of type 'string'"),
    ],
)
def test_rule_schema_catches_mistakes(rule, mutate, expected):
    doc = copy.deepcopy(rule)
    mutate(doc)
    assert any(expected in e for e in _schema_errors(doc)), _schema_errors(doc)


def test_every_alert_is_complete(rule):
    alerts = alerts_of(rule)
    assert alerts
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names))
    for alert in alerts:
        name = alert["alert"]
        assert isinstance(alert["expr"], str) and alert["expr"].strip(), name
        assert re.fullmatch(_DURATION, alert["for"]) and alert["for"] != "0", name
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert alert["labels"]["slo"] in SLOS, name
        assert alert["annotations"]["summary"].strip(), name
        assert alert["annotations"]["description"].strip(), name
        read = parse_promql(alert["expr"])
        if any(s.endswith("_bucket") for s, _, _ in read.selectors):
            assert read.quantiles and all("le" in g for g in read.grouping), (
                f"{name}: histogram buckets must keep le for histogram_quantile"
            )
    assert {a["labels"]["slo"] for a in alerts} == set(SLOS), "an SLO without an alert"


def test_annotation_labels_survive_the_aggregation(rule):
    """{{ $labels.x }} in an annotation is empty unless x is kept by every by (...)."""
    for alert in alerts_of(rule):
        grouping = parse_promql(alert["expr"]).grouping
        kept = set.intersection(*grouping) if grouping else set()
        for text in alert["annotations"].values():
            used = set(re.findall(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)", text))
            assert used <= kept, f"{alert['alert']}: {used - kept} aggregated away"


# --------------------------------------------------------------------------------------------
# Thresholds: the serving gate's defaults
# --------------------------------------------------------------------------------------------


def test_every_upper_bound_of_the_serving_gate_has_an_slo():
    assert {gate_key for gate_key, _ in SLOS.values()} == set(GATE_DEFAULTS)


@pytest.mark.parametrize("slo", sorted(SLOS))
def test_thresholds_are_the_serving_gate_defaults(rule, slo):
    (metric, stat), series = SLOS[slo]
    default = GATE_DEFAULTS[metric, stat]
    quantile = int(stat.removeprefix("p")) / 100 if stat else None
    alerts = [a for a in alerts_of(rule) if a["labels"]["slo"] == slo]
    assert alerts
    for alert in alerts:
        read = parse_promql(alert["expr"])
        assert {s for s, _, _ in read.selectors} == {series}, alert["alert"]
        assert read.thresholds, f"{alert['alert']} compares with nothing"
        if quantile is not None:
            assert read.quantiles == [quantile], alert["alert"]
            assert metric.endswith("_ms"), metric  # ms in the gate, seconds in vLLM
            assert read.thresholds == [(default / 1000,)], alert["alert"]
        else:
            factors = {t[0] for t in read.thresholds}
            assert all(len(t) == 2 and t[1] == default for t in read.thresholds), alert["alert"]
            assert len(factors) == 1 and factors <= set(BURN_RATES), alert["alert"]
            windows = {w for _, _, w in read.selectors}
            assert windows == set(BURN_RATES[factors.pop()]), alert["alert"]


def test_error_budget_has_a_fast_and_a_slow_burn_alert(rule):
    errors = [a for a in alerts_of(rule) if a["labels"]["slo"] == "error_rate"]
    factors = {parse_promql(a["expr"]).thresholds[0][0]: a for a in errors}
    assert set(factors) == set(BURN_RATES)
    assert factors[14.4]["labels"]["severity"] == "critical"
    assert factors[6.0]["labels"]["severity"] == "warning"


# --------------------------------------------------------------------------------------------
# Names: every series and label exists in the installed vLLM
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VLLMMetric:
    name: str  # the family name vLLM registers, e.g. vllm:request_success
    kind: str  # counter, gauge or histogram
    labels: frozenset[str] | None  # None where the source does not spell them out
    source: str  # file:line in the vllm package


def vllm_package() -> Path:
    found = sorted(VLLM_VENV.glob("lib/python3*/site-packages/vllm"))
    if not found or not (VLLM_VENV / "bin" / "python").is_file():
        pytest.skip(f"{VLLM_VENV.name} not built (make venvs): the names are checked against it")
    return found[-1]


def _metric_kind(call: ast.Call) -> str | None:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    for kind in ("counter", "gauge", "histogram"):
        if name.lower().strip("_") in (kind, f"{kind}_cls"):
            return kind
    return None


def _label_list(node: ast.expr | None, assigned: dict[str, list[str]]) -> list[str] | None:
    """The label names a ``labelnames=`` argument spells out, following local assignments."""
    if node is None:
        return []
    if isinstance(node, ast.List | ast.Tuple):
        values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
        return values if len(values) == len(node.elts) else None
    if isinstance(node, ast.Name):
        return assigned.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _label_list(node.left, assigned), _label_list(node.right, assigned)
        return None if left is None or right is None else left + right
    return None


@cache
def vllm_metrics() -> dict[str, VLLMMetric]:
    """Every ``vllm:*`` metric the vLLM source registers, from Counter/Gauge/Histogram calls."""
    package = vllm_package()
    out: dict[str, VLLMMetric] = {}
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if '"vllm:' not in text:
            continue
        tree = ast.parse(text, filename=str(path))
        functions = (ast.FunctionDef, ast.AsyncFunctionDef)
        for function in [tree, *(n for n in ast.walk(tree) if isinstance(n, functions))]:
            assigned = {}
            for node in ast.walk(function):
                if isinstance(node, ast.Assign) and len(node.targets) == 1:
                    target = node.targets[0]
                    if isinstance(target, ast.Name):
                        values = _label_list(node.value, {})
                        if values is not None:
                            assigned[target.id] = values
            for node in ast.walk(function):
                if not isinstance(node, ast.Call) or (kind := _metric_kind(node)) is None:
                    continue
                keywords = {k.arg: k.value for k in node.keywords}
                name = keywords.get("name")
                if not (isinstance(name, ast.Constant) and str(name.value).startswith("vllm:")):
                    continue
                labels = _label_list(keywords.get("labelnames"), assigned)
                where = f"{path.relative_to(package.parent)}:{node.lineno}"
                out.setdefault(
                    name.value,
                    VLLMMetric(
                        name.value, kind, None if labels is None else frozenset(labels), where
                    ),
                )
    assert out, f"no vllm:* metric found under {package}"
    return out


#: Run by .venv-vllm's python: registers each (kind, name) with prometheus_client and prints
#: {name: {series: [sample label names]}}, the series a scrape of that metric yields.
_EXPOSITION_SCRIPT = """
import json, sys
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
out = {}
for kind, name in json.load(sys.stdin):
    registry = CollectorRegistry()
    metric = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[kind](
        name, "doc", registry=registry
    )
    metric.observe(1) if kind == "histogram" else metric.inc()
    series = out.setdefault(name, {})
    for family in registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
print(json.dumps({n: {s: sorted(l) for s, l in v.items()} for n, v in out.items()}))
"""


@cache
def exposed_series() -> dict[str, tuple[VLLMMetric, frozenset[str]]]:
    """Series name -> (its metric, extra sample labels such as le), from prometheus_client."""
    metrics = vllm_metrics()
    result = subprocess.run(
        [str(VLLM_VENV / "bin" / "python"), "-c", _EXPOSITION_SCRIPT],
        input=json.dumps([[m.kind, m.name] for m in metrics.values()]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return {
        series: (metrics[name], frozenset(labels))
        for name, all_series in json.loads(result.stdout).items()
        for series, labels in all_series.items()
    }


def finish_reasons() -> frozenset[str]:
    """``FINISH_REASON_STRINGS`` of vllm/v1/engine/__init__.py: the finished_reason values."""
    tree = ast.parse((vllm_package() / "v1" / "engine" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == (
            "FINISH_REASON_STRINGS"
        ):
            return frozenset(ast.literal_eval(node.value))
    raise AssertionError("FINISH_REASON_STRINGS not found in vllm/v1/engine/__init__.py")


def test_the_vllm_source_reader_finds_the_known_metrics():
    """The reader itself: kinds, labels and suffixes of metrics vLLM documents."""
    metrics = vllm_metrics()
    success = metrics["vllm:request_success"]
    assert success.kind == "counter"
    assert success.labels == {"model_name", "engine", "finished_reason"}
    assert metrics["vllm:time_to_first_token_seconds"].kind == "histogram"
    assert metrics["vllm:num_requests_running"].kind == "gauge"
    series = exposed_series()
    assert "vllm:request_success_total" in series and "vllm:request_success" not in series
    assert series["vllm:e2e_request_latency_seconds_bucket"][1] == {"le"}
    assert {"vllm:e2e_request_latency_seconds_sum", "vllm:e2e_request_latency_seconds_count"} <= (
        series.keys()
    )
    assert {"stop", "length", "abort", "error"} <= finish_reasons()


def test_every_series_and_label_exists_in_the_installed_vllm(rule):
    series = exposed_series()
    reasons = finish_reasons()
    for alert in alerts_of(rule):
        read = parse_promql(alert["expr"])
        available = set(TARGET_LABELS)
        for name, matchers, _ in read.selectors:
            assert name in series, f"{alert['alert']}: vLLM exports no series {name}"
            metric, sample_labels = series[name]
            assert metric.labels is not None, (
                f"labels of {metric.name} unreadable ({metric.source})"
            )
            labels = metric.labels | sample_labels
            available |= labels
            for label, (_, value) in matchers.items():
                assert label in labels, f"{alert['alert']}: {name} has no label {label}"
                if label == "finished_reason":
                    assert value in reasons, f"{alert['alert']}: no finished_reason {value!r}"
        for group in read.grouping:
            assert group <= available, f"{alert['alert']}: unknown labels {group - available}"


def test_series_named_in_annotations_exist(rule):
    series = exposed_series()
    known = set(series) | set(vllm_metrics())
    for alert in alerts_of(rule):
        for text in alert["annotations"].values():
            for name in re.findall(r"vllm:[A-Za-z0-9_:]+", text):
                assert name in known, f"{alert['alert']} names {name}, which vLLM does not export"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("vllm:time_to_first_token_seconds_bucket", "vllm:ttft_seconds_bucket", "no series"),
        ("vllm:request_success_total{", "vllm:request_success{", "no series"),
        ('finished_reason="error"', 'finish_reason="error"', "no label finish_reason"),
        ('finished_reason="error"', 'finished_reason="failed"', "no finished_reason"),
        ("(le, model_name, namespace)", "(le, model, namespace)", "unknown labels"),
    ],
)
def test_name_check_catches_mistakes(rule, old, new, expected):
    doc = copy.deepcopy(rule)
    changed = False
    for alert in alerts_of(doc):
        if old in alert["expr"]:
            alert["expr"] = alert["expr"].replace(old, new)
            changed = True
    assert changed, f"{old!r} not in any expr"
    with pytest.raises(AssertionError, match=expected):
        test_every_series_and_label_exists_in_the_installed_vllm(doc)
