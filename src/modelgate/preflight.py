"""Preflight: everything knowable about a release, checked before any model work starts.

``modelgate preflight`` and ``modelgate run|submit`` run :func:`preflight` on the submitting
machine; the release pipeline runs it again as its first step, in the cluster, where it also
checks what only the cluster knows (:func:`cluster_checks`): may the pipeline's service account
manage InferenceServices in the namespace (a SelfSubjectAccessReview), does the ServingRuntime
exist, can the pod write the model store.

Every check runs (network ones with short timeouts, side by side) and every failure is reported,
one line each with the fix, as the gates do.

With the model's ``config.json`` (read from the Hub), two checks size the release where the run
puts it (:mod:`modelgate.memory`): ``hardware`` (the scheme on the GPUs asked for, and the
model's shapes against the scheme's groups and blocks) and ``memory`` (the quantize step's host
memory, one layer on one GPU, the served and evaluated model with its KV cache on the GPUs). In
the pipeline's own preflight step they run only when the step is given the GPU parameters
(``accelerator_count``): sizing against defaults the run did not ask for would refuse wrongly.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelgate.errors import ConfigError, DownloadError, ModelgateError
from modelgate.params import RedeployParams, ReleaseParams

if TYPE_CHECKING:
    from modelgate.placement import Placement

logger = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
#: Checks that talk to a server get this long.
NETWORK_TIMEOUT = 5.0


@dataclass(frozen=True)
class CheckResult:
    """One preflight check: its name, whether it passed, and what was found or how to fix it."""

    name: str
    ok: bool
    detail: str


class PreflightError(ConfigError):
    """One or more preflight checks failed; ``results`` has every check."""

    def __init__(self, results: list[CheckResult]) -> None:
        self.results = results
        failed = [r for r in results if not r.ok]
        lines = "\n".join(f"  {r.name}: {r.detail}" for r in failed)
        super().__init__(f"preflight found {len(failed)} problem(s):\n{lines}")


Check = Callable[[], str]


def _run(checks: dict[str, Check]) -> list[CheckResult]:
    def one(item: tuple[str, Check]) -> CheckResult:
        name, check = item
        started = time.monotonic()
        try:
            detail = check()
            ok = True
        except ModelgateError as e:
            detail, ok = str(e).replace("\n", " "), False
        except Exception as e:  # noqa: BLE001 - a check must report, never crash the others
            detail, ok = f"{type(e).__name__}: {e}", False
        logger.debug("preflight %s: %s in %.2fs", name, ok, time.monotonic() - started)
        return CheckResult(name, ok, detail)

    with ThreadPoolExecutor(max_workers=max(len(checks), 1)) as pool:
        return list(pool.map(one, checks.items()))


def _model_id(params: ReleaseParams) -> str:
    if not params.model_id.strip():
        raise ConfigError("no model id: pass the Hub repository to release (--model-id org/model)")
    if not _REPO_ID.match(params.model_id):
        raise ConfigError(f"{params.model_id!r} is not a Hub repository id such as 'org/model'")
    return params.model_id


def _gate(params: ReleaseParams | RedeployParams) -> str:
    from modelgate.gates import load_gate_config
    from modelgate.quantize import RECOVERY_DEFAULT, unresolved_recovery_defaults

    unresolved = unresolved_recovery_defaults(params.thresholds)
    if unresolved:
        # modelgate run/submit/schedule fill these in (modelgate.params.resolve_params); a run
        # started elsewhere (the KFP UI) passes the text as it is, and the gate needs numbers
        raise ConfigError(
            f"min_recovery: {RECOVERY_DEFAULT} of {', '.join(unresolved)} is filled in by "
            "modelgate run/submit/schedule from the scheme; give the number here "
            "(docs/gates.md#schemes)"
        )
    config = load_gate_config(params.thresholds)
    return f"gate {config.name!r}: {len(config.thresholds)} threshold(s)"


def _quantization(params: ReleaseParams) -> str:
    from pathlib import Path

    from modelgate.quantize import NEEDS_CALIBRATION, validate_scheme
    from modelgate.storage import scheme_of

    scheme = validate_scheme(params.quant_scheme)
    if scheme in NEEDS_CALIBRATION:
        source = params.calibration_data
        if not source:
            raise ConfigError(
                f"scheme {scheme} needs calibration data: pass --calibration-data "
                "(a JSONL file, an s3:// URI or a dataset id), or choose a scheme that needs "
                f"none ({', '.join(sorted(_data_free()))})"
            )
        looks_local = source.endswith((".jsonl", ".json")) or source.startswith((".", "/"))
        if not scheme_of(source) and looks_local and not Path(source).is_file():
            raise ConfigError(f"calibration file {source!r} does not exist")
    return scheme


def _data_free() -> set[str]:
    from modelgate.quantize import SCHEME_INFO

    return {n for n, info in SCHEME_INFO.items() if not info.calibration and n != "none"}


def model_config(params: ReleaseParams) -> dict[str, Any]:
    """The model's ``config.json`` from the Hub (or mirror) at the run's revision.

    Raises:
        DownloadError: The file could not be fetched, or is not a JSON object of bounded size.
    """
    import os

    from huggingface_hub import hf_hub_download

    from modelgate.constants import HF_DEFAULT_ENDPOINT, HF_ENDPOINT_ENV
    from modelgate.download import hub_token
    from modelgate.memory import MAX_CONFIG_BYTES

    endpoint = (
        params.hf_endpoint or os.environ.get(HF_ENDPOINT_ENV) or HF_DEFAULT_ENDPOINT
    ).rstrip("/")
    token = hub_token(endpoint)
    where = f"config.json of {params.model_id}@{params.revision}"
    try:
        path = hf_hub_download(
            params.model_id, "config.json", revision=params.revision, endpoint=endpoint, token=token
        )
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except Exception as e:  # huggingface_hub raises many types (HTTP, offline, not found)
        raise DownloadError(f"could not read {where}: {e}") from e
    if len(raw) > MAX_CONFIG_BYTES:
        raise DownloadError(f"{where} is larger than {MAX_CONFIG_BYTES} bytes: not a model config")
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise DownloadError(f"{where} is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise DownloadError(f"{where} is not a JSON object")
    return data


def release_placement(params: ReleaseParams) -> Placement:
    """The placement a release with ``params`` runs with: the compiled per-step resources and
    the run's GPU parameters.

    Raises:
        ConfigError: A GPU parameter is malformed.
    """
    from modelgate.placement import placement_from_options

    return placement_from_options(
        accelerator_type=params.accelerator_type,
        accelerator_count=params.accelerator_count,
        tolerations=params.tolerations,
        node_selector=params.node_selector,
    )


def _host_memory() -> int | None:
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return None


def check_hardware_fit(
    params: ReleaseParams, *, config: dict[str, Any], placement: Placement | None = None
) -> str:
    """The ``hardware`` check on a model ``config``: the scheme on the GPUs asked for, and the
    model's shapes against the scheme's groups and blocks.

    Raises:
        ConfigError: What does not fit, one clause each with its fix.
    """
    from modelgate.memory import ModelShape, check_hardware, gpu_of

    shape = ModelShape.from_config(config)
    placement = placement or release_placement(params)
    gpu = gpu_of(placement)
    problems = check_hardware(
        shape, scheme=params.quant_scheme, gpu=gpu, gpus=placement.accelerator_count
    )
    if problems:
        raise ConfigError("; ".join(problems))
    where = (
        f"{placement.accelerator_count} x {gpu.name} (compute capability {gpu.capability})"
        if gpu
        else "GPU unknown: capability not checked"
    )
    return f"{params.quant_scheme} on {shape.architecture}: shapes fit; {where}"


def check_memory_fit(
    params: ReleaseParams,
    *,
    config: dict[str, Any],
    local: bool,
    placement: Placement | None = None,
) -> str:
    """The ``memory`` check on a model ``config`` (:func:`modelgate.memory.check_release_fit`);
    a ``local`` run quantizes in this machine's memory instead of the quantize step's.

    Raises:
        ConfigError: What does not fit, with the numbers and the fix.
    """
    from modelgate.memory import ModelShape, check_release_fit

    report = check_release_fit(
        ModelShape.from_config(config),
        scheme=params.quant_scheme,
        placement=placement or release_placement(params),
        max_model_len=params.max_model_len,
        evaluate_with_vllm=params.eval_backend == "vllm",
        host_memory=_host_memory() if local else None,
    )
    if report.problems:
        raise ConfigError("; ".join(report.problems) + f" [estimate: {report.summary()}]")
    return report.summary()


def _evaluation(params: ReleaseParams | RedeployParams, *, local: bool) -> str:
    import importlib.util

    from modelgate.evaluate import BACKENDS, check_task_names
    from modelgate.storage import scheme_of

    if params.eval_backend not in BACKENDS or params.eval_backend == "local-completions":
        choices = [b for b in BACKENDS if b != "local-completions"]
        raise ConfigError(f"unknown eval backend {params.eval_backend!r}; choose one of {choices}")
    if local and params.eval_backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            "eval backend vllm needs vLLM in this environment (on a cluster: the eval image, "
            "on GPU nodes); run locally with --eval-backend hf"
        )
    tasks = [t.strip() for t in params.eval_tasks.split(",") if t.strip()]
    task_dir = params.eval_task_dir or None
    if task_dir and scheme_of(task_dir):
        from modelgate.storage import fetch

        task_dir = str(fetch(task_dir))  # a stored folder of a few task files
    check_task_names(tasks, task_dir=task_dir)
    return ", ".join(tasks)


def _deploy_target(params: ReleaseParams | RedeployParams, *, local: bool) -> str:
    from modelgate.deploy.target import TARGETS

    if params.deploy_target not in TARGETS:
        raise ConfigError(
            f"unknown deploy target {params.deploy_target!r}; choose one of {list(TARGETS)}"
        )
    if params.deploy_target == "local":
        if not local:
            raise ConfigError("deploy target local only works with --local runs; use kserve")
        from modelgate.deploy.local import resolve_vllm_python

        return f"vLLM at {resolve_vllm_python(params.vllm_python or None)}"
    from modelgate.deploy.spec import DeploySpec
    from modelgate.naming import serving_name
    from modelgate.validation import validated

    name = serving_name(
        params.deploy_name,
        repo_id=getattr(params, "model_id", ""),
        registered=params.registered_model_name or None,
    )
    spec = validated(
        DeploySpec,
        {
            "name": name,
            "storage_uri": (
                "model-registry://check/name"
                if params.prefer_registry_uri
                else params.storage_uri or "s3://check/name"
            ),
            "runtime": params.serving_runtime,
            "deployment_mode": params.deployment_mode,
            "canary_traffic_percent": params.canary_traffic_percent,
        },
        what="deployment",
    )
    if params.deploy_target == "llmisvc":
        from modelgate.deploy.llmisvc import check_supported

        check_supported(spec)  # what an LLMInferenceService cannot take, before any model work
    if local:
        from modelgate.deploy.kserve import KServeTarget

        KServeTarget._default_apis()  # credentials for the cluster
    kind = "LLMInferenceService" if params.deploy_target == "llmisvc" else "InferenceService"
    return f"{kind} {name}"


def _registry(params: ReleaseParams) -> str:
    from modelgate.registry import URL_ENV, registry_from_url

    backend = registry_from_url(
        params.registry_url or None, connect_attempts=1, timeout=NETWORK_TIMEOUT
    )
    if backend is None:
        return f"skipped: no registry configured (set {URL_ENV})"
    backend.check()
    return f"{backend.describe()} answers"


def _hub(params: ReleaseParams) -> str:
    from modelgate.download import resolve_snapshot

    snapshot = resolve_snapshot(
        params.model_id,
        revision=params.revision,
        allow_pickle=params.allow_pickle,
        allow_remote_code=params.allow_remote_code,
        endpoint=params.hf_endpoint or None,
    )
    sha, files = snapshot.commit_sha[:12], len(snapshot.files)
    return f"{params.model_id}@{params.revision} = {sha}, {files} files"


def _store(params: ReleaseParams, *, local: bool) -> str:
    import os

    from modelgate.storage import open_store, scheme_of

    if not params.model_store:
        raise ConfigError("no model store: pass --model-store s3://bucket/prefix")
    store = open_store(params.model_store)
    if not local and scheme_of(params.model_store) != "s3":
        raise ConfigError(
            f"model store {params.model_store} is a local folder the cluster cannot read: "
            "pass --model-store s3://bucket/prefix"
        )
    if not local and not os.environ.get("AWS_ACCESS_KEY_ID"):
        return f"{store.root}: not checked from here (no AWS keys); the run's preflight step does"
    store.check_writable()
    return f"{store.root} is writable"


def _signatures() -> str:
    """The configured signing and verify keys load (a missing or unparsable key file stops the
    run here, before any model work)."""
    from modelgate.signing import check_config

    return check_config()


def redeploy_checks(params: RedeployParams, *, local: bool) -> dict[str, Check]:
    """The checks of a redeploy: gate, evaluation, deploy target, and a registry that has the
    version (a redeploy reads it)."""

    def version() -> str:
        from modelgate.registry import resolve_version

        if not params.registered_model_name:
            raise ConfigError("no registered model: pass --registered-model-name")
        record = resolve_version(
            registry_url=params.registry_url or None,
            model_name=params.registered_model_name,
            version_name=params.model_version or None,
        )
        return f"{record.model_name}:{record.version_name} ({record.stage}) at {record.uri}"

    return {
        "gate": lambda: _gate(params),
        "evaluation": lambda: _evaluation(params, local=local),
        "deploy": lambda: _deploy_target(params, local=local),
        "registry": version,
        "signatures": _signatures,
    }


def checks_for(
    params: ReleaseParams | RedeployParams, *, local: bool, sizing: bool = True
) -> dict[str, Check]:
    """The checks of a run of the pipeline ``params`` belong to (``sizing``: with the
    ``hardware`` and ``memory`` checks of a release)."""
    if isinstance(params, RedeployParams):
        return redeploy_checks(params, local=local)
    return release_checks(params, local=local, sizing=sizing)


def sizing_checks(params: ReleaseParams, *, local: bool) -> dict[str, Check]:
    """``hardware`` and ``memory``: the release sized from the model's ``config.json``, read
    once from the Hub for both."""
    lock = threading.Lock()
    fetched: list[dict[str, Any]] = []

    def config() -> dict[str, Any]:
        with lock:
            if not fetched:
                fetched.append(model_config(params))
            return fetched[0]

    return {
        "hardware": lambda: check_hardware_fit(params, config=config()),
        "memory": lambda: check_memory_fit(params, config=config(), local=local),
    }


def release_checks(params: ReleaseParams, *, local: bool, sizing: bool = True) -> dict[str, Check]:
    """The checks of a release with ``params`` (``local``: a ``--local`` run on this machine;
    ``sizing``: with the ``hardware`` and ``memory`` checks, which read the model's config from
    the Hub)."""
    checks: dict[str, Check] = {
        "model": lambda: _model_id(params),
        "gate": lambda: _gate(params),
        "quantization": lambda: _quantization(params),
        "evaluation": lambda: _evaluation(params, local=local),
        "deploy": lambda: _deploy_target(params, local=local),
        "registry": lambda: _registry(params),
        "model store": lambda: _store(params, local=local),
        "signatures": _signatures,
    }
    if _REPO_ID.match(params.model_id):
        checks["hub"] = lambda: _hub(params)
        if sizing:
            checks |= sizing_checks(params, local=local)
    return checks


def cluster_checks(
    params: ReleaseParams | RedeployParams, *, namespace: str, api_client: Any = None
) -> dict[str, Check]:
    """What only the cluster knows, checked from a pod of the pipeline (see module docstring)."""

    def access() -> str:
        from kubernetes import client

        auth = client.AuthorizationV1Api(api_client)
        missing = []
        for group, resource, verb in (
            ("serving.kserve.io", "inferenceservices", "create"),
            ("serving.kserve.io", "inferenceservices", "update"),
            ("serving.kserve.io", "inferenceservices", "get"),
            ("apps", "deployments", "get"),
        ):
            review = client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(
                        group=group, resource=resource, verb=verb, namespace=namespace
                    )
                )
            )
            if not auth.create_self_subject_access_review(review).status.allowed:
                missing.append(f"{verb} {resource}.{group}")
        if missing:
            from modelgate.deploy.kserve import RBAC_HINT

            raise ConfigError(f"this pod may not {', '.join(missing)} in {namespace}: {RBAC_HINT}")
        return f"may manage InferenceServices in {namespace}"

    def runtime() -> str:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            client.CustomObjectsApi(api_client).get_namespaced_custom_object(
                "serving.kserve.io",
                "v1alpha1",
                namespace,
                "servingruntimes",
                params.serving_runtime,
            )
        except ApiException as e:
            if e.status == 404:
                raise ConfigError(
                    f"ServingRuntime {params.serving_runtime!r} does not exist in {namespace}: "
                    f"kubectl apply -k manifests/overlays/<overlay> -n {namespace}"
                ) from e
            raise
        return f"ServingRuntime {params.serving_runtime} exists"

    checks: dict[str, Check] = {}
    if params.deploy_target == "kserve":
        checks |= {"rbac": access, "serving runtime": runtime}
    return checks


def preflight(checks: dict[str, Check]) -> list[CheckResult]:
    """Run every check; return the results, or raise if any failed.

    Raises:
        PreflightError: One or more checks failed (the message lists each with its fix).
    """
    results = _run(checks)
    if not all(r.ok for r in results):
        raise PreflightError(results)
    return results


def run_step_preflight(params: ReleaseParams | RedeployParams) -> str:
    """The pipelines' first step: the run's checks, plus the cluster's when in a pod.

    Returns:
        One line per check.

    Raises:
        PreflightError: One or more checks failed.
    """
    from modelgate.deploy.plan import current_namespace

    pod_namespace = current_namespace()
    # sized only against GPU parameters the step was given, not the defaults (module docstring)
    sizing = "accelerator_count" in params.model_fields_set
    checks = checks_for(params, local=pod_namespace is None, sizing=sizing)
    if pod_namespace is not None:
        from kubernetes import config

        config.load_incluster_config()
        checks |= cluster_checks(params, namespace=params.namespace or pod_namespace)
    results = preflight(checks)
    return "\n".join(f"{r.name}: {r.detail}" for r in results)
