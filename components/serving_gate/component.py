"""Serving gate component: load on the live candidate, checked against the SLO bounds."""

from typing import NamedTuple, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Output

from modelgate.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def serving_gate(
    deployment: str,
    thresholds: str,
    model_uri: str,
    report: Output[HTML],
    measurements: Output[Artifact],
    record: str = "",
    registry_url: str = "",
    accelerator_type: str = "nvidia.com/gpu",
    accelerator_count: str = "1",
    node_selector: Optional[dict] = None,
    endpoint_eval_tasks: str = "",
    candidate_results: Optional[Input[Artifact]] = None,
    eval_limit: int = 0,
    eval_num_fewshot: int = -1,
    eval_offline: bool = False,
    hf_endpoint: str = "",
) -> NamedTuple("ServingGateOutputs", [("passed", bool), ("summary", str)]):
    """Benchmark the candidate endpoint with GuideLLM and check the gate config's ``serving``
    bounds (TTFT, ITL, end-to-end latency, error rate, throughput); with
    ``endpoint_eval_tasks``, also run lm-eval against the endpoint and check the ``endpoint``
    bounds. Without either the step says the serving gate is off and passes.

    The measured values go onto the registry version; a missed bound makes the version
    ``rejected`` with the report attached, and fails the step (the run's rollback step then
    removes the candidate; production does not move).

    Args:
        deployment: Deployment details JSON from ``deploy_model``.
        thresholds: The gate config (JSON/YAML) with its ``serving``/``endpoint`` sections.
        model_uri: The stored candidate: GuideLLM's synthetic prompts need its tokenizer.
        report: The GuideLLM report and the gate table (HTML) for the UI.
        measurements: The measured values and verdicts (JSON).
        record: Registry record JSON from ``register_candidate`` (or ``resolve_version``).
        registry_url: Registry URL (empty: ``$MODEL_REGISTRY_URL``).
        accelerator_type: GPU resource name (``hardware_type`` unless the node selector names
            the GPU model).
        accelerator_count: GPUs per replica, recorded as ``hardware_count``.
        node_selector: The predictor's node labels (a GPU product label names the model).
        endpoint_eval_tasks: lm-eval tasks run against the endpoint (empty: none).
        candidate_results: The offline evaluation, for ``endpoint`` ``min_recovery`` checks.
        eval_limit: Examples per endpoint task (0: all).
        eval_num_fewshot: Few-shot examples (-1: task default).
        eval_offline: Never contact the Hub for datasets.
        hf_endpoint: Hub mirror URL for datasets (empty: the public hub).

    Returns:
        passed: the decision (always True when it returns); summary: one line.

    Raises:
        GateFailedError: A bound was missed (metric, measured value and bound named).
        ServingGateError: The benchmark could not run against the endpoint.
    """
    import json
    import os
    import shutil
    from collections import namedtuple

    from modelgate.deploy.target import Deployment
    from modelgate.logs import configure_logging
    from modelgate.postdeploy import hardware_of, serving_gate_step
    from modelgate.registry import RegistryRecord

    configure_logging()
    out_dir = os.path.dirname(measurements.path) or "."
    candidate = Deployment(**json.loads(deployment))
    hardware, count = hardware_of(
        accelerator_type, accelerator_count, node_selector, target=candidate.target
    )
    work = os.path.join(out_dir, "serving-gate")
    try:
        outcome = serving_gate_step(
            deployment=candidate,
            gate_config=thresholds,
            model_uri=model_uri,
            out_dir=work,
            record=RegistryRecord.from_dict(record) if record else None,
            registry_url=registry_url or None,
            hardware_type=hardware,
            hardware_count=count,
            endpoint_eval_tasks=endpoint_eval_tasks,
            offline_results=candidate_results.path if candidate_results else None,
            eval_options={
                "limit": eval_limit or None,
                "num_fewshot": None if eval_num_fewshot < 0 else eval_num_fewshot,
                "offline": eval_offline,
                "hf_endpoint": hf_endpoint or None,
            },
        )
    finally:  # the report is an output also when the gate fails
        for name, target in (("serving.html", report.path), ("serving.json", measurements.path)):
            if os.path.isfile(os.path.join(work, name)):
                shutil.copyfile(os.path.join(work, name), target)
    outputs = namedtuple("ServingGateOutputs", ["passed", "summary"])
    return outputs(outcome.passed, outcome.summary)
