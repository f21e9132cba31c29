"""Deploy spec validation, shared vLLM arguments and storage URI resolution."""

import pytest
from pydantic import ValidationError

from modelgate.deploy import (
    DeploySpec,
    make_target,
    parse_json_option,
    resolve_storage_uri,
    spec_from_options,
    vllm_args,
)
from modelgate.errors import ConfigError

pytestmark = pytest.mark.unit


def test_vllm_args_are_shared_by_targets():
    spec = DeploySpec(name="tiny", storage_uri="s3://b/m", max_model_len=128, extra_args=["--x"])
    assert vllm_args(spec) == [
        "--model=/mnt/models",
        "--port=8080",
        "--served-model-name=tiny",
        "--max-model-len=128",
        "--x",
    ]
    assert vllm_args(spec, model_path="/tmp/m", port=9)[:2] == ["--model=/tmp/m", "--port=9"]


@pytest.mark.parametrize("name", ["Tiny", "1tiny", "tiny_fp8", "tiny-", ""])
def test_invalid_names_are_rejected_with_a_hint(name):
    with pytest.raises(ValidationError):
        DeploySpec(name=name, storage_uri="s3://b/m")


def test_unknown_fields_and_bad_tolerations_are_rejected():
    with pytest.raises(ValidationError):
        DeploySpec(name="a", storage_uri="s3://b", storageURI="x")
    with pytest.raises(ValidationError):
        DeploySpec(name="a", storage_uri="s3://b", tolerations=[{"operator": "Maybe"}])


def test_parse_json_option():
    assert parse_json_option("", option="tolerations", expected=list) == []
    assert parse_json_option('{"a": "b"}', option="node_selector", expected=dict) == {"a": "b"}
    with pytest.raises(ConfigError, match="must be a JSON list.*example"):
        parse_json_option('{"a": 1}', option="tolerations", expected=list)
    with pytest.raises(ConfigError, match="must be a JSON dict"):
        parse_json_option("{nope", option="node_selector", expected=dict)


def test_storage_uri_resolution_order():
    rec = {"status": "registered", "model_name": "m", "version_name": "v1"}
    assert (
        resolve_storage_uri("pvc://p/m", model_uri="minio://b/x", registry_record=rec)
        == "pvc://p/m"
    )
    assert resolve_storage_uri(None, model_uri="minio://b/x", registry_record=rec) == (
        "model-registry://m/v1"
    )
    assert resolve_storage_uri(None, model_uri="minio://b/x") == "s3://b/x"
    assert resolve_storage_uri(
        None, model_uri="gs://b/x", registry_record={"status": "skipped"}
    ) == ("gs://b/x")
    with pytest.raises(ConfigError, match="local path"):
        resolve_storage_uri(None, model_uri="/tmp/local/model")


def test_unknown_target():
    with pytest.raises(ConfigError, match="unknown deploy target"):
        make_target("docker")


def test_spec_from_scalar_options():
    spec = spec_from_options(
        "tiny",
        storage_uri="s3://b/m",
        namespace="",
        accelerator_count=0,
        max_model_len=0,
        tolerations='[{"key": "gpu", "operator": "Exists"}]',
        node_selector='{"pool": "a"}',
    )
    assert spec.namespace == "default" and spec.max_model_len is None
    assert spec.tolerations[0].key == "gpu" and spec.node_selector == {"pool": "a"}
    with pytest.raises(ConfigError, match="tolerations must be a JSON list"):
        spec_from_options("tiny", storage_uri="s3://b/m", tolerations="{}")
