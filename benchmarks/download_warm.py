"""What a warm re-release of a stored model costs next to its cold download.

A release downloads its base model once per commit into the model store; a re-release of the
same commit reuses the stored folder after checking it (every file's sha256 against the
store's marker, through the verified-digest cache: see :func:`modelgate.storage.file_sha256`).
This times, for a model of random safetensors weights (default 512 MiB) in a local git
repository served by the olah test mirror, into a ``file://`` store:

1. cold: ``download_to_store`` into an empty store (transfer, hash checks against the mirror's
   metadata, store write);
2. warm: ``download_to_store`` of the same commit again (metadata, the stored folder's check);
3. warm, digest cache dropped: the same, reading every byte of the stored folder once more
   (what the first check on another machine costs).

Target: warm at most 5% of cold.

    .venv/bin/python benchmarks/download_warm.py [--mib 512]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from modelgate.download import download_to_store  # noqa: E402
from modelgate.storage import DIGEST_CACHE, work_dir  # noqa: E402
from modelgate.testing.hub_mirror import LocalHubMirror, write_random_model  # noqa: E402
from modelgate.testing.tiny_model import build_tiny_model  # noqa: E402

TARGET_WARM = 0.05
REPO_ID = "modelgate/warm-bench"


def _timed(label: str, **kwargs: object) -> float:
    started = time.monotonic()
    stored = download_to_store(REPO_ID, **kwargs)  # type: ignore[arg-type]
    took = time.monotonic() - started
    print(f"{label:<28} {took:8.2f}s  reused={stored.reused}  {stored.manifest.total_bytes} bytes")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=512, help="size of the weights in MiB")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    template = build_tiny_model(REPO / ".cache" / "test-models" / "tiny-llama").path
    with tempfile.TemporaryDirectory(prefix="download-warm-") as tmp:
        root = Path(tmp)
        os.environ["MODELGATE_WORK_DIR"] = str(root / "work")
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_CACHE = str(root / "hf-cache")  # no stale config files
        model = write_random_model(
            root / "model", template_dir=template, weight_bytes=args.mib * 1024 * 1024
        )
        store = (root / "store").as_uri()
        with LocalHubMirror(root / "repos") as mirror:
            published = mirror.publish(model, repo_id=REPO_ID)
            print(f"model: {REPO_ID}@{published.commit_sha[:12]}, {args.mib} MiB of weights")
            run = {"store": store, "endpoint": mirror.endpoint}
            cold = _timed("cold download_to_store", **run)
            warm = min(_timed(f"warm re-release #{i}", **run) for i in (1, 2, 3))
            (work_dir() / DIGEST_CACHE).unlink()
            uncached = _timed("warm, no digest cache", **run)
    ratio = warm / cold
    verdict = "ok" if ratio <= TARGET_WARM else "MISSED"
    print()
    target = f"target <= {TARGET_WARM:.0%}"
    print(f"cold {cold:.2f}s  warm {warm:.3f}s  ratio {ratio:.1%} ({target}): {verdict}")
    print(f"warm without the digest cache: {uncached:.2f}s ({uncached / cold:.1%} of cold)")


if __name__ == "__main__":
    main()
