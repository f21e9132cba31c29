"""The release pipeline's run parameters, declared once, and params files.

:class:`ReleaseParams` is the one declaration of the release pipeline's parameters: the
``@dsl.pipeline`` signature takes its defaults from here (a compile test checks the two agree
name for name), and ``modelgate run|submit|schedule --params release.yaml`` validates a file
against it. Keys are the pipeline's parameter names (the CLI options with ``_``); structured
values (``thresholds``, ``tolerations``, ``node_selector``) may be written as YAML structures.

Precedence: pipeline defaults < the params file < options given on the command line.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelgate.errors import ConfigError
from modelgate.placement import Placement, Toleration

DEFAULT_THRESHOLDS = (
    '{"thresholds": [{"task": "arc_easy", "metric": "acc", "min": 0.5, "min_recovery": 0.95}]}'
)
#: A redeploy has no base model to recover from: it is held to a floor and to production.
DEFAULT_REDEPLOY_THRESHOLDS = (
    '{"thresholds": [{"task": "arc_easy", "metric": "acc", "min": 0.5, '
    '"min_vs_production": 0.98, "tolerance_stderr": 1}]}'
)
_PLACEMENT = Placement()


class _RunParams(BaseModel):
    """What the release and redeploy pipelines share: evaluation, gate, registry, serving."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    eval_tasks: str = "arc_easy"
    eval_task_dir: str = ""
    eval_backend: str = "vllm"
    eval_limit: int = Field(default=0, ge=0)
    eval_num_fewshot: int = Field(default=-1, ge=-1)
    eval_batch_size: int = Field(default=8, ge=1)
    eval_device: str = ""
    eval_max_length: int = Field(default=0, ge=0)
    eval_offline: bool = False
    thresholds: str = DEFAULT_THRESHOLDS
    registry_url: str = ""
    registered_model_name: str = ""
    deploy_target: str = "kserve"
    deploy_name: str = "modelgate-candidate"
    namespace: str = ""
    storage_uri: str = ""
    prefer_registry_uri: bool = False
    serving_runtime: str = "vllm-runtime"
    serving_service_account: str = "modelgate-model-reader"
    deployment_mode: str = "Standard"
    max_model_len: int = Field(default=0, ge=0)
    accelerator_type: str = _PLACEMENT.accelerator_type
    accelerator_count: str = str(_PLACEMENT.accelerator_count)
    tolerations: list[dict[str, Any]] = Field(default_factory=_PLACEMENT.toleration_dicts)
    node_selector: dict[str, str] = Field(default_factory=lambda: dict(_PLACEMENT.node_selector))
    hf_token_secret: str = "hf-token"
    model_store_secret: str = "modelgate-model-store"
    hf_endpoint: str = ""
    vllm_python: str = ""
    smoke_prompt: str = "2+3="

    @field_validator("thresholds", mode="before")
    @classmethod
    def _thresholds_text(cls, value: Any) -> Any:
        # a YAML structure in a params file becomes the JSON text the pipeline takes
        return json.dumps(value) if isinstance(value, dict | list) else value

    @field_validator("accelerator_count", mode="before")
    @classmethod
    def _count_text(cls, value: Any) -> Any:
        # the KFP driver reads the GPU count as a string (see modelgate.placement)
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("tolerations")
    @classmethod
    def _tolerations(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [Toleration.model_validate(t).model_dump(exclude_none=True) for t in value]

    def arguments(self) -> dict[str, Any]:
        """The pipeline arguments: every parameter with its JSON type."""
        return self.model_dump(mode="json")


class ReleaseParams(_RunParams):
    """Run parameters of the release pipeline (see its docstring for each one's meaning)."""

    model_id: str = ""
    model_store: str = ""
    revision: str = "main"
    allow_pickle: bool = False
    allow_remote_code: bool = False
    quant_scheme: str = "FP8_DYNAMIC"
    calibration_data: str = ""


class RedeployParams(_RunParams):
    """Run parameters of the redeploy pipeline: re-evaluate a registered version, gate it
    against absolute bounds and the version in production, and serve it if it passes."""

    registered_model_name: str = ""
    model_version: str = ""
    thresholds: str = DEFAULT_REDEPLOY_THRESHOLDS


PIPELINE_PARAMS: dict[str, type[_RunParams]] = {
    "release": ReleaseParams,
    "redeploy": RedeployParams,
}


PARAM_NAMES: tuple[str, ...] = tuple(ReleaseParams.model_fields)
#: Every parameter of every pipeline, in a stable order (the CLI's options).
ALL_PARAM_NAMES: tuple[str, ...] = tuple(
    dict.fromkeys(n for model in PIPELINE_PARAMS.values() for n in model.model_fields)
)

#: One line per parameter, for ``--help`` (the pipeline's docstring says the same at length).
PARAM_HELP: dict[str, str] = {
    "model_id": "Hub repository id, e.g. org/model.",
    "model_store": "Where models are written: s3://bucket/prefix (keys and endpoint from "
    "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL) or file:///path.",
    "revision": "Branch, tag or commit; recorded as the resolved commit sha.",
    "allow_pickle": "Accept repositories whose weights are only pickle files.",
    "allow_remote_code": "Accept repositories whose config declares custom code (never run).",
    "quant_scheme": "none, FP8_DYNAMIC, W8A8 or W4A16.",
    "calibration_data": "JSONL file, stored URI or dataset id (W8A8/W4A16).",
    "eval_tasks": "Comma-separated lm-eval tasks.",
    "eval_task_dir": "Folder (or stored folder URI) of local lm-eval task YAMLs.",
    "eval_backend": "lm-eval backend: vllm (GPU) or hf.",
    "eval_limit": "Examples per task; 0 = all.",
    "eval_num_fewshot": "Few-shot examples; -1 = task default.",
    "eval_batch_size": "lm-eval batch size.",
    "eval_device": "cpu or cuda; empty lets lm-eval choose.",
    "eval_max_length": "Context length cap for evaluation; 0 = model default.",
    "eval_offline": "Never contact the Hub for datasets (local or cached only).",
    "thresholds": "Gate config: JSON/YAML text or a .json/.yaml file.",
    "registry_url": "Kubeflow Model Registry URL (default $MODEL_REGISTRY_URL).",
    "registered_model_name": "Registered model name without '/' (default: from the Hub id).",
    "deploy_target": "kserve or local.",
    "deploy_name": "InferenceService / served model name.",
    "namespace": "Namespace of the InferenceService (default: the run's).",
    "storage_uri": "storageUri override for KServe (s3://, pvc://, oci://, hf://).",
    "prefer_registry_uri": "Serve model-registry://<model>/<version> instead of the stored URI.",
    "serving_runtime": "KServe ServingRuntime name.",
    "serving_service_account": "Predictor service account holding the store's secret.",
    "deployment_mode": "Standard (KServe >= 0.16), RawDeployment (older) or Knative.",
    "max_model_len": "vLLM --max-model-len; 0 = model default.",
    "accelerator_type": "GPU resource name, e.g. nvidia.com/gpu.",
    "accelerator_count": "GPUs per GPU step and serving replica (a string, '0' for CPU).",
    "tolerations": "Tolerations of GPU steps and the predictor: a JSON/YAML list.",
    "node_selector": "Node labels of GPU steps and the predictor: a JSON/YAML mapping.",
    "hf_token_secret": "Secret with key 'token' mounted as HF_TOKEN in the cluster.",
    "model_store_secret": "Secret with the model store's AWS_* keys in the cluster.",
    "hf_endpoint": "Hub mirror URL (default $HF_ENDPOINT or the public hub).",
    "vllm_python": "For local deploys: the python of an environment with vLLM.",
    "smoke_prompt": "Prompt of the post-deploy smoke test.",
    "model_version": "Registered version to redeploy (empty: the newest not rejected).",
}


def param_default(name: str, model: type[_RunParams] = ReleaseParams) -> Any:
    """The default of parameter ``name`` (for the ``@dsl.pipeline`` signatures)."""
    field = model.model_fields[name]
    return field.get_default(call_default_factory=True)


def _describe_errors(e: ValidationError, *, source: str, names: tuple[str, ...]) -> str:
    problems = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][0]), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown key {key!r}{hint}")
        else:
            problems.append(f"{key}: {err['msg']}")
    return f"{source}: " + "; ".join(problems)


