"""How long bad input takes to be refused: `modelgate run --local` until it exits 2.

The preflight issue's target: what is knowable up front fails before any step runs, in under
5 s. This starts the tiny model's Hub mirror (as `make demo` does), then times each bad input
the way a user meets it (a fresh `modelgate` process) and prints a table.

    .venv/bin/python benchmarks/preflight_latency.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from modelgate.demo import DEMO_TASK, demo_environment, demo_thresholds  # noqa: E402
from modelgate.evaluate import registered_task_names  # noqa: E402
from modelgate.processes import free_port  # noqa: E402

CASES = {
    "missing model id": ["--model-id", ""],
    "unknown scheme": ["--quant-scheme", "w4a16"],
    "unknown task": ["--eval-tasks", "modelgate_additon"],
    "unknown backend": ["--eval-backend", "openai"],
    "missing vLLM": ["--vllm-python", "/nonexistent/python"],
    "missing repo": ["--model-id", "modelgate/no-such-model"],
    "missing revision": ["--revision", "no-such-branch"],
    "bad gate config": ["--thresholds", '{"thresholds": [{"task": "x", "metric": "acc"}]}'],
    "registry down": ["--registry-url", "http://127.0.0.1:{port}"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    registered_task_names()  # lm-eval's task index, built once per lm-eval release
    with tempfile.TemporaryDirectory() as tmp, demo_environment(REPO / ".cache" / "demo") as env:
        base = [
            sys.executable, "-m", "modelgate.cli", "run", "--local",
            "--pipeline-root", tmp,
            "--model-id", env.repo_id, "--hf-endpoint", env.endpoint,
            "--eval-tasks", DEMO_TASK, "--eval-task-dir", str(env.task_dir),
            "--thresholds", demo_thresholds(), "--quant-scheme", "none",
        ]  # fmt: skip
        print(f"{'bad input':<20} {'median s':>9} {'max s':>7}  exit")
        for name, extra in CASES.items():
            extra = [a.replace("{port}", str(free_port())) for a in extra]
            seconds, codes = [], set()
            for _ in range(args.repeat):
                started = time.monotonic()
                proc = subprocess.run([*base, *extra], capture_output=True, text=True, cwd=REPO)
                seconds.append(time.monotonic() - started)
                codes.add(proc.returncode)
            print(
                f"{name:<20} {statistics.median(seconds):>9.2f} {max(seconds):>7.2f}  "
                f"{','.join(map(str, sorted(codes)))}"
            )


if __name__ == "__main__":
    main()
