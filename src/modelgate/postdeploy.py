"""After deploy: the post-deploy gates, promotion, and the run's rollback step.

The pipelines serve a candidate that passed the offline gate *beside* production (a KServe
canary, a second local server; see :meth:`~modelgate.deploy.target.DeployTarget.deploy`), then:

1. smoke test (one completion, one chat completion) against the candidate only;
2. serving gate (:func:`serving_gate_step`): GuideLLM load on the candidate, checked against the
   gate config's ``serving`` thresholds, and, with ``endpoint_eval_tasks``, lm-eval against the
   live endpoint checked against the ``endpoint`` thresholds; the measured values go onto the
   registry version, and a failure makes the version ``rejected`` with the report attached;
3. promote (:func:`promote_release`): the candidate becomes production on the target, then in
   the registry.

A failed check does not roll back by itself: the step fails the run, and the pipeline's exit
handler runs :func:`rollback_step`, which undoes whatever that run deployed and did not promote
(it runs after a success too, and then finds nothing to undo). Only an interruption (Ctrl-C, or
the SIGTERM a cancelled run sends its pods) makes a post-deploy step undo the candidate itself
before it exits (:func:`undo_on_interrupt`), so a cancel is cleaned up even where the backend
does not run exit handlers after a cancel.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelgate.deploy.plan import current_namespace
from modelgate.deploy.smoke import smoke_test
from modelgate.deploy.target import Deployment, make_target
from modelgate.errors import ConfigError, GateFailedError
from modelgate.gates import GateConfig, check_gate, gate_summary, load_gate_config
from modelgate.naming import serving_name
from modelgate.processes import signals_raise
from modelgate.registry import RegistryRecord, promote_candidate, record_serving
from modelgate.slo import ServingGateResult, fetch_tokenizer, run_serving_gate

logger = logging.getLogger(__name__)

#: States of KFP's ``PipelineTaskFinalStatus`` after which nothing is left to undo.
SUCCEEDED = "SUCCEEDED"


@dataclass
class PostDeployOutcome:
    """What the serving gate step decided, for the console and the KFP outputs."""

    passed: bool
    summary: str
    table: str
    serving: dict[str, Any] | None = None  # ServingGateResult.to_dict(), None when off
    endpoint: dict[str, Any] | None = None  # the endpoint evaluation's gate report
    properties: dict[str, float | int | str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the step's ``serving.json``)."""
        return {
            "passed": self.passed,
            "summary": self.summary,
            "table": self.table,
            "serving": self.serving,
            "endpoint": self.endpoint,
            "properties": self.properties,
        }


@contextlib.contextmanager
def undo_on_interrupt(deployment: Deployment) -> Iterator[None]:
    """Ctrl-C or SIGTERM inside the block rolls ``deployment`` back before it propagates
    (noted on the exception); any other failure propagates untouched, for the rollback step.
    """
    with signals_raise():
        try:
            yield
        except KeyboardInterrupt as e:
            done = make_target(deployment.target).rollback(deployment)
            logger.error("interrupted; %s", done)
            e.add_note(done)
            raise


def run_smoke_test(deployment: Deployment, *, prompt: str) -> str:
    """The smoke test on the candidate; a failure raises (the rollback step undoes the deploy).

    Raises:
        SmokeTestError: A call failed or returned no text.
        KeyboardInterrupt: Ctrl-C or SIGTERM (after the candidate was rolled back).
    """
    with undo_on_interrupt(deployment):
        return smoke_test(deployment.endpoint, model=deployment.model, prompt=prompt)["completion"]


