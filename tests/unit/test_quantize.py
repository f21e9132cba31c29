"""Quantization with the real llm-compressor on a random tiny Llama (seconds on CPU)."""

import json

import pytest

from modelgate.errors import ConfigError
from modelgate.quantize import (
    NEEDS_CALIBRATION,
    SCHEME_INFO,
    SCHEMES,
    apply_recovery_defaults,
    build_recipe,
    default_recovery,
    load_calibration_texts,
    quantize_model,
    validate_scheme,
)

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


# AWQ is left out: llm-compressor's AWQ needs an accelerator (see test_awq_needs_a_gpu)
@pytest.mark.parametrize(
    "scheme", ["FP8_DYNAMIC", "FP8_BLOCK", "W8A8", "W4A16", "NVFP4A16", "NVFP4"]
)
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
    assert result.num_calibration_samples == (8 if scheme in NEEDS_CALIBRATION else 0)
    weights = qcfg["config_groups"]["group_0"]["weights"]
    info = SCHEME_INFO[scheme]
    if info.block:  # FP8_BLOCK: 128x128 blocks (hidden 128 and intermediate 256 divide)
        assert weights["block_structure"] == list(info.block) and weights["type"] == "float"
    if info.group_size:
        assert weights["group_size"] == info.group_size
    if scheme.startswith("NVFP4"):
        assert qcfg["format"] == "nvfp4-pack-quantized"
        activations = qcfg["config_groups"]["group_0"]["input_activations"]
        assert (activations is None) == (scheme == "NVFP4A16")
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


def test_recipes_agree_with_llm_compressor_on_calibration():
    """SCHEME_INFO's ``calibration`` is what llm-compressor's own modifiers require."""
    for scheme in SCHEMES:
        recipe = build_recipe(validate_scheme(scheme))
        needs = any(m.requires_calibration_data for m in recipe)
        assert needs == SCHEME_INFO[scheme].calibration, scheme
    awq = build_recipe("AWQ")
    assert [type(m).__name__ for m in awq] == ["AWQModifier", "QuantizationModifier"]
    assert awq[1].scheme == "W4A16" and awq[1].ignore == ["lm_head"]
    # the preset names exist in compressed-tensors (quant_scheme.py PRESET_SCHEMES)
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    for scheme in ("FP8_DYNAMIC", "FP8_BLOCK", "W8A8", "W4A16", "NVFP4A16", "NVFP4"):
        assert scheme in PRESET_SCHEMES


def test_awq_needs_a_gpu(random_model, calibration, tmp_path):
    import torch

    if torch.accelerator.is_available():
        pytest.skip("an accelerator is present: AWQ runs (the gpu tier covers it)")
    with pytest.raises(ConfigError, match="AWQ needs a GPU"):
        quantize_model(
            random_model, output_dir=tmp_path / "awq", scheme="AWQ", calibration=str(calibration)
        )
    assert not (tmp_path / "awq").exists()


def test_a_model_larger_than_host_memory_is_offloaded_to_disk(random_model, tmp_path, monkeypatch):
    """``auto_offload`` with a host budget of almost nothing puts the weights on disk, and the
    quantized model still saves and loads back."""
    from transformers import AutoModelForCausalLM

    from modelgate import quantize
    from modelgate.memory import HOST_OVERHEAD, LoadPlan

    plan = LoadPlan("auto_offload", {}, "test")
    monkeypatch.setattr(quantize, "_host_memory", lambda: HOST_OVERHEAD + 100_000)
    folder = tmp_path / "offload"
    model = quantize._load_model(
        AutoModelForCausalLM, random_model, plan=plan, offload_folder=folder
    )
    assert any(folder.rglob("*")), "nothing was offloaded to disk"
    del model
    monkeypatch.setattr(quantize, "plan_loading", lambda *a, **k: plan)
    out = tmp_path / "fp8-block"
    quantize_model(random_model, output_dir=out, scheme="FP8_BLOCK")
    AutoModelForCausalLM.from_pretrained(out)
    assert not (tmp_path / ".fp8-block.offload").exists()  # cleaned up


def test_loading_plan_of_a_small_model_keeps_the_defaults(random_model):
    from modelgate.quantize import plan_loading

    plan = plan_loading(random_model, scheme="W4A16", calibration_samples=8, max_seq_length=64)
    assert plan.device_map is None and plan.oneshot == {}


