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
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelgate.constants import (
    HF_TOKEN_SECRET,
    MODEL_STORE_SECRET,
    PREDICTOR_SERVICE_ACCOUNT,
    RUNTIME_NAME,
    SMOKE_PROMPT,
)
from modelgate.errors import ConfigError
from modelgate.placement import Placement, Toleration
from modelgate.signing import SIGNING_KEY_SECRET, VERIFY_KEY_SECRET
from modelgate.validation import validated

DEFAULT_THRESHOLDS = (
    '{"thresholds": [{"task": "arc_easy", "metric": "acc", "min": 0.5, "min_recovery": 0.95}]}'
)
#: A redeploy has no base model to recover from: it is held to a floor and to production.
DEFAULT_REDEPLOY_THRESHOLDS = (
    '{"thresholds": [{"task": "arc_easy", "metric": "acc", "min": 0.5, '
    '"min_vs_production": 0.98, "tolerance_stderr": 1}]}'
)
_PLACEMENT = Placement()


#: The option panels of the CLI, in the order ``--help`` shows them.
GROUPS: tuple[str, ...] = (
    "model",
    "quantize",
    "evaluate",
    "gate",
    "registry",
    "serving",
    "cluster",
)

#: Choices of parameters that take one of a fixed set, with the word used in error messages.
#: The sets are the library's own (one declaration each); ``""`` means "let the tool choose".
CHOICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "quant_scheme": (
        "quant scheme",
        ("none", "FP8_DYNAMIC", "FP8_BLOCK", "W8A8", "W4A16", "AWQ", "NVFP4A16", "NVFP4"),
    ),
    "eval_backend": ("eval backend", ("vllm", "hf")),
    "eval_device": ("eval device", ("", "cpu", "cuda")),
    "deploy_target": ("deploy target", ("kserve", "llmisvc", "local")),
    "deployment_mode": ("deployment mode", ("Standard", "RawDeployment", "Knative")),
}


def _p(default: Any = None, *, group: str, help: str, factory: Any = None, **kw: Any) -> Any:
    """A parameter: its default, its CLI panel and its one-line help (``--help``, docs)."""
    extra: dict[str, Any] = {"group": group}
    if factory is not None:
        return Field(default_factory=factory, description=help, json_schema_extra=extra, **kw)
    return Field(default=default, description=help, json_schema_extra=extra, **kw)


