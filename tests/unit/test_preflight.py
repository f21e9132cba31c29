"""Preflight checks that need no server: every failure reported at once, with its fix."""

import pytest

from modelgate.errors import ConfigError
from modelgate.params import ReleaseParams
from modelgate.preflight import PreflightError, cluster_checks, preflight, release_checks

pytestmark = pytest.mark.unit


def _offline(params: ReleaseParams, *, local: bool = True) -> dict:
    # the Hub (and the sizing from its config.json) is checked in the e2e tier against a mirror
    checks = release_checks(params, local=local, sizing=False)
    checks.pop("hub", None)
    return checks


def test_all_failures_are_collected(tmp_path):
    # the params model refuses these values too; preflight must not rely on that (components
    # and params files from older releases reach it without the CLI)
    params = ReleaseParams.model_construct(
        model_id="org/m",
        model_store=tmp_path.as_uri(),
        quant_scheme="int3",
        eval_backend="openai",
        thresholds="{}",
        deploy_target="docker",
    )
    with pytest.raises(PreflightError) as info:
        preflight(_offline(params))
    failed = {r.name for r in info.value.results if not r.ok}
    assert failed == {"quantization", "evaluation", "gate", "deploy"}
    text = str(info.value)
    assert "preflight found 4 problem(s)" in text
    assert "unknown quant scheme 'int3'" in text and "unknown deploy target 'docker'" in text
    assert isinstance(info.value, ConfigError)  # the CLI exits 2


def test_a_good_local_release_passes(tmp_path, addition_task_dir):
    params = ReleaseParams(
        model_id="org/m",
        model_store=(tmp_path / "store").as_uri(),
        eval_tasks="modelgate_addition",
        eval_task_dir=str(addition_task_dir),
        eval_backend="hf",
        deploy_target="local",
    )
    results = {r.name: r for r in preflight(_offline(params))}
    assert set(results) == {
        "model",
        "gate",
        "quantization",
        "evaluation",
        "deploy",
        "registry",
        "model store",
        "signatures",
    }
    assert results["model store"].detail.endswith("is writable")
    assert results["registry"].detail.startswith("skipped")
    assert not (tmp_path / "store").exists()  # checking creates nothing


def test_cluster_runs_need_an_s3_store(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    local_store = ReleaseParams(model_id="org/m", model_store=tmp_path.as_uri())
    with pytest.raises(PreflightError, match="local folder the cluster cannot read"):
        preflight({"model store": _offline(local_store, local=False)["model store"]})
    s3 = ReleaseParams(model_id="org/m", model_store="s3://models/p")
    (result,) = preflight({"model store": _offline(s3, local=False)["model store"]})
    assert "not checked from here" in result.detail


def test_cluster_checks_ask_the_api_server(monkeypatch):
    """SelfSubjectAccessReview per verb, and the ServingRuntime's existence."""
    from kubernetes import client

    allowed = {"create": True, "update": False, "get": True}

    class Auth:
        def __init__(self, api_client=None):
            pass

        def create_self_subject_access_review(self, review):
            attrs = review.spec.resource_attributes
            ok = attrs.resource != "inferenceservices" or allowed[attrs.verb]
            return client.V1SelfSubjectAccessReview(
                spec=review.spec, status=client.V1SubjectAccessReviewStatus(allowed=ok)
            )

    class Objects:
        def __init__(self, api_client=None):
            pass

        def get_namespaced_custom_object(self, group, version, namespace, plural, name):
            from kubernetes.client.exceptions import ApiException

            raise ApiException(status=404, reason="NotFound")

    monkeypatch.setattr(client, "AuthorizationV1Api", Auth)
    monkeypatch.setattr(client, "CustomObjectsApi", Objects)
    params = ReleaseParams(model_id="org/m", model_store="s3://b/p")
    with pytest.raises(PreflightError) as info:
        preflight(cluster_checks(params, namespace="team-a"))
    text = str(info.value)
    assert "may not update inferenceservices.serving.kserve.io in team-a" in text
    assert "ServingRuntime 'vllm-runtime' does not exist in team-a" in text


@pytest.mark.parametrize(
    "options, fix",
    [
        ({"canary_traffic_percent": 10}, "canary"),
        ({"prefer_registry_uri": True}, "model-registry://"),
        ({"deployment_mode": "Knative"}, "Standard"),
        ({"serving_runtime": "my-runtime"}, "serving_runtime"),
    ],
)
def test_what_an_llminferenceservice_cannot_take_is_refused_before_any_model_work(
    tmp_path, options, fix
):
    params = ReleaseParams(
        model_id="org/m",
        model_store="s3://models/p",
        deploy_target="llmisvc",
        **options,
    )
    with pytest.raises(PreflightError) as info:
        preflight({"deploy": _offline(params, local=False)["deploy"]})
    assert fix in str(info.value)
    fine = ReleaseParams(model_id="org/Model", model_store="s3://models/p", deploy_target="llmisvc")
    (result,) = preflight({"deploy": _offline(fine, local=False)["deploy"]})
    assert result.detail == "LLMInferenceService org-model"  # the name derived per model


LLAMA3_70B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "num_hidden_layers": 80,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "torch_dtype": "bfloat16",
}