RECOVERY_GATE = (
    '{"thresholds": [{"task": "gsm8k", "metric": "exact_match", "min_recovery": "default"},'
    ' {"task": "arc_easy", "metric": "acc", "min_recovery": 0.9}]}'
)


@pytest.mark.parametrize(
    "scheme, bound",
    # llm-compressor tests/lmeval/configs: w4a16_gptq.yaml 0.94, w4a16_awq_sym.yaml 0.92,
    # awq_nvfp4a16.yaml 0.89 (flexible-extract), awq_nvfp4.yaml 0.94; others the harness's 0.95
    [("FP8_DYNAMIC", 0.95), ("W4A16", 0.94), ("AWQ", 0.92), ("NVFP4A16", 0.89), ("NVFP4", 0.94)],
)
def test_min_recovery_default_is_the_schemes_bound(scheme, bound):
    assert default_recovery(scheme) == bound
    resolved = json.loads(apply_recovery_defaults(RECOVERY_GATE, scheme=scheme))
    assert [t["min_recovery"] for t in resolved["thresholds"]] == [bound, 0.9]  # 0.9 overrides


def test_recovery_defaults_in_files_lists_and_bad_text(tmp_path):
    gate = tmp_path / "gate.yaml"
    gate.write_text("- {task: a, metric: acc, min_recovery: default}\n")
    assert json.loads(apply_recovery_defaults(str(gate), scheme="AWQ")) == {
        "thresholds": [{"task": "a", "metric": "acc", "min_recovery": 0.92}]
    }
    plain = "thresholds: [{task: a, metric: acc, min_recovery: 0.97}]"
    assert apply_recovery_defaults(plain, scheme="AWQ") == plain  # untouched text
    assert apply_recovery_defaults("{not yaml", scheme="AWQ") == "{not yaml"  # the gate reports it
    endpoint = '{"thresholds": [{"task": "a", "metric": "acc", "min": 0.1}], "endpoint": ' + (
        '{"thresholds": [{"task": "a", "metric": "acc", "min_recovery": "default"}]}}'
    )
    with pytest.raises(ConfigError, match="endpoint.thresholds: min_recovery: default"):
        apply_recovery_defaults(endpoint, scheme="W4A16")
    with pytest.raises(ConfigError, match="unknown quant scheme"):
        apply_recovery_defaults(plain, scheme="INT3")


def test_run_parameters_fill_in_the_default_gate_per_scheme():
    from modelgate.gates import load_gate_config
    from modelgate.params import CHOICES, DEFAULT_THRESHOLDS, resolve_params

    assert CHOICES["quant_scheme"][1] == SCHEMES  # the CLI offers every scheme
    fp8 = resolve_params(overrides={"quant_scheme": "FP8_DYNAMIC"})
    assert fp8.thresholds == DEFAULT_THRESHOLDS  # the compiled pipeline's default, unchanged
    awq = resolve_params(overrides={"quant_scheme": "AWQ"})
    (threshold,) = load_gate_config(awq.thresholds).thresholds
    assert threshold.min_recovery == 0.92 and threshold.min == 0.5
    given = resolve_params(overrides={"quant_scheme": "AWQ", "thresholds": RECOVERY_GATE})
    assert [t.min_recovery for t in load_gate_config(given.thresholds).thresholds] == [0.92, 0.9]
    explicit = resolve_params(overrides={"quant_scheme": "AWQ", "thresholds": DEFAULT_THRESHOLDS})
    assert explicit.thresholds == DEFAULT_THRESHOLDS  # a gate given as is stays as given


@pytest.mark.gpu
def test_awq_on_a_gpu(random_model, calibration, tmp_path):
    import torch

    if not torch.accelerator.is_available():
        pytest.skip("AWQ calibrates on an accelerator; none here")
    out = tmp_path / "awq"
    result = quantize_model(
        random_model, output_dir=out, scheme="AWQ", calibration=str(calibration)
    )
    qcfg = json.loads((out / "config.json").read_text())["quantization_config"]
    weights = qcfg["config_groups"]["group_0"]["weights"]
    assert weights["num_bits"] == 4 and weights["group_size"] == 128
    assert "AWQModifier" in result.recipe and result.num_calibration_samples == 8
