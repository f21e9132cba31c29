"""Preflight component: the release's checks, run in the cluster before any model work."""

from kfp import dsl

from modelgate.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def preflight_release(
    model_id: str,
    model_store: str,
    revision: str = "main",
    allow_pickle: bool = False,
    allow_remote_code: bool = False,
    quant_scheme: str = "FP8_DYNAMIC",
    calibration_data: str = "",
    eval_tasks: str = "arc_easy",
    eval_task_dir: str = "",
    eval_backend: str = "vllm",
    thresholds: str = (
        '{"thresholds": [{"task": "arc_easy", "metric": "acc", "min": 0.5, "min_recovery": 0.95}]}'
    ),
    registry_url: str = "",
    deploy_target: str = "kserve",
    deploy_name: str = "",
    namespace: str = "",
    serving_runtime: str = "vllm-runtime",
    deployment_mode: str = "Standard",
    storage_uri: str = "",
    prefer_registry_uri: bool = False,
    canary_traffic_percent: int = 0,
    hf_endpoint: str = "",
) -> str:
    """Check everything knowable before download starts; fail with every problem at once.

    Hub repository and revision (gated, pickle-only, no tokenizer, custom code), scheme and
    calibration, evaluation tasks and backend, gate config, registry reachability and API
    version, the model store is writable; in a pod also: the pipeline's service account may
    manage InferenceServices in the namespace, and the ServingRuntime exists.

    Args:
        model_id: Hub repository id.
        model_store: Model store URI.
        revision: Branch, tag or commit.
        allow_pickle: Accept pickle-only weights.
        allow_remote_code: Accept configs that declare custom code (never run).
        quant_scheme: Quantization scheme.
        calibration_data: Calibration URI or dataset id.
        eval_tasks: Comma-separated lm-eval tasks.
        eval_task_dir: Stored folder URI of local task YAMLs.
        eval_backend: lm-eval backend.
        thresholds: Gate config (JSON/YAML).
        registry_url: Registry URL (empty: ``$MODEL_REGISTRY_URL`` or none).
        deploy_target: ``kserve``, ``llmisvc`` or ``local``.
        deploy_name: InferenceService name (empty: one per registered model).
        namespace: Namespace of the InferenceService (empty: this pod's).
        serving_runtime: ServingRuntime name.
        deployment_mode: KServe deployment mode.
        storage_uri: storageUri override.
        prefer_registry_uri: Serve ``model-registry://`` URIs.
        canary_traffic_percent: Share of traffic of the candidate beside production.
        hf_endpoint: Hub mirror URL.

    Returns:
        One line per check.

    Raises:
        PreflightError: One or more checks failed (the message lists each with its fix).
    """
    from modelgate.logs import configure_logging
    from modelgate.params import ReleaseParams
    from modelgate.preflight import run_step_preflight

    configure_logging()
    return run_step_preflight(
        ReleaseParams(
            model_id=model_id,
            model_store=model_store,
            revision=revision,
            allow_pickle=allow_pickle,
            allow_remote_code=allow_remote_code,
            quant_scheme=quant_scheme,
            calibration_data=calibration_data,
            eval_tasks=eval_tasks,
            eval_task_dir=eval_task_dir,
            eval_backend=eval_backend,
            thresholds=thresholds,
            registry_url=registry_url,
            deploy_target=deploy_target,
            deploy_name=deploy_name,
            namespace=namespace,
            serving_runtime=serving_runtime,
            deployment_mode=deployment_mode,
            storage_uri=storage_uri,
            prefer_registry_uri=prefer_registry_uri,
            canary_traffic_percent=canary_traffic_percent,
            hf_endpoint=hf_endpoint,
        )
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def preflight_redeploy(
    registered_model_name: str,
    model_version: str = "",
    registry_url: str = "",
    eval_tasks: str = "arc_easy",
    eval_task_dir: str = "",
    eval_backend: str = "vllm",
    thresholds: str = (
        '{"thresholds": [{"task": "arc_easy", "metric": "acc", "min": 0.5, '
        '"min_vs_production": 0.98, "tolerance_stderr": 1}]}'
    ),
    deploy_target: str = "kserve",
    deploy_name: str = "",
    namespace: str = "",
    serving_runtime: str = "vllm-runtime",
    deployment_mode: str = "Standard",
    storage_uri: str = "",
    prefer_registry_uri: bool = False,
    canary_traffic_percent: int = 0,
) -> str:
    """Check a redeploy before it evaluates anything; fail with every problem at once.

    The registry has the version, the evaluation tasks and backend, the gate config, the deploy
    target; in a pod also: the pipeline's service account may manage InferenceServices in the
    namespace, and the ServingRuntime exists.

    Args:
        registered_model_name: Registered model name.
        model_version: Version (empty: the newest neither rejected nor archived).
        registry_url: Registry URL (empty: ``$MODEL_REGISTRY_URL``).
        eval_tasks: Comma-separated lm-eval tasks.
        eval_task_dir: Stored folder URI of local task YAMLs.
        eval_backend: lm-eval backend.
        thresholds: Gate config (JSON/YAML).
        deploy_target: ``kserve``, ``llmisvc`` or ``local``.
        deploy_name: InferenceService name (empty: one per registered model).
        namespace: Namespace of the InferenceService (empty: this pod's).
        serving_runtime: ServingRuntime name.
        deployment_mode: KServe deployment mode.
        storage_uri: storageUri override.
        prefer_registry_uri: Serve ``model-registry://`` URIs.
        canary_traffic_percent: Share of traffic of the candidate beside production.

    Returns:
        One line per check.

    Raises:
        PreflightError: One or more checks failed (the message lists each with its fix).
    """
    from modelgate.logs import configure_logging
    from modelgate.params import RedeployParams
    from modelgate.preflight import run_step_preflight

    configure_logging()
    return run_step_preflight(
        RedeployParams(
            registered_model_name=registered_model_name,
            model_version=model_version,
            registry_url=registry_url,
            eval_tasks=eval_tasks,
            eval_task_dir=eval_task_dir,
            eval_backend=eval_backend,
            thresholds=thresholds,
            deploy_target=deploy_target,
            deploy_name=deploy_name,
            namespace=namespace,
            serving_runtime=serving_runtime,
            deployment_mode=deployment_mode,
            storage_uri=storage_uri,
            prefer_registry_uri=prefer_registry_uri,
            canary_traffic_percent=canary_traffic_percent,
        )
    )
