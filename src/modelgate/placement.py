"""Where each step runs: GPUs, tolerations, node selector and per-step resource requests.

:class:`Placement` is the one declaration of these knobs. The release pipeline takes the GPU
type and count, tolerations and node selector as run parameters and the per-step requests from
a :class:`Placement` at compile time; the deploy spec carries one for the predictor; the CLI
builds one from its flags; the tests check all of them against this model.

Defaults are sized for an 8B-parameter model in bf16 (about 16 GB of weights): the work volume
of download, quantize and evaluate holds the model once or twice plus caches, and quantize keeps
the whole model in host memory while llm-compressor calibrates it layer by layer.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelgate.errors import ConfigError
from modelgate.validation import validated

#: Kubernetes resource quantities (``k8s.io/apimachinery`` ``ParseQuantity``'s grammar).
QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
#: Extended resource names such as ``nvidia.com/gpu`` or ``amd.com/gpu``.
RESOURCE_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")

Step = Literal[
    "download",
    "quantize",
    "evaluate",
    "register",
    "gate",
    "deploy",
    "smoke_test",
    "serving_gate",
    "serve",
]
#: Steps that hold the model on disk and get a work volume.
HEAVY_STEPS: tuple[Step, ...] = ("download", "quantize", "evaluate")
#: Steps that run on GPU nodes (accelerators, tolerations, node selector).
GPU_STEPS: tuple[Step, ...] = ("quantize", "evaluate", "serve")


def _quantity(value: str, *, what: str) -> str:
    if not QUANTITY.match(value):
        raise ValueError(
            f"{what} {value!r} is not a Kubernetes quantity (e.g. '4', '500m', '16Gi')"
        )
    return value


class Toleration(BaseModel):
    """A Kubernetes toleration (core/v1 ``Toleration``), camelCase as in the API."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = None
    operator: Literal["Equal", "Exists"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = None  # noqa: N815 - Kubernetes field name


class StepResources(BaseModel):
    """Requests and limits of one step's container, and the size of its work volume.

    ``work_volume`` (only for download, quantize and evaluate) is a generic ephemeral volume
    mounted at :data:`WORK_DIR`: a PVC made for the pod and deleted with it, so a multi-GB model
    never lands on the node's root disk and the scheduler knows the space is needed.
    """

    model_config = ConfigDict(extra="forbid")

    cpu: str
    memory: str
    cpu_limit: str | None = None
    memory_limit: str | None = None
    work_volume: str | None = None

    @field_validator("cpu", "memory", "cpu_limit", "memory_limit", "work_volume")
    @classmethod
    def _is_quantity(cls, value: str | None) -> str | None:
        return None if value is None else _quantity(value, what="resource")


#: Mount path of the work volume in heavy steps (``$MODELGATE_WORK_DIR`` inside the pod).
WORK_DIR = "/mnt/work"
WORK_DIR_ENV = "MODELGATE_WORK_DIR"

_LIGHT = StepResources(cpu="250m", memory="512Mi", cpu_limit="1", memory_limit="2Gi")


def default_steps() -> dict[Step, StepResources]:
    """Per-step resources for an 8B model (see module docstring)."""
    return {
        "download": StepResources(
            cpu="2", memory="4Gi", cpu_limit="4", memory_limit="8Gi", work_volume="64Gi"
        ),
        "quantize": StepResources(
            cpu="8", memory="64Gi", cpu_limit="16", memory_limit="96Gi", work_volume="96Gi"
        ),
        "evaluate": StepResources(
            cpu="8", memory="48Gi", cpu_limit="16", memory_limit="64Gi", work_volume="64Gi"
        ),
        "register": _LIGHT,
        "gate": _LIGHT,
        "deploy": _LIGHT,
        "smoke_test": _LIGHT,
        # GuideLLM's load generator and tokenizer, lm-eval's local-completions client
        "serving_gate": StepResources(cpu="2", memory="4Gi", cpu_limit="4", memory_limit="8Gi"),
        "serve": StepResources(cpu="4", memory="24Gi", cpu_limit="8", memory_limit="32Gi"),
    }


class Placement(BaseModel):
    """GPUs, scheduling constraints and resources of every step.

    Attributes:
        accelerator_type: Extended resource name of the GPU, e.g. ``nvidia.com/gpu``.
        accelerator_count: GPUs per GPU step and per serving replica (0: CPU only). vLLM runs
            with ``--tensor-parallel-size`` equal to this when it is above 1.
        tolerations: Tolerations of the GPU steps and the predictor.
        node_selector: Node labels the GPU steps and the predictor must match.
        steps: Requests/limits (and work volume size) per step.
        work_storage_class: StorageClass of the work volumes (None: the cluster default).
    """

    model_config = ConfigDict(extra="forbid")

    accelerator_type: str = "nvidia.com/gpu"
    accelerator_count: int = Field(default=1, ge=0, le=64)
    tolerations: list[Toleration] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    steps: dict[Step, StepResources] = Field(default_factory=default_steps)
    work_storage_class: str | None = None

    @field_validator("accelerator_type")
    @classmethod
    def _resource_name(cls, value: str) -> str:
        if not RESOURCE_NAME.match(value):
            raise ValueError(
                f"accelerator_type {value!r} is not a resource name such as 'nvidia.com/gpu'"
            )
        return value

    @field_validator("accelerator_count", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        # KFP passes the count as a string (the driver reads it with GetStringValue()).
        if isinstance(value, str):
            text = value.strip()
            if not text.isdigit():
                raise ValueError(
                    f"accelerator_count must be a whole number of GPUs such as '1', got {value!r}"
                )
            return int(text)
        return value

    @field_validator("steps", mode="before")
    @classmethod
    def _merge_steps(cls, value: Any) -> Any:
        # a partial mapping overrides the defaults of the steps it names only
        if isinstance(value, dict):
            merged: dict[str, Any] = {k: v.model_dump() for k, v in default_steps().items()}
            for step, resources in value.items():
                given = resources.model_dump() if isinstance(resources, BaseModel) else resources
                merged[step] = {**merged.get(step, {}), **dict(given)}
            return merged
        return value

    def resources(self, step: Step) -> StepResources:
        """The resources of ``step``."""
        return self.steps[step]

    @property
    def tensor_parallel_size(self) -> int:
        """vLLM tensor parallelism: the GPUs of one replica (1 without GPUs)."""
        return max(self.accelerator_count, 1)

    def toleration_dicts(self) -> list[dict[str, Any]]:
        """Tolerations as Kubernetes API dicts (no nulls)."""
        return [t.model_dump(exclude_none=True) for t in self.tolerations]


def parse_structured(
    value: str | list[Any] | dict[str, Any] | None, *, option: str, expected: type
) -> Any:
    """A list/dict option given as a value or as JSON/YAML text (CLI flags, files).

    Raises:
        ConfigError: Not JSON/YAML of the ``expected`` type; the message shows an example.
    """
    import yaml

    if value is None or (isinstance(value, str) and not value.strip()):
        return expected()
    data = value
    if isinstance(value, str):
        try:
            data = yaml.safe_load(value)  # JSON is YAML
        except yaml.YAMLError as e:
            raise ConfigError(f"{option} must be a {expected.__name__} in JSON/YAML: {e}") from e
    if not isinstance(data, expected):
        example = '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]'
        if expected is dict:
            example = '{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}'
        raise ConfigError(
            f"{option} must be a {'list' if expected is list else 'mapping'}, got "
            f"{type(data).__name__} {json.dumps(data) if not isinstance(data, str) else data!r}; "
            f"example: {example}"
        )
    return data


def placement_from_options(
    *,
    accelerator_type: str = "nvidia.com/gpu",
    accelerator_count: int | str = 1,
    tolerations: str | list[Any] | None = None,
    node_selector: str | dict[str, Any] | None = None,
    steps: dict[str, Any] | None = None,
    base: Placement | None = None,
) -> Placement:
    """A :class:`Placement` from scalar options (pipeline parameters, CLI flags).

    ``steps`` overrides the resources of the steps it names (partial mappings allowed).

    Raises:
        ConfigError: A value is malformed; the message names the option and the fix.
    """
    data = (base or Placement()).model_dump()
    data.update(
        accelerator_type=accelerator_type,
        accelerator_count=accelerator_count,
        tolerations=parse_structured(tolerations, option="tolerations", expected=list),
        node_selector=parse_structured(node_selector, option="node_selector", expected=dict),
    )
    for step, resources in (steps or {}).items():
        data["steps"][step] = {**data["steps"].get(step, {}), **resources}
    return validated(Placement, data, what="placement")
