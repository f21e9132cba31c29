"""Fast checks of the test fixtures: tiny model build, lm-eval task files and git publishing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from modelgate.errors import ConfigError
from modelgate.testing.hub_mirror import publish_model, repo_path
from modelgate.testing.tasks import ADDITION_CHOICES, ADDITION_TASK_NAME, write_addition_task
from modelgate.testing.tiny_model import (
    BOS_TOKEN,
    BUILD_INFO_FILE,
    EOS_TOKEN,
    MODEL_FILES,
    TinyModelInfo,
    build_tiny_model,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def quick_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModelInfo:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", train_seconds=3.0)


def test_build_writes_model_files(quick_model: TinyModelInfo) -> None:
    for name in (*MODEL_FILES, BUILD_INFO_FILE):
        assert (quick_model.path / name).is_file(), name
    assert not quick_model.cached
    assert quick_model.train_steps > 0
    config = json.loads((quick_model.path / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["hidden_size"] == 128
    assert config["num_attention_heads"] == 4
    assert config["head_dim"] == 32
    assert config["max_position_embeddings"] == 128
    assert config["dtype"] == config["torch_dtype"] == "bfloat16"
    assert config["vocab_size"] == quick_model.vocab_size
    assert 300 <= quick_model.vocab_size <= 512
    card = (quick_model.path / "README.md").read_text()
    front_matter = yaml.safe_load(card.split("---")[1])
    assert front_matter["pipeline_tag"] == "text-generation"


def test_tokenizer_round_trip_and_split(quick_model: TinyModelInfo) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(quick_model.path)
    assert (tokenizer.bos_token, tokenizer.eos_token) == (BOS_TOKEN, EOS_TOKEN)
    assert tokenizer.pad_token is not None
    text = "what is 3+4? the model adds 12+5=17."
    ids = tokenizer.encode(text)
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # lm-eval splits context and continuation by encoding both: this must be compositional.
    prompt, answer = "9+8=", "17."
    assert tokenizer.encode(prompt + answer) == tokenizer.encode(prompt) + tokenizer.encode(
        answer, add_special_tokens=False
    )


def test_chat_template_renders(quick_model: TinyModelInfo) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(quick_model.path)
    messages = [
        {"role": "system", "content": "Add."},
        {"role": "user", "content": "3+4="},
    ]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == "<|bos|><|system|>Add.<|eos|><|user|>3+4=<|eos|><|assistant|>"
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1
    tokenizer_config = json.loads((quick_model.path / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == tokenizer.chat_template


def test_model_loads_and_runs(quick_model: TinyModelInfo) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(quick_model.path)
    model = AutoModelForCausalLM.from_pretrained(quick_model.path, dtype=torch.float32)
    inputs = tokenizer("3+4=", return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], quick_model.vocab_size)
    assert quick_model.num_parameters == sum(p.numel() for p in model.parameters())


def test_cache_hit_returns_immediately(quick_model: TinyModelInfo) -> None:
    start = time.monotonic()
    again = build_tiny_model(quick_model.path, train_seconds=3.0)
    assert time.monotonic() - start < 1.0
    assert again.cached
    assert again.params_hash == quick_model.params_hash
    assert again.train_steps == quick_model.train_steps


def test_bad_parameters_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        build_tiny_model(tmp_path, train_seconds=-1)
    with pytest.raises(ConfigError):
        build_tiny_model(tmp_path, num_layers=0)


def test_addition_task_files(tmp_path: Path) -> None:
    assert write_addition_task(tmp_path) == ADDITION_TASK_NAME
    task = yaml.safe_load((tmp_path / f"{ADDITION_TASK_NAME}.yaml").read_text())
    assert task["task"] == ADDITION_TASK_NAME
    assert task["output_type"] == "multiple_choice"
    assert task["dataset_path"] == "json"
    assert task["test_split"] == "test"
    assert task["target_delimiter"] == ""
    assert task["doc_to_choice"] == ADDITION_CHOICES == [f"{s}." for s in range(19)]
    data_file = Path(task["dataset_kwargs"]["data_files"]["test"])
    assert data_file.is_absolute() and data_file.is_file()
    docs = [json.loads(line) for line in data_file.read_text().splitlines()]
    assert len(docs) == 100
    assert all(ADDITION_CHOICES[d["label"]] == f"{d['a'] + d['b']}." for d in docs)
    assert {m["metric"] for m in task["metric_list"]} == {"acc", "acc_norm"}


def test_addition_task_sample(tmp_path: Path) -> None:
    write_addition_task(tmp_path, n=10, seed=1)
    lines = (tmp_path / f"{ADDITION_TASK_NAME}.jsonl").read_text().splitlines()
    assert len(lines) == 10
    with pytest.raises(ConfigError):
        write_addition_task(tmp_path, n=0)


def test_publish_model_is_deterministic(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}\n")
    (model / "sub").mkdir()
    (model / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    (model / ".cache").mkdir()
    (model / ".cache" / "ignored").write_text("x")

    sha = publish_model(model, tmp_path / "repos-a")
    assert len(sha) == 40
    assert publish_model(model, tmp_path / "repos-a") == sha
    assert publish_model(model, tmp_path / "repos-b") == sha
    repo = repo_path(tmp_path / "repos-a", "modelgate/tiny-llama")
    assert (repo / "sub" / "weights.bin").read_bytes() == b"\x00\x01"
    assert not (repo / ".cache").exists()

    (model / "sub" / "weights.bin").unlink()
    changed = publish_model(model, tmp_path / "repos-a")
    assert changed != sha
    assert not (repo / "sub" / "weights.bin").exists()


def test_publish_model_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        publish_model(tmp_path / "missing", tmp_path / "repos")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(ConfigError):
        publish_model(tmp_path / "model", tmp_path / "repos", repo_id="no-org")
