"""KServe deploy target: a vLLM ``InferenceService`` built from a :class:`DeploySpec`.

Argument split
    The namespace-scoped ServingRuntime ``vllm-runtime`` (``manifests/base``) starts
    ``python3 -m vllm.entrypoints.openai.api_server`` with :func:`runtime_args` (model path, port
    and ``--served-model-name={{.Name}}``, which KServe renders with the InferenceService name).
    KServe *appends* the predictor's ``args`` to the runtime container's args
    (``MergeRuntimeContainers``), so the InferenceService carries only :func:`isvc_args`: the rest
    of :func:`modelgate.deploy.vllm_args`. ``render_runtime_args(name) + isvc_args(spec) ==
    vllm_args(spec, model_path="/mnt/models", port=8080)`` holds for every spec; the unit tests
    check it against both this module and the kustomize-built runtime.

Endpoint
    :class:`KServeTarget` reports ``status.address.url`` (the cluster-local address,
    ``http://<name>-predictor.<ns>.svc.cluster.local``) because the pipeline step that smoke-tests
    and evaluates the model runs inside the cluster, where that address always resolves; it falls
    back to ``status.url`` (the ingress URL) when the controller did not publish an address.
    ``KServeTarget(endpoint="url")`` prefers the external ``status.url`` instead.

Schema validation
    :func:`validate_inference_service` checks an object against the InferenceService CRD's
    ``v1beta1`` ``openAPIV3Schema`` made strict by :func:`strict_schema`. The API server silently
    prunes unknown fields (``storageURI`` would just vanish), so strictness is what catches typos.
    CRDs are read from ``$MODELGATE_SCHEMAS_DIR`` or ``<repo>/../shared/schemas``.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from modelgate.deploy import Deployment, DeploySpec, vllm_args
from modelgate.errors import ConfigError, DeployError, DeployTimeoutError
from modelgate.retry import backoff, wait_until

try:  # the kubernetes client is the optional "kserve" extra; building/validating needs none of it
    from kubernetes.client.exceptions import ApiException
except ImportError:  # pragma: no cover - exercised only without the extra installed

    class ApiException(Exception):  # type: ignore[no-redef]
        """Stand-in so ``except ApiException`` works when kubernetes is not installed."""

        status: int | None = None
        reason: str | None = None
        body: str | None = None


logger = logging.getLogger(__name__)

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
KIND = "InferenceService"
API_VERSION = f"{GROUP}/{VERSION}"

MODEL_MOUNT_PATH = "/mnt/models"  # where KServe's storage initializer puts storageUri
RUNTIME_PORT = 8080  # the port KServe routes to (container port of kserve-container)
NAME_PLACEHOLDER = "{{.Name}}"  # Go template KServe renders with the InferenceService metadata
RUNTIME_NAME = "vllm-runtime"

MANAGED_BY = "modelgate"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"

SCHEMAS_DIR_ENV = "MODELGATE_SCHEMAS_DIR"
KSERVE_SCHEMAS = "kserve-v0.20.0"
ISVC_CRD_FILE = f"{KSERVE_SCHEMAS}/serving.kserve.io_inferenceservices.yaml"
SERVING_RUNTIME_CRD_FILE = f"{KSERVE_SCHEMAS}/serving.kserve.io_servingruntimes.yaml"
CLUSTER_STORAGE_CONTAINER_CRD_FILE = (
    f"{KSERVE_SCHEMAS}/serving.kserve.io_clusterstoragecontainers.yaml"
)

RBAC_HINT = (
    "grant the pipeline's service account the Role in manifests/base/rbac.yaml "
    "(kubectl apply -k manifests/base -n <namespace>; ServiceAccount modelgate-pipeline, verbs "
    "get/list/watch/create/patch/update/delete on inferenceservices.serving.kserve.io)"
)

# Conditions reasons that will not heal by waiting (Knative revision failures, Deployment
# progress deadline, KServe's own spec/runtime failures).
_FATAL_REASONS = frozenset(
    {
        "RevisionFailed",
        "RevisionMissing",
        "ProgressDeadlineExceeded",
        "InvalidPredictorSpec",
        "InvalidSpec",
        "NoSupportingRuntime",
        "RuntimeNotRecognized",
        "RuntimeDisabled",
        "ModelLoadFailed",
        "ContainerMissing",
        "ServerlessModeRejected",
    }
)
_FATAL_TRANSITIONS = frozenset({"BlockedByFailedLoad", "InvalidSpec"})


# --------------------------------------------------------------------------------------------
# Building the InferenceService
# --------------------------------------------------------------------------------------------


def runtime_args() -> list[str]:
    """The vLLM arguments the ServingRuntime ``vllm-runtime`` itself passes (unrendered).

    ``{{.Name}}`` is replaced by KServe with the InferenceService name. The order matches
    :func:`modelgate.deploy.vllm_args` so runtime args + :func:`isvc_args` equal ``vllm_args``.
    """
    return [
        f"--model={MODEL_MOUNT_PATH}",
        f"--port={RUNTIME_PORT}",
        f"--served-model-name={NAME_PLACEHOLDER}",
    ]


def render_runtime_args(name: str, args: list[str] | None = None) -> list[str]:
    """``args`` (default :func:`runtime_args`) as KServe renders them for ISVC ``name``."""
    return [a.replace(NAME_PLACEHOLDER, name) for a in (runtime_args() if args is None else args)]


def _flag(arg: str) -> str:
    return arg.split("=", 1)[0]


def isvc_args(spec: DeploySpec) -> list[str]:
    """The vLLM arguments the InferenceService adds to the runtime's (see module docstring).

    Raises:
        ConfigError: ``spec.extra_args`` sets a flag the runtime already fixes
            (``--model``, ``--port``, ``--served-model-name``).
        DeployError: :func:`vllm_args` no longer starts with the runtime's arguments (the two
            drifted apart; fix :func:`runtime_args` and ``manifests/base/servingruntime.yaml``).
    """
    full = vllm_args(spec, model_path=MODEL_MOUNT_PATH, port=RUNTIME_PORT)
    fixed = render_runtime_args(spec.name)
    if full[: len(fixed)] != fixed:
        raise DeployError(
            f"vllm_args() starts with {full[: len(fixed)]} but the ServingRuntime passes {fixed}; "
            "update modelgate.kserve.runtime_args and manifests/base/servingruntime.yaml together"
        )
    rest = full[len(fixed) :]
    runtime_flags = {_flag(a) for a in fixed}
    clashes = [a for a in rest if _flag(a) in runtime_flags]
    if clashes:
        raise ConfigError(
            f"extra_args {clashes} override flags the KServe runtime sets itself "
            f"({', '.join(sorted(runtime_flags))}); remove them (the model name is the "
            "InferenceService name, the model is mounted at /mnt/models, the port is 8080)"
        )
    return rest


def _resources(spec: DeploySpec) -> dict[str, Any]:
    amounts: dict[str, str] = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.accelerator_count > 0:
        amounts[spec.accelerator_resource] = str(spec.accelerator_count)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def build_inference_service(spec: DeploySpec) -> dict[str, Any]:
    """A ``serving.kserve.io/v1beta1`` InferenceService serving ``spec`` with the vLLM runtime.

    Args:
        spec: The deployment.

    Returns:
        The object as a plain dict (JSON-compatible), ready for the API or ``yaml.safe_dump``.

    Raises:
        ConfigError: ``spec.extra_args`` clashes with the runtime's own flags.
    """
    labels = {
        **spec.labels,
        "app.kubernetes.io/name": spec.name,
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/part-of": "modelgate",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    annotations = {**spec.annotations, DEPLOYMENT_MODE_ANNOTATION: spec.deployment_mode}
    model: dict[str, Any] = {
        "modelFormat": {"name": spec.model_format},
        "runtime": spec.runtime,
        "storageUri": spec.storage_uri,
        "args": isvc_args(spec),
        "resources": _resources(spec),
    }
    predictor: dict[str, Any] = {"model": model}
    if spec.tolerations:
        predictor["tolerations"] = [t.model_dump(exclude_none=True) for t in spec.tolerations]
    if spec.node_selector:
        predictor["nodeSelector"] = dict(spec.node_selector)
    if spec.service_account:
        predictor["serviceAccountName"] = spec.service_account
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }


# --------------------------------------------------------------------------------------------
# CRD schemas and validation
# --------------------------------------------------------------------------------------------


def schemas_dir() -> Path:
    """The shared schemas folder: ``$MODELGATE_SCHEMAS_DIR`` or ``<repo>/../shared/schemas``.

    Raises:
        ConfigError: The folder does not exist.
    """
    env = os.environ.get(SCHEMAS_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        source = f"${SCHEMAS_DIR_ENV}"
    else:
        path = Path(__file__).resolve().parents[2].parent / "shared" / "schemas"
        source = "the default <repo>/../shared/schemas"
    if not path.is_dir():
        raise ConfigError(
            f"CRD schemas folder {path} (from {source}) does not exist; set "
            f"{SCHEMAS_DIR_ENV} to the folder holding {ISVC_CRD_FILE}"
        )
    return path


def _resolve_crd_file(kind_file: str | os.PathLike[str]) -> Path:
    path = Path(kind_file)
    if path.is_absolute():
        candidates = [path]
    else:
        base = schemas_dir()
        candidates = [base / path, base / KSERVE_SCHEMAS / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(
        f"CRD file {kind_file} not found (looked at {', '.join(map(str, candidates))}); "
        f"set {SCHEMAS_DIR_ENV} to the shared schemas folder"
    )


try:
    _YamlLoader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _YamlLoader = yaml.SafeLoader


@functools.lru_cache(maxsize=16)
def _load_crd_schema_cached(path: str, version: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        crd = yaml.load(fh, Loader=_YamlLoader)  # noqa: S506 - safe loader (C or pure)
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise ConfigError(f"{path} is not a CustomResourceDefinition")
    names = []
    for v in crd.get("spec", {}).get("versions", []):
        names.append(v.get("name"))
        if v.get("name") == version:
            schema = (v.get("schema") or {}).get("openAPIV3Schema")
            if not isinstance(schema, dict):
                raise ConfigError(f"{path} version {version} has no openAPIV3Schema")
            return schema
    raise ConfigError(f"{path} has no version {version!r} (it has {names})")


def load_crd_schema(kind_file: str | os.PathLike[str], version: str) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of ``version`` in a CRD file (parsed once, cached; don't mutate).

    Args:
        kind_file: Absolute path, or a path relative to :func:`schemas_dir` (e.g.
            ``"kserve-v0.20.0/serving.kserve.io_inferenceservices.yaml"``); a bare file name is
            also looked up in the ``kserve-v0.20.0`` folder.
        version: CRD version name, e.g. ``"v1beta1"``.

    Raises:
        ConfigError: The schemas folder, the file or the version is missing.
    """
    return _load_crd_schema_cached(str(_resolve_crd_file(kind_file)), version)


