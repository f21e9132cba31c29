"""Quantize step: llm-compressor ``oneshot`` to a compressed-tensors checkpoint vLLM can serve.

Schemes (compressed-tensors preset names, ``compressed_tensors/quantization/quant_scheme.py``):

* ``none`` - copy the model unchanged (the baseline path).
* ``FP8_DYNAMIC`` - FP8 weights per channel, dynamic per-token FP8 activations; no calibration.
* ``FP8_BLOCK`` - FP8 weights in 128x128 blocks, dynamic per-group (128) FP8 activations
  (DeepSeek-V3 style); no calibration.
* ``W8A8`` - SmoothQuant, then GPTQ with INT8 weights and activations; needs calibration data.
* ``W4A16`` - GPTQ with INT4 weights (groups of 128), 16-bit activations; needs calibration data.
* ``AWQ`` - AWQ scaling, then INT4 weights (groups of 128, ``W4A16``); needs calibration data.
* ``NVFP4A16`` - FP4 weights (groups of 16, FP8 scales), 16-bit activations; no calibration.
* ``NVFP4`` - FP4 weights and activations (groups of 16); needs calibration data for the
  activations' global scales. Activations are FP4 in hardware only on Blackwell.

``lm_head`` is always left unquantized. :data:`SCHEME_INFO` holds what preflight needs to know
of each scheme (calibration, the GPUs that run it, shape constraints, its default recovery bound).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from modelgate.download import MANIFEST_NAME
from modelgate.errors import ConfigError, QuantizationError
from modelgate.naming import quantized_key, recipe_fingerprint
from modelgate.signing import SignatureInfo, sign_if_configured, stored_signature_info, verified
from modelgate.storage import fetch_file, open_store, read_file, reusable, scheme_of

if TYPE_CHECKING:
    from modelgate.memory import LoadPlan

logger = logging.getLogger(__name__)

Scheme = Literal["none", "FP8_DYNAMIC", "FP8_BLOCK", "W8A8", "W4A16", "AWQ", "NVFP4A16", "NVFP4"]
SCHEMES: tuple[str, ...] = get_args(Scheme)
IGNORE = ["lm_head"]
RECORD_NAME = "modelgate-quantization.json"
#: What ``min_recovery`` may say instead of a number: the scheme's :attr:`SchemeInfo.recovery`.
RECOVERY_DEFAULT = "default"
#: llm-compressor's lm-eval harness default (``tests/lmeval/test_lmeval.py``: "retain >= 95% of
#: base") for schemes whose test config sets no ``recovery_threshold`` of its own.
HARNESS_RECOVERY = 0.95
_CONFIGS = "vllm-project/llm-compressor tests/lmeval/configs/"


@dataclass(frozen=True)
class SchemeInfo:
    """What modelgate knows of a scheme before quantizing.

    Attributes:
        calibration: Needs calibration data.
        weight_bits: Stored bits per quantized weight, scales and zero points included
            (for memory estimates).
        min_capability: Lowest CUDA compute capability on which vLLM runs the scheme as meant
            (activations quantized in hardware where the scheme quantizes them).
        group_size: Weight group size; the input size of every quantized Linear must divide by it.
        block: Weight block (rows, columns); vLLM needs each tensor-parallel shard of the merged
            and split projections to divide by it.
        recovery: Default ``min_recovery`` (candidate/base) of a gate, from llm-compressor's
            recovery tests.
        recovery_source: Where :attr:`recovery` comes from.
    """

    calibration: bool
    weight_bits: float
    min_capability: float
    group_size: int | None = None
    block: tuple[int, int] | None = None
    recovery: float = HARNESS_RECOVERY
    recovery_source: str = "llm-compressor tests/lmeval harness default"


# Capabilities: vLLM compressed_tensors/schemes/*.get_min_capability (W8A8 FP8: 89, else W8A16
# FP8 Marlin from 75; INT8 W8A8 and WNA16: 75; NVFP4: 75 with FP4 Marlin, FP4 activations need
# cutlass FP4, SM 10.0: nvfp4_utils.cutlass_fp4_supported) and vLLM's docs
# (features/quantization/fp8.md: "FP8 computation is supported on compute capability >= 8.9").
# Recoveries: the lowest per-metric recovery_threshold of the matching lm-eval config.
SCHEME_INFO: dict[str, SchemeInfo] = {
    "none": SchemeInfo(calibration=False, weight_bits=16, min_capability=0.0, recovery=0.95),
    "FP8_DYNAMIC": SchemeInfo(
        calibration=False,
        weight_bits=8,
        min_capability=8.9,
        recovery_source=_CONFIGS + "fp8_dynamic_per_token.yaml (harness default)",
    ),
    "FP8_BLOCK": SchemeInfo(
        calibration=False,
        weight_bits=8,
        min_capability=8.9,
        block=(128, 128),
        recovery_source=_CONFIGS + "fp8_block.yaml (harness default)",
    ),
    "W8A8": SchemeInfo(
        calibration=True,
        weight_bits=8,
        min_capability=7.5,
        recovery_source=_CONFIGS + "int8_w8a8_dynamic_per_token.yaml (harness default)",
    ),
    "W4A16": SchemeInfo(
        calibration=True,
        weight_bits=4.125,
        min_capability=7.5,
        group_size=128,
        recovery=0.94,
        recovery_source=_CONFIGS + "w4a16_gptq.yaml",
    ),
    "AWQ": SchemeInfo(
        calibration=True,
        weight_bits=4.125,
        min_capability=7.5,
        group_size=128,
        recovery=0.92,
        recovery_source=_CONFIGS + "w4a16_awq_sym.yaml",
    ),
    "NVFP4A16": SchemeInfo(
        calibration=False,
        weight_bits=4.5,
        min_capability=7.5,
        group_size=16,
        recovery=0.89,
        recovery_source=_CONFIGS + "awq_nvfp4a16.yaml",
    ),
    "NVFP4": SchemeInfo(
        calibration=True,
        weight_bits=4.5,
        min_capability=10.0,
        group_size=16,
        recovery=0.94,
        recovery_source=_CONFIGS + "awq_nvfp4.yaml",
    ),
}
NEEDS_CALIBRATION = {name for name, info in SCHEME_INFO.items() if info.calibration}
_DATA_FREE = [name for name, info in SCHEME_INFO.items() if not info.calibration and name != "none"]


@dataclass
class QuantizeResult:
    """What the quantize step produced."""

    scheme: str
    output_dir: str
    recipe: str  # YAML text of the llm-compressor recipe ("" for scheme none)
    calibration: str  # source of calibration data ("" when none was used)
    num_calibration_samples: int
    seconds: float
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def validate_scheme(scheme: str) -> Scheme:
    """Return ``scheme`` if known.

    Raises:
        ConfigError: Unknown scheme; lists the valid ones.
    """
    if scheme not in SCHEMES:
        upper = {s.upper(): s for s in SCHEMES}
        hint = f" Did you mean {upper[scheme.upper()]!r}?" if scheme.upper() in upper else ""
        raise ConfigError(f"unknown quant scheme {scheme!r}.{hint} Choose one of {list(SCHEMES)}")
    return scheme  # type: ignore[return-value]


def build_recipe(scheme: Scheme, *, smoothing_strength: float = 0.8) -> list[Any]:
    """The llm-compressor modifiers for ``scheme`` (empty for ``none``).

    ``AWQ`` follows llm-compressor 0.14's split of AWQ into a transform and a quantization
    modifier (``llmcompressor/modifiers/awq/__init__.py``: the deprecated ``AWQModifier(scheme=)``
    returns exactly these two).
    """
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    if scheme == "none":
        return []
    if scheme == "W8A8":
        return [
            SmoothQuantModifier(smoothing_strength=smoothing_strength),
            GPTQModifier(targets="Linear", scheme="W8A8", ignore=IGNORE),
        ]
    if scheme == "W4A16":
        return [GPTQModifier(targets="Linear", scheme="W4A16", ignore=IGNORE)]
    if scheme == "AWQ":
        return [
            AWQModifier(),
            QuantizationModifier(targets="Linear", scheme="W4A16", ignore=IGNORE),
        ]
    # FP8_DYNAMIC, FP8_BLOCK, NVFP4A16, NVFP4: compressed-tensors presets of the same name
    return [QuantizationModifier(targets="Linear", scheme=scheme, ignore=IGNORE)]


def default_recovery(scheme: str) -> float:
    """The default ``min_recovery`` of ``scheme`` (see :data:`SCHEME_INFO`).

    Raises:
        ConfigError: Unknown scheme.
    """
    return SCHEME_INFO[validate_scheme(scheme)].recovery


def _threshold_lists(data: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    lists = [("thresholds", data.get("thresholds"))]
    endpoint = data.get("endpoint")
    if isinstance(endpoint, dict):
        lists.append(("endpoint.thresholds", endpoint.get("thresholds")))
    return [(where, items) for where, items in lists if isinstance(items, list)]


def apply_recovery_defaults(thresholds: str, *, scheme: str) -> str:
    """The gate config ``thresholds`` with each ``min_recovery: default`` set to the scheme's
    default bound (:func:`default_recovery`); the text unchanged when none says ``default``.

    ``thresholds`` is JSON/YAML text or the path of a ``.json``/``.yaml`` file, as the pipeline
    takes it; with a ``default`` to fill in, the result is JSON text. Text that does not parse is
    returned unchanged (the gate check reports it). In the ``endpoint`` section ``min_recovery``
    compares a model with itself served, so ``default`` is refused there.

    Raises:
        ConfigError: Unknown scheme, or ``default`` in the endpoint section.
    """
    from modelgate.validation import parse_config_text

    bound = default_recovery(scheme)
    try:
        data = parse_config_text(thresholds, what="gate config")
    except ConfigError:
        return thresholds
    if isinstance(data, list):
        data = {"thresholds": data}
    if not isinstance(data, dict):
        return thresholds
    changed = False
    for where, items in _threshold_lists(data):
        for t in items:
            if isinstance(t, dict) and t.get("min_recovery") == RECOVERY_DEFAULT:
                if where != "thresholds":
                    raise ConfigError(
                        f"{where}: min_recovery: {RECOVERY_DEFAULT} is the scheme's bound vs the "
                        "base model; give the endpoint's bound vs offline as a number (e.g. 0.98)"
                    )
                t["min_recovery"] = bound
                changed = True
    return json.dumps(data) if changed else thresholds


def unresolved_recovery_defaults(thresholds: str) -> list[str]:
    """``task/metric`` of the thresholds whose ``min_recovery`` still says ``default``."""
    from modelgate.validation import parse_config_text

    try:
        data = parse_config_text(thresholds, what="gate config")
    except ConfigError:
        return []
    if isinstance(data, list):
        data = {"thresholds": data}
    if not isinstance(data, dict):
        return []
    return [
        f"{t.get('task')}/{t.get('metric')}"
        for _, items in _threshold_lists(data)
        for t in items
        if isinstance(t, dict) and t.get("min_recovery") == RECOVERY_DEFAULT
    ]


def load_calibration_texts(
    source: str, *, tokenizer: Any, num_samples: int, split: str = "train"
) -> list[str]:
    """Read calibration texts from a local JSONL file or a datasets id.

    Each record needs a ``text`` field, or a ``messages`` list rendered with the chat template,
    or ``prompt``(+``completion``).

    Raises:
        ConfigError: Missing file, empty data, or records with none of the known fields.
    """
    path = fetch_file(source) if scheme_of(source) in ("s3", "file") else Path(source)
    if path.suffix in {".jsonl", ".json"} or path.exists():
        if not path.is_file():
            raise ConfigError(
                f"calibration file {source!r} does not exist here; pass an s3:// URI or a "
                "dataset id (modelgate run/submit upload a local file to the model store)"
            )
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        import datasets

        try:
            records = list(datasets.load_dataset(source, split=split).select(range(num_samples)))
        except Exception as e:  # datasets raises many types for unknown/offline ids
            raise ConfigError(
                f"could not load calibration dataset {source!r} (split {split!r}): {e}. "
                "Offline, pass a local JSONL file with a 'text' field instead."
            ) from e
    texts: list[str] = []
    for i, rec in enumerate(records[:num_samples]):
        if "text" in rec:
            texts.append(str(rec["text"]))
        elif "messages" in rec:
            texts.append(tokenizer.apply_chat_template(rec["messages"], tokenize=False))
        elif "prompt" in rec:
            texts.append(str(rec["prompt"]) + str(rec.get("completion", "")))
        else:
            raise ConfigError(
                f"calibration record {i} of {source!r} has none of 'text', 'messages', 'prompt' "
                f"(keys: {sorted(rec)})"
            )
    if not texts:
        raise ConfigError(f"calibration source {source!r} yielded no samples")
    return texts


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _host_memory() -> int | None:
    """Memory this process may use: the cgroup's limit (a pod's), else the machine's."""
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 says "no limit" with a huge number
            return int(text)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def plan_loading(
    model_dir: Path, *, scheme: str, calibration_samples: int, max_seq_length: int
) -> LoadPlan:
    """How to load ``model_dir`` for ``scheme`` on this machine's GPUs and memory
    (:func:`modelgate.memory.load_plan`); llm-compressor's defaults when the config cannot be
    sized."""
    import torch

    from modelgate.memory import LoadPlan, ModelShape, estimate, load_plan

    try:
        shape = ModelShape.from_config(json.loads((model_dir / "config.json").read_text()))
    except (ConfigError, ValueError, OSError) as e:
        return LoadPlan(None, {}, f"not sized ({e}): llm-compressor defaults")
    needs = estimate(
        shape,
        scheme=scheme,
        calibration_samples=calibration_samples,
        max_seq_length=max_seq_length,
    )
    gpus = [
        torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())
    ]
    return load_plan(
        needs,
        calibration=SCHEME_INFO[scheme].calibration,
        gpu_bytes=gpus,
        host_bytes=_host_memory(),
    )


