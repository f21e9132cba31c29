"""Per-sample results and evaluation reuse, end to end: two local releases of the tiny model
(kfp.local, the olah mirror, lm-eval, llm-compressor, vLLM) into one local model store and
the embedded MLflow registry.

The first release (FP8_DYNAMIC) evaluates base and candidate, keeps each one's samples file in
the store, pairs its recovery check on them and leaves the samples with the registered version.
The second (quant_scheme none: the candidate is the base folder) evaluates nothing: both
evaluations come from the store's cache, and its production check pairs with the samples the
registry kept for the first version.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelgate.demo import DEMO_TASK, demo_thresholds
from modelgate.registry import local_registry_url, registry_from_url
from modelgate.samples import read_samples
from tests.e2e.helpers import local_run_args, run_cli

pytestmark = pytest.mark.e2e

MODEL_NAME = "tiny-reuse"


def _args(hub_mirror, task_dir: Path, root: Path, *, scheme: str) -> list[str]:
    return local_run_args(
        hub_mirror,
        task_dir,
        root,
        "--eval-batch-size",
        "16",
        "--registered-model-name",
        MODEL_NAME,
        thresholds=demo_thresholds(serving=False),
        scheme=scheme,
        deploy_name=MODEL_NAME,
    )


def _run_dirs(root: Path) -> set[Path]:
    return {p for p in root.iterdir() if p.is_dir() and (p / "register-candidate").is_dir()}


def _evaluations(run_dir: Path) -> dict[str, dict]:
    """The results artifact of each evaluate task that ran, by task key."""
    return {
        p.parent.name: json.loads(p.read_text())
        for p in sorted(run_dir.glob("evaluate-model*/results"))
        if p.is_file()
    }


def _gate_table(run_dir: Path) -> str:
    (gate,) = run_dir.glob("check-gate*/executor_output.json")
    return json.loads(gate.read_text())["parameterValues"]["table"]


def _paired_row(table: str, check: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 11 and cells[0] == f"{DEMO_TASK}/acc" and cells[1].startswith(check):
            return cells
    raise AssertionError(f"no paired {check} row in the gate table:\n{table}")


@pytest.fixture(scope="module")
def releases(hub_mirror, addition_task_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("reuse")
    runs = []
    for scheme in ("FP8_DYNAMIC", "none"):
        before = _run_dirs(root)
        proc = run_cli(*_args(hub_mirror, addition_task_dir, root, scheme=scheme))
        made = _run_dirs(root) - before
        assert len(made) == 1, f"{scheme}: no run folder\n{proc.stdout}\n{proc.stderr[-3000:]}"
        runs.append((proc, made.pop()))
    return root, runs[0], runs[1]


def test_a_release_keeps_base_and_candidate_samples_and_pairs_its_gate(releases):
    root, (proc, run_dir), _ = releases
    assert proc.returncode == 0, proc.stdout + proc.stderr
    evaluations = _evaluations(run_dir)
    assert len(evaluations) == 2, evaluations.keys()  # base, and the quantized candidate
    store = (root / "model-store").as_uri()
    for results in evaluations.values():
        assert not results["reused"]
        assert results["samples_uri"].startswith(f"{store}/evals/eval-")
        samples = read_samples(results["samples_uri"])
        assert len(samples.samples) == results["n_samples"][DEMO_TASK] == 100
        config = results["config"]
        assert config["task_hashes"][DEMO_TASK] == samples.meta["task_hashes"][DEMO_TASK]
        for key in ("lm_eval_version", "backend", "limit", "num_fewshot", "seed"):
            assert key in config, key
    # the same documents, prompts and targets on both sides
    hashes = {r["config"]["task_hashes"][DEMO_TASK] for r in evaluations.values()}
    assert len(hashes) == 1
    assert " reused " not in proc.stdout
    row = _paired_row(_gate_table(run_dir), "recovery")
    assert int(row[2]) == 100  # every document paired


def test_the_registry_version_carries_the_samples(releases):
    root, (proc, run_dir), _ = releases
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads(
        json.loads((run_dir / "register-candidate" / "executor_output.json").read_text())[
            "parameterValues"
        ]["record"]
    )
    backend = registry_from_url(local_registry_url(root))
    mv = backend._find(MODEL_NAME, record["version_name"])  # the MLflow model version
    tags = mv.tags
    candidate = next(
        r for k, r in _evaluations(run_dir).items() if k != "evaluate-model"
    )  # the candidate's evaluation
    assert tags["eval.samples_uri"] == candidate["samples_uri"]
    assert tags["modelgate.samples_artifact"].endswith("/samples.jsonl")
    local = backend._client.download_artifacts(mv.run_id, "samples.jsonl", str(root))
    assert read_samples(local).samples == read_samples(candidate["samples_uri"]).samples


def test_a_second_release_reuses_evaluations_and_pairs_with_production(releases):
    _, (first, first_dir), (proc, run_dir) = releases
    assert first.returncode == 0, first.stdout + first.stderr
    out = proc.stdout
    assert proc.returncode in (0, 1), out + proc.stderr  # the gate decides; nothing broke
    for step in ("evaluate base", "evaluate candidate"):
        line = next(ln for ln in out.splitlines() if f"│ {step} " in ln and "not run" not in ln)
        assert "reused" in line, line
    evaluations = _evaluations(run_dir)
    assert len(evaluations) == 2 and all(r["reused"] for r in evaluations.values())
    first_base = _evaluations(first_dir)["evaluate-model"]
    # the candidate is the base folder: one stored evaluation, the first release's
    assert {r["samples_uri"] for r in evaluations.values()} == {first_base["samples_uri"]}
    table = _gate_table(run_dir)
    assert int(_paired_row(table, "vs production")[2]) == 100
    assert int(_paired_row(table, "recovery")[2]) == 100
