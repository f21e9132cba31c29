"""The CLI as its users read it: panels, defaults, choices, output formats, one data folder."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from typer.testing import CliRunner

from modelgate import __version__
from modelgate.cli import app
from modelgate.errors import ConfigError
from modelgate.params import ALL_PARAM_NAMES, DEFAULT_THRESHOLDS, PARAM_GROUPS, RedeployParams
from modelgate.paths import HOME_ENV

pytestmark = pytest.mark.unit
runner = CliRunner()


def _help(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"modelgate {__version__}"


def test_run_help_groups_options_in_panels_and_shows_every_default():
    text = _help("run")
    for panel in ("Model options", "Quantize options", "Evaluate options", "Gate options"):
        assert panel in text
    assert "Cluster options" not in text  # cluster-only options do not clutter local runs
    assert "--tolerations" not in text and "--hf-token-secret" not in text
    assert "[default: FP8_DYNAMIC]" in text  # Rich used to eat the quoted default as markup
    assert "[default: local]" in text  # a local run deploys here
    # choices shown as choices
    assert "[none|FP8_DYNAMIC|FP8_BLOCK|W8A8|W4A16|AWQ|NVFP4A16|NVFP4]" in text
    shown = sum(1 for name in ALL_PARAM_NAMES if f"--{name.replace('_', '-')}" in text)
    assert shown >= 25


def test_cluster_commands_show_cluster_options_and_not_local_ones():
    text = _help("submit")
    assert "Cluster options" in text and "--tolerations" in text
    assert "--vllm-python" not in text
    assert "-n, --namespace" in text or "--namespace -n" in text or "-n" in text
    assert "--serving-namespace" in text and "--endpoint" in text and "--dry-run" in text


@pytest.mark.parametrize("flag", ["--config", "--thresholds"])
def test_gate_config_has_one_name_everywhere(tmp_path, flag):
    bad = '{"thresholds": [{"task": "t", "metrc": "acc", "min": 0.5}]}'
    result = runner.invoke(
        app, ["run", "--model-id", "org/m", flag, bad, "--pipeline-root", str(tmp_path)]
    )
    assert isinstance(result.exception, ConfigError)
    assert "unknown key 'thresholds.0.metrc' (did you mean 'metric'?)" in str(result.exception)


def test_a_key_of_the_other_pipeline_is_named_as_such(tmp_path):
    params = tmp_path / "redeploy.yaml"
    params.write_text("registered_model_name: m\nmodel_store: s3://b/p\n")
    result = runner.invoke(app, ["preflight", "--pipeline", "redeploy", "--params", str(params)])
    assert isinstance(result.exception, ConfigError)
    message = str(result.exception)
    assert "'model_store' is a parameter of the release pipeline, not of redeploy" in message
    assert "model_store_secret" not in message


def test_choices_are_validated_with_the_closest_name():
    with pytest.raises(Exception, match=r"unknown quant scheme 'w4a16'. Did you mean 'W4A16'"):
        from modelgate.params import ReleaseParams

        ReleaseParams(quant_scheme="w4a16")


def test_local_runs_share_one_data_folder_whatever_the_directory(tmp_path, monkeypatch):
    from modelgate.cli.local import with_local_store
    from modelgate.params import ReleaseParams
    from modelgate.paths import local_pipeline_root

    monkeypatch.delenv(HOME_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    urls = set()
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        params = with_local_store(ReleaseParams(model_id="org/m"), local_pipeline_root())
        urls.add((params.registry_url, params.model_store))
    assert len(urls) == 1
    registry, store = urls.pop()
    if os.name == "posix" and not os.uname().sysname == "Darwin":
        assert registry.endswith(str(tmp_path / "xdg" / "modelgate" / "registry" / "mlflow.db"))
        assert store == (tmp_path / "xdg" / "modelgate" / "model-store").as_uri()
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "mine"))
    assert local_pipeline_root() == tmp_path / "mine"


def test_submit_dry_run_prints_the_arguments_with_their_types():
    result = runner.invoke(
        app,
        ["submit", "--dry-run", "-o", "json", "--model-id", "org/m", "-n", "team"]
        + ["--serving-namespace", "serving", "--accelerator-count", "2"],
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["namespace"] == "team"
    arguments = plan["arguments"]
    assert arguments["namespace"] == {"type": "STRING", "value": "serving"}
    assert arguments["accelerator_count"] == {"type": "STRING", "value": "2"}
    assert arguments["tolerations"]["type"] == "LIST"
    assert arguments["node_selector"]["type"] == "STRUCT"
    assert arguments["eval_limit"]["type"] == "NUMBER_INTEGER"
    assert arguments["thresholds"]["value"] == DEFAULT_THRESHOLDS


def test_preflight_output_json_lists_every_check(tmp_path):
    result = runner.invoke(
        app,
        ["preflight", "--local", "-o", "json", "--model-id", "", "--quant-scheme", "none"],
    )
    assert isinstance(result.exception, ConfigError)
    data = json.loads(result.stdout)
    assert data["passed"] is False
    failed = [c for c in data["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["model"] and "no model id" in failed[0]["detail"]


def test_render_takes_a_params_file_with_run_option_names(tmp_path):
    params = tmp_path / "release.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "deploy_name": "from-file",
                "storage_uri": "s3://models/m/",
                "accelerator_count": 2,
                "max_model_len": 4096,
            }
        )
    )
    result = runner.invoke(app, ["render", "--params", str(params), "--serving-namespace", "ml"])
    assert result.exit_code == 0, result.output
    isvc = yaml.safe_load(result.output)
    assert isvc["metadata"] == {**isvc["metadata"], "name": "from-file", "namespace": "ml"}
    model = isvc["spec"]["predictor"]["model"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "--max-model-len=4096" in " ".join(model["args"])


def test_compile_into_another_folder_for_another_registry(tmp_path):
    from modelgate.pipelines import package_file

    before = package_file("release").read_text()
    result = runner.invoke(
        app,
        [
            "compile",
            "--output",
            str(tmp_path),
            "--image-registry",
            "quay.io/me",
            "--image-tag",
            "9",
        ],
    )
    assert result.exit_code == 0, result.output
    text = (tmp_path / "release.yaml").read_text()
    assert "image: quay.io/me/modelgate:9\n" in text
    assert "image: quay.io/me/modelgate-eval:9\n" in text
    assert "ghcr.io/modelgate" not in text
    assert package_file("release").read_text() == before  # the packaged YAML is untouched


def test_every_parameter_has_a_group_and_help():
    assert set(PARAM_GROUPS) == set(ALL_PARAM_NAMES)
    assert "registered_model_name" in RedeployParams.model_fields