def _endpoint_gate(
    deployment: Deployment,
    config: GateConfig,
    *,
    tasks: str,
    tokenizer: Path,
    offline_results: str | None,
    eval_options: dict[str, Any],
) -> tuple[bool, str, str, dict[str, Any]]:
    """lm-eval ``local-completions`` against the live endpoint, checked against the gate
    config's ``endpoint`` thresholds (``min_recovery`` there compares with the offline
    evaluation of the same model: a serving misconfiguration shows as lost recovery)."""
    from modelgate.evaluate import EvalResult, evaluate_model

    if config.endpoint is None:
        raise ConfigError(
            "endpoint_eval_tasks is set but the gate config has no 'endpoint' section: add "
            "endpoint: {thresholds: [...]} (docs/gates.md) or leave endpoint_eval_tasks empty"
        )
    result = evaluate_model(
        deployment.model,
        tasks=[t.strip() for t in tasks.split(",") if t.strip()],
        backend="local-completions",
        base_url=deployment.endpoint,
        tokenizer=str(tokenizer),
        **eval_options,
    )
    base = EvalResult.load(offline_results) if offline_results else None
    report = check_gate(
        result, config=GateConfig(name="endpoint", thresholds=config.endpoint.thresholds), base=base
    )
    return report.passed, gate_summary(report), report.to_markdown(), report.to_dict()


