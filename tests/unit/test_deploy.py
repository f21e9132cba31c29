"""Deploy spec, shared vLLM arguments, and the storage-URI policy of the deploy step."""

import pytest
from pydantic import ValidationError

from modelgate.deploy import DeploySpec, make_target, vllm_args
from modelgate.deploy.plan import storage_uri_for
from modelgate.deploy.spec import deployment_mode_for
from modelgate.errors import ConfigError
from modelgate.placement import Placement

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


@pytest.mark.parametrize("gpus, expected", [(0, None), (1, None), (2, "2"), (8, "8")])
def test_tensor_parallel_size_is_the_gpus_of_a_replica(gpus, expected):
    spec = DeploySpec(
        name="tiny", storage_uri="s3://b/m", placement=Placement(accelerator_count=gpus)
    )
    tp = [a for a in vllm_args(spec) if a.startswith("--tensor-parallel-size")]
    assert tp == ([f"--tensor-parallel-size={expected}"] if expected else [])


@pytest.mark.parametrize("name", ["Tiny", "1tiny", "tiny_fp8", "tiny-", ""])
def test_invalid_names_are_rejected_with_a_hint(name):
    with pytest.raises(ValidationError):
        DeploySpec(name=name, storage_uri="s3://b/m")


def test_unknown_fields_and_bad_tolerations_are_rejected():
    with pytest.raises(ValidationError):
        DeploySpec(name="a", storage_uri="s3://b", storageURI="x")
    with pytest.raises(ValidationError):
        DeploySpec(
            name="a", storage_uri="s3://b", placement={"tolerations": [{"operator": "Maybe"}]}
        )


@pytest.mark.parametrize(
    "version, mode",
    [
        ("0.15.2", "RawDeployment"),
        ("0.16", "Standard"),
        ("v0.20.0", "Standard"),
        ("1.0", "Standard"),
    ],
)
def test_deployment_mode_is_named_as_the_kserve_release_names_it(version, mode):
    assert deployment_mode_for(version) == mode


REGISTERED = {"status": "registered", "model_name": "org--m", "version_name": "fp8-abc-run1"}


def test_kserve_serves_the_stored_uri_by_default():
    uri = "s3://models/org--m/abc/fp8_dynamic-0123456789ab"
    assert storage_uri_for(model_uri=uri, target="kserve", registry_record=REGISTERED) == uri


def test_explicit_storage_uri_wins_but_must_be_fetchable():
    assert (
        storage_uri_for(model_uri="s3://b/x", target="kserve", explicit="pvc://claim/m")
        == "pvc://claim/m"
    )
    with pytest.raises(ConfigError, match="cannot be fetched by the kserve target"):
        storage_uri_for(model_uri="s3://b/x", target="kserve", explicit="minio://b/x")


def test_registry_uri_only_when_its_artifact_is_fetchable():
    assert (
        storage_uri_for(
            model_uri="s3://b/x", target="kserve", registry_record=REGISTERED, prefer_registry=True
        )
        == "model-registry://org--m/fp8-abc-run1"
    )
    with pytest.raises(ConfigError, match="not one KServe can fetch"):
        storage_uri_for(
            model_uri="file:///data/m",
            target="kserve",
            registry_record=REGISTERED,
            prefer_registry=True,
        )
    with pytest.raises(ConfigError, match="needs a registered version"):
        storage_uri_for(
            model_uri="s3://b/x",
            target="kserve",
            registry_record={"status": "skipped"},
            prefer_registry=True,
        )


@pytest.mark.parametrize(
    "uri, message",
    [
        ("file:///data/model", "local folder .* a cluster cannot read"),
        ("minio://mlpipeline/v2/artifacts/x", "cannot be fetched by the kserve target"),
        ("/tmp/local/model", "cannot be fetched by the kserve target"),
    ],
)
def test_uris_a_cluster_cannot_fetch_are_refused(uri, message):
    with pytest.raises(ConfigError, match=message):
        storage_uri_for(model_uri=uri, target="kserve")


def test_local_target_serves_store_uris():
    assert storage_uri_for(model_uri="file:///m", target="local") == "file:///m"
    assert storage_uri_for(model_uri="s3://b/m", target="local") == "s3://b/m"


def test_unknown_target():
    with pytest.raises(ConfigError, match="unknown deploy target"):
        make_target("docker")
