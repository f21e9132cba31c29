"""Every container image modelgate references, in one place, tagged with the package version.

The Containerfiles in ``images/`` build these; the KServe ServingRuntime's vLLM image is pinned
in ``manifests/base``.
"""

from __future__ import annotations

from modelgate import __version__

REGISTRY = "ghcr.io/modelgate"

#: Base image of the CPU steps (download, quantize on CPU, register, gate, deploy, smoke test).
BASE_IMAGE = f"{REGISTRY}/modelgate:{__version__}"
#: Image of the GPU steps (quantize and lm-eval with the vLLM backend), CUDA + vLLM inside.
GPU_IMAGE = f"{REGISTRY}/modelgate-gpu:{__version__}"

__all__ = ["BASE_IMAGE", "GPU_IMAGE", "REGISTRY"]
