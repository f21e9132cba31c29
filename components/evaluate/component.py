"""Evaluate component."""

from kfp import dsl
from kfp.dsl import Artifact, Metrics, Output

from modelgate.images import EVAL_IMAGE


@dsl.component(base_image=EVAL_IMAGE, install_kfp_package=False)
def evaluate_model(
    results: Output[Artifact],
    scores: Output[Metrics],
    samples: Output[Artifact],
    model_uri: str,
    tasks: str,
    backend: str = "vllm",
    task_dir: str = "",
    limit: int = 0,
    num_fewshot: int = -1,
    batch_size: int = 8,
    device: str = "",
    max_length: int = 0,
    gpus: str = "1",
    offline: bool = False,
    hf_endpoint: str = "",
    model_store: str = "",
) -> str:
    """Evaluate a stored model with lm-evaluation-harness, keeping per-sample results.

    Datasets come from the Hub (``HF_TOKEN`` mounted by the pipeline) or the mirror at
    ``hf_endpoint``, unless ``offline``. With a model store, the evaluation is cached there:
    a model folder already evaluated with the same tasks and settings is not evaluated again
    (``reused`` in the results' metadata), and the samples file the gate pairs on is stored
    there (the results' ``samples_uri``).

    Args:
        results: Parsed results (JSON): per task, each metric with stderr and direction, the
            pairing config, and ``samples_uri``.
        scores: The same metrics as KFP metrics, shown in the UI.
        samples: The per-document results (compact JSON Lines), a copy for download.
        model_uri: The stored model to evaluate.
        tasks: Comma-separated lm-eval task names.
        backend: ``hf`` (CPU/GPU) or ``vllm`` (GPU).
        task_dir: Stored folder URI of local task YAMLs (empty: lm-eval's registry only).
        limit: Examples per task (0: all).
        num_fewshot: Few-shot examples (-1: task default).
        batch_size: Batch size.
        device: ``cpu``/``cuda`` (empty: lm-eval chooses).
        max_length: Context length cap (0: model default).
        gpus: GPUs of this pod; the ``vllm`` backend splits the model over them.
        offline: Never contact the Hub (every dataset must be local or cached).
        hf_endpoint: Hub mirror URL for datasets (empty: the public hub).
        model_store: Model store URI holding the evaluation cache and the samples (empty: no
            cache; the gate then cannot pair on samples).

    Returns:
        ``task/metric=value`` pairs, comma-separated.

    Raises:
        ConfigError: Unknown task or backend.
        EvaluationError: lm-eval failed.
        StorageError: The model, the task folder or the cache could not be read or written.
    """
    from modelgate.evaluate import evaluate_model as evaluate
    from modelgate.logs import configure_logging
    from modelgate.placement import placement_from_options

    configure_logging()
    result = evaluate(
        model_uri,
        backend=backend,
        tasks=[t.strip() for t in tasks.split(",") if t.strip()],
        task_dir=task_dir or None,
        limit=limit or None,
        num_fewshot=None if num_fewshot < 0 else num_fewshot,
        batch_size=batch_size,
        device=device or None,
        max_length=max_length or None,
        tensor_parallel_size=placement_from_options(accelerator_count=gpus).tensor_parallel_size,
        offline=offline,
        hf_endpoint=hf_endpoint or None,
        model_store=model_store or None,
        samples_path=samples.path,
    )
    if not model_store:
        result.samples_uri = None  # a file of this pod: later steps could not read it
    result.save(results.path)
    flat = result.flat()
    for name, value in flat.items():
        scores.log_metric(name, value)
    results.metadata.update(
        {
            "backend": backend,
            "seconds": result.seconds,
            "reused": result.reused,
            "samples_uri": result.samples_uri or "",
        }
    )
    return ", ".join(f"{k}={v:.4f}" for k, v in flat.items())
