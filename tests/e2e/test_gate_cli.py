"""``modelgate gate`` on lm-eval's own results files (written by the real ``lm_eval`` CLI with
``--output_path --log_samples``): how people tune thresholds offline, paired per document."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from modelgate.testing.tasks import ADDITION_TASK_NAME
from tests.e2e.helpers import run_cli

pytestmark = pytest.mark.e2e


def lm_eval(model: Path, task_dir: Path, out: Path) -> Path:
    """Run the real lm-eval CLI; return the results file it wrote (its per-sample
    ``samples_<task>_<date>.jsonl`` lie beside it)."""
    cli = Path(sys.executable).parent / "lm_eval"
    proc = subprocess.run(
        [
            str(cli),
            "--model",
            "hf",
            "--model_args",
            f"pretrained={model},dtype=float32",
            "--tasks",
            ADDITION_TASK_NAME,
            "--include_path",
            str(task_dir),
            "--device",
            "cpu",
            "--batch_size",
            "16",
            "--limit",
            "60",
            "--output_path",
            str(out),
            "--log_samples",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (results,) = out.rglob("results_*.json")
    return results


@pytest.fixture(scope="module")
def results(tiny_model_dir, untrained_model_dir, addition_task_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm-eval-out")
    return {
        "trained": lm_eval(tiny_model_dir, addition_task_dir, out / "trained"),
        "untrained": lm_eval(untrained_model_dir, addition_task_dir, out / "untrained"),
    }


def config(tmp_path: Path, **threshold) -> str:
    path = tmp_path / "gate.yaml"
    path.write_text(
        json.dumps(
            {
                "name": "tune",
                "thresholds": [{"task": ADDITION_TASK_NAME, "metric": "acc", **threshold}],
            }
        )
    )
    return str(path)


def test_lm_eval_results_carry_stderr_samples_and_direction(results):
    from modelgate.evaluate import EvalResult

    trained = EvalResult.load(results["trained"]).get(ADDITION_TASK_NAME, "acc")
    assert trained.value > 0.3 and trained.higher_is_better is True
    parsed = EvalResult.load(results["untrained"])
    acc = parsed.get(ADDITION_TASK_NAME, "acc")
    assert 0 < acc.value < 0.3 and acc.stderr and acc.stderr > 0  # p(1-p)/n is not 0 here
    assert parsed.samples(ADDITION_TASK_NAME) == 60


def test_a_passing_gate_exits_0(results, tmp_path):
    html = tmp_path / "gate.html"
    proc = run_cli(
        "gate",
        "--candidate",
        str(results["trained"]),
        "--config",
        config(tmp_path, min=0.3, min_samples=50),
        "--html",
        str(html),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gate tune passed" in proc.stdout
    assert "<svg" in html.read_text()


def test_a_worse_candidate_fails_vs_base_and_production(results, tmp_path):
    proc = run_cli(
        "gate",
        "--candidate",
        str(results["untrained"]),
        "--base",
        str(results["trained"]),
        "--production",
        str(results["trained"]),
        "--config",
        config(tmp_path, min_recovery=0.9, min_vs_production=0.95),
    )
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{ADDITION_TASK_NAME}/acc recovery" in out and "vs production" in out


def test_tolerance_can_turn_a_borderline_fail_into_a_pass(results, tmp_path):
    from modelgate.evaluate import EvalResult

    acc = EvalResult.load(results["untrained"]).get(ADDITION_TASK_NAME, "acc")
    bound = acc.value + acc.stderr  # one standard error above the estimate
    strict = run_cli(
        "gate", "--candidate", str(results["untrained"]), "--config", config(tmp_path, min=bound)
    )
    lenient = run_cli(
        "gate",
        "--candidate",
        str(results["untrained"]),
        "--config",
        config(tmp_path, min=bound, tolerance_stderr=1.5),
    )
    assert (strict.returncode, lenient.returncode) == (1, 0), strict.stdout + lenient.stdout


def test_bad_config_or_input_exits_2(results, tmp_path):
    bad = run_cli("gate", "--candidate", str(results["trained"]), "--config", "{thresholds: []}")
    assert bad.returncode == 2 and "thresholds" in bad.stderr
    missing = run_cli(
        "gate", "--candidate", str(tmp_path / "none.json"), "--config", config(tmp_path, min=0.1)
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def per_doc_acc(results: Path) -> dict[int, float]:
    """``{doc_id: acc}`` read straight from lm-eval's samples file (one record per document,
    its metric under its name: lm_eval/loggers/evaluation_tracker.py save_results_samples)."""
    (file,) = results.parent.glob(f"samples_{ADDITION_TASK_NAME}_*.jsonl")
    records = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    return {r["doc_id"]: float(r["acc"]) for r in records}


def test_log_samples_pair_the_recovery_check_per_document(results, tmp_path):
    proc = run_cli(
        "gate",
        "--candidate",
        str(results["untrained"]),
        "--base",
        str(results["trained"]),
        "--config",
        config(tmp_path, min_recovery=0.5, confidence=0.95),
        "-o",
        "json",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # untrained recovers far less
    (row,) = json.loads(proc.stdout)["rows"]
    paired = row["paired"]
    assert row["check"] == "recovery" and paired is not None, row
    # the same numbers, computed here from lm-eval's files: z = c - 0.5 * b per document
    cand, base = per_doc_acc(results["untrained"]), per_doc_acc(results["trained"])
    assert sorted(cand) == sorted(base) and len(cand) == 60
    z = [cand[d] - 0.5 * base[d] for d in sorted(cand)]
    assert paired["pairs"] == 60 and paired["unpaired"] == 0 and paired["binary"]
    assert paired["mean_diff"] == pytest.approx(statistics.fmean(z))
    assert paired["se"] == pytest.approx(statistics.stdev(z) / math.sqrt(60))
    losses = sum(base[d] == 1 and cand[d] == 0 for d in cand)
    gains = sum(base[d] == 0 and cand[d] == 1 for d in cand)
    assert (paired["losses"], paired["gains"]) == (losses, gains) and losses > gains
    assert paired["test"].startswith("paired t, one-sided 0.95") and "df=59" in paired["test"]
    assert not row["passed"] and paired["bound_used"] < 0


def test_explicit_samples_folders_and_pairing_off(results, tmp_path):
    html = tmp_path / "gate.html"
    args = [
        "gate",
        "--candidate",
        str(results["trained"]),
        "--candidate-samples",
        str(results["trained"].parent),
        "--production",
        str(results["trained"]),
        "--production-samples",
        str(results["trained"].parent),
        "--html",
        str(html),
    ]
    same = run_cli(*args, "--config", config(tmp_path, min_vs_production=0.99))
    assert same.returncode == 0, same.stdout + same.stderr
    text = " ".join(same.stdout.split())
    assert "McNemar" in text and "paired, point estimate" in text
    assert "Per document" in html.read_text() and "lost on 0" in html.read_text()
    off = run_cli(*args, "--config", config(tmp_path, min_vs_production=0.99, pairing="off"))
    assert off.returncode == 0 and "McNemar" not in off.stdout, off.stdout
    missing = run_cli(*args[:3], "--base-samples", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
