"""Model Registry components: register the candidate, then record its evaluation."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from modelgate.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register_candidate(
    model_uri: str,
    repo_id: str,
    revision: str,
    commit_sha: str,
    scheme: str,
    model_name: str = "",
    version_name: str = "",
    registry_url: str = "",
    pipeline_run_id: str = "",
) -> NamedTuple("RegisterOutputs", [("status", str), ("record", str)]):
    """Register the quantized model as a candidate version in the Kubeflow Model Registry.

    With no registry configured (``registry_url`` empty and ``MODEL_REGISTRY_URL`` unset) the
    step reports ``skipped: no registry configured (set MODEL_REGISTRY_URL)``.

    Args:
        model_uri: The stored candidate (the registered artifact URI; KServe can fetch it).
        repo_id: Hub repository id, recorded as ``source_repo``.
        revision: Requested revision, recorded as ``source_revision``.
        commit_sha: Resolved commit, recorded as ``source_commit``.
        scheme: Quantization scheme, recorded as ``quant_scheme``.
        model_name: Registered model name (empty: derived from the Hub id, without ``/``).
        version_name: Version name (empty: ``<scheme>-<commit[:12]>-<run id>``).
        registry_url: Registry URL ``http(s)://host:port`` (empty: ``$MODEL_REGISTRY_URL``).
        pipeline_run_id: KFP run id, recorded for lineage.

    The stored folder's signature is recorded too (``signature.signed`` yes/no, the file, the
    key fingerprint or certificate identity).

    Returns:
        status: ``registered`` or ``skipped: ...``; record: the registry record as JSON.

    Raises:
        ConfigError: A model name with ``/``.
        RegistryError: The registry refused the model (nothing half-registered is left active).
    """
    import json
    from collections import namedtuple

    from modelgate.deploy.plan import current_namespace
    from modelgate.logs import configure_logging
    from modelgate.registry import candidate_request, register_candidate
    from modelgate.signing import registry_signature

    configure_logging()
    request = candidate_request(
        model_uri=model_uri,
        repo_id=repo_id,
        revision=revision,
        commit_sha=commit_sha,
        scheme=scheme,
        model_name=model_name or None,
        version_name=version_name or None,
        pipeline_run_id=pipeline_run_id or None,
        namespace=current_namespace(),
        signature=registry_signature(model_uri),
    )
    record = register_candidate(registry_url=registry_url or None, request=request)
    outputs = namedtuple("RegisterOutputs", ["status", "record"])
    status = record.status if record.status == "registered" else record.message
    return outputs(status, json.dumps(record.to_dict()))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def resolve_version(model_name: str, version_name: str = "", registry_url: str = "") -> NamedTuple(
    "ResolvedVersion", [("model_uri", str), ("record", str)]
):
    """The registered version a redeploy re-evaluates and serves.

    Args:
        model_name: Registered model name.
        version_name: Version (empty: the newest one neither rejected nor archived).
        registry_url: Registry URL (empty: ``$MODEL_REGISTRY_URL``).

    Returns:
        model_uri: where the version's model is stored; record: its registry record as JSON.

    Raises:
        ConfigError: No registry configured.
        RegistryError: No such version.
    """
    from collections import namedtuple

    from modelgate.logs import configure_logging
    from modelgate.registry import resolve_version as resolve

    configure_logging()
    record = resolve(
        registry_url=registry_url or None, model_name=model_name, version_name=version_name or None
    )
    outputs = namedtuple("ResolvedVersion", ["model_uri", "record"])
    return outputs(record.uri or "", record.to_json())


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def lookup_production(
    production: Output[Artifact],
    model_id: str,
    model_name: str = "",
    registry_url: str = "",
) -> str:
    """Find the version in production and the results stored on it, for the gate.

    Args:
        production: The production version's name, record and results (JSON; nulls if none).
        model_id: Hub repository id (the registered model name derives from it).
        model_name: Registered model name (empty: derived from the Hub id).
        registry_url: Registry URL (empty: ``$MODEL_REGISTRY_URL``; none: nothing to compare).

    Returns:
        The production version's name, or "" when there is none.

    Raises:
        RegistryError: The registry could not be read.
    """
    from modelgate.logs import configure_logging
    from modelgate.naming import registered_model_name
    from modelgate.registry import production_of
    from modelgate.registry.base import write_production

    configure_logging()
    version = production_of(
        registry_url=registry_url or None,
        model_name=registered_model_name(model_id, model_name or None),
    )
    write_production(version, production.path)
    return version.record.version_name or "" if version else ""


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def record_evaluation(
    record: str,
    candidate_results: Input[Artifact],
    gate_passed: bool,
    gate_report: str,
    registry_url: str = "",
) -> str:
    """Store the candidate's results, the gate decision and a model card on its version.

    A failed gate leaves the version registered as ``rejected``, with its decision and card.

    Args:
        record: Registry record JSON from ``register_candidate``.
        candidate_results: Evaluation results of the candidate (JSON).
        gate_passed: The gate decision.
        gate_report: The gate table (Markdown).
        registry_url: Registry URL (empty: ``$MODEL_REGISTRY_URL``).

    Returns:
        The version's stage, or the reason it was skipped.

    Raises:
        RegistryError: The registry refused the update.
    """
    from modelgate.evaluate import EvalResult
    from modelgate.logs import configure_logging
    from modelgate.registry import RegistryRecord, record_evaluation

    configure_logging()
    updated = record_evaluation(
        record=RegistryRecord.from_dict(record),
        registry_url=registry_url or None,
        results=EvalResult.load(candidate_results.path),
        gate_passed=gate_passed,
        gate_report=gate_report,
    )
    return updated.stage or "" if updated.status == "registered" else updated.message


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def promote_candidate(record: str, registry_url: str = "", deployment: str = "") -> str:
    """After the post-deploy gates: the candidate becomes production where it serves (a KServe
    canary replaces the predictor, a local candidate takes over from the old server), then in
    the registry, where the previous production version is archived.

    Safe to repeat (the pipeline retries it): promoting what is already production changes
    nothing.

    Args:
        record: Registry record JSON from ``register_candidate``.
        registry_url: Registry URL (empty: ``$MODEL_REGISTRY_URL``).
        deployment: Deployment details JSON from ``deploy_model`` (empty: registry only).

    Returns:
        What was done, or why it was skipped.

    Raises:
        DeployError: The target could not complete the promotion.
        RegistryError: The registry refused the update; the message says that the endpoint
            serves the version while the registry still says ``candidate``, and the command
            that promotes it by hand.
    """
    import json

    from modelgate.deploy.target import Deployment
    from modelgate.logs import configure_logging
    from modelgate.postdeploy import promote_release
    from modelgate.registry import RegistryRecord

    configure_logging()
    return promote_release(
        Deployment(**json.loads(deployment)) if deployment else None,
        record=RegistryRecord.from_dict(record),
        registry_url=registry_url or None,
    )
