"""The release pipeline: download -> quantize -> register -> evaluate -> gate -> deploy -> smoke.

Compile with ``modelgate compile`` (or ``python -m pipelines.release``); the YAML beside this file
is what users upload to the Kubeflow UI, and a test fails if it drifts from this source.
"""

from kfp import compiler, dsl, kubernetes

from components import (
    check_gate,
    deploy_model,
    download_model,
    evaluate_model,
    quantize_model,
    record_evaluation,
    register_candidate,
    smoke_test,
    stop_promotion,
)
from pipelines import PIPELINES_DIR

DEFAULT_THRESHOLDS = (
    '{"thresholds": [{"task": "arc_easy", "metric": "acc", "min": 0.5, "min_recovery": 0.95}]}'
)


def _place_on_accelerators(
    task: dsl.PipelineTask,
    *,
    accelerator_type: str,
    accelerator_count: str,
    tolerations: str,
    node_selector: str,
) -> dsl.PipelineTask:
    """Request GPUs and apply tolerations/node selector, all from run parameters."""
    task.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
    kubernetes.add_toleration_json(task, tolerations)
    kubernetes.add_node_selector_json(task, node_selector)
    return task


@dsl.pipeline(
    name="modelgate-release",
    description=(
        "Take an LLM from the Hugging Face Hub to a vLLM InferenceService on KServe: download, "
        "quantize with llm-compressor, register the candidate, evaluate base and candidate with "
        "lm-eval, gate on thresholds and recovery, then deploy and smoke-test only if the gate "
        "passed."
    ),
)
def release(
    model_id: str,
    revision: str = "main",
    quant_scheme: str = "FP8_DYNAMIC",
    calibration_data: str = "",
    eval_tasks: str = "arc_easy",
    eval_task_dir: str = "",
    eval_backend: str = "vllm",
    eval_limit: int = 0,
    eval_num_fewshot: int = -1,
    eval_batch_size: int = 8,
    eval_device: str = "",
    eval_max_length: int = 0,
    thresholds: str = DEFAULT_THRESHOLDS,
    registry_url: str = "",
    registered_model_name: str = "",
    deploy_target: str = "kserve",
    deploy_name: str = "modelgate-candidate",
    namespace: str = "",
    storage_uri: str = "",
    serving_runtime: str = "vllm-runtime",
    max_model_len: int = 0,
    accelerator_type: str = "nvidia.com/gpu",
    accelerator_count: int = 1,
    tolerations: str = "[]",
    node_selector: str = "{}",
    hf_token_secret: str = "hf-token",
    hf_endpoint: str = "",
    vllm_python: str = "",
    smoke_prompt: str = "2+3=",
):
    """Release an LLM from the Hub to KServe, gated on lm-eval results.

    Args:
        model_id: Hugging Face repository id, e.g. ``meta-llama/Llama-3.2-1B-Instruct``.
        revision: Branch, tag or commit; recorded as the resolved commit sha.
        quant_scheme: ``none``, ``FP8_DYNAMIC``, ``W8A8`` or ``W4A16``.
        calibration_data: JSONL path or dataset id for W8A8/W4A16.
        eval_tasks: Comma-separated lm-eval tasks.
        eval_task_dir: Folder of local lm-eval task YAMLs.
        eval_backend: ``vllm`` (GPU) or ``hf``.
        eval_limit: Examples per task (0: all).
        eval_num_fewshot: Few-shot examples (-1: task default).
        eval_batch_size: lm-eval batch size.
        eval_device: ``cuda``/``cpu`` (empty: lm-eval chooses).
        eval_max_length: Context length cap for evaluation (0: model default).
        thresholds: Gate config as JSON/YAML (absolute ``min``/``max``, ``min_recovery``).
        registry_url: Kubeflow Model Registry URL (empty: ``$MODEL_REGISTRY_URL`` or skip).
        registered_model_name: Registry model name (empty: the Hub repository id).
        deploy_target: ``kserve`` or ``local``.
        deploy_name: InferenceService and served model name.
        namespace: Namespace of the InferenceService (empty: the run's namespace).
        storage_uri: storageUri override for KServe (pvc://, s3://, oci://, hf://).
        serving_runtime: ServingRuntime name.
        max_model_len: vLLM ``--max-model-len`` (0: model default).
        accelerator_type: GPU resource name for evaluation and serving.
        accelerator_count: GPUs per evaluation pod and per serving replica.
        tolerations: JSON list of tolerations for GPU steps and the predictor.
        node_selector: JSON object of node labels for GPU steps and the predictor.
        hf_token_secret: Secret with key ``token`` mounted as ``HF_TOKEN`` (optional).
        hf_endpoint: Hub mirror URL (empty: the public hub).
        vllm_python: For ``local`` deploys: the interpreter with vLLM.
        smoke_prompt: Prompt of the post-deploy smoke test.
    """
    download = download_model(
        repo_id=model_id, revision=revision, hf_endpoint=hf_endpoint
    ).set_display_name("download")
    kubernetes.use_secret_as_env(
        download,
        secret_name=hf_token_secret,
        secret_key_to_env={"token": "HF_TOKEN"},
        optional=True,
    )

    quantize = quantize_model(
        model=download.outputs["model"],
        scheme=quant_scheme,
        calibration_data=calibration_data,
    ).set_display_name("quantize")
    _place_on_accelerators(
        quantize,
        accelerator_type=accelerator_type,
        accelerator_count=accelerator_count,
        tolerations=tolerations,
        node_selector=node_selector,
    )

    register = register_candidate(
        model=quantize.outputs["quantized"],
        model_name=registered_model_name,
        registry_url=registry_url,
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    ).set_display_name("register candidate")

    evaluations = {}
    for label, model in (
        ("base", download.outputs["model"]),
        ("candidate", quantize.outputs["quantized"]),
    ):
        task = evaluate_model(
            model=model,
            tasks=eval_tasks,
            backend=eval_backend,
            task_dir=eval_task_dir,
            limit=eval_limit,
            num_fewshot=eval_num_fewshot,
            batch_size=eval_batch_size,
            device=eval_device,
            max_length=eval_max_length,
        ).set_display_name(f"evaluate {label}")
        evaluations[label] = _place_on_accelerators(
            task,
            accelerator_type=accelerator_type,
            accelerator_count=accelerator_count,
            tolerations=tolerations,
            node_selector=node_selector,
        )

    gate = check_gate(
        candidate_results=evaluations["candidate"].outputs["results"],
        base_results=evaluations["base"].outputs["results"],
        thresholds=thresholds,
    ).set_display_name("quality gate")

    record = record_evaluation(
        record=register.outputs["record"],
        candidate_results=evaluations["candidate"].outputs["results"],
        gate_passed=gate.outputs["passed"],
        gate_report=gate.outputs["table"],
        registry_url=registry_url,
    ).set_display_name("record evaluation")

    with dsl.If(gate.outputs["passed"] == True, name="gate-passed"):  # noqa: E712 - KFP DSL
        deploy = deploy_model(
            model=quantize.outputs["quantized"],
            name=deploy_name,
            target=deploy_target,
            namespace=namespace,
            storage_uri=storage_uri,
            registry_record=register.outputs["record"],
            runtime=serving_runtime,
            accelerator_type=accelerator_type,
            accelerator_count=accelerator_count,
            tolerations=tolerations,
            node_selector=node_selector,
            max_model_len=max_model_len,
            vllm_python=vllm_python,
        ).set_display_name("deploy")
        deploy.after(record)  # the registry knows the gate decision before anything is served
        smoke_test(
            endpoint=deploy.outputs["endpoint"],
            served_model=deploy.outputs["served_model"],
            deployment=deploy.outputs["deployment"],
            target=deploy_target,
            prompt=smoke_prompt,
        ).set_display_name("smoke test")
    with dsl.Else(name="gate-failed"):
        stop_promotion(
            summary=gate.outputs["summary"], table=gate.outputs["table"]
        ).set_display_name("stop promotion").after(record)


PACKAGE_PATH = PIPELINES_DIR / "release.yaml"


def compile_pipeline(package_path: str = str(PACKAGE_PATH)) -> str:
    """Compile ``release`` to ``package_path`` and return the path."""
    compiler.Compiler().compile(pipeline_func=release, package_path=package_path)
    return package_path


if __name__ == "__main__":
    compile_pipeline()