def serving_gate_step(
    *,
    deployment: Deployment,
    gate_config: str | dict[str, Any] | GateConfig,
    model_uri: str,
    out_dir: str | Path,
    record: RegistryRecord | None = None,
    registry_url: str | None = None,
    hardware_type: str = "",
    hardware_count: int = 0,
    endpoint_eval_tasks: str = "",
    offline_results: str | None = None,
    eval_options: dict[str, Any] | None = None,
) -> PostDeployOutcome:
    """The serving gate on the candidate; measured values and the verdict go on the version.

    Writes ``serving.json`` and ``serving.html`` into ``out_dir`` (also when it fails).

    Raises:
        ConfigError: A bad gate config, or ``endpoint_eval_tasks`` without ``endpoint`` bounds.
        ServingGateError: GuideLLM could not measure (endpoint gone, benchmark failed).
        GateFailedError: A bound was missed; the message names metric, value and bound (the
            version is recorded as ``rejected`` first).
    """
    config = load_gate_config(gate_config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.serving is None and not endpoint_eval_tasks:
        summary = "serving gate off: the gate config has no 'serving' section"
        logger.info(summary)
        outcome = PostDeployOutcome(passed=True, summary=summary, table=summary)
        _write(out, outcome, html=None)
        return outcome

    tmp = Path(tempfile.mkdtemp(prefix="modelgate-tokenizer-"))
    with undo_on_interrupt(deployment):
        try:
            tokenizer = fetch_tokenizer(model_uri, tmp)
            serving: ServingGateResult | None = None
            tables: list[str] = []
            summaries: list[str] = []
            passed = True
            if config.serving is not None:
                serving = run_serving_gate(
                    deployment.endpoint,
                    deployment.model,
                    config.serving,
                    processor=str(tokenizer),
                    out_dir=out,
                )
                passed = serving.passed
                tables.append(serving.table())
                summaries.append(serving.summary)
            endpoint_report = None
            if endpoint_eval_tasks:
                ok, summary, table, endpoint_report = _endpoint_gate(
                    deployment,
                    config,
                    tasks=endpoint_eval_tasks,
                    tokenizer=tokenizer,
                    offline_results=offline_results,
                    eval_options=eval_options or {},
                )
                passed = passed and ok
                tables.append(table)
                summaries.append(f"endpoint evaluation {summary}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    properties: dict[str, float | int | str] = dict(
        serving.registry_properties() if serving else {}
    )
    if hardware_type:
        properties |= {"hardware_type": hardware_type, "hardware_count": int(hardware_count)}
    summary = "; ".join(summaries)
    outcome = PostDeployOutcome(
        passed=passed,
        summary=summary,
        table="\n\n".join(tables),
        serving=serving.to_dict() if serving else None,
        endpoint=endpoint_report,
        properties=properties,
    )
    _write(out, outcome, html=None if serving is None else out / "serving.html")
    if record is not None and record.stage == "production":
        # a redeploy of the version in production: its stage is not this run's to change
        logger.info("serving gate not recorded: %s is the production version", record.version_name)
    elif record is not None:
        record_serving(
            record=record,
            registry_url=registry_url,
            passed=passed,
            properties=properties,
            report=outcome.table,
            summary=summary,
        )
    if not passed:
        raise GateFailedError(
            f"{summary}; {deployment.name} was not promoted (production unchanged)\n{outcome.table}"
        )
    logger.info("serving gate passed: %s", summary)
    return outcome


#: Node labels that name the GPU model (NVIDIA GPU feature discovery, AMD's device plugin).
GPU_PRODUCT_LABELS = ("nvidia.com/gpu.product", "amd.com/gpu.product-name")


def hardware_of(
    accelerator_type: str,
    accelerator_count: str | int,
    node_selector: dict[str, str] | None,
    *,
    target: str = "kserve",
) -> tuple[str, int]:
    """What the candidate ran on, for the registry's ``hardware_type``/``hardware_count``:
    the GPU model the node selector pins (the catalog names models, e.g. ``H100``), else the
    GPU resource name; ``cpu`` without GPUs and for the local target (vLLM's CPU build)."""
    count = int(accelerator_count or 0)
    if count <= 0 or target == "local":
        return "cpu", 0
    for label in GPU_PRODUCT_LABELS:
        if (node_selector or {}).get(label):
            return str((node_selector or {})[label]), count
    return accelerator_type, count


def _write(out: Path, outcome: PostDeployOutcome, *, html: Path | None) -> None:
    (out / "serving.json").write_text(json.dumps(outcome.to_dict(), indent=2, default=str))
    if html is None or not html.is_file():
        from html import escape

        (out / "serving.html").write_text(
            f"<!doctype html><meta charset=utf-8><title>serving gate</title>"
            f"<pre>{escape(outcome.table)}</pre>"
        )


def promote_release(
    deployment: Deployment | None, *, record: RegistryRecord, registry_url: str | None
) -> str:
    """The candidate becomes production: first where it serves, then in the registry.

    Both halves are idempotent (the pipeline retries the step).

    Raises:
        DeployError: The target could not complete the promotion.
        RegistryError: The registry refused; the message says what already serves it.
    """
    done: list[str] = []
    if deployment is not None:
        done.append(make_target(deployment.target).promote(deployment))
    done.append(
        promote_candidate(
            record=record,
            registry_url=registry_url,
            endpoint=deployment.endpoint if deployment else None,
        )
    )
    message = "; ".join(d for d in done if d)
    logger.info("promoted: %s", message)
    return message


def rollback_step(
    *,
    target: str,
    name: str,
    namespace: str | None,
    run_id: str,
    state: str,
    error: str | None = None,
    model_id: str = "",
    registered_model_name: str = "",
) -> str:
    """The exit handler: undo what run ``run_id`` deployed under ``name`` and did not promote.

    After a success there is nothing to undo (said, not checked twice). Otherwise the target
    reads its own state (:meth:`~modelgate.deploy.target.DeployTarget.rollback_run`), so it
    also cleans up after a cancel or a pod killed half-way.

    Raises:
        DeployError: The rollback itself failed (the message names what is left serving).
    """
    if state == SUCCEEDED:
        message = f"run {run_id} succeeded: nothing to roll back"
        logger.info(message)
        return message
    name = serving_name(name, repo_id=model_id, registered=registered_model_name)
    namespace = namespace or current_namespace() or "default"
    error = (error or "").strip()
    reason = f" ({error.splitlines()[0]})" if error else ""
    logger.warning("run %s ended %s%s: rolling back what it deployed", run_id, state, reason)
    message = make_target(target).rollback_run(name, namespace, run_id)
    logger.warning("rollback: %s", message)
    return message


__all__ = [
    "PostDeployOutcome",
    "promote_release",
    "rollback_step",
    "run_smoke_test",
    "serving_gate_step",
]