def load_params_file(
    path: str | os.PathLike[str], model: type[_RunParams] = ReleaseParams
) -> dict[str, Any]:
    """The mapping in a params file (YAML or JSON), keys checked against ``model``.

    Raises:
        ConfigError: Missing file, not a mapping, an unknown key (with the closest name) or a
            value of the wrong type.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"params file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"params file {file} is not YAML/JSON: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"params file {file} must be a mapping of parameter names to values, "
            f"got {type(data).__name__}"
        )
    try:
        model.model_validate(data)
    except ValidationError as e:
        names = tuple(model.model_fields)
        raise ConfigError(_describe_errors(e, source=f"params file {file}", names=names)) from e
    return data


def resolve_params(
    *,
    file: str | os.PathLike[str] | None = None,
    base: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    model: type[_RunParams] = ReleaseParams,
) -> Any:
    """Defaults < ``base`` (e.g. local-run defaults) < the params file < ``overrides``.

    Raises:
        ConfigError: The file or a value is invalid; the message names the key.
    """
    data: dict[str, Any] = dict(base or {})
    if file:
        data.update(load_params_file(file, model))
    data.update(overrides or {})
    try:
        return model.model_validate(data)
    except ValidationError as e:
        names = tuple(model.model_fields)
        raise ConfigError(_describe_errors(e, source="run parameters", names=names)) from e
