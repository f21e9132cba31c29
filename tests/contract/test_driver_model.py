"""Tests of the KFP v2 driver model (``kfp_driver``) on pipelines compiled by the real SDK.

Each "bug reintroduction" test compiles a pipeline written the way a real bug was (or would be)
written and asserts the model reports what the cluster would do with it; the matching "fixed"
spelling is asserted to resolve cleanly, so a model that reported everything would fail too.
"""

# ruff: noqa: B006 - mutable defaults of @dsl.pipeline functions are compiled, never mutated
# No ``from __future__ import annotations`` here: KFP reads the component and pipeline
# signatures below at runtime and cannot read string annotations (nor can pipelines/*.py).
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import pytest
from kfp import compiler, dsl, kubernetes

from tests.contract.kfp_driver import (
    DriverError,
    PodPlan,
    from_value,
    kind_of,
    load,
    parse_quantity,
    resolve_file,
    resolve_pipeline,
    root_values,
)

pytestmark = pytest.mark.contract

REPO_ROOT = Path(__file__).resolve().parents[2]
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@dsl.component(base_image="python:3.11")
def work(x: str = "") -> str:
    return x


@dsl.component(base_image="python:3.11")
def needs(x: str) -> str:
    return x


@dsl.component(base_image="python:3.11")
def maybe(x: Optional[str] = None) -> str:  # noqa: UP045 - KFP needs typing.Optional
    return x or ""


@dsl.component(base_image="python:3.11")
def gate() -> bool:
    return True


@dsl.component(base_image="python:3.11")
def listing() -> list:
    return ["a"]


@pytest.fixture
def resolve(tmp_path: Path) -> Callable[..., dict[str, PodPlan]]:
    """Compile ``pipeline`` with the real SDK, then resolve it with ``arguments``."""

    def run(pipeline: Callable, **arguments: Any) -> dict[str, PodPlan]:
        path = tmp_path / "pipeline.yaml"
        compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(path))
        return resolve_file(path, arguments)

    return run


def only(plans: dict[str, PodPlan], display_name: str = "work") -> PodPlan:
    """The one plan shown as ``display_name``."""
    (plan,) = (p for p in plans.values() if p.display_name == display_name)
    return plan


# (a) a JSON string for tolerationJson: the driver accepts only struct or list values


@dsl.pipeline(name="tolerations-as-string")
def tolerations_as_string(tolerations: str = "[]"):
    kubernetes.add_toleration_json(work(), tolerations)


@dsl.pipeline(name="tolerations-as-list")
def tolerations_as_list(tolerations: list = []):
    kubernetes.add_toleration_json(work(), tolerations)


@dsl.pipeline(name="toleration-as-dict")
def toleration_as_dict(toleration: dict = {}):
    kubernetes.add_toleration_json(work(), toleration)


@pytest.mark.parametrize("argument", [None, "[]", '[{"key": "nvidia.com/gpu"}]'])
def test_string_tolerations_fail_the_task(resolve, argument: str | None) -> None:
    arguments = {} if argument is None else {"tolerations": argument}
    plan = only(resolve(tolerations_as_string, **arguments))
    assert any(
        "encountered unexpected toleration proto value, must be either struct or list type" in e
        for e in plan.errors
    ), plan.errors
    assert plan.tolerations == []


# (d) a list parameter is what the driver wants


def test_list_tolerations_resolve(resolve) -> None:
    plan = only(resolve(tolerations_as_list, tolerations=[GPU_TOLERATION]))
    assert plan.errors == [] and plan.warnings == []
    assert plan.tolerations == [GPU_TOLERATION]
    assert only(resolve(tolerations_as_list)).tolerations == []  # empty list: nothing, no error


def test_struct_toleration_and_unknown_fields(resolve) -> None:
    plan = only(
        resolve(
            toleration_as_dict,
            toleration={**GPU_TOLERATION, "toleration_seconds": 5, "tolerationSeconds": 60},
        )
    )
    assert plan.errors == []
    assert plan.tolerations == [{**GPU_TOLERATION, "tolerationSeconds": 60}]
    assert any("'toleration_seconds' is not a k8s Toleration field" in w for w in plan.warnings)
    bad = only(resolve(tolerations_as_list, tolerations=[{"key": 1}, "nvidia.com/gpu"]))
    assert len(bad.errors) == 2, bad.errors


