"""Download component."""

from kfp import dsl
from kfp.dsl import Model, Output

from modelgate.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def download_model(
    model: Output[Model],
    repo_id: str,
    revision: str = "main",
    allow_patterns: str = "",
    ignore_patterns: str = "",
    allow_pickle: bool = False,
    hf_endpoint: str = "",
) -> str:
    """Download a Hugging Face model at an exact commit and record its manifest.

    The token comes from the ``HF_TOKEN`` environment variable (mounted from a Kubernetes
    secret by the pipeline); the endpoint from ``hf_endpoint`` or ``HF_ENDPOINT``.

    Args:
        model: The downloaded model directory; metadata holds repo_id, revision, commit_sha.
        repo_id: Hub repository id, e.g. ``org/model``.
        revision: Branch, tag or commit; resolved to a commit sha.
        allow_patterns: Comma-separated globs to download (empty: all).
        ignore_patterns: Comma-separated globs to skip.
        allow_pickle: Accept repositories whose weights are only pickle files.
        hf_endpoint: Hub or mirror URL (empty: ``$HF_ENDPOINT`` or the public hub).

    Returns:
        The resolved commit sha.

    Raises:
        UnsafeWeightsError: Pickle-only weights and allow_pickle is False.
        DownloadError: The hub could not be read.
    """
    from modelgate.download import download_model as download
    from modelgate.logs import configure_logging

    configure_logging()

    def split(text: str) -> list[str] | None:
        return [p.strip() for p in text.split(",") if p.strip()] or None

    manifest = download(
        repo_id,
        target_dir=model.path,
        revision=revision,
        allow_patterns=split(allow_patterns),
        ignore_patterns=split(ignore_patterns),
        allow_pickle=allow_pickle,
        endpoint=hf_endpoint or None,
    )
    model.metadata.update(
        {
            "repo_id": repo_id,
            "revision": revision,
            "commit_sha": manifest.commit_sha,
            "files": len(manifest.files),
            "size_bytes": manifest.total_bytes,
            "seconds": manifest.seconds,
        }
    )
    return manifest.commit_sha
