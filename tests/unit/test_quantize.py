"""Quantization with the real llm-compressor on a random tiny Llama (seconds on CPU)."""

import json

import pytest

from modelgate.errors import ConfigError
from modelgate.quantize import load_calibration_texts, quantize_model, validate_scheme

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("random-llama")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        [f"{a}+{b}={a + b}" for a in range(10) for b in range(10)],
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<s>", "</s>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_attention_heads=4,
        num_key_value_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture()
def calibration(tmp_path):
    path = tmp_path / "calib.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"{a}+{a}={2 * a}"}) for a in range(8)))
    return path


@pytest.mark.parametrize("scheme", ["FP8_DYNAMIC", "W8A8", "W4A16"])
def test_schemes_write_compressed_tensors(random_model, calibration, tmp_path, scheme):
    out = tmp_path / scheme
    result = quantize_model(
        random_model, output_dir=out, scheme=scheme, calibration=str(calibration)
    )
    config = json.loads((out / "config.json").read_text())
    qcfg = config["quantization_config"]
    assert qcfg["quant_method"] == "compressed-tensors"
    assert "lm_head" in qcfg["ignore"]
    assert (out / "recipe.yaml").read_text() == result.recipe
    assert "initialized_" not in result.recipe
    recorded = json.loads((out / "modelgate-quantization.json").read_text())
    assert recorded["scheme"] == scheme
    assert result.num_calibration_samples == (0 if scheme == "FP8_DYNAMIC" else 8)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)  # loads back


def test_none_copies_the_model(random_model, tmp_path):
    result = quantize_model(random_model, output_dir=tmp_path / "copy", scheme="none")
    assert (tmp_path / "copy" / "model.safetensors").is_file()
    assert result.recipe == ""


def test_bad_input_is_rejected_before_work(random_model, tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'FP8_DYNAMIC'"):
        validate_scheme("fp8_dynamic")
    with pytest.raises(ConfigError, match="needs calibration data"):
        quantize_model(random_model, output_dir=tmp_path / "o", scheme="W4A16")
    with pytest.raises(ConfigError, match="no config.json"):
        quantize_model(tmp_path, output_dir=tmp_path / "o", scheme="FP8_DYNAMIC")
    assert not (tmp_path / "o").exists()


def test_calibration_formats(tmp_path):
    class Tok:
        def apply_chat_template(self, messages, tokenize):
            return "|".join(m["content"] for m in messages)

    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"text": "a"}\n{"messages": [{"role": "user", "content": "b"}]}\n'
        '{"prompt": "c", "completion": "d"}\n'
    )
    assert load_calibration_texts(str(path), tokenizer=Tok(), num_samples=10) == ["a", "b", "cd"]
    path.write_text('{"other": 1}\n')
    with pytest.raises(ConfigError, match="none of 'text'"):
        load_calibration_texts(str(path), tokenizer=Tok(), num_samples=10)
    with pytest.raises(ConfigError, match="does not exist"):
        load_calibration_texts(str(tmp_path / "x.jsonl"), tokenizer=Tok(), num_samples=10)


def test_quantize_to_store_writes_once_per_recipe(random_model, tmp_path, calibration):
    import shutil

    from modelgate.quantize import quantize_to_store
    from modelgate.storage import FileStore, fetch, stage_input

    store = FileStore(tmp_path / "store")
    sha = "0123456789abcdef0123456789abcdef01234567"
    with store.writer(f"org--m/{sha}/base-000000000000") as folder:
        shutil.copytree(random_model, folder, dirs_exist_ok=True)
    base = store.uri(f"org--m/{sha}/base-000000000000")
    common = {"store": store.root, "repo_id": "org/m", "commit_sha": sha}
    none = quantize_to_store(base, scheme="none", **common)
    assert none.uri == base and none.reused  # nothing copied for "none"
    first = quantize_to_store(base, scheme="FP8_DYNAMIC", **common)
    assert not first.reused and "/fp8_dynamic-" in first.uri and "FP8_DYNAMIC" in first.recipe
    assert (fetch(first.uri) / "recipe.yaml").is_file()
    again = quantize_to_store(base, scheme="FP8_DYNAMIC", **common)
    assert again.reused and again.uri == first.uri and again.recipe == first.recipe
    staged = stage_input(store, calibration, kind="calibration")
    w4 = quantize_to_store(base, scheme="W4A16", calibration=staged, **common)
    other = quantize_to_store(
        base, scheme="W4A16", calibration=staged, num_calibration_samples=4, **common
    )
    assert len({first.uri, w4.uri, other.uri}) == 3  # another recipe is another folder
    with pytest.raises(ConfigError, match="needs calibration data"):
        quantize_to_store(base, scheme="W8A8", **common)