_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a structural CRD schema that rejects fields the CRD does not declare.

    Adds ``additionalProperties: false`` to every object node that lists ``properties`` and does
    not set ``additionalProperties`` itself, except:

    * nodes with ``x-kubernetes-preserve-unknown-fields: true`` (the API server keeps unknown
      fields there; their declared children are still made strict, as the server still prunes
      those),
    * nodes without ``properties`` (``metadata`` is just ``type: object`` in CRDs, and
      ``additionalProperties`` maps such as ``resources.limits`` stay as they are),
    * ``x-kubernetes-embedded-resource`` nodes also allow ``apiVersion``/``kind``/``metadata``.

    ``x-kubernetes-int-or-string`` nodes without an ``anyOf`` get ``anyOf: [integer, string]`` so
    JSON Schema checks them the way the API server does. The input is not modified.
    """

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, Mapping):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("properties", "patternProperties", "definitions"):
                out[key] = {k: walk(v) for k, v in value.items()}
            elif key in ("enum", "required", "default", "example", "x-kubernetes-list-map-keys"):
                out[key] = copy.deepcopy(value)
            else:
                out[key] = walk(value)
        if node.get("x-kubernetes-int-or-string") and "anyOf" not in node and "type" not in node:
            out["anyOf"] = copy.deepcopy(_INT_OR_STRING)
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            if node.get("x-kubernetes-embedded-resource"):
                for implicit in ("apiVersion", "kind"):
                    out["properties"].setdefault(implicit, {"type": "string"})
                out["properties"].setdefault("metadata", {"type": "object"})
            out["additionalProperties"] = False
        return out

    return walk(schema)


# ObjectMeta fields a client may set; CRD schemas leave metadata untyped, so this is checked here.
_OBJECT_META_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "generateName": {"type": "string"},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "resourceVersion": {"type": "string"},
        "uid": {"type": "string"},
        "generation": {"type": "integer"},
        "creationTimestamp": {"type": ["string", "null"]},
        "deletionTimestamp": {"type": "string"},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "managedFields": {"type": "array"},
    },
    "additionalProperties": False,
}


@functools.lru_cache(maxsize=16)
def _crd_validator(path: str, version: str) -> Any:
    import jsonschema

    schema = strict_schema(_load_crd_schema_cached(path, version))
    schema = {**schema, "properties": {**schema["properties"], "metadata": _OBJECT_META_SCHEMA}}
    # OpenAPI v3.0 schema objects are a Draft 4 dialect (boolean exclusiveMinimum etc.).
    return jsonschema.Draft4Validator(schema)


def crd_validation_errors(
    obj: Mapping[str, Any], kind_file: str | os.PathLike[str], version: str
) -> list[str]:
    """Every strict-schema violation of ``obj`` as ``"path.to.field: message"`` (empty if valid)."""
    validator = _crd_validator(str(_resolve_crd_file(kind_file)), version)
    errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    out = []
    for e in errors:
        where = ".".join(str(p) for p in e.absolute_path) or "<root>"
        out.append(f"{where}: {e.message}")
    return out


def validate_inference_service(obj: Mapping[str, Any]) -> None:
    """Check ``obj`` against the strict KServe v0.20.0 InferenceService ``v1beta1`` schema.

    Raises:
        ConfigError: ``obj`` is not a ``serving.kserve.io/v1beta1`` InferenceService or has
            fields the CRD does not declare / values of the wrong type; the message lists all.
    """
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") != KIND:
        raise ConfigError(
            f"expected apiVersion {API_VERSION} kind {KIND}, got "
            f"{obj.get('apiVersion')!r} {obj.get('kind')!r}"
        )
    errors = crd_validation_errors(obj, ISVC_CRD_FILE, VERSION)
    if errors:
        name = (obj.get("metadata") or {}).get("name", "?")
        raise ConfigError(
            f"InferenceService {name!r} does not match the KServe {KSERVE_SCHEMAS} CRD schema:\n  "
            + "\n  ".join(errors)
        )


# --------------------------------------------------------------------------------------------
# Deploy target
# --------------------------------------------------------------------------------------------


def _api_error(e: ApiException, action: str) -> DeployError:
    status = getattr(e, "status", None)
    detail = getattr(e, "reason", None) or ""
    body = getattr(e, "body", None)
    if body:
        try:
            detail = json.loads(body).get("message") or detail
        except (ValueError, AttributeError):
            detail = str(body)[:500]
    if status == 403:
        return DeployError(f"{action}: forbidden (HTTP 403: {detail}); {RBAC_HINT}")
    if status == 401:
        return DeployError(
            f"{action}: unauthorized (HTTP 401: {detail}); "
            "check the kubeconfig or service-account token"
        )
    return DeployError(f"{action}: HTTP {status}: {detail}")


class _Conflict(Exception):
    """A 409 on replace: somebody else changed the object since our GET; re-read and retry."""


def _conditions_summary(obj: Mapping[str, Any] | None) -> str:
    status = (obj or {}).get("status") or {}
    parts = []
    for c in status.get("conditions") or []:
        text = f"{c.get('type')}={c.get('status')}"
        if c.get("reason"):
            text += f" ({c['reason']})"
        if c.get("message"):
            text += f": {c['message']}"
        parts.append(text)
    failure = (status.get("modelStatus") or {}).get("lastFailureInfo") or {}
    if failure:
        parts.append(f"modelStatus {failure.get('reason')}: {failure.get('message')}")
    return (
        "; ".join(parts) if parts else "no status reported yet (is the KServe controller running?)"
    )


class KServeTarget:
    """Deploys a :class:`DeploySpec` as a KServe InferenceService and waits until it is Ready.

    Args:
        api: A ``kubernetes.client.CustomObjectsApi`` (or a test double with the same methods).
            When omitted, in-cluster config is loaded, falling back to the kubeconfig.
        timeout: Seconds to wait for ``Ready``.
        poll_interval: Seconds between status reads.
        endpoint: ``"address"`` (default): ``status.address.url``, the cluster-local URL, falling
            back to ``status.url``; ``"url"``: ``status.url`` first.
        field_manager: Field manager name recorded by the API server.
    """

    name: Literal["kserve"] = "kserve"

    def __init__(
        self,
        api: Any | None = None,
        *,
        timeout: float = 1800.0,
        poll_interval: float = 5.0,
        endpoint: Literal["address", "url"] = "address",
        field_manager: str = MANAGED_BY,
    ) -> None:
        self.api = api if api is not None else self._default_api()
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.endpoint = endpoint
        self.field_manager = field_manager

    @staticmethod
    def _default_api() -> Any:
        try:
            from kubernetes import client, config
        except ImportError as e:
            raise ConfigError(
                "the KServe target needs the kubernetes client: pip install 'modelgate[kserve]'"
            ) from e
        try:
            config.load_incluster_config()
        except config.ConfigException:
            try:
                config.load_kube_config()
            except (config.ConfigException, OSError) as e:
                raise ConfigError(
                    "no Kubernetes credentials: not running in a pod and no usable kubeconfig "
                    f"(set KUBECONFIG): {e}"
                ) from e
        return client.CustomObjectsApi()

    # -- API helpers --------------------------------------------------------------------------

    def _get(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise _api_error(e, f"reading InferenceService {namespace}/{name}") from e

    def _apply_once(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        existing = self._get(name, namespace)
        try:
            if existing is None:
                logger.info("creating InferenceService %s/%s", namespace, name)
                return self.api.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, body, field_manager=self.field_manager
                )
            # Replace (not merge-patch) so fields dropped from the spec (a nodeSelector, a
            # toleration) really go away; resourceVersion makes it a compare-and-swap.
            updated = copy.deepcopy(existing)
            updated.pop("status", None)
            updated["spec"] = copy.deepcopy(body["spec"])
            umeta = updated.setdefault("metadata", {})
            umeta["labels"] = {**(umeta.get("labels") or {}), **meta.get("labels", {})}
            umeta["annotations"] = {
                **(umeta.get("annotations") or {}),
                **meta.get("annotations", {}),
            }
            logger.info(
                "updating InferenceService %s/%s (resourceVersion %s)",
                namespace,
                name,
                umeta.get("resourceVersion"),
            )
            return self.api.replace_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, updated, field_manager=self.field_manager
            )
        except ApiException as e:
            if e.status == 409:
                raise _Conflict(str(e)) from e
            verb = "creating" if existing is None else "updating"
            raise _api_error(e, f"{verb} InferenceService {namespace}/{name}") from e

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create ``body`` or replace the existing object's spec; returns the stored object.

        A 409 (created or changed concurrently) re-reads and retries a few times.

        Raises:
            DeployError: The API refused (403 names the RBAC fix) or conflicts persisted.
        """
        try:
            return backoff(
                lambda: self._apply_once(body),
                retry_on=(_Conflict,),
                attempts=5,
                base_delay=0.2,
                max_delay=2.0,
                what=f"apply InferenceService {body['metadata']['name']}",
            )
        except _Conflict as e:
            raise DeployError(
                f"InferenceService {body['metadata']['name']} kept changing while being updated "
                f"(409 Conflict): {e}"
            ) from e

    def server_dry_run(self, spec: DeploySpec) -> dict[str, Any]:
        """Server-side dry-run create (``dryRun=All``): webhooks and schema run, nothing is stored.

        Raises:
            DeployError: The API server rejected the object.
        """
        body = build_inference_service(spec)
        try:
            return self.api.create_namespaced_custom_object(
                GROUP, VERSION, spec.namespace, PLURAL, body, dry_run="All"
            )
        except ApiException as e:
            raise _api_error(
                e, f"dry-run create of InferenceService {spec.namespace}/{spec.name}"
            ) from e

    # -- readiness ----------------------------------------------------------------------------

    @staticmethod
    def _failure(obj: Mapping[str, Any]) -> str | None:
        status = obj.get("status") or {}
        model_status = status.get("modelStatus") or {}
        if model_status.get("transitionStatus") in _FATAL_TRANSITIONS:
            info = model_status.get("lastFailureInfo") or {}
            return (
                f"{model_status['transitionStatus']}: {info.get('reason', 'unknown reason')}: "
                f"{info.get('message', '')}".rstrip(": ")
            )
        for c in status.get("conditions") or []:
            ctype, cstatus, reason = c.get("type", ""), c.get("status"), c.get("reason", "")
            failed_type = ctype.endswith("Failed") and cstatus == "True"
            failed_reason = cstatus == "False" and reason in _FATAL_REASONS
            if failed_type or failed_reason:
                return f"{ctype}={cstatus} ({reason}): {c.get('message', '')}".rstrip(": ")
        return None

    @staticmethod
    def _ready(obj: Mapping[str, Any]) -> bool:
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready":
                return c.get("status") == "True"
        return False

    def _endpoint(self, obj: Mapping[str, Any]) -> str:
        status = obj.get("status") or {}
        address = (status.get("address") or {}).get("url")
        url = status.get("url")
        ordered = [address, url] if self.endpoint == "address" else [url, address]
        for candidate in ordered:
            if candidate:
                return str(candidate).rstrip("/")
        meta = obj.get("metadata") or {}
        raise DeployError(
            f"InferenceService {meta.get('namespace')}/{meta.get('name')} is Ready but reports "
            "neither status.address.url nor status.url"
        )

    def wait_ready(self, name: str, namespace: str, generation: int | None) -> tuple[dict, float]:
        """Poll until ``Ready`` is True for ``generation``; returns (object, seconds waited).

        Status written for an older generation is ignored (it describes the previous spec),
        judged by ``status.observedGeneration`` when the controller reports it.

        Raises:
            DeployError: A failure condition for the current generation, or the object vanished.
            DeployTimeoutError: Not Ready within ``timeout``; the message has the last conditions.
        """
        last: dict[str, Any] = {}
        warned = False

        def check() -> bool:
            nonlocal last, warned
            obj = self._get(name, namespace)
            if obj is None:
                raise DeployError(f"InferenceService {namespace}/{name} was deleted while waiting")
            last = obj
            observed = (obj.get("status") or {}).get("observedGeneration")
            if generation is not None and observed is not None and observed < generation:
                return False  # controller has not seen our spec yet
            if observed is None and not warned:
                logger.warning(
                    "InferenceService %s/%s reports no status.observedGeneration; "
                    "readiness cannot be tied to generation %s",
                    namespace,
                    name,
                    generation,
                )
                warned = True
            failure = self._failure(obj)
            if failure:
                raise DeployError(f"InferenceService {namespace}/{name} failed: {failure}")
            return self._ready(obj)

        def on_timeout(message: str) -> BaseException:
            return DeployTimeoutError(
                f"InferenceService {namespace}/{name} (generation {generation}): {message}; "
                f"last conditions: {_conditions_summary(last)}"
            )

        waited = wait_until(
            check,
            timeout=self.timeout,
            interval=self.poll_interval,
            what=f"InferenceService {namespace}/{name} Ready",
            on_timeout=on_timeout,
        )
        return last, waited

    # -- DeployTarget -------------------------------------------------------------------------

    def deploy(self, spec: DeploySpec, *, model_dir: str | None = None) -> Deployment:
        """Create or update the InferenceService for ``spec`` and wait until it is Ready.

        ``model_dir`` is ignored: KServe fetches ``spec.storage_uri`` itself.
        """
        if model_dir:
            logger.debug(
                "KServe target ignores model_dir=%s (uses %s)", model_dir, spec.storage_uri
            )
        start = time.monotonic()
        before = self._get(spec.name, spec.namespace)
        previous_spec = copy.deepcopy(before["spec"]) if before else None
        stored = self.apply(build_inference_service(spec))
        generation = (stored.get("metadata") or {}).get("generation")
        try:
            obj, _ = self.wait_ready(spec.name, spec.namespace, generation)
        except DeployError as e:
            undone = self._restore(spec.name, spec.namespace, previous_spec)
            raise type(e)(f"{e}; {undone}") from e
        status = obj.get("status") or {}
        return Deployment(
            target="kserve",
            name=spec.name,
            endpoint=self._endpoint(obj),
            model=spec.name,
            ready_seconds=time.monotonic() - start,
            details={
                "namespace": spec.namespace,
                "generation": generation,
                "resourceVersion": (obj.get("metadata") or {}).get("resourceVersion"),
                "url": status.get("url"),
                "address": (status.get("address") or {}).get("url"),
                "previous_spec": previous_spec,
            },
        )

    def _restore(self, name: str, namespace: str, previous_spec: dict[str, Any] | None) -> str:
        """Put back ``previous_spec`` (None: delete the object); returns what was done."""
        if previous_spec is None:
            self._delete(name, namespace)
            return f"deleted the new InferenceService {namespace}/{name}"
        body = {"metadata": {"name": name, "namespace": namespace}, "spec": previous_spec}
        self.apply(body)
        return f"restored the previous spec of InferenceService {namespace}/{name}"

    def rollback(self, deployment: Deployment) -> str:
        """Undo ``deployment``: restore the spec it replaced, or delete it if it was new.

        Returns:
            What was done, for logs.

        Raises:
            DeployError: The API refused.
        """
        namespace = deployment.details.get("namespace", "default")
        done = self._restore(deployment.name, namespace, deployment.details.get("previous_spec"))
        logger.warning("rolled back: %s", done)
        return done

    def teardown(self, deployment: Deployment) -> None:
        """Delete the InferenceService (already gone is fine)."""
        self._delete(deployment.name, deployment.details.get("namespace", "default"))

    def _delete(self, name: str, namespace: str) -> None:
        try:
            self.api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            logger.info("deleted InferenceService %s/%s", namespace, name)
        except ApiException as e:
            if e.status == 404:
                return
            raise _api_error(e, f"deleting InferenceService {namespace}/{name}") from e