def _load_model(model_class: Any, src: Path, *, plan: LoadPlan, offload_folder: Path) -> Any:
    """``from_pretrained`` as ``plan`` says: onto the CPU, or (``auto_offload``) as much as
    host memory holds and the rest on disk in ``offload_folder``, under compressed-tensors'
    ``load_offloaded_model`` (llm-compressor ``docs/guides/big_models_and_distributed/
    model_loading.md``)."""
    if plan.device_map != "auto_offload":
        return model_class.from_pretrained(src, dtype="auto")
    from compressed_tensors.offload import load_offloaded_model  # type: ignore[import-untyped]

    from modelgate.memory import HOST_OVERHEAD

    host = _host_memory()
    kwargs: dict[str, Any] = {"device_map": "auto_offload", "offload_folder": str(offload_folder)}
    if host is not None:  # compressed-tensors would read the node's memory, not the pod's limit
        kwargs["max_memory"] = {"cpu": max(host - HOST_OVERHEAD, 0)}
    offload_folder.mkdir(parents=True, exist_ok=True)
    with load_offloaded_model(model_class):
        return model_class.from_pretrained(src, dtype="auto", **kwargs)


def quantize_model(
    model_dir: str | os.PathLike[str],
    *,
    output_dir: str | os.PathLike[str],
    scheme: str,
    calibration: str | None = None,
    num_calibration_samples: int = 64,
    max_seq_length: int = 256,
) -> QuantizeResult:
    """Quantize a local Hugging Face model directory with llm-compressor.

    Args:
        model_dir: Directory with config, tokenizer and safetensors weights.
        output_dir: Where the compressed-tensors checkpoint is written.
        scheme: One of ``none``, ``FP8_DYNAMIC``, ``W8A8``, ``W4A16``.
        calibration: JSONL path or datasets id; required for ``W8A8`` and ``W4A16``.
        num_calibration_samples: Calibration samples to use.
        max_seq_length: Calibration sequences are truncated to this many tokens.

    Returns:
        The result, also written to ``<output_dir>/modelgate-quantization.json``.

    Raises:
        ConfigError: Unknown scheme, missing model directory or missing calibration data.
        QuantizationError: llm-compressor failed.
    """
    scheme = validate_scheme(scheme)
    src, out = Path(model_dir), Path(output_dir)
    if not (src / "config.json").is_file():
        raise ConfigError(f"{src} is not a model directory (no config.json)")
    if scheme in NEEDS_CALIBRATION and not calibration:
        raise ConfigError(
            f"scheme {scheme} needs calibration data: pass calibration=<file.jsonl or dataset id>"
            f" ({', '.join(_DATA_FREE)} need none)"
        )
    if scheme == "AWQ":
        import torch

        if not torch.accelerator.is_available():
            # llm-compressor's AWQ pins its cached activations for the accelerator
            # (llmcompressor/pipelines/cache.py::_pin_intermediate), which fails without one
            raise ConfigError("scheme AWQ needs a GPU to calibrate; on CPU choose W4A16")
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    recipe_yaml = ""
    n_samples = 0
    if scheme == "none":
        shutil.copytree(src, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".cache"))
    else:
        import torch
        from datasets import Dataset
        from llmcompressor import oneshot
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(src)
        plan = plan_loading(
            src,
            scheme=scheme,
            calibration_samples=num_calibration_samples,
            max_seq_length=max_seq_length,
        )
        logger.info("loading %s: %s", src, plan.reason)
        offload = out.parent / f".{out.name}.offload"  # beside, never inside, the output
        model = _load_model(AutoModelForCausalLM, src, plan=plan, offload_folder=offload)
        recipe = build_recipe(scheme)
        dataset = None
        if scheme in NEEDS_CALIBRATION:
            texts = load_calibration_texts(
                calibration or "", tokenizer=tokenizer, num_samples=num_calibration_samples
            )
            n_samples = len(texts)
            enc = [
                tokenizer(t, truncation=True, max_length=max_seq_length, add_special_tokens=True)
                for t in texts
            ]
            dataset = Dataset.from_dict(
                {
                    "input_ids": [e["input_ids"] for e in enc],
                    "attention_mask": [e["attention_mask"] for e in enc],
                }
            )
        try:
            with torch.no_grad():
                oneshot(
                    model=model,
                    tokenizer=tokenizer,
                    recipe=recipe,
                    dataset=dataset,
                    num_calibration_samples=max(n_samples, 1),
                    max_seq_length=max_seq_length,
                    **plan.oneshot,
                )
            model.save_pretrained(out, save_compressed=True)
            tokenizer.save_pretrained(out)
        except Exception as e:  # llm-compressor raises broadly; keep the cause
            shutil.rmtree(out, ignore_errors=True)
            raise QuantizationError(f"llm-compressor {scheme} failed on {src}: {e}") from e
        finally:
            shutil.rmtree(offload, ignore_errors=True)
        recipe_yaml = _recipe_yaml(recipe)
        (out / "recipe.yaml").write_text(recipe_yaml)
        for extra in ("generation_config.json", "README.md", MANIFEST_NAME):
            if (src / extra).is_file() and not (out / extra).exists():
                shutil.copy2(src / extra, out / extra)
    result = QuantizeResult(
        scheme=scheme,
        output_dir=str(out),
        recipe=recipe_yaml,
        calibration=calibration or "" if scheme in NEEDS_CALIBRATION else "",
        num_calibration_samples=n_samples,
        seconds=round(time.monotonic() - started, 3),
        size_bytes=_dir_size(out),
    )
    (out / RECORD_NAME).write_text(json.dumps(result.to_dict(), indent=2))
    logger.info("quantized %s with %s in %.1fs -> %s", src, scheme, result.seconds, out)
    return result


