"""Deploy and smoke-test components."""

from typing import NamedTuple, Optional

from kfp import dsl

from modelgate.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def deploy_model(
    model_uri: str,
    name: str = "",
    model_id: str = "",
    registered_model_name: str = "",
    target: str = "kserve",
    namespace: str = "",
    storage_uri: str = "",
    registry_record: str = "",
    prefer_registry_uri: bool = False,
    runtime: str = "vllm-runtime",
    service_account: str = "modelgate-model-reader",
    deployment_mode: str = "Standard",
    accelerator_type: str = "nvidia.com/gpu",
    accelerator_count: str = "1",
    tolerations: Optional[list] = None,
    node_selector: Optional[dict] = None,
    serving_resources: Optional[dict] = None,
    max_model_len: int = 0,
    vllm_python: str = "",
    canary_traffic_percent: int = 0,
    run_id: str = "",
    timeout_seconds: int = 1800,
) -> NamedTuple("DeployOutputs", [("endpoint", str), ("served_model", str), ("deployment", str)]):
    """Serve the gated candidate with vLLM beside production, and wait until it serves.

    On KServe, when an InferenceService already serves production, the candidate is its named
    canary predictor (``canary_traffic_percent`` of the traffic; 0 = dark launch) and
    production's pods are untouched; otherwise the InferenceService is created. Locally, the
    candidate is a second vLLM server beside the one in production. The endpoint reaches the
    candidate only. A deployment that fails is undone before the step fails.

    Args:
        model_uri: The stored candidate that passed the gate.
        name: InferenceService / served model name (DNS-1035; empty: one per registered model).
        model_id: Hub id the default ``name`` is derived from.
        registered_model_name: Registered model name (empty: derived from ``model_id``).
        target: ``kserve`` (InferenceService), ``llmisvc`` (LLMInferenceService) or ``local``.
        namespace: Namespace for kserve (empty: the pod's namespace or ``default``).
        storage_uri: Override of where KServe fetches the model (s3://, pvc://, oci://, hf://).
        registry_record: Record JSON from ``register_candidate``.
        prefer_registry_uri: Serve ``model-registry://<model>/<version>`` instead of the URI.
        runtime: ServingRuntime name.
        service_account: Predictor service account holding the model store's secret.
        deployment_mode: ``Standard`` (KServe >= 0.16), ``RawDeployment`` (older) or ``Knative``.
        accelerator_type: Extended resource name of the GPU, e.g. ``nvidia.com/gpu``.
        accelerator_count: GPUs per replica ("0" for CPU); vLLM's tensor parallel size.
        tolerations: Kubernetes tolerations for the predictor.
        node_selector: Node labels for the predictor.
        serving_resources: Requests/limits of each replica (a ``StepResources`` mapping).
        max_model_len: vLLM ``--max-model-len`` (0: model default).
        vllm_python: For ``local``: interpreter with vLLM (empty: ``$MODELGATE_VLLM_PYTHON``).
        canary_traffic_percent: Share of traffic the candidate gets beside production.
        run_id: The KFP run, stamped on what is created so the run's rollback step finds it.
        timeout_seconds: Seconds to wait until the deployment serves.

    Returns:
        endpoint: base URL; served_model: model name for OpenAI calls; deployment: details JSON.

    Raises:
        ConfigError: Bad options (the message names the fix).
        DeployError: The deployment failed or timed out (what it replaced is restored).
    """
    import json
    from collections import namedtuple
    from dataclasses import asdict

    from modelgate.deploy.plan import deploy_model as deploy
    from modelgate.logs import configure_logging
    from modelgate.placement import placement_from_options

    configure_logging()
    placement = placement_from_options(
        accelerator_type=accelerator_type,
        accelerator_count=accelerator_count,
        tolerations=tolerations,
        node_selector=node_selector,
        steps={"serve": serving_resources} if serving_resources else None,
    )
    deployment = deploy(
        name=name,
        model_id=model_id,
        registered_model_name=registered_model_name,
        model_uri=model_uri,
        target=target,
        namespace=namespace or None,
        storage_uri=storage_uri or None,
        registry_record=json.loads(registry_record) if registry_record else None,
        prefer_registry_uri=prefer_registry_uri,
        runtime=runtime,
        placement=placement,
        max_model_len=max_model_len or None,
        service_account=service_account or None,
        deployment_mode=deployment_mode,
        vllm_python=vllm_python or None,
        canary_traffic_percent=canary_traffic_percent,
        run_id=run_id or None,
        timeout=float(timeout_seconds),
    )
    outputs = namedtuple("DeployOutputs", ["endpoint", "served_model", "deployment"])
    return outputs(deployment.endpoint, deployment.model, json.dumps(asdict(deployment)))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def smoke_test(deployment: str, prompt: str = "2+3=") -> str:
    """Call /v1/completions and /v1/chat/completions on the candidate; both must return text.

    A failure fails the step; the run's rollback step then removes the candidate, and
    production keeps serving.

    Args:
        deployment: Deployment details JSON from ``deploy_model``.
        prompt: Completion prompt.

    Returns:
        The completion text.

    Raises:
        SmokeTestError: A call failed or returned no text.
    """
    import json

    from modelgate.deploy.target import Deployment
    from modelgate.logs import configure_logging
    from modelgate.postdeploy import run_smoke_test

    configure_logging()
    return run_smoke_test(Deployment(**json.loads(deployment)), prompt=prompt)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def rollback_release(
    status: dsl.PipelineTaskFinalStatus,
    name: str = "",
    model_id: str = "",
    registered_model_name: str = "",
    target: str = "kserve",
    namespace: str = "",
    run_id: str = "",
) -> str:
    """The run's exit handler: undo what this run deployed and did not promote.

    Runs after every run: success (nothing to undo), a failed step, a cancel. It reads the
    state on the target, so it also cleans up after a deploy pod that was killed half-way:
    a candidate stamped with this run that is not production is removed and production keeps
    serving; anything else is left alone.

    Args:
        status: The final status of the run's tasks (KFP fills it in).
        name: InferenceService / served model name (empty: one per registered model).
        model_id: Hub id the default ``name`` is derived from.
        registered_model_name: Registered model name (empty: derived from ``model_id``).
        target: ``kserve``, ``llmisvc`` or ``local``.
        namespace: Namespace of the InferenceService (empty: the pod's namespace or ``default``).
        run_id: The KFP run id the deploy step stamped (empty: the status's job name).

    Returns:
        What was undone, or that there was nothing to undo.

    Raises:
        DeployError: The rollback failed (the message names what is left serving).
    """
    from modelgate.logs import configure_logging
    from modelgate.postdeploy import rollback_step

    configure_logging()
    return rollback_step(
        name=name,
        model_id=model_id,
        registered_model_name=registered_model_name,
        target=target,
        namespace=namespace or None,
        run_id=run_id or status.pipeline_job_resource_name,
        state=status.state,
        error=status.error_message,
    )
