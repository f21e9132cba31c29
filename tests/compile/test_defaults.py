"""One source per knob: every component default that a pipeline parameter feeds equals that
parameter's default in :mod:`modelgate.params`.

Component signatures must hold literals (KFP ships the function's source into the pod), so
they repeat the params model's defaults; this reads the compiled YAML to find which component
input each pipeline parameter feeds and compares the two defaults.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from modelgate.pipelines import PIPELINE_MODULES, package_file

from modelgate.params import PIPELINE_PARAMS, param_default

pytestmark = pytest.mark.compile


def _spec(name: str) -> dict[str, Any]:
    return next(d for d in yaml.safe_load_all(package_file(name).read_text()) if "root" in d)


def _fed_inputs(spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(component, its input, the pipeline parameter feeding it), through every sub-DAG.

    A condition's sub-DAG re-declares the parameters it passes down under ``pipelinechannel--``
    names; they are followed back to the root parameter.
    """
    root_params = set(spec["root"].get("inputDefinitions", {}).get("parameters", {}))
    found = []

    def walk(dag_owner: dict[str, Any], aliases: dict[str, str]) -> None:
        for task in dag_owner.get("dag", {}).get("tasks", {}).values():
            ref = task["componentRef"]["name"]
            component = spec["components"][ref]
            for input_name, value in task.get("inputs", {}).get("parameters", {}).items():
                source = value.get("componentInputParameter")
                parameter = aliases.get(source or "")
                if parameter is None:
                    continue
                if "dag" in component:
                    continue
                found.append((ref, input_name, parameter))
            if "dag" in component:
                inner = {}
                for input_name, value in task.get("inputs", {}).get("parameters", {}).items():
                    source = value.get("componentInputParameter")
                    if source in aliases:
                        inner[input_name] = aliases[source]
                walk(component, inner)

    walk(spec["root"], {p: p for p in root_params})
    return found


@pytest.mark.parametrize("pipeline", PIPELINE_MODULES)
def test_component_defaults_equal_the_params_model(pipeline):
    spec = _spec(pipeline)
    model = PIPELINE_PARAMS[pipeline]
    fed = _fed_inputs(spec)
    assert len(fed) > 20, "the walk found too few wired inputs to mean anything"
    mismatches = []
    for component, input_name, parameter in fed:
        inputs = spec["components"][component].get("inputDefinitions", {}).get("parameters", {})
        declared = inputs.get(input_name)  # absent: a channel the pod spec reads (GPU count)
        if declared is None or "defaultValue" not in declared:
            continue
        want = param_default(parameter, model)
        got = declared["defaultValue"]
        if isinstance(want, str) and declared.get("parameterType") == "NUMBER_INTEGER":
            want = int(want)
        if got != want:
            mismatches.append(f"{component}.{input_name} = {got!r}, {parameter} = {want!r}")
    assert not mismatches, "component defaults differ from modelgate.params:\n" + "\n".join(
        mismatches
    )
