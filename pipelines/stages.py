"""Pieces both pipelines are built from: evaluate a stored model, and the gate that decides
whether it is recorded as rejected or deployed, smoke-tested and promoted.

``p`` is the pipeline's own parameters (``dict(locals())`` at the top of its function: the
KFP channels of every run parameter), so each piece reads the same knobs by the same names.
"""

from __future__ import annotations

from typing import Any

from kfp import dsl
from modelgate.components import (
    check_gate,
    deploy_model,
    evaluate_model,
    lookup_production,
    promote_candidate,
    record_evaluation,
    smoke_test,
    stop_promotion,
)
from modelgate.pipelines.platform import (
    no_cache,
    place,
    retry_safely,
    use_hf_token,
    use_store_secret,
)

from modelgate.placement import Placement

Params = dict[str, Any]


def gpu(p: Params) -> dict[str, Any]:
    """The GPU settings of GPU steps and the predictor."""
    return {
        k: p[k] for k in ("accelerator_type", "accelerator_count", "tolerations", "node_selector")
    }


def evaluate(p: Params, placement: Placement, *, model_uri: Any, label: str) -> dsl.PipelineTask:
    """lm-eval on a stored model, on GPU nodes, with the Hub token and the store's keys."""
    task = evaluate_model(
        model_uri=model_uri,
        tasks=p["eval_tasks"],
        backend=p["eval_backend"],
        task_dir=p["eval_task_dir"],
        limit=p["eval_limit"],
        num_fewshot=p["eval_num_fewshot"],
        batch_size=p["eval_batch_size"],
        device=p["eval_device"],
        max_length=p["eval_max_length"],
        gpus=p["accelerator_count"],
        offline=p["eval_offline"],
        hf_endpoint=p["hf_endpoint"],
    ).set_display_name(f"evaluate {label}")
    place(task, "evaluate", placement, **gpu(p))
    use_hf_token(task, p["hf_token_secret"])
    use_store_secret(task, p["model_store_secret"])
    return task


def production_lookup(p: Params, placement: Placement, *, model_id: Any) -> dsl.PipelineTask:
    """The version in production and its stored results, for the gate."""
    task = lookup_production(
        model_id=model_id, model_name=p["registered_model_name"], registry_url=p["registry_url"]
    ).set_display_name("production version")
    return no_cache(place(task, "register", placement))


def gate_and_promote(
    p: Params,
    placement: Placement,
    *,
    candidate: dsl.PipelineTask,
    production: dsl.PipelineTask,
    record: Any,
    model_uri: Any,
    base: dsl.PipelineTask | None = None,
) -> None:
    """Gate the candidate; record why; serve, smoke-test and promote it only if it passed."""
    inputs = {"base_results": base.outputs["results"]} if base is not None else {}
    gate = check_gate(
        candidate_results=candidate.outputs["results"],
        production_results=production.outputs["production"],
        thresholds=p["thresholds"],
        **inputs,
    ).set_display_name("quality gate")
    place(gate, "gate", placement)

    recorded = record_evaluation(
        record=record,
        candidate_results=candidate.outputs["results"],
        gate_passed=gate.outputs["passed"],
        gate_report=gate.outputs["table"],
        registry_url=p["registry_url"],
    ).set_display_name("record evaluation")
    retry_safely(no_cache(place(recorded, "register", placement)))

    with dsl.If(gate.outputs["passed"] == True, name="gate-passed"):  # noqa: E712 - KFP DSL
        deploy = deploy_model(
            model_uri=model_uri,
            name=p["deploy_name"],
            target=p["deploy_target"],
            namespace=p["namespace"],
            storage_uri=p["storage_uri"],
            registry_record=record,
            prefer_registry_uri=p["prefer_registry_uri"],
            runtime=p["serving_runtime"],
            service_account=p["serving_service_account"],
            deployment_mode=p["deployment_mode"],
            serving_resources=placement.resources("serve").model_dump(exclude_none=True),
            max_model_len=p["max_model_len"],
            vllm_python=p["vllm_python"],
            **gpu(p),
        ).set_display_name("deploy")
        no_cache(place(deploy, "deploy", placement))
        deploy.after(recorded)  # the registry knows the gate decision before anything serves
        smoke = smoke_test(
            deployment=deploy.outputs["deployment"], prompt=p["smoke_prompt"]
        ).set_display_name("smoke test")
        no_cache(place(smoke, "smoke_test", placement))
        promote = promote_candidate(
            record=record, registry_url=p["registry_url"], endpoint=deploy.outputs["endpoint"]
        )
        promote.set_display_name("promote")
        retry_safely(no_cache(place(promote.after(smoke), "register", placement)))
    with dsl.Else(name="gate-failed"):
        stop = stop_promotion(summary=gate.outputs["summary"], table=gate.outputs["table"])
        stop.set_display_name("stop promotion")
        no_cache(place(stop.after(recorded), "gate", placement))
