"""The command line: argument errors, compile check and render."""

import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from modelgate.cli import app
from modelgate.errors import ConfigError

pytestmark = pytest.mark.unit
runner = CliRunner()


def test_compile_check_passes_on_committed_yaml():
    result = runner.invoke(app, ["compile", "--check"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


@pytest.mark.parametrize("local", [[], ["--local"]], ids=["default", "--local"])
def test_run_is_local_by_default_and_still_accepts_local(tmp_path, local):
    result = runner.invoke(
        app,
        ["run", *local, "--model-id", "", "--pipeline-root", str(tmp_path / "root")],
    )
    assert isinstance(result.exception, ConfigError)
    assert "no model id" in str(result.exception)
    assert "registry/mlflow.db" in result.output  # the embedded registry of a local run


def test_bad_gate_config_fails_before_any_step(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelgate.cli",
            "run",
            "--local",
            "--model-id",
            "org/m",
            "--thresholds",
            '{"thresholds": [{"task": "arc", "metric": "acc"}]}',
            "--pipeline-root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "sets no bound" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing ran


def test_render_prints_a_validated_inference_service():
    result = runner.invoke(
        app,
        [
            "render",
            "--name",
            "tiny",
            "--storage-uri",
            "pvc://models/tiny",
            "--accelerator-count",
            "2",
            "--node-selector",
            '{"pool": "gpu"}',
        ],
    )
    assert result.exit_code == 0, result.output
    isvc = yaml.safe_load(result.output)
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "pvc://models/tiny"
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "--tensor-parallel-size=2" in predictor["model"]["args"]
    assert predictor["nodeSelector"] == {"pool": "gpu"}
    assert predictor["serviceAccountName"] == "modelgate-model-reader"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"


def test_render_names_the_mode_as_older_kserve_does_and_refuses_unfetchable_uris():
    result = runner.invoke(
        app, ["render", "--name", "tiny", "--storage-uri", "s3://b/m", "--kserve-version", "0.15"]
    )
    assert result.exit_code == 0, result.output
    isvc = yaml.safe_load(result.output)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    result = runner.invoke(app, ["render", "--name", "tiny", "--storage-uri", "minio://b/m"])
    assert result.exit_code != 0
    assert "cannot be fetched by the kserve target" in str(result.exception)


def test_summary_shows_skipped_and_not_run_steps_as_such(capsys):
    from modelgate.pipelines.local import RunResult, StepResult

    from modelgate.cli.local import display_status, print_summary

    steps = [
        StepResult("download", "download", "success", 0.7, {"commit_sha": "019372c4d53a" * 3}),
        StepResult(
            "register-candidate",
            "register candidate",
            "success",
            0.3,
            {"status": "skipped: no registry configured (set MODEL_REGISTRY_URL)"},
        ),
        StepResult("check-gate", "quality gate", "success", 0.2, {"summary": "gate passed"}),
        StepResult("stop-promotion", "stop promotion"),
    ]
    assert [display_status(s) for s in steps] == ["success", "skipped", "success", "not run"]
    print_summary(RunResult(run_dir=None, steps=steps, succeeded=True, seconds=2.0))
    out = capsys.readouterr().out
    rows = {ln.split("│")[1].strip(): ln for ln in out.splitlines() if ln.count("│") >= 4}
    assert "skipped" in rows["register candidate"] and "success" not in rows["register candidate"]
    assert "not run" in rows["stop promotion"]
    assert "commit 019372c4d53a" in rows["download"]