def test_sizing_checks_run_only_with_the_runs_gpu_parameters():
    from modelgate.preflight import checks_for

    params = ReleaseParams(model_id="org/m", model_store="s3://b/p")
    assert {"hardware", "memory"} <= set(checks_for(params, local=True))
    assert not {"hardware", "memory"} & set(checks_for(params, local=True, sizing=False))
    # the pipeline's preflight step sizes only when it was given the GPU parameters: a step
    # built with defaults for what it was not given must not refuse on them
    assert "accelerator_count" not in params.model_fields_set
    given = ReleaseParams(model_id="org/m", model_store="s3://b/p", accelerator_count="4")
    assert "accelerator_count" in given.model_fields_set


def test_a_release_that_does_not_fit_is_refused_with_the_numbers(monkeypatch):
    from modelgate import preflight as pf

    fetched = []

    def fake_config(params):
        fetched.append(params.model_id)
        return LLAMA3_70B

    monkeypatch.setattr(pf, "model_config", fake_config)
    params = ReleaseParams(
        model_id="meta-llama/Meta-Llama-3-70B",
        model_store="s3://b/p",
        quant_scheme="NVFP4",
        calibration_data="calib.jsonl",
        max_model_len=8192,
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    )
    with pytest.raises(PreflightError) as info:
        preflight(pf.sizing_checks(params, local=False))
    assert fetched == ["meta-llama/Meta-Llama-3-70B"]  # config.json read once for both checks
    failed = {r.name: r.detail for r in info.value.results if not r.ok}
    assert "NVFP4 needs compute capability >= 10.0" in failed["hardware"]
    assert "H100 has 9.0: choose NVFP4A16" in failed["hardware"]
    memory = failed["memory"]
    assert "quantizing needs ~135.9 GiB" in memory and "evaluating the base model" in memory
    assert "[estimate: 70.55B params: weights 131.4 GiB" in memory
    fits = params.model_copy(
        update={
            "quant_scheme": "NVFP4A16",
            "accelerator_count": "2",
            "eval_backend": "hf",
            "node_selector": {"nvidia.com/gpu.product": "NVIDIA-B200"},
        }
    )
    from modelgate.placement import placement_from_options

    placement = placement_from_options(
        accelerator_count=2,
        node_selector=fits.node_selector,
        steps={"quantize": {"memory": "200Gi", "memory_limit": "256Gi"}},
    )
    detail = pf.check_memory_fit(fits, config=LLAMA3_70B, local=False, placement=placement)
    # 131.4 GiB of weights fit one B200 (180 GiB): llm-compressor's defaults, no note
    assert "quantized 39.8 GiB" in detail and "larger than one" not in detail
    assert "2 x B200 (compute capability 10.0)" in pf.check_hardware_fit(fits, config=LLAMA3_70B)


def test_model_config_reads_are_bounded(monkeypatch, tmp_path):
    import huggingface_hub

    from modelgate.errors import DownloadError
    from modelgate.memory import MAX_CONFIG_BYTES
    from modelgate.preflight import model_config

    path = tmp_path / "config.json"
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(path))
    params = ReleaseParams(model_id="org/m", model_store="s3://b/p")
    path.write_text(" " * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(DownloadError, match="larger than"):
        model_config(params)
    path.write_text("[1, 2]")
    with pytest.raises(DownloadError, match="not a JSON object"):
        model_config(params)
    path.write_text('{"hidden_size": 64}')
    assert model_config(params) == {"hidden_size": 64}

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(DownloadError, match="could not read config.json of org/m@main"):
        model_config(params)


def test_an_unresolved_recovery_default_is_refused(tmp_path):
    params = ReleaseParams(
        model_id="org/m",
        model_store=tmp_path.as_uri(),
        thresholds='[{"task": "arc_easy", "metric": "acc", "min_recovery": "default"}]',
    )
    with pytest.raises(PreflightError, match="min_recovery: default of arc_easy/acc is filled in"):
        preflight({"gate": _offline(params)["gate"]})
