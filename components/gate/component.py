"""Quality gate components."""

from typing import NamedTuple, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Output

from modelgate.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def check_gate(
    candidate_results: Input[Artifact],
    production_results: Input[Artifact],
    thresholds: str,
    report: Output[Markdown],
    chart: Output[HTML],
    base_results: Optional[Input[Artifact]] = None,
) -> NamedTuple("GateOutputs", [("passed", bool), ("summary", str), ("table", str)]):
    """Check the candidate against thresholds, its recovery against the base model and its
    ratio to the version in production; every failure is collected.

    A metric named in a threshold but missing from the results fails the gate. Checks use
    stderr and sample counts when the thresholds ask for it (``tolerance_stderr``,
    ``min_samples``).

    Args:
        candidate_results: Results of the quantized model.
        production_results: The production version's stored results (or that there is none).
        thresholds: Gate config as JSON or YAML, e.g.
            ``{"thresholds": [{"task": "arc_easy", "metric": "acc", "min": 0.5,
            "min_recovery": 0.97, "min_vs_production": 0.99}]}``.
        report: The gate table (Markdown) for the UI.
        chart: Base vs candidate vs production per metric (HTML) for the UI.
        base_results: Results of the unquantized model from the same run (none in a redeploy).

    Returns:
        passed: the decision; summary: one line naming each failing check; table: the Markdown.

    Raises:
        ConfigError: The thresholds do not validate, or a metric's direction is unknown.
    """
    from collections import namedtuple

    from modelgate.gates import run_gate
    from modelgate.logs import configure_logging

    configure_logging()
    outcome = run_gate(
        candidate=candidate_results.path,
        config=thresholds,
        base=base_results.path if base_results else None,
        production=production_results.path,
    )
    table = outcome.report.to_markdown()
    with open(report.path, "w") as fh:
        fh.write(table)
    with open(chart.path, "w") as fh:
        fh.write(outcome.html)
    outputs = namedtuple("GateOutputs", ["passed", "summary", "table"])
    return outputs(outcome.report.passed, outcome.summary, table)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def stop_promotion(summary: str, table: str):
    """Fail the run because a gate failed, so the run shows red with the reason.

    Args:
        summary: One line naming each failing check.
        table: The gate table (Markdown).

    Raises:
        GateFailedError: Always.
    """
    from modelgate.errors import GateFailedError

    raise GateFailedError(f"{summary}; promotion stopped\n{table}")
