"""Every compiled pipeline, resolved the way the KFP v2 driver resolves it (``kfp_driver``).

kfp.local ignores platform settings, resources and caching; these tests read what a cluster
would do with the committed YAML, for the run arguments users give in the UI or the API:

* GPU steps get the GPUs, tolerations and node selector the user asked for (the driver reads
  the accelerator count with ``GetStringValue()``, ``tolerationJson`` as struct or list,
  ``nodeSelectorJson`` as a struct: kubeflow/pipelines ``backend/src/v2/driver/resolve.go`` and
  ``k8s.go``, as modelled in ``kfp_driver``);
* every pod requests CPU and memory, and the steps that hold a model get a work volume;
* caching is off where a cached result would be wrong (side effects, moving revisions);
* GPU steps get a memory-backed ``/dev/shm`` (``k8s.go`` EmptyDirMounts): a container's own is
  64 MiB, too small for vLLM's tensor parallelism;
* steps whose side effects are safe to repeat are retried by Argo (``retryPolicy``, as
  ``v2/compiler/argocompiler/container.go`` compiles it), and nothing else is;
* models travel as store URIs (strings), never as artifacts through the artifact store.
"""

from __future__ import annotations

import pytest
from modelgate.pipelines import PIPELINE_MODULES, PIPELINES_DIR

from modelgate.placement import Placement
from tests.contract.kfp_driver import PodPlan, load, resolve_file

pytestmark = pytest.mark.contract

TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
#: the parameters each pipeline cannot run without
REQUIRED = {
    "release": {"model_id": "org/model", "model_store": "s3://models/modelgate"},
    "redeploy": {"registered_model_name": "org--model"},
}
#: what a platform engineer enters for a 2-GPU H100 pool (UI: LIST/STRUCT parameters are JSON)
GPU_SETTINGS = {
    "accelerator_count": "2",
    "tolerations": [TOLERATION],
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
}
#: steps whose result must not come from KFP's cache
UNCACHED = {
    "resolve version",
    "production version",
    "promote",
    "preflight",
    "download",
    "register candidate",
    "record evaluation",
    "deploy",
    "smoke test",
    "serving gate",
    "rollback",
    "stop promotion",
}
GPU_STEPS = {"quantize", "evaluate base", "evaluate candidate"}
#: steps with external side effects that are safe to repeat: Argo retries them
RETRIED = {"register candidate", "record evaluation", "promote", "rollback"}
#: Display-name prefix of each step that holds a model on disk -> the placement step it runs with
#: (the package step builds modelcars with the download step's resources and work volume).
MODEL_STEPS = {
    "download": "download",
    "quantize": "quantize",
    "evaluate": "evaluate",
    "package": "download",
}


def _plans(name: str, arguments: dict | None = None) -> list[PodPlan]:
    """The pods of pipeline ``name`` for its required arguments plus ``arguments``."""
    args = {**REQUIRED[name], **(arguments or {})}
    return list(resolve_file(PIPELINES_DIR / f"{name}.yaml", args).values())


@pytest.fixture(scope="module", params=PIPELINE_MODULES)
def pipeline(request) -> str:
    return request.param


@pytest.mark.parametrize("arguments", [{}, GPU_SETTINGS], ids=["defaults", "gpu-pool"])
def test_the_driver_accepts_every_task_and_drops_nothing(pipeline, arguments):
    for plan in _plans(pipeline, arguments):
        assert not plan.errors, (plan.display_name, plan.errors)
        assert not plan.warnings, (plan.display_name, plan.warnings)


def test_gpu_steps_get_what_the_user_asked_for(pipeline):
    plans = {p.display_name: p for p in _plans(pipeline, GPU_SETTINGS)}
    gpu_steps = GPU_STEPS & set(plans)
    assert gpu_steps, "a pipeline without GPU steps"
    for name in gpu_steps:
        plan = plans[name]
        assert plan.limits.get("nvidia.com/gpu") == "2", (name, plan.limits)
        assert plan.tolerations == [TOLERATION], name
        assert plan.node_selector == GPU_SETTINGS["node_selector"], name
    for name, plan in plans.items():
        if name not in gpu_steps:
            assert "nvidia.com/gpu" not in plan.limits, name


