"""Deploy step: one :class:`DeploySpec`, several :class:`DeployTarget` implementations.

The KServe target (``modelgate.kserve``) and the local target (``modelgate.serving``) both start
vLLM with the arguments from :func:`vllm_args`, so a local run exercises exactly the model
arguments the cluster's ServingRuntime receives.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelgate.errors import ConfigError

DeployTargetName = Literal["kserve", "local"]
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class Toleration(BaseModel):
    """A Kubernetes toleration (core/v1 ``Toleration``), camelCase as in the API."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = None
    operator: Literal["Equal", "Exists"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = None  # noqa: N815 - Kubernetes field name


class DeploySpec(BaseModel):
    """Everything needed to serve one model version with vLLM.

    ``name`` is the InferenceService name and the served model name.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63)
    namespace: str = "default"
    storage_uri: str = Field(min_length=1)
    runtime: str = "vllm-runtime"
    model_format: str = "vLLM"
    accelerator_resource: str = "nvidia.com/gpu"
    accelerator_count: int = Field(default=1, ge=0)
    cpu: str = "4"
    memory: str = "16Gi"
    tolerations: list[Toleration] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    max_model_len: int | None = Field(default=None, gt=0)
    dtype: str | None = None
    extra_args: list[str] = Field(default_factory=list)
    service_account: str | None = None
    deployment_mode: str = "RawDeployment"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        if not _DNS1035.match(v):
            raise ValueError(
                f"{v!r} is not a valid InferenceService name: use lowercase letters, digits and "
                "'-', starting with a letter (e.g. 'tiny-llama-fp8')"
            )
        return v


def spec_from_options(
    name: str,
    *,
    storage_uri: str,
    namespace: str = "default",
    runtime: str = "vllm-runtime",
    accelerator_type: str = "nvidia.com/gpu",
    accelerator_count: int = 1,
    tolerations: str = "[]",
    node_selector: str = "{}",
    max_model_len: int = 0,
    labels: dict[str, str] | None = None,
) -> DeploySpec:
    """Build a :class:`DeploySpec` from scalar options (KFP parameters, CLI flags).

    ``tolerations`` and ``node_selector`` are JSON strings; ``max_model_len`` 0 means default.

    Raises:
        ConfigError: A JSON option is malformed.
        pydantic.ValidationError: A field is invalid (e.g. a name that is not DNS-1035).
    """
    return DeploySpec(
        name=name,
        namespace=namespace or "default",
        storage_uri=storage_uri,
        runtime=runtime,
        accelerator_resource=accelerator_type,
        accelerator_count=accelerator_count,
        tolerations=parse_json_option(tolerations, option="tolerations", expected=list),
        node_selector=parse_json_option(node_selector, option="node_selector", expected=dict),
        max_model_len=max_model_len or None,
        labels=labels or {},
    )


def vllm_args(spec: DeploySpec, *, model_path: str = "/mnt/models", port: int = 8080) -> list[str]:
    """The vLLM OpenAI server arguments both targets pass for ``spec``.

    Args:
        spec: The deployment.
        model_path: Where the model files are (KServe mounts storageUri at /mnt/models).
        port: Port the server listens on.

    Returns:
        Arguments for ``python -m vllm.entrypoints.openai.api_server``.
    """
    args = [f"--model={model_path}", f"--port={port}", f"--served-model-name={spec.name}"]
    if spec.max_model_len:
        args.append(f"--max-model-len={spec.max_model_len}")
    if spec.dtype:
        args.append(f"--dtype={spec.dtype}")
    return args + list(spec.extra_args)


def parse_json_option(raw: str | None, *, option: str, expected: type) -> Any:
    """Parse a JSON-string pipeline option (KFP passes structured options as strings).

    Raises:
        ConfigError: The text is not JSON of the ``expected`` type; the message shows an example.
    """
    if raw is None or raw.strip() == "":
        return expected()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{option} must be a JSON {expected.__name__}, got {raw!r}: {e}") from e
    if not isinstance(value, expected):
        example = '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]'
        if expected is dict:
            example = '{"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}'
        raise ConfigError(
            f"{option} must be a JSON {expected.__name__}, got {type(value).__name__}; "
            f"example: {example}"
        )
    return value


@dataclass
class Deployment:
    """A running deployment: where to reach it and how to tear it down."""

    target: DeployTargetName
    name: str
    endpoint: str  # base URL of the OpenAI-compatible server, without /v1
    model: str  # served model name for OpenAI requests
    ready_seconds: float
    details: dict[str, Any] = field(default_factory=dict)  # pid / namespace / generation ...


class DeployTarget(Protocol):
    """A place a model can be served. Implementations: KServe, local vLLM process."""

    name: DeployTargetName

    def deploy(self, spec: DeploySpec, *, model_dir: str | None = None) -> Deployment:
        """Create or update the deployment and wait until it is ready."""
        ...

    def teardown(self, deployment: Deployment) -> None:
        """Remove the deployment (idempotent)."""
        ...

    def rollback(self, deployment: Deployment) -> str:
        """Undo ``deployment`` after a failed check: restore what it replaced, or remove it."""
        ...


def resolve_storage_uri(
    explicit: str | None, *, model_uri: str, registry_record: dict[str, Any] | None = None
) -> str:
    """Pick the storageUri KServe pulls the model from.

    Order: an explicit URI; ``model-registry://<model>/<version>`` when the version was
    registered (resolved by the model-registry ClusterStorageContainer); the pipeline artifact's
    URI, with KFP's ``minio://`` scheme mapped to ``s3://``.

    Raises:
        ConfigError: The only candidate is a local path, which a cluster cannot pull.
    """
    if explicit:
        return explicit
    record = registry_record or {}
    if record.get("status") == "registered" and record.get("model_name"):
        return f"model-registry://{record['model_name']}/{record['version_name']}"
    if model_uri.startswith("minio://"):
        return "s3://" + model_uri[len("minio://") :]
    if "://" not in model_uri or model_uri.startswith("file://"):
        raise ConfigError(
            f"model artifact {model_uri!r} is a local path a cluster cannot pull: pass "
            "storage_uri (pvc://, s3://, oci://, hf://) or register the model"
        )
    return model_uri


def make_target(
    name: str, *, vllm_python: str | None = None, startup_timeout: float = 600.0
) -> DeployTarget:
    """The deploy target called ``name``.

    Raises:
        ConfigError: Unknown target name.
    """
    if name == "kserve":
        from modelgate.kserve import KServeTarget

        return KServeTarget(timeout=startup_timeout)
    if name == "local":
        from modelgate.serving import LocalVLLMTarget

        return LocalVLLMTarget(python=vllm_python, startup_timeout=startup_timeout)
    raise ConfigError(f"unknown deploy target {name!r}; choose 'kserve' or 'local'")
