"""Preflight checks that need no server: every failure reported at once, with its fix."""

import pytest

from modelgate.errors import ConfigError
from modelgate.params import ReleaseParams
from modelgate.preflight import PreflightError, cluster_checks, preflight, release_checks

pytestmark = pytest.mark.unit


def _offline(params: ReleaseParams, *, local: bool = True) -> dict:
    checks = release_checks(params, local=local)
    checks.pop("hub", None)  # the Hub is checked in the e2e tier against a mirror
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
