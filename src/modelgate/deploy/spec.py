"""What to serve and how: one :class:`DeploySpec`, and the vLLM arguments every target passes.

The KServe target (:mod:`modelgate.deploy.kserve`) and the local target
(:mod:`modelgate.deploy.local`) both start vLLM with :func:`vllm_args`, so a local run exercises
exactly the model arguments the cluster's ServingRuntime receives.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelgate.constants import RUNTIME_NAME
from modelgate.placement import Placement

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

#: KServe deployment modes. KServe 0.16 renamed ``RawDeployment`` to ``Standard`` (0.20 still
#: accepts the old name as an alias; kserve/kserve#4608, ``pkg/constants/constants.go``) and
#: ``Serverless`` to ``Knative``.
DeploymentMode = Literal["Standard", "RawDeployment", "Knative", "Serverless"]
#: Modes in which the predictor is a plain Deployment ``<name>-predictor``.
DEPLOYMENT_BACKED_MODES = frozenset({"Standard", "RawDeployment"})
FIRST_STANDARD_RELEASE = (0, 16)


def deployment_mode_for(kserve_version: str) -> DeploymentMode:
    """The name KServe ``kserve_version`` gives the plain-Deployment mode.

    ``Standard`` from 0.16 on, ``RawDeployment`` before.
    """
    parts = tuple(int(p) for p in re.findall(r"\d+", kserve_version)[:2])
    return "Standard" if parts >= FIRST_STANDARD_RELEASE else "RawDeployment"


class DeploySpec(BaseModel):
    """Everything needed to serve one model version with vLLM.

    ``name`` is the InferenceService name and the served model name. ``placement`` holds the
    GPUs, tolerations, node selector and the ``serve`` step's requests of each replica.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63)
    namespace: str = "default"
    storage_uri: str = Field(min_length=1)
    runtime: str = RUNTIME_NAME
    model_format: str = "vLLM"
    placement: Placement = Field(default_factory=Placement)
    max_model_len: int | None = Field(default=None, gt=0)
    dtype: str | None = None
    extra_args: list[str] = Field(default_factory=list)
    service_account: str | None = None
    deployment_mode: DeploymentMode = "Standard"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    #: The pipeline run deploying it; stamped on what it creates, so that run's rollback step
    #: (:meth:`~modelgate.deploy.target.DeployTarget.rollback_run`) finds exactly that.
    run_id: str | None = None
    #: Share of requests the candidate gets while it is gated beside production (0: a dark
    #: launch, reached only through the candidate's own address).
    canary_traffic_percent: int = Field(default=0, ge=0, le=100)

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        if not _DNS1035.match(v):
            raise ValueError(
                f"{v!r} is not a valid InferenceService name: use lowercase letters, digits and "
                "'-', starting with a letter (e.g. 'tiny-llama-fp8')"
            )
        return v


def vllm_args(spec: DeploySpec, *, model_path: str = "/mnt/models", port: int = 8080) -> list[str]:
    """The vLLM OpenAI server arguments both targets pass for ``spec``.

    With more than one GPU per replica the model is split over all of them
    (``--tensor-parallel-size``); otherwise vLLM would use one GPU and leave the rest idle.

    Args:
        spec: The deployment.
        model_path: Where the model files are (KServe mounts storageUri at /mnt/models).
        port: Port the server listens on.

    Returns:
        Arguments for ``python -m vllm.entrypoints.openai.api_server``.
    """
    args = [f"--model={model_path}", f"--port={port}", f"--served-model-name={spec.name}"]
    if spec.placement.accelerator_count > 1:
        args.append(f"--tensor-parallel-size={spec.placement.tensor_parallel_size}")
    if spec.max_model_len:
        args.append(f"--max-model-len={spec.max_model_len}")
    if spec.dtype:
        args.append(f"--dtype={spec.dtype}")
    return args + list(spec.extra_args)
