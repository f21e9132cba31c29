"""What a model needs in memory and of its GPUs, estimated from its ``config.json``.

Preflight uses this to refuse, before anything is downloaded, a release whose model cannot be
quantized or served where the run asks (:func:`check_release_fit`); the quantize step uses it to
choose how llm-compressor loads the model (:func:`load_plan`).

Estimates (bytes):

* weights: parameters (from the config's shapes) x bytes of the config's dtype;
* quantized weights: the Linear layers at the scheme's bits (scales included), the rest as is;
* calibration activations: samples x sequence length x hidden size x dtype bytes x
  :data:`CALIBRATION_FACTOR` (llm-compressor's sequential pipeline keeps each sample's layer
  inputs and outputs, ``llmcompressor/pipelines/cache.py``), offloaded to host memory;
* one decoder layer on the GPU while it is calibrated, plus GPTQ's Hessians (in_features^2 x 4
  per Linear) for the schemes that use GPTQ;
* vLLM's KV cache: ``2 x layers x kv_heads x head_dim x dtype bytes x max_model_len x
  concurrency``, against ``gpu-memory-utilization`` (0.9, vLLM's default) of the GPUs.

GPUs are known by name (:data:`GPUS`): the ``nvidia.com/gpu.product`` node label of the node
selector (GPU feature discovery), else the accelerator resource name (``nvidia.com/h100``...).
An unknown GPU skips the GPU checks and says so.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from modelgate.errors import ConfigError
from modelgate.placement import Placement, StepResources

logger = logging.getLogger(__name__)

GIB = 1024**3
#: config.json is metadata; anything larger is not a model config.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
#: Largest dimension accepted from a config (guards arithmetic on untrusted input).
_MAX_DIM = 10_000_000
DTYPE_BYTES: dict[str, int] = {
    "float32": 4,
    "float": 4,
    "bfloat16": 2,
    "float16": 2,
    "half": 2,
    "float8_e4m3fn": 1,
}
#: Layer inputs and outputs of every calibration sample are cached between layers.
CALIBRATION_FACTOR = 2
#: vLLM's default ``--gpu-memory-utilization``.
GPU_MEMORY_UTILIZATION = 0.9
#: Host memory of the quantize step besides the model: Python, torch, tokenizer, buffers.
HOST_OVERHEAD = 4 * GIB
#: Schemes whose recipe runs GPTQ (Hessians per Linear on the GPU).
GPTQ_SCHEMES = frozenset({"W8A8", "W4A16"})
#: Node label naming the GPU model (NVIDIA GPU feature discovery).
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


@dataclass(frozen=True)
class GPU:
    """A GPU model: CUDA compute capability and memory."""

    name: str
    capability: float
    memory_gib: float

    @property
    def memory_bytes(self) -> int:
        """Memory in bytes."""
        return int(self.memory_gib * GIB)


# (pattern on the product label / resource name, GPU). First match wins: longer names first.
# Capabilities: NVIDIA's CUDA GPU table (developer.nvidia.com/cuda-gpus); memory: the product's.
GPUS: tuple[tuple[str, GPU], ...] = (
    (r"gb300|b300", GPU("B300", 10.3, 288)),
    (r"gb200", GPU("GB200", 10.0, 186)),
    (r"b200", GPU("B200", 10.0, 180)),
    (r"rtx.?pro.?6000", GPU("RTX PRO 6000 Blackwell", 12.0, 96)),
    (r"gh200", GPU("GH200", 9.0, 96)),
    (r"h200", GPU("H200", 9.0, 141)),
    (r"h100.*nvl", GPU("H100 NVL", 9.0, 94)),
    (r"h100|h800", GPU("H100", 9.0, 80)),
    (r"l40", GPU("L40/L40S", 8.9, 48)),
    (r"(^|[^a-z])l4($|[^0-9])", GPU("L4", 8.9, 24)),
    (r"rtx.?4090", GPU("RTX 4090", 8.9, 24)),
    (r"a100.*80|a800.*80", GPU("A100 80GB", 8.0, 80)),
    (r"a100|a800", GPU("A100 40GB", 8.0, 40)),
    (r"a40($|[^0-9])", GPU("A40", 8.6, 48)),
    (r"a30($|[^0-9])", GPU("A30", 8.0, 24)),
    (r"a10", GPU("A10/A10G", 8.6, 24)),
    (r"t4($|[^0-9])", GPU("T4", 7.5, 16)),
    (r"v100.*32", GPU("V100 32GB", 7.0, 32)),
    (r"v100", GPU("V100", 7.0, 16)),
)


def gpu_named(name: str) -> GPU | None:
    """The GPU a product label or resource name names, or None if not known."""
    text = name.lower()
    for pattern, gpu in GPUS:
        if re.search(pattern, text):
            return gpu
    return None


def gpu_of(placement: Placement) -> GPU | None:
    """The GPU the placement asks for: its node selector's product label, else the accelerator
    resource name; None without GPUs or when neither names a known GPU."""
    if placement.accelerator_count == 0:
        return None
    product = placement.node_selector.get(GPU_PRODUCT_LABEL)
    if product:
        return gpu_named(product)
    return gpu_named(placement.accelerator_type.rsplit("/", 1)[-1])


def _int(config: dict[str, Any], *keys: str, default: int | None = None) -> int:
    for key in keys:
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_DIM:
            raise ConfigError(
                f"config.json has {key}={value!r}: expected a whole number from 1 to {_MAX_DIM}"
            )
        return value
    if default is None:
        raise ConfigError(
            f"config.json has no {' or '.join(keys)}: modelgate cannot size this model"
        )
    return default


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer, from its ``config.json``."""

    architecture: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tied_embeddings: bool
    dtype: str
    max_position_embeddings: int
    num_experts: int = 1
    shared_expert_intermediate_size: int = 0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        """Read the shape of a Hugging Face ``config.json`` (a multimodal model's
        ``text_config``).

        Raises:
            ConfigError: A size is missing or not a positive whole number.
        """
        if not isinstance(config, dict):
            raise ConfigError("config.json is not a JSON object")
        arch = config.get("architectures")
        architecture = str(arch[0]) if isinstance(arch, list) and arch else "unknown"
        text = config.get("text_config")
        cfg = text if isinstance(text, dict) and "hidden_size" in text else config
        hidden = _int(cfg, "hidden_size", "n_embd", "d_model")
        heads = _int(cfg, "num_attention_heads", "n_head")
        dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or config.get("torch_dtype") or "")
        experts = _int(cfg, "num_local_experts", "num_experts", "n_routed_experts", default=1)
        dense = _int(cfg, "intermediate_size", "ffn_dim", "n_inner", default=4 * hidden)
        return cls(
            architecture=architecture,
            hidden_size=hidden,
            num_layers=_int(cfg, "num_hidden_layers", "n_layer", "num_layers"),
            num_heads=heads,
            num_kv_heads=_int(cfg, "num_key_value_heads", default=heads),
            head_dim=_int(cfg, "head_dim", default=max(hidden // heads, 1)),
            intermediate_size=(
                _int(cfg, "moe_intermediate_size", default=dense) if experts > 1 else dense
            ),
            vocab_size=_int(cfg, "vocab_size"),
            tied_embeddings=bool(
                cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", False))
            ),
            dtype=dtype if dtype in DTYPE_BYTES else "bfloat16",
            max_position_embeddings=_int(
                cfg, "max_position_embeddings", "n_positions", default=2048
            ),
            num_experts=experts,
            shared_expert_intermediate_size=_int(cfg, "shared_expert_intermediate_size", default=0),
        )

    @property
    def dtype_bytes(self) -> int:
        """Bytes per weight of the checkpoint's dtype."""
        return DTYPE_BYTES[self.dtype]

    def layer_linears(self) -> list[tuple[str, int, int]]:
        """``(name, in_features, out_features)`` of one decoder layer's Linear layers (an MoE
        layer's experts once each)."""
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        h, i = self.hidden_size, self.intermediate_size
        linears = [
            ("q_proj", h, q),
            ("k_proj", h, kv),
            ("v_proj", h, kv),
            ("o_proj", q, h),
        ]
        mlp = [("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)]
        linears += mlp * self.num_experts
        if self.shared_expert_intermediate_size:
            s = self.shared_expert_intermediate_size
            linears += [("shared_gate_proj", h, s), ("shared_up_proj", h, s)]
            linears += [("shared_down_proj", s, h)]
        return linears

    @property
    def layer_linear_parameters(self) -> int:
        """Weights of one decoder layer's Linear layers."""
        return sum(n_in * n_out for _, n_in, n_out in self.layer_linears())

    @property
    def other_parameters(self) -> int:
        """Weights outside the decoder layers' Linears: embeddings, lm_head, norms, routers."""
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)
        router = self.hidden_size * self.num_experts if self.num_experts > 1 else 0
        per_layer = 2 * self.hidden_size + router
        return embeddings + self.num_layers * per_layer + self.hidden_size

    @property
    def parameters(self) -> int:
        """All weights (biases are left out: a fraction of a percent)."""
        return self.num_layers * self.layer_linear_parameters + self.other_parameters

    def kv_cache_bytes(self, *, tokens: int, concurrency: int = 1) -> int:
        """vLLM's KV cache for ``concurrency`` sequences of ``tokens`` in the model's dtype."""
        per_token = 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes
        return per_token * tokens * concurrency


@dataclass(frozen=True)
class MemoryEstimate:
    """What one release of a model needs (bytes); see the module docstring."""

    parameters: int
    weights_bytes: int
    quantized_bytes: int
    calibration_bytes: int
    layer_bytes: int
    kv_cache_bytes: int
    max_model_len: int

    @property
    def quantize_host_bytes(self) -> int:
        """Host memory of the quantize step: the model, the cached activations, overhead."""
        return self.weights_bytes + self.calibration_bytes + HOST_OVERHEAD

    @property
    def serve_bytes(self) -> int:
        """GPU memory vLLM needs for the quantized model at ``max_model_len``."""
        return self.quantized_bytes + self.kv_cache_bytes

    @property
    def base_serve_bytes(self) -> int:
        """GPU memory vLLM needs for the unquantized model (the base model's evaluation)."""
        return self.weights_bytes + self.kv_cache_bytes


def estimate(
    shape: ModelShape,
    *,
    scheme: str,
    calibration_samples: int = 64,
    max_seq_length: int = 256,
    max_model_len: int = 0,
    concurrency: int = 1,
) -> MemoryEstimate:
    """The memory a release of ``shape`` with ``scheme`` needs.

    Args:
        shape: The model's sizes.
        scheme: Quantization scheme (``none`` keeps the weights as they are).
        calibration_samples: Calibration samples (schemes that calibrate).
        max_seq_length: Tokens per calibration sample.
        max_model_len: vLLM's ``--max-model-len``; 0 = the model's ``max_position_embeddings``.
        concurrency: Sequences of ``max_model_len`` the KV cache must hold at once (vLLM refuses
            to start below 1).

    Raises:
        ConfigError: Unknown scheme.
    """
    from modelgate.quantize import SCHEME_INFO, validate_scheme

    info = SCHEME_INFO[validate_scheme(scheme)]
    b = shape.dtype_bytes
    linear = shape.num_layers * shape.layer_linear_parameters
    quantized = math.ceil(linear * info.weight_bits / 8) if scheme != "none" else linear * b
    calibration = 0
    if info.calibration:
        calibration = calibration_samples * max_seq_length * shape.hidden_size * b
        calibration *= CALIBRATION_FACTOR
    layer = shape.layer_linear_parameters * b
    if scheme in GPTQ_SCHEMES:
        layer += sum(4 * n_in * n_in for _, n_in, _ in shape.layer_linears())
    if info.calibration:  # one sample's activations through the layer, in float32
        layer += max_seq_length * max(shape.intermediate_size, shape.hidden_size) * 4 * 4
    tokens = max_model_len or shape.max_position_embeddings
    return MemoryEstimate(
        parameters=shape.parameters,
        weights_bytes=shape.parameters * b,
        quantized_bytes=quantized + shape.other_parameters * b,
        calibration_bytes=calibration,
        layer_bytes=layer,
        kv_cache_bytes=shape.kv_cache_bytes(tokens=tokens, concurrency=concurrency),
        max_model_len=tokens,
    )


def gib(n: float) -> str:
    """``n`` bytes as GiB with one decimal (MiB below 1 GiB)."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 1024**2:.1f} MiB"


def parse_quantity(value: str) -> int:
    """Bytes of a Kubernetes memory quantity (``64Gi``, ``500M``, ``1e9``).

    Raises:
        ConfigError: Not a quantity.
    """
    match = re.fullmatch(r"([0-9.]+(?:[eE][0-9]+)?)([KMGTPE]i?|[kmunp])?", value.strip())
    if not match:
        raise ConfigError(f"{value!r} is not a Kubernetes memory quantity such as '64Gi'")
    number, unit = float(match.group(1)), match.group(2) or ""
    binary = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
    decimal = {"k": 1, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
    if unit in binary:
        return int(number * 1024 ** binary[unit])
    if unit in decimal:
        return int(number * 1000 ** decimal[unit])
    if unit:  # m, u, n, p: fractions of a byte
        return 0
    return int(number)


def _pod_memory(resources: StepResources) -> tuple[int, str]:
    if resources.memory_limit:
        return parse_quantity(resources.memory_limit), "memory_limit"
    return parse_quantity(resources.memory), "memory"


def check_hardware(shape: ModelShape, *, scheme: str, gpu: GPU | None, gpus: int) -> list[str]:
    """What keeps ``scheme`` from running on these GPUs or this model's shapes, one line each
    with the fix (empty when nothing does).

    Shapes: a weight group must divide the input size of every quantized Linear (llm-compressor
    ``modifiers/quantization/group_size_validation.py``) and of its tensor-parallel shard
    (vLLM's Marlin kernels); an FP8 block must divide each shard of the merged q/k/v and
    gate/up projections (vLLM ``quantization/utils/fp8_utils.py::validate_fp8_block_shape``).

    Raises:
        ConfigError: Unknown scheme.
    """
    from modelgate.quantize import SCHEME_INFO, validate_scheme

    info = SCHEME_INFO[validate_scheme(scheme)]
    problems: list[str] = []
    if scheme == "none":
        return problems
    if gpus == 0 and scheme == "AWQ":
        problems.append(
            "AWQ needs a GPU to calibrate (llm-compressor pins its cached activations for the "
            "accelerator): set accelerator_count >= 1 or choose W4A16"
        )
    if gpu is not None and gpu.capability < info.min_capability:
        alternative = "NVFP4A16" if scheme == "NVFP4" else "W8A8 or W4A16"
        problems.append(
            f"{scheme} needs compute capability >= {info.min_capability} in vLLM; {gpu.name} has "
            f"{gpu.capability}: choose {alternative}, or newer GPUs (node_selector "
            f"{GPU_PRODUCT_LABEL})"
        )
    tp = max(gpus, 1)
    q = shape.num_heads * shape.head_dim
    if info.group_size:
        g = info.group_size
        bad = sorted(
            {n_in for _, n_in, _ in shape.layer_linears() if n_in >= g and n_in % g}
            | {
                n_in // tp
                for name, n_in, _ in shape.layer_linears()
                if tp > 1 and name.endswith(("o_proj", "down_proj")) and (n_in // tp) % g
            }
        )
        if bad:
            problems.append(
                f"{scheme} quantizes weights in groups of {g}, which do not divide the input "
                f"size(s) {bad} of this model's layers (at tensor parallel {tp}): choose "
                "FP8_DYNAMIC or W8A8, or another accelerator_count"
            )
    if info.block:
        block_n, block_k = info.block
        kv_shard = max(shape.num_kv_heads // tp, 1) * shape.head_dim
        sizes = {
            "q_proj": q // tp,
            "k_proj": kv_shard,
            "gate_proj": shape.intermediate_size // tp,
        }
        bad_out = {name: n for name, n in sizes.items() if n % block_n}
        bad_in = []
        if tp > 1:
            bad_in = [n for n in (q // tp, shape.intermediate_size // tp) if n % block_k]
        if bad_out or bad_in:
            shards = ", ".join(f"{k} {v}" for k, v in bad_out.items())
            shards += (", " if shards and bad_in else "") + ", ".join(f"input {n}" for n in bad_in)
            problems.append(
                f"{scheme} stores weights in {block_n}x{block_k} blocks, which vLLM needs to "
                f"divide each shard ({shards}) at tensor parallel {tp}: choose FP8_DYNAMIC, "
                "or another accelerator_count"
            )
    return problems


@dataclass(frozen=True)
class FitReport:
    """The estimate of a release and what does not fit (empty ``problems``: all fits)."""

    estimate: MemoryEstimate
    gpu: GPU | None
    problems: list[str]
    notes: list[str]

    def summary(self) -> str:
        """One line: the numbers, and what was left unchecked."""
        e = self.estimate
        parts = [
            (f"{e.parameters / 1e9:.2f}B" if e.parameters >= 1e9 else f"{e.parameters / 1e6:.1f}M")
            + f" params: weights {gib(e.weights_bytes)}",
            f"quantized {gib(e.quantized_bytes)}",
            f"KV cache {gib(e.kv_cache_bytes)} at {e.max_model_len} tokens",
        ]
        if e.calibration_bytes:
            parts.append(f"calibration activations {gib(e.calibration_bytes)}")
        return "; ".join(parts + self.notes)


def check_release_fit(
    shape: ModelShape,
    *,
    scheme: str,
    placement: Placement,
    calibration_samples: int = 64,
    max_seq_length: int = 256,
    max_model_len: int = 0,
    evaluate_with_vllm: bool = True,
    host_memory: int | None = None,
) -> FitReport:
    """Does a release of ``shape`` with ``scheme`` fit in the memory ``placement`` gives its
    steps? (The scheme against the GPUs and shapes: :func:`check_hardware`.)

    Quantize: the model and its cached calibration activations must fit the quantize step's host
    memory (``memory_limit``, else ``memory``; ``host_memory`` instead for a local run), and one
    decoder layer being calibrated must fit one GPU (the rest is onloaded layer by layer).
    Serve (and evaluate with vLLM): the weights and the KV cache of one ``max_model_len``
    sequence must fit ``accelerator_count`` GPUs at vLLM's default memory utilization; the base
    model is evaluated unquantized, so it must fit too.

    Raises:
        ConfigError: Unknown scheme, or a malformed memory quantity.
    """
    from modelgate.quantize import SCHEME_INFO

    e = estimate(
        shape,
        scheme=scheme,
        calibration_samples=calibration_samples,
        max_seq_length=max_seq_length,
        max_model_len=max_model_len,
    )
    gpu = gpu_of(placement)
    gpus = placement.accelerator_count
    problems: list[str] = []
    notes: list[str] = []
    if scheme != "none":
        if host_memory is None:
            host, field = _pod_memory(placement.resources("quantize"))
            where = (
                f"the quantize step's {field} ({gib(host)}): compile the pipeline with a larger "
                f"Placement steps.quantize.{field} (docs/cluster.md)"
            )
        else:
            host = host_memory
            where = f"this machine's memory ({gib(host)}): run it on a cluster"
        if e.quantize_host_bytes > host:
            calib = f" + calibration activations {gib(e.calibration_bytes)}"
            problems.append(
                f"quantizing needs ~{gib(e.quantize_host_bytes)} of host memory (weights "
                f"{gib(e.weights_bytes)}{calib if e.calibration_bytes else ''} + overhead "
                f"{gib(HOST_OVERHEAD)}), more than {where}"
                + (" or lower calibration samples" if e.calibration_bytes else "")
            )
    if gpu is None:
        notes.append(
            "GPU checks skipped: no GPUs asked for"
            if gpus == 0
            else f"GPU checks skipped: unknown GPU (set node_selector {GPU_PRODUCT_LABEL})"
        )
        return FitReport(e, gpu, problems, notes)
    budget = int(gpus * gpu.memory_bytes * GPU_MEMORY_UTILIZATION)
    if scheme != "none":
        if e.layer_bytes > gpu.memory_bytes:
            problems.append(
                f"calibrating one layer needs ~{gib(e.layer_bytes)}, more than one {gpu.name} "
                f"({gib(gpu.memory_bytes)}): choose a GPU with more memory"
            )
        elif e.weights_bytes + e.calibration_bytes > gpu.memory_bytes:
            notes.append(
                f"larger than one {gpu.name}: quantized layer by layer "
                f"(llm-compressor sequential onloading)"
            )
    serving = [("serving the candidate", e.serve_bytes, e.quantized_bytes)]
    if evaluate_with_vllm and SCHEME_INFO[scheme].weight_bits < 16:
        serving.append(("evaluating the base model", e.base_serve_bytes, e.weights_bytes))
    for what, need, weights in serving:
        if need > budget:
            problems.append(
                f"{what} with vLLM needs ~{gib(need)} (weights {gib(weights)} + KV cache "
                f"{gib(e.kv_cache_bytes)} for {e.max_model_len} tokens), more than {gpus} x "
                f"{gpu.name} at {GPU_MEMORY_UTILIZATION:.0%} ({gib(budget)}): raise "
                "accelerator_count, lower max_model_len or choose a 4-bit scheme"
            )
    return FitReport(e, gpu, problems, notes)


@dataclass(frozen=True)
class LoadPlan:
    """How the quantize step loads the model and which llm-compressor options it passes.

    Attributes:
        device_map: ``from_pretrained``'s ``device_map``: None loads onto the CPU (llm-compressor
            onloads each layer to the GPU as it calibrates it); ``auto_offload`` (under
            compressed-tensors' ``load_offloaded_model``) spills what the host cannot hold to
            disk.
        oneshot: Extra ``oneshot`` arguments (``pipeline``, ``sequential_offload_device``).
        reason: Why, for the log.
    """

    device_map: str | None
    oneshot: dict[str, Any]
    reason: str


def load_plan(
    estimate: MemoryEstimate,
    *,
    calibration: bool,
    gpu_bytes: list[int],
    host_bytes: int | None,
) -> LoadPlan:
    """Choose how to load and calibrate (llm-compressor's
    ``docs/guides/big_models_and_distributed/model_loading.md`` and ``sequential_onloading.md``).

    A model that fits one GPU keeps llm-compressor's defaults. One that does not is calibrated
    with the sequential pipeline, layer by layer; with a second GPU that can hold the cached
    activations they are offloaded there (``sequential_offload_device="cuda:1"``, as
    ``oneshot``'s help advises), else to the CPU. A model larger than host memory is loaded
    with ``device_map="auto_offload"`` (the rest on disk).
    """
    oneshot: dict[str, Any] = {}
    reasons: list[str] = []
    device_map: str | None = None
    need = estimate.weights_bytes + estimate.calibration_bytes
    if gpu_bytes and need > gpu_bytes[0]:
        reasons.append(f"{gib(need)} does not fit one GPU ({gib(gpu_bytes[0])})")
        if calibration:
            oneshot["pipeline"] = "sequential"
            fits_second = len(gpu_bytes) > 1 and estimate.calibration_bytes < 0.8 * gpu_bytes[1]
            oneshot["sequential_offload_device"] = "cuda:1" if fits_second else "cpu"
    if host_bytes is not None and estimate.quantize_host_bytes > host_bytes:
        device_map = "auto_offload"
        reasons.append(
            f"{gib(estimate.quantize_host_bytes)} does not fit host memory ({gib(host_bytes)})"
        )
    return LoadPlan(device_map, oneshot, "; ".join(reasons) or "fits: llm-compressor defaults")
