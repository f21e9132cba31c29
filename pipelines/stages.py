"""Pieces both pipelines are built from: evaluate a stored model; the gate that decides
whether it is recorded as rejected or deployed beside production, smoke-tested, load-tested
(the serving gate) and promoted; and the rollback step that runs when the run ends.

``p`` is the pipeline's own parameters (``dict(locals())`` at the top of its function: the
KFP channels of every run parameter), so each piece reads the same knobs by the same names.
"""

from __future__ import annotations

from typing import Any

from kfp import dsl, kubernetes
from modelgate.components import (
    check_gate,
    deploy_model,
    evaluate_model,
    given_storage_uri,
    lookup_production,
    package_modelcar,
    promote_candidate,
    record_evaluation,
    rollback_release,
    serving_gate,
    smoke_test,
    stop_promotion,
)
from modelgate.components.package.component import AUTH_DIR as MODELCAR_AUTH_DIR
from modelgate.pipelines.platform import (
    no_cache,
    place,
    retry_safely,
    use_hf_token,
    use_signing_key,
    use_store_secret,
    use_verify_key,
)

from modelgate.placement import Placement

Params = dict[str, Any]


def same_named(p: Params, component: Any) -> dict[str, Any]:
    """The run parameters ``component`` takes under their own names (e.g. every input of the
    preflight components), so a new parameter is wired by declaring it, not by listing it."""
    inputs = component.component_spec.inputs or {}
    return {name: p[name] for name in inputs if name in p}


def preflight(p: Params, placement: Placement, component: Any) -> dsl.PipelineTask:
    """The pipeline's first step: ``component`` (a preflight component) with every run
    parameter it takes, uncached, with the Hub token and the store's keys to check them."""
    task = component(**same_named(p, component)).set_display_name("preflight")
    no_cache(place(task, "gate", placement))
    use_hf_token(task, p["hf_token_secret"])
    use_store_secret(task, p["model_store_secret"])
    use_signing_key(task, p["signing_key_secret"])  # a key that does not parse stops the run
    use_verify_key(task, p["verify_key_secret"])
    return task


def gpu(p: Params) -> dict[str, Any]:
    """The GPU settings of GPU steps and the predictor."""
    return {
        k: p[k] for k in ("accelerator_type", "accelerator_count", "tolerations", "node_selector")
    }


