"""Placement: the one declaration of GPUs, scheduling and per-step resources."""

import pytest

from modelgate.errors import ConfigError
from modelgate.placement import (
    GPU_STEPS,
    HEAVY_STEPS,
    QUANTITY,
    Placement,
    placement_from_options,
)

pytestmark = pytest.mark.unit


def _bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity)


def test_defaults_fit_an_8b_model():
    placement = Placement()
    weights = 8e9 * 2  # bf16
    for step in HEAVY_STEPS:
        assert _bytes(placement.resources(step).work_volume) > 2 * weights, step
    # quantize keeps the whole model in host memory while calibrating
    assert _bytes(placement.resources("quantize").memory) > 2 * weights
    assert placement.accelerator_count == 1 and placement.accelerator_type == "nvidia.com/gpu"
    assert set(GPU_STEPS) <= set(placement.steps)


def test_every_step_requests_cpu_and_memory_within_its_limits():
    for step, res in Placement().steps.items():
        assert QUANTITY.match(res.cpu) and QUANTITY.match(res.memory), step
        if res.memory_limit:
            assert _bytes(res.memory_limit) >= _bytes(res.memory), step


def test_count_comes_as_a_string_from_kfp():
    assert placement_from_options(accelerator_count="2").accelerator_count == 2
    assert placement_from_options(accelerator_count=" 0 ").tensor_parallel_size == 1
    with pytest.raises(ConfigError, match="whole number of GPUs"):
        placement_from_options(accelerator_count="two")
    with pytest.raises(ConfigError, match="accelerator_count"):
        placement_from_options(accelerator_count="-1")


def test_structured_options_as_values_or_text():
    tol = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert placement_from_options(tolerations=tol).toleration_dicts() == tol
    assert (
        placement_from_options(tolerations="- {key: a, operator: Exists}").tolerations[0].key == "a"
    )
    assert placement_from_options(node_selector='{"pool": "gpu"}').node_selector == {"pool": "gpu"}
    with pytest.raises(ConfigError, match="tolerations must be a list.*example"):
        placement_from_options(tolerations='{"key": "a"}')
    with pytest.raises(ConfigError, match="node_selector must be a mapping"):
        placement_from_options(node_selector="[1]")
    with pytest.raises(ConfigError, match="operator"):
        placement_from_options(tolerations=[{"operator": "Maybe"}])


def test_step_overrides_are_partial_and_validated():
    placement = placement_from_options(steps={"serve": {"memory": "80Gi"}})
    assert placement.resources("serve").memory == "80Gi"
    assert placement.resources("serve").cpu == Placement().resources("serve").cpu
    assert Placement(steps={"quantize": {"cpu": "32"}}).resources("download").cpu == "2"
    with pytest.raises(ConfigError, match="not a Kubernetes quantity"):
        placement_from_options(steps={"serve": {"memory": "lots"}})
    with pytest.raises(ConfigError, match="resource name"):
        placement_from_options(accelerator_type="NVIDIA GPU")
