"""Names and defaults that more than one layer uses, declared once.

KFP component signatures must hold literals (their source is shipped into the pod); a compile
test checks those literals against :mod:`modelgate.params`, which takes its defaults from here.
"""

from __future__ import annotations

# --- environment variables -------------------------------------------------------------------
#: Model registry URL (Kubeflow Model Registry, or ``mlflow+…``).
REGISTRY_URL_ENV = "MODEL_REGISTRY_URL"
#: Bearer token for the Kubeflow Model Registry.
REGISTRY_TOKEN_ENV = "MODEL_REGISTRY_TOKEN"
#: File holding that token (e.g. a projected service-account token with the registry's audience).
REGISTRY_TOKEN_FILE_ENV = "MODEL_REGISTRY_TOKEN_FILE"
#: ``1``: skip TLS certificate verification of an ``https://`` Kubeflow Model Registry.
REGISTRY_INSECURE_ENV = "MODEL_REGISTRY_INSECURE"
#: Hugging Face Hub endpoint (a mirror) and token, as huggingface_hub names them.
HF_ENDPOINT_ENV = "HF_ENDPOINT"
HF_TOKEN_ENV = "HF_TOKEN"
#: The public Hub, when no endpoint is named.
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
#: Python of an environment with vLLM, for local serving.
VLLM_PYTHON_ENV = "MODELGATE_VLLM_PYTHON"
#: Default model store of CLI runs.
MODEL_STORE_ENV = "MODELGATE_MODEL_STORE"
#: KFP API endpoint and token, for submit and schedule.
KFP_ENDPOINT_ENV = "KF_PIPELINES_ENDPOINT"
KFP_TOKEN_ENV = "KF_PIPELINES_TOKEN"

# --- cluster object names (manifests/base) ---------------------------------------------------
#: The vLLM ServingRuntime of manifests/base.
RUNTIME_NAME = "vllm-runtime"
#: The predictor's service account, holding the model store's secret.
PREDICTOR_SERVICE_ACCOUNT = "modelgate-model-reader"
#: Secret with key ``token``, mounted as ``HF_TOKEN`` in pipeline pods.
HF_TOKEN_SECRET = "hf-token"
#: Secret with the model store's ``AWS_*`` keys.
MODEL_STORE_SECRET = "modelgate-model-store"

# --- serving ---------------------------------------------------------------------------------
#: Prompt of the post-deploy smoke test (answered by the demo's tiny model).
SMOKE_PROMPT = "2+3="
#: Seconds the deploy step waits for a rollout before it restores the previous spec.
DEPLOY_TIMEOUT_S = 1800
