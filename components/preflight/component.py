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
    thresholds: str = "",
    registry_url: str = "",
    deploy_target: str = "kserve",
    deploy_name: str = "modelgate-candidate",
    namespace: str = "",
    serving_runtime: str = "vllm-runtime",
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
        deploy_target: ``kserve`` or ``local``.
        deploy_name: InferenceService name.
        namespace: Namespace of the InferenceService (empty: this pod's).
        serving_runtime: ServingRuntime name.
        hf_endpoint: Hub mirror URL.

    Returns:
        One line per check.

    Raises:
        PreflightError: One or more checks failed (the message lists each with its fix).
    """
    from modelgate.deploy.plan import current_namespace
    from modelgate.logs import configure_logging
    from modelgate.params import ReleaseParams
    from modelgate.preflight import cluster_checks, preflight, release_checks

    configure_logging()
    params = ReleaseParams(
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
        hf_endpoint=hf_endpoint,
    )
    pod_namespace = current_namespace()
    checks = release_checks(params, local=pod_namespace is None)
    if pod_namespace is not None:
        from kubernetes import config

        config.load_incluster_config()
        checks |= cluster_checks(params, namespace=namespace or pod_namespace)
    results = preflight(checks)
    return "\n".join(f"{r.name}: {r.detail}" for r in results)