def evaluate(p: Params, placement: Placement, *, model_uri: Any, label: str) -> dsl.PipelineTask:
    """lm-eval on a stored model, on GPU nodes, with the Hub token and the store's keys; with
    the run's model store (a release) its evaluation is cached there and its samples kept."""
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
        model_store=p.get("model_store", ""),
    ).set_display_name(f"evaluate {label}")
    place(task, "evaluate", placement, **gpu(p))
    use_hf_token(task, p["hf_token_secret"])
    use_store_secret(task, p["model_store_secret"])
    use_verify_key(task, p["verify_key_secret"])  # the model's signature, before lm-eval
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
    candidate_results: Any,
    production: dsl.PipelineTask,
    record: Any,
    model_uri: Any,
    base_results: Any | None = None,
) -> None:
    """Gate the candidate; record why; serve, smoke-test and promote it only if it passed.

    ``candidate_results`` and ``base_results`` are results artifacts (an evaluate task's
    ``results``); the gate reads the samples they name (``samples_uri``) and production's from
    the lookup, so it gets the store's keys.
    """
    inputs = {"base_results": base_results} if base_results is not None else {}
    gate = check_gate(
        candidate_results=candidate_results,
        production_results=production.outputs["production"],
        thresholds=p["thresholds"],
        **inputs,
    ).set_display_name("quality gate")
    place(gate, "gate", placement)
    use_store_secret(gate, p["model_store_secret"])  # the samples files

    recorded = record_evaluation(
        record=record,
        candidate_results=candidate_results,
        gate_passed=gate.outputs["passed"],
        gate_report=gate.outputs["table"],
        registry_url=p["registry_url"],
    ).set_display_name("record evaluation")
    retry_safely(no_cache(place(recorded, "register", placement)))
    use_store_secret(recorded, p["model_store_secret"])  # the samples file the registry keeps

    with dsl.If(gate.outputs["passed"] == True, name="gate-passed"):  # noqa: E712 - KFP DSL
        storage_uri = modelcar_storage_uri(p, placement, model_uri=model_uri, record=record)
        deploy = deploy_model(
            model_uri=model_uri,
            name=p["deploy_name"],
            model_id=p.get("model_id", ""),
            registered_model_name=p["registered_model_name"],
            target=p["deploy_target"],
            namespace=p["namespace"],
            storage_uri=storage_uri,
            registry_record=record,
            prefer_registry_uri=p["prefer_registry_uri"],
            runtime=p["serving_runtime"],
            service_account=p["serving_service_account"],
            deployment_mode=p["deployment_mode"],
            serving_resources=placement.resources("serve").model_dump(exclude_none=True),
            max_model_len=p["max_model_len"],
            vllm_python=p["vllm_python"],
            canary_traffic_percent=p["canary_traffic_percent"],
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            **gpu(p),
        ).set_display_name("deploy")
        no_cache(place(deploy, "deploy", placement))
        # the candidate's signature is checked before anything is deployed (when a key is set)
        use_store_secret(deploy, p["model_store_secret"])
        use_verify_key(deploy, p["verify_key_secret"])
        deploy.after(recorded)  # the registry knows the gate decision before anything serves
        smoke = smoke_test(
            deployment=deploy.outputs["deployment"], prompt=p["smoke_prompt"]
        ).set_display_name("smoke test")
        no_cache(place(smoke, "smoke_test", placement))
        slo = serving_gate(
            deployment=deploy.outputs["deployment"],
            thresholds=p["thresholds"],
            model_uri=model_uri,
            record=record,
            registry_url=p["registry_url"],
            accelerator_type=p["accelerator_type"],
            accelerator_count=p["accelerator_count"],
            node_selector=p["node_selector"],
            endpoint_eval_tasks=p["endpoint_eval_tasks"],
            candidate_results=candidate_results,
            eval_limit=p["eval_limit"],
            eval_num_fewshot=p["eval_num_fewshot"],
            eval_offline=p["eval_offline"],
            hf_endpoint=p["hf_endpoint"],
        ).set_display_name("serving gate")
        no_cache(place(slo.after(smoke), "serving_gate", placement))
        use_hf_token(slo, p["hf_token_secret"])  # endpoint evaluation datasets
        use_store_secret(slo, p["model_store_secret"])  # the candidate's tokenizer
        promote = promote_candidate(
            record=record, registry_url=p["registry_url"], deployment=deploy.outputs["deployment"]
        )
        promote.set_display_name("promote")
        retry_safely(no_cache(place(promote.after(slo), "register", placement)))
    with dsl.Else(name="gate-failed"):
        stop = stop_promotion(summary=gate.outputs["summary"], table=gate.outputs["table"])
        stop.set_display_name("stop promotion")
        no_cache(place(stop.after(recorded), "gate", placement))


def modelcar_storage_uri(p: Params, placement: Placement, *, model_uri: Any, record: Any) -> Any:
    """The deploy's storageUri: with ``modelcar_repository`` set, the ``oci://…@sha256:…`` of
    a modelcar of ``model_uri`` built and pushed by the package step (and recorded on the
    version ``record``); otherwise the ``storage_uri`` parameter as given (a ``dsl.OneOf`` of
    the two branches).

    The package step runs with the download step's resources (CPU, memory, work volume: it
    holds the model and its layers on disk), the store's keys, and the ``modelcar_secret``
    (a ``kubernetes.io/dockerconfigjson`` Secret, optional) mounted as its auth file.
    """
    with dsl.If(p["modelcar_repository"] != "", name="modelcar"):
        package = package_modelcar(
            model_uri=model_uri,
            repository=p["modelcar_repository"],
            record=record,
            registry_url=p["registry_url"],
        ).set_display_name("package modelcar")
        no_cache(place(package, "download", placement))
        use_store_secret(package, p["model_store_secret"])
        kubernetes.use_secret_as_volume(
            package, secret_name=p["modelcar_secret"], mount_path=MODELCAR_AUTH_DIR, optional=True
        )
    with dsl.Else(name="no-modelcar"):
        given = given_storage_uri(storage_uri=p["storage_uri"]).set_display_name("storage uri")
        place(given, "gate", placement)
    return dsl.OneOf(package.outputs["storage_uri"], given.output)


def rollback_on_exit(p: Params, placement: Placement) -> dsl.PipelineTask:
    """The run's exit handler: undo what the run deployed and did not promote.

    Use as ``with dsl.ExitHandler(rollback_on_exit(p, placement), name="release"):`` around
    the whole pipeline (KFP allows exit handlers at the outermost scope only), so it runs after
    a failed smoke test or serving gate, a failed promote, a cancel, and a success (then it
    finds nothing to undo).
    """
    task = rollback_release(
        name=p["deploy_name"],
        model_id=p.get("model_id", ""),
        registered_model_name=p["registered_model_name"],
        target=p["deploy_target"],
        namespace=p["namespace"],
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    ).set_display_name("rollback")
    return retry_safely(no_cache(place(task, "deploy", placement)))