def _recipe_yaml(modifiers: list[Any]) -> str:
    """Serialise modifiers as an llm-compressor recipe YAML."""
    import yaml

    stage: dict[str, Any] = {}
    for m in modifiers:
        dumped = m.model_dump(exclude_unset=True, exclude_none=True, mode="json")
        # trailing-underscore fields are llm-compressor's lifecycle state, not recipe
        stage[type(m).__name__] = {k: v for k, v in dumped.items() if not k.endswith("_")}
    return yaml.safe_dump({"quant_stage": {"quant_modifiers": stage}}, sort_keys=False)


@dataclass
class StoredCandidate:
    """The quantized candidate in the model store."""

    uri: str
    scheme: str
    recipe: str
    reused: bool
    #: The stored folder's signature (:mod:`modelgate.signing`); unsigned when signing is off.
    signature: SignatureInfo = field(default_factory=lambda: SignatureInfo(signed=False))


def quantize_to_store(
    model_uri: str,
    *,
    store: str,
    repo_id: str,
    commit_sha: str,
    scheme: str,
    calibration: str | None = None,
    num_calibration_samples: int = 64,
    max_seq_length: int = 256,
) -> StoredCandidate:
    """Quantize the stored model at ``model_uri`` into the model store, once per recipe.

    ``none`` stores nothing new: the candidate is the base folder itself. Otherwise the folder's
    key holds the source commit and a fingerprint of the scheme, the calibration data and the
    llm-compressor release, and a complete folder under that key is reused.

    The base folder's signature is checked before it is read when a verify key is configured,
    and the candidate is signed before it is published when a signing key is
    (:mod:`modelgate.signing`).

    Raises:
        ConfigError: Unknown scheme, missing calibration data, a bad store URI, or an
            unreadable signing or verify key.
        QuantizationError: llm-compressor failed (nothing is stored).
        SignatureError: The base model did not verify, or signing failed (nothing is stored).
        StorageError: The store could not be read or written.
    """
    scheme = validate_scheme(scheme)
    if scheme in NEEDS_CALIBRATION and not calibration:
        raise ConfigError(
            f"scheme {scheme} needs calibration data: pass calibration=<file.jsonl, s3:// URI or "
            f"dataset id> ({', '.join(_DATA_FREE)} need none)"
        )
    if scheme == "none":
        return StoredCandidate(uri=model_uri, scheme=scheme, recipe="", reused=True)
    from importlib.metadata import version

    model_store = open_store(store)
    fingerprint = recipe_fingerprint(
        scheme=scheme,
        calibration=calibration if scheme in NEEDS_CALIBRATION else None,
        samples=num_calibration_samples if scheme in NEEDS_CALIBRATION else None,
        max_seq_length=max_seq_length if scheme in NEEDS_CALIBRATION else None,
        llmcompressor=version("llmcompressor"),
    )
    key = quantized_key(repo_id, commit_sha, scheme=scheme, fingerprint=fingerprint)
    if reusable(model_store, key):  # content checked; a corrupt folder is set aside
        uri = model_store.uri(key)
        record = json.loads(read_file(uri, RECORD_NAME))
        logger.info("%s of %s is already stored at %s", scheme, model_uri, uri)
        return StoredCandidate(
            uri=uri,
            scheme=scheme,
            recipe=record.get("recipe", ""),
            reused=True,
            signature=stored_signature_info(uri),
        )
    with (
        verified(model_uri) as source,
        model_store.writer(key, source=f"{model_uri} {scheme}") as out,
    ):
        result = quantize_model(
            source,
            output_dir=out,
            scheme=scheme,
            calibration=calibration,
            num_calibration_samples=num_calibration_samples,
            max_seq_length=max_seq_length,
        )
        sign_if_configured(out)  # before the folder is published; the signature lives in it
    uri = model_store.uri(key)  # another writer's copy if it published first
    return StoredCandidate(
        uri=uri,
        scheme=scheme,
        recipe=result.recipe,
        reused=False,
        signature=stored_signature_info(uri),
    )
