"""How long the serving gate takes beyond the load it was asked to apply.

The serving gate's target: ``modelgate slo`` costs at most 10 s more than its load's
``duration_s``. This starts GuideLLM's mock server (``--ttft-ms 50 --itl-ms 5``), and with
``$MODELGATE_VLLM_PYTHON`` also vLLM serving the tiny model, then times ``modelgate slo`` the
way a user runs it (a fresh process) for each duration, and splits the wall time with the
timestamps of GuideLLM's report: ``modelgate`` (the time outside the GuideLLM process:
imports, the endpoint check, parsing, the page), ``before`` the first request (both processes'
start-up: imports, GuideLLM's worker processes), the measured ``window``, and ``after`` it
(draining, GuideLLM's report, exit).

    .venv/bin/python benchmarks/serving_gate.py [--durations 3 10] [--repeat 1] [--rate 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from modelgate.testing.servers import MOCK_MODEL, guidellm_mock_server, vllm_serving  # noqa: E402
from modelgate.testing.tiny_model import build_tiny_model  # noqa: E402

TARGET_OVERHEAD_S = 10.0


@contextlib.contextmanager
def mock_server(work: Path) -> Iterator[tuple[str, str]]:
    """GuideLLM's mock OpenAI server on a free loopback port: (endpoint, model)."""
    with guidellm_mock_server(work) as url:
        yield url, MOCK_MODEL


@contextlib.contextmanager
def vllm_server(model_dir: Path, python: str, work: Path) -> Iterator[tuple[str, str]]:
    """vLLM (CPU) serving the tiny model through the local deploy target."""
    with vllm_serving(model_dir, python=python, work=work) as deployment:
        yield deployment.endpoint, deployment.model


def time_slo(
    endpoint: str, model: str, tokenizer: Path, *, duration: float, rate: float, work: Path
) -> dict[str, float]:
    """One ``modelgate slo`` run: its wall time and where it went."""
    config = work / "gate.yaml"
    config.write_text(
        "serving:\n"
        f"  load: {{profile: constant, rate: {rate}, duration_s: {duration}, "
        "prompt_tokens: 16, output_tokens: 8}\n"
        "  thresholds:\n    - {metric: error_rate, max: 1}\n"
    )
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "modelgate.cli", "slo", "--endpoint", endpoint, "--model", model,
        "--config", str(config), "--tokenizer", str(tokenizer), "--out-dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    started_at, started = time.time(), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, check=False)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"modelgate slo exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    report = json.loads((out / "guidellm.json").read_text())["benchmarks"]
    guidellm_s = json.loads((out / "serving.json").read_text())["guidellm_s"]
    first, last = report[0]["start_time"], report[-1]["end_time"]
    return {
        "wall": wall,
        "overhead": wall - duration,
        "modelgate": wall - guidellm_s,
        "before": first - started_at,
        "window": last - first,
        "after": started_at + wall - last,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--durations", type=float, nargs="+", default=[3.0, 10.0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--rate", type=float, default=2.0)
    args = parser.parse_args()
    tokenizer = build_tiny_model(REPO / ".cache" / "test-models" / "tiny-llama").path
    servers = {"mock": mock_server}
    python = os.environ.get("MODELGATE_VLLM_PYTHON")
    if python:
        servers["vllm"] = lambda work: vllm_server(tokenizer, python, work)
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print(
        f"{'server':<7} {'load s':>6} {'wall s':>7} {'overhead s':>10} {'modelgate':>9} "
        f"{'before':>7} {'window':>7} {'after':>6}  target <= {TARGET_OVERHEAD_S:.0f} s"
    )
    for name, start in servers.items():
        with tempfile.TemporaryDirectory() as tmp, start(Path(tmp)) as (endpoint, model):
            for duration in args.durations:
                runs = [
                    time_slo(
                        endpoint,
                        model,
                        tokenizer,
                        duration=duration,
                        rate=args.rate,
                        work=Path(tmp),
                    )  # fmt: skip
                    for _ in range(args.repeat)
                ]
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                mark = "ok" if med["overhead"] <= TARGET_OVERHEAD_S else "OVER"
                print(
                    f"{name:<7} {duration:>6.0f} {med['wall']:>7.1f} {med['overhead']:>10.1f} "
                    f"{med['modelgate']:>9.1f} {med['before']:>7.1f} {med['window']:>7.1f} "
                    f"{med['after']:>6.1f}  {mark}"
                )


if __name__ == "__main__":
    main()
