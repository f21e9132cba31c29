"""The redeploy pipeline, for scheduled runs: take a registered version, re-evaluate it, gate it
against absolute bounds and the version in production, then deploy, smoke-test and promote it.

Composed from the release pipeline's components (:mod:`pipelines.stages`); compile with
``modelgate compile``; the YAML beside this file is drift-tested.
"""

from kfp import compiler, dsl
from modelgate.components import preflight_redeploy, resolve_version
from modelgate.pipelines import PIPELINES_DIR
from modelgate.pipelines.platform import no_cache, place
from modelgate.pipelines.stages import (
    evaluate,
    gate_and_promote,
    preflight,
    production_lookup,
    rollback_on_exit,
)

from modelgate.params import RedeployParams, param_default
from modelgate.placement import Placement


def D(name: str):  # noqa: N802 - reads like the release pipeline's D
    """Every default comes from modelgate.params.RedeployParams."""
    return param_default(name, RedeployParams)


def build_redeploy(placement: Placement):
    """The redeploy pipeline with the per-step resources of ``placement``."""

    @dsl.pipeline(
        name="modelgate-redeploy",
        description=(
            "Re-evaluate a registered model version with lm-eval, gate it on thresholds and "
            "against the version in production, then deploy it on KServe, smoke-test it and "
            "promote it only if the gate passed."
        ),
    )
    def redeploy(
        registered_model_name: str,
        registry_url: str = D("registry_url"),
        model_version: str = D("model_version"),
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
        """Re-evaluate, gate and serve a registered version.

        Args:
            registered_model_name: Registered model name (slash-free).
            registry_url: Registry URL: Kubeflow ``http(s)://`` or MLflow ``mlflow+…`` (empty:
                ``$MODEL_REGISTRY_URL``).
            model_version: Version to redeploy (empty: the newest neither rejected nor archived).
            eval_tasks: Comma-separated lm-eval tasks.
            eval_task_dir: Stored folder URI (s3://) of local lm-eval task YAMLs.
            eval_backend: ``vllm`` (GPU) or ``hf``.
            eval_limit: Examples per task (0: all).
            eval_num_fewshot: Few-shot examples (-1: task default).
            eval_batch_size: lm-eval batch size.
            eval_device: ``cuda``/``cpu`` (empty: lm-eval chooses).
            eval_max_length: Context length cap for evaluation (0: model default).
            eval_offline: Never contact the Hub for datasets.
            thresholds: Gate config (absolute ``min``/``max``, ``min_vs_production``; a redeploy
                has no base model, so ``min_recovery`` fails closed).
            deploy_target: ``kserve`` (InferenceService), ``llmisvc`` (LLMInferenceService) or
                ``local``.
            deploy_name: InferenceService and served model name (empty: one per registered
                model).
            namespace: Namespace of the InferenceService (empty: the run's namespace).
            storage_uri: storageUri override for KServe.
            prefer_registry_uri: Serve ``model-registry://<model>/<version>``.
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
            accelerator_type: GPU resource name for evaluation and serving.
            accelerator_count: GPUs per evaluation pod and per serving replica, as a string.
            tolerations: Tolerations (a list) for GPU steps and the predictor.
            node_selector: Node labels (a mapping) for GPU steps and the predictor.
            hf_token_secret: Secret with key ``token`` mounted as ``HF_TOKEN`` (optional).
            model_store_secret: Secret with the model store's ``AWS_*`` keys.
            modelcar_secret: Secret (``kubernetes.io/dockerconfigjson``) with the modelcar
                registry's credentials, mounted for the package step (optional).
            signing_key_secret: Secret with key ``private-key`` (PEM EC key; optional
                ``certificate``, ``certificate-chain``) that signs stored models (optional).
            verify_key_secret: Secret with key ``public-key`` (or ``certificate-chain``) that
                stored models must verify against before evaluation and deploy (optional).
            hf_endpoint: Hub mirror URL for datasets (empty: the public hub).
            vllm_python: For ``local`` deploys: the interpreter with vLLM.
            smoke_prompt: Prompt of the post-deploy smoke test.
        """
        p = dict(locals())  # every run parameter's channel, for pipelines.stages
        # the exit handler undoes whatever this run deployed and did not promote
        with dsl.ExitHandler(rollback_on_exit(p, placement), name="redeploy"):
            check = preflight(p, placement, preflight_redeploy)
            version = resolve_version(
                model_name=registered_model_name,
                version_name=model_version,
                registry_url=registry_url,
            ).set_display_name("resolve version")
            no_cache(place(version.after(check), "register", placement))
            candidate = evaluate(
                p, placement, model_uri=version.outputs["model_uri"], label="candidate"
            )
            production = production_lookup(p, placement, model_id=registered_model_name)
            production.after(check)
            gate_and_promote(
                p,
                placement,
                candidate_results=candidate.outputs["results"],
                production=production,
                record=version.outputs["record"],
                model_uri=version.outputs["model_uri"],
            )

    return redeploy


redeploy = build_redeploy(Placement())
PACKAGE_PATH = PIPELINES_DIR / "redeploy.yaml"


def compile_pipeline(
    package_path: str = str(PACKAGE_PATH), placement: Placement | None = None
) -> str:
    """Compile the redeploy pipeline (default placement unless given) to ``package_path``."""
    pipeline = redeploy if placement is None else build_redeploy(placement)
    compiler.Compiler().compile(pipeline_func=pipeline, package_path=package_path)
    return package_path


if __name__ == "__main__":
    compile_pipeline()
