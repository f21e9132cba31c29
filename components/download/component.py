"""Download component."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Output

from modelgate.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def download_model(
    manifest: Output[Artifact],
    repo_id: str,
    model_store: str,
    revision: str = "main",
    allow_patterns: str = "",
    ignore_patterns: str = "",
    allow_pickle: bool = False,
    allow_remote_code: bool = False,
    hf_endpoint: str = "",
) -> NamedTuple("DownloadOutputs", [("model_uri", str), ("commit_sha", str)]):
    """Download a Hugging Face model at an exact commit into the model store, once.

    The token comes from ``HF_TOKEN`` (mounted from a Kubernetes secret by the pipeline); the
    store's S3 endpoint and keys from ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY``. A commit already in the store is not downloaded again.

    Args:
        manifest: Every file with its size and sha256, and where it came from (JSON).
        repo_id: Hub repository id, e.g. ``org/model``.
        model_store: Model store URI: ``s3://bucket/prefix`` (or ``file:///path`` locally).
        revision: Branch, tag or commit; resolved to a commit sha.
        allow_patterns: Comma-separated globs to download (empty: all).
        ignore_patterns: Comma-separated globs to skip.
        allow_pickle: Accept repositories whose weights are only pickle files.
        allow_remote_code: Accept configs that declare custom code (it is never run).
        hf_endpoint: Hub or mirror URL (empty: ``$HF_ENDPOINT`` or the public hub).

    Returns:
        model_uri: where the model is stored; commit_sha: the resolved commit.

    Raises:
        UnsafeWeightsError: Pickle-only weights without allow_pickle, or custom code without
            allow_remote_code.
        DownloadError: The hub could not be read.
        StorageError: The model store could not be written.
    """
    import json
    from collections import namedtuple

    from modelgate.download import download_to_store
    from modelgate.logs import configure_logging

    configure_logging()

    def split(text: str) -> list[str] | None:
        return [p.strip() for p in text.split(",") if p.strip()] or None

    stored = download_to_store(
        repo_id,
        store=model_store,
        revision=revision,
        allow_patterns=split(allow_patterns),
        ignore_patterns=split(ignore_patterns),
        allow_pickle=allow_pickle,
        allow_remote_code=allow_remote_code,
        endpoint=hf_endpoint or None,
    )
    with open(manifest.path, "w") as fh:
        json.dump(stored.manifest.to_dict(), fh, indent=2)
    manifest.metadata.update(
        {
            "model_uri": stored.uri,
            "repo_id": repo_id,
            "commit_sha": stored.manifest.commit_sha,
            "files": len(stored.manifest.files),
            "size_bytes": stored.manifest.total_bytes,
            "reused": stored.reused,
        }
    )
    outputs = namedtuple("DownloadOutputs", ["model_uri", "commit_sha"])
    return outputs(stored.uri, stored.manifest.commit_sha)