class _RunParams(BaseModel):
    """What the release and redeploy pipelines share: evaluation, gate, registry, serving."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    eval_tasks: str = _p("arc_easy", group="evaluate", help="Comma-separated lm-eval tasks.")
    eval_task_dir: str = _p(
        "", group="evaluate", help="Folder (or stored folder URI) of local lm-eval task YAMLs."
    )
    eval_backend: str = _p("vllm", group="evaluate", help="lm-eval backend: vllm (GPU) or hf.")
    eval_limit: int = _p(0, ge=0, group="evaluate", help="Examples per task; 0 = all.")
    eval_num_fewshot: int = _p(
        -1, ge=-1, group="evaluate", help="Few-shot examples; -1 = task default."
    )
    eval_batch_size: int = _p(8, ge=1, group="evaluate", help="lm-eval batch size.")
    eval_device: str = _p("", group="evaluate", help="cpu or cuda; empty lets lm-eval choose.")
    eval_max_length: int = _p(
        0, ge=0, group="evaluate", help="Context length cap for evaluation; 0 = model default."
    )
    eval_offline: bool = _p(
        False, group="evaluate", help="Never contact the Hub for datasets (local or cached only)."
    )
    thresholds: str = _p(
        DEFAULT_THRESHOLDS,
        group="gate",
        help="Gate config: JSON/YAML text or a .json/.yaml file (docs/gates.md).",
    )
    registry_url: str = _p(
        "",
        group="registry",
        help="Model registry URL: Kubeflow Model Registry http(s)://, or mlflow+… "
        "(default $MODEL_REGISTRY_URL; local runs: an embedded MLflow registry).",
    )
    registered_model_name: str = _p(
        "", group="registry", help="Registered model name without '/' (default: from the Hub id)."
    )
    deploy_target: str = _p(
        "kserve",
        group="serving",
        help="kserve (InferenceService), llmisvc (LLMInferenceService) or local (vLLM process).",
    )
    deploy_name: str = _p(
        "",
        group="serving",
        help="InferenceService / served model name (default: one per registered model).",
    )
    canary_traffic_percent: int = _p(
        0,
        ge=0,
        le=100,
        group="serving",
        help="Share of production traffic the candidate gets while it is gated beside "
        "production (KServe Standard mode); 0 = dark launch, only the gates reach it.",
    )
    endpoint_eval_tasks: str = _p(
        "",
        group="evaluate",
        help="lm-eval tasks run against the live endpoint after deploy (gate config "
        "'endpoint' thresholds); empty = off.",
    )
    namespace: str = _p(
        "", group="serving", help="Namespace of the InferenceService (default: the run's)."
    )
    storage_uri: str = _p(
        "", group="serving", help="storageUri override for KServe (s3://, pvc://, oci://, hf://)."
    )
    prefer_registry_uri: bool = _p(
        False,
        group="serving",
        help="Serve model-registry://<model>/<version> instead of the stored URI.",
    )
    modelcar_repository: str = _p(
        "",
        group="serving",
        help="OCI repository (registry/path) to push a KServe modelcar of the gated model to; "
        "deploy then serves oci://<repository>@sha256:…; empty = off.",
    )
    modelcar_secret: str = _p(
        "modelgate-modelcar-auth",
        group="cluster",
        help="Secret (kubernetes.io/dockerconfigjson) with the modelcar registry's "
        "credentials, mounted for the package step (optional).",
    )
    serving_runtime: str = _p(RUNTIME_NAME, group="serving", help="KServe ServingRuntime name.")
    serving_service_account: str = _p(
        PREDICTOR_SERVICE_ACCOUNT,
        group="cluster",
        help="Predictor service account holding the store's secret.",
    )
    deployment_mode: str = _p(
        "Standard",
        group="serving",
        help="Standard (KServe >= 0.16), RawDeployment (older) or Knative.",
    )
    max_model_len: int = _p(
        0, ge=0, group="serving", help="vLLM --max-model-len; 0 = model default."
    )
    accelerator_type: str = _p(
        _PLACEMENT.accelerator_type, group="cluster", help="GPU resource name."
    )
    accelerator_count: str = _p(
        str(_PLACEMENT.accelerator_count),
        group="cluster",
        help="GPUs per GPU step and serving replica (a string, '0' for CPU).",
    )
    tolerations: list[dict[str, Any]] = _p(
        factory=_PLACEMENT.toleration_dicts,
        group="cluster",
        help="Tolerations of GPU steps and the predictor: a JSON/YAML list.",
    )
    node_selector: dict[str, str] = _p(
        factory=lambda: dict(_PLACEMENT.node_selector),
        group="cluster",
        help="Node labels of GPU steps and the predictor: a JSON/YAML mapping.",
    )
    hf_token_secret: str = _p(
        HF_TOKEN_SECRET,
        group="cluster",
        help="Secret with key 'token' mounted as HF_TOKEN in the cluster.",
    )
    model_store_secret: str = _p(
        MODEL_STORE_SECRET,
        group="cluster",
        help="Secret with the model store's AWS_* keys in the cluster.",
    )
    signing_key_secret: str = _p(
        SIGNING_KEY_SECRET,
        group="cluster",
        help="Secret with key 'private-key' (PEM EC key; optional 'certificate', "
        "'certificate-chain') that signs stored models (optional: absent = unsigned).",
    )
    verify_key_secret: str = _p(
        VERIFY_KEY_SECRET,
        group="cluster",
        help="Secret with key 'public-key' (or 'certificate-chain') that stored models must "
        "verify against before evaluation and deploy (optional: absent = no check).",
    )
    hf_endpoint: str = _p(
        "", group="model", help="Hub mirror URL (default $HF_ENDPOINT or the public Hub)."
    )
    vllm_python: str = _p(
        "",
        group="serving",
        help="For local deploys and evaluation: the python of an environment with vLLM.",
    )
    smoke_prompt: str = _p(
        SMOKE_PROMPT, group="serving", help="Prompt of the post-deploy smoke test."
    )

    @field_validator(*CHOICES, mode="after", check_fields=False)
    @classmethod
    def _choice(cls, value: str, info: Any) -> str:
        what, choices = CHOICES[info.field_name]
        if value in choices:
            return value
        close = difflib.get_close_matches(value, choices, n=1) or [
            c for c in choices if c and c.lower() == value.lower()
        ]
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {what} {value!r}.{hint} Choose one of {list(choices)}")

    @field_validator("modelcar_repository", check_fields=False)
    @classmethod
    def _modelcar_repository(cls, value: str) -> str:
        from modelgate.modelcar import check_repository

        return check_repository(value) if value else value

    @model_validator(mode="after")
    def _modelcar_target(self) -> Any:
        if getattr(self, "modelcar_repository", "") and self.deploy_target == "local":
            raise ValueError(
                "modelcar_repository needs a cluster deploy target (kserve): the local target "
                "serves s3:// or file:// URIs, not oci://; leave modelcar_repository empty"
            )
        return self

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

    model_id: str = _p("", group="model", help="Hub repository id, e.g. org/model.")
    model_store: str = _p(
        "",
        group="model",
        help="Where models are written: s3://bucket/prefix (keys and endpoint from "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL) or file:///path.",
    )
    revision: str = _p(
        "main", group="model", help="Branch, tag or commit; recorded as the resolved commit sha."
    )
    allow_pickle: bool = _p(
        False, group="model", help="Accept repositories whose weights are only pickle files."
    )
    allow_remote_code: bool = _p(
        False,
        group="model",
        help="Accept repositories whose config declares custom code (never run).",
    )
    quant_scheme: str = _p(
        "FP8_DYNAMIC",
        group="quantize",
        help="Quantization scheme: calibration, GPUs and default recovery in docs/gates.md.",
    )
    calibration_data: str = _p(
        "",
        group="quantize",
        help="JSONL file, stored URI or dataset id (W8A8, W4A16, AWQ, NVFP4).",
    )


class RedeployParams(_RunParams):
    """Run parameters of the redeploy pipeline: re-evaluate a registered version, gate it
    against absolute bounds and the version in production, and serve it if it passes."""

    registered_model_name: str = _p(
        "", group="registry", help="Registered model name to redeploy (required)."
    )
    model_version: str = _p(
        "",
        group="registry",
        help="Registered version to redeploy (empty: the newest not rejected).",
    )
    thresholds: str = _p(
        DEFAULT_REDEPLOY_THRESHOLDS,
        group="gate",
        help="Gate config: JSON/YAML text or a .json/.yaml file (docs/gates.md).",
    )


PIPELINE_PARAMS: dict[str, type[_RunParams]] = {
    "release": ReleaseParams,
    "redeploy": RedeployParams,
}


PARAM_NAMES: tuple[str, ...] = tuple(ReleaseParams.model_fields)
#: Every parameter of every pipeline, in a stable order (the CLI's options).
ALL_PARAM_NAMES: tuple[str, ...] = tuple(
    dict.fromkeys(n for model in PIPELINE_PARAMS.values() for n in model.model_fields)
)


def _field(name: str) -> Any:
    return next(m.model_fields[name] for m in PIPELINE_PARAMS.values() if name in m.model_fields)


#: One line per parameter, for ``--help`` and docs/parameters.md (the field descriptions).
PARAM_HELP: dict[str, str] = {n: str(_field(n).description) for n in ALL_PARAM_NAMES}
#: The CLI panel of each parameter (one of :data:`GROUPS`).
PARAM_GROUPS: dict[str, str] = {n: _field(n).json_schema_extra["group"] for n in ALL_PARAM_NAMES}


def pipelines_of(name: str) -> tuple[str, ...]:
    """The pipelines that take parameter ``name``."""
    return tuple(p for p, m in PIPELINE_PARAMS.items() if name in m.model_fields)


def param_default(name: str, model: type[_RunParams] = ReleaseParams) -> Any:
    """The default of parameter ``name`` (for the ``@dsl.pipeline`` signatures)."""
    field = model.model_fields[name]
    return field.get_default(call_default_factory=True)


def _elsewhere(model: type[_RunParams]) -> dict[str, str]:
    """Keys of the other pipelines, named as such in errors instead of a near miss."""
    own = next(p for p, m in PIPELINE_PARAMS.items() if m is model)
    return {
        n: f"is a parameter of the {'/'.join(pipelines_of(n))} pipeline, not of {own}"
        for n in ALL_PARAM_NAMES
        if n not in model.model_fields
    }


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
    validated(model, data, what="params", source=f"params file {file}", elsewhere=_elsewhere(model))
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
    params = validated(
        model, data, what="params", source="run parameters", elsewhere=_elsewhere(model)
    )
    if isinstance(params, ReleaseParams):
        params = with_recovery_defaults(params, default_gate="thresholds" not in data)
    return params


def with_recovery_defaults(params: ReleaseParams, *, default_gate: bool) -> ReleaseParams:
    """``params`` with each ``min_recovery: default`` of its gate set to the bound of its
    scheme (:func:`modelgate.quantize.default_recovery`), and with ``default_gate`` (no gate
    config was given) the default gate's bound too.

    Raises:
        ConfigError: ``default`` where a scheme's bound does not apply (the endpoint section).
    """
    from modelgate.quantize import RECOVERY_DEFAULT, apply_recovery_defaults

    text = params.thresholds
    if default_gate and text == DEFAULT_THRESHOLDS:
        gate = json.loads(text)
        for t in gate["thresholds"]:
            if "min_recovery" in t:
                t["min_recovery"] = RECOVERY_DEFAULT
        text = json.dumps(gate)
    text = apply_recovery_defaults(text, scheme=params.quant_scheme)
    return params if text == params.thresholds else params.model_copy(update={"thresholds": text})
