"""Every container image modelgate references, in one place, tagged with the package version.

The Containerfiles in ``images/`` build these; the KServe ServingRuntime's vLLM image is pinned
in ``manifests/base``. Two images, because vLLM and llm-compressor pin different
compressed-tensors releases and cannot share one environment.
"""

from __future__ import annotations

from modelgate import __version__

REGISTRY = "ghcr.io/modelgate"

#: modelgate with KFP, llm-compressor, lm-eval, the registry and KServe clients, CUDA torch.
#: Runs download, quantize (GPU if the node has one), register, gate, deploy and smoke test.
BASE_IMAGE = f"{REGISTRY}/modelgate:{__version__}"
#: vLLM (CUDA) with lm-eval and modelgate: the evaluate step on GPU nodes.
EVAL_IMAGE = f"{REGISTRY}/modelgate-eval:{__version__}"

__all__ = ["BASE_IMAGE", "EVAL_IMAGE", "REGISTRY"]
