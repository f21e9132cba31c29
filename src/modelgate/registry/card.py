"""The model card a registered version carries: where it came from, what was done, how it
scored, and what the gate decided."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from modelgate.evaluate import EvalResult

_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)


def license_of(readme: str | None) -> str:
    """The ``license`` of a Hub README's YAML front matter ("not stated" without one)."""
    match = _FRONT_MATTER.match(readme or "")
    if match:
        try:
            meta = yaml.safe_load(match.group(1)) or {}
        except yaml.YAMLError:
            meta = {}
        value = meta.get("license") if isinstance(meta, dict) else None
        if value:
            return str(value)
    return "not stated"


def render_card(
    *,
    model_name: str,
    version_name: str,
    uri: str,
    lineage: dict[str, Any],
    results: EvalResult,
    gate_report: str,
    license: str = "not stated",  # noqa: A002 - the card's word
) -> str:
    """The Markdown model card.

    Args:
        model_name: Registered model name.
        version_name: Version name.
        uri: The stored model's URI.
        lineage: ``source_repo``, ``source_revision``, ``source_commit``, ``quant_scheme``,
            ``pipeline_run_id`` ... as registered.
        results: The candidate's evaluation.
        gate_report: The gate table (Markdown).
        license: The source model's license.
    """
    repo = lineage.get("source_repo", "")
    commit = str(lineage.get("source_commit", ""))
    rows = [
        ("source", f"{repo} @ `{commit[:12]}` (revision `{lineage.get('source_revision', '')}`)"),
        ("license", license),
        ("quantization", f"{lineage.get('quant_scheme', 'none')} with llm-compressor"),
        ("artifact", f"`{uri}`"),
    ]
    if lineage.get("pipeline_run_id"):
        rows.append(("pipeline run", f"`{lineage['pipeline_run_id']}`"))
    lines = [f"# {model_name} — {version_name}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "## Evaluation (lm-evaluation-harness)", ""]
    lines += ["| task | metric | value | stderr | n |", "|---|---|---|---|---|"]
    for task, metrics in sorted(results.tasks.items()):
        n = results.samples(task)
        for name, m in sorted(metrics.items()):
            stderr = "" if m.stderr is None else f"{m.stderr:.4f}"
            lines.append(
                f"| {task} | {name} | {m.value:.4f} | {stderr} | {'' if n is None else n} |"
            )
    limit = results.config.get("limit") if results.config else None
    if limit:
        lines += ["", f"Evaluated on at most {limit} examples per task."]
    lines += ["", "## Gate", "", gate_report.strip(), ""]
    return "\n".join(lines)
