"""Naming policy: registered model names, versions and store keys."""

import pytest

from modelgate.errors import ConfigError
from modelgate.naming import (
    base_key,
    model_slug,
    quantized_key,
    recipe_fingerprint,
    registered_model_name,
    version_name,
)
from modelgate.registry import candidate_request

pytestmark = pytest.mark.unit
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    "repo_id, slug",
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama--llama-3.1-8b-instruct"),
        ("modelgate/tiny-llama", "modelgate--tiny-llama"),
        ("gpt2", "gpt2"),
        ("Org/Model Name+v2", "org--model-name-v2"),
    ],
)
def test_slugs_are_slash_free(repo_id, slug):
    assert model_slug(repo_id) == slug
    assert "/" not in registered_model_name(repo_id)


def test_explicit_registered_names_must_fit_the_registry_uri():
    assert registered_model_name("org/m", "my-model_1.0") == "my-model_1.0"
    with pytest.raises(ConfigError, match="no '/'.*'org--m'"):
        registered_model_name("x/y", "org/m")
    with pytest.raises(ConfigError, match="cannot derive"):
        model_slug("//")


def test_version_names_and_store_keys():
    assert version_name(scheme="FP8_DYNAMIC", commit_sha=SHA, run_id="ns/run-abcdef123456") == (
        "fp8_dynamic-0123456789ab-abcdef123456"
    )
    assert version_name(scheme="none", commit_sha=SHA, run_id=None).endswith("-local")
    assert base_key("org/M", SHA, fingerprint="f" * 12) == f"org--m/{SHA}/base-ffffffffffff"
    assert quantized_key("org/M", SHA, scheme="W4A16", fingerprint="a" * 12).endswith(
        "/w4a16-aaaaaaaaaaaa"
    )
    with pytest.raises(ConfigError, match="commit sha"):
        base_key("org/M", "main", fingerprint="f" * 12)
    assert recipe_fingerprint(a=1, b=[2]) == recipe_fingerprint(b=[2], a=1)
    assert recipe_fingerprint(a=1) != recipe_fingerprint(a=2)


def test_candidate_request_keeps_the_hub_id_as_lineage():
    request = candidate_request(
        model_uri="s3://b/org--m/x/fp8_dynamic-0123456789ab",
        repo_id="org/M",
        revision="main",
        commit_sha=SHA,
        scheme="FP8_DYNAMIC",
        pipeline_run_id="run-1",
        namespace="team-a",
    )
    assert request.model_name == "org--m"
    assert request.version_name == "fp8_dynamic-0123456789ab-run-1"
    assert request.uri.startswith("s3://")
    assert request.properties == {
        "source_repo": "org/M",
        "source_revision": "main",
        "source_commit": SHA,
        "quant_scheme": "FP8_DYNAMIC",
        "pipeline_run_id": "run-1",
        "namespace": "team-a",
    }


@pytest.mark.parametrize(
    "explicit, repo_id, registered, name",
    [
        ("my-svc", "org/model", None, "my-svc"),  # given: used as is
        ("", "org/Model_7B.v2", None, "org-model-7b-v2"),
        ("", "org/model", "team_chat.v1", "team-chat-v1"),  # the registered name wins
        ("", "7b/model", None, "m-7b-model"),  # DNS-1035 starts with a letter
    ],
)
def test_serving_names_are_one_per_registered_model(explicit, repo_id, registered, name):
    from modelgate.deploy.spec import DeploySpec
    from modelgate.naming import serving_name

    got = serving_name(explicit, repo_id=repo_id, registered=registered)
    assert got == name
    DeploySpec(name=got, storage_uri="s3://b/k")  # a valid InferenceService name


def test_long_serving_names_are_cut_and_stay_apart():
    from modelgate.naming import SERVING_NAME_MAX, serving_name

    a = serving_name("", repo_id="org/" + "a" * 80 + "-one")
    b = serving_name("", repo_id="org/" + "a" * 80 + "-two")
    assert len(a) == len(b) == SERVING_NAME_MAX
    assert a != b and a[:-6] == b[:-6]
    # KServe's canary Service name <name>-<canary>-predictor still fits a DNS-1035 label
    assert len(f"{a}-c123456-predictor") <= 63


def test_a_serving_name_needs_something_to_derive_from():
    from modelgate.naming import serving_name

    with pytest.raises(ConfigError, match="deploy_name"):
        serving_name("", repo_id="", registered=None)
