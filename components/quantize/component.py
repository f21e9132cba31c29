"""Quantize component."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Output

from modelgate.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def quantize_model(
    recipe: Output[Artifact],
    model_uri: str,
    model_store: str,
    repo_id: str,
    commit_sha: str,
    scheme: str = "FP8_DYNAMIC",
    calibration_data: str = "",
    num_calibration_samples: int = 64,
) -> NamedTuple("QuantizeOutputs", [("model_uri", str), ("scheme", str)]):
    """Quantize with llm-compressor into a compressed-tensors checkpoint for vLLM, once per recipe.

    Args:
        recipe: The llm-compressor recipe applied (YAML; empty for ``none``).
        model_uri: The stored base model.
        model_store: Model store URI the candidate is written to.
        repo_id: Hub repository id (names the candidate's folder).
        commit_sha: Source commit (names the candidate's folder).
        scheme: ``none``, ``FP8_DYNAMIC``, ``W8A8`` (SmoothQuant + GPTQ) or ``W4A16`` (GPTQ).
        calibration_data: Stored file URI or dataset id; required for W8A8 and W4A16.
        num_calibration_samples: Calibration samples.

    Returns:
        model_uri: where the candidate is stored (the base model's for ``none``); scheme.

    Raises:
        ConfigError: Unknown scheme or missing calibration data.
        QuantizationError: llm-compressor failed.
        StorageError: The model store could not be read or written.
    """
    from collections import namedtuple

    from modelgate.logs import configure_logging
    from modelgate.quantize import quantize_to_store

    configure_logging()
    candidate = quantize_to_store(
        model_uri,
        store=model_store,
        repo_id=repo_id,
        commit_sha=commit_sha,
        scheme=scheme,
        calibration=calibration_data or None,
        num_calibration_samples=num_calibration_samples,
    )
    with open(recipe.path, "w") as fh:
        fh.write(candidate.recipe)
    recipe.metadata.update(
        {"model_uri": candidate.uri, "scheme": candidate.scheme, "reused": candidate.reused}
    )
    outputs = namedtuple("QuantizeOutputs", ["model_uri", "scheme"])
    return outputs(candidate.uri, candidate.scheme)