# (b) an int GPU count: resolvePodSpecInputRuntimeParameter reads only string_value


@dsl.pipeline(name="gpu-count-as-int")
def gpu_count_as_int(accelerator_count: int = 1):
    work().set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(accelerator_count)


@dsl.pipeline(name="gpu-count-as-str")
def gpu_count_as_str(accelerator_count: str = "1", accelerator_type: str = "nvidia.com/gpu"):
    work().set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)


@dsl.pipeline(name="gpu-count-constant")
def gpu_count_constant():
    work().set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(2)


def test_int_gpu_count_silently_gives_no_gpu(resolve) -> None:
    plan = only(resolve(gpu_count_as_int, accelerator_count=4))
    assert plan.errors == []
    assert plan.limits == {}
    assert any("no GPU limit" in w for w in plan.warnings), plan.warnings
    assert any("pipelinechannel--accelerator_count is a number_value" in w for w in plan.warnings)


def test_str_gpu_count_is_a_limit(resolve) -> None:
    plan = only(resolve(gpu_count_as_str))
    assert (plan.errors, plan.warnings) == ([], [])
    assert plan.limits == {"nvidia.com/gpu": "1"} and plan.requests == {}
    assert only(resolve(gpu_count_as_str, accelerator_count="2")).limits == {"nvidia.com/gpu": "2"}
    assert only(resolve(gpu_count_constant)).limits == {"nvidia.com/gpu": "2"}


def test_empty_gpu_type_or_bad_count(resolve) -> None:
    assert "accelerator skipped" in only(resolve(gpu_count_as_str, accelerator_type="")).warnings[0]
    plan = only(resolve(gpu_count_as_str, accelerator_count="one"))
    assert any("quantities must match" in e for e in plan.errors), plan.errors


# (c) a JSON string for nodeSelectorJson is dropped; a dict parameter works


@dsl.pipeline(name="selector-as-string")
def selector_as_string(node_selector: str = "{}"):
    kubernetes.add_node_selector_json(work(), node_selector)


@dsl.pipeline(name="selector-as-dict")
def selector_as_dict(node_selector: dict = {}):
    kubernetes.add_node_selector_json(work(), node_selector)


def test_string_node_selector_is_dropped(resolve) -> None:
    plan = only(resolve(selector_as_string, node_selector='{"pool": "gpu"}'))
    assert plan.errors == []
    assert plan.node_selector == {}
    assert any("node selector dropped" in w for w in plan.warnings), plan.warnings


def test_dict_node_selector_resolves(resolve) -> None:
    plan = only(resolve(selector_as_dict, node_selector={"pool": "gpu"}))
    assert (plan.errors, plan.warnings) == ([], [])
    assert plan.node_selector == {"pool": "gpu"}
    bad = only(resolve(selector_as_dict, node_selector={"gpus": 2}))
    assert any("cannot unmarshal number into Go value of type string" in e for e in bad.errors)


# (e) the API server checks root parameter kinds before anything runs


