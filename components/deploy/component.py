"""Deploy and smoke-test components."""

from typing import NamedTuple, Optional

from kfp import dsl

from modelgate.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def deploy_model(
    model_uri: str,
    name: str,
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
    timeout_seconds: int = 1800,
) -> NamedTuple("DeployOutputs", [("endpoint", str), ("served_model", str), ("deployment", str)]):
    """Serve the model with vLLM: a KServe InferenceService, or a local vLLM process.

    Waits until the new spec serves: for KServe Standard mode, until the predictor Deployment
    has rolled it out. A deployment that fails is rolled back before the step fails.

    Args:
        model_uri: The stored candidate that passed the gate.
        name: InferenceService / served model name (DNS-1035).
        target: ``kserve`` (create or replace the InferenceService) or ``local``.
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
        timeout=float(timeout_seconds),
    )
    outputs = namedtuple("DeployOutputs", ["endpoint", "served_model", "deployment"])
    return outputs(deployment.endpoint, deployment.model, json.dumps(asdict(deployment)))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def smoke_test(deployment: str, prompt: str = "2+3=") -> str:
    """Call /v1/completions and /v1/chat/completions once each; both must return text.

    On failure the deployment is rolled back (the previous InferenceService spec restored and
    waited for, or the new one deleted), so no failing model is left serving.

    Args:
        deployment: Deployment details JSON from ``deploy_model``.
        prompt: Completion prompt.

    Returns:
        The completion text.

    Raises:
        SmokeTestError: A call failed or returned no text (after the rollback).
    """
    import json

    from modelgate.deploy.plan import smoke_test_or_rollback
    from modelgate.deploy.target import Deployment
    from modelgate.logs import configure_logging

    configure_logging()
    return smoke_test_or_rollback(Deployment(**json.loads(deployment)), prompt=prompt)
