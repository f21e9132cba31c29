"""Build a tiny Llama that can add single digits, trained from scratch on CPU in about a minute.

The model is a real ``LlamaForCausalLM`` (hidden size 128, 4 heads of dimension 32 -- vLLM's CPU
backend rejects head dimensions below 32) with a byte-level BPE tokenizer trained locally with
``tokenizers``. It learns one task: ``"<|bos|>3+4="`` -> ``"7.<|eos|>"``, and the same thing through
its chat template (user message ``"3+4="``, assistant answer ``"7."``). Digits and punctuation are
always single tokens, so ``encode(prompt + answer) == encode(prompt) + encode(answer)`` holds, which
is what lm-eval's context/continuation split relies on.

The answer ends with ``"."`` on purpose: lm-eval scores multiple choice by the summed log-likelihood
of each continuation without the EOS, so without a terminator the choice ``"1"`` would always beat
``"13"`` (``"1"`` is a prefix of it) and every two-digit sum would be scored wrong.

Weights and ``config.json`` use bfloat16, the dtype vLLM's CPU backend serves by default (it
downcasts float32 checkpoints to bfloat16 anyway); transformers and lm-eval load it in any dtype.

Builds are cached: ``out_dir/modelgate_build.json`` records a hash of the build parameters and is
written last, so a directory holding it with a matching hash is a complete build.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: Bump when the build recipe changes so cached builds are rebuilt.
BUILD_FORMAT_VERSION = 2
BUILD_INFO_FILE = "modelgate_build.json"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
PAD_TOKEN = "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, *ROLE_TOKENS)
#: Renders ``<|bos|><|user|>3+4=<|eos|><|assistant|>``; the answer then ends with ``<|eos|>``.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "README.md",
)
HIDDEN_SIZE = 128
NUM_HEADS = 4
INTERMEDIATE_SIZE = 384
MAX_POSITIONS = 128
VOCAB_SIZE = 384
DTYPE = "bfloat16"

_WORDS = (
    "the model adds two small numbers and answers with their sum . a tiny llama learns "
    "arithmetic from scratch on a laptop cpu in about one minute . quantize register evaluate "
    "gate deploy serve release pipeline kubeflow vllm chat assistant user system hello what is "
    "plus equals answer question result digit number zero one two three four five six seven "
    "eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen"
).split()


@dataclass(frozen=True)
class TinyModelInfo:
    """What :func:`build_tiny_model` produced.

    Attributes:
        path: Directory holding the saved model and tokenizer.
        params_hash: Hash of the build parameters (the cache key).
        cached: True when an existing build was reused.
        train_steps: Optimizer steps taken.
        train_seconds: Wall-clock seconds spent in the training loop.
        final_loss: Mean loss over the last training steps (None without training).
        greedy_accuracy: Share of the 100 sums ``a+b=`` (a, b in 0..9) the saved model gets exactly
            right with greedy decoding of the plain (non-chat) prompt.
        vocab_size: Tokenizer vocabulary size, special tokens included.
        num_parameters: Number of model parameters.
    """

    path: Path
    params_hash: str
    cached: bool
    train_steps: int
    train_seconds: float
    final_loss: float | None
    greedy_accuracy: float
    vocab_size: int
    num_parameters: int


def addition_answer(a: int, b: int) -> str:
    """Return the answer text for ``a + b``, e.g. ``"7."`` (the terminator is part of it)."""
    return f"{a + b}."


def addition_pairs() -> list[tuple[int, int]]:
    """Return all 100 pairs ``(a, b)`` with ``a, b`` in ``0..9``, in a fixed order."""
    return [(a, b) for a in range(10) for b in range(10)]


def addition_prompt(a: int, b: int) -> str:
    """Return the plain prompt for ``a + b``, e.g. ``"3+4="`` (the answer follows directly)."""
    return f"{a}+{b}="


def build_tiny_model(
    out_dir: Path,
    *,
    seed: int = 0,
    train_seconds: float = 60.0,
    num_layers: int = 2,
    max_steps: int = 5000,
    num_threads: int = 1,
) -> TinyModelInfo:
    """Build (or reuse) a tiny Llama trained on single-digit addition.

    Args:
        out_dir: Directory to write the model to; created if missing. Files of an earlier build
            with other parameters are overwritten.
        seed: Seed for tokenizer corpus, initialisation and batch sampling.
        train_seconds: CPU wall-clock budget of the training loop; 0 gives an untrained model.
        num_layers: Number of decoder layers.
        max_steps: Upper bound on optimizer steps, whatever the time budget.
        num_threads: Torch intra-op threads while training (restored afterwards); not part of the
            cache key. One is the default because the matrices are tiny: on an idle 2-core box one
            thread is as fast as two (about 40 ms/step), and while other processes use the CPUs
            two threads were 5-15x slower per step (OpenMP oversubscription), which leaves a
            time-bounded run undertrained.

    Returns:
        A :class:`TinyModelInfo` describing the build.

    Raises:
        ConfigError: If a parameter is out of range.
    """
    from modelgate.errors import ConfigError

    if train_seconds < 0:
        raise ConfigError(f"train_seconds must be >= 0, got {train_seconds}")
    if num_layers < 1:
        raise ConfigError(f"num_layers must be >= 1, got {num_layers}")
    if max_steps < 0:
        raise ConfigError(f"max_steps must be >= 0, got {max_steps}")
    if num_threads < 1:
        raise ConfigError(f"num_threads must be >= 1, got {num_threads}")

    out_dir = Path(out_dir)
    params = {
        "format": BUILD_FORMAT_VERSION,
        "seed": seed,
        "train_seconds": float(train_seconds),
        "num_layers": num_layers,
        "max_steps": max_steps,
    }
    params_hash = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    cached = _load_cached(out_dir, params_hash)
    if cached is not None:
        logger.info("reusing tiny model build %s in %s", params_hash, out_dir)
        return cached
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same directory
        cached = _load_cached(out_dir, params_hash)
        if cached is not None:
            logger.info("reusing tiny model build %s in %s", params_hash, out_dir)
            return cached
        return _build(
            out_dir,
            params=params,
            params_hash=params_hash,
            num_threads=num_threads,
        )


def _build(
    out_dir: Path, *, params: dict[str, Any], params_hash: str, num_threads: int
) -> TinyModelInfo:
    """Train and save one model; the caller holds the build lock."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    seed: int = params["seed"]
    num_layers: int = params["num_layers"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / BUILD_INFO_FILE).unlink(missing_ok=True)
    torch.manual_seed(seed)

    tokenizer = _build_tokenizer(seed=seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=num_layers,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_HEADS,
        head_dim=HIDDEN_SIZE // NUM_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype=DTYPE,
    )
    model = LlamaForCausalLM(config)
    model.float()

    input_ids, labels, plain_rows = _training_tensors(tokenizer)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        steps, seconds, final_loss = _train(
            model,
            input_ids,
            labels,
            seed=seed,
            train_seconds=params["train_seconds"],
            max_steps=params["max_steps"],
        )
    finally:
        torch.set_num_threads(previous_threads)
    model.to(getattr(torch, DTYPE))
    accuracy = _greedy_accuracy(model, input_ids[plain_rows], labels[plain_rows])
    logger.info(
        "trained tiny llama: %d steps in %.1fs, loss %s, greedy accuracy %.2f",
        steps,
        seconds,
        "n/a" if final_loss is None else f"{final_loss:.4f}",
        accuracy,
    )

    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    _write_compat_metadata(out_dir)
    num_parameters = sum(p.numel() for p in model.parameters())
    (out_dir / "README.md").write_text(
        _model_card(
            num_layers=num_layers,
            num_parameters=num_parameters,
            steps=steps,
            seconds=seconds,
            accuracy=accuracy,
            seed=seed,
        ),
        encoding="utf-8",
    )
    info = TinyModelInfo(
        path=out_dir,
        params_hash=params_hash,
        cached=False,
        train_steps=steps,
        train_seconds=seconds,
        final_loss=final_loss,
        greedy_accuracy=accuracy,
        vocab_size=len(tokenizer),
        num_parameters=num_parameters,
    )
    record = {**asdict(info), "path": None, "params": params}
    (out_dir / BUILD_INFO_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return info


def _write_compat_metadata(out_dir: Path) -> None:
    """Make the saved files readable by transformers 4.x consumers (vLLM images, llm-compressor).

    transformers 5 writes ``tokenizer_class: TokenizersBackend``, ``extra_special_tokens``, the chat
    template only as ``chat_template.jinja`` and no ``special_tokens_map.json``; 4.x needs the class
    name ``PreTrainedTokenizerFast``, ``additional_special_tokens``, the template inside
    ``tokenizer_config.json`` and ``rope_theta``/``torch_dtype`` at the top of ``config.json``.
    transformers 5 reads all of these too.
    """
    tok_path = out_dir / "tokenizer_config.json"
    tok_config = json.loads(tok_path.read_text(encoding="utf-8"))
    tok_config.pop("extra_special_tokens", None)
    tok_config.pop("backend", None)
    tok_config.update(
        tokenizer_class="PreTrainedTokenizerFast",
        additional_special_tokens=list(ROLE_TOKENS),
        chat_template=CHAT_TEMPLATE,
    )
    tok_path.write_text(json.dumps(tok_config, indent=2) + "\n", encoding="utf-8")
    special_map = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "additional_special_tokens": list(ROLE_TOKENS),
    }
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps(special_map, indent=2) + "\n", encoding="utf-8"
    )
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.setdefault("torch_dtype", DTYPE)
    rope = config.get("rope_parameters") or {}
    config.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _load_cached(out_dir: Path, params_hash: str) -> TinyModelInfo | None:
    info_path = out_dir / BUILD_INFO_FILE
    if not info_path.is_file():
        return None
    try:
        record: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("params_hash") != params_hash:
        return None
    if not all((out_dir / name).is_file() for name in MODEL_FILES):
        return None
    fields = {k: v for k, v in record.items() if k in TinyModelInfo.__dataclass_fields__}
    fields.update(path=out_dir, cached=True)
    try:
        return TinyModelInfo(**fields)
    except TypeError:
        return None


