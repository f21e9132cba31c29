"""Deploy and smoke-test components."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Input, Model

from modelgate.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def deploy_model(
    model: Input[Model],
    name: str,
    target: str = "kserve",
    namespace: str = "",
    storage_uri: str = "",
    registry_record: str = "",
    runtime: str = "vllm-runtime",
    accelerator_type: str = "nvidia.com/gpu",
    accelerator_count: int = 1,
    tolerations: str = "[]",
    node_selector: str = "{}",
    max_model_len: int = 0,
    vllm_python: str = "",
    timeout_seconds: int = 900,
) -> NamedTuple("DeployOutputs", [("endpoint", str), ("served_model", str), ("deployment", str)]):
    """Serve the model with vLLM: a KServe InferenceService, or a local vLLM process.

    Args:
        model: The model that passed the gate.
        name: InferenceService / served model name (DNS-1035).
        target: ``kserve`` (create or patch the InferenceService) or ``local``.
        namespace: Namespace for kserve (empty: the pod's namespace or ``default``).
        storage_uri: Where KServe pulls the model (empty: the registry or artifact URI).
        registry_record: Record JSON from ``register_candidate``.
        runtime: ServingRuntime name.
        accelerator_type: Extended resource name of the GPU, e.g. ``nvidia.com/gpu``.
        accelerator_count: GPUs per replica (0 for CPU).
        tolerations: JSON list of Kubernetes tolerations for the predictor.
        node_selector: JSON object of node labels for the predictor.
        max_model_len: vLLM ``--max-model-len`` (0: model default).
        vllm_python: For ``local``: interpreter with vLLM (empty: ``$MODELGATE_VLLM_PYTHON``).
        timeout_seconds: Seconds to wait for readiness.

    Returns:
        endpoint: base URL; served_model: model name for OpenAI calls; deployment: details JSON.

    Raises:
        ConfigError: Bad options (the message names the fix).
        DeployError: The deployment failed or timed out.
    """
    import json
    import os
    from collections import namedtuple
    from dataclasses import asdict

    from modelgate.deploy import make_target, resolve_storage_uri, spec_from_options
    from modelgate.logs import configure_logging

    configure_logging()
    record = json.loads(registry_record) if registry_record else None
    if target == "local":
        uri = "file://" + model.path
    else:
        uri = resolve_storage_uri(storage_uri or None, model_uri=model.uri, registry_record=record)
    ns_file = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if not namespace and os.path.exists(ns_file):
        namespace = open(ns_file).read().strip()
    spec = spec_from_options(
        name,
        storage_uri=uri,
        namespace=namespace,
        runtime=runtime,
        accelerator_type=accelerator_type,
        accelerator_count=accelerator_count,
        tolerations=tolerations,
        node_selector=node_selector,
        max_model_len=max_model_len,
        labels={"modelgate.io/commit": str(model.metadata.get("commit_sha", ""))[:63]},
    )
    deploy_target = make_target(
        target, vllm_python=vllm_python or None, startup_timeout=float(timeout_seconds)
    )
    deployment = deploy_target.deploy(spec, model_dir=model.path if target == "local" else None)
    outputs = namedtuple("DeployOutputs", ["endpoint", "served_model", "deployment"])
    return outputs(deployment.endpoint, deployment.model, json.dumps(asdict(deployment)))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def smoke_test(
    endpoint: str, served_model: str, deployment: str, target: str, prompt: str = "2+3="
) -> str:
    """Call /v1/completions and /v1/chat/completions once each; both must return text.

    On failure the deployment is rolled back (the previous InferenceService spec restored, or
    the new one deleted), so no failing model is left serving.

    Args:
        endpoint: Base URL of the OpenAI-compatible server.
        served_model: Model name to request.
        deployment: Deployment details JSON from ``deploy_model``.
        target: The deploy target that made it (``kserve`` or ``local``).
        prompt: Completion prompt.

    Returns:
        The completion text.

    Raises:
        SmokeTestError: A call failed or returned no text (after the rollback).
    """
    import json
    import logging

    from modelgate.deploy import Deployment, make_target
    from modelgate.errors import SmokeTestError
    from modelgate.logs import configure_logging
    from modelgate.serving import smoke_test as run_smoke_test

    configure_logging()
    try:
        texts = run_smoke_test(endpoint, model=served_model, prompt=prompt)
    except SmokeTestError as e:
        done = make_target(target).rollback(Deployment(**json.loads(deployment)))
        logging.getLogger("modelgate.smoke").error("smoke test failed; %s", done)
        raise SmokeTestError(f"{e}; {done}") from e
    return texts["completion"]
