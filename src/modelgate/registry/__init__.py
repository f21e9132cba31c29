"""Model registries: register a candidate, record why it passed or failed (its quality gate, then
its serving gate), promote it.

:class:`~modelgate.registry.base.RegistryBackend` has two implementations, picked by URL:
``http(s)://host:port`` is the Kubeflow Model Registry (:mod:`.kubeflow`), ``mlflow+sqlite:///…``
or ``mlflow+http(s)://…`` MLflow (:mod:`.mlflow`). The functions below are what the pipeline's
steps call; with no registry configured they report ``skipped``.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelgate.credentials import is_redacted
from modelgate.errors import ConfigError, RegistryError
from modelgate.naming import registered_model_name
from modelgate.naming import version_name as naming_version_name
from modelgate.registry.base import (
    AUTHOR_ENV,
    DEFAULT_AUTHOR,
    SKIPPED_MESSAGE,
    URL_ENV,
    ProductionVersion,
    RegisterRequest,
    RegistryBackend,
    RegistryRecord,
    serving_properties,
)

if TYPE_CHECKING:
    from modelgate.evaluate import EvalResult

logger = logging.getLogger(__name__)

__all__ = [
    "ProductionVersion",
    "RegisterRequest",
    "RegistryBackend",
    "RegistryRecord",
    "SKIPPED_MESSAGE",
    "URL_ENV",
    "candidate_request",
    "local_registry_url",
    "production_of",
    "promote_candidate",
    "promote_version",
    "record_evaluation",
    "record_modelcar",
    "record_serving",
    "register_candidate",
    "registry_from_url",
    "resolve_version",
]


def registry_from_url(url: str | None = None, **kw: Any) -> RegistryBackend | None:
    """The registry backend for ``url`` (else ``$MODEL_REGISTRY_URL``), or None without one.

    Args:
        url: ``http(s)://host:port`` (Kubeflow) or ``mlflow+…`` (MLflow).
        **kw: ``author`` (default ``$MODEL_REGISTRY_AUTHOR`` or ``modelgate``),
            ``connect_attempts``, ``timeout``.

    Raises:
        ConfigError: The URL is malformed.
    """
    resolved = (url or "").strip() or os.environ.get(URL_ENV, "").strip()
    if not resolved:
        return None
    kw.setdefault("author", os.environ.get(AUTHOR_ENV) or DEFAULT_AUTHOR)
    from modelgate.registry.mlflow import MLflowRegistry, is_mlflow_url

    if is_mlflow_url(resolved):
        return MLflowRegistry(resolved, **kw)
    from modelgate.registry.kubeflow import KubeflowModelRegistry

    return KubeflowModelRegistry(resolved, **kw)


def local_registry_url(root: str | os.PathLike[str]) -> str:
    """The embedded MLflow registry of local runs under ``root``: ``<root>/registry/mlflow.db``."""
    return "mlflow+sqlite:///" + str((Path(root) / "registry" / "mlflow.db").absolute())


def candidate_request(
    *,
    model_uri: str,
    repo_id: str,
    revision: str,
    commit_sha: str,
    scheme: str,
    model_name: str | None = None,
    version_name: str | None = None,
    pipeline_run_id: str | None = None,
    pipeline_run_name: str | None = None,
    namespace: str | None = None,
    author: str | None = None,
    signature: Mapping[str, str] | None = None,
) -> RegisterRequest:
    """What the register step writes for a quantized candidate (naming and lineage policy).

    The registered model name is slash-free (:func:`modelgate.naming.registered_model_name`);
    the Hub id, revision and commit go into properties, and so does ``signature`` (the stored
    folder's :meth:`~modelgate.signing.SignatureInfo.to_properties`: signed yes/no, signature
    file, key fingerprint or identity). The version name is ``<scheme>-<commit[:12]>-<run>``
    unless given.

    Raises:
        ConfigError: A name the registry URI cannot carry.
    """
    properties: dict[str, str | int | float | bool] = {
        "source_repo": repo_id,
        "source_revision": revision,
        "source_commit": commit_sha,
        "quant_scheme": scheme,
    }
    for key, value in (
        ("pipeline_run_id", pipeline_run_id),
        ("pipeline_run_name", pipeline_run_name),
        ("namespace", namespace),
    ):
        if value:
            properties[key] = value
    properties.update(signature or {})
    return RegisterRequest(
        model_name=registered_model_name(repo_id, model_name),
        version_name=version_name
        or naming_version_name(scheme=scheme, commit_sha=commit_sha, run_id=pipeline_run_id),
        uri=model_uri,
        description=f"{repo_id}@{commit_sha} quantized with {scheme}",
        author=author,
        properties=properties,
    )


def register_candidate(*, registry_url: str | None, request: RegisterRequest) -> RegistryRecord:
    """Pipeline entry point: register ``request`` as a candidate, or skip without a registry.

    Raises:
        ConfigError: The URL is malformed.
        RegistryError: Registration failed (nothing half-registered is left).
    """
    backend = registry_from_url(registry_url)
    if backend is None:
        logger.warning(SKIPPED_MESSAGE)
        return RegistryRecord(
            status="skipped",
            message=SKIPPED_MESSAGE,
            model_name=request.model_name,
            version_name=request.version_name,
            uri=request.uri,
            lineage=request.properties,
        )
    record = backend.register_version(request)
    return record.model_copy(update={"lineage": request.properties, "uri": request.uri})


def production_of(*, registry_url: str | None, model_name: str) -> ProductionVersion | None:
    """Pipeline entry point: the production version of ``model_name`` and its results.

    None without a registry, or when nothing is in production yet.

    Raises:
        RegistryError: The registry could not be read.
    """
    backend = registry_from_url(registry_url)
    if backend is None:
        return None
    return backend.production(model_name)


def resolve_version(
    *, registry_url: str | None, model_name: str, version_name: str | None = None
) -> RegistryRecord:
    """Pipeline entry point of a redeploy: the version to re-evaluate and serve.

    Raises:
        ConfigError: No registry configured.
        RegistryError: No such version (or none that is not rejected or archived).
    """
    backend = registry_from_url(registry_url)
    if backend is None:
        raise ConfigError(f"a redeploy reads the registry: set registry_url (or {URL_ENV})")
    return backend.find_version(model_name, version_name or None)


def _backend_for(record: RegistryRecord, registry_url: str | None) -> RegistryBackend:
    url = (registry_url or "").strip() or os.environ.get(URL_ENV, "").strip() or record.registry
    if url and url == record.registry and is_redacted(url):
        raise ConfigError(
            f"record of {record.model_name}:{record.version_name} names its registry without the "
            f"password ({url}); pass registry_url or set {URL_ENV} to the full URL"
        )
    backend = registry_from_url(url)
    if backend is None:
        raise ConfigError(
            f"record of {record.model_name}:{record.version_name} says registered but names no "
            f"registry; set {URL_ENV}"
        )
    return backend


def model_card(record: RegistryRecord, *, results: EvalResult, gate_report: str) -> str:
    """The model card of ``record`` (the license read from the stored model's README)."""
    from modelgate.errors import ModelgateError
    from modelgate.registry.card import license_of, render_card
    from modelgate.storage import read_file

    readme = None
    if record.uri:
        try:
            readme = read_file(record.uri, "README.md")
        except ModelgateError:
            readme = None  # a model without a README states no license
    return render_card(
        model_name=record.model_name or "",
        version_name=record.version_name or "",
        uri=record.uri or "",
        lineage=dict(record.lineage),
        results=results,
        gate_report=gate_report,
        license=license_of(readme),
    )


def record_evaluation(
    *,
    record: RegistryRecord,
    registry_url: str | None,
    results: EvalResult,
    gate_passed: bool,
    gate_report: str,
) -> RegistryRecord:
    """Pipeline entry point: results, gate decision and model card onto the candidate.

    Returns:
        The record with its new stage (``candidate`` or ``rejected``), or unchanged when skipped.

    Raises:
        ConfigError: Bad metrics, or a registered record without any registry URL.
        RegistryError: The update failed.
    """
    if record.status == "skipped":
        logger.warning("evaluation not recorded: %s", record.message)
        return record
    card = model_card(record, results=results, gate_report=gate_report)
    return _backend_for(record, registry_url).attach_evaluation(
        record, results=results, gate_passed=gate_passed, gate_report=gate_report, card=card
    )


def record_modelcar(*, record: RegistryRecord, registry_url: str | None, uri: str) -> None:
    """Pipeline entry point, after the package step pushed the version's modelcar: record its
    ``oci://…@sha256:…`` URI as an artifact of the version (nothing when skipped).

    Raises:
        ConfigError: ``uri`` is not an ``oci://`` digest URI, or a registered record without
            any registry URL.
        RegistryError: The version is gone, or the write failed.
    """
    if not uri.startswith("oci://") or "@sha256:" not in uri:
        raise ConfigError(f"modelcar URI {uri!r} is not oci://<repository>@sha256:<digest>")
    if record.status == "skipped":
        logger.warning("modelcar not recorded: %s", record.message)
        return
    _backend_for(record, registry_url).record_modelcar(record, uri=uri)


def record_serving(
    *,
    record: RegistryRecord,
    registry_url: str | None,
    passed: bool,
    properties: Mapping[str, float | int | str],
    report: str,
    summary: str,
) -> RegistryRecord:
    """Pipeline entry point, after the serving gate benchmarked the deployed candidate: its
    measurements, verdict, summary and report onto the version; a failed gate rejects it.

    The measurements are checked first, with or without a registry, so a bad name fails the
    same way in a run that records nothing.

    Args:
        record: The registered version, as the register (or resolve) step wrote it.
        registry_url: Registry URL (None: ``$MODEL_REGISTRY_URL``, else the record's).
        passed: The serving gate's verdict.
        properties: What it measured, under the Kubeflow model catalog's names
            (:func:`~modelgate.registry.base.serving_properties`: ``ttft_p95``, ``itl_p95``,
            ``tps_mean``, ``hardware_type``, ``hardware_count``, ..., or ``serving.<name>``).
        report: The serving gate's Markdown report.
        summary: Its one-line verdict (the reason of the rejection when it failed).

    Returns:
        The record with the version's stage after it (``rejected`` when it failed), or
        unchanged when the record says ``skipped``.

    Raises:
        ConfigError: A measurement with an unknown name or the wrong type, a failed gate
            without a summary, or a registered record without any registry URL.
        RegistryError: The version is ``production`` (never touched), is gone, or the update
            failed.
    """
    serving_properties(properties)
    if record.status == "skipped":
        logger.warning("serving gate not recorded: %s", record.message)
        return record
    return _backend_for(record, registry_url).record_serving(
        record, passed=passed, properties=properties, report=report, summary=summary
    )


def promote_candidate(
    *, record: RegistryRecord, registry_url: str | None, endpoint: str | None = None
) -> str:
    """Pipeline entry point, after the post-deploy checks: the version becomes production and
    the previous production version is archived. Says what it did (or why it skipped).

    Args:
        record: The registered version, as the register (or resolve) step wrote it.
        registry_url: Registry URL (None: ``$MODEL_REGISTRY_URL``, else the record's).
        endpoint: Where the version is already served (the deploy step's endpoint), for the
            message when promoting fails.

    Raises:
        RegistryError: The update failed. With ``endpoint``, the message says that the endpoint
            serves this version while the registry still gives its old stage, and the command
            that promotes it by hand (:func:`promote_command`).
    """
    if record.status == "skipped":
        return record.message
    backend = _backend_for(record, registry_url)
    try:
        return backend.promote(record)
    except RegistryError as e:
        if not endpoint:
            raise
        raise RegistryError(
            f"{endpoint} serves {record.model_name}:{record.version_name}, but the registry "
            f"{backend.describe()} still says {record.stage or 'candidate'!r} for it: promoting "
            f"failed ({e}). Once the registry answers, promote it by hand: "
            f"{promote_command(record, registry=backend.describe())}"
        ) from e


def promote_command(record: RegistryRecord, *, registry: str) -> str:
    """The shell command that promotes ``record``'s version by hand (:func:`promote_version`).

    ``registry`` is the registry URL as shown (a password in it is ``***``: put it back).
    """
    call = (
        f"print(promote_version(model_name={json.dumps(record.model_name)}, "
        f"version_name={json.dumps(record.version_name)}))"
    )
    program = f"from modelgate.registry import promote_version; {call}"
    return f"{URL_ENV}={shlex.quote(registry)} python -c {shlex.quote(program)}"


def promote_version(*, model_name: str, version_name: str, registry_url: str | None = None) -> str:
    """Make a registered version production by name (what :func:`promote_candidate` does in
    the pipeline), e.g. after a run whose promote step failed. Says what it did.

    Raises:
        ConfigError: No registry configured.
        RegistryError: No such version, or the update failed.
    """
    backend = registry_from_url(registry_url)
    if backend is None:
        raise ConfigError(f"promoting needs a registry: pass registry_url or set {URL_ENV}")
    return backend.promote(backend.find_version(model_name, version_name))
