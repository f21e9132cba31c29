"""Bad input, the way a new user gives it: each exits non-zero with its reason on the console.

What is knowable up front (the Hub listing, names, configs, servers) fails in preflight, exit 2,
before any step runs and within seconds; what only shows while working (truncated weights, a
metric the evaluation does not produce) fails its step, exit 1, and the step's reason is printed
under the summary.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from modelgate.demo import DEMO_TASK, demo_thresholds
from modelgate.processes import free_port
from modelgate.testing.hub_mirror import publish_model
from tests.doubles.hub import GatedHub
from tests.e2e.helpers import run_cli, vllm_python

pytestmark = pytest.mark.e2e

UPFRONT_SECONDS = 5.0


@pytest.fixture(scope="module", autouse=True)
def task_index():
    """lm-eval's task index is built once per lm-eval release (seconds); later checks are fast."""
    from modelgate.evaluate import registered_task_names

    registered_task_names()


@pytest.fixture(scope="module")
def repos(hub_mirror, tiny_model_dir, tmp_path_factory) -> dict[str, str]:
    """Broken variants of the tiny model, published on the mirror."""
    root = tmp_path_factory.mktemp("bad-repos")

    def variant(name: str, edit) -> str:
        folder = root / name
        shutil.copytree(tiny_model_dir, folder)
        edit(folder)
        repo_id = f"broken/{name}"
        publish_model(folder, hub_mirror.repos_root, repo_id)
        return repo_id

    def truncate(folder: Path) -> None:
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-4096])

    def no_tokenizer(folder: Path) -> None:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (folder / name).unlink(missing_ok=True)

    def remote_code(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config["auto_map"] = {"AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM"}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "modeling_tiny.py").write_text("raise SystemExit('never run')\n")

    def pickle_only(folder: Path) -> None:
        (folder / "model.safetensors").unlink()
        (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")

    return {
        "truncated": variant("truncated", truncate),
        "no-tokenizer": variant("no-tokenizer", no_tokenizer),
        "remote-code": variant("remote-code", remote_code),
        "pickle-only": variant("pickle-only", pickle_only),
    }


def release(hub_mirror, task_dir: Path, root: Path, *extra: str, command: str = "run") -> list[str]:
    """A release of the tiny model that passes preflight, plus ``extra`` options (later win)."""
    args = [command]
    if command == "run":
        args += ["--local", "--pipeline-root", str(root), "--vllm-python", vllm_python()]
    return [
        *args,
        "--model-id",
        hub_mirror.repo_id,
        "--hf-endpoint",
        hub_mirror.endpoint,
        "--quant-scheme",
        "none",
        "--eval-tasks",
        DEMO_TASK,
        "--eval-task-dir",
        str(task_dir),
        "--thresholds",
        demo_thresholds(),
        *extra,
    ]


def upfront(args: list[str], *, reason: str, root: Path | None = None, env=None):
    """Run the CLI; assert exit 2 with ``reason`` on the console, fast, and that nothing ran."""
    started = time.monotonic()
    proc = run_cli(*args, env=env)
    seconds = time.monotonic() - started
    console = proc.stdout + proc.stderr
    assert proc.returncode == 2, console
    assert reason in " ".join(console.split()), console
    assert "running release" not in console, "a step ran"
    assert seconds < UPFRONT_SECONDS, f"took {seconds:.1f}s"
    if root is not None:
        assert not [p for p in root.iterdir() if p.is_dir() and p.name != "model-store"]
    return proc


def test_preflight_passes_for_good_input(hub_mirror, addition_task_dir, tmp_path):
    args = release(hub_mirror, addition_task_dir, tmp_path, command="preflight")
    proc = run_cli(*args, "--local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "preflight passed" in proc.stdout
    assert f"hub: {hub_mirror.repo_id}@main = {hub_mirror.commit_sha[:12]}" in proc.stdout


@pytest.mark.parametrize(
    "extra, reason",
    [
        (["--model-id", ""], "no model id: pass the Hub repository"),
        (
            ["--thresholds", '{"thresholds": [{"task": "x", "metric": "acc"}]}'],
            "sets no bound: give at least one of min, max, min_recovery",
        ),
        (["--thresholds", "missing-gate.yaml"], "missing-gate.yaml does not exist"),
        (["--quant-scheme", "w4a16"], "unknown quant scheme 'w4a16'. Did you mean 'W4A16'?"),
        (["--quant-scheme", "W8A8"], "scheme W8A8 needs calibration data"),
        (["--eval-tasks", "modelgate_additon"], "did you mean modelgate_addition"),
        (["--eval-backend", "openai"], "unknown eval backend 'openai'"),
        (
            ["--vllm-python", "/nonexistent/python"],
            "'/nonexistent/python' (--vllm-python) does not exist",
        ),
        (["--model-id", "modelgate/no-such-model"], "not found at"),
        (["--revision", "no-such-branch"], "not found"),
        (["--deploy-target", "docker"], "unknown deploy target 'docker'"),
    ],
    ids=[
        "missing-model-id",
        "bad-gate-config",
        "missing-gate-config",
        "unknown-scheme",
        "scheme-without-calibration",
        "unknown-task",
        "unknown-backend",
        "missing-vllm",
        "missing-repo",
        "missing-revision",
        "unknown-deploy-target",
    ],
)
def test_bad_input_fails_before_any_step(hub_mirror, addition_task_dir, tmp_path, extra, reason):
    upfront(release(hub_mirror, addition_task_dir, tmp_path, *extra), reason=reason, root=tmp_path)


@pytest.mark.parametrize(
    "repo, reason",
    [
        ("pickle-only", "only has pickle weights"),
        ("no-tokenizer", "has no tokenizer"),
        ("remote-code", "declares custom code"),
    ],
)
def test_risky_repositories_are_refused_up_front(
    hub_mirror, addition_task_dir, tmp_path, repos, repo, reason
):
    proc = upfront(
        release(hub_mirror, addition_task_dir, tmp_path, "--model-id", repos[repo]),
        reason=reason,
        root=tmp_path,
    )
    if repo == "remote-code":
        assert "--allow-remote-code" in proc.stdout + proc.stderr


def test_gated_repository_without_token_says_set_hf_token(addition_task_dir, tmp_path):
    with GatedHub() as hub:
        args = release(
            type("Hub", (), {"repo_id": "org/gated", "endpoint": hub.url})(),
            addition_task_dir,
            tmp_path,
        )
        upfront(args, reason="is gated: set HF_TOKEN", root=tmp_path, env={"HF_TOKEN": ""})


def test_registry_down_fails_up_front(hub_mirror, addition_task_dir, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    upfront(
        release(hub_mirror, addition_task_dir, tmp_path, "--registry-url", url),
        reason=f"Model Registry at {url} is unreachable",
        root=tmp_path,
    )


def test_several_problems_are_all_reported(hub_mirror, addition_task_dir, tmp_path):
    proc = upfront(
        release(
            hub_mirror,
            addition_task_dir,
            tmp_path,
            "--quant-scheme",
            "int3",
            "--eval-backend",
            "openai",
        ),
        reason="quant_scheme: unknown quant scheme 'int3'",
        root=tmp_path,
    )
    # the params model collects every bad value in one message, before preflight's own checks
    assert "unknown quant scheme" in proc.stderr and "unknown eval backend" in proc.stderr


def test_bad_params_key_names_the_key(hub_mirror, addition_task_dir, tmp_path):
    params = tmp_path / "release.yaml"
    params.write_text(f"model_id: {hub_mirror.repo_id}\neval_task: arc_easy\n")
    upfront(
        release(hub_mirror, addition_task_dir, tmp_path, "--params", str(params)),
        reason="unknown key 'eval_task' (did you mean 'eval_tasks'?)",
    )


def test_bad_cron_is_rejected_before_any_call(tmp_path):
    upfront(
        ["schedule", "--cron", "61 * * * *", "--model-id", "org/m", "--host", "http://127.0.0.1:9"],
        reason="minute",
    )


def test_unreachable_kfp_host_is_named(hub_mirror, addition_task_dir, tmp_path):
    host = f"http://127.0.0.1:{free_port()}"
    args = release(hub_mirror, addition_task_dir, tmp_path, command="submit")
    upfront(
        [*args, "--model-store", "s3://models/modelgate", "--host", host],
        reason=host,
        env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
    )


def test_truncated_weights_fail_the_download_with_the_reason(
    hub_mirror, addition_task_dir, tmp_path, repos
):
    proc = run_cli(
        *release(hub_mirror, addition_task_dir, tmp_path, "--model-id", repos["truncated"])
    )
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "release failed at: download" in out
    assert "download failed: DownloadError: model.safetensors is truncated" in out
    assert "step logs:" in out


def test_metric_missing_from_results_fails_the_gate_naming_it(
    hub_mirror, addition_task_dir, tmp_path
):
    gate = json.dumps(
        {"name": "demo", "thresholds": [{"task": DEMO_TASK, "metric": "exact_match", "min": 0.5}]}
    )
    proc = run_cli(*release(hub_mirror, addition_task_dir, tmp_path, "--thresholds", gate))
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"stop promotion failed: gate demo failed: {DEMO_TASK}/exact_match min: missing" in out
    assert "metric not in results" in out  # the gate table says which metrics there are
    # without --registry-url a local run keeps its versions in an embedded MLflow registry
    db = tmp_path / "registry" / "mlflow.db"
    assert db.is_file()
    assert f"is rejected in mlflow+sqlite:///{db}" in out
    assert f"browse it: mlflow ui --backend-store-uri sqlite:///{db}" in out
