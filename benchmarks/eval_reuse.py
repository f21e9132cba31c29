"""What evaluation reuse saves: the evaluation time of three releases over one model store.

A release evaluates its base model and its candidate. With the evaluation cache
(:func:`modelgate.evaluate.eval_cache_key`), a release of a new candidate over the same base
evaluates only the candidate, and a re-run of an identical release evaluates nothing. This
times the evaluations of the tiny model's releases the way the pipeline's evaluate steps run
them (``evaluate_model`` with the store, on stored folders), on CPU:

1. base + candidate A (FP8_DYNAMIC, llm-compressor), an empty cache;
2. the same base + candidate B (the base saved as float16: another folder to evaluate);
3. release 1 again, unchanged.

Targets: release 2 spends at most 55% of release 1's evaluation time, release 3 at most 5%.

    .venv/bin/python benchmarks/eval_reuse.py [--limit 100]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]
os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's and llm-compressor's progress bars

from modelgate.demo import DEMO_TASK  # noqa: E402
from modelgate.evaluate import evaluate_model  # noqa: E402
from modelgate.quantize import quantize_to_store  # noqa: E402
from modelgate.storage import FileStore  # noqa: E402
from modelgate.testing.tasks import write_addition_task  # noqa: E402
from modelgate.testing.tiny_model import build_tiny_model  # noqa: E402

TARGET_NEW_CANDIDATE = 0.55
TARGET_RERUN = 0.05
SHA = "0123456789abcdef0123456789abcdef01234567"


def _store_folder(store: FileStore, key: str, source: Path) -> str:
    with store.writer(key, source=str(source)) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
    return store.uri(key)


def _float16_copy(store: FileStore, base: Path, scratch: Path) -> str:
    """The base model saved in float16: a candidate with other weights than any stored one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = scratch / "fp16"
    AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float16).save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return _store_folder(store, f"org--tiny/{SHA}/fp16-0000000000000001", out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=100, help="documents per task")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = build_tiny_model(REPO / ".cache" / "test-models" / "tiny-llama").path
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        tasks = scratch / "tasks"
        tasks.mkdir()
        write_addition_task(tasks)
        store = FileStore(scratch / "store")
        base = _store_folder(store, f"org--tiny/{SHA}/base-0000000000000001", model)
        candidate_a = quantize_to_store(
            base, store=store.root, repo_id="org/tiny", commit_sha=SHA, scheme="FP8_DYNAMIC"
        ).uri
        candidate_b = _float16_copy(store, model, scratch)

        def release(name: str, candidate: str) -> float:
            seconds = 0.0
            for label, uri in (("base", base), ("candidate", candidate)):
                started = time.monotonic()
                result = evaluate_model(
                    uri,
                    backend="hf",
                    tasks=[DEMO_TASK],
                    task_dir=str(tasks),
                    limit=args.limit,
                    batch_size=16,
                    device="cpu",
                    model_store=store.root,
                )
                took = time.monotonic() - started
                seconds += took
                how = "reused" if result.reused else "evaluated"
                print(f"  {name} {label:<9} {how:<9} {took:7.2f}s  {result.flat()}")
            print(f"{name}: {seconds:.2f}s of evaluation")
            return seconds

        first = release("release 1 (base + FP8 candidate)", candidate_a)
        second = release("release 2 (same base + new candidate)", candidate_b)
        third = release("release 3 (release 1 again)", candidate_a)
    new_ratio, rerun_ratio = second / first, third / first
    print()
    print(f"{'case':<34} {'ratio':>7} {'target':>7}  verdict")
    for case, ratio, target in (
        ("new candidate over the same base", new_ratio, TARGET_NEW_CANDIDATE),
        ("identical re-run", rerun_ratio, TARGET_RERUN),
    ):
        verdict = "ok" if ratio <= target else "MISSED"
        print(f"{case:<34} {ratio:7.1%} {target:7.0%}  {verdict}")
    if new_ratio > TARGET_NEW_CANDIDATE or rerun_ratio > TARGET_RERUN:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
