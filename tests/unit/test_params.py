"""Release parameters: one declaration, params files, precedence and error messages."""

import json
import re

import pytest

from modelgate.errors import ConfigError
from modelgate.params import (
    PARAM_HELP,
    PARAM_NAMES,
    ReleaseParams,
    load_params_file,
    resolve_params,
)

pytestmark = pytest.mark.unit


def test_every_parameter_of_every_pipeline_has_help():
    from modelgate.params import PIPELINE_PARAMS

    names = {n for model in PIPELINE_PARAMS.values() for n in model.model_fields}
    assert set(PARAM_HELP) == names and set(PARAM_NAMES) <= names


def test_yaml_structures_become_pipeline_values(tmp_path):
    path = tmp_path / "release.yaml"
    path.write_text(
        """
model_id: org/model
accelerator_count: 2
tolerations:
  - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
node_selector: {pool: h100}
thresholds:
  thresholds:
    - {task: arc_easy, metric: acc, min: 0.5}
"""
    )
    args = resolve_params(file=path).arguments()
    assert args["accelerator_count"] == "2"  # the driver reads a string
    assert args["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert args["node_selector"] == {"pool": "h100"}
    assert json.loads(args["thresholds"])["thresholds"][0]["min"] == 0.5


def test_flags_override_the_file_which_overrides_the_base(tmp_path):
    path = tmp_path / "release.yaml"
    path.write_text("model_id: org/a\neval_limit: 100\ndeploy_target: kserve\n")
    params = resolve_params(
        file=path,
        base={"deploy_target": "local", "eval_backend": "hf"},
        overrides={"eval_limit": 5},
    )
    assert (params.model_id, params.eval_limit) == ("org/a", 5)
    assert params.deploy_target == "kserve" and params.eval_backend == "hf"


@pytest.mark.parametrize(
    "text, message",
    [
        ("eval_task: arc_easy\n", "unknown key 'eval_task' (did you mean 'eval_tasks'?)"),
        ("eval_limit: many\n", "eval_limit: Input should be a valid integer"),
        ("tolerations: [{operator: Maybe}]\n", "operator"),
        ("- model_id\n", "must be a mapping"),
        ("model_id: [unclosed\n", "is not YAML/JSON"),
    ],
)
def test_bad_files_name_the_key(tmp_path, text, message):
    path = tmp_path / "release.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_params_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_params(file=tmp_path / "nope.yaml")


def test_defaults_are_those_of_a_cluster_release():
    params = ReleaseParams()
    assert params.deploy_target == "kserve" and params.accelerator_count == "1"
    assert params.tolerations == [] and params.node_selector == {}
