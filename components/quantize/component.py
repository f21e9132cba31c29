"""Quantize component."""

from kfp import dsl
from kfp.dsl import Input, Model, Output

from modelgate.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def quantize_model(
    model: Input[Model],
    quantized: Output[Model],
    scheme: str = "FP8_DYNAMIC",
    calibration_data: str = "",
    num_calibration_samples: int = 64,
) -> str:
    """Quantize with llm-compressor into a compressed-tensors checkpoint for vLLM.

    Args:
        model: The downloaded model.
        quantized: The quantized model; metadata adds scheme and recipe to the source lineage.
        scheme: ``none``, ``FP8_DYNAMIC``, ``W8A8`` (SmoothQuant + GPTQ) or ``W4A16`` (GPTQ).
        calibration_data: JSONL path or dataset id; required for W8A8 and W4A16.
        num_calibration_samples: Calibration samples.

    Returns:
        The scheme applied.

    Raises:
        ConfigError: Unknown scheme or missing calibration data.
        QuantizationError: llm-compressor failed.
    """
    from modelgate.logs import configure_logging
    from modelgate.quantize import quantize_model as quantize

    configure_logging()
    result = quantize(
        model.path,
        output_dir=quantized.path,
        scheme=scheme,
        calibration=calibration_data or None,
        num_calibration_samples=num_calibration_samples,
    )
    quantized.metadata.update(dict(model.metadata))
    quantized.metadata.update(
        {
            "quant_scheme": result.scheme,
            "recipe": result.recipe,
            "size_bytes": result.size_bytes,
            "seconds": result.seconds,
        }
    )
    return result.scheme
