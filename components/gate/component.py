"""Quality gate components."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from modelgate.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def check_gate(
    candidate_results: Input[Artifact],
    base_results: Input[Artifact],
    thresholds: str,
    report: Output[Markdown],
) -> NamedTuple("GateOutputs", [("passed", bool), ("summary", str), ("table", str)]):
    """Check the candidate's metrics against thresholds and its recovery against the base.

    Every threshold is checked and every failure collected; a metric named in a threshold but
    missing from the results fails the gate.

    Args:
        candidate_results: Results of the quantized model.
        base_results: Results of the unquantized model from the same run.
        thresholds: Gate config as JSON or YAML, e.g.
            ``{"thresholds": [{"task": "arc_easy", "metric": "acc", "min": 0.5,
            "min_recovery": 0.97}]}``.
        report: The gate table (Markdown) for the UI.

    Returns:
        passed: the decision; summary: one line naming each failing check; table: the Markdown.

    Raises:
        ConfigError: The thresholds do not validate.
    """
    from collections import namedtuple

    from modelgate.evaluate import EvalResult
    from modelgate.gates import check_gate as check
    from modelgate.gates import gate_summary
    from modelgate.logs import configure_logging

    configure_logging()
    result = check(
        EvalResult.load(candidate_results.path),
        config=thresholds,
        base=EvalResult.load(base_results.path),
    )
    table = result.to_markdown()
    with open(report.path, "w") as fh:
        fh.write(table)
    outputs = namedtuple("GateOutputs", ["passed", "summary", "table"])
    return outputs(result.passed, gate_summary(result), table)


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
