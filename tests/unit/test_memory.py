"""Memory estimates and GPU fit from real model configs, with the numbers worked out by hand."""

import pytest

from modelgate.errors import ConfigError
from modelgate.memory import (
    GIB,
    HOST_OVERHEAD,
    ModelShape,
    check_hardware,
    check_release_fit,
    estimate,
    gpu_named,
    load_plan,
    parse_quantity,
)
from modelgate.placement import Placement

pytestmark = pytest.mark.unit

# config.json of meta-llama/Meta-Llama-3-70B (the fields the estimate reads)
LLAMA3_70B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "num_hidden_layers": 80,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
# meta-llama/Meta-Llama-3-8B
LLAMA3_8B = {
    **LLAMA3_70B,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
}
# Qwen/Qwen2.5-0.5B: tied embeddings, 2 KV heads, head_dim 64
QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "num_hidden_layers": 24,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}


def _on(product: str, count: int = 1, **steps) -> Placement:
    return Placement(
        accelerator_count=count,
        node_selector={"nvidia.com/gpu.product": product},
        **({"steps": steps} if steps else {}),
    )


def test_parameters_of_llama3_70b_by_hand():
    shape = ModelShape.from_config(LLAMA3_70B)
    # per layer: q 8192*8192 + k,v 2*8192*1024 + o 8192*8192 = 150_994_944;
    # mlp 3*8192*28672 = 704_643_072; norms 2*8192
    layer_linear = 150_994_944 + 704_643_072
    assert shape.layer_linear_parameters == layer_linear
    embeddings = 2 * 128256 * 8192  # untied: embed_tokens and lm_head
    assert shape.parameters == 80 * (layer_linear + 2 * 8192) + embeddings + 8192
    assert shape.parameters == 70_553_706_496  # the published 70.6B
    e = estimate(shape, scheme="W4A16", max_model_len=8192)
    assert e.weights_bytes == 2 * 70_553_706_496
    # KV: 2 (k and v) x 80 layers x 8 heads x 128 dims x 2 bytes = 327_680 bytes per token
    assert e.kv_cache_bytes == 327_680 * 8192
    # 4-bit weights with a 16-bit scale per 128 (4.125 bits), the rest in bf16
    linear = 80 * layer_linear
    assert e.quantized_bytes == -(-linear * 4125 // 8000) + (shape.parameters - linear) * 2
    # calibration: 64 samples x 256 tokens x 8192 x 2 bytes, inputs and outputs
    assert e.calibration_bytes == 64 * 256 * 8192 * 2 * 2


def test_parameters_of_llama3_8b_and_a_tied_small_model():
    assert ModelShape.from_config(LLAMA3_8B).parameters == 8_030_261_248  # published: 8.03B
    qwen = ModelShape.from_config(QWEN25_05B)
    # embeddings counted once (tied); q/k/v biases (24 x 1152) are left out of the estimate
    assert qwen.head_dim == 64 and qwen.tied_embeddings
    assert qwen.parameters == 494_005_120
    assert abs(qwen.parameters - 494_032_768) / 494_032_768 < 1e-4  # published count
    # vLLM at the model's own 32768 tokens: 2 x 24 x 2 x 64 x 2 bytes x 32768
    assert estimate(qwen, scheme="none").kv_cache_bytes == 2 * 24 * 2 * 64 * 2 * 32768


def test_moe_and_multimodal_configs():
    mixtral = {
        **LLAMA3_8B,
        "architectures": ["MixtralForCausalLM"],
        "vocab_size": 32000,
        "num_local_experts": 8,
    }
    shape = ModelShape.from_config(mixtral)
    dense = ModelShape.from_config({**mixtral, "num_local_experts": 1})
    # 7 more copies of the MLP and a router per layer
    extra = 32 * (7 * 3 * 4096 * 14336 + 4096 * 8)
    assert shape.parameters - dense.parameters == extra
    wrapped = {"architectures": ["Llava"], "text_config": LLAMA3_8B}
    assert ModelShape.from_config(wrapped).parameters == 8_030_261_248


@pytest.mark.parametrize(
    "config, match",
    [
        ({"hidden_size": 64}, "no num_attention_heads"),
        ({**LLAMA3_8B, "num_hidden_layers": -1}, "num_hidden_layers=-1"),
        ({**LLAMA3_8B, "hidden_size": "4096"}, "hidden_size='4096'"),
        ({**LLAMA3_8B, "vocab_size": 10**12}, "vocab_size"),
        ([], "not a JSON object"),
    ],
)
def test_untrusted_configs_are_refused(config, match):
    with pytest.raises(ConfigError, match=match):
        ModelShape.from_config(config)


@pytest.mark.parametrize(
    "name, gpu",
    [
        ("NVIDIA-H100-80GB-HBM3", "H100"),
        ("NVIDIA-H100-NVL", "H100 NVL"),
        ("NVIDIA-H200", "H200"),
        ("NVIDIA-A100-SXM4-80GB", "A100 80GB"),
        ("NVIDIA-A100-SXM4-40GB", "A100 40GB"),
        ("NVIDIA-L4", "L4"),
        ("NVIDIA-L40S", "L40/L40S"),
        ("NVIDIA-A10G", "A10/A10G"),
        ("Tesla-T4", "T4"),
        ("NVIDIA-B200", "B200"),
        ("gpu", None),
        ("mi300x", None),
    ],
)
def test_gpus_are_known_by_product_label(name, gpu):
    found = gpu_named(name)
    assert (found.name if found else None) == gpu


@pytest.mark.parametrize(
    "scheme, product, refused",
    [
        ("FP8_DYNAMIC", "NVIDIA-A100-SXM4-80GB", "FP8_DYNAMIC needs compute capability >= 8.9"),
        ("FP8_BLOCK", "NVIDIA-L4", None),
        ("FP8_BLOCK", "NVIDIA-H100-80GB-HBM3", None),
        ("NVFP4", "NVIDIA-H100-80GB-HBM3", "choose NVFP4A16"),
        ("NVFP4", "NVIDIA-B200", None),
        ("NVFP4A16", "NVIDIA-A100-SXM4-80GB", None),
        ("W4A16", "Tesla-V100-SXM2-32GB", "W4A16 needs compute capability >= 7.5"),
        ("none", "Tesla-V100-SXM2-32GB", None),
    ],
)
def test_schemes_are_refused_on_gpus_that_cannot_run_them(scheme, product, refused):
    shape = ModelShape.from_config(LLAMA3_8B)
    gpu = gpu_named(product)
    problems = check_hardware(shape, scheme=scheme, gpu=gpu, gpus=1)
    if refused is None:
        assert problems == []
    else:
        (line,) = problems
        assert refused in line and gpu.name in line


def test_unknown_gpus_skip_the_capability_check_and_awq_needs_one():
    shape = ModelShape.from_config(LLAMA3_8B)
    assert check_hardware(shape, scheme="NVFP4", gpu=None, gpus=1) == []
    (line,) = check_hardware(shape, scheme="AWQ", gpu=None, gpus=0)
    assert "AWQ needs a GPU" in line and "accelerator_count" in line


def test_group_and_block_shapes():
    qwen = ModelShape.from_config(QWEN25_05B)  # q 896 = 7 x 128, intermediate 4864 = 38 x 128
    for scheme in ("W4A16", "AWQ", "NVFP4A16", "FP8_BLOCK"):
        assert check_hardware(qwen, scheme=scheme, gpu=None, gpus=1) == []
    # two GPUs split q (and o_proj's input) into 448: not a multiple of 128
    (block,) = check_hardware(qwen, scheme="FP8_BLOCK", gpu=None, gpus=2)
    assert "128x128 blocks" in block and "q_proj 448" in block and "input 448" in block
    (group,) = check_hardware(qwen, scheme="W4A16", gpu=None, gpus=2)
    assert "groups of 128" in group and "[448]" in group
    assert check_hardware(qwen, scheme="NVFP4A16", gpu=None, gpus=2) == []  # 448 = 28 x 16
    odd = ModelShape.from_config({**LLAMA3_8B, "hidden_size": 1000, "num_attention_heads": 8})
    (line,) = check_hardware(odd, scheme="NVFP4A16", gpu=None, gpus=1)
    assert "groups of 16" in line and "[1000]" in line and "choose FP8_DYNAMIC" in line
    assert check_hardware(odd, scheme="FP8_DYNAMIC", gpu=None, gpus=1) == []


def test_a_70b_release_is_refused_with_the_numbers():
    shape = ModelShape.from_config(LLAMA3_70B)
    report = check_release_fit(
        shape, scheme="W4A16", placement=_on("NVIDIA-H100-80GB-HBM3"), max_model_len=8192
    )
    host, base = report.problems
    # 131.4 GiB of bf16 weights + 0.5 GiB of activations + 4 GiB > the default 96Gi limit
    assert "quantizing needs ~135.9 GiB" in host and "memory_limit (96.0 GiB)" in host
    # the candidate (36.8 GiB + 2.5 GiB KV) fits one H100 at 90%; the base model does not
    assert "evaluating the base model" in base and "131.4 GiB" in base and "72.0 GiB" in base
    assert "larger than one H100" in report.summary()
    roomy = _on("NVIDIA-H100-80GB-HBM3", 2, quantize={"memory": "160Gi", "memory_limit": "192Gi"})
    fits = check_release_fit(shape, scheme="W4A16", placement=roomy, max_model_len=8192)
    assert fits.problems == []
    hf_eval = check_release_fit(
        shape,
        scheme="W4A16",
        # no limit: the request is what the step may use
        placement=_on("NVIDIA-H100-80GB-HBM3", quantize={"memory": "160Gi", "memory_limit": None}),
        evaluate_with_vllm=False,
    )
    assert hf_eval.problems == []


def test_kv_cache_at_a_long_context_is_refused():
    shape = ModelShape.from_config(LLAMA3_8B)
    # 131072 tokens x 131_072 bytes per token (2 x 32 x 8 x 128 x 2) = 16 GiB of KV cache
    report = check_release_fit(
        shape, scheme="FP8_DYNAMIC", placement=_on("NVIDIA-L4"), max_model_len=131072
    )
    (line,) = [p for p in report.problems if "serving the candidate" in p]
    assert "KV cache 16.0 GiB for 131072 tokens" in line and "lower max_model_len" in line


def test_unknown_gpu_and_local_host_memory():
    shape = ModelShape.from_config(LLAMA3_8B)
    report = check_release_fit(shape, scheme="FP8_DYNAMIC", placement=Placement())
    assert report.problems == [] and "unknown GPU" in report.summary()
    small = check_release_fit(
        shape, scheme="FP8_DYNAMIC", placement=Placement(), host_memory=8 * GIB
    )
    (line,) = small.problems
    assert "this machine's memory (8.0 GiB)" in line


def test_load_plan():
    big = estimate(ModelShape.from_config(LLAMA3_70B), scheme="W4A16")
    one = load_plan(big, calibration=True, gpu_bytes=[80 * GIB], host_bytes=2048 * GIB)
    assert one.device_map is None
    assert one.oneshot == {"pipeline": "sequential", "sequential_offload_device": "cpu"}
    two = load_plan(big, calibration=True, gpu_bytes=[80 * GIB] * 2, host_bytes=2048 * GIB)
    assert two.oneshot["sequential_offload_device"] == "cuda:1"
    tight = load_plan(big, calibration=True, gpu_bytes=[80 * GIB], host_bytes=64 * GIB)
    assert tight.device_map == "auto_offload" and "host memory" in tight.reason
    small = estimate(ModelShape.from_config(LLAMA3_8B), scheme="FP8_DYNAMIC")
    fits = load_plan(small, calibration=False, gpu_bytes=[80 * GIB], host_bytes=64 * GIB)
    assert fits.device_map is None and fits.oneshot == {}
    assert small.quantize_host_bytes == small.weights_bytes + HOST_OVERHEAD


@pytest.mark.parametrize(
    "text, n", [("64Gi", 64 * GIB), ("500M", 500_000_000), ("1e9", 10**9), ("1024", 1024)]
)
def test_quantities(text, n):
    assert parse_quantity(text) == n


def test_bad_quantity():
    with pytest.raises(ConfigError, match="not a Kubernetes memory quantity"):
        parse_quantity("lots")
