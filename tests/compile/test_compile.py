"""Compiled pipelines: no drift, valid PipelineSpec and kfp-kubernetes protos, gate wiring."""

import json

import pytest
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2
from kfp.pipeline_spec import pipeline_spec_pb2
from modelgate.pipelines import PIPELINE_MODULES, PIPELINES_DIR
from modelgate.pipelines.compile import drift, normalize

pytestmark = pytest.mark.compile


def load(name):
    return [d for d in yaml.safe_load_all((PIPELINES_DIR / f"{name}.yaml").read_text()) if d]


def test_committed_yaml_matches_source():
    problems = drift()
    assert not problems, "recompile with `make pipelines`:\n" + "\n".join(problems.values())


def test_normalize_strips_volatile_fields_only():
    a = normalize("sdkVersion: kfp-2.17.3\nroot: {x: 1}\n")
    b = normalize("sdkVersion: kfp-9.9.9\nroot: {x: 1}\n")
    c = normalize("sdkVersion: kfp-2.17.3\nroot: {x: 2}\n")
    assert a == b and a != c


@pytest.mark.parametrize("name", PIPELINE_MODULES)
def test_yaml_parses_into_pipeline_and_platform_protos(name):
    docs = load(name)
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    assert spec.pipeline_info.name.startswith("modelgate-")
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor, config in platform.items():
        json_format.ParseDict(config, kubernetes_executor_config_pb2.KubernetesExecutorConfig())
        assert executor in spec.deployment_spec["executors"]


def _all_tasks(spec):
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_release_gates_deploy_behind_the_gate_output():
    spec = load("release")[0]
    tasks = _all_tasks(spec)
    names = {t["taskInfo"]["name"]: key for key, t in tasks.items()}
    for step in (
        "download",
        "quantize",
        "register candidate",
        "evaluate base",
        "evaluate candidate",
        "quality gate",
        "deploy",
        "smoke test",
        "stop promotion",
    ):
        assert step in names, step
    # deploy lives only inside the gate-passed condition, stop promotion in the else branch
    conditions = {key: t.get("triggerPolicy", {}).get("condition", "") for key, t in tasks.items()}
    passed = [k for k, c in conditions.items() if "passed" in c and "!(" not in c]
    failed = [k for k, c in conditions.items() if "!(" in c]
    assert passed and failed
    assert "deploy-model" in spec["components"]["comp-" + passed[0]]["dag"]["tasks"]
    assert "stop-promotion" in spec["components"]["comp-" + failed[0]]["dag"]["tasks"]
    assert "deploy-model" not in spec["root"]["dag"]["tasks"]


def _run_param(name: str) -> str:
    """The run parameter a DAG input carries (the compiler's ``pipelinechannel--`` prefix)."""
    return name.removeprefix("pipelinechannel--")


def test_gpu_settings_are_run_parameters_of_the_types_the_driver_reads():
    """The KFP driver reads the accelerator count with GetStringValue(), tolerationJson as a
    struct or list and nodeSelectorJson as a struct (kubeflow/pipelines backend/src/v2/driver/
    resolve.go, k8s.go): the parameter types decide whether a GPU pod starts at all."""
    docs = load("release")
    spec, platform = docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["accelerator_type"]["parameterType"] == "STRING"
    assert params["accelerator_count"]["parameterType"] == "STRING"
    assert params["accelerator_count"]["defaultValue"] == "1"
    assert params["tolerations"]["parameterType"] == "LIST"
    assert params["node_selector"]["parameterType"] == "STRUCT"
    for executor in ("exec-evaluate-model", "exec-evaluate-model-2", "exec-quantize-model"):
        resources = spec["deploymentSpec"]["executors"][executor]["container"]["resources"]
        accel = resources["accelerator"]
        assert "{{$.inputs.parameters" in accel["resourceType"]
        assert "{{$.inputs.parameters" in accel["resourceCount"]
        cfg = platform[executor]
        # inside the exit handler's DAG a run parameter arrives as pipelinechannel--<name>
        toleration = cfg["tolerations"][0]["tolerationJson"]["componentInputParameter"]
        assert _run_param(toleration) == "tolerations"
        node_selector = cfg["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"]
        assert _run_param(node_selector) == "node_selector"
    secrets = {
        _run_param(s["secretNameParameter"]["componentInputParameter"]): s
        for s in platform["exec-download-model"]["secretAsEnv"]
    }
    assert secrets["hf_token_secret"]["keyToEnv"] == [{"secretKey": "token", "envVar": "HF_TOKEN"}]
    assert "model_store_secret" in secrets
    for name in (
        "model_id",
        "model_store",
        "revision",
        "quant_scheme",
        "eval_tasks",
        "thresholds",
        "deploy_target",
        "hf_token_secret",
        "model_store_secret",
    ):
        assert name in params, name


