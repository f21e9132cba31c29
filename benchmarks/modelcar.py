"""What packaging a stored model as a KServe modelcar costs, by model size.

For models of random safetensors weights (default 64, 256 and 512 MiB) stored in a ``file://``
model store, this times :func:`modelgate.modelcar.build_modelcar` to an OCI registry on
loopback (Debian's ``docker-registry``, :func:`modelgate.testing.oci_registry.oci_registry`)
on a local busybox base layout:

1. first push: copy the base into a layout, write one tar layer per file (olot), push every
   blob (skopeo);
2. the same stored model pushed again under another tag: the layers are rebuilt (the same
   bytes, so the same digests) and the registry already has them, so skopeo uploads only the
   config and manifest.

MB/s is model bytes over wall time. Needs docker-registry, skopeo and busybox-static.

    .venv/bin/python benchmarks/modelcar.py [--mib 64,256,512]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from modelgate.modelcar import build_modelcar  # noqa: E402
from modelgate.storage import open_store  # noqa: E402
from modelgate.testing.hub_mirror import write_random_model  # noqa: E402
from modelgate.testing.oci_registry import (  # noqa: E402
    busybox_base_layout,
    busybox_missing,
    oci_registry,
    registry_missing,
    skopeo_missing,
)
from modelgate.testing.tiny_model import build_tiny_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", default="64,256,512", help="weight sizes in MiB, comma-separated")
    args = parser.parse_args()
    missing = registry_missing() or skopeo_missing() or busybox_missing()
    if missing:
        sys.exit(f"cannot run: {missing}")
    logging.basicConfig(level=logging.WARNING)
    template = build_tiny_model(REPO / ".cache" / "test-models" / "tiny-llama").path
    head = ("weights", "model MB", "first push", "MB/s", "re-push", "MB/s")
    print("{:>8} {:>9} {:>11} {:>7} {:>9} {:>7}".format(*head))
    with tempfile.TemporaryDirectory(prefix="modelcar-bench-") as tmp:
        root = Path(tmp)
        os.environ["MODELGATE_WORK_DIR"] = str(root / "work")
        (root / "work").mkdir()
        base = busybox_base_layout(root / "base")
        store = open_store((root / "store").as_uri())
        with oci_registry(root / "registry") as registry:
            for mib in (int(m) for m in args.mib.split(",")):
                key = f"bench/{mib}mib"
                with store.writer(key, source="benchmark") as out:
                    write_random_model(
                        out, template_dir=template, weight_bytes=mib * 1024 * 1024, seed=mib
                    )
                uri = store.uri(key)
                repo = f"{registry}/bench/m{mib}"
                first = build_modelcar(uri, repository=repo, base_image=base, tag="first")
                again = build_modelcar(uri, repository=repo, base_image=base, tag="again")
                mb = first.bytes / 1e6
                print(
                    f"{mib:>5}MiB {mb:>9.1f} {first.seconds:>10.2f}s {mb / first.seconds:>7.1f}"
                    f" {again.seconds:>8.2f}s {mb / again.seconds:>7.1f}"
                )
                shutil.rmtree(root / "store" / "bench", ignore_errors=True)


if __name__ == "__main__":
    main()
