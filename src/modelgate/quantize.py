"""Quantize step: llm-compressor ``oneshot`` to a compressed-tensors checkpoint vLLM can serve.

Schemes:

* ``none`` - copy the model unchanged (the baseline path).
* ``FP8_DYNAMIC`` - FP8 weights, dynamic per-token FP8 activations; needs no calibration data.
* ``W8A8`` - SmoothQuant, then GPTQ with INT8 weights and activations; needs calibration data.
* ``W4A16`` - GPTQ with INT4 weights, 16-bit activations; needs calibration data.

``lm_head`` is always left unquantized.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from modelgate.download import MANIFEST_NAME
from modelgate.errors import ConfigError, QuantizationError
from modelgate.naming import quantized_key, recipe_fingerprint
from modelgate.storage import fetch_file, fetched, open_store, read_file, scheme_of

logger = logging.getLogger(__name__)

Scheme = Literal["none", "FP8_DYNAMIC", "W8A8", "W4A16"]
SCHEMES: tuple[str, ...] = get_args(Scheme)
NEEDS_CALIBRATION = {"W8A8", "W4A16"}
IGNORE = ["lm_head"]
RECORD_NAME = "modelgate-quantization.json"


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
    """The llm-compressor modifiers for ``scheme`` (empty for ``none``)."""
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    if scheme == "none":
        return []
    if scheme == "FP8_DYNAMIC":
        return [QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=IGNORE)]
    if scheme == "W8A8":
        return [
            SmoothQuantModifier(smoothing_strength=smoothing_strength),
            GPTQModifier(targets="Linear", scheme="W8A8", ignore=IGNORE),
        ]
    return [GPTQModifier(targets="Linear", scheme="W4A16", ignore=IGNORE)]


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
            " (FP8_DYNAMIC needs none)"
        )
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
        model = AutoModelForCausalLM.from_pretrained(src, dtype="auto")
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
                )
            model.save_pretrained(out, save_compressed=True)
            tokenizer.save_pretrained(out)
        except Exception as e:  # llm-compressor raises broadly; keep the cause
            shutil.rmtree(out, ignore_errors=True)
            raise QuantizationError(f"llm-compressor {scheme} failed on {src}: {e}") from e
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

    Raises:
        ConfigError: Unknown scheme, missing calibration data, or a bad store URI.
        QuantizationError: llm-compressor failed (nothing is stored).
        StorageError: The store could not be read or written.
    """
    scheme = validate_scheme(scheme)
    if scheme in NEEDS_CALIBRATION and not calibration:
        raise ConfigError(
            f"scheme {scheme} needs calibration data: pass calibration=<file.jsonl, s3:// URI or "
            "dataset id> (FP8_DYNAMIC needs none)"
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
    if model_store.is_complete(key):
        uri = model_store.uri(key)
        record = json.loads(read_file(uri, RECORD_NAME))
        logger.info("%s of %s is already stored at %s", scheme, model_uri, uri)
        return StoredCandidate(uri=uri, scheme=scheme, recipe=record.get("recipe", ""), reused=True)
    with (
        fetched(model_uri) as source,
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
    return StoredCandidate(
        uri=model_store.uri(key), scheme=scheme, recipe=result.recipe, reused=False
    )