@dsl.pipeline(name="typed-parameters")
def typed_parameters(
    name: str,
    count: int = 1,
    ratio: float = 0.5,
    flag: bool = False,
    items: list = [],
    config: dict = {},
):
    work(x=name)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"name": 1},
            "input parameter name requires type string, but the input parameter is "
            "not of string value type",
        ),
        (
            {"name": "a", "count": "1"},
            "input parameter count requires type double or integer, "
            "but the parameter value is not of number value type",
        ),
        ({"name": "a", "flag": "true"}, "input parameter flag requires type bool"),
        ({"name": "a", "items": "[]"}, "input parameter items requires type list"),
        ({"name": "a", "config": "{}"}, "input parameter config requires type struct"),
        ({}, "parameter name is not optional, yet has neither default value nor user provided"),
        ({"name": "a", "nme": "b"}, "parameter(s) provided are not required by pipeline: nme"),
    ],
)
def test_api_server_rejects_mistyped_arguments(resolve, arguments: dict, message: str) -> None:
    with pytest.raises(DriverError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(typed_parameters, **arguments)


def test_root_values_fill_defaults(tmp_path: Path) -> None:
    compiler.Compiler().compile(typed_parameters, str(tmp_path / "p.yaml"))
    values = root_values(load(tmp_path / "p.yaml")[0], {"name": "a", "ratio": 2})
    assert {k: from_value(v) for k, v in values.items()} == {
        "name": "a",
        "count": 1.0,
        "ratio": 2.0,
        "flag": False,
        "items": [],
        "config": {},
    }


# (f) resource strings go through k8s ParseQuantity


@dsl.pipeline(name="cpu-from-parameter")
def cpu_from_parameter(cpu: str = "500m"):
    work().set_cpu_request(cpu).set_cpu_limit("2").set_memory_limit("4Gi")


def test_bad_cpu_request_fails(resolve, tmp_path: Path) -> None:
    good = only(resolve(cpu_from_parameter))
    assert good.errors == [] and good.requests == {"cpu": "500m"}
    assert good.limits == {"cpu": "2", "memory": "4Gi"}
    bad = only(resolve(cpu_from_parameter, cpu="abc"))
    assert any(
        "resourceCpuRequest: quantities must match the regular expression" in e for e in bad.errors
    ), bad.errors
    # the SDK refuses a constant "abc", but a hand-edited or foreign YAML can carry one
    docs = load(tmp_path / "pipeline.yaml")
    resources = docs[0]["deploymentSpec"]["executors"]["exec-work"]["container"]["resources"]
    resources["resourceCpuRequest"] = "abc"
    assert any("quantities must match" in e for e in only(resolve_pipeline(docs, {})).errors)
    del resources["resourceCpuRequest"]  # the deprecated float is formatted with Go's %v
    resources.update(cpuRequest=0.25, memoryRequest=1.5)
    assert only(resolve_pipeline(docs, {})).requests == {"cpu": "0.25", "memory": "1.5G"}


# (h) emptyDir mounts (k8s.go EmptyDirMounts): the size limit is parsed, nothing is resolved


@dsl.pipeline(name="shm")
def shm():
    task = work()
    kubernetes.empty_dir_mount(
        task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit="16Gi"
    )


def test_empty_dir_mounts(resolve, tmp_path: Path) -> None:
    plan = only(resolve(shm))
    assert (plan.errors, plan.warnings) == ([], [])
    assert plan.empty_dirs == [
        {"name": "dshm", "medium": "Memory", "size_limit": "16Gi", "mount_path": "/dev/shm"}
    ]
    docs = load(tmp_path / "pipeline.yaml")  # the SDK checks nothing: a foreign YAML can be bad
    executor = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-work"]
    executor["emptyDirMounts"][0]["sizeLimit"] = "16GB"
    (error,) = only(resolve_pipeline(docs, {})).errors
    assert error.startswith("failed to parse size limit '16GB' for emptyDir volume 'dshm'")


def test_unmodelled_platform_settings_are_reported(resolve, tmp_path: Path) -> None:
    resolve(shm)
    docs = load(tmp_path / "pipeline.yaml")
    executor = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-work"]
    executor["enabledSharedMemory"] = {"volumeName": "shm", "size": "1Gi"}
    plan = only(resolve_pipeline(docs, {}))
    assert plan.warnings == [
        "platform setting 'enabledSharedMemory' is not modelled: check it by hand"
    ]


# (i) retry policies: Argo reads the backoff factor as an integer


@dsl.pipeline(name="retried")
def retried():
    work().set_retry(num_retries=3, backoff_duration="30s", backoff_factor=2)
    capped = work().set_display_name("capped")
    capped.set_retry(num_retries=5, backoff_duration="1m", backoff_max_duration="5m")
    work().set_display_name("once")


@dsl.pipeline(name="fractional-backoff")
def fractional_backoff():
    work().set_retry(num_retries=3, backoff_duration="30s", backoff_factor=1.5)


def test_retry_policy_becomes_argo_retries(resolve) -> None:
    plans = resolve(retried)
    plan = only(plans)
    assert plan.errors == []
    assert plan.retry == {
        "limit": 3,
        "factor": 2,
        "duration_s": 30,
        "max_duration_s": 3600,  # the SDK's default
        "waits_s": [30, 60, 120],
    }
    assert only(plans, "capped").retry["waits_s"] == [60, 120]  # 60 + 120 + 240 > 300
    assert only(plans, "once").retry is None


def test_fractional_backoff_factor_fails_the_retry(resolve) -> None:
    plan = only(resolve(fractional_backoff))
    assert plan.errors == [
        "retryStrategy.factor: value '1.5' cannot be resolved to an int "
        "(Argo fails the step when it would retry it)"
    ]


@pytest.mark.parametrize("text", ["500m", "1", "0.5", "1.5Gi", "2e3", "+1", "100M", "1E"])
def test_quantities_accepted(text: str) -> None:
    assert parse_quantity(text) == text


@pytest.mark.parametrize("text", ["", "abc", "1.5.5", "1Gb", "1ki", "1 Gi"])
def test_quantities_refused(text: str) -> None:
    with pytest.raises(DriverError):
        parse_quantity(text)


# (g) caching


@dsl.pipeline(name="caching")
def caching():
    work(x="cached")
    work(x="fresh").set_caching_options(False).set_display_name("fresh")


def test_caching_options(resolve) -> None:
    plans = resolve(caching)
    assert only(plans).cache_enabled is True
    assert only(plans, "fresh").cache_enabled is False


# (h) secret names must resolve to non-empty strings


@dsl.pipeline(name="secret-env")
def secret_env(secret: str = "hf-token"):
    kubernetes.use_secret_as_env(
        work(), secret_name=secret, secret_key_to_env={"token": "HF_TOKEN"}, optional=True
    )


@dsl.pipeline(name="secret-env-int")
def secret_env_int(secret: int = 1):
    kubernetes.use_secret_as_env(work(), secret_name=secret, secret_key_to_env={"token": "T"})


def test_secret_names(resolve) -> None:
    good = only(resolve(secret_env))
    assert good.errors == []
    assert good.secret_env == [
        {"env": "HF_TOKEN", "secret": "hf-token", "key": "token", "optional": True}
    ]
    empty = only(resolve(secret_env, secret=""))
    assert empty.secret_env == []
    assert any(
        "failed to resolve secret name" in e and "Expected a non-empty string" in e
        for e in empty.errors
    ), empty.errors
    number = only(resolve(secret_env_int))
    assert any(
        "Expected a string but got: *structpb.Value_NumberValue" in e for e in number.errors
    ), number.errors


# (i) inside dsl.If, tasks read the condition DAG's pipelinechannel--x parameters


@dsl.pipeline(name="conditional")
def conditional(
    tolerations: list = [],
    node_selector: dict = {},
    accelerator_count: str = "1",
    bad_tolerations: str = "[]",
):
    with dsl.If(gate().output == True, name="gpu"):  # noqa: E712 - KFP DSL
        # x=accelerator_count makes the compiler pass it into the condition DAG (see below)
        task = work(x=accelerator_count).set_accelerator_type("nvidia.com/gpu")
        task.set_accelerator_limit(accelerator_count)
        kubernetes.add_toleration_json(task, tolerations)
        kubernetes.add_node_selector_json(task, node_selector)
    with dsl.Else(name="cpu"):
        kubernetes.add_toleration_json(
            work(x="other branch").set_display_name("other"), bad_tolerations
        )


def test_condition_sub_dag(resolve, tmp_path: Path) -> None:
    plans = resolve(
        conditional,
        tolerations=[GPU_TOLERATION],
        node_selector={"pool": "gpu"},
        accelerator_count="2",
    )
    plan = only(plans)
    assert plan.path == "condition-branches-1/condition-2/work"
    assert plan.executor == "exec-work"
    assert (plan.errors, plan.warnings) == ([], [])
    assert plan.tolerations == [GPU_TOLERATION]
    assert plan.node_selector == {"pool": "gpu"}
    assert plan.limits == {"nvidia.com/gpu": "2"}
    # the platform config names the condition DAG's parameter, not a root one
    k8s = load(tmp_path / "pipeline.yaml")[1]["platforms"]["kubernetes"]["deploymentSpec"]
    assert k8s["executors"]["exec-work"]["tolerations"][0]["tolerationJson"] == {
        "componentInputParameter": "pipelinechannel--tolerations"
    }
    # every branch is resolved: the else branch carries its own bug
    assert any("unexpected toleration proto value" in e for e in only(plans, "other").errors)


@dsl.pipeline(name="gpu-count-only-in-condition")
def gpu_count_only_in_condition(accelerator_count: str = "1"):
    with dsl.If(gate().output == True):  # noqa: E712
        work().set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(accelerator_count)


def test_resource_only_parameter_does_not_reach_a_condition(resolve) -> None:
    """kfp 2.17.3 does not pass a parameter used only by set_accelerator_limit into the dsl.If
    DAG, while the task still binds pipelinechannel--accelerator_count to it: the driver fails.
    Passing the parameter to a component input of a task in the branch works around it."""
    plan = only(resolve(gpu_count_only_in_condition))
    assert any(
        "parent DAG does not have input parameter pipelinechannel--accelerator_count" in e
        for e in plan.errors
    ), plan.errors


@dsl.pipeline(name="loop")
def loop(names: list = ["a", "b"], toleration: dict = {}):
    with dsl.ParallelFor(names) as name:
        kubernetes.add_toleration_json(work(x=name), toleration)
    with dsl.ParallelFor(listing().output) as item:  # a task output: a typed placeholder
        work(x=item).set_display_name("other")


def test_parallel_for(resolve) -> None:
    plans = resolve(loop, toleration=GPU_TOLERATION)
    plan = only(plans)
    assert plan.errors == [] and plan.tolerations == [GPU_TOLERATION]
    assert from_value(plan.inputs["x"]) == "a"
    other = only(plans, "other")
    assert other.errors == [] and from_value(other.inputs["x"]) == "<loop item>"


# (j) optional parameters without a default resolve to null


@dsl.pipeline(name="optional-secret")
def optional_secret(secret: Optional[str] = None):  # noqa: UP045
    kubernetes.use_secret_as_env(work(), secret_name=secret, secret_key_to_env={"token": "T"})


@dsl.pipeline(name="optional-pvc")
def optional_pvc(pvc: Optional[str] = None):  # noqa: UP045
    kubernetes.mount_pvc(work(), pvc_name=pvc, mount_path="/data")


@dsl.pipeline(name="optional-inputs")
def optional_inputs(value: Optional[str] = None):  # noqa: UP045
    maybe(x=value).set_display_name("maybe")
    needs(x=value).set_display_name("needs")


@dsl.pipeline(name="optional-in-condition")
def optional_in_condition(value: Optional[str] = None):  # noqa: UP045
    with dsl.If(gate().output == True):  # noqa: E712
        maybe(x=value).set_display_name("maybe")


def test_optional_parameters_are_null(resolve) -> None:
    skipped = only(resolve(optional_secret))
    assert skipped.errors == [] and skipped.secret_env == []
    assert any("secret skipped" in w for w in skipped.warnings)
    assert only(resolve(optional_secret, secret="s")).secret_env[0]["secret"] == "s"

    pvc = only(resolve(optional_pvc))
    assert any("failed to resolve pvc name" in e and "null" in e for e in pvc.errors), pvc.errors
    assert only(resolve(optional_pvc, pvc="data")).pvc_mounts == [
        {"pvc": "data", "mount_path": "/data"}
    ]

    plans = resolve(optional_inputs)
    assert only(plans, "maybe").errors == [] and "x" not in only(plans, "maybe").inputs
    assert any(
        "the resolved input parameter is null: value" in e for e in only(plans, "needs").errors
    )
    given = resolve(optional_inputs, value="v")
    assert kind_of(only(given, "needs").inputs["x"]) == "string_value"
    assert only(given, "needs").errors == []

    # the condition DAG declares pipelinechannel--value as required, so its DAG driver fails
    nested = only(resolve(optional_in_condition), "maybe")
    assert any(e.startswith("DAG ") and "null: value" in e for e in nested.errors), nested.errors
    assert only(resolve(optional_in_condition, value="v"), "maybe").errors == []


# every pipeline the project compiles must be resolvable by the model


def _sample_arguments(spec: dict) -> dict[str, Any]:
    samples = {
        "STRING": "x",
        "NUMBER_INTEGER": 1,
        "NUMBER_DOUBLE": 1.0,
        "BOOLEAN": True,
        "LIST": [],
        "STRUCT": {},
    }
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return {
        name: samples[p["parameterType"]]
        for name, p in parameters.items()
        if not p.get("isOptional") and "defaultValue" not in p
    }


@pytest.mark.parametrize(
    "path", sorted((REPO_ROOT / "pipelines").glob("*.yaml")), ids=lambda p: p.name
)
def test_project_pipelines_are_resolvable(path: Path) -> None:
    docs = load(path)
    plans = resolve_pipeline(copy.deepcopy(docs), _sample_arguments(docs[0]))
    container_executors = {
        label for label, e in docs[0]["deploymentSpec"]["executors"].items() if "container" in e
    }
    assert {p.executor for p in plans.values()} == container_executors
