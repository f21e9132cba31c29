"""The release pipeline: download -> quantize -> register -> evaluate -> gate -> deploy -> smoke.

Compile with ``modelgate compile`` (or ``python -m pipelines.release``); the YAML beside this file
is what users upload to the Kubeflow UI, and a test fails if it drifts from this source.
``build_release(placement)`` compiles the same pipeline with other per-step resources.

Models travel as URIs in the model store (``model_store``), never as KFP artifacts: the artifact
store only carries manifests, metrics and reports.
"""

from kfp import compiler, dsl
from modelgate.components import (
    download_model,
    preflight_release,
    quantize_model,
    register_candidate,
)
from modelgate.pipelines import PIPELINES_DIR
from modelgate.pipelines.platform import (
    no_cache,
    place,
    retry_safely,
    use_hf_token,
    use_signing_key,
    use_store_secret,
    use_verify_key,
)
from modelgate.pipelines.stages import (
    evaluate,
    gate_and_promote,
    gpu,
    preflight,
    production_lookup,
    rollback_on_exit,
)

from modelgate.params import param_default
from modelgate.placement import Placement

D = param_default  # every default comes from modelgate.params.ReleaseParams


def build_release(placement: Placement):  # noqa: C901 - one pipeline definition
    """The release pipeline with the per-step resources of ``placement``."""

    @dsl.pipeline(
        name="modelgate-release",
        description=(
            "Take an LLM from the Hugging Face Hub to a vLLM InferenceService on KServe: "
            "download to the model store, quantize with llm-compressor, register the candidate, "
            "evaluate base and candidate with lm-eval, gate on thresholds, recovery and the "
            "version in production, then deploy, smoke-test and promote only if the gate passed."
        ),
    )
    def release(
        model_id: str,
        model_store: str,
        revision: str = D("revision"),
        allow_pickle: bool = D("allow_pickle"),
        allow_remote_code: bool = D("allow_remote_code"),
        quant_scheme: str = D("quant_scheme"),
        calibration_data: str = D("calibration_data"),
        eval_tasks: str = D("eval_tasks"),
        eval_task_dir: str = D("eval_task_dir"),
        eval_backend: str = D("eval_backend"),
        eval_limit: int = D("eval_limit"),
        eval_num_fewshot: int = D("eval_num_fewshot"),
        eval_batch_size: int = D("eval_batch_size"),
        eval_device: str = D("eval_device"),
        eval_max_length: int = D("eval_max_length"),
        eval_offline: bool = D("eval_offline"),
        thresholds: str = D("thresholds"),
        registry_url: str = D("registry_url"),
        registered_model_name: str = D("registered_model_name"),
        deploy_target: str = D("deploy_target"),
        deploy_name: str = D("deploy_name"),
        namespace: str = D("namespace"),
        storage_uri: str = D("storage_uri"),
        prefer_registry_uri: bool = D("prefer_registry_uri"),
        modelcar_repository: str = D("modelcar_repository"),
        serving_runtime: str = D("serving_runtime"),
        serving_service_account: str = D("serving_service_account"),
        deployment_mode: str = D("deployment_mode"),
        max_model_len: int = D("max_model_len"),
        canary_traffic_percent: int = D("canary_traffic_percent"),
        endpoint_eval_tasks: str = D("endpoint_eval_tasks"),
        accelerator_type: str = placement.accelerator_type,
        accelerator_count: str = str(placement.accelerator_count),
        tolerations: list = placement.toleration_dicts(),  # noqa: B006, B008 - KFP default
        node_selector: dict = dict(placement.node_selector),  # noqa: B006, B008 - KFP default
        hf_token_secret: str = D("hf_token_secret"),
        model_store_secret: str = D("model_store_secret"),
        signing_key_secret: str = D("signing_key_secret"),
        verify_key_secret: str = D("verify_key_secret"),
        modelcar_secret: str = D("modelcar_secret"),
        hf_endpoint: str = D("hf_endpoint"),
        vllm_python: str = D("vllm_python"),
        smoke_prompt: str = D("smoke_prompt"),
    ):
        """Release an LLM from the Hub to KServe, gated on lm-eval results.

        Args:
            model_id: Hugging Face repository id, e.g. ``meta-llama/Llama-3.2-1B-Instruct``.
            model_store: Where models are written once and served from: ``s3://bucket/prefix``
                (keys and endpoint from the secret ``model_store_secret``).
            revision: Branch, tag or commit; recorded as the resolved commit sha.
            allow_pickle: Accept repositories whose weights are only pickle files.
            allow_remote_code: Accept configs that declare custom code (it is never run).
            quant_scheme: ``none``, ``FP8_DYNAMIC``, ``W8A8`` or ``W4A16``.
            calibration_data: Stored file URI (s3://) or dataset id for W8A8/W4A16.
            eval_tasks: Comma-separated lm-eval tasks.
            eval_task_dir: Stored folder URI (s3://) of local lm-eval task YAMLs.
            eval_backend: ``vllm`` (GPU) or ``hf``.
            eval_limit: Examples per task (0: all).
            eval_num_fewshot: Few-shot examples (-1: task default).
            eval_batch_size: lm-eval batch size.
            eval_device: ``cuda``/``cpu`` (empty: lm-eval chooses).
            eval_max_length: Context length cap for evaluation (0: model default).
            eval_offline: Never contact the Hub for datasets (they must be local or cached).
            thresholds: Gate config as JSON/YAML (absolute ``min``/``max``, ``min_recovery``).
            registry_url: Kubeflow Model Registry URL (empty: ``$MODEL_REGISTRY_URL`` or skip).
            registered_model_name: Registry model name without ``/`` (empty: from the Hub id).
            deploy_target: ``kserve`` (InferenceService), ``llmisvc`` (LLMInferenceService) or
                ``local``.
            deploy_name: InferenceService and served model name (empty: one per registered
                model).
            namespace: Namespace of the InferenceService (empty: the run's namespace).
            storage_uri: storageUri override for KServe (s3://, pvc://, oci://, hf://).
            prefer_registry_uri: Serve ``model-registry://<model>/<version>`` (needs the
                registry's ClusterStorageContainer).
            modelcar_repository: OCI repository (``registry/path``) to push a KServe modelcar
                of the gated model to; deploy then serves ``oci://<repository>@sha256:…``
                (empty: off, deploy serves ``storage_uri`` or the stored model).
            serving_runtime: ServingRuntime name.
            serving_service_account: Predictor service account that holds the store's secret.
            deployment_mode: ``Standard`` (KServe >= 0.16), ``RawDeployment`` (older), ``Knative``.
            max_model_len: vLLM ``--max-model-len`` (0: model default).
            canary_traffic_percent: Share of traffic the candidate gets beside production while
                it is gated (KServe Standard mode; 0: a dark launch only the gates reach).
            endpoint_eval_tasks: lm-eval tasks run against the live candidate, checked against
                the gate config's ``endpoint`` thresholds (empty: off).
            accelerator_type: GPU resource name for quantize, evaluation and serving.
            accelerator_count: GPUs per quantize/evaluation pod and per serving replica, as a
                string ("0" for CPU); vLLM's tensor parallel size.
            tolerations: Tolerations (a list) for GPU steps and the predictor.
            node_selector: Node labels (a mapping) for GPU steps and the predictor.
            hf_token_secret: Secret with key ``token`` mounted as ``HF_TOKEN`` (optional).
            model_store_secret: Secret with ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and
                ``AWS_ENDPOINT_URL`` for the model store.
            modelcar_secret: Secret (``kubernetes.io/dockerconfigjson``) with the modelcar
                registry's credentials, mounted for the package step (optional).
            signing_key_secret: Secret with key ``private-key`` (PEM EC key; optional
                ``certificate``, ``certificate-chain``) that signs stored models (optional).
            verify_key_secret: Secret with key ``public-key`` (or ``certificate-chain``) that
                stored models must verify against before evaluation and deploy (optional).
            hf_endpoint: Hub mirror URL (empty: the public hub).
            vllm_python: For ``local`` deploys: the interpreter with vLLM.
            smoke_prompt: Prompt of the post-deploy smoke test.
        """
        p = dict(locals())  # every run parameter's channel, for pipelines.stages
        # the exit handler undoes whatever this run deployed and did not promote
        with dsl.ExitHandler(rollback_on_exit(p, placement), name="release"):
            check = preflight(p, placement, preflight_release)

            download = download_model(
                repo_id=model_id,
                model_store=model_store,
                revision=revision,
                allow_pickle=allow_pickle,
                allow_remote_code=allow_remote_code,
                hf_endpoint=hf_endpoint,
            ).set_display_name("download")
            download.after(check)
            # the revision may be a moving branch: never reuse a cached result for it
            no_cache(place(download, "download", placement))
            use_hf_token(download, hf_token_secret)
            use_store_secret(download, model_store_secret)
            use_signing_key(download, signing_key_secret)  # signed before it is published

            quantize = quantize_model(
                model_uri=download.outputs["model_uri"],
                model_store=model_store,
                repo_id=model_id,
                commit_sha=download.outputs["commit_sha"],
                scheme=quant_scheme,
                calibration_data=calibration_data,
            ).set_display_name("quantize")
            place(quantize, "quantize", placement, **gpu(p))
            use_store_secret(quantize, model_store_secret)
            use_signing_key(quantize, signing_key_secret)
            use_verify_key(quantize, verify_key_secret)  # the base, before it is read

            register = register_candidate(
                model_uri=quantize.outputs["model_uri"],
                repo_id=model_id,
                revision=revision,
                commit_sha=download.outputs["commit_sha"],
                scheme=quantize.outputs["scheme"],
                model_name=registered_model_name,
                registry_url=registry_url,
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ).set_display_name("register candidate")
            retry_safely(no_cache(place(register, "register", placement)))
            use_store_secret(register, model_store_secret)  # reads the stored signature

            base = evaluate(p, placement, model_uri=download.outputs["model_uri"], label="base")
            candidate = evaluate(
                p, placement, model_uri=quantize.outputs["model_uri"], label="candidate"
            )
            # after the base: a candidate that is the base folder (quant_scheme none) finds the
            # base's evaluation in the store's cache instead of evaluating it again, and a
            # release holds one evaluation's GPUs at a time (a base evaluated by an earlier
            # release is reused at once)
            candidate.after(base)
            production = production_lookup(p, placement, model_id=model_id)
            production.after(check)
            gate_and_promote(
                p,
                placement,
                candidate_results=candidate.outputs["results"],
                base_results=base.outputs["results"],
                production=production,
                record=register.outputs["record"],
                model_uri=quantize.outputs["model_uri"],
            )

    return release


release = build_release(Placement())
PACKAGE_PATH = PIPELINES_DIR / "release.yaml"


def compile_pipeline(
    package_path: str = str(PACKAGE_PATH), placement: Placement | None = None
) -> str:
    """Compile the release pipeline (default placement unless given) to ``package_path``."""
    pipeline = release if placement is None else build_release(placement)
    compiler.Compiler().compile(pipeline_func=pipeline, package_path=package_path)
    return package_path


if __name__ == "__main__":
    compile_pipeline()