@pytest.mark.parametrize("arguments", [{}, GPU_SETTINGS, {"accelerator_count": "0"}])
def test_gpu_steps_get_a_memory_backed_dev_shm(pipeline, arguments):
    plans = {p.display_name: p for p in _plans(pipeline, arguments)}
    assert GPU_STEPS & set(plans)
    for name, plan in plans.items():
        shm = [v for v in plan.empty_dirs if v["mount_path"] == "/dev/shm"]
        if name not in GPU_STEPS:
            assert not shm, name
            continue
        assert shm == [
            {"name": "dshm", "medium": "Memory", "size_limit": "16Gi", "mount_path": "/dev/shm"}
        ], name
        assert not {v["name"] for v in plan.ephemeral_volumes} & {"dshm"}, name


def test_steps_with_safe_side_effects_are_retried(pipeline):
    plans = {p.display_name: p for p in _plans(pipeline, GPU_SETTINGS)}
    retried = {name for name, plan in plans.items() if plan.retry is not None}
    assert retried == RETRIED & set(plans) and "promote" in retried
    for name in retried:
        retry = plans[name].retry
        assert retry is not None and not plans[name].errors
        assert (retry["limit"], retry["factor"], retry["waits_s"]) == (3, 2, [30, 60, 120]), name


def test_defaults_request_one_gpu_of_the_default_type(pipeline):
    for plan in _plans(pipeline):
        if plan.display_name in GPU_STEPS:
            assert plan.limits.get("nvidia.com/gpu") == "1", plan.display_name
            assert plan.tolerations == [] and plan.node_selector == {}


def test_every_pod_requests_cpu_and_memory_and_heavy_steps_get_a_work_volume(pipeline):
    placement = Placement()
    for plan in _plans(pipeline):
        assert plan.requests.get("cpu") and plan.requests.get("memory"), plan.display_name
        assert plan.limits.get("memory"), plan.display_name
        step = next((s for k, s in MODEL_STEPS.items() if plan.display_name.startswith(k)), None)
        if step is None:
            assert not plan.ephemeral_volumes, plan.display_name
            continue
        (volume,) = plan.ephemeral_volumes
        assert volume["size"] == placement.resources(step).work_volume
        assert volume["mount_path"] == "/mnt/work"
        assert plan.requests["memory"] == placement.resources(step).memory


def test_caching_is_off_where_a_cached_result_would_be_wrong(pipeline):
    for plan in _plans(pipeline):
        if plan.display_name in UNCACHED:
            assert not plan.cache_enabled, plan.display_name


def test_steps_that_touch_the_model_store_get_its_secret(pipeline):
    for plan in _plans(pipeline):
        envs = {e["env"]: e for e in plan.secret_env}
        if any(plan.display_name.startswith(k) for k in MODEL_STEPS):
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
                assert envs[key]["secret"] == "modelgate-model-store", plan.display_name
                assert envs[key]["optional"] is True
        if plan.display_name in ("download", "evaluate base", "evaluate candidate"):
            assert envs["HF_TOKEN"]["secret"] == "hf-token"


def test_models_travel_as_store_uris_not_artifacts(pipeline):
    spec = load(PIPELINES_DIR / f"{pipeline}.yaml")[0]
    for name, comp in spec["components"].items():
        for direction in ("inputDefinitions", "outputDefinitions"):
            for art in (comp.get(direction) or {}).get("artifacts", {}).values():
                assert art["artifactType"]["schemaTitle"] != "system.Model", name
    params = spec["root"]["inputDefinitions"]["parameters"]
    for name in REQUIRED[pipeline]:
        assert params[name]["parameterType"] == "STRING"
        assert "defaultValue" not in params[name], f"{name} must be given"
