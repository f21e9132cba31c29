"""The model card a registered version carries: where it came from, what was done, how it
scored, and what the gate decided.

The README and the lineage come from an untrusted model repository. Reading is bounded: only
the first :data:`FRONT_MATTER_MAX_CHARS` of the README are looked at, its YAML front matter is
parsed without aliases (a few hundred bytes of nested aliases expand to gigabytes), at most
:data:`YAML_MAX_DEPTH` deep and :data:`YAML_MAX_NODES` nodes, and the license is cut to
:data:`LICENSE_MAX_CHARS`. Rendering is escaped: every value from outside is written inline, on
one line, with Markdown and HTML special characters escaped (:func:`inline`), so it cannot
start a heading, a table row or an HTML block.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from modelgate.evaluate import EvalResult

logger = logging.getLogger(__name__)

FRONT_MATTER_MAX_CHARS = 64 * 1024
"""Only this much of a README is read for its front matter; a longer one states no license."""
YAML_MAX_DEPTH = 32
YAML_MAX_NODES = 10_000
LICENSE_MAX_CHARS = 200
VALUE_MAX_CHARS = 300
"""Other untrusted values in the card (names, URIs, lineage) are cut to this many characters."""
NOT_STATED = "not stated"

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)
#: Inline Markdown that could make a value more than text: a backslash escape, a code span,
#: emphasis, a link or image (``[``), a table cell border (``|``), strike-through. Escaped with a
#: backslash; line-start syntax (headings, lists, quotes) cannot occur on one inline line.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]|~])")


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses aliases and too deep or too large documents."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("YAML aliases are not accepted in a model card's front matter")
        self._nodes += 1
        if self._nodes > YAML_MAX_NODES:
            raise yaml.YAMLError(f"front matter has more than {YAML_MAX_NODES} YAML nodes")
        self._depth += 1
        try:
            if self._depth > YAML_MAX_DEPTH:
                raise yaml.YAMLError(f"front matter is nested deeper than {YAML_MAX_DEPTH}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def front_matter(readme: str | None) -> dict[str, Any]:
    """The YAML front matter of a Hub README, read within bounds; ``{}`` without a usable one.

    A front matter that is not within the first :data:`FRONT_MATTER_MAX_CHARS` characters, uses
    YAML aliases, nests deeper than :data:`YAML_MAX_DEPTH` or has more than
    :data:`YAML_MAX_NODES` nodes is ignored, with a warning.
    """
    head = (readme or "")[: FRONT_MATTER_MAX_CHARS + 1]
    match = _FRONT_MATTER.match(head)
    if not match:
        if len(head) > FRONT_MATTER_MAX_CHARS and head.startswith("---"):
            logger.warning(
                "README front matter ignored: not closed within %d characters",
                FRONT_MATTER_MAX_CHARS,
            )
        return {}
    loader = _BoundedLoader(match.group(1))
    try:
        meta = loader.get_single_data()
    except (yaml.YAMLError, ValueError, OverflowError) as e:  # bad dates and huge ints too
        logger.warning("README front matter ignored: %s", " ".join(str(e).split())[:200])
        return {}
    finally:
        loader.dispose()
    return meta if isinstance(meta, dict) else {}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def license_of(readme: str | None) -> str:
    """The ``license`` of a Hub README's YAML front matter ("not stated" without one).

    Read with :func:`front_matter`'s bounds; a list is joined with commas; cut to
    :data:`LICENSE_MAX_CHARS` with an ellipsis. The value is untrusted text: render it with
    :func:`inline`.
    """
    value = front_matter(readme).get("license")
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value[:20] if isinstance(v, str | int | float))
    if not value or not isinstance(value, str | int | float):
        return NOT_STATED
    return _cut(" ".join(str(value).split()), LICENSE_MAX_CHARS) or NOT_STATED


def inline(value: object, *, limit: int = VALUE_MAX_CHARS) -> str:
    """``value`` as inline Markdown text: one line, cut to ``limit``, nothing in it active.

    Whitespace runs (newlines included) become one space, so nothing can start a line (a
    heading, a list, a quote); inline Markdown (`` \\ ` * [ ] | ~ ``) is backslash-escaped, ``|``
    too, so a table cell stays one cell; ``<``, ``>`` and ``&`` become HTML entities.
    """
    text = _cut(" ".join(str(value).split()), limit)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def code(value: object, *, limit: int = VALUE_MAX_CHARS) -> str:
    """``value`` as an inline code span in a table cell: one line, no backticks, ``|`` escaped."""
    text = _cut(" ".join(str(value).split()), limit).replace("`", "\u2018").replace("|", "\\|")
    return f"`{text}`" if text else ""


def render_card(
    *,
    model_name: str,
    version_name: str,
    uri: str,
    lineage: dict[str, Any],
    results: EvalResult,
    gate_report: str,
    license: str = NOT_STATED,  # noqa: A002 - the card's word
) -> str:
    """The Markdown model card.

    Every value but ``gate_report`` (modelgate's own Markdown) and the numbers is untrusted
    and written inline and escaped (:func:`inline`, :func:`code`).

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
    repo = inline(lineage.get("source_repo", ""))
    commit = code(str(lineage.get("source_commit", ""))[:12])
    revision = code(lineage.get("source_revision", ""))
    rows = [
        ("source", f"{repo} @ {commit} (revision {revision})"),
        ("license", inline(license, limit=LICENSE_MAX_CHARS)),
        ("quantization", f"{inline(lineage.get('quant_scheme', 'none'))} with llm-compressor"),
        ("artifact", code(uri)),
    ]
    if lineage.get("pipeline_run_id"):
        rows.append(("pipeline run", code(lineage["pipeline_run_id"])))
    lines = [f"# {inline(model_name)} — {inline(version_name)}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "## Evaluation (lm-evaluation-harness)", ""]
    lines += ["| task | metric | value | stderr | n |", "|---|---|---|---|---|"]
    for task, metrics in sorted(results.tasks.items()):
        n = results.samples(task)
        for name, m in sorted(metrics.items()):
            stderr = "" if m.stderr is None else f"{m.stderr:.4f}"
            lines.append(
                f"| {inline(task)} | {inline(name)} | {m.value:.4f} | {stderr} "
                f"| {'' if n is None else n} |"
            )
    limit = results.config.get("limit") if results.config else None
    if limit:
        lines += ["", f"Evaluated on at most {limit} examples per task."]
    lines += ["", "## Gate", "", gate_report.strip(), ""]
    return "\n".join(lines)