def test_components_use_the_images_module_and_no_kfp_install():
    from modelgate.images import BASE_IMAGE, EVAL_IMAGE

    spec = load("release")[0]
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        assert container["image"] in {BASE_IMAGE, EVAL_IMAGE}, name
        assert ":latest" not in container["image"]
        assert "pip install" not in json.dumps(container["command"]), name


@pytest.mark.parametrize(
    "pipeline, required",
    [("release", {"model_id", "model_store"}), ("redeploy", {"registered_model_name"})],
)
def test_pipeline_parameters_are_declared_once(pipeline, required):
    """Each pipeline's parameters are exactly its params model's, with its defaults."""
    from modelgate.params import PIPELINE_PARAMS, param_default

    model = PIPELINE_PARAMS[pipeline]
    params = load(pipeline)[0]["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(model.model_fields)
    for name, spec in params.items():
        if name in required:
            assert "defaultValue" not in spec, f"{name} must be given"
            continue
        assert spec["defaultValue"] == param_default(name, model), name


@pytest.mark.parametrize("name", PIPELINE_MODULES)
def test_steps_with_safe_side_effects_carry_a_retry_policy(name):
    """register, record, promote and rollback are retried (``task.set_retry``); the KFP backend
    compiles
    ``retryPolicy`` into the executor's Argo retryStrategy (backend/src/v2/compiler/argocompiler/
    container.go), and Argo reads the backoff factor as an integer."""
    from modelgate.pipelines.platform import (
        STEP_BACKOFF_FACTOR,
        STEP_RETRIES,
    )

    tasks = _all_tasks(load(name)[0])
    policies = {t["taskInfo"]["name"]: t.get("retryPolicy") for t in tasks.values()}
    retried = {step for step, policy in policies.items() if policy}
    expected = {"register candidate", "record evaluation", "promote", "rollback"} & set(policies)
    assert retried == expected and "promote" in retried
    for step in retried:
        assert policies[step] == {
            "maxRetryCount": STEP_RETRIES,
            "backoffDuration": "30s",
            "backoffFactor": float(STEP_BACKOFF_FACTOR),
            "backoffMaxDuration": "600s",
        }, step
    assert float(STEP_BACKOFF_FACTOR).is_integer()
    promote = next(t for t in tasks.values() if t["taskInfo"]["name"] == "promote")
    deployment = promote["inputs"]["parameters"]["deployment"]["taskOutputParameter"]
    assert deployment == {"outputParameterKey": "deployment", "producerTask": "deploy-model"}


@pytest.mark.parametrize("name", PIPELINE_MODULES)
def test_rollback_is_the_exit_handler_of_the_whole_run(name):
    """The rollback step runs after everything else, whatever happened: KFP compiles a
    ``dsl.ExitHandler`` into an exit task with ``triggerPolicy.strategy:
    ALL_UPSTREAM_TASKS_COMPLETED`` that depends on the handler's DAG and reads its
    ``taskFinalStatus`` (kfp ``compiler/pipeline_spec_builder.py``
    ``build_exit_handler_groups_recursively``; the backend turns it into the DAG's exit task in
    ``backend/src/v2/compiler/argocompiler/dag.go``)."""
    spec = load(name)[0]
    root = spec["root"]["dag"]["tasks"]
    rollback = next(t for t in root.values() if t["taskInfo"]["name"] == "rollback")
    (handler,) = (k for k, t in root.items() if t is not rollback)
    assert rollback["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert rollback["dependentTasks"] == [handler]
    inputs = rollback["inputs"]["parameters"]
    assert inputs["status"] == {"taskFinalStatus": {"producerTask": handler}}
    assert inputs["name"] == {"componentInputParameter": "deploy_name"}
    assert inputs["target"] == {"componentInputParameter": "deploy_target"}
    # every other step, deploy included, runs inside the handler's DAG
    inner = _all_tasks(spec)
    names = {t["taskInfo"]["name"] for k, t in inner.items() if k not in root}
    assert {"deploy", "smoke test", "serving gate", "promote"} <= names
    # the rollback finds what the deploy step stamped: both get the same run id
    deploy = next(t for t in inner.values() if t["taskInfo"]["name"] == "deploy")
    run_id = deploy["inputs"]["parameters"]["run_id"]
    assert run_id == inputs["run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}


@pytest.mark.parametrize("name", PIPELINE_MODULES)
def test_serving_gate_runs_between_smoke_test_and_promote(name):
    tasks = _all_tasks(load(name)[0])
    by_name = {t["taskInfo"]["name"]: (k, t) for k, t in tasks.items()}
    smoke_key = by_name["smoke test"][0]
    gate_key, gate = by_name["serving gate"]
    promote = by_name["promote"][1]
    assert smoke_key in gate["dependentTasks"]
    assert gate_key in promote["dependentTasks"]
    params = gate["inputs"]["parameters"]
    assert params["deployment"]["taskOutputParameter"]["producerTask"] == "deploy-model"
    assert _run_param(params["thresholds"]["componentInputParameter"]) == "thresholds"