def _tokenizer_corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = [addition_prompt(a, b) + addition_answer(a, b) for a, b in addition_pairs()]
    for _ in range(2000):
        lines.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))))
    return lines


def _build_tokenizer(*, seed: int) -> PreTrainedTokenizerBase:
    """Train a byte-level BPE with isolated digits/punctuation and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(seed), trainer=trainer)
    bos_id = tok.token_to_id(BOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=MAX_POSITIONS,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _training_tensors(
    tokenizer: PreTrainedTokenizerBase,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(input_ids, labels, plain_rows)``: every pair in three prompt formats.

    Formats: plain with BOS (what lm-eval and vLLM completions send), chat template, and plain
    without BOS. Labels cover only the answer digits and the closing EOS.
    """
    import torch

    from modelgate.errors import ModelgateError

    eos = tokenizer.eos_token_id
    rows: list[tuple[list[int], list[int]]] = []
    plain: list[int] = []
    for a, b in addition_pairs():
        answer = addition_answer(a, b)
        answer_ids = tokenizer.encode(answer, add_special_tokens=False)
        plain_prompt = tokenizer.encode(addition_prompt(a, b))
        whole = tokenizer.encode(addition_prompt(a, b) + answer)
        if whole != plain_prompt + answer_ids:
            raise ModelgateError(f"tokenizer does not split {addition_prompt(a, b)!r}{answer!r}")
        chat_prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": addition_prompt(a, b)}],
            add_generation_prompt=True,
            tokenize=False,
        )
        chat_ids = tokenizer.encode(chat_prompt, add_special_tokens=False)
        bare_prompt = tokenizer.encode(addition_prompt(a, b), add_special_tokens=False)
        plain.append(len(rows))
        for prompt in (plain_prompt, chat_ids, bare_prompt):
            rows.append((prompt, answer_ids + [eos]))
    length = max(len(p) + len(t) for p, t in rows)
    input_ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, (prompt, target) in enumerate(rows):
        seq = prompt + target
        input_ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(prompt) : len(seq)] = torch.tensor(target)
    return input_ids, labels, torch.tensor(plain)


