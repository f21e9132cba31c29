"""Deploy policy: which storageUri KServe fetches, where the deployment goes, and the
deploy/smoke-test entry points the pipeline's components call."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from modelgate.constants import DEPLOY_TIMEOUT_S, RUNTIME_NAME
from modelgate.deploy.spec import DeploymentMode, DeploySpec
from modelgate.deploy.target import Deployment, make_target
from modelgate.errors import ConfigError
from modelgate.naming import serving_name
from modelgate.placement import Placement
from modelgate.storage import KSERVE_SCHEMES, STORE_SCHEMES, scheme_of
from modelgate.validation import validated

logger = logging.getLogger(__name__)

REGISTRY_SCHEME = "model-registry"
#: The targets ``modelgate render`` prints an object for.
RENDER_TARGETS = ("kserve", "llmisvc")
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def storage_uri_for(
    *,
    model_uri: str,
    target: str,
    explicit: str | None = None,
    registry_record: dict[str, Any] | None = None,
    prefer_registry: bool = False,
) -> str:
    """The storageUri the deployment fetches the model from.

    Order: ``explicit``; ``model-registry://<name>/<version>`` when ``prefer_registry`` and the
    version is registered with an artifact URI KServe can fetch itself (the registry's storage
    initializer only resolves the name, then downloads that URI); the stored model's URI.
    A local target serves ``s3://`` and ``file://`` URIs; KServe needs one of
    :data:`~modelgate.storage.KSERVE_SCHEMES`.

    Raises:
        ConfigError: No URI the target can fetch; the message names the fix.
    """
    fetchable = STORE_SCHEMES if target == "local" else KSERVE_SCHEMES
    if explicit:
        scheme = scheme_of(explicit)
        if scheme not in fetchable and not (target != "local" and scheme == REGISTRY_SCHEME):
            raise ConfigError(
                f"storage_uri {explicit!r} cannot be fetched by the {target} target; use one of "
                f"{', '.join(s + '://' for s in fetchable)}"
            )
        return explicit
    record = registry_record or {}
    if prefer_registry and target != "local":
        if record.get("status") != "registered":
            raise ConfigError(
                "prefer_registry_uri needs a registered version: set registry_url (or "
                "MODEL_REGISTRY_URL), or deploy the stored model URI directly"
            )
        if scheme_of(model_uri) not in KSERVE_SCHEMES:
            raise ConfigError(
                f"the registered artifact URI {model_uri!r} is not one KServe can fetch, so "
                f"model-registry://{record.get('model_name')}/{record.get('version_name')} would "
                "resolve to nothing usable: set model_store to an s3:// prefix"
            )
        return f"{REGISTRY_SCHEME}://{record['model_name']}/{record['version_name']}"
    scheme = scheme_of(model_uri)
    if scheme in fetchable:
        return model_uri
    if scheme == "file":
        raise ConfigError(
            f"the model is in a local folder ({model_uri}) that a cluster cannot read: set "
            "model_store to an s3://bucket/prefix the cluster can reach, or pass storage_uri"
        )
    raise ConfigError(
        f"model URI {model_uri!r} cannot be fetched by the {target} target; use a model store "
        f"({', '.join(s + '://' for s in STORE_SCHEMES)}) or pass storage_uri"
    )


def current_namespace() -> str | None:
    """The namespace of this pod (from its service-account mount), or None outside a pod."""
    try:
        return NAMESPACE_FILE.read_text().strip() or None
    except OSError:
        return None


def deploy_model(
    *,
    name: str,
    model_uri: str,
    model_id: str = "",
    registered_model_name: str = "",
    target: str = "kserve",
    namespace: str | None = None,
    storage_uri: str | None = None,
    registry_record: dict[str, Any] | None = None,
    prefer_registry_uri: bool = False,
    runtime: str = RUNTIME_NAME,
    placement: Placement | dict[str, Any] | None = None,
    max_model_len: int | None = None,
    service_account: str | None = None,
    deployment_mode: DeploymentMode = "Standard",
    labels: dict[str, str] | None = None,
    vllm_python: str | None = None,
    canary_traffic_percent: int = 0,
    run_id: str | None = None,
    timeout: float = DEPLOY_TIMEOUT_S,
) -> Deployment:
    """Deploy the gated candidate beside production and wait until it serves (the pipeline's
    deploy step; see :meth:`~modelgate.deploy.target.DeployTarget.deploy`).

    Args:
        name: InferenceService / served model name (DNS-1035; empty: one per registered model,
            :func:`modelgate.naming.serving_name`).
        model_uri: The stored candidate's URI.
        model_id: Hub id an empty ``name`` is derived from (with ``registered_model_name``).
        registered_model_name: Registered model name (empty: derived from ``model_id``).
        target: ``kserve`` or ``local``.
        namespace: Namespace of the InferenceService (None: this pod's, else ``default``).
        storage_uri: Override of the URI to serve (see :func:`storage_uri_for`).
        registry_record: The register step's record, as a dict.
        prefer_registry_uri: Serve ``model-registry://<name>/<version>`` (see above).
        runtime: ServingRuntime name.
        placement: GPUs, tolerations, node selector and serving resources.
        max_model_len: vLLM ``--max-model-len``.
        service_account: Service account of the predictor (holds the storage secret).
        deployment_mode: KServe deployment mode.
        labels: Extra labels of the InferenceService.
        vllm_python: For ``local``: the interpreter with vLLM.
        canary_traffic_percent: Share of traffic the candidate gets beside production.
        run_id: The pipeline run, stamped on what is created (for :func:`rollback_run`).
        timeout: Seconds to wait until the deployment serves.

    Returns:
        The deployment.

    Raises:
        ConfigError: Bad options (each names the fix).
        DeployError: The deployment failed or timed out (after restoring what it replaced).
        SignatureError: A verify key is configured and the stored candidate did not verify
            (nothing is deployed).
    """
    from modelgate.signing import check_stored

    check_stored(model_uri)  # with a verify key configured; else it logs that the check is off
    spec = build_spec(
        name=serving_name(name, repo_id=model_id, registered=registered_model_name),
        model_uri=model_uri,
        target=target,
        namespace=namespace or current_namespace() or "default",
        storage_uri=storage_uri,
        registry_record=registry_record,
        prefer_registry_uri=prefer_registry_uri,
        runtime=runtime,
        placement=placement,
        max_model_len=max_model_len,
        service_account=service_account,
        deployment_mode=deployment_mode,
        labels=labels,
        canary_traffic_percent=canary_traffic_percent,
        run_id=run_id,
    )
    logger.info("deploying %s from %s to %s", spec.name, spec.storage_uri, target)
    return make_target(target, vllm_python=vllm_python, startup_timeout=timeout).deploy(spec)


def build_spec(
    *,
    name: str,
    model_uri: str,
    target: str,
    namespace: str,
    storage_uri: str | None = None,
    registry_record: dict[str, Any] | None = None,
    prefer_registry_uri: bool = False,
    runtime: str = RUNTIME_NAME,
    placement: Placement | dict[str, Any] | None = None,
    max_model_len: int | None = None,
    service_account: str | None = None,
    deployment_mode: DeploymentMode = "Standard",
    labels: dict[str, str] | None = None,
    canary_traffic_percent: int = 0,
    run_id: str | None = None,
) -> DeploySpec:
    """The validated :class:`DeploySpec` of a deployment (the deploy step and ``render``).

    Raises:
        ConfigError: A bad option or a URI the target cannot fetch (see :func:`storage_uri_for`).
    """
    return validated(
        DeploySpec,
        {
            "name": name,
            "namespace": namespace,
            "storage_uri": storage_uri_for(
                model_uri=model_uri,
                target=target,
                explicit=storage_uri,
                registry_record=registry_record,
                prefer_registry=prefer_registry_uri,
            ),
            "runtime": runtime,
            "placement": placement if placement is not None else Placement(),
            "max_model_len": max_model_len or None,
            "service_account": service_account or None,
            "deployment_mode": deployment_mode,
            "labels": labels or {},
            "canary_traffic_percent": canary_traffic_percent,
            "run_id": run_id or None,
        },
        what="deployment",
    )


def render_spec(
    params: Any, *, kserve_version: str | None = None, target: str = "kserve"
) -> DeploySpec:
    """The :class:`DeploySpec` a run with ``params`` deploys, for ``modelgate render``.

    Args:
        params: Run parameters (:class:`~modelgate.params.ReleaseParams`); ``storage_uri``
            names the model to serve.
        kserve_version: The cluster's KServe release; names the deployment mode, and must be
            0.17 or later for ``llmisvc``.
        target: ``kserve`` (InferenceService) or ``llmisvc`` (LLMInferenceService).

    Raises:
        ConfigError: No ``storage_uri``, a target that renders no cluster object, a KServe
            release without LLMInferenceService, or a bad option.
    """
    from modelgate.deploy.spec import deployment_mode_for
    from modelgate.placement import placement_from_options

    if target not in RENDER_TARGETS:
        raise ConfigError(
            f"render prints a cluster object: choose target {' or '.join(RENDER_TARGETS)}, "
            f"not {target!r}"
        )
    if target == "llmisvc" and kserve_version:
        from modelgate.deploy.llmisvc import FIRST_RELEASE, kserve_release_supported

        if not kserve_release_supported(kserve_version):
            raise ConfigError(
                f"KServe {kserve_version} has no LLMInferenceService v1alpha2 (it came with "
                f"{'.'.join(map(str, FIRST_RELEASE))}): upgrade KServe, or render --target kserve"
            )
    if not params.storage_uri:
        schemes = "s3://, pvc://, oci:// or hf://"
        raise ConfigError(
            f"give --storage-uri: the stored model to serve ({schemes}"
            + (" or model-registry://)" if target == "kserve" else ")")
        )
    mode = deployment_mode_for(kserve_version) if kserve_version else params.deployment_mode
    return build_spec(
        name=serving_name(
            params.deploy_name,
            repo_id=getattr(params, "model_id", ""),
            registered=params.registered_model_name,
        ),
        model_uri=params.storage_uri,
        target=target,
        namespace=params.namespace or "default",
        storage_uri=params.storage_uri,
        runtime=params.serving_runtime,
        placement=placement_from_options(
            accelerator_type=params.accelerator_type,
            accelerator_count=params.accelerator_count,
            tolerations=params.tolerations,
            node_selector=params.node_selector,
        ),
        max_model_len=params.max_model_len,
        service_account=params.serving_service_account,
        deployment_mode=mode,
    )


__all__ = ["current_namespace", "deploy_model", "storage_uri_for"]
