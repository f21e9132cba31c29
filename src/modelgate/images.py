"""Every container image modelgate references, in one place.

The Containerfiles in ``images/`` build these; the KServe ServingRuntime's vLLM image is pinned
in ``manifests/base``. Two images, because vLLM and llm-compressor pin different
compressed-tensors releases and cannot share one environment.

Registry and tag default to ``ghcr.io/modelgate`` and the package version. Set
``MODELGATE_IMAGE_REGISTRY`` and ``MODELGATE_IMAGE_TAG`` to compile pipelines against images
pushed elsewhere. They are read once, when this module is imported, and the components bake
``BASE_IMAGE``/``EVAL_IMAGE`` into their ``@dsl.component`` decorators at their own import.
To compile against your own registry without touching the committed YAML, use
``modelgate compile --image-registry R --image-tag T --output DIR`` (:func:`retag`).
"""

from __future__ import annotations

import os

from modelgate import __version__

REGISTRY_ENV = "MODELGATE_IMAGE_REGISTRY"
TAG_ENV = "MODELGATE_IMAGE_TAG"

#: Where the images are pushed, without a trailing slash.
REGISTRY = (os.environ.get(REGISTRY_ENV) or "ghcr.io/modelgate").rstrip("/")
#: Tag of both modelgate images.
TAG = os.environ.get(TAG_ENV) or __version__

#: modelgate with KFP, llm-compressor, lm-eval, the registry and KServe clients, CUDA torch.
#: Runs download, quantize (GPU if the node has one), register, gate, deploy and smoke test.
BASE_IMAGE = f"{REGISTRY}/modelgate:{TAG}"
#: vLLM (CUDA) with lm-eval and modelgate: the evaluate step on GPU nodes.
EVAL_IMAGE = f"{REGISTRY}/modelgate-eval:{TAG}"

#: The KServe ServingRuntime's vLLM image (``manifests/base/servingruntime.yaml``): the release
#: pinned in requirements/vllm.txt, so local runs and the cluster share vLLM's flag semantics.
VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"
#: vLLM's CPU build at the same release: what a CPU-mode predictor (``accelerator_count`` 0) names
#: itself, since KServe would otherwise swap the tagged GPU image for it (see
#: :func:`modelgate.deploy.kserve.runtime_image`).
VLLM_CPU_IMAGE = "{}-cpu:{}".format(*VLLM_IMAGE.rsplit(":", 1))
#: Model Registry storage initializer for ``model-registry://`` URIs (the ClusterStorageContainer
#: in ``manifests/base``): the release of the Python client pinned in requirements/main.txt
#: (``model-registry==0.3.18``), so both call the REST API ``/api/model_registry/v1`` that
#: servers serve from v0.3.15 on (v0.3.8 still called ``v1alpha3``). The image moved from
#: ``ghcr.io/kubeflow/model-registry/`` to ``ghcr.io/kubeflow/hub/`` in v0.3.9.
REGISTRY_STORAGE_INITIALIZER_IMAGE = "ghcr.io/kubeflow/hub/storage-initializer:v0.3.18"
#: Base of the modelcars the package step builds (:mod:`modelgate.modelcar`): KServe's modelcar
#: sidecar runs ``sh -c "ln -sf /proc/$$/root/models /mnt/models && sleep infinity"``, so the
#: base needs a shell; busybox is ~2 MB. Pinned by the digest of its multi-platform index, so a
#: modelcar's bytes do not change under a re-pushed tag.
MODELCAR_BASE_IMAGE = (
    "docker.io/library/busybox:1.37.0"
    "@sha256:bdf57e528e45e4433820e045b29b4597825a1c9e38353532d90a01445013f82e"
)


def image_names(*, registry: str | None = None, tag: str | None = None) -> dict[str, str]:
    """The modelgate images under another registry and tag, keyed by the compiled-in name."""
    reg = (registry or REGISTRY).rstrip("/")
    version = tag or TAG
    return {EVAL_IMAGE: f"{reg}/modelgate-eval:{version}", BASE_IMAGE: f"{reg}/modelgate:{version}"}


def retag(text: str, *, registry: str | None = None, tag: str | None = None) -> str:
    """Compiled pipeline YAML pointed at images pushed to ``registry`` with ``tag``."""
    for old, new in image_names(registry=registry, tag=tag).items():
        text = text.replace(f"image: {old}\n", f"image: {new}\n")
    return text


__all__ = [
    "BASE_IMAGE",
    "EVAL_IMAGE",
    "MODELCAR_BASE_IMAGE",
    "REGISTRY",
    "REGISTRY_ENV",
    "REGISTRY_STORAGE_INITIALIZER_IMAGE",
    "TAG",
    "TAG_ENV",
    "VLLM_CPU_IMAGE",
    "VLLM_IMAGE",
    "image_names",
    "retag",
]