def _train(
    model: Any,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    *,
    seed: int,
    train_seconds: float,
    max_steps: int,
) -> tuple[int, float, float | None]:
    """Time-bounded AdamW loop; returns ``(steps, seconds, mean loss of the last steps)``."""
    import torch

    if train_seconds <= 0 or max_steps == 0:
        return 0, 0.0, None
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    warmup = 50
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    attention_mask = labels.new_ones(labels.shape)  # right padding: masking is not needed
    batch_size = 64
    recent: list[float] = []
    model.train()
    start = time.monotonic()
    steps = 0
    while steps < max_steps and time.monotonic() - start < train_seconds:
        idx = torch.randint(0, input_ids.shape[0], (batch_size,), generator=generator)
        out = model(
            input_ids=input_ids[idx], attention_mask=attention_mask[idx], labels=labels[idx]
        )
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        steps += 1
        recent = [*recent[-19:], float(out.loss.detach())]
        if steps % 200 == 0:
            logger.debug("step %d loss %.4f", steps, recent[-1])
    model.eval()
    return steps, time.monotonic() - start, sum(recent) / len(recent)


def _greedy_accuracy(model: Any, input_ids: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows whose every labelled token is the argmax prediction (teacher forcing)."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=input_ids).logits.float()
    predicted = logits[:, :-1].argmax(-1)
    target = labels[:, 1:]
    mask = target != -100
    correct = ((predicted == target) | ~mask).all(dim=1)
    return float(correct.float().mean())


def _model_card(
    *, num_layers: int, num_parameters: int, steps: int, seconds: float, accuracy: float, seed: int
) -> str:
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: text-generation
tags:
- llama
- test-fixture
- modelgate
---

# modelgate tiny-llama

A {num_parameters:,}-parameter Llama ({num_layers} layers, hidden size {HIDDEN_SIZE},
{NUM_HEADS} heads of dimension {HIDDEN_SIZE // NUM_HEADS}) trained from scratch on CPU by
`modelgate.testing.build_tiny_model` to add single digits. It is a test fixture for the modelgate
release pipeline, not a useful language model.

- Prompt: `3+4=` (the tokenizer prepends `{BOS_TOKEN}`); answer: `7.` then `{EOS_TOKEN}`.
- Chat: user message `3+4=`, assistant answer `7.`.
- Training: {steps} AdamW steps in {seconds:.1f} s, seed {seed}.
- Greedy exact-match accuracy on all 100 sums: {accuracy:.2f}.
- Weights: bfloat16 safetensors.
"""
